"""Ranking, one-hit-per-image folding and the batched join to parents."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.search.ranking import find_hits, group_by_parent
from components.search.render import hits_table
from components.store.reader import StoreReader
from components.store.writer import StoreWriter
from schemas.settings import SearchSettings
from tests.records import crop, embedding, image


def test_group_by_parent_folds_lower_hits_under_the_best() -> None:
    rows = [{"image_id": "a", "s": 1}, {"image_id": "b", "s": 2}, {"image_id": "a", "s": 3}, {"image_id": "c", "s": 4}]
    assert group_by_parent(rows, 2, True) == [[rows[0], rows[2]], [rows[1]]]
    assert group_by_parent(rows, 3, False) == [[rows[0]], [rows[1]], [rows[2]]]


def test_hits_are_joined_to_parents_and_crops(tmp_path: Path) -> None:
    store = StoreWriter(str(tmp_path / "db"))
    a, b = image("a"), image("b")
    a_cat = crop(a, "cat", "cat")
    store.upsert_images([a, b])
    store.upsert_crops([a_cat])
    store.upsert_embeddings(
        [embedding(a_cat, [1, 0, 0]), embedding(a, [0.9, 0.1, 0]), embedding(b, [0.5, 0.5, 0])], "m1"
    )
    query = np.array([1, 0, 0], dtype=np.float32)

    hits = find_hits(StoreReader(store.uri), query, SearchSettings(k=5))
    assert [(h.rank, h.kind, h.image.image_id) for h in hits] == [(1, "crop", a.image_id), (2, "image", b.image_id)]
    assert hits[0].crop == a_cat and hits[0].image == a
    assert [(f.kind, f.crop) for f in hits[0].folded] == [("image", None)]
    assert hits[0].score > hits[1].score

    every = find_hits(StoreReader(store.uri), query, SearchSettings(k=5, one_hit_per_image=False))
    assert [h.kind for h in every] == ["crop", "image", "image"]


def test_one_hit_per_image_fetches_more_rows_when_parents_repeat(tmp_path: Path) -> None:
    store = StoreWriter(str(tmp_path / "db"))
    crowded, lone = image("crowded"), image("lone")
    children = [crop(crowded, f"c{i}") for i in range(12)]
    store.upsert_images([crowded, lone])
    store.upsert_crops(children)
    rows = [embedding(child, [1.0, 0.01 * i, 0]) for i, child in enumerate(children)] + [embedding(lone, [0, 1, 0])]
    store.upsert_embeddings(rows, "m1")
    hits = find_hits(StoreReader(store.uri), np.array([1, 0, 0], dtype=np.float32), SearchSettings(k=2))
    assert [h.image.image_id for h in hits] == [crowded.image_id, lone.image_id]


def test_hits_whose_parent_is_not_written_yet_are_left_out(tmp_path: Path) -> None:
    store = StoreWriter(str(tmp_path / "db"))
    written, pending = image("written"), image("pending")
    store.upsert_images([written])
    store.upsert_embeddings([embedding(pending, [1, 0, 0]), embedding(written, [0.5, 0.5, 0])], "m1")
    hits = find_hits(StoreReader(store.uri), np.array([1, 0, 0], dtype=np.float32), SearchSettings(k=5))
    assert [h.image.image_id for h in hits] == [written.image_id]
    assert hits[0].rank == 1


def test_a_shown_score_pasted_back_as_the_cutoff_keeps_that_hit(tmp_path: Path) -> None:
    """Scores are shown to 4 decimals; a cutoff compared with the unrounded score dropped the very hit it came from."""
    store = StoreWriter(str(tmp_path / "db"))
    near, far = image("near"), image("far")
    store.upsert_images([near, far])
    # cos = 0.47236..., shown 0.4724: above the raw score, equal to the shown one.
    angle = np.arccos(0.472362)
    store.upsert_embeddings([embedding(near, [np.cos(angle), np.sin(angle), 0]), embedding(far, [0, 1, 0])], "m1")
    query = np.array([1, 0, 0], dtype=np.float32)
    everything = find_hits(StoreReader(store.uri), query, SearchSettings(k=5))
    shown = hits_table(everything)[0]["score"]
    assert shown == "0.4724" and everything[0].score < float(shown)
    kept = find_hits(StoreReader(store.uri), query, SearchSettings(k=5, min_score=float(shown)))
    assert [hit.image.image_id for hit in kept] == [near.image_id]


def test_a_region_source_filter_on_vectors_written_before_sources_says_how_to_add_them(tmp_path: Path) -> None:
    import shutil

    import pytest

    legacy = Path(__file__).resolve().parents[1] / "data" / "legacy-index" / "lancedb"
    shutil.copytree(legacy, tmp_path / "lancedb")
    store = StoreReader(str(tmp_path / "lancedb"))
    query = np.ones(store.vector_table_of().schema.field("vector").type.list_size, dtype=np.float32)
    assert find_hits(store, query, SearchSettings(k=2))  # searched as before without the filter
    with pytest.raises(ValueError, match=r"^region_sources: .* run `cropsearch index` on it once"):
        find_hits(store, query, SearchSettings(k=2, region_sources=["tile"]))


def test_a_reports_picture_of_a_small_crop_is_enlarged_to_be_seen(tmp_path: Path) -> None:
    """The query artifact showed a 20 px object at 20 px; it is enlarged in blocks to at least 128 px."""
    from PIL import Image

    from components.search.render import SMALLEST_SHOWN, hit_pictures
    from schemas.results import QueryHit

    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (640, 480), (200, 200, 200)).save(photo)
    parent = image("photo").model_copy(update={"uri": str(photo), "width": 640, "height": 480})
    small = crop(parent, "dot").model_copy(update={"uri": str(tmp_path / "gone.jpg"), "x2": 21.0, "y2": 16.0})
    top, shown_parent = hit_pictures(QueryHit(rank=1, score=0.3, kind="crop", image=parent, crop=small), side=160)
    assert max(top.size) == SMALLEST_SHOWN and top.size == (SMALLEST_SHOWN, round(14 * SMALLEST_SHOWN / 20))
    assert shown_parent.size == (160, 120)  # a large picture is still made smaller, never larger
    whole = QueryHit(rank=1, score=0.3, kind="image", image=parent)
    assert hit_pictures(whole, side=160)[0].size == (160, 120)
