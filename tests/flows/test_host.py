"""The warm host, through the real `cropsearch` console command as a person runs it.

Each test starts real host processes in a sockets folder of its own (XDG_RUNTIME_DIR) and stops
them at the end. What a command prints, its exit status and what it writes must be the same as
the same command run in a process of its own (`--no-host`). The socket, the caller's process,
exit statuses, signals and the idle exit are tested with a fake host in tests/host/test_server.py,
in seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import flows.cli
import flows.cli_runs
from components.host.address import HostUnavailable, private_folder
from components.host.reaper import children_running
from flows.host import IDLE_SECONDS, IDLE_VARIABLE, PREFECT_API_COMMAND, idle_seconds_from, run_cli_command
from schemas.params import WORLD_DETECTOR, WORLD_EMBEDDER

CROPSEARCH = str(Path(sys.executable).parent / "cropsearch")
REPO = Path(__file__).resolve().parents[2]
WORLD_MODELS = ["--detector", str(WORLD_DETECTOR), "--embedder", str(WORLD_EMBEDDER), "--device", "cpu"]
WAITING_MODELS = [
    "--detector", "plugin:tests.plugins:colour_blob_detector", "--embedder", "plugin:tests.plugins:waiting_embedder",
    "--device", "cpu",
]  # fmt: skip


class Workspace:
    """A folder to run `cropsearch` in, with its own sockets folder; `run` is one command as a process.

    The sockets folder is made under the system's temporary folder unless `runtime` names one: a
    Unix socket's path must stay under 108 bytes, and pytest's folders (a worker's, a test's name)
    went past that, so hosts refused to start and every command ran alone.
    """

    def __init__(self, folder: Path, code: Path = REPO, runtime: Path | None = None) -> None:
        self.folder = folder
        self.runtime = runtime or Path(tempfile.mkdtemp(prefix="cs-run-"))
        self.environment = {
            **os.environ, "XDG_RUNTIME_DIR": str(self.runtime), "PYTHONPATH": str(code),
            "CROPSEARCH_TEST_VARIABLE": "0",
        }  # fmt: skip

    def close(self) -> None:
        """Stop the workspace's hosts and remove its sockets folder."""
        self.run("host", "stop")
        shutil.rmtree(self.runtime, ignore_errors=True)

    def start(self, *arguments: str, command: list[str] | None = None, **environment: str) -> subprocess.Popen[str]:
        """`cropsearch ARGUMENTS`, or `COMMAND ARGUMENTS` (a shell that closes a stream first)."""
        return subprocess.Popen(
            [*([CROPSEARCH] if command is None else command), *arguments], cwd=self.folder,
            env={**self.environment, **environment}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def run(
        self, *arguments: str, command: list[str] | None = None, **environment: str
    ) -> subprocess.CompletedProcess[str]:
        process = self.start(*arguments, command=command, **environment)
        stdout, stderr = process.communicate(timeout=300)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def hosts(self) -> list[dict[str, str]]:
        """`cropsearch host status` as rows: pid, folder, commands, idle, busy."""
        lines = self.run("host", "status").stdout.strip().splitlines()
        if lines == ["no warm host is running"]:
            return []
        names = re.split(r"\s{2,}", lines[0])
        return [dict(zip(names, re.split(r"\s{2,}", line), strict=True)) for line in lines[1:]]


@pytest.fixture
def workspace(tmp_path: Path, photo_folder: Path) -> Iterator[Workspace]:
    space = Workspace(tmp_path)
    yield space
    space.close()


def _hits(output: str) -> list[str]:
    """The hits table (without the grid's file name, which is stamped with the second it was made)."""
    return [line for line in output.splitlines() if not line.startswith("grid: ")]


def test_hosted_commands_print_and_exit_as_their_own_process_would(workspace: Workspace) -> None:
    index = ["index", "--source", "photos", "--data-dir", "data", *WORLD_MODELS]
    first = workspace.run(*index, "--verbose")
    assert first.returncode == 0, first.stderr
    assert "images indexed now      10" in first.stdout
    assert "Flow run" in first.stderr and "Flow run" not in first.stdout  # Prefect's log stays on stderr
    [host] = workspace.hosts()
    assert host["commands"] == "1" and host["folder"] == str(workspace.folder)

    again = workspace.run(*index)
    assert again.returncode == 0 and "no new work" in again.stdout

    query = ["query", "a red circle", "-k", "3", "--data-dir", "data", "--device", "cpu"]
    hosted, alone = workspace.run(*query), workspace.run("--no-host", *query)
    assert hosted.returncode == alone.returncode == 0, hosted.stderr + alone.stderr
    # "3 hits, ranked by hybrid search", the table's header and its 3 rows
    assert _hits(hosted.stdout) == _hits(alone.stdout) and len(_hits(hosted.stdout)) == 5

    wrong = workspace.run("query", "x", "-k", "0", "--data-dir", "data")
    assert wrong.returncode == 2 and "error: k: Input should be greater than or equal to 1" in wrong.stderr
    assert wrong.stdout == ""

    # A closed stream is no cancel (it was: exit 130, once Prefect's log reached a closed stderr). The
    # run completes; alone (`--no-host`), the same commands exit 0 and 1: without a stdout, Prefect's
    # temporary API does not start (and without a stderr, Prefect logs to stdout).
    no_stderr = workspace.run(*query, command=["sh", "-c", 'exec "$0" "$@" 2>&-', CROPSEARCH])
    assert no_stderr.returncode == 0 and _hits(no_stderr.stdout) == _hits(hosted.stdout)
    no_stdout = workspace.run(*query, "--verbose", command=["sh", "-c", 'exec "$0" "$@" >&-', CROPSEARCH])
    assert no_stdout.returncode == 0 and "Completed" in no_stdout.stderr, no_stdout.stderr
    # A reader that went away: click's broken-pipe exit, 1, as `--no-host` exits too.
    gone = workspace.start(*query)
    assert gone.stdout is not None
    gone.stdout.close()
    gone.communicate(timeout=300)
    assert gone.returncode == 1
    [same] = workspace.hosts()
    assert same["pid"] == host["pid"] and same["commands"] == "7"  # the --no-host query never reached it


def _index_held_mid_run(workspace: Workspace, index: list[str]) -> subprocess.Popen[str]:
    """Start `index` with the waiting embedder; return once it is embedding (and stays there until `release`)."""
    waiting = workspace.start(*index)
    deadline = time.monotonic() + 240
    while not (workspace.folder / "embedding-started").exists():
        assert waiting.poll() is None and time.monotonic() < deadline, waiting.communicate()
        time.sleep(0.1)
    return waiting


def test_a_busy_host_leaves_the_next_command_to_run_itself(workspace: Workspace) -> None:
    index = ["index", "--source", "photos", "--data-dir", "data", *WAITING_MODELS]
    waiting = _index_held_mid_run(workspace, index)
    [busy] = workspace.hosts()
    assert busy["busy"] == "yes"
    meanwhile = workspace.run("query", "x", "-k", "0")  # answered by a process of its own
    assert meanwhile.returncode == 2 and "error: k:" in meanwhile.stderr
    (workspace.folder / "release").touch()
    stdout, stderr = waiting.communicate(timeout=240)
    assert waiting.returncode == 0 and "images indexed now      10" in stdout, stderr
    [done] = workspace.hosts()
    assert done["pid"] == busy["pid"] and done["commands"] == "1" and done["busy"] == "no"


def test_ctrl_c_cancels_the_hosted_command_and_the_host_with_it(workspace: Workspace) -> None:
    index = ["index", "--source", "photos", "--data-dir", "data", *WAITING_MODELS]
    waiting = _index_held_mid_run(workspace, index)
    [host] = workspace.hosts()
    waiting.send_signal(signal.SIGINT)
    waiting.communicate(timeout=120)
    assert waiting.returncode == 130
    deadline = time.monotonic() + 60
    while _alive(int(host["pid"])):
        assert time.monotonic() < deadline, "the host outlived its cancelled command"
        time.sleep(0.1)
    (workspace.folder / "release").touch()
    rerun = workspace.run(*index)  # a fresh host finishes the work; nothing half-written is left in the way
    assert rerun.returncode == 0 and "images indexed now      10" in rerun.stdout, rerun.stderr
    [fresh] = workspace.hosts()
    assert fresh["pid"] != host["pid"]


def test_ctrl_c_in_a_process_of_its_own_is_one_line_and_exit_130(workspace: Workspace) -> None:
    """Ctrl-C printed Prefect's "Crash detected!" and a traceback; now it says so in one line."""
    index = ["--no-host", "index", "--source", "photos", "--data-dir", "data", *WAITING_MODELS]
    waiting = _index_held_mid_run(workspace, index)
    waiting.send_signal(signal.SIGINT)
    stdout, stderr = waiting.communicate(timeout=120)
    assert waiting.returncode == 130, stderr
    assert "Traceback" not in stderr and "Crash detected" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].endswith("interrupted"), stderr  # after the progress bar, if it was drawn
    assert "images indexed now" not in stdout


