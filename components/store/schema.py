"""The tables' layout: Arrow schemas, rows made from records and records read from rows, and filters.

Tables `images` and `crops`, and one vector table per embedder: `embeddings` for the index's first
embedder, `embeddings_<hash of the embedder id>` for each one added later, each bound to its
embedder and width in its schema. Each is keyed on a content-derived id declared as the primary
key (which also keeps concurrent upserts from duplicating rows), so writing the same records twice
leaves the same rows. `index_settings` holds the index's few settings (its default embedder).
User text reaches a filter only through `sql_string`, ids only after `id_filters` checked them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from schemas.records import CropRecord, EmbeddingRecord, ImageRecord
from schemas.settings import QueryKinds

IMAGES, CROPS, EMBEDDINGS, SETTINGS = "images", "crops", "embeddings", "index_settings"
KEY_OF_TABLE = {IMAGES: "image_id", CROPS: "crop_id", EMBEDDINGS: "id", SETTINGS: "key"}
# The setting naming the embedder queries use when they name none (`cropsearch models --default`).
DEFAULT_EMBEDDER_SETTING = "default_embedder"
RECIPE_SETTING = "recipe"  # how the index was last made (`schemas.params.IndexRecipe`, as JSON)
# Join keys looked up by id after every search, indexed once the vector index exists.
# Built beside the ANN index: the join keys, an embedding's id ("more like this" reads a stored
# vector by it: a scan of 1M ids took ~40 ms) and a crop's parent (a photo's crops). Every vector
# table gets the `EMBEDDINGS` entry.
SCALAR_INDEXES = {EMBEDDINGS: ("id",), IMAGES: ("image_id",), CROPS: ("crop_id", "image_id")}
_ADDED_VECTOR_TABLE = re.compile(rf"^{EMBEDDINGS}_[0-9a-f]{{12}}$")


def is_vector_table(name: str) -> bool:
    """Whether a table holds one embedder's vectors: `embeddings` or `embeddings_<12 hex>`."""
    return name == EMBEDDINGS or _ADDED_VECTOR_TABLE.match(name) is not None


def added_vector_table(embedder_id: str) -> str:
    """The vector table of an embedder added to an index that has one: named by its id's hash."""
    return f"{EMBEDDINGS}_{hashlib.sha256(embedder_id.encode()).hexdigest()[:12]}"


def key_of_table(name: str) -> str:
    return "id" if is_vector_table(name) else KEY_OF_TABLE[name]


EMBEDDER_METADATA_KEY = b"cropsearch.embedder"
# Where the embedder was loaded from, so a query can default to the model the index was built with.
EMBEDDER_SPEC_METADATA_KEY = b"cropsearch.embedder_spec"
# Images and crops also keep each whole record as JSON in this column, because a lookup by id pays
# per column it reads: at 1M rows, 20 ids took 8.4 ms with one column per field and 4.8 ms with this
# one (images), 14.1 and 7.5 ms (crops). The other columns are there to filter and for SQL readers;
# both are written from the same record in the same upsert, so they cannot disagree.
RECORD = "record"

# The ANN index, built once the embeddings pass `IndexParams.vector_index_min_rows` (below it exact
# search is fast enough: `make bench` measures both). IVF_HNSW_SQ won the probes at 200k rows:
# recall@10 1.0 with refine, where IVF_PQ reached 0.69 and IVF_RQ 0.87 (at 1M); refining re-ranks
# with exact vectors, so scores stay exact. At 1M rows, refining 4x the asked rows gave recall@10
# 0.93, 10x gave 1.0; more probes changed nothing (HNSW inside each partition finds the near ones).
ANN_EF_CONSTRUCTION = 150
ANN_NPROBES = 20
ANN_REFINE_FACTOR = 10

# The words a text query searches: each embedding row's class names, a crop's own class or every
# class its image holds. An image's caption is made of those same names ("this image contains
# 2 person, 1 tv"), so this column holds the caption's words without the template. LanceDB's
# native full-text index (BM25) is built over it at any size: unlike vectors, words cannot be
# searched without one. It lowercases, stems ("plants" finds "potted plant") and drops stop words.
TEXT_COLUMN = "class_names"

_PRIMARY_KEY = {"lance-schema:unenforced-primary-key": "true"}
_HEX_ID = re.compile(r"^[0-9a-f]{16,64}$")
_IN_LIST_CHUNK = 500
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
        pa.field("detector_signature", pa.string()),
        pa.field("indexed_at", pa.timestamp("us", tz="UTC")),
        pa.field(RECORD, pa.string()),
    ]
)

