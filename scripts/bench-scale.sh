#!/bin/bash
# bench-scale.sh — topo against the best parallel virsh script, bring-up and teardown, on a
# lab of many tiny guests (docs/benchmarks.md, "Scale").
#
# Labs (LABS, default "demo scale"):
#   demo   topologies/demo.yaml: 2 networks, 3 VMs, 4 NICs (teardown only, as bench-destroy.sh)
#   scale  generated: 6 networks (3 NAT, 3 isolated, each /24 with DHCP), 24 VMs of the tiny
#          test guest (scripts/mkguest.sh, 128 MiB each, direct kernel boot), VM i on network
#          i mod 6 and every third VM also on network (i+1) mod 6: 32 NICs
# For each lab, N runs of each tool, the order alternating from run to run:
#   bring-up (scale only), from nothing to every NIC proven:
#     topo    `topo apply -y LAB` (creates, then proves every NIC by ARP; exit 0 only then)
#     virsh   the same objects from the XML topo made (dumped once, with their bridge names,
#             so every define can run at once): all networks defined and started at once, then
#             all domains defined and started at once, then every lab MAC's lease read from
#             `virsh net-dhcp-leases` (polled every 0.2 s) and every leased address asked with
#             `arping -c1` on its bridge until it answers
#   teardown, from the lab up and proven:
#     topo    `topo destroy -y LAB`
#     virsh   `virsh destroy` + `virsh undefine` of every domain at once, then `net-destroy` +
#             `net-undefine` of every network at once (one virsh process per command)
# topo's peak memory: the maximum resident set size of each topo process (/usr/bin/time -v).
# Timing: `date +%s%N` around each (wall time). A check after each teardown that nothing of
# the lab is left, and after each bring-up that every NIC was proven.
#
# Env: N=3 (runs per lab and tool), PROFILE=debug|release (topo build), LABS="demo scale",
#      XML_DIR (the virsh script's XML, net-NAME.xml and dom-NAME.xml, from an earlier run:
#      skips the apply that makes it), TOPO_ARGS (extra arguments of topo apply and destroy),
#      KEEP=1 (leave the sandbox up), as scripts/sandbox.sh: TOPO_NETNS, TOPO_SANDBOX_STATE,
#      TOPO_GUEST_DIR. One sandbox per host: run it as `flock /tmp/topo-sandbox.lock
#      scripts/bench-scale.sh` where others share the machine.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
N=${N:-3}
PROFILE=${PROFILE:-debug}
LABS=${LABS:-demo scale}
# shellcheck source=scripts/bench-common.sh
. "$HERE/bench-common.sh"
bench_setup
TOPO=(ip netns exec "$NS" /usr/bin/time -v -o "$WORK/time.out" "$WORK/topo")
read -r -a TOPO_ARGS <<<"${TOPO_ARGS:-}"

scale_lab() { # -> the 24-VM, 6-network lab file
  local f=$WORK/scale.yaml i j
  {
    echo "apiVersion: topo/v1"
    echo "name: scale"
    echo "networks:"
    for j in 0 1 2 3 4 5; do
      if [ $((j % 2)) = 0 ]; then echo "  n$j: {mode: nat, subnet: 10.90.$j.0/24}"; else echo "  n$j: {mode: isolated, subnet: 10.90.$j.0/24}"; fi
    done
    echo "vms:"
    for i in $(seq 0 23); do
      echo "  v$i:"
      echo "    hypervisor: qemu"
      echo "    memory: 128MiB"
      # no_timer_check: under TCG on a loaded host the guest kernel's IO-APIC timer check can
      # fail ("Kernel panic - not syncing: IO-APIC + timer doesn't work!", seen with 24 guests
      # booting at a load average of 30)
      echo "    boot: {kernel: $TOPO_GUEST_DIR/vmlinuz, initrd: $TOPO_GUEST_DIR/initrd.gz, cmdline: console=ttyS0 quiet no_timer_check}"
      echo "    nics:"
      echo "      - network: n$((i % 6))"
      [ $((i % 3)) = 0 ] && echo "      - network: n$(((i + 1) % 6))"
    done
  } >"$f"
  echo "$f"
}

