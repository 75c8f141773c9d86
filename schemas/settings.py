"""The groups of settings the parameter models are built of, and the checked types their fields use.

Each group is one concern (where objects are found, how work is batched, where it runs, how an
object store is reached, which hits a query returns) and can be passed on alone: components take
the group they need, never the whole run's parameters.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from schemas.flat import SettingsGroup
from schemas.records import CropSource

QueryKinds = Literal["image", "crop", "both"]
QueryMode = Literal["auto", "vector", "text", "hybrid"]
Ranking = Literal["vector", "text", "hybrid"]  # what `auto` resolves to, query by query
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


class ObjectStoreSettings(SettingsGroup):
    """How to reach an S3-compatible object store for `s3://` databases and crop folders.

    Unset fields fall back to the standard AWS chain (AWS_* environment variables, ~/.aws, instance
    roles), which is where deployments should keep credentials: Prefect stores run parameters.
    """

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


# Near-full-frame crops: the whole photo's vector already stands for them. The lowest value allowed
# bounds how many crops each run's plan compares with their vectors (a filtered scan of one column
# finds them) to learn which lack one after the value was raised.
WHOLE_FRAME_AREA_DEFAULT = 0.9
WHOLE_FRAME_AREA_MIN = 0.25
# Neighbouring tiles of a grid level share this share of a tile's side. An object no wider (or taller)
# than the overlap lies whole inside some tile of the level, whichever border it straddles: at level 3
# of a 640 px side the tiles are 256 px, so objects up to 64 px (COCO's small ones are under 32) are
# never cut in two. More overlap makes every tile bigger (320 px at 50%), so a small object fills less
# of what CLIP sees, and embeds more of the photo twice. Part of the index signature when tiles are asked for.
TILE_OVERLAP = 0.25
# Level 1 would be the whole photo, which always has its own vector; level 8 is 64 tiles a photo.
TILE_LEVEL_MIN, TILE_LEVEL_MAX = 2, 8
# A class-agnostic proposal's box is grown by this share of its size on each side, and by this many
# pixels at least: a crop cut tight to an object loses its outline, which is most of what CLIP reads
# of a small one (a 10 px blob becomes a 16 px crop). Part of the index signature when proposals are asked for.
PROPOSAL_PADDING = 0.1
PROPOSAL_PADDING_MIN_PIXELS = 3
PROPOSALS_MAX = 100
# On by default, by measurement (docs/evaluation.md): on the world's scenes proposals lift small objects
# of a class the detector cannot name from P@5 0 to 0.8-0.93 and keep the named ones; with yolov10x and
# CLIP ViT-B/32 on real photos (where MSER fills any cap) 8 cost 1.39-1.49x the detector's crops alone
# and 20 cost 1.6-2x, against issue 41's 1.5x. A world scene has about four, so 8 loses nothing there.
PROPOSALS_DEFAULT = 8
# A region of a later source (proposals, then tiles) overlapping one of an earlier source's (the
# detector first) this much is the same region found twice: it is not stored. Within a source, the
# source's own suppression rules (the detector's NMS keeps two classes' boxes of one object).
DEDUPE_IOU = 0.7


class DetectionSettings(SettingsGroup):
    """How regions are found and cut out: the detector's objects, proposals and tiles. Changing any of these re-indexes
    affected images, but `whole_frame_area`, which each run applies to the stored crops' vectors."""

    confidence: float = Field(0.25, ge=0.0, le=1.0, description="minimum detection confidence")
    iou: float = Field(0.7, gt=0.0, le=1.0, description="IoU threshold of non-maximum suppression")
    max_detections: int = Field(
        20,
        ge=0,
        le=1000,
        description="keep at most this many boxes per image (0: no detector boxes; with --proposals 0 too, whole "
        "images only)",
    )
    classes: list[str] = Field(
        default_factory=list, description="detector class names to keep; empty keeps every class"
    )
    min_box_pixels: int = Field(16, ge=1, description="drop boxes whose shorter side is below this many pixels")
    padding: float = Field(0.0, ge=0.0, le=1.0, description="grow each crop by this fraction of its size for context")
    image_size: int = Field(640, ge=32, le=4096, description="detector input size in pixels")
    whole_frame_area: float = Field(
        WHOLE_FRAME_AREA_DEFAULT,
        ge=WHOLE_FRAME_AREA_MIN,
        le=1.0,
        description="crops covering at least this share of their photo keep their row and file but get no "
        "vector of their own: the photo's stands for them (1 embeds every crop short of the whole frame)",
    )

    tiles: list[int] = Field(
        default_factory=list,
        description=f"grid levels of tiles cut from every photo beside the detector's boxes, e.g. 2,3 (a 2x2 and a "
        f"3x3 grid, neighbours overlapping by {TILE_OVERLAP:.0%}): regions that need no class name, found by what "
        f"they look like; {TILE_LEVEL_MIN} to {TILE_LEVEL_MAX}; empty cuts none",
    )

    proposals: int = Field(
        PROPOSALS_DEFAULT,
        ge=0,
        le=PROPOSALS_MAX,
        description="up to N class-agnostic proposals per photo beside the detector's boxes: blobs that stand out "
        "from their surroundings (MSER on brightness and saturation, no model, no class name), the most distinct "
        f"first, padded by {PROPOSAL_PADDING:.0%}; 0 cuts none",
    )

    @field_validator("tiles")
    @classmethod
    def _tile_levels(cls, levels: list[int]) -> list[int]:
        outside = [level for level in levels if not TILE_LEVEL_MIN <= level <= TILE_LEVEL_MAX]
        if outside:
            raise ValueError(
                f"tile levels are {TILE_LEVEL_MIN} to {TILE_LEVEL_MAX} (level 1 is the whole photo, which always "
                f"has its own vector), got {outside}"
            )
        return sorted(set(levels))

    def detector_only(self) -> DetectionSettings:
        """These settings less the region sources beyond the detector: what decides the detector's boxes alone."""
        return self.model_copy(update={"tiles": [], "proposals": 0})

    def embeds_crop(self, area_fraction: float) -> bool:
        """Whether a crop covering `area_fraction` of its photo gets a vector of its own (see `whole_frame_area`)."""
        return area_fraction < self.whole_frame_area

    def fingerprint(self) -> dict[str, object]:
        """The settings that change which crops exist, as plain data for hashing.

        `whole_frame_area` changes only which crops have vectors, and each run's plan brings the stored
        vectors in line with it (`StoreWriter.drop_whole_frame_vectors`): indexes made before it existed,
        and a changed value, need no detection again.

        Tiles and proposals enter only when asked for, with their geometry and the IoU at which a
        region found twice is stored once: an index made before they existed keeps its signature,
        and one with them differs from one without.
        """
        found = self.model_dump(
            include=set(DetectionSettings.model_fields) - {"whole_frame_area", "tiles", "proposals"}
        )
        if self.tiles:
            found["tiles"] = {"levels": self.tiles, "overlap": TILE_OVERLAP}
        if self.proposals:
            found["proposals"] = {
                "limit": self.proposals,
                "padding": [PROPOSAL_PADDING, PROPOSAL_PADDING_MIN_PIXELS],
            }
        if self.tiles or self.proposals:
            found["dedupe_iou"] = DEDUPE_IOU
        return found


