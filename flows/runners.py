"""Where the chunks' model work runs: a thread of this process, a Ray cluster, or a Dask cluster.

The index flow submits one task per chunk (detect, crop, embed) to the runner chosen by
`RunnerSettings.task_runner` and writes each result itself, so LanceDB always has one writer. Ray and
Dask workers are long-lived processes: each loads its models once (per process, `load_once`) and
keeps them for every chunk it gets.
"""

from __future__ import annotations

import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from schemas.settings import RunnerSettings


def runs_on_a_temporary_api() -> bool:
    """Whether this process talks to a temporary Prefect API of its own (no server named by PREFECT_API_URL)."""
    return not PREFECT_API_URL.value()


def _answers(api_url: str, timeout_seconds: float = 2.0) -> bool:
    """Whether anything answers at the API's address (any HTTP status: a Cloud workspace may want a key first)."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout_seconds):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def an_api_that_answers(notice: Callable[[str], None]) -> Iterator[None]:
    """Runs inside this block use the Prefect server the settings name, or a temporary one if it does not answer.

    A profile still naming a server that was stopped (`prefect config set PREFECT_API_URL=...`, as
    `cropsearch stack up` does) made every command fail with a 124-line traceback. Now the command
    runs as it would with no server at all, and `notice` gets one line saying so.
    """
    api_url = PREFECT_API_URL.value()
    if not api_url or _answers(api_url):
        yield
        return
    notice(
        f"the Prefect server at {api_url} does not answer (stopped?): this run uses a temporary local one; "
        "`cropsearch stack up` starts the server again"
    )
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


@contextmanager
def no_heartbeats_without_a_server() -> Iterator[None]:
    """Flow runs started inside this block send no heartbeats when they run on a temporary API.

    Prefect sends a flow run's heartbeat every 180 s so a server can mark runs that died as crashed.
    A temporary API lives and dies with this process, so nothing reads them there, and each run
    still ends by waiting for its heartbeat thread's 1 s sleep to run out: a run over an unchanged
    source took 1.12 s with heartbeats, 0.37 s without (median of 8 each, interleaved). With a
    server, heartbeats stay on.
    """
    if not runs_on_a_temporary_api():
        yield
        return
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


class _NoInterruptionReport(logging.Filter):
    """Drops Prefect's report of a run stopped by Ctrl-C ("Crash detected! ... KeyboardInterrupt"), traceback
    and all: the command says so in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        interrupted = record.exc_info is not None and isinstance(record.exc_info[1], KeyboardInterrupt)
        return not (interrupted or "KeyboardInterrupt" in record.getMessage())


