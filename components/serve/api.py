"""The search server's HTTP side: a JSON API, pictures by id, and the page, behind an optional token.

No route takes a file path: pictures are looked up by id in the index, so a path or an unknown id
is a 404. Every error is `{"error": ..., "field": ...}` with a 4xx status (5xx only for a damaged
index), so the page and scripts can say which input to change.
"""

from __future__ import annotations

import hmac
import io
import time
import typing
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from components.errors import CropsearchError, StoreMismatchError, TextIndexMissing
from components.pipeline.images import ImageDecodeError, ImageTooLarge, decode_rgb
from components.serve.hosts import HostCheck
from components.serve.pictures import PictureMissing, Pictures, check_size
from components.serve.searcher import Searcher, UnknownId, is_record_id
from components.store.objects import ObjectFiles
from schemas.records import CropRecord, ImageRecord
from schemas.results import QueryHit, shown_score
from schemas.serve import ServeParams
from schemas.settings import Ranking, SearchSettings

PAGE = Path(__file__).resolve().parent / "page"
_TEXT_LIMIT = 1000
_DEFAULT_PICTURE_SIZE = 512
# A multipart body holds the photo plus a few short fields and their boundaries.
_FORM_OVERHEAD = 64_000
# The page's own files only; pictures come from this server as JPEG (or the user's upload, as a blob).
_CONTENT_SECURITY = "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'"
_SEARCH_FIELDS = set(SearchSettings.model_fields)
# Settings that are lists (classes, region sources) come as one comma-separated field.
_LIST_FIELDS = {
    name for name, field in SearchSettings.model_fields.items() if typing.get_origin(field.annotation) is list
}


