"""Writing crop files on threads of their own, off the models' path, with a bounded backlog."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from components.store.objects import ObjectFiles

# Photos whose crop files may wait to be written, per writer thread: enough to ride out a slow
# write, few enough that the waiting bytes stay small.
_BACKLOG_PER_THREAD = 4


class CropFileWriter:
    """Write each photo's encoded crop files on `threads` threads; `finish` waits for all of them.

    `submit` blocks while the backlog is full, so a slow disk slows the photos coming in instead
    of filling memory. `finish` raises the first write's error (a full disk names its folder).
    """

    def __init__(self, files: ObjectFiles, threads: int) -> None:
        threads = max(1, threads)
        self._files = files
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="crop-files")
        self._room = threading.BoundedSemaphore(threads * _BACKLOG_PER_THREAD)
        self._pending: list[Future[None]] = []
        self._pending_lock = threading.Lock()

    def submit(self, files: Sequence[tuple[str, bytes]]) -> None:
        """Queue one photo's crop files, each a uri and its bytes (thread-safe)."""
        if not files:
            return
        self._room.acquire()
        future = self._pool.submit(self._write, files)
        future.add_done_callback(lambda _: self._room.release())
        with self._pending_lock:
            self._pending.append(future)

    def _write(self, files: Sequence[tuple[str, bytes]]) -> None:
        for uri, data in files:
            self._files.write_bytes(uri, data)

    def finish(self) -> None:
        """Return once every submitted file is written; raise the first failure."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def __enter__(self) -> CropFileWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        # On an error elsewhere, writes not yet started are dropped: their image is not marked indexed.
        self._pool.shutdown(wait=True, cancel_futures=kind is not None)
