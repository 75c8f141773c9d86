"""LanceDB storage: tables `images`, `crops` and `embeddings`, upserted by content-derived ids.

This module (with `recovery.py`, which turns damaged tables back to versions that read) is what
talks to LanceDB. Every write is a `merge_insert` keyed on the
table's id column (declared as the primary key, which also keeps concurrent upserts from
duplicating rows), so writing the same records twice leaves the same rows.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import re
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.background_loop import LOOP

from components.errors import StoreMismatchError, StoreWriteTimeout, damaged_table, disk_full
from schemas.params import ObjectStoreSettings, QueryKinds
from schemas.records import CropRecord, EmbeddingRecord, ImageRecord

IMAGES, CROPS, EMBEDDINGS = "images", "crops", "embeddings"
EMBEDDER_METADATA_KEY = b"cropsearch.embedder"
# Where the embedder was loaded from, so a query can default to the model the index was built with.
EMBEDDER_SPEC_METADATA_KEY = b"cropsearch.embedder_spec"
_PRIMARY_KEY = {"lance-schema:unenforced-primary-key": "true"}
_HEX_ID = re.compile(r"^[0-9a-f]{16,64}$")
_IN_LIST_CHUNK = 500
# One chunk's upsert takes about a second; a write still running after this is stuck, not slow.
# (A probe here saw four concurrent `merge_insert`s into one table spin for 30+ minutes.)
DEFAULT_WRITE_TIMEOUT = timedelta(minutes=10)

# The ANN index, built once the embeddings pass `IndexParams.vector_index_min_rows`. Exact search
# costs ~3.4 us per row on this 2-core machine (670 ms at 200k rows; bench/perf.py measures it), so
# it passes a 50 ms query budget near 15k rows: below that, an index costs a build and buys nothing.
# IVF_HNSW_SQ won the probes at 200k rows: p50 4.6 ms, recall@10 1.0 with refine, where IVF_PQ
# reached 0.69 and IVF_RQ 0.87 (at 1M); refining re-ranks with exact vectors, so scores stay
# exact. Its cost is the build (168 s at 200k rows with ef_construction 300; 150 here: 395 s at 1M).
# At 1M rows, refining 4x the asked rows gave recall@10 0.93, 10x gave 1.0 for +6 ms; more probes
# changed nothing (HNSW inside each partition already finds the near ones).
ANN_NPROBES = 20
ANN_REFINE_FACTOR = 10
# Join keys looked up by id after every search, indexed once the vector index exists.
_JOIN_KEYS = {IMAGES: "image_id", CROPS: "crop_id"}
KEY_OF_TABLE = {IMAGES: "image_id", CROPS: "crop_id", EMBEDDINGS: "id"}
# Images and crops also keep each whole record as JSON in this column, because a lookup by id pays
# per column it reads: at 1M rows, 20 ids took 8.4 ms with one column per field and 4.8 ms with this
# one (images), 14.1 and 7.5 ms (crops). The other columns are there to filter and for SQL readers;
# both are written from the same record in the same upsert, so they cannot disagree.
RECORD = "record"
Result = TypeVar("Result")
Record = TypeVar("Record", ImageRecord, CropRecord)


def _key(name: str) -> pa.Field:
    return pa.field(name, pa.string(), nullable=False, metadata=_PRIMARY_KEY)


IMAGES_SCHEMA = pa.schema(
    [
        _key("image_id"),
        pa.field("uri", pa.string()),
        pa.field("source", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("num_bytes", pa.int64()),
        pa.field("caption", pa.string()),
        pa.field("index_signature", pa.string()),
        pa.field("indexed_at", pa.timestamp("us", tz="UTC")),
        pa.field(RECORD, pa.string()),
    ]
)

# Scalars are float64 so records read back equal to what was written (and filters compare exactly).
CROPS_SCHEMA = pa.schema(
    [
        _key("crop_id"),
        pa.field("image_id", pa.string()),
        pa.field("detector", pa.string()),
        pa.field("class_id", pa.int32()),
        pa.field("class_name", pa.string()),
        pa.field("confidence", pa.float64()),
        pa.field("x1", pa.float64()),
        pa.field("y1", pa.float64()),
        pa.field("x2", pa.float64()),
        pa.field("y2", pa.float64()),
        pa.field("area_fraction", pa.float64()),
        pa.field("uri", pa.string()),
        pa.field(RECORD, pa.string()),
    ]
)


def embeddings_schema(dim: int, embedder_id: str, embedder_spec: str) -> pa.Schema:
    """The embeddings table is bound to one embedder: its id, source and width live in the schema."""
    return pa.schema(
        [
            _key("id"),
            pa.field("kind", pa.string()),
            pa.field("image_id", pa.string()),
            pa.field("crop_id", pa.string()),
            pa.field("model", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim)),
            pa.field("class_name", pa.string()),
            pa.field("class_names", pa.list_(pa.string())),
            pa.field("confidence", pa.float64()),
            pa.field("area_fraction", pa.float64()),
        ],
        metadata={EMBEDDER_METADATA_KEY: embedder_id.encode(), EMBEDDER_SPEC_METADATA_KEY: embedder_spec.encode()},
    )


def sql_string(value: str) -> str:
    """A SQL string literal; user text never reaches a filter unquoted."""
    return "'" + value.replace("'", "''") + "'"


def _id_list(ids: Iterable[str]) -> str:
    checked = []
    for value in ids:
        if not _HEX_ID.match(value):
            raise ValueError(f"not a cropsearch id: {value!r}")
        checked.append(f"'{value}'")
    return ", ".join(checked)


def _id_filters(column: str, ids: Sequence[str]) -> list[str]:
    """`column IN (...)` filters over checked ids, a few hundred ids each."""
    ids = list(ids)
    chunks = (ids[start : start + _IN_LIST_CHUNK] for start in range(0, len(ids), _IN_LIST_CHUNK))
    return [f"{column} IN ({_id_list(chunk)})" for chunk in chunks]


def record_rows(records: Iterable[ImageRecord | CropRecord]) -> list[dict[str, Any]]:
    """The rows of image or crop records: a column per field, and the whole record in `record`."""
    return [{**record.model_dump(), RECORD: record.model_dump_json()} for record in records]


def _lookup_columns(schema: pa.Schema) -> list[str]:
    """What a lookup by id reads: `record`, or every field's column in tables made before it existed."""
    return [RECORD] if RECORD in schema.names else list(schema.names)


