"""Which accelerator to run models on, at which numeric precision and on how many threads.

`decide_machine` is the one place these are decided for a machine; the rest of this module are
the rules it applies, and the casts and autocasts that carry its precision out.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from schemas.machine import ComputePrecision, MachinePlan
from schemas.settings import BatchSettings


def pick_device(requested: str = "auto") -> str:
    """`auto` means CUDA if present, else Apple MPS, else CPU; anything else is checked and returned."""
    if requested == "cpu":
        return requested  # without importing torch (2 s): a run with nothing to compute may never need it
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} was asked for, but CUDA is not available here")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for, but MPS is not available here")
    return requested


def default_detect_batch_size(device: str) -> int:
    """Images per detector pass: batching pays on GPUs; on CPU one at a time was faster (0.28 vs 0.35 s/image)."""
    return 16 if device.startswith("cuda") else 1


def default_decode_threads() -> int:
    """Threads for decoding and cutting pictures: one per core, at most 8.

    On a CPU the models take the cores and one thread keeps up (decoding is ~1% of a picture's
    time); a GPU's forward passes outrun one thread, which then sets the pace.
    """
    return max(1, min(8, os.cpu_count() or 1))


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's name and the instruction sets that decide whether bf16 beats fp32 on it."""

    model: str
    amx: bool  # Intel's matrix tiles (Sapphire Rapids and later): bf16 matrix multiplies in hardware
    avx512_bf16: bool  # bf16 dot products in AVX-512 (Intel Cooper Lake and later, AMD Zen 4 and later)
    avx512: bool
    avx2: bool

    @property
    def computes_bf16(self) -> bool:
        """Whether bf16 runs on hardware instructions here; elsewhere PyTorch emulates it, slower than fp32."""
        return self.amx or self.avx512_bf16

    def describe(self) -> str:
        """e.g. 'AMD EPYC (AMX no, AVX-512 BF16 no, AVX-512 no, AVX2 yes)': what a benchmark table names."""
        flags = {"AMX": self.amx, "AVX-512 BF16": self.avx512_bf16, "AVX-512": self.avx512, "AVX2": self.avx2}
        listed = ", ".join(f"{name} {'yes' if has else 'no'}" for name, has in flags.items())
        return f"{self.model} ({listed})"


def cpu_features() -> CpuFeatures:
    """This machine's CPU, as PyTorch's own CPU probes see it (the ones its kernels dispatch on)."""
    import torch

    def probe(name: str) -> bool:
        return bool(getattr(torch.cpu, name, lambda: False)())

    return CpuFeatures(
        model=_cpu_model_name(),
        amx=probe("_is_amx_tile_supported"),
        avx512_bf16=probe("_is_avx512_bf16_supported"),
        avx512=probe("_is_avx512_supported"),
        avx2=probe("_is_avx2_supported"),
    )


def _cpu_model_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def pick_precision(requested: str, device: str, cpu: CpuFeatures | None = None) -> ComputePrecision:
    """`auto`: fp16 on CUDA, bf16 on CPUs with bf16 instructions, fp32 otherwise (MPS included).

    On a CPU the choice follows what was measured on each kind of machine (yolov10x at 640x480 and
    CLIP ViT-B/32 on 32 pictures, 2 threads): with AMX or AVX-512 BF16, bf16 beat fp32 for both
    models; with AVX2 alone, or AVX-512 without BF16, PyTorch emulates bf16 and fp32 won (2.6-3.2x
    on an Intel Xeon with AVX-512 alone; `python -m bench.precision` measures it on the machine at
    hand). `cpu` defaults to this machine's; tests pass others.
    """
    if requested in ("fp32", "bf16", "fp16"):
        return requested  # type: ignore[return-value]
    if requested != "auto":
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {requested!r}")
    if device.startswith("cuda"):
        return "fp16"
    if device == "cpu" and (cpu or cpu_features()).computes_bf16:
        return "bf16"
    return "fp32"


def decide_machine(
    device: str = "auto",
    precision: str = "auto",
    batching: BatchSettings | None = None,
    cpu: CpuFeatures | None = None,
) -> MachinePlan:
    """How this machine runs the models, from what a run asked for: `auto` or a value for each.

    Called once per process that runs models (the flow's, a cluster worker's) and passed down:
    model loading takes the plan as it is. The torch threads are PyTorch's count before any model
    is built (one per core; ultralytics lowers it, and the detector sets it back to this). `cpu`
    defaults to this machine's; tests pass others.
    """
    import torch

    batching = batching or BatchSettings()
    resolved = pick_device(device)
    features = cpu or cpu_features()
    return MachinePlan(
        device=resolved,
        precision=pick_precision(precision, resolved, features),
        torch_threads=torch.get_num_threads(),
        decode_threads=batching.decode_threads or default_decode_threads(),
        detect_batch_size=batching.detect_batch_size or default_detect_batch_size(resolved),
        cpu=features.describe(),
    )


def torch_dtype(precision: ComputePrecision) -> object:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def casts_weights(device: str, precision: ComputePrecision) -> bool:
    """Whether an embedder stores its weights in the reduced precision instead of autocasting.

    Cast weights skip autocast's per-call weight conversion: measured here with CLIP ViT-B/32 in
    bf16 on CPU, one text encodes in 12 ms instead of 17 ms (fp32) and images embed ~20% faster
    than under autocast, at cosine 0.9999 to fp32. fp16 stays under autocast on CPUs, whose fp16
    kernels are few and slow.
    """
    return precision == "bf16" or (precision == "fp16" and device.startswith("cuda"))


@contextmanager
def autocast_to(device: str, precision: ComputePrecision) -> Iterator[None]:
    """Run the forward passes inside in `precision` (fp32: nothing changes)."""
    if precision == "fp32":
        yield
        return
    import torch

    with torch.autocast(device_type=device.split(":")[0], dtype=torch_dtype(precision)):  # type: ignore[arg-type]
        yield
