#!/usr/bin/env python3
"""test_faults.py -- stratafs when the world misbehaves.

  - an upper filesystem without xattr support (ramfs): the mount is refused
    with one line on stderr, nothing mounted (the kernel refuses it too);
  - the upper filesystem remounted read-only under a live mount: writes fail
    with EROFS, reads go on, nothing crashes, umount ends the daemon;
  - a lower layer removed while mounted: errors, no crash, no hang;
  - 10,000 files open at once through the mount;
  - a copy-up interrupted by a signal to the writer: the mount stays usable,
    and the file shows either the lower content or a whole copy;
  - parallel reads of a read-only open while another fd copies its file up:
    no read fails, and the old open then reads the new data (kernel as oracle).
Each check prints `ok - ...` or `not ok - ...`; the last line is
`N passed, N failed`.
"""
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tap  # noqa: E402
from tap import check  # noqa: E402



def mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def daemon_pids(mnt):
    out = subprocess.run(["pgrep", "-f", "stratafs.* %s( |$)" % mnt], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def umount(path):
    if mounted(path):
        if subprocess.run(["umount", path], capture_output=True).returncode:
            subprocess.run(["umount", "-l", path], capture_output=True)


def stratafs(binary, mnt, opts, extra):
    if extra:
        opts += "," + extra
    return subprocess.run([binary, "fault", mnt, "-o", opts], capture_output=True, text=True,
                          timeout=30)


def mkdirs(*paths):
    for p in paths:
        os.makedirs(p, exist_ok=True)


def test_no_xattr(binary, tmp, extra):
    base = os.path.join(tmp, "ramfs")
    mkdirs(base)
    subprocess.run(["mount", "-t", "ramfs", "ramfs", base], check=True)
    try:
        lo, up, wk, mnt = (os.path.join(base, n) for n in ("l", "u", "w", "m"))
        mkdirs(lo, up, wk, mnt)
        r = stratafs(binary, mnt, "lowerdir=%s,upperdir=%s,workdir=%s" % (lo, up, wk), extra)
        lines = r.stderr.strip().splitlines()
        check("upper without xattrs: mount refused with one line",
              r.returncode != 0 and len(lines) == 1 and "xattr" in r.stderr and not mounted(mnt),
              "rc %d, stderr %r" % (r.returncode, r.stderr))
        umount(mnt)
    finally:
        subprocess.run(["umount", base], capture_output=True)


def test_erofs(binary, tmp, extra):
    base = os.path.join(tmp, "rofs")
    mkdirs(base)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", base], check=True)
    lo = os.path.join(tmp, "erofs-lower")
    mkdirs(lo)
    with open(os.path.join(lo, "a"), "w") as f:
        f.write("lower a\n")
    up, wk, mnt = (os.path.join(base, n) for n in ("u", "w", "m"))
    mkdirs(up, wk)
    mnt = os.path.join(tmp, "erofs-mnt")
    mkdirs(mnt)
    try:
        r = stratafs(binary, mnt, "lowerdir=%s,upperdir=%s,workdir=%s" % (lo, up, wk), extra)
        if r.returncode:
            check("EROFS: mount", False, r.stderr)
            return
        with open(os.path.join(mnt, "before"), "w") as f:
            f.write("x")
        subprocess.run(["mount", "-o", "remount,ro", base], check=True)
        errs = []
        for what, fn in (("create", lambda: open(os.path.join(mnt, "new"), "w")),
                         ("copy-up", lambda: open(os.path.join(mnt, "a"), "a")),
                         ("mkdir", lambda: os.mkdir(os.path.join(mnt, "d"))),
                         ("unlink", lambda: os.unlink(os.path.join(mnt, "before")))):
            try:
                fn()
                errs.append("%s succeeded" % what)
            except OSError as e:
                if e.errno != 30:
                    errs.append("%s: %s" % (what, os.strerror(e.errno)))
        check("EROFS: writes fail with EROFS once the upper fs is read-only", not errs,
              "; ".join(errs))
        with open(os.path.join(mnt, "a")) as f:
            data = f.read()
        check("EROFS: reads go on", data == "lower a\n", repr(data))
        subprocess.run(["mount", "-o", "remount,rw", base], check=True)
        with open(os.path.join(mnt, "a"), "a") as f:
            f.write("more\n")
        check("EROFS: writes work again after remount rw", True)
    finally:
        umount(mnt)
        time.sleep(0.3)
        check("EROFS: umount ends the daemon", not daemon_pids(mnt), "daemon still running")
        subprocess.run(["umount", base], capture_output=True)


def test_vanishing_lower(binary, tmp, extra):
    lo1, lo2 = os.path.join(tmp, "van1"), os.path.join(tmp, "van2")
    mkdirs(os.path.join(lo1, "d"), os.path.join(lo2, "d"))
    for i in range(50):
        with open(os.path.join(lo2, "d", "f%d" % i), "w") as f:
            f.write("x" * i)
    mnt = os.path.join(tmp, "van-mnt")
    mkdirs(mnt)
    r = stratafs(binary, mnt, "lowerdir=%s:%s" % (lo1, lo2), extra)
    if r.returncode:
        check("vanishing lower: mount", False, r.stderr)
        return
    try:
        os.listdir(os.path.join(mnt, "d"))
        shutil.rmtree(lo2)
        problems = []
        for i in range(50):
            try:
                with open(os.path.join(mnt, "d", "f%d" % i)) as f:
                    f.read()
            except OSError:
                pass  # errors are fine; a hang or a dead daemon is not
        try:
            os.listdir(os.path.join(mnt, "d"))
            os.stat(mnt)
        except OSError as e:
            if e.errno in (107, 103):  # ENOTCONN, ECONNABORTED: the daemon died
                problems.append("daemon gone: %s" % os.strerror(e.errno))
        check("vanishing lower: errors, no crash, no hang", not problems and daemon_pids(mnt),
              "; ".join(problems) or "daemon not running")
    finally:
        umount(mnt)


def test_many_open(binary, tmp, extra):
    lo1, lo2 = os.path.join(tmp, "many1"), os.path.join(tmp, "many2")
    mkdirs(lo1, lo2)
    n = 10000
    for i in range(n):
        with open(os.path.join(lo2, "f%05d" % i), "w") as f:
            f.write(str(i))
    mnt = os.path.join(tmp, "many-mnt")
    mkdirs(mnt)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, n + 100), max(hard, n + 100)))
    r = stratafs(binary, mnt, "lowerdir=%s:%s" % (lo1, lo2), extra)
    if r.returncode:
        check("10,000 open files: mount", False, r.stderr)
        return
    fds = []
    try:
        for i in range(n):
            fds.append(os.open(os.path.join(mnt, "f%05d" % i), os.O_RDONLY))
        bad = [i for i, fd in enumerate(fds) if os.pread(fd, 16, 0) != str(i).encode()]
        check("10,000 files open at once read right", not bad, "%d wrong" % len(bad))
    except OSError as e:
        check("10,000 files open at once read right", False,
              "after %d opens: %s" % (len(fds), os.strerror(e.errno)))
    finally:
        for fd in fds:
            os.close(fd)
        umount(mnt)


