"""The stages of indexing, each a plain function of records: plan, the models' work on a chunk, write.

Models and the store come in as arguments; records go in and out. A file that fails to decode
becomes a `SkippedFile` with its reason, and the chunk goes on without it. Reading, decoding,
preparing model input and writing crop files run on background threads, overlapping the models'
forward passes.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from components.models.detector import Detector, load_detector
from components.models.embedder import Embedder, EmbeddingSteps, image_embedding_steps, load_embedder
from components.pipeline.crop_writer import CropFileWriter
from components.pipeline.crops import caption_for, crops_root, decoded_crop_jpeg, encoded_crops, to_crop_records
from components.pipeline.images import ImageDecodeError, decode_rgb, read_as_registered
from components.pipeline.memory import give_back_freed_memory
from components.pipeline.prefetch import mapped_ahead, prefetched
from components.regions.region import Region, RegionSource
from components.regions.sources import deduplicated, region_of, run_sources, sources_beyond_the_detector
from components.store.objects import ObjectFiles, lies_under
from components.store.writer import StoreWriter
from schemas.machine import MachinePlan
from schemas.params import ChunkConfig
from schemas.records import DETECTOR_SOURCES, CropRecord, EmbeddingRecord, ImageRecord, SkippedFile
from schemas.settings import WHOLE_FRAME_AREA_DEFAULT, DetectionSettings

T = TypeVar("T")
logger = logging.getLogger(__name__)


def _batches(items: Iterator[T], size: int) -> Iterator[list[T]]:
    return iter(lambda: list(islice(items, size)), [])


@dataclass
class IndexPlan:
    """What a run has to do: photos to detect (and embed with every embedder), photos whose regions beyond the
    detector's change (their stored boxes stand), and photos one embedder lacks."""

    detect: list[ImageRecord] = field(default_factory=list)
    recut: list[ImageRecord] = field(default_factory=list)
    embed: dict[str, list[ImageRecord]] = field(default_factory=dict)
    upgraded: int = 0  # photos whose signature from before several embedders was rewritten, without model work
    removed: int = 0  # photos that left their folder: removed with their crops, vectors and crop files


@dataclass(frozen=True)
class FolderListing:
    """A folder source's files as listed now (`uris`, readable or not), which the index mirrors: a photo
    recorded under `folder` whose file is no longer listed left the folder, and leaves the index."""

    folder: str
    uris: frozenset[str]

    def left(self, uri: str) -> bool:
        return uri.startswith(self.folder.rstrip(os.sep) + os.sep) and uri not in self.uris


