"""The `query` flow: a text or an image in, ranked hits joined to their parent photos out."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from components.embedder import load_embedder
from components.images import decode_rgb
from components.preflight import check_query_can_start
from components.render import hits_table, markdown_table, render_grid
from components.search import find_hits
from components.store import CropStore
from schemas.params import QueryInput, QueryParams
from schemas.results import QueryHit, QueryResult


@task(cache_policy=NO_CACHE)
def embed_query(query_input: QueryInput, embedder: str, device: str) -> list[float]:
    model = load_embedder(embedder, device)
    if query_input.text is not None:
        return model.embed_texts([query_input.text])[0].tolist()
    return model.embed_images([decode_rgb(query_input.image)])[0].tolist()  # type: ignore[arg-type]


@task(cache_policy=NO_CACHE)
def search(db_uri: str, vector: list[float], params: QueryParams) -> list[QueryHit]:
    return find_hits(CropStore(db_uri), vector, params)


@task(cache_policy=NO_CACHE)
def render(hits: list[QueryHit], path: Path) -> str:
    return str(render_grid(hits, path))


def describe(query_input: QueryInput) -> str:
    return query_input.text if query_input.text is not None else f"image {query_input.image}"


@flow(name="query")
def query(text: str | None = None, image: str | None = None, params: QueryParams = QueryParams()) -> QueryResult:
    """Find the k best whole images or crops for a text or an image, each joined to its parent photo."""
    query_input = QueryInput(text=text, image=image)
    if query_input.image is not None and not query_input.image.is_file():
        raise ValueError(f"query image {str(query_input.image)!r} does not exist")
    embedder = check_query_can_start(params)
    vector = embed_query(query_input, embedder, params.device)
    hits = search(params.resolved_db_uri, vector, params)
    grid_path = None
    if params.render and hits:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        digest = hashlib.sha256(describe(query_input).encode()).hexdigest()[:8]
        grid_path = render(hits, params.data_dir.resolve() / "queries" / f"{stamp}-{digest}.png")
    table = markdown_table(hits_table(hits))
    create_markdown_artifact(
        f"# Query: {describe(query_input)}\n\n{table}\n" + (f"Grid: `{grid_path}`\n" if grid_path else ""),
        key="query-hits",
        description=f"{len(hits)} hits",
    )
    get_run_logger().info("%d hits for %s", len(hits), describe(query_input))
    return QueryResult(query=describe(query_input), hits=hits, grid_path=grid_path)
