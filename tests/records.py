"""Small records for store, search and preflight tests: ids from names, one parent, its crops, their vectors."""

from __future__ import annotations

import hashlib

from schemas.records import CropRecord, EmbeddingRecord, ImageRecord


def hex_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def image(name: str) -> ImageRecord:
    return ImageRecord(image_id=hex_id(name), uri=f"/photos/{name}.jpg", source="t", width=100, height=50, num_bytes=9)


def crop(parent: ImageRecord, name: str, class_name: str = "cat", confidence: float = 0.5) -> CropRecord:
    return CropRecord(
        crop_id=hex_id(parent.image_id + name),
        image_id=parent.image_id,
        detector="det",
        class_id=0,
        class_name=class_name,
        confidence=confidence,
        x1=1,
        y1=2,
        x2=30,
        y2=40,
        area_fraction=0.2,
        uri=f"/crops/{name}.jpg",
    )


def embedding(record: ImageRecord | CropRecord, vector: list[float], model: str = "m1") -> EmbeddingRecord:
    if isinstance(record, ImageRecord):
        return EmbeddingRecord.of_image(record, vector, model, class_names=[])
    return EmbeddingRecord.of_crop(record, vector, model)
