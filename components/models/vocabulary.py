"""An open-vocabulary detector's own words: prompt embeddings computed once, saved, and loaded by index runs.

YOLOE finds the classes it is given as text embeddings. ultralytics computes them with a text model
(MobileCLIP) that it downloads at first use, after pip-installing its CLIP tokenizer from a git URL
when that is missing: neither belongs in an index run (deployed runs may not reach those hosts, and a
pip install runs code). So the operator computes them once (`cropsearch vocabulary`), and runs load
the saved file: an `.npz` of plain arrays, read without pickle, so a file cannot run code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.errors import ModelUnavailableError

VOCABULARY_SUFFIX = ".npz"
_NAMES, _VECTORS = "names", "embeddings"
CLIP_TOKENIZER = "git+https://github.com/ultralytics/CLIP.git"


@dataclass(frozen=True)
class PromptEmbeddings:
    """The words an open-vocabulary detector looks for, and one text embedding per word (rows of `vectors`)."""

    names: list[str]
    vectors: np.ndarray  # (words, dimension), float32


def checked_words(words: Sequence[str], where: str) -> list[str]:
    """Words as class names: stripped, none empty, none twice (YOLOE gives each its own class id)."""
    names = [word.strip() for word in words]
    if not names or any(not name for name in names):
        raise ValueError(f"{where}: every word must be non-empty, and at least one is needed, got {list(words)!r}")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"{where}: words given twice: {', '.join(twice)}")
    return names


def save_prompt_embeddings(path: Path, names: Sequence[str], vectors: np.ndarray) -> Path:
    """Write a vocabulary file (`load_prompt_embeddings` reads it back); the file ends in `.npz`."""
    if path.suffix != VOCABULARY_SUFFIX:
        raise ValueError(f"{path}: a vocabulary file ends in {VOCABULARY_SUFFIX}")
    words = checked_words(names, str(path))
    matrix = np.asarray(vectors, dtype=np.float32).reshape(len(words), -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{_NAMES: np.array(words, dtype=np.str_), _VECTORS: matrix})
    return path


def load_prompt_embeddings(path: Path) -> PromptEmbeddings:
    """A saved vocabulary, checked: an error names the file and what is wrong with it."""
    if not path.is_file():
        raise ValueError(f"vocabulary {str(path)!r}: no such file")
    try:
        with np.load(path, allow_pickle=False) as saved:
            names, vectors = saved[_NAMES], saved[_VECTORS]
    except (OSError, ValueError, KeyError, TypeError):  # not an .npz (numpy reads a pickle or one array), or not ours
        raise ValueError(
            f"vocabulary {str(path)!r}: not a vocabulary file (an .npz of words and their embeddings, saved by "
            "`cropsearch vocabulary`)"
        ) from None
    if names.ndim != 1 or names.dtype.kind != "U" or vectors.ndim != 2 or vectors.dtype.kind != "f":
        raise ValueError(f"vocabulary {str(path)!r}: expected a list of words and a (words, dimension) float array")
    if len(names) != len(vectors):
        raise ValueError(f"vocabulary {str(path)!r}: {len(names)} words but {len(vectors)} embeddings")
    if not np.isfinite(vectors).all():
        raise ValueError(f"vocabulary {str(path)!r}: its embeddings hold NaN or infinite values")
    return PromptEmbeddings(checked_words(names.tolist(), f"vocabulary {str(path)!r}"), vectors.astype(np.float32))


def compute_prompt_embeddings(detector_spec: str, words: Sequence[str]) -> PromptEmbeddings:
    """The text embeddings YOLOE `detector_spec` needs to find `words`, computed with its own text model.

    It needs ultralytics' CLIP tokenizer (the `clip` package, installed from git: asked for here
    instead of letting ultralytics pip-install it unasked), and at first use ultralytics downloads
    the text model itself (MobileCLIP's text encoder, from github.com): run this once where that is allowed.
    """
    import importlib.util

    from ultralytics import YOLO
    from ultralytics.nn.tasks import YOLOEModel

    names = checked_words(words, "words")
    model = YOLO(detector_spec)
    if not isinstance(model.model, YOLOEModel) or is_prompt_free(model.model):
        raise ValueError(
            f"detector {detector_spec!r}: prompt embeddings are computed with a YOLOE model that takes words "
            "(e.g. yoloe-11s-seg.pt); a prompt-free one (-pf) has its own fixed vocabulary"
        )
    if importlib.util.find_spec("clip") is None:
        raise ModelUnavailableError(
            f"YOLOE's text model needs ultralytics' CLIP tokenizer: `pip install {CLIP_TOKENIZER}`, then run this "
            "again (it downloads MobileCLIP from github.com at first use)"
        )
    try:
        vectors = model.get_text_pe(names)  # (1, words, dimension)
    except (OSError, ConnectionError, RuntimeError) as error:  # the MobileCLIP download failed, or its file is bad
        why = f"YOLOE's text model (MobileCLIP, from github.com) is not available: {error}"
        raise ModelUnavailableError(why) from None
    return PromptEmbeddings(names, vectors.float().cpu().numpy().reshape(len(names), -1))


def is_prompt_free(network: object) -> bool:
    """A prompt-free YOLOE's head carries its fused vocabulary (`lrpc`) and refuses new words."""
    return hasattr(network.model[-1], "lrpc")  # type: ignore[attr-defined]
