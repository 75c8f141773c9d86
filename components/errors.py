"""Errors that name their culprit. The CLI prints these without a stack trace."""


class CropsearchError(Exception):
    """Base of every error cropsearch raises on purpose."""


class SourceError(CropsearchError):
    """The image source is missing, unreachable, corrupt or fails its checksum."""


class InterruptedDownload(SourceError):
    """A transfer broke off; its `.part` file is kept and the next attempt resumes it."""


class UnsafeArchiveError(SourceError):
    """A zip holds an entry that would land outside its target folder."""


class ModelUnavailableError(CropsearchError):
    """A detector or embedder cannot be loaded (not on disk and its hub unreachable)."""


class StoreMismatchError(CropsearchError):
    """The database holds data that does not fit this request (another embedder, a missing table)."""


class TextIndexMissing(StoreMismatchError):
    """A text or hybrid query on an index made before text search: one index run adds what it needs."""


class StoreCorruptError(CropsearchError):
    """A table's data files are damaged or missing; its earlier versions may still read."""


def damaged_table(table: str, uri: str, error: object) -> StoreCorruptError:
    first_line = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    return StoreCorruptError(
        f"table {table!r} of the index at {uri} cannot be read ({first_line}); LanceDB keeps its earlier "
        f"versions: `cropsearch restore --db {uri}` goes back to the newest ones that read, and the next "
        "`cropsearch index` redoes what was lost"
    )


class DiskFullError(CropsearchError):
    """A write ran out of space; what was written before stays valid and a rerun resumes."""


def disk_full(where: object) -> DiskFullError:
    return DiskFullError(
        f"no space left on the device holding {where}; free some space and run again "
        "(chunks already written are kept; the rest is redone)"
    )


class StoreWriteTimeout(CropsearchError):
    """A database write did not finish in its time bound; nothing of it was committed."""
