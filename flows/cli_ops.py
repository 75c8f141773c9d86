"""The commands beside index and query: database upkeep (compact, restore, models), a detector's vocabulary,
the synthetic world, the Prefect stack and the warm host. `flows/cli.py` adds them to `cropsearch`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from components.errors import CropsearchError, StoreMismatchError
from components.host.address import IDLE_SECONDS
from flows.cli_options import fail, given, options_from, print_rows
from schemas.params import DEFAULT_DATA_DIR
from schemas.settings import ObjectStoreSettings
from schemas.stack import StackParams

DEFAULT_DB_URI = str(DEFAULT_DATA_DIR / "lancedb")
Result = TypeVar("Result")


def _on_existing_database(
    db_uri: str, options: dict[str, Any], work: Callable[[ObjectStoreSettings], Result]
) -> Result:
    """Run maintenance `work` on a database that must exist, holding its writer lock; errors are one line."""
    from components.ops import preflight
    from components.store.locks import exclusive_writer

    try:
        settings = ObjectStoreSettings(**given(options))
        preflight.check_object_store(settings, db_uri)
        preflight.check_db_exists(db_uri)
        with exclusive_writer(db_uri):
            return work(settings)
    except (CropsearchError, ValueError) as error:
        fail(error)


@click.command()
@click.option("--db", "db_uri", default=DEFAULT_DB_URI, show_default=True, help="LanceDB folder or s3:// URI")
@options_from(ObjectStoreSettings)
def compact(db_uri: str, **options: Any) -> None:
    """Merge the small data fragments index runs leave behind (every index run also does this at its end)."""
    from components.store.writer import StoreWriter

    fragments = _on_existing_database(db_uri, options, lambda settings: StoreWriter(db_uri, settings).compact())
    if not fragments:
        click.echo(f"no tables at {db_uri}")
    print_rows(
        [
            {"table": table, "fragments before": str(before), "fragments after": str(after)}
            for table, (before, after) in fragments.items()
        ]
    )


@click.command()
@click.option("--db", "db_uri", default=DEFAULT_DB_URI, show_default=True, help="LanceDB folder or s3:// URI")
@options_from(ObjectStoreSettings)
def restore(db_uri: str, **options: Any) -> None:
    """After a damaged or lost data file: make the newest table versions that read the current ones."""
    from components.store.recovery import restore_readable

    report = _on_existing_database(db_uri, options, lambda settings: restore_readable(db_uri, settings))
    print_rows(
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


@click.command()
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
        fail(ValueError("--default, --drop: give one of them"))

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

    print_rows(_on_existing_database(db_uri, options, change))


@click.command()
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
        fail(error)
    click.echo(f"{out}: {len(found.names)} words for {detector}; index with --detector {detector} --vocabulary {out}")


@click.group()
def world() -> None:
    """The synthetic world: generated scenes with exact answers, and the small models trained on them."""


@world.command("train")
@click.option("--out", type=click.Path(path_type=Path), default=Path("world"), show_default=True)
@click.option("--work", type=click.Path(path_type=Path), default=Path("data/world-training"), show_default=True)
def world_train(out: Path, work: Path) -> None:
    """Remake world/detector.pt and world/clip/ (seeded; ~40 min on 2 CPU cores); logs to world/training.log."""
    from components.evaluation.training import train_world

    train_world(out, work)


@click.group()
def stack() -> None:
    """Run cropsearch the Prefect way: a server, a work pool, the deployments of prefect.yaml and a worker."""


@stack.command("up")
@options_from(StackParams)
def stack_up(**options: Any) -> None:
    """Start the local Prefect server (or use --api-url), create pool and writer limit, deploy, start a worker."""
    from components.ops import stack as local_stack

    try:
        started = local_stack.up(StackParams(**given(options)))
    except (CropsearchError, ValueError) as error:
        fail(error)
    print_rows([{"what": name, "where": value} for name, value in started.items()])
    click.echo("try: prefect deployment run 'index-coco/adhoc' --param source=<folder> --param limit=500")


@stack.command("down")
@options_from(StackParams)
def stack_down(**options: Any) -> None:
    """Stop the worker and the server that `stack up` started (their flow runs included)."""
    from components.ops import stack as local_stack

    try:
        stopped = local_stack.down(StackParams(**given(options)))
    except (CropsearchError, ValueError) as error:
        fail(error)
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


def _host_help() -> str:
    return (
        "The warm host: one background process per code version, environment and folder that serves "
        f"index/query/eval/demo commands with everything loaded; it exits after {IDLE_SECONDS // 60} idle minutes."
    )


@click.group(help=_host_help())
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
    print_rows(
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


COMMANDS = (compact, restore, models, vocabulary, world, stack, host)
