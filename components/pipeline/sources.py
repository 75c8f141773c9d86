"""Getting images onto local disk: resumable downloads, safe unzip, stable listing, hashing."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import uuid
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import urljoin, urlparse

import requests
from tqdm import tqdm

from components.errors import InterruptedDownload, SourceError, UnsafeArchiveError
from components.pipeline.formats import decodable_suffixes
from schemas.files import ExtractedFolder, ListedFiles, LocalFile

logger = logging.getLogger(__name__)

SourceKind = Literal["url", "zip", "folder"]
_READ_CHUNK = 1 << 20
# Small network reads: an interrupted transfer loses at most the block it was reading.
_NETWORK_CHUNK = 1 << 16


def classify_source(source: str) -> SourceKind:
    """Say what kind of source a string names, failing clearly on a path that is not there."""
    if urlparse(source).scheme in ("http", "https"):
        return "url"
    path = Path(source).expanduser()
    if path.is_dir():
        return "folder"
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise SourceError(f"source {source!r} is a file but not a zip archive")
        return "zip"
    raise SourceError(f"source {source!r} does not exist (expected an http(s) URL, a .zip file or a folder)")


def hash_file(path: Path, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file's bytes, computed in one pass."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with path.open("rb") as handle:
        while block := handle.read(_READ_CHUNK):
            for hasher in hashers.values():
                hasher.update(block)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def describe_file(path: Path, sha256: str | None = None) -> LocalFile:
    info = path.stat()
    digest = sha256 or hash_file(path)["sha256"]
    return LocalFile(path=path.resolve(), num_bytes=info.st_size, sha256=digest, mtime_ns=info.st_mtime_ns)


def is_unchanged(record: LocalFile) -> bool:
    """True when the file a record describes is still there with the same bytes."""
    path = Path(record.path)
    if not path.is_file():
        return False
    info = path.stat()
    if info.st_size != record.num_bytes:
        return False
    # Same size and mtime: trust it without re-reading; otherwise hash to be sure.
    return info.st_mtime_ns == record.mtime_ns or hash_file(path)["sha256"] == record.sha256


def _network_failure(error: requests.RequestException, timeout_seconds: float) -> str:
    """One readable clause for what went wrong, instead of urllib3's nested repr."""
    text = str(error)
    if isinstance(error, requests.Timeout):
        return f"no answer within {timeout_seconds:g} s"
    if "NameResolutionError" in text or "Name or service not known" in text:
        return "its host name does not resolve (offline?)"
    if "Connection refused" in text:
        return "connection refused"
    return f"{type(error).__name__}: {text}"


def check_url_reachable(url: str, timeout_seconds: float = 5.0) -> None:
    """Fail fast, naming the URL, when the host cannot be reached (e.g. offline)."""
    try:
        # Redirects are not followed here: the download vets each hop's host before asking it.
        response = requests.head(url, timeout=timeout_seconds, allow_redirects=False)
    except requests.RequestException as error:
        raise SourceError(f"cannot reach {url}: {_network_failure(error, timeout_seconds)}") from error
    if response.status_code >= 400:
        raise SourceError(f"cannot download {url}: HTTP {response.status_code}")


