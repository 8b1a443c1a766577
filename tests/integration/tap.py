"""tap.py -- the suites' output: `ok - NAME` / `not ok - NAME: REASON` lines
and the closing `N passed, N failed` that tests/run.sh counts."""

import argparse
import os
import shutil
import subprocess
import tempfile
import time

results = []


def report(name, problems, shown=6):
    """One check: a list of problems (empty: passed)."""
    if problems:
        more = " (+%d more)" % (len(problems) - shown) if len(problems) > shown else ""
        print("not ok - %s: %s%s" % (name, "; ".join(problems[:shown]), more), flush=True)
        for p in problems[shown:shown + 30]:
            print("#   " + p)
    else:
        print("ok - %s" % name, flush=True)
    results.append(not problems)


def summary(t0=None):
    """Print the closing lines; the exit status (0: all passed)."""
    passed = sum(results)
    if t0 is not None:
        print("# %.1fs" % (time.time() - t0))
    print("%d passed, %d failed" % (passed, len(results) - passed))
    return 0 if passed == len(results) else 1


def check(name, cond, why=""):
    """One check from a condition and the reason shown when it is false."""
    report(name, [] if cond else [why or "failed"])


def wait_for(cond, secs=5.0):
    """Poll cond() every 50 ms for up to secs; its last value."""
    end = time.time() + secs
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def run_tests(tests, binary, extra, prefix, tmp_parent=None):
    """Call each test(binary, tmp, extra) with one scratch dir; a test that
    raises counts as one failed check.  What is still mounted below the
    scratch dir is unmounted (lazily) and the dir removed.  Returns the
    exit status of summary()."""
    tmp = tempfile.mkdtemp(prefix=prefix, dir=tmp_parent)
    try:
        for t in tests:
            try:
                t(binary, tmp, extra)
            except Exception as e:  # a broken test is a failed test
                check(t.__name__, False, "%s: %s" % (type(e).__name__, e))
    finally:
        subprocess.run(["sh", "-c", "grep ' %s' /proc/self/mountinfo | awk '{print $5}' | "
                        "sort -r | xargs -r -n1 umount -l" % tmp], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return summary()


def suite_main(tests, prefix, tmp_parent=None):
    """The command line of a suite (--stratafs, --extra-opts, defaulting to
    $STRATAFS_EXTRA_OPTS), then run_tests()."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--stratafs", default="build/stratafs")
    ap.add_argument("--extra-opts", default=os.environ.get("STRATAFS_EXTRA_OPTS", ""))
    a = ap.parse_args()
    return run_tests(tests, os.path.abspath(a.stratafs), a.extra_opts, prefix, tmp_parent)
