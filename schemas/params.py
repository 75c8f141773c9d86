"""Typed parameters of the index and query flows.

Every layer shares these: the CLI builds them from flags, the Prefect UI renders them as forms,
components take them as arguments. A bad value fails here, before any work starts.
"""

from __future__ import annotations

import hashlib
import json
import typing
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo

from schemas.flat import FlatParams
from schemas.settings import (
    PRECISION_HELP,
    BatchSettings,
    Checksum,
    DetectionSettings,
    Device,
    ObjectStoreSettings,
    Precision,
    RunnerSettings,
    SearchSettings,
)

COCO_VAL2017_URL = "http://images.cocodataset.org/zips/val2017.zip"
COCO_ANNOTATIONS_URL = "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"
# Published checksums of well-known sources, used when the caller gives none.
KNOWN_CHECKSUMS = {
    COCO_VAL2017_URL: "md5:442b8da7639aecaf257c1dceb8ba8c80",
    COCO_ANNOTATIONS_URL: "md5:f4bbac642086de4f52a3fdda2de5fa2c",
}
KNOWN_SOURCE_NAMES = {COCO_VAL2017_URL: "coco-val2017"}

DEFAULT_DETECTOR = "yolov10x.pt"
DEFAULT_EMBEDDER = "openai/clip-vit-base-patch32"
DEFAULT_DATA_DIR = Path("data")
DEFAULT_WRITER_LIMIT = "cropsearch-index-writer"
# Where exact search passes a 50 ms query budget on a 2-core CPU: below it an ANN index costs its
# build and buys nothing (`make bench` times exact and ANN search at several sizes).
VECTOR_INDEX_MIN_ROWS = 20_000


class IndexParams(FlatParams):
    """Everything one `index-coco` run needs: where images come from, where results go, which models."""

    source: str = Field(
        COCO_VAL2017_URL, description="an http(s) URL of a zip, a local .zip file, or a local folder of images"
    )
    source_name: str | None = Field(
        None, description="label stored with each image; defaults to coco-val2017 or the folder/zip name"
    )
    checksum: Checksum = Field(
        None, description="expected 'md5:<hex>' or 'sha256:<hex>' of a downloaded zip (known for COCO val2017)"
    )
    limit: int | None = Field(None, ge=1, description="index only the first N images, in a stable order")
    keep_missing: bool = Field(
        False,
        description="keep the photos that left a folder source in the index (a removable drive's); by default the "
        "index mirrors the folder, and a photo gone from it is removed with its crops and vectors",
    )
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="folder for downloads, extracted images and crop files")
    db_uri: str | None = Field(None, description="LanceDB folder or s3:// URI; defaults to <data_dir>/lancedb")
    crops_uri: str | None = Field(
        None, description="folder or s3:// URI the crop files go to; defaults to <data_dir>/crops"
    )
    detector: str | None = Field(
        None,
        description=f"YOLO weights: an ultralytics name or a local .pt path; none: the one the index was made with "
        f"({DEFAULT_DETECTOR} for a new index). An open-vocabulary YOLOE (e.g. yoloe-11s-seg-pf.pt, thousands of "
        "classes) stores its boxes as the region source open-vocabulary",
    )
    vocabulary: str | None = Field(
        None,
        description="the words a YOLOE detector looks for instead of its own classes: a .npz file of their "
        "prompt embeddings, saved once by `cropsearch vocabulary` (--classes then keeps some of them)",
    )
    embedder: str | None = Field(
        None,
        description=f"CLIP model (a Hugging Face id or a local folder) to add to the index's embedders; none keeps "
        f"the ones it has ({DEFAULT_EMBEDDER} for a new index). Every embedder of the index embeds new photos",
    )
    device: Device = Field("auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    precision: Precision = Field("auto", description=f"numeric precision of the models: {PRECISION_HELP}")
    batching: BatchSettings = Field(default_factory=BatchSettings)
    vector_index_min_rows: int = Field(
        VECTOR_INDEX_MIN_ROWS,
        ge=0,
        description="build the approximate-nearest-neighbour index once the embeddings reach this many rows "
        "(below it exact search is fast enough and an index would only cost its build)",
    )
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    compact: bool = Field(
        True, description="compact the tables' small fragments (one per chunk write) at the end of the run"
    )
    writer_limit: str | None = Field(
        DEFAULT_WRITER_LIMIT,
        description="Prefect global concurrency limit held while planning and writing, so index runs on one "
        "server write one at a time (created by `cropsearch stack up`; runs go unguarded where it does not exist)",
    )
    object_store: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)
    detection: DetectionSettings = Field(default_factory=DetectionSettings)

    @field_validator("source", "detector", "embedder", "vocabulary")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @property
    def resolved_db_uri(self) -> str:
        return self.db_uri or str(self.data_dir / "lancedb")

    @property
    def resolved_detector(self) -> str:
        """The detector a run loads, once `with_the_index_detector` has filled in the index's (else the default)."""
        return self.detector or DEFAULT_DETECTOR

    def with_the_index_detector(self, recipe: IndexRecipe | None) -> IndexParams:
        """These parameters with the detector (and its vocabulary) the index was made with, where none is named."""
        if self.detector is not None or recipe is None:
            return self
        return self.model_copy(update={"detector": recipe.detector, "vocabulary": self.vocabulary or recipe.vocabulary})

    @property
    def resolved_crops_uri(self) -> str:
        return self.crops_uri or str(self.data_dir / "crops")

    @property
    def resolved_checksum(self) -> str | None:
        return self.checksum or KNOWN_CHECKSUMS.get(self.source)

    @property
    def resolved_source_name(self) -> str:
        if self.source_name:
            return self.source_name
        if self.source in KNOWN_SOURCE_NAMES:
            return KNOWN_SOURCE_NAMES[self.source]
        stem = self.source.rstrip("/").rsplit("/", 1)[-1]
        return stem.removesuffix(".zip") or "images"


