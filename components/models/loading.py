"""Naming, finding and caching model weights (detector and embedder alike).

A model spec is a hub name (`yolov10x.pt`, `openai/clip-vit-base-patch32`), a local path, an
ultralytics `.yaml` architecture (random weights, for benchmarks and tests) or a
`plugin:<module>:<factory>`. Ids are what the database records: hub names as given, local
weights as `name@<content hash>`, so moving a file keeps its id and swapping weights changes it.
Official ultralytics release names keep their name as id even once downloaded (ultralytics saves
them in the working directory): otherwise the second run would see "new" weights and redo everything.
"""

from __future__ import annotations

import functools
import hashlib
import re
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlparse

from components.errors import ModelUnavailableError
from components.models.plugins import is_plugin_spec, load_plugin
from components.ops.access import AccessDenied, check_inside
from schemas.machine import MachinePlan

ModelRole = Literal["detector", "embedder"]
T = TypeVar("T")

_FLAG_OF_ROLE = {"detector": "--detector", "embedder": "--embedder"}
# .npz: a detector's vocabulary (`vocabulary.py`), a model input named and identified like weights.
_WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".onnx", ".json", ".txt", ".model", ".npz")

_loaded: dict[tuple[str, ...], object] = {}
_loaded_lock = threading.Lock()


def load_once(key: tuple[str, ...], load: Callable[[], T]) -> T:
    """Load a model at most once per process for a key such as (spec, device)."""
    with _loaded_lock:
        if key not in _loaded:
            _loaded[key] = load()
        return _loaded[key]  # type: ignore[return-value]


def load_model(
    kind: str,
    spec: str,
    machine: MachinePlan,
    build: Callable[[str, MachinePlan], T],
    model_roots: Sequence[Path] | None = None,
    variant: str = "",
) -> T:
    """A detector or embedder, loaded at most once per process for its weights and the machine's device and precision.

    `build(spec, machine)` makes it from weights; a plug-in is made by its own factory and chooses
    its own precision. `machine` is the decision `decide_machine` made for this process: taken as
    it is. `variant` tells apart models that `build` makes differently from the same weights (a
    detector given a vocabulary: that file's id). With `model_roots` (a deployed run) the spec is
    checked again here, when it is opened (`check_model_location`): files may have appeared since
    the run's start.
    """
    if model_roots is not None:
        check_model_location(spec, model_roots, kind)
    if is_plugin_spec(spec):
        return load_once((kind, spec, machine.device), lambda: load_plugin(spec, machine.device))
    # Keyed by the weights' id too: a long-lived process (the warm host) must not keep serving
    # weights that were replaced at the same path. And by the plan's torch threads, which the
    # detector holds torch at: a model loaded for another plan would hold that plan's.
    key = (kind, spec, model_id(spec), machine.device, machine.precision, str(machine.torch_threads), variant)
    return load_once(key, lambda: build(spec, machine))


def model_id(spec: str) -> str:
    """Stable id of the weights a spec names (see module docstring)."""
    path = Path(spec).expanduser()
    if is_plugin_spec(spec) or not path.exists() or is_official_yolo_release(spec):
        return spec
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in _WEIGHT_SUFFIXES)
    stamps = tuple((str(file.resolve()), file.stat().st_size, file.stat().st_mtime_ns) for file in files)
    return f"{path.name}@{_content_hash(stamps)}"


def detector_id_of(spec: str, vocabulary: str | None = None) -> str:
    """The id a detector's crops record: its weights', joined by its vocabulary file's when it is given one
    (other words, other boxes: `yoloe-11s-seg.pt+words.npz@<hash>`)."""
    return model_id(spec) if vocabulary is None else f"{model_id(spec)}+{model_id(vocabulary)}"


