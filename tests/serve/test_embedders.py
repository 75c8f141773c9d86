"""A search server over an index of two embedders searches the vectors of the one it holds warm."""

from __future__ import annotations

from pathlib import Path

from components.serve.searcher import Searcher
from components.store.writer import StoreWriter
from schemas.serve import ServeParams
from schemas.settings import SearchSettings
from tests.records import embedding, image

MEAN = "plugin:tests.plugins:mean_colour_embedder"
SPREAD = "plugin:tests.plugins:mean_and_spread_embedder"


def test_a_server_searches_the_vectors_of_the_embedder_it_loaded(tmp_path: Path) -> None:
    # The two embedders disagree on purpose: "red" is photo a for one and photo b for the other.
    a, b = image("a"), image("b")
    store = StoreWriter(str(tmp_path / "db"))
    store.upsert_images([a, b])
    store.upsert_embeddings([embedding(a, [0, 1, 0], MEAN), embedding(b, [1, 0, 0], MEAN)], MEAN, MEAN)
    spread = [embedding(a, [1, 0, 0, 0, 0, 0], SPREAD), embedding(b, [0, 1, 0, 0, 0, 0], SPREAD)]
    store.upsert_embeddings(spread, SPREAD, SPREAD)
    settings = SearchSettings(k=1, mode="vector")

    def red(**named: str) -> tuple[str, object]:
        searcher = Searcher(ServeParams(db_uri=store.uri, device="cpu", **named))
        hits, _ = searcher.search_text("red", settings)
        return hits[0].image.image_id, searcher.summary()["embedder"]

    assert red() == (b.image_id, MEAN)  # the index's default
    assert red(embedder=SPREAD) == (a.image_id, SPREAD)
    store.set_default_embedder(SPREAD)
    assert red() == (a.image_id, SPREAD)
