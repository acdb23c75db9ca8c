#!/bin/bash
# bench-dualstack.sh — what does IPv6 proof cost? (docs/benchmarks.md, "Dual stack", issue 18)
#
# In the sandbox (scripts/sandbox.sh), two copies of topologies/demo.yaml's shape are brought
# up side by side: `v4` as it is (IPv4 only: 4 NICs proven by ARP) and `ds` with a `subnet6`
# on both of its networks (the same 4 NICs proven by ARP and their SLAAC addresses by NDP:
# 8 rows). With both up and verified, `topo verify` of each runs N times, alternating, so both
# see the same machine; the report gives each one's mean and median and the ratio of the
# medians (the issue's bound: dual stack at most 1.2x the IPv4-only lab).
# Env: N=10, PROFILE=debug|release, KEEP=1 (leave the sandbox up), as scripts/sandbox.sh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
N=${N:-10}
PROFILE=${PROFILE:-debug}
# shellcheck source=scripts/bench-common.sh
. "$HERE/bench-common.sh"
bench_setup
TOPO="ip netns exec $NS $WORK/topo"

# lab NAME NET4A NET4B [NET6A NET6B]: the demo lab's shape (deb1 on both networks, deb2 with
# a reservation, deb3 on the isolated one), its own subnets so both labs run at once.
lab() {
  local name=$1 a=$2 b=$3 a6=${4:-} b6=${5:-}
  cat <<LAB
apiVersion: topo/v1
name: $name
networks:
  outside: {mode: nat, subnet: $a.0/24${a6:+, subnet6: "$a6"}}
  local_net: {mode: isolated, subnet: $b.0/24${b6:+, subnet6: "$b6"}}
vms:
  deb1:
    hypervisor: qemu
    memory: 128MiB
    boot: &tiny {kernel: $TOPO_GUEST_DIR/vmlinuz, initrd: $TOPO_GUEST_DIR/initrd.gz, cmdline: console=ttyS0 quiet}
    nics: [{network: outside}, {network: local_net}]
  deb2:
    hypervisor: qemu
    memory: 128MiB
    boot: *tiny
    nics: [{network: local_net, ip: $b.62}]
  deb3:
    hypervisor: qemu
    memory: 128MiB
    boot: *tiny
    nics: [{network: local_net}]
LAB
}
lab v4 192.168.181 192.168.182 >"$WORK/v4.yaml"
lab ds 192.168.183 192.168.184 fd00:183::/64 fd00:184::/64 >"$WORK/ds.yaml"

echo "# bench-dualstack: $(date -u +%FT%TZ), topo $PROFILE build, N=$N, $(nproc) vCPU, QEMU TCG guests"
for l in v4 ds; do
  $TOPO apply -y "$WORK/$l.yaml" >"$WORK/$l.apply" 2>&1 || { cat "$WORK/$l.apply" >&2; exit 1; }
  grep -q "verified, 0 failed" "$WORK/$l.apply" || { cat "$WORK/$l.apply" >&2; exit 1; }
  log "$l applied: $(grep '^Verify:' "$WORK/$l.apply")"
done
declare -A T
for run in $(seq "$N"); do
  for l in v4 ds; do
    t0=$(now_ms)
    $TOPO verify "$WORK/$l.yaml" >"$WORK/$l.verify" 2>&1 || { cat "$WORK/$l.verify" >&2; exit 1; }
    T[$l]="${T[$l]:-} $(( $(now_ms) - t0 ))"
  done
done
rows() { grep -c "verified" "$WORK/$1.verify" || true; }
stats() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1; s+=$1} END {printf "%.2f s mean, %.2f s median (min %.2f, max %.2f)", s/NR/1000, v[int((NR+1)/2)]/1000, v[1]/1000, v[NR]/1000}'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo
echo "| lab | rows proven | topo verify |"
echo "|---|---|---|"
echo "| IPv4 only (4 NICs, ARP) | $(grep '^Verify:' "$WORK/v4.verify") | $(echo "${T[v4]}" | stats) |"
echo "| dual stack (4 NICs, ARP + NDP) | $(grep '^Verify:' "$WORK/ds.verify") | $(echo "${T[ds]}" | stats) |"
echo
echo "ratio of the medians, dual stack / IPv4 only: $(awk -v a="$(echo "${T[ds]}" | median)" -v b="$(echo "${T[v4]}" | median)" 'BEGIN{printf "%.2fx", a/b}')"
for l in v4 ds; do $TOPO destroy -y "$WORK/$l.yaml" >/dev/null 2>&1 || true; done
