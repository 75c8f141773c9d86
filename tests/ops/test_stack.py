"""`cropsearch stack`: the failures a person meets before any server runs, answered fast and clearly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.ops import stack
from schemas.stack import StackParams

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def own_prefect_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`up` and `down` change the active Prefect profile: these tests change one of their own."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)


def profile_api_url() -> str | None:
    return stack._profile_api_url(os.environ, REPO)[1]


def set_profile_api_url(url: str) -> None:
    subprocess.run(stack.prefect_command("config", "set", f"PREFECT_API_URL={url}"), check=True, capture_output=True)


def test_up_outside_a_checkout_names_the_missing_prefect_yaml(tmp_path: Path) -> None:
    with pytest.raises(stack.StackError, match=r"no prefect.yaml in .*run from the cropsearch checkout"):
        stack.up(StackParams(project_dir=tmp_path, state_dir=tmp_path / "state"))


def test_an_existing_api_that_does_not_answer_is_named(tmp_path: Path) -> None:
    settings = StackParams(api_url="http://127.0.0.1:9/api", state_dir=tmp_path / "state")
    with pytest.raises(stack.StackError, match=r"http://127.0.0.1:9/api does not answer"):
        stack.up(settings)


def test_down_with_nothing_started_stops_nothing(tmp_path: Path) -> None:
    assert stack.down(StackParams(state_dir=tmp_path / "state", port=9)) == []


def test_a_process_that_dies_while_starting_fails_at_once_with_its_log(tmp_path: Path) -> None:
    settings = StackParams(state_dir=tmp_path / "state")
    command = [sys.executable, "-c", "import sys; print('port 4200 is taken'); sys.exit(1)"]
    pid = stack._start("server", command, {}, settings)
    started = time.monotonic()
    with pytest.raises(stack.StackError, match="exited while starting: port 4200 is taken"):
        stack._wait_for(lambda: False, 60, "the Prefect server", settings.state_dir / "server.log", pid)
    assert time.monotonic() - started < 10


def test_down_stops_the_whole_process_group(tmp_path: Path) -> None:
    settings = StackParams(state_dir=tmp_path / "state")
    # A parent that ignores SIGTERM and a child: both must be gone after `down`.
    script = "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    script += "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"
    pid = stack._start("worker", [sys.executable, "-c", script], {}, settings)
    time.sleep(1)
    assert stack.down(settings, grace_seconds=1) == [f"worker (pid {pid})"]
    assert not stack._group_alive(pid) and not (settings.state_dir / "worker.pid").exists()


def test_api_is_up_is_false_for_a_closed_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert not stack.api_is_up(f"http://127.0.0.1:{port}/api", timeout=0.5)


def test_down_never_signals_a_process_that_merely_took_a_recorded_pid(tmp_path: Path) -> None:
    """Issue 25, item 8: after a crash or reboot, `down` killed whatever process held the pid in `.stack/`."""
    settings = StackParams(state_dir=tmp_path / "state")
    settings.state_dir.mkdir()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        old_format = settings.state_dir / "worker.pid"
        old_format.write_text(str(bystander.pid))  # a plain pid: nothing to prove it is ours
        record = {"pid": bystander.pid, "started": time.time() - 3600, "command": ["prefect", "server", "start"]}
        (settings.state_dir / "server.pid").write_text(json.dumps(record))  # same pid, another process
        assert stack.started_process(old_format) is None
        assert stack.down(settings, grace_seconds=1) == []
        assert bystander.poll() is None, "a process the stack never started was signalled"
        assert list(settings.state_dir.glob("*.pid")) == []  # the stale records are gone
    finally:
        bystander.kill()
        bystander.wait()


def test_up_starts_a_new_worker_when_the_recorded_one_is_not_ours(tmp_path: Path) -> None:
    settings = StackParams(state_dir=tmp_path / "state")
    pid = stack._start("worker", [sys.executable, "-c", "import time; time.sleep(600)"], {}, settings)
    try:
        assert stack.started_process(settings.state_dir / "worker.pid") == pid
        record = json.loads((settings.state_dir / "worker.pid").read_text())
        (settings.state_dir / "worker.pid").write_text(json.dumps({**record, "started": record["started"] - 60}))
        assert stack.started_process(settings.state_dir / "worker.pid") is None
    finally:
        os.killpg(pid, signal.SIGKILL)


def test_a_relative_state_dir_lies_in_the_project_dir_wherever_the_command_is_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 42, item 12: `stack up --project-dir X` from another folder looked for `.stack/` where it was typed."""
    monkeypatch.chdir(tmp_path)
    settings = StackParams(project_dir=REPO)
    assert settings.resolved_state_dir == REPO / ".stack"
    assert StackParams(project_dir=REPO, state_dir=tmp_path / "s").resolved_state_dir == tmp_path / "s"


