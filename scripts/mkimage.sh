#!/bin/bash
# mkimage.sh [OUTDIR]   (default: $TOPO_IMAGE_DIR or /var/lib/topo/image)
#
# Builds a Debian 12 cloud image with cloud-init from Debian's packages (no internet image
# needed), for tests, CI, and users without access to the official cloud images:
#   OUTDIR/debian-12-cloud.qcow2   a disk that boots by itself, laid out like an official
#                                   cloud image: an MBR partition table with syslinux's boot
#                                   code, partition 1 a 64 MiB FAT boot partition (syslinux,
#                                   the kernel and initramfs), partition 2, the last, the ext4
#                                   root filesystem (label cloudroot) up to the end of the
#                                   disk; 2 GiB virtual; cloud-init with the NoCloud datasource
#                                   and cloud-guest-utils, so cloud-init's growpart and
#                                   resize_rootfs grow partition 2 and its filesystem into
#                                   the VM's `disk.size` at first boot
#   OUTDIR/vmlinuz, OUTDIR/initrd.img   the same kernel and initramfs, for direct kernel boot
#                                   (`cmdline: root=LABEL=cloudroot console=ttyS0`)
#   OUTDIR/stamp                   build key and what was built
# Boot it from the disk alone (no `boot:` in the lab) or by direct kernel boot: both find
# the root filesystem by its label. See docs/guests.md.
#
# Rootless image surgery: nothing is mounted and no loop device is used. sfdisk writes the
# partition table into the image file, syslinux's mtools-based installer makes the FAT
# partition bootable in a file, mke2fs fills the root partition from the tree
# (`-d`, at `-E offset=`), and the MBR boot code is copied with dd.
#
# Cached: nothing is done when the outputs exist and the stamp's key matches (the key is
# the layout's format number and this script's hash). About 1-2 minutes on 2 cores
# otherwise. Runs as root (mmdebstrap root mode). mmdebstrap takes its packages from the
# host's apt sources.
#
# Env: FORCE=1 rebuilds; SIZE=2G virtual size of the image.
set -euo pipefail
OUT=${1:-${TOPO_IMAGE_DIR:-/var/lib/topo/image}}
SIZE=${SIZE:-2G}
T0=$(date +%s%N)
step() { local t=$(( ($(date +%s%N) - T0) / 1000000 )); printf '[%3d.%01ds] mkimage: %s\n' $((t / 1000)) $((t % 1000 / 100)) "$*" >&2; }

# One build at a time per output folder (two test runs may ask at once): the second waits,
# then finds the first's result cached.
mkdir -p "$(dirname "$OUT")"
exec 8>"$OUT.lock"
flock 8

KEY="topo-image format=2 size=$SIZE script=$(sha256sum "$0" | cut -c1-16)"
if [ "${FORCE:-0}" != 1 ] && [ -s "$OUT/debian-12-cloud.qcow2" ] && [ -s "$OUT/vmlinuz" ] &&
  [ -s "$OUT/initrd.img" ] && [ "$(head -1 "$OUT/stamp" 2>/dev/null)" = "$KEY" ]; then
  step "cached: $OUT ($(sed -n 2p "$OUT/stamp"))"
  exit 0
fi

need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v sfdisk >/dev/null || need+=(fdisk)
command -v mkfs.vfat >/dev/null || need+=(dosfstools)
command -v mcopy >/dev/null || need+=(mtools)
command -v syslinux >/dev/null || need+=(syslinux)
[ -s /usr/lib/syslinux/mbr/mbr.bin ] || need+=(syslinux-common)
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
#    for cloud-init to grow the root filesystem), cloud-guest-utils (growpart, for
#    cloud-init to grow the root partition), ifupdown + dhclient (cloud-init renders its
#    network config for ifupdown on bookworm), resolvconf (the only reader of the
#    `dns-nameservers` lines cloud-init writes for a NIC with a static address: without it a
#    VM whose NICs are all static has no DNS server), the guest agent.
mmdebstrap --quiet --mode=root --variant=apt --format=directory \
  --include=linux-image-cloud-amd64,systemd-sysv,cloud-init,cloud-guest-utils,openssh-server,ifupdown,isc-dhcp-client,resolvconf,netbase,iproute2,udev,sudo,e2fsprogs,qemu-guest-agent \
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
# resolv.conf is resolvconf's (its postinst links it; mmdebstrap may leave its own file).
ln -sfn ../run/resolvconf/resolv.conf "$R/etc/resolv.conf"
: >"$R/etc/machine-id"
cp "$(ls "$R"/boot/vmlinuz-* | head -1)" "$WORK/vmlinuz"
cp "$(ls "$R"/boot/initrd.img-* | head -1)" "$WORK/initrd.img"
KVER=$(basename "$(ls "$R"/boot/vmlinuz-* | head -1)" | sed 's/^vmlinuz-//')
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*

# 3. the disk, in sectors of 512 bytes: partition 1 (FAT, bootable) from 1 MiB, 64 MiB;
#    partition 2 (ext4 root) after it up to the end, so growpart can grow it.
BOOT_START=2048
BOOT_SECTORS=$((64 * 2048))
ROOT_START=$((BOOT_START + BOOT_SECTORS))
truncate -s "$SIZE" "$WORK/disk.raw"
ROOT_SECTORS=$(($(stat -c %s "$WORK/disk.raw") / 512 - ROOT_START))
printf 'label: dos\nlabel-id: 0x746f706f\nstart=%d, size=%d, type=e, bootable\nstart=%d, size=%d, type=83\n' \
  "$BOOT_START" "$BOOT_SECTORS" "$ROOT_START" "$ROOT_SECTORS" | sfdisk --quiet "$WORK/disk.raw"
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$WORK/disk.raw" bs=440 count=1 conv=notrunc status=none
# The boot partition, made in its own file and copied in: FAT16 labelled TOPOBOOT with the
# partition's offset as its hidden sectors, the kernel and initramfs, syslinux.cfg, and
# syslinux's boot sector + ldlinux.sys/ldlinux.c32 (the mtools installer: no mount).
mkfs.vfat -F 16 -n TOPOBOOT -h "$BOOT_START" -C "$WORK/boot.img" $((BOOT_SECTORS / 2)) >/dev/null
cat >"$WORK/syslinux.cfg" <<'CFG'
SERIAL 0 115200
DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND root=LABEL=cloudroot ro console=tty0 console=ttyS0,115200
CFG
mcopy -i "$WORK/boot.img" "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/syslinux.cfg" ::/
syslinux --install "$WORK/boot.img"
dd if="$WORK/boot.img" of="$WORK/disk.raw" bs=512 seek="$BOOT_START" conv=notrunc status=none
# The root partition: ext4 made from the tree, written at its offset in the image.
mkfs.ext4 -q -F -L cloudroot -E offset=$((ROOT_START * 512)) -d "$R" "$WORK/disk.raw" $((ROOT_SECTORS / 2))k
qemu-img convert -c -O qcow2 "$WORK/disk.raw" "$WORK/debian-12-cloud.qcow2"
step "disk: $(du -h "$WORK/debian-12-cloud.qcow2" | cut -f1) qcow2, $SIZE virtual; $(sfdisk -d "$WORK/disk.raw" | grep -c '^/') partitions"

mv "$WORK/debian-12-cloud.qcow2" "$WORK/vmlinuz" "$WORK/initrd.img" "$OUT/"
printf '%s\nDebian 12 cloud-init image (MBR: syslinux FAT boot + ext4 root), kernel %s, built %s\n' "$KEY" "$KVER" "$(date -u +%FT%TZ)" >"$OUT/stamp"
step "done: $OUT"