def plan_stage(
    store: StoreWriter,
    images: Sequence[ImageRecord],
    signature: str,
    source: str,
    files: ObjectFiles | None = None,
    whole_frame_area: float = WHOLE_FRAME_AREA_DEFAULT,
    embedder_ids: Sequence[str] = (),
    legacy_signatures: Collection[str] = (),
    crops_uri: str | None = None,
    detector_signature: str = "",
    mirrored: FolderListing | None = None,
) -> IndexPlan:
    """Bring the store in line with the files and settings as they are now, and say which model work is left.

    A file whose bytes changed leaves its old image (and crops and vectors) under its path: those
    are removed. So is a photo that left the folder `mirrored` lists (none are, without it: a zip, a
    limited listing, `--keep-missing`), unless its bytes are still there under another name. An
    already indexed image seen under a new path gets its uri updated, without model work. Crops
    covering at least `whole_frame_area` of their photo lose their vectors, also without model
    work; an image whose crop lacks a vector it now should have is indexed again. An image
    carrying one of `legacy_signatures` (the index's embedders under the older signature) was
    detected with these settings: its signatures are rewritten in place, as the detector's alone.
    Everything not detected with `signature` is to be detected (and embedded by every embedder); of
    the rest, each photo an embedder of `embedder_ids` has no vector of is to be embedded by it, from
    its stored crops. The removed crops' files are deleted where they lie under `crops_uri`, the crop
    store this run owns.

    Of the photos not indexed with `signature`, those whose detector's boxes were found as this run
    would find them (`detector_signature`) are re-cut: only the region sources beyond the detector
    (proposals, tiles) run, and only regions not stored are cut and embedded (adding proposals to an
    index detects nothing again). A photo some embedder of `embedder_ids` has no vector of is
    detected instead: its stored crops would lack that embedder's vectors.
    """
    current_id_of = {record.uri: record.image_id for record in images}
    current_ids = set(current_id_of.values())
    recorded = store.image_ids_by_uri(source)
    replaced = [
        old_id
        for uri, old_ids in recorded.items()
        if uri in current_id_of
        for old_id in old_ids
        if old_id not in current_ids
    ]
    left = {
        old_id
        for uri, old_ids in recorded.items()
        if mirrored is not None and mirrored.left(uri)
        for old_id in old_ids
        if old_id not in current_ids
    }
    _delete_files(store.remove_images([*replaced, *sorted(left)]), files, crops_uri)
    stored = store.images_by_id([record.image_id for record in images])
    legacy = [record for record in stored.values() if record.index_signature in legacy_signatures]
    # Rewritten as made by the detector alone (they knew no other source): with proposals or tiles asked, re-cut below.
    upgraded = {"index_signature": detector_signature or signature, "detector_signature": detector_signature}
    stored |= {record.image_id: record.model_copy(update=upgraded) for record in legacy}
    store.upsert_images([stored[record.image_id] for record in legacy])
    indexed = {image_id for image_id, record in stored.items() if record.index_signature == signature}
    store.drop_whole_frame_vectors(whole_frame_area)
    store.fill_region_sources()
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
    detected = [record for record in images if record.image_id in indexed]
    embed = {}
    embedded_by_all: set[str] | None = None
    for embedder_id in embedder_ids:
        have = store.image_ids_embedded_by(embedder_id)
        embedded_by_all = have if embedded_by_all is None else embedded_by_all & have
        if missing := [record for record in detected if record.image_id not in have]:
            embed[embedder_id] = missing
    boxes_stand = {
        image_id
        for image_id, record in stored.items()
        if detector_signature
        and image_id not in indexed
        and image_id not in lacking
        and (record.detector_signature or record.index_signature) == detector_signature
        and (embedded_by_all is None or image_id in embedded_by_all)
    }
    recut = [record for record in images if record.image_id in boxes_stand]
    detect = [record for record in images if record.image_id not in indexed and record.image_id not in boxes_stand]
    return IndexPlan(detect=detect, recut=recut, embed=embed, upgraded=len(legacy), removed=len(left))


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
    detector_batches: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    # Re-cut photos (`model_stage(recut=True)`): image id -> every crop it keeps, stored and new.
    recut: dict[str, list[CropRecord]] = field(default_factory=dict)
    machine: MachinePlan | None = None  # what the models ran on, for the run's report


@dataclass(frozen=True)
class ChunkModels:
    """The loaded models a chunk's work runs, with the ids their records carry (embedder id -> embedder),
    and the machine plan they were loaded for, whose threads and detector batch the work uses."""

    detector: Detector | None
    detector_id: str
    embedders: Mapping[str, Embedder]
    machine: MachinePlan


def load_chunk_models(
    config: ChunkConfig, machine: MachinePlan, detector_id: str, embedder_ids: Sequence[str], detect: bool = True
) -> ChunkModels:
    """The models `config` names, loaded once per process for `machine`: a worker keeps them for every chunk.

    `embedder_ids` pair with `config.embedders`; without `detect` no detector is loaded (embedding stored crops).
    """
    detector = load_detector(config.detector, machine, config.model_roots, config.vocabulary) if detect else None
    embedders = {
        embedder_id: load_embedder(spec, machine, config.model_roots)
        for embedder_id, spec in zip(embedder_ids, config.embedders, strict=True)
    }
    return ChunkModels(detector, detector_id, embedders, machine)


