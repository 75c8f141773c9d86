"""Crash loop: SIGKILL real `cropsearch index` processes in every stage, run them again, compare with an unbroken run.

    python -m bench.crash_loop --points 20

The source is the synthetic world's scenes as a zip (with a 48 MB file that is not a photo, so
unzipping takes a moment), served from 127.0.0.1 at a throttled rate so a kill can land during
the download. A first, unbroken run is the reference: its own log gives the timeline of the
stages the flow announces (`schemas/stages.py`), and the tables and crop files it leaves are what
every other run must end with.

Each kill point aims at one stage, in turn over every stage the reference passed through (or the
`--stages` given): a moment taken uniformly over that stage's own time in the reference's
timeline, set as the marker that part of the stage starts with plus a delay. Where the kill landed
is read afterwards from the markers the killed run had written. A short stage can end before the
kill comes: that kill is a point like any other, and the stage is aimed at again with half the
delay (at most twice). The loop fails when its kills land in fewer stages than it aimed at. After
each kill the same command runs to completion on the same data folder, and its tables and crop
files must equal the reference's: no rows lost, duplicated, orphaned or extra; no crop file
without its row, no row without its file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import lancedb

from bench.plan import child_environment
from components.evaluation.synthetic import write_world
from components.store.schema import CROPS, EMBEDDINGS, IMAGES
from schemas.params import WORLD_DETECTOR, WORLD_EMBEDDER, WORLD_IMAGE_SIZE
from schemas.stages import INDEX_STAGES, STAGE_MARKER
from tests.http_server import LocalHttpServer

REPO = Path(__file__).resolve().parents[1]
# Where a kill lands when no stage was open: before the first marker (imports, Prefect's API),
# between two stages, after the last one (the report, the API shutting down); or not at all.
START_UP, BETWEEN, WIND_DOWN, NOT_KILLED = "start-up", "between stages", "wind-down", "not killed"
# A file in the zip that is not a photo: 48 MB stored uncompressed (well inside the zip-bomb
# limits), long enough to unzip that a kill can land there; served at 24 MB/s, a 2 s download.
PADDING_BYTES = 48 * 1024 * 1024
DOWNLOAD_BYTES_PER_SECOND = 24 * 1024 * 1024
# The ANN index is built past this many embeddings: the world's 12 scenes have ~200, so every
# run builds it and a kill can land in its build.
VECTOR_INDEX_MIN_ROWS = 50
# Aims again at a stage a kill missed (it ended before the kill came), with half the delay each time.
REAIMS = 2


def index_command(source: str, data_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "flows.cli", "index", "--source", source, "--data-dir", str(data_dir),
        "--detector", str(WORLD_DETECTOR), "--embedder", str(WORLD_EMBEDDER), "--image-size", str(WORLD_IMAGE_SIZE),
        "--chunk-size", "3", "--device", "cpu", "--vector-index-min-rows", str(VECTOR_INDEX_MIN_ROWS),
        "--verbose",  # the stage markers it aims its kills by are Prefect log lines
    ]  # fmt: skip


@dataclass(frozen=True)
class Marker:
    seconds: float  # since the process started, as the loop read the line
    stage: str
    event: str


def markers_in(lines: list[tuple[float, str]]) -> list[Marker]:
    found = ((seconds, STAGE_MARKER.search(line)) for seconds, line in lines)
    return [Marker(seconds, match["stage"], match["event"]) for seconds, match in found if match]


def open_stage_after(markers: list[Marker]) -> str | None:
    """The innermost stage started and not yet finished once these markers are written."""
    open_stages: list[str] = []
    for marker in markers:
        if marker.event == "started":
            open_stages.append(marker.stage)
        elif open_stages and open_stages[-1] == marker.stage:
            open_stages.pop()
    return open_stages[-1] if open_stages else None


def landing(markers: list[Marker], killed: bool) -> str:
    """Where a run stopped, from the markers it wrote before it died."""
    if not killed:
        return NOT_KILLED
    if not markers:
        return START_UP
    stage = open_stage_after(markers)
    if stage is not None:
        return stage
    return WIND_DOWN if markers[-1].stage == INDEX_STAGES[-1] else BETWEEN


@dataclass(frozen=True)
class Aim:
    stage: str  # the stage the run is in from the anchor marker on
    anchor: int  # the kill comes after the run's marker number `anchor` (0-based) ...
    delay: float  # ... plus this many seconds


def aims(markers: list[Marker], points: int, rng: random.Random, stages: list[str] | None = None) -> list[Aim]:
    """`points` kill points over the reference run's timeline, cycling over its stages in the order it met them.

    Between two consecutive markers the run is in one stage (the innermost open one). Each point
    takes a moment uniformly over all of its stage's own time, so nested stages (`download` inside
    `acquire`) and stages met many times (`write`, once per chunk) are aimed at in their own time,
    and is then set as the marker that stretch starts with plus a delay.
    """
    stretches: dict[str, list[tuple[int, float]]] = {}
    for index in range(len(markers) - 1):
        stage = open_stage_after(markers[: index + 1])
        if stage is not None:
            stretches.setdefault(stage, []).append((index, markers[index + 1].seconds - markers[index].seconds))
    unknown = set(stages or []) - set(stretches)
    if unknown:
        raise ValueError(f"stages {sorted(unknown)}: the reference run never spent time in them ({list(stretches)})")
    stages = stages or list(stretches)  # dicts keep the order the run met them in
    chosen = []
    for point in range(points):
        stage = stages[point % len(stages)]
        moment = rng.uniform(0.0, sum(length for _, length in stretches[stage]))
        chosen.append(_stretch_at(stage, stretches[stage], moment))
    return chosen


def _stretch_at(stage: str, stretches: list[tuple[int, float]], moment: float) -> Aim:
    """The kill point `moment` seconds into the stage's own time, counted over its stretches in order."""
    for anchor, length in stretches:
        if moment <= length:
            return Aim(stage, anchor, moment)
        moment -= length
    anchor, length = stretches[-1]
    return Aim(stage, anchor, length)