class IndexRecipe(BaseModel):
    """How an index was last made: its detector, the detector's vocabulary, and the detection and region
    settings. Recorded by every index run; a run that names no detector takes the index's, and the CLI
    takes every recorded setting its command line does not name (`cropsearch index` on an index keeps making it
    the same way)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detector: str
    vocabulary: str | None = None
    detection: DetectionSettings

    def flat(self) -> dict[str, object]:
        """As `IndexParams` flat fields."""
        return {"detector": self.detector, "vocabulary": self.vocabulary, **self.detection.model_dump()}

    def changes_to(self, other: IndexRecipe) -> dict[str, tuple[object, object]]:
        """Flat field -> (this recipe's value, the other's), for each that differs."""
        theirs = other.flat()
        return {name: (value, theirs[name]) for name, value in self.flat().items() if theirs[name] != value}


class ChunkConfig(BaseModel):
    """What a chunk's model work needs, made once per run from its `IndexParams`, the same for every worker.

    Local paths are absolute, so a worker in another working directory (Ray, Dask) finds the same
    files. Device, precision and the batch and thread defaults stay as asked: each worker resolves
    them for its own hardware once (`components.pipeline.config.machine_for`), since a cluster
    worker's GPU is not the flow host's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    detector: str
    vocabulary: str | None = Field(None, description="the detector's vocabulary file, if it is given one")
    embedders: list[str] = Field(description="every embedder a chunk's photos and crops are embedded with")
    device: Device
    precision: Precision
    detection: DetectionSettings
    batching: BatchSettings
    crops_uri: str
    object_store: ObjectStoreSettings
    model_roots: list[Path] | None = Field(
        None, description="a deployed run's model roots: local models open only inside them (None: anywhere)"
    )


