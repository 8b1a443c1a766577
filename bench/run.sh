#!/bin/bash
# bench/run.sh - stratafs against the kernel overlay and fuse-overlayfs, side by
# side in one run: the same lower tree, the same workloads, medians of N
# repetitions, a table with ratios to the kernel and to fuse-overlayfs, and
# the daemons' peak RSS.  As root.
#
#   bench/run.sh [-r REPS] [-q] [-i IMPLS] [-w WORKLOADS] [-b BUILD_DIR] [-l squashfs|erofs]
#     -r REPS      repetitions per implementation (default 3)
#     -q           quick: a small lower tree and 128 MiB big files (a smoke run)
#     -i IMPLS     comma list of: native,kernel,fuse-overlayfs,stratafs,stratafs-nopt,
#                  stratafs-uring (default: all of them; unionfs-fuse with -i ...,unionfs-fuse)
#                  stratafs-uring sets the fuse module parameter enable_uring=1 for
#                  the run and restores it afterwards
#     -w WORKLOADS comma list (default: all): find,stat,readall,untar,cu_small,cu_big,
#                  rmrf,meta,rename,seqread,seqwrite,randread
#     -b BUILD     the build directory holding stratafs (default: build)
#     -l TYPE      the lower layer as a squashfs or erofs image of the tree (made
#                  once): loop-mounted for the others, the image file for stratafs
# Data lives in $BENCH_DIR (default /var/tmp/strata-bench); the lower tree is
# built once and reused.  Cold rows drop the page cache first.
# STRATAFS_BENCH_OPTS (e.g. fsync=volatile) is added to every stratafs -o.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
REPS=3
QUICK=0
IMPLS=native,kernel,fuse-overlayfs,stratafs,stratafs-nopt,stratafs-uring
WLS=find,stat,readall,untar,cu_small,cu_big,rmrf,meta,rename,seqread,seqwrite,randread
BUILD=$here/build
IMAGE=
while getopts "r:qi:w:b:l:" o; do
	case $o in
	r) REPS=$OPTARG ;;
	q) QUICK=1 ;;
	i) IMPLS=$OPTARG ;;
	w) WLS=$OPTARG ;;
	b) BUILD=$(cd "$OPTARG" && pwd) ;;
	l) IMAGE=$OPTARG ;;
	*) sed -n '2,22p' "$0"; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "bench: must run as root" >&2; exit 2; }
# a private mount namespace: nothing we mount can leak or be pinned outside
if [ -z "${STRATA_BENCH_NS:-}" ]; then
	STRATA_BENCH_NS=1 exec unshare -m --propagation private "$0" "$@"
fi

BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench}
[ $QUICK = 1 ] && BENCH_DIR=$BENCH_DIR-quick
DATA=$BENCH_DIR/data
LOWER=$DATA/lower
RESULTS=$BENCH_DIR/results.tsv
BIG_MB=1024
[ $QUICK = 1 ] && BIG_MB=128
STRATAFS=$BUILD/stratafs
[ -x "$STRATAFS" ] || { echo "bench: no $STRATAFS (build first)" >&2; exit 2; }
PY=python3

say() { echo "# $(date +%T) $*" >&2; }

build_lower() {
	[ -e "$DATA/.complete" ] && return
	say "building the lower tree in $LOWER"
	rm -rf "$DATA"
	mkdir -p "$LOWER/big" "$LOWER/tree"
	if [ $QUICK = 1 ]; then
		cp -a /usr/include "$LOWER/tree/include"
	else
		for d in /usr/include /usr/share/doc /usr/share/man /usr/lib/python3 /usr/share/perl \
			/usr/share/icons; do
			[ -d "$d" ] && cp -a "$d" "$LOWER/tree/$(basename "$d")"
		done
	fi
	head -c ${BIG_MB}M /dev/urandom > "$LOWER/big/read.bin"
	head -c ${BIG_MB}M /dev/urandom > "$LOWER/big/copyup.bin"
	# the untar source: 250 dirs of 20 files, about 100 MB (10 MB when quick)
	$PY - "$DATA/untar.src" $QUICK <<'EOF'
import os, random, sys
root, quick = sys.argv[1], sys.argv[2] == "1"
rnd = random.Random(42)
for d in range(250):
    p = os.path.join(root, "pkg%03d" % d, "sub%d" % (d % 7))
    os.makedirs(p, exist_ok=True)
    for i in range(20):
        with open(os.path.join(p, "f%02d" % i), "wb") as f:
            f.write(rnd.randbytes(rnd.randint(0, 4000 if quick else 40000)))
EOF
	tar cf "$DATA/untar.tar" -C "$DATA/untar.src" . && rm -rf "$DATA/untar.src"
	# which files the small copy-up row appends to; which subtrees rm and rename use
	(cd "$LOWER" && find tree -type f | LC_ALL=C sort | head -n 2000) > "$DATA/cu_files"
	(cd "$LOWER/tree" && ls -d */ | head -n 1 | tr -d /) > "$DATA/rm_dir"
	sync
	touch "$DATA/.complete"
}

