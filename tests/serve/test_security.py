"""What a search server refuses: requests without its token, paths instead of ids, uploads that are not photos."""

from __future__ import annotations

import http.client
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image

from components.serve.searcher import Searcher
from schemas.serve import ServeParams
from tests.serve.conftest import WorldIndex
from tests.serve.live import client, serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def guarded(searcher: Searcher, world_index: WorldIndex) -> Iterator[str]:
    params = ServeParams(db_uri=world_index.db_uri, token="open-sesame", max_upload_mb=0.2)
    with serving(searcher, params) as url:
        yield url


def _raw_get(url: str, path: str) -> tuple[int, bytes]:
    """A request line sent as written: no client-side `..` clean-up."""
    parsed = urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read()


def _png(size: tuple[int, int], mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def test_with_a_token_every_request_must_carry_it(guarded: str) -> None:
    for path in ("/", "/api/index", "/api/search?text=x", "/page/app.js", "/api/images/" + "0" * 64):
        refused = client(guarded).get(path)
        assert refused.status_code == 401 and refused.json() == {"error": "a valid token is required", "field": "token"}
        assert client(guarded).get(path, params={"token": "open-sesam"}).status_code == 401
    assert client(guarded).get("/api/index", headers={"Authorization": "Bearer open-sesame"}).status_code == 200
    assert client(guarded).get("/api/search", params={"text": "x", "token": "open-sesame"}).status_code == 200
    page = client(guarded).get("/", params={"token": "open-sesame"})
    assert page.status_code == 200 and "cropsearch" in page.text


def test_any_host_but_loopback_needs_a_token() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        ServeParams(host=host)
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        with pytest.raises(ValueError, match="give --token"):
            ServeParams(host=host)
        ServeParams(host=host, token="t")
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "serve", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and done.stderr.startswith("error: host: '0.0.0.0' can be reached from other")


def test_serving_a_missing_index_is_one_error_line_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "lancedb"
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "serve", "--db", str(missing), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        done.returncode == 2
        and done.stderr == f"error: no index at {missing}: run `cropsearch index` first, or check --db\n"
    )
    assert not (tmp_path / "typo").exists()


def test_pictures_are_served_by_id_only(server: str) -> None:
    for path in (
        "/api/images/../../etc/passwd",
        "/api/images/..%2F..%2Fetc%2Fpasswd",
        "/api/crops/%2Fetc%2Fpasswd",
        "/page/../../../../etc/passwd",
        "/page/..%2F..%2F..%2Fsearcher.py",
        "/api/images/" + "a" * 64,
        "/api/crops/" + "b" * 64,
        "/api/similar/" + "c" * 64,
    ):
        status, body = _raw_get(server, path)
        assert status == 404, (path, status)
        assert b"root:" not in body and b"import" not in body


def test_an_unknown_id_is_a_404_naming_it(server: str) -> None:
    response = client(server).get("/api/images/" + "a" * 64)
    assert response.status_code == 404
    assert response.json() == {"error": f"no image {'a' * 64!r} in the index", "field": "id"}


def test_bad_parameters_are_4xx_naming_the_field(server: str) -> None:
    http = client(server)
    for params, field in (
        ({"text": "x", "k": "0"}, "k"),
        ({"text": "x", "k": "many"}, "k"),
        ({"text": "x", "kinds": "people"}, "kinds"),
        ({"text": "x", "min_score": "2"}, "min_score"),
        ({"text": "x", "mode": "hybrid", "min_score": "0.5"}, "min_score"),  # a check across two settings
        ({"text": "x", "mode": "sql"}, "mode"),
        ({"text": "x", "classes": "red circle,unicorn"}, "classes"),
        ({"text": ""}, "text"),
        ({"text": "x" * 1001}, "text"),
        ({"text": "x", "where": "1=1"}, "where"),
        ({"text": "x", "embedder": "openai/clip-vit-large-patch14"}, "embedder"),
    ):
        response = http.get("/api/search", params=params)
        assert 400 <= response.status_code < 500, (params, response.status_code)
        assert response.json()["field"] == field, (params, response.json())
        assert response.json()["error"].startswith(f"{field}: "), (params, response.json())
    assert http.get("/api/images/" + "a" * 64, params={"size": "99999"}).json()["field"] == "size"


def test_uploads_over_the_limit_bombs_and_non_photos_are_refused_and_the_server_stays_up(guarded: str) -> None:
    http = client(guarded, headers={"Authorization": "Bearer open-sesame"})

    def upload(data: bytes, **fields: str) -> tuple[int, dict]:
        response = http.post("/api/search", data=fields, files={"image": ("upload.png", data)})
        return response.status_code, response.json()

    status, body = upload(b"\xff" * 300_000)
    assert status == 413 and body["field"] == "image" and "over the upload limit of 200,000" in body["error"]
    # Under the declared-size bound (the limit plus room for the form's other fields), over the limit itself.
    status, body = upload(b"\xff" * 230_000)
    assert status == 413 and body["field"] == "image" and "230,000 bytes is over the upload limit" in body["error"]
    status, body = upload(_png((20_000, 20_000), "1"))  # 400 megapixels in 50 KB
    assert status == 400 and body["field"] == "image" and "decompression bomb" in body["error"].lower()
    status, body = upload(b"just some text, not a photo")
    assert status == 400 and body["field"] == "image" and "not a decodable image" in body["error"]
    status, body = upload(b"")
    assert status == 400 and body["field"] == "image"
    photo = _png((64, 48))
    for box in ("0,0,65,10", "10,10,5,20", "-1,0,10,10", "1,2,3", "a,b,c,d", "nan,0,10,10"):
        status, body = upload(photo, box=box)
        assert status == 400 and body["field"] == "box", (box, body)
    status, body = upload(photo, box="0,0,64,48")
    assert status == 200 and "hits" in body
    assert http.get("/api/index").status_code == 200


def test_a_body_declared_too_large_is_refused_before_it_is_read_and_one_of_unknown_size_too(guarded: str) -> None:
    parsed = urlparse(guarded)
    for headers in (
        {"Content-Length": "50000000", "Content-Type": "multipart/form-data; boundary=x"},
        {"Transfer-Encoding": "chunked", "Content-Type": "multipart/form-data; boundary=x"},
    ):
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        connection.putrequest("POST", "/api/search")
        for name, value in {**headers, "Authorization": "Bearer open-sesame"}.items():
            connection.putheader(name, value)
        connection.endheaders()  # and not one byte of the 50 MB: the answer comes without them
        response = connection.getresponse()
        answer = json.loads(response.read())
        assert answer["field"] == "image"
        if "Content-Length" in headers:
            assert response.status == 413 and "50,000,000 bytes is over the upload limit" in answer["error"]
        else:
            assert response.status == 411 and "Content-Length" in answer["error"]
        connection.close()
