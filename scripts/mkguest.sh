#!/bin/bash
# mkguest.sh [OUTDIR]   (default: $TOPO_GUEST_DIR or /var/lib/topo/guest)
#
# Builds topo's tiny test guest for libvirt direct kernel boot:
#   OUTDIR/vmlinuz    Debian 12 linux-image-*-cloud-amd64 kernel (extracted, not installed)
#   OUTDIR/initrd.gz  busybox-static + virtio-net modules; /init runs a DHCP client on each ethX
#   OUTDIR/stamp      build key (this script's hash + kernel flavor) and what was built
# Cached: nothing is done when both files exist and the stamp's key matches.
# Needs apt-get (Debian repos), dpkg-deb, gzip. No root-fs image, no cpio package.
#
# Env: KFLAVOR=cloud-amd64 (default) | amd64;  FORCE=1 rebuilds.
# Guest kernel cmdline knobs (read by /init):
#   topo.hostname=NAME        hostname, also sent as DHCP option 12 (default topo-guest)
#   topo.nodhcp=eth1[,eth2]   these NICs are brought up but get no DHCP client
#   topo.nopoweroff=1         ignore the ACPI power button (virsh shutdown); default: power off
#   topo.ping=ADDR            ping ADDR once a second until it answers, then say so on the console
#   topo.addr6=IFACE,ADDR/LEN also give IFACE this IPv6 address, without duplicate address
#                             detection (a test's duplicate: the guest answers for it at once)
# NICs hot-plugged later get a DHCP client too (/init rescans /sys/class/net every 0.5 s).
# Guest console lines (console=ttyS0; grep for "topo-guest:"):
#   topo-guest: init done, NICs: eth0 eth1 lo
#   topo-guest: eth1 up, no dhcp (topo.nodhcp)
#   topo-guest: eth0 192.168.122.57 52:54:00:..:..:..      (one per lease / renewal)
#   topo-guest: ping 10.10.0.10 ok                          (topo.ping: the first answer)
#   topo-guest: eth2 appeared (hot-plug), starting dhcp
#   topo-guest: power button, powering off
set -euo pipefail
OUT=${1:-${TOPO_GUEST_DIR:-/var/lib/topo/guest}}
KFLAVOR=${KFLAVOR:-cloud-amd64} # amd64: bigger .deb, smaller vmlinuz; same virtio modules
T0=$(date +%s%N)
step() { local t=$(( ($(date +%s%N) - T0) / 1000000 )); printf '[%3d.%01ds] mkguest: %s\n' $((t / 1000)) $((t % 1000 / 100)) "$*" >&2; }

# One build at a time per output folder (two test runs may ask at once): the second waits,
# then finds the first's result cached.
mkdir -p "$(dirname "$OUT")"
exec 8>"$OUT.lock"
flock 8

KEY="topo-guest format=3 kflavor=$KFLAVOR script=$(sha256sum "$0" | cut -c1-16)"
if [ "${FORCE:-0}" != 1 ] && [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.gz" ] &&
  [ "$(head -1 "$OUT/stamp" 2>/dev/null)" = "$KEY" ]; then
  step "cached: $OUT ($(sed -n 2p "$OUT/stamp"))"
  exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
cd "$WORK"

# 1. fetch (do not install) the kernel and busybox-static .debs
kpkg() { apt-cache depends "linux-image-$KFLAVOR" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
KPKG=$(kpkg)
if [ -z "$KPKG" ]; then apt-get update -qq; KPKG=$(kpkg); fi
[ -n "$KPKG" ] || { echo "mkguest: cannot resolve linux-image-$KFLAVOR" >&2; exit 1; }
apt-get download "$KPKG" busybox-static >/dev/null 2>&1 || apt-get download "$KPKG" busybox-static
dpkg-deb -x "$(ls "$KPKG"_*.deb)" k
dpkg-deb -x "$(ls busybox-static_*.deb)" bb
KVER=$(ls k/lib/modules)
BB=bb/bin/busybox
step "fetched $KPKG + busybox-static"

# 2. initramfs tree
R=$WORK/root
mkdir -p "$R"/{bin,dev,proc,sys,run,tmp,lib/modules,usr/share/udhcpc}
cp "$BB" "$R/bin/busybox"
for a in sh ash mount insmod ip ifconfig udhcpc hostname sleep cat sed ls echo mkdir tr rm kill dd poweroff ping; do ln -s busybox "$R/bin/$a"; done
# virtio-net and its deps, in load order (Debian builds all of these as modules)
MODS="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"
for m in $MODS; do
  f=$(find "k/lib/modules/$KVER" -name "$m.ko*" | head -1)
  [ -n "$f" ] || { echo "mkguest: module $m not found in $KPKG" >&2; exit 1; }
  case "$f" in
    *.ko) cp "$f" "$R/lib/modules/$m.ko" ;;
    *.ko.xz) xz -dc "$f" >"$R/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$R/lib/modules/$m.ko" ;;
    *) echo "mkguest: unsupported module file $f" >&2; exit 1 ;;
  esac
done

# ACPI power button -> input event (optional: a kernel without them just ignores shutdown)
for m in button evdev; do
  f=$(find "k/lib/modules/$KVER" -name "$m.ko*" | head -1)
  case "$f" in
    *.ko) cp "$f" "$R/lib/modules/$m.ko" ;;
    *.ko.xz) xz -dc "$f" >"$R/lib/modules/$m.ko" ;;
    *) echo "mkguest: $m module not found; guest will ignore shutdown requests" >&2 ;;
  esac
done

cat >"$R/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    echo "topo-guest: $interface $ip $(cat /sys/class/net/$interface/address)" > /dev/console ;;
esac
exit 0
EOF
chmod 755 "$R/usr/share/udhcpc/default.script"

