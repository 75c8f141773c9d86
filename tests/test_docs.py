"""The tests the trust model and the search page's security section name exist: a guarantee points at its check.

A test renamed or removed would leave its guarantee pointing at nothing while the docs still read
as checked; this fails instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ("docs/trust-model.md", "docs/serve.md")


def defined_tests() -> set[str]:
    return {name for path in (REPO / "tests").rglob("*.py") for name in re.findall(r"def (test_\w+)", path.read_text())}


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_test_a_guarantee_names_exists(document: str) -> None:
    text = (REPO / document).read_text()
    named = set(re.findall(r"\b(test_\w+)\b(?!\.py)", text))
    files = set(re.findall(r"\b((?:tests/)?[\w/]*test_\w+\.py)\b", text))
    assert named, f"{document} names no test"
    unknown = sorted(named - defined_tests())
    assert not unknown, f"{document} names tests that do not exist: {unknown}"
    missing = [name for name in files if not (REPO / name).is_file() and not (REPO / "tests" / name).is_file()]
    assert not missing, f"{document} names test files that do not exist: {missing}"
    # `file.py::test_name`: the test is in that file (a test moved to another file leaves the doc pointing wrong).
    for file, test in re.findall(r"\b((?:tests/)?[\w/]*test_\w+\.py)::(test_\w+)", text):
        path = REPO / file if (REPO / file).is_file() else REPO / "tests" / file
        assert f"def {test}(" in path.read_text(), f"{document}: {file} has no {test}"
