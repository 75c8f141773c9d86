"""Reading an index for a query: nearest embeddings under a prefilter, and the records a hit list joins to.

The query path runs on LanceDB's async API, on its own event-loop thread as its sync API does:
the sync API costs three schema round trips per call, and two lookups side by side need two
threads. At 1M rows, with text queries alternating between the two ways, search, fold and join
took 27.8 ms instead of 33.6 (p50) and 33.5 instead of 39.8 (p95). Indexing keeps the sync API
(`writer.py`): with this reader in its chunks too, the benchmark's memory step grew +9.9% from 200
to 1,000 images, against +5.7% without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.background_loop import LOOP

from components.errors import StoreMismatchError
from components.store.database import Database, naming_damaged_tables, never_committed
from components.store.schema import (
    ANN_NPROBES,
    ANN_REFINE_FACTOR,
    CROPS,
    IMAGES,
    TEXT_COLUMN,
    crop_records,
    id_filters,
    image_records,
    lookup_columns,
    sql_string,
)
from schemas.records import CropRecord, ImageRecord
from schemas.settings import ObjectStoreSettings

Result = TypeVar("Result")

# Reciprocal-rank fusion: a row scores 1 / (RRF_K + rank) in each ranking it is in (LanceDB's default K).
RRF_K = 60
# Rows each ranking of a hybrid query gives the fusion, however few hits are asked for: the order of
# the first hits then does not depend on -k (up to 25 hits folded per photo, which fetch 50 rows). Each
# row is a read: a vector search of 20 rows took 11 ms at 1M rows, one of 40 took 18 (ranking.py).
HYBRID_CANDIDATES = 50


def _query_reads(reads: Coroutine[Any, Any, Result]) -> Result:
    return LOOP.run(reads)  # lancedb is pinned to 0.40, whose sync API runs on this loop


class StoreReader(Database):
    """The reads of a query; the async connection opens on the first query and stays open.

    It searches one embedder's vectors: `embedder_id`'s, or (None) the index's default embedder's,
    as it is on the first search; a reader keeps that table for its life.
    """

    def __init__(
        self, uri: str, object_store: ObjectStoreSettings | None = None, embedder_id: str | None = None
    ) -> None:
        super().__init__(uri, object_store)
        self.embedder_id = embedder_id
        self._vectors: str | None = None
        self._reader: Any | None = None
        self._reader_tables: dict[str, Any] = {}
        self._reader_lookup_columns: dict[str, list[str]] = {}
        self._text_index_seen = False

    def searched_embedder(self) -> str | None:
        """The embedder whose vectors this reader searches; None while the index holds none."""
        return self.embedder_id or self.default_embedder()

    def search_embedder(self, embedder_id: str) -> None:
        """Search this embedder's vectors from now on (a server binds the one it loaded)."""
        if embedder_id != self.embedder_id:
            self.embedder_id, self._vectors, self._text_index_seen = embedder_id, None, False

    def _vector_table_name(self) -> str | None:
        if self._vectors is None:
            tables = self.vector_tables()
            embedder = self.embedder_id or self.default_embedder()
            if embedder is not None and embedder not in tables:
                self.check_embedder(embedder)
            self._vectors = tables.get(embedder or "")
        return self._vectors

    def has_text_index(self, embedder_id: str | None = None) -> bool:
        # Once built, a text index stays: only its absence is asked again, query by query.
        if not self._text_index_seen:
            self._text_index_seen = super().has_text_index(embedder_id or self.embedder_id)
        return self._text_index_seen

    async def _reader_table(self, name: str) -> Any | None:
        if self._reader is None:
            self._reader = await lancedb.connect_async(self.uri, **self.connection_options)
        if name not in self._reader_tables:
            if name not in (await self._reader.list_tables()).tables:
                return None
            try:
                self._reader_tables[name] = await self._reader.open_table(name)
            except ValueError as error:
                if not never_committed(error):
                    raise
                return None
        return self._reader_tables[name]

    async def _lookup(self, name: str, column: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        table = await self._reader_table(name)
        if table is None or not ids:
            return []
        if name not in self._reader_lookup_columns:  # a table's columns never change: read its schema once
            self._reader_lookup_columns[name] = lookup_columns(await table.schema())
        columns = self._reader_lookup_columns[name]
        scans = [table.query().where(where).select(columns).to_arrow() for where in id_filters(column, ids)]
        return [row for batch in await asyncio.gather(*scans) for row in batch.to_pylist()]

    @naming_damaged_tables
    def records_of_hits(
        self, image_ids: Sequence[str], crop_ids: Sequence[str]
    ) -> tuple[dict[str, ImageRecord], dict[str, CropRecord]]:
        """The image and the crop records a hit list joins to, looked up side by side."""

        async def both() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            images, crops = await asyncio.gather(
                self._lookup(IMAGES, "image_id", image_ids),
                self._lookup(CROPS, "crop_id", crop_ids),
            )
            return images, crops

        image_rows, crop_rows = _query_reads(both())
        return image_records(image_rows), crop_records(crop_rows)

    @naming_damaged_tables
    def stored_vector(self, embedding_id: str) -> np.ndarray | None:
        """The vector stored for an image or a crop (by its id), or None when the index holds none."""

        name = self._vector_table_name()

        async def one() -> list[dict[str, Any]]:
            table = None if name is None else await self._reader_table(name)
            if table is None:
                return []
            found = table.query().where(f"id = {sql_string(embedding_id)}").select(["vector"]).limit(1)
            return (await found.to_arrow()).to_pylist()

        rows = _query_reads(one())
        return np.asarray(rows[0]["vector"], dtype=np.float32) if rows else None

    @naming_damaged_tables
    def crops_of_image(self, image_id: str) -> list[CropRecord]:
        """Every crop cut from one image: the detector's most confident first, then those of no class
        (proposals, tiles)."""
        rows = _query_reads(self._lookup(CROPS, "image_id", [image_id]))
        return sorted(crop_records(rows).values(), key=lambda crop: (not crop.class_name, -crop.confidence))

    @naming_damaged_tables
    def search(self, vector: np.ndarray, where: str, limit: int) -> list[dict[str, Any]]:
        """Nearest embeddings by cosine similarity among rows passing `where` (a prefilter, applied in LanceDB).

        Rows come back as `id`, `kind`, `image_id`, `crop_id` and `score`, as from every search here.
        """
        vector = np.asarray(vector, dtype=np.float32)
        vectors = self._vector_table_name()
        found = self._ranked(vectors, lambda table: _nearest(table, vector), "_distance", where, limit)
        rows = _query_reads(found).to_pylist()
        return _hit_rows(rows, [1.0 - row.pop("_distance") for row in rows])

    @naming_damaged_tables
    def search_text(self, text: str, where: str, limit: int) -> list[dict[str, Any]]:
        """The rows whose class names best match the words of `text` (BM25 over the text index)."""
        words = _match(text)
        search = lambda table: table.query().nearest_to_text(words)  # noqa: E731
        found = self._ranked(self._vector_table_name(), search, "_score", where, limit)
        rows = _query_reads(found).to_pylist()
        return _hit_rows(rows, [row.pop("_score") for row in rows])

    @naming_damaged_tables
    def search_hybrid(self, vector: np.ndarray, text: str, where: str, limit: int) -> list[dict[str, Any]]:
        """Both rankings under one prefilter, side by side, fused by LanceDB's reciprocal-rank-fusion reranker.

        The two searches are run here rather than as LanceDB's hybrid query, whose halves cannot name
        their score columns and so log two deprecation warnings per query; the fusion is LanceDB's own.
        Each ranking gives at least `HYBRID_CANDIDATES` rows, so the fused order of the first ones does
        not change with `limit` (with `limit` rows each, `-k 3` and `-k 10` had different top hits).
        The score is the fused one scaled to 0-1 (`hybrid_score`).
        """
        from lancedb.rerankers import RRFReranker

        vector, words = np.asarray(vector, dtype=np.float32), _match(text)
        vectors = self._vector_table_name()
        candidates = max(limit, HYBRID_CANDIDATES)

        async def both() -> list[pa.Table]:
            return await asyncio.gather(
                self._ranked(
                    vectors, lambda table: _nearest(table, vector).with_row_id(), "_distance", where, candidates
                ),
                self._ranked(
                    vectors,
                    lambda table: table.query().nearest_to_text(words).with_row_id(),
                    "_score",
                    where,
                    candidates,
                ),
            )

        by_vector, by_words = _query_reads(both())
        fused = RRFReranker(K=RRF_K).rerank_hybrid(text, by_vector, by_words).slice(0, limit).to_pylist()
        return _hit_rows(fused, [hybrid_score(row.pop("_relevance_score")) for row in fused])

    async def _ranked(
        self, vectors: str | None, search: Callable[[Any], Any], score: str, where: str, limit: int
    ) -> pa.Table:
        # `vectors` (the table's name) is found before: the sync API must not be called on the reads' loop.
        table = None if vectors is None else await self._reader_table(vectors)
        if table is None:
            raise StoreMismatchError(f"no index at {self.uri}: run `cropsearch index` first")
        # Each selected column is one more random read per hit: at 1M rows, 2 ms for 20 hits.
        # `kind` and `crop_id` follow from these two, so they are not read. The score is named where
        # the search makes it: LanceDB warns otherwise.
        query = search(table).select(["id", "image_id", score]).limit(limit)
        if where:
            query = query.where(where)  # the async API prefilters by default
        return await query.to_arrow()


def hybrid_score(fused: float) -> float:
    """A reciprocal-rank-fusion score on a scale a person reads: 1 for a row first in both rankings (by looks and
    by words), 0.5 for one first in one of them and absent from the other, near 0 for one far down both."""
    return fused * (RRF_K + 1) / 2


def _nearest(table: Any, vector: np.ndarray) -> Any:
    return (
        table.vector_search(vector)
        .column("vector")
        .distance_type("cosine")
        # Used only once an ANN index exists; refining makes its distances exact.
        .nprobes(ANN_NPROBES)
        .refine_factor(ANN_REFINE_FACTOR)
    )


def _match(text: str) -> Any:
    """The words of `text` as a match query: tokenized by the index's own tokenizer, never parsed as syntax.

    A plain string would reach the same place today; a MatchQuery says so, and keeps quotes,
    `AND`/`OR`, `field:` and wildcards in user text from ever meaning anything but words.
    """
    from lancedb.query import MatchQuery

    return MatchQuery(text, TEXT_COLUMN)


def _hit_rows(rows: list[dict[str, Any]], scores: Sequence[float]) -> list[dict[str, Any]]:
    for row, score in zip(rows, scores, strict=True):
        row.pop("_rowid", None)  # what a fusion matched the two rankings' rows on
        row["score"] = float(score)
        # An image's own vector has the image's id; a crop's has the crop's id.
        is_image = row["id"] == row["image_id"]
        row["kind"] = "image" if is_image else "crop"
        row["crop_id"] = None if is_image else row["id"]
    return rows
