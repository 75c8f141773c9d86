"""The prefetch thread: same items in the same order, errors where they happened, no thread left behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from components.prefetch import prefetched


def test_items_arrive_in_order() -> None:
    assert list(prefetched(range(50), depth=3)) == list(range(50))


def test_an_error_while_producing_is_raised_after_the_items_before_it() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad file 3")

    seen = []
    with pytest.raises(ValueError, match="bad file 3"):
        for item in prefetched(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_the_producer_runs_at_most_depth_ahead_and_stops_when_the_consumer_does() -> None:
    produced = []

    def items() -> Iterator[int]:
        for number in range(1000):
            produced.append(number)
            yield number

    before = threading.active_count()
    stream = prefetched(items(), depth=2)
    assert next(stream) == 0
    threading.Event().wait(0.3)
    # One taken, two waiting in the queue, one held by the blocked producer.
    assert len(produced) <= 4
    stream.close()
    assert threading.active_count() == before
    assert len(produced) <= 5
