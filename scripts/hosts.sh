#!/bin/bash
# hosts.sh up N | down | status | ctl -- CMD | on hI -- CMD | uri hI | env
#
# Several libvirt hosts on one machine, for topo's multi-host tests (docs/multi-host-harness.md).
# Host hI (I = 1..N) is a network namespace $PFX-hI with a private mount namespace (its own
# /run, /var/lib/libvirt, /etc/libvirt, /var/log/libvirt, /var/cache/libvirt, bound from
# $STATE/hI/) and its own hostname (UTS namespace), held open by a keeper process; in it run
# its own virtlogd, libvirtd and sshd (listening on the host's underlay address only). An
# underlay bridge in the namespace $PFX-ul joins the hosts (ul0 in each, $UL.1I/24) and the
# controller namespace $PFX-ctl ($UL.2), from which everything reaches host hI as
#   qemu+ssh://root@hI/system              (ssh config alias, host key checked), or
#   qemu+ssh://root@$UL.1I/system?keyfile=$STATE/ssh/id_ed25519&no_verify=1
# Nothing here shares /run/libvirt with the one-host sandbox (scripts/sandbox.sh): both can be up.
#
#   up N        (N = 1..9; 2 or 3 is what the tests use) install missing packages, build the
#               underlay, the controller and N hosts, wait until every host answers
#               `virsh -c qemu+ssh://root@hI/system` from the controller. A failed `up` undoes
#               itself (trap). `up` with the same N on a healthy harness does nothing.
#   down        stop everything `up` started (recorded PIDs, then any process left in the
#               harness's namespaces, each by PID), delete the namespaces, /etc/netns/$PFX-ctl
#               and the state dir. Safe after a failed `up`, safe to run twice.
#   status      namespaces, PIDs, whether each libvirtd answers (locally and over ssh from the
#               controller), its domains and networks. Exit 0 if all is well, 3 if not.
#   ctl -- CMD  run CMD in the controller namespace (`ip netns exec`, which also binds the
#               harness's ssh client config over /etc/ssh there)
#   on hI -- CMD  run CMD inside host hI (its network, mount and UTS namespaces, by nsenter:
#               works without sshd). `ctl -- ssh hI CMD` is the same over ssh.
#   uri hI      print host hI's explicit qemu+ssh URI (keyfile, no_verify)
#   env         print `export TOPO_HOSTS_N=... TOPO_HOSTS_STATE=... TOPO_HOSTS_CTL=... TOPO_HOSTS_KEY=...` and the
#               URIs as TOPO_HOSTS_URI_hI
#
# Env: TOPO_HOSTS_PREFIX (topo-mh; namespaces $PFX-ctl, $PFX-ul, $PFX-h1..),
#      TOPO_HOSTS_STATE (/var/lib/topo-hosts; not under /run, which every host replaces),
#      TOPO_HOSTS_UNDERLAY (10.77.0: the /24 of the underlay), TOPO_HOSTS_NO_APT=1 skips packages.
# Progress lines ("[  1.2s] hosts: ...") go to stderr.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PFX=${TOPO_HOSTS_PREFIX:-topo-mh}
STATE=${TOPO_HOSTS_STATE:-/var/lib/topo-hosts}
UL=${TOPO_HOSTS_UNDERLAY:-10.77.0}
CTL=$PFX-ctl
ULNS=$PFX-ul
CTL_ETC=/etc/netns/$CTL # ip netns exec binds each entry here over /etc/ENTRY
KEY=$STATE/ssh/id_ed25519
MARK=$STATE/.topo-hosts # holds N; `down` only deletes a state dir that has it
T0=$(date +%s%N)
TAG=hosts

