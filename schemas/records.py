"""The rows cropsearch stores: one per image, per crop (a detected object or a tile), per embedding vector.

Ids are content-derived (sha256), so indexing the same bytes with the same settings always
produces the same ids and re-runs upsert instead of appending duplicates.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

EmbeddingKind = Literal["image", "crop"]
# What proposed a crop (`components/regions/`): the detector's boxes (a detector of a fixed training
# set's classes, or an open-vocabulary one such as YOLOE, of words), class-agnostic proposals, or a
# grid of tiles.
CropSource = Literal["detector", "open-vocabulary", "proposal", "tile"]
# The sources whose crops are the detector's boxes, whichever kind of detector drew them: those a photo
# keeps when it is re-cut for other sources, and those every other source's regions give way to.
DETECTOR_SOURCES: tuple[CropSource, ...] = ("detector", "open-vocabulary")


def _as_vector(value: Any) -> np.ndarray:
    """One row of float32s, read-only as the record holding it: a list is converted, a float32 row is not copied.

    A chunk's vectors stay numpy from the model to the Arrow column: as a list, each of 512 floats
    was a Python object (~16 KB a vector instead of 2 KB), validated one by one, dumped and turned
    back into Arrow for every record (docs/findings.md, 2026-12-06).
    """
    vector = np.asarray(value, dtype=np.float32)
    if vector.ndim != 1:
        raise ValueError(f"a vector is one row of numbers, not an array of shape {vector.shape}")
    view = vector.view()  # the caller's own array keeps its flags
    view.flags.writeable = False
    return view


Vector = Annotated[
    np.ndarray,
    BeforeValidator(_as_vector),
    PlainSerializer(lambda vector: vector.tolist(), return_type=list[float], when_used="json"),
]


class ImageRecord(BaseModel):
    """A parent photo. `image_id` is the sha256 of its bytes."""

    model_config = ConfigDict(frozen=True)

    image_id: str = Field(description="sha256 of the file bytes, hex")
    uri: str = Field(description="where the bytes are (a local path or a URI)")
    source: str = Field(description="the source the image came from, e.g. coco-val2017")
    width: int = Field(gt=0, description="pixels, as a viewer shows it (EXIF rotation applied)")
    height: int = Field(gt=0)
    num_bytes: int = Field(ge=0)
    caption: str = Field(default="", description='e.g. "this image contains 2 person, 1 tv"')
    index_signature: str = Field(
        default="",
        description="hash of the detector and detection settings this image's crops were found with; empty "
        "until the image, its crops and their vectors of every embedder the index had then are written",
    )
    detector_signature: str = Field(
        default="",
        description="hash of the detector and the settings its boxes were found with (`index_signature` less the "
        "region sources beyond the detector): equal, and proposals or tiles are added without detecting again; "
        "empty in indexes made before it, where `index_signature` stands for it when no other source was asked",
    )
    indexed_at: datetime | None = None


class CropRecord(BaseModel):
    """One region of its parent image, cut out: an object the detector found, a class-agnostic proposal, or a tile."""

    model_config = ConfigDict(frozen=True)

    crop_id: str = Field(
        description="sha256 of image_id, detector, class and rounded box (and the source, for all but the detector)"
    )
    image_id: str = Field(description="the parent image")
    detector: str = Field(
        description="id of the detector that found it, or of the method that cut it ('mser-v1', 'tiles')"
    )
    # Crops stored before there were other sources carry no source: they are the detector's.
    source: CropSource = Field("detector", description="which kind of region source proposed it")
    class_id: int = Field(description="the detector's class id; -1 for a region with no class (a proposal, a tile)")
    class_name: str = Field(
        description="the detector's class name; empty for a region with no class (a proposal, a tile), which the "
        "photo's caption, class filters and the class facet leave out"
    )
    confidence: float = Field(
        ge=0.0,
        le=1.0,
        description="the detector's confidence; 1 for a proposal or a tile, which like the whole photo is no guess "
        "that can be wrong (so a --min-confidence query keeps them as it keeps whole photos)",
    )
    x1: float = Field(description="box in parent pixels, clamped to the image")
    y1: float
    x2: float
    y2: float
    area_fraction: float = Field(ge=0.0, le=1.0, description="box area / parent area")
    uri: str = Field(default="", description="the materialized crop file; empty until written")

    @property
    def label(self) -> str:
        """What a person is shown for the crop: its class, or its source when it has none ('tile')."""
        return self.class_name or self.source


class EmbeddingRecord(BaseModel):
    """A unit-length vector for a whole image or a crop, with the columns queries prefilter on."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str = Field(description="image_id for whole images, crop_id for crops")
    kind: EmbeddingKind
    image_id: str
    crop_id: str | None = None
    model: str = Field(description="id of the embedder that made the vector")
    vector: Vector = Field(description="unit length, float32")
    class_name: str | None = Field(
        default=None, description="the crop's class; null for whole images and crops with no class (proposals, tiles)"
    )
    class_names: list[str] = Field(
        default_factory=list,
        description="classes this row stands for: the crop's own (none for a proposal or tile), or every class "
        "found in the image",
    )
    confidence: float = Field(default=1.0, description="the crop's confidence; 1 for whole images, proposals and tiles")
    area_fraction: float = Field(default=1.0, description="share of the parent covered; 1 for whole images")
    source: CropSource | None = Field(
        default=None, description="the region source that cut the crop (a region-source filter); null for whole images"
    )

    @classmethod
    def of_image(cls, image: ImageRecord, vector: Vector, model: str, class_names: list[str]) -> EmbeddingRecord:
        """The row of a whole image; `class_names` are the classes of its crops."""
        return cls(
            id=image.image_id,
            kind="image",
            image_id=image.image_id,
            model=model,
            vector=vector,
            class_names=class_names,
        )

    @classmethod
    def of_crop(cls, crop: CropRecord, vector: Vector, model: str) -> EmbeddingRecord:
        """The row of a crop, carrying the crop's filter columns."""
        return cls(
            id=crop.crop_id,
            kind="crop",
            image_id=crop.image_id,
            crop_id=crop.crop_id,
            model=model,
            vector=vector,
            class_name=crop.class_name or None,
            class_names=[crop.class_name] if crop.class_name else [],
            confidence=crop.confidence,
            area_fraction=crop.area_fraction,
            source=crop.source,
        )


class SkippedFile(BaseModel):
    """A file that was not indexed, and why. Bad images are data, not crashes."""

    model_config = ConfigDict(frozen=True)

    path: str
    reason: str
