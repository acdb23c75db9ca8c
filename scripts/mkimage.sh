#!/bin/bash
# mkimage.sh [OUTDIR]   (default: $TOPO_IMAGE_DIR or /var/lib/topo/image)
#
# Builds a Debian 12 cloud image with cloud-init from Debian's packages (no internet image
# needed), for tests, CI, and users without access to the official cloud images:
#   OUTDIR/debian-12-cloud.qcow2   ext4 root filesystem (label cloudroot) on the whole disk,
#                                   2 GiB virtual, cloud-init with the NoCloud datasource
#   OUTDIR/vmlinuz, OUTDIR/initrd.img   the kernel and initramfs from the image's /boot
#   OUTDIR/stamp                   build key and what was built
# The image has no boot loader: boot it by direct kernel boot with the kernel and initrd
# above and `cmdline: root=LABEL=cloudroot console=ttyS0` (see docs/guests.md). Official
# cloud images (Debian genericcloud, Ubuntu) carry GRUB and boot from the disk alone.
#
# Cached: nothing is done when the outputs exist and the stamp's key matches (the key is
# this script's hash). About 1 minute on 2 cores otherwise. Runs as root (mmdebstrap root
# mode). mmdebstrap takes its packages from the host's apt sources.
#
# Env: FORCE=1 rebuilds; SIZE=2G virtual size of the image.
set -euo pipefail
OUT=${1:-${TOPO_IMAGE_DIR:-/var/lib/topo/image}}
SIZE=${SIZE:-2G}
T0=$(date +%s%N)
step() { local t=$(( ($(date +%s%N) - T0) / 1000000 )); printf '[%3d.%01ds] mkimage: %s\n' $((t / 1000)) $((t % 1000 / 100)) "$*" >&2; }

KEY="topo-image format=1 size=$SIZE script=$(sha256sum "$0" | cut -c1-16)"
if [ "${FORCE:-0}" != 1 ] && [ -s "$OUT/debian-12-cloud.qcow2" ] && [ -s "$OUT/vmlinuz" ] &&
  [ -s "$OUT/initrd.img" ] && [ "$(head -1 "$OUT/stamp" 2>/dev/null)" = "$KEY" ]; then
  step "cached: $OUT ($(sed -n 2p "$OUT/stamp"))"
  exit 0
fi

need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v qemu-img >/dev/null || need+=("qemu-utils/$(. /etc/os-release && echo "$VERSION_CODENAME")")
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  apt-get install -y -qq --no-install-recommends --allow-downgrades "${need[@]}" >/dev/null 2>&1 || {
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends --allow-downgrades "${need[@]}" >/dev/null
  }
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
R=$WORK/root

# 1. the root tree: kernel, systemd, cloud-init, sshd, sudo, e2fsprogs (fsck, and resize2fs
#    for cloud-init to grow the root filesystem), ifupdown + dhclient (cloud-init
#    renders its network config for ifupdown on bookworm), the guest agent.
mmdebstrap --quiet --mode=root --variant=apt --format=directory \
  --include=linux-image-cloud-amd64,systemd-sysv,cloud-init,openssh-server,ifupdown,isc-dhcp-client,netbase,iproute2,udev,sudo,e2fsprogs,qemu-guest-agent \
  bookworm "$R" >/dev/null
step "root tree: $(du -sh "$R" | cut -f1)"

# 2. configure: NoCloud only (no slow probing of other datasources), root by label (the
#    disk order does not matter), no host keys (cloud-init makes new ones per instance).
mkdir -p "$R/etc/cloud/cloud.cfg.d"
printf 'datasource_list: [ NoCloud, None ]\n' >"$R/etc/cloud/cloud.cfg.d/90-topo-datasource.cfg"
# The image has no `locales` package: cloud-init's default en_US.UTF-8 fails its locale
# module (and `cloud-init status` says error); C.UTF-8 is built into glibc.
printf 'locale: C.UTF-8\n' >"$R/etc/cloud/cloud.cfg.d/91-topo-locale.cfg"
printf 'LABEL=cloudroot / ext4 defaults 0 1\n' >"$R/etc/fstab"
rm -f "$R"/etc/ssh/ssh_host_*
: >"$R/etc/machine-id"
cp "$(ls "$R"/boot/vmlinuz-* | head -1)" "$WORK/vmlinuz"
cp "$(ls "$R"/boot/initrd.img-* | head -1)" "$WORK/initrd.img"
KVER=$(basename "$(ls "$R"/boot/vmlinuz-* | head -1)" | sed 's/^vmlinuz-//')
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*

# 3. the disk: ext4 made from the tree, compressed qcow2.
truncate -s "$SIZE" "$WORK/disk.raw"
mkfs.ext4 -q -F -L cloudroot -d "$R" "$WORK/disk.raw"
qemu-img convert -c -O qcow2 "$WORK/disk.raw" "$WORK/debian-12-cloud.qcow2"
step "disk: $(du -h "$WORK/debian-12-cloud.qcow2" | cut -f1) qcow2, $SIZE virtual"

mv "$WORK/debian-12-cloud.qcow2" "$WORK/vmlinuz" "$WORK/initrd.img" "$OUT/"
printf '%s\nDebian 12 cloud-init image, kernel %s, built %s\n' "$KEY" "$KVER" "$(date -u +%FT%TZ)" >"$OUT/stamp"
step "done: $OUT"
