"""The per-chunk stages of indexing, each a plain function of records: detect, crop, embed, write.

Models and the store come in as arguments; records go in and out. A file that fails to decode
becomes a `SkippedFile` with its reason, and the chunk goes on without it. Decoding, cutting and
(for embedding) resizing run on `decode_threads` background threads, overlapping the model's
forward passes.
"""

from __future__ import annotations

import io
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from components.models.detector import Detector, load_detector
from components.models.embedder import Embedder, image_embedding_steps, load_embedder
from components.pipeline.crops import caption_for, materialize_crops, to_crop_records
from components.pipeline.images import ImageDecodeError, decode_rgb, read_as_registered
from components.pipeline.prefetch import mapped_ahead, prefetched
from components.store.objects import ObjectFiles
from components.store.writer import StoreWriter
from schemas.params import ChunkConfig
from schemas.records import CropRecord, EmbeddingRecord, ImageRecord, SkippedFile
from schemas.settings import DetectionSettings

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class StageResult:
    """What a stage produced, which images it had to drop, and how many model batches it ran."""

    crops: list[CropRecord] = field(default_factory=list)
    embeddings: list[EmbeddingRecord] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    model_batches: int = 0


def _decoded_and_done(
    work: Callable[[ImageRecord, Image.Image], R],
    records: Sequence[ImageRecord],
    threads: int,
    skipped: list[SkippedFile],
) -> Iterator[R]:
    """Each record's photo decoded and `work` run on it, on `threads` threads, results in order.

    A photo that does not decode goes to `skipped` instead.
    """

    def decode_then_work(record: ImageRecord) -> R | SkippedFile:
        try:
            pixels = decode_rgb(io.BytesIO(read_as_registered(record)))
        except (ImageDecodeError, OSError) as error:
            return SkippedFile(path=record.uri, reason=str(error))
        return work(record, pixels)  # outside the `try`: its own errors are not a bad photo

    for outcome in mapped_ahead(decode_then_work, records, threads):
        if isinstance(outcome, SkippedFile):
            skipped.append(outcome)
        else:
            yield outcome


def _with_pixels(record: ImageRecord, pixels: Image.Image) -> tuple[ImageRecord, Image.Image]:
    return record, pixels


def _batches(items: Iterator[T], size: int) -> Iterator[list[T]]:
    return iter(lambda: list(islice(items, size)), [])


def plan_stage(
    store: StoreWriter, images: Sequence[ImageRecord], signature: str, source: str, files: ObjectFiles | None = None
) -> list[ImageRecord]:
    """Bring the store in line with the files as they are now, and return the images that need model work.

    A file whose bytes changed leaves its old image (and crops and vectors) under its path: those
    are removed. An already indexed image seen under a new path gets its uri updated, without model
    work. Everything not yet indexed with `signature` is returned.
    """
    current_id_of = {record.uri: record.image_id for record in images}
    current_ids = set(current_id_of.values())
    replaced = [
        old_id
        for uri, old_ids in store.image_ids_by_uri(source).items()
        if uri in current_id_of
        for old_id in old_ids
        if old_id not in current_ids
    ]
    _delete_files(store.remove_images(replaced), files)
    stored = store.images_by_id([record.image_id for record in images])
    indexed = {image_id for image_id, record in stored.items() if record.index_signature == signature}
    moved = [
        stored[record.image_id].model_copy(update={"uri": record.uri})
        for record in images
        if record.image_id in indexed and stored[record.image_id].uri != record.uri
    ]
    store.upsert_images(moved)
    return [record for record in images if record.image_id not in indexed]


def detect_stage(
    images: Sequence[ImageRecord],
    detector: Detector,
    detector_id: str,
    settings: DetectionSettings,
    batch_size: int,
    decode_threads: int = 1,
) -> StageResult:
    """Boxes for every image as CropRecords (no files yet), `batch_size` images per forward pass."""
    result = StageResult()
    if settings.max_detections == 0:
        return result
    decoded = _decoded_and_done(_with_pixels, images, decode_threads, result.skipped)
    for batch in prefetched(_batches(decoded, batch_size)):
        found = detector.detect([pixels for _, pixels in batch], settings)
        result.model_batches += 1
        for (record, _), detections in zip(batch, found, strict=True):
            result.crops.extend(to_crop_records(record, detections, detector_id, settings))
    return result


