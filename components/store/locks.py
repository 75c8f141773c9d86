"""One writer per local database, with or without a Prefect server to coordinate through.

An advisory `flock` on a file beside the tables: a second index run on the same folder waits for
the first to finish, then plans against what it wrote. The kernel drops the lock when its holder
dies, SIGKILL included, so a crashed run never leaves the database locked.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_FILE = ".cropsearch-writer.lock"


class WriterLockTimeout(TimeoutError):
    """Another index run held the database for longer than this run would wait."""


@contextmanager
def exclusive_writer(db_uri: str, timeout_seconds: float | None = None) -> Iterator[None]:
    """Hold the database's writer lock; object-store URIs (s3://...) have no local file to lock and pass through."""
    if "://" in db_uri:
        yield
        return
    folder = Path(db_uri)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOCK_FILE).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another index run is writing %s; waiting for it to finish", db_uri)
            _wait(handle, db_uri, timeout_seconds)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wait(handle: object, db_uri: str, timeout_seconds: float | None) -> None:
    if timeout_seconds is None:
        fcntl.flock(handle, fcntl.LOCK_EX)  # type: ignore[arg-type]
        return
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # type: ignore[arg-type]
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise WriterLockTimeout(
                    f"another index run kept {db_uri} locked for over {timeout_seconds:.0f} s"
                ) from None
            time.sleep(0.2)
