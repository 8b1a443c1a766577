#!/bin/sh
# all.sh - the whole test suite, as CI runs it (as root): install the
# dependencies, build normally and with ASan/UBSan, run tests/run.sh on both
# builds and print one closing line "N passed, N failed".
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
"$top/scripts/bootstrap.sh" || exit 1
"$top/scripts/build.sh" --asan --tsan || { echo "0 passed, 1 failed"; exit 1; }

asan_dir=$(mktemp -d /tmp/strata-asan.XXXXXX)
total_pass=0
total_fail=0
for b in build build-asan; do
	echo "== tests on $b"
	log=$(mktemp)
	if [ "$b" = build-asan ]; then
		ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:log_path=$asan_dir/asan" \
		UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$asan_dir/ubsan" \
			"$top/tests/run.sh" "$b" 2>&1 | tee "$log"
	else
		"$top/tests/run.sh" "$b" 2>&1 | tee "$log"
	fi
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
	rm -f "$log"
	if [ -z "$line" ]; then
		total_fail=$((total_fail + 1))
		continue
	fi
	p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
	f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
	total_pass=$((total_pass + p))
	total_fail=$((total_fail + f))
done
# the concurrency suite under ThreadSanitizer: any race report fails it
# the daemon's own threads under TSan: over /dev/fuse, and over FUSE io_uring
# where the kernel offers it (the fuse module parameter, restored after)
tsan_stress() { # NAME EXTRA_OPTS
	tsan_dir=$(mktemp -d /tmp/strata-tsan.XXXXXX)
	echo "== $1 under TSan"
	if TSAN_OPTIONS="log_path=$tsan_dir/tsan:halt_on_error=0" \
		python3 "$top/tests/integration/test_stress.py" --stratafs "$top/build-tsan/stratafs" \
		--seconds 6 --extra-opts "$2" && ! ls "$tsan_dir"/* >/dev/null 2>&1; then
		echo "ok - $1 under TSan, no race report"
		total_pass=$((total_pass + 1))
	else
		echo "not ok - $1 under TSan"
		cat "$tsan_dir"/* 2>/dev/null | head -n 80
		total_fail=$((total_fail + 1))
	fi
	rm -rf "$tsan_dir"
}
tsan_stress concurrency io_uring=off
uring_param=/sys/module/fuse/parameters/enable_uring
if [ -w "$uring_param" ] && grep -q uring "$top/build-tsan/build.ninja" 2>/dev/null; then
	uring_saved=$(cat "$uring_param")
	echo 1 > "$uring_param"
	tsan_stress "concurrency io_uring" io_uring
	echo "$uring_saved" > "$uring_param"
fi

echo "== fuzzing (tests/fuzz.sh)"
log=$(mktemp)
"$top/tests/fuzz.sh" 2>&1 | tee "$log"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
rm -f "$log"
if [ -n "$line" ]; then
	total_pass=$((total_pass + $(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')))
	total_fail=$((total_fail + $(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')))
else
	total_fail=$((total_fail + 1))
fi
# any sanitizer report from a daemon (its stderr is closed) is a failure
if ls "$asan_dir"/* >/dev/null 2>&1; then
	echo "sanitizer reports:"
	cat "$asan_dir"/*
	total_fail=$((total_fail + 1))
else
	total_pass=$((total_pass + 1))
	echo "ok - no ASan/UBSan reports"
fi
rm -rf "$asan_dir"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
