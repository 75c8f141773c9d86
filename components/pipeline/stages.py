"""The stages of indexing, each a plain function of records: plan, the models' work on a chunk, write.

Models and the store come in as arguments; records go in and out. A file that fails to decode
becomes a `SkippedFile` with its reason, and the chunk goes on without it. Reading, decoding,
preparing model input and writing crop files run on background threads, overlapping the models'
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
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from components.models.detector import Detection, Detector, load_detector
from components.models.embedder import Embedder, image_embedding_steps, load_embedder
from components.pipeline.crop_writer import CropFileWriter
from components.pipeline.crops import caption_for, encoded_crops, to_crop_records
from components.pipeline.images import ImageDecodeError, decode_rgb, read_as_registered
from components.pipeline.prefetch import mapped_ahead, prefetched
from components.store.objects import ObjectFiles
from components.store.writer import StoreWriter
from schemas.params import ChunkConfig
from schemas.records import CropRecord, EmbeddingRecord, ImageRecord, SkippedFile
from schemas.settings import WHOLE_FRAME_AREA_DEFAULT, DetectionSettings

T = TypeVar("T")


def _batches(items: Iterator[T], size: int) -> Iterator[list[T]]:
    return iter(lambda: list(islice(items, size)), [])


def plan_stage(
    store: StoreWriter,
    images: Sequence[ImageRecord],
    signature: str,
    source: str,
    files: ObjectFiles | None = None,
    whole_frame_area: float = WHOLE_FRAME_AREA_DEFAULT,
) -> list[ImageRecord]:
    """Bring the store in line with the files and settings as they are now, and return the images that need model work.

    A file whose bytes changed leaves its old image (and crops and vectors) under its path: those
    are removed. An already indexed image seen under a new path gets its uri updated, without model
    work. Crops covering at least `whole_frame_area` of their photo lose their vectors, also without
    model work; an image whose crop lacks a vector it now should have is indexed again. Everything
    not yet indexed with `signature` is returned.
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
    store.drop_whole_frame_vectors(whole_frame_area)
    lacking = store.images_with_crops_lacking_vectors(whole_frame_area) & indexed
    # Marked not indexed before any model work: a run killed while re-indexing them redoes it.
    store.upsert_images([stored[image_id].model_copy(update={"index_signature": ""}) for image_id in lacking])
    indexed -= lacking
    moved = [
        stored[record.image_id].model_copy(update={"uri": record.uri})
        for record in images
        if record.image_id in indexed and stored[record.image_id].uri != record.uri
    ]
    store.upsert_images(moved)
    return [record for record in images if record.image_id not in indexed]


