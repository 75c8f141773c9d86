"""Flat flow parameters made from the parameter models.

Prefect merges run parameters into a deployment's by top-level key, and `prefect deployment run
--param limit=500` only reaches top-level names. So each flow takes the models' fields as its own
keyword parameters, and this decorator writes that signature from the models: one list of fields,
with their types, bounds, validators, defaults and descriptions, for the Python API, the Prefect
UI form, `prefect.yaml` and the CLI alike. The flow body rebuilds the models from the keywords.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel

from schemas.params import form_fields

F = TypeVar("F", bound=Callable[..., Any])


def _parameter(name: str, model: type[BaseModel]) -> inspect.Parameter:
    field = form_fields(model)[name]
    # Bounds (ge/le) and validators live in the field's metadata; Annotated carries them to Prefect's validation.
    annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    default = field.get_default(call_default_factory=True)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def takes_fields_of(*models: type[BaseModel]) -> Callable[[F], F]:
    """Give `def fn(*, own=..., **fields)` the signature `fn(*, <every model field>, own=...)`.

    Prefect reads parameter descriptions from a Google-style `Args:` docstring section, so the
    field descriptions are appended to it (they also show in `help()`); document `own` there.
    """

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)
        own = [p for p in signature.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        named = [(name, model) for model in models for name in form_fields(model)]
        clashes = {p.name for p in own} & {name for name, _ in named}
        if clashes:
            raise TypeError(f"{fn.__name__} declares {sorted(clashes)} that the models already have")
        fields = [_parameter(name, model) for name, model in named]
        fn.__signature__ = signature.replace(parameters=[*fields, *own])  # type: ignore[attr-defined]
        doc = inspect.getdoc(fn) or ""
        described = "\n".join(f"    {name}: {form_fields(model)[name].description}" for name, model in named)
        fn.__doc__ = f"{doc}\n{described}" if "\nArgs:\n" in doc else f"{doc}\n\nArgs:\n{described}"
        return fn

    return decorate


def split_fields(fields: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """The keywords that belong to `model`, to rebuild it inside a flow."""
    return {name: value for name, value in fields.items() if name in form_fields(model)}
