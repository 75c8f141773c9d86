"""Text and hybrid search in a real database folder: user text is only words, and the fusion is reciprocal rank.

The same guarantees as tests/serve/test_search_modes.py, without the world model: a few rows with
chosen vectors and class names, so each ranking, and what fusing them must give, is known exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from components.store.reader import StoreReader, hybrid_score
from components.store.writer import StoreWriter
from schemas.records import CropRecord
from tests.records import crop, embedding, image

# Quotes (a phrase, needing word positions the index does not keep), boolean operators, a field
# prefix, wildcards, fuzziness and boosts, brackets, SQL, backslashes and whitespace, all around the
# words "red triangle": each must search those two words and nothing else. Several inputs of each
# kind, since an escape written for one of them passes that one alone.
HOSTILE_TEXTS = (
    '"red triangle"',
    '"red" "triangle"',
    '""red triangle""',
    'red triangle ""',
    'red" OR "triangle',
    "'red triangle'",
    "red AND NOT triangle",
    "red OR triangle",
    "NOT red triangle",
    "class_names:red triangle",
    "class_names:red class_names:triangle",
    "red: triangle:",
    "*red* triangle~2",
    "red* triangle?",
    "red^2 +triangle^0.5 -",
    "(red) [triangle] {} ^ + - && || !",
    "((red OR triangle)",
    "red triangle'); DROP TABLE embeddings; --",
    "red\\ triangle\\",
    '\\"red\\" triangle',
    "red\ttriangle\n",
)
# Syntax, or stop words, alone: no word to match, so no row (and no error).
WORDLESS_TEXTS = ("*", '""', '"', "()", "&& || !", "\\", "'", "the of a", ":")
SHAPES = ("red triangle", "blue circle", "red circle", "green square", "blue triangle")


@pytest.fixture
def shapes(tmp_path: Path) -> tuple[StoreReader, dict[str, CropRecord]]:
    """One crop per shape, with the text index built (at any size: words have no search without it)."""
    writer = StoreWriter(str(tmp_path / "db"))
    parent = image("shapes")
    crops = {name: crop(parent, name, name) for name in SHAPES}
    writer.upsert_images([parent])
    writer.upsert_crops(list(crops.values()))
    vectors = [[1.0, 0.2 * number, 0.0] for number in range(len(SHAPES))]
    writer.upsert_embeddings([embedding(c, v) for c, v in zip(crops.values(), vectors, strict=True)], "m1")
    assert writer.maintain_indexes(min_rows=1000) == ["built the text index over 5 embeddings of m1"]
    return StoreReader(writer.uri), crops


def scored(rows: list[dict[str, Any]]) -> dict[str, float]:
    # By id, not as a list: rows that tie in BM25 come in an order nothing promises.
    return {row["id"]: round(row["score"], 6) for row in rows}


def test_text_search_finds_the_words_of_hostile_text_and_nothing_else(
    shapes: tuple[StoreReader, dict[str, CropRecord]],
) -> None:
    reader, crops = shapes
    plain = scored(reader.search_text("red triangle", "", 10))
    wanted = {crops[name].crop_id for name in ("red triangle", "red circle", "blue triangle")}
    assert set(plain) == wanted
    assert max(plain, key=plain.__getitem__) == crops["red triangle"].crop_id  # both words beat one
    for text in HOSTILE_TEXTS:
        assert scored(reader.search_text(text, "", 10)) == plain, text
    for text in WORDLESS_TEXTS:
        assert reader.search_text(text, "", 10) == [], text


def test_hybrid_search_of_hostile_text_is_that_of_its_words(shapes: tuple[StoreReader, dict[str, CropRecord]]) -> None:
    reader, _ = shapes
    vector = np.array([1.0, 0.3, 0.0], dtype=np.float32)
    plain = scored(reader.search_hybrid(vector, "red triangle", "", 10))
    assert len(plain) == len(SHAPES)
    for text in HOSTILE_TEXTS:
        assert scored(reader.search_hybrid(vector, text, "", 10)) == plain, text


def test_hybrid_scores_each_row_one_over_60_plus_its_rank_in_each_ranking(tmp_path: Path) -> None:
    """Reciprocal-rank fusion, checked row by row: a ranking fed to it in another order changes the list.
    The score shown is the fused one scaled to 0-1 (`hybrid_score`: 1 for a row first in both rankings)."""
    writer = StoreWriter(str(tmp_path / "db"))
    parent = image("p")
    rows = {  # name: (class, vector); the query vector is x, so the vector ranking is a, b, c, d, e
        "a": ("dog", [1.0, 0.0, 0.0]),
        "b": ("dog", [0.8, 0.6, 0.0]),
        "c": ("red cat", [0.6, 0.8, 0.0]),
        "d": ("dog", [0.0, 1.0, 0.0]),
        "e": ("cat", [-0.6, 0.8, 0.0]),
    }
    crops = {name: crop(parent, name, class_name) for name, (class_name, _) in rows.items()}
    writer.upsert_embeddings([embedding(crops[name], vector) for name, (_, vector) in rows.items()], "m1")
    writer.maintain_indexes(min_rows=1000)
    reader, query, text = StoreReader(writer.uri), np.array([1.0, 0.0, 0.0], dtype=np.float32), "red cat"
    name_of = {c.crop_id: name for name, c in crops.items()}

    assert [name_of[row["id"]] for row in reader.search(query, "", 10)] == ["a", "b", "c", "d", "e"]
    assert [name_of[row["id"]] for row in reader.search_text(text, "", 10)] == ["c", "e"]  # both words, then one
    fused = reader.search_hybrid(query, text, "", 10)
    expected = {
        "c": 1 / (60 + 3) + 1 / (60 + 1),
        "e": 1 / (60 + 5) + 1 / (60 + 2),
        "a": 1 / (60 + 1),
        "b": 1 / (60 + 2),
        "d": 1 / (60 + 4),
    }
    assert [name_of[row["id"]] for row in fused] == ["c", "e", "a", "b", "d"]
    scaled = [hybrid_score(expected[name_of[row["id"]]]) for row in fused]
    assert [row["score"] for row in fused] == pytest.approx(scaled)
    assert hybrid_score(2 / 61) == pytest.approx(1.0) and hybrid_score(1 / 61) == pytest.approx(0.5)
    assert [row["kind"] for row in fused] == ["crop"] * 5
