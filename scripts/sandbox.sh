#!/bin/bash
# sandbox.sh up|down|status|env|seed-default
#
# A private libvirt sandbox for topo's end-to-end tests on Debian 12 (root, no systemd
# as PID 1, QEMU TCG). libvirtd, virtlogd, and everything they start (bridges, dnsmasq,
# iptables rules, guest taps, qemu) live in the network namespace $TOPO_NETNS, so no
# frame ever touches the host's own interfaces. The qemu:///system socket in /run/libvirt
# is reachable from every namespace; anything that sends frames on a bridge (arping)
# must run inside it: `ip netns exec "$TOPO_NETNS" ...`.
#
#   up            install missing packages, configure libvirt, create the netns, start
#                 virtlogd + libvirtd inside it, wait for `virsh version`. Idempotent.
#                 Defines NO network (topo creates its own). A freshly started daemon
#                 is emptied of domains/networks left by a crashed earlier run
#                 (TOPO_SANDBOX_KEEP_STALE=1 keeps them).
#   down          destroy/undefine every domain and network of the sandbox daemon, stop
#                 the daemons started by `up` (by recorded PID only), delete the netns,
#                 remove the state dir. Safe after a failed `up`, safe to run twice.
#   status        print what is running; exit 0 if the sandbox daemon answers, 3 if not.
#   env           print `export LIBVIRT_DEFAULT_URI=... TOPO_NETNS=... TOPO_GUEST_DIR=...`
#   seed-default  define + start NAT network 'default' (192.168.122.0/24, bridge virbr0,
#                 stp off, dnsmasq no-ping) for tests needing a pre-existing network.
#
# Env: TOPO_NETNS (topo-sbx), TOPO_SANDBOX_STATE (/run/topo-sandbox),
#      TOPO_GUEST_DIR (/var/lib/topo/guest; only printed by `env`),
#      TOPO_SANDBOX_NO_APT=1 skips the package step (fails later if something is missing).
# Timing lines ("[  1.2s] sandbox: ...") go to stderr; `env` output goes to stdout.
set -euo pipefail

NS=${TOPO_NETNS:-topo-sbx}
STATE=${TOPO_SANDBOX_STATE:-/run/topo-sandbox}
GUEST_DIR=${TOPO_GUEST_DIR:-/var/lib/topo/guest}
URI=qemu:///system
OVERLAY_POOL=topo-overlays # topo's pool for VM overlays (ownership::OVERLAY_POOL)
export LIBVIRT_DEFAULT_URI=$URI
T0=$(date +%s%N)

step() { local t=$(( ($(date +%s%N) - T0) / 1000000 )); printf '[%3d.%01ds] sandbox: %s\n' $((t / 1000)) $((t % 1000 / 100)) "$*" >&2; }
die() { printf 'sandbox: ERROR: %s\n' "$*" >&2; exit 1; }
vsh() { virsh -q -c "$URI" "$@"; }

HERE=$(cd "$(dirname "$0")" && pwd)
TAG=sandbox
# shellcheck source=scripts/proc-common.sh
. "$HERE/proc-common.sh" # starttime live record ours stop_pid wait_pidfile same_run, packages

# ---------------------------------------------------------------- process identity
foreign() { # NAME: live processes named NAME that are not the recorded one of ours
  # A daemon with a /run of its own (a host of scripts/hosts.sh, in a private mount
  # namespace) cannot own /run/libvirt/libvirt-sock: it is no obstacle.
  local mine p
  mine=$(ours "$1" || true)
  for p in $(pgrep -x "$1" || true); do
    [ "$p" = "$mine" ] && continue
    live "$p" && same_run "$p" && echo "$p"
  done
  return 0
}
netns_exists() { ip netns list | awk '{print $1}' | grep -qx "$NS"; }
where() { local n; n=$(ip netns identify "$1" 2>/dev/null) || n='?'; echo "${n:-host}"; }

# ---------------------------------------------------------------- up
configure_libvirt() {
  ensure_qemu_user
  # libvirtd -d exits at once without its log dir; console logs go there too.
  mkdir -p /etc/libvirt /var/log/libvirt/qemu /var/lib/libvirt /run/libvirt "$STATE"
  local want='user = "root"
group = "root"
security_driver = "none"'
  if [ "$(cat /etc/libvirt/qemu.conf 2>/dev/null)" != "$want" ]; then
    [ -f /etc/libvirt/qemu.conf ] && [ ! -f /etc/libvirt/qemu.conf.topo-orig ] &&
      cp /etc/libvirt/qemu.conf /etc/libvirt/qemu.conf.topo-orig
    printf '%s\n' "$want" >/etc/libvirt/qemu.conf
  fi
}