def crop_stage(
    images: Sequence[ImageRecord],
    crops: Sequence[CropRecord],
    crops_dir: Path | str,
    padding: float,
    files: ObjectFiles | None = None,
    decode_threads: int = 1,
) -> StageResult:
    """Write every crop file (a local folder or an s3:// URI), decoding each parent once for all of its crops.

    Parents are cut and their crops saved on `decode_threads` threads; records come back in order.
    """
    crops_of = _crops_by_image(crops)
    result = StageResult()
    parents = [record for record in images if record.image_id in crops_of]

    def cut_and_save(record: ImageRecord, pixels: Image.Image) -> list[CropRecord]:
        return materialize_crops(pixels, crops_of[record.image_id], crops_dir, padding, files)

    for saved in _decoded_and_done(cut_and_save, parents, decode_threads, result.skipped):
        result.crops.extend(saved)
    return result


def embed_stage(
    images: Sequence[ImageRecord],
    crops: Sequence[CropRecord],
    embedder: Embedder,
    embedder_id: str,
    batch_size: int,
    files: ObjectFiles | None = None,
    decode_threads: int = 1,
) -> StageResult:
    """One vector per whole image and per crop, `batch_size` pictures per forward pass.

    A crop's vector is computed from its file, the picture a hit shows: cut from the decoded parent
    instead, scores moved (the world CLIP scored one red triangle 0.69 uncompressed, 0.74 as the
    JPEG) and indexes built before would mix two kinds of crop vectors. The small files decode on
    the decode threads, beside the model, so this costs no time; each thread also prepares (resizes
    and normalises) its image and crops, which one thread did too slowly for a GPU (8 ms per image
    and its 8 crops on the H200 machine).
    """
    result = StageResult()
    files = files or ObjectFiles()
    crops_of = _crops_by_image(crops)
    classes_of = {image_id: sorted({c.class_name for c in group}) for image_id, group in crops_of.items()}

    steps = image_embedding_steps(embedder)

    def prepared_with_crops(record: ImageRecord, pixels: Image.Image) -> tuple[list[ImageRecord | CropRecord], Any]:
        """An image and its crops, decoded and prepared for the model (on a decode thread).

        A crop file that fails to decode fails the chunk: it was just written.
        """
        own_crops = crops_of.get(record.image_id, [])
        pictures = [pixels, *(decode_rgb(files.open(crop.uri)) for crop in own_crops)]
        return [record, *own_crops], steps.prepare(pictures)

    groups = _decoded_and_done(prepared_with_crops, images, decode_threads, result.skipped)
    # Batches are joined on a thread of their own too, while the model embeds the one before.
    for items, batch in prefetched(_rebatched(groups, batch_size, steps.join)):
        vectors = steps.forward(batch)
        result.model_batches += 1
        for item, vector in zip(items, vectors, strict=True):
            result.embeddings.append(_embedding_record(item, vector, embedder_id, classes_of))
    return result


def _rebatched(
    groups: Iterator[tuple[list[T], Any]], size: int, join: Callable[[Sequence[Any]], Any]
) -> Iterator[tuple[list[T], Any]]:
    """Groups of prepared pictures (one image and its crops each) as batches of exactly `size` (the last smaller)."""
    items: list[T] = []
    parts: list[Any] = []
    for group_items, prepared in groups:
        items.extend(group_items)
        parts.append(prepared)
        while len(items) >= size:
            joined = join(parts)
            yield items[:size], joined[:size]
            items, parts = items[size:], ([joined[size:]] if len(items) > size else [])
    if items:
        yield items, join(parts)


@dataclass
class ChunkWork(StageResult):
    """What the model work of one chunk produced, ready to write, and the seconds each stage took."""

    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ChunkModels:
    """The loaded models a chunk's work runs, with the ids their records carry."""

    detector: Detector
    detector_id: str
    embedder: Embedder
    embedder_id: str


