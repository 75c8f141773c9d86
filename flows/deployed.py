"""Deployed runs are held to the operator's policy; runs from the CLI or Python are their user's own.

Runs started from the UI or `prefect deployment run` take parameters from whoever starts them.
The policy (folders, hosts, sizes; `schemas/policy.py`) comes from the worker's environment,
written by `cropsearch stack up`; the checks themselves are `components/ops/trust.py`. A deployed run
on a worker without a policy is refused: a missing policy must not mean "anything goes".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.runtime import deployment

from components.ops import trust
from components.ops.access import AccessDenied
from schemas.params import EvalParams, IndexParams, IndexRecipe, QueryParams
from schemas.policy import POLICY_VARIABLE, OperatorPolicy


def policy() -> OperatorPolicy | None:
    """The operator's policy in a deployed run; None outside deployments."""
    if deployment.id is None:
        return None
    raw = os.environ.get(POLICY_VARIABLE)
    if not raw:
        raise AccessDenied(
            f"this worker has no cropsearch policy ({POLICY_VARIABLE} is unset): deployed runs are refused; "
            "start workers with `cropsearch stack up`"
        )
    return OperatorPolicy.model_validate_json(raw)


def _deployment_parameters() -> dict[str, Any]:
    """The parameters the deployment itself sets (`prefect.runtime` would give the run's own, overrides included)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return dict(client.read_deployment(UUID(str(deployment.id))).parameters or {})


def hold_index_run(params: IndexParams) -> OperatorPolicy | None:
    """Refuse what the policy does not allow; return the policy (None outside deployments) for later checks."""
    held = policy()
    if held is not None:
        trust.check_index_run(params, held, _deployment_parameters())
    return held


def hold_query_run(params: QueryParams, image: Path | None) -> OperatorPolicy | None:
    held = policy()
    if held is not None:
        trust.check_query_run(params, image, held, _deployment_parameters())
    return held


def hold_eval_run(params: EvalParams) -> OperatorPolicy | None:
    held = policy()
    if held is not None:
        trust.check_eval_run(params, held, _deployment_parameters())
    return held


def hold_model(spec: str, held: OperatorPolicy | None, parameter: str) -> None:
    """A model found at run time (the one an index records) passes the same check as a parameter."""
    if held is not None:
        trust.check_model(spec, held, parameter)


def hold_recorded_detector(params: IndexParams, recipe: IndexRecipe | None, held: OperatorPolicy | None) -> None:
    """The detector and vocabulary a run takes from its index (naming none) pass the checks of parameters."""
    if held is None or recipe is None or params.detector is not None:
        return
    trust.check_model(recipe.detector, held, "detector recorded in the index")
    if params.vocabulary is None:
        trust.check_vocabulary(recipe.vocabulary, held, "vocabulary recorded in the index")