def test_interrupted_copyup(binary, tmp, extra):
    lo = os.path.join(tmp, "intr-lower")
    up, wk, mnt = (os.path.join(tmp, n) for n in ("intr-u", "intr-w", "intr-m"))
    mkdirs(lo, up, wk, mnt)
    big = os.path.join(lo, "big")
    with open(big, "wb") as f:
        for _ in range(256):
            f.write(os.urandom(1 << 20))
    with open(big, "rb") as f:
        lower = f.read()
    r = stratafs(binary, mnt, "lowerdir=%s,upperdir=%s,workdir=%s" % (lo, up, wk), extra)
    if r.returncode:
        check("interrupted copy-up: mount", False, r.stderr)
        return
    try:
        code = "import os; fd = os.open(%r, os.O_WRONLY | os.O_APPEND); os.write(fd, b'!')" % \
            os.path.join(mnt, "big")
        p = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(0.15)
        p.send_signal(signal.SIGINT)
        p.wait(timeout=60)
        with open(os.path.join(mnt, "big"), "rb") as f:
            now = f.read()
        check("interrupted copy-up: the file is whole (lower or lower+append)",
              now in (lower, lower + b"!"), "size %d" % len(now))
        with open(os.path.join(mnt, "after"), "w") as f:
            f.write("ok")
        check("interrupted copy-up: the mount stays usable", True)
    finally:
        umount(mnt)
    check("interrupted copy-up: no temporaries left in the workdir",
          not os.listdir(os.path.join(wk, "work")), str(os.listdir(os.path.join(wk, "work"))))


