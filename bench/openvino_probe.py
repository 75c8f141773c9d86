"""yolov10x's network: the pipeline's PyTorch bf16 against OpenVINO on the CPU, in interleaved pairs.

    pip install openvino       # not a cropsearch dependency: this probe measures whether it should be
    python -m bench.openvino_probe [--pairs 20] [--work /tmp/openvino-probe]

Times the network alone (no letterbox, no box decoding outside it), batch 1, on torch's threads:
the network `YoloDetector` runs in bf16, then OpenVINO compiled from the same weights with bf16
inference, once for a fixed 640x480 input and once with a dynamic height and width (fed 640x480
and 480x640 in turn, as photos of both orientations would). Each pair runs back to back, so the
host's drift hits both sides; the ratios are per pair.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np


def _first_output(network: Any) -> Any:
    """The network with only its first output (the boxes), the one graph OpenVINO converts."""
    import torch

    class FirstOutput(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            out = self.network(pixels)
            return out[0] if isinstance(out, (list, tuple)) else out

    return FirstOutput().eval()


def main(pairs: int, work: Path) -> None:
    try:
        import openvino
    except ImportError:
        raise SystemExit(
            "bench.openvino_probe needs OpenVINO, which cropsearch does not install: pip install openvino"
        ) from None
    import torch
    from PIL import Image
    from ultralytics import YOLO

    from bench.plan import FIXED_CROPS
    from components.models.detector import load_detector
    from components.models.devices import autocast_to, decide_machine

    work.mkdir(parents=True, exist_ok=True)
    weights = work / "yolov10x-random.pt"
    if not weights.is_file():
        YOLO("yolov10x.yaml").save(str(weights))
    threads = torch.get_num_threads()
    detector = load_detector(str(weights), decide_machine("cpu", "bf16"))
    detector.detect([Image.new("RGB", (640, 480))], FIXED_CROPS)  # builds the network the pipeline runs
    pipeline_network = detector._model.predictor.model  # type: ignore[attr-defined]

    fp32 = YOLO(str(weights))
    fp32.predict(np.zeros((480, 640, 3), np.uint8), device="cpu", verbose=False)  # its fused network
    torch.set_num_threads(threads)  # ultralytics' predictor changes it (see `_torch_threads_kept`)
    network = _first_output(fp32.predictor.model.model)  # type: ignore[union-attr]
    landscape = torch.rand(1, 3, 480, 640)
    portrait = torch.rand(1, 3, 640, 480)
    core = openvino.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16"}
    started = time.perf_counter()
    with torch.no_grad():
        fixed = core.compile_model(openvino.convert_model(network, example_input=landscape), "CPU", config)
        dynamic_model = openvino.convert_model(network, example_input=landscape, input=[1, 3, -1, -1])
        dynamic = core.compile_model(dynamic_model, "CPU", config)
    print(f"conversion and compilation of both: {time.perf_counter() - started:.1f} s")

    fixed_request, dynamic_request = fixed.create_infer_request(), dynamic.create_infer_request()

    def in_pytorch() -> None:
        with torch.inference_mode(), autocast_to("cpu", "bf16"):
            pipeline_network(landscape)

    def fixed_shape() -> None:
        fixed_request.infer({0: landscape.numpy()})

    def dynamic_shape(pixels: torch.Tensor) -> None:
        dynamic_request.infer({0: pixels.numpy()})

    for warm_up in (in_pytorch, fixed_shape, partial(dynamic_shape, landscape), partial(dynamic_shape, portrait)):
        warm_up()
    seconds: dict[str, list[float]] = {"pytorch": [], "fixed": [], "dynamic": []}

    def timed(name: str, run: Callable[[], None]) -> None:
        started = time.perf_counter()
        run()
        seconds[name].append(time.perf_counter() - started)

    for number in range(pairs):
        timed("pytorch", in_pytorch)
        timed("fixed", fixed_shape)
        timed("dynamic", partial(dynamic_shape, portrait if number % 2 else landscape))
    pytorch = np.array(seconds["pytorch"])
    print(
        f"{threads} threads, {pairs} interleaved pairs; "
        f"PyTorch bf16 (the pipeline's network) {1000 * np.median(pytorch):.0f} ms"
    )
    for name in ("fixed", "dynamic"):
        ratios = pytorch / np.array(seconds[name])
        low, high = np.percentile(ratios, [25, 75])
        print(
            f"OpenVINO bf16, {name} input shape: {1000 * np.median(seconds[name]):.0f} ms, "
            f"{np.median(ratios):.2f}x PyTorch's speed (middle half of the pairs {low:.2f}-{high:.2f}x)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("/tmp/openvino-probe"))
    arguments = parser.parse_args()
    main(arguments.pairs, arguments.work)