def _api_port(api_server: int) -> int:
    words = Path(f"/proc/{api_server}/cmdline").read_bytes().split(b"\0")
    return int(words[words.index(b"--port") + 1])


def _answer(url: str, body: dict[str, str] | None = None) -> int:
    """The HTTP status of a GET (or a POST of `body`) with no credentials, as any local user could send it."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy from the environment
    try:
        with direct.open(request, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_a_killed_host_is_replaced_and_another_environment_gets_its_own(workspace: Workspace) -> None:
    query = ["query", "x", "-k", "0"]
    assert workspace.run(*query).returncode == 2
    [host] = workspace.hosts()
    [api_server] = children_running(int(host["pid"]), PREFECT_API_COMMAND)
    # Its temporary Prefect API is on 127.0.0.1, where every local user can reach it; it answers only its owner.
    api = f"http://127.0.0.1:{_api_port(api_server)}/api"
    assert _answer(f"{api}/health") == 200
    assert _answer(f"{api}/flows/", {"name": "not-yours"}) == _answer(f"{api}/flow_runs/filter", {}) == 401
    os.kill(int(host["pid"]), signal.SIGKILL)  # its socket file stays behind, and it cannot stop its Prefect API
    while _alive(int(host["pid"])):
        time.sleep(0.05)
    deadline = time.monotonic() + 15
    while _alive(api_server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(api_server), "the killed host's temporary Prefect API was left running"
    again = workspace.run(*query)
    assert again.returncode == 2 and "error: k:" in again.stderr
    [fresh] = workspace.hosts()
    assert fresh["pid"] != host["pid"]
    elsewhere = workspace.run(*query, CROPSEARCH_TEST_VARIABLE="1")  # the same names, one value changed
    assert elsewhere.returncode == 2 and "error: k:" in elsewhere.stderr
    both = {host["pid"] for host in workspace.hosts()}
    assert len(both) == 2 and fresh["pid"] in both
    other = (both - {fresh["pid"]}).pop()

    # A settings file Prefect reads changes: a new host, and the one it supersedes stops, not the other environment's.
    (workspace.folder / "prefect.toml").write_text("# settings for this folder\n")
    assert workspace.run(*query).returncode == 2
    after = {host["pid"] for host in workspace.hosts()}
    assert len(after) == 2 and other in after and fresh["pid"] not in after


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split(") ")[-1][0] != "Z"


def test_a_sockets_folder_others_can_open_is_refused_and_commands_run_alone(tmp_path: Path) -> None:
    shared = tmp_path / "run" / "cropsearch"
    shared.mkdir(parents=True)
    shared.chmod(0o755)
    with pytest.raises(HostUnavailable, match="only this user can open"):
        private_folder(shared)
    done = Workspace(tmp_path, runtime=tmp_path / "run").run("query", "x", "-k", "0")
    assert done.returncode == 2 and "error: k:" in done.stderr
    assert list(shared.iterdir()) == []  # no socket was made where others could reach it


def test_a_code_edit_that_keeps_the_size_starts_a_new_host_and_stops_the_stale_one(tmp_path: Path) -> None:
    code = tmp_path / "code"
    for package in ("components", "flows", "schemas"):
        shutil.copytree(REPO / package, code / package, ignore=shutil.ignore_patterns("__pycache__"))
    workspace = Workspace(tmp_path, code)
    query = ["query", "x", "-k", "0"]
    try:
        assert workspace.run(*query).returncode == 2
        [stale] = workspace.hosts()
        edited = code / "components" / "host" / "__init__.py"
        before = edited.read_text()
        after = before.replace("A `cropsearch` process", "a `cropsearch` process", 1)
        assert after != before and len(after) == len(before)  # a fixed typo: same size, new content
        edited.write_text(after)
        again = workspace.run(*query)
        assert again.returncode == 2 and "error: k:" in again.stderr
        [fresh] = workspace.hosts()  # the stale host was stopped, not left to idle for 15 minutes
        assert fresh["pid"] != stale["pid"] and fresh["commands"] == "1"
    finally:
        workspace.close()


def test_a_command_that_crashes_in_the_host_exits_as_it_would_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `run_cli_command` makes of each way a command ends: a crash is never exit status 0."""

    def ends(outcome: BaseException | None) -> None:
        def main(argv: list[str], prog_name: str, obj: str) -> None:
            assert obj == flows.cli_runs.HOSTED  # the command knows the host ends it when it is cancelled
            if outcome is not None:
                raise outcome

        monkeypatch.setattr(flows.cli, "main", main)

    ends(RuntimeError("a bug in a command"))
    assert run_cli_command(["index"]) == 1
    ends(SystemExit("error: a message"))
    assert run_cli_command(["index"]) == 1
    ends(SystemExit(2))
    assert run_cli_command(["index"]) == 2
    ends(SystemExit(None))
    assert run_cli_command(["index"]) == 0
    ends(None)
    assert run_cli_command(["index"]) == 0


def test_a_host_exits_after_15_idle_minutes_unless_its_environment_says_otherwise() -> None:
    """The wait itself is tested with the fake host (tests/host/test_server.py), in a second, not 15 minutes."""
    assert idle_seconds_from({}) == IDLE_SECONDS == 15 * 60
    assert idle_seconds_from({IDLE_VARIABLE: "8"}) == 8.0
