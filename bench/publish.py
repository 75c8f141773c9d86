"""docs/performance.md, written from the benchmarks' own JSON: the figures live in one place and never drift.

    python -m bench.publish                       # docs/bench/*.json -> docs/performance.md
    python -m bench.publish --figures DIR --out FILE

Each benchmark (`perf`, `scale`, `precision`) gets the table of its newest JSON file on each kind of
CPU it ran on, headed by the date, the commit and the machine. To publish a new run, copy its JSON
into docs/bench/ and run this; older files stay beside it as the record of earlier runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.report import machine_header

REPO = Path(__file__).resolve().parents[1]
# What each benchmark measures and how to run it; the figures come from the JSON only.
BENCHMARKS = {
    "perf": (
        "Indexing, memory and query latency: `make bench`",
        "`python -m bench.perf` (about 35 min on 2 CPU cores; `--quick` checks the script in ~2 min). "
        "Index throughput through the flow, against the original write-up's loop (one image at a time, "
        "every crop saved, reopened and embedded alone) and against the compute floor (the forward passes "
        "alone at the pipeline's precision and batch sizes), timed in interleaved rounds because this "
        "host's speed drifts; the share of each stage; peak RSS of fresh processes indexing a small and a "
        "five times larger source; text-query latency (encode, search, fold, join) over synthetic indexes, "
        "exact and with the ANN index, and that index's recall@10; `cropsearch serve` over the largest index, "
        "timed over HTTP from a client process (text, photo, more like this, a cached picture, 8 clients at once); "
        "the re-index of an unchanged source. "
        "Real architectures (yolov10x, CLIP ViT-B/32) with random weights, and a fixed 8 crops per photo.",
    ),
    "scale": (
        "Thread, Ray and Dask runners: `make bench-scale`",
        "`python -m bench.scale` (about 5 min). The index flow over one source on each task runner, cluster "
        "start and the workers' model loading included, and whether the tables equal the thread runner's.",
    ),
    "min-score": (
        "What `--min-score` keeps with the world's CLIP: `python -m bench.min_score`",
        "The world's 300 held-out scenes indexed with the committed world models; every category query "
        "('a photo of a red triangle') and every scene's caption asked as `cropsearch query` asks by default "
        "(whole images and crops, one hit per photo, k=50). For each cutoff: hits kept per query, the share "
        "of them that hold what was asked (precision) and of each query's relevant photos among them (recall, "
        "capped by k=50 against 66-92 relevant photos a category); for a caption, how often the photo it "
        "describes is kept.",
    ),
    "search-modes": (
        "Vector, text and hybrid search on the world: `python -m bench.search_modes`",
        "The world's 300 held-out scenes indexed with the committed world models; every category query and "
        "every scene's caption asked as `cropsearch query` asks (whole images and crops, one hit per photo, "
        "k=50) in each `--mode`. mAP, P@10 and recall@k as `cropsearch eval` scores them, R@5 by the size "
        "of the object asked for (each bucket scored over its own relevant photos); "
        "the time is the search, fold and join alone (the query's encoding is not in it).",
    ),
    "whole-frame": (
        "Crops nearly the whole photo, left unembedded: `python -m bench.whole_frame`",
        "The world's 300 held-out scenes indexed once per `--whole-frame-area` value, each into a fresh "
        "database: 1 (on the world every crop embedded, as indexes made before the setting hold), the default "
        "0.9, and values low enough to reach the world's largest objects (no box covers more than about a third of "
        "a scene). Crops, crops without a vector, embedding rows, the index run's seconds, and category "
        "mAP and small-object R@5 (whole images and crops, one hit per photo, vector search, k=50) with "
        "their change from 1.",
    ),
    "add-embedder": (
        "Adding an embedder to an index: `python -m bench.add_embedder`",
        "The world's 300 held-out scenes indexed with the committed world models (embedder A), then "
        "`cropsearch index --embedder B` over that index, B being CLIP ViT-B/32 (the released architecture, "
        "random weights: the real model's cost); beside it a fresh index made with B alone, what trying B "
        "cost before an index could hold two embedders. Seconds end to end and in the detector's and the "
        "embedders' forward passes, and the detector's batches when B is added.",
    ),
    "precision": (
        "fp32 against bf16 on this CPU: `python -m bench.precision`",
        "Each model's forward passes in fp32 and bf16, interleaved pair by pair; whether `--precision auto` "
        "chose the faster one on this CPU.",
    ),
}


# Benchmarks whose JSON lives in docs/bench/ too but whose report is a page of its own.
# docs/reliability.md, written by `python -m bench.reliability`; docs/evaluation.md, by `python -m bench.region_sources`
PUBLISHED_ELSEWHERE = {"reliability", "region-sources"}


def newest_figures(folder: Path) -> dict[str, list[tuple[Path, dict[str, Any]]]]:
    """benchmark -> (file, figures) of its newest JSON file in `folder` on each kind of CPU, newest first.

    One table per CPU kind: a target met with AMX can be out of reach where fp32 is the fastest
    precision, and the newest run on one kind must not hide the other's.
    """
    newest: dict[tuple[str, str], tuple[Path, dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.json")):  # file names end in a UTC time stamp: sorted is oldest first
        figures = json.loads(path.read_text())
        name = figures.get("benchmark") or path.name.split("-")[0]
        newest[(name, figures["machine"].get("cpu_features", ""))] = (path, figures)
    found: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for (name, _), run in sorted(newest.items(), key=lambda item: item[1][0].name, reverse=True):
        found.setdefault(name, []).append(run)
    return found


def markdown_table(rows: list[dict[str, Any]]) -> str:
    marks = {True: "yes", False: "**no**", None: ""}
    lines = ["| measure | value | target | met |", "|---|---|---|---|"]
    for row in rows:
        cells = [row["measure"], row["value"], row.get("target") or "", marks[row.get("met")]]
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def section(name: str, path: Path, figures: dict[str, Any], on_several_cpus: bool = False) -> str:
    title, what = BENCHMARKS.get(name, (name, ""))
    facts = figures["machine"]
    if on_several_cpus:
        title = f"{title}, on {facts['cpu_features']}"
    when = facts.get("measured_at", "date not recorded")
    commit = facts.get("commit", "commit not recorded")
    return "\n".join(
        [
            f"## {title}",
            "",
            what,
            "",
            f"Measured {when} at commit `{commit}` (`docs/bench/{path.name}`).",
            f"{machine_header(facts)}.",
            "",
            markdown_table(figures["table"]),
            "",
        ]
    )


HOW_TO = """## Running the benchmarks, and the knobs they measure

