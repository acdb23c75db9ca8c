#!/bin/bash
# bench-verify.sh — how fast is topo's ARP verification on a real lab? (docs/benchmarks.md)
#
# In the sandbox (scripts/sandbox.sh: libvirtd in netns $TOPO_NETNS), on topologies/demo.yaml
# (2 networks, 3 VMs, 4 NICs; the e2e lab's size):
#   (c) N_APPLY times: `topo apply -y` from nothing to every NIC ARP-verified (wall time),
#       next to the guests' own boot-to-lease time (first appearance of each NIC's MAC in
#       dnsmasq's lease status files /var/lib/libvirt/dnsmasq/*.status, polled every 10 ms
#       from the start of apply), then destroy;
#   then with the lab up and verified:
#   (a) `topo verify` (all NICs), N runs;
#   (b) `arp-scan -I BRIDGE -l` (whole subnet) and `arp-scan -I BRIDGE IPs` (the leased
#       addresses only) on each lab bridge, N runs each, and `arp-scan -l` over all lab
#       bridges one after the other (the baseline of (a): ratio printed).
# Uses hyperfine when installed (apt-get install hyperfine), else a date +%s%N loop.
# Sandbox torn down at the end (EXIT trap), also on failure. Output: a report on stdout.
#
# Env: N=10 (runs for a and b), N_APPLY=3, PROFILE=debug|release (topo build),
#      LAB=path (default topologies/demo.yaml), KEEP=1 (leave the sandbox up),
#      as scripts/sandbox.sh: TOPO_NETNS, TOPO_SANDBOX_STATE, TOPO_GUEST_DIR.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
N=${N:-10}
N_APPLY=${N_APPLY:-3}
PROFILE=${PROFILE:-debug}
# `|| true`: under `set -e` a failing last command of an && list would end the exit trap
# before the sandbox is down (seen: a dead poller left libvirtd up, holding the sandbox lock).
bench_cleanup_extra() { [ -n "${POLLER:-}" ] && kill "$POLLER" 2>/dev/null || true; }
# shellcheck source=scripts/bench-common.sh
. "$HERE/bench-common.sh"
LAB=${LAB:-$ROOT/topologies/demo.yaml}
bench_setup
TOPO="ip netns exec $NS $WORK/topo"
NAME=$(awk '/^name:/{print $2; exit}' "$LAB")

echo "# bench-verify: $(date -u +%FT%TZ), lab $(basename "$LAB") ($NAME), topo $PROFILE build"
echo "# host: $(nproc) vCPU, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), CPU virtualisation: $(grep -qwE 'vmx|svm' /proc/cpuinfo && echo yes || echo 'none (no vmx/svm)'); lab VMs: hypervisor qemu = QEMU TCG"
echo "# $(virsh -q version | awk '/Running hypervisor/{print "hypervisor:", $3, $4}'), $(arp-scan --version 2>&1 | head -1)"

