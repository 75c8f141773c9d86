"""bf16 linear layers with their weights packed once for oneDNN, for small batches on CPU.

A plain bf16 `nn.Linear` on a CPU has oneDNN reorder its weight into a blocked layout on every
call. For a few rows, a text query's ~10 tokens, that reorder costs as much as the multiply: one
512x2048 layer took 160 us here, 80 us with its weight packed once. PyTorch's compiler (inductor,
with freezing) packs weights the same way, through the same operator; this does it at load time,
without a compile step. Results are the same as the plain bf16 layer's (same kernel, same rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def _ops() -> Any | None:
    """oneDNN's packing and packed-linear operators, where this PyTorch build has them."""
    if not torch.backends.mkldnn.is_available():
        return None
    ops = torch.ops.mkldnn
    if not (hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")):
        return None
    # oneDNN's bf16 kernels need AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT; a CPU with AVX2 alone has neither.
    if hasattr(ops, "_is_mkldnn_bf16_supported") and not ops._is_mkldnn_bf16_supported():
        return None
    return ops


def packing_available() -> bool:
    """Whether this CPU and PyTorch build can pack bf16 linear layers (oneDNN with bf16 kernels)."""
    return _ops() is not None


class PackedLinear(nn.Module):
    """An inference-only stand-in for a bf16 `nn.Linear` on CPU, its weight in oneDNN's layout."""

    def __init__(self, linear: nn.Linear, rows_hint: int, ops: Any) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._ops = ops
        # Plain attributes, not parameters: an opaque oneDNN tensor cannot be moved, saved or trained.
        self.packed_weight = ops._reorder_linear_weight(linear.weight.detach(), rows_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._ops._linear_pointwise(inputs, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def pack_linear_layers(module: nn.Module, rows_hint: int, within: Sequence[str] = ()) -> int:
    """Swap the bf16 CPU `nn.Linear`s under `module` for `PackedLinear`s; returns how many were swapped.

    `within` limits it to submodules of those qualified names (e.g. `text_model`), or those layers
    themselves. Leaves the module as it is where oneDNN's operators are missing or a packed layer
    would not give the plain layer's result (checked on the first layer before any is swapped).
    """
    ops = _ops()
    targets = [
        (parent, name, child)
        for parent_name, parent in module.named_modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear)
        and child.weight.dtype == torch.bfloat16
        and child.weight.device.type == "cpu"
        and (not within or _is_within(f"{parent_name}.{name}".lstrip("."), within))
    ]
    if ops is None or not targets or not _agrees(targets[0][2], rows_hint, ops):
        return 0
    for parent, name, child in targets:
        setattr(parent, name, PackedLinear(child, rows_hint, ops))
    return len(targets)


def _is_within(qualified_name: str, prefixes: Sequence[str]) -> bool:
    return any(qualified_name == prefix or qualified_name.startswith(f"{prefix}.") for prefix in prefixes)


def _agrees(linear: nn.Linear, rows: int, ops: Any) -> bool:
    try:
        packed = PackedLinear(linear, rows, ops)
        with torch.inference_mode():
            probe = torch.randn(rows, linear.in_features, dtype=torch.bfloat16)
            expected = linear(probe).float()
            difference = (packed(probe).float() - expected).abs().max()
            return bool(difference <= 1e-2 * expected.abs().max())
    except RuntimeError:
        return False
