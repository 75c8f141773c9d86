"""How `cropsearch` runs a flow as a command: Prefect's lines on the terminal only when asked, a server that is
gone replaced by a temporary API, and Ctrl-C one line and exit 130 within seconds."""

from __future__ import annotations

import os
import signal
import sys
import threading
import types
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
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return

    # Once the interrupt has unwound out of the block (its threads done), the command ends itself: no exit then.
    deadline = threading.Timer(INTERRUPT_GRACE_SECONDS, _exit_now, args=(130,))
    deadline.daemon = True

    def interrupted(signum: int, frame: types.FrameType | None) -> None:
        if not deadline.is_alive():
            deadline.start()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        deadline.cancel()
        signal.signal(signal.SIGINT, previous)


def _exit_now(status: int) -> None:
    import atexit

    click.echo("interrupted", err=True)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
