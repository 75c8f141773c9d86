"""How `cropsearch serve` runs: which index, where it listens, who may ask, how much a request may carry."""

from __future__ import annotations

import ipaddress
import re

from pydantic import Field, SecretStr, field_validator, model_validator

from schemas.flat import FlatParams
from schemas.params import DEFAULT_DATA_DIR
from schemas.settings import PRECISION_HELP, Device, ObjectStoreSettings, Precision

DEFAULT_SERVE_PORT = 8800
# A name the operator lets the Host header carry: a DNS name or an IP address, without a port.
_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+|\[?[0-9A-Fa-f:.]+\]?")


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach a server bound to `host`."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


class ServeParams(FlatParams):
    """One search server: an index held open with its embedder warm."""

    db_uri: str = Field(str(DEFAULT_DATA_DIR / "lancedb"), description="LanceDB folder or s3:// URI to search")
    host: str = Field("127.0.0.1", description="address to listen on; any but loopback needs --token")
    port: int = Field(DEFAULT_SERVE_PORT, ge=0, le=65535, description="port to listen on (0: any free port)")
    token: SecretStr | None = Field(
        None, description="every request must carry it (Authorization: Bearer, or ?token=); also CROPSEARCH_TOKEN"
    )
    embedder: str | None = Field(
        None, description="CLIP model to encode queries; defaults to the one the index was built with"
    )
    device: Device = Field("auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    precision: Precision = Field("auto", description=f"numeric precision of the query encoder: {PRECISION_HELP}")
    max_upload_mb: float = Field(20.0, gt=0, le=200, description="largest query photo accepted, in MB")
    max_decoded_mb: int = Field(
        256,
        ge=1,
        le=16384,
        description="largest picture decoded, in MiB of RGB pixels (width x height x 4 bytes, read from its header "
        "before decoding); 256 lets a 61-megapixel photo through",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="more names requests may carry in Host (a DNS name or proxy's name for this server); "
        "localhost, 127.0.0.1, [::1] and --host always pass, any other name is refused (421)",
    )
    wait_for_index: bool = Field(
        False, description="start before the index exists and answer once a run has written it (the stack's serve)"
    )
    object_store: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)

    @field_validator("allowed_hosts")
    @classmethod
    def _names_only(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _HOST_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a host name; give a name or address without scheme or port")
        return names

    @model_validator(mode="after")
    def _others_need_a_token(self) -> ServeParams:
        if not is_loopback(self.host) and (self.token is None or not self.token.get_secret_value()):
            raise ValueError(
                f"host: {self.host!r} can be reached from other machines; give --token (or CROPSEARCH_TOKEN) "
                "so that only people holding it can search"
            )
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)

    @property
    def max_decoded_bytes(self) -> int:
        return self.max_decoded_mb * 2**20
