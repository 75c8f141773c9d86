"""Parameter models built of nested settings groups, seen from outside as one flat list of fields.

Code reads `params.detection.confidence` and passes `params.detection` where detection settings
are wanted. People and Prefect see the flat names: `--confidence`, `--param confidence=0.4`, one
UI form field. Prefect merges a run's parameters into the deployment's by top-level key, so the
flat list is also what keeps `--param limit=500` from resetting a whole group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.fields import FieldInfo


class SettingsGroup(BaseModel):
    """Settings that belong together (detection, batching, ...); nested in a `FlatParams` model."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FlatParams(BaseModel):
    """A parameter model whose `SettingsGroup` fields are built from, and shown as, flat fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def groups(cls) -> dict[str, type[SettingsGroup]]:
        """Field name -> group model, in declaration order."""
        return {
            name: field.annotation
            for name, field in cls.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, SettingsGroup)
        }

    @classmethod
    def flat_fields(cls) -> dict[str, FieldInfo]:
        """Every flat field in form order: the model's fields as declared, each group's fields in its place."""
        groups = cls.groups()
        flat: dict[str, FieldInfo] = {}
        for name, field in cls.model_fields.items():
            flat.update(groups[name].model_fields if name in groups else {name: field})
        return flat

    @model_validator(mode="before")
    @classmethod
    def _fold_flat_fields(cls, data: Any) -> Any:
        """`IndexParams(confidence=0.4)` and `IndexParams(detection={"confidence": 0.4})` are the same."""
        if not isinstance(data, dict):
            return data
        folded = dict(data)
        for group_name, group in cls.groups().items():
            given = {name: folded.pop(name) for name in list(folded) if name in group.model_fields}
            if not given:
                continue
            nested = folded.get(group_name, {})
            if isinstance(nested, SettingsGroup):
                nested = nested.model_dump()
            folded[group_name] = {**nested, **given}
        return folded

    def flat(self, mode: Literal["python", "json"] = "python") -> dict[str, Any]:
        """The flat fields and their values: the keyword arguments a flow takes (`index_coco(**params.flat())`)."""
        groups = type(self).groups()
        values: dict[str, Any] = {}
        for name, value in self.model_dump(mode=mode).items():
            values.update(value if name in groups else {name: value})
        return values

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """Pydantic's copy, refusing a flat name it would otherwise set beside the group (`with_flat` changes those)."""
        unknown = set(update or {}) - set(type(self).model_fields)
        if unknown:
            raise ValueError(f"{sorted(unknown)} are not fields of {type(self).__name__}; use with_flat(...)")
        return super().model_copy(update=update, deep=deep)

    def with_flat(self, **changes: Any) -> Self:
        """A copy with some flat fields changed, validated like a new model."""
        return type(self)(**{**self.flat(), **changes})


def flat_location(location: tuple[int | str, ...], *models: type[FlatParams]) -> tuple[int | str, ...]:
    """A validation error's location without group names: ("detection", "confidence") -> ("confidence",)."""
    group_names = {name for model in models for name in model.groups()}
    return tuple(part for part in location if part not in group_names)