def download(
    url: str,
    destination: Path,
    checksum: str | None = None,
    timeout_seconds: float = 30.0,
    show_progress: bool = False,
    check_url: Callable[[str], None] | None = None,
) -> LocalFile:
    """Stream `url` to `destination`, resuming a previous `.part` with an HTTP Range request.

    The file appears at `destination` only once complete and verified (size, and `checksum`
    given as 'md5:<hex>' or 'sha256:<hex>'), beside a note of where it came from. An existing file
    is reused only with that note (cropsearch wrote it, from this URL, and it is unchanged), and is
    never deleted otherwise. An interrupted transfer raises `InterruptedDownload` and keeps the
    `.part`, so the next call resumes where it stopped. `check_url` vets the URL and every redirect
    (deployed runs: allowed hosts only).
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    if destination.is_file():
        return _verified(_written_by_us(destination, url), url, checksum)

    already = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={already}-"} if already else {}
    if already:
        logger.info("resuming download of %s at byte %d", url, already)
    try:
        with _get(url, headers, timeout_seconds, check_url) as response:
            if response.status_code == 416:  # the .part already holds every byte
                expected_total = already
            else:
                if response.status_code not in (200, 206):
                    raise SourceError(f"cannot download {url}: HTTP {response.status_code}")
                if response.status_code == 200:
                    already = 0  # the server ignored Range: start over
                expected_total = _expected_total(response, already)
                _write_body(response, partial, already, expected_total, url, show_progress)
    except requests.RequestException as error:
        got = partial.stat().st_size if partial.exists() else 0
        raise InterruptedDownload(
            f"download of {url} interrupted after {got} bytes ({type(error).__name__}); run again to resume"
        ) from error

    actual_size = partial.stat().st_size
    if expected_total is not None and actual_size != expected_total:
        raise InterruptedDownload(
            f"download of {url} is incomplete: {actual_size} of {expected_total} bytes; run again to resume"
        )
    record = _verified(partial, url, checksum)
    _provenance(destination).write_text(json.dumps({"url": url, "sha256": record.sha256}))
    os.replace(partial, destination)
    return describe_file(destination, sha256=record.sha256)


_MAX_REDIRECTS = 5


def _get(
    url: str, headers: dict[str, str], timeout_seconds: float, check_url: Callable[[str], None] | None
) -> requests.Response:
    """GET following redirects by hand, so that each hop's host is vetted before it is asked."""
    for _ in range(_MAX_REDIRECTS + 1):
        if check_url is not None:
            check_url(url)
        response = requests.get(url, headers=headers, stream=True, timeout=timeout_seconds, allow_redirects=False)
        if not response.is_redirect:
            return response
        response.close()
        url = urljoin(url, response.headers["Location"])
    raise SourceError(f"download of {url} redirected more than {_MAX_REDIRECTS} times")


def _provenance(destination: Path) -> Path:
    """The note cropsearch writes beside each finished download: the URL it came from and its sha256."""
    return destination.with_name(destination.name + ".cropsearch.json")


def _written_by_us(destination: Path, url: str) -> Path:
    """`destination`, if cropsearch downloaded it from `url` and it is unchanged; else a SourceError."""
    try:
        note = json.loads(_provenance(destination).read_text())
    except (OSError, ValueError):
        note = {}
    if note.get("url") != url or hash_file(destination)["sha256"] != note.get("sha256"):
        raise SourceError(
            f"{destination} exists but is not the file cropsearch downloaded from {url} (or it changed since); "
            "it is left as it is: move it away to download again"
        )
    return destination


