#!/usr/bin/env python3
"""test_perms.py -- permission rules through the union, as an unprivileged user.

The same script runs as uid/gid 65534 (plus root steps) on the kernel
overlay and on stratafs over identical layers; every step's outcome and the
resulting owners/modes are compared: sticky-bit rules on unlink and rename,
new files owned by the caller's fsuid/fsgid, setgid-directory inheritance,
umask, suid/sgid cleared on write, EACCES on unreadable or unwritable paths.
Prints `ok - ...` / `not ok - ...` and `N passed, N failed`.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

USER = 65534
GROUP = 65534

# Each step: (name, uid, shell command).  The command's exit status and output
# are the result; runs with cwd = the mountpoint.
STEPS = [
    ("create in sticky dir", USER, "echo u > sticky/mine && stat -c '%u:%g %a' sticky/mine"),
    ("unlink other's file in sticky dir", USER, "rm -f sticky/roots"),
    ("rename other's file in sticky dir", USER, "mv sticky/roots sticky/moved"),
    ("unlink own file in sticky dir", USER, "rm sticky/mine && echo gone"),
    ("umask 027 new file", USER, "umask 027; : > open/f027 && stat -c '%a %u:%g' open/f027"),
    ("umask 077 mkdir", USER, "umask 077; mkdir open/d077 && stat -c '%a %u:%g' open/d077"),
    ("setgid dir: file group", USER, "umask 022; : > sgid/f && stat -c '%a %u:%g' sgid/f"),
    ("setgid dir: subdir inherits", USER, "umask 022; mkdir sgid/d && stat -c '%a %u:%g' sgid/d"),
    ("write to root-only file", USER, "echo x >> private/secret"),
    ("read root-only file", USER, "cat private/secret"),
    ("list unreadable dir", USER, "ls closed"),
    ("create in read-only dir", USER, ": > ro/new"),
    ("chmod other's file", USER, "chmod 777 open/roots"),
    ("chown to root", USER, "chown 0 open/mine2"),
    ("write clears suid/sgid", USER, "echo more >> open/suid && stat -c '%a' open/suid"),
    ("root write keeps suid", 0, "echo more >> open/suid_root && stat -c '%a' open/suid_root"),
    ("truncate clears suid", USER, "truncate -s 1 open/suid2 && stat -c '%a' open/suid2"),
    ("symlink owner", USER, "ln -s target open/lnk && stat -c '%u:%g' open/lnk"),
    ("hard link to other's file", USER, "ln open/roots open/roots_link"),
    ("rmdir other's dir in sticky dir", USER, "rmdir sticky/rootdir"),
]


def build_lower(root):
    """One lower layer with the directories the steps use."""
    lo = os.path.join(root, "lower")
    for d, mode in (("sticky", 0o1777), ("open", 0o777), ("sgid", 0o2777), ("private", 0o755),
                    ("closed", 0o700), ("ro", 0o555)):
        os.makedirs(os.path.join(lo, d))
        os.chmod(os.path.join(lo, d), mode)
    os.chown(os.path.join(lo, "sgid"), 0, 4242)

    def mk(rel, data, mode, uid=0, gid=0):
        p = os.path.join(lo, rel)
        with open(p, "w") as f:
            f.write(data)
        os.chown(p, uid, gid)
        os.chmod(p, mode)

    mk("sticky/roots", "r", 0o666)
    os.mkdir(os.path.join(lo, "sticky/rootdir"))
    mk("open/roots", "r", 0o644)
    mk("open/mine2", "m", 0o644, USER, GROUP)
    mk("open/suid", "s", 0o6777, USER, GROUP)
    mk("open/suid2", "s2", 0o4777, USER, GROUP)
    mk("open/suid_root", "s", 0o4777)
    mk("private/secret", "s", 0o600)
    mk("closed/x", "x", 0o644)
    return lo


def run_steps(mnt):
    out = []
    for name, uid, cmd in STEPS:
        if uid:
            argv = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % GROUP, "--clear-groups",
                    "sh", "-c", cmd]
        else:
            argv = ["sh", "-c", cmd]
        p = subprocess.run(argv, cwd=mnt, capture_output=True, text=True, timeout=30)
        # keep only the error kind of messages, not tool-specific paths
        err = p.stderr.strip().split(":")[-1].strip() if p.returncode else ""
        out.append((name, p.returncode != 0, p.stdout.strip(), err))
    return out


def mount_kernel(lo, up, wk, mnt):
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    "lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=on,index=on" % (lo, up, wk),
                    mnt], check=True)


def mount_strata(binary, lo, up, wk, mnt, extra):
    opts = "lowerdir=%s,upperdir=%s,workdir=%s" % (lo, up, wk)
    if extra:
        opts += "," + extra
    subprocess.run([binary, "stratafs", mnt, "-o", opts], check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stratafs", default="build/stratafs")
    ap.add_argument("--extra-opts", default=os.environ.get("STRATAFS_EXTRA_OPTS", ""))
    a = ap.parse_args()
    binary = os.path.abspath(a.stratafs)
    tmp = tempfile.mkdtemp(prefix="strata-perms-")
    os.chmod(tmp, 0o755)
    results = {}
    mounts = []
    passed = failed = 0
    try:
        for side in ("kernel", "stratafs"):
            root = os.path.join(tmp, side)
            os.makedirs(root)
            lo = build_lower(root)
            up, wk, mnt = (os.path.join(root, n) for n in ("upper", "work", "mnt"))
            for d in (up, wk, mnt):
                os.mkdir(d)
            if side == "kernel":
                mount_kernel(lo, up, wk, mnt)
            else:
                mount_strata(binary, lo, up, wk, mnt, a.extra_opts)
            mounts.append(mnt)
            results[side] = run_steps(mnt)
        for k, s in zip(results["kernel"], results["stratafs"]):
            if k == s:
                passed += 1
                print("ok - %s (%s)" % (k[0], "fails" if k[1] else k[2] or "ok"))
            else:
                failed += 1
                print("not ok - %s: kernel=%r stratafs=%r" % (k[0], k[1:], s[1:]))
    finally:
        for m in mounts:
            subprocess.run(["umount", m], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