def model_stage(
    images: Sequence[ImageRecord],
    models: ChunkModels,
    config: ChunkConfig,
    stored_crops: Mapping[str, list[CropRecord]] | None = None,
    recut: bool = False,
) -> ChunkWork:
    """Find regions, crop and embed one chunk: the part of indexing that needs the models, and no database.

    Each photo is read and decoded once. That one picture goes to the run's region sources (the
    detector, proposals, tiles: `components.regions.sources.run_sources`), and then, with their regions, to
    every embedder (whole and cut into its crops) and to the crop-file writer threads. Reading and
    decoding, preparing model input and writing files all run on `decode_threads` threads each,
    beside the forward passes; finding regions runs a batch ahead of embedding. A photo
    that does not decode is skipped (reported once). The crops come back with their file uris,
    every file written: an image whose records are written has its crops' files.

    Given `stored_crops` (image id -> its crops, as the index holds them), the photos were detected
    before: no detector runs, their crops are cut from the stored boxes as they were then and
    embedded, no crop file is written, and only vectors come back (an embedder added to an index).

    Given `stored_crops` and `recut`, the detector's stored boxes stand and the other sources
    (proposals, tiles) run again: only their regions the index does not hold are cut, written and
    embedded, and each photo comes back in `ChunkWork.recut` with every crop it keeps (proposals or
    tiles added to an index: no detection, no vector made twice).

    It runs wherever the task runner puts it (this process, a Ray or Dask worker); the flow writes
    its result. Its threads and detector batch are the ones `models.machine` decided on.
    """
    batching, detection = config.batching, config.detection
    threads = models.machine.decode_threads
    work = ChunkWork(seconds={"detect": 0.0, "embed": 0.0}, machine=models.machine)
    steps = _every_embedders_steps(models.embedders)
    decoded = _decoded(images, threads, work.skipped)
    batch_size = models.machine.detect_batch_size
    if stored_crops is None:
        sources = run_sources(detection, models.detector, models.detector_id)
        detected = prefetched(_with_regions(decoded, sources, detection, batch_size, work))
    elif recut:
        sources = sources_beyond_the_detector(detection)
        detected = prefetched(_with_regions(decoded, sources, detection, batch_size, work, stored_crops))
    else:
        detected = (_Found(record, pixels, stored_crops.get(record.image_id, [])) for record, pixels in decoded)
    writes_files = stored_crops is None or recut
    unembedded: list[CropRecord] = []  # appended from the decode threads: list.append is atomic
    root = crops_root(config.crops_uri)
    with CropFileWriter(ObjectFiles(config.object_store), threads) as writer:

        def prepared(found: _Found) -> tuple[list[_Embeddable], Any]:
            """A photo and its crops as model input, with what each vector stands for (on a decode thread).

            Each crop is cut from the one decode and encoded as its file's JPEG once; the bytes go to
            the writer threads, and the models see those very bytes decoded, the picture a hit
            shows (the world CLIP ranks crops cut straight from the pixels visibly worse:
            docs/findings.md), without writing and reading a file between. A re-cut photo's own
            vector, and its crops' the index holds, are not made again.
            """
            cut = [crop for crop in found.crops if crop.crop_id not in found.stored]
            encoded = encoded_crops(found.pixels, cut, root, detection.padding)
            if writes_files:
                writer.submit([(crop.uri, data) for crop, data in encoded])
            # A crop nearly the whole photo keeps its row, file and class, not a vector: the photo's stands for it.
            own = [(crop, data) for crop, data in encoded if detection.embeds_crop(crop.area_fraction)]
            unembedded.extend(crop for crop, _ in encoded if not detection.embeds_crop(crop.area_fraction))
            embeddable: list[_Embeddable] = [(crop, [crop.class_name]) for crop, _ in own]
            pictures = [decoded_crop_jpeg(data) for _, data in own]
            if recut:
                work.recut[found.record.image_id] = [*(c for c in found.crops if c.crop_id in found.stored), *cut]
            else:
                classes = sorted({crop.class_name for crop in found.crops if crop.class_name})  # others name nothing
                embeddable.insert(0, (found.record, classes))
                pictures.insert(0, found.pixels)
            return embeddable, steps.prepare(pictures) if pictures else None

        groups = mapped_ahead(prepared, detected, threads)
        # Batches are joined on a thread of their own too, while the models embed the one before.
        for items, batch in prefetched(_rebatched(groups, batching.embed_batch_size, steps.join)):
            for embedder_id, vectors in steps.forward(batch, work):
                work.embeddings.extend(
                    _embedding_record(item, vector, embedder_id) for item, vector in zip(items, vectors, strict=True)
                )
            if writes_files:
                work.crops.extend(item for item, _ in items if isinstance(item, CropRecord))
        writer.finish()
    if writes_files:
        work.crops.extend(unembedded)
    give_back_freed_memory()  # the chunk's pictures and activations: or each chunk's holes add to the next's peak
    return work


