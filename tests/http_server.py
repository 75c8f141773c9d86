"""A real HTTP server on 127.0.0.1 serving byte strings, with Range support and fault injection."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LocalHttpServer:
    """Serve `files[path] = bytes`. Set `drop_after[path] = n` to cut the next transfer after n bytes,
    `redirects[path] = url` to answer 302 with that location, `bytes_per_second[path] = n` to send it
    no faster than that, and add a path to `ignore_range` to answer it whole, as servers without
    Range support do."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.drop_after: dict[str, int] = {}
        self.bytes_per_second: dict[str, int] = {}
        self.ignore_range: set[str] = set()
        self.requests: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_HEAD(self) -> None:
                self._respond(send_body=False)

            def do_GET(self) -> None:
                self._respond(send_body=True)

            def _respond(self, send_body: bool) -> None:
                server.requests.append({"method": self.command, "path": self.path, **dict(self.headers)})
                if self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                ranged = send_body and self.path not in server.ignore_range
                if ranged and (wanted := self.headers.get("Range", "")).startswith("bytes="):
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if not send_body:
                    return
                cut = server.drop_after.pop(self.path, None)
                self._send(body[start:cut] if cut is not None else body[start:])
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

            def _send(self, data: bytes) -> None:
                rate = server.bytes_per_second.get(self.path)
                piece = max(1, len(data) if rate is None else rate // 20)  # an empty body: one empty step
                try:
                    for offset in range(0, len(data), piece):
                        self.wfile.write(data[offset : offset + piece])
                        if rate is not None:
                            time.sleep(piece / rate)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client went away mid-transfer (a killed download)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