step() { local t=$(( ($(date +%s%N) - T0) / 1000000 )); printf '[%3d.%01ds] hosts: %s\n' $((t / 1000)) $((t % 1000 / 100)) "$*" >&2; }
die() { printf 'hosts: ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=scripts/proc-common.sh
. "$HERE/proc-common.sh" # starttime live record ours stop_pid wait_pidfile, packages
PKGS+=(openssh-server iputils-ping) # each host's sshd; ping for the tests

addr() { echo "$UL.1${1#h}"; } # hI -> its underlay address
uri() { echo "qemu+ssh://root@$(addr "$1")/system?keyfile=$KEY&no_verify=1"; }
netns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
count() { cat "$MARK" 2>/dev/null || echo 0; }
hosts() { local i; for i in $(seq "$(count)"); do echo "h$i"; done; }
keeper() { ours "$1/keeper" || die "host $1 is not up (no keeper process; run: $0 up N)"; }
in_host() { # hI CMD...: run CMD in host hI's namespaces
  local k
  k=$(keeper "$1")
  shift
  nsenter -t "$k" -m -n -u -- "$@"
}
vsh_local() { in_host "$1" virsh -q -c qemu:///system "${@:2}"; }

# ---------------------------------------------------------------- up
host_files() { # hI: the host's private folders, libvirt and sshd configuration, host key
  local h=$1 d=$STATE/$1
  mkdir -p "$d"/{run,lib,etc,log/qemu,cache,ssh}
  mkdir -p /var/lib/libvirt /etc/libvirt /var/log/libvirt /var/cache/libvirt # mount points
  # A fresh /etc/libvirt, not a copy of the machine's: that one holds the one-host sandbox's
  # domains and networks (and Debian's autostarted 'default' network).
  printf '%s\n' 'user = "root"' 'group = "root"' 'security_driver = "none"' \
    '# two libvirtd on one machine would fight over the same cgroup names' \
    'cgroup_controllers = [ ]' >"$d/etc/qemu.conf"
  printf '%s\n' 'listen_tls = 0' 'listen_tcp = 0' "host_uuid = \"$(cat /proc/sys/kernel/random/uuid)\"" \
    'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"' >"$d/etc/libvirtd.conf"
  ssh-keygen -q -t ed25519 -N '' -C "topo-hosts $h" -f "$d/ssh/ssh_host_ed25519_key"
  cat >"$d/sshd_config" <<EOF
# sshd of harness host $h: its underlay address only, the harness key only
ListenAddress $(addr "$h")
HostKey $d/ssh/ssh_host_ed25519_key
AuthorizedKeysFile $STATE/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile /run/sshd.pid
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
}

host_up() { # hI: namespaces, keeper, virtlogd, libvirtd, sshd
  local h=$1 d=$STATE/$1 ns=$PFX-$1 k p i
  host_files "$h"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add ul0 netns "$ns" type veth peer name "$h" netns "$ULNS"
  ip -n "$ULNS" link set "$h" master ul up
  ip -n "$ns" addr add "$(addr "$h")/24" dev ul0
  ip -n "$ns" link set ul0 up
  # The keeper: a mount namespace of its own inside the host's netns. `umount -l /run/netns`
  # drops its copies of the machine's netns mounts (they would keep other namespaces alive).
  # shellcheck disable=SC2016
  ip netns exec "$ns" unshare --mount --uts --propagation private -- sh -c '
    set -e
    d=$1
    umount -l /run/netns 2>/dev/null || true
    mount --bind "$d/run" /run
    mount --bind "$d/lib" /var/lib/libvirt
    mount --bind "$d/etc" /etc/libvirt
    mount --bind "$d/log" /var/log/libvirt
    mount --bind "$d/cache" /var/cache/libvirt
    mkdir -p /run/sshd /run/libvirt /run/lock # /var/lock is /run/lock: virsh console locks the pty there
    hostname "$2"
    echo $$ >"$d/keeper.ready"
    exec sleep infinity' keeper "$d" "$h" </dev/null >/dev/null 2>"$d/keeper.err" 3>&- 4>&- &
  k=$!
  for i in $(seq 50); do [ -s "$d/keeper.ready" ] && break; live "$k" || break; sleep 0.1; done
  [ "$(cat "$d/keeper.ready" 2>/dev/null)" = "$k" ] || die "keeper of $h did not start: $(cat "$d/keeper.err")"
  record "$h/keeper" "$k"
  readlink "/proc/$k/ns/mnt" >"$d/mntns"

  # Daemons: stdio to files, fds 3/4 (up's saved stdio) closed: a daemon holding a caller's
  # pipe keeps `| tail` waiting forever.
  in_host "$h" virtlogd -d </dev/null >>"$d/log/daemons.out" 2>&1 3>&- 4>&- || die "virtlogd of $h: $(tail -3 "$d/log/daemons.out")"
  p=$(wait_pidfile "$d/run/virtlogd.pid") || die "virtlogd of $h did not start"
  record "$h/virtlogd" "$p"
  # libvirtd starts on CPU 0 (widened once it answers): it keeps QEMU's capability cache only
  # if the host CPU data it reads at start equals the cached one, and that data (CPUID leaf
  # 0x1f, the x2APIC id) differs from core to core. Same core, same data: every host after
  # the first skips the 7-9 s probe by starting from h1's cache.
  taskset -c 0 nsenter -t "$(keeper "$h")" -m -n -u -- libvirtd -d </dev/null >>"$d/log/daemons.out" 2>&1 3>&- 4>&- ||
    die "libvirtd of $h: $(tail -3 "$d/log/daemons.out")"
  p=$(wait_pidfile "$d/run/libvirtd.pid") || { tail -20 "$d/log/libvirtd.log" >&2 2>/dev/null; die "libvirtd of $h did not start"; }
  record "$h/libvirtd" "$p"
  in_host "$h" /usr/sbin/sshd -t -f "$d/sshd_config" || die "sshd config of $h is invalid"
  in_host "$h" /usr/sbin/sshd -f "$d/sshd_config" -E "$d/log/sshd.log" </dev/null >>"$d/log/daemons.out" 2>&1 3>&- 4>&- ||
    die "sshd of $h: $(tail -3 "$d/log/sshd.log")"
  p=$(wait_pidfile "$d/run/sshd.pid") || die "sshd of $h did not start (see $d/log/sshd.log)"
  record "$h/sshd" "$p"
  # First start probes QEMU's capabilities (7-9 s here); a copied cache makes it under 1 s.
  for i in $(seq 600); do
    vsh_local "$h" version >/dev/null 2>&1 && break
    live "$(ours "$h/libvirtd" || echo 0)" || { tail -20 "$d/log/libvirtd.log" >&2 2>/dev/null; die "libvirtd of $h exited while starting"; }
    sleep 0.1
  done
  vsh_local "$h" version >/dev/null 2>&1 || die "libvirtd of $h does not answer after 60 s"
  taskset -a -p -c "0-$(($(nproc) - 1))" "$(ours "$h/libvirtd")" >/dev/null
  step "$h up: netns $ns, $(addr "$h"), keeper $k, virtlogd $(ours "$h/virtlogd"), libvirtd $(ours "$h/libvirtd"), sshd $(ours "$h/sshd")"
}

ctl_ssh_config() { # the controller's ssh client: one alias per host, keys pinned
  local h n
  : >"$STATE/ssh/known_hosts"
  for h in $(hosts); do
    echo "$h,$(addr "$h") $(cut -d' ' -f1,2 "$STATE/$h/ssh/ssh_host_ed25519_key.pub")" >>"$STATE/ssh/known_hosts"
  done
  {
    echo "# The harness's ssh client config (scripts/hosts.sh). In the controller namespace"
    echo "# 'ip netns exec $CTL' binds $CTL_ETC/ssh over /etc/ssh, so this is its system-wide config."
    for h in $(hosts); do printf 'Host %s\n  HostName %s\n' "$h" "$(addr "$h")"; done
    n=$(hosts | xargs)
    echo "Host $n $UL.*"
    echo "  User root"
    echo "  IdentityFile $KEY"
    echo "  IdentitiesOnly yes"
    echo "  UserKnownHostsFile $STATE/ssh/known_hosts"
    echo "  GlobalKnownHostsFile /dev/null"
    echo "  StrictHostKeyChecking yes"
    echo "  BatchMode yes"
    echo "  ConnectTimeout 5"
    echo "  LogLevel ERROR"
  } >"$STATE/ssh/config"
  mkdir -p "$CTL_ETC/ssh"
  cp "$STATE/ssh/config" "$CTL_ETC/ssh/ssh_config"
}

up() {
  local n=${1:-}
  case "$n" in [1-9]) ;; *) echo "usage: $0 up N (N = 1..9)" >&2; exit 2 ;; esac
  if [ -e "$STATE" ]; then
    if [ "$(count)" = "$n" ] && status >/dev/null 2>&1; then step "already up with $n hosts"; return 0; fi
    die "state dir $STATE exists (harness up with $(count) hosts, or left by a failed run): run '$0 down' first"
  fi
  for ns in "$CTL" "$ULNS" $(for i in $(seq "$n"); do echo "$PFX-h$i"; done); do
    netns_exists "$ns" && die "netns $ns exists but $STATE does not: run '$0 down' first"
  done
  install_pkgs TOPO_HOSTS_NO_APT
  ensure_qemu_user
  # fds 3/4: the caller's stderr/stdout. A trap that fires inside a function called with
  # redirections (in_host ... >>log 2>&1) inherits them: the teardown must not write there.
  exec 3>&2 4>&1
  trap 'rc=$?; exec 2>&3 1>&4; if [ $rc != 0 ]; then echo "hosts: up failed (exit $rc): tearing down" >&2; down || true; fi; exit $rc' EXIT
  trap 'exit 130' INT TERM

  mkdir -p "$STATE/ssh"
  chmod 755 "$STATE"
  echo "$n" >"$MARK"
  ssh-keygen -q -t ed25519 -N '' -C topo-hosts-harness -f "$KEY"
  cp "$KEY.pub" "$STATE/ssh/authorized_keys"

  ip netns add "$ULNS"
  ip -n "$ULNS" link set lo up
  ip -n "$ULNS" link add ul type bridge
  ip -n "$ULNS" link set ul up
  ip netns add "$CTL"
  ip -n "$CTL" link set lo up
  ip link add ul0 netns "$CTL" type veth peer name ctl netns "$ULNS"
  ip -n "$ULNS" link set ctl master ul up
  ip -n "$CTL" addr add "$UL.2/24" dev ul0
  ip -n "$CTL" link set ul0 up
  step "underlay $ULNS (bridge ul, $UL.0/24), controller $CTL ($UL.2)"

  local h i
  for i in $(seq "$n"); do
    h=h$i
    # Every host after the first starts from h1's QEMU capability cache (saves the 7-9 s probe).
    mkdir -p "$STATE/$h/cache"
    [ "$i" = 1 ] || cp -a "$STATE/h1/cache/." "$STATE/$h/cache/"
    host_up "$h"
  done

  ctl_ssh_config
  for h in $(hosts); do
    local got=''
    for i in $(seq 50); do
      got=$(ip netns exec "$CTL" virsh -q -c "qemu+ssh://root@$h/system" hostname </dev/null 2>"$STATE/$h/log/ctl-virsh.err") && break
      sleep 0.2
    done
    [ "$got" = "$h" ] || die "from $CTL, qemu+ssh://root@$h/system answers '$got' (expected '$h'): $(cat "$STATE/$h/log/ctl-virsh.err")"
  done
  trap - EXIT INT TERM
  exec 3>&- 4>&-
  step "up: $n hosts answer over qemu+ssh from $CTL ($(hosts | xargs))"
}

