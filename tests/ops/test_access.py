"""Deployed runs read query images only inside their configured folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.ops.access import AccessDenied, check_inside


def test_files_inside_a_root_are_allowed(tmp_path: Path) -> None:
    root = tmp_path / "query-images"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "cat.jpg").write_bytes(b"x")
    assert check_inside(root / "sub" / "cat.jpg", [root]) == (root / "sub" / "cat.jpg").resolve()


@pytest.mark.parametrize("escape", ["../../etc/passwd", "/etc/passwd", "sub/../../secret.txt"])
def test_paths_that_leave_the_root_are_refused(tmp_path: Path, escape: str) -> None:
    root = tmp_path / "query-images"
    (root / "sub").mkdir(parents=True)
    with pytest.raises(AccessDenied, match="outside the folders deployed runs may read"):
        check_inside(root / escape if not escape.startswith("/") else Path(escape), [root])


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "query-images"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    (root / "innocent.jpg").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(AccessDenied):
        check_inside(root / "innocent.jpg", [root])


def test_no_roots_means_nothing_is_readable(tmp_path: Path) -> None:
    with pytest.raises(AccessDenied, match="none configured"):
        check_inside(tmp_path / "a.jpg", [])


def test_a_sibling_folder_whose_name_starts_like_the_root_is_outside(tmp_path: Path) -> None:
    """`/data` does not hold `/data-private`: paths are compared by their parts, not as text."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data-private").mkdir()
    with pytest.raises(AccessDenied):
        check_inside(tmp_path / "data-private" / "a.jpg", [tmp_path / "data"])
