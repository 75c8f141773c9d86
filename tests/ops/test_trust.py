"""What a deployed run may ask for, held to the operator's policy (docs/trust-model.md).

Each refusal below stands for a way in that was reproduced against a running stack (issue 25):
downloaded weights loaded as a model, a plug-in recorded in an index, a private folder indexed,
a request to any host, a cluster or endpoint of the run's choosing, a form that exhausts memory.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from ultralytics.utils import ROOT

from components.models.devices import decide_machine
from components.ops import trust
from components.ops.access import AccessDenied
from schemas.params import WORLD_DIR, EvalParams, IndexParams, QueryParams
from schemas.policy import OperatorPolicy, requested_host
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


def test_a_model_config_a_run_could_write_is_never_built(checkout: Path, policy: OperatorPolicy) -> None:
    """Issue 40, item 1: a detector `.yaml` under a data root passed the check while it did not exist yet, and the
    run's own unzip then created it (ultralytics builds a model from a YAML, and has evaluated parts of it)."""
    unzipped = checkout / "data" / "sources" / "evil-0123456789ab" / "evil.yaml"
    for spec in (unzipped, Path("data/sources/evil-0123456789ab/evil.yaml"), Path("evil.yaml")):
        with pytest.raises(AccessDenied, match="load weights from"):
            trust.check_index_run(index_params(checkout, detector=str(spec)), policy, {})
    unzipped.parent.mkdir(parents=True)
    unzipped.write_text("nc: 1\n")
    with pytest.raises(AccessDenied, match="outside the folders deployed runs may load weights from"):
        trust.check_model(str(unzipped), policy, "detector")
    with pytest.raises(AccessDenied, match="no such file or folder in the model roots"):
        trust.check_model(str(checkout / "models" / "later.yaml"), policy, "detector")
    (checkout / "models" / "own.yaml").write_text("nc: 1\n")  # the operator's own config
    trust.check_model(str(checkout / "models" / "own.yaml"), policy, "detector")
    trust.check_model("yolo11n.yaml", policy, "detector")  # built from ultralytics' own package


def test_a_bundled_config_name_shadowed_by_a_file_in_the_working_directory_is_refused(
    checkout: Path, policy: OperatorPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ultralytics looks for `yolo11n.yaml`, and for `yolo11.yaml`, in the working directory before its package."""
    monkeypatch.chdir(checkout / "data")
    trust.check_model("yolo11n.yaml", policy, "detector")
    for shadow in ("yolo11.yaml", "yolo11n.yaml"):
        (checkout / "data" / shadow).write_text("nc: 1\n")
        with pytest.raises(AccessDenied, match="outside the folders deployed runs may load weights from"):
            trust.check_model("yolo11n.yaml", policy, "detector")
        (checkout / "data" / shadow).unlink()


def test_a_model_is_checked_again_when_it_is_opened(checkout: Path, tmp_path: Path) -> None:
    """What passed at a run's start may have been replaced by then: the loaders check the location themselves."""
    from components.models.detector import load_detector
    from components.models.embedder import load_embedder

    config = checkout / "data" / "sources" / "x" / "yolo-evil.yaml"
    config.parent.mkdir(parents=True)
    config.write_text((ROOT / "cfg" / "models" / "11" / "yolo11.yaml").read_text())
    roots = [checkout / "models"]
    with pytest.raises(AccessDenied, match=r"yolo-evil\.yaml' is outside the folders deployed runs may load weights"):
        load_detector(str(config), decide_machine("cpu", "fp32"), model_roots=roots)
    with pytest.raises(AccessDenied, match=r"embedder .* is outside"):
        load_embedder(str(checkout / "data" / "clip"), decide_machine("cpu", "fp32"), model_roots=roots)
    # The CLI's user may: the check above is what refused.
    assert load_detector(str(config), decide_machine("cpu", "fp32")) is not None


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:18001\\@github.com/x.zip",  # urllib.parse: github.com; requests: localhost
        "http://127.0.0.1:9\\@images.cocodataset.org/x.zip",
        "http://user@github.com/x.zip",
        "http://github.com:443@127.0.0.1/x.zip",
        "http://github.com\\@127.0.0.1/x.zip",
        "http://github.com /x.zip",
        "http://github.com\t.evil.example/x.zip",
        "file:///etc/passwd",
        "ftp://github.com/x.zip",
        "http://evilgithub.com/x.zip",  # a suffix without its dot
        "http://github.com.evil.example/x.zip",
        "http://[::1]/x.zip",
        "http://github%2ecom/x.zip",  # urllib3 decodes the host, urllib.parse does not: read two ways
    ],
)
def test_a_url_whose_host_is_not_plainly_an_allowed_one_is_refused(policy: OperatorPolicy, url: str) -> None:
    """Issue 40, item 2: the allow-list read the host with urllib.parse while requests connected elsewhere."""
    assert not policy.allows_host(url)
    with pytest.raises(AccessDenied, match=r"refused|its host is not one deployed runs may reach"):
        trust.check_download_url(url, policy)
    with pytest.raises(AccessDenied):
        trust.check_source(url, policy)


