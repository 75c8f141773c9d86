"""Train the synthetic world's detector (ultralytics YOLO) and embedder (a small CLIP), offline on a CPU.

Both are seeded and bounded to minutes on 2 cores. The results are committed under `world/`
with the log of the run that made them; `cropsearch world train` remakes them.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from components.evaluation.synthetic import CLASS_NAMES, SCENE_SIZE, Scene, phrase

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingBudget:
    """How much work each model gets; the defaults made the committed weights."""

    train_scenes: int = 600
    detector_epochs: int = 24
    detector_image_size: int = 256
    embedder_steps: int = 1000
    embedder_batch: int = 128
    vocabulary_merges: int = 6000
    seed: int = 0


# Seeds of the scenes each use draws from, kept apart so evaluation never sees a training scene.
TRAIN_SEEDS_START = 0
EVAL_SEEDS_START = 1_000_000


def _yolo_dataset(root: Path, scenes: list[Scene], images: Path) -> Path:
    """Scenes in ultralytics' layout: images/, labels/ (class cx cy w h, normalised), data.yaml."""
    split = int(len(scenes) * 0.9)
    for part, chosen in (("train", scenes[:split]), ("val", scenes[split:])):
        (root / "images" / part).mkdir(parents=True, exist_ok=True)
        (root / "labels" / part).mkdir(parents=True, exist_ok=True)
        for scene in chosen:
            shutil.copy(images / scene.file_name, root / "images" / part / scene.file_name)
            lines = []
            for o in scene.objects:
                cx, cy = (o.x1 + o.x2) / 2 / SCENE_SIZE, (o.y1 + o.y2) / 2 / SCENE_SIZE
                w, h = (o.x2 - o.x1) / SCENE_SIZE, (o.y2 - o.y1) / SCENE_SIZE
                lines.append(f"{CLASS_NAMES.index(o.class_name)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
            (root / "labels" / part / scene.file_name).with_suffix(".txt").write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASS_NAMES))
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data


def train_detector(work: Path, scenes: list[Scene], images: Path, budget: TrainingBudget, out: Path) -> dict:
    """Train yolo11n from scratch on the scenes; copy the best weights to `out`; return its val metrics."""
    from ultralytics import YOLO

    data = _yolo_dataset(work / "yolo", scenes, images)
    model = YOLO("yolo11n.yaml")
    results = model.train(
        data=str(data),
        epochs=budget.detector_epochs,
        imgsz=budget.detector_image_size,
        batch=32,
        device="cpu",
        workers=2,
        seed=budget.seed,
        deterministic=True,
        project=str(work / "runs"),
        name="detector",
        exist_ok=True,
        plots=False,
        verbose=False,
        hsv_h=0.0,  # colour is half of every class name: keep hues as drawn
        hsv_s=0.3,
        hsv_v=0.3,
        amp=False,
    )
    best = Path(results.save_dir) / "weights" / "best.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(best, out)
    return {key: round(float(value), 4) for key, value in results.results_dict.items()}


def clip_vocabulary(bpe_file: Path, merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's own byte-level BPE vocabulary, cut to its first `merges` merges (as OpenAI's tokenizer builds it).

    The cut keeps the embedding table small; words the kept merges don't cover split into more pieces.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    with gzip.open(bpe_file, "rt", encoding="utf-8") as lines:
        pairs = [tuple(line.split()) for line in lines.read().split("\n")[1 : 1 + merges]]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in pairs]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, pairs  # type: ignore[return-value]


def default_bpe_file() -> Path:
    """The vocabulary file open_clip ships (`pip install open_clip_torch`): OpenAI CLIP's BPE merges.

    Found without importing open_clip, which would pull in its own dependencies for one data file.
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("CLIP's BPE vocabulary comes with open_clip: pip install open_clip_torch")
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


def _crop(image: Image.Image, box: tuple[float, float, float, float], rng: random.Random) -> Image.Image:
    """The box grown by a little random context, as a detector's box would be cut out."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    grow = rng.uniform(0.0, 0.25)
    shift_x, shift_y = rng.uniform(-0.1, 0.1) * w, rng.uniform(-0.1, 0.1) * h
    return image.crop(
        (
            max(0, x1 - grow * w + shift_x),
            max(0, y1 - grow * h + shift_y),
            min(image.width, x2 + grow * w + shift_x),
            min(image.height, y2 + grow * h + shift_y),
        )
    )


def _object_text(class_name: str, area: float, rng: random.Random) -> str:
    from components.evaluation.synthetic import size_bucket

    size = size_bucket(area).replace("medium", "medium-sized")
    return rng.choice([f"a photo of {phrase(class_name)}", phrase(class_name), f"a {size} {class_name}"])


