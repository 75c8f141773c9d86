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
