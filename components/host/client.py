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
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from components.host.address import HostAddress
from components.host.protocol import CANCEL, STANDARD_FDS, CallerProcess, MessageReader, send_message

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


@contextlib.contextmanager
def _standard_streams() -> Iterator[tuple[list[int], frozenset[int]]]:
    """This process's stdin, stdout and stderr to hand over, and which of them it was started without.

    A closed one is held, until the command ends, by /dev/null opened the other way round, so that
    using it fails (EBADF) as using a closed one does. Held before the socket is made, since a socket
    takes the lowest free number: made first, it became the command's stdout (`cropsearch ... >&-`),
    and the host read the command's output as a cancel (exit 130).
    """
    closed = []
    for fd in STANDARD_FDS:
        try:
            os.fstat(fd)
        except OSError:
            stand_in = os.open(os.devnull, os.O_WRONLY if fd == 0 else os.O_RDONLY)
            if stand_in != fd:  # the lower numbers are open (checked in order), so this is rare
                os.dup2(stand_in, fd)
                os.close(stand_in)
            closed.append(fd)
    try:
        yield list(STANDARD_FDS), frozenset(closed)
    finally:
        for fd in closed:  # closed again, for a command that runs here after all
            os.close(fd)


def _this_process(environment: Mapping[str, str], closed: frozenset[int]) -> CallerProcess:
    """What the command would inherit from this process: the host takes it on for the command."""
    umask = os.umask(0o077)  # the only way to read it; this process has one thread, so nothing sees the 0o077
    os.umask(umask)
    return CallerProcess(
        cwd=os.getcwd(),
        environment=dict(environment),
        umask=umask,
        nice=os.getpriority(os.PRIO_PROCESS, 0),
        affinity=frozenset(os.sched_getaffinity(0)),
        closed=closed,
    )


# Signals that end a `cropsearch` process: each is passed on as a cancel, and the client waits for the
# command to unwind (its "cancelled" lines reach the terminal before the prompt does).
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _cancels_on_signal(connection: socket.socket, cancelled: list[int]) -> Iterator[None]:
    """Ctrl-C, a hang-up or a kill of this process cancels the host's command instead of orphaning it."""

    def cancel(signum: int, frame: Any) -> None:
        cancelled.append(signum)
        with contextlib.suppress(OSError):
            connection.sendall(CANCEL)

    previous = {signum: signal.signal(signum, cancel) for signum in FORWARDED_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _end_as_signalled(signum: int) -> int:
    """End this process by `signum`, as the command's own process would have ended: a parent sees the signal.

    Ctrl-C is the exception: exit status 130, what a shell reports for it and what commands exit with.
    """
    if signum != signal.SIGINT:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    return 128 + signum


def run_on_host(
    address: HostAddress, argv: list[str], environment: Mapping[str, str], start_host: StartHost, wait_seconds: float
) -> int | None:
    """Run `argv` on the host at `address` as this process would: its exit status, or None to run it here.

    `environment` is this process's own; the host takes it on with the umask, nice value, CPU
    affinity, working directory and standard streams (`CallerProcess`).
    """
    with _standard_streams() as (fds, closed):
        caller = _this_process(environment, closed)
        connection = _connected_host(address, start_host, wait_seconds)
        if connection is None:
            return None
        with connection:
            return _exchange(connection, address, argv, caller, fds)


def _exchange(
    connection: socket.socket, address: HostAddress, argv: list[str], caller: CallerProcess, fds: list[int]
) -> int | None:
    reader = MessageReader(connection)
    cancelled: list[int] = []
    # Caught from before the request: a signal that lands before the host answers is still a cancel.
    with _cancels_on_signal(connection, cancelled):
        try:
            send_message(connection, {"op": "run", "argv": argv, **caller.message()}, fds=fds)
            reply, _ = reader.next_message()
        except OSError:
            reply = None
        if reply is not None and reply.get("started"):
            try:
                reply, _ = reader.next_message()
            except OSError:
                reply = None
            started = True
        else:
            started = False  # busy, refused, or gone before starting: nothing ran yet
    if cancelled:
        return _end_as_signalled(cancelled[0])
    if not started:
        return None
    if reply is None:
        if sys.stderr is not None:  # None when this process was started without one
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
