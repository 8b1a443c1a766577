#!/bin/sh
# build.sh - configure and build: build/ (release with debug info); with
# --asan also build-asan/ (AddressSanitizer + UndefinedBehaviorSanitizer),
# with --tsan (after --asan, or alone) also build-tsan/ (ThreadSanitizer).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null
if [ "${1:-}" = "--asan" ] || [ "${2:-}" = "--tsan" ]; then
	[ -d build-asan ] || meson setup build-asan -Db_sanitize=address,undefined \
		-Db_lundef=false -Dbuildtype=debug >/dev/null
	ninja -C build-asan >/dev/null
fi
if [ "${1:-}" = "--tsan" ] || [ "${2:-}" = "--tsan" ]; then
	[ -d build-tsan ] || meson setup build-tsan -Db_sanitize=thread -Db_lundef=false \
		-Dbuildtype=debug -Dtests=disabled >/dev/null
	ninja -C build-tsan >/dev/null
fi
