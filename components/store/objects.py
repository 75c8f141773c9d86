"""Whole files at a local path or an `s3://bucket/key` URI: write, read, delete.

Crop files are the only files cropsearch writes besides the database, and on a cluster they must
land where every worker and every query can read them. Local files are written through a
temporary name and renamed; object-store URIs go through pyarrow's S3 filesystem, where a PUT is
atomic by itself. Either way a reader sees a whole file or none.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from pyarrow import fs as arrow_fs

from components.errors import disk_full
from schemas.settings import ObjectStoreSettings, is_object_store_uri


class ObjectFiles:
    """Reads and writes files by URI with one set of object-store settings.

    `readable_roots` (a deployed run's folders and its crop store) bound what `open` reads: the
    uris of pictures come from a database, and a planted row may name any file on the worker.
    """

    def __init__(
        self, settings: ObjectStoreSettings | None = None, readable_roots: Sequence[str] | None = None
    ) -> None:
        self.settings = settings or ObjectStoreSettings()
        self.readable_roots = None if readable_roots is None else [str(root) for root in readable_roots]

    @cached_property
    def _s3(self) -> arrow_fs.S3FileSystem:
        settings = self.settings
        endpoint = urlparse(settings.s3_endpoint) if settings.s3_endpoint else None
        secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
        return arrow_fs.S3FileSystem(
            access_key=settings.s3_access_key_id if secret else None,
            secret_key=secret,
            region=settings.s3_region,
            endpoint_override=endpoint.netloc if endpoint else None,
            scheme=(endpoint.scheme if endpoint else "https"),
        )

    def _s3_path(self, uri: str) -> str:
        parsed = urlparse(uri)
        return f"{parsed.netloc}{parsed.path}"

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write a whole file: readers, and a run after a kill, see all of it or nothing."""
        if not is_object_store_uri(uri):
            _write_atomically(Path(uri), data)
            return
        self.settings.check_endpoint()
        with self._s3.open_output_stream(self._s3_path(uri)) as stream:
            stream.write(data)

    def open(self, uri: str) -> BinaryIO | Path:
        """Something `PIL.Image.open` reads: the local path itself, or the object's bytes in memory.

        PermissionError for a uri outside `readable_roots` (a local one with its links followed, as reading does).
        """
        if self.readable_roots is not None:
            target = uri if is_object_store_uri(uri) else str(Path(uri).expanduser().resolve())
            if not any(lies_under(target, root) for root in self.readable_roots):
                raise PermissionError(f"{uri} is outside the folders this run may read")
        if not is_object_store_uri(uri):
            return Path(uri)
        self.settings.check_endpoint()
        try:
            with self._s3.open_input_file(self._s3_path(uri)) as stream:
                return io.BytesIO(stream.read())
        except OSError as error:
            raise FileNotFoundError(f"cannot read {uri}: {error}") from error

    def delete(self, uri: str) -> None:
        """Remove a file; one that is already gone is fine."""
        if not is_object_store_uri(uri):
            Path(uri).unlink(missing_ok=True)
            return
        self.settings.check_endpoint()
        with contextlib.suppress(FileNotFoundError):
            self._s3.delete_file(self._s3_path(uri))


def lies_under(uri: str, root: str) -> bool:
    """Whether `uri` names a file inside the folder or object prefix `root`, read as a path, never as text.

    A uri read from a database is data: a planted row may name `/etc/passwd`, `<root>/../x` or
    another bucket. A local uri's folder is resolved (symlinks, `..`); the file itself is not
    followed, so a link inside `root` is its own file. An object key may not hold `.` or `..`
    segments, which some stores and clients normalise and others keep.
    """
    if is_object_store_uri(uri) != is_object_store_uri(root):
        return False
    if is_object_store_uri(uri):
        prefix = root.rstrip("/") + "/"
        return uri.startswith(prefix) and not {".", "..", ""} & set(uri[len(prefix) :].split("/"))
    path = Path(uri).expanduser()
    if path.name in ("", ".", ".."):
        return False
    candidate, folder = path.parent.resolve() / path.name, Path(root).expanduser().resolve()
    return candidate != folder and candidate.is_relative_to(folder)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary name and rename; the folder is made on the first file that needs it.

    The temporary name is unique per process and thread, so concurrent writers never share one.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        try:
            handle = temporary.open("wb")
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = temporary.open("wb")
        with handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException as error:  # a kill (KeyboardInterrupt) too: no temporary file stays behind
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise disk_full(path.parent) from error
        raise
