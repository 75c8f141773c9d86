"""`bench.add_embedder` end to end on a few scenes (the published run indexes 300: `python -m bench.add_embedder`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.add_embedder import measured_runs, run_rows

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_adding_an_embedder_embeds_every_photo_and_crop_with_no_detector_pass(tmp_path: Path) -> None:
    runs = measured_runs(12, tmp_path)
    first, added, fresh = runs["index with A"], runs["add B to it"], runs["a fresh index with B"]
    assert first["images"] == added["images"] == fresh["images"] == 12
    assert first["vectors"] == added["vectors"] == fresh["vectors"] > 12  # every photo and crop, once each
    assert added["detector batches"] == 0 and first["detector batches"] > 0 and fresh["detector batches"] > 0
    assert added["detect seconds"] == 0.0 and added["embed seconds"] > 0
    rows = run_rows(runs)
    assert [(row.measure, row.met) for row in rows if row.target] == [("add B: detector batches", True)]
