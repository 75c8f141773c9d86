"""`bench.search_modes` end to end on a few scenes (the published run indexes 300: `python -m bench.search_modes`)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from bench.search_modes import RANKINGS, measured_modes, mode_rows

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_every_mode_is_scored_on_the_same_queries_and_timed(tmp_path: Path) -> None:
    result, seconds = measured_modes(12, tmp_path)
    rows = mode_rows(result, seconds)
    assert [row.measure.split(":")[0] for row in rows] == [ranking for ranking in RANKINGS for _ in range(5)]
    for row in rows:
        numbers = [float(value) for value in re.findall(r"\d+\.\d+", row.value)]
        assert numbers and all(math.isfinite(number) for number in numbers), row
    # 12 categories and one caption per scene, each asked once per mode
    assert {ranking: len(times) for ranking, times in seconds.items()} == {ranking: 12 + 12 for ranking in RANKINGS}
    assert result.scores["text"]["caption"]["all"].queries == 12
