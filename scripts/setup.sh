#!/bin/bash
# setup.sh — prepare a Debian 12 (bookworm) x86_64 machine to build and test banger.
#
# Idempotent: a second run finds everything in place and does no work
# (no apt-get update, no downloads). Run as root, or it re-runs itself via sudo.
#
# Environment:
#   BANGER_TEST_CACHE           fixture cache (default /var/cache/banger-test)
#   BANGER_BACKPORTS_E2FSPROGS  1 = add bookworm-backports and install e2fsprogs >= 1.47.1
#                               (mke2fs -d - reads a tar on stdin)
#   BANGER_SKIP_KERNEL          1 = do not download the Debian cloud kernel .deb
#
# The packages installed are listed in scripts/lib/packages.txt.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
. "$script_dir/lib/common.sh"

if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || die "run as root (sudo is not installed)"
	exec sudo --preserve-env=BANGER_TEST_CACHE,BANGER_BACKPORTS_E2FSPROGS,BANGER_SKIP_KERNEL,GOTOOLCHAIN \
		"$0" "$@"
fi

[ "$(uname -m)" = x86_64 ] || die "banger needs an x86_64 host (this is $(uname -m))"
if [ -r /etc/os-release ]; then
	# shellcheck disable=SC1091
	. /etc/os-release
	[ "${VERSION_CODENAME:-}" = bookworm ] || warn "expected Debian 12 (bookworm), found ${PRETTY_NAME:-unknown}"
fi

export DEBIAN_FRONTEND=noninteractive
cache_dir=${BANGER_TEST_CACHE:-/var/cache/banger-test}
kernel_meta=linux-image-cloud-amd64
backports_list=/etc/apt/sources.list.d/banger-bookworm-backports.sources
min_go=1.26
min_e2fsprogs=1.47.1

mapfile -t packages < <(read_list "$script_dir/lib/packages.txt")
[ "${#packages[@]}" -gt 0 ] || die "no packages in $script_dir/lib/packages.txt"

# --- backports (optional) ---------------------------------------------------
step_backports() {
	if [ "${BANGER_BACKPORTS_E2FSPROGS:-0}" != 1 ]; then
		skip "bookworm-backports not requested (BANGER_BACKPORTS_E2FSPROGS=1 enables it)"
		return
	fi
	local want
	want=$(backports_sources) || die "cannot find the bookworm mirror URI in /etc/apt/sources.list*"
	if [ -f "$backports_list" ] && [ "$(cat "$backports_list")" = "$want" ]; then
		skip "bookworm-backports source already present ($backports_list)"
		return
	fi
	printf '%s\n' "$want" >"$backports_list.tmp"
	mv "$backports_list.tmp" "$backports_list"
	apt_lists_stale=1
	did "added bookworm-backports source $backports_list"
}

# --- packages -----------------------------------------------------------------
step_packages() {
	local missing
	mapfile -t missing < <(pkgs_not_installed "${packages[@]}")
	if [ "${#missing[@]}" -eq 0 ]; then
		skip "all ${#packages[@]} packages installed"
		return
	fi
	apt_update_if_needed "${missing[@]}"
	if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
		# Stale lists point at files the mirror no longer has: refresh once.
		apt_update
		apt-get install -y --no-install-recommends "${missing[@]}"
	fi
	did "installed ${missing[*]}"
}

step_e2fsprogs_backport() {
	local have
	if [ "${BANGER_BACKPORTS_E2FSPROGS:-0}" != 1 ]; then
		skip "e2fsprogs $(pkg_version e2fsprogs) from bookworm (backport not requested)"
		return
	fi
	have=$(pkg_version e2fsprogs)
	if dpkg --compare-versions "$have" ge "$min_e2fsprogs"; then
		skip "e2fsprogs $have >= $min_e2fsprogs"
		return
	fi
	apt_update_if_needed e2fsprogs
	apt-get install -y --no-install-recommends -t bookworm-backports e2fsprogs
	have=$(pkg_version e2fsprogs)
	dpkg --compare-versions "$have" ge "$min_e2fsprogs" ||
		die "e2fsprogs is $have after installing from bookworm-backports"
	did "installed e2fsprogs $have from bookworm-backports"
}

