"""The idea itself, with deterministic plug-in models: a small object that whole-image search misses.

Scenes: one large grey photo with a small red square, and warm-tinted photos with no object.
Under a mean-colour embedder, every warm photo is "redder" than the grey scene as a whole, so a
whole-image search for "red" ranks them first and misses the scene; the crop of the red square
is pure red, so the crop search finds it and returns it joined to its parent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.serve.searcher import Searcher
from components.store.reader import StoreReader
from flows.index_coco import index_coco
from flows.query import query
from schemas.params import QueryParams
from schemas.serve import ServeParams
from schemas.settings import SearchSettings

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]  # index flow runs

DETECTOR = "plugin:tests.plugins:colour_blob_detector"
EMBEDDER = "plugin:tests.plugins:mean_colour_embedder"


@pytest.fixture
def scenes(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "scenes"
    folder.mkdir()
    grey = np.full((240, 320, 3), 128, dtype=np.uint8)
    grey[200:224, 280:304] = (220, 20, 20)  # a 24 x 24 red square in a corner: 0.75% of the picture
    target = folder / "grey-room-with-red-cup.png"
    Image.fromarray(grey).save(target)
    for index, tint in enumerate([(170, 120, 120), (160, 125, 118), (175, 130, 125), (165, 118, 122)]):
        Image.new("RGB", (320, 240), tint).save(folder / f"warm-{index}.png")
    return folder, target


def test_whole_image_search_misses_the_small_object_and_crop_search_finds_it(
    scenes: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, target = scenes
    report = index_coco(source=str(folder), data_dir=tmp_path / "data", detector=DETECTOR, embedder=EMBEDDER)
    assert report.images_new == 5 and report.crops == 1

    def search(kinds: str, mode: str = "vector") -> list:
        # The idea is about vectors: what a whole photo's embedding loses. Words are checked last.
        params = QueryParams(data_dir=tmp_path / "data", embedder=EMBEDDER, k=4, kinds=kinds, mode=mode, render=False)
        return query(text="red", **params.flat()).hits

    whole_only = search("image")
    assert len(whole_only) == 4
    assert str(target.resolve()) not in {hit.image.uri for hit in whole_only}

    crops_only = search("crop")
    assert crops_only[0].image.uri == str(target.resolve())
    assert crops_only[0].crop is not None and crops_only[0].crop.class_name == "red"
    assert (crops_only[0].crop.x1, crops_only[0].crop.y1, crops_only[0].crop.x2, crops_only[0].crop.y2) == (
        280,
        200,
        304,
        224,
    )

    both = search("both")
    assert both[0].kind == "crop" and both[0].image.uri == str(target.resolve())
    assert both[0].score > 0.95 > max(hit.score for hit in whole_only)

    # A whole photo also carries the words of what was found in it: hybrid search ranks the scene first
    # among whole images, where its vector alone came nowhere.
    assert search("image", mode="hybrid")[0].image.uri == str(target.resolve())


def test_a_close_up_is_found_as_its_photo_and_an_older_index_drops_its_vector_without_model_work(
    scenes: tuple[Path, Path], tmp_path: Path
) -> None:
    """A crop nearly the whole photo adds nothing the photo's own vector lacks (issue 23, item 4)."""
    folder, target = scenes
    close_up = np.full((240, 320, 3), 128, dtype=np.uint8)
    close_up[4:236, 6:314] = (210, 30, 30)  # the red thing fills 93% of the frame
    Image.fromarray(close_up).save(folder / "close-up.png")
    index = {"source": str(folder), "data_dir": tmp_path / "data", "detector": DETECTOR, "embedder": EMBEDDER}

    older = index_coco(**index, whole_frame_area=1.0)  # no box here is the exact frame: as indexes made before
    assert (older.crops, older.whole_frame_crops, older.embeddings) == (2, 0, 6 + 2)
    upgraded = index_coco(**index)
    assert (upgraded.images_new, upgraded.model_batches) == (0, 0)
    params = QueryParams(data_dir=tmp_path / "data", embedder=EMBEDDER, k=6, mode="vector", render=False)
    store = StoreReader(params.resolved_db_uri)
    assert store.counts() == {"images": 6, "crops": 2, "embeddings": 6 + 1}

    crops = query(text="red", **{**params.flat(), "kinds": "crop"}).hits
    assert [hit.image.uri for hit in crops] == [str(target.resolve())]  # the close-up's crop is no hit
    both = query(text="red", **params.flat()).hits
    # The pure red crop first; then the close-up, by its photo's vector, ahead of every warm photo.
    assert [(hit.image.uri, hit.kind) for hit in both[:2]] == [
        (str(target.resolve()), "crop"),
        (str((folder / "close-up.png").resolve()), "image"),
    ]
    [close_up_crop] = store.crops_of_image(both[1].image.image_id)
    assert close_up_crop.class_name == "red"  # its row is kept, and the photo viewer lists it
    searcher = Searcher(ServeParams(db_uri=params.resolved_db_uri, device="cpu"))
    alike, _ = searcher.similar(close_up_crop.crop_id, SearchSettings(kinds="image", k=1))
    assert alike[0].image.image_id == both[1].image.image_id  # more like it: its photo's vector, nearest itself
    fresh = index_coco(**{**index, "data_dir": tmp_path / "fresh"})
    assert (fresh.crops, fresh.whole_frame_crops, fresh.embeddings) == (2, 1, 6 + 1)
