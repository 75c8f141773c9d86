"""Tiny real models with random weights, built offline, for tests and for trying cropsearch here.

They load through exactly the code paths real weights use (a YOLO `.pt`, a CLIP folder saved with
`save_pretrained`). Random weights rank nothing meaningfully: use them for plumbing, not quality.

    python -m tests.tiny_models OUT_DIR   # writes OUT_DIR/tiny-yolo.pt and OUT_DIR/tiny-clip/
"""

from __future__ import annotations

import sys
from pathlib import Path


def build_tiny_yolo(path: Path) -> Path:
    """yolo11n's architecture (80 COCO-sized classes, unnamed) with random weights, saved as a .pt."""
    from ultralytics import YOLO

    path.parent.mkdir(parents=True, exist_ok=True)
    YOLO("yolo11n.yaml").save(str(path))
    return path


def build_tiny_yoloe(path: Path, seed: int = 1) -> Path:
    """YOLOE-11s (an open-vocabulary detector that takes words) with random weights, saved as a .pt.

    The seed is fixed because many random YOLOEs are degenerate (every anchor the same score, its
    boxes collapsing in NMS to none): seed 1's finds boxes in ultralytics' two photos. The file's
    name holds `yoloe`, which is how ultralytics tells a YOLOE checkpoint from a YOLO one.
    """
    import torch
    from ultralytics import YOLO

    if "yoloe" not in path.name:
        raise ValueError(f"{path.name}: ultralytics loads a YOLOE checkpoint as one only when its name says yoloe")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    YOLO("yoloe-11s-seg.yaml").save(str(path))
    return path


def _byte_level_vocab() -> dict[str, int]:
    """The smallest vocabulary a CLIP BPE tokenizer accepts: every byte symbol, alone and word-final."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def build_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A 2-layer CLIP (32-pixel images, 16-d projection) plus tokenizer and processor, saved as a folder."""
    import torch
    from transformers import CLIPTokenizer

    from components.evaluation.training import small_clip

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer(vocab=_byte_level_vocab(), merges=[])
    model, processor = small_clip(tokenizer, width=32, text_layers=2, vision_layers=2, image_size=32, projection=16)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-models")
    print(build_tiny_yolo(out / "tiny-yolo.pt"))
    print(build_tiny_clip(out / "tiny-clip"))
