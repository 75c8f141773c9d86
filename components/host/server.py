"""The host's side: listen on the user's socket, run one command at a time as the caller's own process would.

A command runs on this process's main thread with file descriptors 0, 1 and 2 pointed at the
caller's own (passed over the socket), so everything it prints, tqdm bars and Prefect's log lines
included, reaches the person's terminal or pipe as if the command were their own process. While a
command runs, another caller is told "busy" at once and runs the command itself. A command the
caller cancels (Ctrl-C, or the caller dying) is interrupted and the host exits after it: threads
it left half way are not worth trusting with the next command.

Commands run in this process, not in a child per command: a child would have to be forked (after
torch and LanceDB have started threads, which PITFALLS 2 forbids) or start cold. So the host takes
on, for each command and then gives back, what a process inherits from its parent: the umask, the
CPU affinity (of every thread), the terminal's variables and closed standard streams. What it
cannot give back it does not take: the nice value (an unprivileged process cannot lower its own)
is in the host's key instead, and a caller that differs from the host in it, or in anything else
the key holds, is refused and runs the command itself.
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
from pathlib import Path
from typing import IO, Any

from components.host.address import VOLATILE_VARIABLES, HostAddress, environment_digest
from components.host.protocol import STANDARD_FDS, CallerProcess, MessageReader, send_message

RunCommand = Callable[[list[str]], int]
_TERMINAL_FDS = STANDARD_FDS
_STREAM_NAMES = ("stdin", "stdout", "stderr")
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
    caller: CallerProcess


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
                try:
                    caller = CallerProcess.from_message(message)  # type: ignore[arg-type]
                except ValueError:
                    state.busy.release()
                    raise
                connection.settimeout(None)
                runs.put(_Request(connection, reader, [str(arg) for arg in argv], fds, caller))  # type: ignore[union-attr]
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
def _terminal_of(fds: list[int], closed: frozenset[int]) -> Iterator[None]:
    """Point this process's stdin, stdout and stderr at the caller's for the block, then back at the host's.

    A stream the caller was started without is None for the command, as Python makes it in a process
    started so: printing to it does nothing, and nothing the command writes is taken for anything else.
    The host's stream objects are put back afterwards, whatever the command left there (click swaps
    in its own after a broken pipe).
    """
    saved = [os.dup(fd) for fd in _TERMINAL_FDS]
    streams = (sys.stdin, sys.stdout, sys.stderr)
    _flush(sys.stdout, sys.stderr)
    try:
        for fd, theirs in zip(_TERMINAL_FDS, fds, strict=True):
            os.dup2(theirs, fd)
            os.close(theirs)
        for fd in closed:
            setattr(sys, _STREAM_NAMES[fd], None)
        yield
    finally:
        sys.stdin, sys.stdout, sys.stderr = streams
        _flush(sys.stdout, sys.stderr)
        for fd, ours in zip(_TERMINAL_FDS, saved, strict=True):
            os.dup2(ours, fd)
            os.close(ours)


@dataclass(frozen=True)
class _OwnProcess:
    """What the host gives back to itself after a command: its umask, CPU affinity and terminal variables."""

    umask: int
    affinity: frozenset[int]
    variables: dict[str, str | None]


def _refusal(caller: CallerProcess, environment: str) -> str | None:
    """Why this host cannot stand in for `caller`'s own process, or None when it can.

    The caller's key says as much already; checked here too, so that no caller ever gets a host that
    differs from its own process (a host reniced since it started, a client that computed another key).
    """
    if environment_digest(sys.executable, caller.environment, Path(caller.cwd), caller.nice) != environment:
        return "another environment, working directory or nice value"
    own_nice = os.getpriority(os.PRIO_PROCESS, 0)  # now: someone may have reniced the host since it started
    if caller.nice != own_nice:
        return f"nice {caller.nice}, and this host runs at nice {own_nice}"
    return None


def _set_affinity(cpus: frozenset[int]) -> None:
    """Linux keeps a CPU affinity per thread: set it on every thread, since a command's work runs on several."""
    for thread in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(thread), cpus)


def _set_variables(variables: dict[str, str | None]) -> None:
    # The process environment is what a command (and every child it starts) reads: here it is the point.
    for name, value in variables.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _become(caller: CallerProcess) -> _OwnProcess:
    """Take on the caller's umask, CPU affinity and terminal variables; what to give back after the command.

    OSError when the caller's CPUs are none this process may use: the caller then runs the command itself.
    """
    own_affinity = frozenset(os.sched_getaffinity(0))
    try:
        _set_affinity(caller.affinity)
    except OSError:
        _set_affinity(own_affinity)
        raise
    own_variables = {name: os.environ.get(name) for name in VOLATILE_VARIABLES}
    _set_variables({name: caller.environment.get(name) for name in VOLATILE_VARIABLES})
    return _OwnProcess(os.umask(caller.umask), own_affinity, own_variables)


def _give_back(own: _OwnProcess) -> None:
    os.umask(own.umask)
    _set_affinity(own.affinity)  # threads the command started too: they serve the next command
    _set_variables(own.variables)


def _flush(*streams: IO[str]) -> None:
    for stream in streams:
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def _run(request: _Request, run_command: RunCommand, state: _HostState) -> bool:
    """Run one command as the caller's own process would; False when it was cancelled (the host then exits)."""
    refusal = _refusal(request.caller, state.environment)
    own = None
    if refusal is None:
        try:
            own = _become(request.caller)
        except OSError as error:
            refusal = f"cannot take on the caller's CPU affinity: {error}"
    if own is None:
        with contextlib.suppress(OSError):
            send_message(request.connection, {"refused": refusal})
        _hang_up(request)
        return True
    try:
        return _run_as_caller(request, run_command, state)
    finally:
        _give_back(own)


def _hang_up(request: _Request) -> None:
    for fd in request.fds:
        os.close(fd)
    request.connection.close()


def _run_as_caller(request: _Request, run_command: RunCommand, state: _HostState) -> bool:
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
        _hang_up(request)
        return True
    threading.Thread(target=watch_for_cancel, name="host-cancel-watch", daemon=True).start()
    status = 130
    try:
        with _terminal_of(request.fds, request.caller.closed):
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
    is its `environment_digest`: a caller whose own differs is refused, and it is reported in the
    status so a newer host can tell it supersedes this one.
    """
    # A cancel is a SIGINT to this process: it must raise KeyboardInterrupt here even when the host was
    # started by a process that ignores SIGINT (a script's background job; a test runner after Ray
    # started), since an ignored disposition is inherited across exec and Python leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
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
