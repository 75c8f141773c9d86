"""The reliability report: kills in every stage, a Ray worker killed mid-chunk, the hostile-input corpus.

    python -m bench.reliability [--points 27]        # make bench-reliability (about 25 min on 2 cores)
    python -m bench.reliability --publish FILE.json  # docs/reliability.md from a saved run

Runs `bench.crash_loop` (27 kill points by default: three per stage), `bench.cluster_fault` and
`bench.hostile`, writes every figure to docs/bench/reliability-<time>.json, and rewrites the part
of docs/reliability.md between its report markers from that file: the figures live in one place.
Exits 1 if any kill lost, duplicated or orphaned a row or a crop file, if the kills covered fewer
stages than the reference run passed through, if the cluster run did not end with the thread
runner's tables, or if a hostile input was let through.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.cluster_fault import cluster_fault
from bench.crash_loop import BETWEEN, NOT_KILLED, PROBLEMS, START_UP, WIND_DOWN, crash_loop, world_zip
from bench.hostile import hostile_corpus
from bench.report import machine, machine_header, publish_between_markers, write_figures
from schemas.stages import INDEX_STAGES
from tests.http_server import LocalHttpServer

REPO = Path(__file__).resolve().parents[1]
REPORT_START = "<!-- reliability report: written by `python -m bench.reliability`; edits here are overwritten -->"
REPORT_END = "<!-- end of the reliability report -->"


def measure(points: int, work: Path, seed: int) -> dict[str, Any]:
    report = crash_loop(points, work / "kills", seed=seed)
    server = LocalHttpServer()
    server.files["/scenes.zip"] = world_zip(12)
    try:
        fault = cluster_fault(work / "cluster", server.url("/scenes.zip"))
    finally:
        server.close()
    return {
        "machine": machine(),
        "kills": {
            "stages_asked": report.stages_asked,
            "stages_covered": report.stages_covered,
            "points": [asdict(point) for point in report.points],
            "failures": report.failures,
        },
        "cluster_fault": {**asdict(fault), "passed": fault.passed},
        "hostile": [asdict(refusal) for refusal in hostile_corpus()],
    }


def passed(figures: dict[str, Any]) -> bool:
    return (
        not figures["kills"]["failures"]
        and figures["cluster_fault"]["passed"]
        and all(item["refused"] for item in figures["hostile"])
    )


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(figures: dict[str, Any]) -> str:
    """The report's markdown, from a run's figures alone."""
    facts, kills = figures["machine"], figures["kills"]
    points = kills["points"]
    lines = [
        f"Run {facts.get('measured_at', '')} at commit {facts.get('commit', '?')}; {machine_header(facts)}.",
        "",
        f"**Kills**: {len(points)} points; kills landed in {kills['stages_covered']} of the "
        f"{kills['stages_asked']} stages the reference run passed through. After each, one normal run; "
        "its tables and crop files compared with an unbroken run's.",
        "",
        "| killed during | points | runs after the kill that failed | rows compared | lost | duplicated | orphans "
        "| extra rows "
        "| crop files compared | files without a row | rows without a file "
        "| the kill left: crop files without rows yet / half-written |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    landed_in = [*INDEX_STAGES, START_UP, BETWEEN, WIND_DOWN, NOT_KILLED]
    for stage in landed_in:
        here = [point for point in points if point["killed_during"] == stage]
        if not here:
            continue

        def total(name: str, here: list[dict[str, Any]] = here) -> int:
            return sum(point["found"][name] for point in here)

        lines.append(
            f"| {stage} | {len(here)} | {total('reruns failed')} | {sum(p['rows_compared'] for p in here)} "
            f"| {total('lost')} "
            f"| {total('duplicated')} | {total('orphans')} | {total('extra')} "
            f"| {sum(p['files_compared'] for p in here)} | {total('files without a row')} "
            f"| {total('rows without a file')} | {sum(p['crop_files_ahead_of_rows'] for p in here)} "
            f"/ {sum(p['half_written_crop_files'] for p in here)} |"
        )
    missed = [f"{p['aimed_at']} -> {p['killed_during']}" for p in points if p["aimed_at"] != p["killed_during"]]
    lines += ["", f"Aimed elsewhere than they landed: {', '.join(missed) if missed else 'none'}."]
    if kills["failures"]:
        lines += ["", "**Failures:**", "", *(f"- {_cell(failure)}" for failure in kills["failures"])]
    fault = figures["cluster_fault"]
    lines += [
        "",
        "**Cluster fault** (local Ray cluster, one worker; the process running the second chunk's task "
        "SIGKILLed mid-chunk):",
        "",
        "| worker killed | the run with the fault | what it said | second run: new images | problems against "
        "the thread runner's tables and files | passed |",
        "|---|---|---|---|---|---|",
        f"| {'yes' if fault['worker_killed'] else 'NO'} | exit {fault['first_run_status']}, "
        f"{fault['first_run_new_images']} new images | {_cell(fault['first_run_says'])} "
        f"| {fault['second_run_new_images']} "
        f"| {sum(fault['problems'].get(name, 0) for name in PROBLEMS)} | {'yes' if fault['passed'] else 'NO'} |",
        "",
        f"**Hostile inputs**: {sum(item['refused'] for item in figures['hostile'])} of "
        f"{len(figures['hostile'])} refused.",
        "",
        "| input | refused | how |",
        "|---|---|---|",
        *(
            f"| {_cell(item['attempt'])} | {'yes' if item['refused'] else 'NO'} | {_cell(item['how'])} |"
            for item in figures["hostile"]
        ),
    ]
    return "\n".join(lines)


def publish(figures: dict[str, Any], document: Path) -> None:
    """Replace the report between the markers of `document` (appended, with its markers, the first time)."""
    publish_between_markers(document, REPORT_START, REPORT_END, "The reliability report", render(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=3 * len(INDEX_STAGES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--publish", type=Path, default=None, help="render this saved JSON instead of measuring")
    parser.add_argument("--figures", type=Path, default=REPO / "docs" / "bench")
    parser.add_argument("--document", type=Path, default=REPO / "docs" / "reliability.md")
    args = parser.parse_args()
    if args.publish:
        figures = json.loads(args.publish.read_text())
    else:
        with tempfile.TemporaryDirectory(prefix="cropsearch-reliability-") as work:
            figures = measure(args.points, Path(work), args.seed)
        print(f"wrote {write_figures(args.figures, 'reliability', figures, [])}")
    publish(figures, args.document)
    print(render(figures))
    raise SystemExit(0 if passed(figures) else 1)


if __name__ == "__main__":
    main()
