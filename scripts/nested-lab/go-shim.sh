#!/bin/sh
# go-shim.sh — installed as `go` in the nested lab's L1 guest, which has no
# Go toolchain. The driver test binaries build banger-agent through
# testenv.BuildBinaries (`go build -o OUT ./cmd/banger-agent`); this hands
# them the binary prebuilt by build.sh instead.
out="" pkg=""
while [ $# -gt 0 ]; do
	case $1 in
	build) ;;
	-o) out=$2; shift ;;
	-*) ;;
	*) pkg=$1 ;;
	esac
	shift
done
if [ -z "$out" ] || [ -z "$pkg" ]; then
	echo "go-shim: only 'go build -o OUT ./cmd/NAME' is supported in the lab" >&2
	exit 2
fi
src=/lab/bin/$(basename "$pkg")
[ -f "$src" ] || { echo "go-shim: no prebuilt $src" >&2; exit 1; }
exec cp "$src" "$out"
