"""Writers in separate processes go through the per-database lock: all finish, nothing is duplicated.

Without the lock, the keys' primary-key metadata still keeps concurrent upserts from duplicating rows.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb

from bench.concurrent_upserts import run
from components.store.writer import StoreWriter
from tests.records import image

ROUNDS, KEYS = 3, 30


def test_four_processes_upserting_through_the_lock_finish_in_bounded_time_without_duplicates(tmp_path: Path) -> None:
    outcome = run(str(tmp_path / "lancedb"), writers=4, locked=True, seconds=120)
    assert outcome["finished"], outcome  # bounded: a spin would be killed at 120 s and fail here
    assert outcome["duplicates"] == 0 and outcome["rows"] == outcome["expected_rows"], outcome
    # The writers start together (a barrier): only the lock keeps their writes apart. Primary-key
    # upserts alone would pass the checks above too; this one fails if the lock is gone.
    assert outcome["overlapping_writes"] == 0, outcome


def _upsert_new_keys(db_uri: str, start: Any) -> None:
    """Each round, the same new photos as the other writer, written at the same moment (a barrier)."""
    store = StoreWriter(db_uri, write_timeout=timedelta(seconds=60))
    for number in range(ROUNDS):
        records = [image(f"round-{number}-{key}") for key in range(KEYS)]
        start.wait(timeout=60)  # a writer that died breaks the barrier instead of hanging the other
        store.upsert_images(records)


def test_two_unlocked_writers_upserting_the_same_new_keys_leave_each_key_once(tmp_path: Path) -> None:
    """The keys' primary-key metadata alone keeps concurrent upserts from duplicating rows (PITFALLS 1).

    Without it, two writers inserting the same new keys both commit: every key of every round twice
    (seen here each round, 3 of 3 trials). The table holds an unrelated row, so neither write
    rewrites a fragment the other touches, which would make lance retry them for another reason.
    """
    db_uri = str(tmp_path / "db")
    StoreWriter(db_uri).upsert_images([image("unrelated")])
    context = multiprocessing.get_context("spawn")  # never fork after lancedb (PITFALLS 2)
    start = context.Barrier(2)
    writers = [context.Process(target=_upsert_new_keys, args=(db_uri, start)) for _ in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    stuck = [writer for writer in writers if writer.is_alive()]
    for writer in stuck:
        writer.kill()
        writer.join()
    assert not stuck and [writer.exitcode for writer in writers] == [0, 0]
    ids = lancedb.connect(db_uri).open_table("images").to_arrow().column("image_id").to_pylist()
    assert {key: count for key, count in Counter(ids).items() if count > 1} == {}
    assert len(ids) == 1 + ROUNDS * KEYS
