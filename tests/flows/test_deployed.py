"""Deployed runs read the operator's policy from their worker; without one they are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.ops.access import AccessDenied
from flows import deployed
from schemas.policy import POLICY_VARIABLE
from schemas.stack import StackParams

A_DEPLOYMENT = "00000000-0000-0000-0000-000000000001"


def test_runs_outside_deployments_are_their_users_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POLICY_VARIABLE, raising=False)
    assert deployed.policy() is None
    deployed.hold_model("plugin:tests.plugins:make", None, "embedder")  # a CLI user may load what they like


def test_a_deployed_run_on_a_worker_without_a_policy_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", A_DEPLOYMENT)
    monkeypatch.delenv(POLICY_VARIABLE, raising=False)
    with pytest.raises(AccessDenied, match="no cropsearch policy"):
        deployed.policy()


def test_a_deployed_run_reads_the_policy_stack_up_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = StackParams(project_dir=tmp_path, source_roots=[tmp_path / "photos-2"]).operator_policy()
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", A_DEPLOYMENT)
    monkeypatch.setenv(POLICY_VARIABLE, written.to_json())
    assert deployed.policy() == written
    with pytest.raises(AccessDenied, match="plug-ins run code"):
        deployed.hold_model("plugin:tests.plugins:make", written, "embedder recorded in the index")
