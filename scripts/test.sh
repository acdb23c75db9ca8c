#!/usr/bin/env bash
# The whole test suite, as CI runs it (README: "Run the tests").
#   tier 1  unit tests next to the code
#   tier 2  plan/apply/destroy against the strict in-memory hypervisor
#   tier 3  the real `virt` code against libvirt's built-in test:///default driver
#   tier 4  real end to end: libvirtd in a network namespace, QEMU guests, dnsmasq, ARP;
#           then a lab across two hosts of the multi-host harness (scripts/e2e-hosts.sh)
# Needs root (tier 4 creates a network namespace and runs libvirtd in it). Installs the Debian
# packages it needs (scripts/sandbox.sh). TOPO_SKIP_E2E=1 runs tiers 1-3 only.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
step() { printf '\n=== [%4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }

if ! pkg-config --exists libvirt 2>/dev/null; then
  step "installing build dependencies (libvirt-dev, pkg-config)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends libvirt-dev pkg-config >/dev/null
fi

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
step "tiers 1-3: cargo test"
cargo test --locked
step "the binary has no test double (scripts/check-release-doubles.sh, dev profile)"
PROFILE=debug scripts/check-release-doubles.sh

if [ "${TOPO_SKIP_E2E:-0}" = 1 ]; then
  step "tier 4 skipped (TOPO_SKIP_E2E=1)"
  exit 0
fi
step "tier 4: end to end on real libvirt (scripts/e2e.sh)"
scripts/e2e.sh
step "tier 4 across hosts: a lab over two libvirt hosts of the multi-host harness (scripts/e2e-hosts.sh)"
scripts/e2e-hosts.sh
step "all tiers passed"
