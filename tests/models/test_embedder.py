"""CLIP embedding through the same loading path as hub weights (a tiny folder saved with save_pretrained)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from components.models.devices import decide_machine
from components.models.embedder import load_embedder, unit_rows
from tests.conftest import ultralytics_assets


def test_clip_embeds_images_and_texts_as_unit_float32_rows(tiny_clip: Path) -> None:
    embedder = load_embedder(str(tiny_clip), decide_machine("cpu", "fp32"))
    photos = [Image.open(path).convert("RGB") for path in ultralytics_assets()]
    images = embedder.embed_images(photos)
    texts = embedder.embed_texts(["a potted plant", "a bus", "x" * 500])
    for vectors, rows in ((images, len(photos)), (texts, 3)):
        assert vectors.shape == (rows, embedder.dim) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)  # float32 rounding only


def test_batching_does_not_change_vectors(tiny_clip: Path) -> None:
    embedder = load_embedder(str(tiny_clip), decide_machine("cpu", "fp32"))
    photos = [Image.open(path).convert("RGB") for path in ultralytics_assets()]
    together = embedder.embed_images(photos)
    alone = np.concatenate([embedder.embed_images([photo]) for photo in photos])
    # fp32 either way: batching changes only the summation order (~1e-7 per entry of a unit vector).
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_model_loads_once_per_process(tiny_clip: Path) -> None:
    machine = decide_machine("cpu", "fp32")
    assert load_embedder(str(tiny_clip), machine) is load_embedder(str(tiny_clip), machine)


def test_unit_rows_leaves_zero_rows_finite() -> None:
    rows = unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0.0, 0.0]])


def test_weights_replaced_at_the_same_path_are_loaded_again(tmp_path: Path) -> None:
    """A long-lived process (the warm host) must not keep serving the weights a folder used to hold."""
    from tests.tiny_models import build_tiny_clip

    folder = build_tiny_clip(tmp_path / "clip", seed=1)
    before = load_embedder(str(folder), decide_machine("cpu", "fp32"))
    assert load_embedder(str(folder), decide_machine("cpu", "fp32")) is before
    shutil.rmtree(folder)
    build_tiny_clip(folder, seed=2)
    after = load_embedder(str(folder), decide_machine("cpu", "fp32"))
    assert after is not before
    assert not np.allclose(after.embed_texts(["a bus"]), before.embed_texts(["a bus"]))