def _expected_total(response: requests.Response, already: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return already + int(length) if length is not None else None


def _write_body(
    response: requests.Response, partial: Path, already: int, total: int | None, url: str, show_progress: bool
) -> None:
    mode = "ab" if already else "wb"
    with (
        partial.open(mode) as handle,
        tqdm(
            total=total,
            initial=already,
            unit="B",
            unit_scale=True,
            desc=f"download {Path(urlparse(url).path).name}",
            disable=not show_progress,
        ) as bar,
    ):
        for block in response.iter_content(chunk_size=_NETWORK_CHUNK):
            handle.write(block)
            bar.update(len(block))


def _verified(path: Path, url: str, checksum: str | None) -> LocalFile:
    algorithm, _, expected = (checksum or "").partition(":")
    digests = hash_file(path, tuple({"sha256", algorithm} - {""}))
    if checksum and digests[algorithm] != expected:
        path.unlink()  # only ever a file cropsearch downloaded (see `download`)
        _provenance(path).unlink(missing_ok=True)
        raise SourceError(
            f"checksum mismatch for {url}: expected {algorithm} {expected}, got {digests[algorithm]}; "
            f"the corrupt file was removed"
        )
    return describe_file(path, sha256=digests["sha256"])


def _check_entry_is_safe(info: zipfile.ZipInfo, archive: Path) -> None:
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    is_symlink = stat.S_ISLNK(info.external_attr >> 16)
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts or is_symlink:
        kind = "a symlink" if is_symlink else "a path outside the target folder"
        raise UnsafeArchiveError(f"{archive}: refusing entry {name!r}: {kind}")


# COCO val2017 unzips to 0.8 GB, train2017 to 18 GB; photos barely compress (ratio ~1).
MAX_UNZIPPED_BYTES = 64 * 1024**3
MAX_COMPRESSION_RATIO = 100
MAX_ENTRIES = 1_000_000  # COCO train2017 holds 118,287
# Small entries (text, thumbnails) may compress well on their own; the whole archive's ratio
# bounds what many of them add up to (300 entries of 1 MiB of zeros made a 330 KB zip of 301 MB).
_RATIO_CHECKED_ABOVE = 64 * 1024


def _check_sizes(entries: list[zipfile.ZipInfo], archive: Path, destination: Path, max_bytes: int) -> None:
    """Refuse zip bombs and archives that cannot fit, before writing a byte.

    zipfile never inflates an entry past its declared size, so the declared sizes bound what lands on disk.
    """
    if len(entries) > MAX_ENTRIES:
        raise SourceError(f"{archive} holds {len(entries):,} entries, over the limit of {MAX_ENTRIES:,}")
    for info in entries:
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size > _RATIO_CHECKED_ABOVE and ratio > MAX_COMPRESSION_RATIO:
            raise SourceError(
                f"{archive}: entry {info.filename!r} inflates {ratio:.0f}x ({info.file_size:,} bytes) — "
                f"a zip bomb? refusing archives compressed more than {MAX_COMPRESSION_RATIO}x"
            )
    total = sum(info.file_size for info in entries)
    whole_ratio = total / max(1, archive.stat().st_size)
    if total > _RATIO_CHECKED_ABOVE and whole_ratio > MAX_COMPRESSION_RATIO:
        raise SourceError(
            f"{archive} inflates {whole_ratio:.0f}x as a whole ({total:,} bytes from {len(entries):,} entries) — "
            f"a zip bomb? refusing archives compressed more than {MAX_COMPRESSION_RATIO}x"
        )
    if total > max_bytes:
        raise SourceError(f"{archive} would unzip to {total:,} bytes, over the limit of {max_bytes:,}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(destination.parent).free
    if total > free:
        raise SourceError(f"{archive} needs {total:,} bytes to unzip; {destination.parent} has {free:,} free")


def extract_zip(archive: Path, destination: Path, max_bytes: int = MAX_UNZIPPED_BYTES) -> ExtractedFolder:
    """Unpack `archive` into `destination`, all or nothing.

    Entries go to a temporary sibling folder that is renamed into place only when every
    entry is out and its CRC checked; an unsafe, oversized or corrupt archive leaves nothing behind.
    """
    staging = destination.with_name(f".{destination.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        with zipfile.ZipFile(archive) as zipped:
            entries = zipped.infolist()
            for info in entries:
                _check_entry_is_safe(info, archive)
            _check_sizes(entries, archive, destination, max_bytes)
            zipped.extractall(staging)
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise SourceError(f"{archive} is not a readable zip archive: {error}") from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = [entry for entry in entries if not entry.is_dir()]
    if destination.exists():
        shutil.rmtree(destination)
    staging.rename(destination)
    return ExtractedFolder(
        path=destination.resolve(), num_files=len(files), num_bytes=sum(entry.file_size for entry in files)
    )


def describe_folder(folder: Path) -> ExtractedFolder:
    """How many files an extracted folder holds and their bytes: what a cached unzip is checked by."""
    # A walk with a stack, not `rglob`: in Python 3.11 that recurses, and fails thousands of levels down.
    count = total = 0
    pending = [folder] if folder.is_dir() else []  # a vanished folder holds nothing: its unzip is redone
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif entry.is_file():
                    count, total = count + 1, total + entry.stat().st_size
    return ExtractedFolder(path=folder.resolve(), num_files=count, num_bytes=total)


def list_images(
    folder: Path, limit: int | None = None, suffixes: frozenset[str] | None = None, links_may_leave: bool = True
) -> ListedFiles:
    """Photo files under `folder` in a stable order, and the other files counted by suffix.

    The walk is iterative (a folder thousands of levels deep is listed, not a RecursionError), does
    not enter linked folders, and leaves hidden files and folders (and macOS's `__MACOSX`) out
    without counting them. `suffixes` defaults to every photo format this install decodes. Without
    `links_may_leave` (deployed runs), links to files outside `folder` go to `links_out` instead.
    """
    wanted = decodable_suffixes() if suffixes is None else suffixes
    inside = folder.resolve()
    found: list[Path] = []
    links_out: list[Path] = []
    ignored: Counter[str] = Counter()
    pending = [folder]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.name.startswith(".") or entry.name == "__MACOSX":
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif entry.is_file():
                    suffix = Path(entry.name).suffix.lower()
                    if suffix not in wanted:
                        ignored[suffix] += 1
                    elif not links_may_leave and entry.is_symlink() and not _resolves_inside(entry.path, inside):
                        links_out.append(Path(entry.path))
                    else:
                        found.append(Path(entry.path))
    found.sort(key=lambda path: path.relative_to(folder).as_posix())
    return ListedFiles(
        images=found[:limit] if limit is not None else found, ignored=dict(ignored), links_out=sorted(links_out)
    )


def _resolves_inside(path: str, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder)
