"""What a deployed run may touch on its worker, set by the operator rather than by the run's parameters.

Runs started from the UI or `prefect deployment run` take parameters from whoever starts them, so
files are held to folders the operator chose: the checkout the worker runs from (its working
directory) plus the folders `cropsearch stack up` wrote into the worker's environment. Runs from
the CLI or Python are their user's own and read what that user can.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect.runtime import deployment

from components.access import AccessDenied, check_inside
from components.plugins import is_plugin_spec

QUERY_IMAGE_ROOTS_VARIABLE = "CROPSEARCH_QUERY_IMAGE_ROOTS"
MODEL_ROOTS_VARIABLE = "CROPSEARCH_MODEL_ROOTS"


def _roots(variable: str, default: Path) -> list[Path] | None:
    if deployment.id is None:
        return None
    listed = os.environ.get(variable, "")
    return [default, *(Path(item) for item in listed.split(os.pathsep) if item)]


def query_image_roots() -> list[Path] | None:
    """The checkout's `query-images/` and `stack up --query-image-roots`; None outside deployments."""
    return _roots(QUERY_IMAGE_ROOTS_VARIABLE, Path.cwd() / "query-images")


def check_models(*specs: str | None) -> None:
    """In deployed runs: local weights only from the checkout or `stack up --model-roots`, and no plug-ins.

    `.pt` files are pickles and plug-ins are Python modules: either runs code when loaded.
    """
    roots = _roots(MODEL_ROOTS_VARIABLE, Path.cwd())
    if roots is None:
        return
    for spec in specs:
        if spec is None:
            continue
        if is_plugin_spec(spec):
            raise AccessDenied(f"model {spec!r}: plug-ins run code and are refused in deployed runs")
        if Path(spec).expanduser().exists():
            check_inside(Path(spec), roots, what="model", use="load weights from")