# --- the packaged docker-registry service ----------------------------------
# Tests run their own registry on 127.0.0.1 with their own config; the
# packaged service listens on :5000 on all interfaces, so keep it off.
step_registry_service() {
	local changed=()
	if [ -d /run/systemd/system ]; then
		if systemctl is-active --quiet docker-registry.service; then
			systemctl stop docker-registry.service
			changed+=(stopped)
		fi
		if systemctl is-enabled --quiet docker-registry.service 2>/dev/null; then
			systemctl disable --quiet docker-registry.service
			changed+=(disabled)
		fi
	elif [ -x /etc/init.d/docker-registry ]; then
		if /etc/init.d/docker-registry status >/dev/null 2>&1; then
			/etc/init.d/docker-registry stop >/dev/null
			changed+=(stopped)
		fi
		if compgen -G '/etc/rc[2-5].d/S[0-9][0-9]docker-registry' >/dev/null; then
			update-rc.d docker-registry disable >/dev/null 2>&1
			changed+=(disabled)
		fi
	fi
	if [ "${#changed[@]}" -eq 0 ]; then
		skip "packaged docker-registry service already stopped and disabled"
	else
		did "packaged docker-registry service ${changed[*]}"
	fi
}

# --- Go -----------------------------------------------------------------------
step_go() {
	local go_bin ver
	go_bin=$(command -v go || true)
	[ -n "$go_bin" ] || [ ! -x /usr/local/go/bin/go ] || go_bin=/usr/local/go/bin/go
	if [ -z "$go_bin" ]; then
		warn "Go not found: banger needs Go >= $min_go (https://go.dev/dl/, install to /usr/local/go and add /usr/local/go/bin to PATH)"
		go_ok=0
		return
	fi
	ver=$(GOTOOLCHAIN=local "$go_bin" env GOVERSION 2>/dev/null || true)
	ver=${ver#go}
	if [ -z "$ver" ] || ! version_ge "$ver" "$min_go"; then
		warn "$go_bin is Go ${ver:-unknown}; banger needs Go >= $min_go (https://go.dev/dl/)"
		go_ok=0
		return
	fi
	go_ok=1
	skip "Go $ver at $go_bin"
}

# --- Debian cloud kernel (test fixture) --------------------------------------
# The meta package holds no kernel: download the versioned linux-image-*
# package it depends on, as internal/kernel/kerneltest does. Any cached
# cloud kernel .deb counts as done (empty the dir to fetch a newer one).
step_kernel() {
	if [ "${BANGER_SKIP_KERNEL:-0}" = 1 ]; then
		skip "kernel download skipped (BANGER_SKIP_KERNEL=1)"
		return
	fi
	local dir=$cache_dir/kernel have pkg tmp file
	install -d -m 0755 "$cache_dir" "$dir"
	exec 9>"$dir/.lock"
	flock 9
	have=$(newest_kernel_deb "$dir")
	if [ -n "$have" ]; then
		exec 9>&-
		skip "kernel ${have##*/} cached in $dir"
		return
	fi
	have=$(newest_kernel_deb "$cache_dir")
	if [ -n "$have" ]; then
		# Left at the cache root by kerneltest: reuse it.
		ln -f "$have" "$dir/" 2>/dev/null || cp "$have" "$dir/"
		exec 9>&-
		did "kernel ${have##*/} linked from $cache_dir"
		return
	fi
	apt_update_if_needed "$kernel_meta"
	pkg=$(apt-cache depends "$kernel_meta" 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
	[ -n "$pkg" ] || die "cannot resolve $kernel_meta to a versioned kernel package"
	tmp=$(mktemp -d "$dir/.download-XXXXXX")
	# apt drops privileges to _apt for downloads; let it write here.
	! id _apt >/dev/null 2>&1 || chown _apt "$tmp"
	(cd "$tmp" && apt-get download -q "$pkg")
	file=$(newest_kernel_deb "$tmp")
	[ -n "$file" ] || die "apt-get download $pkg produced no .deb"
	mv "$file" "$dir/"
	rm -rf "$tmp"
	exec 9>&-
	did "kernel ${file##*/} downloaded to $dir ($(du -h "$dir/${file##*/}" | cut -f1))"
}

# newest_kernel_deb DIR: the newest versioned cloud kernel .deb in DIR.
newest_kernel_deb() {
	compgen -G "$1/linux-image-[0-9]*-cloud-amd64_*.deb" | sort -V | tail -n1 || true
}

deps_only=0
for arg in "$@"; do
	case $arg in
	--deps-only) deps_only=1 ;;
	-h | --help)
		echo "usage: $0 [--deps-only]   (--deps-only: host packages and test fixtures, no build)"
		exit 0
		;;
	*) die "unknown argument $arg (try --help)" ;;
	esac
