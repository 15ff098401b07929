#!/bin/sh
# Layer 2 of the Arch-like test image: run as root inside the debootstrap
# tree (chroot). Everything it changes becomes the second layer.
set -eu

# makepkg refuses to run as root: an unprivileged builder that may sudo
# (makepkg -s calls sudo pacman).
useradd --create-home --user-group --uid 1000 --shell /bin/bash builder
printf 'builder ALL=(ALL) NOPASSWD: ALL\n' >/etc/sudoers.d/builder
chmod 0440 /etc/sudoers.d/builder

# pacman needs /etc/mtab; on Arch it is this symlink.
ln -sf /proc/self/mounts /etc/mtab

# An initialised, empty local pacman database (what `pacman -Q` run once as
# root creates); without it .BUILDINFO generation fails.
mkdir -p /var/lib/pacman/local
printf '9\n' >/var/lib/pacman/local/ALPM_DB_VERSION

# Produce what Arch produces.
sed -i "s/^PKGEXT=.*/PKGEXT='.pkg.tar.zst'/" /etc/makepkg.conf
grep -qx "PKGEXT='.pkg.tar.zst'" /etc/makepkg.conf