# KLOWER: the lower dir the others mount; SLOWER: what stratafs is given
KLOWER=$LOWER
SLOWER=$LOWER
image_lower() {
	[ -n "$IMAGE" ] || return 0
	local img=$DATA/lower.$IMAGE
	if [ ! -e "$img" ]; then
		say "making $img"
		case $IMAGE in
		squashfs) mksquashfs "$LOWER" "$img.tmp" -quiet -no-progress -noappend ;;
		erofs) mkfs.erofs --quiet "$img.tmp" "$LOWER" ;;
		*) echo "bench: -l squashfs or -l erofs" >&2; exit 2 ;;
		esac || exit 1
		mv "$img.tmp" "$img"
	fi
	mkdir -p "$BENCH_DIR/lower-img"
	mount -t "$IMAGE" -o loop,ro "$img" "$BENCH_DIR/lower-img" || exit 1
	KLOWER=$BENCH_DIR/lower-img
	SLOWER=$img
}

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# time CMD (bash -c) in seconds, into $T
timed() {
	local a b
	a=$EPOCHREALTIME
	bash -c "$1" > /dev/null 2>&1
	b=$EPOCHREALTIME
	T=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b - a }')
}

PID=
# Each run's upper (and native's copy) lives on a fresh ext4 of its own: ext4
# skips inodes deleted in the last minutes when it allocates, so a run that
# follows another's create/delete churn on the same filesystem would pay for
# it (seen: 4x slower creates right after a rm -rf of 10,000 files).
fresh_fs() { # RUNDIR
	local r=$1
	mkdir -p "$r"
	rm -f "$BENCH_DIR/upper.img"
	truncate -s 16G "$BENCH_DIR/upper.img"
	mkfs.ext4 -q -F "$BENCH_DIR/upper.img"
	mount -o loop "$BENCH_DIR/upper.img" "$r"
}

mount_impl() { # IMPL RUNDIR -> mounts RUNDIR/m
	local impl=$1 r=$2
	fresh_fs "$r"
	mkdir -p "$r/u" "$r/w" "$r/m"
	PID=
	case $impl in
	native) rmdir "$r/m" && cp -a "$LOWER" "$r/m" ;;
	kernel) mount -t overlay overlay -o "lowerdir=$KLOWER,upperdir=$r/u,workdir=$r/w" "$r/m" ;;
	fuse-overlayfs)
		fuse-overlayfs -f -o "lowerdir=$KLOWER,upperdir=$r/u,workdir=$r/w" "$r/m" &
		PID=$! ;;
	unionfs-fuse)
		unionfs -f -o cow,allow_other "$r/u=RW:$KLOWER=RO" "$r/m" &
		PID=$! ;;
	stratafs | stratafs-nopt | stratafs-uring)
		local o="lowerdir=$SLOWER,upperdir=$r/u,workdir=$r/w${STRATAFS_BENCH_OPTS:+,$STRATAFS_BENCH_OPTS}"
		# the uring column turns enable_uring on for the whole run: the others
		# stay on /dev/fuse, as they are where the kernel does not offer it
		[ $impl = stratafs-nopt ] && o="$o,passthrough=off,io_uring=off"
		[ $impl = stratafs ] && o="$o,io_uring=off"
		[ $impl = stratafs-uring ] && o="$o,io_uring"
		"$STRATAFS" bench "$r/m" -f -o "$o" &
		PID=$! ;;
	esac
	if [ -n "$PID" ]; then
		for _ in $(seq 100); do
			grep -q " $r/m " /proc/self/mountinfo && break
			sleep 0.05
		done
	fi
}

peak_rss() { # the daemon's peak RSS in MiB, or -
	[ -n "$PID" ] && [ -r /proc/$PID/status ] || { echo -; return; }
	awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' /proc/$PID/status
}