class QueryParams(FlatParams):
    """How a query is answered. The query itself (text or image) is given beside these."""

    search: SearchSettings = Field(default_factory=SearchSettings)
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="folder for rendered result grids")
    db_uri: str | None = Field(None, description="LanceDB folder or s3:// URI; defaults to <data_dir>/lancedb")
    embedder: str | None = Field(
        None, description="CLIP model to encode the query; defaults to the one the index was built with"
    )
    device: Device = Field("auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    precision: Precision = Field("auto", description=f"numeric precision of the query encoder: {PRECISION_HELP}")
    render: bool = Field(True, description="write a PNG grid of the hits under <data_dir>/queries")
    object_store: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)

    @property
    def resolved_db_uri(self) -> str:
        return self.db_uri or str(self.data_dir / "lancedb")


# The synthetic world's trained models, committed with the code (see world/README.md).
WORLD_DIR = Path(__file__).resolve().parents[1] / "world"
WORLD_DETECTOR = WORLD_DIR / "detector.pt"
WORLD_EMBEDDER = WORLD_DIR / "clip"
WORLD_IMAGE_SIZE = 256  # the scenes' size, and the detector's training size
# The region sources `cropsearch eval --unknown-classes` compares, one index each (their index settings are
# `components.evaluation.regions.REGION_SOURCES`): a new source is one more name here and one entry there.
RegionSourceName = Literal["whole", "detector", "tiles", "proposals"]
REGION_SOURCE_NAMES: tuple[RegionSourceName, ...] = typing.get_args(RegionSourceName)


class EvalParams(FlatParams):
    """One retrieval evaluation: which benchmark, which models, which index settings to compare."""

    benchmark: Literal["coco", "world"] = Field(
        "coco", description="coco: val2017 with its annotations; world: generated scenes with exact boxes, offline"
    )
    source: str = Field(COCO_VAL2017_URL, description="coco: the val2017 images (URL, zip or folder)")
    annotations: str = Field(
        COCO_ANNOTATIONS_URL, description="coco: annotations_trainval2017 (URL, zip or folder holding annotations/)"
    )
    limit: int | None = Field(None, ge=1, description="coco: evaluate on the first N images only")
    captions_per_image: int = Field(1, ge=0, le=5, description="coco: caption queries per image (COCO has ~5)")
    world_scenes: int = Field(300, ge=10, le=100_000, description="world: how many held-out scenes to generate")
    world_seed: int = Field(1_000_000, ge=0, description="world: seed of the first scene (training used 0..)")
    detector: str | None = Field(None, description="YOLO weights; default yolov10x.pt (coco) or the world's own")
    embedder: str | None = Field(None, description="CLIP model; default openai/clip-vit-base-patch32 or the world's")
    embedders: list[str] = Field(
        default_factory=list,
        description="CLIP models to compare side by side over the same detections (one index, a vector table "
        "each), e.g. A,B; default: --embedder alone",
    )
    paddings: list[float] = Field(
        default_factory=lambda: [0.0], description="crop paddings to compare (one index each)"
    )
    max_detections: list[int] = Field(
        default_factory=lambda: [20], description="max boxes per image to compare (one index each)"
    )
    confidence: float = Field(0.25, ge=0.0, le=1.0, description="minimum detection confidence")
    image_size: int | None = Field(
        None, ge=32, le=4096, description="detector input size; default 640 (coco) or 256 (world, as trained)"
    )
    unknown_classes: list[str] = Field(
        default_factory=list,
        description="classes the detector is made unable to name (its boxes of them are dropped before crops are "
        "cut, as a COCO detector drops what it has no name for), in every index of the run; each of "
        "--region-sources then gets a fresh index, scored on 'a small <class>' queries for named and unnamed "
        "classes side by side, with its index time, rows and disk",
    )
    region_sources: list[RegionSourceName] = Field(
        default_factory=lambda: list(REGION_SOURCE_NAMES),
        description="with --unknown-classes, the region sources compared (an index each): whole (whole photos "
        "only), detector (whole photos + detector crops), tiles (whole photos + detector crops + tiles 2,3), "
        "proposals (whole photos + detector crops + the default class-agnostic proposals)",
    )
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="downloads, indexes (under eval/) and the report")
    device: Device = Field("auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")

    @property
    def resolved_detector(self) -> str:
        return self.detector or (DEFAULT_DETECTOR if self.benchmark == "coco" else str(WORLD_DETECTOR))

    @property
    def resolved_embedder(self) -> str:
        return self.embedder or (DEFAULT_EMBEDDER if self.benchmark == "coco" else str(WORLD_EMBEDDER))

    @property
    def resolved_embedders(self) -> list[str]:
        """The embedders compared, the first indexing the benchmark and the others embedding its crops."""
        return list(dict.fromkeys(self.embedders)) or [self.resolved_embedder]

    @property
    def resolved_image_size(self) -> int:
        return self.image_size or (640 if self.benchmark == "coco" else WORLD_IMAGE_SIZE)

    @field_validator("paddings")
    @classmethod
    def _paddings_in_range(cls, values: list[float]) -> list[float]:
        if not values or any(not 0.0 <= v <= 1.0 for v in values):
            raise ValueError("give one or more paddings between 0 and 1")
        return values

    @field_validator("max_detections")
    @classmethod
    def _max_detections_in_range(cls, values: list[int]) -> list[int]:
        if not values or any(not 1 <= v <= 1000 for v in values):
            raise ValueError("give one or more max_detections between 1 and 1000")
        return values

    @field_validator("unknown_classes")
    @classmethod
    def _class_names_given_once(cls, values: list[str]) -> list[str]:
        names = [value.strip() for value in values]
        if any(not name for name in names):
            raise ValueError("class names must not be empty")
        return list(dict.fromkeys(names))

    @field_validator("region_sources")
    @classmethod
    def _some_region_source(cls, values: list[RegionSourceName]) -> list[RegionSourceName]:
        if not values:
            raise ValueError(f"give one or more of {', '.join(REGION_SOURCE_NAMES)}")
        return list(dict.fromkeys(values))


