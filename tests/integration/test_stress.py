#!/usr/bin/env python3
"""test_stress.py -- concurrent processes hammering the same directories.

N worker processes create, write, rename (files and directories, across
directories), link, unlink, mkdir, rmdir and readdir in a few shared
directories of a writable union for a fixed time.  Races make some calls
fail with the errors such races give (ENOENT, EEXIST, ENOTEMPTY, ...); any
other error, a dead daemon or a hang fails the test.  Afterwards the merged
view must equal what the kernel overlay shows when it mounts the same
upper/work, and the workdir must hold no temporaries.  Run it against the
ASan or TSan build to catch races inside the daemon.
Prints `ok - ...`/`not ok - ...` and `N passed, N failed`.
"""
import argparse
import errno
import hashlib
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

RACE_ERRORS = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR,
               errno.EINVAL, errno.EXDEV, errno.EBUSY}
DIRS = ["a", "b", "c"]
NAMES = ["n%d" % i for i in range(8)]


def worker(mnt, seed, seconds, q):
    rnd = random.Random(seed)
    bad, ops = [], 0
    end = time.monotonic() + seconds

    def p():
        return os.path.join(mnt, rnd.choice(DIRS), rnd.choice(NAMES))

    while time.monotonic() < end:
        op = rnd.randrange(9)
        try:
            if op == 0:
                with open(p(), "a") as f:
                    f.write("x" * rnd.randrange(100))
            elif op == 1:
                os.rename(p(), p())
            elif op == 2:
                os.unlink(p())
            elif op == 3:
                os.mkdir(p())
            elif op == 4:
                os.rmdir(p())
            elif op == 5:
                os.listdir(os.path.join(mnt, rnd.choice(DIRS)))
            elif op == 6:
                os.link(p(), p())
            elif op == 7:
                with open(p()) as f:
                    f.read()
            else:
                os.stat(p())
        except OSError as e:
            # link(2) of a directory is EPERM
            if e.errno not in RACE_ERRORS and not (op == 6 and e.errno == errno.EPERM):
                bad.append("op %d: %s" % (op, os.strerror(e.errno)))
        ops += 1
    q.put((ops, bad[:10]))


def snapshot(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for n in sorted(filenames):
            path = os.path.join(dirpath, n)
            st = os.lstat(path)
            with open(path, "rb") as f:
                h = hashlib.sha256(f.read()).hexdigest()[:16]
            out[os.path.join(rel, n)] = (oct(st.st_mode), st.st_size, st.st_nlink, h)
        for n in dirnames:
            out[os.path.join(rel, n) + "/"] = "dir"
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stratafs", default="build/stratafs")
    ap.add_argument("--extra-opts", default=os.environ.get("STRATAFS_EXTRA_OPTS", ""))
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="strata-stress-")
    lo, up, wk, mnt = (os.path.join(tmp, n) for n in ("lower", "upper", "work", "mnt"))
    results = []

    def check(name, cond, why=""):
        results.append(bool(cond))
        print(("ok - %s" % name) if cond else ("not ok - %s: %s" % (name, why)))

    try:
        for d in DIRS:
            os.makedirs(os.path.join(lo, d))
            for n in NAMES[:4]:
                with open(os.path.join(lo, d, n), "w") as f:
                    f.write(d + n)
        for d in (up, wk, mnt):
            os.mkdir(d)
        opts = "lowerdir=%s,upperdir=%s,workdir=%s" % (lo, up, wk)
        sopts = opts + ("," + a.extra_opts if a.extra_opts else "")
        subprocess.run([os.path.abspath(a.stratafs), "stress", mnt, "-o", sopts], check=True)
        q = multiprocessing.Queue()
        procs = [multiprocessing.Process(target=worker, args=(mnt, a.seed * 100 + i, a.seconds, q))
                 for i in range(a.procs)]
        for pr in procs:
            pr.start()
        outs = [q.get(timeout=a.seconds + 120) for _ in procs]
        for pr in procs:
            pr.join(timeout=30)
        total = sum(o[0] for o in outs)
        bad = [b for o in outs for b in o[1]]
        check("%d processes, %d operations: only race errors" % (a.procs, total), not bad,
              "; ".join(bad[:5]))
        try:
            before = snapshot(mnt)
            alive = True
        except OSError as e:
            before, alive = {}, False
            check("daemon alive after the storm", False, os.strerror(e.errno))
        if alive:
            check("daemon alive after the storm", True)
        subprocess.run(["umount", mnt], check=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        opts + ",redirect_dir=on,index=on", mnt], check=True)
        after = snapshot(mnt)
        subprocess.run(["umount", mnt], check=True)
        diff = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        check("the kernel mounts the upper and shows the same tree", alive and not diff,
              "%d differences, e.g. %s" % (len(diff), diff[:3]))
        left = os.listdir(os.path.join(wk, "work"))
        check("no temporaries left in the workdir", not left, str(left[:5]))
    except Exception as e:
        check("stress run", False, "%s: %s" % (type(e).__name__, e))
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    passed = sum(results)
    print("%d passed, %d failed" % (passed, len(results) - passed))
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
