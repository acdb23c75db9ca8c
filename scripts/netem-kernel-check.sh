#!/bin/bash
# netem-kernel-check.sh — runs topo's tc commands for netem on a kernel that has netem.
#
# Why: a host kernel built without sch_netem and sch_sfq (this project's CI machines) cannot
# show netem working, nor libvirt's <bandwidth>. This boots a throwaway QEMU VM (TCG, no
# NIC, no libvirt) on Debian 12's cloud kernel, which has them as modules, with busybox and
# this machine's iproute2 `ip`/`tc`. Inside it, a veth pair plays a VM's tap (host side
# `tap0`/`tap1`) and the guest's NIC (in a netns); on `tap0` it runs libvirt's own commands
# for <bandwidth inbound/outbound average='1250'/> (src/util/virnetdevbandwidth.c), then
# the commands topo's `impair::tc_commands` gives (a unit test keeps them equal to this
# script's lines marked `# topo:`), printing `tc -j qdisc show` after each and the ARP round
# trip (busybox arping) before and after. Prints `netem-check:` lines; exit 0 when every
# measured round trip is as the settings say (>= the delay; < 20 ms without), else 1.
#
# Needs: apt-get (Debian repos; the kernel .deb is fetched, not installed), dpkg-deb, qemu-
# system-x86_64, iproute2. About 30 s. Env: KFLAVOR=cloud-amd64 (default).
set -euo pipefail
KFLAVOR=${KFLAVOR:-cloud-amd64}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
kpkg() { apt-cache depends "linux-image-$KFLAVOR" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
KPKG=$(kpkg)
if [ -z "$KPKG" ]; then apt-get update -qq; KPKG=$(kpkg); fi
apt-get download "$KPKG" busybox-static >/dev/null 2>&1 || apt-get download "$KPKG" busybox-static
dpkg-deb -x "$(ls "$KPKG"_*.deb)" k
dpkg-deb -x "$(ls busybox-static_*.deb)" bb
KVER=$(ls k/lib/modules)
R=$WORK/root
mkdir -p "$R"/{bin,sbin,dev,proc,sys,run,tmp,lib/modules,var/run/netns}
cp bb/bin/busybox "$R/bin/"
for a in sh mount insmod sleep cat echo poweroff arping grep sed tr awk; do ln -s busybox "$R/bin/$a"; done
# iproute2 from this machine, with its libraries (busybox's ip and tc lack netns and netem).
cp "$(command -v tc)" "$(command -v ip)" "$R/sbin/"
for l in $(ldd "$(command -v tc)" "$(command -v ip)" | grep -o '/lib[^ ]*' | sort -u); do
  mkdir -p "$R$(dirname "$l")"
  cp -L "$l" "$R$l"
done
MODS="veth sch_htb sch_sfq sch_netem cls_fw act_police cls_u32 sch_ingress"
for m in $MODS; do
  f=$(find "k/lib/modules/$KVER" -name "$m.ko*" | head -1)
  case "$f" in
    *.ko) cp "$f" "$R/lib/modules/$m.ko" ;;
    *.ko.xz) xz -dc "$f" >"$R/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$R/lib/modules/$m.ko" ;;
    *) echo "netem-check: no module $m in $KPKG" >&2; exit 1 ;;
  esac
done
cat >"$R/init" <<EOF
#!/bin/sh
export PATH=/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs devtmpfs /dev; mount -t tmpfs tmpfs /run
mkdir -p /run/netns /var/run/netns
for m in $MODS; do insmod /lib/modules/\$m.ko || echo "netem-check: FAIL insmod \$m"; done
EOF
cat >>"$R/init" <<'EOF'
IP=/sbin/ip; TC=/sbin/tc
$IP link set lo up
$IP netns add g
for i in 0 1; do
  $IP link add tap$i type veth peer name eth$i netns g
  $IP addr add 10.9.$i.1/24 dev tap$i; $IP link set tap$i up
  $IP -n g addr add 10.9.$i.2/24 dev eth$i; $IP -n g link set eth$i up
done
$IP -n g link set lo up
sleep 1
# expect TAP MIN_MS MAX_MS: the slowest of 3 ARP round trips must lie in [MIN, MAX).
expect() {
  ms=$(arping -c 3 -I $1 10.9.${1#tap}.2 2>&1 | grep -o '[0-9.]*ms' | tr -d ms | sort -n | tail -1)
  ok=$(awk -v v="$ms" -v lo="$2" -v hi="$3" 'BEGIN { print (v != "" && v >= lo && v < hi) ? "ok" : "FAIL" }')
  echo "netem-check: $ok rtt $1 ${ms:-none} ms (want $2..$3)"
}
run() { echo "netem-check: \$ tc $*"; $TC "$@" 2>&1 | sed 's/^/netem-check: FAIL   /'; }
show() { echo "netem-check: json $1 $($TC -j qdisc show dev $1)"; }
expect tap0 0 20
# libvirt: <bandwidth><inbound average='1250'/><outbound average='1250'/></bandwidth>
run qdisc add dev tap0 root handle 1: htb default 1
run class add dev tap0 parent 1: classid 1:1 htb rate 1250kbps ceil 1250kbps
run qdisc add dev tap0 parent 1:1 handle 2: sfq perturb 10
run filter add dev tap0 parent 1:0 protocol all prio 1 handle 1 fw flowid 1
run qdisc add dev tap0 ingress
run filter add dev tap0 parent ffff: protocol all u32 match u32 0 0 police rate 1250kbps burst 1024kb mtu 64kb drop flowid :1
show tap0
run qdisc replace dev tap0 parent 1:1 handle 1f00: netem delay 50000us 5000us loss 1% # topo:
show tap0; expect tap0 45 200
run qdisc replace dev tap0 parent 1:1 handle 1f00: netem delay 80000us # topo:
show tap0; expect tap0 80 200
run qdisc replace dev tap0 parent 1:1 handle 2: sfq perturb 10 # topo:
show tap0; expect tap0 0 20
run qdisc replace dev tap1 root handle 1f00: netem delay 50000us # topo:
show tap1; expect tap1 50 200
run qdisc replace dev tap1 root handle 1f00: netem delay 20000us 5000us loss 0.5% # topo:
show tap1
run qdisc del dev tap1 root # topo:
show tap1; expect tap1 0 20
echo "netem-check: done"
poweroff -f
EOF
chmod +x "$R/init"
(cd "$R" && find . | "$WORK/bb/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -1 >initrd.gz
timeout 300 qemu-system-x86_64 -M pc -m 256 -kernel "k/boot/vmlinuz-$KVER" -initrd initrd.gz \
  -append "console=ttyS0 quiet panic=-1" -nographic -no-reboot -nic none </dev/null >console.log 2>&1 || true
grep -a 'netem-check:' console.log | tr -d '\r'
grep -aq 'netem-check: done' console.log || { echo "netem-check: the VM did not finish" >&2; exit 1; }
! grep -aq 'netem-check: FAIL' console.log
