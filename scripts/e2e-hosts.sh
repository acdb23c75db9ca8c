#!/bin/bash
# e2e-hosts.sh — tier 4 across hosts: topo brings up one lab over two libvirt hosts of the
# multi-host harness (scripts/hosts.sh, docs/multi-host-harness.md) and proves what
# docs/multi-host.md promises, from the controller namespace, as a user would:
#   a foreign VXLAN device holding the lab's VNI is refused at plan, nothing touched
#   -> apply: network `lan` served by h1 (DHCP, reservation) and stretched to h2 by VXLAN
#      (MTU 1450 on bridges, tunnels and guest NICs), `wan` on h2 only, with `subnet6`; every NIC
#      proven by ARP on its own host (arping over ssh on both), g2's lease from h1's dnsmasq,
#      g2's SLAAC address on wan proven by NDP on h2 (ndisc6 over ssh)
#   -> a 1450-byte frame (DF) crosses the tunnel; the second apply changes nothing
#   -> `lan` restarted by hand on h2, the tunnel deleted by hand on h1: apply converges
#   -> an unreachable host (--host h2=...) stops plan, naming it
#   -> topo verify (its HOST column); inventory jumps through each network's serving host; topo console
#      g2 reaches g2 on h2
#   -> destroy with h2 unreachable cleans h1 and names what is left on h2; destroy: nothing
#      of the lab left on either host
#   -> a lab on one remote host (qemu+ssh, no hosts:): its NIC proven by ARP there too
#   -> the machine boundary over real ssh (tests/machine_ssh.rs, ignored elsewhere)
# Env: TOPO_BIN (default target/debug/topo, built if missing), TOPO_GUEST_DIR, as hosts.sh;
#      KEEP=1 leaves the hosts up. Exit 0 on success; tears down on failure too.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
H=$HERE/hosts.sh
GUEST_DIR=${TOPO_GUEST_DIR:-/var/lib/topo/guest}
IMAGE_DIR=${TOPO_IMAGE_DIR:-/var/lib/topo/image}
TOPO=${TOPO_BIN:-$ROOT/target/debug/topo}
LOCK=/tmp/topo-hosts.lock

T0=$(date +%s%N)
now_ms() { echo $(( ($(date +%s%N) - T0) / 1000000 )); }
fmt() { printf '%d.%01ds' $(($1 / 1000)) $(($1 % 1000 / 100)); }
step() { printf '[%7s] e2e-hosts: %s\n' "$(fmt "$(now_ms)")" "$*" >&2; }
TIMES=()
timing() { TIMES+=("$(printf '%-48s %8s' "$1" "$(fmt "$2")")"); }
ctl() { "$H" ctl -- "$@" </dev/null; }
rsh() { local h=$1; shift; ctl ssh "$h" "$@"; }
vsh() { local h=$1; shift; ctl virsh -q -c "qemu+ssh://root@$h/system" "$@"; }
fail() {
  printf 'e2e-hosts: FAIL: %s\n' "$*" >&2
  [ -f "${OUT:-/dev/null}" ] && { echo "--- last topo output ---" >&2; tail -40 "$OUT" >&2; }
  exit 1
}
cleanup() {
  local rc=$?
  trap - EXIT
  [ -n "${AGENT_PID:-}" ] && kill "$AGENT_PID" 2>/dev/null
  if [ "${KEEP:-0}" = 1 ]; then step "KEEP=1: hosts left up (rc=$rc)"; exit $rc; fi
  "$H" down || rc=1
  [ $rc = 0 ] && step "PASS" || echo "e2e-hosts: FAIL (exit $rc)" >&2
  exit $rc
}
# topo from the controller, in the lab's folder; output kept in $OUT.
topo() { (cd "$X" && "$H" ctl -- "$TOPO" "$@" </dev/null) >"$OUT" 2>&1; }

[ -n "${TOPO_BIN:-}" ] || (cd "$ROOT" && cargo build -q --locked --bin topo)
"$HERE/mkguest.sh" "$GUEST_DIR"
exec 9>"$LOCK"
flock 9
trap cleanup EXIT
trap 'exit 130' INT TERM

t=$(now_ms)
"$H" up 2
timing "hosts.sh up 2" $(($(now_ms) - t))

