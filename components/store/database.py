"""One cropsearch database, opened: its tables, the embedders it holds, its damaged tables, lookups by id.

What the writer (indexing) and the reader (queries) share. Both open LanceDB's sync connection
with a zero consistency interval, so every read sees the latest commit, also other processes'.

An index holds vectors of one or more embedders, one table each (`schema.py`); the embedders are
found by listing the tables and reading each one's schema, so a table and the record of its
embedder can never disagree. One of them is the default, the one queries naming none use: the
one `index_settings` names, else the first (`embeddings`), which is also how an index made before
several embedders read.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import lancedb
from pydantic import ValidationError

from components.errors import StoreCorruptError, StoreMismatchError, damaged_table
from components.store.schema import (
    CROP_SOURCE,
    CROP_SOURCE_OF_OLDER_ROWS,
    CROPS,
    DEFAULT_EMBEDDER_SETTING,
    EMBEDDER_METADATA_KEY,
    EMBEDDER_SPEC_METADATA_KEY,
    EMBEDDINGS,
    IMAGES,
    KEY_OF_TABLE,
    RECIPE_SETTING,
    SETTINGS,
    TEXT_COLUMN,
    VECTOR_SOURCE,
    crop_records,
    id_filters,
    image_records,
    is_vector_table,
    key_of_table,
    lookup_columns,
    sql_string,
)
from schemas.params import IndexRecipe
from schemas.records import CropRecord, CropSource, ImageRecord
from schemas.results import IndexedEmbedder
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

    def table_names(self) -> list[str]:
        """Every table of the database (LanceDB lists them a page at a time)."""
        names: list[str] = []
        page = self._db.list_tables()
        names.extend(page.tables)
        while page.page_token:
            page = self._db.list_tables(page_token=page.page_token)
            names.extend(page.tables)
        return names

    @naming_damaged_tables
    def vector_tables(self) -> dict[str, str]:
        """Embedder id -> the table of its vectors, the first embedder's (`embeddings`) first."""
        return {embedder: name for embedder, (name, _) in self._embedders_held().items()}

    @naming_damaged_tables
    def embedder_specs(self) -> dict[str, str]:
        """Embedder id -> where it was loaded from (a hub id or an absolute path), in `vector_tables`' order."""
        return {embedder: spec for embedder, (_, spec) in self._embedders_held().items()}

    def _embedders_held(self) -> dict[str, tuple[str, str]]:
        """Embedder id -> its table and its spec, read from the vector tables' schemas in one listing."""
        found: dict[str, tuple[str, str]] = {}
        for name in sorted(filter(is_vector_table, self.table_names()), key=lambda name: (name != EMBEDDINGS, name)):
            if (table := self._open(name)) is not None:
                metadata = table.schema.metadata or {}
                embedder = metadata.get(EMBEDDER_METADATA_KEY, b"").decode() or name
                spec = metadata.get(EMBEDDER_SPEC_METADATA_KEY, b"").decode() or embedder
                found.setdefault(embedder, (name, spec))
        return found

    def _setting(self, key: str) -> str | None:
        table = self._open(SETTINGS)
        if table is None:
            return None
        rows = table.search().where(f"key = {sql_string(key)}").select(["value"]).limit(1).to_arrow().to_pylist()
        return rows[0]["value"] if rows else None

    @naming_damaged_tables
    def index_recipe(self) -> IndexRecipe | None:
        """How the index was last made; None for one made before indexes recorded it (or none yet)."""
        value = self._setting(RECIPE_SETTING)
        if value is None:
            return None
        try:
            return IndexRecipe.model_validate_json(value)
        except ValidationError as error:  # read from a database a parameter names: checked like a parameter
            raise StoreCorruptError(
                f"the index at {self.uri} records how it was made in a form this version cannot read "
                f"({error.errors()[0]['msg']}): name --detector and the detection settings to index it"
            ) from None

    def _default_among(self, embedders: Collection[str]) -> str | None:
        """The default of these embedders (the index's): the one `index_settings` names, else the first."""
        chosen = self._setting(DEFAULT_EMBEDDER_SETTING)
        return chosen if chosen in embedders else next(iter(embedders), None)

    @naming_damaged_tables
    def default_embedder(self) -> str | None:
        """The embedder queries use when they name none; None while the index holds no vectors."""
        return self._default_among(self.vector_tables())

    def embedder_spec(self, embedder_id: str) -> str:
        """Where an embedder of this index was loaded from (a hub id or an absolute path)."""
        return self.embedder_specs()[embedder_id]

    def embedder_spec_of_index(self) -> str | None:
        """Where the default embedder was loaded from, or None when the index holds no vectors."""
        specs = self.embedder_specs()
        default = self._default_among(specs)
        return None if default is None else specs[default]

    def vector_table_of(self, embedder_id: str | None = None) -> Any | None:
        """The table of an embedder's vectors (None: the default embedder's); None when the index has none."""
        tables = self.vector_tables()
        name = tables.get(embedder_id or self._default_among(tables) or "")
        return None if name is None else self._open(name)

    @naming_damaged_tables
    def indexed_embedders(self) -> list[IndexedEmbedder]:
        """Every embedder with vectors here: id, source, width, rows and which is the default."""
        held = self._embedders_held()
        default = self._default_among(held)
        listed = []
        for embedder, (name, spec) in held.items():
            table = self._open(name)
            listed.append(
                IndexedEmbedder(
                    embedder=embedder,
                    spec=spec,
                    dim=table.schema.field("vector").type.list_size,
                    vectors=table.count_rows(),
                    default=embedder == default,
                    table=name,
                )
            )
        return listed

    def check_embedder(self, embedder_id: str, option: str = "--embedder") -> None:
        """Refuse to search with an embedder whose vectors the index does not hold, naming the ones it does."""
        tables = self.vector_tables()
        if tables and embedder_id not in tables:
            default = self._default_among(tables)
            held = ", ".join(f"{name} (default)" if name == default else name for name in tables)
            raise StoreMismatchError(
                f"{option}: the index at {self.uri} holds no vectors of embedder {embedder_id!r}; it holds {held}. "
                f"Add them with `cropsearch index --embedder {embedder_id}`, or name one it holds"
            )

    @naming_damaged_tables
    def has_text_index(self, embedder_id: str | None = None) -> bool:
        """Whether text and hybrid queries can run: the embedder's vectors carry their full-text index."""
        table = self.vector_table_of(embedder_id)
        return table is not None and any(
            index.index_type == "FTS" and TEXT_COLUMN in index.columns for index in table.list_indices()
        )

    def vectors_know_region_sources(self, embedder_id: str | None = None) -> bool:
        """Whether the embedder's vectors carry their region source (tables made before it lack the column
        until the next index run writes to them)."""
        table = self.vector_table_of(embedder_id)
        return table is None or VECTOR_SOURCE in table.schema.names

    @naming_damaged_tables
    def region_source_counts(self) -> dict[str, int]:
        """Region source -> how many crops it cut, in the sources' order (a table made before the column: the
        detector's)."""
        table = self._open(CROPS)
        if table is None:
            return {}
        if CROP_SOURCE not in table.schema.names:
            return {CROP_SOURCE_OF_OLDER_ROWS: table.count_rows()}
        sources = table.search().select([CROP_SOURCE]).limit(None).to_arrow()
        grouped = sources.group_by(CROP_SOURCE).aggregate([(CROP_SOURCE, "count")]).to_pylist()
        counted = {row[CROP_SOURCE]: row[f"{CROP_SOURCE}_count"] for row in grouped}
        return {source: counted[source] for source in typing.get_args(CropSource) if counted.get(source)}

    def damaged_tables(self) -> list[str]:
        """The tables whose current version does not read whole (a data file damaged or missing)."""
        damaged = []
        for name in self.table_names():
            if not (name in KEY_OF_TABLE or is_vector_table(name)):
                continue
            try:
                table = self._open(name)
                if table is not None:
                    table.search().select([key_of_table(name)]).limit(None).to_arrow()
            except (RuntimeError, OSError, ValueError):
                damaged.append(name)
        return damaged

    @naming_damaged_tables
    def counts(self) -> dict[str, int]:
        """Rows of images, crops and the default embedder's vectors (`indexed_embedders` counts each one's)."""
        counted = {name: (table.count_rows() if (table := self._open(name)) else 0) for name in (IMAGES, CROPS)}
        vectors = self.vector_table_of()
        return {**counted, EMBEDDINGS: vectors.count_rows() if vectors is not None else 0}

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
        """Every detector class that has at least one crop in the index (tiles have none)."""
        return set(self.class_counts())

    @naming_damaged_tables
    def class_counts(self) -> dict[str, int]:
        """Detector class -> how many crops of it the index holds, most first; crops of no class (proposals,
        tiles) left out."""
        table = self._open(CROPS)
        if table is None:
            return {}
        names = table.search().select(["class_name"]).limit(None).to_arrow()
        counted = names.group_by("class_name").aggregate([("class_name", "count")]).to_pylist()
        named = ((row["class_name"], row["class_name_count"]) for row in counted if row["class_name"])
        pairs = sorted(named, key=lambda p: (-p[1], p[0]))
        return dict(pairs)

    @naming_damaged_tables
    def last_write(self) -> datetime | None:
        """When the index last changed: the newest commit of any of its tables."""
        names = [name for name in self.table_names() if name in KEY_OF_TABLE or is_vector_table(name)]
        stamps = [table.list_versions()[-1]["timestamp"] for name in names if (table := self._open(name))]
        return max(stamps, default=None)
