"""The host's key (`components/host/address.py`): which host may serve a command, from cheap stat calls."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from components.host.address import code_fingerprint, host_address

REPO = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"
BASE = {"HOME": "/home/someone", "PATH": "/usr/bin"}


def test_the_host_key_follows_code_environment_folder_and_nice_value_not_the_terminal(tmp_path: Path) -> None:
    package = tmp_path / "package"
    shutil.copytree(REPO / "schemas", package)
    code = code_fingerprint([package])
    key = host_address(tmp_path, PYTHON, code, BASE, tmp_path, 0).key
    assert host_address(tmp_path, PYTHON, code, {**BASE, "COLUMNS": "80", "PWD": "/x"}, tmp_path, 0).key == key
    assert host_address(tmp_path, PYTHON, code, {**BASE, "PREFECT_API_URL": "http://h"}, tmp_path, 0).key != key
    assert host_address(tmp_path, PYTHON, code, BASE, package, 0).key != key
    assert host_address(tmp_path, "/opt/python", code, BASE, tmp_path, 0).key != key
    assert host_address(tmp_path, PYTHON, code, BASE, tmp_path, 5).key != key  # `nice cropsearch ...`


def test_a_variable_with_another_value_is_another_host(tmp_path: Path) -> None:
    """The same names, one value changed (PREFECT_API_URL to another server): not the same host."""
    here = {**BASE, "PREFECT_API_URL": "http://127.0.0.1:4200/api"}
    there = {**BASE, "PREFECT_API_URL": "http://127.0.0.1:4201/api"}
    assert host_address(tmp_path, PYTHON, "code", here, tmp_path, 0) != host_address(
        tmp_path, PYTHON, "code", there, tmp_path, 0
    )


def test_an_edit_that_keeps_the_size_is_new_code(tmp_path: Path) -> None:
    package = tmp_path / "package"
    shutil.copytree(REPO / "schemas", package)
    code = code_fingerprint([package])
    edited = package / "params.py"
    before = edited.read_text()
    after = before.replace("a", "b", 1)
    assert after != before and len(after.encode()) == len(before.encode())
    written = edited.stat().st_mtime_ns
    edited.write_text(after)
    # An edit a second later, as a person's is: a write within one clock tick can keep the old mtime.
    os.utime(edited, ns=(written, written + 1_000_000_000))
    assert code_fingerprint([package]) != code


def test_settings_files_are_part_of_the_code(tmp_path: Path) -> None:
    package = tmp_path / "package"
    shutil.copytree(REPO / "schemas", package)
    profiles = tmp_path / "profiles.toml"
    without = code_fingerprint([package], [profiles])
    profiles.write_text("[profiles.local]\nPREFECT_API_URL = 'http://127.0.0.1:4200/api'\n")  # what `stack up` saves
    assert code_fingerprint([package], [profiles]) != without
