#!/bin/bash
# build-golden.sh — build banger's golden image (images/golden/Dockerfile) as
# debian-bookworm, check it boots with what it promises, and write its catalog
# bundle. Opt-in (`make golden`): it installs packages through NAT and takes
# minutes under KVM, about twenty under QEMU TCG.
#
# Usage: scripts/build-golden.sh [--out DIR] [--base REF] [--no-check]
#
#   --out DIR    where the bundle goes (default ./dist)
#   --base REF   the FROM image (default: docker.io/library/debian:bookworm
#                when Docker Hub answers, else a debootstrap'ed minimal
#                bookworm from the host's Debian mirror, registered as
#                golden-base)
#   --no-check   skip the boot check
#
# Environment: BANGER (the banger binary, default ./bin/banger, built by
# `make build`), DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$script_dir/.." && pwd)
# shellcheck source=lib/common.sh
. "$script_dir/lib/common.sh"
log() { printf 'golden: %s\n' "$*"; }

out=$repo/dist base="" check=1
while [ $# -gt 0 ]; do
	case $1 in
	--out) out=$2; shift 2 ;;
	--base) base=$2; shift 2 ;;
	--no-check) check=0; shift ;;
	-h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done
[ "$(id -u)" -eq 0 ] || die "run as root (the build VMs use taps and NAT)"

banger=${BANGER:-$repo/bin/banger}
if [ -z "${BANGER:-}" ]; then
	make -C "$repo" --no-print-directory build >/dev/null
fi
name=debian-bookworm

# golden_base registers a minimal debootstrap'ed bookworm as golden-base: the
# same userland as Debian's official image, built from the Debian mirror.
golden_base() {
	if "$banger" image show golden-base >/dev/null 2>&1; then
		log "base: golden-base (already registered)"
		return
	fi
	local tmp mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian} t
	command -v debootstrap >/dev/null || die "debootstrap not found (run scripts/setup.sh)"
	tmp=$(mktemp -d /var/tmp/banger-golden-base.XXXXXX)
	trap 'rm -rf "$tmp"' RETURN
	t=$(now)
	log "base: debootstrap --variant=minbase bookworm from $mirror"
	debootstrap --variant=minbase bookworm "$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$tmp/debootstrap.log" >&2; die "debootstrap failed"; }
	rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"*
	mkfs.ext4 -q -F -L root -d "$tmp/root" "$tmp/rootfs.ext4" 1G
	"$banger" image register --name golden-base --rootfs "$tmp/rootfs.ext4" --kernel-ref debian-cloud >/dev/null
	"$banger" image promote golden-base >/dev/null
	log "base: golden-base registered in $(elapsed "$t")s"
}

if [ -z "$base" ]; then
	if curl -s -o /dev/null --max-time 5 https://registry-1.docker.io/v2/; then
		base=docker.io/library/debian:bookworm
	else
		log "Docker Hub does not answer: using a debootstrap'ed base"
		golden_base
		base=golden-base
	fi
fi

if "$banger" image show "$name" >/dev/null 2>&1; then
	log "replacing the existing $name image"
	"$banger" image delete "$name" >/dev/null
fi
t=$(now)
log "building $name FROM $base"
# CAs this host trusts beyond Debian's (an egress proxy that re-signs TLS):
# handed to the one HTTPS download of the build, not kept in the image.
extra_ca=""
for f in /usr/local/share/ca-certificates/*.crt; do
	[ -f "$f" ] && extra_ca+=$(cat "$f")$'\n'
done
[ -z "$extra_ca" ] || log "trusting this host's extra CAs for the build's downloads"
"$banger" image build -q -f "$repo/images/golden/Dockerfile" --net nat \
	--build-arg "BASE=$base" --build-arg "EXTRA_CA_PEM=$extra_ca" --name "$name" "$repo/images/golden"
build_s=$(elapsed "$t")
log "built $name in ${build_s}s"
"$banger" image show "$name"

if [ "$check" = 1 ]; then
	t=$(now)
	log "checking $name: systemd, sshd, Docker (a container run), mise, the toolchain"
	# shellcheck disable=SC2016
	"$banger" vm run --rm --image "$name" -- bash -ec '
		test "$(ps -o comm= -p 1)" = systemd
		for u in ssh docker banger-agent; do
			for i in $(seq 60); do systemctl is-active -q "$u" && break; sleep 1; done
			printf "%-13s %s\n" "$u" "$(systemctl is-active "$u")"
		done
		printf "#include <stdio.h>\nint main(void){puts(\"hello from a container\");return 0;}\n" | gcc -static -x c - -o /tmp/hi
		tar -C /tmp -c hi | docker import - golden-check >/dev/null
		docker run --rm golden-check /hi
		docker rmi -f golden-check >/dev/null
		mise --version
		git --version; jq --version; tmux -V; make --version | head -n1
	'
	log "checked in $(elapsed "$t")s"
fi

t=$(now)
mkdir -p "$out"
"$banger" image bundle "$name" --out "$out"
log "bundle written in $(elapsed "$t")s; build took ${build_s}s"
