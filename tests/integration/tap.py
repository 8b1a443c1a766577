"""tap.py -- the suites' output: `ok - NAME` / `not ok - NAME: REASON` lines
and the closing `N passed, N failed` that tests/run.sh counts."""

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
