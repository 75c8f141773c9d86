"""Bring the local Prefect stack up and down: server, work pool, writer limit, deployments, worker, search page.

Everything goes through the `prefect` command line, exactly as a person would type it, so this
file is also a runnable record of the setup. Started processes get their own session (process
group): `down` stops each whole group, the flow runs a worker spawned included.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil

from components.errors import CropsearchError
from schemas.policy import POLICY_VARIABLE
from schemas.stack import StackParams

logger = logging.getLogger(__name__)

# The work pool named in prefect.yaml's `definitions:` block.
WORK_POOL = "cropsearch-local"
SERVER_START_SECONDS = 90.0
WORKER_START_SECONDS = 60.0
HEARTBEAT_SECONDS = 30
LEASE_SECONDS = 60
FLOW_NAMES = ("index-coco", "query", "evaluate")
NIGHTLY = "index-coco/nightly"
# What `up` changed in the Prefect profile, for `down` to put back (in the state folder).
STATE_FILE = "stack.json"
API_ATTEMPTS = 5

# The process work pool's job template with nothing a run may set. Prefect's default lets whoever
# creates a run pass job variables, among them `command` (what the worker executes) and `env`
# (which would replace the operator's policy): either hands the worker to them. Runs of this pool
# inherit the worker's own environment and start the way the worker starts them.
LOCKED_JOB_TEMPLATE: dict[str, Any] = {
    "job_configuration": {"command": None, "env": {}, "labels": {}, "name": None, "stream_output": True},
    "variables": {"type": "object", "properties": {}, "additionalProperties": False},
}

# Prefect's recipe for runs whose process died without a word (a worker killed with SIGKILL, a
# machine lost): a running flow run that sends no heartbeat for three periods is marked crashed,
# which frees its deployment's concurrency slot for the next run.
ZOMBIE_RUN_AUTOMATION: dict[str, Any] = {
    "name": "cropsearch: crash runs that stopped sending heartbeats",
    "trigger": {
        "type": "event",
        "posture": "Proactive",
        "after": ["prefect.flow-run.heartbeat"],
        "expect": [
            "prefect.flow-run.heartbeat",
            "prefect.flow-run.Completed",
            "prefect.flow-run.Failed",
            "prefect.flow-run.Cancelled",
            "prefect.flow-run.Crashed",
        ],
        "match": {"prefect.resource.id": ["prefect.flow-run.*"]},
        "for_each": ["prefect.resource.id"],
        "threshold": 1,
        "within": 3 * HEARTBEAT_SECONDS,
    },
    "actions": [
        {
            "type": "change-flow-run-state",
            "state": "CRASHED",
            "message": f"no heartbeat for {3 * HEARTBEAT_SECONDS} s: its process died (e.g. its worker was killed)",
        }
    ],
}


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
    # Read by deployed runs (flows/deployed.py): the folders and hosts they are held to.
    env[POLICY_VARIABLE] = settings.operator_policy().to_json()
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A flow run reports every 30 s (the least Prefect allows); the server's zombie automation marks a
    # run that missed three as crashed, and its deployment slot is leased for 60 s at a time instead
    # of 300, so a run killed with its worker stops blocking the next one within about two minutes.
    env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(HEARTBEAT_SECONDS)
    env["PREFECT_SERVER_CONCURRENCY_INITIAL_DEPLOYMENT_LEASE_DURATION"] = str(LEASE_SECONDS)
    if settings.api_url is None:
        # The UI is served by the same process and asks this address for its data.
        env["PREFECT_UI_API_URL"] = settings.resolved_api_url
        env["PREFECT_SERVER_API_HOST"] = settings.host
        env["PREFECT_SERVER_API_PORT"] = str(settings.port)
    return env


def _api(api_url: str, method: str, path: str, body: object, env: Mapping[str, str]) -> Any:
    """One call of the Prefect REST API (the key, where one is set, as Prefect Cloud wants it)."""
    headers = {"Content-Type": "application/json"}
    if env.get("PREFECT_API_KEY"):
        headers["Authorization"] = f"Bearer {env['PREFECT_API_KEY']}"
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}{path}", data=json.dumps(body).encode(), headers=headers, method=method
    )
    for attempt in range(1, API_ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = response.read()
            return json.loads(payload) if payload else None
        except urllib.error.HTTPError as error:
            # A server just deployed to answers 503 while its SQLite database is busy; other codes are final.
            failure, retry = f"HTTP {error.code} {error.reason}", error.code == 503
        except (urllib.error.URLError, OSError) as error:
            failure, retry = str(error), True
        if not retry or attempt == API_ATTEMPTS:
            raise StackError(f"{method} {path} on the Prefect API failed: {failure}")
        time.sleep(attempt)
    return None


def refuse_unknown_parameters(api_url: str, env: Mapping[str, str]) -> None:
    """Make the server refuse, when a run is created, a parameter cropsearch's flows do not take.

    The schema `prefect deploy` sends lists the flow's parameters but lets others through; the run
    would only fail once its worker started it. The client's own schema model drops
    `additionalProperties`, so this sets it through the REST API.
    """
    query = {"flows": {"name": {"any_": list(FLOW_NAMES)}}}
    for deployment in _api(api_url, "POST", "/deployments/filter", query, env):
        schema = dict(deployment.get("parameter_openapi_schema") or {})
        if schema.get("additionalProperties") is False and deployment.get("enforce_parameter_schema"):
            continue
        update = {
            "parameter_openapi_schema": {**schema, "additionalProperties": False},
            "enforce_parameter_schema": True,
        }
        _api(api_url, "PATCH", f"/deployments/{deployment['id']}", update, env)


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
    """Start a long-running process in its own session; <state_dir>/<name>.pid records which process it is."""
    settings.resolved_state_dir.mkdir(parents=True, exist_ok=True)
    with (settings.resolved_state_dir / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            args,
            env=env,
            cwd=settings.project_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    started = psutil.Process(process.pid)
    record = {
        "pid": process.pid,
        "started": started.create_time(),
        "command": started.cmdline() or args,
        "policy": env.get(POLICY_VARIABLE),
    }
    (settings.resolved_state_dir / f"{name}.pid").write_text(json.dumps(record))
    return process.pid


def _recorded(pid_file: Path) -> dict[str, Any]:
    try:
        record = json.loads(pid_file.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def started_process(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process still runs and is the one `stack up` started, else None.

    A pid alone is not enough: after a crash or a reboot the same number can belong to any other
    process, which `down` would then kill. The start time and command line recorded beside it must
    match too; a pid file without them (or unreadable) names no process of ours.
    """
    record = _recorded(pid_file)
    try:
        process = psutil.Process(int(record["pid"]))
        same = abs(process.create_time() - float(record["started"])) < 0.01 and process.cmdline() == record["command"]
    except (ValueError, KeyError, TypeError, psutil.Error):
        return None
    return process.pid if same and process.status() != psutil.STATUS_ZOMBIE else None


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

    Every port is checked before anything starts; a step that fails stops what this call started
    (what an earlier `up` started stays). The profile's API address is changed to the stack's, and
    what it was is recorded for `down` to put back. Returns what a person needs next: the UI and
    API addresses, the log files, and how to start the nightly re-index (deployed paused).
    """
    env = stack_environment(settings)
    project = settings.project_dir.resolve()
    if not (project / "prefect.yaml").is_file():
        raise StackError(f"no prefect.yaml in {project}; run from the cropsearch checkout or pass --project-dir")
    api_url = settings.resolved_api_url
    start_server = settings.api_url is None and not api_is_up(api_url)
    if settings.api_url is not None and not api_is_up(api_url):
        raise StackError(f"the Prefect API at {api_url} does not answer (is the server running, the key set?)")
    state = settings.resolved_state_dir
    _check_ports(settings, start_server, serve=started_process(state / "serve.pid") is None)
    state.mkdir(parents=True, exist_ok=True)
    _remember_profile(settings, project)
    started_now: list[str] = []
    try:
        started = _bring_up(settings, env, project, start_server, started_now)
    except BaseException as error:
        stopped = [_stop_recorded(settings, name) for name in reversed(started_now)]
        if not isinstance(error, StackError):
            raise
        undone = f"; stopped what it had started: {', '.join(filter(None, stopped))}" if any(stopped) else ""
        raise StackError(f"{error}{undone}") from error
    # Later `prefect ...` commands in this profile talk to this API without any flag (`down` puts it back).
    _run(prefect_command("config", "set", f"PREFECT_API_URL={api_url}"), env, project, "saving the API address")
    return started


def _bring_up(
    settings: StackParams, env: Mapping[str, str], project: Path, start_server: bool, started_now: list[str]
) -> dict[str, str]:
    """`up`'s steps; each process it starts is named in `started_now` as it starts."""
    api_url, state = settings.resolved_api_url, settings.resolved_state_dir
    if start_server:
        logger.info("starting the Prefect server on %s", api_url)
        command = prefect_command("server", "start", "--host", settings.host, "--port", str(settings.port))
        server = _start("server", command, env, settings)
        started_now.append("server")
        _wait_for(lambda: api_is_up(api_url), SERVER_START_SECONDS, "the Prefect server", state / "server.log", server)

    template = state / "pool-template.json"
    template.write_text(json.dumps(LOCKED_JOB_TEMPLATE, indent=2))
    (state / "policy.json").write_text(env[POLICY_VARIABLE])  # what the worker is held to, to read
    _ensure(
        ["work-pool", "inspect", WORK_POOL],
        ["work-pool", "create", WORK_POOL, "--type", "process", "--base-job-template", str(template)],
        env,
        project,
    )
    # Also for a pool an earlier version made with Prefect's default template, which lets runs set env and command.
    _run(
        prefect_command("work-pool", "update", WORK_POOL, "--base-job-template", str(template)),
        env,
        project,
        "locking the work pool's job variables",
    )
    automation = json.dumps(ZOMBIE_RUN_AUTOMATION)
    _ensure(
        ["automation", "inspect", ZOMBIE_RUN_AUTOMATION["name"]],
        ["automation", "create", "--from-json", automation],
        env,
        project,
    )
    limit = settings.writer_limit
    _ensure(
        ["global-concurrency-limit", "inspect", limit],
        ["global-concurrency-limit", "create", limit, "--limit", "1"],
        env,
        project,
    )

    def deploy() -> None:
        _run(prefect_command("--no-prompt", "deploy", "--all"), env, project, "deploying prefect.yaml")
        refuse_unknown_parameters(api_url, env)

    nightly = deployed_keeping_the_nightly_schedule(api_url, env, deploy)

    worker_log = state / "worker.log"
    worker_pid = state / "worker.pid"
    if (running := started_process(worker_pid)) is not None and _recorded(worker_pid).get("policy") != env[
        POLICY_VARIABLE
    ]:
        logger.info("the operator's policy changed: restarting the worker")
        _stop_group(running, grace_seconds=20.0)
        running = None
    if running is None:
        logger.info("starting a process worker on pool %s", WORK_POOL)
        earlier = worker_log.stat().st_size if worker_log.is_file() else 0  # the log is appended to across runs
        worker = _start(
            "worker", prefect_command("worker", "start", "--pool", WORK_POOL, "--type", "process"), env, settings
        )
        started_now.append("worker")
        _wait_for(
            lambda: "started" in worker_log.read_bytes()[earlier:].decode(errors="replace"),
            WORKER_START_SECONDS,
            "the worker",
            worker_log,
            worker,
        )
    page = _start_search_page(settings, env, started_now) if settings.serve_port else None
    ui = "https://app.prefect.cloud" if "api.prefect.cloud" in api_url else api_url.removesuffix("/api")
    started = {"ui": ui, "api": api_url, "worker log": str(worker_log)}
    if page is not None:
        started["search page"] = page
        started["search page log"] = str(state / "serve.log")
    if settings.api_url is None:
        started["server log"] = str(state / "server.log")
    if nightly is not None:
        schedule_id, active = nightly
        started["nightly re-index"] = (
            "on (03:00 UTC)"
            if active
            else f"paused: `prefect deployment schedule resume {NIGHTLY} {schedule_id}` starts it (COCO, 778 MB)"
        )
    return started


