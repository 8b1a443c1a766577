#!/bin/sh
# bootstrap.sh - install what strata needs to build and test (Debian 12, as root).
set -eu
pkgs="meson ninja-build gcc pkg-config libcmocka-dev liburing-dev fuse3 attr acl python3 kmod strace clang libclang-rt-14-dev squashfs-tools erofs-utils"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq $missing >/dev/null
fi
modprobe fuse 2>/dev/null || true
modprobe overlay 2>/dev/null || true
[ -e /dev/fuse ] || { echo "bootstrap: /dev/fuse is missing" >&2; exit 1; }
