"""Writers in separate processes go through the per-database lock: all finish, nothing is duplicated."""

from __future__ import annotations

from pathlib import Path

from bench.concurrent_upserts import run


def test_four_processes_upserting_through_the_lock_finish_in_bounded_time_without_duplicates(tmp_path: Path) -> None:
    outcome = run(str(tmp_path / "lancedb"), writers=4, locked=True, seconds=120)
    assert outcome["finished"], outcome  # bounded: a spin would be killed at 120 s and fail here
    assert outcome["duplicates"] == 0 and outcome["rows"] == outcome["expected_rows"], outcome
    # The writers start together (a barrier): only the lock keeps their writes apart. Primary-key
    # upserts alone would pass the checks above too; this one fails if the lock is gone.
    assert outcome["overlapping_writes"] == 0, outcome
