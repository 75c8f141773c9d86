"""Paths read from a database are data: a crop file is deleted, and a picture drawn, only inside a run's folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.search.render import hits_markdown
from components.store.objects import ObjectFiles, lies_under
from schemas.results import QueryHit
from tests.records import crop, image


@pytest.mark.parametrize(
    ("uri", "root", "inside"),
    [
        ("{tmp}/crops/ab/abc.jpg", "{tmp}/crops", True),
        ("{tmp}/crops/abc.jpg", "{tmp}/crops/", True),
        ("{tmp}/crops/../secret.txt", "{tmp}/crops", False),
        ("{tmp}/crops-old/abc.jpg", "{tmp}/crops", False),  # a sibling that shares the root's name as a prefix
        ("{tmp}/crops", "{tmp}/crops", False),  # the store itself is no file in it
        ("/etc/passwd", "{tmp}/crops", False),
        ("s3://bucket/crops/ab/abc.jpg", "s3://bucket/crops", True),
        ("s3://bucket/crops/../db/x.lance", "s3://bucket/crops", False),
        ("s3://bucket/crops/./ab.jpg", "s3://bucket/crops", False),
        ("s3://bucket/crops-old/ab.jpg", "s3://bucket/crops", False),
        ("s3://other/crops/ab.jpg", "s3://bucket/crops", False),
        ("s3://bucket/crops/ab.jpg", "{tmp}/crops", False),
        ("{tmp}/crops/ab.jpg", "s3://bucket/crops", False),
    ],
)
def test_lies_under_reads_uris_as_paths_not_as_text(tmp_path: Path, uri: str, root: str, inside: bool) -> None:
    assert lies_under(uri.format(tmp=tmp_path), root.format(tmp=tmp_path)) is inside


def test_a_link_inside_the_store_is_its_own_file_to_delete_but_read_where_it_leads(tmp_path: Path) -> None:
    """Unlinking a link removes the link alone; reading one reads its target, which must lie inside too."""
    (tmp_path / "crops").mkdir()
    secret = tmp_path / "secret.jpg"
    Image.new("RGB", (4, 4)).save(secret)
    link = tmp_path / "crops" / "link.jpg"
    link.symlink_to(secret)
    assert lies_under(str(link), str(tmp_path / "crops"))
    with pytest.raises(PermissionError, match="outside the folders this run may read"):
        ObjectFiles(readable_roots=[str(tmp_path / "crops")]).open(str(link))
    assert ObjectFiles(readable_roots=[str(tmp_path)]).open(str(link)) == link
    assert ObjectFiles().open(str(link)) == link  # no roots: the CLI's user reads anything


def test_a_planted_row_naming_a_picture_outside_the_runs_folders_is_not_drawn(tmp_path: Path) -> None:
    """Issue 40, item 4: a query run drew the hits' pictures from any path its rows named, into its artifacts."""
    private = tmp_path / "private" / "passport.jpg"
    private.parent.mkdir()
    Image.new("RGB", (64, 48), (0, 255, 0)).save(private)
    parent = image("planted").model_copy(update={"uri": str(private)})
    hit = QueryHit(
        rank=1, score=0.9, kind="crop", image=parent, crop=crop(parent, "c").model_copy(update={"uri": str(private)})
    )
    allowed = hits_markdown("q", [hit], files=ObjectFiles(readable_roots=[str(tmp_path / "photos")]))
    shown = hits_markdown("q", [hit], files=ObjectFiles())
    assert greenest_picture(shown) > 200  # without roots the picture is drawn: the check is what keeps it out
    assert greenest_picture(allowed) < 100


def greenest_picture(markdown: str) -> float:
    """The highest mean green-over-red of the inline pictures of a hits report."""
    import base64
    import io
    import re

    values = []
    for encoded in re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", markdown):
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB"), dtype=np.float32)
        values.append(float((pixels[..., 1] - pixels[..., 0]).mean()))
    return max(values)
