#!/bin/sh
# build.sh - configure and build: build/ (release with debug info) and, with
# --asan, build-asan/ (AddressSanitizer + UndefinedBehaviorSanitizer).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null
if [ "${1:-}" = "--asan" ]; then
	[ -d build-asan ] || meson setup build-asan -Db_sanitize=address,undefined \
		-Db_lundef=false -Dbuildtype=debug >/dev/null
	ninja -C build-asan >/dev/null
fi