@dataclass
class ChunkWork:
    """What the model work of one chunk produced, ready to write, which photos it had to drop, and its time.

    `seconds` has the forward passes' time (`detect`, `embed`) and the rest of the chunk's time
    (`waiting`: the models idle while photos were read and decoded, or crop files written).
    """

    crops: list[CropRecord] = field(default_factory=list)
    embeddings: list[EmbeddingRecord] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    model_batches: int = 0
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

    Each photo is read and decoded once. That one picture goes to the detector, and then, with its
    boxes, to the embedder (whole and cut into its crops) and to the crop-file writer threads.
    Reading and decoding, preparing model input and writing files all run on `decode_threads`
    threads each, beside the forward passes; detection runs a batch ahead of embedding. A photo
    that does not decode is skipped (reported once). The crops come back with their file uris,
    every file written: an image whose records are written has its crop files.

    It runs wherever the task runner puts it (this process, a Ray or Dask worker); the flow writes
    its result. `config` must be resolved for this machine (`config.on_this_machine`).
    """
    batching, detection = config.batching, config.detection
    threads = batching.decode_threads or 1
    work = ChunkWork(seconds={"detect": 0.0, "embed": 0.0})
    started = time.perf_counter()
    steps = image_embedding_steps(models.embedder)
    decoded = _decoded(images, threads, work.skipped)
    detected = prefetched(_detected(decoded, models, detection, batching.detect_batch_size or 1, work))
    unembedded: list[CropRecord] = []  # appended from the decode threads: list.append is atomic
    with CropFileWriter(ObjectFiles(config.object_store), threads) as writer:

        def prepared(found: _Found) -> tuple[list[_Embeddable], Any]:
            """A photo and its crops as model input, with what each vector stands for (on a decode thread).

            Each crop is cut from the one decode and encoded as its file's JPEG once; the bytes go to
            the writer threads, and the model sees those very bytes decoded, the picture a hit
            shows (the world CLIP ranks crops cut straight from the pixels visibly worse:
            docs/findings.md), without writing and reading a file between.
            """
            encoded = encoded_crops(found.pixels, found.crops, config.crops_uri, detection.padding)
            writer.submit([(crop.uri, data) for crop, data in encoded])
            classes = sorted({crop.class_name for crop in found.crops})
            # A crop nearly the whole photo keeps its row, file and class, not a vector: the photo's stands for it.
            own = [(crop, data) for crop, data in encoded if detection.embeds_crop(crop.area_fraction)]
            unembedded.extend(crop for crop, _ in encoded if not detection.embeds_crop(crop.area_fraction))
            embeddable = [(found.record, classes), *((crop, [crop.class_name]) for crop, _ in own)]
            pictures = [found.pixels, *(decode_rgb(io.BytesIO(data)) for _, data in own)]
            return embeddable, steps.prepare(pictures)

        groups = mapped_ahead(prepared, detected, threads)
        # Batches are joined on a thread of their own too, while the model embeds the one before.
        for items, batch in prefetched(_rebatched(groups, batching.embed_batch_size, steps.join)):
            forward_started = time.perf_counter()
            vectors = steps.forward(batch)
            work.seconds["embed"] += time.perf_counter() - forward_started
            work.model_batches += 1
            work.embeddings.extend(
                _embedding_record(item, vector, models.embedder_id) for item, vector in zip(items, vectors, strict=True)
            )
            work.crops.extend(item for item, _ in items if isinstance(item, CropRecord))
        writer.finish()
    work.crops.extend(unembedded)
    work.seconds["waiting"] = time.perf_counter() - started - work.seconds["detect"] - work.seconds["embed"]
    return work


@dataclass(frozen=True)
class _Found:
    """One decoded photo and the crops detection found in it (no files yet)."""

    record: ImageRecord
    pixels: Image.Image
    crops: list[CropRecord]


def _decoded(
    images: Sequence[ImageRecord], threads: int, skipped: list[SkippedFile]
) -> Iterator[tuple[ImageRecord, Image.Image]]:
    """Each photo read once (its bytes checked against its id) and decoded, on `threads` threads, in order.

    A photo that does not decode, or changed since it was registered, goes to `skipped` instead.
    """

    def decode(record: ImageRecord) -> tuple[ImageRecord, Image.Image] | SkippedFile:
        try:
            return record, decode_rgb(io.BytesIO(read_as_registered(record)))
        except (ImageDecodeError, OSError) as error:
            return SkippedFile(path=record.uri, reason=str(error))

    for outcome in mapped_ahead(decode, images, threads):
        if isinstance(outcome, SkippedFile):
            skipped.append(outcome)
        else:
            yield outcome


def _detected(
    decoded: Iterator[tuple[ImageRecord, Image.Image]],
    models: ChunkModels,
    settings: DetectionSettings,
    batch_size: int,
    work: ChunkWork,
) -> Iterator[_Found]:
    """Each decoded photo with its crops, `batch_size` photos per forward pass (none when no boxes are asked for)."""
    for batch in _batches(decoded, batch_size):
        if settings.max_detections == 0:
            found: list[list[Detection]] = [[] for _ in batch]
        else:
            detect_started = time.perf_counter()
            found = models.detector.detect([pixels for _, pixels in batch], settings)
            work.seconds["detect"] += time.perf_counter() - detect_started
            work.model_batches += 1
        for (record, pixels), detections in zip(batch, found, strict=True):
            yield _Found(record, pixels, to_crop_records(record, detections, models.detector_id, settings))


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


# What one vector stands for: a whole photo with the classes found in it, or a crop with its own.
_Embeddable = tuple[ImageRecord | CropRecord, list[str]]


def _embedding_record(embeddable: _Embeddable, vector: np.ndarray, embedder_id: str) -> EmbeddingRecord:
    item, classes = embeddable
    if isinstance(item, ImageRecord):
        return EmbeddingRecord.of_image(item, vector.tolist(), embedder_id, classes)
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
    """Upsert a finished chunk. Images go last: an image marked indexed always has its crops and their vectors
    (every crop's but those covering at least `--whole-frame-area` of their photo)."""
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
