"""The mutation lists stay applicable as the code moves: each edit still finds its one place, each test file exists."""

from __future__ import annotations

from bench.mutation import read_mutants, render


def test_every_mutant_names_one_place_in_its_file_and_existing_tests() -> None:
    mutants = read_mutants()  # exits naming the mutant whose find text no longer occurs exactly once
    assert len({mutant.name for mutant in mutants}) == len(mutants), "two mutants share a name"


def test_the_report_lists_each_survivor_with_its_reason_or_as_a_gap() -> None:
    outcome = {"file": "f.py", "tests": [], "seconds": 1.0, "failure": ""}
    figures = {
        "machine": {
            "measured_at": "now",
            "commit": "abc",
            "cpu_features": "cpu",
            "cores": 2,
            "memory_gib": 1,
            "auto_precision_on_cpu": "fp32",
            "gpu": None,
            "torch": "2",
        },
        "target": 0.9,
        "mutants": [
            {**outcome, "name": "caught one", "caught": True, "harmless": "", "failure": "FAILED t.py::test_x - boom"},
            {**outcome, "name": "explained", "caught": False, "harmless": "no guarantee rests on it"},
            {**outcome, "name": "unexplained", "caught": False, "harmless": ""},
        ],
    }
    report = render(figures)
    assert "1 of 3 mutants caught (33%; target 90%)" in report
    assert "| caught one | `f.py` | t.py::test_x |" in report
    assert "- explained: no guarantee rests on it" in report and "- unexplained: NOT EXPLAINED: a gap" in report
