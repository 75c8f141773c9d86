"""Model plug-ins: a detector or embedder named `plugin:<module>:<factory>` instead of weights.

The factory is imported and called with the device. This is how a custom model (or a test's
deterministic one) enters the same pipeline as YOLO and CLIP. Importing runs code: name only
modules you trust, as with any weights file.
"""

from __future__ import annotations

import importlib
from typing import Any

PLUGIN_PREFIX = "plugin:"


def is_plugin_spec(spec: str) -> bool:
    return spec.startswith(PLUGIN_PREFIX)


def load_plugin(spec: str, device: str) -> Any:
    module_name, _, factory_name = spec.removeprefix(PLUGIN_PREFIX).partition(":")
    if not module_name or not factory_name:
        raise ValueError(f"plug-in {spec!r} must look like 'plugin:<module>:<factory>'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"plug-in {spec!r}: cannot import {module_name!r}: {error}") from error
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ValueError(f"plug-in {spec!r}: {module_name} has no callable {factory_name!r}")
    return factory(device=device)
