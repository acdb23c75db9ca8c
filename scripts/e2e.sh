#!/bin/bash
# e2e.sh — topo's real end-to-end tier in one command:
#   sandbox up -> build topo + the e2e test -> cargo test --test e2e -- --ignored
#   -> sandbox down (also on failure or Ctrl-C, via trap) -> timings.
# The test itself (tests/e2e.rs) also tears the sandbox down when it ends; the trap here
# covers a build failure or a killed test process. Needs root (libvirtd, netns).
#
# Env: as scripts/sandbox.sh (TOPO_NETNS, TOPO_SANDBOX_STATE, TOPO_GUEST_DIR);
#      CARGO_TARGET_DIR (cargo's default ./target unless set; never one shared with
#      another checkout of this crate, see docs/e2e.md);
#      KEEP=1 leaves the sandbox up for inspection (run scripts/sandbox.sh down later).
# Extra arguments go to the test binary (e.g. --nocapture).
# Exit status: the test's.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
SBX=$HERE/sandbox.sh
T0=$(date +%s%N)
LAST=$T0
secs() { local d=$(($1 / 1000000)); printf '%d.%01ds' $((d / 1000)) $((d % 1000 / 100)); }
TIMES=()
step() { # record how long the step that just ended took
  local now
  now=$(date +%s%N)
  TIMES+=("$(printf '%-28s %8s' "$1" "$(secs $((now - LAST)))")")
  LAST=$now
  printf '[%7s] e2e.sh: %s\n' "$(secs $((now - T0)))" "$1" >&2
}

BINDIR=$(mktemp -d)
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  rm -rf "$BINDIR"
  if [ "${KEEP:-0}" = 1 ]; then
    echo "e2e.sh: KEEP=1: sandbox left up" >&2
  else
    "$SBX" down || rc=1
    step "sandbox down"
  fi
  echo "--- timings" >&2
  printf '  %s\n' "${TIMES[@]}" >&2
  printf '  %-28s %8s\n' "total" "$(secs $(($(date +%s%N) - T0)))" >&2
  if [ $rc = 0 ]; then echo "e2e: PASS" >&2; else echo "e2e: FAIL (exit $rc)" >&2; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$SBX" up
"$HERE/mkguest.sh"
step "sandbox up + guest image"

cd "$ROOT"
# Run a private copy of the binary, so a build running meanwhile cannot swap it mid-test.
# Do not point CARGO_TARGET_DIR at a dir shared with another checkout of this crate:
# cargo names the artifacts of both alike and may run the other checkout's code.
cargo build --quiet --bin topo
cp "${CARGO_TARGET_DIR:-target}/debug/topo" "$BINDIR/topo"
export TOPO_BIN=$BINDIR/topo
[ "${KEEP:-0}" = 1 ] && export TOPO_E2E_KEEP=1
step "build"

rc=0
cargo test --quiet --test e2e -- --ignored --test-threads=1 --nocapture "$@" || rc=$?
step "cargo test --test e2e (incl. its own sandbox down)"
exit $rc
