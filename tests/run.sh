#!/bin/bash
# tests/run.sh -- the single test entry point of strata.
#
#   tests/run.sh [BUILD_DIR]        (default: build; run as root)
#
# Runs, in order: the unit tests (meson test), the option/mount-path tests
# (tests/integration/test_options.py), the differential rig against the
# kernel overlay (3 layers with a 100,000-entry dir, then 50 layers), the
# write-mode rig, the interop, crash (copy-ups; a random write workload,
# fsync modes, strace-stalled syscalls), full-disk, permission, fault,
# read-ahead/cache and concurrency suites, the differential operation fuzzer (10,000 operations,
# seed 1), and, where the kernel offers FUSE over io_uring, a second pass of
# the write rig, faults, concurrency and 3,000 fuzzer operations with
# -o io_uring (the fuse module parameter enable_uring is set for it and
# restored).
# Each unit test, each option test and each rig run counts as one test; the
# last line is `N passed, N failed` and the exit status is 1 if anything
# failed.  STRATAFS_EXTRA_OPTS (e.g. "noatime") is appended to every
# stratafs -o by the integration scripts.  Rig layers are kept (and reused
# when unchanged) in ${RIG_WORKDIR:-${TMPDIR:-/tmp}/strata-rig}-*.

set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${1:-build}
BIN="$BUILD/stratafs"
RIGBASE=${RIG_WORKDIR:-${TMPDIR:-/tmp}/strata-rig}
export STRATAFS_EXTRA_OPTS=${STRATAFS_EXTRA_OPTS:-}
passed=0
failed=0
summary=()
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

count() {   # count NAME PASSED FAILED
    passed=$((passed + $2))
    failed=$((failed + $3))
    summary+=("$1: $2 passed, $3 failed")
}

# 1. unit tests --------------------------------------------------------------
echo "=== unit tests (meson test -C $BUILD)"
start=$SECONDS
meson test -C "$BUILD" --print-errorlogs 2>&1 | tee "$tmp"
rc=${PIPESTATUS[0]}
num() { sed -n "s/^$1:[[:space:]]*\([0-9][0-9]*\)[[:space:]]*\$/\1/p" "$tmp" | tail -n 1; }
ok=$(num "Ok"); xfail=$(num "Expected Fail"); fail=$(num "Fail")
xpass=$(num "Unexpected Pass"); tmo=$(num "Timeout")
p=$(( ${ok:-0} + ${xfail:-0} ))
f=$(( ${fail:-0} + ${xpass:-0} + ${tmo:-0} ))
if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "meson test exited with $rc"
    f=1
fi
count "unit tests ($((SECONDS - start))s)" "$p" "$f"

