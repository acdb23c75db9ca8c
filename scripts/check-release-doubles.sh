#!/bin/bash
# check-release-doubles.sh — the topo binary carries no test double (docs/architecture.md):
# builds it as `cargo build` does (no `testing` feature: dev-dependencies never unify into a
# plain build) and fails when a symbol of the in-memory hypervisor or machine, the fake prober or runner, fake
# leases or the fake clock is in it. The check can fail: the same names are in every test
# binary (`nm target/debug/deps/topo-*`).
# Env: PROFILE=release (default; `cargo build --release`) or debug (the build scripts/e2e.sh
# uses anyway: what scripts/test.sh checks, cheaply).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
flag=()
[ "$PROFILE" = release ] && flag=(--release)
cargo build "${flag[@]}" --locked --quiet --bin topo
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE/topo
# Symbols are mangled (`..MemoryHypervisor..`, `..FakeProber..`): a plain grep on nm's list.
syms=$(nm -C "$BIN" 2>/dev/null || true)
[ -n "$syms" ] || { echo "check-release-doubles: $BIN has no symbol table (stripped?): cannot check" >&2; exit 1; }
found=$(grep -oE 'MemoryHypervisor|MemoryMachine|FakeProber|FakeRunner|FakeLeases|FakeClock|hypervisor::memory' <<<"$syms" | sort -u || true)
if [ -n "$found" ]; then
  echo "check-release-doubles: test doubles in $BIN: $(echo $found)" >&2
  exit 1
fi
echo "check-release-doubles: $BIN ($(du -h "$BIN" | cut -f1), $(wc -l <<<"$syms") symbols) has no test double"
