"""A real uvicorn serving a cropsearch app on its params' host (127.0.0.1 unless told), a free port, in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from components.serve.api import create_app
from components.serve.searcher import Searcher
from components.serve.server import bound_socket, url_of
from schemas.serve import ServeParams


@contextmanager
def serving(searcher: Searcher, params: ServeParams) -> Iterator[str]:
    """The base URL of the app over `searcher`, served until the block ends."""
    listening = bound_socket(params.host, 0)
    config = uvicorn.Config(create_app(searcher, params), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield url_of(listening)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listening.close()


def client(url: str, **options: object) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60, trust_env=False, **options)  # type: ignore[arg-type]
