#!/bin/sh
# demo.sh - mount the bundled sample stack read-only with stratafs and show
# the merged tree.  Usage: scripts/demo.sh [BUILD_DIR]   (as root)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top/build}
work=$(mktemp -d /tmp/strata-demo.XXXXXX)
trap 'umount "$work/merged" 2>/dev/null || true; rm -rf "$work"' EXIT

cp -a "$top/sample/layers/." "$work/"
mknod "$work/lib/etc/legacy.conf" c 0 0
setfattr -n trusted.overlay.opaque -v y "$work/app/var/cache"
: > "$work/app/etc/.wh.lib.conf"
mkdir "$work/merged"

"$build/stratafs" sample "$work/merged" -o "lowerdir=$work/app:$work/lib:$work/base"
echo "merged view of app:lib:base (read-only):"
cd "$work/merged"
find . -mindepth 1 | sort | while read -r f; do
	if [ -f "$f" ]; then
		printf '  %-24s %s\n' "$f" "$(head -n 1 "$f")"
	else
		printf '  %-24s (%s)\n' "$f" "$(stat -c %F "$f")"
	fi
done
echo "running /usr/bin/hello from the union:"
"$work/merged/usr/bin/hello"
cd /
umount "$work/merged"
echo "unmounted; the daemon has exited"