# 2. option and mount-path tests ------------------------------------------------
suite() {   # suite NAME SCRIPT [ARGS...]: a script ending in "N passed, N failed"
    local name=$1 script=$2
    shift 2
    echo "=== $name"
    local start=$SECONDS
    python3 "tests/integration/$script" --stratafs "$BIN" "$@" 2>&1 | tee "$tmp"
    local rc=${PIPESTATUS[0]}
    local line p f
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$tmp" | tail -n 1)
    if [ -n "$line" ]; then
        p=${line%% passed*}
        f=${line#*, }; f=${f%% failed}
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    else
        echo "$script printed no summary (exit $rc)"
        p=0; f=1
    fi
    count "$name ($((SECONDS - start))s)" "$p" "$f"
}
suite "option tests" test_options.py

# 3. differential rig runs --------------------------------------------------------
rig() {   # rig SCRIPT LABEL ARGS...: one differential rig run is one test
    local script=$1 name=$2; shift 2
    echo "=== $name"
    local start=$SECONDS
    if python3 "tests/integration/$script" --stratafs "$BIN" "$@"; then
        count "$name ($((SECONDS - start))s)" 1 0
    else
        count "$name ($((SECONDS - start))s)" 0 1
    fi
}
rig rig.py "rig 3 layers --big" --layers 3 --big --workdir "$RIGBASE-3big"
rig rig.py "rig 50 layers" --layers 50 --workdir "$RIGBASE-50"
# the same stacks with every layer an image file (loop-mounted for the kernel)
rig rig.py "rig 3 squashfs images" --layers 3 --images squashfs --workdir "$RIGBASE-3sq"
rig rig.py "rig 30 erofs images" --layers 30 --images erofs --workdir "$RIGBASE-30ero"

# 4. writing: the write-mode rig (also with index=off and metacopy=on), then the suites
rig rig_write.py "write rig defaults" --workdir "$RIGBASE-w"
rig rig_write.py "write rig index=off" --workdir "$RIGBASE-w-noindex" --extra-opts index=off --kernel-opts index=off
rig rig_write.py "write rig metacopy=on" --workdir "$RIGBASE-w-metacopy" --extra-opts metacopy=on --kernel-opts metacopy=on
rig rig_write.py "write rig squashfs+erofs images" --workdir "$RIGBASE-w-img" --images squashfs
rig rig_write.py "write rig erofs images" --workdir "$RIGBASE-w-erofs" --images erofs

suite "interop" test_interop.py
suite "crash" test_crash.py
suite "crash during a workload" test_crash_workload.py
suite "crash at exact points" test_crash_points.py
suite "image layers" test_images.py
suite "full disk" test_enospc.py
suite "permissions" test_perms.py
suite "faults" test_faults.py
suite "read-ahead and cache" test_cache.py
suite "concurrency" test_stress.py

# 5. the differential operation fuzzer: 10,000 seeded random operations
suite "fuzz_ops kernel vs stratafs" fuzz_ops.py --shrink-time 60

# every mismatch the fuzzer found and we fixed, replayed as one test each
echo "=== fuzz_ops regressions"
start=$SECONDS
rp=0
rf=0
while read -r seed seq opt _; do
    case $seed in '' | \#*) continue ;; esac
    case $opt in *=*) set -- --extra-opts "$opt" --kernel-opts "$opt" ;; *) set -- ;; esac
    if python3 tests/integration/fuzz_ops.py --stratafs "$BIN" --seed "$seed" --only-seq "$seq" \
        --no-shrink "$@" > "$tmp" 2>&1; then
        rp=$((rp + 1))
    else
        echo "not ok - fuzz_ops seed $seed sequence $seq $opt"
        grep -E '^#|^not ok' "$tmp" | head -n 20
        rf=$((rf + 1))
    fi
done < tests/integration/fuzz_ops_regressions.txt
count "fuzz_ops regressions ($((SECONDS - start))s)" "$rp" "$rf"

# 6. the same over FUSE io_uring, where the kernel has it (fuse.enable_uring)
URING=/sys/module/fuse/parameters/enable_uring
if [ -w "$URING" ] && grep -q uring "$BUILD/build.ninja" 2>/dev/null; then
    saved=$(cat "$URING")
    echo 1 > "$URING"
    base_opts=$STRATAFS_EXTRA_OPTS
    export STRATAFS_EXTRA_OPTS=${base_opts:+$base_opts,}io_uring
    rig rig_write.py "write rig io_uring" --workdir "$RIGBASE-w-uring"
    rig rig.py "rig 50 layers io_uring" --layers 50 --workdir "$RIGBASE-50"
    suite "faults io_uring" test_faults.py
    suite "read-ahead and cache io_uring" test_cache.py
    suite "concurrency io_uring" test_stress.py
    suite "fuzz_ops io_uring" fuzz_ops.py --seed uring --ops 3000 --shrink-time 60
    export STRATAFS_EXTRA_OPTS=$base_opts
    echo "$saved" > "$URING"
else
    echo "=== io_uring: not available here (no writable $URING or no liburing build); skipped"
fi

echo "=== summary"
for s in "${summary[@]}"; do echo "  $s"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
