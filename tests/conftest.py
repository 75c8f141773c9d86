"""Shared fixtures: tiny real models, real photos, a local HTTP server, and (on request) Prefect.

Environment is set before anything imports Prefect or transformers: no hub calls, no telemetry,
and a throwaway PREFECT_HOME so cached task results never leak between test sessions (removed
when the session ends: a folder per session would fill the disk CI shares with other runs).

`make test` runs the files on pytest-xdist workers, a file to a worker (`--dist loadfile`), so a
module's fixtures are built once. Each worker process loads this module and gets its own
PREFECT_HOME; `pytest_collection_modifyitems` hands out the longest files first.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="cropsearch-prefect-")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("YOLO_VERBOSE", "false")
# Read by OpenMP as torch loads: the suite runs more torch threads than cores (xdist workers, their
# subprocesses), where threads spinning while they wait take the cores from the ones with work.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
from PIL import Image

from tests.http_server import LocalHttpServer
from tests.tiny_models import build_tiny_clip, build_tiny_yolo, build_tiny_yoloe

atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)

# The files that take longest (each run's `--durations` shows them), started first: with a file per
# worker, a long file handed out last would leave the other workers idle while it runs.
LONGEST_FILES = (
    "tests/flows/test_deployments.py",  # a Prefect server, a worker and ~25 deployed runs
    "tests/flows/test_deployment_crash.py",  # most of it waiting for missed heartbeats
    "tests/bench/test_bench.py",
    "tests/flows/test_host.py",
    "tests/flows/test_flows.py",
    "tests/bench/test_crash_loop.py",
    "tests/flows/test_distributed.py",
    "tests/flows/test_cli.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        return LONGEST_FILES.index(path) if path in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)  # stable: within a file, and among the rest, the collection's order stays


@pytest.fixture(autouse=True)
def ctrl_c_reaches_started_commands() -> Iterator[None]:
    """Commands a test starts take Ctrl-C as at a terminal, even where this process ignores it.

    A suite started in the background (`make test &`, some CI runners) ignores SIGINT, and so does a
    worker once Ray has started in it; a command started then would ignore a test's Ctrl-C too (an
    ignored signal stays ignored in a started program, a handled one is reset to its default).
    """
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(scope="session")
def tiny_yolo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_yolo(tmp_path_factory.mktemp("models") / "tiny-yolo.pt")


@pytest.fixture(scope="session")
def tiny_yoloe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_yoloe(tmp_path_factory.mktemp("models") / "tiny-yoloe.pt")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


def ultralytics_assets() -> list[Path]:
    import ultralytics

    return sorted((Path(ultralytics.__file__).parent / "assets").glob("*.jpg"))


def write_scene(path: Path, seed: int, size: tuple[int, int] = (160, 120)) -> Path:
    """A generated photo-like picture: a smooth gradient with a few coloured rectangles."""
    rng = np.random.default_rng(seed)
    width, height = size
    gradient = np.linspace(40, 200, width, dtype=np.float32)[None, :, None]
    pixels = np.broadcast_to(gradient, (height, width, 3)).copy()
    for _ in range(3):
        x, y = int(rng.integers(0, width - 30)), int(rng.integers(0, height - 30))
        pixels[y : y + int(rng.integers(10, 30)), x : x + int(rng.integers(10, 30))] = rng.integers(0, 255, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)
    return path


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Ten images: the two real photos shipped with ultralytics and eight generated scenes."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for asset in ultralytics_assets():
        shutil.copy(asset, folder / asset.name)
    for seed in range(8):
        write_scene(folder / f"scene-{seed:02d}.jpg", seed)
    return folder


@pytest.fixture
def http_server() -> Iterator[LocalHttpServer]:
    server = LocalHttpServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for the whole session (starting one costs ~10 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


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
