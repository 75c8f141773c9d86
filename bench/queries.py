"""Step 3 of `make bench`: text-query latency and ANN recall over synthetic indexes of 10k to 1M embeddings.

python -m bench.queries '<payload JSON>'   # the measurement, in a fresh process (`measure_queries` starts it)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.photos import write_photos
from bench.plan import CROPS_PER_IMAGE, TARGETS, Figures, Models, Plan, in_fresh_process, plan_json, plan_of_json
from bench.report import Row, percentiles
from bench.serving import measure_serving

_WRITE_BATCH = 100_000  # rows per write of the synthetic index
COCO_CLASSES = "person bicycle car motorcycle bus truck boat bench bird cat dog horse sheep cow bottle cup chair couch"
QUERY_TEXTS = [
    "a potted plant behind a sofa",
    "a red bus on a city street",
    "two people playing football",
    "a cat sleeping on a laptop",
    "a bowl of fruit on a kitchen table",
]


class VectorMixture:
    """Unit vectors drawn around 2,000 centres, as CLIP embeddings cluster by content.

    Uniform random vectors would be the worst case for any ANN index and unlike real embeddings.
    """

    def __init__(self, dim: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = self.rng.standard_normal((2000, dim)).astype(np.float32)

    def draw(self, count: int) -> np.ndarray:
        picked = self.centres[self.rng.integers(0, len(self.centres), count)]
        vectors = picked + 0.8 * self.rng.standard_normal(picked.shape).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _ids(prefix: str, count: int) -> list[str]:
    return [hashlib.sha256(f"{prefix}{n}".encode()).hexdigest() for n in range(count)]


def write_synthetic_index(
    db_dir: Path,
    rows: int,
    mixture: VectorMixture,
    embedder_id: str,
    embedder_spec: str | None = None,
    photo_files: list[Path] | None = None,
) -> np.ndarray:
    """An index of `rows` embeddings as indexing COCO-like photos makes it: 1 whole image + 8 crops per photo.

    Images point at `photo_files` in turn where given (a server can then show them), else at paths
    that do not exist. Returns the vectors (in row order) for exact search by numpy.
    """
    import lancedb
    import pyarrow as pa

    from components.store.schema import (
        CROPS,
        CROPS_SCHEMA,
        EMBEDDINGS,
        IMAGES,
        IMAGES_SCHEMA,
        embeddings_schema,
        record_rows,
    )
    from schemas.records import CropRecord, ImageRecord

    shutil.rmtree(db_dir, ignore_errors=True)
    database = lancedb.connect(str(db_dir))
    photos = rows // (CROPS_PER_IMAGE + 1)
    crops = rows - photos
    rng = np.random.default_rng(rows)
    classes = COCO_CLASSES.split()
    image_ids, crop_ids = _ids("image", photos), _ids("crop", crops)
    parent_of_crop = rng.integers(0, photos, crops)
    crop_class = [classes[c] for c in rng.integers(0, len(classes), crops)]
    now = datetime.now(UTC)
    image_records = [
        ImageRecord(
            image_id=image_id,
            uri=str(photo_files[n % len(photo_files)]) if photo_files else f"/data/coco/{n:012d}.jpg",
            source="coco-val2017",
            width=640,
            height=480,
            num_bytes=160_000,
            caption="this image contains 2 person, 1 chair",
            index_signature="bench",
            indexed_at=now,
        )
        for n, image_id in enumerate(image_ids)
    ]
    corners = rng.uniform(0, 300, (crops, 2))
    confidences, area_fractions = rng.uniform(0.25, 1.0, crops), rng.uniform(0.001, 0.5, crops)
    crop_records = [
        CropRecord(
            crop_id=crop_id,
            image_id=image_ids[parent_of_crop[n]],
            detector="yolov10x.pt",
            class_id=classes.index(crop_class[n]),
            class_name=crop_class[n],
            confidence=confidences[n],
            x1=corners[n, 0],
            y1=corners[n, 1],
            x2=corners[n, 0] + 100,
            y2=corners[n, 1] + 80,
            area_fraction=area_fractions[n],
            uri=f"/data/crops/{crop_id[:2]}/{crop_id}.jpg",
        )
        for n, crop_id in enumerate(crop_ids)
    ]
    vectors = mixture.draw(rows)
    schema = embeddings_schema(vectors.shape[1], embedder_id, embedder_spec or embedder_id)
    embeddings_table = pa.Table.from_pydict(
        {
            "id": image_ids + crop_ids,
            "kind": ["image"] * photos + ["crop"] * crops,
            "image_id": image_ids + [image_ids[p] for p in parent_of_crop],
            "crop_id": [None] * photos + crop_ids,
            "model": [embedder_id] * rows,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
            "class_name": [None] * photos + crop_class,
            "class_names": [["person", "chair"]] * photos + [[c] for c in crop_class],
            "confidence": np.concatenate([np.ones(photos), confidences]),
            "area_fraction": np.concatenate([np.ones(photos), area_fractions]),
            "source": [None] * photos + ["detector"] * crops,
        },
        schema=schema,
    )
    # Images and crops get their rows as the store writes them (with the `record` column).
    for name, table_schema, records in ((IMAGES, IMAGES_SCHEMA, image_records), (CROPS, CROPS_SCHEMA, crop_records)):
        created = database.create_table(name, schema=table_schema)
        for start in range(0, len(records), _WRITE_BATCH):
            rows_of_batch = record_rows(records[start : start + _WRITE_BATCH])
            created.add(pa.Table.from_pylist(rows_of_batch, schema=table_schema))
    created = database.create_table(EMBEDDINGS, schema=embeddings_table.schema)
    for batch in embeddings_table.to_batches(max_chunksize=_WRITE_BATCH):
        created.add(pa.Table.from_batches([batch]))
    return vectors


def query_latencies(encoder: Any, store: Any, probes: np.ndarray, params: Any) -> tuple[list[float], list[float]]:
    """Seconds per query (encode a text, search, fold per parent, join to records), and the encoding's part of each."""
    from components.search.ranking import find_hits

    seconds, encoding = [], []
    for number, probe in enumerate(probes):
        started = time.perf_counter()
        # The text is encoded (and timed); the search uses a vector from the data's own distribution,
        # since a random-weight text tower's vector lies near nothing.
        encoder.embed_texts([QUERY_TEXTS[number % len(QUERY_TEXTS)]])
        encoded = time.perf_counter()
        hits = find_hits(store, probe, params.search)
        seconds.append(time.perf_counter() - started)
        encoding.append(encoded - started)
        assert hits and all(hit.image.uri for hit in hits)
    return seconds, encoding


