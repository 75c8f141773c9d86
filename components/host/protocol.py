"""What a client and a host say to each other: one JSON object per line over a Unix stream socket.

client -> host   {"op": "run", "argv": [...], "cwd": "..."} with the client's stdin, stdout and
                 stderr passed along (SCM_RIGHTS), then "cancel" if the person presses Ctrl-C
                 {"op": "status"} | {"op": "stop"}
host -> client   {"started": true} then {"exit": <status>}, or {"busy": true}, or the status object
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

CANCEL = b"cancel\n"
# A command's arguments are small; this only bounds what a confused peer can make the other buffer.
MAX_MESSAGE_BYTES = 1 << 20


def send_message(connection: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode() + b"\n"
    if fds:
        socket.send_fds(connection, [data], fds)
    else:
        connection.sendall(data)


class MessageReader:
    """Reads one line-delimited message at a time from a connection, keeping what arrived after it."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self.buffer = b""

    def next_line(self, max_fds: int = 0) -> tuple[bytes | None, list[int]]:
        """The next line and any file descriptors that came with it; (None, []) when the peer hung up first."""
        fds: list[int] = []
        while b"\n" not in self.buffer:
            if max_fds and not fds:
                chunk, fds, _, _ = socket.recv_fds(self.connection, 65536, max_fds)
            else:
                chunk = self.connection.recv(65536)
            if not chunk:
                for fd in fds:
                    os.close(fd)
                return None, []
            self.buffer += chunk
            if len(self.buffer) > MAX_MESSAGE_BYTES:
                raise ValueError("a host message over 1 MiB")
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n", list(fds)

    def next_message(self, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
        line, fds = self.next_line(max_fds)
        return (None, []) if line is None else (json.loads(line), fds)
