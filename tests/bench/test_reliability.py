"""The reliability report's parts that need no index run: the hostile-input corpus, and the report's rendering."""

from __future__ import annotations

from pathlib import Path

from bench.crash_loop import PROBLEMS
from bench.hostile import hostile_corpus
from bench.reliability import REPORT_END, REPORT_START, passed, publish


def test_every_hostile_input_is_refused_naming_what_was_refused() -> None:
    results = {result.attempt: result for result in hostile_corpus()}
    assert len(results) >= 15
    let_through = [name for name, result in results.items() if not result.refused]
    assert let_through == []
    assert "plug-ins run code" in results["detector as a plug-in (module:callable)"].how
    assert "'../escaped.jpg'" in results["zip entry climbing out with ../"].how
    assert "a symlink" in results["zip entry that is a symlink"].how
    assert "decompression bomb" in results["PNG declaring 40,000 x 40,000 pixels (decompression bomb)"].how
    assert "169.254.169.254" in results["source on a host not allowed (cloud metadata)"].how


NO_PROBLEMS = dict.fromkeys(PROBLEMS, 0)


def _point(aimed_at: str, killed_during: str, half_written: int, ahead: int) -> dict[str, object]:
    return {
        "aimed_at": aimed_at, "killed_during": killed_during, "half_written_crop_files": half_written,
        "crop_files_ahead_of_rows": ahead, "rows_compared": 10, "files_compared": 4, "found": NO_PROBLEMS,
    }  # fmt: skip


FIGURES = {
    "machine": {
        "cpu_features": "Test CPU (AVX2)", "cores": 2, "memory_gib": 8.0, "auto_precision_on_cpu": "fp32",
        "gpu": None, "torch": "2", "commit": "abc1234", "measured_at": "2026-12-03T00:00:00+00:00",
    },
    "kills": {
        "stages_asked": 2,
        "stages_covered": 2,
        "points": [_point("write", "write", 1, 3), _point("compact", "wind-down", 0, 0)],
        "failures": [],
    },
    "cluster_fault": {
        "worker_killed": True, "first_run_status": 0, "first_run_new_images": 12,
        "first_run_says": "Task failed. There are 3 retries remaining", "second_run_new_images": 0,
        "problems": {"lost": 0}, "passed": True,
    },
    "hostile": [{"attempt": "zip | pipe", "refused": True, "how": "refusing entry"}],
}  # fmt: skip


def test_the_report_is_written_from_its_figures_between_its_markers(tmp_path: Path) -> None:
    document = tmp_path / "reliability.md"
    document.write_text("# Reliability\n\nProse stays.\n")
    publish(FIGURES, document)
    first = document.read_text()
    assert first.startswith("# Reliability\n\nProse stays.\n") and first.count(REPORT_START) == 1
    assert "| write | 1 | 0 | 10 | 0 |" in first and "| 3 / 1 |" in first and "| wind-down | 1 |" in first
    assert "compact -> wind-down" in first and "zip \\| pipe" in first and "abc1234" in first
    publish({**FIGURES, "hostile": []}, document)  # a second run replaces the report, prose untouched
    second = document.read_text()
    assert second.count(REPORT_START) == second.count(REPORT_END) == 1 and "zip \\| pipe" not in second
    assert passed(FIGURES) and not passed({**FIGURES, "hostile": [{"attempt": "x", "refused": False, "how": ""}]})
