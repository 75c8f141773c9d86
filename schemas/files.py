"""Small, cacheable descriptions of files on disk.

Cached Prefect tasks return these instead of bytes: a path plus what is needed to prove the
file is still the one that was produced (a cache hit does not check that by itself).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class LocalFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: Path
    num_bytes: int
    sha256: str
    mtime_ns: int


class ExtractedFolder(BaseModel):
    """A folder unpacked from an archive: how many files it held and their total size."""

    model_config = ConfigDict(frozen=True)

    path: Path
    num_files: int
    num_bytes: int


class ListedFiles(BaseModel):
    """The photos found under a folder, in a stable order, and how many other files were passed over."""

    model_config = ConfigDict(frozen=True)

    images: list[Path]
    ignored: dict[str, int] = Field(
        default_factory=dict, description="suffix ('' for none) -> files with it that are not photos"
    )
    links_out: list[Path] = Field(
        default_factory=list, description="links to files outside the folder, left out (deployed runs only)"
    )
