#!/usr/bin/env python3
"""randread.py FILE SECONDS - random 4 KiB preads for SECONDS; prints IOPS."""
import os
import random
import sys
import time

path, secs = sys.argv[1], float(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
blocks = os.fstat(fd).st_size // 4096
rnd = random.Random(1)
n, end = 0, time.monotonic() + secs
while time.monotonic() < end:
    for _ in range(64):
        os.pread(fd, 4096, rnd.randrange(blocks) * 4096)
    n += 64
os.close(fd)
print("%.0f" % (n / secs))
