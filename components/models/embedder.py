"""Embedding images and texts into one vector space: the `Embedder` interface and CLIP."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from PIL import Image

from components.models.devices import autocast_to, casts_weights, torch_dtype
from components.models.loading import hub_files_only, load_model
from schemas.machine import ComputePrecision, MachinePlan

# The rows the packed weight layouts are tuned for: a short text query's tokens, and the images of
# a typical embedding batch (`IndexParams.embed_batch_size`), each one row per patch plus one.
_TEXT_ROWS_HINT = 16
_IMAGE_BATCH_HINT = 64


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
    """A transformers CLIP model (a hub id or a folder saved with `save_pretrained`), on the machine's device
    and in its precision."""

    def __init__(self, spec: str, machine: MachinePlan) -> None:
        import torch
        from transformers import AutoProcessor, CLIPModel

        local_only = not Path(spec).expanduser().is_dir() and hub_files_only()
        self.device = device = machine.device
        self.precision = precision = machine.precision
        self._torch = torch
        cast = casts_weights(device, precision)
        self._weights_dtype = torch_dtype(precision) if cast else torch.float32
        self._autocast_precision: ComputePrecision = "fp32" if cast else precision
        self._model = CLIPModel.from_pretrained(spec, local_files_only=local_only, dtype=self._weights_dtype)
        self._model = self._model.to(device).eval()
        if device == "cpu" and self._weights_dtype == torch.bfloat16:
            self._pack_weights()
        self._processor = AutoProcessor.from_pretrained(spec, local_files_only=local_only)
        self.dim = int(self._model.config.projection_dim)
        self._max_tokens = int(self._model.config.text_config.max_position_embeddings)

    def _pack_weights(self) -> None:
        """Pack the bf16 linear layers' weights for oneDNN once, each tower for the rows it sees.

        Measured here: a text query (~10 tokens) encodes in 23 ms instead of 29; a batch of 64
        images embeds at 42.8 images/s instead of 39.5; same results (cosine 0.99999 or closer).
        """
        from components.models.packed_linear import pack_linear_layers

        vision = self._model.config.vision_config
        image_rows = _IMAGE_BATCH_HINT * ((vision.image_size // vision.patch_size) ** 2 + 1)
        pack_linear_layers(self._model, _TEXT_ROWS_HINT, within=("text_model", "text_projection"))
        pack_linear_layers(self._model, image_rows, within=("vision_model", "visual_projection"))

    def prepare_images(self, images: Sequence[Image.Image]) -> Any:
        """Resize, crop and normalise: the part of embedding that can run beside the model.

        On a GPU the resizing runs there (transformers' torchvision image processor takes a
        device): on the CPU it costs ~1 ms a picture, which would cap a GPU at a few hundred
        pictures per second per thread.
        """
        on_device = {} if self.device == "cpu" else {"device": self.device}
        return self._processor(images=list(images), return_tensors="pt", **on_device)["pixel_values"]

    def embed_prepared(self, pixels: Any) -> np.ndarray:
        pixels = pixels.to(self.device, dtype=self._weights_dtype)
        with self._torch.inference_mode(), autocast_to(self.device, self._autocast_precision):
            features = self._model.get_image_features(pixel_values=pixels).pooler_output
        return unit_rows(features.float().cpu().numpy())

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_prepared(self.prepare_images(images))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        # CLIP reads at most max_position_embeddings tokens (77): cut longer texts instead of failing.
        # The tokenizer is called directly: through the processor a query's tokens took 0.6 ms, not 0.13.
        inputs = self._processor.tokenizer(
            list(texts), return_tensors="pt", padding=True, truncation=True, max_length=self._max_tokens
        )
        inputs = {name: tensor.to(self.device) for name, tensor in inputs.items()}
        with self._torch.inference_mode(), autocast_to(self.device, self._autocast_precision):
            features = self._model.get_text_features(**inputs).pooler_output
        return unit_rows(features.float().cpu().numpy())


PrepareImages = Callable[[Sequence[Image.Image]], Any]
JoinPrepared = Callable[[Sequence[Any]], Any]
ForwardPass = Callable[[Any], np.ndarray]


class EmbeddingSteps(NamedTuple):
    """Embedding split so the preparation can run on the decode threads, beside the model.

    `prepare` turns some pictures into model input (thread-safe); `join` makes one batch of several
    prepared groups (any batch can then be sliced: `batch[:n]`); `forward` embeds a batch.
    """

    prepare: PrepareImages
    join: JoinPrepared
    forward: ForwardPass


def _join_tensors(groups: Sequence[Any]) -> Any:
    import torch

    return groups[0] if len(groups) == 1 else torch.cat(list(groups))


def _join_lists(groups: Sequence[Any]) -> list[Image.Image]:
    return [picture for group in groups for picture in group]


def image_embedding_steps(embedder: Embedder) -> EmbeddingSteps:
    """CLIP prepares tensors; plug-in embedders that only offer `embed_images` do all their work in `forward`."""
    if isinstance(embedder, ClipEmbedder):
        return EmbeddingSteps(embedder.prepare_images, _join_tensors, embedder.embed_prepared)
    return EmbeddingSteps(list, _join_lists, embedder.embed_images)


def load_embedder(spec: str, machine: MachinePlan, model_roots: Sequence[Path] | None = None) -> Embedder:
    """The embedder a spec names, loaded once per process, device and precision (plug-ins choose their own).

    `machine`: this process's decision (`decide_machine`). `model_roots`: in a deployed run, the
    operator's folders a local spec must lie in (checked as it is opened).
    """
    return load_model("embedder", spec, machine, ClipEmbedder, model_roots)