def _parsed(model: type[Record], rows: Iterable[dict[str, Any]]) -> list[Record]:
    return [model.model_validate_json(row[RECORD]) if RECORD in row else model.model_validate(row) for row in rows]


def _image_records(rows: Iterable[dict[str, Any]]) -> dict[str, ImageRecord]:
    return {record.image_id: record for record in _parsed(ImageRecord, rows)}


def _crop_records(rows: Iterable[dict[str, Any]]) -> dict[str, CropRecord]:
    return {record.crop_id: record for record in _parsed(CropRecord, rows)}


def search_filter(kinds: QueryKinds, classes: Sequence[str], min_confidence: float, min_area_fraction: float) -> str:
    """The prefilter of a query. Whole-image rows have confidence and area 1 and list every class they contain."""
    clauses = []
    if kinds != "both":
        clauses.append(f"kind = {sql_string(kinds)}")
    if classes:
        clauses.append(f"array_has_any(class_names, [{', '.join(sql_string(name) for name in classes)}])")
    if min_confidence > 0:
        clauses.append(f"confidence >= {float(min_confidence)!r}")
    if min_area_fraction > 0:
        clauses.append(f"area_fraction >= {float(min_area_fraction)!r}")
    return " AND ".join(clauses)


def _naming_damaged_tables(method: Callable[..., Result]) -> Callable[..., Result]:
    """Turn LanceDB's error about a damaged or missing data file into one that names the table and the way back.

    LanceDB's own text names neither ("LanceError(IO): ... Invalid range 0..984 for object of size 7
    bytes"), so on a failure the tables are scanned to find the damaged one: the scan costs only
    when something already failed, and an error with no damaged table behind it passes unchanged.
    """

    @functools.wraps(method)
    def named(self: CropStore, *args: Any, **kwargs: Any) -> Result:
        try:
            return method(self, *args, **kwargs)
        except (RuntimeError, OSError, ValueError) as error:
            damaged = self.damaged_tables()
            if damaged:
                raise damaged_table(damaged[0], self.uri, error) from error
            raise

    return named