def reads_across_copyup(mnt, nfiles):
    """Readers on read-only fds while another fd appends (copy-up); errors and tails seen."""
    import threading
    errors, tails = [], []

    def reader(fd, stop):
        while not stop.is_set():
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # READs reach the fs
                os.pread(fd, 1 << 20, 0)
                os.pread(fd, 1 << 20, 3 << 20)
            except OSError as e:
                errors.append(os.strerror(e.errno))
    for i in range(nfiles):
        path = os.path.join(mnt, "r%02d" % i)
        fd = os.open(path, os.O_RDONLY)
        try:
            stop = threading.Event()
            ts = [threading.Thread(target=reader, args=(fd, stop)) for _ in range(4)]
            for t in ts:
                t.start()
            time.sleep(0.02)
            with open(path, "ab") as f:
                f.write(b"tail")
            time.sleep(0.02)
            stop.set()
            for t in ts:
                t.join()
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            tails.append(os.pread(fd, 8, 4 << 20))
        finally:
            os.close(fd)
    return errors, tails


def test_reads_across_copyup(binary, tmp, extra):
    """Parallel READs of a read-only open while a copy-up moves its file, kernel as oracle."""
    nfiles = 10
    lo = os.path.join(tmp, "rc-lower")
    mkdirs(lo)
    for i in range(nfiles):
        with open(os.path.join(lo, "r%02d" % i), "wb") as f:
            f.write(os.urandom(4 << 20))
    seen = {}
    for impl in ("kernel", "stratafs"):
        up, wk, mnt = (os.path.join(tmp, "rc-%s-%s" % (impl, n)) for n in ("u", "w", "m"))
        mkdirs(up, wk, mnt)
        opts = "lowerdir=%s,upperdir=%s,workdir=%s" % (lo, up, wk)
        if impl == "kernel":
            r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, mnt],
                               capture_output=True, text=True)
        else:
            r = stratafs(binary, mnt, opts, extra)
        if r.returncode:
            check("reads across a copy-up: mount %s" % impl, False, r.stderr)
            return
        try:
            seen[impl] = reads_across_copyup(mnt, nfiles)
        finally:
            umount(mnt)
    errors, tails = seen["stratafs"]
    check("reads across a copy-up: parallel READs of the old open never fail", not errors,
          "%d errors, e.g. %s" % (len(errors), errors[:3]))
    check("reads across a copy-up: the old open then reads the new data, as in the kernel",
          tails == seen["kernel"][1] and seen["kernel"][1] == [b"tail"] * nfiles,
          "kernel %r, stratafs %r" % (seen["kernel"][1][:2], tails[:2]))


def main():
    tests = (test_no_xattr, test_erofs, test_vanishing_lower, test_many_open,
             test_interrupted_copyup, test_reads_across_copyup)
    return tap.suite_main(tests, "strata-faults-")

if __name__ == "__main__":
    sys.exit(main())
