#!/bin/bash
# bench-destroy.sh — how long does `topo destroy` take to tear a lab down, against the
# baseline a user would type: `virsh destroy` + `virsh undefine` of each VM in a loop, then
# `virsh net-destroy` + `net-undefine` of each network (docs/benchmarks.md).
#
# In the sandbox (scripts/sandbox.sh: libvirtd in netns $TOPO_NETNS), on topologies/demo.yaml
# (2 networks, 3 VMs), measured in the same run, N times each, for two kinds of guest:
#   acpi     the test guest as built: it powers off on the ACPI power button;
#   noacpi   the same guest with `topo.nopoweroff=1`: it ignores the power button, as a
#            guest still booting or without ACPI support does.
# Each measurement starts from the lab applied and verified (every NIC answered ARP, so the
# guests are up). The order of topo and baseline alternates from run to run.
# Timing: `date +%s%N` around the command (wall time, one process each).
# Sandbox torn down at the end (EXIT trap), also on failure. Output: a report on stdout.
#
# Env: N=3 (runs per kind and tool), PROFILE=debug|release (topo build),
#      DESTROY_ARGS (extra arguments of `topo destroy`, e.g. "--graceful=30s"),
#      KINDS="acpi noacpi", KEEP=1 (leave the sandbox up),
#      as scripts/sandbox.sh: TOPO_NETNS, TOPO_SANDBOX_STATE, TOPO_GUEST_DIR.
# One sandbox per host (docs/e2e.md): nothing else may use it meanwhile.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
N=${N:-3}
PROFILE=${PROFILE:-debug}
KINDS=${KINDS:-acpi noacpi}
read -r -a DESTROY_ARGS <<<"${DESTROY_ARGS:-}"
# shellcheck source=scripts/bench-common.sh
. "$HERE/bench-common.sh"
bench_setup
TOPO=(ip netns exec "$NS" "$WORK/topo")
DOMS=(demo-deb1 demo-deb2 demo-deb3)
NETS=(demo-outside demo-local_net)

lab_file() { # KIND -> path of the lab file for that kind of guest
  local f=$WORK/demo-$1.yaml
  if [ "$1" = noacpi ]; then
    sed 's/cmdline: console=ttyS0 quiet$/cmdline: console=ttyS0 quiet topo.nopoweroff=1/' topologies/demo.yaml >"$f"
    grep -q 'topo.nopoweroff=1' "$f" || { log "cannot make the noacpi lab"; exit 1; }
  else
    cp topologies/demo.yaml "$f"
  fi
  echo "$f"
}

up_lab() { # LAB: apply and wait until every NIC is ARP-verified (the guests are up)
  "${TOPO[@]}" apply -y --timeout 120 "$1" >"$WORK/apply.out" 2>"$WORK/apply.err" ||
    { cat "$WORK/apply.out" "$WORK/apply.err" >&2; exit 1; }
  grep -q "verified, 0 failed" "$WORK/apply.out" || { cat "$WORK/apply.out" >&2; exit 1; }
}

left() { # objects of the lab still defined (must be none after a teardown)
  { virsh -q list --all --name; virsh -q net-list --all --name; } | grep -E '^demo-' | xargs || true
}

run_topo() { # LAB -> ms
  local t0 t1
  t0=$(now_ms)
  "${TOPO[@]}" destroy -y "${DESTROY_ARGS[@]}" "$1" >"$WORK/destroy.out" 2>"$WORK/destroy.err" ||
    { cat "$WORK/destroy.out" "$WORK/destroy.err" >&2; exit 1; }
  t1=$(now_ms)
  echo $((t1 - t0))
}

run_virsh() { # -> ms: what a user would type, one command per object
  local t0 t1 d n
  t0=$(now_ms)
  for d in "${DOMS[@]}"; do virsh -q destroy "$d" >/dev/null; virsh -q undefine "$d" >/dev/null; done
  for n in "${NETS[@]}"; do virsh -q net-destroy "$n" >/dev/null; virsh -q net-undefine "$n" >/dev/null; done
  t1=$(now_ms)
  echo $((t1 - t0))
}

echo "# bench-destroy: $(date -u +%FT%TZ), lab demo.yaml (2 networks, 3 VMs), topo $PROFILE build, N=$N"
echo "# topo destroy arguments: -y ${DESTROY_ARGS[*]:-(none)}"
echo "# host: $(nproc) vCPU, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $(virsh -q version | awk '/Running hypervisor/{print "hypervisor:", $3, $4}'); guests: QEMU TCG, 128 MiB"
echo
printf '%-7s %-4s %-22s %10s\n' kind run tool teardown_s
declare -A SUM
for kind in $KINDS; do
  LAB=$(lab_file "$kind")
  for run in $(seq "$N"); do
    order=(topo virsh)
    [ $((run % 2)) = 0 ] && order=(virsh topo)
    for tool in "${order[@]}"; do
      up_lab "$LAB"
      if [ "$tool" = topo ]; then ms=$(run_topo "$LAB"); name="topo destroy"; else ms=$(run_virsh); name="virsh destroy+undefine"; fi
      [ -z "$(left)" ] || { log "$name left: $(left)"; exit 1; }
      printf '%-7s %-4s %-22s %10s\n' "$kind" "$run" "$name" "$(secs "$ms")"
      SUM[$kind/$tool]=$((${SUM[$kind/$tool]:-0} + ms))
    done
  done
done
echo
echo "## mean over $N runs"
printf '%-7s %14s %24s\n' kind "topo destroy" "virsh destroy+undefine"
for kind in $KINDS; do
  printf '%-7s %13ss %23ss\n' "$kind" "$(secs $((${SUM[$kind/topo]} / N)))" "$(secs $((${SUM[$kind/virsh]} / N)))"
done
