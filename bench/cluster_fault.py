"""A cluster fault: SIGKILL the Ray worker process running a chunk, mid-chunk, and check what the run made of it.

    python -m bench.cluster_fault

An index run on a local Ray cluster (`--task-runner ray`) over the crash loop's source. When the
flow waits for its second chunk's model work, the worker process running that chunk's task (Ray
names it `ray::model_stage`) is killed. Ray then runs the task again on a new worker, or the
run fails naming the chunk; either way a second run must complete, and the tables and crop files
must equal the thread runner's (the crash loop's reference run).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.crash_loop import (
    REPO,
    file_problems,
    index_command,
    problems,
    run_to_completion,
    snapshot,
    world_zip,
)
from bench.plan import child_environment
from flows.index_coco import model_stage
from schemas.stages import STAGE_MARKER
from tests.http_server import LocalHttpServer

# The process title Ray gives a worker while it runs a chunk: prefect-ray names the remote call
# after the Prefect task.
RAY_TASK_TITLE = f"ray::{model_stage.name}"
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class ClusterFault:
    worker_killed: bool = False
    first_run_status: int = 0
    first_run_new_images: int = -1
    first_run_says: str = ""  # what the run said of the fault: Ray's retry, or its last error
    second_run_new_images: int = -1
    problems: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.worker_killed and self.second_run_new_images >= 0 and not any(self.problems.values())


def _ray_task_worker(root: int, wait_seconds: float = 120) -> psutil.Process | None:
    """The process under `root` that runs a Prefect task on Ray, once there is one."""
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        for process in psutil.Process(root).children(recursive=True):
            try:
                if RAY_TASK_TITLE in " ".join(process.cmdline()):
                    return process
            except psutil.Error:
                continue
        time.sleep(0.05)
    return None


def _first_run_with_a_fault(command: list[str], fault: ClusterFault) -> None:
    process = subprocess.Popen(
        command, env=child_environment(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    lines, waits_for_models = [], 0
    try:
        for line in process.stdout:
            lines.append(line)
            found = STAGE_MARKER.search(line)
            if found and (found["stage"], found["event"]) == ("model work", "started"):
                waits_for_models += 1
                if waits_for_models == 2 and not fault.worker_killed:
                    worker = _ray_task_worker(process.pid)
                    if worker is not None:
                        worker.send_signal(signal.SIGKILL)
                        fault.worker_killed = True
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    fault.first_run_status = process.returncode
    log = "".join(lines)
    fault.first_run_new_images = _new_images(log)
    retried = [line for line in lines if "will be retried" in line]
    failed = [line for line in lines if "Error" in line and "Traceback" not in line]
    said = retried or failed[-1:] or ["(nothing)"]
    fault.first_run_says = ANSI_COLOUR.sub("", said[0]).strip()[:200]


def cluster_fault(work: Path, source: str) -> ClusterFault:
    """Kill a Ray worker mid-chunk in one run, complete the index with a second, compare with the thread runner."""
    fault = ClusterFault()
    reference_dir, data_dir = work / "thread", work / "ray"
    run_to_completion(index_command(source, reference_dir))
    command = [*index_command(source, data_dir), "--task-runner", "ray", "--workers", "1"]
    _first_run_with_a_fault(command, fault)
    second = "".join(line for _, line in run_to_completion(command))
    fault.second_run_new_images = _new_images(second)
    reference, state = snapshot(reference_dir), snapshot(data_dir)
    fault.problems = problems(state.tables, reference.tables) | file_problems(state, reference)
    return fault


def _new_images(log: str) -> int:
    """The count in the run's closing "indexed N new images" line; -1 (failing the check) when no such line."""
    for line in reversed(log.splitlines()):
        if "indexed " in line and " new images" in line:
            return int(line.split("indexed ", 1)[1].split(" ", 1)[0])
    return -1


def main() -> None:
    server = LocalHttpServer()
    server.files["/scenes.zip"] = world_zip(12)
    try:
        with tempfile.TemporaryDirectory() as work:
            fault = cluster_fault(Path(work), server.url("/scenes.zip"))
    finally:
        server.close()
    print(fault)
    raise SystemExit(0 if fault.passed else 1)


if __name__ == "__main__":
    main()
