#!/bin/bash
# check-release-doubles.sh — the release binary carries no test double (docs/architecture.md):
# builds `cargo build --release --locked` and fails when a symbol of the in-memory
# hypervisor, the fake prober, fake leases or the fake clock is in target/release/topo.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet --bin topo
BIN=${CARGO_TARGET_DIR:-target}/release/topo
# Symbols are mangled (`..MemoryHypervisor..`, `..FakeProber..`): a plain grep on nm's list.
syms=$(nm -C "$BIN" 2>/dev/null || true)
[ -n "$syms" ] || syms=$(strings "$BIN")
found=$(grep -oE 'MemoryHypervisor|FakeProber|FakeLeases|FakeClock|hypervisor::memory' <<<"$syms" | sort -u || true)
if [ -n "$found" ]; then
  echo "check-release-doubles: test doubles in $BIN: $(echo $found)" >&2
  exit 1
fi
# The check must be able to fail: the same names are in a build with the doubles.
echo "check-release-doubles: $BIN ($(du -h "$BIN" | cut -f1)) has no test double"
