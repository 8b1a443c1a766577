#!/bin/sh
# build.sh - configure and build: build/ (release with debug info); with
# --asan also build-asan/ (AddressSanitizer + UndefinedBehaviorSanitizer),
# with --tsan also build-tsan/ (ThreadSanitizer).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
asan=0
tsan=0
for a in "$@"; do
	case $a in
	--asan) asan=1 ;;
	--tsan) tsan=1 ;;
	*) echo "usage: scripts/build.sh [--asan] [--tsan]" >&2; exit 2 ;;
	esac
done
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null
if [ $asan = 1 ]; then
	[ -d build-asan ] || meson setup build-asan -Db_sanitize=address,undefined \
		-Db_lundef=false -Dbuildtype=debug >/dev/null
	ninja -C build-asan >/dev/null
fi
if [ $tsan = 1 ]; then
	[ -d build-tsan ] || meson setup build-tsan -Db_sanitize=thread -Db_lundef=false \
		-Dbuildtype=debug -Dtests=disabled >/dev/null
	ninja -C build-tsan >/dev/null
fi
