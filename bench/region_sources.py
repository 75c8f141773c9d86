"""Region sources on classes the detector cannot name: `cropsearch eval --unknown-classes`, run and published.

    python -m bench.region_sources [--scenes 200] [--hide "red triangle" --hide "..."]
    python -m bench.region_sources --publish docs/bench/region-sources-<time>.json   # the page from a saved run

Runs the evaluate flow as `cropsearch eval --benchmark world --unknown-classes ... --device cpu`
does, once per set of hidden classes, over the world's held-out scenes in a temporary folder: the
world detector with those classes hidden (its boxes of them dropped before crops are cut), a fresh
index per region source (whole photos only; + detector crops; + tiles 2,3; + the default
proposals), each asked "a small / medium-sized / large <class>" for every class. Writes the
figures, with the machine, to docs/bench/region-sources-<time>.json and rewrites the tables between the markers of
docs/evaluation.md from that file: the figures live in one place.

Two sets by default: the red triangle alone (issue 41's baseline hid one class), and three classes,
one of each shape and of three colours, so each "unnamed" cell averages three queries instead of
one (a single query's P@5 moves in steps of 0.2).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import (
    Row,
    add_publishing_options,
    machine,
    machine_header,
    publish_between_markers,
    saved_or_measured,
)
from schemas.results import RegionSourceReport

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = "region-sources"
REPORT_START = "<!-- region-source report: written by `python -m bench.region_sources`; edits here are overwritten -->"
REPORT_END = "<!-- end of the region-source report -->"
HIDDEN = ("red triangle", "red triangle,green circle,blue square")
SCENES = 200


def measure(scenes: int, unknown_classes: list[str], work: Path) -> dict[str, Any]:
    """The evaluate flow's region-source comparison over `scenes` world scenes, with the flow's own seconds."""
    from flows.evaluate import evaluate

    started = time.perf_counter()
    summary = evaluate(
        benchmark="world", world_scenes=scenes, unknown_classes=unknown_classes, data_dir=work, device="cpu"
    )
    return {
        "unknown_classes": summary.unknown_classes,
        "command": command(scenes, unknown_classes),
        "evaluation_seconds": round(time.perf_counter() - started, 1),
        "region_sources": [report.model_dump() for report in summary.region_sources],
    }


def command(scenes: int, unknown_classes: list[str]) -> str:
    hidden = ",".join(unknown_classes)
    return f'cropsearch eval --benchmark world --world-scenes {scenes} --unknown-classes "{hidden}" --device cpu'


def reports_of(run: dict[str, Any]) -> list[RegionSourceReport]:
    return [RegionSourceReport.model_validate(item) for item in run["region_sources"]]


def rows(figures: dict[str, Any]) -> list[Row]:
    """The console's summary: small objects' P@5, named and unnamed, and each index's cost per 1,000 photos."""
    out = []
    for run in figures["runs"]:
        hidden = " + ".join(run["unknown_classes"])
        for report in reports_of(run):
            small = {group: report.means.get(group, {}).get("small", {}) for group in ("named", "unnamed")}
            out += [
                Row(
                    f"hiding {hidden}, {report.name}: small objects, P@5 named / unnamed",
                    " / ".join(f"{small[group].get('P@5', float('nan')):.2f}" for group in small),
                ),
                Row(
                    f"hiding {hidden}, {report.name}: per 1,000 photos, index s / crop rows / vector rows / disk MB",
                    f"{report.per_thousand_photos(report.index_seconds):.0f} / "
                    f"{report.per_thousand_photos(report.crops):.0f} / "
                    f"{report.per_thousand_photos(report.vectors):.0f} / "
                    f"{report.per_thousand_photos(report.disk_bytes) / 1e6:.1f}",
                ),
            ]
    return out


def render_section(figures: dict[str, Any], path: Path) -> str:
    """The page's generated part: when, where and how it was measured, then the flow's own tables per run."""
    from components.evaluation.report import query_counts, region_cost_table, region_scores_table

    facts = figures["machine"]
    lines = [
        f"Measured {facts.get('measured_at', 'date not recorded')} at commit "
        f"`{facts.get('commit', 'commit not recorded')}` (`docs/bench/{path.name}`): {figures['scenes']} held-out "
        "world scenes, the world's detector and CLIP.",
        f"{machine_header(facts)}.",
    ]
    for run in figures["runs"]:
        reports = reports_of(run)
        lines += [
            "",
            f"**Unknown to the detector: {', '.join(run['unknown_classes'])}** (`{run['command']}`, "
            f"{run['evaluation_seconds']:.0f} s for the whole evaluation). Queries per cell: {query_counts(reports)}.",
            "",
            region_scores_table(reports),
            region_cost_table(reports).rstrip("\n"),
        ]
    return "\n".join(lines)


def publish(figures: dict[str, Any], path: Path, document: Path) -> None:
    """Replace the report between the markers of `document` (appended, with its markers, the first time)."""
    body = render_section(figures, path)
    publish_between_markers(document, REPORT_START, REPORT_END, "Classes the detector cannot name: measured", body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=SCENES)
    parser.add_argument(
        "--hide", action="append", default=None, help="comma-separated classes to hide, one evaluation per --hide"
    )
    add_publishing_options(parser, REPO, "evaluation.md")
    args = parser.parse_args(argv)

    def measured() -> dict[str, Any]:
        runs = []
        for hide in args.hide or HIDDEN:
            hidden = [name.strip() for name in hide.split(",") if name.strip()]
            with tempfile.TemporaryDirectory(prefix="cropsearch-region-sources-") as work:
                runs.append(measure(args.scenes, hidden, Path(work)))
        return {"machine": machine(), "scenes": args.scenes, "runs": runs}

    path, figures = saved_or_measured(args, BENCHMARK, measured, rows)
    publish(figures, path, args.document)
    print(f"published in {args.document}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