def _check_ports(settings: StackParams, server: bool, serve: bool) -> None:
    """Each port `up` would listen on must be free, before anything starts: one error names every taken one."""
    wanted = {"--port": settings.port} if server else {}
    if serve and settings.serve_port:
        wanted["--serve-port"] = settings.serve_port
    taken = [f"{flag} {port}" for flag, port in wanted.items() if not _port_free(settings.host, port)]
    if taken:
        raise StackError(
            f"{' and '.join(taken)} on {settings.host} {'is' if len(taken) == 1 else 'are'} taken by another "
            "program; nothing was started: choose free ones"
        )


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def deployed_keeping_the_nightly_schedule(
    api_url: str, env: Mapping[str, str], deploy: Callable[[], None]
) -> tuple[str, bool] | None:
    """`deploy()`, and the nightly schedule (id, active) after it: paused as prefect.yaml deploys it, unless the
    operator had started it, which deploying again would undo."""
    before = _nightly_schedule(api_url, env, active=None)
    deploy()
    return _nightly_schedule(api_url, env, active=True if before is not None and before[1] else None)


def _nightly_schedule(api_url: str, env: Mapping[str, str], active: bool | None) -> tuple[str, bool] | None:
    """The nightly deployment's schedule (id, active), set `active` first if given; None before it is deployed.

    prefect.yaml deploys it paused: a first `stack up` must not start a 778 MB download unasked. One an
    operator resumed stays on across later `stack up`s, which deploy prefect.yaml again.
    """
    try:
        deployment = _api(api_url, "GET", f"/deployments/name/{NIGHTLY}", None, env)
    except StackError:
        return None
    schedules = (deployment or {}).get("schedules") or []
    if not schedules:
        return None
    schedule = schedules[0]
    if active is not None and schedule.get("active") != active:
        _api(api_url, "PATCH", f"/deployments/{deployment['id']}/schedules/{schedule['id']}", {"active": active}, env)
        schedule = {**schedule, "active": active}
    return str(schedule["id"]), bool(schedule.get("active"))


