"""The Prefect way end to end: `cropsearch stack up`, `prefect deployment run ...`, the UI in a real browser.

One real local Prefect server (free 127.0.0.1 port, temporary PREFECT_HOME) with the repo's own
prefect.yaml deployed and a process worker; runs are started with the `prefect` command a person
types and checked through the Prefect client. Every process started here is stopped at the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode
from uuid import UUID

import httpx
import lancedb
import pytest
import yaml
from PIL import Image
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.flows import load_flow_from_entrypoint

from components.ops.stack import WORK_POOL
from components.store.schema import CROPS, EMBEDDINGS, IMAGES
from schemas.params import DEFAULT_WRITER_LIMIT
from tests.conftest import ultralytics_assets, write_scene
from tests.flows.prefect_stack import REPO, Stack, photos, running_stack
from tests.http_server import LocalHttpServer

pytestmark = [pytest.mark.slow, pytest.mark.deployment]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_yolo: Path, tiny_clip: Path) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack"), [tiny_yolo.parent, tiny_clip.parent]) as live:
        yield live


@dataclass
class Scenario:
    first_index: UUID
    rival_indexes: tuple[UUID, UUID]
    query_during_index: UUID
    query: UUID
    image_query_allowed: UUID
    image_query_escaping: UUID
    index_with_stray_weights: UUID
    db_uri: str
    indexes_of_two_databases: tuple[UUID, UUID]


@pytest.fixture(scope="module")
def scenario(stack: Stack, tmp_path_factory: pytest.TempPathFactory, tiny_yolo: Path, tiny_clip: Path) -> Scenario:
    """Index a folder; then two index runs of a second folder at once with a query beside them; then a query."""
    root = stack.source_root
    first = photos(root / "first", range(3))
    for asset in ultralytics_assets():
        shutil.copy(asset, first / asset.name)
    outside = tmp_path_factory.mktemp("private")
    write_scene(outside / "private.jpg", 99)
    (first / "innocent.jpg").symlink_to(outside / "private.jpg")  # a link out of the operator's folders
    second = photos(root / "second", range(10, 14))
    data = stack.data_root
    models = {
        "data_dir": data,
        "detector": tiny_yolo,
        "embedder": tiny_clip,
        "confidence": 0.0001,
        "max_detections": 3,
        "min_box_pixels": 8,
        "device": "cpu",
    }
    first_index = stack.deployment_run("index-coco/adhoc", source=first, **models)
    assert stack.wait(first_index).state.is_completed(), stack.worker_log()  # type: ignore[union-attr]

    # The nightly deployment and an ad-hoc run on the same database at once: only one may write at a time.
    rivals = (
        stack.deployment_run("index-coco/nightly", source=second, **models),
        stack.deployment_run("index-coco/adhoc", source=second, **models),
    )
    during = stack.deployment_run("query/adhoc", text="a bus", k=5, data_dir=data, device="cpu")
    for run_id in (*rivals, during):
        stack.wait(run_id)
    query = stack.deployment_run("query/adhoc", text="a person", k=4, kinds="crop", data_dir=data, device="cpu")
    # Two runs on two databases: no lock file is shared, so only the server's writer limit orders them.
    third = photos(root / "third", range(20, 24))
    apart = (
        stack.deployment_run("index-coco/nightly", source=third, db_uri=data / "apart-a", **models),
        stack.deployment_run("index-coco/adhoc", source=third, db_uri=data / "apart-b", **models),
    )
    # A UI user may name any path: only the operator's folders are readable by a deployed run.
    shutil.copy(first / "bus.jpg", stack.image_root / "bus.jpg")
    allowed = stack.deployment_run("query/adhoc", image=stack.image_root / "bus.jpg", data_dir=data)
    escaping = stack.deployment_run(
        "query/adhoc", image=f"{stack.image_root}/../../../../../../etc/passwd", data_dir=data
    )
    stray = tmp_path_factory.mktemp("elsewhere") / "weights.pt"
    shutil.copy(tiny_yolo, stray)
    stray_index = stack.deployment_run("index-coco/adhoc", source=first, **{**models, "detector": stray})
    for run_id in (query, allowed, escaping, stray_index, *apart):
        stack.wait(run_id)
    return Scenario(first_index, rivals, during, query, allowed, escaping, stray_index, str(data / "lancedb"), apart)


def test_prefect_yaml_names_the_pool_and_limit_the_stack_creates() -> None:
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert config["definitions"]["work_pools"]["local"]["name"] == WORK_POOL
    deployments = {(d["entrypoint"], d["name"]) for d in config["deployments"]}
    assert deployments == {
        ("flows/index_coco.py:index_coco", "nightly"),
        ("flows/index_coco.py:index_coco", "adhoc"),
        ("flows/query.py:query", "adhoc"),
        ("flows/evaluate.py:evaluate", "adhoc"),
    }
    nightly = next(d for d in config["deployments"] if d["name"] == "nightly")
    assert nightly["schedules"][0]["cron"] == "0 3 * * *"
    for deployment in config["deployments"]:  # `prefect deploy` accepts parameters the flow would refuse
        flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
        flow.validate_parameters(deployment.get("parameters", {}))
    assert DEFAULT_WRITER_LIMIT  # the flows hold this limit; `stack up` creates it


def test_stack_deploys_everything_and_creates_the_writer_limit(stack: Stack) -> None:
    with stack.client() as client:
        names = {f"{client.read_flow(d.flow_id).name}/{d.name}" for d in client.read_deployments()}
        limit = client.read_global_concurrency_limit_by_name(DEFAULT_WRITER_LIMIT)
        pool = client.read_work_pool(WORK_POOL)
    assert names == {"index-coco/nightly", "index-coco/adhoc", "query/adhoc", "evaluate/adhoc"}
    assert limit.limit == 1 and pool.type == "process"
    # The nightly re-index of COCO is deployed paused (it started a 778 MB download unasked), and `stack up`
    # says how to start it.
    with stack.client() as client:
        (schedule,) = client.read_deployment_by_name("index-coco/nightly").schedules
    assert schedule.active is False
    assert f"prefect deployment schedule resume index-coco/nightly {schedule.id}" in stack.up_output


def test_adhoc_index_run_reports_progress_timings_and_counts(stack: Stack, scenario: Scenario) -> None:
    report = stack.result(stack.wait(scenario.first_index))
    assert report.images_new == 5 and report.crops > 0  # type: ignore[attr-defined]
    # Issue 25, item 3: a link inside the source to a file outside the operator's folders is not followed.
    (link,) = [item for item in report.skipped if item.path.endswith("innocent.jpg")]  # type: ignore[attr-defined]
    assert "a link to a file outside the source" in link.reason
    artifacts = stack.artifacts(scenario.first_index)
    assert artifacts["index-progress"].data == 100.0  # type: ignore[attr-defined]
    table = artifacts["index-report"].data  # type: ignore[attr-defined]
    for measure in ("images indexed now", "crops", "worker seconds: detect", "seconds: model work", "seconds: total"):
        assert f'"{measure}"' in table


def test_two_index_runs_at_once_write_one_after_the_other(stack: Stack, scenario: Scenario) -> None:
    reports = [stack.result(stack.wait(run_id)) for run_id in scenario.rival_indexes]
    # The run that waited for the writer limit planned after the other had written: it found nothing to do.
    assert sorted(report.images_new for report in reports) == [0, 4]  # type: ignore[attr-defined]
    assert sorted(report.images_already_indexed for report in reports) == [0, 4]  # type: ignore[attr-defined]
    db = lancedb.connect(scenario.db_uri)
    for table, key in ((IMAGES, "image_id"), (CROPS, "crop_id"), (EMBEDDINGS, "id")):
        ids = db.open_table(table).to_arrow().column(key).to_pylist()
        assert len(ids) == len(set(ids)), f"duplicate rows in {table}"
    assert db.open_table(IMAGES).count_rows() == 9


def writer_slot_held(stack: Stack, run_id: UUID) -> tuple[datetime, datetime]:
    """When a run held the writer limit: from its plan to the end of its index upkeep."""
    with stack.client() as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    plans = [task.start_time for task in tasks if task.name.startswith("plan_stage") and task.start_time]
    upkeep = [task.end_time for task in tasks if task.name.startswith("maintain_indexes") and task.end_time]
    assert plans and upkeep, [task.name for task in tasks]
    return min(plans), max(upkeep)


def test_index_runs_on_two_databases_still_write_one_at_a_time(stack: Stack, scenario: Scenario) -> None:
    """Issue 26, item 6: with one database the lock file alone passes the test above; the limit is the guard
    across machines and on s3://, so here the two runs share nothing else."""
    for run_id in scenario.indexes_of_two_databases:
        assert stack.result(stack.wait(run_id)).images_new == 4  # type: ignore[attr-defined]
    first, second = sorted(writer_slot_held(stack, run_id) for run_id in scenario.indexes_of_two_databases)
    assert first[1] <= second[0], f"both held the writer limit at once: {first} and {second}"


