"""The flows take the parameter models' fields as flat parameters: what the UI form and `--param` see."""

from __future__ import annotations

import pytest
from prefect.exceptions import ParameterTypeError

from flows.index_coco import index_coco
from flows.query import query
from schemas.params import IndexParams, QueryInput, QueryParams, form_fields


def form(flow: object) -> dict:
    return flow.parameters.model_dump_for_openapi()["properties"]  # type: ignore[attr-defined]


def test_index_form_lists_every_field_in_form_order_with_its_description_and_default() -> None:
    properties = form(index_coco)
    assert list(properties) == [*form_fields(IndexParams), "show_progress"]
    assert list(properties)[:2] == ["source", "source_name"]  # what a person fills in first comes first
    for name, field in form_fields(IndexParams).items():
        assert properties[name]["description"] == field.description
        assert properties[name]["default"] == IndexParams().flat(mode="json")[name]
    assert properties["limit"]["anyOf"][0]["minimum"] == 1  # bounds reach the form
    assert properties["show_progress"]["description"].startswith("draw a progress bar")


def test_query_form_has_the_query_and_every_query_setting() -> None:
    properties = form(query)
    assert list(properties) == [*QueryInput.model_fields, *form_fields(QueryParams)]
    assert all(properties[name].get("description") for name in properties)


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"limit": 0}, "limit"),
        ({"checksum": "md5:zz"}, "checksum"),
        ({"device": "tpu"}, "device"),
        ({"confidence": 2}, "confidence"),
    ],
)
def test_bad_run_parameters_are_refused_naming_the_field(parameters: dict, named: str) -> None:
    with pytest.raises(ParameterTypeError, match=named):
        index_coco.validate_parameters(parameters)


def test_one_top_level_key_is_enough_and_the_rest_keep_their_defaults() -> None:
    """What `prefect deployment run 'index-coco/adhoc' --param limit=500` sends."""
    validated = index_coco.validate_parameters({"limit": "500"})
    assert validated["limit"] == 500
    assert IndexParams(**{k: v for k, v in validated.items() if k != "show_progress"}) == IndexParams(limit=500)
