"""Which accelerator to run models on."""

from __future__ import annotations


def pick_device(requested: str = "auto") -> str:
    """`auto` means CUDA if present, else Apple MPS, else CPU; anything else is checked and returned."""
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


def uses_half_precision(device: str) -> bool:
    """fp16 pays off on CUDA; on CPU and MPS it is slower or unsupported for these models."""
    return device.startswith("cuda")
