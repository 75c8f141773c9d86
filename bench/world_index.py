"""The synthetic world's held-out scenes indexed with its committed models, and their queries.

What `bench.min_score`, `bench.search_modes` and `bench.whole_frame` measure over: the seeds
`cropsearch eval --benchmark world` uses, indexed as `cropsearch index` indexes them.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import Row, machine, machine_header, render, write_figures
from components.evaluation.metrics import EvalQuery
from schemas.params import EvalParams
from schemas.results import IndexReport


def held_out_world(scenes: int, folder: Path) -> list[EvalQuery]:
    """Write `scenes` held-out scenes into `folder`; returns every world query over them."""
    from components.evaluation.ground_truth import world_queries
    from components.evaluation.synthetic import CLASS_NAMES, read_world, write_world

    seed = EvalParams.model_fields["world_seed"].default
    write_world(folder, range(seed, seed + scenes))
    return world_queries(read_world(folder), CLASS_NAMES)


def index_world(folder: Path, work: Path, db_uri: str, **settings: object) -> IndexReport:
    """Index the scenes in `folder` with the world's models (and any index `settings`, another embedder among
    them) into `db_uri`."""
    from flows.index_coco import index_coco
    from schemas.params import WORLD_DETECTOR, WORLD_EMBEDDER, WORLD_IMAGE_SIZE

    settings = {"embedder": str(WORLD_EMBEDDER), **settings}
    return index_coco(
        source=str(folder), data_dir=work, db_uri=db_uri, detector=str(WORLD_DETECTOR),
        image_size=WORLD_IMAGE_SIZE, device="cpu", **settings,
    )  # fmt: skip


def index_held_out_world(scenes: int, work: Path) -> tuple[str, list[EvalQuery]]:
    """Write and index `scenes` held-out scenes under `work`; returns the database and every world query."""
    queries = held_out_world(scenes, work / "scenes")
    db_uri = str(work / "lancedb")
    index_world(work / "scenes", work, db_uri)
    return db_uri, queries


def world_bench_main(
    benchmark: str, doc: str, measure: Callable[[int, Path], tuple[list[Row], dict[str, Any]]]
) -> None:
    """A world benchmark's command line (`--scenes`, `--out`) around `measure(scenes, work)`: rows, figures.

    Prints the machine and the table, and writes the JSON `bench.publish` reads.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=EvalParams.model_fields["world_scenes"].default)
    parser.add_argument("--out", type=Path, default=Path("data/bench"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix=f"cropsearch-{benchmark}-") as work:
        rows, figures = measure(args.scenes, Path(work))
    facts = machine()
    print(machine_header(facts))
    print(render(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    figures = {"machine": facts, "scenes": args.scenes, **figures}
    print(f"wrote {write_figures(args.out, benchmark, figures, rows)}")