X=$(mktemp -d /tmp/topo-e2e-hosts.XXXXXX)
OUT=$X/out
cat >"$X/lab.yaml" <<EOF
apiVersion: topo/v1
name: mh
hosts:
  h1: {uri: "qemu+ssh://root@h1/system", underlay: 10.77.0.11}
  h2: {uri: "qemu+ssh://root@h2/system", underlay: 10.77.0.12}
networks:
  lan: {mode: isolated, subnet: 10.10.0.0/24}
  wan: {mode: nat, subnet: 10.20.0.0/24, subnet6: 'fd00:20::/64', host: h2}
vms:
  g1:
    hypervisor: qemu
    memory: 128MiB
    boot: &tiny {kernel: $GUEST_DIR/vmlinuz, initrd: $GUEST_DIR/initrd.gz, cmdline: console=ttyS0 quiet}
    nics: [{network: lan, ip: 10.10.0.10}]
  g2:
    host: h2
    hypervisor: qemu
    memory: 128MiB
    boot: {kernel: $GUEST_DIR/vmlinuz, initrd: $GUEST_DIR/initrd.gz, cmdline: console=ttyS0 quiet topo.ping=10.10.0.10}
    nics: [{network: lan, ip: 10.10.0.20}, {network: wan}]
EOF

topo validate lab.yaml || fail "validate"
grep -q "lab mh: 2 networks (0 external), 2 vms, 3 nics" "$OUT" || fail "validate summary"
topo plan lab.yaml || fail "plan"
for want in "across hosts h1, h2" "On host h1:" "On host h2:" "tunnel.lan (topovx" "Plan: 7 to add"; do
  grep -qF "$want" "$OUT" || fail "plan does not say '$want'"
