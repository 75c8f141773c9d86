"""SIGKILL mid-index, then run again: the tables and crop files equal an unbroken run's.

CI runs three kill points, aimed at three different stages; `make bench-reliability` runs 27 over
every stage. The aiming and the landing read the flow's own stage markers (`schemas/stages.py`;
tests/flows/test_flows.py pins them), so a stage that stops being announced fails here.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench.crash_loop import (
    BETWEEN,
    NOT_KILLED,
    START_UP,
    WIND_DOWN,
    DataState,
    Marker,
    aims,
    crash_loop,
    file_problems,
    landing,
    problems,
)


@pytest.mark.slow
def test_killed_index_runs_finish_as_if_never_killed_in_three_stages(tmp_path: Path) -> None:
    report = crash_loop(points=3, work=tmp_path, seed=1, stages=["unzip", "model work", "compact"])
    assert report.failures == [] and report.survived == len(report.points) >= 3
    assert report.stages_covered >= 3, [point.where for point in report.points]
    assert report.rows_compared > 0 and all(report.total(problem) == 0 for problem in ("lost", "duplicated", "orphans"))
    assert all(point.files_compared > 0 for point in report.points)


def test_the_comparison_itself_catches_loss_duplicates_and_orphans() -> None:
    reference = {"images": [("i1", "a.jpg")], "crops": [("c1", "i1")], "embeddings": [("e1", "i1", None)]}
    broken = {
        "images": [],
        "crops": [("c1", "i1"), ("c1", "i1")],
        "embeddings": [("e1", "i1", None), ("e2", "i1", "c9")],
    }
    assert problems(broken, reference) == {"lost": 1, "duplicated": 1, "orphans": 4, "extra": 1}
    assert problems(reference, reference) == {"lost": 0, "duplicated": 0, "orphans": 0, "extra": 0}


def test_the_comparison_catches_crop_files_without_rows_and_rows_without_files() -> None:
    reference = DataState(tables={}, crop_uris=["a/1.jpg", "a/2.jpg"], crop_files=["a/1.jpg", "a/2.jpg"])
    broken = DataState(tables={}, crop_uris=["a/1.jpg", "a/3.jpg"], crop_files=["a/1.jpg", "a/.2.jpg.9-9.tmp"])
    assert file_problems(broken, reference) == {
        "files without a row": 1, "rows without a file": 1, "files unlike the reference": 2,
    }  # fmt: skip
    assert not any(file_problems(reference, reference).values())


def _timeline(*events: tuple[float, str, str]) -> list[Marker]:
    return [Marker(seconds, stage, event) for seconds, stage, event in events]


REFERENCE = _timeline(
    (1.0, "acquire", "started"),
    (1.0, "download", "started"),
    (3.0, "download", "finished"),
    (4.0, "acquire", "finished"),
    (4.0, "write", "started"),
    (5.0, "write", "finished"),
    (5.5, "write", "started"),
    (6.0, "write", "finished"),
    (6.0, "index build", "started"),
    (6.5, "index build", "finished"),
)


def test_kills_are_aimed_at_each_stage_in_its_own_time() -> None:
    chosen = aims(REFERENCE, points=8, rng=random.Random(0))
    assert [aim.stage for aim in chosen[:4]] == ["acquire", "download", "write", "index build"]
    for aim in chosen:
        start, end = REFERENCE[aim.anchor].seconds, REFERENCE[aim.anchor + 1].seconds
        assert 0 <= aim.delay <= end - start  # inside one stretch of the stage, never past the next marker
    acquire_own = [aim.anchor for aim in chosen if aim.stage == "acquire"]
    assert set(acquire_own) == {2}  # acquire's own time is after the download, not the download's
    assert {aim.anchor for aim in chosen if aim.stage == "write"} <= {4, 6}


def test_a_kill_lands_in_the_innermost_open_stage() -> None:
    assert landing(REFERENCE[:2], killed=True) == "download"
    assert landing(REFERENCE[:3], killed=True) == "acquire"
    assert landing(REFERENCE[:6], killed=True) == BETWEEN
    assert landing(REFERENCE, killed=True) == WIND_DOWN
    assert landing([], killed=True) == START_UP
    assert landing(REFERENCE[:2], killed=False) == NOT_KILLED
