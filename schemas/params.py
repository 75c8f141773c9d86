"""Typed parameters of the index and query flows.

Every layer shares these: the CLI builds them from flags, the Prefect UI renders them as forms,
components take them as arguments. A bad value fails here, before any work starts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from schemas.policy import DEFAULT_ALLOWED_HOSTS, OperatorPolicy

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

QueryKinds = Literal["image", "crop", "both"]
TaskRunnerName = Literal["thread", "ray", "dask"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISION_HELP = "auto (fp16 on CUDA, bf16 on CPUs with bf16 instructions, else fp32), fp32, bf16 or fp16"


def _check_device(value: str) -> str:
    if value.split(":")[0] not in ("auto", "cpu", "cuda", "mps"):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {value!r}")
    return value


def _check_checksum(value: str | None) -> str | None:
    if value is None:
        return None
    algorithm, _, digest = value.partition(":")
    lengths = {"md5": 32, "sha256": 64}
    if algorithm not in lengths or len(digest) != lengths[algorithm]:
        raise ValueError(f"checksum must look like 'md5:<32 hex>' or 'sha256:<64 hex>', got {value!r}")
    int(digest, 16)  # raises ValueError on non-hex digits
    return f"{algorithm}:{digest.lower()}"


Device = Annotated[str, AfterValidator(_check_device)]
Checksum = Annotated[str | None, AfterValidator(_check_checksum)]


def is_object_store_uri(uri: str) -> bool:
    """True for s3://bucket/... (LanceDB folders and crop folders alike); everything else is a local path."""
    return uri.startswith("s3://")


class ObjectStoreSettings(BaseModel):
    """How to reach an S3-compatible object store for `s3://` databases and crop folders.

    Unset fields fall back to the standard AWS chain (AWS_* environment variables, ~/.aws, instance
    roles), which is where deployments should keep credentials: Prefect stores run parameters.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    s3_endpoint: str | None = Field(
        None, description="S3 endpoint URL for MinIO, Ceph, moto and the like (e.g. http://127.0.0.1:9000); none = AWS"
    )
    s3_region: str | None = Field(None, description="S3 region (e.g. us-east-1)")
    s3_access_key_id: str | None = Field(None, description="S3 access key id; none = the AWS credential chain")
    s3_secret_access_key: SecretStr | None = Field(
        None, description="S3 secret access key; none = the AWS credential chain"
    )
    s3_allow_http: bool = Field(False, description="allow a plain-http S3 endpoint (local MinIO or moto)")

    def check_endpoint(self) -> None:
        """LanceDB refuses a plain-http endpoint unless allowed: say so up front, naming the flag."""
        endpoint = self.s3_endpoint
        if endpoint and endpoint.startswith("http://") and not self.s3_allow_http:
            raise ValueError(f"s3_endpoint {endpoint!r} is plain http: set s3_allow_http (--s3-allow-http) to use it")

    def object_store(self) -> ObjectStoreSettings:
        """Just these settings, to hand to the store and the file layer."""
        return ObjectStoreSettings(**{name: getattr(self, name) for name in ObjectStoreSettings.model_fields})

    def lance_storage_options(self) -> dict[str, str]:
        """The settings as LanceDB's `storage_options` (object_store's names); unset ones are left out."""
        options = {
            "aws_endpoint": self.s3_endpoint,
            "aws_region": self.s3_region,
            "aws_access_key_id": self.s3_access_key_id,
            "aws_secret_access_key": self.s3_secret_access_key.get_secret_value()
            if self.s3_secret_access_key
            else None,
        }
        given = {key: value for key, value in options.items() if value}
        if self.s3_allow_http:
            given["allow_http"] = "true"
        return given


class DetectionSettings(BaseModel):
    """How objects are found and cut out. Changing any of these re-indexes affected images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    confidence: float = Field(0.25, ge=0.0, le=1.0, description="minimum detection confidence")
    iou: float = Field(0.7, gt=0.0, le=1.0, description="IoU threshold of non-maximum suppression")
    max_detections: int = Field(
        20, ge=0, le=1000, description="keep at most this many boxes per image (0 indexes whole images only)"
    )
    classes: list[str] = Field(
        default_factory=list, description="detector class names to keep; empty keeps every class"
    )
    min_box_pixels: int = Field(16, ge=1, description="drop boxes whose shorter side is below this many pixels")
    padding: float = Field(0.0, ge=0.0, le=1.0, description="grow each crop by this fraction of its size for context")
    image_size: int = Field(640, ge=32, le=4096, description="detector input size in pixels")

    def fingerprint(self) -> dict[str, object]:
        """The settings that change which crops exist, as plain data for hashing."""
        return self.model_dump(include=set(DetectionSettings.model_fields))


