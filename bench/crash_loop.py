"""Crash loop: SIGKILL a real `cropsearch index` process at random points, run it again, compare with an unbroken run.

    python -m bench.crash_loop --points 20

Each point: a fresh database; the index process (and its temporary Prefect API, one process group)
is killed right after a randomly chosen task-run log line of the reference run's kind (detect, crop,
embed, write: so kills land during each stage and between them), plus a random 0-0.5 s; then the
same command runs to completion. The final tables must equal the unbroken run's: same ids, no
duplicates, no rows missing, no crops or embeddings without their parent image row.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import lancedb

from bench.plan import child_environment
from components.evaluation.synthetic import write_world
from components.store.schema import CROPS, EMBEDDINGS, IMAGES
from schemas.params import WORLD_DETECTOR, WORLD_EMBEDDER, WORLD_IMAGE_SIZE

REPO = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"Task run '(plan_stage|model_stage|write_stage)-")


def index_command(source: Path, data_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "flows.cli", "index", "--source", str(source), "--data-dir", str(data_dir),
        "--detector", str(WORLD_DETECTOR), "--embedder", str(WORLD_EMBEDDER), "--image-size", str(WORLD_IMAGE_SIZE),
        "--chunk-size", "3", "--device", "cpu",
    ]  # fmt: skip


def snapshot(db_uri: str) -> dict[str, list[tuple]]:
    """Each table's rows as sorted (key, parent links) tuples: what must match between runs."""
    db = lancedb.connect(db_uri)
    wanted = {IMAGES: ["image_id", "uri"], CROPS: ["crop_id", "image_id"], EMBEDDINGS: ["id", "image_id", "crop_id"]}
    return {
        table: sorted(tuple(row[c] for c in columns) for row in db.open_table(table).to_arrow().to_pylist())
        for table, columns in wanted.items()
    }


def problems(tables: dict[str, list[tuple]], reference: dict[str, list[tuple]]) -> dict[str, int]:
    """Rows lost and duplicated against the reference, and orphans (crops/embeddings whose parent row is missing)."""
    lost = duplicated = 0
    for table, rows in reference.items():
        got = Counter(tables.get(table, []))
        lost += sum(1 for row in set(rows) if row not in got)
        duplicated += sum(count - 1 for count in got.values())
    images = {row[0] for row in tables.get(IMAGES, [])}
    crops = {row[0] for row in tables.get(CROPS, [])}
    orphans = sum(1 for _, image_id in tables.get(CROPS, []) if image_id not in images)
    orphans += sum(
        1
        for _, image_id, crop_id in tables.get(EMBEDDINGS, [])
        if image_id not in images or (crop_id and crop_id not in crops)
    )
    extra = sum(len(set(tables.get(t, [])) - set(rows)) for t, rows in reference.items())
    return {"lost": lost, "duplicated": duplicated, "orphans": orphans, "extra": extra}


@dataclass
class CrashReport:
    points: int = 0
    killed_during: Counter = field(default_factory=Counter)
    survived: int = 0
    rows_compared: int = 0
    rows_lost: int = 0
    rows_duplicated: int = 0
    orphans: int = 0
    extra_rows: int = 0
    failures: list[str] = field(default_factory=list)


def _run_to_completion(command: list[str]) -> str:
    done = subprocess.run(command, env=child_environment(), cwd=REPO, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"index run failed ({done.returncode}): {(done.stdout + done.stderr)[-2000:]}")
    return done.stdout + done.stderr


def _kill_after(command: list[str], line_number: int, delay: float) -> str:
    """Start the run; SIGKILL its process group `delay` s after its `line_number`-th stage line; return where."""
    process = subprocess.Popen(
        command, env=child_environment(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    seen, stage = 0, "finished"
    assert process.stdout is not None
    for line in process.stdout:
        found = STAGE_LINE.search(line)
        if found:
            seen += 1
            if seen == line_number:
                stage = f"after {found.group(1)}"
                time.sleep(delay)
                break
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return stage if process.returncode == -signal.SIGKILL else "finished"


def crash_loop(points: int, work: Path, scenes: int = 12, seed: int = 0) -> CrashReport:
    rng = random.Random(seed)
    source = work / "scenes"
    if not (source / "annotations.json").is_file():
        write_world(source, range(3_000_000, 3_000_000 + scenes))
    reference_dir = work / "reference"
    log = _run_to_completion(index_command(source, reference_dir))
    stage_lines = len(STAGE_LINE.findall(log))
    reference = snapshot(str(reference_dir / "lancedb"))
    report = CrashReport()
    for point in range(points):
        data_dir = work / f"point-{point:03d}"
        command = index_command(source, data_dir)
        stage = _kill_after(command, rng.randint(1, max(1, stage_lines)), rng.uniform(0.0, 0.5))
        report.killed_during[stage] += 1
        _run_to_completion(command)
        found = problems(snapshot(str(data_dir / "lancedb")), reference)
        report.points += 1
        report.rows_compared += sum(len(rows) for rows in reference.values())
        report.rows_lost += found["lost"]
        report.rows_duplicated += found["duplicated"]
        report.orphans += found["orphans"]
        report.extra_rows += found["extra"]
        if any(found.values()):
            report.failures.append(f"point {point} ({stage}): {found}")
        else:
            report.survived += 1
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--work", type=Path, default=REPO / "data" / "crash-loop")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    report = crash_loop(args.points, args.work, seed=args.seed)
    print(f"kill points survived: {report.survived} of {report.points}")
    print(f"killed: {dict(report.killed_during)}")
    print(f"rows compared: {report.rows_compared}  lost: {report.rows_lost}  duplicated: {report.rows_duplicated}")
    print(f"orphan crops/embeddings: {report.orphans}  extra rows: {report.extra_rows}")
    print(f"seconds: {time.perf_counter() - started:.0f}")
    print(json.dumps(report.failures, indent=1) if report.failures else "no failures")
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
