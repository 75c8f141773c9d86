"""How `cropsearch` commands read their options and print: flags made from the parameter models, errors in one
line, tables of rows, and the output flags of the commands that run a flow."""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, ValidationError

from schemas.flat import flat_location
from schemas.params import IndexParams, QueryParams, form_fields
from schemas.serve import ServeParams

_FLAG_NAMES = {"db_uri": "--db", "k": "-k"}


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


def given(options: dict[str, Any]) -> dict[str, Any]:
    """Only the options the user set; lists accept comma-separated values."""
    named = {}
    for name, value in options.items():
        if value is None or value == ():
            continue
        if isinstance(value, tuple):
            value = [part.strip() for item in value for part in item.split(",") if part.strip()]
        named[name] = value
    return named


def fail(error: Exception) -> typing.NoReturn:
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


def output_options(command: Callable) -> Callable:
    """--verbose, --quiet and --json: how much a command that runs a flow prints."""
    command = click.option("--json", "as_json", is_flag=True, help="print the result as JSON alone (for scripts)")(
        command
    )
    command = click.option("--quiet", is_flag=True, help="print the result alone: no progress, no summary")(command)
    return click.option("--verbose", is_flag=True, help="print Prefect's lines too: every stage and task run")(command)


def print_rows(rows: list[dict[str, str]], header: bool = True) -> None:
    if not rows:
        return
    widths = {name: max(len(name), *(len(row[name]) for row in rows)) for name in rows[0]}
    if header:
        click.echo("  ".join(name.ljust(width) for name, width in widths.items()).rstrip())
    for row in rows:
        click.echo("  ".join(row[name].ljust(width) for name, width in widths.items()).rstrip())
