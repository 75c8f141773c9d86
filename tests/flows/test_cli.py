"""The `cropsearch` command line: flags, tables, the no-new-work message, and fast offline failures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from flows.cli import main


def test_help_documents_every_option() -> None:
    result = CliRunner().invoke(main, ["index", "--help"])
    assert result.exit_code == 0
    for flag in ["--source", "--limit", "--db", "--detector", "--embedder", "--confidence", "--max-detections",
                 "--classes", "--min-box-pixels", "--padding", "--device", "--chunk-size"]:  # fmt: skip
        assert flag in result.output
    query_help = CliRunner().invoke(main, ["query", "--help"]).output
    for flag in ["-k", "--kinds", "--classes", "--min-confidence", "--min-area-fraction", "--one-hit-per-image"]:
        assert flag in query_help


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_index_and_query_print_tables(photo_folder: Path, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path) -> None:
    data = str(tmp_path / "data")
    models = ["--detector", str(tiny_yolo), "--embedder", str(tiny_clip)]
    settings = ["--confidence", "0.0001", "--max-detections", "2", "--min-box-pixels", "8"]
    index_args = ["index", "--source", str(photo_folder), "--data-dir", data, *models, *settings]
    first = CliRunner().invoke(main, index_args)
    assert first.exit_code == 0, first.output
    assert re.search(r"^images indexed now\s+10\s*$", first.output, re.MULTILINE)
    second = CliRunner().invoke(main, index_args)
    assert second.exit_code == 0 and "no new work" in second.output

    found = CliRunner().invoke(
        main, ["query", "a potted plant", "--embedder", str(tiny_clip), "--data-dir", data, "-k", "3"]
    )
    assert found.exit_code == 0, found.output
    lines = found.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rank"))
    assert lines[header].split() == ["rank", "score", "kind", "class", "parent", "box"]
    assert [line.split()[0] for line in lines[header + 1 : header + 4]] == ["1", "2", "3"]
    assert all(str(photo_folder.resolve()) in line for line in lines[header + 1 : header + 4])
    assert any(line.startswith("grid: ") for line in lines)

    assert re.search(r"^fragments: crops\s+\d+ -> 1 \(compacted\)$", first.output, re.MULTILINE), first.output
    compacted = CliRunner().invoke(main, ["compact", "--db", str(tmp_path / "data" / "lancedb")])
    assert compacted.exit_code == 0, compacted.output
    rows = [line.split() for line in compacted.output.splitlines()[1:]]
    assert sorted(rows) == [["crops", "1", "1"], ["embeddings", "1", "1"], ["images", "1", "1"]]
    plain_http = CliRunner().invoke(main, ["compact", "--db", "s3://bucket/db", "--s3-endpoint", "http://127.0.0.1:9"])
    assert plain_http.exit_code == 2 and "--s3-allow-http" in plain_http.output


def test_bad_parameters_exit_2_naming_the_field() -> None:
    result = CliRunner().invoke(main, ["query", "x", "-k", "0"])
    assert result.exit_code == 2 and "error: k: Input should be greater than or equal to 1" in result.output
    both = CliRunner().invoke(main, ["query", "x", "--image", "a.jpg"])
    assert both.exit_code == 2 and "exactly one of text or image" in both.output
    # A check across two settings is blamed on the one it names, as a field check is.
    crossed = CliRunner().invoke(main, ["query", "x", "--mode", "text", "--min-score", "0.5"])
    assert crossed.exit_code == 2 and crossed.output.startswith("error: min_score: a cutoff of"), crossed.output


def test_default_run_offline_fails_within_seconds_naming_what_is_unreachable(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "index", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2], env={**os.environ},
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 2
    assert "cannot reach http://images.cocodataset.org/zips/val2017.zip" in done.stderr
    assert "--source" in done.stderr and "Traceback" not in done.stderr
    assert "detector 'yolov10x.pt' is not available" in done.stderr and "--detector" in done.stderr
    assert "embedder 'openai/clip-vit-base-patch32' is not available" in done.stderr and "--embedder" in done.stderr
    assert elapsed < 60  # a bound on hangs and retry loops, not a speed target


def test_a_query_image_that_is_not_an_image_is_one_error_line(tmp_path: Path) -> None:
    """Issue 25: `--image /etc/passwd` printed a traceback, and a folder was said not to exist."""
    runner = CliRunner()
    text_file = tmp_path / "passwd"
    text_file.write_text("root:x:0:0:root:/root:/bin/bash\n")
    for image, says in (
        (text_file, "no installed decoder knows its format"),
        (tmp_path, "is a folder; give an image file"),
        (tmp_path / "missing.jpg", "does not exist"),
    ):
        result = runner.invoke(main, ["query", "--image", str(image), "--data-dir", str(tmp_path)])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: query image") and says in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_commands_that_read_never_create_a_database(tmp_path: Path) -> None:
    mistyped = tmp_path / "data" / "lancdb"
    for command in (["query", "a cat", "--db", str(mistyped)], ["compact", "--db", str(mistyped)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2 and f"no index at {mistyped}" in result.output, result.output
    assert not mistyped.exists() and not (tmp_path / "data").exists()


def test_help_imports_none_of_the_heavy_libraries() -> None:
    """`cropsearch --help` took 2.5 s when the CLI module imported LanceDB (and torch through it) up front;
    the commands import them when they run (a second here, most of it Python's own start-up)."""
    heavy = ["lancedb", "torch", "prefect", "ultralytics", "transformers", "pyarrow"]
    probe = (
        "import sys; from click.testing import CliRunner; from flows.launcher import main; from flows.cli import main "
        "as cli; [CliRunner().invoke(cli, [*command, '--help']) for command in ([], ['index'], ['query'], ['serve'])];"
        f"print(sorted(name for name in {heavy!r} if name in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", found.stdout + found.stderr


@pytest.mark.slow
def test_commands_print_their_result_once_and_prefects_lines_only_when_asked(
    photo_folder: Path, tmp_path: Path
) -> None:
    """One line per hit, once; no task-run or stage lines unless --verbose; --quiet and --json for scripts."""
    import json

    cropsearch = [sys.executable, "-m", "flows.launcher", "--no-host"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    models = [
        "--detector",
        "plugin:tests.plugins:colour_blob_detector",
        "--embedder",
        "plugin:tests.plugins:mean_colour_embedder",
    ]
    data = ["--data-dir", str(tmp_path / "data"), "--device", "cpu"]

    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*cropsearch, *arguments], capture_output=True, text=True, env=environment, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done

    index = run("index", "--source", str(photo_folder), *models, *data)
    assert "images indexed now      10" in index.stdout
    prefect_lines = [line for line in index.stderr.splitlines() if re.search(r"\| (INFO|DEBUG) ", line)]
    assert prefect_lines == [] and "temporary server" not in index.stderr, index.stderr

    query = run("query", "red", "-k", "3", "--mode", "vector", *data)
    lines = query.stdout.splitlines()  # the summary, the header, 3 hits, the grid's file: each hit once
    assert len(lines) == 6 and [line.split()[0] for line in lines[2:5]] == ["1", "2", "3"], query.stdout
    assert "Task run" not in query.stderr and "#1" not in query.stderr, query.stderr
    quiet = run("query", "red", "-k", "3", "--mode", "vector", "--quiet", *data)
    assert quiet.stdout.splitlines() == query.stdout.splitlines()[2:5]  # the hits' rows alone
    answer = json.loads(run("query", "red", "-k", "3", "--mode", "vector", "--json", *data).stdout)
    assert [hit["rank"] for hit in answer["hits"]] == [1, 2, 3]
    report = json.loads(run("index", "--source", str(photo_folder), "--json", *data).stdout)
    assert report["images_already_indexed"] == 10 and report["images_new"] == 0
    # --verbose brings Prefect's lines back: tests/flows/test_host.py's first index.
