"""The prefetch thread: same items in the same order, errors where they happened, no thread left behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from components.pipeline.prefetch import mapped_ahead, prefetched


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


def test_mapped_ahead_keeps_the_order_of_the_items_while_threads_finish_out_of_order() -> None:
    def slow_for_even(number: int) -> tuple[int, str]:
        threading.Event().wait(0.02 if number % 2 == 0 else 0.0)
        return number * number, threading.current_thread().name

    results = list(mapped_ahead(slow_for_even, range(40), threads=4))
    assert [square for square, _ in results] == [number * number for number in range(40)]
    assert len({name for _, name in results}) > 1  # the work really was spread over threads


def test_mapped_ahead_raises_a_failure_at_its_item_and_leaves_no_thread_behind() -> None:
    def fail_on_five(number: int) -> int:
        if number == 5:
            raise ValueError("bad file 5")
        return number

    before = threading.active_count()
    seen = []
    with pytest.raises(ValueError, match="bad file 5"):
        for number in mapped_ahead(fail_on_five, range(100), threads=3):
            seen.append(number)
    assert seen == [0, 1, 2, 3, 4]
    assert threading.active_count() == before


def test_mapped_ahead_works_at_most_threads_times_depth_ahead_and_stops_with_the_consumer() -> None:
    started = []

    def record(number: int) -> int:
        started.append(number)
        return number

    before = threading.active_count()
    stream = mapped_ahead(record, range(1000), threads=3, depth=2)
    assert next(stream) == 0
    threading.Event().wait(0.3)
    # One taken, six in the queue, one held by the blocked submitter.
    assert len(started) <= 8
    stream.close()
    assert threading.active_count() == before
    assert len(started) <= 9