class CropStore:
    """One LanceDB database holding a cropsearch index: a local folder or an s3:// URI."""

    def __init__(
        self,
        uri: str,
        object_store: ObjectStoreSettings | None = None,
        write_timeout: timedelta = DEFAULT_WRITE_TIMEOUT,
    ) -> None:
        self.uri = uri
        self.write_timeout = write_timeout
        options = (object_store or ObjectStoreSettings()).lance_storage_options() if "://" in uri else {}
        # Zero interval: every read sees the latest commit, also commits of other processes.
        # Both connections (this one, and the query reader's below) open with the same options.
        self._connection_options: dict[str, Any] = {
            "read_consistency_interval": timedelta(0),
            "storage_options": options or None,
        }
        self._db = lancedb.connect(uri, **self._connection_options)
        self._tables: dict[str, Any] = {}
        # A query's reads go through LanceDB's async API (see `_query_reads`), opened on the first query.
        self._reader: Any | None = None
        self._reader_tables: dict[str, Any] = {}
        self._reader_lookup_columns: dict[str, list[str]] = {}

    # -- tables ---------------------------------------------------------------------------

    def _table_names(self) -> set[str]:
        return set(self._db.list_tables().tables)

    def _open(self, name: str) -> Any | None:
        # Handles are kept: opening costs two round trips, and a kept handle still reads the latest commit.
        if name not in self._tables:
            if name not in self._table_names():
                return None
            self._tables[name] = self._db.open_table(name)
        return self._tables[name]

    def _open_or_create(self, name: str, schema: pa.Schema) -> Any:
        # An existing table is opened as it is: one made before the `record` column is written without it.
        if self._open(name) is None:
            self._tables[name] = self._db.create_table(name, schema=schema, exist_ok=True)
        return self._tables[name]

    def _embeddings_metadata(self, key: bytes) -> str | None:
        table = self._open(EMBEDDINGS)
        if table is None:
            return None
        return (table.schema.metadata or {}).get(key, b"").decode() or None

    @_naming_damaged_tables
    def embedder_of_index(self) -> str | None:
        """The embedder id the embeddings table was built with, or None when there is none yet."""
        return self._embeddings_metadata(EMBEDDER_METADATA_KEY)

    @_naming_damaged_tables
    def embedder_spec_of_index(self) -> str | None:
        """Where that embedder was loaded from (a hub id or an absolute path)."""
        return self._embeddings_metadata(EMBEDDER_SPEC_METADATA_KEY)

    def check_embedder(self, embedder_id: str) -> None:
        """Refuse to mix or compare vectors of two different embedders."""
        existing = self.embedder_of_index()
        if existing is not None and existing != embedder_id:
            raise StoreMismatchError(
                f"the index at {self.uri} holds vectors of embedder {existing!r}, not {embedder_id!r}; "
                f"use the same --embedder, or another --db for the new model"
            )

    def damaged_tables(self) -> list[str]:
        """The tables whose current version does not read whole (a data file damaged or missing)."""
        damaged = []
        for name, key in KEY_OF_TABLE.items():
            try:
                table = self._open(name)
                if table is not None:
                    table.search().select([key]).limit(None).to_arrow()
            except (RuntimeError, OSError, ValueError):
                damaged.append(name)
        return damaged

    @_naming_damaged_tables
    def counts(self) -> dict[str, int]:
        return {
            name: (table.count_rows() if (table := self._open(name)) else 0) for name in (IMAGES, CROPS, EMBEDDINGS)
        }

    # -- writes ---------------------------------------------------------------------------

    def _upsert(self, table: Any, key: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        data = pa.Table.from_pylist(rows, schema=table.schema)
        upsert = table.merge_insert(key).when_matched_update_all().when_not_matched_insert_all()
        try:
            upsert.execute(data, timeout=self.write_timeout)
        except (OSError, RuntimeError) as error:
            # Lance reports a full disk as an IO error whose text carries the OS's message.
            if "No space left on device" in str(error) or getattr(error, "errno", None) == errno.ENOSPC:
                raise disk_full(self.uri) from error
            if "timeout" in str(error).lower() or "timed out" in str(error).lower():
                raise StoreWriteTimeout(
                    f"writing {len(rows)} rows to {table.name} at {self.uri} did not finish in "
                    f"{self.write_timeout.total_seconds():.0f} s (concurrent writers retrying each other's "
                    f"commits?); nothing of it was committed, run again"
                ) from error
            raise

    @_naming_damaged_tables
    def upsert_images(self, records: Sequence[ImageRecord]) -> None:
        self._upsert(self._open_or_create(IMAGES, IMAGES_SCHEMA), "image_id", record_rows(records))

    @_naming_damaged_tables
    def upsert_crops(self, records: Sequence[CropRecord]) -> None:
        self._upsert(self._open_or_create(CROPS, CROPS_SCHEMA), "crop_id", record_rows(records))

    @_naming_damaged_tables
    def upsert_embeddings(self, records: Sequence[EmbeddingRecord], embedder_id: str, embedder_spec: str = "") -> None:
        if not records:
            return
        self.check_embedder(embedder_id)
        if any(record.model != embedder_id for record in records):
            raise StoreMismatchError(f"refusing to write vectors of another embedder than {embedder_id!r}")
        schema = embeddings_schema(len(records[0].vector), embedder_id, embedder_spec or embedder_id)
        table = self._open_or_create(EMBEDDINGS, schema)
        width = table.schema.field("vector").type.list_size
        if width != len(records[0].vector):
            raise StoreMismatchError(f"vectors have {len(records[0].vector)} dimensions; the index holds {width}")
        self._upsert(table, "id", [r.model_dump() for r in records])

    @_naming_damaged_tables
    def remove_crops_except(self, image_ids: Sequence[str], keep_crop_ids: Iterable[str]) -> list[str]:
        """Delete crops (and their vectors) of these images that a re-index no longer produced.

        Returns the removed crops' file uris so the caller can delete the files.
        """
        crops = self._open(CROPS)
        if crops is None or not image_ids:
            return []
        keep = set(keep_crop_ids)
        stale = [
            row for row in self._rows(crops, "image_id", image_ids, ["crop_id", "uri"]) if row["crop_id"] not in keep
        ]
        self._delete_ids(crops, "crop_id", [row["crop_id"] for row in stale])
        if (embeddings := self._open(EMBEDDINGS)) is not None:
            self._delete_ids(embeddings, "id", [row["crop_id"] for row in stale])
        return [row["uri"] for row in stale if row["uri"]]

    @_naming_damaged_tables
    def remove_images(self, image_ids: Sequence[str]) -> list[str]:
        """Delete images with everything derived from them; returns the removed crop file uris."""
        removed_uris = self.remove_crops_except(image_ids, keep_crop_ids=())
        for name, key in ((EMBEDDINGS, "image_id"), (IMAGES, "image_id")):
            if (table := self._open(name)) is not None:
                self._delete_ids(table, key, image_ids)
        return removed_uris

    def _delete_ids(self, table: Any, column: str, ids: Sequence[str]) -> None:
        for where in _id_filters(column, ids):
            table.delete(where)

    # -- upkeep ---------------------------------------------------------------------------

    def fragment_counts(self) -> dict[str, int]:
        """How many data fragments each table has: every chunk's upsert adds one or more."""
        return {
            name: table.stats()["fragment_stats"]["num_fragments"]
            for name in (IMAGES, CROPS, EMBEDDINGS)
            if (table := self._open(name)) is not None
        }

    @_naming_damaged_tables
    def compact(self) -> dict[str, tuple[int, int]]:
        """Merge each table's small fragments, fold new rows into its indexes, prune versions past a week.

        Returns table -> (fragments before, fragments after). Readers of an older version keep it
        for the week LanceDB keeps old versions by default.
        """
        before = self.fragment_counts()
        for name in before:
            self._open(name).optimize()
        after = self.fragment_counts()
        return {name: (before[name], after[name]) for name in before}

    # -- indexes --------------------------------------------------------------------------

    @_naming_damaged_tables
    def maintain_indexes(self, min_rows: int) -> list[str]:
        """Build the ANN and join-key indexes once the embeddings reach `min_rows`; fold new rows into them after.

        Returns what it did, in words, for the run's log (nothing when nothing was needed).
        """
        from lancedb.index import IvfHnswSq

        embeddings = self._open(EMBEDDINGS)
        if embeddings is None:
            return []
        done = []
        if not self._indexed_columns(embeddings):
            rows = embeddings.count_rows()
            if rows < min_rows:
                return []
            embeddings.create_index("vector", config=IvfHnswSq(distance_type="cosine", ef_construction=150))
            done.append(f"built the vector index over {rows} embeddings")
            for name, key in _JOIN_KEYS.items():
                if (table := self._open(name)) is not None:
                    table.create_scalar_index(key)
                    done.append(f"indexed {name}.{key}")
            return done
        for name in (EMBEDDINGS, *_JOIN_KEYS):
            table = self._open(name)
            unindexed = sum(index.num_unindexed_rows for index in table.list_indices()) if table is not None else 0
            if unindexed:
                table.optimize()  # compacts fragments and adds the new rows to the table's indexes
                done.append(f"added {unindexed} new rows to the indexes of {name}")
        return done

    @staticmethod
    def _indexed_columns(table: Any) -> set[str]:
        return {column for index in table.list_indices() for column in index.columns}

    # -- reads ----------------------------------------------------------------------------

    def _rows(self, table: Any, column: str, values: Sequence[str], columns: list[str]) -> list[dict[str, Any]]:
        """Rows whose `column` is one of `values` (ids), fetched in a few batched scans."""
        rows: list[dict[str, Any]] = []
        for where in _id_filters(column, values):
            rows.extend(table.search().where(where).select(columns).limit(None).to_arrow().to_pylist())
        return rows

    @_naming_damaged_tables
    def image_ids_by_uri(self, source: str) -> dict[str, list[str]]:
        """uri -> ids of the images stored for one source (a changed file leaves its old id under its uri)."""
        table = self._open(IMAGES)
        if table is None:
            return {}
        rows = table.search().where(f"source = {sql_string(source)}").select(["image_id", "uri"]).limit(None).to_arrow()
        found: dict[str, list[str]] = {}
        for row in rows.to_pylist():
            found.setdefault(row["uri"], []).append(row["image_id"])
        return found

    @_naming_damaged_tables
    def images_by_id(self, image_ids: Sequence[str]) -> dict[str, ImageRecord]:
        table = self._open(IMAGES)
        if table is None or not image_ids:
            return {}
        return _image_records(self._rows(table, "image_id", image_ids, _lookup_columns(table.schema)))

    @_naming_damaged_tables
    def class_names(self) -> set[str]:
        """Every detector class that has at least one crop in the index."""
        table = self._open(CROPS)
        if table is None:
            return set()
        return set(table.search().select(["class_name"]).limit(None).to_arrow().column("class_name").to_pylist())

    @_naming_damaged_tables
    def crops_by_id(self, crop_ids: Sequence[str]) -> dict[str, CropRecord]:
        table = self._open(CROPS)
        if table is None or not crop_ids:
            return {}
        return _crop_records(self._rows(table, "crop_id", crop_ids, _lookup_columns(table.schema)))

    # -- a query's reads ------------------------------------------------------------------

    @staticmethod
    def _query_reads(reads: Coroutine[Any, Any, Result]) -> Result:
        """Run a query's reads with LanceDB's async API, on its own event-loop thread as its sync API does.

        The sync API costs three schema round trips per call, and two lookups side by side need two
        threads. At 1M rows, with text queries alternating between the two ways, search, fold and
        join took 27.8 ms instead of 33.6 (p50) and 33.5 instead of 39.8 (p95). Indexing keeps the
        sync API: with this reader in its chunks too, the benchmark's memory step grew +9.9% from
        200 to 1,000 images, against +5.7% without it.
        """
        return LOOP.run(reads)  # lancedb is pinned to 0.40, whose sync API runs on this loop

    async def _reader_table(self, name: str) -> Any | None:
        if self._reader is None:
            self._reader = await lancedb.connect_async(self.uri, **self._connection_options)
        if name not in self._reader_tables:
            if name not in (await self._reader.list_tables()).tables:
                return None
            self._reader_tables[name] = await self._reader.open_table(name)
        return self._reader_tables[name]

    async def _query_lookup(self, name: str, column: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        table = await self._reader_table(name)
        if table is None or not ids:
            return []
        if name not in self._reader_lookup_columns:  # a table's columns never change: read its schema once
            self._reader_lookup_columns[name] = _lookup_columns(await table.schema())
        columns = self._reader_lookup_columns[name]
        scans = [table.query().where(where).select(columns).to_arrow() for where in _id_filters(column, ids)]
        return [row for batch in await asyncio.gather(*scans) for row in batch.to_pylist()]

    @_naming_damaged_tables
    def records_of_hits(
        self, image_ids: Sequence[str], crop_ids: Sequence[str]
    ) -> tuple[dict[str, ImageRecord], dict[str, CropRecord]]:
        """The image and the crop records a hit list joins to, looked up side by side."""

        async def both() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            images, crops = await asyncio.gather(
                self._query_lookup(IMAGES, "image_id", image_ids),
                self._query_lookup(CROPS, "crop_id", crop_ids),
            )
            return images, crops

        image_rows, crop_rows = self._query_reads(both())
        return _image_records(image_rows), _crop_records(crop_rows)

    @_naming_damaged_tables
    def search(self, vector: np.ndarray, where: str, limit: int) -> list[dict[str, Any]]:
        """Nearest embeddings by cosine similarity among rows passing `where` (a prefilter, applied in LanceDB).

        Rows come back as `id`, `kind`, `image_id`, `crop_id` and `score`.
        """
        rows = self._query_reads(self._nearest(np.asarray(vector, dtype=np.float32), where, limit))
        for row in rows:
            row["score"] = 1.0 - row.pop("_distance")
            # An image's own vector has the image's id; a crop's has the crop's id.
            is_image = row["id"] == row["image_id"]
            row["kind"] = "image" if is_image else "crop"
            row["crop_id"] = None if is_image else row["id"]
        return rows

    async def _nearest(self, vector: np.ndarray, where: str, limit: int) -> list[dict[str, Any]]:
        table = await self._reader_table(EMBEDDINGS)
        if table is None:
            raise StoreMismatchError(f"no index at {self.uri}: run `cropsearch index` first")
        query = (
            table.vector_search(vector)
            .column("vector")
            .distance_type("cosine")
            # Each selected column is one more random read per hit: at 1M rows, 2 ms for 20 hits.
            # `kind` and `crop_id` follow from these two, so they are not read.
            .select(["id", "image_id", "_distance"])
            .limit(limit)
            # Used only once an ANN index exists; refining makes its distances exact.
            .nprobes(ANN_NPROBES)
            .refine_factor(ANN_REFINE_FACTOR)
        )
        if where:
            query = query.where(where)  # the async API prefilters by default
        return (await query.to_arrow()).to_pylist()
