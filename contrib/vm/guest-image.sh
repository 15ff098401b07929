#!/bin/sh
# guest-image.sh CACHE_DIR — build (once, cached by recipe hash) the Debian 12
# guest of the VM test harness and print the directory holding its kernel
# (vmlinuz), initrd (initrd.img) and root filesystem (guest.img).
#
# The recipe is this file and vagent-vm.service: any change to it makes a new image. The guest is a
# minbase bookworm with systemd, Debian's own kernel and the few programs the
# tests call; the tests themselves come from the 9p share at each boot, so
# changing them never rebuilds the image.
set -eu
cache=${1:?usage: guest-image.sh CACHE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
# Debian packages of the guest (the host needs VM_PACKAGES from the Makefile).
# dbus and libpam-systemd: the rootless placement's user manager
# (user@UID.service) needs logind for its runtime directory and pam_systemd
# for XDG_RUNTIME_DIR, as on any Debian system with a login.
GUEST_PACKAGES="systemd-sysv linux-image-amd64 kmod util-linux procps iproute2 \
busybox-static docker-registry ca-certificates e2fsprogs passt uidmap dbus libpam-systemd"
key=$(cat "$here/guest-image.sh" "$here/vagent-vm.service" | sha256sum | cut -c1-12)
dir=$cache/guest-$key
if [ -f "$dir/guest.img" ] && [ -f "$dir/vmlinuz" ] && [ -f "$dir/initrd.img" ]; then
	echo "$dir"
	exit 0
fi
mkdir -p "$cache"
# One builder at a time; a second caller waits, then finds the image.
exec 9>"$cache/.lock-$key"
flock 9
if [ -f "$dir/guest.img" ]; then echo "$dir"; exit 0; fi

# The mirror apt is configured with (no host name is hard-coded).
mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Created-By: Packages' 2>/dev/null |
	grep -v security | head -n1)
mirror=${mirror:-http://deb.debian.org/debian/}
tmp=$(mktemp -d "$cache/.build-$key.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "building the VM guest image (mmdebstrap from $mirror, takes minutes)" >&2
pkgs=$(echo $GUEST_PACKAGES | tr ' ' ,)
mmdebstrap --variant=minbase --include="$pkgs" \
	--customize-hook='echo vagent-vm > "$1/etc/hostname"' \
	--customize-hook='printf "/dev/vda / ext4 rw 0 1\n" > "$1/etc/fstab"' \
	--customize-hook='mkdir -p "$1/host" "$1/results" "$1/testimages"' \
	--customize-hook="cp '$here/vagent-vm.service' \"\$1/etc/systemd/system/\"" \
	--customize-hook='chroot "$1" systemctl enable vagent-vm.service' \
	--customize-hook='chroot "$1" systemctl mask getty@tty1.service serial-getty@ttyS0.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service docker-registry.service' \
	bookworm "$tmp/root" "$mirror" >&2
cp -L "$tmp/root/vmlinuz" "$tmp/vmlinuz"
cp -L "$tmp/root/initrd.img" "$tmp/initrd.img"
mkfs.ext4 -q -L vagent-vm -d "$tmp/root" "$tmp/guest.img" 12G >&2
rm -rf "$tmp/root"
mv "$tmp" "$dir"
trap - EXIT
echo "$dir"
