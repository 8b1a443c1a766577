#!/bin/sh
# quickstart.sh - install the build dependencies, build strata and mount the
# bundled sample stack read-only, showing its merged tree (as root).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/bootstrap.sh"
"$top/scripts/build.sh"
exec "$top/scripts/demo.sh" "$top/build"
