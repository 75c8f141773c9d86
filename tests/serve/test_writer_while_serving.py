"""A server keeps answering, consistently, while an index run writes its database; new photos show up after."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from components.serve.searcher import Searcher
from schemas.serve import ServeParams
from tests.serve.conftest import SCENES, WorldIndex, index_world
from tests.serve.live import client, serving

pytestmark = pytest.mark.slow

NEW_SCENES = 24


def test_an_index_run_writing_the_database_while_it_is_searched(world_index: WorldIndex, tmp_path: Path) -> None:
    shutil.copytree(world_index.data_dir / "lancedb", tmp_path / "lancedb")
    params = ServeParams(db_uri=str(tmp_path / "lancedb"), device="cpu")
    failures: list[str] = []
    answers = 0
    with serving(Searcher(params), params) as url:
        http = client(url)
        before = http.get("/api/index").json()["images"]
        # Small chunks: the run commits several times while it is searched.
        run = threading.Thread(
            target=lambda: index_world(tmp_path, tmp_path / "more-scenes", 4_000_000, NEW_SCENES, chunk_size=6),
            daemon=True,
        )
        run.start()
        while run.is_alive() or answers == 0:
            response = http.get("/api/search", params={"text": "a red square", "k": 8, "kinds": "both"})
            answers += 1
            if response.status_code != 200:
                failures.append(f"search {response.status_code}: {response.text[:200]}")
                continue
            hits = response.json()["hits"]
            scores = [hit["score"] for hit in hits]
            if scores != sorted(scores, reverse=True):
                failures.append(f"unordered scores {scores}")
            for hit in hits:  # every hit is joined to a parent that can be shown
                picture = http.get(hit["crop_url"] or hit["image_url"], params={"size": 32})
                if picture.status_code != 200:
                    failures.append(f"picture {picture.status_code} for {hit['image']['image_id']}")
        run.join()
        after = http.get("/api/index").json()
        everything = http.get("/api/search", params={"text": "a photo", "kinds": "image", "k": 100}).json()["hits"]
    assert not failures, failures[:5]
    assert answers >= 3, answers
    assert (before, after["images"]) == (SCENES, SCENES + NEW_SCENES)
    new_names = {f"scene-{4_000_000 + i}.jpg" for i in range(NEW_SCENES)}
    assert new_names <= {Path(hit["image"]["uri"]).name for hit in everything}