lab_file() { # LAB -> path
  case "$1" in
    demo) cp topologies/demo.yaml "$WORK/demo.yaml"; echo "$WORK/demo.yaml" ;;
    scale) scale_lab ;;
  esac
}

lab_objects() { # NAME -> domains and networks of lab NAME on the host, one a line
  { virsh -q list --all --name; virsh -q net-list --all --name; } | grep -E "^$1-" || true
}

peak_mib() { awk '/Maximum resident set size/{printf "%.1f", $NF/1024}' "$WORK/time.out"; }

topo_up() { # LAB NAME -> ms (every NIC proven)
  local t0 t1
  t0=$(now_ms)
  "${TOPO[@]}" apply -y --timeout 600 "${TOPO_ARGS[@]}" "$1" >"$WORK/apply.out" 2>"$WORK/apply.err" ||
    { cat "$WORK/apply.out" "$WORK/apply.err" >&2; exit 1; }
  t1=$(now_ms)
  grep -q "verified, 0 failed" "$WORK/apply.out" || { cat "$WORK/apply.out" >&2; exit 1; }
  echo $((t1 - t0))
}

dump_xml() { # NAME: the lab's XML as topo made it, for the virsh script
  mkdir -p "$WORK/xml"
  local o
  for o in $(virsh -q net-list --all --name | grep -E "^$1-"); do virsh net-dumpxml --inactive "$o" >"$WORK/xml/net-$o.xml"; done
  for o in $(virsh -q list --all --name | grep -E "^$1-"); do virsh dumpxml --inactive "$o" >"$WORK/xml/dom-$o.xml"; done
}

