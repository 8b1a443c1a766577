#!/usr/bin/env python3
"""test_cache.py -- what stratafs brings into memory ahead of reads, observed.

Two things stratafs does so that a walk reading every file does not pay a
round trip and a disk read per file (src/stratafs/ops.c offer_data,
src/ovl/prefetch.c):
  - a read-only open of a small file that is only in a lower layer puts the
    file's data into the kernel's page cache of the mount before the open
    returns (FUSE_NOTIFY_STORE), so the read that follows sends no READ;
  - once files of a directory are opened in listing order, the next ones
    are read ahead in the real layer, so they are in memory when opened.
Checked by residency (mmap + mincore, which reads nothing), never by time:
  - a bare open of a small lower file leaves its pages resident in the
    mount's cache; a large one and an upper one are left alone;
  - the data there is the file's, and a copy-up through another open
    replaces it: the old read-only open and a new one read the new bytes,
    as on the kernel overlay (oracle: the same steps on a kernel mount), and
    so does a write through another name of a lower hard link;
  - opening a dir's first file, or two files in listing order, makes the
    next ones resident in the lower layer; opening the last ones in reverse
    order does not;
  - reading a dir in order while another process renames, removes and
    copies up its files: every read returns the bytes the file has (or
    ENOENT), nothing else.
Each check prints `ok - ...` or `not ok - ...`; the last line is
`N passed, N failed`.
"""
import ctypes
import mmap
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tap  # noqa: E402
from tap import check  # noqa: E402

libc = ctypes.CDLL(None, use_errno=True)
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
PAGE = os.sysconf("SC_PAGE_SIZE")
SMALL = 40000           # well under the 128 KiB stored at open
LARGE = 1 << 20         # over it


def mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def umount(path):
    if mounted(path):
        if subprocess.run(["umount", path], capture_output=True).returncode:
            subprocess.run(["umount", "-l", path], capture_output=True)


