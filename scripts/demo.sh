#!/bin/bash
# demo.sh — topo on a fresh machine, start to finish, on topologies/demo.yaml:
#   sandbox up (packages, libvirtd in its own netns) -> test guest image -> build topo
#   -> topo validate -> topo plan -> topo apply -y (ends with ARP verification of every NIC)
#   -> topo plan (no changes) -> topo verify -> topo status -> topo destroy -y
#   -> sandbox down (also on failure or Ctrl-C, via trap).
# topo runs inside the sandbox netns (`ip netns exec $TOPO_NETNS topo ...`): the lab's bridges
# live there, and ARP verification sends its frames on them.
# Needs root (libvirtd, network namespace) and Debian 12.
#
# Env: PROFILE=debug (default) | release;  LAB=path/to/lab.yaml (default topologies/demo.yaml);
#      KEEP=1 keeps the lab and the sandbox up after apply (skips destroy and down;
#      clean up later with `scripts/sandbox.sh down`);
#      as scripts/sandbox.sh: TOPO_NETNS, TOPO_SANDBOX_STATE, TOPO_GUEST_DIR.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
SBX=$HERE/sandbox.sh
PROFILE=${PROFILE:-debug}
LAB=${LAB:-$ROOT/topologies/demo.yaml}
eval "$("$SBX" env)" # LIBVIRT_DEFAULT_URI, TOPO_NETNS, TOPO_GUEST_DIR
export LIBVIRT_DEFAULT_URI TOPO_NETNS TOPO_GUEST_DIR

T0=$(date +%s%N)
secs() { local d=$(($1 / 1000000)); printf '%d.%01ds' $((d / 1000)) $((d % 1000 / 100)); }
heading() { printf '\n==== [%7s] %s\n' "$(secs $(($(date +%s%N) - T0)))" "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

BINDIR=$(mktemp -d)
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  rm -rf "$BINDIR"
  if [ "${KEEP:-0}" = 1 ] && [ $rc = 0 ]; then
    heading "KEEP=1: lab and sandbox left up (scripts/sandbox.sh down removes everything)"
  else
    heading "tear down the sandbox"
    "$SBX" down || rc=1
  fi
  heading "$([ $rc = 0 ] && echo "demo finished" || echo "demo FAILED (exit $rc)")"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

heading "1. sandbox: libvirtd inside network namespace $TOPO_NETNS"
"$SBX" up

heading "2. test guest image (kernel + busybox initrd) in $TOPO_GUEST_DIR"
"$HERE/mkguest.sh" "$TOPO_GUEST_DIR"

heading "3. build topo ($PROFILE)"
cd "$ROOT"
flag=()
[ "$PROFILE" = release ] && flag=(--release)
# Do not point CARGO_TARGET_DIR at a dir shared with another checkout of this crate:
# cargo names the artifacts of both alike and may run the other checkout's code.
cargo build "${flag[@]}" --bin topo
cp "${CARGO_TARGET_DIR:-target}/$PROFILE/topo" "$BINDIR/topo"
topo() { ip netns exec "$TOPO_NETNS" "$BINDIR/topo" "$@"; }

cd "$(dirname "$LAB")"
F=$(basename "$LAB")

heading "4. topo validate $F"
show topo validate "$F"

heading "5. topo plan $F"
rc=0
show topo plan --detailed-exitcode "$F" || rc=$?
[ $rc = 2 ] || { echo "demo: expected changes (exit 2), got exit $rc" >&2; exit 1; }

heading "6. topo apply -y $F"
show topo apply -y "$F"
echo
echo "libvirt now has:"
virsh -q net-list --all
virsh -q list --all

heading "7. topo plan $F (again: nothing to do)"
show topo plan --detailed-exitcode "$F"

heading "8. topo verify $F (ARP proof, again, on demand)"
show topo verify "$F"

heading "9. topo status $F"
show topo status "$F"

[ "${KEEP:-0}" = 1 ] && exit 0

heading "10. topo destroy -y $F"
# The test guest powers off on the ACPI power button; should it not, it is forced off
# after 10 s instead of the default 30 s.
show topo destroy -y --shutdown-timeout 10 "$F"
echo
echo "libvirt now has (nothing of lab $(awk '/^name:/{print $2; exit}' "$F")):"
virsh -q net-list --all
virsh -q list --all
