#!/bin/bash
# build.sh OUT — build the nested lab's L1 guest in directory OUT:
#   OUT/vmlinux        the Debian cloud kernel (the kerneltest fixture)
#   OUT/initrd-l1.img  banger-agent as /init plus virtio, kvm_amd, tun, bridge
#                      and nf_tables (bangerd's host networking in L1)
#   OUT/lab.ext4       L1 root: busybox, Firecracker (and the jailer), the
#                      banger binaries, the driver test binaries, QEMU and
#                      e2fsprogs with their libraries, the kernel fixture and
#                      the run script (l1-run.sh)
# Inputs (environment):
#   BANGER_FIRECRACKER_BIN  Firecracker >= 1.8 (required; see docs/firecracker.md)
#   BANGER_JAILER_BIN       jailer (optional: enables the jailer tests in L1)
#   BANGER_TEST_CACHE       test cache holding the imported kernel (default /var/cache/banger-test)
# Needs root (file ownership in the image), go, mkfs.ext4, busybox-static and
# qemu-system-x86 on the host.
set -euo pipefail
out=${1:?usage: build.sh OUT}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
fc=${BANGER_FIRECRACKER_BIN:?set BANGER_FIRECRACKER_BIN to a Firecracker binary (docs/firecracker.md)}
jailer=${BANGER_JAILER_BIN:-}
cache=${BANGER_TEST_CACHE:-/var/cache/banger-test}

kdir=$(ls -d "$cache"/kernels/*-cloud-amd64 2>/dev/null | sort | tail -n1 || true)
if [ -z "$kdir" ] || [ ! -f "$kdir/vmlinux" ]; then
	echo "build.sh: no imported Debian cloud kernel under $cache/kernels;" \
		"run 'go test ./internal/kernel/kerneltest' once to fetch and import it" >&2
	exit 1
fi
deb=$(ls "$cache"/linux-image-[0-9]*-cloud-amd64_*.deb | sort | tail -n1)
"$fc" --version | head -n1

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$out/work
rm -rf "$work"
mkdir -p "$work/bin"
R=$work/root

echo "== binaries"
(
	cd "$repo"
	for c in banger bangerd banger-agent; do
		CGO_ENABLED=0 go build -o "$work/bin/$c" "./cmd/$c"
	done
	CGO_ENABLED=0 go test -c -o "$work/bin/firecracker.test" ./internal/vmm/firecracker
	CGO_ENABLED=0 go test -c -o "$work/bin/qemu.test" ./internal/vmm/qemu
	go run ./scripts/nested-lab/l1initrd -agent "$work/bin/banger-agent" -modules "$kdir/modules" -o "$out/initrd-l1.img"
)
cp "$kdir/vmlinux" "$out/vmlinux"

echo "== root tree"
mkdir -p "$R"/{bin,etc,proc,sys,dev,tmp,run,root,mnt,results,lib,lib64,usr/share,usr/lib}
mkdir -p "$R/lab/bin" "$R/lab/src" "$R/var/cache/banger-test/kernels"
ln -s bin "$R/sbin"
ln -s ../bin "$R/usr/bin"
ln -s ../bin "$R/usr/sbin"
# QEMU finds its firmware relative to its binary (<bindir>/../share/qemu).
ln -s usr/share "$R/share"
chmod 1777 "$R/tmp"
cp /bin/busybox "$R/bin/busybox"
for app in $(/bin/busybox --list); do
	[ "$app" = busybox ] || [ -e "$R/bin/$app" ] || ln -s busybox "$R/bin/$app"
done

# copy_bin BIN...: a dynamically linked binary and the libraries it loads.
copy_bin() {
	local b p lib
	for b in "$@"; do
		p=$(command -v "$b" || PATH=/usr/sbin:/sbin:$PATH command -v "$b")
		rm -f "$R/bin/$(basename "$p")" # may be a busybox applet link
		cp -L "$p" "$R/bin/$(basename "$p")"
		for lib in $(ldd "$p" | grep -o '/[^ ]*' | sort -u); do
			[ -e "$R$lib" ] && continue
			mkdir -p "$R$(dirname "$lib")"
			cp -L "$lib" "$R$lib"
		done
	done
}
copy_bin qemu-system-x86_64 mke2fs e2fsck debugfs tune2fs resize2fs dumpe2fs depmod
ln -sf mke2fs "$R/bin/mkfs.ext4"
ln -sf e2fsck "$R/bin/fsck.ext4"
cp -a /usr/share/qemu /usr/share/seabios "$R/usr/share/"
[ -d /etc/qemu ] && cp -a /etc/qemu "$R/etc/"

cp "$fc" "$R/lab/bin/firecracker"
[ -n "$jailer" ] && cp "$jailer" "$R/lab/bin/jailer"
cp "$work/bin/"* "$R/lab/bin/"
cp "$here/go-shim.sh" "$R/lab/bin/go"
cp "$here/l1-run.sh" "$R/lab/l1-run.sh"
# The image the CLI cycle boots (L1 has no bash to run the script).
"$repo/scripts/lib/busybox-rootfs.sh" "$R/lab/busybox.ext4"
cp "$repo/go.mod" "$R/lab/src/go.mod"
chmod 0755 "$R/lab/bin/"* "$R/lab/l1-run.sh"
cp -a "$kdir" "$R/var/cache/banger-test/kernels/"
cp "$deb" "$R/var/cache/banger-test/"

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$R/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$R/etc/group"
# The agent hands over to /sbin/init (banger.init=systemd): busybox init
# runs the lab once and reaps orphans (daemons, detached VMMs).
printf '::sysinit:/lab/l1-run.sh\n' >"$R/etc/inittab"
ln -sf ../bin/busybox "$R/bin/init"
echo lab-l1 >"$R/etc/hostname"

echo "== lab.ext4"
size_mb=$(( $(du -sm "$R" | cut -f1) * 12 / 10 + 256 ))
rm -f "$out/lab.ext4"
truncate -s "${size_mb}M" "$out/lab.ext4"
mkfs.ext4 -q -F -L banger-lab -E root_owner=0:0 -d "$R" "$out/lab.ext4"
rm -rf "$work"
ls -la "$out"