def measure_queries(plan: Plan, models: Models) -> dict[str, Any]:
    """Query figures from a fresh process, as a query is served: no detector or index run beside it."""
    payload = {"plan": json.loads(plan_json(plan)), "embedder": models.embedder}
    return in_fresh_process("bench.queries", json.dumps(payload))


def queries_child(payload_json: str) -> None:
    payload = json.loads(payload_json)
    print(json.dumps(query_figures(plan_of_json(payload["plan"]), payload["embedder"])))


def query_figures(plan: Plan, embedder: str) -> dict[str, Any]:
    """p50/p95 of text query -> ranked hits joined to parents, per index size, exact and with the ANN index."""
    from components.models.devices import decide_machine
    from components.models.embedder import load_embedder
    from components.models.loading import model_id
    from components.store.reader import StoreReader
    from components.store.writer import StoreWriter
    from schemas.params import VECTOR_INDEX_MIN_ROWS, QueryParams

    encoder = load_embedder(embedder, decide_machine(plan.device, QueryParams().precision))
    mixture = VectorMixture(encoder.dim)
    params = QueryParams(k=10, render=False)
    photo_files = sorted(write_photos(plan.work / "serve-photos", 32).glob("*.jpg"))
    results: dict[str, Any] = {}
    served: dict[str, Any] = {}
    for rows in plan.row_counts:
        db_dir = plan.work / f"query-db-{rows}"
        started = time.perf_counter()
        # Recorded as the real embedder's, so that `cropsearch serve` accepts the index.
        vectors = write_synthetic_index(db_dir, rows, mixture, model_id(embedder), embedder, photo_files)
        writer, store = StoreWriter(str(db_dir)), StoreReader(str(db_dir))
        # As `index-coco` leaves every table after a run (`IndexParams.compact`): one fragment each,
        # not the 10 that writing 100k rows at a time makes (which cost ~4 ms per query at 1M rows).
        writer.compact()
        written = time.perf_counter() - started
        probes = mixture.draw(plan.queries)

        exact_count = min(plan.queries, plan.exact_queries_at_most) if rows >= 1_000_000 else plan.queries
        exact, _ = query_latencies(encoder, store, probes[:exact_count], params)
        started = time.perf_counter()
        writer.maintain_indexes(min_rows=0)
        build = time.perf_counter() - started
        indexed, indexed_encoding = query_latencies(encoder, store, probes, params)
        indexed_search_and_join = [total - text for total, text in zip(indexed, indexed_encoding, strict=True)]
        recall = []
        ids_by_row = _row_ids(rows)
        for probe in probes:
            truth = set(np.argpartition(-(vectors @ probe), 10)[:10].tolist())
            found = {row["id"] for row in store.search(probe, "", 10)}
            recall.append(len({ids_by_row[n] for n in truth} & found) / 10)
        results[str(rows)] = {
            "write_and_compact_seconds": written,
            "exact_ms": percentiles(exact),
            "index_build_seconds": build,
            "ann_ms": percentiles(indexed),
            "ann_text_encoding_ms": percentiles(indexed_encoding),
            "ann_search_and_join_ms": percentiles(indexed_search_and_join),
            "ann_recall_at_10": float(np.mean(recall)),
            "auto_index_at_this_size": rows >= VECTOR_INDEX_MIN_ROWS,
        }
        if rows == max(plan.row_counts):
            record_ids = [ids_by_row[n] for n in np.random.default_rng(0).integers(0, rows, 50)]
            served = {"rows": rows, **measure_serving(db_dir, embedder, plan, photo_files[0], record_ids)}
        shutil.rmtree(db_dir, ignore_errors=True)
    encode = []
    for number in range(plan.queries):
        started = time.perf_counter()
        encoder.embed_texts([QUERY_TEXTS[number % len(QUERY_TEXTS)]])
        encode.append(time.perf_counter() - started)
    return {
        "sizes": results,
        "text_encoding_ms": percentiles(encode),
        "auto_index_min_rows": VECTOR_INDEX_MIN_ROWS,
        "serving": served,
    }