def test_queries_run_beside_index_runs_and_return_hits_joined_to_existing_parents(
    stack: Stack, scenario: Scenario
) -> None:
    during = stack.result(stack.wait(scenario.query_during_index))
    assert during.hits  # type: ignore[attr-defined]
    result = stack.result(stack.wait(scenario.query))
    assert result.query == "a person" and 1 <= len(result.hits) <= 4  # type: ignore[attr-defined]
    assert all(hit.crop is not None for hit in result.hits)  # type: ignore[attr-defined]
    for hit in [*during.hits, *result.hits]:  # type: ignore[attr-defined]
        assert Path(hit.image.uri).is_file()
        assert hit.crop is None or hit.crop.image_id == hit.image.image_id
    artifacts = stack.artifacts(scenario.query)
    assert artifacts["query-grid"].type == "image"  # type: ignore[attr-defined]
    assert artifacts["query-hits"].data.count("data:image/jpeg;base64,") == 2 * len(result.hits)  # type: ignore[attr-defined]


def test_the_stacks_search_page_answers_what_deployed_runs_wrote_and_query_runs_link_to_it(
    stack: Stack, scenario: Scenario
) -> None:
    """`stack up` starts `cropsearch serve` before any index exists; it answers once runs have written one."""
    result = stack.result(stack.wait(scenario.query))
    with httpx.Client(base_url=stack.search_page, timeout=60, trust_env=False) as page:
        summary = page.get("/api/index").json()
        assert summary["images"] == len(lancedb.connect(scenario.db_uri).open_table(IMAGES).to_arrow())
        served = page.get("/api/search", params={"text": "a person", "k": 4, "kinds": "crop"}).json()["hits"]
        assert page.get("/").status_code == 200
    assert [(hit["image"]["image_id"], hit["crop"]["crop_id"]) for hit in served] == [
        (hit.image.image_id, hit.crop.crop_id)
        for hit in result.hits  # type: ignore[attr-defined]
    ]
    report = stack.artifacts(scenario.query)["query-hits"].data  # type: ignore[attr-defined]
    link = f"({stack.search_page}/?{urlencode({'text': 'a person', 'k': 4, 'kinds': 'crop'})})"
    assert f"[Open this search on the search page]{link}" in report