done
go_ok=0
apt_lists_stale=0
start=$(now)
run_step "bookworm-backports" step_backports
run_step "packages" step_packages
run_step "e2fsprogs backport" step_e2fsprogs_backport
run_step "docker-registry service" step_registry_service
run_step "go" step_go
run_step "kernel fixture" step_kernel

# --- banger -------------------------------------------------------------------
# Build banger, import the cached Debian cloud kernel as the default kernel,
# register the local image busybox (a userland built from busybox-static),
# settle the default image, then check the host. Each step is skipped when already done.
repo_dir=$(cd "$script_dir/.." && pwd)
banger="$repo_dir/bin/banger"

step_build() {
	[ "$go_ok" = 1 ] || die "Go >= $min_go is needed to build banger"
	(cd "$repo_dir" && make -s build)
	did "built $repo_dir/bin/{banger,bangerd,banger-agent}"
}

step_default_kernel() {
	if "$banger" kernel show debian-cloud >/dev/null 2>&1; then
		skip "kernel debian-cloud already imported"
		return
	fi
	local deb
	deb=$(newest_kernel_deb "$cache_dir/kernel")
	if [ -n "$deb" ]; then
		"$banger" kernel import debian-cloud --from-deb "$deb" >/dev/null
	else
		"$banger" kernel pull debian-cloud >/dev/null
	fi
	did "imported kernel debian-cloud"
}

step_default_image() {
	if "$banger" image show busybox >/dev/null 2>&1; then
		skip "image busybox already present"
		return
	fi
	local tmp
	tmp=$(mktemp -d)
	"$script_dir/lib/busybox-rootfs.sh" "$tmp/rootfs.ext4"
	"$banger" image register --name busybox --rootfs "$tmp/rootfs.ext4" --kernel-ref debian-cloud >/dev/null
	"$banger" image promote busybox >/dev/null
	rm -rf "$tmp"
	did "created the default image busybox"
}

# config_file: the config.toml the daemon started by this user reads.
config_file() {
	if [ -n "${BANGER_HOME:-}" ]; then
		printf '%s/config/config.toml\n' "$BANGER_HOME"
	else
		printf '%s/banger/config.toml\n' "${XDG_CONFIG_HOME:-$HOME/.config}"
	fi
}

# Without --image, VMs boot the image catalog's default, debian-bookworm:
# the golden bundle where catalog_url serves it, else Debian's official
# image from Docker Hub. A host that reaches neither (an offline lab, CI)
# gets the local busybox image as its default_image instead.
step_catalog_default() {
	local cfg out
	cfg=$(config_file)
	if [ -f "$cfg" ] && grep -q '^[[:space:]]*default_image[[:space:]]*=' "$cfg"; then
		skip "default_image is set in $cfg"
		return
	fi
	if "$banger" image show debian-bookworm >/dev/null 2>&1; then
		skip "the catalog default image debian-bookworm is present"
		return
	fi
	if out=$("$banger" image pull debian-bookworm 2>&1); then
		did "pulled the catalog default image debian-bookworm"
		return
	fi
	warn "the catalog default image debian-bookworm cannot be pulled here:"
	printf '%s\n' "$out" | sed 's/^/    /' >&2
	mkdir -p "$(dirname "$cfg")"
	{
		printf '# Set by scripts/setup.sh: the catalog default (debian-bookworm) was\n'
		printf '# not reachable from this host. Remove to boot the catalog default.\n'
		printf 'default_image = "busybox"\n\n'
		[ ! -f "$cfg" ] || cat "$cfg"
	} >"$cfg.tmp"
	mv "$cfg.tmp" "$cfg"
	"$banger" daemon stop >/dev/null 2>&1 || true # the next command starts it with the new config
	did "default_image = \"busybox\" written to $cfg"
}

if [ "$deps_only" = 0 ]; then
	run_step "build" step_build
	run_step "default kernel" step_default_kernel
	run_step "default image" step_default_image
	run_step "catalog default" step_catalog_default
	log "done in $(elapsed "$start")s; checking the host:"
	"$banger" doctor || true
	log "first VM: banger vm run --rm -- uname -a"
	"$banger" vm run --rm -- uname -a
	exit 0
fi

log "done in $(elapsed "$start")s"
