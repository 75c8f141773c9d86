"""`bench.whole_frame` end to end on a few scenes (the published run indexes 300: `python -m bench.whole_frame`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.whole_frame import measured_values, value_rows

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_each_value_gets_its_own_index_and_lower_values_leave_more_crops_without_vectors(tmp_path: Path) -> None:
    every, lowest = measured_values(12, tmp_path, values=(1.0, 0.25))
    assert every["crops"] == lowest["crops"] > 0  # the same detections either way
    assert every["whole_frame_crops"] == 0 and every["embeddings"] == 12 + every["crops"]
    assert lowest["embeddings"] == 12 + lowest["crops"] - lowest["whole_frame_crops"]
    rows = value_rows([every, lowest])
    assert [row.met for row in rows] == [None, None, None, None, None, rows[-1].met] and rows[-1].target
