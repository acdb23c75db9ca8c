#!/bin/bash
# e2e-smoke.sh — proves the end-to-end harness on this machine:
#   sandbox up -> guest kernel/initrd -> seed 'default' NAT net -> isolated net 'smoke-iso'
#   -> one 2-NIC guest booted with topo.nodhcp=eth1
#   -> eth0 (on 'default') is leased and answers ARP on virbr0 inside the netns
#   -> eth1 (on 'smoke-iso', which does serve DHCP) gets NO lease within 15 s
#   -> nothing leaked into the host netns -> sandbox down (also on failure, via trap)
#   -> no netns, no daemon, no qemu left.
# Env: as scripts/sandbox.sh (TOPO_NETNS, TOPO_SANDBOX_STATE, TOPO_GUEST_DIR).
#      KEEP=1 leaves the sandbox up for inspection (run `scripts/sandbox.sh down` later).
# Exit 0 on success; timing lines on stderr.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SBX=$HERE/sandbox.sh
eval "$("$SBX" env)" # LIBVIRT_DEFAULT_URI, TOPO_NETNS, TOPO_GUEST_DIR
export LIBVIRT_DEFAULT_URI TOPO_NETNS TOPO_GUEST_DIR
NS=$TOPO_NETNS
VM=smoke-vm
ISO=smoke-iso
MAC0=52:54:00:5e:00:01 # eth0 -> network 'default'
MAC1=52:54:00:5e:00:02 # eth1 -> network 'smoke-iso' (topo.nodhcp=eth1)
CONSOLE=/var/log/libvirt/qemu/$VM-console.log
NOLEASE_WAIT=${NOLEASE_WAIT:-15}

T0=$(date +%s%N)
now_ms() { echo $(( ($(date +%s%N) - T0) / 1000000 )); }
fmt() { printf '%d.%01ds' $(($1 / 1000)) $(($1 % 1000 / 100)); }
step() { printf '[%7s] smoke: %s\n' "$(fmt "$(now_ms)")" "$*" >&2; }
fail() {
  printf 'smoke: FAIL: %s\n' "$*" >&2
  [ -f "$CONSOLE" ] && { echo "--- guest console ($CONSOLE) ---" >&2; cat "$CONSOLE" >&2; }
  exit 1
}

cleanup() {
  local rc=$?
  if [ "${KEEP:-0}" = 1 ]; then step "KEEP=1: sandbox left up (rc=$rc)"; return; fi
  "$SBX" down || rc=1
  exit $rc
}
trap cleanup EXIT

lease_of() { # NET MAC -> leased IPv4 or nothing
  virsh -q net-dhcp-leases "$1" --mac "$2" 2>/dev/null | awk '/ipv4/{split($5,a,"/"); print a[1]; exit}'
}

# 1. sandbox, guest image, networks
"$SBX" up
step "sandbox up"
"$HERE/mkguest.sh" "$TOPO_GUEST_DIR"
step "guest image ready in $TOPO_GUEST_DIR"
"$SBX" seed-default
x=$(mktemp)
cat >"$x" <<EOF
<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>
  <name>$ISO</name>
  <bridge name='virbr-smoke' stp='off' delay='0'/>
  <ip address='192.168.153.1' netmask='255.255.255.0'>
    <dhcp><range start='192.168.153.2' end='192.168.153.254'/></dhcp>
  </ip>
  <dnsmasq:options><dnsmasq:option value='no-ping'/></dnsmasq:options>
</network>
EOF
virsh -q net-info "$ISO" >/dev/null 2>&1 || virsh -q net-define "$x" >/dev/null
rm -f "$x"
[ "$(virsh -q net-info "$ISO" | awk '/^Active/{print $2}')" = yes ] || virsh -q net-start "$ISO" >/dev/null
step "networks active: $(virsh -q net-list --name | xargs)"

