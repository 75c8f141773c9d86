"""What a deployed run may ask for, held to the operator's policy (docs/trust-model.md).

Each refusal below stands for a way in that was reproduced against a running stack (issue 25):
downloaded weights loaded as a model, a plug-in recorded in an index, a private folder indexed,
a request to any host, a cluster or endpoint of the run's choosing, a form that exhausts memory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from components.ops import trust
from components.ops.access import AccessDenied
from schemas.params import WORLD_DIR, EvalParams, IndexParams, QueryParams
from schemas.policy import OperatorPolicy
from schemas.stack import StackParams


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    for folder in ("photos", "data", "models", "query-images", "private"):
        (tmp_path / folder).mkdir()
    (tmp_path / "models" / "yolo.pt").write_bytes(b"weights")
    return tmp_path


@pytest.fixture
def policy(checkout: Path) -> OperatorPolicy:
    return StackParams(project_dir=checkout).operator_policy()


def index_params(checkout: Path, **changes: object) -> IndexParams:
    fields = {
        "source": str(checkout / "photos"),
        "data_dir": checkout / "data",
        "detector": str(checkout / "models" / "yolo.pt"),
        "embedder": "openai/clip-vit-base-patch32",
    }
    return IndexParams(**{**fields, **changes})


def test_an_index_run_within_the_policy_passes(checkout: Path, policy: OperatorPolicy) -> None:
    trust.check_index_run(index_params(checkout), policy, {})
    trust.check_index_run(index_params(checkout, source="http://images.cocodataset.org/zips/val2017.zip"), policy, {})
    trust.check_index_run(index_params(checkout, detector="yolov10x.pt"), policy, {})  # ultralytics' release


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"source": "/etc"}, "source '/etc' is outside the folders deployed runs may index"),
        ({"source": "http://127.0.0.1:9/weights.pt"}, "its host is not one deployed runs may reach"),
        ({"data_dir": Path("/tmp/elsewhere")}, "data_dir '/tmp/elsewhere' is outside the folders deployed runs"),
        ({"db_uri": "/tmp/elsewhere/lancedb"}, "db_uri '/tmp/elsewhere/lancedb' is outside"),
        ({"db_uri": "s3://bucket/db"}, "an object-store URI is fixed by the deployment"),
        ({"detector": "plugin:tests.plugins:colour_blob_detector"}, "plug-ins run code"),
        ({"embedder": "plugin:os:system"}, "plug-ins run code"),
        ({"writer_limit": None}, "writer_limit: fixed by the deployment"),
        ({"s3_endpoint": "http://10.0.0.1:9000"}, "s3_endpoint: fixed by the deployment"),
        ({"task_runner": "dask", "cluster_address": "tcp://10.0.0.1:8786"}, "fixed by the deployment"),
        ({"image_size": 4096}, "image_size 4096 is over what deployed runs may ask for"),
        ({"detect_batch_size": 1024}, "detect_batch_size 1024 is over"),
    ],
)
def test_an_index_run_is_refused_what_the_operator_did_not_allow(
    checkout: Path, policy: OperatorPolicy, change: dict[str, object], refusal: str
) -> None:
    with pytest.raises(AccessDenied, match=refusal.replace("(", r"\(")):
        trust.check_index_run(index_params(checkout, **change), policy, {})


def test_weights_a_run_downloaded_never_load(checkout: Path, policy: OperatorPolicy) -> None:
    """Downloads land under data roots, which may not overlap model roots: a .pt a run fetched stays a file."""
    downloaded = checkout / "data" / "downloads" / "0123456789abcdef" / "weights.pt"
    downloaded.parent.mkdir(parents=True)
    downloaded.write_bytes(b"a pickle whose __reduce__ runs a command")
    with pytest.raises(AccessDenied, match="outside the folders deployed runs may load weights from"):
        trust.check_index_run(index_params(checkout, detector=str(downloaded)), policy, {})
    with pytest.raises(ValueError, match="overlap"):
        StackParams(project_dir=checkout, model_roots=[checkout / "data" / "downloads"]).operator_policy()
    with pytest.raises(ValueError, match="overlap"):
        StackParams(project_dir=checkout, data_roots=[checkout]).operator_policy()  # the checkout holds models/


def test_the_deployments_own_values_of_fixed_parameters_pass(checkout: Path, policy: OperatorPolicy) -> None:
    deployed = {"s3_endpoint": "http://minio.internal:9000", "db_uri": "s3://photos/db", "writer_limit": None}
    params = index_params(
        checkout, s3_endpoint="http://minio.internal:9000", db_uri="s3://photos/db", writer_limit=None
    )
    trust.check_index_run(params, policy, deployed)


def test_hub_models_need_their_hub_among_the_allowed_hosts(checkout: Path) -> None:
    closed = StackParams(project_dir=checkout).operator_policy().model_copy(update={"allowed_hosts": []})
    with pytest.raises(AccessDenied, match="a Hugging Face id"):
        trust.check_model("openai/clip-vit-base-patch32", closed, "embedder")
    with pytest.raises(AccessDenied, match=r"downloaded from github\.com"):
        trust.check_model("yolov10x.pt", closed, "detector")


def test_a_query_and_the_embedder_its_index_records_are_held_alike(checkout: Path, policy: OperatorPolicy) -> None:
    params = QueryParams(data_dir=checkout / "data")
    trust.check_query_run(params, checkout / "query-images" / "cat.jpg", policy, {})
    with pytest.raises(AccessDenied, match="outside the folders deployed runs may read"):
        trust.check_query_run(params, checkout / "private" / "passport.jpg", policy, {})
    with pytest.raises(AccessDenied, match="k 1000 is over"):
        trust.check_query_run(QueryParams(data_dir=checkout / "data", k=1000), None, policy, {})
    with pytest.raises(AccessDenied, match="embedder recorded in the index 'plugin:evil:run': plug-ins run code"):
        trust.check_model("plugin:evil:run", policy, "embedder recorded in the index")


def test_an_evaluation_is_held_to_the_same_folders_and_hosts(checkout: Path) -> None:
    policy = StackParams(project_dir=checkout, model_roots=[WORLD_DIR]).operator_policy()  # the world's own models
    trust.check_eval_run(EvalParams(benchmark="world", data_dir=checkout / "data"), policy, {})
    with pytest.raises(AccessDenied, match="annotations '/etc' is outside"):
        trust.check_eval_run(EvalParams(data_dir=checkout / "data", annotations="/etc"), policy, {})


def test_redirects_and_subdomains_of_allowed_hosts(policy: OperatorPolicy) -> None:
    assert policy.allows_host("https://cdn-lfs.huggingface.co/x") and policy.allows_host(
        "http://images.cocodataset.org/a"
    )
    assert not policy.allows_host("http://huggingface.co.evil.example/x")
    assert not policy.allows_host("http://127.0.0.1:8000/x")
    with pytest.raises(AccessDenied):
        trust.check_download_url("http://169.254.169.254/latest/meta-data", policy)
    trust.check_download_url("http://169.254.169.254/latest/meta-data", None)  # the CLI's user may
