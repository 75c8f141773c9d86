"""A real local Prefect stack for the deployment tests (`cropsearch stack up`) and the calls that check it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.conftest import write_scene

REPO = Path(__file__).resolve().parents[2]
RUN_SECONDS = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Stack:
    api_url: str
    env: dict[str, str]
    state_dir: Path
    image_root: Path  # the operator's folders: query images, sources, and where runs write
    source_root: Path
    data_root: Path
    search_page_port: int  # `stack up` serves <data_root>/lancedb there
    up_output: str = ""  # what `stack up` printed

    @property
    def search_page(self) -> str:
        return f"http://127.0.0.1:{self.search_page_port}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=300
        )

    def deployment_run(self, name: str, **parameters: object) -> UUID:
        """`prefect deployment run NAME --param key=value ...`, exactly as in the README."""
        flags = [part for key, value in parameters.items() for part in ("--param", f"{key}={value}")]
        done = self.cli("prefect", "deployment", "run", name, *flags)
        assert done.returncode == 0, done.stdout + done.stderr
        return UUID(re.search(r"UUID: ([0-9a-f-]{36})", done.stdout).group(1))  # type: ignore[union-attr]

    def client(self) -> SyncPrefectClient:
        return SyncPrefectClient(self.api_url)

    def wait(self, run_id: UUID) -> FlowRun:
        deadline = time.monotonic() + RUN_SECONDS
        with self.client() as client:
            while time.monotonic() < deadline:
                run = client.read_flow_run(run_id)
                if run.state is not None and run.state.is_final():
                    return run
                time.sleep(1)
        pytest.fail(f"flow run {run_id} did not finish in {RUN_SECONDS} s; worker log: {self.worker_log()}")

    def run_logs(self, run_id: UUID) -> str:
        """The run's log lines so far; for a finished run, all of them.

        The flow process ships its logs in batches after it sets the final state, so a run can read
        as Failed before its error line arrives (CI saw exactly that). The engine's last line,
        "Finished in state ...", comes after every line the flow wrote.
        """
        deadline = time.monotonic() + 60
        with self.client() as client:
            while True:
                logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
                text = "\n".join(log.message for log in logs)
                state = client.read_flow_run(run_id).state
                finished = state is not None and state.is_final()
                if not finished or "Finished in state" in text or time.monotonic() > deadline:
                    return text[-6000:]
                time.sleep(0.5)

    def result(self, run: FlowRun) -> object:
        assert run.state is not None and run.state.is_completed(), f"{run.name}: {run.state}\n{self.run_logs(run.id)}"
        with temporary_settings({PREFECT_API_URL: self.api_url}):
            return run.state.result()

    def artifacts(self, run_id: UUID) -> dict[str, object]:
        with self.client() as client:
            found = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        return {artifact.key: artifact for artifact in found if artifact.key}

    def worker_log(self) -> str:
        log = self.state_dir / "worker.log"
        return log.read_text(errors="replace")[-4000:] if log.is_file() else "(no worker log)"


def photos(folder: Path, seeds: range) -> Path:
    """A new folder of generated scenes, one per seed, for deployed runs to index."""
    folder.mkdir(parents=True)
    for seed in seeds:
        write_scene(folder / f"scene-{seed:02d}.jpg", seed)
    return folder


@contextmanager
def running_stack(home: Path, model_folders: list[Path]) -> Iterator[Stack]:
    """`cropsearch stack up` on a free port with the operator's folders under `home`; `stack down` after."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_API")}
    # Shares the test session's PREFECT_HOME, so run results persisted by the worker read back here.
    env.update(PREFECT_WORKER_QUERY_SECONDS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    state_dir = home / "state"
    live = Stack(
        api_url=f"http://127.0.0.1:{port}/api",
        env=env,
        state_dir=state_dir,
        image_root=home / "allowed",
        source_root=home / "photos",
        data_root=home / "data",
        search_page_port=free_port(),
    )
    for root in (live.image_root, live.source_root, live.data_root):
        root.mkdir()
    where = ["--port", str(port), "--state-dir", str(state_dir), "--project-dir", str(REPO)]
    where += ["--serve-port", str(live.search_page_port), "--serve-db", str(live.data_root / "lancedb")]
    try:
        operator = [
            *("--query-image-roots", str(live.image_root)),
            *("--source-roots", str(live.source_root)),
            *("--data-roots", str(live.data_root)),
            *("--model-roots", ",".join(map(str, model_folders))),
            *("--allowed-hosts", "127.0.0.1"),  # the tests' own HTTP server
        ]
        started = live.cli("flows.cli", "stack", "up", *where, *operator)
        assert started.returncode == 0, started.stdout + started.stderr + live.worker_log()
        live.up_output = started.stdout
        yield live
    finally:
        stopped = live.cli("flows.cli", "stack", "down", *where)
        assert stopped.returncode == 0, stopped.stderr
        for pid_file in state_dir.glob("*.pid"):  # `down` removes them; any left is a process that survived
            pytest.fail(f"{pid_file.name} left behind by `stack down`")