def test_taken_ports_are_named_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as server_port, socket.socket() as page_port:
        for taken in (server_port, page_port):
            taken.bind(("127.0.0.1", 0))
            taken.listen()
        ports = {"port": server_port.getsockname()[1], "serve_port": page_port.getsockname()[1]}
        settings = StackParams(project_dir=REPO, state_dir=tmp_path / "state", **ports)
        with pytest.raises(stack.StackError) as refused:
            stack.up(settings)
    assert str(refused.value) == (
        f"--port {ports['port']} and --serve-port {ports['serve_port']} on 127.0.0.1 are taken by another program; "
        "nothing was started: choose free ones"
    )
    assert not settings.resolved_state_dir.exists() and profile_api_url() is None


def test_a_step_that_fails_stops_what_up_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 42, item 12: a failed `stack up` left the Prefect server it had started running."""
    settings = StackParams(project_dir=REPO, state_dir=tmp_path / "state", port=_free_port(), serve_port=0)
    pids: list[int] = []

    def fails_after_starting_a_server(*arguments: object) -> dict[str, str]:
        *_, started_now = arguments
        pids.append(stack._start("server", [sys.executable, "-c", "import time; time.sleep(600)"], {}, settings))
        started_now.append("server")  # type: ignore[attr-defined]
        raise stack.StackError("deploying prefect.yaml failed")

    monkeypatch.setattr(stack, "_bring_up", fails_after_starting_a_server)
    with pytest.raises(stack.StackError) as failed:
        stack.up(settings)
    assert str(failed.value) == f"deploying prefect.yaml failed; stopped what it had started: server (pid {pids[0]})"
    assert not stack._group_alive(pids[0]) and not (settings.resolved_state_dir / "server.pid").exists()
    assert profile_api_url() is None  # the profile was not pointed at a server that is not there


@pytest.mark.slow  # six `prefect config` processes
def test_down_puts_the_profile_back_as_up_found_it_whatever_its_flags(tmp_path: Path) -> None:
    """Issue 42, item 1: `stack up --port P` then `stack down` without it left the profile on the stopped server,
    and every later command printed a 124-line traceback."""
    for before in ("http://127.0.0.1:4999/api", None):
        if before is not None:
            set_profile_api_url(before)
        else:
            subprocess.run(stack.prefect_command("config", "unset", "PREFECT_API_URL", "--yes"), check=True)
        state = tmp_path / f"state-{before is None}"
        up = StackParams(project_dir=REPO, state_dir=state, port=4321)
        state.mkdir()
        stack._remember_profile(up, REPO)  # what `up` does before it changes the profile
        set_profile_api_url(up.resolved_api_url)
        assert stack.down(StackParams(project_dir=REPO, state_dir=state), grace_seconds=1) == []  # no --port
        assert profile_api_url() == before and not (state / stack.STATE_FILE).exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_nightly_schedule_the_operator_started_stays_on_after_a_later_up_deploys_it_paused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """prefect.yaml deploys the nightly re-index paused; a later `stack up` deploys again and must not undo a
    resume (tests/flows/test_deployments.py checks, on a real server, that one nobody started stays paused)."""
    server: dict[str, object] = {"active": True}
    patched: list[object] = []

    def api(api_url: str, method: str, path: str, body: object, env: object) -> object:
        if method == "GET":
            return {"id": "d1", "schedules": [{"id": "s1", "active": server["active"]}]}
        patched.append((path, body))
        server.update(body)  # type: ignore[arg-type]
        return None

    def deploy() -> None:  # what `prefect deploy --all` does with prefect.yaml's `active: false`
        server["active"] = False

    monkeypatch.setattr(stack, "_api", api)
    after = stack.deployed_keeping_the_nightly_schedule("http://api", {}, deploy)
    assert after == ("s1", True) and patched == [("/deployments/d1/schedules/s1", {"active": True})]
    patched.clear()
    server["active"] = False  # one nobody started stays as deployed: paused
    assert stack.deployed_keeping_the_nightly_schedule("http://api", {}, deploy) == ("s1", False) and not patched
