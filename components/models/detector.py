"""Object detection: the `Detector` interface and its ultralytics YOLO implementation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from components.models.devices import autocast_to
from components.models.loading import load_model, model_id
from components.models.plugins import is_plugin_spec
from components.models.vocabulary import PromptEmbeddings, is_prompt_free, load_prompt_embeddings
from components.ops.access import check_inside
from schemas.machine import MachinePlan
from schemas.settings import DetectionSettings


@dataclass(frozen=True)
class Detection:
    """One box in the pixels of the image it was found in."""

    x1: float
    y1: float
    x2: float
    y2: float
    class_id: int
    class_name: str
    confidence: float


class Detector(Protocol):
    """Finds objects in a batch of RGB images. One call is one batched forward pass."""

    def detect(self, images: Sequence[Image.Image], settings: DetectionSettings) -> list[list[Detection]]: ...


def class_ids_for(names: Sequence[str], known: dict[int, str]) -> list[int]:
    """Map class names to the detector's ids; unknown names fail, listing the ones that exist."""
    id_of = {name: class_id for class_id, name in known.items()}
    unknown = [name for name in names if name not in id_of]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; this detector knows: {', '.join(sorted(id_of))}")
    return [id_of[name] for name in names]


class YoloDetector:
    """ultralytics YOLO (any version it loads: v8, v10, 11, ..., YOLOE, YOLO-World) from a name, a .pt path or a .yaml.

    `open_vocabulary`: whether it is a detector of words (YOLOE, YOLO-World) rather than of a fixed
    training set's classes: its boxes are stored as the region source `open-vocabulary`. A YOLOE that
    takes words looks for a saved `vocabulary` file's words instead of its own (`vocabulary.py`).
    """

    def __init__(self, spec: str, machine: MachinePlan, vocabulary: Path | None = None) -> None:
        from ultralytics import YOLO

        self.device = device = machine.device
        self.precision = precision = machine.precision
        self.torch_threads = machine.torch_threads
        # fp16 on CUDA: ultralytics halves the weights itself; any other reduced precision is autocast.
        self._half_weights = device.startswith("cuda") and precision == "fp16"
        self._model = YOLO(spec)
        self.open_vocabulary = _is_open_vocabulary(self._model.model)
        if vocabulary is not None:
            self._look_for(load_prompt_embeddings(vocabulary), spec)
        self.class_names: dict[int, str] = dict(self._model.names)
        # Changing any of these makes ultralytics build a new predictor (and network copy): every
        # call passes the same ones, so the network prepared below is the one that runs.
        self._predictor_setup = {"device": device, "quantize": 16 if self._half_weights else None}
        if precision != "fp32" and not self._half_weights:
            self._prepare_for_autocast()

    def _look_for(self, words: PromptEmbeddings, spec: str) -> None:
        """Make a YOLOE that takes words find these (before the predictor is built: this resets it)."""
        import torch
        from ultralytics.nn.tasks import YOLOEModel

        network = self._model.model
        if not isinstance(network, YOLOEModel) or is_prompt_free(network):
            raise ValueError(
                f"vocabulary: detector {spec!r} takes no words; a vocabulary is for a YOLOE model that does "
                "(e.g. yoloe-11s-seg.pt; a prompt-free -pf one has its own)"
            )
        dimension = network.model[-1].embed
        if words.vectors.shape[1] != dimension:
            raise ValueError(
                f"vocabulary: its embeddings have {words.vectors.shape[1]} dimensions and detector {spec!r} takes "
                f"{dimension}: compute them with this detector (`cropsearch vocabulary --detector {spec}`)"
            )
        self._model.set_classes(words.names, torch.from_numpy(words.vectors)[None])

    def _prepare_for_autocast(self) -> None:
        """Ready the network ultralytics will run (a fused copy, built on the first predict) for bf16/fp16.

        Box decoding stays in fp32 (see `_decode_boxes_in_fp32`). In bf16, the weights are also
        stored in bf16 instead of autocast converting them on every call (its cache lasts one
        autocast block): ~29M weights for yolov10x, 5-8% of a 640x480 image's pass here.
        """
        import torch

        with _torch_threads_kept(self.torch_threads):
            self._model.predict(np.zeros((32, 32, 3), dtype=np.uint8), imgsz=32, verbose=False, **self._predictor_setup)
        network = self._model.predictor.model.model  # type: ignore[union-attr]
        _decode_boxes_in_fp32(network, self.device)
        if self.precision == "bf16" and _is_detect_head(network):
            network.to(torch.bfloat16)
            head = network.model[-1]
            head.dfl.float()  # the decoder's fixed 1x1 convolution over box distributions, run in fp32
            head.stride = head.stride.float()

    def detect(self, images: Sequence[Image.Image], settings: DetectionSettings) -> list[list[Detection]]:
        if not images:
            return []
        wanted = class_ids_for(settings.classes, self.class_names) if settings.classes else None
        arrays = [_as_bgr(image) for image in images]
        with (
            _torch_threads_kept(self.torch_threads),
            autocast_to(self.device, "fp32" if self._half_weights else self.precision),
        ):
            results = self._model.predict(
                arrays,
                conf=settings.confidence,
                iou=settings.iou,
                max_det=settings.max_detections,
                classes=wanted,
                imgsz=settings.image_size,
                **self._predictor_setup,  # quantize=16 is ultralytics' successor of half=True
                verbose=False,
            )
        return [self._detections_of(result) for result in results]

    def _detections_of(self, result: object) -> list[Detection]:
        boxes = result.boxes  # type: ignore[attr-defined]
        corners = boxes.xyxy.float().cpu().numpy().tolist()
        class_ids = boxes.cls.int().cpu().numpy().tolist()
        confidences = boxes.conf.float().cpu().numpy().tolist()
        return [
            Detection(x1, y1, x2, y2, class_id, self.class_names[class_id], confidence)
            for (x1, y1, x2, y2), class_id, confidence in zip(corners, class_ids, confidences, strict=True)
        ]


