"""What a client and a host say to each other: one JSON object per line over a Unix stream socket.

client -> host   {"op": "run", "argv": [...], "cwd": "...", "environment": {...}, "umask": 18,
                 "nice": 0, "affinity": [0, 1], "closed": [1]} with the client's stdin, stdout and
                 stderr passed along (SCM_RIGHTS), then "cancel" if the person presses Ctrl-C
                 or the client is sent SIGTERM or SIGHUP
                 {"op": "status"} | {"op": "stop"}
host -> client   {"started": true} then {"exit": <status>}, or {"busy": true}, or
                 {"refused": "<why>"} (a caller this host cannot stand in for), or the status object
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any

STANDARD_FDS = (0, 1, 2)

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


@dataclass(frozen=True)
class CallerProcess:
    """What a command inherits from the process it runs in, besides code: the caller's, which the host takes on.

    `closed` names the standard streams (0, 1, 2) the caller was started without: the command sees
    them as Python shows a process started without them (`sys.stdout` is None), never as a cancel.
    """

    cwd: str
    environment: dict[str, str]
    umask: int
    nice: int
    affinity: frozenset[int]
    closed: frozenset[int]

    def message(self) -> dict[str, Any]:
        return {
            "cwd": self.cwd,
            "environment": self.environment,
            "umask": self.umask,
            "nice": self.nice,
            "affinity": sorted(self.affinity),
            "closed": sorted(self.closed),
        }

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> CallerProcess:
        """The caller described in a "run" message; ValueError names the first field that is missing or wrong."""
        environment = message.get("environment")
        if not isinstance(environment, dict) or not all(
            isinstance(name, str) and isinstance(value, str) for name, value in environment.items()
        ):
            raise ValueError("environment: a mapping of names to strings")
        cwd, umask, nice = message.get("cwd"), message.get("umask"), message.get("nice")
        if not isinstance(cwd, str):
            raise ValueError("cwd: a path")
        if not isinstance(umask, int) or not 0 <= umask <= 0o777:
            raise ValueError("umask: 0 to 0o777")
        if not isinstance(nice, int):
            raise ValueError("nice: a number")
        affinity, closed = message.get("affinity"), message.get("closed")
        if not isinstance(affinity, list) or not affinity or not all(isinstance(cpu, int) for cpu in affinity):
            raise ValueError("affinity: CPU numbers")
        if not isinstance(closed, list) or not set(closed) <= set(STANDARD_FDS):
            raise ValueError("closed: some of 0, 1, 2")
        return cls(cwd, dict(environment), umask, nice, frozenset(affinity), frozenset(closed))
