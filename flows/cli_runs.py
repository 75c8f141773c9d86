"""How `cropsearch` runs a flow as a command: Prefect's lines on the terminal only when asked, a server that is
gone replaced by a temporary API, and Ctrl-C one line and exit 130 within seconds."""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import click

HOSTED = "hosted"  # the click context's `obj` when a warm host runs the command (`flows/host.py`)
INTERRUPT_GRACE_SECONDS = 3.0
Result = TypeVar("Result")


def quiet_prefect_defaults() -> None:
    # Prefect without a server starts a temporary one; its telemetry only fails (noisily) offline.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def run_flow(flow: Callable[..., Result], verbose: bool = False, **parameters: Any) -> Result:
    """Run a flow as the command's one run: Prefect's lines on the terminal only if `verbose` (warnings and
    errors always), no heartbeats without a server (they would only slow it), and Ctrl-C one line and exit 130."""
    from flows.runners import an_api_that_answers, console_lines, no_heartbeats_without_a_server

    # A warm host ends a cancelled command itself (and itself, if a model's work holds on).
    hosted = click.get_current_context().obj == HOSTED
    try:
        with (
            an_api_that_answers(lambda line: click.echo(line, err=True)),
            no_heartbeats_without_a_server(),
            console_lines(verbose),
            nullcontext() if hosted else _interruptible(),
        ):
            return flow(**parameters)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C ends the command within `INTERRUPT_GRACE_SECONDS`, whatever its threads are doing.

    Ctrl-C interrupts the main thread only: Prefect then marks the run crashed and waits for the
    chunk's model work on its worker thread, which would hold the exit for as long as the chunk
    takes (minutes). Past the grace, the exit handlers run (they stop Prefect's temporary API) and
    the process ends. What the run wrote is durable chunk by chunk; the next run goes on from there,
    as after a kill.

    The grace is counted by a thread started beforehand, woken through the signal's wakeup fd: the C
    handler writes to it at once, where a Python handler runs only when the main thread next runs
    Python (never, if it is blocked in C), and starting a timer thread from inside a handler can
    deadlock on threading's own lock if the signal lands while the main thread holds it.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return

    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    watcher = threading.Thread(target=_count_down_after_ctrl_c, args=(read_fd,), name="ctrl-c-grace", daemon=True)
    watcher.start()
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    try:
        yield
    finally:
        # The interrupt has unwound out of the block (its threads done): the command ends itself.
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGINT, previous_handler)
        os.write(write_fd, bytes([_UNWOUND]))
        watcher.join(timeout=1)
        os.close(write_fd)


_UNWOUND = 0  # no signal has the number 0


def _count_down_after_ctrl_c(read_fd: int) -> None:
    """Wait for a Ctrl-C's byte on the wakeup fd; then give the command the grace to unwind, or end it."""
    deadline: float | None = None
    try:
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                _exit_now(130)
            readable, _, _ = select.select([read_fd], [], [], left)
            byte = os.read(read_fd, 1) if readable else b""
            if readable and (not byte or byte[0] == _UNWOUND):
                return
            if byte and byte[0] == signal.SIGINT and deadline is None:
                deadline = time.monotonic() + INTERRUPT_GRACE_SECONDS
    finally:
        os.close(read_fd)


def _exit_now(status: int) -> None:
    import atexit

    click.echo("interrupted", err=True)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
