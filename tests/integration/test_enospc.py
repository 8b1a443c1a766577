#!/usr/bin/env python3
"""test_enospc.py -- stratafs on a full upper filesystem, and on a read-only one.

The upper and work dirs live on a small tmpfs (size=8m); the lower layer
(on /tmp) holds files bigger than the space left.  The same step sequence
runs on the kernel overlay (its own tmpfs) and on stratafs:

  space   copy-up of a 12 MiB file (ENOSPC), a 5 MiB copy-up that fits, a
          6 MiB copy-up that runs out midway, fill the fs with a new file,
          then copy-up by open for write, create+write, mkdir, chmod,
          setxattr, truncate, a long symlink, create in a lower-only dir;
          free the space and retry; copy up a 100 MiB sparse file (fits:
          holes stay holes)
  inodes  the same kind of calls on a tmpfs with nr_inodes=64 whose inodes
          are used up (so that mkdir/mknod/copy-up fail too)

Checked: every failing call fails with ENOSPC; stratafs's step results are
the kernel's; no partial copy-up is visible (every lower name shows the lower
content, or the complete result of a step that succeeded) neither in the
merged view nor in the upper dir; after umount + remount the view is the
same and work/work is empty.  Finally an upper dir on a read-only bind
mount: the kernel refuses to mount it, stratafs must refuse too (one line
on stderr, nothing mounted).

Prints `ok - NAME` / `not ok - NAME: REASON`, ends with `N passed, N failed`;
exit 1 if anything failed.  Root; Python 3.11 stdlib.

  test_enospc.py [--stratafs build/stratafs] [--keep]
"""

import argparse
import errno
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import report, results, summary  # noqa: E402,F401
from rig import is_mounted  # noqa: E402
from rig_write import Mnt, Steps, det_bytes, short, watchdog  # noqa: E402

MiB = 1024 * 1024
KiB = 1024
SHOW_STEPS = False
LOWER = {                       # name: size
    "big": 12 * MiB, "mid": 5 * MiB, "big6": 6 * MiB,
    "small1": 64 * KiB, "small2": 64 * KiB, "small3": 64 * KiB, "small4": 64 * KiB,
    "small5": 64 * KiB, "small6": 64 * KiB, "ldir/lf": 10 * KiB,
    "i1": 4 * KiB, "i2": 4 * KiB, "i3": 4 * KiB, "idir/f": 10,
}
W, A = os.O_WRONLY, os.O_WRONLY | os.O_APPEND




def content(name):
    return det_bytes("enospc:" + name, LOWER[name])