```bash
make bench                          # ~35 min on 2 CPU cores; writes data/bench/perf-<time>.json
make bench ARGS="--quick"           # small models and sizes, ~2 min: checks the benchmark itself (CI runs it)
make bench-scale                    # the runners; data/bench-scale/scale-<time>.json
python -m bench.precision           # fp32 against bf16 on this CPU
cp data/bench/perf-*.json docs/bench/ && python -m bench.publish   # publish a run here
```

On a GPU machine without network whose python3 has torch, torchvision, transformers and pyarrow
(the one this team is lent): `bash bench/device/bundle.sh` (where PyPI is reachable) packs the rest
into `.bundle/site.tar.xz`, and `bash bench/device/run.sh --precision fp16 --detect-batch-size 32
--embed-batch-size 256 --rows 10000 100000` runs each step with its own time limit. On CUDA a round
indexes 300 photos and the loop 30, 3 rounds, and the target is 10x the loop.

The knobs: `--precision` (auto: fp16 on CUDA, bf16 on CPUs with bf16 instructions, AMX or AVX-512
BF16, and fp32 on CPUs without, AVX2 or AVX-512 alone, where PyTorch emulates bf16), `--detect-batch-size`,
`--embed-batch-size`, `--decode-threads` (threads that read, decode, cut and prepare pictures beside
the models; default one per core, at most 8) and `--vector-index-min-rows` (when the ANN index is
built). On CPUs with bf16, CLIP's linear layers run on weights packed once for oneDNN
(`components/models/packed_linear.py`) and yolov10x keeps its weights in bf16.
"""


def render_page(found: dict[str, list[tuple[Path, dict[str, Any]]]]) -> str:
    parts = [
        "# Performance",
        "",
        "Generated by `python -m bench.publish` from the benchmarks' JSON in `docs/bench/`; do not edit by hand.",
        "Figures from two machines are not comparable blind: each table names the CPU, its instruction sets",
        "and what `--precision auto` picks there. What earlier measurements taught, dated, is in",
        "[findings.md](findings.md).",
        "",
    ]
    shown = set(found) - PUBLISHED_ELSEWHERE
    order = [name for name in BENCHMARKS if name in shown] + sorted(shown - set(BENCHMARKS))
    parts += [section(name, *run, on_several_cpus=len(found[name]) > 1) for name in order for run in found[name]]
    parts.append(HOW_TO)
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--figures", type=Path, default=REPO / "docs" / "bench", help="folder of benchmark JSON")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "performance.md")
    args = parser.parse_args(argv)
    found = newest_figures(args.figures)
    if not found:
        parser.error(f"no benchmark JSON in {args.figures}")
    args.out.write_text(render_page(found))
    print(f"wrote {args.out} from {', '.join(path.name for runs in found.values() for path, _ in runs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