# Which kind of source proposed a crop (`CropRecord.source`). Crops tables made before there were other
# sources than the detector lack the column: the writer adds it, as 'detector', before it writes to one.
CROP_SOURCE = "source"
CROP_SOURCE_OF_OLDER_ROWS = "detector"

# Scalars are float64 so records read back equal to what was written (and filters compare exactly).
CROPS_SCHEMA = pa.schema(
    [
        _key("crop_id"),
        pa.field("image_id", pa.string()),
        pa.field("detector", pa.string()),
        pa.field(CROP_SOURCE, pa.string()),
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


SETTINGS_SCHEMA = pa.schema([_key("key"), pa.field("value", pa.string())])


# The region source of a crop's vector (`EmbeddingRecord.source`), for the region-source filter. Vector
# tables made before it lack the column: the writer adds it and fills it from what those rows can
# only have been (a crop with a class, the detector's; one without, a tile), before it writes to one.
VECTOR_SOURCE = "source"
CROPS_WITHOUT_A_SOURCE = f"kind = 'crop' AND {VECTOR_SOURCE} IS NULL"
VECTOR_SOURCE_OF_OLDER_ROWS = {
    "detector": f"{CROPS_WITHOUT_A_SOURCE} AND class_name IS NOT NULL AND class_name <> ''",
    "tile": CROPS_WITHOUT_A_SOURCE,  # what is left once the named ones are the detector's
}


def embeddings_schema(dim: int, embedder_id: str, embedder_spec: str) -> pa.Schema:
    """A vector table is bound to one embedder: its id, source and width live in the schema."""
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
            pa.field(VECTOR_SOURCE, pa.string()),
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


def id_filters(column: str, ids: Sequence[str]) -> list[str]:
    """`column IN (...)` filters over checked ids, a few hundred ids each."""
    ids = list(ids)
    chunks = (ids[start : start + _IN_LIST_CHUNK] for start in range(0, len(ids), _IN_LIST_CHUNK))
    return [f"{column} IN ({_id_list(chunk)})" for chunk in chunks]


def search_filter(
    kinds: QueryKinds,
    classes: Sequence[str],
    min_confidence: float,
    min_area_fraction: float,
    region_sources: Sequence[str] = (),
) -> str:
    """The prefilter of a query. Whole-image rows have confidence and area 1, list every class they contain,
    and pass any region-source filter (they have no source). A class filter keeps crops only: a whole
    photo that holds a person among much else is not a hit for "persons" (the page's class facet let
    them through, so a facet of one class showed hits of everything)."""
    clauses = []
    if kinds != "both":
        clauses.append(f"kind = {sql_string(kinds)}")
    if classes:
        names = ", ".join(sql_string(name) for name in classes)
        clauses.append(f"kind = 'crop' AND array_has_any(class_names, [{names}])")
    if region_sources:
        listed = ", ".join(sql_string(source) for source in region_sources)
        clauses.append(f"(kind = 'image' OR {VECTOR_SOURCE} IN ({listed}))")
    if min_confidence > 0:
        clauses.append(f"confidence >= {float(min_confidence)!r}")
    if min_area_fraction > 0:
        clauses.append(f"area_fraction >= {float(min_area_fraction)!r}")
    return " AND ".join(clauses)


def record_rows(records: Iterable[ImageRecord | CropRecord]) -> list[dict[str, Any]]:
    """The rows of image or crop records: a column per field, and the whole record in `record`."""
    return [{**record.model_dump(), RECORD: record.model_dump_json()} for record in records]


def embedding_table(records: Sequence[EmbeddingRecord], schema: pa.Schema) -> pa.Table:
    """One embedder's records (at least one) as the columns of its table: the vectors go to Arrow as one block."""
    vectors = np.stack([record.vector for record in records])
    columns = [
        pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), field.type.list_size)
        if field.name == "vector"
        else pa.array([getattr(record, field.name) for record in records], field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def lookup_columns(schema: pa.Schema) -> list[str]:
    """What a lookup by id reads: `record`, or every field's column in tables made before it existed."""
    return [RECORD] if RECORD in schema.names else list(schema.names)


def _parsed(model: type[Record], rows: Iterable[dict[str, Any]]) -> list[Record]:
    return [model.model_validate_json(row[RECORD]) if RECORD in row else model.model_validate(row) for row in rows]


def image_records(rows: Iterable[dict[str, Any]]) -> dict[str, ImageRecord]:
    return {record.image_id: record for record in _parsed(ImageRecord, rows)}


def crop_records(rows: Iterable[dict[str, Any]]) -> dict[str, CropRecord]:
    return {record.crop_id: record for record in _parsed(CropRecord, rows)}