def resident(path):
    """How many pages of path are in memory; mmap and mincore read nothing."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap")
        try:
            vec = ctypes.create_string_buffer((size + PAGE - 1) // PAGE)
            if libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore")
            return sum(b & 1 for b in vec.raw)
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def content(i, size):
    unit = b"file %d " % i
    return (unit * (size // len(unit) + 1))[:size]


class Stack:
    """A lower and an upper layer; mounted by the kernel or by stratafs."""

    def __init__(self, tmp, name):
        self.root = os.path.join(tmp, name)
        self.lo, self.up, self.wk, self.mnt = (os.path.join(self.root, n)
                                               for n in ("l", "u", "w", "m"))
        for p in (self.lo, self.up, self.wk, self.mnt):
            os.makedirs(p)

    def opts(self):
        return "lowerdir=%s,upperdir=%s,workdir=%s" % (self.lo, self.up, self.wk)

    def mount_kernel(self):
        # stratafs's defaults (redirect_dir=on, index=on), which the module's may not be
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        self.opts() + ",redirect_dir=on,index=on", self.mnt], check=True)

    def mount_stratafs(self, binary, extra):
        o = self.opts() + ("," + extra if extra else "")
        r = subprocess.run([binary, "cache", self.mnt, "-o", o], capture_output=True,
                           text=True, timeout=30)
        if r.returncode:
            raise RuntimeError("mount: " + r.stderr.strip())

    def p(self, rel):
        return os.path.join(self.mnt, rel)


def test_store_at_open(binary, tmp, extra):
    st = Stack(tmp, "store")
    with open(os.path.join(st.lo, "small"), "wb") as f:
        f.write(content(1, SMALL))
    with open(os.path.join(st.lo, "large"), "wb") as f:
        f.write(content(2, LARGE))
    with open(os.path.join(st.up, "upper"), "wb") as f:
        f.write(content(4, SMALL))
    drop_caches()
    st.mount_stratafs(binary, extra)
    try:
        want = (SMALL + PAGE - 1) // PAGE
        fd = os.open(st.p("small"), os.O_RDONLY)
        n = resident(st.p("small"))
        check("a bare read-only open of a small lower file caches all of it", n == want,
              "%d of %d pages resident" % (n, want))
        data = os.pread(fd, SMALL + 10, 0)
        check("... and those are the file's bytes", data == content(1, SMALL),
              "read %d bytes" % len(data))
        os.close(fd)
        fd = os.open(st.p("large"), os.O_RDONLY)
        n = resident(st.p("large"))
        check("a large lower file is not read at open", n == 0, "%d pages resident" % n)
        os.close(fd)
        drop_caches()
        fd = os.open(st.p("upper"), os.O_RDONLY)
        os.close(fd)
        n = resident(os.path.join(st.up, "upper"))
        check("an upper file is not read at open", n == 0, "%d pages resident" % n)
    finally:
        umount(st.mnt)


def write_between_reads(st, name, other, read_first):
    """Open name read-only (and read it), write through other, then read
    through the old open and a new one."""
    out = []
    ro = os.open(st.p(name), os.O_RDONLY)
    if read_first:
        out.append(os.pread(ro, 100, 0))
    rw = os.open(st.p(other), os.O_RDWR)
    os.pwrite(rw, b"NEW", 0)
    out.append(os.pread(ro, 100, 0))
    fresh = os.open(st.p(name), os.O_RDONLY)
    out.append(os.pread(fresh, 100, 0))
    for fd in (ro, rw, fresh):
        os.close(fd)
    return out


def copyup_steps(st):
    """Read through a read-only open, copy up through another, read again."""
    out = write_between_reads(st, "f", "f", True)
    with open(os.path.join(st.up, "f"), "rb") as f:
        out.append(f.read())
    return out


def hardlink_steps(st):
    """Open one name of a lower hard link, write through the other, read."""
    return write_between_reads(st, "b", "a", False)


def on_both(binary, tmp, extra, label, build, steps):
    """Run steps on a kernel overlay and on stratafs over the same layers
    (build(lower_dir) makes them); returns {"kernel": ..., "stratafs": ...}."""
    sides = {}
    for name in ("kernel", "stratafs"):
        st = Stack(tmp, "%s-%s" % (label, name))
        build(st.lo)
        if name == "kernel":
            st.mount_kernel()
        else:
            st.mount_stratafs(binary, extra)
        try:
            sides[name] = steps(st)
        finally:
            umount(st.mnt)
    return sides


def check_same(name, sides):
    check(name, sides["kernel"] == sides["stratafs"],
          "kernel %r, stratafs %r" % (sides["kernel"], sides["stratafs"]))


def test_store_then_copyup(binary, tmp, extra):
    def build(lo):
        with open(os.path.join(lo, "f"), "wb") as f:
            f.write(b"lower data of f\n")
    check_same("a copy-up replaces the cached lower data (old open, new open, upper file)",
               on_both(binary, tmp, extra, "cu", build, copyup_steps))


def test_store_hardlink(binary, tmp, extra):
    def build(lo):
        with open(os.path.join(lo, "a"), "wb") as f:
            f.write(b"lower data of a and b\n")
        os.link(os.path.join(lo, "a"), os.path.join(lo, "b"))
    check_same("a lower hard link written through one name reads new through the other",
               on_both(binary, tmp, extra, "hl", build, hardlink_steps))


def make_dir(lo, n, size=SMALL):
    d = os.path.join(lo, "d")
    os.makedirs(d, exist_ok=True)
    for i in range(n):
        with open(os.path.join(d, "f%03d" % i), "wb") as f:
            f.write(content(i, size))
    return d


def files_in_order(mnt_dir):
    return [n for n in os.listdir(mnt_dir) if os.path.isfile(os.path.join(mnt_dir, n))]


def wait_resident(paths, need, secs=5.0):
    end = time.monotonic() + secs
    while True:
        n = sum(1 for p in paths if resident(p) > 0)
        if n >= need or time.monotonic() > end:
            return n
        time.sleep(0.05)


def test_prefetch(binary, tmp, extra):
    st = Stack(tmp, "pf")
    make_dir(st.lo, 60)
    st.mount_stratafs(binary, extra)
    try:
        order = files_in_order(st.p("d"))
        drop_caches()
        with open(st.p("d/" + order[0]), "rb") as f:
            f.read()
        nxt = [os.path.join(st.lo, "d", n) for n in order[1:11]]
        n = wait_resident(nxt, len(nxt))
        check("a dir's first file opened: the next ones are read ahead", n == len(nxt),
              "%d of %d next files resident" % (n, len(nxt)))
        drop_caches()
        for name in order[30:32]:
            with open(st.p("d/" + name), "rb") as f:
                f.read()
        nxt = [os.path.join(st.lo, "d", n) for n in order[32:42]]
        n = wait_resident(nxt, len(nxt))
        check("two files opened in listing order mid-dir: the next ones are read ahead",
              n == len(nxt), "%d of %d next files resident" % (n, len(nxt)))
        drop_caches()
        for name in reversed(order[-3:]):
            with open(st.p("d/" + name), "rb") as f:
                f.read()
        time.sleep(0.3)
        before = [os.path.join(st.lo, "d", n) for n in order[-13:-3]]
        n = sum(1 for p in before if resident(p) > 0)
        check("files opened in reverse order: nothing is read ahead", n == 0,
              "%d files resident" % n)
        drop_caches()
        bad = []
        for name in order:
            with open(st.p("d/" + name), "rb") as f:
                if f.read() != content(int(name[1:]), SMALL):
                    bad.append(name)
        check("a dir read in order reads every file's bytes", not bad, "differ: %s" % bad[:5])
    finally:
        umount(st.mnt)


def test_prefetch_churn(binary, tmp, extra):
    st = Stack(tmp, "churn")
    make_dir(st.lo, 300, 3000)
    st.mount_stratafs(binary, extra)
    stop = threading.Event()
    errs = []

    def churn():
        i = 0
        while not stop.is_set():
            name = "f%03d" % (i % 300)
            p = st.p("d/" + name)
            try:
                if i % 3 == 0:
                    os.rename(p, p + ".moved")
                elif i % 3 == 1:
                    with open(p, "r+b") as f:  # copy-up, same bytes
                        f.write(content(i % 300, 3000)[:4])
                else:
                    os.unlink(p)
            except FileNotFoundError:
                pass
            except OSError as e:
                errs.append("churn %s: %s" % (name, e))
            i += 7
    try:
        t = threading.Thread(target=churn)
        t.start()
        bad = []
        for rnd in range(5):
            drop_caches()
            try:
                names = files_in_order(st.p("d"))
            except OSError as e:
                bad.append("listdir: %s" % e)
                break
            for name in names:
                base = name.split(".")[0]
                try:
                    with open(st.p("d/" + name), "rb") as f:
                        data = f.read()
                except FileNotFoundError:
                    continue
                except OSError as e:
                    bad.append("%s: %s" % (name, e))
                    continue
                if data != content(int(base[1:]), 3000):
                    bad.append("%s: other bytes" % name)
        stop.set()
        t.join()
        check("reading a dir in order while it is renamed, copied up and emptied",
              not bad and not errs, "; ".join((bad + errs)[:5]))
    finally:
        stop.set()
        umount(st.mnt)
        time.sleep(0.2)


def main():
    tests = (test_store_at_open, test_store_then_copyup, test_store_hardlink, test_prefetch,
             test_prefetch_churn)
    return tap.suite_main(tests, "strata-cache-", "/var/tmp")

if __name__ == "__main__":
    sys.exit(main())