done
VX=$(sed -n 's/.*tunnel.lan (\(topovx[0-9a-f]*\)).*/\1/p' "$OUT" | head -1)
VNI=$((16#${VX#topovx}))
step "plan: 7 to add across h1 and h2, tunnel $VX (VNI $VNI)"

# A device the lab does not own holds the VNI on h2: refused before anything is made.
rsh h2 ip link add foreignvx type vxlan id "$VNI" dstport 4789 local 10.77.0.12
! topo apply -y lab.yaml || fail "apply went ahead with the VNI taken on h2"
grep -q "topo::plan::tunnel_taken" "$OUT" || fail "no tunnel_taken refusal"
[ -z "$(vsh h1 list --all --name)$(vsh h2 list --all --name)" ] || fail "a refused apply made a domain"
[ -z "$(vsh h1 net-list --all --name)$(vsh h2 net-list --all --name)" ] || fail "a refused apply made a network"
rsh h2 ip link del foreignvx
step "a foreign VXLAN device with the VNI on h2: refused (topo::plan::tunnel_taken), nothing made on either host"

# h2's underlay device at 1400 bytes (a cloud VM's): lan's 1450-byte frames with VXLAN's 50
# bytes do not fit; plan refuses at the network, naming the device (read by `ip -j addr`).
UDEV=$(rsh h2 ip -o -4 addr show to 10.77.0.12 | awk '{print $2}')
[ -n "$UDEV" ] || fail "no device holds 10.77.0.12 on h2"
rsh h2 ip link set dev "$UDEV" mtu 1400
! topo plan lab.yaml || fail "plan went ahead with h2's underlay at MTU 1400"
grep -q "topo::plan::underlay_mtu" "$OUT" && grep -q "on device $UDEV with MTU 1400" "$OUT" || fail "no underlay_mtu refusal naming $UDEV"
rsh h2 ip link set dev "$UDEV" mtu 1500
step "h2's underlay device ($UDEV) at MTU 1400: refused (topo::plan::underlay_mtu), naming the device; set back to 1500"

# The plan saved (plan --out) and applied as saved: each host's part checked against that
# host as it was when planned, its steps run as reviewed.
topo plan --out plan.json lab.yaml || fail "plan --out"
grep -q '"h2"' "$X/plan.json" || fail "the saved plan has no part for h2"
t=$(now_ms)
topo apply plan.json || fail "apply of the saved plan"
timing "apply of the saved plan (2 hosts, 2 VMs, 3 NICs proven, one on IPv6 too)" $(($(now_ms) - t))
grep -q "Verify: 4 verified, 0 failed, 0 skipped." "$OUT" || fail "apply did not verify the 3 NICs and g2's IPv6 address"
grep -E "^h2 +g2 +eth0 +lan .* 10\.10\.0\.20 +arp reply from 52:54:00:f6:55:a3" "$OUT" >/dev/null ||
  fail "g2 (on h2) was not proven at its reservation 10.10.0.20 by ARP"
# g2's SLAAC address on wan (modified EUI-64 of its MAC, RFC 4291 appendix A, computed here
# apart from topo; a 52:54:00 MAC's first group is never 0, so `::` stands for the prefix's
# zero groups), from the RA of h2's dnsmasq, proven by NDP on h2's bridge (ndisc6 over ssh).
M1=$(vsh h2 domiflist mh-g2 | awk '$3 == "mh-wan" { print $5 }')
[ -n "$M1" ] || fail "g2 has no NIC on mh-wan"
IFS=: read -r m0 m1 m2 m3 m4 m5 <<<"$M1"
A6=$(printf 'fd00:20::%x:%x:%x:%x' $(((0x$m0 ^ 2) << 8 | 0x$m1)) $((0x$m2 << 8 | 0xff)) $((0xfe << 8 | 0x$m3)) $((0x$m4 << 8 | 0x$m5)))
grep -E "^h2 +g2 +eth1 +wan .* $A6 +neighbour advertisement from $M1" "$OUT" >/dev/null ||
  fail "g2 (on h2) was not proven at its SLAAC address $A6 by NDP from $M1"
! topo apply plan.json || fail "a saved plan applied twice"
grep -q "the saved plan is stale: the host (qemu+ssh://root@h1/system)" "$OUT" || fail "the applied plan was not refused as stale"
step "apply of a saved plan across hosts (plan --out): every NIC proven by ARP on its own host; g2 holds h1's reservation across the tunnel; g2's SLAAC address $A6 on wan proven by NDP on h2; the same plan again refused as stale"

# Guest to guest across the tunnel: g2 (on h2) pings g1 (on h1) from inside (topo.ping on its
# kernel command line) and says so on its serial console, logged on h2.
# (ssh joins its arguments into one command line for the remote shell: the pattern is quoted
# inside it.)
PINGED="grep -q 'topo-guest: ping 10.10.0.10 ok' /var/log/libvirt/qemu/mh-g2-console.log"
for _ in $(seq 40); do
  rsh h2 "$PINGED" 2>/dev/null && break
  sleep 0.5
done
rsh h2 "$PINGED" || fail "g2 on h2 got no answer from g1 on h1 across the tunnel"
step "g2 on h2 pings g1 on h1 across the tunnel (from inside the guest, seen on g2's console)"

for h in h1 h2; do
  m=$(rsh "$h" cat "/sys/class/net/$VX/mtu" "/sys/class/net/$VX/master/mtu" | xargs)
  [ "$m" = "1450 1450" ] || fail "on $h, $VX / its bridge have MTU '$m', expected 1450 1450"
  rsh "$h" ip -d link show "$VX" | grep -q "alias topo lab=mh prefix=mh- network=lan" || fail "$VX on $h has no owner alias"
done
vsh h2 dumpxml mh-g2 | grep -q "<mtu size='1450'/>" || fail "g2's NIC on lan has no MTU 1450"
rsh h1 ping -c 1 -W 3 -M do -s 1422 10.10.0.20 >/dev/null || fail "a 1450-byte frame (DF) from h1 did not reach g2 on h2"
step "MTU 1450 on both bridges, tunnels and g2's NIC; a 1450-byte DF ping from h1 reaches g2 on h2"

# topo capture of a VM on h2: its tap there, by tcpdump over ssh, while h1 pings it across
# the tunnel; the file (written on the controller) read back by tcpdump -r; no tcpdump left.
rsh h1 ping -q -i 0.2 -c 40 10.10.0.20 >/dev/null 2>&1 &
ping_pid=$!
t=$(now_ms)
topo capture g2.eth0 lab.yaml -w g2.pcap --count 4 icmp || fail "capture of g2 on h2"
timing "capture of 4 packets on h2 over ssh" $(($(now_ms) - t))
grep -q "on host h2" "$OUT" && grep -q "^4 packets captured" "$OUT" || fail "capture did not say 4 packets on host h2"
n=$(tcpdump -n -r "$X/g2.pcap" 2>/dev/null | grep -c "10\.10\.0\.20.*ICMP echo" || true)
[ "$n" = 4 ] || fail "g2.pcap holds $n ICMP echoes of g2, not 4"
kill "$ping_pid" 2>/dev/null; wait "$ping_pid" 2>/dev/null || true
# (h2 is a namespace of this machine: only the tcpdumps in its network namespace count.)
left=$(rsh h2 'for p in $(pgrep -x tcpdump); do [ "$(readlink /proc/$p/ns/net)" = "$(readlink /proc/self/ns/net)" ] && echo $p; done' || true)
[ -z "$left" ] || fail "a tcpdump is left running on h2: $left"
step "topo capture g2.eth0 (on h2, tcpdump over ssh) --count 4 icmp while h1 pings it: tcpdump -r reads 4 ICMP echoes; none left running"

topo apply -y --no-verify lab.yaml || fail "second apply"
grep -q "No changes. Lab mh matches lab.yaml." "$OUT" || fail "the second apply found changes"
step "second apply: no changes"

vsh h2 net-destroy mh-lan >/dev/null
vsh h2 net-start mh-lan >/dev/null
rsh h1 ip link del "$VX"
topo plan lab.yaml || fail "plan after the changes by hand"
grep -qF "tunnel.lan ($VX) will be created" "$OUT" || fail "plan does not re-create the tunnel deleted on h1"
grep -qF "tunnel.lan ($VX) will be updated in place" "$OUT" || fail "plan does not re-attach the tunnel on h2"
# Another run holds h2's host lock on h2 itself until released: this apply waits for it,
# says so, and goes on once it is released.
rsh h2 'rm -f /run/topo-e2e-release; setsid flock /run/lock/topo-host.lock sh -c "while [ ! -e /run/topo-e2e-release ]; do sleep 0.2; done" </dev/null >/dev/null 2>&1 &'
(topo apply -y lab.yaml && echo 0 >"$X/rc" || echo 1 >"$X/rc") &
apply_pid=$!
for _ in $(seq 600); do
  grep -q "Waiting for another topo run on root@h2" "$OUT" 2>/dev/null && break
  sleep 0.2
done
waited=$(grep -c "Waiting for another topo run on root@h2" "$OUT" || true)
rsh h2 touch /run/topo-e2e-release
wait "$apply_pid"
[ "$waited" -ge 1 ] || fail "apply did not wait for the host lock held on h2"
[ "$(cat "$X/rc")" = 0 ] || fail "apply after the changes by hand"
grep -q "Verify: 4 verified" "$OUT" || fail "not every NIC proven after the changes by hand"
topo apply -y --no-verify lab.yaml && grep -q "No changes." "$OUT" || fail "no convergence after the changes by hand"
step "lan restarted by hand on h2 and the tunnel deleted on h1: apply waits for h2's lock held on h2, re-attaches and re-creates, all proven, then no changes"

! topo --host h2=qemu+ssh://root@10.77.0.19/system plan lab.yaml || fail "plan with h2 unreachable succeeded"
grep -q "host h2 of the lab cannot be reached" "$OUT" || fail "plan does not name the unreachable host"
step "an unreachable host stops plan, named (topo::host::unreachable)"

topo verify lab.yaml || fail "verify"
grep -q "Verify: 4 verified, 0 failed, 0 skipped." "$OUT" || fail "topo verify"
step "topo verify: 4 verified (3 NICs, g2's on wan on IPv6 too)"

# Each address is reached through the host whose network carries it (the serving host of a
# stretched network: the bridge has no address on the others), and the verify table names
# each VM's own host.
grep -E "^h2 +g2 +eth0 +lan " "$OUT" >/dev/null || fail "the verify table does not name g2's host h2"
topo inventory --format ssh-config lab.yaml || fail "inventory"
jump() { awk -v vm="$1" '$1 == "Host" { in_vm = ($2 == vm) } in_vm && $1 == "ProxyJump" { print $2 }' "$OUT"; }
[ "$(jump g1)" = "root@h1" ] || fail "g1's ssh-config entry does not jump through h1 (got '$(jump g1)')"
[ "$(jump g2)" = "root@h1" ] || fail "g2 (on h2, logging in on lan served by h1) does not jump through h1 (got '$(jump g2)')"
[ "$(jump g2-eth1)" = "root@h2" ] || fail "g2's wan address (h2's network) does not jump through h2 (got '$(jump g2-eth1)')"
step "topo inventory: g1 and g2's lan address jump through root@h1 (lan's serving host), g2's wan address through root@h2"

# topo console g2 opens g2's console on h2 (the tiny guest has no sshd, so no topo ssh): the
# power button pressed on h2 shows on it, and the console closes as the guest powers off.
(cd "$X" && "$H" ctl -- "$TOPO" console g2 lab.yaml </dev/null) >"$OUT" 2>&1 &
CONSOLE=$!
sleep 3
vsh h2 shutdown mh-g2 >/dev/null
for _ in $(seq 60); do kill -0 "$CONSOLE" 2>/dev/null || break; sleep 0.5; done
kill -0 "$CONSOLE" 2>/dev/null && vsh h2 destroy mh-g2 >/dev/null
wait "$CONSOLE" || fail "topo console g2 did not end cleanly"
grep -q "Connected to g2 (mh-g2) on host h2" "$OUT" || fail "topo console did not connect to g2 on h2"
grep -q "topo-guest: power button, powering off" "$OUT" || fail "g2's console on h2 did not show its power button"
step "topo console g2: connected on h2, the guest's power-off seen on its console"

! topo --host h2=qemu+ssh://root@10.77.0.19/system destroy -y lab.yaml || fail "destroy with h2 unreachable succeeded"
grep -q "left there: h2 (vm.g2," "$OUT" ||
  fail "destroy does not say what is left on the unreachable h2"
[ -z "$(vsh h1 list --all --name)$(vsh h1 net-list --all --name)" ] || fail "destroy with h2 unreachable left h1's part"
[ -n "$(vsh h2 list --all --name)" ] || fail "h2's part went although h2 was unreachable"
step "destroy with h2 unreachable: h1 cleaned, h2's part named as left (topo::host::left_on_unreachable)"

t=$(now_ms)
topo destroy -y lab.yaml || fail "destroy"
timing "destroy (2 hosts)" $(($(now_ms) - t))
for h in h1 h2; do
  [ -z "$(vsh "$h" list --all --name)" ] || fail "a domain is left on $h"
  [ -z "$(vsh "$h" net-list --all --name)" ] || fail "a network is left on $h"
  [ -z "$(rsh "$h" ip -br link show type vxlan)" ] || fail "a VXLAN device is left on $h"
done
step "destroy: no domain, network or tunnel left on h1 or h2"

# `topo ssh` into a cloud-init guest on h2 whose network (`lan`, served by h1, stretched to h2)
# this controller cannot route to: ssh jumps through lan's serving host (root@h1: on h2 lan's
# bridge has no address, so h2 cannot route to c2), with the
# lab's key from an ssh-agent; the guest's host key is pinned on first use.
"$HERE/mkimage.sh" "$IMAGE_DIR" >&2
ssh-keygen -q -t ed25519 -N '' -C topo-e2e-hosts -f "$X/id_ed25519"
eval "$(ssh-agent -s -a "$X/agent.sock")" >/dev/null
AGENT_PID=$SSH_AGENT_PID
SSH_AUTH_SOCK=$X/agent.sock ssh-add -q "$X/id_ed25519"
cat >"$X/cloud.yaml" <<EOF
apiVersion: topo/v1
name: mhc
hosts:
  h1: {uri: "qemu+ssh://root@h1/system", underlay: 10.77.0.11}
  h2: {uri: "qemu+ssh://root@h2/system", underlay: 10.77.0.12}
cloud_init:
  ssh_authorized_keys: ['$(cat "$X/id_ed25519.pub")']
networks:
  lan: {mode: isolated, subnet: 10.30.0.0/24}
vms:
  t1:
    hypervisor: qemu
    memory: 128MiB
    boot: {kernel: $GUEST_DIR/vmlinuz, initrd: $GUEST_DIR/initrd.gz, cmdline: console=ttyS0 quiet}
    cloud_init: {enabled: false}
    nics: [{network: lan}]
  c2:
    host: h2
    hypervisor: qemu
    memory: 512MiB
    boot: {kernel: $IMAGE_DIR/vmlinuz, initrd: $IMAGE_DIR/initrd.img, cmdline: root=LABEL=cloudroot console=ttyS0}
    disk: {image: $IMAGE_DIR/debian-12-cloud.qcow2, size: 3GiB}
    nics: [{network: lan}]
EOF
t=$(now_ms)
topo apply -y --timeout 300 cloud.yaml || fail "apply of the cloud lab"
timing "apply (cloud guest on h2, tiny on h1)" $(($(now_ms) - t))
grep -q "Verify: 2 verified, 0 failed" "$OUT" || fail "the cloud lab's NICs were not proven"
ok=
for _ in $(seq 60); do # sshd starts after the NIC is up
  if (cd "$X" && "$H" ctl -- env SSH_AUTH_SOCK="$X/agent.sock" "$TOPO" ssh c2 cloud.yaml -- hostname </dev/null) >"$OUT" 2>&1; then
    ok=1; break
  fi
  sleep 2
done
[ -n "$ok" ] && grep -qx c2 "$OUT" || fail "topo ssh c2 (on h2, through root@h2) did not run hostname there"
kill "$AGENT_PID" 2>/dev/null || true
AGENT_PID=
topo destroy -y cloud.yaml || fail "destroy of the cloud lab"
step "topo ssh into a cloud-init guest on h2 on a network private to the hosts: jumped through root@h1 (lan's serving host) across the tunnel, key from the agent"

# A lab on one remote host (no `hosts:`): its NIC is proven by ARP on that host too; a wire
# between its two VMs is joined there with tc over ssh (docs/wires.md).
cat >"$X/one.yaml" <<EOF
apiVersion: topo/v1
name: one
networks:
  n: {mode: isolated, subnet: 10.30.0.0/24}
vms:
  v:
    hypervisor: qemu
    memory: 128MiB
    boot: {kernel: $GUEST_DIR/vmlinuz, initrd: $GUEST_DIR/initrd.gz, cmdline: console=ttyS0 quiet}
    nics: [{network: n}]
  w:
    hypervisor: qemu
    memory: 128MiB
    boot: {kernel: $GUEST_DIR/vmlinuz, initrd: $GUEST_DIR/initrd.gz, cmdline: console=ttyS0 quiet}
    nics: [{network: n}]
links:
  - [v, w]
EOF
topo -c qemu+ssh://root@h2/system apply -y one.yaml || fail "apply of a lab on one remote host"
grep -E "^v +eth0 +n .* arp reply from " "$OUT" >/dev/null || fail "the NIC on the remote host was not proven by ARP"
grep -q "Verify: 2 verified, 0 failed, 0 skipped, 2 unproven." "$OUT" || fail "the wire's ends on the remote host are not reported unproven"
topo -c qemu+ssh://root@h2/system plan one.yaml && grep -q "No changes." "$OUT" || fail "the wire on the remote host was not joined"
topo -c qemu+ssh://root@h2/system destroy -y one.yaml || fail "destroy of the lab on one remote host"
step "a lab on one remote host (qemu+ssh, no hosts:): its NICs proven by ARP on that host (arping over ssh), a wire joined there (tc over ssh), then no changes"

(cd "$ROOT" && cargo test --locked --test machine_ssh --no-run >/dev/null 2>&1)
BIN=$(cd "$ROOT" && ls -t target/debug/deps/machine_ssh-* | grep -v '\.d$' | head -1)
eval "$("$H" env)"
ctl env TOPO_HOSTS_URI_h1="$TOPO_HOSTS_URI_h1" TOPO_HOSTS_URI_h2="$TOPO_HOSTS_URI_h2" \
  "$ROOT/$BIN" --ignored --test-threads 1 >"$OUT" 2>&1 || fail "tests/machine_ssh.rs over real ssh"
step "tests/machine_ssh.rs: tunnels and arping over real ssh on h1 and h2"
rm -rf "$X"

printf '\ntimings:\n' >&2
printf '  %s\n' "${TIMES[@]}" >&2