def _read_run(process: subprocess.Popen[str], started: float, aim: Aim | None) -> list[tuple[float, str]]:
    """Every line the run writes, with when it was read; kill its process group once `aim` is reached."""
    assert process.stdout is not None
    lines, seen = [], 0
    for line in process.stdout:
        lines.append((time.perf_counter() - started, line))
        if aim and STAGE_MARKER.search(line):
            seen += 1
            if seen == aim.anchor + 1:
                time.sleep(aim.delay)
                os.killpg(process.pid, signal.SIGKILL)
                aim = None  # then read what the run had written before it died
    process.wait()
    return lines


def run_index(command: list[str], aim: Aim | None = None, timeout: float = 600) -> tuple[int, list[tuple[float, str]]]:
    """Run the command (its own process group, with its temporary Prefect API); its exit status and timed lines."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=child_environment(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        lines = _read_run(process, started, aim)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
    return process.returncode, lines


def run_to_completion(command: list[str]) -> list[tuple[float, str]]:
    status, lines = run_index(command)
    if status != 0:
        raise RuntimeError(f"index run failed ({status}): {''.join(line for _, line in lines)[-2000:]}")
    return lines


@dataclass(frozen=True)
class DataState:
    """What a finished run left: each table's rows as (key, parent links) tuples, and the crop files."""

    tables: dict[str, list[tuple]]
    crop_uris: list[str]  # the `uri` of every crop row, relative to the crops folder
    crop_files: list[str]  # every file under the crops folder, relative to it


def snapshot(data_dir: Path) -> DataState:
    db = lancedb.connect(str(data_dir / "lancedb"))
    wanted = {IMAGES: ["image_id", "uri"], CROPS: ["crop_id", "image_id"], EMBEDDINGS: ["id", "image_id", "crop_id"]}
    rows = {name: db.open_table(name).to_arrow().to_pylist() for name in wanted}
    crops_folder = data_dir / "crops"

    def comparable(value: object) -> object:  # each run unzips into its own data folder
        return value.removeprefix(f"{data_dir}/") if isinstance(value, str) else value

    return DataState(
        tables={
            name: sorted(tuple(comparable(row[c]) for c in columns) for row in rows[name])
            for name, columns in wanted.items()
        },
        crop_uris=sorted(str(Path(row["uri"]).relative_to(crops_folder)) for row in rows[CROPS]),
        crop_files=sorted(str(path.relative_to(crops_folder)) for path in crops_folder.rglob("*") if path.is_file()),
    )


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


