"""Chunks of work in flight: submitted a few ahead, taken back in the order they were submitted."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TypeVar

Item = TypeVar("Item")
Pending = TypeVar("Pending")
Done = TypeVar("Done")


def in_order(
    chunks: Iterator[list[Item]],
    submit: Callable[[list[Item]], Pending],
    ahead: int,
    wait: Callable[[Pending], Done],
) -> Iterator[tuple[list[Item], Done, float]]:
    """Each chunk with what `wait` makes of its submission, and the seconds that took, in chunk order.

    At most `ahead` chunks are in flight, which bounds memory and lets the caller write one chunk
    while workers compute the next ones.
    """
    pending: deque[tuple[list[Item], Pending]] = deque()

    def taken_back() -> tuple[list[Item], Done, float]:
        chunk, submitted = pending.popleft()
        started = time.perf_counter()
        done = wait(submitted)
        return chunk, done, time.perf_counter() - started

    for chunk in chunks:
        pending.append((chunk, submit(chunk)))
        if len(pending) >= ahead:
            yield taken_back()
    while pending:
        yield taken_back()