class ApiError(Exception):
    """A request the server refuses: the status, the input to blame and why."""

    def __init__(self, status: int, field: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


def _blamed(error: ValueError) -> ApiError:
    """A ValueError whose text starts with `<field>:` blames that field."""
    message = str(error).removeprefix("Value error, ")
    field, colon, _ = message.partition(":")
    return ApiError(400, field if colon and field.isidentifier() else None, message)


def search_settings(values: Mapping[str, str], allowed: set[str]) -> SearchSettings:
    """Search settings from query or form fields; anything not a setting nor in `allowed` is refused by name."""
    unknown = sorted(set(values) - _SEARCH_FIELDS - allowed)
    if unknown:
        raise ApiError(400, unknown[0], f"{unknown[0]}: not a search parameter")
    given: dict[str, Any] = {}
    for name in _SEARCH_FIELDS & set(values):
        value = values[name]
        if value == "":
            continue
        listed = name in _LIST_FIELDS
        given[name] = [part.strip() for part in value.split(",") if part.strip()] if listed else value
    try:
        return SearchSettings(**given)
    except ValidationError as error:
        first = error.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a check across settings names its field in its own text
            raise ApiError(422, _blamed(ValueError(message)).field, message) from error
        field = str(first["loc"][0])
        raise ApiError(422, field, f"{field}: {message}") from error


def hit_json(hit: QueryHit) -> dict[str, Any]:
    """A hit as the API answers it: the QueryHit's own fields (it reads back with `QueryHit.model_validate`),
    and beside them what a page wants at hand (class, box, picture URLs)."""
    crop = hit.crop
    return {
        "rank": hit.rank,
        "score": shown_score(hit.score),
        "kind": hit.kind,
        "class_name": crop.class_name if crop else None,
        "box": [crop.x1, crop.y1, crop.x2, crop.y2] if crop else None,
        "image": hit.image.model_dump(mode="json"),
        "crop": crop.model_dump(mode="json") if crop else None,
        "folded": [folded.model_dump(mode="json") for folded in hit.folded],
        "image_url": f"/api/images/{hit.image.image_id}",
        "crop_url": f"/api/crops/{crop.crop_id}" if crop else None,
    }


def _answer(found: tuple[list[QueryHit], Ranking], started: float) -> dict[str, Any]:
    hits, ranking = found
    took_ms = round((time.perf_counter() - started) * 1000, 1)
    return {"hits": [hit_json(hit) for hit in hits], "mode": ranking, "took_ms": took_ms}


def parse_box(value: str | None) -> list[float] | None:
    """The numbers of a `box` field; how many and where they lie is `encoding.check_box`'s to judge."""
    if value is None or not value.strip():
        return None
    try:
        return [float(part) for part in value.split(",")]
    except ValueError as error:
        raise ApiError(400, "box", f"box: give x1,y1,x2,y2 in the photo's pixels, got {value!r}") from error


def _decoded_upload(data: bytes, limit: int, max_decoded_bytes: int, name: str | None) -> Image.Image:
    if not data:
        raise ApiError(400, "image", "image: the uploaded file is empty")
    if len(data) > limit:
        raise ApiError(413, "image", f"image: {len(data):,} bytes is over the upload limit of {limit:,}")
    named = f"image: {name!r}" if name else "image"
    try:
        # The cap is checked from the header: a small file of many pixels is refused before it costs memory.
        return decode_rgb(io.BytesIO(data), max_decoded_bytes)
    except ImageTooLarge as error:
        raise ApiError(413, "image", f"{named}: {error}") from error
    except ImageDecodeError as error:
        raise ApiError(400, "image", f"{named}: {error}") from error


# What the searcher's errors mean to a client; the most specific class of an error decides.
_STATUS_OF_ERROR: dict[type[Exception], tuple[int, str]] = {
    UnknownId: (404, "id"),
    PictureMissing: (404, "id"),
    TextIndexMissing: (409, "mode"),  # an index made before text search, until one index run adds it
    StoreMismatchError: (503, "db"),  # no index there (yet)
    CropsearchError: (500, "db"),  # a damaged table, named with the command that restores it
}


def _answering(status: int, field: str) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def answer(_: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": str(error), "field": field}, status_code=status)

    return answer


def _authorized(request: Request, token: str) -> bool:
    given = request.query_params.get("token", "")
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        given = header[7:].strip()
    return hmac.compare_digest(given.encode(), token.encode())


def _with_policy(response: Response) -> Response:
    """Every answer, refusals too: a page may run only this server's own files, and no type is sniffed."""
    response.headers["Content-Security-Policy"] = _CONTENT_SECURITY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _misdirected() -> JSONResponse:
    """421: the request was sent to a name that is not this server's (as DNS rebinding sends it)."""
    error = "this server does not answer to that Host name; its operator can add it (--allowed-hosts)"
    return JSONResponse({"error": error, "field": "host"}, status_code=421)


def create_app(searcher: Searcher, params: ServeParams) -> FastAPI:
    """The server's app over one searcher; `params` give its names, the token and the upload limits."""
    app = FastAPI(title="cropsearch", docs_url=None, redoc_url=None, openapi_url=None)
    pictures = Pictures(ObjectFiles(params.object_store), max_decoded_bytes=params.max_decoded_bytes)
    hosts = HostCheck(params.host, params.allowed_hosts)
    token = params.token.get_secret_value() if params.token else None
    # With a token, a picture is private to whoever holds it: no shared cache may keep it.
    cache_control = f"{'private' if token else 'public'}, max-age=31536000, immutable"

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Before the token: a page that rebound its name to this server is refused whatever it sends.
        if not hosts.allows(request.headers.get("host")):
            return _with_policy(_misdirected())
        if token is not None and not _authorized(request, token):
            refused = JSONResponse({"error": "a valid token is required", "field": "token"}, status_code=401)
            return _with_policy(refused)
        return _with_policy(await call_next(request))

    @app.exception_handler(HTTPException)
    async def not_routed(request: Request, error: HTTPException) -> JSONResponse:
        body = {"error": f"{error.detail}: {request.url.path}", "field": None}
        return JSONResponse(body, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def malformed(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        field = str(first["loc"][-1]) if first.get("loc") else None
        return JSONResponse({"error": f"{field}: {first['msg']}", "field": field}, status_code=422)

    @app.exception_handler(ApiError)
    async def refused(_: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"error": error.message, "field": error.field}, status_code=error.status)

    for error_type, (status, field) in _STATUS_OF_ERROR.items():
        app.add_exception_handler(error_type, _answering(status, field))

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, error: ValueError) -> JSONResponse:
        blamed = _blamed(error)
        return JSONResponse({"error": blamed.message, "field": blamed.field}, status_code=blamed.status)

    def checked_text(text: str | None) -> str:
        if text is None or not text.strip():
            raise ApiError(422, "text", "text: give something to search for")
        if len(text) > _TEXT_LIMIT:
            raise ApiError(422, "text", f"text: {len(text)} characters is over the limit of {_TEXT_LIMIT}")
        return text

    @app.get("/api/search")
    def search_by_text(request: Request) -> dict[str, Any]:
        started = time.perf_counter()
        values = dict(request.query_params)
        settings = search_settings(values, {"text", "embedder", "token"})
        searcher.check_embedder_named(values.get("embedder"))
        return _answer(searcher.search_text(checked_text(values.get("text")), settings), started)

    @app.post("/api/search")
    async def search_by_picture(request: Request) -> dict[str, Any]:
        started = time.perf_counter()
        declared = request.headers.get("content-length")
        if declared is None:
            raise ApiError(411, "image", "image: send the upload with a Content-Length")
        if int(declared) > params.max_upload_bytes + _FORM_OVERHEAD:
            raise ApiError(
                413, "image", f"image: {int(declared):,} bytes is over the upload limit of {params.max_upload_bytes:,}"
            )
        form = await request.form(max_files=1, max_fields=20)
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise ApiError(422, "image", "image: upload a photo in the `image` field")
        data = await upload.read()
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
        settings = search_settings(fields, {"box", "embedder", "token"})
        searcher.check_embedder_named(fields.get("embedder"))
        picture = await run_in_threadpool(
            _decoded_upload, data, params.max_upload_bytes, params.max_decoded_bytes, upload.filename
        )
        box = parse_box(fields.get("box"))
        return _answer(await run_in_threadpool(searcher.search_picture, picture, box, settings), started)

    @app.get("/api/similar/{record_id}")
    def similar(record_id: str, request: Request) -> dict[str, Any]:
        started = time.perf_counter()
        settings = search_settings(dict(request.query_params), {"token", "embedder"})
        return _answer(searcher.similar(record_id, settings), started)

    def picture_response(request: Request, record_id: str, size: int, make: Callable[[], bytes]) -> Response:
        if not is_record_id(record_id):
            raise UnknownId(f"{record_id!r} is not an image or crop id")
        tag = f'"{record_id}-{size}"'
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers={"ETag": tag, "Cache-Control": cache_control})
        return Response(make(), media_type="image/jpeg", headers={"ETag": tag, "Cache-Control": cache_control})

    @app.get("/api/images/{image_id}")
    def image_picture(image_id: str, request: Request, size: int = _DEFAULT_PICTURE_SIZE) -> Response:
        check_size(size)
        return picture_response(
            request, image_id, size, lambda: pictures.of_image(image_id, size, lambda: searcher.image(image_id))
        )

    @app.get("/api/crops/{crop_id}")
    def crop_picture(crop_id: str, request: Request, size: int = _DEFAULT_PICTURE_SIZE) -> Response:
        check_size(size)

        def records() -> tuple[CropRecord, ImageRecord]:
            crop = searcher.crop(crop_id)
            return crop, searcher.image(crop.image_id)

        return picture_response(request, crop_id, size, lambda: pictures.of_crop(crop_id, size, records))

    @app.get("/api/images/{image_id}/crops")
    def crops_of_image(image_id: str) -> dict[str, Any]:
        image = searcher.image(image_id)
        return {
            "image": image.model_dump(mode="json"),
            "crops": [
                {**crop.model_dump(mode="json"), "crop_url": f"/api/crops/{crop.crop_id}"}
                for crop in searcher.crops_of(image_id)
            ],
        }

    @app.get("/api/index")
    def index_summary() -> dict[str, Any]:
        return searcher.summary()

    @app.get("/")
    def page() -> FileResponse:
        return FileResponse(PAGE / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico")
    def no_icon() -> Response:
        return Response(status_code=204)

    app.mount("/page", StaticFiles(directory=PAGE), name="page")
    return app
