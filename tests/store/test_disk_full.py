"""A full disk mid-index: a clear error naming the device, and a rerun with space finishes the same index."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.errors import DiskFullError
from flows.index_coco import index_coco
from tests.flows.test_flows import table_ids, tiny_params

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (root only; CI runs as root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


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