# /init: MODS is fixed at build time, the rest is literal.
{
  echo '#!/bin/sh'
  echo "MODS=\"$MODS\""
  cat <<'EOF'
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in $MODS; do insmod /lib/modules/$m.ko; done
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
hn=$(arg 'topo\.hostname')
[ -n "$hn" ] || hn=topo-guest
nodhcp=$(arg 'topo\.nodhcp')
hostname "$hn"
ip link set lo up
mkdir -p /run/dhcp

# ACPI power button (virsh shutdown) -> power off at once, unless topo.nopoweroff=1.
# The button driver reports it as a key on an input device named "Power Button"; any
# event there is a press.
if [ "$(arg 'topo\.nopoweroff')" != 1 ] && insmod /lib/modules/button.ko && insmod /lib/modules/evdev.ko; then
  ( for t in 1 2 3 4 5 6 7 8 9 10; do
      found=
      for e in /sys/class/input/event*; do
        [ "$(cat "$e/device/name" 2>/dev/null)" = "Power Button" ] || continue
        found=1
        ( if dd if="/dev/input/${e##*/}" of=/dev/null bs=24 count=1 2>/dev/null; then
            echo "topo-guest: power button, powering off" > /dev/console
            poweroff -f
          fi
          echo "topo-guest: cannot read /dev/input/${e##*/}, shutdown requests are ignored" > /dev/console ) &
      done
      [ -n "$found" ] && exit 0
      sleep 0.5
    done
    echo "topo-guest: no power button device, shutdown requests are ignored" > /dev/console ) &
fi

alive() { # PID: running and not a zombie
  [ -r "/proc/$1/stat" ] || return 1
  set -- $(cat "/proc/$1/stat")
  [ "$3" != Z ]
}

# One DHCP client per interface instance (name + ifindex), started when the interface
# appears (at boot or hot-plugged), restarted if it ever exits, stopped when the
# interface goes away. -f: stay a child of init; 5 DISCOVERs 1 s apart, then 1 s pause,
# repeat (no -n: never gives up).
scan() {
  for d in /sys/class/net/*; do
    i=${d##*/}
    [ "$i" = lo ] && continue
    idx=$(cat "$d/ifindex" 2>/dev/null) || continue
    m=/run/dhcp/$i.$idx
    if [ -e "$m" ]; then
      pid=$(cat "$m")
      [ -z "$pid" ] || alive "$pid" && continue
      # the client exited: start another one below
    else
      for old in /run/dhcp/$i.*; do # same name, another (unplugged) interface
        [ -e "$old" ] || continue
        p=$(cat "$old"); [ -n "$p" ] && kill "$p" 2>/dev/null
        rm -f "$old"
      done
      ip link set "$i" up
      case ",$nodhcp," in
        *",$i,"*) echo "topo-guest: $i up, no dhcp (topo.nodhcp)" > /dev/console; : >"$m"; continue ;;
      esac
      [ -n "$booted" ] && echo "topo-guest: $i appeared (hot-plug), starting dhcp" > /dev/console
    fi
    udhcpc -f -i "$i" -t 5 -T 1 -A 1 -x hostname:"$hn" -s /usr/share/udhcpc/default.script >/dev/null 2>&1 &
    echo $! >"$m"
  done
  for m in /run/dhcp/*; do # interfaces that are gone
    [ -e "$m" ] || continue
    f=${m##*/}
    [ "$(cat "/sys/class/net/${f%.*}/ifindex" 2>/dev/null)" = "${f##*.}" ] && continue
    p=$(cat "$m"); [ -n "$p" ] && kill "$p" 2>/dev/null
    rm -f "$m"
  done
}
booted=
scan
booted=1
# topo.ping=ADDR: another guest's address, answered once the path to it works (across a
# tunnel between hosts, say); -W 1: one second per try.
addr6=$(arg 'topo\.addr6')
if [ -n "$addr6" ]; then
  ( i=${addr6%%,*}; a=${addr6#*,}
    while [ ! -e "/sys/class/net/$i" ]; do sleep 0.5; done
    echo 0 > "/proc/sys/net/ipv6/conf/$i/accept_dad"
    ip -6 addr add "$a" dev "$i" && echo "topo-guest: $i $a (topo.addr6, no DAD)" > /dev/console ) &
fi
pingto=$(arg 'topo\.ping')
if [ -n "$pingto" ]; then
  ( while ! ping -c 1 -W 1 "$pingto" >/dev/null 2>&1; do sleep 1; done
    echo "topo-guest: ping $pingto ok" > /dev/console ) &
fi
echo "topo-guest: init done, NICs: $(ls /sys/class/net | tr '\n' ' ')" > /dev/console
while true; do sleep 0.5; scan; done
EOF
} >"$R/init"
chmod 755 "$R/init"

# 3. pack (newc cpio via busybox's own cpio applet), then move into place atomically
(cd "$R" && find . | "$WORK/$BB" cpio -o -H newc 2>/dev/null) | gzip -1 >"$WORK/initrd.gz"
cp "k/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
rm -f "$OUT/stamp"
mv -f "$WORK/vmlinuz" "$OUT/vmlinuz"
mv -f "$WORK/initrd.gz" "$OUT/initrd.gz"
printf '%s\n%s\n' "$KEY" "kernel $KVER ($KPKG), busybox $(dpkg-deb -f "$(ls busybox-static_*.deb)" Version)" >"$OUT/stamp"
step "built $OUT/vmlinuz ($KVER, $(stat -c %s "$OUT/vmlinuz") B), $OUT/initrd.gz ($(stat -c %s "$OUT/initrd.gz") B)"