def test_the_host_checked_is_the_host_requests_connects_to() -> None:
    """The rule's parser is the client's: for every URL it accepts, requests would connect to the same host."""
    import requests

    for url in (
        "https://GitHub.com./a/b.zip",
        "http://images.cocodataset.org:80/zips/val2017.zip",
        "http://[::1]:80/x",
    ):
        prepared = requests.Request("GET", url).prepare()
        assert requested_host(url) == (urlsplit(prepared.url).hostname or "").rstrip(".")
    assert requested_host("https://cdn-lfs.huggingface.co/x") == "cdn-lfs.huggingface.co"


def test_every_allowed_host_and_its_subdomains_pass(policy: OperatorPolicy) -> None:
    for host in policy.allowed_hosts:
        assert policy.allows_host(f"https://{host}/x") and policy.allows_host(f"http://a.b.{host}/x")
        trust.check_download_url(f"https://{host}/x", policy)


def test_every_item_of_a_list_parameter_is_held_to_its_cap(checkout: Path) -> None:
    """An evaluation compares several max_detections at once: the largest counts, wherever it stands in the list."""
    policy = StackParams(project_dir=checkout, model_roots=[WORLD_DIR]).operator_policy()  # the world's own models
    trust.check_eval_run(
        EvalParams(benchmark="world", data_dir=checkout / "data", max_detections=[10, 100]), policy, {}
    )
    for values in ([500, 10], [10, 500], [10, 20, 500]):
        params = EvalParams(benchmark="world", data_dir=checkout / "data", max_detections=values)
        with pytest.raises(AccessDenied, match="max_detections 500 is over"):
            trust.check_eval_run(params, policy, {})


def test_a_cap_is_the_largest_value_allowed(checkout: Path, policy: OperatorPolicy) -> None:
    caps = policy.caps
    trust.check_index_run(index_params(checkout, image_size=caps.image_size), policy, {})
    with pytest.raises(AccessDenied, match=f"image_size {caps.image_size + 32} is over"):
        trust.check_index_run(index_params(checkout, image_size=caps.image_size + 32), policy, {})
    trust.check_query_run(QueryParams(data_dir=checkout / "data", k=caps.k), None, policy, {})
    with pytest.raises(AccessDenied, match=f"k {caps.k + 1} is over"):
        trust.check_query_run(QueryParams(data_dir=checkout / "data", k=caps.k + 1), None, policy, {})


def test_a_vocabulary_file_loads_only_from_the_model_roots(checkout: Path, policy: OperatorPolicy) -> None:
    """A vocabulary is plain arrays (read without pickle), but it is a file a parameter names: the operator's only."""
    from components.models.detector import load_detector

    trust.check_index_run(index_params(checkout, vocabulary=str(checkout / "models" / "words.npz")), policy, {})
    with pytest.raises(AccessDenied, match="vocabulary '/etc/passwd' is outside the folders deployed runs may load"):
        trust.check_index_run(index_params(checkout, vocabulary="/etc/passwd"), policy, {})
    planted = checkout / "data" / "words.npz"  # where a run may write
    with pytest.raises(AccessDenied, match=r"vocabulary .*words\.npz' is outside"):
        trust.check_index_run(index_params(checkout, vocabulary=str(planted)), policy, {})
    with pytest.raises(AccessDenied, match=r"vocabulary .*words\.npz' is outside"):  # and again as it is opened
        load_detector(
            "yoloe-11s-seg.yaml",
            decide_machine("cpu", "fp32"),
            model_roots=[checkout / "models"],
            vocabulary=str(planted),
        )
