"""Probe: several processes `merge_insert` into one LanceDB table at once, raw or through cropsearch's writer lock.

    python -m bench.concurrent_upserts --writers 4 --seconds 60

A probe on lancedb 0.40 saw raw concurrent upserts spin at full CPU for over 30 minutes. This runs
them under a time bound (then kills them) and reports, for each way: finished or not, seconds,
rows and duplicates. cropsearch writes only through the lock, one writer per database.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import shutil
import tempfile
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any

SHARED_KEYS = 50
OWN_KEYS = 10


def _records(writer: int) -> list:
    from tests.records import image

    return [image(f"shared-{i}") for i in range(SHARED_KEYS)] + [image(f"w{writer}-{i}") for i in range(OWN_KEYS)]


def _write(db_uri: str, writer: int, locked: bool, start: Any, windows: Path) -> None:
    """Upsert this writer's records once every writer is ready; note when its write began and ended."""
    from components.store.locks import exclusive_writer
    from components.store.writer import StoreWriter

    records = _records(writer)
    store = StoreWriter(db_uri)
    start.wait()  # spawned processes take seconds to import; the barrier makes their writes meet
    with exclusive_writer(db_uri) if locked else nullcontext():
        began = time.time()
        store.upsert_images(records)
        (windows / str(writer)).write_text(f"{began} {time.time()}")


def overlapping_writes(windows: list[tuple[float, float]]) -> int:
    """How many writes began before the one that began just before them had ended (0: none ran at once)."""
    return sum(1 for a, b in itertools.pairwise(sorted(windows)) if b[0] < a[1])


def run(db_uri: str, writers: int, locked: bool, seconds: float) -> dict:
    """Start `writers` spawned processes at once; wait at most `seconds`; kill what is left."""
    from components.store.writer import StoreWriter

    StoreWriter(db_uri).upsert_images(_records(-1)[:1])  # the table exists before the race
    context = multiprocessing.get_context("spawn")  # never fork after lancedb (PITFALLS 2)
    start = context.Barrier(writers)
    windows_dir = Path(tempfile.mkdtemp(prefix="cropsearch-write-windows-"))
    processes = [context.Process(target=_write, args=(db_uri, w, locked, start, windows_dir)) for w in range(writers)]
    started = time.monotonic()
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=max(0.0, seconds - (time.monotonic() - started)))
    stuck = [p for p in processes if p.is_alive()]
    for process in stuck:
        process.kill()
        process.join()
    import lancedb

    ids = lancedb.connect(db_uri).open_table("images").to_arrow().column("image_id").to_pylist()
    windows = [tuple(map(float, path.read_text().split())) for path in windows_dir.iterdir()]
    shutil.rmtree(windows_dir, ignore_errors=True)
    return {
        "locked": locked,
        "finished": not stuck and all(p.exitcode == 0 for p in processes),
        "seconds": round(time.monotonic() - started, 1),
        "rows": len(ids),
        "duplicates": sum(count - 1 for count in Counter(ids).values()),
        "expected_rows": SHARED_KEYS + writers * OWN_KEYS,
        "overlapping_writes": overlapping_writes(windows),  # type: ignore[arg-type]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--work", type=Path, default=Path("data/concurrent-upserts"))
    args = parser.parse_args()
    for locked in (False, True):
        print(
            run(
                str(args.work / f"{'locked' if locked else 'raw'}-{time.time_ns()}"), args.writers, locked, args.seconds
            )
        )


if __name__ == "__main__":
    main()
