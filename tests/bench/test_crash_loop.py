"""SIGKILL mid-index, then run again: the tables equal an unbroken run's (ids, no duplicates, no orphans).

CI runs three kill points; `python -m bench.crash_loop --points 20` runs the full loop by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.crash_loop import crash_loop, problems

pytestmark = pytest.mark.slow


def test_killed_index_runs_finish_as_if_never_killed(tmp_path: Path) -> None:
    report = crash_loop(points=3, work=tmp_path, seed=1)
    assert report.failures == [] and report.survived == 3
    assert report.rows_compared > 0 and report.rows_lost == report.rows_duplicated == report.orphans == 0
    assert sum(report.killed_during.values()) == 3


def test_the_comparison_itself_catches_loss_duplicates_and_orphans() -> None:
    reference = {"images": [("i1", "a.jpg")], "crops": [("c1", "i1")], "embeddings": [("e1", "i1", None)]}
    broken = {
        "images": [],
        "crops": [("c1", "i1"), ("c1", "i1")],
        "embeddings": [("e1", "i1", None), ("e2", "i1", "c9")],
    }
    assert problems(broken, reference) == {"lost": 1, "duplicated": 1, "orphans": 4, "extra": 1}
    assert problems(reference, reference) == {"lost": 0, "duplicated": 0, "orphans": 0, "extra": 0}