class IndexParams(DetectionSettings, ObjectStoreSettings):
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
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="folder for downloads, extracted images and crop files")
    db_uri: str | None = Field(None, description="LanceDB folder or s3:// URI; defaults to <data_dir>/lancedb")
    crops_uri: str | None = Field(
        None, description="folder or s3:// URI the crop files go to; defaults to <data_dir>/crops"
    )
    detector: str = Field(DEFAULT_DETECTOR, description="YOLO weights: an ultralytics name or a local .pt path")
    embedder: str = Field(DEFAULT_EMBEDDER, description="CLIP model: a Hugging Face id or a local folder")
    device: Device = Field("auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    precision: Precision = Field("auto", description=f"numeric precision of the models: {PRECISION_HELP}")
    chunk_size: int = Field(256, ge=1, le=100_000, description="images per durable chunk")
    detect_batch_size: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="images per detector forward pass; default 16 on CUDA, 1 on CPU (faster there, measured)",
    )
    embed_batch_size: int = Field(64, ge=1, le=4096, description="images or crops per embedder forward pass")
    decode_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="threads that decode, cut and read pictures beside the models; default: this machine's "
        "cores, at most 8 (a GPU needs several to keep busy)",
    )
    vector_index_min_rows: int = Field(
        VECTOR_INDEX_MIN_ROWS,
        ge=0,
        description="build the approximate-nearest-neighbour index once the embeddings reach this many rows "
        "(below it exact search is fast enough and an index would only cost its build)",
    )
    task_runner: TaskRunnerName = Field(
        "thread",
        description="where chunks' model work runs: thread (this process), ray (prefect-ray) or dask (prefect-dask)",
    )
    cluster_address: str | None = Field(
        None,
        description="an existing cluster to use: ray://host:10001 (or auto) for ray, tcp://host:8786 for dask; "
        "none starts a local one with --workers workers",
    )
    workers: int = Field(
        1, ge=1, le=1024, description="chunks whose model work runs at once (ray/dask; thread runs one at a time)"
    )
    gpus_per_worker: float | None = Field(
        None, ge=0, le=16, description="ray: GPUs each chunk task requests; default 1 when the cluster has GPUs, else 0"
    )
    compact: bool = Field(
        True, description="compact the tables' small fragments (one per chunk write) at the end of the run"
    )
    writer_limit: str | None = Field(
        DEFAULT_WRITER_LIMIT,
        description="Prefect global concurrency limit held while planning and writing, so index runs on one "
        "server write one at a time (created by `cropsearch stack up`; runs go unguarded where it does not exist)",
    )

    @field_validator("source", "detector", "embedder")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @model_validator(mode="after")
    def _runner_fits_its_options(self) -> IndexParams:
        if self.task_runner == "thread" and self.workers != 1:
            raise ValueError(
                "workers: the thread runner runs one chunk's model work at a time (its models are shared "
                "in one process); use --task-runner ray or dask for more workers"
            )
        address = self.cluster_address
        if address is not None:
            if self.task_runner == "thread":
                raise ValueError("cluster_address: needs --task-runner ray or dask")
            if self.task_runner == "ray" and not (address == "auto" or address.startswith("ray://")):
                raise ValueError(f"cluster_address: a Ray address is ray://host:port or auto, got {address!r}")
            if self.task_runner == "dask" and "://" not in address:
                raise ValueError(f"cluster_address: a Dask scheduler address is tcp://host:port, got {address!r}")
        if self.gpus_per_worker is not None and self.task_runner != "ray":
            raise ValueError("gpus_per_worker: only the ray runner requests GPUs per task")
        return self

    @property
    def resolved_db_uri(self) -> str:
        return self.db_uri or str(self.data_dir / "lancedb")

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


