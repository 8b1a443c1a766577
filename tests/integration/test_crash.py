#!/usr/bin/env python3
"""test_crash.py -- stratafs killed with SIGKILL in the middle of copy-ups.

A lower layer holds 8 files of 64 MiB.  A first round without a kill
measures how long the 8 copy-ups take; the kill timings are fractions of
that.  For each kill timing: stratafs runs
in the foreground (-f, so its pid is known) on a fresh upper/work, 8 writer
processes each open one lower file O_WRONLY|O_APPEND and write one byte
(a copy-up each), the daemon gets SIGKILL after the given delay, the dead
mount is lazily unmounted, and stratafs is mounted again on the same
upper/work.  Checked per round:

  - every file shows either the lower content or the lower content plus the
    appended byte, never anything else (no partial copy-up visible)
  - the upper dir holds only complete copies (lower content, with or without
    the byte) under the real names: nothing partial, no temp names
  - work/work is empty after the remount (stratafs cleans it at mount)
  - after umount the kernel overlay mounts the same upper/work and shows
    the same content for every file

Prints `ok - NAME` / `not ok - NAME: REASON`, ends with `N passed, N failed`;
exit 1 if anything failed.  Root; Python 3.11 stdlib.

  test_crash.py [--stratafs build/stratafs] [--delays 0.05,0.3,1.2]
"""

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import report, results, summary  # noqa: E402,F401
from rig import is_mounted  # noqa: E402
from rig_write import Mnt, esc, watchdog  # noqa: E402

MiB = 1024 * 1024
WRITER = ("import os, sys\n"
          "try:\n"
          "    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)\n"
          "    os.write(fd, b'X')\n"
          "    os.close(fd)\n"
          "except OSError as e:\n"
          "    sys.exit(10 + e.errno)\n")




