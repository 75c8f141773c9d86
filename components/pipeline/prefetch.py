"""Running the CPU side of a pipeline (decoding, cutting, resizing) on threads beside the model.

PIL and torch release the GIL in their heavy loops, so a producer thread decoding the next batch
overlaps with the forward pass of the current one instead of adding to it; several threads keep up
with a GPU, which needs more pictures per second than one thread decodes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(items: Iterable[T], depth: int = 2) -> Generator[T, None, None]:
    """Iterate `items` on a background thread, at most `depth` items ahead of the consumer.

    An exception raised while producing is raised in the consumer at that point of the sequence; a
    consumer that stops early (break, exception, garbage collection) stops the producer too.
    """
    ready: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(value: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
        except BaseException as error:  # handed to the consumer, who raises it
            offer(_Failure(error))
            return
        offer(_DONE)

    producer = threading.Thread(target=produce, name="prefetch", daemon=True)
    producer.start()
    try:
        while True:
            value = ready.get()
            if value is _DONE:
                return
            if isinstance(value, _Failure):
                raise value.error
            yield value  # type: ignore[misc]
    finally:
        stop.set()
        producer.join()


def mapped_ahead(function: Callable[[T], R], items: Iterable[T], threads: int, depth: int = 2) -> Iterator[R]:
    """`map(function, items)` computed on `threads` background threads, results in the order of `items`.

    At most `threads * depth` items are in work or done and waiting, which bounds memory. An
    exception raised by `function` is raised in the consumer at that item; a consumer that stops
    early cancels what has not started and waits for what has.
    """
    if threads <= 1:
        yield from prefetched(map(function, items), depth)
        return
    pool = ThreadPoolExecutor(threads, thread_name_prefix="prefetch")
    futures: Generator[Future[R], None, None] = prefetched(
        (pool.submit(function, item) for item in items), threads * depth
    )
    try:
        for future in futures:
            yield future.result()
    finally:
        futures.close()  # stops the thread that submits
        pool.shutdown(wait=True, cancel_futures=True)
