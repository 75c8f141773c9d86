"""An index run's report as rows of a table: what the CLI prints and the index-report artifact shows."""

from __future__ import annotations

from components.pipeline.formats import describe_ignored
from schemas.results import IndexReport


def report_table(report: IndexReport) -> list[dict[str, str]]:
    rows = [
        {"measure": "images seen", "value": str(report.images_seen)},
        {"measure": "images indexed now", "value": str(report.images_new)},
        {"measure": "images already indexed", "value": str(report.images_already_indexed)},
    ]
    # A photo given new regions beyond the detector's (proposals, tiles added or dropped) without detection.
    rows += [{"measure": "images re-cut", "value": str(report.images_recut)}] if report.images_recut else []
    rows += [{"measure": "images removed", "value": str(report.images_removed)}] if report.images_removed else []
    rows += [
        {"measure": "files skipped", "value": str(len(report.skipped))},
        {"measure": "files ignored", "value": describe_ignored(report.ignored) or "0"},
        {"measure": "crops", "value": str(report.crops)},
        {"measure": "crops without a vector", "value": str(report.whole_frame_crops)},  # nearly the whole photo
        {"measure": "embeddings", "value": str(report.embeddings)},
        {"measure": "model batches", "value": str(report.model_batches)},
        {"measure": "detector batches", "value": str(report.detector_batches)},
    ]
    # Measures stay within the width of "images already indexed": the host tests read rows by it.
    rows += [
        {"measure": "embedded, no detection", "value": f"{count} images by {embedder} (added)"}
        for embedder, count in report.images_embedded.items()
    ]
    # Wall-clock stages, one after another: with "other" they add up to the total.
    seconds = {**report.seconds_per_stage, "other": report.seconds_other, "total": report.seconds_total}
    rows += [{"measure": f"seconds: {stage}", "value": f"{secs:.2f}"} for stage, secs in seconds.items()]
    rows += [
        {"measure": f"worker seconds: {stage}", "value": f"{secs:.2f}"} for stage, secs in report.model_seconds.items()
    ]
    # What the models ran on, as decided once for the machine (device, precision, threads, CPU).
    rows += [{"measure": "machine", "value": report.machine.describe()}] if report.machine else []
    rows += [
        {"measure": f"fragments: {table}", "value": f"{before} -> {after} (compacted)"}
        for table, (before, after) in report.fragments.items()
    ]
    rows += [{"measure": "skipped", "value": f"{item.path}: {item.reason}"} for item in report.skipped]
    return rows