up() {
  install_pkgs TOPO_SANDBOX_NO_APT
  configure_libvirt
  step "libvirt configured (qemu.conf, libvirt-qemu user, dirs)"

  # Refuse to share the host with a libvirtd/virtlogd that is not this sandbox's.
  local f
  f=$(foreign libvirtd)
  [ -z "$f" ] || die "another libvirtd is running (pid $(echo $f), netns: $(for p in $f; do where "$p"; done | xargs)), not started by this sandbox (state $STATE). It owns /run/libvirt/libvirt-sock; stop it first (or run 'down' with the TOPO_NETNS/TOPO_SANDBOX_STATE it was started with)."
  f=$(foreign virtlogd)
  [ -z "$f" ] || die "another virtlogd is running (pid $(echo $f), netns: $(for p in $f; do where "$p"; done | xargs)), not started by this sandbox; stop it first."

  # A recorded netns name that differs from ours means another sandbox config owns the state.
  if [ -s "$STATE/netns" ] && [ "$(cat "$STATE/netns")" != "$NS" ]; then
    die "state dir $STATE belongs to netns '$(cat "$STATE/netns")', not '$NS'; run 'TOPO_NETNS=$(cat "$STATE/netns") $0 down' first"
  fi
  echo "$NS" >"$STATE/netns" # before creating it, so a failed `up` is still cleaned by `down`
  if ! netns_exists; then ip netns add "$NS"; fi
  ip -n "$NS" link set lo up
  step "netns $NS ready"

  local p
  if p=$(ours virtlogd); then
    step "virtlogd already running (pid $p)"
  else
    # A stale pid file of a dead daemon is harmless (daemons lock it), but drop it so we
    # never read an old PID back.
    [ -s /run/virtlogd.pid ] && ! live "$(cat /run/virtlogd.pid)" && rm -f /run/virtlogd.pid
    ip netns exec "$NS" virtlogd -d
    p=$(wait_pidfile /run/virtlogd.pid) || die "virtlogd did not start"
    record virtlogd "$p"
    step "virtlogd started in $NS (pid $p)"
  fi

  local fresh=0
  if p=$(ours libvirtd); then
    step "libvirtd already running (pid $p)"
  else
    fresh=1
    [ -s /run/libvirtd.pid ] && ! live "$(cat /run/libvirtd.pid)" && rm -f /run/libvirtd.pid
    # Also listen on TCP, without auth, on the namespace's own loopback only (127.0.0.1 inside
    # $NS is unreachable from the host): `qemu+tcp://127.0.0.1/system` from inside the netns
    # is a remote-style URI, for testing topo's remote-host behaviour.
    mkdir -p "$STATE"
    printf 'listen_tls = 0\nlisten_tcp = 1\nlisten_addr = "127.0.0.1"\nauth_tcp = "none"\n' >"$STATE/libvirtd.conf"
    ip netns exec "$NS" libvirtd -d --listen -f "$STATE/libvirtd.conf"
    p=$(wait_pidfile /run/libvirtd.pid) || {
      tail -20 /var/log/libvirt/libvirtd.log >&2 2>/dev/null || true
      die "libvirtd did not start (see /var/log/libvirt/libvirtd.log)"
    }
    record libvirtd "$p"
    step "libvirtd started in $NS (pid $p)"
  fi
  [ "$(where "$p")" = "$NS" ] || die "libvirtd pid $p is in netns '$(where "$p")', expected $NS"

  # First start probes QEMU capabilities (7-9 s here); later starts take under a second.
  local i
  for i in $(seq 600); do
    vsh version >/dev/null 2>&1 && break
    live "$p" || { tail -20 /var/log/libvirt/libvirtd.log >&2 2>/dev/null || true; die "libvirtd (pid $p) exited while starting"; }
    sleep 0.1
  done
  vsh version >/dev/null 2>&1 || die "libvirtd (pid $p) does not answer on $URI after 60 s"
  step "libvirtd answers on $URI ($(vsh version | awk '/Running hypervisor/{print $3,$4}'))"

  # A freshly started sandbox daemon must start empty: domains/networks still defined
  # here come from a run whose daemon died before `down` could remove them.
  if [ "$fresh" = 1 ]; then
    local stale
    stale=$( (vsh list --all --name; vsh net-list --all --name
      if vsh pool-info "$OVERLAY_POOL" >/dev/null 2>&1; then echo "pool:$OVERLAY_POOL"; fi) | xargs)
    if [ -n "$stale" ]; then
      if [ "${TOPO_SANDBOX_KEEP_STALE:-0}" = 1 ]; then
        step "WARNING: stale objects kept (TOPO_SANDBOX_KEEP_STALE=1): $stale"
      else
        wipe
        step "removed stale domains/networks of an earlier crashed run: $stale"
      fi
    fi
  fi
}

