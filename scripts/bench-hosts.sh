#!/bin/bash
# bench-hosts.sh — the same 4-VM lab brought up on one host and spread over two (and three)
# hosts of the multi-host harness, in the same run (docs/benchmarks.md, "Across hosts").
# Each round, in turn: `topo apply -y` from nothing to every NIC proven by ARP, then
# `topo destroy -y`, timed from the controller. The one-host lab is the baseline: the same
# VMs and networks, no `hosts:`, reached as `-c qemu+ssh://root@h1/system` (its NICs proven
# by arping over ssh too, so only the spreading differs).
# Env: ROUNDS (3), HOSTS (3: measure on 1, 2 and 3 hosts; 2: on 1 and 2), PROFILE (debug),
#      TOPO_GUEST_DIR; KEEP=1 leaves the harness up; BASELINE=PATH another topo binary (an
#      earlier commit's build) run the same way in each round, right after this build's run
#      of the same lab, for a before/after in the same run.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
H=$HERE/hosts.sh
ROUNDS=${ROUNDS:-3}
HOSTS=${HOSTS:-3}
PROFILE=${PROFILE:-debug}
GUEST_DIR=${TOPO_GUEST_DIR:-/var/lib/topo/guest}
log() { echo "bench-hosts: $*" >&2; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

flag=()
[ "$PROFILE" = release ] && flag=(--release)
(cd "$ROOT" && cargo build -q --locked "${flag[@]}" --bin topo)
TOPO=$ROOT/target/$PROFILE/topo
"$HERE/mkguest.sh" "$GUEST_DIR" >&2
exec 9>/tmp/topo-hosts.lock
flock 9
W=$(mktemp -d /tmp/topo-bench-hosts.XXXXXX)
cleanup() {
  local rc=$?
  trap - EXIT
  rm -rf "$W"
  [ "${KEEP:-0}" = 1 ] || "$H" down >&2 || rc=1
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$H" up "$HOSTS" >&2

# lab FILE N: the 4 VMs (a, b on lan; c on lan and wan; d on wan) spread round-robin over
# hosts h1..hN (N=1: no `hosts:`, the one-host baseline).
lab() {
  local file=$1 n=$2 i=0
  {
    echo "apiVersion: topo/v1"
    echo "name: bench"
    if [ "$n" -gt 1 ]; then
      echo "hosts:"
      for h in $(seq "$n"); do echo "  h$h: {uri: \"qemu+ssh://root@h$h/system\", underlay: 10.77.0.1$h}"; done
    fi
    echo "networks:"
    echo "  lan: {mode: isolated, subnet: 10.61.0.0/24}"
    echo "  wan: {mode: isolated, subnet: 10.62.0.0/24}"
    echo "vms:"
    for vm in a:lan b:lan c:lan,wan d:wan; do
      name=${vm%%:*} nets=${vm#*:}
      echo "  $name:"
      [ "$n" -gt 1 ] && echo "    host: h$((i % n + 1))"
      echo "    hypervisor: qemu"
      echo "    memory: 128MiB"
      echo "    boot: {kernel: $GUEST_DIR/vmlinuz, initrd: $GUEST_DIR/initrd.gz, cmdline: console=ttyS0 quiet}"
      echo "    nics:"
      for net in ${nets//,/ }; do echo "      - network: $net"; done
      i=$((i + 1))
    done
  } >"$file"
}

run() { (cd "$W" && "$H" ctl -- "$@" </dev/null) >"$W/out" 2>&1 || { tail -30 "$W/out" >&2; return 1; }; }
declare -A APPLY DESTROY BAPPLY BDESTROY
builds=(this)
[ -n "${BASELINE:-}" ] && builds+=(baseline)
for n in $(seq "$HOSTS"); do lab "$W/lab$n.yaml" "$n"; done
for r in $(seq "$ROUNDS"); do
  for n in $(seq "$HOSTS"); do
    conn=()
    [ "$n" = 1 ] && conn=(-c qemu+ssh://root@h1/system)
    for b in "${builds[@]}"; do
      bin=$TOPO
      [ "$b" = baseline ] && bin=$BASELINE
      t=$(now_ms)
      run "$bin" "${conn[@]}" apply -y "lab$n.yaml"
      grep -q "Verify: 5 verified, 0 failed" "$W/out" || { tail -30 "$W/out" >&2; exit 1; }
      a=$(($(now_ms) - t))
      t=$(now_ms)
      run "$bin" "${conn[@]}" destroy -y "lab$n.yaml"
      d=$(($(now_ms) - t))
      if [ "$b" = baseline ]; then
        BAPPLY[$n]="${BAPPLY[$n]:-} $a"
        BDESTROY[$n]="${BDESTROY[$n]:-} $d"
      else
        APPLY[$n]="${APPLY[$n]:-} $a"
        DESTROY[$n]="${DESTROY[$n]:-} $d"
      fi
      log "round $r, $n host(s), $b build: apply $a ms, destroy $d ms"
    done
  done
done

stats() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1; s+=$1} END {printf "%.1f s (median %.1f, min %.1f, max %.1f)", s/NR/1000, v[int((NR+1)/2)]/1000, v[1]/1000, v[NR]/1000}'; }
base_a=$(echo "${APPLY[1]}" | tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
echo "| hosts | apply -y to 5 NICs proven: mean (median, min, max) | vs 1 host (median) | destroy -y: mean (median, min, max) |"
echo "|---|---|---|---|"
for n in $(seq "$HOSTS"); do
  med=$(echo "${APPLY[$n]}" | tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
  ratio=$(awk -v a="$med" -v b="$base_a" 'BEGIN{printf "%.2fx", a/b}')
  echo "| $n | $(echo "${APPLY[$n]}" | stats) | $ratio | $(echo "${DESTROY[$n]}" | stats) |"
done
if [ -n "${BASELINE:-}" ]; then
  median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
  echo
  echo "| hosts | apply: this build / baseline (medians) | destroy: this build / baseline (medians) |"
  echo "|---|---|---|"
  for n in $(seq "$HOSTS"); do
    a=$(echo "${APPLY[$n]}" | median) ba=$(echo "${BAPPLY[$n]}" | median)
    d=$(echo "${DESTROY[$n]}" | median) bd=$(echo "${BDESTROY[$n]}" | median)
    echo "| $n | $(awk -v a="$a" -v b="$ba" 'BEGIN{printf "%.1f s / %.1f s = %.2fx", a/1000, b/1000, a/b}') | $(awk -v a="$d" -v b="$bd" 'BEGIN{printf "%.1f s / %.1f s = %.2fx", a/1000, b/1000, a/b}') |"
  done
fi
