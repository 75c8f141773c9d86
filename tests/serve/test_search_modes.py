"""Vector, text and hybrid search over the world's scenes: what each mode ranks, and user text that is not syntax."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import lancedb
import pytest

from components.errors import TextIndexMissing
from components.search.encoding import text_vector
from components.serve.searcher import Searcher
from components.store.reader import HYBRID_CANDIDATES, StoreReader, hybrid_score
from components.store.schema import CROPS, EMBEDDINGS, IMAGES, TEXT_COLUMN
from schemas.serve import ServeParams
from schemas.settings import SearchSettings
from tests.serve.conftest import WorldIndex

pytestmark = pytest.mark.slow

# Quotes, boolean operators, a field prefix, wildcards, fuzziness, SQL and escapes around the two words:
# none may mean anything to LanceDB but the words themselves.
HOSTILE_TEXTS = (
    'red" OR "triangle',
    "red AND NOT triangle",
    "class_names:red triangle",
    "*red* triangle~2",
    "red triangle'); DROP TABLE embeddings; --",
    "(red) [triangle] {} ^ + - && || !",
    "red\\ triangle\\",
    "red\ttriangle\n",
)


def crops_of_class(db_uri: str, class_name: str) -> set[str]:
    crops = lancedb.connect(db_uri).open_table(CROPS).to_arrow().to_pylist()
    return {row["crop_id"] for row in crops if row["class_name"] == class_name}


def test_text_mode_ranks_every_crop_of_the_named_class_first(searcher: Searcher, world_index: WorldIndex) -> None:
    """A crop's words are its class name: 'a photo of a red triangle' matches both words of those crops alone."""
    wanted = crops_of_class(world_index.db_uri, "red triangle")
    assert len(wanted) >= 3
    settings = SearchSettings(mode="text", kinds="crop", one_hit_per_image=False, k=len(wanted))
    hits, ranking = searcher.search_text("a photo of a red triangle", settings)
    assert ranking == "text"
    assert {hit.crop.crop_id for hit in hits if hit.crop} == wanted
    assert all(hit.crop is not None and hit.crop.class_name == "red triangle" for hit in hits)
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0  # BM25, not a cosine


def test_hybrid_fuses_the_vector_and_the_text_rankings(searcher: Searcher, world_index: WorldIndex) -> None:
    """Reciprocal-rank fusion scores a row 1/(60 + rank) per ranking it is in. With at most 61 rows a
    ranking (each gives HYBRID_CANDIDATES, whatever the limit), a row both rankings hold outscores any
    row only one holds, so those come first."""
    text, limit = "a small red triangle", 30
    model, _ = searcher.embedder()
    vector = text_vector(model, text)
    reader = StoreReader(world_index.db_uri)
    assert HYBRID_CANDIDATES <= 61
    by_vector = {row["id"] for row in reader.search(vector, "", HYBRID_CANDIDATES)}
    by_words = {row["id"] for row in reader.search_text(text, "", HYBRID_CANDIDATES)}
    fused = [row["id"] for row in reader.search_hybrid(vector, text, "", limit)]
    assert set(fused) <= by_vector | by_words and len(fused) == len(set(fused))
    in_both = [row in by_vector and row in by_words for row in fused]
    assert any(in_both) and not all(in_both)  # the two rankings overlap, and differ
    assert in_both == sorted(in_both, reverse=True), in_both


@pytest.mark.parametrize("mode", ["text", "hybrid"])
def test_text_and_hybrid_keep_the_prefilters_and_the_parent_join(searcher: Searcher, mode: str) -> None:
    settings = SearchSettings(mode=mode, kinds="crop", classes=["blue circle"], min_area_fraction=0.01, k=8)
    hits, _ = searcher.search_text("a blue triangle", settings)  # "blue" matches the filtered class, "triangle" not
    assert hits
    for hit in hits:
        assert hit.kind == "crop" and hit.crop is not None and hit.crop.class_name == "blue circle"
        assert hit.crop.area_fraction >= 0.01 and hit.crop.image_id == hit.image.image_id
    assert len({hit.image.image_id for hit in hits}) == len(hits)  # one hit per photo, the rest folded


def test_auto_is_hybrid_for_words_and_vector_for_pictures_and_cutoffs(
    searcher: Searcher, world_index: WorldIndex
) -> None:
    assert searcher.search_text("a blue circle", SearchSettings())[1] == "hybrid"
    # A cutoff applies to the scores of the mode in use: auto stays hybrid (it switched to vector, unsaid).
    assert searcher.search_text("a blue circle", SearchSettings(min_score=0.5))[1] == "hybrid"
    scene = next(world_index.scenes.glob("*.jpg"))
    from PIL import Image

    with Image.open(scene) as picture:
        hits, ranking = searcher.search_picture(picture.convert("RGB"), None, SearchSettings())
        assert ranking == "vector" and hits
        with pytest.raises(ValueError, match=r"^mode: --mode hybrid searches words, and this query has none"):
            searcher.search_picture(picture.convert("RGB"), None, SearchSettings(mode="hybrid"))
    assert searcher.similar(hits[0].image.image_id, SearchSettings())[1] == "vector"
    with pytest.raises(ValueError, match=r"^mode: --mode text searches words, and this query has none"):
        searcher.similar(hits[0].image.image_id, SearchSettings(mode="text"))
    with pytest.raises(ValueError, match=r"min_score: a cutoff of vector \(cosine\) or hybrid \(0-1\) scores"):
        SearchSettings(mode="text", min_score=0.5)


