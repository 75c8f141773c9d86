"""One writer per local database: the lock waits, times out clearly, and two real index runs make one result."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import lancedb
import pytest

from components.store.locks import WriterLockTimeout, exclusive_writer
from components.store.schema import CROPS, EMBEDDINGS, IMAGES


def test_a_second_writer_waits_for_the_first(tmp_path: Path) -> None:
    db = str(tmp_path / "lancedb")
    held = threading.Event()

    def first() -> None:
        with exclusive_writer(db):
            held.set()
            time.sleep(1.0)

    thread = threading.Thread(target=first)
    thread.start()
    held.wait()
    started = time.monotonic()
    with exclusive_writer(db):
        waited = time.monotonic() - started
    thread.join()
    assert waited > 0.5


def test_a_writer_that_would_wait_too_long_gets_a_clear_error(tmp_path: Path) -> None:
    db = str(tmp_path / "lancedb")
    refused = pytest.raises(WriterLockTimeout, match=r"kept .*lancedb locked for over 0 s")
    with exclusive_writer(db), refused, exclusive_writer(db, timeout_seconds=0.3):
        pass


def test_the_lock_dies_with_a_killed_holder(tmp_path: Path) -> None:
    db = str(tmp_path / "lancedb")
    script = f"from components.store.locks import exclusive_writer\nimport time\nwith exclusive_writer({db!r}):\n"
    script += "    print('held', flush=True); time.sleep(600)"
    holder = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with exclusive_writer(db, timeout_seconds=5):
        pass


@pytest.mark.slow
def test_two_index_runs_at_once_without_a_server_make_one_result(
    photo_folder: Path, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    """Each `cropsearch index` process starts its own temporary Prefect API, so only the file lock can coordinate."""
    command = [
        sys.executable, "-m", "flows.cli", "index", "--source", str(photo_folder), "--data-dir", str(tmp_path / "data"),
        "--detector", str(tiny_yolo), "--embedder", str(tiny_clip), "--confidence", "0.0001", "--max-detections", "3",
        "--min-box-pixels", "8", "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    runs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in "ab"
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    indexed = sorted(int(re.search(r"images indexed now\s+(\d+)", out).group(1)) for out in outputs)  # type: ignore[union-attr]
    assert indexed == [0, 10]  # the run that waited found everything done
    db = lancedb.connect(str(tmp_path / "data" / "lancedb"))
    for table, key in ((IMAGES, "image_id"), (CROPS, "crop_id"), (EMBEDDINGS, "id")):
        ids = db.open_table(table).to_arrow().column(key).to_pylist()
        assert len(ids) == len(set(ids)), f"duplicates in {table}"
    assert db.open_table(IMAGES).count_rows() == 10


def test_without_a_server_the_writer_limit_is_not_asked_for() -> None:
    """A temporary API belongs to one process: its limits order nothing, so the run does not wait on them."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.index_coco import _one_writer_at_a_time

    # Outside a flow run, asking for the limit would fail (it logs through the run's logger).
    with temporary_settings(updates={PREFECT_API_URL: ""}), _one_writer_at_a_time("cropsearch-index-writer"):
        pass
    server = temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"})
    with server, pytest.raises(Exception, match="context"), _one_writer_at_a_time("cropsearch-index-writer"):
        pass