@contextmanager
def _torch_threads_kept(threads: int) -> Iterator[None]:
    """Hold torch's thread count at the machine plan's: undo ultralytics' change of it for the whole process.

    Building a CPU predictor, ultralytics sets it to min(8, cores - 1): on a 2-core machine that
    halved what the detector and CLIP could use (yolov10x in bf16: 285-348 ms per photo on 2 threads,
    386-601 ms on 1; CLIP: 22-27 against 35-39 ms per picture), and on a 16-core server it would
    leave half the cores idle.
    """
    import torch

    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _as_bgr(image: Image.Image) -> np.ndarray:
    """The pixels as ultralytics reads numpy arrays: BGR, as OpenCV decodes them.

    OpenCV swaps the channels of a 640x480 photo in under 0.1 ms; numpy's reversed-stride copy took
    2.7 ms here and 2.4 ms on the H200 machine's CPU, where it was half of `detect`'s time outside
    the network.
    """
    import cv2

    return cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)


def _decode_boxes_in_fp32(model: Any, device: str) -> None:
    """Decode box coordinates in fp32 while the convolutions (nearly all the compute) stay in bf16.

    bf16 keeps 8 significant bits: decoded in bf16, a coordinate near 600 px becomes a multiple of 4,
    and boxes drifted to IoU 0.84 of fp32's. The head's `_inference` turns the raw outputs into
    boxes and scores; it runs here outside autocast on fp32 copies of those outputs.
    """
    import torch

    head = model.model[-1]
    inference = head._inference

    def as_fp32(value: Any) -> Any:
        if torch.is_tensor(value):
            return value.float()
        return [as_fp32(item) for item in value] if isinstance(value, (list, tuple)) else value

    def inference_in_fp32(outputs: dict[str, Any]) -> Any:
        fp32_outputs = {name: as_fp32(value) for name, value in outputs.items()}
        with torch.autocast(device_type=device.split(":")[0], enabled=False):
            return inference(fp32_outputs)

    head._inference = inference_in_fp32


def _is_open_vocabulary(network: Any) -> bool:
    from ultralytics.nn.tasks import WorldModel, YOLOEModel

    return isinstance(network, (WorldModel, YOLOEModel))


def _is_detect_head(model: Any) -> bool:
    """Whether the network ends in ultralytics' box-detection head (not a segmentation or pose head)."""
    return type(model.model[-1]).__name__ in {"Detect", "v10Detect"}


def load_detector(
    spec: str,
    machine: MachinePlan,
    model_roots: Sequence[Path] | None = None,
    vocabulary: str | None = None,
) -> Detector:
    """The detector a spec names, loaded once per process, device, precision and vocabulary (plug-ins choose
    their own precision and take no vocabulary).

    `machine`: this process's decision (`decide_machine`). `model_roots`: in a deployed run, the
    operator's folders a local spec (and the vocabulary file) must lie in (checked as they are opened).
    """
    if vocabulary is None:
        return load_model("detector", spec, machine, YoloDetector, model_roots)
    if is_plugin_spec(spec):
        raise ValueError(f"vocabulary: detector {spec!r} is a plug-in; a vocabulary is for a YOLOE model")
    words = Path(vocabulary).expanduser()
    if model_roots is not None:
        words = check_inside(words, model_roots, what="vocabulary", use="load prompt embeddings from")

    def build(spec: str, machine: MachinePlan) -> YoloDetector:
        return YoloDetector(spec, machine, words)

    return load_model("detector", spec, machine, build, model_roots, variant=model_id(str(words)))