# ---------------------------------------------------------------- down
host_down() { # hI: domains and networks, daemons, leftovers, keeper, netns
  local h=$1 ns=$PFX-$1 d=$STATE/$1 p n mnt
  if ours "$h/libvirtd" >/dev/null && vsh_local "$h" version >/dev/null 2>&1; then
    # destroy (not undefine: the state dir goes): qemu and dnsmasq end through libvirt
    for n in $(vsh_local "$h" list --name 2>/dev/null); do vsh_local "$h" destroy "$n" >/dev/null 2>&1 || true; done
    for n in $(vsh_local "$h" net-list --name 2>/dev/null); do vsh_local "$h" net-destroy "$n" >/dev/null 2>&1 || true; done
  fi
  for n in sshd libvirtd virtlogd; do
    if p=$(ours "$h/$n"); then stop_pid "$p" "$h $n"; fi
  done
  # Anything else in the host's namespaces (qemu or dnsmasq of a crashed libvirtd, ssh
  # sessions) was started through this harness: stop it by PID, the keeper last.
  mnt=$(cat "$d/mntns" 2>/dev/null || true)
  local k
  k=$(ours "$h/keeper" || true)
  for p in $( { netns_exists "$ns" && ip netns pids "$ns" 2>/dev/null
    [ -n "$mnt" ] && for f in /proc/[0-9]*/ns/mnt; do [ "$(readlink "$f" 2>/dev/null)" = "$mnt" ] && { f=${f#/proc/}; echo "${f%%/*}"; }; done
  } | sort -un); do
    [ "$p" = "$k" ] && continue
    live "$p" || continue
    step "stopping leftover pid $p ($(ps -o comm= -p "$p" 2>/dev/null)) of $h"
    stop_pid "$p" "leftover of $h"
  done
  [ -z "$k" ] || stop_pid "$k" "$h keeper"
  if netns_exists "$ns"; then ip netns del "$ns"; fi
}

down() {
  local ns p h d
  if [ -e "$STATE" ] && [ ! -f "$MARK" ]; then
    die "$STATE exists but has no $MARK: not a harness state dir, left alone"
  fi
  # hosts: the recorded ones, plus any namespace named like one (a state dir removed by hand)
  for h in $( { for d in "$STATE"/h[0-9]*; do [ -d "$d" ] && echo "${d##*/}"; done
    ip netns list | awk '{print $1}' | sed -n "s/^$PFX-\(h[0-9]\+\)\$/\1/p"; } | sort -u); do
    host_down "$h"
    step "$h down"
  done
  for ns in "$CTL" "$ULNS"; do
    netns_exists "$ns" || continue
    for p in $(ip netns pids "$ns" 2>/dev/null); do
      live "$p" || continue
      step "stopping leftover pid $p ($(ps -o comm= -p "$p" 2>/dev/null)) in $ns"
      stop_pid "$p" "leftover in $ns"
    done
    ip netns del "$ns"
  done
  rm -rf "$CTL_ETC"
  rmdir /etc/netns 2>/dev/null || true
  rm -rf "$STATE"
  step "down"
}

# ---------------------------------------------------------------- status / ctl / on / env
status() {
  local rc=0 h p n ns
  echo "state:    $STATE ($([ -f "$MARK" ] && echo "$(count) hosts" || echo absent))"
  for ns in "$CTL" "$ULNS"; do
    if netns_exists "$ns"; then echo "netns:    $ns (present)"; else echo "netns:    $ns (absent)"; rc=3; fi
  done
  for h in $(hosts); do
    ns=$PFX-$h
    if netns_exists "$ns"; then echo "$h:       netns $ns (present), address $(addr "$h")"; else echo "$h:       netns $ns (absent)"; rc=3; fi
    for n in keeper virtlogd libvirtd sshd; do
      if p=$(ours "$h/$n"); then echo "  $n: pid $p"; else echo "  $n: not running"; rc=3; fi
    done
    if ours "$h/keeper" >/dev/null && vsh_local "$h" version >/dev/null 2>&1; then
      echo "  domains:  $(vsh_local "$h" list --all --name | xargs)"
      echo "  networks: $(vsh_local "$h" net-list --all --name | xargs)"
    else
      echo "  libvirtd does not answer"; rc=3
    fi
    if netns_exists "$CTL" && [ "$(ip netns exec "$CTL" virsh -q -c "qemu+ssh://root@$h/system" hostname </dev/null 2>/dev/null)" = "$h" ]; then
      echo "  from $CTL: qemu+ssh://root@$h/system answers"
    else
      echo "  from $CTL: qemu+ssh://root@$h/system does NOT answer"; rc=3
    fi
  done
  [ "$(count)" != 0 ] || rc=3
  return $rc
}

cmd=${1:-}
[ $# = 0 ] || shift
case "$cmd" in
  up) up "${1:-}" ;;
  down) down ;;
  status) status ;;
  ctl)
    [ "${1:-}" = -- ] && shift
    [ $# -gt 0 ] || die "usage: $0 ctl -- CMD..."
    netns_exists "$CTL" || die "the harness is not up (no netns $CTL)"
    exec ip netns exec "$CTL" "$@" ;;
  on)
    h=${1:-}
    shift || true
    [ "${1:-}" = -- ] && shift
    if [ -z "$h" ] || [ $# = 0 ]; then die "usage: $0 on hI -- CMD..."; fi
    k=$(keeper "$h")
    exec nsenter -t "$k" -m -n -u -- "$@" ;;
  uri) [ -n "${1:-}" ] || die "usage: $0 uri hI"; uri "$1" ;;
  env)
    printf 'export TOPO_HOSTS_N=%s TOPO_HOSTS_STATE=%s TOPO_HOSTS_CTL=%s TOPO_HOSTS_KEY=%s' "$(count)" "$STATE" "$CTL" "$KEY"
    for h in $(hosts); do printf " TOPO_HOSTS_URI_%s='%s'" "$h" "$(uri "$h")"; done
    echo ;;
  *) echo "usage: $0 up N | down | status | ctl -- CMD | on hI -- CMD | uri hI | env" >&2; exit 2 ;;
esac
