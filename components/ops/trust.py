"""Holding a deployed run's parameters to the operator's policy (docs/trust-model.md).

Every check raises `AccessDenied` naming the parameter and what the operator allows. Runs from
the CLI or Python are their user's own and are not checked here: the flows call these only in
deployed runs, with the policy and the deployment's own parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from components.models.loading import check_model_location, is_official_yolo_release
from components.models.plugins import is_plugin_spec
from components.ops.access import AccessDenied, check_inside
from schemas.flat import FlatParams
from schemas.params import EvalParams, IndexParams, QueryParams
from schemas.policy import FIXED_BY_DEPLOYMENT, OperatorPolicy, requested_host
from schemas.settings import is_object_store_uri


def check_model(spec: str | None, policy: OperatorPolicy, parameter: str) -> None:
    """Local models load only from model roots; plug-ins never; hub ids only where the hub is an allowed host.

    `.pt` files are pickles, model configs (`.yaml`) have ultralytics evaluate their `activation:`,
    and plug-ins are Python modules: loading any of them runs code. The same check applies to a
    model named by a parameter and to one recorded in an index, and the loaders repeat the location
    check when they open the model (`check_model_location`), since a run may create files meanwhile.
    """
    if spec is None:
        return
    if is_plugin_spec(spec):
        raise AccessDenied(f"{parameter} {spec!r}: plug-ins run code and are refused in deployed runs")
    if is_official_yolo_release(spec):
        _check_host("https://github.com", policy, f"{parameter} {spec!r} (downloaded from github.com)")
    elif check_model_location(spec, policy.model_roots, parameter) is None and not spec.endswith((".yaml", ".yml")):
        # a Hugging Face id; a bare .yaml that opens no local file is one ultralytics bundles
        _check_host("https://huggingface.co", policy, f"{parameter} {spec!r} (a Hugging Face id)")


def check_vocabulary(vocabulary: str | None, policy: OperatorPolicy, parameter: str) -> None:
    """A detector's vocabulary file is read as plain arrays (no pickle), but it is a file like any other:
    from the model roots only."""
    if vocabulary is not None:
        check_inside(Path(vocabulary), policy.model_roots, what=parameter, use="load prompt embeddings from")


def check_source(source: str, policy: OperatorPolicy, parameter: str = "source") -> None:
    """A URL on an allowed host, or a folder or zip inside a source root.

    Data roots are readable too: they hold only what runs wrote there (downloads, extracted zips,
    the scenes an evaluation generates, crops), never the worker's other files.
    """
    if source.startswith(("http://", "https://")):
        _check_host(source, policy, f"{parameter} {source!r}")
    else:
        check_inside(Path(source), [*policy.source_roots, *policy.data_roots], what=parameter, use="index")


def check_download_url(url: str, policy: OperatorPolicy | None) -> None:
    """Every request a download makes, redirects included, goes to an allowed host (policy None: any)."""
    if policy is not None:
        _check_host(url, policy, f"download {url!r}")


def query_readable_roots(policy: OperatorPolicy, params: QueryParams) -> list[str]:
    """Where a deployed query may draw pictures from: the folders photos are indexed from and runs write to,
    and, for a database on an object store (fixed by the deployment), its bucket, where its crops are kept.

    The pictures' paths come from the database's rows, which a run may have planted (`ObjectFiles.readable_roots`).
    """
    roots = [str(root.resolve()) for root in (*policy.source_roots, *policy.data_roots)]
    if is_object_store_uri(params.resolved_db_uri):
        roots.append(f"s3://{urlsplit(params.resolved_db_uri).netloc}")
    return roots


def _check_host(url: str, policy: OperatorPolicy, what: str) -> None:
    try:
        host = requested_host(url)
    except ValueError as error:
        raise AccessDenied(f"{what}: refused, {error}") from error
    if not policy.allows_hostname(host):
        allowed = ", ".join(policy.allowed_hosts) or "none"
        raise AccessDenied(f"{what}: its host is not one deployed runs may reach ({allowed})")


def _check_writes(
    params: IndexParams | QueryParams | EvalParams, policy: OperatorPolicy, deployed: Mapping[str, Any]
) -> None:
    """data_dir and local database and crop folders inside a data root; an s3:// one only as the deployment sets it."""
    check_inside(params.data_dir, policy.data_roots, what="data_dir", use="write to")
    for name in ("db_uri", "crops_uri"):
        value = getattr(params, name, None)
        if value is None:
            continue
        if is_object_store_uri(value) or "://" in value:
            if value != deployed.get(name):
                raise AccessDenied(f"{name} {value!r}: an object-store URI is fixed by the deployment, not by runs")
        else:
            check_inside(Path(value), policy.data_roots, what=name, use="write to")


def _check_fixed(params: FlatParams, deployed: Mapping[str, Any]) -> None:
    """Parameters that reach other machines or drop a guard keep the deployment's value."""
    fields, values = type(params).flat_fields(), params.flat()
    for name in FIXED_BY_DEPLOYMENT:
        if name not in fields:
            continue
        given = values[name].get_secret_value() if isinstance(values[name], SecretStr) else values[name]
        expected = deployed.get(name, fields[name].get_default(call_default_factory=True))
        if isinstance(expected, SecretStr):
            expected = expected.get_secret_value()
        if given != expected:
            raise AccessDenied(f"{name}: fixed by the deployment (the operator's choice); runs may not change it")


def _check_caps(params: FlatParams, policy: OperatorPolicy) -> None:
    caps, values = policy.caps, params.flat()
    for name in type(caps).model_fields:
        value = values.get(name)
        if isinstance(value, list):  # EvalParams compares several max_detections at once
            value = max(value, default=None)
        limit = getattr(caps, name)
        if isinstance(value, int) and value > limit:
            raise AccessDenied(f"{name} {value} is over what deployed runs may ask for ({limit})")


def check_index_run(params: IndexParams, policy: OperatorPolicy, deployed: Mapping[str, Any]) -> None:
    check_source(params.source, policy)
    _check_writes(params, policy, deployed)
    check_model(params.detector, policy, "detector")
    check_vocabulary(params.vocabulary, policy, "vocabulary")
    check_model(params.embedder, policy, "embedder")
    _check_fixed(params, deployed)
    _check_caps(params, policy)


def check_query_run(
    params: QueryParams, image: Path | None, policy: OperatorPolicy, deployed: Mapping[str, Any]
) -> None:
    """The parameters of a query; the embedder it will load is checked apart, once known (`check_model`)."""
    if image is not None:
        check_inside(image, policy.query_image_roots)
    _check_writes(params, policy, deployed)
    check_model(params.embedder, policy, "embedder")
    _check_fixed(params, deployed)
    _check_caps(params, policy)


def check_eval_run(params: EvalParams, policy: OperatorPolicy, deployed: Mapping[str, Any]) -> None:
    if params.benchmark == "coco":
        check_source(params.source, policy)
        check_source(params.annotations, policy, "annotations")
    _check_writes(params, policy, deployed)
    check_model(params.resolved_detector, policy, "detector")
    for embedder in params.resolved_embedders:
        check_model(embedder, policy, "embedders" if params.embedders else "embedder")
    _check_fixed(params, deployed)
    _check_caps(params, policy)