def _stop_recorded(settings: StackParams, name: str) -> str | None:
    """Stop the process `name`.pid records (if it is still ours) and forget it; what was stopped, if anything."""
    pid_file = settings.resolved_state_dir / f"{name}.pid"
    pid = started_process(pid_file)
    if pid is not None:
        _stop_group(pid, grace_seconds=20.0)
    pid_file.unlink(missing_ok=True)
    return None if pid is None else f"{name} (pid {pid})"


def _profile_api_url(env: Mapping[str, str], cwd: Path) -> tuple[str, str | None]:
    """The active Prefect profile's name and the API address it holds (None: none)."""
    # Read the profile itself: with PREFECT_API_URL in the environment, `config view` would show that instead.
    clean = {name: value for name, value in env.items() if name != "PREFECT_API_URL"}
    shown = subprocess.run(
        prefect_command("config", "view"), env=clean, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
    ).stdout
    profile = next(
        (line.split("=", 1)[1].strip("'") for line in shown.splitlines() if line.startswith("PREFECT_PROFILE=")), ""
    )
    prefix = "PREFECT_API_URL='"
    url = next(
        (
            line[len(prefix) :].split("'")[0]
            for line in shown.splitlines()
            if line.startswith(prefix) and "(from profile)" in line
        ),
        None,
    )
    return profile, url