def table_counts(db_uri: str) -> dict[str, int]:
    db = lancedb.connect(db_uri)
    return {name: db.open_table(name).count_rows() for name in (IMAGES, CROPS, EMBEDDINGS)}


@pytest.mark.parametrize("mode", ["text", "hybrid"])
def test_hostile_text_is_searched_as_its_words_only(server: str, world_index: WorldIndex, mode: str) -> None:
    def found(text: str, asked: str = mode) -> dict[str, float]:
        # Every row, not the first k: crops of one class tie in BM25, and which tied rows make a cut is arbitrary.
        fields = {"text": text, "mode": asked, "k": 1000, "one_hit_per_image": "false"}
        response = httpx.get(f"{server}/api/search", params=fields, timeout=30)
        assert response.status_code == 200, (text, response.text)
        assert response.json()["mode"] == asked
        hits = response.json()["hits"]
        return {hit["crop"]["crop_id"] if hit["crop"] else hit["image"]["image_id"]: hit["score"] for hit in hits}

    before = table_counts(world_index.db_uri)
    by_words = found("red triangle", "text")
    assert by_words
    for text in HOSTILE_TEXTS:
        if mode == "text":
            assert found(text) == by_words, text
            continue
        # Hybrid's vector half is CLIP's reading of the whole string; its words half must be the plain
        # words' ranking: each row gets 1/(60 + its vector rank), and a row the words match 1/(60 + at
        # most len(by_words)) more, the sum shown scaled to 0-1 (`hybrid_score`).
        vector_rank = {row: rank for rank, row in enumerate(found(text, "vector"), start=1)}
        for row, score in found(text).items():
            from_vector = hybrid_score(1 / (60 + vector_rank[row]))
            if row in by_words:
                assert score >= from_vector + hybrid_score(1 / (60 + len(by_words))) - 1e-4, (text, row)
            else:
                assert score <= from_vector + 1e-4, (text, row)
    if mode == "text":
        for wordless in ("*", '""', "()", "&& || !", "the of a"):  # syntax or stop words alone: nothing to match
            assert found(wordless) == {}, wordless
    assert table_counts(world_index.db_uri) == before


def test_an_index_made_before_text_search_refuses_words_by_name_until_one_index_run(
    world_index: WorldIndex, tmp_path: Path
) -> None:
    """Indexes written before the text index existed: vector search as before, `--mode text` says what to run."""
    from flows.index_coco import index_coco

    old = tmp_path / "lancedb"
    shutil.copytree(world_index.db_uri, old)
    embeddings = lancedb.connect(str(old)).open_table(EMBEDDINGS)
    embeddings.drop_index(next(i.name for i in embeddings.list_indices() if TEXT_COLUMN in i.columns))
    searcher = Searcher(ServeParams(db_uri=str(old), device="cpu"))

    assert searcher.search_text("a red triangle", SearchSettings())[1] == "vector"  # auto falls back
    with pytest.raises(TextIndexMissing, match=r"^mode: the index at .* no text index yet.*run `cropsearch index`"):
        searcher.search_text("a red triangle", SearchSettings(mode="text"))

    report = index_coco(**{**world_index.index_params(world_index.scenes), "db_uri": str(old)})
    assert report.images_new == 0 and report.model_batches == 0
    hits, ranking = searcher.search_text("a red triangle", SearchSettings(mode="text"))
    assert ranking == "text" and hits
    assert searcher.search_text("a red triangle", SearchSettings())[1] == "hybrid"


def test_hybrid_scores_read_from_0_to_1_and_its_first_hits_do_not_depend_on_k(searcher: Searcher) -> None:
    """Hybrid scores read as failures (0.016, 0.03), and the top hit changed with -k."""
    for text in ("a blue circle", "a small red triangle", "a green square"):
        few, ranking = searcher.search_text(text, SearchSettings(k=3, one_hit_per_image=False))
        many, _ = searcher.search_text(text, SearchSettings(k=20, one_hit_per_image=False))
        assert ranking == "hybrid"
        assert [(hit.image.image_id, hit.crop and hit.crop.crop_id) for hit in few] == [
            (hit.image.image_id, hit.crop and hit.crop.crop_id) for hit in many[:3]
        ]
        assert all(0 < hit.score <= 1 for hit in many) and many[0].score > 0.5  # first by one ranking at least
