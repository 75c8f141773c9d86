"""The evaluation's report: markdown tables (mode x metric, per size bucket, region sources) and a recall@k plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from components.evaluation.ground_truth import NAMED, UNNAMED
from components.evaluation.metrics import ALL, SIZE_BUCKETS, EvalResult
from components.evaluation.regions import COVER_IOU
from schemas.results import RegionSourceReport

TABLE_METRICS = ("R@1", "R@5", "R@10", "R@50", "P@10", "AP")
CAPTION_METRICS = ("R@1", "R@5", "R@10")
REGION_METRICS = ("P@5", "R@5", "AP")


def _cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def bucket_table(result: EvalResult, bucket: str) -> str:
    """Category retrieval for one size bucket: a row per mode (AP averaged over categories = mAP)."""
    rows = []
    for mode, groups in result.scores.items():
        scores = groups.get("category", {}).get(bucket)
        if scores is None:
            continue
        rows.append([mode, str(scores.queries), *(_cell(scores.mean(m)) for m in TABLE_METRICS)])
    header = ["mode", "categories", *[("mAP" if m == "AP" else m) for m in TABLE_METRICS]]
    return _table(header, rows)


def caption_table(result: EvalResult) -> str:
    rows = []
    for mode, groups in result.scores.items():
        scores = groups.get("caption", {}).get(ALL)
        if scores is not None:
            rows.append([mode, str(scores.queries), *(_cell(scores.mean(m)) for m in CAPTION_METRICS)])
    return _table(["mode", "captions", *CAPTION_METRICS], rows) if rows else "_no caption queries_\n"


def settings_table(results: Sequence[EvalResult], mode: str) -> str:
    """One row per index setting (padding, max_detections): how each changes the headline numbers."""
    rows = [
        [
            r.setting,
            _cell(r.mean(mode, "category", "small", "R@5")),
            _cell(r.mean(mode, "category", ALL, "R@5")),
            _cell(r.mean(mode, "category", ALL, "AP")),
            _cell(r.mean(mode, "caption", ALL, "R@5")),
        ]
        for r in results
    ]
    return _table(["index setting", "small R@5", "all R@5", "all mAP", "caption R@5"], rows)


def region_scores_table(reports: Sequence[RegionSourceReport]) -> str:
    """A row per size and region source: P@5, R@5, mAP and the objects its regions cover, named beside unnamed."""
    header = ["objects", "region source"]
    for metric in (*REGION_METRICS, "covered"):
        header += [f"{'mAP' if metric == 'AP' else metric} {group}" for group in (NAMED, UNNAMED)]
    rows = []
    for bucket in SIZE_BUCKETS:
        for report in reports:
            cells = [bucket, report.name]
            for metric in REGION_METRICS:
                cells += [
                    _cell(report.means.get(group, {}).get(bucket, {}).get(metric, math.nan))
                    for group in (NAMED, UNNAMED)
                ]
            cells += [_cell(report.covered.get(group, {}).get(bucket, math.nan)) for group in (NAMED, UNNAMED)]
            rows.append(cells)
    return _table(header, rows)


def region_cost_table(reports: Sequence[RegionSourceReport]) -> str:
    """What each source's index cost, per 1,000 photos: index time, crop and vector rows, disk."""
    rows = [
        [
            report.name,
            f"{report.per_thousand_photos(report.index_seconds):.0f}",
            f"{report.per_thousand_photos(report.crops):.0f}",
            f"{report.per_thousand_photos(report.vectors):.0f}",
            f"{report.per_thousand_photos(report.disk_bytes) / 1e6:.1f}",
        ]
        for report in reports
    ]
    header = ["region source", "index s", "crop rows", "vector rows", "disk MB"]
    return _table([header[0], *(f"{name} / 1,000 photos" for name in header[1:])], rows)


def query_counts(reports: Sequence[RegionSourceReport]) -> str:
    """How many sized queries each cell averages: the same for every source (one set of queries)."""
    counts = reports[0].queries if reports else {}
    return "; ".join(
        f"{group}: " + ", ".join(f"{counts[group].get(bucket, 0)} {bucket}" for bucket in SIZE_BUCKETS)
        for group in (NAMED, UNNAMED)
        if group in counts
    )


def region_section(reports: Sequence[RegionSourceReport], unknown_classes: Sequence[str]) -> str:
    """The region-source comparison of `--unknown-classes`: scores by size, named beside unnamed, then cost."""
    parts = [
        "## Classes the detector cannot name, per region source\n",
        f"- unknown to the detector: {', '.join(unknown_classes)} (its boxes of them dropped before crops are cut)",
        "- queries 'a small / medium-sized / large <class>', vector search over whole photos and crops, one hit "
        "per photo; each scored in its size's bucket (photos whose largest such object is of another size are "
        f"left out of its ranking); queries per cell: {query_counts(reports)}",
        f"- covered: share of the objects of that size (each object its own) that a region of the index, the whole "
        f"photo or a crop, overlaps at IoU >= {COVER_IOU:g}: a search can only find by its crop what was cut out",
        "",
        region_scores_table(reports),
        region_cost_table(reports),
    ]
    return "\n".join(parts)


def markdown_report(title: str, results: Sequence[EvalResult], notes: Sequence[str] = (), lead: str = "") -> str:
    """The report; `lead` (the region-source comparison, when asked for) comes first, under the notes."""
    first = results[0]
    parts = [f"# {title}\n", *(f"- {note}" for note in notes), ""]
    if lead:
        parts.append(lead)
    parts.append(f"## Category retrieval ({first.setting})\n")
    for bucket in (ALL, *SIZE_BUCKETS):
        parts += [f"### {bucket} objects\n", bucket_table(first, bucket)]
    parts += ["## Caption retrieval (text to image)\n", caption_table(first)]
    if len(results) > 1:
        parts += ["## Index settings compared (whole + crops)\n", settings_table(results, "whole + crops")]
    return "\n".join(parts)


def recall_plot(result: EvalResult, path: Path) -> Path:
    """Recall@k against k, one panel per size bucket, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = (ALL, *SIZE_BUCKETS)
    figure, axes = plt.subplots(1, len(buckets), figsize=(4 * len(buckets), 3.6), sharey=True)
    for axis, bucket in zip(axes, buckets, strict=True):
        for mode, groups in result.scores.items():
            scores = groups.get("category", {}).get(bucket)
            if scores is None:
                continue
            ks = sorted(int(name[2:]) for name in scores.values if name.startswith("R@"))
            axis.plot(ks, [scores.mean(f"R@{k}") for k in ks], marker="o", markersize=3, label=mode)
        axis.set_title(f"{bucket} objects")
        axis.set_xscale("log")
        axis.set_xlabel("k")
        axis.grid(True, alpha=0.3)
    axes[0].set_ylabel("recall@k (mean over categories)")
    axes[0].set_ylim(0, 1.02)
    axes[-1].legend(loc="lower right", fontsize=8)
    figure.suptitle(f"Category retrieval: {result.setting}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