def make_lower(lower):
    for name in LOWER:
        path = os.path.join(lower, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(content(name))
        os.chmod(path, 0o644)


def make_sparse(path):
    """100 MiB, all hole but 4 KiB of data at 50 MiB."""
    with open(path, "wb") as fh:
        fh.truncate(100 * MiB)
        fh.seek(50 * MiB)
        fh.write(det_bytes("enospc:sparse", 4 * KiB))


# --------------------------------------------------------------------------
# the step sequences; a step named "!..." consumes space: if it fails, it
# must fail with ENOSPC.  "!!..." must fail (with ENOSPC).
# --------------------------------------------------------------------------
def fill(S, rel):
    """Write 256 KiB chunks to a new file until an error; the amount written
    is not part of the result (it may differ by a few pages)."""
    fd = os.open(S.p(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    total, stop = 0, None
    chunk = b"F" * (256 * KiB)
    try:
        while total < 64 * MiB:
            try:
                total += os.write(fd, chunk)
            except OSError as e:
                stop = errno.errorcode.get(e.errno, str(e.errno))
                break
    finally:
        try:
            os.close(fd)
            closed = "close ok"
        except OSError as e:
            closed = "close " + errno.errorcode.get(e.errno, str(e.errno))
    if stop is None:
        return "no error after writing 64 MiB; " + closed
    return "stopped by %s; %s" % (stop, closed)


def fill_inodes(S, rel):
    """Create empty files in a new dir until an error."""
    os.mkdir(S.p(rel))
    for i in range(100_000):
        try:
            os.close(os.open(S.p("%s/e%d" % (rel, i)), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        except OSError as e:
            return "stopped by %s" % errno.errorcode.get(e.errno, str(e.errno))
    return "no error after 100000 files"


def write_once(S, rel, data, flags):
    fd = os.open(S.p(rel), flags | os.O_CLOEXEC, 0o644)
    try:
        n = os.write(fd, data)
    finally:
        os.close(fd)
    return n


def space_workload(S):
    p = S.p
    S("!!copy-up of a 12 MiB file (open O_WRONLY|O_APPEND)", S.open, "big", "big", A)
    S("read big", S.read, "big")
    S("!copy-up of a 5 MiB file (fits), append", write_once, S, "mid", b"X", A)
    S("!!copy-up of a 6 MiB file (runs out midway), append", write_once, S, "big6", b"X", A)
    S("read big6", S.read, "big6")
    S("stat big6", S.st, "big6")
    S("!fill the upper fs", fill, S, "fill")
    S("!!copy-up by open for write (64 KiB)", write_once, S, "small1", b"X", A)
    S("!create new2", S.open, "new2", "new2", W | os.O_CREAT | os.O_EXCL)
    S("!!write 64 KiB to new2", lambda: os.write(S.fds["new2"], b"N" * 64 * KiB) if "new2" in S.fds
      else "skipped")
    S("close new2", lambda: S.close("new2") if "new2" in S.fds else None)
    S("!mkdir", os.mkdir, p("newdir"))
    S("!chmod (copy-up)", os.chmod, p("small2"), 0o600)
    S("!setxattr (copy-up)", os.setxattr, p("small3"), "user.x", b"x")
    S("!truncate to 0 (copy-up)", os.truncate, p("small4"), 0)
    S("!unlink a lower file (whiteout)", os.unlink, p("small5"))
    S("!symlink with a 3000-byte target", os.symlink, "t" * 3000, p("longsym"))
    S("!create in a lower-only dir (dir copy-up)", write_once, S, "ldir/new", b"", W | os.O_CREAT)
    for n in ("small1", "small2", "small3", "small4", "mid"):
        S("read " + n, S.read, n)
    S("unlink fill", os.unlink, p("fill"))
    S("!copy-up after freeing space", write_once, S, "small6", b"X", A)
    S("read small6", S.read, "small6")
    # as the kernel, a copy-up leaves the holes of a sparse file holes: this fits
    S("!copy-up of a 100 MiB sparse file (4 KiB of data), append", write_once, S, "sparse", b"X", A)
    S("!!copy-up of the 12 MiB file again", write_once, S, "big", b"X", A)
    S.close_all()


def inode_workload(S):
    p = S.p
    S("!fill the inodes", fill_inodes, S, "many")
    S("!!mkdir", os.mkdir, p("newdir"))
    S("!!mknod fifo", os.mkfifo, p("fifo"))
    S("!!create", write_once, S, "newf", b"", W | os.O_CREAT)
    S("!!symlink", os.symlink, "x", p("sym"))
    S("!!copy-up by open for write", write_once, S, "i1", b"X", A)
    S("!!chmod (copy-up)", os.chmod, p("i2"), 0o600)
    S("!!create in a lower-only dir (dir copy-up)", write_once, S, "idir/new", b"", W | os.O_CREAT)
    S("!unlink a lower file (whiteout)", os.unlink, p("i3"))
    S("read i1", S.read, "i1")
    S("stat i2", S.st, "i2")
    S("ls idir", S.ls, "idir")
    S("rm -rf many", S.rmtree, "many")
    S("!copy-up after freeing inodes", write_once, S, "i1", b"X", A)
    S("read i1 again", S.read, "i1")


# --------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------
def errno_problems(log):
    probs = []
    for name, res in log:
        if not name.startswith("!"):
            continue
        if res.startswith("err ") and res != "err ENOSPC":
            probs.append("%s: %s (want ENOSPC)" % (name.lstrip("!"), res))
        elif name.startswith("!!") and not res.startswith("err") and "skipped" not in res:
            probs.append("%s: %s (must fail with ENOSPC)" % (name.lstrip("!"), short(res)))
        elif "stopped by" in res and "stopped by ENOSPC" not in res:
            probs.append("%s: %s" % (name.lstrip("!"), res))
        elif "no error after" in res or ("close E" in res):
            probs.append("%s: %s" % (name.lstrip("!"), res))
    return probs


def ok_steps(log):
    return {name.lstrip("!"): res for name, res in log}


def expected(names, log):
    """name -> set of acceptable sha256 of the merged content (None: must
    not exist), from which steps succeeded."""
    res = ok_steps(log)
    h = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731

    def ok(step):
        return res.get(step, "err").startswith("ok")

    want = {}
    for n in names:
        c = content(n)
        want[n] = {h(c)}
    appends = {"mid": "copy-up of a 5 MiB file (fits), append",
               "big6": "copy-up of a 6 MiB file (runs out midway), append",
               "small1": "copy-up by open for write (64 KiB)",
               "small6": "copy-up after freeing space",
               "big": "copy-up of the 12 MiB file again",
               "i1": "copy-up after freeing inodes"}
    for n, step in appends.items():
        if n in want and ok(step):
            want[n] = {h(content(n) + b"X")}
    if "small4" in want and ok("truncate to 0 (copy-up)"):
        want["small4"] = {h(b"")}
    if "small5" in want and ok("unlink a lower file (whiteout)"):
        want["small5"] = None
    if "i3" in want and ok("unlink a lower file (whiteout)"):
        want["i3"] = None
    return want


def view_problems(mnt, names, log, label):
    """Every lower name shows the lower content or a step's complete result."""
    probs = []
    for n, want in expected(names, log).items():
        path = os.path.join(mnt, n)
        try:
            with open(path, "rb") as fh:
                got = hashlib.sha256(fh.read()).hexdigest()
        except FileNotFoundError:
            got = None
        except OSError as e:
            probs.append("%s %s: %s" % (label, n, e))
            continue
        if want is None:
            if got is not None:
                probs.append("%s %s: still visible after a successful unlink" % (label, n))
        elif got not in want:
            size = os.lstat(path).st_size if got else None
            probs.append("%s %s: neither the lower content nor the complete result (size %s)" % (label, n, size))
    return probs


def upper_problems(upper, names, log, allowed_new):
    """Regular files in the upper dir that are lower names must be complete:
    the lower content or the result of a successful step."""
    probs = []
    want = expected(names, log)
    lower_h = {n: hashlib.sha256(content(n)).hexdigest() for n in names}
    for dirpath, dirnames, filenames in os.walk(upper):
        for f in filenames + dirnames:
            rel = os.path.relpath(os.path.join(dirpath, f), upper)
            top = rel.split("/")[0]
            if rel in names:
                path = os.path.join(upper, rel)
                st = os.lstat(path)
                if stat_is_whiteout(st):
                    continue
                with open(path, "rb") as fh:
                    got = hashlib.sha256(fh.read()).hexdigest()
                if got != lower_h[rel] and (want[rel] is None or got not in want[rel]):
                    probs.append("upper/%s: partial copy (size %d)" % (rel, st.st_size))
            elif top not in allowed_new and rel not in ("ldir", "idir"):
                probs.append("unexpected upper entry %r" % rel)
    return probs


def stat_is_whiteout(st):
    return (st.st_mode & 0o170000) == 0o020000 and st.st_rdev == 0


def workwork(work):
    ww = os.path.join(work, "work")
    return sorted(os.listdir(ww)) if os.path.isdir(ww) else ["(missing)"]


# --------------------------------------------------------------------------
def tmpfs(path, opts):
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path], check=True)


def umount_all(paths):
    for p in reversed(paths):
        if is_mounted(p):
            if subprocess.run(["umount", p], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", p], capture_output=True)


def run_phase(root, lower, binary, extra, phase, tmpfs_opts, work_fn, names, allowed_new, fsmounts, ovmounts):
    logs, views = {}, {}
    sides = {}
    for kind in ("kernel", "stratafs"):
        t = os.path.join(root, phase, kind)
        tmpfs(t, tmpfs_opts)
        fsmounts.append(t)
        upper, work = os.path.join(t, "upper"), os.path.join(t, "work")
        os.mkdir(upper)
        os.mkdir(work)
        m = Mnt(kind, [lower], upper, work, os.path.join(root, phase, kind + "-mnt"), binary,
                extra if kind == "stratafs" else "")
        ok, msg = m.try_mount()
        if not ok:
            report("%s: %s mounts an upper on tmpfs" % (phase, kind), [msg])
            continue
        ovmounts.append(m)
        S = Steps(m.mnt, time.time_ns())
        work_fn(S)
        logs[kind] = S.log
        views[kind] = view_problems(m.mnt, names, S.log, "merged")
        views[kind] += upper_problems(upper, names, S.log, allowed_new)
        ww = workwork(work)
        if ww:
            views[kind].append("work/work holds %s while mounted" % ww[:5])
        sides[kind] = m
    if "stratafs" not in logs:
        return
    s_log = logs["stratafs"]
    if SHOW_STEPS:
        for i, (name, res) in enumerate(s_log):
            kres = logs["kernel"][i][1] if "kernel" in logs else "-"
            print("# %s step %d %s: kernel=%s stratafs=%s" % (phase, i + 1, name, short(kres), short(res)))
    report("%s: every failing call fails with ENOSPC" % phase, errno_problems(s_log))
    if "kernel" in logs:
        diffs = ["%s: kernel=%s stratafs=%s" % (a[0].lstrip("!"), short(a[1]), short(b[1]))
                 for a, b in zip(logs["kernel"], s_log) if a != b]
        report("%s: stratafs gives the kernel's results" % phase, diffs)
        kp = errno_problems(logs["kernel"]) + views["kernel"]
        if kp:
            print("# %s: the kernel itself: %s" % (phase, "; ".join(kp[:6])))
    report("%s: no partial copy-up visible (merged view, upper dir, work/work)" % phase, views["stratafs"])
    # persistence: umount, remount stratafs on the same upper/work
    m = sides["stratafs"]
    m.umount()
    ok, msg = m.try_mount()
    if not ok:
        report("%s: stratafs remounts the full upper" % phase, [msg])
        return
    probs = view_problems(m.mnt, names, s_log, "after remount")
    ww = workwork(m.work)
    if ww:
        probs.append("work/work not empty after the remount: %s" % ww[:8])
    m.umount()
    report("%s: after remount the view is consistent and work/work is empty" % phase, probs)
    if "kernel" in sides:
        k = sides["kernel"]
        k.umount()
        ok, msg = k.try_mount()
        if ok:
            kp = view_problems(k.mnt, names, logs["kernel"], "kernel after remount")
            k.umount()
            if kp:
                print("# %s: %s" % (phase, "; ".join(kp[:4])))


def ro_bind_case(root, lower, binary, extra, fsmounts, ovmounts):
    base = os.path.join(root, "robase")
    ro = os.path.join(root, "ro")
    for d in ("upper", "work"):
        os.makedirs(os.path.join(base, d))
    os.makedirs(ro)
    r = subprocess.run(["mount", "-o", "bind,ro", base, ro], capture_output=True, text=True)
    if r.returncode == 0:
        fsmounts.append(ro)
    try:
        os.mkdir(os.path.join(ro, "probe"))
        report("ro bind: the bind mount is read-only", ["mkdir on it succeeded"])
        return
    except OSError as e:
        if e.errno != errno.EROFS:
            report("ro bind: the bind mount is read-only", ["mkdir: %s" % e])
            return
    res = {}
    for kind in ("kernel", "stratafs"):
        m = Mnt(kind, [lower], os.path.join(ro, "upper"), os.path.join(ro, "work"),
                os.path.join(root, "ro-" + kind), binary, extra if kind == "stratafs" else "")
        os.makedirs(m.mnt, exist_ok=True)
        with tempfile.TemporaryFile() as errf:
            p = subprocess.run(m.cmd(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf,
                               timeout=60)
            errf.seek(0)
            err = errf.read().decode(errors="replace")
        mounted = is_mounted(m.mnt)
        if mounted:
            ovmounts.append(m)
            if kind == "stratafs":
                m.pids = []
        res[kind] = (p.returncode, err, mounted, m)
    krc, kerr, kmnt, km = res["kernel"]
    src, serr, smnt, sm = res["stratafs"]
    print("# ro bind: kernel rc %d (%s); stratafs rc %d (%s)" % (krc, kerr.strip(), src, serr.strip()))
    probs = []
    if krc != 0 and not kmnt:
        if src == 0 or smnt:
            probs.append("the kernel refuses, stratafs mounts (rc %d)" % src)
        lines = [ln for ln in serr.splitlines() if ln.strip()]
        if len(lines) != 1:
            probs.append("stderr has %d lines, want 1: %r" % (len(lines), serr[:300]))
    else:
        # the kernel accepted: then writes must fail alike
        if not smnt:
            probs.append("the kernel mounts, stratafs refuses: %s" % serr.strip())
        else:
            outs = []
            for m in (km, sm):
                try:
                    with open(os.path.join(m.mnt, "new"), "wb"):
                        pass
                    outs.append("ok")
                except OSError as e:
                    outs.append(errno.errorcode.get(e.errno, str(e.errno)))
            if outs[0] != outs[1]:
                probs.append("create: kernel=%s stratafs=%s" % tuple(outs))
    report("ro bind: an upper on a read-only mount is refused like the kernel does", probs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stratafs", default="build/stratafs")
    ap.add_argument("--extra-opts", default=os.environ.get("STRATAFS_EXTRA_OPTS", ""))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--show-steps", action="store_true", help="print every step's result on both sides")
    ap.add_argument("--timeout", type=int, default=170, help="abort our FUSE mounts after this many seconds")
    args = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("must run as root")
    global SHOW_STEPS
    SHOW_STEPS = args.show_steps
    binary = os.path.abspath(args.stratafs)
    t0 = time.time()
    wd = None
    root = tempfile.mkdtemp(prefix="strata-wt-enospc-", dir="/tmp")
    fsmounts, ovmounts = [], []
    try:
        if not os.access(binary, os.X_OK):
            raise RuntimeError("stratafs binary %s not found" % binary)
        lower = os.path.join(root, "lower")
        make_lower(lower)
        make_sparse(os.path.join(lower, "sparse"))
        wd = watchdog(root, args.timeout, lambda: report("watchdog", ["timeout after %ds" % args.timeout]))
        space_names = [n for n in LOWER if not n.startswith("i")]
        inode_names = [n for n in LOWER if n.startswith("i")]
        run_phase(root, lower, binary, args.extra_opts, "space", "size=8m", space_workload, space_names,
                  {"fill", "new2", "newdir", "longsym", "ldir", "sparse"}, fsmounts, ovmounts)
        run_phase(root, lower, binary, args.extra_opts, "inodes", "size=8m,nr_inodes=64", inode_workload,
                  inode_names, {"many", "newdir", "fifo", "newf", "sym", "idir"}, fsmounts, ovmounts)
        ro_bind_case(root, lower, binary, args.extra_opts, fsmounts, ovmounts)
    except Exception as e:  # noqa: BLE001
        report("setup", ["%s: %s" % (type(e).__name__, e)])
    finally:
        if wd:
            wd.cancel()
        os.chdir("/")
        for m in reversed(ovmounts):
            try:
                m.umount()
            except Exception as e:  # noqa: BLE001
                print("# umount %s: %s" % (m.mnt, e))
        umount_all(fsmounts)
        still = [m.mnt for m in ovmounts if is_mounted(m.mnt)] + [f for f in fsmounts if is_mounted(f)]
        if still:
            report("cleanup", ["still mounted: %s" % still])
        elif args.keep:
            print("# kept %s" % root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return summary(t0)


if __name__ == "__main__":
    sys.exit(main())
