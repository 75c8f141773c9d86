"""How `tests/data/legacy-index/` was made: an index in the one-embedder layout (run at commit b544495).

Its embeddings table is bound to one embedder in its schema, and each image's index signature
hashes detector, embedder and detection settings together. `tests/store/test_embedders.py` copies it
and checks that today's code reads and upgrades it in place. It is kept as the record of how the
fixture came to be, not as a generator: it calls the stages as they were at that commit, and no
longer runs against today's (their signatures changed with several embedders).

    python -m tests.data.make_legacy_index tests/data/legacy-index
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

DETECTOR = "plugin:tests.plugins:colour_blob_detector"
EMBEDDER = "plugin:tests.plugins:mean_colour_embedder"
SOURCE_NAME = "legacy-photos"
# A coloured square on grey in each photo (one crop each), and one photo with nothing in it.
SQUARES = {"red-square.png": (220, 20, 20), "green-square.png": (20, 200, 40), "blue-square.png": (30, 40, 210)}


def write_photos(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for offset, (name, colour) in enumerate(SQUARES.items()):
        pixels = np.full((96, 128, 3), 128, dtype=np.uint8)
        pixels[20 + offset * 10 : 52 + offset * 10, 30 + offset * 20 : 62 + offset * 20] = colour
        Image.fromarray(pixels).save(folder / name)
    Image.new("RGB", (128, 96), (128, 128, 128)).save(folder / "plain-grey.png")


def main(out: Path) -> None:
    from components.pipeline import stages
    from components.pipeline.config import chunk_config, on_this_machine
    from components.pipeline.images import register_images
    from components.pipeline.sources import list_images
    from components.store.writer import StoreWriter
    from schemas.params import IndexParams, signature_of

    write_photos(out / "photos")
    params = IndexParams(
        source=str(out / "photos"),
        source_name=SOURCE_NAME,
        data_dir=out,
        detector=DETECTOR,
        embedder=EMBEDDER,
        device="cpu",
    )
    images, skipped = register_images(list_images(out / "photos", None).images, SOURCE_NAME)
    assert not skipped
    signature = signature_of(DETECTOR, EMBEDDER, params.detection)
    writer = StoreWriter(params.resolved_db_uri)
    todo = stages.plan_stage(writer, images, signature, SOURCE_NAME)
    config = on_this_machine(chunk_config(params))
    work = stages.model_stage(todo, stages.load_chunk_models(config, DETECTOR, EMBEDDER), config)
    stages.write_stage(writer, todo, work.crops, work.embeddings, signature, EMBEDDER, EMBEDDER)
    writer.compact()
    writer.maintain_indexes(params.vector_index_min_rows)
    print(writer.counts())


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
