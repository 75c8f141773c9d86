"""Asking a running `cropsearch serve` from the command line: the query flow's hits, without its start-up."""

from __future__ import annotations

from pathlib import Path

import httpx

from components.errors import CropsearchError
from schemas.results import QueryHit, QueryResult
from schemas.settings import SearchSettings

_TIMEOUT_SECONDS = 60.0


def ask_server(
    server: str, text: str | None, image: Path | None, settings: SearchSettings, token: str | None = None
) -> QueryResult:
    """One query to a search server; its refusal or absence is a CropsearchError naming the server."""
    base = server.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    fields = settings.query_fields()
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=_TIMEOUT_SECONDS, trust_env=False) as client:
            if image is None:
                response = client.get("/api/search", params={"text": text or "", **fields})
            else:
                with image.open("rb") as photo:
                    response = client.post("/api/search", data=fields, files={"image": (image.name, photo)})
    except httpx.HTTPError as error:
        reason = f"--server {server}: cannot reach it ({error}); is `cropsearch serve` running?"
        raise CropsearchError(reason) from error
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:200]}
    if response.status_code != 200:
        raise CropsearchError(f"--server {server}: {body.get('error', response.reason_phrase)}")
    described = text if text is not None else f"image {image}"
    hits = [QueryHit.model_validate(hit) for hit in body["hits"]]
    return QueryResult(query=described, mode=body.get("mode", "vector"), hits=hits)