def load_chunk_models(config: ChunkConfig, detector_id: str, embedder_id: str) -> ChunkModels:
    """The models `config` names, loaded once per process: a worker keeps them for every chunk it gets."""
    return ChunkModels(
        load_detector(config.detector, config.device, config.precision),
        detector_id,
        load_embedder(config.embedder, config.device, config.precision),
        embedder_id,
    )


def model_stage(images: Sequence[ImageRecord], models: ChunkModels, config: ChunkConfig) -> ChunkWork:
    """Detect, crop and embed one chunk: the part of indexing that needs the models, and no database.

    It runs wherever the task runner puts it (this process, a Ray or Dask worker); the flow writes
    its result. A file one stage skips never reaches the next (nor is reported twice). `config`
    must be resolved for this machine (`config.on_this_machine`).
    """
    batching, files = config.batching, ObjectFiles(config.object_store)
    threads = batching.decode_threads or 1
    work = ChunkWork()
    started = time.perf_counter()
    detected = detect_stage(
        images, models.detector, models.detector_id, config.detection, batching.detect_batch_size or 1, threads
    )
    decodable = _without(images, detected.skipped)
    work.seconds["detect"], started = time.perf_counter() - started, time.perf_counter()
    cropped = crop_stage(decodable, detected.crops, config.crops_uri, config.detection.padding, files, threads)
    work.seconds["crop"], started = time.perf_counter() - started, time.perf_counter()
    embedded = embed_stage(
        _without(decodable, cropped.skipped),
        cropped.crops,
        models.embedder,
        models.embedder_id,
        batching.embed_batch_size,
        files,
        threads,
    )
    work.seconds["embed"] = time.perf_counter() - started
    work.crops, work.embeddings = cropped.crops, embedded.embeddings
    work.skipped = [item for result in (detected, cropped, embedded) for item in result.skipped]
    work.model_batches = detected.model_batches + embedded.model_batches
    return work


def _without(images: Sequence[ImageRecord], skipped: Sequence[SkippedFile]) -> list[ImageRecord]:
    bad = {item.path for item in skipped}
    return [image for image in images if image.uri not in bad]


def _embedding_record(
    item: ImageRecord | CropRecord, vector: np.ndarray, embedder_id: str, classes_of: dict[str, list[str]]
) -> EmbeddingRecord:
    if isinstance(item, ImageRecord):
        return EmbeddingRecord.of_image(item, vector.tolist(), embedder_id, classes_of.get(item.image_id, []))
    return EmbeddingRecord.of_crop(item, vector.tolist(), embedder_id)


def write_stage(
    store: StoreWriter,
    images: Sequence[ImageRecord],
    crops: Sequence[CropRecord],
    embeddings: Sequence[EmbeddingRecord],
    index_signature: str,
    embedder_id: str,
    embedder_spec: str,
    files: ObjectFiles | None = None,
) -> None:
    """Upsert a finished chunk. Images go last: an image marked indexed always has its crops and vectors."""
    embedded = {record.image_id for record in embeddings if record.kind == "image"}
    done = [record for record in images if record.image_id in embedded]
    store.upsert_crops(crops)
    store.upsert_embeddings(embeddings, embedder_id, embedder_spec)
    stale = store.remove_crops_except([record.image_id for record in done], [crop.crop_id for crop in crops])
    _delete_files(stale, files)
    crops_of = _crops_by_image(crops)
    now = datetime.now(UTC)
    store.upsert_images(
        [
            record.model_copy(
                update={
                    "caption": caption_for(crops_of.get(record.image_id, [])),
                    "index_signature": index_signature,
                    "indexed_at": now,
                }
            )
            for record in done
        ]
    )


def _delete_files(uris: Sequence[str], files: ObjectFiles | None) -> None:
    """Remove the crop files of rows the store just deleted."""
    files = files or ObjectFiles()
    for uri in uris:
        files.delete(uri)


def _crops_by_image(crops: Sequence[CropRecord]) -> dict[str, list[CropRecord]]:
    grouped: dict[str, list[CropRecord]] = defaultdict(list)
    for crop in crops:
        grouped[crop.image_id].append(crop)
    return grouped
