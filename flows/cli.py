"""`cropsearch index` and `cropsearch query`: command-line front doors to the two flows.

Flags are made from the parameter models, so every field is a flag with the field's own
description and default (`db_uri` is `--db`). Checks that can fail fast run before Prefect starts.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import BaseModel, ValidationError

from components.errors import CropsearchError, StoreMismatchError
from schemas.flat import flat_location
from schemas.params import DEFAULT_DATA_DIR, EvalParams, IndexParams, QueryInput, QueryParams, form_fields
from schemas.serve import ServeParams
from schemas.settings import ObjectStoreSettings
from schemas.stack import StackParams

_FLAG_NAMES = {"db_uri": "--db", "k": "-k"}
HOSTED = "hosted"  # the click context's `obj` when a warm host runs the command (`flows/host.py`)
INTERRUPT_GRACE_SECONDS = 3.0
DEFAULT_DB_URI = str(DEFAULT_DATA_DIR / "lancedb")
Result = TypeVar("Result")


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """The click type for a field annotation, and whether it takes several values."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return _click_type(args[0])
    if origin is list:
        return str, True
    if origin is typing.Literal:
        return click.Choice(args), False
    return {int: int, float: float, Path: click.Path(path_type=Path)}.get(annotation, str), False


def options_from(model: type[BaseModel], skip: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Decorate a command with one option per model field; unset options stay None and keep the model default."""

    def decorate(command: Callable) -> Callable:
        for name, field in reversed(form_fields(model).items()):
            if name in skip:
                continue
            flag = _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
            default = field.get_default(call_default_factory=True)
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            help_text = f"{field.description} [default: {'none' if shown in (None, '') else shown}]"
            if field.annotation is bool:
                on = flag.removeprefix("--")
                command = click.option(f"--{on}/--no-{on}", name, default=None, help=help_text)(command)
                continue
            click_type, several = _click_type(field.annotation)
            if several:
                help_text += " (comma-separated or repeated)"
            command = click.option(flag, name, type=click_type, multiple=several, default=None, help=help_text)(command)
        return command

    return decorate


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """Only the options the user set; lists accept comma-separated values."""
    given = {}
    for name, value in options.items():
        if value is None or value == ():
            continue
        if isinstance(value, tuple):
            value = [part.strip() for item in value for part in item.split(",") if part.strip()]
        given[name] = value
    return given


def _fail(error: Exception) -> typing.NoReturn:
    if isinstance(error, ValidationError):
        located = (
            (".".join(map(str, flat_location(item["loc"], IndexParams, QueryParams, ServeParams))), item["msg"])
            for item in error.errors()
        )
        # A check of a whole model (or group of settings) names its field in its own text.
        message = "; ".join(
            f"{where}: {text.removeprefix('Value error, ')}" if where else text.removeprefix("Value error, ")
            for where, text in located
        )
    else:
        message = str(error)
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _run_flow(flow: Callable[..., Result], verbose: bool = False, **parameters: Any) -> Result:
    """Run a flow as the command's one run: Prefect's lines on the terminal only if `verbose` (warnings and
    errors always), no heartbeats without a server (they would only slow it), and Ctrl-C one line and exit 130."""
    from flows.runners import an_api_that_answers, console_lines, no_heartbeats_without_a_server

    # A warm host ends a cancelled command itself (and itself, if a model's work holds on).
    hosted = click.get_current_context().obj == HOSTED
    try:
        with (
            an_api_that_answers(lambda line: click.echo(line, err=True)),
            no_heartbeats_without_a_server(),
            console_lines(verbose),
            nullcontext() if hosted else _interruptible(),
        ):
            return flow(**parameters)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C ends the command within `INTERRUPT_GRACE_SECONDS`, whatever its threads are doing.

    Ctrl-C interrupts the main thread only: Prefect then marks the run crashed and waits for the
    chunk's model work on its worker thread, which would hold the exit for as long as the chunk
    takes (minutes). Past the grace, the exit handlers run (they stop Prefect's temporary API) and
    the process ends. What the run wrote is durable chunk by chunk; the next run goes on from there,
    as after a kill.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return

    # Once the interrupt has unwound out of the block (its threads done), the command ends itself: no exit then.
    deadline = threading.Timer(INTERRUPT_GRACE_SECONDS, _exit_now, args=(130,))
    deadline.daemon = True

    def interrupted(signum: int, frame: types.FrameType | None) -> None:
        if not deadline.is_alive():
            deadline.start()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        deadline.cancel()
        signal.signal(signal.SIGINT, previous)


def _exit_now(status: int) -> None:
    import atexit

    click.echo("interrupted", err=True)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def output_options(command: Callable) -> Callable:
    """--verbose, --quiet and --json: how much a command that runs a flow prints."""
    command = click.option("--json", "as_json", is_flag=True, help="print the result as JSON alone (for scripts)")(
        command
    )
    command = click.option("--quiet", is_flag=True, help="print the result alone: no progress, no summary")(command)
    return click.option("--verbose", is_flag=True, help="print Prefect's lines too: every stage and task run")(command)


def _print_rows(rows: list[dict[str, str]], header: bool = True) -> None:
    if not rows:
        return
    widths = {name: max(len(name), *(len(row[name]) for row in rows)) for name in rows[0]}
    if header:
        click.echo("  ".join(name.ljust(width) for name, width in widths.items()).rstrip())
    for row in rows:
        click.echo("  ".join(row[name].ljust(width) for name, width in widths.items()).rstrip())


def quiet_prefect_defaults() -> None:
    # Prefect without a server starts a temporary one; its telemetry only fails (noisily) offline.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


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
        params, changes = preflight.with_the_index_recipe(_given(options))
        if changes and not (quiet or as_json):
            click.echo(preflight.describe_changes(changes))
        preflight.check_index_can_start(params, preflight.index_embedders(params))
        from flows.index_coco import index_coco  # Prefect is imported only once the inputs are known good

        show_progress = not (quiet or as_json)
        report = _run_flow(index_coco, verbose, **params.flat(), show_progress=show_progress)
    except (CropsearchError, ValueError) as error:
        _fail(error)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    elif not quiet:
        _print_rows(report_table(report))
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
        params = QueryParams(**_given(options))
        if image is not None:
            preflight.check_query_image(image)
        if server is not None:
            from components.serve.client import ask_server

            result = ask_server(server, text, image, params.search, os.environ.get("CROPSEARCH_TOKEN"))
        else:
            preflight.check_query_can_start(params, text_query=text is not None)
            from flows.query import query as query_flow

            result = _run_flow(query_flow, verbose, text=text, image=image, **params.flat())
    except (CropsearchError, ValueError) as error:
        _fail(error)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    rows = render.hits_table(result.hits)
    if quiet:
        _print_rows(rows, header=False)
        return
    count = len(result.hits)
    over = f" over {result.embedder}'s vectors" if result.embedder and result.mode != "text" else ""
    click.echo(f"{count or 'no'} hit{'' if count == 1 else 's'}, ranked by {result.mode} search{over}")
    _print_rows(rows)
    if result.grid_path:
        click.echo(f"grid: {result.grid_path}")


@main.command()
@options_from(ServeParams)
def serve(**options: Any) -> None:
    """Serve the search page and its JSON API over one index, its embedder kept warm (Ctrl-C stops)."""
    given = _given(options)
    if "token" not in given and os.environ.get("CROPSEARCH_TOKEN"):
        given["token"] = os.environ["CROPSEARCH_TOKEN"]
    try:
        params = ServeParams(**given)
        from components.serve.server import prepared_server, url_of

        server, listening = prepared_server(params)
    except (CropsearchError, ValueError) as error:
        _fail(error)
    click.echo(f"serving {params.db_uri} at {url_of(listening)}/ (Ctrl-C stops)")
    server.run(sockets=[listening])


def _on_existing_database(
    db_uri: str, options: dict[str, Any], work: Callable[[ObjectStoreSettings], Result]
) -> Result:
    """Run maintenance `work` on a database that must exist, holding its writer lock; errors are one line."""
    from components.ops import preflight
    from components.store.locks import exclusive_writer

    try:
        settings = ObjectStoreSettings(**_given(options))
        preflight.check_object_store(settings, db_uri)
        preflight.check_db_exists(db_uri)
        with exclusive_writer(db_uri):
            return work(settings)
    except (CropsearchError, ValueError) as error:
        _fail(error)


@main.command()
@click.option("--db", "db_uri", default=DEFAULT_DB_URI, show_default=True, help="LanceDB folder or s3:// URI")
@options_from(ObjectStoreSettings)
def compact(db_uri: str, **options: Any) -> None:
    """Merge the small data fragments index runs leave behind (every index run also does this at its end)."""
    from components.store.writer import StoreWriter

    fragments = _on_existing_database(db_uri, options, lambda settings: StoreWriter(db_uri, settings).compact())
    if not fragments:
        click.echo(f"no tables at {db_uri}")
    _print_rows(
        [
            {"table": table, "fragments before": str(before), "fragments after": str(after)}
            for table, (before, after) in fragments.items()
        ]
    )


@main.command()
@click.option("--db", "db_uri", default=DEFAULT_DB_URI, show_default=True, help="LanceDB folder or s3:// URI")
@options_from(ObjectStoreSettings)
def restore(db_uri: str, **options: Any) -> None:
    """After a damaged or lost data file: make the newest table versions that read the current ones."""
    from components.store.recovery import restore_readable

    report = _on_existing_database(db_uri, options, lambda settings: restore_readable(db_uri, settings))
    _print_rows(
        [
            {
                "table": item.table,
                "version": f"{item.latest} -> {item.restored}" if item.restored != item.latest else str(item.latest),
                "rows": f"{'unreadable' if item.rows_before is None else item.rows_before} -> {item.rows_after}",
            }
            for item in report
        ]
    )
    if any(item.restored != item.latest for item in report):
        click.echo("run `cropsearch index` again to redo what the lost versions held")
    else:
        click.echo("every table reads: nothing to restore")


@main.command()
@click.option("--db", "db_uri", default=DEFAULT_DB_URI, show_default=True, help="LanceDB folder or s3:// URI")
@click.option(
    "--default",
    "make_default",
    metavar="EMBEDDER",
    help="make queries that name no --embedder use this one (its id, or the path or hub id it was loaded from); "
    "switching back is the rollback",
)
@click.option("--drop", metavar="EMBEDDER", help="remove this embedder's vectors (not the default's)")
@options_from(ObjectStoreSettings)
def models(db_uri: str, make_default: str | None, drop: str | None, **options: Any) -> None:
    """List the embedders whose vectors the index holds; switch the default one, or drop one.

    `cropsearch index --embedder B` adds an embedder: it embeds every stored photo and crop with B,
    with no detection.
    """
    from components.ops import preflight
    from components.store.writer import StoreWriter

    if make_default and drop:
        _fail(ValueError("--default, --drop: give one of them"))

    def change(settings: ObjectStoreSettings) -> list[dict[str, str]]:
        store = StoreWriter(db_uri, settings)
        if not store.vector_tables():
            raise StoreMismatchError(f"no embedders in the index at {db_uri}: run `cropsearch index` first")
        if make_default:
            store.set_default_embedder(preflight.resolve_embedder(store, make_default, "--default")[0])
        if drop:
            dropped = preflight.resolve_embedder(store, drop, "--drop")[0]
            click.echo(f"dropped {store.drop_embedder(dropped)} vectors of {dropped}")
        return [
            {
                "embedder": held.embedder,
                "default": "yes" if held.default else "",
                "dim": str(held.dim),
                "vectors": str(held.vectors),
                "loaded from": held.spec,
            }
            for held in store.indexed_embedders()
        ]

    _print_rows(_on_existing_database(db_uri, options, change))


@main.command()
@click.argument("words")
@click.option("--detector", required=True, help="the YOLOE weights the words are for (e.g. yoloe-11s-seg.pt)")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="the vocabulary file to write (.npz)")
def vocabulary(words: str, detector: str, out: Path) -> None:
    """Save the prompt embeddings of WORDS ("guitar, key, logo") for `cropsearch index --vocabulary OUT`.

    YOLOE's text model (MobileCLIP) downloads at first use, and ultralytics pip-installs its CLIP
    tokenizer from github.com when it is missing: run this once where that is allowed.
    """
    from components.models.vocabulary import compute_prompt_embeddings, save_prompt_embeddings

    try:
        found = compute_prompt_embeddings(detector, [word for word in words.split(",") if word.strip()])
        save_prompt_embeddings(out, found.names, found.vectors)
    except (CropsearchError, ValueError) as error:
        _fail(error)
    click.echo(f"{out}: {len(found.names)} words for {detector}; index with --detector {detector} --vocabulary {out}")


@main.command("eval")
@options_from(EvalParams)
@click.option("--verbose", is_flag=True, help="print Prefect's lines too: every stage and task run")
def evaluate_command(verbose: bool, **options: Any) -> None:
    """Measure retrieval quality (recall@k, P@10, mAP by object size) of whole images, crops and both."""
    from components.ops import preflight

    try:
        params = EvalParams(**_given(options))
        preflight.check_eval_can_start(params)
        from flows.evaluate import evaluate

        summary = _run_flow(evaluate, verbose, **params.flat())
    except (CropsearchError, ValueError) as error:
        _fail(error)
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
        answers = _run_flow(demo_flow, verbose, text=text, scenes=scenes, k=k, data_dir=data_dir, device=device)
    except (CropsearchError, ValueError) as error:
        _fail(error)
    here = Path.cwd()
    for label, hits in answers.items():
        click.echo(f"\n{label}: {text!r}")
        rows = [
            # Scenes under the working folder are shown from it: the README prints what a run prints.
            {**row, "parent": _from(here, row["parent"]), "holds it?": truth}
            for row, (_, truth) in zip(render.hits_table([h for h, _ in hits]), hits, strict=True)
        ]
        _print_rows(
            [
                {key: row[key] for key in ("rank", "score", "kind", "class", "parent", "box", "holds it?")}
                for row in rows
            ]
        )


def _from(folder: Path, path: str) -> str:
    """`path` relative to `folder` where it lies under it, else as it is."""
    return str(Path(path).relative_to(folder)) if Path(path).is_relative_to(folder) else path


@main.group()
def world() -> None:
    """The synthetic world: generated scenes with exact answers, and the small models trained on them."""


@world.command("train")
@click.option("--out", type=click.Path(path_type=Path), default=Path("world"), show_default=True)
@click.option("--work", type=click.Path(path_type=Path), default=Path("data/world-training"), show_default=True)
def world_train(out: Path, work: Path) -> None:
    """Remake world/detector.pt and world/clip/ (seeded; ~40 min on 2 CPU cores); logs to world/training.log."""
    from components.evaluation.training import train_world

    train_world(out, work)


@main.group()
def stack() -> None:
    """Run cropsearch the Prefect way: a server, a work pool, the deployments of prefect.yaml and a worker."""


@stack.command("up")
@options_from(StackParams)
def stack_up(**options: Any) -> None:
    """Start the local Prefect server (or use --api-url), create pool and writer limit, deploy, start a worker."""
    from components.ops import stack as local_stack

    try:
        started = local_stack.up(StackParams(**_given(options)))
    except (CropsearchError, ValueError) as error:
        _fail(error)
    _print_rows([{"what": name, "where": value} for name, value in started.items()])
    click.echo("try: prefect deployment run 'index-coco/adhoc' --param source=<folder> --param limit=500")


@stack.command("down")
@options_from(StackParams)
def stack_down(**options: Any) -> None:
    """Stop the worker and the server that `stack up` started (their flow runs included)."""
    from components.ops import stack as local_stack

    try:
        stopped = local_stack.down(StackParams(**_given(options)))
    except (CropsearchError, ValueError) as error:
        _fail(error)
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


def _host_help() -> str:
    from flows.host import IDLE_SECONDS

    return (
        "The warm host: one background process per code version, environment and folder that serves "
        f"index/query/eval/demo commands with everything loaded; it exits after {IDLE_SECONDS // 60} idle minutes."
    )


@main.group(help=_host_help())
def host() -> None:
    pass


def _hosts(op: str) -> list[dict[str, Any]]:
    from components.host.address import hosts_folder
    from components.host.client import ask_hosts

    return ask_hosts(hosts_folder(os.environ), op)


@host.command("status")
def host_status() -> None:
    """List this user's warm hosts."""
    answers = _hosts("status")
    if not answers:
        click.echo("no warm host is running")
    _print_rows(
        [
            {
                "pid": str(answer["pid"]),
                "folder": answer["cwd"],
                "commands": str(answer["commands_run"]),
                "idle": f"{answer['idle_seconds']:.0f} s",
                "busy": "yes" if answer["busy"] else "no",
            }
            for answer in answers
        ]
    )


@host.command("stop")
def host_stop() -> None:
    """Stop this user's warm hosts (the next command starts a fresh one), e.g. after editing a plug-in."""
    answers = _hosts("stop")
    click.echo(f"stopped {len(answers)} warm host{'s' if len(answers) != 1 else ''}")


if __name__ == "__main__":
    main()
