"""What the flows return: an index run's report, a query's ranked hits, the embedders an index holds."""

from __future__ import annotations

from pydantic import BaseModel, Field

from schemas.machine import MachinePlan
from schemas.records import CropRecord, EmbeddingKind, ImageRecord, SkippedFile
from schemas.settings import Ranking


class IndexReport(BaseModel):
    source: str
    db_uri: str
    index_signature: str
    images_seen: int = 0
    images_new: int = Field(0, description="indexed in this run")
    images_already_indexed: int = Field(0, description="skipped: indexed before with the same models and settings")
    images_recut: int = Field(
        0,
        description="indexed before with the same detector and settings, their regions beyond its boxes (proposals, "
        "tiles) changed: cut again from the stored boxes, with no detection; only new regions embedded",
    )
    images_removed: int = Field(
        0, description="photos that left the folder source: removed with their crops, vectors and crop files"
    )
    skipped: list[SkippedFile] = Field(default_factory=list, description="files not indexed, with the reason")
    ignored: dict[str, int] = Field(
        default_factory=dict, description="files passed over as not photos: suffix ('' for none) -> count"
    )
    crops: int = 0
    whole_frame_crops: int = Field(
        0, description="of the crops, those covering at least --whole-frame-area of their photo: no vector of their own"
    )
    embeddings: int = 0
    images_embedded: dict[str, int] = Field(
        default_factory=dict,
        description="embedder -> already detected images embedded by it alone in this run (an added embedder)",
    )
    model_batches: int = Field(0, description="detector and embedder forward passes run")
    detector_batches: int = Field(0, description="of those, the detector's")
    seconds_per_stage: dict[str, float] = Field(
        default_factory=dict,
        description="wall-clock seconds of the run's stages, one after another ('model work': waiting for the "
        "chunks' models); with `seconds_other` they add up to `seconds_total`",
    )
    seconds_total: float = Field(0.0, description="the run's wall-clock seconds, from its checks to its report")
    model_seconds: dict[str, float] = Field(
        default_factory=dict,
        description="seconds the models computed (detect, embed), added up over every worker and thread: they "
        "overlap each other and the other stages, so they are no share of the total",
    )
    fragments: dict[str, tuple[int, int]] = Field(
        default_factory=dict, description="table -> data fragments before and after the run's compaction"
    )
    machine: MachinePlan | None = Field(
        None, description="the device, precision, threads and detector batch the models ran with, decided once"
    )

    def add_seconds(self, stage: str, seconds: float) -> None:
        self.seconds_per_stage[stage] = self.seconds_per_stage.get(stage, 0.0) + seconds

    @property
    def seconds_other(self) -> float:
        """The run's seconds outside its stages (Prefect's task bookkeeping, logging): never negative."""
        return max(0.0, self.seconds_total - sum(self.seconds_per_stage.values()))


# Scores are shown, and compared with a `min_score`, to this many decimals: a person who pastes a
# hit's shown score back as the cutoff keeps that hit.
SCORE_DECIMALS = 4


def shown_score(score: float) -> float:
    return round(score, SCORE_DECIMALS)


class FoldedHit(BaseModel):
    """A lower-ranked hit on the same parent as a QueryHit, kept under it."""

    score: float
    kind: EmbeddingKind
    crop: CropRecord | None = None


class QueryHit(BaseModel):
    rank: int
    score: float = Field(
        description="vector: cosine similarity of the query and the hit's vector; text: BM25 of the query's words; "
        "hybrid: the reciprocal-rank-fusion score of the two rankings scaled to 0-1 (1: first in both, 0.5: first "
        "in one and absent from the other)"
    )
    kind: EmbeddingKind
    image: ImageRecord = Field(description="the parent photo")
    crop: CropRecord | None = Field(None, description="the crop that matched; none for whole-image hits")
    folded: list[FoldedHit] = Field(default_factory=list, description="other hits on the same parent")


class QueryResult(BaseModel):
    query: str
    mode: Ranking = Field("vector", description="what ranked the hits (what `auto` resolved to)")
    embedder: str | None = Field(None, description="the embedder whose vectors were searched")
    hits: list[QueryHit]
    grid_path: str | None = None


class RegionSourceReport(BaseModel):
    """One region source compared by `cropsearch eval --unknown-classes`: its index's cost, and what it finds."""

    source: str = Field(description="the region source, as --region-sources names it")
    name: str = Field(description="what its index holds, as the report names it")
    photos: int
    index_seconds: float = Field(description="the index run, end to end, with the models already loaded")
    crops: int
    vectors: int
    disk_bytes: int = Field(description="the database folder and the crop files, as the index run left them")
    # query group (named / unnamed) -> size bucket -> metric -> mean over queries
    means: dict[str, dict[str, dict[str, float]]]
    queries: dict[str, dict[str, int]] = Field(description="query group -> size bucket -> queries scored")
    covered: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="group -> size bucket -> share of the objects some region of the index covers (IoU >= 0.5)",
    )

    def per_thousand_photos(self, value: float) -> float:
        return value * 1000 / self.photos if self.photos else float("nan")


class EvalSummary(BaseModel):
    """What one evaluation run measured, and where its report and plot are."""

    benchmark: str
    report_path: str
    plot_path: str
    # index setting -> mode -> query group -> size bucket -> metric -> mean over queries
    means: dict[str, dict[str, dict[str, dict[str, dict[str, float]]]]]
    unknown_classes: list[str] = Field(default_factory=list, description="classes hidden from the detector")
    region_sources: list[RegionSourceReport] = Field(
        default_factory=list, description="with unknown classes: each region source's index, cost and scores"
    )


class IndexedEmbedder(BaseModel):
    """One embedder whose vectors an index holds (`cropsearch models`)."""

    embedder: str = Field(description="the embedder's id, as its vectors record it")
    spec: str = Field(description="where it was loaded from: a hub id or an absolute path")
    dim: int
    vectors: int = Field(description="rows in its vector table: whole images and crops")
    default: bool = Field(description="whether queries that name no embedder use it")
    table: str = Field(description="the LanceDB table holding its vectors")
