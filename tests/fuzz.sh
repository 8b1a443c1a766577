#!/bin/sh
# fuzz.sh - build the libFuzzer targets (clang, ASan+UBSan) and run each for
# FUZZ_SECONDS (default 20) on its corpus in fuzz/corpus/; a crash fails the
# target and leaves its input in build-fuzz/crash-*.  Ends with
# "N passed, N failed".  A long run: FUZZ_SECONDS=3600 tests/fuzz.sh
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
secs=${FUZZ_SECONDS:-20}
pass=0
fail=0
if [ ! -d build-fuzz ]; then
	CC=clang meson setup build-fuzz -Dfuzz=true -Dtests=disabled -Db_sanitize=address,undefined \
		-Db_lundef=false -Dbuildtype=debug >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
fi
ninja -C build-fuzz >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
for t in params xattr fuse; do
	work=$(mktemp -d)
	cp fuzz/corpus/$t/* "$work/"
	if UBSAN_OPTIONS=halt_on_error=1 build-fuzz/fuzz-$t -max_total_time="$secs" \
		-artifact_prefix=build-fuzz/ -print_final_stats=0 "$work" >build-fuzz/fuzz-$t.log 2>&1; then
		echo "ok - fuzz-$t ($secs s, $(ls "$work" | wc -l) corpus entries)"
		pass=$((pass + 1))
	else
		echo "not ok - fuzz-$t: $(grep -m1 -E 'ERROR|runtime error' build-fuzz/fuzz-$t.log)"
		tail -n 30 build-fuzz/fuzz-$t.log
		fail=$((fail + 1))
	fi
	rm -rf "$work"
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