class _PreparedForEach:
    """One batch as every embedder's own model input, sliced together (`batch[:n]` slices each)."""

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = tuple(parts)

    def __getitem__(self, index: slice) -> _PreparedForEach:
        return _PreparedForEach([part[index] for part in self.parts])


@dataclass(frozen=True)
class _EveryEmbeddersSteps:
    """The embedding steps of several embedders run as one: each picture prepared for each, then each forward pass."""

    steps: Mapping[str, EmbeddingSteps]

    def prepare(self, pictures: Sequence[Image.Image]) -> _PreparedForEach:
        return _PreparedForEach([step.prepare(pictures) for step in self.steps.values()])

    def join(self, groups: Sequence[_PreparedForEach]) -> _PreparedForEach:
        return _PreparedForEach(
            [step.join([group.parts[i] for group in groups]) for i, step in enumerate(self.steps.values())]
        )

    def forward(self, batch: _PreparedForEach, work: ChunkWork) -> Iterator[tuple[str, np.ndarray]]:
        """Each embedder's vectors of the batch, its forward pass timed and counted in `work`."""
        for (embedder_id, step), part in zip(self.steps.items(), batch.parts, strict=True):
            forward_started = time.perf_counter()
            vectors = step.forward(part)
            work.seconds["embed"] += time.perf_counter() - forward_started
            work.model_batches += 1
            yield embedder_id, vectors


def _every_embedders_steps(embedders: Mapping[str, Embedder]) -> _EveryEmbeddersSteps:
    return _EveryEmbeddersSteps({embedder_id: image_embedding_steps(model) for embedder_id, model in embedders.items()})


@dataclass(frozen=True)
class _Found:
    """One decoded photo and the crops its region sources found in it (no files yet), with those the index holds."""

    record: ImageRecord
    pixels: Image.Image
    crops: list[CropRecord]
    # Ids of crops the index holds with their vectors and files already (a re-cut photo's): not cut again.
    stored: frozenset[str] = frozenset()


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


def _with_regions(
    decoded: Iterator[tuple[ImageRecord, Image.Image]],
    sources: Sequence[RegionSource],
    settings: DetectionSettings,
    batch_size: int,
    work: ChunkWork,
    stored: Mapping[str, list[CropRecord]] | None = None,
) -> Iterator[_Found]:
    """Each decoded photo with its crops: every source asked for the regions of `batch_size` photos at a time.

    Their seconds count as `detect` (finding regions); a source that runs a model counts a batch per call.
    Given `stored` crops, each photo's stored detector crops come first, as they are (`_recut`).
    """
    for batch in _batches(decoded, batch_size):
        pictures = [pixels for _, pixels in batch]
        # Per photo, per source: a region found by two sources is stored once, the earlier source's.
        found: list[list[Sequence[Region]]] = [[] for _ in batch]
        for source in sources:
            started = time.perf_counter()
            for regions, more in zip(found, source.regions(pictures), strict=True):
                regions.append(more)
            work.seconds["detect"] += time.perf_counter() - started
            if source.runs_a_model:
                work.model_batches += 1
                work.detector_batches += 1
        for (record, pixels), regions in zip(batch, found, strict=True):
            if stored is None:
                yield _Found(record, pixels, to_crop_records(record, deduplicated(regions), settings))
            else:
                yield _recut(record, pixels, stored.get(record.image_id, []), regions, settings)


def _recut(
    record: ImageRecord,
    pixels: Image.Image,
    stored: Sequence[CropRecord],
    regions: Sequence[Sequence[Region]],
    settings: DetectionSettings,
) -> _Found:
    """A photo's stored detector crops as they are, then the other sources' regions not found twice (as a
    fresh run keeps them: `deduplicated` with the detector's boxes first); those stored already are marked."""
    boxes = [crop for crop in stored if crop.source in DETECTOR_SOURCES]
    found = deduplicated([[region_of(crop) for crop in boxes], *regions])[len(boxes) :]
    crops = [*boxes, *to_crop_records(record, found, settings)]
    have = {crop.crop_id for crop in stored}
    return _Found(record, pixels, crops, frozenset(crop.crop_id for crop in crops if crop.crop_id in have))


