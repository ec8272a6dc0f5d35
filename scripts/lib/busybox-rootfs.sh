#!/bin/bash
# busybox-rootfs.sh OUT.ext4 — build a tiny ext4 root filesystem from the
# busybox-static package: busybox, its applet links, root/nobody users and
# the usual top-level directories. Needs root (file ownership) and mkfs.ext4.
set -euo pipefail
out=${1:?usage: busybox-rootfs.sh OUT.ext4}
bb=/bin/busybox
[ -x "$bb" ] || { echo "busybox-rootfs: $bb missing (apt-get install busybox-static)" >&2; exit 1; }
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree"/{bin,dev,etc,proc,sys,run,root,home,var/tmp,tmp}
chmod 1777 "$tree/tmp" "$tree/var/tmp"
chmod 0700 "$tree/root"
ln -s bin "$tree/sbin"
mkdir -p "$tree/usr"
ln -s ../bin "$tree/usr/bin"
ln -s ../bin "$tree/usr/sbin"
cp "$bb" "$tree/bin/busybox"
for app in $("$bb" --list); do
	case $app in busybox | init | linuxrc) continue ;; esac
	[ -e "$tree/bin/$app" ] || ln -s busybox "$tree/bin/$app"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$tree/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$tree/etc/group"
printf 'PRETTY_NAME="busybox (banger default image)"\nID=busybox\n' >"$tree/etc/os-release"
printf 'export PS1="\\\\h:\\\\w# "\n' >"$tree/root/.profile"
size_kb=$(( $(du -sk "$tree" | cut -f1) * 2 + 16384 ))
rm -f "$out"
truncate -s "${size_kb}K" "$out"
mkfs.ext4 -q -F -L busybox -d "$tree" "$out"