class QueryParams(ObjectStoreSettings):
    """How a query is answered. The query itself (text or image) is given beside these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(10, ge=1, le=1000, description="how many ranked hits to return")
    kinds: QueryKinds = Field("both", description="search whole images, crops, or both")
    classes: list[str] = Field(
        default_factory=list,
        description="keep crops of these classes and whole images that contain one; empty keeps all",
    )
    min_confidence: float = Field(0.0, ge=0.0, le=1.0, description="minimum detection confidence of crop hits")
    min_area_fraction: float = Field(0.0, ge=0.0, le=1.0, description="minimum share of the parent a crop covers")
    one_hit_per_image: bool = Field(True, description="return the best hit per parent; fold the rest under it")
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="folder for rendered result grids")
    db_uri: str | None = Field(None, description="LanceDB folder or s3:// URI; defaults to <data_dir>/lancedb")
    embedder: str | None = Field(
        None, description="CLIP model to encode the query; defaults to the one the index was built with"
    )
    device: Device = Field("auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    precision: Precision = Field("auto", description=f"numeric precision of the query encoder: {PRECISION_HELP}")
    render: bool = Field(True, description="write a PNG grid of the hits under <data_dir>/queries")

    @property
    def resolved_db_uri(self) -> str:
        return self.db_uri or str(self.data_dir / "lancedb")


# The synthetic world's trained models, committed with the code (see world/README.md).
WORLD_DIR = Path(__file__).resolve().parents[1] / "world"
WORLD_DETECTOR = WORLD_DIR / "detector.pt"
WORLD_EMBEDDER = WORLD_DIR / "clip"
WORLD_IMAGE_SIZE = 256  # the scenes' size, and the detector's training size


class EvalParams(BaseModel):
    """One retrieval evaluation: which benchmark, which models, which index settings to compare."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="downloads, indexes (under eval/) and the report")
    device: Device = Field("auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")

    @property
    def resolved_detector(self) -> str:
        return self.detector or (DEFAULT_DETECTOR if self.benchmark == "coco" else str(WORLD_DETECTOR))

    @property
    def resolved_embedder(self) -> str:
        return self.embedder or (DEFAULT_EMBEDDER if self.benchmark == "coco" else str(WORLD_EMBEDDER))

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


class StackParams(BaseModel):
    """Where `cropsearch stack up` runs the Prefect side: server, work pool, writer limit, worker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="address the local Prefect server listens on")
    port: int = Field(4200, ge=1, le=65535, description="port of the local Prefect server (UI and API)")
    api_url: str | None = Field(
        None,
        description="use this existing Prefect API (a server or a Prefect Cloud workspace) instead of starting one",
    )
    writer_limit: str = Field(DEFAULT_WRITER_LIMIT, description="global concurrency limit that serialises index runs")
    state_dir: Path = Field(Path(".stack"), description="folder for the started processes' pid files and logs")
    query_image_roots: list[Path] = Field(
        default_factory=list,
        description="folders deployed query runs may read images from, besides <checkout>/query-images",
    )
    source_roots: list[Path] = Field(
        default_factory=list,
        description="folders (and zips in them) deployed index runs may index, besides <checkout>/photos",
    )
    data_roots: list[Path] = Field(
        default_factory=list,
        description="folders deployed runs may write to (data_dir, local --db, --crops-uri), besides <checkout>/data",
    )
    model_roots: list[Path] = Field(
        default_factory=list,
        description="folders deployed runs may load local weights from, besides <checkout>/models, world and "
        "tiny-models; never inside a data root",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="hosts deployed runs may download from, besides images.cocodataset.org, github.com and "
        "huggingface.co (and their subdomains)",
    )
    project_dir: Path = Field(Path("."), description="checkout holding prefect.yaml; the worker runs flows from it")

    def operator_policy(self) -> OperatorPolicy:
        """The policy deployed runs are held to: the folders and hosts above, each list after its defaults."""
        checkout = self.project_dir.resolve()

        def resolved(defaults: list[Path], given: list[Path]) -> list[Path]:
            return [path.expanduser().resolve() for path in (*defaults, *given)]

        return OperatorPolicy(
            source_roots=resolved([checkout / "photos"], self.source_roots),
            data_roots=resolved([checkout / "data"], self.data_roots),
            model_roots=resolved([checkout / "models", checkout / "world", checkout / "tiny-models"], self.model_roots),
            query_image_roots=resolved([checkout / "query-images"], self.query_image_roots),
            allowed_hosts=[*DEFAULT_ALLOWED_HOSTS, *(host.strip().lower() for host in self.allowed_hosts)],
        )

    @property
    def resolved_api_url(self) -> str:
        return self.api_url or f"http://{self.host}:{self.port}/api"


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


def fields_in_form_order(model: type[BaseModel]) -> list[str]:
    """A model's own fields first (source, models, ...), inherited settings after: how forms and flags list them."""
    own = [name for name in model.model_fields if name in model.__annotations__]
    return own + [name for name in model.model_fields if name not in own]


def signature_of(detector_id: str, embedder_id: str, settings: DetectionSettings) -> str:
    """Hash of everything that decides an image's crops and vectors; equal signature = nothing to redo."""
    payload = {"v": 1, "detector": detector_id, "embedder": embedder_id, "detection": settings.fingerprint()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
