"""A deployed run whose worker is killed: the server marks it crashed and the next run goes ahead.

A stack of its own (test_deployments.py's shares one among many runs): this test kills its worker,
and most of its time is the server's wait for three missed heartbeats (90 s), which a pytest-xdist
worker spends beside the other files instead of after test_deployments.py's runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.flows.prefect_stack import REPO, RUN_SECONDS, Stack, photos, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.deployment]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_yolo: Path, tiny_clip: Path) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack"), [tiny_yolo.parent, tiny_clip.parent]) as live:
        yield live


def test_a_run_whose_worker_was_killed_is_marked_crashed_and_the_next_run_goes_ahead(
    stack: Stack, tiny_yolo: Path, tiny_clip: Path
) -> None:
    """A worker killed with SIGKILL left its run "Running" forever, and the next index run waited ~4.5 min.

    It kills the stack's worker, then brings it back with `stack up`.
    """
    many = photos(stack.source_root / "many", range(40, 100))
    models = {"detector": tiny_yolo, "embedder": tiny_clip, "confidence": 0.0001, "max_detections": 3}
    common = {"data_dir": stack.data_root, "db_uri": stack.data_root / "killed", "device": "cpu", **models}
    doomed = stack.deployment_run("index-coco/adhoc", source=many, **common)
    with stack.client() as client:
        deadline = time.monotonic() + RUN_SECONDS
        while "waited" not in stack.run_logs(doomed) and "to index in chunks" not in stack.run_logs(doomed):
            assert time.monotonic() < deadline, stack.run_logs(doomed)
            time.sleep(1)  # it holds the deployment's slot and the writer limit now
        worker = psutil.Process(json.loads((stack.state_dir / "worker.pid").read_text())["pid"])
        for process in [worker, *worker.children(recursive=True)]:  # the worker and its flow run, without a word
            process.kill()
        killed_at = time.monotonic()
        while not (run := client.read_flow_run(doomed)).state.is_final():  # type: ignore[union-attr]
            assert time.monotonic() - killed_at < 240, f"still {run.state} after 240 s"
            time.sleep(2)
    assert run.state.is_crashed(), run.state  # type: ignore[union-attr]
    assert "no heartbeat" in (run.state.message or "")  # type: ignore[union-attr]

    where = ["--port", stack.api_url.split(":")[-1].removesuffix("/api"), "--state-dir", str(stack.state_dir)]
    operator = [
        *("--query-image-roots", str(stack.image_root), "--source-roots", str(stack.source_root)),
        *("--data-roots", str(stack.data_root), "--model-roots", f"{tiny_yolo.parent},{tiny_clip.parent}"),
        *("--allowed-hosts", "127.0.0.1", "--project-dir", str(REPO)),
    ]
    restarted = stack.cli("flows.cli", "stack", "up", *where, *operator)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    # A second `stack up` deploys prefect.yaml again: the nightly re-index nobody started stays paused.
    assert "nightly re-index  paused: `prefect deployment schedule resume" in restarted.stdout, restarted.stdout
    with stack.client() as client:
        assert client.read_deployment_by_name("index-coco/nightly").schedules[0].active is False
    again = stack.deployment_run("index-coco/adhoc", source=many, **common)
    report = stack.result(stack.wait(again))
    assert report.images_new + report.images_already_indexed == 60  # type: ignore[attr-defined]
