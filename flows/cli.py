"""`cropsearch`: the command line. `index`, `query`, `serve`, `eval` and `demo` are here; the upkeep, stack and
host commands in `flows/cli_ops.py`.

Flags are made from the parameter models, so every field is a flag with the field's own
description and default (`db_uri` is `--db`). Checks that can fail fast run before Prefect starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from components.errors import CropsearchError
from flows.cli_ops import COMMANDS
from flows.cli_options import fail, given, options_from, output_options, print_rows
from flows.cli_runs import quiet_prefect_defaults, run_flow
from schemas.params import EvalParams, IndexParams, QueryInput, QueryParams
from schemas.serve import ServeParams


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--no-host",
    is_flag=True,
    help="run in this process, not on the warm host that keeps libraries, models and Prefect loaded "
    "between index/query/eval/demo commands (see `cropsearch host`)",
)
def main(no_host: bool) -> None:
    """cropsearch: search inside photos (whole images and detected objects)."""
    quiet_prefect_defaults()


@main.command()
@options_from(IndexParams)
@output_options
def index(verbose: bool, quiet: bool, as_json: bool, **options: Any) -> None:
    """Index images: download/unzip if needed, detect objects, embed images and crops, store in LanceDB.

    Ctrl-C stops it; what was written by then is kept, and the next run goes on from there.
    """
    from components.ops import preflight
    from components.pipeline.report import report_table

    try:
        params, changes = preflight.with_the_index_recipe(given(options))
        if changes and not (quiet or as_json):
            click.echo(preflight.describe_changes(changes))
        preflight.check_index_can_start(params, preflight.index_embedders(params))
        from flows.index_coco import index_coco  # Prefect is imported only once the inputs are known good

        show_progress = not (quiet or as_json)
        report = run_flow(index_coco, verbose, **params.flat(), show_progress=show_progress)
    except (CropsearchError, ValueError) as error:
        fail(error)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    elif not quiet:
        print_rows(report_table(report))
        if report.images_new == 0 and report.model_batches == 0:
            click.echo("no new work: every image was already indexed with these models and settings")


@main.command()
@click.argument("text", required=False)
@click.option("--image", type=click.Path(path_type=Path), help="search with this image instead of a text")
@click.option(
    "--server",
    help="ask this running `cropsearch serve` (e.g. http://127.0.0.1:8800) instead of running the query flow; "
    "its token from CROPSEARCH_TOKEN",
)
@options_from(QueryParams)
@output_options
def query(
    text: str | None, image: Path | None, server: str | None, verbose: bool, quiet: bool, as_json: bool, **options: Any
) -> None:
    """Find the best whole images and crops for TEXT (or --image), each with its parent photo."""
    from components.ops import preflight
    from components.search import render

    try:
        QueryInput(text=text, image=image)
        params = QueryParams(**given(options))
        if image is not None:
            preflight.check_query_image(image)
        if server is not None:
            from components.serve.client import ask_server

            result = ask_server(server, text, image, params.search, os.environ.get("CROPSEARCH_TOKEN"))
        else:
            preflight.check_query_can_start(params, text_query=text is not None)
            from flows.query import query as query_flow

            result = run_flow(query_flow, verbose, text=text, image=image, **params.flat())
    except (CropsearchError, ValueError) as error:
        fail(error)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    rows = render.hits_table(result.hits)
    if quiet:
        print_rows(rows, header=False)
        return
    count = len(result.hits)
    over = f" over {result.embedder}'s vectors" if result.embedder and result.mode != "text" else ""
    click.echo(f"{count or 'no'} hit{'' if count == 1 else 's'}, ranked by {result.mode} search{over}")
    print_rows(rows)
    if result.grid_path:
        click.echo(f"grid: {result.grid_path}")


@main.command()
@options_from(ServeParams)
def serve(**options: Any) -> None:
    """Serve the search page and its JSON API over one index, its embedder kept warm (Ctrl-C stops)."""
    named = given(options)
    if "token" not in named and os.environ.get("CROPSEARCH_TOKEN"):
        named["token"] = os.environ["CROPSEARCH_TOKEN"]
    try:
        params = ServeParams(**named)
        from components.serve.server import prepared_server, url_of

        server, listening = prepared_server(params)
    except (CropsearchError, ValueError) as error:
        fail(error)
    click.echo(f"serving {params.db_uri} at {url_of(listening)}/ (Ctrl-C stops)")
    server.run(sockets=[listening])


@main.command("eval")
@options_from(EvalParams)
@click.option("--verbose", is_flag=True, help="print Prefect's lines too: every stage and task run")
def evaluate_command(verbose: bool, **options: Any) -> None:
    """Measure retrieval quality (recall@k, P@10, mAP by object size) of whole images, crops and both."""
    from components.ops import preflight

    try:
        params = EvalParams(**given(options))
        preflight.check_eval_can_start(params)
        from flows.evaluate import evaluate

        summary = run_flow(evaluate, verbose, **params.flat())
    except (CropsearchError, ValueError) as error:
        fail(error)
    click.echo(Path(summary.report_path).read_text())
    click.echo(f"report: {summary.report_path}\nplot: {summary.plot_path}")


@main.command()
@click.argument("text", default="a small red triangle")
@click.option("--scenes", type=int, default=300, show_default=True, help="generated scenes to index")
@click.option("-k", type=int, default=5, show_default=True, help="hits per answer")
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("data"), show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--verbose", is_flag=True, help="print Prefect's lines too: every stage and task run")
def demo(text: str, scenes: int, k: int, data_dir: Path, device: str, verbose: bool) -> None:
    """See the idea work offline: search generated scenes for TEXT with whole images, then with crops too."""
    from components.search import render
    from flows.demo import demo as demo_flow

    try:
        answers = run_flow(demo_flow, verbose, text=text, scenes=scenes, k=k, data_dir=data_dir, device=device)
    except (CropsearchError, ValueError) as error:
        fail(error)
    here = Path.cwd()
    for label, hits in answers.items():
        click.echo(f"\n{label}: {text!r}")
        rows = [
            # Scenes under the working folder are shown from it: the README prints what a run prints.
            {**row, "parent": _from(here, row["parent"]), "holds it?": truth}
            for row, (_, truth) in zip(render.hits_table([h for h, _ in hits]), hits, strict=True)
        ]
        print_rows(
            [
                {key: row[key] for key in ("rank", "score", "kind", "class", "parent", "box", "holds it?")}
                for row in rows
            ]
        )


def _from(folder: Path, path: str) -> str:
    """`path` relative to `folder` where it lies under it, else as it is."""
    return str(Path(path).relative_to(folder)) if Path(path).is_relative_to(folder) else path


for command in COMMANDS:
    main.add_command(command)


if __name__ == "__main__":
    main()