def _remember_profile(settings: StackParams, project: Path) -> None:
    """Record the profile and the API address it held before `up` changed it, once: a second `up` keeps the first's."""
    record = settings.resolved_state_dir / STATE_FILE
    if record.is_file():
        return
    profile, url = _profile_api_url(os.environ, project)
    record.write_text(json.dumps({"profile": profile, "api_url_before": url, "api_url": settings.resolved_api_url}))


def _search_page_is_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/favicon.ico", timeout=2.0) as response:
            return response.status in (200, 204)
    except urllib.error.HTTPError as error:
        return error.code == 401  # up, and asking for its token
    except (urllib.error.URLError, OSError):
        return False


def _start_search_page(settings: StackParams, env: Mapping[str, str], started_now: list[str]) -> str:
    """`cropsearch serve` over the deployed runs' default database, started before that database exists."""
    url = settings.search_page_url
    assert url is not None
    pid_file, log = settings.resolved_state_dir / "serve.pid", settings.resolved_state_dir / "serve.log"
    if started_process(pid_file) is None:
        logger.info("starting the search page at %s", url)
        command = [sys.executable, "-m", "flows.cli", "serve", "--db", str(settings.served_db)]
        command += ["--host", settings.host, "--port", str(settings.serve_port), "--wait-for-index"]
        serve = _start("serve", command, env, settings)
        started_now.append("serve")
        _wait_for(lambda: _search_page_is_up(url), WORKER_START_SECONDS, "the search page", log, serve)
    return url + "/"


def down(settings: StackParams, grace_seconds: float = 20.0) -> list[str]:
    """Stop the search page, the worker, then the server (each whole process group); put the profile's API
    address back as `up` found it, whatever flags this call got (`up` recorded it in the state folder).

    Returns what was stopped. A server this command did not start (api_url given) is left alone.
    """
    stopped = []
    state = settings.resolved_state_dir
    for name in ("serve", "worker", "server"):
        pid_file = state / f"{name}.pid"
        if not pid_file.is_file():
            continue
        pid = started_process(pid_file)
        if pid is not None:
            _stop_group(pid, grace_seconds)
            stopped.append(f"{name} (pid {pid})")
        else:
            logger.info("%s names no running process of the stack's; removed", pid_file)
        pid_file.unlink()
    record = _recorded(state / STATE_FILE)
    env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    if record.get("profile"):
        env["PREFECT_PROFILE"] = str(record["profile"])
    _, current = _profile_api_url(env, settings.project_dir)
    ours = record.get("api_url", settings.resolved_api_url)
    if current == ours:  # left alone where someone pointed the profile elsewhere since
        before = record.get("api_url_before")
        change = (
            ["config", "set", f"PREFECT_API_URL={before}"]
            if before
            else ["config", "unset", "PREFECT_API_URL", "--yes"]
        )
        _run(prefect_command(*change), env, settings.project_dir, "putting the profile's API address back")
    (state / STATE_FILE).unlink(missing_ok=True)
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