def test_deployed_query_images_must_lie_in_the_operators_folders(stack: Stack, scenario: Scenario) -> None:
    allowed = stack.result(stack.wait(scenario.image_query_allowed))
    assert allowed.hits[0].image.uri.endswith("bus.jpg")  # type: ignore[attr-defined]
    escaping = stack.wait(scenario.image_query_escaping)
    assert escaping.state is not None and escaping.state.is_failed()
    assert "is outside the folders deployed runs may read" in stack.run_logs(scenario.image_query_escaping)


def test_deployed_runs_load_local_weights_only_from_the_operators_folders(stack: Stack, scenario: Scenario) -> None:
    run = stack.wait(scenario.index_with_stray_weights)
    assert run.state is not None and run.state.is_failed()
    assert "is outside the folders deployed runs may load weights from" in stack.run_logs(run.id)


class Payload:
    """What a hostile `.pt` holds: unpickling it (ultralytics loads weights with weights_only=False) runs a call."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


@dataclass
class Hostile:
    """Runs an outsider with the right to start runs (and nothing else) tried (issue 25), and what they left."""

    downloaded_weights: Path
    weights_marker: Path
    runs: dict[str, UUID]
    creation_refused: dict[str, str]
    victim: Path  # a file outside every root that a planted crop row names
    requested_paths: list[str]  # what the tests' HTTP server was asked for


def evil_zip(photo: Path) -> bytes:
    """A zip of photos and a model config: a run that unzips it writes the config where a detector path can name it."""
    from ultralytics.utils import ROOT

    config = (ROOT / "cfg" / "models" / "11" / "yolo11.yaml").read_text()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(photo, "scene.jpg")
        archive.writestr("evil.yaml", f"activation: __import__('os').system('touch /tmp/pwned')\n{config}")
    return buffer.getvalue()


def plant_deletes(folder: Path, photo: Path, victim: Path) -> None:
    """A database a run may have written (or unzipped) holding an older version of `photo` whose crop row names
    `victim`, a file outside every root: indexing `photo` removes those rows, and once deleted that file (issue 40)."""
    from components.store.writer import StoreWriter
    from tests.records import crop, image

    store = StoreWriter(str(folder))
    older = image("an older photo").model_copy(update={"uri": str(photo.resolve()), "source": photo.parent.name})
    store.upsert_images([older])
    store.upsert_crops([crop(older, "victim").model_copy(update={"uri": str(victim)})])


def plant_picture(folder: Path, private: Path, tiny_clip: Path) -> None:
    """A database whose one photo is `private`, outside every root, with a vector any query finds (issue 40, 4)."""
    import numpy as np

    from components.models.loading import model_id
    from components.store.writer import StoreWriter
    from tests.records import embedding, image

    store, embedder_id = StoreWriter(str(folder)), model_id(str(tiny_clip))
    shown = image("private").model_copy(update={"uri": str(private)})
    vector = (np.ones(16, dtype=np.float32) / 4).tolist()  # a unit vector of the tiny CLIP's 16 dimensions
    store.upsert_embeddings([embedding(shown, vector, embedder_id)], embedder_id, str(tiny_clip))
    store.upsert_images([shown])


@pytest.fixture(scope="module")
def hostile(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory, tiny_yolo: Path, tiny_clip: Path
) -> Iterator[Hostile]:
    import torch

    from components.ops.preflight import download_path
    from components.store.writer import StoreWriter
    from tests.plugins import PLUGIN_RAN_MARKER
    from tests.records import embedding, image

    PLUGIN_RAN_MARKER.unlink(missing_ok=True)
    weights_marker = tmp_path_factory.mktemp("marker") / "weights-ran"
    buffer = io.BytesIO()
    torch.save(Payload(weights_marker), buffer)
    server = LocalHttpServer()
    server.files["/weights.pt"] = buffer.getvalue()
    try:
        # 1. Fetch a .pt into the worker's data folder (the run fails: it is not a zip of photos) ...
        url = server.url("/weights.pt")
        models = {"detector": tiny_yolo, "embedder": tiny_clip}
        fetch = stack.deployment_run("index-coco/adhoc", source=url, data_dir=stack.data_root, device="cpu", **models)
        assert "no photos found" in stack.run_logs(stack.wait(fetch).id)  # torch.save writes a zip: it unpacked
        downloaded = download_path(url, stack.data_root)
        # 2. ... a database whose recorded embedder is a plug-in ...
        planted = stack.data_root / "planted" / "lancedb"
        plugin = "plugin:tests.plugins:marker_embedder"
        StoreWriter(str(planted)).upsert_embeddings([embedding(image("a"), [1, 0, 0], plugin)], plugin, plugin)
        private = tmp_path_factory.mktemp("private-photos")
        write_scene(private / "passport.jpg", 7)
        Image.new("RGB", (64, 48), (0, 255, 0)).save(private / "green.jpg")
        common = {"data_dir": stack.data_root, "device": "cpu"}
        # Issue 40: 1. a model config the run's own unzip writes; 3 and 4. a planted database's paths.
        # The attack named the config relative to the worker's directory (`data/sources/...` in the default
        # layout, where the data root lies in the checkout); this stack's data root lies elsewhere, so the run
        # names it by its absolute path, and the relative form is ops/test_trust.py's.
        server.files["/evil.zip"] = zipped = evil_zip(private / "passport.jpg")
        unzipped = stack.data_root / "sources" / f"evil-{hashlib.sha256(zipped).hexdigest()[:12]}"
        victim = tmp_path_factory.mktemp("victim") / "keep-me.txt"
        victim.write_text("keep me")
        replaced = photos(stack.source_root / "replaced", range(40, 41)) / "scene-40.jpg"
        planted_deletes, planted_picture = (stack.data_root / name / "lancedb" for name in ("deletes", "picture"))
        plant_deletes(planted_deletes, replaced, victim)
        plant_picture(planted_picture, private / "green.jpg", tiny_clip)
        runs = {
            "weights": stack.deployment_run(
                "index-coco/adhoc", source=stack.source_root, detector=downloaded, **common
            ),
            "recorded plug-in": stack.deployment_run("query/adhoc", text="red", db_uri=planted, **common),
            # An index run embeds new photos with every embedder its database records.
            "recorded plug-in, index": stack.deployment_run(
                "index-coco/adhoc", source=stack.source_root, db_uri=planted, **common
            ),
            "private folder": stack.deployment_run("index-coco/adhoc", source=private, **common),
            "other host": stack.deployment_run(
                "index-coco/adhoc", source=server.url("/x.zip").replace("127.0.0.1", "localhost"), **common
            ),
            "no writer limit": stack.deployment_run(
                "index-coco/adhoc", source=stack.source_root, writer_limit="null", embedder=tiny_clip, **common
            ),
            "huge images": stack.deployment_run(
                "index-coco/adhoc", source=stack.source_root, image_size=4096, embedder=tiny_clip, **common
            ),
            "model config a run unzips": stack.deployment_run(
                "index-coco/adhoc", source=server.url("/evil.zip"), detector=unzipped / "evil.yaml", **common
            ),
            # A JSON string: the prefect CLI reads a --param value as JSON, where a bare backslash is no escape.
            "two parsers, two hosts": stack.deployment_run(
                "index-coco/adhoc",
                source=json.dumps(
                    server.url("/x.zip").replace("127.0.0.1", "localhost", 1).replace("/x.zip", "\\@127.0.0.1/x.zip")
                ),
                **common,
            ),
            "planted crop paths": stack.deployment_run(
                "index-coco/adhoc",
                source=replaced.parent,
                db_uri=planted_deletes,
                **{**common, **models, "confidence": 0.0001},
            ),
            "planted picture paths": stack.deployment_run(
                "query/adhoc", text="a cat", mode="vector", db_uri=planted_picture, **common
            ),
        }
        for run_id in runs.values():
            stack.wait(run_id)
        creation_refused = {
            "unknown parameter": stack.cli("prefect", "deployment", "run", "query/adhoc", "--param", "bogus=1"),
            "job variable env": stack.cli(
                *("prefect", "deployment", "run", "query/adhoc", "--param", "text=x"),
                *("--job-variable", 'env={"CROPSEARCH_POLICY": "{}"}'),
            ),
            "job variable command": stack.cli(
                "prefect", "deployment", "run", "query/adhoc", "--param", "text=x", "--job-variable", "command=id"
            ),
        }
        yield Hostile(
            downloaded,
            weights_marker,
            runs,
            {name: done.stdout + done.stderr for name, done in creation_refused.items() if done.returncode != 0},
            victim,
            [request["path"] for request in server.requests],
        )
    finally:
        server.close()


@pytest.mark.parametrize(
    ("attempt", "refusal"),
    [
        ("weights", "is outside the folders deployed runs may load weights from"),  # item 1
        ("recorded plug-in", "embedder recorded in the index 'plugin:tests.plugins:marker_embedder': plug-ins run"),
        ("recorded plug-in, index", "embedder recorded in the index 'plugin:tests.plugins:marker_embedder': plug-ins"),
        ("private folder", "is outside the folders deployed runs may index"),  # item 3
        ("other host", "its host is not one deployed runs may reach"),
        ("no writer limit", "writer_limit: fixed by the deployment"),
        ("huge images", "image_size 4096 is over what deployed runs may ask for (1280)"),
        ("model config a run unzips", "evil.yaml' is outside the folders deployed runs may load weights from"),
        ("two parsers, two hosts", "refused, a backslash, whitespace or control character in a URL"),
    ],
)
def test_a_deployed_run_may_not_leave_the_operators_policy(
    stack: Stack, hostile: Hostile, attempt: str, refusal: str
) -> None:
    run = stack.wait(hostile.runs[attempt])
    assert run.state is not None and run.state.is_failed(), f"{attempt}: {run.state}"
    assert refusal in stack.run_logs(run.id), stack.run_logs(run.id)


def test_downloaded_weights_and_recorded_plug_ins_never_run(hostile: Hostile) -> None:
    """Issue 25, items 1 and 2: both reached code execution on the worker."""
    from tests.plugins import PLUGIN_RAN_MARKER

    assert hostile.downloaded_weights.is_file()  # the download happened: only the loading is refused
    assert not hostile.weights_marker.exists() and not PLUGIN_RAN_MARKER.exists()


def test_a_url_read_two_ways_is_never_requested(hostile: Hostile) -> None:
    """Issue 40, item 2: urllib.parse read github.com where requests connected to localhost; nothing was asked now."""
    assert not [path for path in hostile.requested_paths if "@" in path or "%5C" in path], hostile.requested_paths


def test_a_planted_databases_paths_neither_delete_nor_show_files_outside_the_roots(
    stack: Stack, hostile: Hostile
) -> None:
    """Issue 40, items 3 and 4: a replaced photo's crop rows deleted any file they named; a query drew any picture."""
    from tests.store.test_objects import greenest_picture

    indexed = stack.wait(hostile.runs["planted crop paths"])
    assert indexed.state is not None and indexed.state.is_completed(), stack.run_logs(indexed.id)
    assert hostile.victim.read_text() == "keep me"
    queried = stack.wait(hostile.runs["planted picture paths"])
    assert queried.state is not None and queried.state.is_completed(), stack.run_logs(queried.id)
    report = stack.artifacts(queried.id)["query-hits"].data  # type: ignore[attr-defined]
    assert "green.jpg" in report  # the planted row was the hit: only its picture stayed out
    assert greenest_picture(report) < 100


