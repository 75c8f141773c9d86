"""What a deployed run may touch: the operator's policy, never a run's parameters.

Anyone who can open the Prefect UI can start a deployment's run with any parameters. A run's
parameters choose what to index and search *within* this policy; the policy itself comes from
the operator (`cropsearch stack up`), through the worker's environment, which runs cannot change
(the work pool lets them set no job variables). docs/trust-model.md says why each rule exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator
from urllib3.util import parse_url

# The worker's environment variable holding the policy as JSON (written by `cropsearch stack up`).
POLICY_VARIABLE = "CROPSEARCH_POLICY"

# Where the default sources and models live: COCO's image host, and the two model hubs.
DEFAULT_ALLOWED_HOSTS = (
    "images.cocodataset.org",
    "github.com",  # ultralytics' release weights (yolov10x.pt, ...)
    "huggingface.co",  # CLIP and other Hugging Face models
)

# Run parameters a deployed run may not change: they reach other machines (an S3 endpoint, a
# cluster that runs pickles sent to it) or drop a guard (the one-writer limit). A run gets the
# deployment's own value (or the field's default where the deployment sets none).
FIXED_BY_DEPLOYMENT = (
    "s3_endpoint",
    "s3_region",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_allow_http",
    "task_runner",
    "cluster_address",
    "gpus_per_worker",
    "writer_limit",
)


class ResourceCaps(BaseModel):
    """Upper bounds on what one deployed run may ask for, so a form cannot exhaust the worker.

    Measured on a 2-core CPU: `image_size=4096` with `detect_batch_size=2` peaked at 5.5 GB for two
    photos; the defaults below stay near the pipeline's own defaults and well under that.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int = Field(1280, ge=32, description="detector input size")
    detect_batch_size: int = Field(64, ge=1, description="images per detector pass")
    embed_batch_size: int = Field(512, ge=1, description="pictures per embedder pass")
    chunk_size: int = Field(2048, ge=1, description="images per durable chunk")
    decode_threads: int = Field(16, ge=1, description="decode threads")
    workers: int = Field(16, ge=1, description="cluster workers")
    max_detections: int = Field(100, ge=0, description="boxes per image")
    k: int = Field(200, ge=1, description="hits per query")
    world_scenes: int = Field(2000, ge=10, description="generated scenes per evaluation")


class OperatorPolicy(BaseModel):
    """The folders, hosts and sizes deployed runs are held to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_roots: list[Path] = Field(description="folders (and .zip files in them) deployed runs may index")
    data_roots: list[Path] = Field(
        description="folders deployed runs may write to: data_dir, local db_uri and crops_uri lie inside one"
    )
    model_roots: list[Path] = Field(description="folders deployed runs may load local weights from")
    query_image_roots: list[Path] = Field(description="folders deployed query runs may read query images from")
    allowed_hosts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_HOSTS),
        description="hosts deployed runs may download from (a host also allows its subdomains)",
    )
    caps: ResourceCaps = Field(default_factory=ResourceCaps)
    search_page: str | None = Field(None, description="the stack's search page; query runs link their hits to it")
    search_page_db: str | None = Field(None, description="the database the stack's search page serves")

    @model_validator(mode="after")
    def _writes_never_land_where_weights_load(self) -> OperatorPolicy:
        """A run that could write where weights are loaded from could make the worker unpickle its file."""
        for data_root in self.data_roots:
            for model_root in self.model_roots:
                data, model = data_root.resolve(), model_root.resolve()
                if data.is_relative_to(model) or model.is_relative_to(data):
                    raise ValueError(
                        f"data root {str(data_root)!r} and model root {str(model_root)!r} overlap: deployed runs "
                        "write under data roots, so a model root there would load weights a run downloaded"
                    )
        return self

    def allows_host(self, url: str) -> bool:
        """Whether `url` is unambiguous (`requested_host`) and its host is an allowed one or a subdomain of one."""
        try:
            return self.allows_hostname(requested_host(url))
        except ValueError:
            return False

    def allows_hostname(self, host: str) -> bool:
        """Whether `host` (as `requested_host` gives it) is an allowed host or a subdomain of one."""
        return any(host == allowed or host.endswith(f".{allowed}") for allowed in self.allowed_hosts)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"))


def requested_host(url: str) -> str:
    """The host a request for `url` connects to, lower-cased; ValueError for a URL parsers could read two ways.

    The host that is checked must be the host that is connected to. requests parses with urllib3's
    `parse_url`, and `urllib.parse` reads some URLs differently: for `http://127.0.0.1:9\\@github.com/x`
    it says github.com, while requests connects to 127.0.0.1. So the host comes from urllib3's
    parser, and a URL with a backslash, user info, whitespace or control characters, or one the two
    parsers disagree on, is refused outright: no allowed download needs any of them.
    """
    if any(char == "\\" or char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        raise ValueError("a backslash, whitespace or control character in a URL")
    try:
        parsed, split = parse_url(url), urlsplit(url)
    except ValueError as error:  # urllib3's LocationParseError is a ValueError
        raise ValueError(f"not a URL ({error})") from error
    if parsed.scheme not in ("http", "https"):
        raise ValueError("only http:// and https:// URLs are fetched")
    if parsed.auth is not None or "@" in split.netloc:
        raise ValueError("user info (user@host) in a URL")
    host = (parsed.host or "").lower().rstrip(".").strip("[]")
    if not host or host != (split.hostname or "").lower().rstrip("."):
        raise ValueError("a URL whose host is read differently by different parsers")
    return host
