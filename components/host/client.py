"""The caller's side: hand a command and this process's terminal to a warm host, start one if none runs.

Every path that cannot use a host (no socket support, a host that will not start, a host busy with
another command) returns None, and the caller runs the command itself: a host only ever makes a
command faster, never makes it fail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from components.host.address import HostAddress
from components.host.protocol import CANCEL, MessageReader, send_message

StartHost = Callable[[], subprocess.Popen[bytes]]


def _connect(address: HostAddress) -> socket.socket | None:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(address.socket))
    except OSError:  # no socket file, or one a dead host left behind
        connection.close()
        return None
    return connection


def _connected_host(address: HostAddress, start_host: StartHost, wait_seconds: float) -> socket.socket | None:
    """A connection to the running host, or to one started now; None if none came up in time."""
    connection = _connect(address)
    if connection is not None:
        return connection
    process = start_host()
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        connection = _connect(address)
        if connection is not None:
            return connection
        # Exit status 0: another caller's host took the lock first; wait for its socket instead.
        if process.poll() not in (None, 0):
            return None
        time.sleep(0.05)
    return None


def _terminal_fds() -> Iterator[int]:
    """This process's stdin, stdout and stderr; /dev/null in place of one that is closed."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            yield fd
        except OSError:
            yield os.open(os.devnull, os.O_RDWR)


@contextlib.contextmanager
def _cancels_on_interrupt(connection: socket.socket, cancelled: list[int]) -> Iterator[None]:
    """Ctrl-C, a hang-up or a kill of this process cancels the host's command instead of orphaning it."""

    def cancel(signum: int, frame: Any) -> None:
        cancelled.append(signum)
        with contextlib.suppress(OSError):
            connection.sendall(CANCEL)

    caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, cancel) for signum in caught}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_on_host(address: HostAddress, argv: list[str], start_host: StartHost, wait_seconds: float) -> int | None:
    """Run `argv` on the host at `address` with this process's terminal: its exit status, or None to run here."""
    connection = _connected_host(address, start_host, wait_seconds)
    if connection is None:
        return None
    with connection:
        reader = MessageReader(connection)
        try:
            send_message(connection, {"op": "run", "argv": argv, "cwd": os.getcwd()}, fds=list(_terminal_fds()))
            reply, _ = reader.next_message()
        except OSError:
            return None
        if reply is None or not reply.get("started"):
            return None  # busy, or gone before starting: nothing ran yet
        cancelled: list[int] = []
        with _cancels_on_interrupt(connection, cancelled):
            try:
                reply, _ = reader.next_message()
            except OSError:
                reply = None
        if reply is None and cancelled:
            return 130
        if reply is None:
            print(f"cropsearch: the warm host stopped during the command; its log: {address.log}", file=sys.stderr)
            return 1
        return int(reply["exit"])


def ask_host(address: HostAddress, op: str) -> dict[str, Any] | None:
    """Send `op` ("status" or "stop") to the host at `address`; its answer, or None if none is listening."""
    connection = _connect(address)
    if connection is None:
        return None
    with connection:
        try:
            send_message(connection, {"op": op})
            answer, _ = MessageReader(connection).next_message()
        except OSError:
            return None
    return answer


def live_hosts(folder: Path) -> list[HostAddress]:
    return [HostAddress(path.parent, path.stem) for path in sorted(folder.glob("*.sock"))]


def ask_hosts(folder: Path, op: str) -> list[dict[str, Any]]:
    """Send `op` to every live host in `folder`; their answers."""
    answers = [(address, ask_host(address, op)) for address in live_hosts(folder)]
    return [{"socket": str(address.socket), **answer} for address, answer in answers if answer is not None]