umount_impl() {
	local r=$1
	if [ -d "$r/m" ] && grep -q " $r/m " /proc/self/mountinfo; then
		umount "$r/m" 2>/dev/null || umount -l "$r/m"
	fi
	[ -n "$PID" ] && wait "$PID" 2>/dev/null
	PID=
	if grep -q " $r " /proc/self/mountinfo; then
		umount "$r" 2>/dev/null || umount -l "$r"
	fi
	rm -f "$BENCH_DIR/upper.img"
	rm -rf "$r"
}

record() { # IMPL REP WORKLOAD VALUE
	printf '%s\t%s\t%s\t%s\t%s\n' "$RUN_ID" "$1" "$2" "$3" "$4" >> "$RESULTS"
	say "$1 rep $2 $3 = $4"
}

run_workload() { # IMPL REP WL M
	local impl=$1 rep=$2 wl=$3 m=$4
	sync # the last row's dirty data is not this row's to write back (untimed)
	case $wl in
	find)
		drop_caches; timed "find $m/tree"; record "$impl" "$rep" find_cold "$T"
		timed "find $m/tree"; record "$impl" "$rep" find_warm "$T" ;;
	stat)
		drop_caches; timed "find $m/tree -printf '%s %i\n'"; record "$impl" "$rep" stat_cold "$T"
		timed "find $m/tree -printf '%s %i\n'"; record "$impl" "$rep" stat_warm "$T" ;;
	readall)
		drop_caches; timed "find $m/tree -type f -print0 | xargs -0 -n 256 cat"
		record "$impl" "$rep" readall_cold "$T" ;;
	untar)
		timed "tar xf $DATA/untar.tar -C $m/tree && sync -f $m/tree"
		record "$impl" "$rep" untar "$T" ;;
	cu_small)
		timed "cd $m && while read -r f; do echo x >> \"\$f\"; done < $DATA/cu_files"
		record "$impl" "$rep" copyup_small "$T" ;;
	cu_big)
		timed "echo x >> $m/big/copyup.bin"; record "$impl" "$rep" copyup_big "$T" ;;
	rmrf)
		timed "rm -rf $m/tree/$(cat "$DATA/rm_dir")"; record "$impl" "$rep" rmrf "$T" ;;
	meta)
		timed "$PY $here/bench/meta.py $m/meta 10000"; record "$impl" "$rep" create_stat_unlink "$T" ;;
	rename)
		# EXDEV from the kernel overlay without redirect_dir: mv copies, as users see it
		local d; d=$(cd "$m/tree" && ls -d */ | sed -n 2p | tr -d /)
		timed "mv $m/tree/$d $m/tree/$d.renamed"; record "$impl" "$rep" rename_dir "$T" ;;
	seqread)
		drop_caches; timed "dd if=$m/big/read.bin of=/dev/null bs=1M"; record "$impl" "$rep" seqread_cold "$T" ;;
	seqwrite)
		timed "dd if=/dev/zero of=$m/seqwrite.bin bs=1M count=$BIG_MB conv=fsync"
		record "$impl" "$rep" seqwrite_fsync "$T" ;;
	randread)
		drop_caches
		local iops; iops=$($PY $here/bench/randread.py "$m/big/read.bin" 5)
		record "$impl" "$rep" randread_iops "$iops" ;;
	esac
}

URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_SAVED=
uring_on() { # stratafs-uring needs the kernel to offer FUSE over io_uring
	case ",$IMPLS," in *,stratafs-uring,*) ;; *) return ;; esac
	[ -w "$URING_PARAM" ] || { echo "bench: no $URING_PARAM; stratafs-uring uses /dev/fuse" >&2; return; }
	URING_SAVED=$(cat "$URING_PARAM")
	echo 1 > "$URING_PARAM"
	trap 'echo "$URING_SAVED" > "$URING_PARAM"' EXIT
}

main() {
	build_lower
	image_lower
	uring_on
	RUN_ID=$(date +%Y%m%d-%H%M%S)
	: > "$BENCH_DIR/rss.tsv"
	local impl rep wl r
	for rep in $(seq "$REPS"); do
		for impl in ${IMPLS//,/ }; do
			r=$BENCH_DIR/run-$impl
			umount_impl "$r"
			mount_impl "$impl" "$r"
			for wl in ${WLS//,/ }; do
				run_workload "$impl" "$rep" "$wl" "$r/m"
			done
			printf '%s\t%s\t%s\n' "$impl" "$rep" "$(peak_rss)" >> "$BENCH_DIR/rss.tsv"
			umount_impl "$r"
		done
	done
	$PY "$here/bench/report.py" "$RESULTS" "$RUN_ID" "$BENCH_DIR/rss.tsv"
}

main