def _row_ids(rows: int) -> list[str]:
    """Embedding ids in row order, as written by `write_synthetic_index`."""
    photos = rows // (CROPS_PER_IMAGE + 1)
    return _ids("image", photos) + _ids("crop", rows - photos)


def query_rows(figures: Figures) -> list[Row]:
    rows = []
    largest = str(max(figures.plan["row_counts"]))
    for rows_count, sizes in figures.queries["sizes"].items():
        at_target = rows_count == largest
        rows.append(
            Row(
                f"query p50/p95 at {int(rows_count):,} rows, exact",
                f"{sizes['exact_ms']['p50']:.1f} / {sizes['exact_ms']['p95']:.1f} ms",
            )
        )
        p50, p95 = sizes["ann_ms"]["p50"], sizes["ann_ms"]["p95"]
        encoding, search_and_join = sizes["ann_text_encoding_ms"]["p50"], sizes["ann_search_and_join_ms"]["p50"]
        rows.append(
            Row(
                f"query p50/p95 at {int(rows_count):,} rows, ANN index (built in {sizes['index_build_seconds']:.1f} s)",
                f"{p50:.1f} / {p95:.1f} ms (p50s: text encoding {encoding:.1f}, search and join {search_and_join:.1f})",
                f"p95 <= {TARGETS['query_p95_ms']:.0f} ms" if at_target else "",
                p95 <= TARGETS["query_p95_ms"] if at_target else None,
            )
        )
        recall = sizes["ann_recall_at_10"]
        rows.append(
            Row(
                f"ANN recall@10 vs exact at {int(rows_count):,} rows",
                f"{recall:.3f}",
                f">= {TARGETS['ann_recall']}" if at_target else "",
                recall >= TARGETS["ann_recall"] if at_target else None,
            )
        )
    rows.append(
        Row("text encoding alone p50/p95", "{p50:.1f} / {p95:.1f} ms".format(**figures.queries["text_encoding_ms"]))
    )
    return rows


if __name__ == "__main__":
    queries_child(sys.argv[1])
