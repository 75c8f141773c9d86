"""Freed memory goes back to the system between chunks (glibc keeps it otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# In a fresh process, so the allocator's state is this script's alone: after a 16 MB block is
# freed glibc serves blocks up to that size from its heap; half of 200 MB of such blocks are freed,
# leaving holes between live ones that glibc keeps.
_HOLES_THEN_TRIM = """
from components.pipeline.memory import give_back_freed_memory

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

big = bytearray(16 << 20)
del big
blocks = [b"x" * (256 << 10) for _ in range(800)]  # written, so resident (calloc may not touch pages)
del blocks[::2]
before = rss_mb()
given_back = give_back_freed_memory()
print(before, rss_mb(), given_back)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RSS from /proc")
def test_the_free_pages_between_live_blocks_go_back_to_the_system() -> None:
    # glibc's defaults: a MALLOC_TRIM_THRESHOLD_ in the environment (Dask's nannies set one for their
    # workers, the answer Dask gives these holes) would leave none to give back.
    defaults = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", _HOLES_THEN_TRIM], cwd=REPO, env=defaults, capture_output=True, text=True, check=True
    )
    before, after, given_back = done.stdout.split()
    assert given_back == "True", "this machine's C library should have malloc_trim (glibc)"
    # 100 MB were freed in 256 KB holes: nearly all of it leaves the process's resident set.
    assert float(before) - float(after) >= 80, done.stdout