PROBLEMS = (
    "lost", "duplicated", "orphans", "extra",
    "files without a row", "rows without a file", "files unlike the reference", "reruns failed",
)  # fmt: skip


def file_problems(state: DataState, reference: DataState) -> dict[str, int]:
    """Crop files without their row and rows without their file, and files that differ from the reference's."""
    files, uris = set(state.crop_files), set(state.crop_uris)
    return {
        "files without a row": len(files - uris),
        "rows without a file": len(uris - files),
        "files unlike the reference": len(files ^ set(reference.crop_files)),
    }


@dataclass(frozen=True)
class KillPoint:
    """One kill and the run after it: where the kill was aimed and landed, and what the tables then held."""

    aimed_at: str
    killed_during: str
    half_written_crop_files: int  # temporary files the kill left mid-write (the next run must not keep them)
    crop_files_ahead_of_rows: int  # whole crop files the kill left without their rows (their chunk was not written)
    rows_compared: int
    files_compared: int
    found: dict[str, int]  # problems() and file_problems() against the reference, and whether the rerun failed
    rerun_error: str = ""  # the run after the kill failed: its error (the data folder is kept)

    @property
    def survived(self) -> bool:
        return not any(self.found.values())

    @property
    def where(self) -> str:
        return f"aimed at {self.aimed_at}, killed during {self.killed_during}"


@dataclass
class CrashReport:
    stages_asked: int
    points: list[KillPoint] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def total(self, problem: str) -> int:
        return sum(point.found[problem] for point in self.points)

    @property
    def survived(self) -> int:
        return sum(point.survived for point in self.points)

    @property
    def killed_during(self) -> Counter:
        return Counter(point.killed_during for point in self.points)

    @property
    def aimed_at(self) -> Counter:
        return Counter(point.aimed_at for point in self.points)

    @property
    def rows_compared(self) -> int:
        return sum(point.rows_compared for point in self.points)

    @property
    def stages_killed_in(self) -> list[str]:
        return [stage for stage in INDEX_STAGES if self.killed_during[stage]]

    @property
    def stages_covered(self) -> int:
        return len(self.stages_killed_in)


def world_zip(scenes: int) -> bytes:
    """The world's scenes as a zip, with a large file that is not a photo beside them."""
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as folder, zipfile.ZipFile(buffer, "w") as archive:
        write_world(Path(folder), range(3_000_000, 3_000_000 + scenes))
        for path in sorted(Path(folder).glob("*.jpg")):
            archive.write(path, f"scenes/{path.name}")
        archive.writestr(zipfile.ZipInfo("scenes/padding.bin"), random.Random(0).randbytes(PADDING_BYTES))
    return buffer.getvalue()


