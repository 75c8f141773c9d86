"""Embedding images and texts into one vector space: the `Embedder` interface and CLIP."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from components.devices import pick_device, uses_half_precision
from components.models import hub_files_only, load_once
from components.plugins import is_plugin_spec, load_plugin


class Embedder(Protocol):
    """Maps a batch of images or texts to unit-length float32 rows of one shared space."""

    dim: int

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise each row in float32 (a zero row stays zero instead of becoming NaN)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.finfo(np.float32).tiny)


class ClipEmbedder:
    """A transformers CLIP model (a hub id or a folder saved with `save_pretrained`)."""

    def __init__(self, spec: str, device: str) -> None:
        import torch
        from transformers import AutoProcessor, CLIPModel

        local_only = not Path(spec).expanduser().is_dir() and hub_files_only()
        self.device = device
        self._torch = torch
        dtype = torch.float16 if uses_half_precision(device) else torch.float32
        self._model = CLIPModel.from_pretrained(spec, local_files_only=local_only, dtype=dtype).to(device).eval()
        self._processor = AutoProcessor.from_pretrained(spec, local_files_only=local_only)
        self._dtype = dtype
        self.dim = int(self._model.config.projection_dim)
        self._max_tokens = int(self._model.config.text_config.max_position_embeddings)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        inputs = self._processor(images=list(images), return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, dtype=self._dtype)
        with self._torch.inference_mode():
            features = self._model.get_image_features(pixel_values=pixels).pooler_output
        return unit_rows(features.float().cpu().numpy())

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        # CLIP reads at most max_position_embeddings tokens (77): cut longer texts instead of failing.
        inputs = self._processor(
            text=list(texts), return_tensors="pt", padding=True, truncation=True, max_length=self._max_tokens
        )
        inputs = {name: tensor.to(self.device) for name, tensor in inputs.items()}
        with self._torch.inference_mode():
            features = self._model.get_text_features(**inputs).pooler_output
        return unit_rows(features.float().cpu().numpy())


def load_embedder(spec: str, device: str = "auto") -> Embedder:
    """The embedder a spec names, loaded once per process and device."""
    resolved = pick_device(device)
    if is_plugin_spec(spec):
        return load_once(("embedder", spec, resolved), lambda: load_plugin(spec, resolved))
    return load_once(("embedder", spec, resolved), lambda: ClipEmbedder(spec, resolved))