@functools.lru_cache(maxsize=64)
def _content_hash(files: tuple[tuple[str, int, int], ...]) -> str:
    """sha256 of the files' names and bytes; remembered per process while size and mtime stay the same,
    since hashing yolov10x + CLIP ViT-B/32 (~700 MB) takes ~2 s, most of an unchanged re-run's time."""
    digest = hashlib.sha256()
    for name, _, _ in files:
        digest.update(Path(name).name.encode())
        with open(name, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()[:12]


def is_official_yolo_release(spec: str) -> bool:
    if not spec.endswith(".pt") or "/" in spec or "\\" in spec:
        return False
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    return spec in GITHUB_ASSETS_NAMES


def local_model_path(spec: str) -> Path | None:
    """The file or folder on this machine that loading `spec` opens; None where it comes from a hub or a package.

    Hugging Face ids are `org/name` (one slash), ultralytics' releases a bare `.pt` name, its
    bundled architectures a bare `.yaml` name; anything else, or anything that exists here (both
    libraries open an existing local path before asking a hub), is a local path.
    """
    if is_plugin_spec(spec) or is_official_yolo_release(spec):
        return None
    path = Path(spec).expanduser()
    if path.exists() or path.is_absolute() or spec.startswith((".", "~")) or "\\" in spec or spec.count("/") > 1:
        return path
    if spec.endswith((".yaml", ".yml")):
        return None if _bundled_architecture(spec) else path
    return path if spec.endswith(_WEIGHT_SUFFIXES) else None


def _bundled_architecture(spec: str) -> bool:
    """Whether ultralytics builds a bare `.yaml` name from its own package, and nothing here can shadow it.

    ultralytics looks for `yolo11n.yaml` as `yolo11.yaml` (the scale letter dropped) and then as
    given, each first in the working directory and only then in its package: a file of either name
    here would be built instead (and building a YAML evaluates its `activation:` string).
    """
    if "/" in spec or "\\" in spec:
        return False
    names = {re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", spec), spec}
    if any(Path(name).exists() for name in names):  # asked every time: a working directory's files come and go
        return False
    return any(_packaged_config(name) for name in names)


@functools.lru_cache(maxsize=64)
def _packaged_config(name: str) -> bool:
    """Whether ultralytics' package holds a config of this name (its files do not change while it runs)."""
    from ultralytics.utils import ROOT

    return next((ROOT / "cfg").rglob(name), None) is not None


def check_model_location(spec: str, model_roots: Sequence[Path], parameter: str) -> Path | None:
    """A spec that opens a local file or folder must name an existing one inside a model root: that one, resolved.

    None for a spec that opens nothing local (a hub name, a bundled config, a plug-in).

    Loading weights (pickles) or building a model config (`.yaml`, whose `activation:` ultralytics
    evaluates) runs what they hold, so they come from the operator's folders only, never from where
    a run may write. Checked when a run starts and again when the model is opened.
    """
    path = local_model_path(spec)
    if path is None:
        return None
    resolved = check_inside(path, model_roots, what=parameter, use="load weights from")
    if not resolved.exists():
        raise AccessDenied(f"{parameter} {spec!r}: no such file or folder in the model roots")
    return resolved


def portable_spec(spec: str) -> str:
    """A spec that still names the same weights from another working directory."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if not is_plugin_spec(spec) and path.exists() else spec


def host_reachable(url: str, timeout_seconds: float = 3.0) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout_seconds):
            return True
    except OSError:
        return False


def _unavailable(role: ModelRole, spec: str, why: str) -> ModelUnavailableError:
    flag = _FLAG_OF_ROLE[role]
    return ModelUnavailableError(
        f"{role} {spec!r} is not available: {why}. Point {flag} at local weights "
        f"(a {'.pt file' if role == 'detector' else 'folder saved with save_pretrained'})."
    )


def check_detector_available(spec: str) -> None:
    """Fail within seconds, naming the flag to use, when YOLO weights can be neither found nor fetched."""
    if is_plugin_spec(spec) or spec.endswith((".yaml", ".yml")) or Path(spec).expanduser().is_file():
        return
    if "/" in spec or "\\" in spec:
        raise _unavailable("detector", spec, "no such file")
    from ultralytics.utils import SETTINGS

    if (Path(SETTINGS["weights_dir"]) / spec).is_file():
        return
    if not host_reachable("https://github.com"):
        raise _unavailable("detector", spec, "it is not on disk and github.com (its download host) is unreachable")


def hub_files_only() -> bool:
    """True when a Hugging Face id must load from the local cache because the hub is out of reach."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or not host_reachable(constants.ENDPOINT)


def check_embedder_available(spec: str) -> None:
    """Fail within seconds when CLIP weights are neither a local folder, nor cached, nor downloadable."""
    path = Path(spec).expanduser()
    if is_plugin_spec(spec) or path.is_dir():
        return
    if path.is_absolute() or spec.startswith((".", "~")) or spec.count("/") > 1:
        raise _unavailable("embedder", spec, "no such folder")
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(spec, "config.json"), str):
        return
    if hub_files_only():
        raise _unavailable(
            "embedder", spec, f"it is not in the local Hugging Face cache and {constants.ENDPOINT} is unreachable"
        )
