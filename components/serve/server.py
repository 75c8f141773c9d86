"""Starting a search server: the searcher warmed up, a socket bound, uvicorn serving the app on it."""

from __future__ import annotations

import socket

import uvicorn

from components.serve.api import create_app
from components.serve.searcher import Searcher
from schemas.serve import ServeParams
from schemas.settings import SearchSettings

_WARM_UP_TEXT = "a photo"


def bound_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one), bound before uvicorn starts so its URL is known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Named TCP, so that asyncio turns Nagle off on each accepted connection: without it, a kept-alive
    # connection waits ~40 ms (delayed ACK) for every answer written in two parts (headers, then body).
    listening = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        raise ValueError(f"port: cannot listen on {host}:{port}: {error.strerror or error}") from error
    listening.listen(128)
    return listening


def url_of(listening: socket.socket) -> str:
    host, port = listening.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def warmed_searcher(params: ServeParams) -> Searcher:
    """The searcher, with its embedder loaded and run once when the index is there (the first query is not slow)."""
    searcher = Searcher(params)
    if searcher.reader.embedder_spec_of_index() is not None or params.embedder is not None:
        searcher.search_text(_WARM_UP_TEXT, SearchSettings(k=1))
    return searcher


def prepared_server(params: ServeParams) -> tuple[uvicorn.Server, socket.socket]:
    """A uvicorn server for the app and the socket it will serve on; `server.run(sockets=[...])` serves."""
    app = create_app(warmed_searcher(params), params)
    listening = bound_socket(params.host, params.port)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    return uvicorn.Server(config), listening
