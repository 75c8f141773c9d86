"""`bench.publish`: docs/performance.md from the benchmarks' JSON, one table per benchmark and kind of CPU."""

from __future__ import annotations

import json
from pathlib import Path

from bench.publish import main as publish

_INTEL = "Intel Xeon (AMX no, AVX-512 BF16 no, AVX-512 yes, AVX2 yes)"
_AMD = "AMD EPYC (AMX no, AVX-512 BF16 yes, AVX-512 yes, AVX2 yes)"


def _write_run(folder: Path, stamp: str, cpu_features: str, speed_up: str) -> None:
    machine = {
        "cpu_features": cpu_features,
        "cores": 2,
        "memory_gib": 23.5,
        "auto_precision_on_cpu": "fp32",
        "gpu": None,
        "torch": "2.14.1",
        "commit": f"commit-{stamp}",
        "measured_at": stamp,
    }
    table = [{"measure": "speed-up over the original loop", "value": speed_up, "target": ">= 4.0x", "met": False}]
    (folder / f"perf-{stamp}.json").write_text(json.dumps({"machine": machine, "table": table}))


def test_the_newest_run_on_each_kind_of_cpu_gets_its_table(tmp_path: Path) -> None:
    _write_run(tmp_path, "20261201T000000", _AMD, "3.83x")
    _write_run(tmp_path, "20261202T000000", _AMD, "4.06x")
    _write_run(tmp_path, "20261203T000000", _INTEL, "1.99x")
    page = tmp_path / "performance.md"

    assert publish(["--figures", str(tmp_path), "--out", str(page)]) == 0

    published = page.read_text()
    intel, amd = published.index(f"`make bench`, on {_INTEL}"), published.index(f"`make bench`, on {_AMD}")
    assert intel < amd  # the newest run first
    assert "| 1.99x |" in published[intel:amd] and "| 4.06x |" in published[amd:]
    assert "3.83x" not in published  # an older run on the same kind of CPU stays in its JSON only
    assert "commit-20261203T000000" in published and "commit-20261202T000000" in published


def test_one_kind_of_cpu_keeps_the_plain_title(tmp_path: Path) -> None:
    _write_run(tmp_path, "20261202T000000", _AMD, "4.06x")
    page = tmp_path / "performance.md"

    assert publish(["--figures", str(tmp_path), "--out", str(page)]) == 0

    assert "## Indexing, memory and query latency: `make bench`\n" in page.read_text()
