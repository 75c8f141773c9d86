"""A full disk mid-index: a clear error naming the device, and a rerun with space finishes the same index."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from components.errors import DiskFullError
from components.store.writer import StoreWriter
from flows.index_coco import index_coco
from tests.flows.test_flows import table_ids, tiny_params
from tests.records import image

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_a_full_disk_fails_clearly_and_a_rerun_with_space_completes(
    small_disk: Path, photo_folder: Path, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    params = tiny_params(photo_folder, small_disk / "data", tiny_yolo, tiny_clip)
    with pytest.raises(DiskFullError, match=r"no space left on the device holding .*small.*run again"):
        index_coco(**params.flat())
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    rerun = index_coco(**params.flat())
    assert rerun.images_new + rerun.images_already_indexed == 10
    reference = tiny_params(photo_folder, tmp_path / "roomy", tiny_yolo, tiny_clip)
    index_coco(**reference.flat())
    assert table_ids(params.resolved_db_uri) == table_ids(reference.resolved_db_uri)


def test_a_database_on_a_full_disk_fails_naming_it(small_disk: Path) -> None:
    """Issue 26, item 2: the flow test fills the disk with crop files first; here only LanceDB writes to it.

    The clear error depends on LanceDB's own text for ENOSPC ("No space left on device"), which
    this pins: a LanceDB release that words it otherwise fails here instead of showing users a raw error.
    """
    writer = StoreWriter(str(small_disk / "db"))
    with pytest.raises(DiskFullError, match=r"no space left on the device holding .*small/db"):
        for batch in range(20):  # ~30 KB of rows per write: the 64 KiB disk is full within a few
            writer.upsert_images([image(f"photo-{batch}-{number}") for number in range(100)])