prove_all() { # every lab MAC leased and answering ARP on its bridge
  local net mac want left ip br
  declare -A bridge_of
  for f in "$WORK"/xml/net-*.xml; do
    net=$(basename "$f" .xml); net=${net#net-}
    bridge_of[$net]=$(sed -n "s/.*<bridge name='\([^']*\)'.*/\1/p" "$f" | head -1)
  done
  # mac net pairs of every NIC
  want=$(for f in "$WORK"/xml/dom-*.xml; do
    awk '/<interface type=.network./{i=1} i&&/<mac address=/{match($0,/address=.[^\x27"]*/); m=substr($0,RSTART+9,RLENGTH-9)} i&&/<source network=/{match($0,/network=.[^\x27"]*/); n=substr($0,RSTART+9,RLENGTH-9)} i&&/<\/interface>/{print m, n; i=0}' "$f"
  done)
  left=$want
  while [ -n "$left" ]; do
    local next=""
    while read -r mac net; do
      [ -z "$mac" ] && continue
      ip=$(virsh -q net-dhcp-leases "$net" --mac "$mac" 2>/dev/null | awk '{print $5}' | cut -d/ -f1 | head -1)
      br=${bridge_of[$net]}
      if [ -n "$ip" ] && ip netns exec "$NS" arping -q -c 1 -w 1 -I "$br" "$ip" >/dev/null 2>&1; then :; else next+="$mac $net"$'\n'; fi
    done <<<"$left"
    left=$next
    [ -n "$left" ] && sleep 0.2
  done
}

virsh_up() { # -> ms
  local t0 t1 f pids=()
  t0=$(now_ms)
  for f in "$WORK"/xml/net-*.xml; do
    (virsh -q net-define "$f" >/dev/null && virsh -q net-start "$(basename "$f" .xml | cut -c5-)" >/dev/null) & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  pids=()
  for f in "$WORK"/xml/dom-*.xml; do
    (virsh -q define "$f" >/dev/null && virsh -q start "$(basename "$f" .xml | cut -c5-)" >/dev/null) & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  prove_all
  t1=$(now_ms)
  echo $((t1 - t0))
}

topo_down() { # LAB -> ms
  local t0 t1
  t0=$(now_ms)
  "${TOPO[@]}" destroy -y "${TOPO_ARGS[@]}" "$1" >"$WORK/destroy.out" 2>"$WORK/destroy.err" ||
    { cat "$WORK/destroy.out" "$WORK/destroy.err" >&2; exit 1; }
  t1=$(now_ms)
  echo $((t1 - t0))
}

virsh_down() { # NAME -> ms
  local t0 t1 o pids=()
  local doms nets
  doms=$(virsh -q list --all --name | grep -E "^$1-" || true)
  nets=$(virsh -q net-list --all --name | grep -E "^$1-" || true)
  t0=$(now_ms)
  for o in $doms; do (virsh -q destroy "$o" >/dev/null; virsh -q undefine "$o" >/dev/null) & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p"; done
  pids=()
  for o in $nets; do (virsh -q net-destroy "$o" >/dev/null; virsh -q net-undefine "$o" >/dev/null) & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p"; done
  t1=$(now_ms)
  echo $((t1 - t0))
}

echo "# bench-scale: $(date -u +%FT%TZ), topo $PROFILE build, N=$N, labs: $LABS, topo arguments: ${TOPO_ARGS[*]:-(none)}"
echo "# host: $(nproc) vCPU, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $(virsh -q version | awk '/Running hypervisor/{print "hypervisor:", $3, $4}'); guests: QEMU TCG, 128 MiB"
echo
printf '%-6s %-4s %-10s %-6s %10s %12s\n' lab run phase tool seconds topo_peak_MiB
declare -A SUM
for name in $LABS; do
  LAB=$(lab_file "$name")
  # XML for the virsh script, as topo makes it.
  if [ -n "${XML_DIR:-}" ] && ls "$XML_DIR"/dom-"$name"-*.xml >/dev/null 2>&1; then
    rm -rf "$WORK/xml"; mkdir -p "$WORK/xml"; cp "$XML_DIR"/*-"$name"-*.xml "$WORK/xml/"
  else
    topo_up "$LAB" >/dev/null
    dump_xml "$name"
  fi
  for run in $(seq "$N"); do
    order=(topo virsh)
    [ $((run % 2)) = 0 ] && order=(virsh topo)
    for tool in "${order[@]}"; do
      if [ "$name" != scale ]; then
        [ -n "$(lab_objects "$name")" ] || topo_up "$LAB" >/dev/null
      else
        # bring-up from nothing: tear down first (with the other tool's script, untimed)
        virsh_down "$name" >/dev/null
        if [ "$tool" = topo ]; then ms=$(topo_up "$LAB"); mem=$(peak_mib); else ms=$(virsh_up); mem=-; fi
        printf '%-6s %-4s %-10s %-6s %10s %12s\n' "$name" "$run" bring-up "$tool" "$(secs "$ms")" "$mem"
        SUM[$name/up/$tool]=$((${SUM[$name/up/$tool]:-0} + ms))
      fi
      if [ "$tool" = topo ]; then ms=$(topo_down "$LAB"); mem=$(peak_mib); else ms=$(virsh_down "$name"); mem=-; fi
      [ -z "$(lab_objects "$name")" ] || { log "$tool left: $(lab_objects "$name" | xargs)"; exit 1; }
      printf '%-6s %-4s %-10s %-6s %10s %12s\n' "$name" "$run" teardown "$tool" "$(secs "$ms")" "$mem"
      SUM[$name/down/$tool]=$((${SUM[$name/down/$tool]:-0} + ms))
    done
  done
done
echo
echo "## mean over $N runs (topo / virsh)"
for name in $LABS; do
  for phase in up down; do
    [ -n "${SUM[$name/$phase/topo]:-}" ] || continue
    t=${SUM[$name/$phase/topo]}; v=${SUM[$name/$phase/virsh]}
    printf '%-6s %-9s topo %7ss  virsh %7ss  ratio %s\n' "$name" "$phase" "$(secs $((t / N)))" "$(secs $((v / N)))" \
      "$(awk -v t="$t" -v v="$v" 'BEGIN{printf "%.2fx", t/v}')"
  done
done
