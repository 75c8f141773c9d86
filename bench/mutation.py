"""Mutation check: small faults put into the trust, policy, host, server and store code, each run against its tests.

    python -m bench.mutation                 # make mutants: every mutant of bench/mutants/*.toml (~10 min)
    python -m bench.mutation -k host         # only mutants whose file or name holds "host"
    python -m bench.mutation --publish FILE  # docs/reliability.md from a saved run

A mutant is one exact edit (`find` -> `replace`, the `find` text occurring once in `file`) that
breaks a guarantee the docs make: an allowed-host rule without its dot, a cap checked on a list's
first item only, a socket made for everyone. Each is applied to a copy of the checkout (never to
the checkout itself), its `tests` run there, and the mutant counts as caught when they fail. The
lists are curated, not generated: each mutant stands for a fault someone could plausibly make, and
one found by hand once (issue 40) stays on the list so the test that now catches it keeps doing so.

A survivor is listed with its `harmless` note (why the fault does not weaken a guarantee), or as
a gap. Figures go to docs/bench/mutants-<time>.json and the report between the markers of
docs/reliability.md. Exits 1 when fewer than 90% are caught or an unmutated test set fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.report import machine, machine_header, publish_between_markers, write_figures

REPO = Path(__file__).resolve().parents[1]
MUTANTS = REPO / "bench" / "mutants"
REPORT_START = "<!-- mutation report: written by `python -m bench.mutation`; edits here are overwritten -->"
REPORT_END = "<!-- end of the mutation report -->"
TARGET = 0.9
PYTEST = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    harmless: str = ""


@dataclass
class Outcome:
    name: str
    file: str
    tests: list[str]
    caught: bool
    seconds: float
    harmless: str
    failure: str  # the first failing test's line, where caught


def read_mutants(folder: Path = MUTANTS) -> list[Mutant]:
    """Every mutant of every list, checked: its file exists and its `find` text occurs exactly once."""
    mutants = []
    for listing in sorted(folder.glob("*.toml")):
        for entry in tomllib.loads(listing.read_text())["mutant"]:
            mutant = Mutant(**{**entry, "tests": tuple(entry["tests"])})
            occurrences = (REPO / mutant.file).read_text().count(mutant.find)
            if occurrences != 1 or mutant.find == mutant.replace:
                raise SystemExit(f"{listing.name}: mutant {mutant.name!r}: its find text occurs {occurrences} times")
            if missing := [test for test in mutant.tests if not (REPO / test.split("::")[0]).exists()]:
                raise SystemExit(f"{listing.name}: mutant {mutant.name!r}: no such tests {missing}")
            mutants.append(mutant)
    return mutants


def copy_checkout(target: Path) -> None:
    """The files git knows (tracked, and new ones it does not ignore): the code as it stands, without .venv."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def run_tests(copy: Path, tests: tuple[str, ...], timeout_seconds: float) -> tuple[int, str]:
    """pytest over `tests` in the copy (its own code first on the path); the exit status and its failure line."""
    env = {**os.environ, "PYTHONPATH": str(copy), "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", *PYTEST, *tests],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
        )
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout_seconds:.0f} s"
    failed = next((line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))), "")
    return done.returncode, failed


def try_mutant(copy: Path, mutant: Mutant, timeout_seconds: float) -> Outcome:
    target = copy / mutant.file
    original = target.read_text()
    if original.count(mutant.find) != 1:  # the copy is the code measured: a mutant must change it
        raise SystemExit(f"mutant {mutant.name!r}: its find text is not once in the copy of {mutant.file}")
    target.write_text(original.replace(mutant.find, mutant.replace, 1))
    started = time.perf_counter()
    try:
        status, failure = run_tests(copy, mutant.tests, timeout_seconds)
    finally:
        target.write_text(original)
    # pytest: 1 tests failed, 2 interrupted, 3 internal error, 4 usage; 5 (nothing collected) catches nothing.
    caught = status not in (0, 5)
    return Outcome(
        mutant.name,
        mutant.file,
        list(mutant.tests),
        caught,
        time.perf_counter() - started,
        mutant.harmless,
        failure if caught else "",
    )


def measure(mutants: list[Mutant], timeout_seconds: float) -> dict[str, Any]:
    facts = machine()  # before the copy: its commit is the code measured, whatever the checkout becomes meanwhile
    with tempfile.TemporaryDirectory(prefix="cropsearch-mutants-") as work:
        copy = Path(work)
        copy_checkout(copy)
        for tests in sorted({mutant.tests for mutant in mutants}):
            status, failure = run_tests(copy, tests, timeout_seconds)
            if status != 0:
                raise SystemExit(f"the unmutated tests fail ({' '.join(tests)}): {failure or status}")
        outcomes = []
        for number, mutant in enumerate(mutants, 1):
            outcome = try_mutant(copy, mutant, timeout_seconds)
            print(f"[{number}/{len(mutants)}] {'caught  ' if outcome.caught else 'SURVIVED'} {mutant.name}", flush=True)
            outcomes.append(outcome)
    return {"machine": facts, "target": TARGET, "mutants": [asdict(outcome) for outcome in outcomes]}


def score(figures: dict[str, Any]) -> float:
    outcomes = figures["mutants"]
    return sum(outcome["caught"] for outcome in outcomes) / max(1, len(outcomes))


def render(figures: dict[str, Any]) -> str:
    outcomes = figures["mutants"]
    caught = sum(outcome["caught"] for outcome in outcomes)
    survivors = [outcome for outcome in outcomes if not outcome["caught"]]
    lines = [
        f"Measured {figures['machine']['measured_at']} at {figures['machine']['commit']}; "
        f"{machine_header(figures['machine'])}.",
        "",
        f"**{caught} of {len(outcomes)} mutants caught ({score(figures):.0%}; target {figures['target']:.0%}).**",
        "",
        "| mutant | file | caught by |",
        "|---|---|---|",
        *(f"| {outcome['name']} | `{outcome['file']}` | {_caught_by(outcome)} |" for outcome in outcomes),
    ]
    if survivors:
        lines += ["", "Survivors, and why each is harmless:", ""]
        lines += [f"- {outcome['name']}: {outcome['harmless'] or 'NOT EXPLAINED: a gap'}" for outcome in survivors]
    return "\n".join(lines)


def _caught_by(outcome: dict[str, Any]) -> str:
    """The first failing test, as pytest named it, or SURVIVED."""
    if not outcome["caught"]:
        return "SURVIVED"
    failed = outcome["failure"].removeprefix("FAILED ").removeprefix("ERROR ").split(" - ")[0]
    return failed.replace("|", "\\|") or "(the tests' exit status)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="keyword", default="", help="only mutants whose file or name holds this text")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one test run may take")
    parser.add_argument("--publish", type=Path, default=None, help="render this saved JSON instead of measuring")
    parser.add_argument("--figures", type=Path, default=REPO / "docs" / "bench")
    parser.add_argument("--document", type=Path, default=REPO / "docs" / "reliability.md")
    args = parser.parse_args(argv)
    if args.publish:
        figures = json.loads(args.publish.read_text())
    else:
        chosen = [m for m in read_mutants() if args.keyword in m.file or args.keyword.lower() in m.name.lower()]
        figures = measure(chosen, args.timeout)
        if not args.keyword:  # a partial run is for the inner loop; only the whole list is published
            print(f"wrote {write_figures(args.figures, 'mutants', figures, [])}")
    if not args.keyword:
        publish_between_markers(args.document, REPORT_START, REPORT_END, "The mutation report", render(figures))
    print(render(figures))
    return 0 if score(figures) >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