def small_clip(
    tokenizer: Any, width: int, text_layers: int, vision_layers: int, image_size: int, projection: int
) -> tuple[Any, Any]:
    """A CLIPModel of the given size (8 px patches, 77 text positions) and its processor, randomly initialised."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    vocab = tokenizer.get_vocab()
    end = vocab["<|endoftext|>"]
    heads = max(2, width // 32)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": width,
            "intermediate_size": 2 * width,
            "num_hidden_layers": text_layers,
            "num_attention_heads": heads,
            "max_position_embeddings": 77,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": end,
            "pad_token_id": end,
        },
        vision_config={
            "hidden_size": width,
            "intermediate_size": 2 * width,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": heads,
            "image_size": image_size,
            "patch_size": 8,
        },
        projection_dim=projection,
    )
    square = {"height": image_size, "width": image_size}
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=square), tokenizer=tokenizer
    )
    return CLIPModel(config), processor


def train_embedder(scenes: list[Scene], images: Path, budget: TrainingBudget, bpe_file: Path, out: Path) -> dict:
    """Train a small CLIP contrastively on scene/caption and object-crop/phrase pairs; save it to `out`.

    Pairs with the same text are all positives of each other (a batch holds many 'red circle' crops),
    so the loss targets are spread over identical texts instead of the diagonal alone.
    """
    from transformers import CLIPTokenizer

    rng = random.Random(budget.seed)
    torch.manual_seed(budget.seed)
    vocab, merges = clip_vocabulary(bpe_file, budget.vocabulary_merges)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    model, processor = small_clip(tokenizer, width=128, text_layers=3, vision_layers=4, image_size=64, projection=64)

    # Every training picture once, preprocessed: scenes with captions, and 3 jittered cuts of every object.
    pictures, texts = [], []
    for scene in scenes:
        image = Image.open(images / scene.file_name).convert("RGB")
        pictures.append(image)
        texts.append(scene.caption)
        for o in scene.objects:
            for _ in range(3):
                pictures.append(_crop(image, (o.x1, o.y1, o.x2, o.y2), rng))
                texts.append(_object_text(o.class_name, o.area, rng))
    pixels = processor.image_processor(images=pictures, return_tensors="pt")["pixel_values"]
    unique_texts = sorted(set(texts))
    text_index = torch.tensor([unique_texts.index(t) for t in texts])
    tokens = tokenizer(unique_texts, padding=True, return_tensors="pt")
    logger.info("embedder: %d pictures, %d distinct texts, vocabulary %d", len(pictures), len(unique_texts), len(vocab))

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    warmup = 100
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / budget.embedder_steps)))
        ),
    )
    generator = torch.Generator().manual_seed(budget.seed)
    model.train()
    started = time.perf_counter()
    for step in range(budget.embedder_steps):
        batch = torch.randint(0, len(pictures), (budget.embedder_batch,), generator=generator)
        ids = text_index[batch]
        image_features = model.get_image_features(pixel_values=pixels[batch]).pooler_output
        text_features = model.get_text_features(
            input_ids=tokens["input_ids"][ids], attention_mask=tokens["attention_mask"][ids]
        ).pooler_output
        image_features = torch.nn.functional.normalize(image_features, dim=-1)
        text_features = torch.nn.functional.normalize(text_features, dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * image_features @ text_features.T
        same = (ids[:, None] == ids[None, :]).float()
        targets = same / same.sum(dim=1, keepdim=True)
        loss = 0.5 * (
            torch.nn.functional.cross_entropy(logits, targets) + torch.nn.functional.cross_entropy(logits.T, targets)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == budget.embedder_steps - 1:
            logger.info(
                "embedder step %d/%d loss %.4f (%.0f s)",
                step,
                budget.embedder_steps,
                loss.item(),
                time.perf_counter() - started,
            )
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(out)  # half precision on disk keeps the committed folder small
    processor.save_pretrained(out)
    return {"final_loss": round(float(loss.item()), 4), "seconds": round(time.perf_counter() - started)}


def train_world(out: Path, work: Path, budget: TrainingBudget | None = None) -> dict:
    """Generate the training scenes, train both models into `out`, and log every step to out/training.log."""
    from components.evaluation.synthetic import write_world

    budget = budget or TrainingBudget()
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "training.log", mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    for name in (__name__, "ultralytics"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        started = time.perf_counter()
        logger.info("budget: %s", budget)
        images = work / "scenes"
        scenes = write_world(images, range(TRAIN_SEEDS_START, TRAIN_SEEDS_START + budget.train_scenes))
        detector = train_detector(work, scenes, images, budget, out / "detector.pt")
        logger.info("detector: %s", detector)
        embedder = train_embedder(scenes, images, budget, default_bpe_file(), out / "clip")
        logger.info("embedder: %s", embedder)
        summary = {
            "budget": budget.__dict__,
            "detector": detector,
            "embedder": embedder,
            "seconds": round(time.perf_counter() - started),
        }
        (out / "training.json").write_text(json.dumps(summary, indent=1))
        return summary
    finally:
        for name in (__name__, "ultralytics"):
            logging.getLogger(name).removeHandler(handler)
