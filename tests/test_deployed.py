"""What deployed runs may load: weights from the operator's folders only, and no plug-ins."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.access import AccessDenied
from flows import deployed


def test_runs_outside_deployments_load_what_their_user_can(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    deployed.check_models(str(weights), "plugin:tests.plugins:make")
    assert deployed.query_image_roots() is None


def test_deployed_runs_are_held_to_the_operators_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", "00000000-0000-0000-0000-000000000001")
    allowed, stray = tmp_path / "models", tmp_path / "downloads"
    for folder in (allowed, stray):
        folder.mkdir()
        (folder / "w.pt").write_bytes(b"x")
    monkeypatch.setenv(deployed.MODEL_ROOTS_VARIABLE, str(allowed))
    deployed.check_models(str(allowed / "w.pt"), "openai/clip-vit-base-patch32", "yolov10x.pt", None)
    with pytest.raises(AccessDenied, match="outside the folders deployed runs may load weights from"):
        deployed.check_models(str(stray / "w.pt"))
    with pytest.raises(AccessDenied, match="plug-ins run code"):
        deployed.check_models("plugin:tests.plugins:make")
    assert deployed.query_image_roots() == [Path.cwd() / "query-images"]
