"""The host's side: listen on the user's socket, run one command at a time on the caller's terminal.

A command runs on this process's main thread with file descriptors 0, 1 and 2 pointed at the
caller's own (passed over the socket), so everything it prints, tqdm bars and Prefect's log lines
included, reaches the person's terminal or pipe as if the command were their own process. While a
command runs, another caller is told "busy" at once and runs the command itself. A command the
caller cancels (Ctrl-C, or the caller dying) is interrupted and the host exits after it: threads
it left half way are not worth trusting with the next command.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from components.host.address import HostAddress
from components.host.protocol import MessageReader, send_message

RunCommand = Callable[[list[str]], int]
_TERMINAL_FDS = (0, 1, 2)
# How long a cancelled command may take to unwind before the host ends itself and it.
CANCEL_GRACE_SECONDS = 10.0
# How long a caller has to send its request once connected.
REQUEST_SECONDS = 5.0


@dataclass
class _Request:
    connection: socket.socket
    reader: MessageReader
    argv: list[str]
    fds: list[int]


@dataclass
class _HostState:
    environment: str
    started: float = field(default_factory=time.time)
    commands_run: int = 0
    last_used: float = field(default_factory=time.monotonic)
    stopping: threading.Event = field(default_factory=threading.Event)
    busy: threading.Lock = field(default_factory=threading.Lock)


@contextlib.contextmanager
def host_lock(address: HostAddress) -> Iterator[bool]:
    """Hold the lock only a live host for `address` holds; yields False when another host already does."""
    with open(address.lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _peer_uid(connection: socket.socket) -> int:
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", credentials)[1]


def _listening_socket(address: HostAddress) -> socket.socket:
    """Bind the host's socket (the caller holds the host lock, so a file left there is a dead host's)."""
    address.socket.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)  # the socket is born 0600, never briefly open to others
    try:
        listener.bind(str(address.socket))
    finally:
        os.umask(previous)
    listener.listen(16)
    return listener


def _status(state: _HostState, address: HostAddress) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "key": address.key,
        "cwd": os.getcwd(),
        "environment": state.environment,
        "started": state.started,
        "commands_run": state.commands_run,
        "idle_seconds": round(time.monotonic() - state.last_used, 1),
        "busy": state.busy.locked(),
    }


def _accept_forever(
    listener: socket.socket, address: HostAddress, state: _HostState, runs: queue.Queue[_Request | None]
) -> None:
    """Answer status and stop here; hand a run to the main thread, or say busy while one runs."""
    while not state.stopping.is_set():
        try:
            connection, _ = listener.accept()
        except OSError:
            return  # the listener was closed: the host is stopping
        fds: list[int] = []
        try:
            if _peer_uid(connection) != os.getuid():
                connection.close()
                continue
            connection.settimeout(REQUEST_SECONDS)  # a caller that connects and says nothing stalls nobody
            reader = MessageReader(connection)
            message, fds = reader.next_message(max_fds=len(_TERMINAL_FDS))
            op = message.get("op") if isinstance(message, dict) else None
            argv = message.get("argv") if isinstance(message, dict) else None
            well_formed = op == "run" and isinstance(argv, list) and len(fds) == len(_TERMINAL_FDS)
            if well_formed and state.busy.acquire(blocking=False):
                connection.settimeout(None)
                runs.put(_Request(connection, reader, [str(arg) for arg in argv], fds))  # type: ignore[union-attr]
                continue
            for fd in fds:
                os.close(fd)
            fds = []
            if op == "run":
                send_message(connection, {"busy": True})
            elif op == "status":
                send_message(connection, _status(state, address))
            elif op == "stop":
                send_message(connection, {"stopping": True})
                state.stopping.set()
                runs.put(None)  # wakes the main thread to stop
            connection.close()
        except Exception:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            connection.close()


@contextlib.contextmanager
def _terminal_of(fds: list[int]) -> Iterator[None]:
    """Point this process's stdin, stdout and stderr at the caller's for the block, then back at the host's."""
    saved = [os.dup(fd) for fd in _TERMINAL_FDS]
    _flush(sys.stdout, sys.stderr)
    try:
        for fd, theirs in zip(_TERMINAL_FDS, fds, strict=True):
            os.dup2(theirs, fd)
            os.close(theirs)
        yield
    finally:
        _flush(sys.stdout, sys.stderr)
        for fd, ours in zip(_TERMINAL_FDS, saved, strict=True):
            os.dup2(ours, fd)
            os.close(ours)


def _flush(*streams: IO[str]) -> None:
    for stream in streams:
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def _run(request: _Request, run_command: RunCommand, state: _HostState) -> bool:
    """Run one command on the caller's terminal; False when it was cancelled (the host then exits)."""
    ending = threading.Lock()
    ended = threading.Event()
    cancelled = threading.Event()

    def watch_for_cancel() -> None:
        with contextlib.suppress(OSError, ValueError):
            request.reader.next_line()  # "cancel", or the caller hanging up
        with ending:
            if ended.is_set():
                return
            cancelled.set()
            # A real SIGINT, as Ctrl-C in a process of its own: it also wakes a blocking system call.
            os.kill(os.getpid(), signal.SIGINT)
        if not ended.wait(CANCEL_GRACE_SECONDS):
            # Work on other threads (a model's forward pass) ignores the interrupt: end the host and
            # its children (the temporary Prefect API) now; a killed run is one the index recovers from.
            with contextlib.suppress(OSError):
                send_message(request.connection, {"exit": 130})
            if os.getpgid(0) == os.getpid():  # a session of its own, as the launcher starts it
                os.killpg(os.getpid(), signal.SIGKILL)
            os._exit(130)

    try:
        send_message(request.connection, {"started": True})
    except OSError:  # the caller left before its command started: nothing to run
        for fd in request.fds:
            os.close(fd)
        request.connection.close()
        return True
    threading.Thread(target=watch_for_cancel, name="host-cancel-watch", daemon=True).start()
    status = 130
    try:
        with _terminal_of(request.fds):
            try:
                status = run_command(request.argv)
            finally:
                with ending:
                    ended.set()
    except KeyboardInterrupt:
        status = 130
    state.commands_run += 1
    with contextlib.suppress(OSError):
        send_message(request.connection, {"exit": 130 if cancelled.is_set() else status})
    request.connection.close()
    return not cancelled.is_set()


def serve(address: HostAddress, run_command: RunCommand, idle_seconds: float, environment: str) -> None:
    """Serve commands until `idle_seconds` pass without one, a caller stops the host or cancels a command.

    The caller holds `host_lock(address)` and has already warmed up what commands need; `environment`
    is its `environment_digest`, reported in its status so a newer host can tell it supersedes this one.
    """
    state = _HostState(environment)
    runs: queue.Queue[_Request | None] = queue.Queue()
    listener = _listening_socket(address)
    threading.Thread(
        target=_accept_forever, args=(listener, address, state, runs), name="host-accept", daemon=True
    ).start()
    try:
        while not state.stopping.is_set():
            try:
                request = runs.get(timeout=max(0.0, idle_seconds - (time.monotonic() - state.last_used)))
            except queue.Empty:
                if not state.busy.acquire(blocking=False):
                    continue  # a run was just accepted; take it
                break
            if request is None:
                break
            try:
                if not _run(request, run_command, state):
                    break
            except KeyboardInterrupt:
                break  # a cancel landed after the command ended
            finally:
                state.last_used = time.monotonic()
                state.busy.release()
    finally:
        state.stopping.set()
        address.socket.unlink(missing_ok=True)
        listener.close()
