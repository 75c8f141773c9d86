"""Packed bf16 linear layers compute what the plain layers compute, and leave other layers alone."""

from __future__ import annotations

import copy

import torch
from torch import nn

from components.models.devices import decide_machine
from components.models.packed_linear import PackedLinear, pack_linear_layers, packing_available

# Packing needs oneDNN's bf16 kernels, which need AVX-512 or AVX-NE-CONVERT: a CPU with AVX2 alone
# (some AMD EPYCs) runs bf16 through plain layers. Each test checks the path this CPU takes: packed
# layers where the kernels exist, the plain layers left as they are where they do not.
PACKS = packing_available()


def small_network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 32, bias=False)).eval()


def test_packed_layers_give_the_plain_layers_results_at_any_batch_shape() -> None:
    plain = small_network().to(torch.bfloat16)
    packed = copy.deepcopy(plain)
    assert pack_linear_layers(packed, rows_hint=16) == (2 if PACKS else 0)
    layer = PackedLinear if PACKS else nn.Linear
    assert isinstance(packed[0], layer) and isinstance(packed[2], layer)
    with torch.inference_mode():
        for shape in ((1, 64), (10, 64), (3, 77, 64)):
            inputs = torch.randn(*shape, dtype=torch.bfloat16)
            expected, got = plain(inputs), packed(inputs)
            assert got.shape == expected.shape and got.dtype == torch.bfloat16
            assert torch.allclose(got.float(), expected.float(), rtol=1e-2, atol=1e-2)


def test_fp32_layers_are_left_as_they_are() -> None:
    network = small_network()
    assert pack_linear_layers(network, rows_hint=16) == 0
    assert isinstance(network[0], nn.Linear) and isinstance(network[2], nn.Linear)


def test_within_limits_packing_to_the_named_submodules() -> None:
    network = nn.Sequential(small_network(), nn.Linear(32, 8)).to(torch.bfloat16)
    assert pack_linear_layers(network, rows_hint=16, within=("1",)) == (1 if PACKS else 0)
    assert isinstance(network[1], PackedLinear if PACKS else nn.Linear)
    assert isinstance(network[0][0], nn.Linear) and isinstance(network[0][2], nn.Linear)


def test_a_bf16_clip_on_cpu_runs_both_towers_on_packed_layers_where_the_cpu_has_the_kernels() -> None:
    from components.models.embedder import ClipEmbedder
    from schemas.params import WORLD_EMBEDDER

    model = ClipEmbedder(str(WORLD_EMBEDDER), decide_machine("cpu", "bf16"))._model  # type: ignore[attr-defined]
    for tower in (model.text_model, model.vision_model, model.text_projection, model.visual_projection):
        layers = list(tower.modules())
        assert any(isinstance(layer, PackedLinear) for layer in layers) is PACKS
        assert any(isinstance(layer, nn.Linear) for layer in layers) is not PACKS
        # Packed or not, the weights are bf16: the machine plan's precision, carried out.
        assert all(weight.dtype == torch.bfloat16 for weight in tower.parameters())