# ---------------------------------------------------------------- (c) apply -> verified
echo
echo "## (c) topo apply -y: start -> every NIC ARP-verified, vs the guests' boot-to-lease"
printf '%-4s %10s %14s %14s %s\n' run apply_s first_lease_s last_lease_s "apply - last lease"
for run in $(seq "$N_APPLY"); do
  $TOPO destroy -y --shutdown-timeout 5 "$LAB" >/dev/null 2>&1
  : >"$WORK/leases"
  t0=$(now_ms)
  # poll dnsmasq's lease files (libvirt's source for net-dhcp-leases): first time each MAC
  # shows up, in ms since t0, at 10 ms resolution
  ( while true; do
      t=$(( $(now_ms) - t0 ))
      { cat /var/lib/libvirt/dnsmasq/*.status 2>/dev/null | grep -o '"mac-address": *"[^"]*"' |
        sed 's/.*"\([^"]*\)"$/\1/' | awk -v t="$t" '{print t, $1}'; } || true
      sleep 0.01
    done >>"$WORK/leases" ) &
  POLLER=$!
  $TOPO apply -y "$LAB" >"$WORK/apply.out" 2>"$WORK/apply.err" || { cat "$WORK/apply.out" "$WORK/apply.err" >&2; exit 1; }
  t1=$(( $(now_ms) - t0 ))
  kill "$POLLER" 2>/dev/null || true; wait "$POLLER" 2>/dev/null || true; POLLER=
  grep -q "verified, 0 failed" "$WORK/apply.out" || { cat "$WORK/apply.out" >&2; exit 1; }
  # per MAC: first time seen; only MACs of this lab (those in the verify table)
  macs=$(awk '$5 ~ /^52:54:00/{print $5}' "$WORK/apply.out" | sort -u)
  firsts=$(for m in $macs; do awk -v m="$m" '$2==m{print $1; exit}' "$WORK/leases"; done | sort -n)
  fl=$(echo "$firsts" | head -1); ll=$(echo "$firsts" | tail -1)
  printf '%-4s %10.2f %14.2f %14.2f %+.2f s\n' "$run" "$(echo "$t1/1000" | bc -l)" \
    "$(echo "${fl:-0}/1000" | bc -l)" "$(echo "${ll:-0}/1000" | bc -l)" "$(echo "($t1-${ll:-0})/1000" | bc -l)"
done
echo
echo "verify table of the last apply (TIME = seconds from the start of verification):"
sed -n '/^VM /,/^Verify:/p' "$WORK/apply.out"

# ---------------------------------------------------------------- (a) topo verify
echo
echo "## (a) topo verify $(basename "$LAB") on the running, verified lab (N=$N)"
bench() { # NAME CMD...: N runs, mean/min/max in ms
  local name=$1
  shift
  if command -v hyperfine >/dev/null; then
    hyperfine -N --style none --warmup 1 --runs "$N" --export-json "$WORK/h.json" "$*" >/dev/null 2>&1 ||
      hyperfine --style none --warmup 1 --runs "$N" --export-json "$WORK/h.json" "$*" >/dev/null
    python3 -c "import json,sys; r=json.load(open('$WORK/h.json'))['results'][0]; print('%-44s mean %7.1f ms  sd %6.1f  min %7.1f  max %7.1f  (hyperfine, N=%d)' % (sys.argv[1], r['mean']*1e3, r['stddev']*1e3, r['min']*1e3, r['max']*1e3, len(r['times'])))" "$name"
    MEAN_MS=$(python3 -c "import json; print('%.1f' % (json.load(open('$WORK/h.json'))['results'][0]['mean']*1e3))")
  else
    local i s ts=()
    for i in $(seq "$N"); do s=$(date +%s%N); "$@" >/dev/null 2>&1; ts+=($(( ($(date +%s%N) - s) / 1000 ))); done
    printf '%s\n' "${ts[@]}" | sort -n | awk -v n="$name" '{a[NR]=$1; s+=$1} END {printf "%-44s mean %7.1f ms  min %7.1f  max %7.1f  (date loop, N=%d)\n", n, s/NR/1000, a[1]/1000, a[NR]/1000, NR}'
    MEAN_MS=$(printf '%s\n' "${ts[@]}" | awk '{s+=$1} END {printf "%.1f", s/NR/1000}')
  fi
}
bench "topo verify (all NICs)" $TOPO verify "$LAB"
TOPO_VERIFY_MS=$MEAN_MS
bench "topo status" $TOPO status "$LAB"

# ---------------------------------------------------------------- (b) arp-scan
echo
echo "## (b) arp-scan in the netns on each lab bridge (N=$N)"
for net in $(virsh -q net-list --name | grep "^$NAME-"); do
  br=$(virsh -q net-info "$net" | awk '/^Bridge/{print $2}')
  ips=$(virsh -q net-dhcp-leases "$net" | awk '{sub(/\/.*/, "", $5); print $5}' | sort -u | xargs)
  bench "arp-scan -I $br -l ($net, /24)" ip netns exec "$NS" arp-scan -q -I "$br" -l
  [ -n "$ips" ] && bench "arp-scan -I $br <$(echo $ips | wc -w) leased IPs>" ip netns exec "$NS" arp-scan -q -I "$br" $ips
  echo "  one arp-scan -l on $br: $(ip netns exec "$NS" arp-scan -q -I "$br" -l 2>/dev/null | grep -c '^[0-9]') reply lines (duplicates included)"
done

# ---------------------------------------------------------------- (a) vs (b), same run
BRIDGES=$(for net in $(virsh -q net-list --name | grep "^$NAME-"); do virsh -q net-info "$net" | awk '/^Bridge/{print $2}'; done | xargs)
# one script, so hyperfine -N (no shell) runs the whole sequence
printf '#!/bin/bash\nfor br in %s; do ip netns exec %s arp-scan -q -I "$br" -l >/dev/null 2>&1; done\n' "$BRIDGES" "$NS" >"$WORK/scan-all.sh"
chmod +x "$WORK/scan-all.sh"
bench "arp-scan -l over all lab bridges ($BRIDGES)" "$WORK/scan-all.sh"
echo
echo "topo verify / arp-scan -l over the same bridges: $(python3 -c "print('%.3fx' % ($TOPO_VERIFY_MS / $MEAN_MS))") (target <= 0.05x)"