MAX_QUERY_TEXT_CHARS = 1000


class QueryInput(BaseModel):
    """What to search for: exactly one of a text or an image path."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str | None = Field(None, description="what to look for, in words (give this or image)")
    image: Path | None = Field(None, description="path of a photo to find similar ones (give this or text)")

    @field_validator("text")
    @classmethod
    def _text_is_usable(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError("text must not be empty")
        if len(value) > MAX_QUERY_TEXT_CHARS:
            raise ValueError(f"text is {len(value)} characters; the limit is {MAX_QUERY_TEXT_CHARS}")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> QueryInput:
        if (self.text is None) == (self.image is None):
            raise ValueError("give exactly one of text or image")
        return self


def form_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A parameter model's fields as flags and forms list them: flat, in declaration order."""
    return model.flat_fields() if issubclass(model, FlatParams) else dict(model.model_fields)


def signature_of(detector_id: str, settings: DetectionSettings) -> str:
    """Hash of the detector and detection settings that decide an image's crops; equal signature = nothing to redetect.

    Embedders are left out: each one's vectors are kept apart, and each run's plan finds the photos an
    embedder has not embedded yet. So is which crops have vectors (`whole_frame_area`): each run's
    plan applies it to stored crops.
    """
    return _signature({"v": 2, "detector": detector_id, "detection": settings.fingerprint()})


def detector_signature_of(detector_id: str, settings: DetectionSettings) -> str:
    """The signature of the detector's boxes alone: equal, and a photo's regions beyond them (proposals, tiles)
    can be cut again from its stored boxes, with no detection (`signature_of` of the settings without them)."""
    return signature_of(detector_id, settings.detector_only())


def legacy_signature_of(detector_id: str, embedder_id: str, settings: DetectionSettings) -> str:
    """The signature indexes made before several embedders recorded: detector, embedder and settings.

    A photo carrying it for the index's embedder was detected with these settings; each run's plan
    rewrites it as `detector_signature_of`, without model work. Those indexes knew no other region
    source: their signature is of the detector's settings alone (a run asking for proposals or tiles
    then cuts them from the stored boxes).
    """
    fingerprint = settings.detector_only().fingerprint()
    return _signature({"v": 1, "detector": detector_id, "embedder": embedder_id, "detection": fingerprint})


def _signature(payload: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
