"""Bring the local Prefect stack up and down: server, work pool, writer limit, deployments, worker.

Everything goes through the `prefect` command line, exactly as a person would type it, so this
file is also a runnable record of the setup. Started processes get their own session (process
group): `down` stops each whole group, the flow runs a worker spawned included.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from components.errors import CropsearchError
from schemas.params import StackParams

logger = logging.getLogger(__name__)

# The work pool named in prefect.yaml's `definitions:` block.
WORK_POOL = "cropsearch-local"
SERVER_START_SECONDS = 90.0
WORKER_START_SECONDS = 60.0


class StackError(CropsearchError):
    """A step of bringing the stack up failed; the message says which and where its log is."""


def prefect_command(*args: str) -> list[str]:
    """The `prefect` CLI of the running interpreter, so the stack uses the project's own install."""
    return [sys.executable, "-m", "prefect", *args]


def stack_environment(settings: StackParams, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every started process and CLI call shares: API address, checkout, no prompts."""
    env = dict(os.environ if base is None else base)
    env["PREFECT_API_URL"] = settings.resolved_api_url
    env["CROPSEARCH_HOME"] = str(settings.project_dir.resolve())
    # Read by deployed runs (flows/deployed.py): the folders they may read query images and weights from.
    env["CROPSEARCH_QUERY_IMAGE_ROOTS"] = os.pathsep.join(str(root.resolve()) for root in settings.query_image_roots)
    env["CROPSEARCH_MODEL_ROOTS"] = os.pathsep.join(str(root.resolve()) for root in settings.model_roots)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if settings.api_url is None:
        # The UI is served by the same process and asks this address for its data.
        env["PREFECT_UI_API_URL"] = settings.resolved_api_url
        env["PREFECT_SERVER_API_HOST"] = settings.host
        env["PREFECT_SERVER_API_PORT"] = str(settings.port)
    return env


def api_is_up(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _run(args: list[str], env: Mapping[str, str], cwd: Path, what: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()
        raise StackError(f"{what} failed (`{' '.join(args[2:])}`): " + " | ".join(output[-5:]))
    return done


def _succeeds(args: list[str], env: Mapping[str, str], cwd: Path) -> bool:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, stdin=subprocess.DEVNULL).returncode == 0


def _ensure(inspect: list[str], create: list[str], env: Mapping[str, str], cwd: Path) -> None:
    """Create a Prefect object unless `prefect <inspect>` finds it: a second `stack up` changes nothing."""
    if not _succeeds(prefect_command(*inspect), env, cwd):
        _run(prefect_command(*create), env, cwd, f"creating {create[0]} {create[2]}")


def _start(name: str, args: list[str], env: Mapping[str, str], settings: StackParams) -> int:
    """Start a long-running process in its own session; its pid goes to <state_dir>/<name>.pid."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with (settings.state_dir / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            args,
            env=env,
            cwd=settings.project_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    (settings.state_dir / f"{name}.pid").write_text(str(process.pid))
    return process.pid


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group started as `pgid` still runs."""
    # A leader that is this process's own child stays a zombie until reaped; reap it first.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(check: Callable[[], bool], seconds: float, what: str, log: Path, pid: int) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        if not _group_alive(pid):
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            raise StackError(f"{what} exited while starting: {tail} (full log: {log})")
        time.sleep(0.5)
    raise StackError(f"{what} did not come up within {seconds:.0f} s; see {log}")


def up(settings: StackParams) -> dict[str, str]:
    """Start (or reuse) the server, create the pool and the writer limit, deploy prefect.yaml, start a worker.

    Returns what a person needs next: the UI and API addresses and the log files.
    """
    env = stack_environment(settings)
    project = settings.project_dir.resolve()
    if not (project / "prefect.yaml").is_file():
        raise StackError(f"no prefect.yaml in {project}; run from the cropsearch checkout or pass --project-dir")
    api_url = settings.resolved_api_url
    if settings.api_url is None and not api_is_up(api_url):
        logger.info("starting the Prefect server on %s", api_url)
        server = _start(
            "server",
            prefect_command("server", "start", "--host", settings.host, "--port", str(settings.port)),
            env,
            settings,
        )
        server_log = settings.state_dir / "server.log"
        _wait_for(lambda: api_is_up(api_url), SERVER_START_SECONDS, "the Prefect server", server_log, server)
    elif not api_is_up(api_url):
        raise StackError(f"the Prefect API at {api_url} does not answer (is the server running, the key set?)")

    _ensure(["work-pool", "inspect", WORK_POOL], ["work-pool", "create", WORK_POOL, "--type", "process"], env, project)
    limit = settings.writer_limit
    _ensure(
        ["global-concurrency-limit", "inspect", limit],
        ["global-concurrency-limit", "create", limit, "--limit", "1"],
        env,
        project,
    )
    _run(prefect_command("--no-prompt", "deploy", "--all"), env, project, "deploying prefect.yaml")

    worker_log = settings.state_dir / "worker.log"
    if not _pid_alive(settings.state_dir / "worker.pid"):
        logger.info("starting a process worker on pool %s", WORK_POOL)
        earlier = worker_log.stat().st_size if worker_log.is_file() else 0  # the log is appended to across runs
        worker = _start(
            "worker", prefect_command("worker", "start", "--pool", WORK_POOL, "--type", "process"), env, settings
        )
        _wait_for(
            lambda: "started" in worker_log.read_bytes()[earlier:].decode(errors="replace"),
            WORKER_START_SECONDS,
            "the worker",
            worker_log,
            worker,
        )
    # Later `prefect ...` commands in this profile talk to this API without any flag.
    _run(prefect_command("config", "set", f"PREFECT_API_URL={api_url}"), env, project, "saving the API address")
    ui = "https://app.prefect.cloud" if "api.prefect.cloud" in api_url else api_url.removesuffix("/api")
    started = {"ui": ui, "api": api_url, "worker log": str(worker_log)}
    if settings.api_url is None:
        started["server log"] = str(settings.state_dir / "server.log")
    return started


def _pid_alive(pid_file: Path) -> bool:
    return pid_file.is_file() and _group_alive(int(pid_file.read_text()))


def down(settings: StackParams, grace_seconds: float = 20.0) -> list[str]:
    """Stop the worker, then the server (each whole process group); forget the saved API address.

    Returns what was stopped. A server this command did not start (api_url given) is left alone.
    """
    stopped = []
    for name in ("worker", "server"):
        pid_file = settings.state_dir / f"{name}.pid"
        if not pid_file.is_file():
            continue
        pid = int(pid_file.read_text())
        if _group_alive(pid):
            _stop_group(pid, grace_seconds)
            stopped.append(f"{name} (pid {pid})")
        pid_file.unlink()
    # Read the profile itself: with PREFECT_API_URL in the environment, `config view` would show that instead.
    env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    current = subprocess.run(
        prefect_command("config", "view"), env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    ).stdout
    if f"PREFECT_API_URL='{settings.resolved_api_url}' (from profile)" in current:
        _run(
            prefect_command("config", "unset", "PREFECT_API_URL", "--yes"),
            env,
            settings.project_dir,
            "forgetting the API",
        )
    return stopped


def _stop_group(pid: int, grace_seconds: float) -> None:
    """SIGTERM the process group (a worker passes it on to its flow runs), SIGKILL what outlives the grace."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sent)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            if not _group_alive(pid):
                return
            time.sleep(0.2)
