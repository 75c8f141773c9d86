"""Showing hits to people: a PNG grid of hits over their parents, and markdown tables."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from components.pipeline.images import ImageDecodeError, decode_rgb
from components.store.objects import ObjectFiles
from schemas.results import SCORE_DECIMALS, QueryHit

_THUMB = 224
SMALLEST_SHOWN = 128  # pixels on the longer side of a crop in a report (the query artifact's table)
_LABEL_HEIGHT = 18
_BOX_COLOUR = (255, 64, 32)


def _thumbnail(image: Image.Image) -> Image.Image:
    return ImageOps.pad(image, (_THUMB, _THUMB), color=(32, 32, 32))


def _placeholder(reason: str) -> Image.Image:
    tile = Image.new("RGB", (_THUMB, _THUMB), (64, 64, 64))
    ImageDraw.Draw(tile).text((8, _THUMB // 2), reason[:34], fill=(255, 255, 255))
    return tile


def _fit(image: Image.Image, side: int, at_least: int = 0) -> tuple[Image.Image, float]:
    """A copy no larger than side x side, enlarged to `at_least` on its longer side, and the scale applied to it."""
    longer = max(image.size)
    scale = side / longer if longer > side else max(1.0, min(side, at_least) / longer)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # Enlarged in blocks of pixels: a 20 px crop blurred up is a smudge, in blocks it shows what was found.
    resample = Image.Resampling.LANCZOS if scale <= 1.0 else Image.Resampling.NEAREST
    return image.resize(size, resample), scale


def hit_pictures(
    hit: QueryHit, side: int = _THUMB, files: ObjectFiles | None = None
) -> tuple[Image.Image, Image.Image]:
    """The hit itself (the crop, or the whole image) and its parent with the crop's box, each within side x side.

    The box is drawn after shrinking, so it stays a visible 2-3 pixels wide at any photo size.
    Files are read through `files`: crops may live on an object store.
    """
    files = files or ObjectFiles()
    try:
        parent = decode_rgb(files.open(hit.image.uri))
    except PermissionError:  # a row naming a file outside the run's folders (ObjectFiles.readable_roots)
        refused = _fit(_placeholder("parent outside the run's folders"), side)[0]
        return refused, refused
    except (ImageDecodeError, OSError):
        missing = _fit(_placeholder("parent image missing"), side)[0]
        return missing, missing
    small_parent, scale = _fit(parent, side)
    if hit.crop is None:
        return small_parent, small_parent
    crop = hit.crop
    try:
        top = decode_rgb(files.open(crop.uri))
    except (ImageDecodeError, OSError):
        top = parent.crop((int(crop.x1), int(crop.y1), round(crop.x2), round(crop.y2)))
    box = [coordinate * scale for coordinate in (crop.x1, crop.y1, crop.x2, crop.y2)]
    ImageDraw.Draw(small_parent).rectangle(box, outline=_BOX_COLOUR, width=max(2, side // 80))
    # A small object's crop is enlarged: shown at its own 20 px, a report's picture of it showed nothing.
    return _fit(top, side, at_least=SMALLEST_SHOWN)[0], small_parent


def _label(hit: QueryHit) -> str:
    return f"#{hit.rank} {hit.score:.3f} {hit.crop.label if hit.crop else 'whole image'}"


def grid_image(hits: Sequence[QueryHit], files: ObjectFiles | None = None) -> Image.Image:
    """One column per hit: top row the hit, bottom row its parent with the box; labelled rank, score, class."""
    columns = max(1, len(hits))
    cell_height = _THUMB + _LABEL_HEIGHT
    grid = Image.new("RGB", (columns * _THUMB, 2 * cell_height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for column, hit in enumerate(hits):
        top, bottom = hit_pictures(hit, files=files)
        x = column * _THUMB
        draw.text((x + 4, 3), _label(hit)[:36], fill=(0, 0, 0))
        grid.paste(_thumbnail(top), (x, _LABEL_HEIGHT))
        draw.text((x + 4, cell_height + 3), Path(hit.image.uri).name[:36], fill=(0, 0, 0))
        grid.paste(_thumbnail(bottom), (x, cell_height + _LABEL_HEIGHT))
    return grid


def render_grid(hits: Sequence[QueryHit], path: Path, files: ObjectFiles | None = None) -> Image.Image:
    """Write the grid of `grid_image` as a PNG at `path` (made .png); return the grid to show elsewhere too."""
    grid = grid_image(hits, files)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path.with_suffix(".png"), format="PNG")
    return grid


def data_uri(image: Image.Image, quality: int = 85) -> str:
    """The image as an inline `data:` JPEG URI.

    Pages can't load a worker's local files, and a file route would only work beside one server;
    an inline picture shows wherever the artifact is opened (local server or Prefect Cloud).
    """
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def hits_markdown(
    title: str,
    hits: Sequence[QueryHit],
    side: int = 160,
    grid_path: Path | None = None,
    files: ObjectFiles | None = None,
) -> str:
    """A markdown report of ranked hits: score, class, box and file, with inline thumbnails of hit and parent."""
    if not hits:
        return f"# {title}\n\n_no hits_\n"
    rows = []
    for hit, row in zip(hits, hits_table(hits), strict=True):
        top, parent = hit_pictures(hit, side, files)
        shown = {key: row[key] for key in ("rank", "score", "kind", "class", "box")}
        shown["hit"] = f"![{_label(hit)}]({data_uri(top)})"
        shown["parent (box drawn)"] = f"![{Path(hit.image.uri).name}]({data_uri(parent)})"
        shown["parent file"] = f"`{hit.image.uri}`"
        rows.append(shown)
    footer = f"\nGrid PNG: `{grid_path}`\n" if grid_path else ""
    return f"# {title}\n\n{markdown_table(rows)}{footer}"


def _box(hit: QueryHit) -> str:
    crop = hit.crop
    return f"{crop.x1:.0f},{crop.y1:.0f},{crop.x2:.0f},{crop.y2:.0f}" if crop else "-"


def hits_table(hits: Sequence[QueryHit]) -> list[dict[str, str]]:
    """Rows for a table of ranked hits (CLI, markdown and Prefect table artifacts share them)."""
    return [
        {
            "rank": str(hit.rank),
            "score": f"{hit.score:.{SCORE_DECIMALS}f}",
            "kind": hit.kind,
            "class": hit.crop.label if hit.crop else "-",
            "parent": hit.image.uri,
            "box": _box(hit),
        }
        for hit in hits
    ]


def markdown_table(rows: Sequence[dict[str, str]]) -> str:
    if not rows:
        return "_no rows_\n"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[name].replace("|", "\\|") for name in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"
