"""Region sources compared on classes the detector can and cannot name (`cropsearch eval --unknown-classes`).

A crop index finds only what its region sources propose, and a closed-vocabulary detector proposes
only what it has a name for. To measure that on ground truth, the evaluation hides some classes
from the detector: its boxes of them are dropped before crops are cut (`DetectionSettings.classes`
keeps the rest), as a COCO detector drops what it cannot name. The same photos are then indexed
once per region source, and each index is asked for every class at every size it comes in ("a
small red triangle"), scored for the named and the unnamed classes apart, with what the index cost
and which objects its regions cover at all: a region source can only help a search for an object
it cut out (`region_coverage`).

A region source is the index settings that make its regions, so a new one (tiles, proposals, an
open-vocabulary detector) is one more `RegionSource` in `REGION_SOURCES` and its name in
`schemas.params.RegionSourceName`; the flow, the scores and the report take it as it comes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from components.evaluation.ground_truth import NAMED, UNNAMED, Instance
from components.evaluation.metrics import SIZE_BUCKETS, EvalResult, SearchMode, means
from components.evaluation.synthetic import size_bucket
from components.regions.region import box_iou
from components.store.database import Database
from components.store.reader import StoreReader
from schemas.results import RegionSourceReport
from schemas.settings import PROPOSALS_DEFAULT


@dataclass(frozen=True)
class RegionSource:
    """One way to make an index's regions: its name on the command line, in the report, and its index settings."""

    key: str
    name: str
    # `IndexParams` flat fields laid over the evaluation's own (detector, embedder, padding, hidden classes...).
    index: Mapping[str, object] = field(default_factory=dict)


REGION_SOURCES = (
    # No boxes asked for: the detector never runs, and each photo is its one vector.
    RegionSource("whole", "whole photos only", {"max_detections": 0, "proposals": 0}),
    RegionSource("detector", "whole photos + detector crops", {"proposals": 0}),
    # What `cropsearch index --proposals 0 --tiles 2,3` makes: the detector's crops stay, so the named
    # classes show whether tiles crowd them out of the top hits, and the unnamed ones what tiles add.
    RegionSource("tiles", "whole photos + detector crops + tiles 2,3", {"proposals": 0, "tiles": [2, 3]}),
    # What `cropsearch index` makes by default, beside the detector's crops for the same reason.
    RegionSource(
        "proposals", f"whole photos + detector crops + proposals {PROPOSALS_DEFAULT}", {"proposals": PROPOSALS_DEFAULT}
    ),
)

# How the comparison searches each index: as `cropsearch query --mode vector` does, whole photos and
# crops, one hit per photo. Vectors alone, because words (text, hybrid) would search the detector's
# class names, which an unnamed class lacks by definition: this measures what the regions find.
REGION_SEARCH = SearchMode("whole + crops, vector", "both")
# An object is covered when a region's box overlaps its own this much (COCO's usual match for a detection).
COVER_IOU = 0.5

Box = tuple[float, float, float, float]


def region_sources(keys: Sequence[str]) -> list[RegionSource]:
    """The sources `--region-sources` names, in its order."""
    by_key = {source.key: source for source in REGION_SOURCES}
    unknown = [key for key in keys if key not in by_key]
    if unknown:
        raise ValueError(f"--region-sources: unknown {unknown}; known: {', '.join(by_key)}")
    return [by_key[key] for key in keys]


def classes_kept(detector_names: Iterable[str], unknown: Sequence[str]) -> list[str]:
    """The detector's classes less the unknown ones, in the detector's order: what `DetectionSettings.classes` keeps.

    An unknown name the detector does not have is a typo, not a class to hide: it fails, listing the
    names it has. Hiding every class is refused too: an empty keep-list keeps every class.
    """
    names = list(dict.fromkeys(detector_names))
    missing = [name for name in unknown if name not in names]
    if missing:
        raise ValueError(f"--unknown-classes: {missing} are not classes of the detector; it has: {', '.join(names)}")
    kept = [name for name in names if name not in unknown]
    if not kept:
        raise ValueError("--unknown-classes names every class of the detector: its crops would all be gone")
    return kept


def hidden_tag(unknown: Sequence[str]) -> str:
    """A folder-name tag for the hidden classes: 'red-triangle', or a short hash when they are many."""
    tag = "+".join(re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") for name in unknown)
    if len(tag) <= 60:
        return tag
    return f"{len(unknown)}-classes-" + hashlib.sha256("\n".join(unknown).encode()).hexdigest()[:12]


def folder_bytes(path: Path) -> int:
    """Bytes of the files under `path` (0 when it does not exist)."""
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file()) if path.exists() else 0


def index_footprint(db_uri: str, crops_folder: Path) -> dict[str, int]:
    """Photos, crops and vectors of a local index, and the bytes of its database and crop files."""
    counts = Database(db_uri).counts()
    return {
        "photos": counts["images"],
        "crops": counts["crops"],
        "vectors": counts["embeddings"],
        "disk_bytes": folder_bytes(Path(db_uri)) + folder_bytes(crops_folder),
    }


def index_regions(db_uri: str, source_name: str) -> dict[str, list[Box]]:
    """Photo file name -> the boxes of every region the index embeds from it: the whole photo and its crops.

    A crop at or above `--whole-frame-area` has no vector of its own, but the whole photo's box then
    covers what it would have.
    """
    store = StoreReader(db_uri)
    ids = [image_id for ids in store.image_ids_by_uri(source_name).values() for image_id in ids]
    regions: dict[str, list[Box]] = {}
    for image_id, image in store.images_by_id(ids).items():
        boxes = regions.setdefault(Path(image.uri).name, [])
        boxes.append((0.0, 0.0, float(image.width), float(image.height)))
        boxes += [(crop.x1, crop.y1, crop.x2, crop.y2) for crop in store.crops_of_image(image_id)]
    return regions


def region_coverage(
    regions: Mapping[str, Sequence[Box]], instances: Iterable[Instance], named: set[str]
) -> dict[str, dict[str, float]]:
    """Share of the objects that some region of their photo covers (IoU >= `COVER_IOU`), per group and own size.

    Unlike the queries' buckets (a photo's largest object of the class), each object counts in its own size.
    """
    found: dict[str, dict[str, list[bool]]] = {}
    for instance in instances:
        if instance.file_name not in regions:
            continue
        group = NAMED if instance.class_name in named else UNNAMED
        covered = any(box_iou(instance.box, box) >= COVER_IOU for box in regions[instance.file_name])
        found.setdefault(group, {}).setdefault(size_bucket(instance.area), []).append(covered)
    return {
        group: {bucket: sum(flags) / len(flags) for bucket, flags in buckets.items()}
        for group, buckets in found.items()
    }


def region_report(
    source: RegionSource,
    index_seconds: float,
    footprint: Mapping[str, int],
    result: EvalResult,
    coverage: dict[str, dict[str, float]],
) -> RegionSourceReport:
    """One source's cost and its sized queries' scores (`REGION_SEARCH`), per named / unnamed group and size."""
    scored = result.scores.get(REGION_SEARCH.name, {})
    return RegionSourceReport(
        source=source.key,
        name=source.name,
        index_seconds=index_seconds,
        means=means(result).get(REGION_SEARCH.name, {}),
        queries={
            group: {bucket: scored[group][bucket].queries for bucket in SIZE_BUCKETS if bucket in scored[group]}
            for group in (NAMED, UNNAMED)
            if group in scored
        },
        covered=coverage,
        **footprint,
    )
