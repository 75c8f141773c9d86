"""What every benchmark prints: the machine it ran on (CPU named, with its instruction sets) and a table.

Figures from two machines are never comparable blind: bf16 speeds, and which precision `auto`
picks, differ between CPUs with AMX, with AVX-512 BF16 and with AVX2 alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np


def machine() -> dict[str, Any]:
    """The machine and the code a benchmark ran on: what every table of figures is headed by."""
    import torch

    from components.models.devices import cpu_features, pick_precision

    cpu = cpu_features()
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu.model,
        "cpu_features": cpu.describe(),
        "cpu_amx": cpu.amx,
        "cpu_avx512_bf16": cpu.avx512_bf16,
        "cpu_avx512": cpu.avx512,
        "cpu_avx2": cpu.avx2,
        "cpu_bf16": cpu.computes_bf16,
        "auto_precision_on_cpu": pick_precision("auto", "cpu", cpu),
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": _commit(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _commit() -> str:
    """The checkout's commit, marked `+changes` when files differ from it (figures of uncommitted code)."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine_header(facts: dict[str, Any]) -> str:
    """One line naming the machine: CPU and instruction sets, cores, memory, auto's CPU precision, GPU."""
    return (
        f"machine: {facts['cpu_features']}; {facts['cores']} cores, {facts['memory_gib']} GiB; "
        f"precision auto on this CPU: {facts['auto_precision_on_cpu']}; GPU: {facts['gpu'] or 'none'}; "
        f"torch {facts['torch']}"
    )


@dataclass
class Row:
    measure: str
    value: str
    target: str = ""
    met: bool | None = None


def write_figures(work: Path, benchmark: str, figures: dict[str, Any], rows: list[Row]) -> Path:
    """Every figure of a run, and its table, as `<work>/<benchmark>-<time>.json` (`bench.publish` reads these)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out = work / f"{benchmark}-{stamp}.json"
    payload = {"benchmark": benchmark, **figures, "table": [vars(row) for row in rows]}
    out.write_text(json.dumps(payload, indent=2, default=str))
    return out


def add_publishing_options(parser: argparse.ArgumentParser, repo: Path, document: str) -> None:
    """`--publish` (render a saved JSON instead of measuring), `--figures` (where a run's JSON goes), `--document`."""
    parser.add_argument("--publish", type=Path, default=None, help="render this saved JSON instead of measuring")
    parser.add_argument("--figures", type=Path, default=repo / "docs" / "bench", help="where the JSON goes")
    parser.add_argument("--document", type=Path, default=repo / "docs" / document)


def saved_or_measured(
    args: argparse.Namespace,
    benchmark: str,
    measure: Callable[[], dict[str, Any]],
    rows_of: Callable[[dict[str, Any]], list[Row]],
) -> tuple[Path, dict[str, Any]]:
    """The figures of the JSON `--publish` names, or of a run measured now and written under `--figures`;
    printed, with the machine they were measured on."""
    if args.publish:
        path, figures = args.publish, json.loads(args.publish.read_text())
    else:
        figures = measure()
        args.figures.mkdir(parents=True, exist_ok=True)
        path = write_figures(args.figures, benchmark, figures, rows_of(figures))
        print(f"wrote {path}")
    print(machine_header(figures["machine"]))
    print(render(rows_of(figures)))
    return path, figures


def publish_between_markers(document: Path, start: str, end: str, heading: str, body: str) -> None:
    """Replace what lies between the markers of `document` with `body` (appended under `heading` the first time).

    A page's generated report lives between two markers: the figures stay in one place, the JSON.
    """
    text = document.read_text()
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n## {heading}\n\n" + block + "\n"
    document.write_text(text)


def render(rows: list[Row]) -> str:
    marks = {True: "yes", False: "NO", None: ""}
    cells = [("measure", "value", "target", "met")] + [(r.measure, r.value, r.target, marks[r.met]) for r in rows]
    widths = [max(len(line[column]) for line in cells) for column in range(4)]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50 and p95 in milliseconds of timings in seconds, and how many there were."""
    milliseconds = np.array(seconds) * 1000
    return {
        "p50": float(np.percentile(milliseconds, 50)),
        "p95": float(np.percentile(milliseconds, 95)),
        "n": len(seconds),
    }
