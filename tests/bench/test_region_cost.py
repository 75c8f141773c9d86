"""`bench.region_cost` publishing: each way's seconds a photo against the detector's crops alone, from the saved JSON.

The measurement itself indexes with the real architectures (minutes): `python -m bench.region_cost`.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.region_cost import REPORT_END, REPORT_START, WAYS, main, rows
from tests.bench.test_region_sources import _MACHINE


def _run(seconds: float, crops: float) -> dict:
    return {"seconds_per_photo": seconds, "crops_per_photo": crops, "vectors_per_photo": crops + 1,
            "disk_mb_per_photo": 0.25, "detect_seconds": 1.0, "embed_seconds": 1.0}  # fmt: skip


def test_each_way_is_timed_against_the_detectors_crops_alone_and_published_between_the_markers(tmp_path: Path) -> None:
    fastest = {"detector crops": _run(0.30, 8), "+ proposals 8": _run(0.42, 16), "+ proposals 20": _run(0.60, 28)}
    fastest["+ tiles 2,3"] = _run(0.39, 18.5)
    assert list(fastest) == list(WAYS)
    figures = {"machine": _MACHINE, "photos": 24, "rounds": 2, "runs": {}, "fastest": fastest}
    table = {row.measure.split(":")[0]: (row.value, row.met) for row in rows(figures)}
    assert table["+ proposals 8"] == ("0.42 (1.40x) / 16.0 / 17.0 / 0.25", True)
    assert table["+ proposals 20"][1] is False  # 2x: over the target
    assert table["detector crops"][1] is None  # the reference itself has no target

    saved = tmp_path / "region-cost-20261206T000000.json"
    saved.write_text(json.dumps(figures))
    page = tmp_path / "evaluation.md"
    page.write_text(f"# Evaluation\n\ntext before\n\n{REPORT_START}\nold\n{REPORT_END}\n\ntext after\n")
    assert main(["--publish", str(saved), "--document", str(page)]) == 0
    assert main(["--publish", str(saved), "--document", str(page)]) == 0  # a second run replaces, never appends
    text = page.read_text()
    assert text.count(REPORT_START) == 1 and "old" not in text and text.endswith("text after\n")
    assert "| + proposals 8 | 0.42 | 1.40 | 16.0 | 17.0 | 0.25 |" in text
    assert "AMX yes" in text and "2026-12-06T20:00:00+00:00" in text and "`abc1234`" in text
