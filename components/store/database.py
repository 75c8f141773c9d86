"""One cropsearch database, opened: its tables, the embedder it records, its damaged tables, lookups by id.

What the writer (indexing) and the reader (queries) share. Both open LanceDB's sync connection
with a zero consistency interval, so every read sees the latest commit, also other processes'.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import lancedb

from components.errors import StoreMismatchError, damaged_table
from components.store.schema import (
    CROPS,
    EMBEDDER_METADATA_KEY,
    EMBEDDER_SPEC_METADATA_KEY,
    EMBEDDINGS,
    IMAGES,
    KEY_OF_TABLE,
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


def naming_damaged_tables(method: Callable[..., Result]) -> Callable[..., Result]:
    """Turn LanceDB's error about a damaged or missing data file into one that names the table and the way back.

    LanceDB's own text names neither ("LanceError(IO): ... Invalid range 0..984 for object of size 7
    bytes"), so on a failure the tables are scanned to find the damaged one: the scan costs only
    when something already failed, and an error with no damaged table behind it passes unchanged.
    """

    @functools.wraps(method)
    def named(self: Database, *args: Any, **kwargs: Any) -> Result:
        try:
            return method(self, *args, **kwargs)
        except (RuntimeError, OSError, ValueError) as error:
            damaged = self.damaged_tables()
            if damaged:
                raise damaged_table(damaged[0], self.uri, error) from error
            raise

    return named


def never_committed(error: ValueError) -> bool:
    """Whether LanceDB refused to open a table it lists because no version of it was ever committed.

    A run killed while LanceDB created the table leaves its folder (data written, no version): it
    is listed, never readable, and holds nothing. Such a table counts as absent, and the next write
    creates it over that folder (found by the crash loop, `bench/crash_loop.py`).
    """
    return "was not found" in str(error)


def open_committed(db: Any, name: str) -> Any | None:
    """The table `name` of a LanceDB connection, or None when it is absent or was never committed."""
    if name not in db.list_tables().tables:
        return None
    try:
        return db.open_table(name)
    except ValueError as error:
        if not never_committed(error):
            raise
        return None


class Database:
    """One LanceDB database holding a cropsearch index: a local folder or an s3:// URI."""

    def __init__(self, uri: str, object_store: ObjectStoreSettings | None = None) -> None:
        self.uri = uri
        options = (object_store or ObjectStoreSettings()).lance_storage_options() if "://" in uri else {}
        self.connection_options: dict[str, Any] = {
            "read_consistency_interval": timedelta(0),
            "storage_options": options or None,
        }
        self._db = lancedb.connect(uri, **self.connection_options)
        self._tables: dict[str, Any] = {}

    def _open(self, name: str) -> Any | None:
        # Handles are kept: opening costs two round trips, and a kept handle still reads the latest commit.
        if name not in self._tables:
            table = open_committed(self._db, name)
            if table is None:
                return None
            self._tables[name] = table
        return self._tables[name]

    def _embeddings_metadata(self, key: bytes) -> str | None:
        table = self._open(EMBEDDINGS)
        if table is None:
            return None
        return (table.schema.metadata or {}).get(key, b"").decode() or None

    @naming_damaged_tables
    def embedder_of_index(self) -> str | None:
        """The embedder id the embeddings table was built with, or None when there is none yet."""
        return self._embeddings_metadata(EMBEDDER_METADATA_KEY)

    @naming_damaged_tables
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

    @naming_damaged_tables
    def has_text_index(self) -> bool:
        """Whether text and hybrid queries can run: the embeddings carry their full-text index."""
        table = self._open(EMBEDDINGS)
        return table is not None and any(
            index.index_type == "FTS" and TEXT_COLUMN in index.columns for index in table.list_indices()
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

    @naming_damaged_tables
    def counts(self) -> dict[str, int]:
        return {
            name: (table.count_rows() if (table := self._open(name)) else 0) for name in (IMAGES, CROPS, EMBEDDINGS)
        }

    # -- lookups --------------------------------------------------------------------------

    def _rows(self, table: Any, column: str, values: Sequence[str], columns: list[str]) -> list[dict[str, Any]]:
        """Rows whose `column` is one of `values` (ids), fetched in a few batched scans."""
        rows: list[dict[str, Any]] = []
        for where in id_filters(column, values):
            rows.extend(table.search().where(where).select(columns).limit(None).to_arrow().to_pylist())
        return rows

    @naming_damaged_tables
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

    @naming_damaged_tables
    def images_by_id(self, image_ids: Sequence[str]) -> dict[str, ImageRecord]:
        table = self._open(IMAGES)
        if table is None or not image_ids:
            return {}
        return image_records(self._rows(table, "image_id", image_ids, lookup_columns(table.schema)))

    @naming_damaged_tables
    def crops_by_id(self, crop_ids: Sequence[str]) -> dict[str, CropRecord]:
        table = self._open(CROPS)
        if table is None or not crop_ids:
            return {}
        return crop_records(self._rows(table, "crop_id", crop_ids, lookup_columns(table.schema)))

    def class_names(self) -> set[str]:
        """Every detector class that has at least one crop in the index."""
        return set(self.class_counts())

    @naming_damaged_tables
    def class_counts(self) -> dict[str, int]:
        """Detector class -> how many crops of it the index holds, most first."""
        table = self._open(CROPS)
        if table is None:
            return {}
        names = table.search().select(["class_name"]).limit(None).to_arrow()
        counted = names.group_by("class_name").aggregate([("class_name", "count")]).to_pylist()
        pairs = sorted(((row["class_name"], row["class_name_count"]) for row in counted), key=lambda p: (-p[1], p[0]))
        return dict(pairs)

    @naming_damaged_tables
    def last_write(self) -> datetime | None:
        """When the index last changed: the newest commit of any of its tables."""
        stamps = [table.list_versions()[-1]["timestamp"] for name in KEY_OF_TABLE if (table := self._open(name))]
        return max(stamps, default=None)
