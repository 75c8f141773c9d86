"""Which files a run may read on the machine that runs it.

A query image named in a deployed run comes from whoever filled in the UI form; it must not be a
way to read the worker's other files (`../../etc/passwd`, a symlink out of the folder).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from components.errors import CropsearchError


class AccessDenied(CropsearchError):
    """A path outside the folders this run may read."""


def check_inside(path: Path, roots: Sequence[Path], what: str = "query image", use: str = "read") -> Path:
    """`path` resolved (symlinks followed, `..` removed) if it lies inside one of `roots`; otherwise AccessDenied.

    `what` and `use` word the refusal: "<what> '<path>' is outside the folders deployed runs may <use> (...)".
    """
    resolved = path.expanduser().resolve()
    for root in roots:
        if resolved.is_relative_to(root.expanduser().resolve()):
            return resolved
    allowed = ", ".join(str(root) for root in roots) or "none configured"
    raise AccessDenied(f"{what} {str(path)!r} is outside the folders deployed runs may {use} ({allowed})")
