"""The synthetic world's held-out scenes indexed with its committed models, and their queries.

What `bench.min_score` and `bench.search_modes` measure over: the seeds `cropsearch eval
--benchmark world` uses, indexed as `cropsearch index` indexes them.
"""

from __future__ import annotations

from pathlib import Path

from components.evaluation.metrics import EvalQuery
from schemas.params import EvalParams


def index_held_out_world(scenes: int, work: Path) -> tuple[str, list[EvalQuery]]:
    """Write and index `scenes` held-out scenes under `work`; returns the database and every world query."""
    from components.evaluation.ground_truth import world_queries
    from components.evaluation.synthetic import CLASS_NAMES, read_world, write_world
    from flows.index_coco import index_coco
    from schemas.params import WORLD_DETECTOR, WORLD_EMBEDDER, WORLD_IMAGE_SIZE

    folder = work / "scenes"
    seed = EvalParams.model_fields["world_seed"].default
    write_world(folder, range(seed, seed + scenes))
    db_uri = str(work / "lancedb")
    index_coco(
        source=str(folder), data_dir=work, db_uri=db_uri, detector=str(WORLD_DETECTOR),
        embedder=str(WORLD_EMBEDDER), image_size=WORLD_IMAGE_SIZE, device="cpu",
    )  # fmt: skip
    return db_uri, world_queries(read_world(folder), CLASS_NAMES)
