"""Where `cropsearch stack up` runs the Prefect side, and the policy it holds deployed runs to."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from schemas.params import DEFAULT_DATA_DIR, DEFAULT_WRITER_LIMIT
from schemas.policy import DEFAULT_ALLOWED_HOSTS, OperatorPolicy
from schemas.serve import DEFAULT_SERVE_PORT


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
    state_dir: Path = Field(
        Path(".stack"),
        description="folder for the started processes' pid files and logs, and what `stack down` restores; a "
        "relative one lies in the project dir",
    )
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
    serve_port: int = Field(
        DEFAULT_SERVE_PORT,
        ge=0,
        le=65535,
        description="port of the search page started beside the UI (0: none)",
    )
    serve_db: Path | None = Field(
        None, description="database the search page serves; default <checkout>/data/lancedb, deployed runs' default"
    )

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
            search_page=self.search_page_url,
            search_page_db=str(self.served_db) if self.search_page_url else None,
        )

    @property
    def resolved_state_dir(self) -> Path:
        """The state folder, under the checkout when relative: `stack down` finds it from any working directory."""
        return (self.project_dir / self.state_dir.expanduser()).resolve()

    @property
    def search_page_url(self) -> str | None:
        return f"http://{self.host}:{self.serve_port}" if self.serve_port else None

    @property
    def served_db(self) -> Path:
        """The database the stack's search page serves: where deployed runs write by default."""
        return (self.serve_db or self.project_dir / DEFAULT_DATA_DIR / "lancedb").expanduser().resolve()

    @property
    def resolved_api_url(self) -> str:
        return self.api_url or f"http://{self.host}:{self.port}/api"
