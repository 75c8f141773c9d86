"""What a search server refuses: requests sent to another name or without its token, paths instead of ids,
uploads that are not photos or that would decode past the pixel cap; and the headers that keep answers private."""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image

from components.serve.hosts import HostCheck
from components.serve.searcher import Searcher
from schemas.serve import ServeParams
from tests.serve.conftest import WorldIndex
from tests.serve.live import client, serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def guarded(searcher: Searcher, world_index: WorldIndex) -> Iterator[str]:
    params = ServeParams(db_uri=world_index.db_uri, token="open-sesame", max_upload_mb=0.2, max_decoded_mb=8)
    with serving(searcher, params) as url:
        yield url


@pytest.fixture(scope="module")
def named(searcher: Searcher, world_index: WorldIndex) -> Iterator[str]:
    """A server whose operator added two names it may be reached by."""
    params = ServeParams(db_uri=world_index.db_uri, device="cpu", allowed_hosts=["search.example", "[FD00::5]"])
    with serving(searcher, params) as url:
        yield url


# What tests/serve expects a server to send with every answer; written out, so that a looser policy fails here.
CONTENT_SECURITY = "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'"
_REFUSED_HOSTS = (
    "evil.example",
    "evil.example:{port}",
    "localhost.evil.example",
    "evillocalhost",
    "evil-localhost:{port}",
    "127.0.0.1.evil.example",
    "search.example.evil.example",
    "evil.search.example",
    "127.0.0.2:{port}",  # loopback, but not the address this server is bound to
    "[::2]:{port}",
    "[::1",
    "localhost:{port}@evil.example",
    "",
)


def _sent_to(url: str, host: str | None, path: str = "/api/index", method: str = "GET") -> tuple[int, bytes]:
    """A request to the server at `url` carrying `host` as its Host header (None: no Host at all, as HTTP/1.0 may)."""
    parsed = urlparse(url)
    if host is None:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=30) as raw:
            raw.sendall(f"{method} {path} HTTP/1.0\r\n\r\n".encode())
            answer = b"".join(iter(lambda: raw.recv(65536), b""))
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), body
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    connection.putrequest(method, path, skip_host=True)
    connection.putheader("Host", host.format(port=parsed.port))
    if method == "POST":
        connection.putheader("Content-Length", "0")
    connection.endheaders()
    response = connection.getresponse()
    status, body = response.status, response.read()
    connection.close()
    return status, body


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
        # The whole token, compared whole: neither a part of it nor more than it passes.
        for wrong in ("open-sesam", "open-sesame!", "open-sesameopen-sesame", "", "OPEN-SESAME"):
            assert client(guarded).get(path, params={"token": wrong}).status_code == 401, wrong
            bearer = client(guarded).get(path, headers={"Authorization": f"Bearer {wrong}".strip()})
            assert bearer.status_code == 401, wrong
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
        ({"text": "x", "mode": "text", "min_score": "0.5"}, "min_score"),  # a check across two settings
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
    status, body = upload(_png((20_000, 20_000), "1"))  # 400 megapixels in 50 KB: past Pillow's own limit too
    assert status == 413 and body["field"] == "image" and "decompression bomb" in body["error"].lower()
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


def test_a_request_sent_to_another_name_is_refused_before_any_route(named: str, guarded: str) -> None:
    """DNS rebinding: a page on evil.example points its name at this server; its requests still say evil.example."""
    for host in _REFUSED_HOSTS:
        for method, path in (
            ("GET", "/"),
            ("GET", "/api/index"),
            ("GET", "/api/search?text=x"),
            ("GET", "/page/app.js"),
            ("GET", "/api/images/" + "a" * 64),
            ("GET", "/no/such/route"),  # refused as misdirected, not as missing: no route ran
            ("POST", "/api/search"),  # not a 411 or 422 about the form
        ):
            status, body = _sent_to(named, host, path, method)
            assert status == 421, (host, path, status)
            answer = json.loads(body)
            assert answer["field"] == "host" and "does not answer to that Host name" in answer["error"], answer
            assert b"cropsearch" not in body and b"hits" not in body
    # With a token, the name is checked first: a rebinding page is refused whatever it carries.
    status, _ = _sent_to(guarded, "evil.example", "/api/index?token=open-sesame")
    assert status == 421


def test_a_request_without_a_host_is_refused(named: str) -> None:
    status, body = _sent_to(named, None, "/api/index")
    assert status == 421 and json.loads(body)["field"] == "host"


def test_the_servers_own_names_and_the_operators_pass(named: str, server: str) -> None:
    for host in (
        "127.0.0.1:{port}",
        "127.0.0.1",
        "localhost:{port}",
        "localhost",
        "LocalHost:{port}",
        "[::1]:{port}",
        "[::1]",
        "[0:0:0:0:0:0:0:1]:{port}",
        "search.example",  # added by the operator (--allowed-hosts), with any port
        "Search.Example:443",
        "[fd00::5]:{port}",
    ):
        status, body = _sent_to(named, host)
        assert status == 200 and "images" in json.loads(body), (host, status)
    # An added name belongs to the server it was added to.
    assert _sent_to(server, "search.example")[0] == 421
    assert _sent_to(server, "localhost:{port}")[0] == 200


def test_the_address_a_server_is_bound_to_is_one_of_its_names(searcher: Searcher, world_index: WorldIndex) -> None:
    with serving(searcher, ServeParams(db_uri=world_index.db_uri, host="127.0.0.2")) as url:
        assert url.startswith("http://127.0.0.2:")
        assert _sent_to(url, "127.0.0.2:{port}")[0] == 200
        assert _sent_to(url, "127.0.0.1:{port}")[0] == 200
        assert _sent_to(url, "127.0.0.3:{port}")[0] == 421


