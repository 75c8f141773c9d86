"""Queries keep working while an index run writes, and every hit they return is joined to an existing parent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.models.devices import decide_machine
from components.models.embedder import load_embedder
from components.search.ranking import find_hits
from components.store.reader import StoreReader
from schemas.params import QueryParams
from tests.conftest import write_scene

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def index(source: Path, data_dir: Path, tiny_yolo: Path, tiny_clip: Path, *extra: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "flows.cli", "index", "--source", str(source), "--data-dir", str(data_dir),
        "--detector", str(tiny_yolo), "--embedder", str(tiny_clip), "--confidence", "0.0001",
        "--max-detections", "3", "--min-box-pixels", "8", "--device", "cpu", *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_queries_in_a_loop_during_an_index_run(tmp_path: Path, tiny_yolo: Path, tiny_clip: Path) -> None:
    photos = tmp_path / "photos"
    for seed in range(40):
        write_scene(photos / f"scene-{seed:02d}.jpg", seed)
    data_dir = tmp_path / "data"
    first = index(photos, data_dir, tiny_yolo, tiny_clip, "--limit", "4")
    assert first.wait(timeout=300) == 0, first.stdout.read() if first.stdout else ""

    vector = load_embedder(str(tiny_clip), decide_machine("cpu", "fp32")).embed_texts(["a scene"])[0]
    params = QueryParams(data_dir=data_dir, k=10, one_hit_per_image=False, render=False)
    writer = index(photos, data_dir, tiny_yolo, tiny_clip, "--chunk-size", "2")
    queries, images_seen = 0, set()
    while writer.poll() is None or queries == 0:
        store = StoreReader(params.resolved_db_uri)
        hits = find_hits(store, vector, params.search)
        queries += 1
        assert hits, "a query during the index run returned nothing"
        for hit in hits:
            assert Path(hit.image.uri).is_file()
            assert hit.crop is None or hit.crop.image_id == hit.image.image_id
        images_seen.add(store.counts()["images"])
    assert writer.returncode == 0, writer.stdout.read() if writer.stdout else ""
    assert queries > 3 and len(images_seen) > 1, (queries, images_seen)  # the loop really overlapped the writes