def test_runs_with_unknown_parameters_or_job_variables_are_refused_when_created(hostile: Hostile) -> None:
    """Job variables would let a run replace the worker's command or its policy; they are not the run's to set."""
    assert set(hostile.creation_refused) == {"unknown parameter", "job variable env", "job variable command"}
    assert "bogus" in hostile.creation_refused["unknown parameter"]


def test_query_artifacts_show_their_thumbnails_in_headless_chromium(
    stack: Stack, scenario: Scenario, tmp_path: Path
) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing; `make test` installs it")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    result = stack.result(stack.wait(scenario.query))
    artifacts = stack.artifacts(scenario.query)
    ui = stack.api_url.removesuffix("/api")
    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=flags)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            seen = {}
            for key, expected in (("query-hits", 2 * len(result.hits)), ("query-grid", 1)):  # type: ignore[attr-defined]
                page.goto(f"{ui}/artifacts/artifact/{artifacts[key].id}")  # type: ignore[attr-defined]
                page.wait_for_function(
                    "n => [...document.images].filter(i => i.src.startsWith('data:')).length >= n", arg=expected
                )
                page.wait_for_function("() => [...document.images].every(i => i.complete)")
                widths = page.eval_on_selector_all("img[src^='data:']", "images => images.map(i => i.naturalWidth)")
                seen[key] = widths
                page.screenshot(path=tmp_path / f"{key}.png", full_page=True)
        finally:
            browser.close()
    assert len(seen["query-hits"]) == 2 * len(result.hits) and all(w > 0 for w in seen["query-hits"])  # type: ignore[attr-defined]
    assert len(seen["query-grid"]) == 1 and seen["query-grid"][0] > 0
    print(f"screenshots: {tmp_path / 'query-hits.png'}, {tmp_path / 'query-grid.png'}")