# ---------------------------------------------------------------- down
wipe() { # destroy + undefine every domain and network of the (private) sandbox daemon, and topo's overlay pool
  local d n
  for d in $(vsh list --all --name); do
    vsh destroy "$d" >/dev/null 2>&1 || true
    # --snapshots-metadata: libvirt refuses to undefine a stopped domain with snapshots.
    vsh undefine --nvram --snapshots-metadata "$d" >/dev/null 2>&1 \
      || vsh undefine --snapshots-metadata "$d" >/dev/null 2>&1 || vsh undefine "$d" >/dev/null 2>&1 || true
  done
  for n in $(vsh net-list --all --name); do
    vsh net-destroy "$n" >/dev/null 2>&1 || true
    vsh net-undefine "$n" >/dev/null 2>&1 || true
  done
  # topo's overlay pool and its volumes (libvirt keeps pool definitions on disk, so a run
  # that failed before `destroy` would leave overlays for the next sandbox to trip on).
  if vsh pool-info "$OVERLAY_POOL" >/dev/null 2>&1; then
    vsh pool-start "$OVERLAY_POOL" >/dev/null 2>&1 || true
    vsh pool-refresh "$OVERLAY_POOL" >/dev/null 2>&1 || true
    for v in $(vsh vol-list "$OVERLAY_POOL" 2>/dev/null | awk '{print $1}'); do
      vsh vol-delete --pool "$OVERLAY_POOL" "$v" >/dev/null 2>&1 || true
    done
    vsh pool-destroy "$OVERLAY_POOL" >/dev/null 2>&1 || true
    vsh pool-undefine "$OVERLAY_POOL" >/dev/null 2>&1 || true
  fi
}

down() {
  local ns_rec="$NS" lp p
  [ -s "$STATE/netns" ] && ns_rec=$(cat "$STATE/netns")
  NS=$ns_rec

  # Only wipe domains/networks if the daemon answering is ours (private sandbox daemon).
  if lp=$(ours libvirtd) && vsh version >/dev/null 2>&1; then
    wipe
    step "domains and networks removed"
  elif [ -s "$STATE/libvirtd.pid" ]; then
    step "libvirtd of this sandbox is gone; any domains/networks it defined are removed by the next 'up'"
  fi
  if lp=$(ours libvirtd); then stop_pid "$lp" libvirtd; step "libvirtd (pid $lp) stopped"; fi
  if p=$(ours virtlogd); then stop_pid "$p" virtlogd; step "virtlogd (pid $p) stopped"; fi

  if [ -s "$STATE/netns" ] && netns_exists; then
    # Anything still inside our private netns (qemu or dnsmasq orphaned by a crashed
    # libvirtd) was started by this sandbox: stop it by PID before deleting the netns.
    for p in $(ip netns pids "$NS" 2>/dev/null); do
      live "$p" || continue
      step "stopping leftover pid $p ($(ps -o comm= -p "$p")) in $NS"
      stop_pid "$p" "leftover"
    done
    ip netns del "$NS"
    step "netns $NS deleted"
  fi
  rm -rf "$STATE"
  step "down"
}

# ---------------------------------------------------------------- status / env / seed
status() {
  local p rc=0
  echo "netns:    $NS ($(netns_exists && echo present || echo absent))"
  echo "state:    $STATE ($([ -d "$STATE" ] && echo present || echo absent))"
  for d in virtlogd libvirtd; do
    if p=$(ours "$d"); then echo "$d: running, pid $p, netns $(where "$p")"; else echo "$d: not running (ours)"; fi
  done
  if ours libvirtd >/dev/null && vsh version >/dev/null 2>&1; then
    echo "domains:  $(vsh list --all --name | xargs)"
    echo "networks: $(vsh net-list --all --name | xargs)"
  else
    rc=3
  fi
  local leak
  leak=$(ip -br link | awk '$1 ~ /^(virbr|vnet)/{print $1}' | xargs)
  echo "host-netns leak: ${leak:-none}"
  return $rc
}

seed_default() {
  ours libvirtd >/dev/null && vsh version >/dev/null 2>&1 || die "sandbox is not up (run: $0 up)"
  if ! vsh net-info default >/dev/null 2>&1; then
    local x
    x=$(mktemp)
    cat >"$x" <<'EOF'
<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>
  <name>default</name>
  <forward mode='nat'/>
  <bridge name='virbr0' stp='off' delay='0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp>
  </ip>
  <dnsmasq:options><dnsmasq:option value='no-ping'/></dnsmasq:options>
</network>
EOF
    vsh net-define "$x" >/dev/null
    rm -f "$x"
  fi
  [ "$(vsh net-info default | awk '/^Active/{print $2}')" = yes ] || vsh net-start default >/dev/null
  step "network 'default' active (virbr0, 192.168.122.0/24, NAT)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) echo "export LIBVIRT_DEFAULT_URI=$URI TOPO_NETNS=$NS TOPO_GUEST_DIR=$GUEST_DIR" ;;
  seed-default) seed_default ;;
  *) echo "usage: $0 up|down|status|env|seed-default" >&2; exit 2 ;;
esac
