"""`bench.region_sources` publishing: the page's tables come from the saved JSON, between markers, dated, CPU named.

The measurement itself is the evaluate flow (`tests/flows/test_evaluate_flow.py` runs it on the world's models).
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.region_sources import REPORT_END, REPORT_START, main

_MACHINE = {
    "cpu_features": "Intel Xeon (AMX yes, AVX-512 BF16 yes, AVX-512 yes, AVX2 yes)",
    "cores": 2,
    "memory_gib": 23.5,
    "auto_precision_on_cpu": "bf16",
    "gpu": None,
    "torch": "2.14.1",
    "commit": "abc1234",
    "measured_at": "2026-12-06T20:00:00+00:00",
}


def _source(source: str, name: str, named: float, unnamed: float) -> dict:
    return {
        "source": source,
        "name": name,
        "photos": 200,
        "index_seconds": 6.0,
        "crops": 500 if source == "detector" else 0,
        "vectors": 700 if source == "detector" else 200,
        "disk_bytes": 2_000_000,
        "means": {"named": {"small": {"P@5": named}}, "unnamed": {"small": {"P@5": unnamed}}},
        "queries": {"named": {"small": 11}, "unnamed": {"small": 1}},
        "covered": {},
    }


def test_a_saved_run_is_published_between_the_markers_and_replaces_the_last_one(tmp_path: Path) -> None:
    run = {
        "unknown_classes": ["red triangle"],
        "command": 'cropsearch eval --benchmark world --world-scenes 200 --unknown-classes "red triangle"',
        "evaluation_seconds": 41.0,
        "region_sources": [
            _source("whole", "whole photos only", 0.15, 0.15),
            _source("detector", "whole photos + detector crops", 0.9, 0.1),
        ],
    }
    saved = tmp_path / "region-sources-20261206T200000.json"
    saved.write_text(json.dumps({"benchmark": "region-sources", "machine": _MACHINE, "scenes": 200, "runs": [run]}))
    page = tmp_path / "evaluation.md"
    page.write_text("# Evaluation\n\nProse a person wrote.\n")

    assert main(["--publish", str(saved), "--document", str(page)]) == 0
    assert main(["--publish", str(saved), "--document", str(page)]) == 0  # a second run replaces, never appends

    text = page.read_text()
    assert text.startswith("# Evaluation\n\nProse a person wrote.\n")
    assert text.count(REPORT_START) == 1 and text.count(REPORT_END) == 1
    report = text.split(REPORT_START)[1].split(REPORT_END)[0]
    assert "Measured 2026-12-06T20:00:00+00:00 at commit `abc1234`" in report
    assert "Intel Xeon (AMX yes" in report and "`docs/bench/region-sources-20261206T200000.json`" in report
    assert "**Unknown to the detector: red triangle**" in report
    assert "| small | whole photos + detector crops | 0.900 | 0.100 |" in report
    assert "| whole photos + detector crops | 30 | 2500 | 3500 | 10.0 |" in report  # per 1,000 photos
