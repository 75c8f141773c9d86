"""Deterministic plug-in models for tests of the idea itself, independent of any learned weights.

`colour_blob_detector` boxes the saturated pixels of an image; `mean_colour_embedder` maps a
picture to its mean colour and the words red/green/blue to those colours. With them, "find the
small red thing" has one right answer that a test can check exactly.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from components.models.detector import Detection
from components.models.embedder import unit_rows
from schemas.settings import DetectionSettings

COLOUR_NAMES = ("red", "green", "blue")
_SATURATION = 60  # max - min channel value above which a pixel counts as coloured


class ColourBlobDetector:
    """One box around all clearly coloured pixels, classed by their dominant channel."""

    def __init__(self) -> None:
        self.class_names = dict(enumerate(COLOUR_NAMES))

    def detect(self, images: Sequence[Image.Image], settings: DetectionSettings) -> list[list[Detection]]:
        return [self._detect_one(np.asarray(image, dtype=np.int16)) for image in images]

    def _detect_one(self, pixels: np.ndarray) -> list[Detection]:
        mask = pixels.max(axis=2) - pixels.min(axis=2) > _SATURATION
        if not mask.any():
            return []
        rows, columns = np.nonzero(mask)
        class_id = int(pixels[mask].mean(axis=0).argmax())
        box = (float(columns.min()), float(rows.min()), float(columns.max() + 1), float(rows.max() + 1))
        return [Detection(*box, class_id=class_id, class_name=COLOUR_NAMES[class_id], confidence=0.9)]


class MeanColourEmbedder:
    """A 3-d space: pictures by mean RGB, texts by the colour word they name."""

    dim = 3

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return unit_rows(
            np.stack([np.asarray(image, dtype=np.float32).reshape(-1, 3).mean(axis=0) for image in images])
        )

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return unit_rows(np.stack([np.eye(3, dtype=np.float32)[COLOUR_NAMES.index(text)] for text in texts]))


class CountingColourBlobDetector(ColourBlobDetector):
    """Counts its forward passes (batches) in this process: a test that must see none reads `batches`."""

    batches = 0

    def detect(self, images: Sequence[Image.Image], settings: DetectionSettings) -> list[list[Detection]]:
        CountingColourBlobDetector.batches += 1
        return super().detect(images, settings)


class MeanAndSpreadEmbedder:
    """A second 6-d space: a picture's mean RGB and its spread; a colour word is the mean of that colour."""

    dim = 6

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        rows = [np.asarray(image, dtype=np.float32).reshape(-1, 3) for image in images]
        return unit_rows(np.stack([np.concatenate([row.mean(axis=0), row.std(axis=0)]) for row in rows]))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return unit_rows(np.stack([np.eye(6, dtype=np.float32)[COLOUR_NAMES.index(text)] for text in texts]))


def colour_blob_detector(device: str) -> ColourBlobDetector:
    return ColourBlobDetector()


def counting_colour_blob_detector(device: str) -> CountingColourBlobDetector:
    return CountingColourBlobDetector()


def mean_and_spread_embedder(device: str) -> MeanAndSpreadEmbedder:
    return MeanAndSpreadEmbedder()


def mean_colour_embedder(device: str) -> MeanColourEmbedder:
    return MeanColourEmbedder()


# Where `marker_embedder` leaves its mark: a test that refuses plug-ins checks this never appears.
PLUGIN_RAN_MARKER = Path(tempfile.gettempdir()) / "cropsearch-test-plugin-ran"


def marker_embedder(device: str) -> MeanColourEmbedder:
    """A plug-in that shows it ran: what an attacker's plug-in would do, harmlessly."""
    PLUGIN_RAN_MARKER.touch()
    return MeanColourEmbedder()


class ProgressWatchingEmbedder(MeanColourEmbedder):
    """Reads its run's `index-progress` artifact before each batch: what a person watching the UI would see."""

    def __init__(self) -> None:
        self.progress_seen: list[float] = []

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
        from prefect.runtime import flow_run

        wanted = ArtifactFilter(
            key=ArtifactFilterKey(any_=["index-progress"]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])
        )
        with get_client(sync_client=True) as client:
            self.progress_seen.extend(float(found.data) for found in client.read_artifacts(artifact_filter=wanted))
        return super().embed_images(images)


def progress_watching_embedder(device: str) -> ProgressWatchingEmbedder:
    return ProgressWatchingEmbedder()


class WaitingEmbedder(MeanColourEmbedder):
    """Marks `embedding-started` in the working folder, then embeds only once `release` appears there.

    A command that stays mid-run for as long as a test needs: to find a host busy, or to cancel it.
    """

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import time

        (Path.cwd() / "embedding-started").touch()
        while not (Path.cwd() / "release").exists():
            time.sleep(0.05)
        return super().embed_images(images)


def waiting_embedder(device: str) -> WaitingEmbedder:
    return WaitingEmbedder()