class BatchSettings(SettingsGroup):
    """How a run cuts its work: images per durable chunk, pictures per forward pass, decode threads."""

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


class RunnerSettings(SettingsGroup):
    """Where chunks' model work runs: this process, or a Ray or Dask cluster."""

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

    @model_validator(mode="after")
    def _runner_fits_its_options(self) -> RunnerSettings:
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


class SearchSettings(SettingsGroup):
    """Which hits a query returns, and how many: what any front end of the search shares."""

    k: int = Field(10, ge=1, le=1000, description="how many ranked hits to return")
    kinds: QueryKinds = Field("both", description="search whole images, crops, or both")
    classes: list[str] = Field(
        default_factory=list,
        description="keep only crops of these classes (whole photos name no class of their own); empty keeps all",
    )
    region_sources: list[CropSource] = Field(
        default_factory=list,
        description="keep crops these region sources cut (detector, open-vocabulary, proposal, tile) and whole "
        "images; empty keeps all",
    )
    min_confidence: float = Field(0.0, ge=0.0, le=1.0, description="minimum detection confidence of crop hits")
    min_area_fraction: float = Field(0.0, ge=0.0, le=1.0, description="minimum share of the parent a crop covers")
    one_hit_per_image: bool = Field(True, description="return the best hit per parent; fold the rest under it")
    min_score: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="leave out hits whose score, as shown (4 decimals), is under this: the cosine similarity in "
        "vector mode, the fused score (0-1) in hybrid mode; none keeps all (text mode's BM25 has no fixed scale)",
    )
    mode: QueryMode = Field(
        "auto",
        description="vector: CLIP similarity; text: the words of crops' class names and images' captions (BM25); "
        "hybrid: both rankings fused by reciprocal rank, scored 0-1 (1: first by both, 0.5: first by one); auto: "
        "hybrid for a text query, vector for a picture or on an index without its text index",
    )

    @model_validator(mode="after")
    def _cutoff_fits_the_mode(self) -> SearchSettings:
        if self.min_score is not None and self.mode == "text":
            raise ValueError(
                "min_score: a cutoff of vector (cosine) or hybrid (0-1) scores; --mode text ranks by BM25, "
                "whose scores have no fixed scale"
            )
        return self

    def ranked_by(self, ranking: Ranking) -> SearchSettings:
        """These settings with `mode` resolved to the ranking a query gets (see `search_mode`)."""
        return self.model_copy(update={"mode": ranking})

    def query_fields(self) -> dict[str, str]:
        """The settings as URL query or form fields (the search API's); defaults are left out."""
        fields: dict[str, str] = {}
        for name, value in self.model_dump(exclude_defaults=True).items():
            fields[name] = ",".join(value) if isinstance(value, list) else str(value).lower()
        return fields
