"""What the pipeline is measured against: the models' forward passes alone, and the write-up's original loop."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.plan import FIXED_CROPS, Models, Plan, index_params


class ComputeFloor:
    """The model forward passes alone, at the pipeline's precision, batch sizes and input shapes.

    It uses the very networks the pipeline loaded (same weights, dtype and memory format), fed
    tensors made before the clock starts: what is left of a pipeline run beyond this is overhead.
    """

    def __init__(self, plan: Plan, models: Models, sample_photo: Path) -> None:
        import torch
        from PIL import Image

        from components.models.detector import load_detector
        from components.models.devices import decide_machine
        from components.models.embedder import load_embedder

        machine = decide_machine(plan.device, plan.precision)
        self.device, self.precision = machine.device, machine.precision
        detector = load_detector(models.detector, machine)
        self.embedder = load_embedder(models.embedder, machine)
        params = index_params(plan, sample_photo.parent, plan.work, models.detector, models.embedder)
        # The detector's input shape after ultralytics' letterbox, taken from a real call.
        self.network = detector._model.predictor.model  # type: ignore[attr-defined]
        shapes: list[tuple[int, ...]] = []
        hook = self.network.register_forward_pre_hook(lambda _, inputs: shapes.append(tuple(inputs[0].shape)))
        detector.detect([Image.open(sample_photo).convert("RGB")], params.detection)
        hook.remove()
        self.detector_input = shapes[0][1:]
        clip = self.embedder._model  # type: ignore[attr-defined]
        size = clip.config.vision_config.image_size
        self.embedder_input = (3, size, size)
        self._torch = torch

    def seconds(self, images: int, crops: int, detect_batch_size: int, embed_batch_size: int) -> dict[str, float]:
        """Run every forward pass `images` photos with `crops` crops need, in the pipeline's batches."""
        from components.models.devices import autocast_to

        def detect(pixels: Any) -> Any:
            with autocast_to(self.device, self.precision):  # as `YoloDetector.detect` runs it
                return self.network(pixels)

        detect_seconds = self._forward_all(detect, images, detect_batch_size, self.detector_input)
        # `embed_prepared` is the pipeline's own forward step (dtype, autocast and unit rows included).
        embed_seconds = self._forward_all(
            self.embedder.embed_prepared,  # type: ignore[attr-defined]
            images + crops,
            embed_batch_size,
            self.embedder_input,
        )
        return {
            "detect_seconds": detect_seconds,
            "embed_seconds": embed_seconds,
            "seconds": detect_seconds + embed_seconds,
        }

    def _forward_all(self, run: Callable[[Any], Any], items: int, batch_size: int, shape: tuple[int, ...]) -> float:
        torch = self._torch
        sizes = [min(batch_size, items - start) for start in range(0, items, batch_size)]
        batches = {size: torch.rand(size, *shape, device=self.device) for size in set(sizes)}
        with torch.inference_mode():
            if self.device.startswith("cuda"):
                # A GPU's first pass at a new shape loads and tunes kernels (3 s in the H200's first
                # round); the pipeline paid that in its warm-up and earlier rounds.
                for batch in batches.values():
                    run(batch)
                torch.cuda.synchronize()
            started = time.perf_counter()
            for size in sizes:
                run(batches[size])
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()  # a GPU runs behind the Python that queued its work
            return time.perf_counter() - started


class OriginalLoop:
    """The write-up's loop, faithfully: one image at a time through YOLO, each crop saved, every crop
    reopened from disk and embedded alone, embeddings stacked at the end (then written once)."""

    def __init__(self, plan: Plan, models: Models, sample_photo: Path) -> None:
        import torch
        from transformers import CLIPModel, CLIPProcessor
        from ultralytics import YOLO

        from components.models.devices import pick_device

        self.work = plan.work
        self.device = pick_device(plan.device)
        self.yolo = YOLO(models.detector)
        self.clip = CLIPModel.from_pretrained(models.embedder).eval().to(self.device)
        self.processor = CLIPProcessor.from_pretrained(models.embedder)
        process_threads = torch.get_num_threads()
        self.detect(sample_photo), self.embed(sample_photo)  # warm-up, as the pipeline had
        # On a CPU, ultralytics' first predict sets torch's threads for the whole process to
        # min(8, cores - 1): the write-up's script runs its loop, CLIP included, on that many.
        self.torch_threads = torch.get_num_threads()
        torch.set_num_threads(process_threads)

    def detect(self, path: Path) -> list[list[float]]:
        found = self.yolo.predict(
            str(path),
            conf=FIXED_CROPS.confidence,
            max_det=FIXED_CROPS.max_detections,
            device=self.device,
            verbose=False,
        )
        return found[0].boxes.xyxy.tolist()

    def embed(self, path: Path) -> Any:
        import torch
        from PIL import Image

        inputs = self.processor(images=Image.open(path).convert("RGB"), return_tensors="pt").to(self.device)
        with torch.no_grad():
            return self.clip.get_image_features(**inputs).pooler_output

    def run(self, paths: list[Path], torch_threads: int | None = None) -> dict[str, Any]:
        """The loop over `paths`, at ultralytics' thread count unless `torch_threads` says otherwise."""
        import torch

        process_threads = torch.get_num_threads()
        threads = torch_threads or self.torch_threads
        torch.set_num_threads(threads)
        try:
            return {**self._run(paths), "torch_threads": threads}
        finally:
            torch.set_num_threads(process_threads)

    def _run(self, paths: list[Path]) -> dict[str, Any]:
        import lancedb
        import pyarrow as pa
        import torch
        from PIL import Image

        crops_dir = self.work / "loop-crops"
        shutil.rmtree(crops_dir, ignore_errors=True)
        crops_dir.mkdir(parents=True)
        started = time.perf_counter()
        crop_paths = []
        for path in paths:
            image = Image.open(path).convert("RGB")
            for number, box in enumerate(self.detect(path)):
                crop_file = crops_dir / f"{path.stem}-{number}.jpg"
                image.crop(tuple(box)).save(crop_file)
                crop_paths.append(crop_file)
        vectors = torch.cat([self.embed(path) for path in [*paths, *crop_paths]]).cpu().numpy()
        database = lancedb.connect(str(self.work / "loop-db"))
        rows = pa.table({"path": [str(p) for p in [*paths, *crop_paths]], "vector": list(vectors)})
        database.create_table("embeddings", rows, mode="overwrite")
        return {"images": len(paths), "crops": len(crop_paths), "seconds": time.perf_counter() - started}
