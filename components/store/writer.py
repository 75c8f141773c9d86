"""Writing an index: upserts by content-derived id, removals, compaction and the ANN and join-key indexes.

Indexing's side of the database, on LanceDB's sync API. Every write is a `merge_insert` keyed on
the table's id column, so writing the same records twice leaves the same rows. One writer per
database at a time (`locks.py`, and the Prefect writer limit across machines). What removes crops
removes their vectors from every embedder's table.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import pyarrow as pa

from components.errors import StoreMismatchError, StoreWriteTimeout, disk_full
from components.store.database import Database, naming_damaged_tables
from components.store.schema import (
    ANN_EF_CONSTRUCTION,
    CROP_SOURCE,
    CROP_SOURCE_OF_OLDER_ROWS,
    CROPS,
    CROPS_SCHEMA,
    CROPS_WITHOUT_A_SOURCE,
    DEFAULT_EMBEDDER_SETTING,
    EMBEDDINGS,
    IMAGES,
    IMAGES_SCHEMA,
    RECIPE_SETTING,
    SCALAR_INDEXES,
    SETTINGS,
    SETTINGS_SCHEMA,
    TEXT_COLUMN,
    VECTOR_SOURCE,
    VECTOR_SOURCE_OF_OLDER_ROWS,
    added_vector_table,
    crop_records,
    embedding_table,
    embeddings_schema,
    id_filters,
    lookup_columns,
    record_rows,
    sql_string,
)
from schemas.params import IndexRecipe
from schemas.records import CropRecord, EmbeddingRecord, ImageRecord
from schemas.settings import WHOLE_FRAME_AREA_MIN, ObjectStoreSettings

# One chunk's upsert takes about a second; a write still running after this is stuck, not slow.
# (A probe here saw four concurrent `merge_insert`s into one table spin for 30+ minutes.)
DEFAULT_WRITE_TIMEOUT = timedelta(minutes=10)


class StoreWriter(Database):
    """The writes of an index run, and the upkeep after them."""

    def __init__(
        self,
        uri: str,
        object_store: ObjectStoreSettings | None = None,
        write_timeout: timedelta = DEFAULT_WRITE_TIMEOUT,
    ) -> None:
        super().__init__(uri, object_store)
        self.write_timeout = write_timeout

    def _open_or_create(self, name: str, schema: pa.Schema) -> Any:
        # An existing table is opened as it is: one made before the `record` column is written without it.
        if self._open(name) is None:
            self._tables[name] = self._db.create_table(name, schema=schema, exist_ok=True)
        return self._tables[name]

    def _upsert(self, table: Any, key: str, data: pa.Table) -> None:
        if not data.num_rows:
            return
        upsert = table.merge_insert(key).when_matched_update_all().when_not_matched_insert_all()
        try:
            upsert.execute(data, timeout=self.write_timeout)
        except (OSError, RuntimeError) as error:
            # Lance reports a full disk as an IO error whose text carries the OS's message.
            if "No space left on device" in str(error) or getattr(error, "errno", None) == errno.ENOSPC:
                raise disk_full(self.uri) from error
            if "timeout" in str(error).lower() or "timed out" in str(error).lower():
                raise StoreWriteTimeout(
                    f"writing {data.num_rows} rows to {table.name} at {self.uri} did not finish in "
                    f"{self.write_timeout.total_seconds():.0f} s (concurrent writers retrying each other's "
                    f"commits?); nothing of it was committed, run again"
                ) from error
            raise

    def _upsert_records(self, table: Any, key: str, records: Sequence[ImageRecord | CropRecord]) -> None:
        self._upsert(table, key, pa.Table.from_pylist(record_rows(records), schema=table.schema))

    @naming_damaged_tables
    def upsert_images(self, records: Sequence[ImageRecord]) -> None:
        self._upsert_records(self._open_or_create(IMAGES, IMAGES_SCHEMA), "image_id", records)

    @naming_damaged_tables
    def upsert_crops(self, records: Sequence[CropRecord]) -> None:
        self._upsert_records(self._crops_with_their_source(), "crop_id", records)

    def _crops_with_their_source(self) -> Any:
        """The crops table, given the `source` column first where it was made before it (its rows as the detector's).

        Written without it, a tile's source would live only in the `record` JSON, and a table older
        than that column would lose it: read back, a tile would pass for a detector crop. Adding a
        column filled with one constant writes a small data file per fragment and a new version;
        readers of the older version go on reading it (their records default to 'detector').
        """
        table = self._open_or_create(CROPS, CROPS_SCHEMA)
        if CROP_SOURCE not in table.schema.names:
            table.add_columns({CROP_SOURCE: sql_string(CROP_SOURCE_OF_OLDER_ROWS)})
        return table

    @naming_damaged_tables
    def upsert_embeddings(self, records: Sequence[EmbeddingRecord], embedder_id: str, embedder_spec: str = "") -> None:
        """Upsert one embedder's vectors into its table, made on its first vectors (an embedder added to the index)."""
        if not records:
            return
        if any(record.model != embedder_id for record in records):
            raise StoreMismatchError(f"refusing to write vectors of another embedder than {embedder_id!r}")
        dims = {len(record.vector) for record in records}
        if len(dims) != 1:
            raise StoreMismatchError(f"embedder {embedder_id!r} gave vectors of {sorted(dims)} dimensions at once")
        dim = dims.pop()
        tables = self.vector_tables()
        name = tables.get(embedder_id) or (added_vector_table(embedder_id) if tables else EMBEDDINGS)
        table = self._open_or_create(name, embeddings_schema(dim, embedder_id, embedder_spec or embedder_id))
        self._give_region_sources(table)
        width = table.schema.field("vector").type.list_size
        if width != dim:
            raise StoreMismatchError(
                f"embedder {embedder_id!r} gave vectors of {dim} dimensions; its vectors in the index have {width} "
                f"(the same id with another width: its weights changed in place?)"
            )
        self._upsert(table, "id", embedding_table(records, table.schema))

    @staticmethod
    def _give_region_sources(table: Any) -> None:
        """A vector table made before the `source` column gets it, filled as its rows can only have been.

        Added empty, then filled by two updates; a run killed between them leaves crops without a
        source, which the next run's plan fills (`fill_region_sources`).
        """
        if VECTOR_SOURCE not in table.schema.names:
            table.add_columns({VECTOR_SOURCE: "CAST(NULL AS STRING)"})
            StoreWriter._fill_older_sources(table)

    @staticmethod
    def _fill_older_sources(table: Any) -> None:
        for source, where in VECTOR_SOURCE_OF_OLDER_ROWS.items():
            table.update(where=where, values={VECTOR_SOURCE: source})

    @naming_damaged_tables
    def fill_region_sources(self) -> None:
        """Every vector table with its `source` column, and no crop row without a source (once per run)."""
        for table in self._vector_tables_open():
            if VECTOR_SOURCE not in table.schema.names:
                self._give_region_sources(table)
            elif table.count_rows(CROPS_WITHOUT_A_SOURCE):
                self._fill_older_sources(table)

    def _vector_tables_open(self) -> list[Any]:
        return [table for name in self.vector_tables().values() if (table := self._open(name)) is not None]

    @naming_damaged_tables
    def image_ids_embedded_by(self, embedder_id: str) -> set[str]:
        """The images that have a whole-image vector of this embedder.

        An image's vector and its crops' are written in one upsert, so an image that has its own has
        them all (but those of crops covering at least `--whole-frame-area`, which have none).
        """
        table = self.vector_table_of(embedder_id)
        return set() if table is None else self._image_ids_with_vectors(table)

    @staticmethod
    def _image_ids_with_vectors(table: Any) -> set[str]:
        found = table.search().where("kind = 'image'").select(["image_id"]).limit(None).to_arrow()
        return set(found.column("image_id").to_pylist())

    @naming_damaged_tables
    def crops_of_images(self, image_ids: Sequence[str]) -> dict[str, list[CropRecord]]:
        """Each image's stored crops (images without crops are left out), for embedding them again."""
        crops = self._open(CROPS)
        if crops is None or not image_ids:
            return {}
        grouped: dict[str, list[CropRecord]] = {}
        for crop in crop_records(self._rows(crops, "image_id", image_ids, lookup_columns(crops.schema))).values():
            grouped.setdefault(crop.image_id, []).append(crop)
        return grouped

    # -- the embedders -------------------------------------------------------------------

    @naming_damaged_tables
    def set_default_embedder(self, embedder_id: str) -> None:
        """Make queries that name no embedder use this one (one row, one commit: the switch is atomic)."""
        self.check_embedder(embedder_id, option="--default")
        table = self._open_or_create(SETTINGS, SETTINGS_SCHEMA)
        setting = pa.Table.from_pylist([{"key": DEFAULT_EMBEDDER_SETTING, "value": embedder_id}], schema=table.schema)
        self._upsert(table, "key", setting)

    @naming_damaged_tables
    def record_recipe(self, recipe: IndexRecipe) -> None:
        """Record how the index is being made (one row, replaced by each run)."""
        table = self._open_or_create(SETTINGS, SETTINGS_SCHEMA)
        row = [{"key": RECIPE_SETTING, "value": recipe.model_dump_json()}]
        self._upsert(table, "key", pa.Table.from_pylist(row, schema=table.schema))

    @naming_damaged_tables
    def drop_embedder(self, embedder_id: str) -> int:
        """Remove one embedder's vectors (its table); returns how many there were. The default is refused."""
        self.check_embedder(embedder_id, option="--drop")
        tables = self.vector_tables()
        if embedder_id == self._default_among(tables):
            others = [name for name in tables if name != embedder_id]
            hint = f"switch first with `cropsearch models --default {others[0]}`" if others else "it is the only one"
            raise ValueError(f"--drop: {embedder_id!r} is the default embedder; {hint}")
        name = tables[embedder_id]
        rows = self._open(name).count_rows()
        self._db.drop_table(name)
        self._tables.pop(name, None)
        return rows

    @naming_damaged_tables
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
        for embeddings in self._vector_tables_open():
            self._delete_ids(embeddings, "id", [row["crop_id"] for row in stale])
        return [row["uri"] for row in stale if row["uri"]]

    @naming_damaged_tables
    def drop_whole_frame_vectors(self, whole_frame_area: float) -> int:
        """Delete the vectors of crops covering at least `whole_frame_area` of their photo, every embedder's;
        returns how many."""
        where = f"kind = 'crop' AND area_fraction >= {float(whole_frame_area)!r}"
        count = 0
        for embeddings in self._vector_tables_open():
            if found := embeddings.count_rows(where):
                embeddings.delete(where)
                count += found
        return count

    @naming_damaged_tables
    def images_with_crops_lacking_vectors(self, whole_frame_area: float) -> set[str]:
        """Images holding a crop under `whole_frame_area` without its vector: left by a lower value before.

        Only crops of at least WHOLE_FRAME_AREA_MIN can lack one, so only those are read and compared
        (the tables are scanned on `area_fraction` to find them), in every embedder's table.
        """
        crops, vector_tables = self._open(CROPS), self._vector_tables_open()
        if crops is None or not vector_tables:
            return set()
        band = f"area_fraction >= {WHOLE_FRAME_AREA_MIN!r} AND area_fraction < {float(whole_frame_area)!r}"
        cut = crops.search().where(band).select(["crop_id", "image_id"]).limit(None).to_arrow().to_pylist()
        lacking: set[str] = set()
        for embeddings in vector_tables if cut else ():
            embedded = embeddings.search().where(f"kind = 'crop' AND {band}").select(["id"]).limit(None).to_arrow()
            have = set(embedded.column("id").to_pylist())
            # A photo this embedder has not embedded at all (one being added, a run cut short) is the
            # plan's to embed, from its stored crops: it is no reason to detect it again.
            photos = self._image_ids_with_vectors(embeddings)
            lacking |= {row["image_id"] for row in cut if row["crop_id"] not in have and row["image_id"] in photos}
        return lacking

    @naming_damaged_tables
    def remove_vectors_of_images(self, image_ids: Sequence[str], keep_embedders: Iterable[str]) -> None:
        """Delete these images' vectors (their own and their crops') from every embedder's table but those kept."""
        keep = set(keep_embedders)
        for embedder, name in self.vector_tables().items():
            if embedder not in keep and (table := self._open(name)) is not None:
                self._delete_ids(table, "image_id", image_ids)

    @naming_damaged_tables
    def remove_images(self, image_ids: Sequence[str]) -> list[str]:
        """Delete images with everything derived from them; returns the removed crop file uris."""
        removed_uris = self.remove_crops_except(image_ids, keep_crop_ids=())
        for table in [*self._vector_tables_open(), self._open(IMAGES)]:
            if table is not None:
                self._delete_ids(table, "image_id", image_ids)
        return removed_uris

    def _delete_ids(self, table: Any, column: str, ids: Sequence[str]) -> None:
        for where in id_filters(column, ids):
            table.delete(where)

    # -- upkeep ---------------------------------------------------------------------------

    def fragment_counts(self) -> dict[str, int]:
        """How many data fragments each table has: every chunk's upsert adds one or more."""
        return {
            name: table.stats()["fragment_stats"]["num_fragments"]
            for name in (IMAGES, CROPS, *self.vector_tables().values())
            if (table := self._open(name)) is not None
        }

    @naming_damaged_tables
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

    @naming_damaged_tables
    def maintain_indexes(self, min_rows: int) -> list[str]:
        """Keep each embedder's text index, build the ANN and scalar indexes at `min_rows`, fold new rows in.

        Returns what it did, in words, for the run's log (nothing when nothing was needed).
        """
        from lancedb.index import FTS, IvfHnswSq

        done = []
        any_vector_index = False
        for embedder, name in self.vector_tables().items():
            embeddings = self._open(name)
            # At any size, and where an index was made before text search existed: an unchanged run adds it.
            if not self.has_text_index(embedder):
                # Positions would serve phrase queries only; a class name is two or three words.
                embeddings.create_index(TEXT_COLUMN, config=FTS(with_position=False))
                done.append(f"built the text index over {embeddings.count_rows()} embeddings of {embedder}")
            vector_indexed = "vector" in self._indexed_columns(embeddings)
            if not vector_indexed and (rows := embeddings.count_rows()) >= min_rows:
                config = IvfHnswSq(distance_type="cosine", ef_construction=ANN_EF_CONSTRUCTION)
                embeddings.create_index("vector", config=config)
                done.append(f"built the vector index over {rows} embeddings of {embedder}")
                vector_indexed = True
            any_vector_index = any_vector_index or vector_indexed
            if vector_indexed:
                done.extend(self._scalar_indexes(name, SCALAR_INDEXES[EMBEDDINGS]))
        # The join keys' indexes come with a vector index; also where an index made before a column
        # joined SCALAR_INDEXES lacks it.
        for name in (IMAGES, CROPS) if any_vector_index else ():
            done.extend(self._scalar_indexes(name, SCALAR_INDEXES[name]))
        for name in (*self.vector_tables().values(), IMAGES, CROPS):
            table = self._open(name)
            # Each index of a table counts the same new rows: the most any one lacks is how many are new
            # (none where every index was just built).
            unindexed = max((index.num_unindexed_rows for index in table.list_indices()), default=0) if table else 0
            if unindexed:
                table.optimize()  # compacts fragments and adds the new rows to the table's indexes
                done.append(f"added {unindexed} new rows to the indexes of {name}")
        return done

    def _scalar_indexes(self, name: str, columns: Sequence[str]) -> list[str]:
        """Index each of these columns of a table that lacks it; returns what it did."""
        table = self._open(name)
        if table is None:
            return []
        indexed = self._indexed_columns(table)
        made = []
        for column in columns:
            if column not in indexed:
                table.create_scalar_index(column)
                made.append(f"indexed {name}.{column}")
        return made

    @staticmethod
    def _indexed_columns(table: Any) -> set[str]:
        return {column for index in table.list_indices() for column in index.columns}
