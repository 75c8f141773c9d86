"""The `query` flow: a text or an image in, ranked hits joined to their parent photos out."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_image_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from components.models.devices import decide_machine
from components.models.embedder import load_embedder
from components.ops import trust
from components.ops.preflight import check_query_can_start, check_query_image
from components.pipeline.images import decode_rgb
from components.search.encoding import picture_vector, text_vector
from components.search.ranking import find_hits
from components.search.render import data_uri, hits_markdown, hits_table, markdown_table, render_grid
from components.store.objects import ObjectFiles
from components.store.reader import StoreReader
from flows import deployed
from flows.parameters import split_fields, takes_fields_of
from schemas.params import QueryInput, QueryParams
from schemas.results import QueryHit, QueryResult


@task(cache_policy=NO_CACHE)
def embed_query(
    query_input: QueryInput, embedder: str, device: str, precision: str, model_roots: list[Path] | None
) -> list[float]:
    """The query's vector, by the embedder loaded for this machine (decided here: the query's one model use)."""
    model = load_embedder(embedder, decide_machine(device, precision), model_roots)
    if query_input.text is not None:
        return text_vector(model, query_input.text).tolist()
    return picture_vector(model, decode_rgb(query_input.image)).tolist()  # type: ignore[arg-type]


@task(cache_policy=NO_CACHE)
def search(vector: list[float] | None, text: str | None, params: QueryParams, embedder_id: str) -> list[QueryHit]:
    store = StoreReader(params.resolved_db_uri, params.object_store, embedder_id)
    return find_hits(store, None if vector is None else np.asarray(vector, dtype=np.float32), params.search, text)


def search_page_link(search_page: str, served_db: str | None, text: str, params: QueryParams) -> str:
    """The same text search on the stack's search page, where a person can refine it and click through.

    The page serves one database: a run over another gets a line saying which, not a link that
    would show other photos than its own.
    """
    searched = params.resolved_db_uri
    if served_db is not None and not _same_database(searched, served_db):
        return f"The search page ({search_page}) serves {served_db}; this run searched {searched}.\n\n"
    fields = {"text": text, **params.search.query_fields()}
    return f"[Open this search on the search page]({search_page.rstrip('/')}/?{urlencode(fields)})\n\n"


def _same_database(one: str, other: str) -> bool:
    if "://" in one or "://" in other:
        return one.rstrip("/") == other.rstrip("/")
    return Path(one).expanduser().resolve() == Path(other).expanduser().resolve()


@task(cache_policy=NO_CACHE)
def publish(
    description: str,
    hits: list[QueryHit],
    grid_dir: Path | None,
    params: QueryParams,
    link: str = "",
    readable_roots: list[str] | None = None,
) -> Path | None:
    """The hits as artifacts a person can read in the UI: a table with thumbnails, and the grid picture.

    Pictures are drawn only from inside `readable_roots` (a deployed run's folders, None: anywhere).
    """
    grid_path = None
    files = ObjectFiles(params.object_store, readable_roots)
    if grid_dir is not None and hits:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        digest = hashlib.sha256(description.encode()).hexdigest()[:8]
        grid_path = grid_dir / f"{stamp}-{digest}.png"
        grid = render_grid(hits, grid_path, files)
        create_image_artifact(data_uri(grid), key="query-grid", description=f"{len(hits)} hits for {description}")
        report = hits_markdown(f"Query: {description}", hits, grid_path=grid_path, files=files)
    else:
        report = f"# Query: {description}\n\n{markdown_table(hits_table(hits))}"
    if link:
        title, _, rest = report.partition("\n\n")
        report = f"{title}\n\n{link}{rest}"
    create_markdown_artifact(report, key="query-hits", description=f"{len(hits)} hits for {description}")
    return grid_path


def describe(query_input: QueryInput) -> str:
    return query_input.text if query_input.text is not None else f"image {query_input.image}"


@flow(name="query", persist_result=True)
@takes_fields_of(QueryInput, QueryParams)
def query(**fields: Any) -> QueryResult:
    """Find the k best whole images or crops for a text or an image, each joined to its parent photo."""
    query_input = QueryInput(**split_fields(fields, QueryInput))
    params = QueryParams(**split_fields(fields, QueryParams))
    policy = deployed.hold_query_run(params, query_input.image)
    if query_input.image is not None:
        check_query_image(query_input.image)
    embedder, embedder_id, ranking = check_query_can_start(params, text_query=query_input.text is not None)
    vector = None
    if ranking != "text":  # words alone are searched without the model
        deployed.hold_model(embedder, policy, "embedder" if params.embedder else "embedder recorded in the index")
        model_roots = None if policy is None else policy.model_roots
        vector = embed_query(query_input, embedder, params.device, params.precision, model_roots)
    ranked = params.model_copy(update={"search": params.search.ranked_by(ranking)})
    hits = search(vector, query_input.text, ranked, embedder_id)
    grid_dir = params.data_dir.resolve() / "queries" if params.render else None
    page = policy.search_page if policy is not None else None
    if page and query_input.text is not None:
        link = search_page_link(page, policy.search_page_db, query_input.text, params)  # type: ignore[union-attr]
    else:
        link = ""
    readable = None if policy is None else trust.query_readable_roots(policy, params)
    grid_path = publish(describe(query_input), quote(hits), grid_dir, params, link, readable)
    logger = get_run_logger()
    logger.info("%d hits for %s, ranked by %s search over %s", len(hits), describe(query_input), ranking, embedder_id)
    for row in hits_table(hits):
        logger.info("#%s %s %s %s %s", row["rank"], row["score"], row["class"], row["parent"], row["box"])
    return QueryResult(
        query=describe(query_input),
        mode=ranking,
        embedder=embedder_id,
        hits=hits,
        grid_path=str(grid_path) if grid_path else None,
    )