class _NoTemporaryApiLines(logging.Filter):
    """Drops the temporary Prefect API's "Starting/Stopping temporary server" lines. It stops when the
    process exits, after `console_lines` put the handlers back, so this filter stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Starting temporary server", "Stopping temporary server"))


@contextmanager
def console_lines(verbose: bool) -> Iterator[None]:
    """Prefect's lines on the terminal inside this block: every one with `verbose`; else warnings and errors only,
    and no model-loading progress bars.

    Without it a command printed ~30 lines of its own (the temporary API starting, every task run
    finished, every stage, every hit logged beside the table). The run's logs still reach its
    Prefect API in full (the UI's run page): only the console handlers change, and they are put
    back as they were afterwards (a warm host serves the next command with them).
    """
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()  # Prefect sets its handlers up at the first run otherwise, after this block began
    loggers = [logging.getLogger(), *(item for item in logging.Logger.manager.loggerDict.values())]
    handlers = {
        handler
        for logger in loggers
        if isinstance(logger, logging.Logger)
        for handler in logger.handlers
        if isinstance(handler, PrefectConsoleHandler)
    }
    levels = {handler: handler.level for handler in handlers}
    interruption = _NoInterruptionReport()
    for handler in handlers:
        handler.addFilter(interruption)
        if not verbose:
            handler.setLevel(max(handler.level, logging.WARNING))
            if not any(isinstance(kept, _NoTemporaryApiLines) for kept in handler.filters):
                handler.addFilter(_NoTemporaryApiLines())
    try:
        with nullcontext() if verbose else _no_model_loading_bars():
            yield
    finally:
        for handler, level in levels.items():
            handler.setLevel(level)
            handler.removeFilter(interruption)


@contextmanager
def _no_model_loading_bars() -> Iterator[None]:
    """No "Loading weights" bars from transformers inside this block.

    Where transformers is not imported yet (a one-off command: importing it would cost a text query
    ~0.45 s), the environment tells it as it is imported, for the rest of the process.
    """
    if "transformers" not in sys.modules:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        yield
        return
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            transformers_logging.enable_progress_bar()


@contextmanager
def workers_report_here(runner: RunnerSettings) -> Iterator[None]:
    """Make tasks submitted inside this block to a local cluster report to this run's Prefect API.

    Without a server, the flow process runs a temporary API that its settings do not name; each
    task carries the flow's settings to its worker, which would then start a temporary API of its
    own (~5 s and ~200 MB per worker) and record its task runs there instead of beside the flow run.
    A remote cluster's workers could not reach this machine's 127.0.0.1: give them a server instead
    (PREFECT_API_URL, see the README's "Scaling out"). Threads of this process need nothing.
    """
    if runner.task_runner == "thread" or not runs_on_a_temporary_api() or runner.cluster_address:
        yield
        return
    api_url = str(get_client(sync_client=True).api_url).rstrip("/")
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield


def chunk_runner(runner: RunnerSettings) -> TaskRunner:
    """The task runner the chunks' model work is submitted to, not yet started."""
    if runner.task_runner == "thread":
        # One model-running thread: a second would share (and contend for) the same loaded models.
        return ThreadPoolTaskRunner(max_workers=1)
    if runner.task_runner == "ray":
        from prefect_ray import RayTaskRunner

        if runner.cluster_address:
            return RayTaskRunner(address=runner.cluster_address)
        return RayTaskRunner(init_kwargs={"num_cpus": runner.workers, "include_dashboard": False})
    from prefect_dask import DaskTaskRunner

    if runner.cluster_address:
        return DaskTaskRunner(address=runner.cluster_address)
    # One thread per worker process: the model's own threads use the cores (Dask sets OMP_NUM_THREADS=1).
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": runner.workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        },
    )


@contextmanager
def started_chunk_runner(runner: RunnerSettings) -> Iterator[TaskRunner]:
    """The chunk runner, started; this process's environment is as it was before once the runner stops.

    Starting a cluster from this process writes into its environment: a local Dask cluster's
    nannies `distributed.nanny.pre-spawn-environ` (OMP_NUM_THREADS=1, MKL_NUM_THREADS=1,
    OPENBLAS_NUM_THREADS=1, MALLOC_TRIM_THRESHOLD_, PYTHONHASHSEED) for the workers they spawn to
    inherit; Ray its client's settings and PYTHONBREAKPOINT. Kept, every process started after (by a
    warm host's later runs too) would inherit them. A local Dask cluster's workers have theirs once
    started, so those go at once; Ray's stay while Ray runs, since its client may read them again.
    """
    before = dict(os.environ)
    try:
        with chunk_runner(runner) as started:
            if runner.task_runner == "dask" and not runner.cluster_address:
                _restore_environment(before)
            yield started
    finally:
        _restore_environment(before)


def _restore_environment(before: dict[str, str]) -> None:
    for name in os.environ.keys() - before.keys():
        del os.environ[name]
    for name, value in before.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def ray_gpus_per_task(runner: RunnerSettings) -> float:
    """GPUs a chunk task asks Ray for: as given, else one when the cluster has any."""
    if runner.gpus_per_worker is not None:
        return runner.gpus_per_worker
    import ray

    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def chunk_task_options(runner: RunnerSettings) -> AbstractContextManager[Any]:
    """Resources each chunk task requests (Ray only; must be entered after the runner has started)."""
    if runner.task_runner != "ray":
        return nullcontext()
    from prefect_ray.context import remote_options

    # max_calls=0 keeps a worker process (and its loaded models) for every task; Ray's default for
    # GPU tasks is a fresh process per call, which would reload the models every chunk.
    return remote_options(num_cpus=1, num_gpus=ray_gpus_per_task(runner), max_calls=0)
