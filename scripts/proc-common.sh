# shellcheck shell=bash
# proc-common.sh — sourced by scripts/sandbox.sh and scripts/hosts.sh: process identity
# (PID + start time), stopping by PID, the Debian packages of a libvirt host, libvirt's
# qemu user. Before sourcing, the caller defines `step MSG` (progress line on stderr) and
# sets TAG (the prefix of warnings, e.g. "sandbox") and STATE (the folder NAME.pid files go
# into; NAME may hold a slash: "h1/libvirtd" is $STATE/h1/libvirtd.pid).

# ---------------------------------------------------------------- process identity
# A PID is "ours" only if the process still exists, is not a zombie, and has the same
# start time (field 22 of /proc/PID/stat) as when we recorded it (guards PID reuse).
starttime() { # PID -> start time in clock ticks since boot
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }  # comm may contain spaces/parens: cut after the last ") "
  # shellcheck disable=SC2086
  set -- $s    # $1 is field 3 (state), so field 22 is ${20}
  echo "${20}"
}
live() { # PID: exists and is not a zombie (PID 1 here reaps orphans lazily)
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  case "$st" in "" | Z*) return 1 ;; esac
}
record() { # NAME PID: remember a process we started
  echo "$2 $(starttime "$2")" >"$STATE/$1.pid"
}
ours() { # NAME -> prints PID if the recorded process is still alive and the same one
  local f="$STATE/$1.pid" pid st
  [ -s "$f" ] || return 1
  read -r pid st <"$f"
  live "$pid" && [ "$(starttime "$pid" 2>/dev/null)" = "$st" ] && echo "$pid"
}
stop_pid() { # PID LABEL: TERM, wait up to 5 s (zombie counts as gone), then KILL
  local pid=$1 i
  kill "$pid" 2>/dev/null || true
  for i in $(seq 50); do live "$pid" || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  for i in $(seq 20); do live "$pid" || return 0; sleep 0.1; done
  echo "$TAG: warning: $2 (pid $pid) did not exit" >&2
}
wait_pidfile() { # FILE -> PID once FILE names a live process (daemon wrote it)
  local _ p
  for _ in $(seq 100); do
    if [ -s "$1" ]; then p=$(cat "$1"); live "$p" && { echo "$p"; return 0; }; fi
    sleep 0.1
  done
  return 1
}
same_run() { # PID: the process sees this shell's /run (so it can own /run/libvirt/libvirt-sock)
  [ "$(stat -L -c %d:%i "/proc/$1/root/run" 2>/dev/null)" = "$(stat -L -c %d:%i /run)" ]
}

# ---------------------------------------------------------------- packages
# libvirt 9.0 has no nftables backend: without iptables every network fails, and a libvirtd
# started before it was installed keeps failing until restarted. So it goes first.
PKGS_FIRST=(iptables)
PKGS=(libvirt-daemon libvirt-clients qemu-system-x86 qemu-utils dnsmasq-base iputils-arping ndisc6
  arp-scan libvirt-dev pkg-config busybox-static openssh-client iproute2 libpcap-dev tcpdump)

missing_pkgs() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed || echo "$p"
  done
}

install_pkgs() { # SKIP_VAR: install what PKGS_FIRST, then PKGS, lack; the env var SKIP_VAR=1 skips
  [ "${!1:-0}" = 1 ] && { step "packages: skipped ($1=1)"; return; }
  local miss1 miss2
  miss1=$(missing_pkgs "${PKGS_FIRST[@]}")
  miss2=$(missing_pkgs "${PKGS[@]}")
  if [ -z "$miss1$miss2" ]; then step "packages: all present"; return; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  [ -z "$miss1" ] || apt-get install -y -qq --no-install-recommends $miss1 >/dev/null
  # A machine image may carry a newer qemu-utils (a backport) that Breaks the release's
  # qemu-system-common: install qemu-utils from the release itself alongside QEMU.
  miss2=$(echo "$miss2" | sed "s#^qemu-system-x86\$#qemu-system-x86 qemu-utils/$(. /etc/os-release && echo "$VERSION_CODENAME")#")
  # shellcheck disable=SC2086
  [ -z "$miss2" ] || apt-get install -y -qq --no-install-recommends --allow-downgrades $miss2 >/dev/null
  step "packages installed: $(echo $miss1 $miss2)"
}

ensure_qemu_user() {
  # Normally done by libvirt-daemon-system (which wants systemd, so we skip it):
  # the qemu driver resolves its built-in user 'libvirt-qemu' even when qemu.conf says root.
  getent passwd libvirt-qemu >/dev/null ||
    useradd --system --user-group --no-create-home --home-dir /var/lib/libvirt \
      --shell /usr/sbin/nologin libvirt-qemu
}
