"""The hostile-input corpus: run parameters an outsider could pass, and files a source could hold.

    python -m bench.hostile

Each input goes to the code that meets it in a real run: run parameters to the checks a
deployed run makes against the operator's policy (`components/ops/trust.py`), zips to the
extraction, files to registration. Every one must be refused, with a message naming what was
refused, and leave nothing behind: no file outside the target folder, no record of a file that is
not a readable photo. `tests/bench/test_hostile.py` runs the corpus; `bench.reliability` puts it
in docs/reliability.md.
"""

from __future__ import annotations

import io
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from components.errors import CropsearchError
from components.ops import trust
from components.pipeline.images import register_images
from components.pipeline.sources import extract_zip
from schemas.params import IndexParams
from schemas.policy import OperatorPolicy


@dataclass(frozen=True)
class Refusal:
    attempt: str
    refused: bool
    how: str  # the error's message, or what was let through


def _policy(root: Path) -> OperatorPolicy:
    for name in ("photos", "data", "models", "queries"):
        (root / name).mkdir(parents=True, exist_ok=True)
    return OperatorPolicy(
        source_roots=[root / "photos"],
        data_roots=[root / "data"],
        model_roots=[root / "models"],
        query_image_roots=[root / "queries"],
        allowed_hosts=["images.cocodataset.org"],
    )


def _parameter_attempts(root: Path) -> dict[str, dict[str, object]]:
    """Run parameters, each with one hostile value; the rest are what the deployment would use."""
    return {
        "source outside the source roots (/etc)": {"source": "/etc"},
        "source climbing out with ../": {"source": str(root / "photos" / ".." / ".." / "etc")},
        "source on a host not allowed (cloud metadata)": {"source": "http://169.254.169.254/latest/meta-data.zip"},
        "source as a file:// URL": {"source": "file:///etc/passwd"},
        "detector as a plug-in (module:callable)": {"detector": "plugin:os:system"},
        "embedder weights outside the model roots": {"embedder": "/root/.cache/evil.pt"},
        "data_dir outside the data roots": {"data_dir": "/tmp/cropsearch-elsewhere"},
        "db_uri on an object store the deployment did not set": {"db_uri": "s3://attacker/db"},
        "detector input size over the operator's cap": {"image_size": 2048},
        "chunk size over the operator's cap": {"chunk_size": 50_000},
    }


def _check_parameters(root: Path, policy: OperatorPolicy, changed: dict[str, object]) -> Refusal:
    base: dict[str, object] = {
        "source": str(root / "photos"),
        "data_dir": root / "data",
        "detector": str(root / "models" / "detector.pt"),
        "embedder": str(root / "models" / "clip"),
    }
    try:
        params = IndexParams(**{**base, **changed})
        trust.check_index_run(params, policy, deployed={})
    except (CropsearchError, ValidationError, ValueError) as error:
        return Refusal("", True, _first_line(error))
    return Refusal("", False, "accepted")


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def _symlink_entry() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("photos/link.jpg")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _zip_attempts() -> dict[str, bytes]:
    return {
        "zip entry climbing out with ../": _zip([("../escaped.jpg", b"x")]),
        "zip entry with an absolute path": _zip([("/tmp/cropsearch-absolute.jpg", b"x")]),
        "zip entry that is a symlink": _zip([(_symlink_entry(), b"/etc/passwd")]),
        "zip bomb (one entry inflating over 100x)": _zip([("photos/zeros.jpg", bytes(64 * 1024 * 1024))]),
        "not a zip, named .zip": b"PK\x03\x04 this is not an archive",
    }


def _check_zip(root: Path, data: bytes) -> Refusal:
    archive, destination = root / "upload.zip", root / "data" / "unzipped"
    archive.write_bytes(data)
    try:
        extract_zip(archive, destination)
    except CropsearchError as error:
        left = [path for path in root.rglob("*") if path.is_file() and path != archive]
        escaped = [path for path in (root / "escaped.jpg", Path("/tmp/cropsearch-absolute.jpg")) if path.exists()]
        if left or escaped:
            return Refusal("", False, f"refused but left {[str(p) for p in left + escaped]}")
        return Refusal("", True, _first_line(error))
    return Refusal("", False, "extracted")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels and holds almost none (a decompression bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _file_attempts() -> dict[str, tuple[str, bytes]]:
    from PIL import Image

    photo = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(photo, format="JPEG")
    return {
        "text file named .jpg": ("notes.jpg", b"not a picture at all"),
        "JPEG cut off after its header": ("cut.jpg", photo.getvalue()[:200]),
        "PNG declaring 40,000 x 40,000 pixels (decompression bomb)": ("bomb.png", _png_header_only(40_000, 40_000)),
        "empty file named .png": ("empty.png", b""),
    }


def _check_file(root: Path, name: str, data: bytes) -> Refusal:
    path = root / name
    path.write_bytes(data)
    records, skipped = register_images([path], "hostile")
    if records:
        return Refusal("", False, "registered as a photo")
    return Refusal("", True, skipped[0].reason.splitlines()[0])


def _first_line(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    return str(error).splitlines()[0]


def hostile_corpus() -> list[Refusal]:
    """Try every input of the corpus, each in a fresh folder; how each was refused (or that it was not)."""
    results: list[Refusal] = []

    def attempt(name: str, trial: Callable[[Path], Refusal]) -> None:
        with tempfile.TemporaryDirectory() as folder:
            got = trial(Path(folder))
        results.append(Refusal(name, got.refused, got.how))

    for name in _parameter_attempts(Path("/")):  # the values depend on the folder each attempt gets
        attempt(name, lambda root, name=name: _check_parameters(root, _policy(root), _parameter_attempts(root)[name]))
    for name, data in _zip_attempts().items():
        attempt(name, lambda root, data=data: (_policy(root), _check_zip(root, data))[1])
    for name, (file_name, data) in _file_attempts().items():
        attempt(name, lambda root, file_name=file_name, data=data: _check_file(root, file_name, data))
    return results


def main() -> None:
    results = hostile_corpus()
    for result in results:
        print(f"{'refused' if result.refused else 'LET THROUGH'}  {result.attempt}: {result.how}")
    refused = sum(result.refused for result in results)
    print(f"refused {refused} of {len(results)}")
    raise SystemExit(0 if refused == len(results) else 1)


if __name__ == "__main__":
    main()