def _rebatched(
    groups: Iterator[tuple[list[T], Any]], size: int, join: Callable[[Sequence[Any]], Any]
) -> Iterator[tuple[list[T], Any]]:
    """Groups of prepared pictures (one image and its crops each) as batches of exactly `size` (the last smaller)."""
    items: list[T] = []
    parts: list[Any] = []
    for group_items, prepared in groups:
        if not group_items:  # a re-cut photo with no new region: nothing to embed
            continue
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
        return EmbeddingRecord.of_image(item, vector, embedder_id, classes)
    return EmbeddingRecord.of_crop(item, vector, embedder_id)


def write_stage(
    store: StoreWriter,
    images: Sequence[ImageRecord],
    crops: Sequence[CropRecord],
    embeddings: Sequence[EmbeddingRecord],
    index_signature: str,
    embedder_specs: Mapping[str, str],
    files: ObjectFiles | None = None,
    crops_uri: str | None = None,
    detector_signature: str = "",
    recut: Mapping[str, Sequence[CropRecord]] | None = None,
) -> None:
    """Upsert a finished chunk. Images go last: an image marked indexed always has its crops and their vectors
    of every embedder (every crop's but those covering at least `--whole-frame-area` of their photo).

    A re-cut photo (`recut`: image id -> every crop it keeps) is done too: its new crops and their
    vectors are among `crops` and `embeddings`, and its stored crops it no longer keeps go.
    """
    recut = recut or {}
    embedded = {record.image_id for record in embeddings if record.kind == "image"}
    done = [record for record in images if record.image_id in embedded or record.image_id in recut]
    # A stored photo detected again is marked unindexed before its crops change: killed half way, it
    # must not pass on the next run for one whose stored boxes stand (and be re-cut from the new ones).
    redetected = store.images_by_id([record.image_id for record in done if record.image_id not in recut])
    unmarked = {"index_signature": "", "detector_signature": ""}
    store.upsert_images(
        [
            record.model_copy(update=unmarked)
            for record in redetected.values()
            if record.index_signature or record.detector_signature
        ]
    )
    store.upsert_crops(crops)
    write_vectors_stage(store, embeddings, embedder_specs)
    # An embedder added while this run waited to write holds the photos' older vectors: they go, so
    # the next run's plan embeds them with it (a photo that has its own vector must have its crops').
    store.remove_vectors_of_images([record.image_id for record in done], keep_embedders=embedder_specs)
    kept = [*crops, *(crop for held in recut.values() for crop in held)]
    stale = store.remove_crops_except([record.image_id for record in done], [crop.crop_id for crop in kept])
    _delete_files(stale, files, crops_uri)
    crops_of = _crops_by_image(crops) | {image_id: list(held) for image_id, held in recut.items()}
    now = datetime.now(UTC)
    store.upsert_images(
        [
            record.model_copy(
                update={
                    "caption": caption_for(crops_of.get(record.image_id, [])),
                    "index_signature": index_signature,
                    "detector_signature": detector_signature,
                    "indexed_at": now,
                }
            )
            for record in done
        ]
    )
    give_back_freed_memory()  # the rows built for the upserts, and LanceDB's buffers


def write_vectors_stage(
    store: StoreWriter, embeddings: Sequence[EmbeddingRecord], embedder_specs: Mapping[str, str]
) -> None:
    """Upsert each embedder's vectors into its own table: one commit per embedder, a photo's and its crops' together."""
    by_embedder: dict[str, list[EmbeddingRecord]] = defaultdict(list)
    for record in embeddings:
        by_embedder[record.model].append(record)
    for embedder_id, records in by_embedder.items():
        store.upsert_embeddings(records, embedder_id, embedder_specs[embedder_id])


def _delete_files(uris: Sequence[str], files: ObjectFiles | None, crops_uri: str | None) -> None:
    """Remove the crop files of rows the store just deleted, those under `crops_uri` alone (None: none).

    The uris come from the database, which a run may not have written (a planted or unzipped one
    can name any file): a file is deleted only where this run's own crop store holds it.
    """
    if crops_uri is None:
        return
    files, root = files or ObjectFiles(), crops_root(crops_uri)
    for uri in uris:
        if lies_under(uri, root):
            files.delete(uri)
        else:
            logger.warning("left %s in place: a crop row named it, but it is outside the crop store %s", uri, root)


def _crops_by_image(crops: Sequence[CropRecord]) -> dict[str, list[CropRecord]]:
    grouped: dict[str, list[CropRecord]] = defaultdict(list)
    for crop in crops:
        grouped[crop.image_id].append(crop)
    return grouped
