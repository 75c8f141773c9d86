"""Going back to the newest versions of a database's tables that still read, after a data file was damaged.

LanceDB writes each change as a new version and keeps older ones (a week, see `StoreWriter.compact`),
so a damaged or lost data file costs only the changes since the last version that reads. Tables
are versioned apart, so all of them (images, crops, each embedder's vectors, the settings) go back
to one moment: writes put an image's crops and vectors
before the image row that marks it indexed, and a state taken at one moment keeps that promise.
The next `cropsearch index` redoes whatever the lost versions held.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import lancedb

from components.errors import StoreCorruptError
from components.store.database import open_committed
from components.store.schema import KEY_OF_TABLE, is_vector_table, key_of_table
from schemas.settings import ObjectStoreSettings


@dataclass(frozen=True)
class Restored:
    table: str
    latest: int
    restored: int  # the version now current (equal to `latest` when nothing had to change)
    rows_before: int | None  # None: the latest version did not read
    rows_after: int


def _reads(table: Any, key: str) -> bool:
    """Whether every data file of the checked-out version reads (its key column, scanned whole)."""
    try:
        table.search().select([key]).limit(None).to_arrow()
    except (RuntimeError, OSError, ValueError):
        return False
    return True


def restore_readable(uri: str, settings: ObjectStoreSettings | None = None) -> list[Restored]:
    """Make the newest versions that read, all from before one moment, the current ones; report each table.

    The moment starts after the newest write. A table whose newest version before it does not read
    goes back to one that does, and the moment moves back to when that table's next version (the
    first one lost) was written, so the other tables lose what was written from then on too.
    """
    options = (settings or ObjectStoreSettings()).lance_storage_options() if "://" in uri else {}
    db = lancedb.connect(uri, storage_options=options or None)
    names = [name for name in db.list_tables().tables if name in KEY_OF_TABLE or is_vector_table(name)]
    tables = {name: table for name in names if (table := open_committed(db, name)) is not None}
    history = {name: sorted(table.list_versions(), key=lambda v: v["version"]) for name, table in tables.items()}
    rows_before = {name: _rows_if_readable(table, name) for name, table in tables.items()}
    before = datetime.max
    while True:
        chosen = {name: _newest_readable(table, name, history[name], before, uri) for name, table in tables.items()}
        lost_from = [
            _first_after(history[name], version)["timestamp"]
            for name, version in chosen.items()
            if version != _newest_before(history[name], before)
        ]
        if not lost_from:
            break
        before = min(lost_from)
    report = []
    for name, table in tables.items():
        latest = history[name][-1]["version"]
        table.checkout(chosen[name])
        if chosen[name] != latest:
            table.restore()
        report.append(Restored(name, latest, table.version, rows_before[name], table.count_rows()))
    return report


def _newest_before(versions: list[dict[str, Any]], moment: datetime) -> int:
    """The newest version written before `moment`; for a table made after it, its first (empty) version."""
    return max((v["version"] for v in versions if v["timestamp"] < moment), default=versions[0]["version"])


def _first_after(versions: list[dict[str, Any]], version: int) -> dict[str, Any]:
    return next(v for v in versions if v["version"] > version)


def _newest_readable(table: Any, name: str, versions: list[dict[str, Any]], moment: datetime, uri: str) -> int:
    newest = _newest_before(versions, moment)
    for version in sorted((v["version"] for v in versions if v["version"] <= newest), reverse=True):
        table.checkout(version)
        if _reads(table, key_of_table(name)):
            return version
    raise StoreCorruptError(f"no version of table {name!r} at {uri} reads; rebuild the index with `cropsearch index`")


def _rows_if_readable(table: Any, name: str) -> int | None:
    return table.count_rows() if _reads(table, key_of_table(name)) else None
