"""Performance benchmark: indexing speed, memory, query latency, re-index time and the pipeline's own cost, in one run.

    python -m bench.perf            # the full run (about 35 min on 2 CPU cores); `make bench`
    python -m bench.perf --quick    # small models and sizes: checks the benchmark itself (CI)

Each step is its own module (`indexing.py`, `memory.py`, `queries.py`, `overhead.py`; what they share is
`plan.py`). Prints a table with each target beside its figure, headed by the machine it ran on,
and writes every figure to JSON; `python -m bench.publish` turns such files into docs/performance.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.indexing import indexing_rows, measure_indexing, reindex_rows
from bench.memory import measure_memory, memory_rows
from bench.overhead import measure_overhead, overhead_rows
from bench.plan import STEPS, Figures, Models, Plan, plan_from, prepare_models
from bench.queries import measure_queries, query_rows
from bench.report import Row, machine, machine_header, render, write_figures
from bench.serving import serving_rows


def record_indexing(figures: Figures, plan: Plan, models: Models) -> None:
    measured = measure_indexing(plan, models)
    figures.pipeline, figures.floor, figures.loop = measured["pipeline"], measured["floor"], measured["loop"]
    figures.rounds = measured["rounds"]


def table_rows(figures: Figures) -> list[Row]:
    """The table's rows for the steps that ran."""
    steps = figures.plan["steps"]
    return [
        *(indexing_rows(figures) if "indexing" in steps else []),
        *(memory_rows(figures) if "memory" in steps else []),
        *(query_rows(figures) if "queries" in steps else []),
        *(serving_rows(figures) if "queries" in steps else []),
        *(reindex_rows(figures) if "indexing" in steps else []),
        *(overhead_rows(figures) if "overhead" in steps else []),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models and sizes (checks the benchmark itself)")
    parser.add_argument("--work", type=Path, default=Path("data/bench"), help="folder for photos, indexes and JSON")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--only", action="append", choices=STEPS, help="run only this step (repeatable)")
    parser.add_argument("--rows", type=int, nargs="+", help="index sizes for query latency (default 10k 100k 1M)")
    parser.add_argument("--detect-batch-size", type=int, help="default: the pipeline's for the device")
    parser.add_argument("--embed-batch-size", type=int, help="default: the pipeline's (64)")
    parser.add_argument("--decode-threads", type=int, help="default: the pipeline's (cores, at most 8)")
    args = parser.parse_args(argv)

    plan = plan_from(args)
    plan.work.mkdir(parents=True, exist_ok=True)
    from components.models.devices import pick_device

    figures = Figures(
        machine=machine(),
        plan={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(plan).items()}
        | {"resolved_device": pick_device(plan.device)},
    )
    print(machine_header(figures.machine), flush=True)
    models = prepare_models(plan)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("indexing", lambda: record_indexing(figures, plan, models)),
        ("memory", lambda: figures.memory.update(measure_memory(plan, models))),
        ("queries", lambda: figures.queries.update(measure_queries(plan, models))),
        ("overhead", lambda: figures.overhead.update(measure_overhead(plan))),
    ]
    for name, step in steps:
        if name not in plan.steps:
            continue
        started = time.perf_counter()
        step()
        print(f"{name}: done in {time.perf_counter() - started:.0f} s", flush=True)

    rows = table_rows(figures)
    out = write_figures(plan.work, "perf", vars(figures), rows)
    print("\n" + machine_header(figures.machine))
    print(render(rows))
    print(f"\nfigures: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
