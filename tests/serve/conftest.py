"""One index of generated scenes, made by the world's trained models, searched by every serve test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.evaluation.synthetic import Scene, read_world, write_world
from components.serve.searcher import Searcher
from schemas.params import WORLD_DETECTOR, WORLD_EMBEDDER, WORLD_IMAGE_SIZE
from schemas.serve import ServeParams
from tests.serve.live import serving

FIRST_SEED, SCENES = 3_000_000, 40


@dataclass(frozen=True)
class WorldIndex:
    data_dir: Path
    db_uri: str
    scenes: Path

    def scene(self, file_name: str) -> Scene:
        return next(scene for scene in read_world(self.scenes) if scene.file_name == file_name)

    def index_params(self, source: Path) -> dict[str, object]:
        return {
            "source": str(source),
            "detector": str(WORLD_DETECTOR),
            "embedder": str(WORLD_EMBEDDER),
            "image_size": WORLD_IMAGE_SIZE,
            "data_dir": self.data_dir,
            "db_uri": self.db_uri,
            "device": "cpu",
        }


def index_world(data_dir: Path, scenes: Path, first_seed: int, count: int, **settings: object) -> WorldIndex:
    from flows.index_coco import index_coco

    write_world(scenes, range(first_seed, first_seed + count))
    world = WorldIndex(data_dir, str(data_dir / "lancedb"), scenes)
    index_coco(**world.index_params(scenes), **settings)
    return world


@pytest.fixture(scope="session")
def world_index(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> WorldIndex:
    data_dir = tmp_path_factory.mktemp("serve")
    return index_world(data_dir, data_dir / "scenes", FIRST_SEED, SCENES)


@pytest.fixture(scope="session")
def searcher(world_index: WorldIndex) -> Searcher:
    return Searcher(ServeParams(db_uri=world_index.db_uri, device="cpu"))


@pytest.fixture(scope="session")
def server(searcher: Searcher, world_index: WorldIndex) -> Iterator[str]:
    with serving(searcher, ServeParams(db_uri=world_index.db_uri, device="cpu")) as url:
        yield url