# 2. guest: direct kernel boot, software emulation (KVM does not boot here), 2 virtio NICs
virsh -q destroy "$VM" >/dev/null 2>&1 || true
virsh -q undefine "$VM" >/dev/null 2>&1 || true
x=$(mktemp)
cat >"$x" <<EOF
<domain type='qemu'>
  <name>$VM</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$TOPO_GUEST_DIR/vmlinuz</kernel>
    <initrd>$TOPO_GUEST_DIR/initrd.gz</initrd>
    <cmdline>console=ttyS0 quiet topo.hostname=$VM topo.nodhcp=eth1</cmdline>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='network'><mac address='$MAC0'/><source network='default'/><model type='virtio'/><rom enabled='no'/></interface>
    <interface type='network'><mac address='$MAC1'/><source network='$ISO'/><model type='virtio'/><rom enabled='no'/></interface>
    <serial type='file'><source path='$CONSOLE'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
virsh -q define "$x" >/dev/null
rm -f "$x" "$CONSOLE"
virsh -q start "$VM" >/dev/null
TS=$(now_ms)
step "guest $VM started"
since() { fmt $(($(now_ms) - TS)); }

# 3. eth0: lease, then ARP reply from the leased address with the right MAC, inside the netns
ip0=
for _ in $(seq 300); do
  ip0=$(lease_of default "$MAC0")
  [ -n "$ip0" ] && break
  sleep 0.2
done
[ -n "$ip0" ] || fail "eth0 ($MAC0) got no lease on 'default' within 60 s"
step "eth0 leased $ip0 ($(since) after start)"
r=
for _ in $(seq 30); do
  r=$(ip netns exec "$NS" arping -I virbr0 -f -c 1 -w 1 "$ip0" 2>/dev/null |
    sed -n 's/.*reply from .*\[\(.*\)\].*/\1/p' | tr 'A-F' 'a-f') || true
  [ "$r" = "$MAC0" ] && break
done
[ "$r" = "$MAC0" ] || fail "no ARP reply from $ip0 ($MAC0) on virbr0 in netns $NS (got '$r')"
step "eth0 ARP ok: $ip0 is-at $r ($(since) after start)"

# 4. eth1: the guest must have seen topo.nodhcp=eth1 and must NOT get a lease
for _ in $(seq 50); do grep -q 'topo-guest: eth1 up, no dhcp' "$CONSOLE" 2>/dev/null && break; sleep 0.2; done
grep -q 'topo-guest: eth1 up, no dhcp' "$CONSOLE" || fail "guest console lacks 'eth1 up, no dhcp'"
step "guest reports eth1 up without DHCP"
end=$((TS + NOLEASE_WAIT * 1000))
while [ "$(now_ms)" -lt "$end" ]; do
  ip1=$(lease_of "$ISO" "$MAC1")
  [ -z "$ip1" ] || fail "eth1 ($MAC1) got a lease $ip1 despite topo.nodhcp=eth1"
  sleep 0.5
done
step "eth1 has no lease ${NOLEASE_WAIT}s after start (as required)"

# 5. nothing of the sandbox in the host netns
leak=$(ip -br link | awk '$1 ~ /^(virbr|vnet)/{print $1}' | xargs)
[ -z "$leak" ] || fail "interfaces leaked into the host netns: $leak"
! iptables-save 2>/dev/null | grep -q LIBVIRT || fail "libvirt iptables rules leaked into the host netns"
inside=$(ip -n "$NS" -br link | awk '$1 ~ /^(virbr|vnet)/{print $1}' | xargs)
step "no leak into host netns (inside $NS: $inside)"

[ "${KEEP:-0}" = 1 ] && exit 0

# 6. teardown and prove it left nothing behind
qpids=$(ip netns pids "$NS" | xargs)
"$SBX" down
trap - EXIT
ip netns list | awk '{print $1}' | grep -qx "$NS" && fail "netns $NS still exists after down"
for p in $qpids; do
  case "$(ps -o stat= -p "$p" 2>/dev/null)" in "" | Z*) ;; *) fail "pid $p ($(ps -o comm= -p "$p")) survived down" ;; esac
done
step "down: netns gone, none of the $(echo "$qpids" | wc -w) sandbox pids alive"
step "PASS"