def make_lower(lower, nfiles, size):
    """nfiles files of size bytes; returns {name: (hash, hash with 'X')}."""
    os.makedirs(lower)
    want = {}
    for i in range(nfiles):
        name = "f%d" % i
        block = bytearray(os.urandom(MiB))
        h = hashlib.sha256()
        with open(os.path.join(lower, name), "wb") as fh:
            for j in range(size // MiB):
                block[:8] = j.to_bytes(8, "little")
                fh.write(block)
                h.update(block)
        h2 = h.copy()
        h2.update(b"X")
        want[name] = (h.hexdigest(), h2.hexdigest())
    return want


def file_hash(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(4 * MiB)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def classify(path, want):
    """'lower', 'appended', or a problem text."""
    try:
        h = file_hash(path)
    except OSError as e:
        return "read error %s" % e
    if h == want[0]:
        return "lower"
    if h == want[1]:
        return "appended"
    return "partial or corrupt (size %d)" % os.lstat(path).st_size


def wait_mounted(mnt, proc, secs=10):
    end = time.time() + secs
    while time.time() < end:
        if proc.poll() is not None:
            return False
        if is_mounted(mnt):
            try:
                os.stat(mnt)
                return True
            except OSError:
                pass
        time.sleep(0.01)
    return False


def one_round(root, lower, want, binary, extra, k, delay):
    tag = "round %d (%s)" % (k, "no kill" if delay is None else "kill after %.0f ms" % (delay * 1000))
    d = os.path.join(root, "r%d" % k)
    upper, work, mnt = (os.path.join(d, x) for x in ("upper", "work", "mnt"))
    for x in (upper, work, mnt):
        os.makedirs(x)
    opts = "lowerdir=%s,upperdir=%s,workdir=%s" % (esc(lower), esc(upper), esc(work))
    if extra:
        opts += "," + extra
    cleanup = []
    try:
        with open(os.path.join(d, "daemon.log"), "wb") as logf:
            proc = subprocess.Popen([binary, "stratafs", mnt, "-o", opts, "-f"], stdin=subprocess.DEVNULL,
                                    stdout=logf, stderr=logf)
        cleanup.append(lambda: (proc.poll() is None and proc.kill(), proc.wait()))
        cleanup.append(lambda: is_mounted(mnt) and subprocess.run(["umount", "-l", mnt], capture_output=True))
        if not wait_mounted(mnt, proc):
            report(tag + ": foreground mount", ["stratafs -f did not mount (exit %s)" % proc.poll()])
            return
        writers = [subprocess.Popen([sys.executable, "-c", WRITER, os.path.join(mnt, n)])
                   for n in sorted(want)]
        cleanup.append(lambda: [w.kill() for w in writers if w.poll() is None])
        if delay is None:                     # calibration: no kill
            t_start = time.time()
            codes = [w.wait(timeout=60) for w in writers]
            took = time.time() - t_start
            subprocess.run(["umount", mnt], capture_output=True)
            proc.wait(timeout=10)
            report(tag + ": all appends succeed without a kill", [] if codes == [0] * len(codes)
                   else ["writer exit codes %s" % codes])
            return took
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        codes = []
        for w in writers:
            try:
                codes.append(w.wait(timeout=20))
            except subprocess.TimeoutExpired:
                w.kill()
                codes.append("hung")
        done = sum(1 for c in codes if c == 0)
        try:
            os.stat(mnt)
            dead = "stat ok"
        except OSError as e:
            dead = os.strerror(e.errno)
        u = subprocess.run(["umount", "-l", mnt], capture_output=True, text=True)
        errs = sorted({os.strerror(c - 10) if isinstance(c, int) and c > 10 else str(c) for c in codes if c != 0})
        print("# %s: %d/%d writers succeeded (others: %s); dead mount: %s; umount -l: rc %d %s"
              % (tag, done, len(codes), ", ".join(errs) or "-", dead, u.returncode, u.stderr.strip()))
        if is_mounted(mnt):
            report(tag + ": dead mount removed", ["still mounted after umount -l"])
            return

        # remount stratafs (daemonizing) on the same upper/work
        ms = Mnt("stratafs", [lower], upper, work, mnt, binary, extra)
        ok, msg = ms.try_mount()
        if not ok:
            report(tag + ": remount after the crash", [msg])
            return
        cleanup.append(ms.umount)
        probs, states = [], {}
        for n in sorted(want):
            c = classify(os.path.join(mnt, n), want[n])
            states[n] = c
            if c not in ("lower", "appended"):
                probs.append("%s: %s" % (n, c))
            elif c == "lower" and codes[int(n[1:])] == 0:
                probs.append("%s: the append returned success before the kill but is lost" % n)
        print("# %s: after remount: %d appended, %d lower content" % (
            tag, list(states.values()).count("appended"), list(states.values()).count("lower")))
        report(tag + ": every file is lower content or lower + appended byte", probs)

        probs = []
        for name in sorted(os.listdir(upper)):
            path = os.path.join(upper, name)
            if name not in want:
                probs.append("unexpected entry %r in upper" % name)
            elif not os.path.isfile(path) or os.path.islink(path):
                probs.append("%s: not a regular file in upper" % name)
            else:
                c = classify(path, want[name])
                if c not in ("lower", "appended"):
                    probs.append("upper/%s: %s" % (name, c))
        report(tag + ": upper holds only complete copies", probs)

        ww = os.path.join(work, "work")
        left = sorted(os.listdir(ww)) if os.path.isdir(ww) else ["(work/work missing)"]
        report(tag + ": work/work empty after the remount", ["left: %s" % left[:8]] if left else [])

        ms.umount()
        mk = Mnt("kernel", [lower], upper, work, mnt)
        ok, msg = mk.try_mount()
        if not ok:
            report(tag + ": kernel mounts the upper afterwards", [msg])
            return
        cleanup.append(mk.umount)
        probs = []
        names = sorted(os.listdir(mnt))
        if names != sorted(want):
            probs.append("kernel lists %s" % names)
        for n in sorted(want):
            c = classify(os.path.join(mnt, n), want[n])
            if c != states[n]:
                probs.append("%s: kernel=%s stratafs=%s" % (n, c, states[n]))
        mk.umount()
        report(tag + ": kernel mounts the upper afterwards and shows the same", probs)
    finally:
        for fn in reversed(cleanup):
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                print("# cleanup: %s" % e)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stratafs", default="build/stratafs")
    ap.add_argument("--extra-opts", default=os.environ.get("STRATAFS_EXTRA_OPTS", ""))
    ap.add_argument("--delays", default="", help="kill delays in seconds, comma-separated "
                    "(default: 2%%, 20%%, 40%%, 60%%, 80%%, 95%% of the time the copy-ups take without a kill)")
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--timeout", type=int, default=170, help="abort our FUSE mounts after this many seconds")
    args = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("must run as root")
    binary = os.path.abspath(args.stratafs)
    t0 = time.time()
    wd = None
    root = tempfile.mkdtemp(prefix="strata-wt-crash-", dir="/tmp")
    lower = os.path.join(root, "lower")
    try:
        if not os.access(binary, os.X_OK):
            raise RuntimeError("stratafs binary %s not found" % binary)
        want = make_lower(lower, args.files, args.size_mib * MiB)
        wd = watchdog(root, args.timeout, lambda: report("watchdog", ["timeout after %ds" % args.timeout]))
        print("# %d lower files of %d MiB in %.1fs" % (args.files, args.size_mib, time.time() - t0))
        took = one_round(root, lower, want, binary, args.extra_opts, 0, None)
        if took is None:
            raise RuntimeError("the calibration round failed")
        print("# the %d copy-ups take %.2fs without a kill" % (args.files, took))
        if args.delays:
            delays = [float(x) for x in args.delays.split(",")]
        else:
            delays = [took * f for f in (0.02, 0.2, 0.4, 0.6, 0.8, 0.95)]
        for k, delay in enumerate(delays):
            one_round(root, lower, want, binary, args.extra_opts, k + 1, delay)
    except Exception as e:  # noqa: BLE001
        report("setup", ["%s: %s" % (type(e).__name__, e)])
    finally:
        if wd:
            wd.cancel()
        os.chdir("/")
        still = [m for m in (os.path.join(root, d, "mnt") for d in os.listdir(root)) if is_mounted(m)]
        for m in still:
            subprocess.run(["umount", "-l", m], capture_output=True)
        if args.keep:
            print("# kept %s" % root)
        elif not any(is_mounted(m) for m in still):
            shutil.rmtree(root, ignore_errors=True)
    return summary(t0)


if __name__ == "__main__":
    sys.exit(main())
