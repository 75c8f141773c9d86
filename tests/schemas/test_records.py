"""Records: an embedding's vector is a read-only float32 row, whether it came as a list or from a model's batch."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from schemas.records import EmbeddingRecord


def _record(vector: object) -> EmbeddingRecord:
    return EmbeddingRecord(id="a" * 64, kind="image", image_id="a" * 64, model="m", vector=vector)


def test_a_vector_from_a_batch_is_a_read_only_view_of_it_and_the_batch_stays_writable() -> None:
    batch = np.arange(8, dtype=np.float32).reshape(2, 4)
    record = _record(batch[1])
    assert np.shares_memory(record.vector, batch)  # not copied on its way to the Arrow column
    assert record.vector.tolist() == [4.0, 5.0, 6.0, 7.0]
    assert not record.vector.flags.writeable and batch.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        record.vector[0] = 1.0  # the record is frozen: so is its vector


def test_a_vector_given_as_a_list_becomes_float32_and_goes_to_json_as_a_list() -> None:
    record = _record([1, 0.5, 0.25])
    assert record.vector.dtype == np.float32 and record.vector.tolist() == [1.0, 0.5, 0.25]
    assert EmbeddingRecord.model_validate_json(record.model_dump_json()).vector.tolist() == [1.0, 0.5, 0.25]


def test_a_vector_must_be_one_row() -> None:
    with pytest.raises(ValidationError, match="vector") as raised:
        _record(np.zeros((2, 4), dtype=np.float32))
    assert "one row of numbers" in str(raised.value)
