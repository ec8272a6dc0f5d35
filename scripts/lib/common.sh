# common.sh — helpers for banger's shell scripts (sourced, not run).
# shellcheck shell=bash

log() { printf 'setup: %s\n' "$*"; }
warn() { printf 'setup: WARNING: %s\n' "$*" >&2; }
die() {
	printf 'setup: error: %s\n' "$*" >&2
	exit 1
}

now() { date +%s.%N; }
elapsed() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }'; }

# run_step NAME FUNC: run FUNC in this shell and print how long it took.
# FUNC reports with skip (nothing to do) or did (changed something).
run_step() {
	local name=$1 t
	shift
	t=$(now)
	step_name=$name
	"$@"
	log "  ($name: $(elapsed "$t")s)"
}
skip() { log "[ok]   $step_name: $*"; }
did() { log "[done] $step_name: $*"; }

# read_list FILE: print the non-empty lines of FILE without "#" comments.
read_list() {
	sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e 's/^[[:space:]]*//' "$1" | grep -v '^$' || true
}

# version_ge A B: A >= B in version order.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

# pkgs_not_installed PKG...: print the PKGs dpkg does not have installed.
pkgs_not_installed() {
	local -A ok=()
	local name status
	while read -r name status; do
		[ "$status" != installed ] || ok[$name]=1
	done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$@" 2>/dev/null || true)
	for name in "$@"; do
		[ -n "${ok[$name]:-}" ] || printf '%s\n' "$name"
	done
}
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

# candidate_version PKG: the version apt would install, empty when none.
candidate_version() {
	apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)" { print $2; exit }'
}

apt_updated=0
apt_update() {
	log "  apt-get update"
	apt-get update -q
	apt_updated=1
	apt_lists_stale=0
}

# apt_update_if_needed PKG...: refresh the package lists once per run, and
# only when a source was added, the lists are empty, or some PKG has no
# candidate version.
apt_update_if_needed() {
	[ "$apt_updated" = 0 ] || return 0
	if [ "${apt_lists_stale:-0}" = 1 ] ||
		! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
		apt_update
		return
	fi
	local p
	for p in "$@"; do
		if [ -z "$(candidate_version "$p")" ]; then
			apt_update
			return
		fi
	done
}

# backports_sources: a deb822 stanza for bookworm-backports on the mirror
# that already serves bookworm (from *.sources or sources.list).
backports_sources() {
	local uri="" signed=""
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		case $f in *banger-bookworm-backports.sources) continue ;; esac
		IFS=" " read -r uri signed < <(awk '
			BEGIN { RS = ""; FS = "\n" }
			{
				types = ""; uris = ""; suites = ""; signed = ""
				for (i = 1; i <= NF; i++) {
					if ($i ~ /^#/) continue
					split($i, kv, ":[ \t]*")
					key = kv[1]; val = substr($i, length(key) + 2); sub(/^[ \t]+/, "", val)
					if (key == "Types") types = val
					else if (key == "URIs") uris = val
					else if (key == "Suites") suites = val
					else if (key == "Signed-By") signed = val
				}
				if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ / bookworm /) {
					split(uris, u, " "); print u[1], signed; exit
				}
			}' "$f") || true
		[ -z "$uri" ] || break
	done
	if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
		uri=$(awk '$1 == "deb" {
			i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
			if ($(i + 1) == "bookworm") { print $i; exit }
		}' /etc/apt/sources.list)
	fi
	[ -n "$uri" ] || return 1
	printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\n' "$uri"
	[ -z "$signed" ] || printf 'Signed-By: %s\n' "$signed"
}
