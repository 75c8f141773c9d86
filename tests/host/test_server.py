"""The server and client of `components/host/`, with the fake host: what a caller gets is what its own process would.

Each test runs `tests.host.fake_client` as a process (so its umask, CPUs, nice value, environment and
closed streams are its own) against a fake host in a sockets folder of its own. The real host, its
Prefect API and the `cropsearch` command are tested in tests/flows/test_host.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from components.host.address import HostAddress
from components.host.client import ask_host
from tests.host.fake_client import NOT_HOSTED

REPO = Path(__file__).resolve().parents[2]


class FakeHost:
    """Callers of one fake host: `run` is one `fake_client` process, as `cropsearch` would be."""

    def __init__(self, folder: Path, cwd: Path, idle_seconds: float = 60.0) -> None:
        self.address = HostAddress(folder, "fake")
        self.cwd = cwd
        self.idle_seconds = idle_seconds
        # One snapshot for every caller: pytest changes PYTEST_CURRENT_TEST between a test's phases.
        self.environment = {**os.environ, "PYTHONPATH": str(REPO), "CROPSEARCH_TEST_VARIABLE": "1"}
        self.environment.pop("COLUMNS", None)

    def command(self, *argv: str) -> list[str]:
        folder, idle = str(self.address.folder), str(self.idle_seconds)
        return [sys.executable, "-m", "tests.host.fake_client", folder, self.address.key, idle, *argv]

    def start(
        self, *argv: str, shell: str = "", environment: dict[str, str] | None = None, **popen: Any
    ) -> subprocess.Popen[str]:
        """One caller; `shell` wraps it as `sh -c 'exec COMMAND SHELL'` (to close a stream, `>&-`)."""
        command = self.command(*argv)
        if shell:
            command = ["sh", "-c", f'exec "$@" {shell}', "sh", *command]
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(
            command, cwd=self.cwd, env={**self.environment, **(environment or {})}, text=True, **popen
        )

    def run(self, *argv: str, **options: Any) -> subprocess.CompletedProcess[str]:
        process = self.start(*argv, **options)
        stdout, stderr = process.communicate(timeout=60)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def status(self) -> dict[str, Any] | None:
        return ask_host(self.address, "status")


@pytest.fixture
def sockets() -> Iterator[Path]:
    """A sockets folder (mode 0700) under the system's temporary folder: a Unix socket's path must stay under
    108 bytes, which one under pytest's folders (a worker's, a test's name) can pass."""
    folder = Path(tempfile.mkdtemp(prefix="cs-run-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def host(sockets: Path, tmp_path: Path) -> Iterator[FakeHost]:
    fake = FakeHost(sockets, tmp_path)
    yield fake
    ask_host(fake.address, "stop")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")  # a zombie (exited, not yet reaped) counts as gone
    return status.exists() and status.read_text().split(") ")[-1][0] != "Z"


def _wait_until(condition: Callable[[], bool], seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_the_socket_is_born_0600(host: FakeHost) -> None:
    assert host.run("exit", "0").returncode == 0
    assert stat.S_IMODE(host.address.socket.stat().st_mode) == 0o600


def _status_as(uid: int, path: Path) -> dict[str, Any] | None:
    """Ask for the host's status from a process of user `uid`; None when it hangs up without an answer."""
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        try:
            os.close(reading)
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(10)
                connection.connect(str(path))
                connection.sendall(b'{"op": "status"}\n')
                answer = b""
                while not answer.endswith(b"\n") and (chunk := connection.recv(65536)):
                    answer += chunk
            os.write(writing, answer)
        finally:
            os._exit(0)
    os.close(writing)
    with os.fdopen(reading, "rb") as answer:
        text = answer.read()
    os.waitpid(child, 0)
    return json.loads(text) if text else None


@pytest.mark.skipif(os.getuid() != 0, reason="playing another user takes root (CI runs as root)")
def test_a_caller_of_another_uid_is_hung_up_on(tmp_path: Path) -> None:
    # Under /tmp, not pytest's own folders: another user must be able to pass through to the socket.
    base = Path(tempfile.mkdtemp(prefix="cropsearch-host-test-"))
    try:
        folder = base / "run"
        folder.mkdir(mode=0o700)
        host = FakeHost(folder, tmp_path)
        assert host.run("exit", "0").returncode == 0
        # Folder and socket opened to everyone: the peer-uid check is all that stands in the way now.
        base.chmod(0o711)
        folder.chmod(0o711)
        host.address.socket.chmod(0o666)
        nobody = 65534
        assert _status_as(nobody, host.address.socket) is None
        owner = _status_as(os.getuid(), host.address.socket)
        assert owner is not None and owner["commands_run"] == 1
    finally:
        ask_host(HostAddress(base / "run", "fake"), "stop")
        shutil.rmtree(base)


def test_a_command_runs_with_its_callers_umask_cpus_and_terminal_variables(host: FakeHost, tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    assert host.run("exit", "0").returncode == 0  # the host starts as its first caller: this umask, every CPU
    own_umask = _umask()
    theirs = 0o077 if own_umask != 0o077 else 0o027
    report = tmp_path / "caller.json"
    one_cpu = cpus[-1:]

    def pin() -> None:
        os.sched_setaffinity(0, one_cpu)

    caller = host.run("report", str(report), umask=theirs, preexec_fn=pin, environment={"COLUMNS": "77"})
    assert caller.returncode == 0, caller.stderr
    seen = json.loads(report.read_text())
    assert seen["umask"] == theirs and seen["made_mode"] == 0o666 & ~theirs
    # Every thread: the command's own, one it starts, and one the host started before any command.
    assert seen["affinity"] == seen["worker"] == one_cpu
    assert set(map(tuple, seen["threads"].values())) == {tuple(one_cpu)}
    assert seen["variables"]["COLUMNS"] == "77"

    # ... and the next caller gets the host's own back, not the last caller's.
    after = tmp_path / "next.json"
    assert host.run("report", str(after)).returncode == 0
    seen = json.loads(after.read_text())
    assert seen["umask"] == own_umask and seen["made_mode"] == 0o666 & ~own_umask
    assert seen["affinity"] == seen["worker"] == cpus
    assert set(map(tuple, seen["threads"].values())) == {tuple(cpus)}
    assert seen["variables"]["COLUMNS"] is None
    status = host.status()
    assert status is not None and status["commands_run"] == 3


def test_a_caller_the_host_cannot_stand_in_for_is_refused_and_runs_the_command_itself(host: FakeHost) -> None:
    assert host.run("exit", "0").returncode == 0
    # A nicer caller: the host, at nice 0, could become nicer but never come back.
    assert host.run("exit", "3", preexec_fn=lambda: os.nice(5)).returncode == NOT_HOSTED
    # Another value of a variable the host was started with.
    assert host.run("exit", "3", environment={"CROPSEARCH_TEST_VARIABLE": "2"}).returncode == NOT_HOSTED
    status = host.status()
    assert status is not None and status["commands_run"] == 1


@pytest.mark.parametrize(("closing", "closed"), [("<&-", "stdin"), (">&-", "stdout"), ("2>&-", "stderr")])
def test_a_closed_standard_stream_is_not_a_cancel(host: FakeHost, tmp_path: Path, closing: str, closed: str) -> None:
    """`cropsearch ... >&-`: the command sees no such stream, as in a process of its own, and runs to its end."""
    assert host.run("exit", "0").returncode == 0
    status = host.status()
    assert status is not None
    for stream in ("stdout", "stderr"):
        printed = host.run("print", stream, f"printed to {stream}", shell=closing)
        assert printed.returncode == 0, printed.stderr  # it was 130: the output went into the socket, read as a cancel
        shown = printed.stdout if stream == "stdout" else printed.stderr
        assert shown == ("" if stream == closed else f"printed to {stream}\n")
    report = tmp_path / "report.json"
    assert host.run("report", str(report), shell=closing).returncode == 0
    streams = json.loads(report.read_text())["streams"]
    assert streams == {name: name == closed for name in ("stdin", "stdout", "stderr")}
    after = host.status()
    assert after is not None and after["pid"] == status["pid"] and after["commands_run"] == 4


def test_the_commands_exit_status_is_the_callers(host: FakeHost) -> None:
    assert host.run("exit", "0").returncode == 0
    assert host.run("exit", "3").returncode == 3
    died = host.run("die")  # the host dies mid-command: the command failed, whatever it had done
    assert died.returncode == 1 and "the warm host stopped during the command" in died.stderr


@pytest.mark.parametrize(
    ("signum", "exit_status"),
    [(signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM), (signal.SIGHUP, -signal.SIGHUP)],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
def test_a_signal_to_the_caller_cancels_the_command_and_waits_for_it(
    host: FakeHost, tmp_path: Path, signum: int, exit_status: int
) -> None:
    """Ctrl-C, a kill or a hang-up: the command is interrupted, and the caller ends only once it has unwound."""
    marker, errors = tmp_path / "waiting", tmp_path / "stderr"
    with errors.open("w") as stderr:
        caller = host.start("wait", str(marker), stdout=subprocess.DEVNULL, stderr=stderr)
    _wait_until(marker.exists, 60, "the command never started")
    status = host.status()
    assert status is not None
    caller.send_signal(signum)
    # Ended as its own process would be: 130 for Ctrl-C, else by the signal itself.
    assert caller.wait(timeout=60) == exit_status
    assert errors.read_text() == "unwound\n"  # not before the command had finished unwinding
    _wait_until(lambda: not _alive(status["pid"]), 30, "the host outlived its cancelled command")


def test_an_idle_host_exits_and_takes_its_socket_with_it(sockets: Path, tmp_path: Path) -> None:
    host = FakeHost(sockets, tmp_path, idle_seconds=1.0)
    try:
        assert host.run("exit", "0").returncode == 0
        status = host.status()
        assert status is not None
        _wait_until(lambda: not _alive(status["pid"]), 20, "the host outlived its idle time")
        assert not host.address.socket.exists()
    finally:
        ask_host(host.address, "stop")


def test_a_host_started_by_a_process_that_ignores_ctrl_c_still_cancels_its_commands(
    sockets: Path, tmp_path: Path
) -> None:
    """A background job of a script, or a test runner after Ray started, ignores SIGINT, and its children inherit
    that: the host's cancel (a SIGINT to itself) must still interrupt the command."""
    ignoring = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        host = FakeHost(sockets, tmp_path, idle_seconds=60.0)
        marker, errors = tmp_path / "waiting", tmp_path / "stderr"
        with errors.open("w") as stderr:
            caller = host.start("wait", str(marker), stdout=subprocess.DEVNULL, stderr=stderr)
    finally:
        signal.signal(signal.SIGINT, ignoring)
    try:
        _wait_until(marker.exists, 60, "the command never started")
        caller.send_signal(signal.SIGTERM)
        assert caller.wait(timeout=60) == -signal.SIGTERM
        assert errors.read_text() == "unwound\n"
    finally:
        ask_host(host.address, "stop")