def crash_loop(
    points: int, work: Path, scenes: int = 12, seed: int = 0, stages: list[str] | None = None
) -> CrashReport:
    """Run `points` kill points aimed in turn at `stages` (default: every stage of the reference run).

    A kill that lands outside its stage (a short stage ended first) is a kill point all the same,
    compared like any other; the loop then aims at that stage again with half the delay, at most
    `REAIMS` times. It fails if the kills landed in fewer distinct stages than it aimed at.
    """
    rng = random.Random(seed)
    server = LocalHttpServer()
    server.files["/scenes.zip"] = world_zip(scenes)
    server.bytes_per_second["/scenes.zip"] = DOWNLOAD_BYTES_PER_SECOND
    source = server.url("/scenes.zip")
    try:
        reference_dir = work / "reference"
        markers = markers_in(run_to_completion(index_command(source, reference_dir)))
        reference = snapshot(reference_dir)
        chosen = aims(markers, points, rng, stages)
        report = CrashReport(stages_asked=len({aim.stage for aim in chosen}))
        for aim in chosen:
            for _ in range(1 + REAIMS):
                point = _kill_and_rerun(source, work / f"point-{len(report.points):03d}", aim, reference)
                report.points.append(point)
                if not point.survived:
                    problems_seen = {name: count for name, count in point.found.items() if count}
                    report.failures.append(
                        f"point {len(report.points) - 1} ({point.where}): {problems_seen} {point.rerun_error}".rstrip()
                    )
                if point.killed_during == aim.stage:
                    break
                aim = Aim(aim.stage, aim.anchor, aim.delay / 2)
    finally:
        server.close()
    if report.stages_covered < report.stages_asked:
        report.failures.append(
            f"kills landed in {report.stages_covered} stages ({', '.join(report.stages_killed_in)}), fewer than the "
            f"{report.stages_asked} aimed at ({', '.join(report.aimed_at)})"
        )
    return report


def _kill_and_rerun(source: str, data_dir: Path, aim: Aim, reference: DataState) -> KillPoint:
    command = index_command(source, data_dir)
    status, lines = run_index(command, aim)
    landed = landing(markers_in(lines), killed=status == -signal.SIGKILL)
    half_written = sum(1 for _ in (data_dir / "crops").rglob(".*.tmp"))
    ahead = _crop_files_ahead_of_rows(data_dir)
    rows = sum(len(rows) for rows in reference.tables.values())
    try:
        run_to_completion(command)
    except RuntimeError as error:  # the run after the kill must finish the work; that it failed is the finding
        found = dict.fromkeys(PROBLEMS, 0) | {"reruns failed": 1}
        last_words = [line for line in str(error).splitlines() if "Error" in line] or [str(error)]
        return KillPoint(aim.stage, landed, half_written, ahead, rows, 0, found, last_words[-1][:300])
    state = snapshot(data_dir)
    found = problems(state.tables, reference.tables) | file_problems(state, reference) | {"reruns failed": 0}
    shutil.rmtree(data_dir)
    return KillPoint(aim.stage, landed, half_written, ahead, rows, len(reference.crop_files), found)


def _crop_files_ahead_of_rows(data_dir: Path) -> int:
    """Crop files on disk that no crop row names yet: the kill came while a chunk's files were being written."""
    files = {path for path in (data_dir / "crops").rglob("*.jpg") if not path.name.startswith(".")}
    if not files:
        return 0
    try:
        crops = lancedb.connect(str(data_dir / "lancedb")).open_table(CROPS).to_arrow().column("uri").to_pylist()
    except (FileNotFoundError, ValueError):  # killed before the first chunk was written: no crops table yet
        crops = []
    return len(files - {Path(uri) for uri in crops})


def print_report(report: CrashReport) -> None:
    print(f"kill points survived: {report.survived} of {len(report.points)}")
    print(f"stages covered: {report.stages_covered} of the {report.stages_asked} aimed at")
    print(*(point.where for point in report.points), sep="\n")
    print(f"aimed at: {dict(report.aimed_at)}")
    print(f"killed during: {dict(report.killed_during)}")
    print(f"crop files a kill left half-written: {sum(point.half_written_crop_files for point in report.points)}")
    print(f"crop files a kill left without their rows: {sum(p.crop_files_ahead_of_rows for p in report.points)}")
    print(f"rows compared: {report.rows_compared}", *(f"{name}: {report.total(name)}" for name in PROBLEMS), sep="  ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--stages", default=None, help="comma-separated stages to aim at (every stage of the run)")
    parser.add_argument("--work", type=Path, default=REPO / "data" / "crash-loop")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    stages = args.stages.split(",") if args.stages else None
    report = crash_loop(args.points, args.work, seed=args.seed, stages=stages)
    print_report(report)
    print(f"seconds: {time.perf_counter() - started:.0f}")
    print(json.dumps(report.failures, indent=1) if report.failures else "no failures")
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