def test_bound_to_every_address_a_server_answers_to_its_addresses_but_to_no_other_name() -> None:
    """An address typed as such cannot be rebound (rebinding needs a name): any address passes, names must be added."""
    for wildcard in ("0.0.0.0", "::"):
        check = HostCheck(wildcard, ["photos.lan"])
        assert check.allows("192.168.1.5:8800") and check.allows("[fe80::1]:8800") and check.allows("10.0.0.7")
        assert check.allows("photos.lan:8800") and check.allows("localhost")
        assert not check.allows("evil.example") and not check.allows("192.168.1.5.evil.example")
        assert not check.allows(None) and not check.allows("")
    one = HostCheck("192.168.1.5")
    assert one.allows("192.168.1.5:8800") and not one.allows("192.168.1.6:8800") and not one.allows("photos.lan")


def test_the_cli_flag_adds_names_and_refuses_what_is_not_a_name(world_index: WorldIndex) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "flows.cli", "serve", "--allowed-hosts", "http://evil.example/", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and refused.stderr.startswith("error: allowed_hosts: "), refused.stderr
    command = [sys.executable, "-m", "flows.cli", "serve", "--db", world_index.db_uri, "--port", "0", "--device", "cpu"]
    command += ["--allowed-hosts", "search.example", "--allowed-hosts", "one.example,two.example"]
    started = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        line = started.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("serving "), (line, started.stderr.read() if started.poll() is not None else "")  # type: ignore[union-attr]
        url = line.split(" at ")[1].split("/ ")[0]
        for host in ("search.example", "one.example:80", "two.example", "localhost:{port}"):
            assert _sent_to(url, host)[0] == 200, host
        assert _sent_to(url, "evil.example")[0] == 421
    finally:
        started.terminate()
        started.wait(timeout=30)


def test_pictures_of_a_token_protected_server_are_private_and_others_public(guarded: str, server: str) -> None:
    http = client(guarded, headers={"Authorization": "Bearer open-sesame"})
    hit = http.get("/api/search", params={"text": "a red circle", "kinds": "crop", "k": 1}).json()["hits"][0]
    for url in (hit["image_url"], hit["crop_url"]):
        private = http.get(url, params={"size": 32})
        assert private.status_code == 200 and private.headers["cache-control"].startswith("private"), url
        assert "public" not in private.headers["cache-control"]
        unchanged = http.get(url, params={"size": 32}, headers={"If-None-Match": private.headers["etag"]})
        assert unchanged.status_code == 304 and unchanged.headers["cache-control"].startswith("private")
        assert client(server).get(url, params={"size": 32}).headers["cache-control"].startswith("public")


def test_an_etag_names_the_size_so_one_size_is_never_taken_for_another(server: str) -> None:
    http = client(server)
    hit = http.get("/api/search", params={"text": "a green square", "kinds": "crop", "k": 1}).json()["hits"][0]
    for url in (hit["image_url"], hit["crop_url"]):
        small = http.get(url, params={"size": 32})
        assert small.status_code == 200
        large = http.get(url, params={"size": 128}, headers={"If-None-Match": small.headers["etag"]})
        assert large.status_code == 200 and large.headers["etag"] != small.headers["etag"]
        assert Image.open(io.BytesIO(large.content)).size != Image.open(io.BytesIO(small.content)).size


def test_every_answer_carries_the_content_security_policy(server: str, named: str, guarded: str) -> None:
    http = client(server)
    answers = [
        http.get("/"),
        http.get("/page/app.js"),
        http.get("/api/index"),
        http.get("/api/search", params={"text": "x", "k": "0"}),  # a refusal
        http.get("/api/images/" + "a" * 64),  # a 404
    ]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 422, 404]
    answers.append(client(named).get("/api/index", headers={"Host": "evil.example"}))
    answers.append(client(guarded).get("/"))  # without its token
    assert [answer.status_code for answer in answers[-2:]] == [421, 401]
    for answer in answers:
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY, answer.url
        assert answer.headers["x-content-type-options"] == "nosniff", answer.url


def test_an_upload_of_too_many_pixels_is_refused_before_decoding(server: str, guarded: str) -> None:
    """A 9,400 x 9,400 1-bit PNG is ~11 KB and, decoded, 337 MiB (issue 40): over the default cap of 256 MiB."""
    many = _png((9_400, 9_400), "1")
    assert len(many) < 30_000
    response = client(server).post("/api/search", files={"image": ("many.png", many)})
    body = response.json()
    assert response.status_code == 413 and body["field"] == "image", body
    assert body["error"].startswith("image: 'many.png': too many pixels: 9,400 x 9,400 would take 337 MiB"), body
    assert client(server).get("/api/index").status_code == 200
    # The operator's cap (--max-decoded-mb 8 on `guarded`), at 4 bytes a pixel, whatever the file's mode.
    http = client(guarded, headers={"Authorization": "Bearer open-sesame"})
    under = http.post("/api/search", files={"image": ("under.png", _png((1448, 1448), "1"))})
    assert under.status_code == 200, under.text  # 8,386,816 bytes decoded: under 8 MiB
    over = http.post("/api/search", files={"image": ("over.png", _png((1449, 1448), "1"))})
    assert over.status_code == 413 and "over the cap of 8 MiB" in over.json()["error"], over.text
