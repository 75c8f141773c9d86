"""Real-architecture models with random weights: they cost exactly what the released ones cost.

The hubs are out of reach here, so the architectures are built from their configurations:
`yolov10x.yaml` ships with ultralytics; CLIP ViT-B/32's values are copied below from
`openai/clip-vit-base-patch32`'s config.json. Random weights find nothing at normal thresholds:
benchmarks fix the crop count with a confidence near 0 and `max_detections`.
"""

from __future__ import annotations

from pathlib import Path

from schemas.params import WORLD_EMBEDDER

DETECTOR_ARCHITECTURE = "yolov10x.yaml"
SMALL_DETECTOR_ARCHITECTURE = "yolo11n.yaml"

# openai/clip-vit-base-patch32, config.json (transformers names).
CLIP_VIT_B32_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
}
CLIP_VIT_B32_VISION = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
}
CLIP_VIT_B32_PROJECTION = 512


def build_clip_vit_b32(folder: Path, seed: int = 0) -> Path:
    """CLIP ViT-B/32 with random weights and OpenAI's preprocessing, saved with `save_pretrained`.

    The tokenizer is the synthetic world's (CLIP's own BPE, cut to 6,000 merges): texts split into
    a few more tokens than with the full table, so text encoding costs, if anything, slightly more.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=CLIP_VIT_B32_TEXT, vision_config=CLIP_VIT_B32_VISION, projection_dim=CLIP_VIT_B32_PROJECTION
    )
    tokenizer = CLIPTokenizer.from_pretrained(str(WORLD_EMBEDDER))
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    CLIPModel(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
