"""The search page in a real browser (Playwright driving Debian's Chromium) against a real server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve.conftest import WorldIndex

pytestmark = pytest.mark.slow

_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing; `make test` installs it")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=_FLAGS)
        yield launched
        launched.close()


def _opened(browser: object, console_errors: bool = False) -> tuple[object, list[str]]:
    """A page of the size the tests look at, and the list its script errors (and console errors) go to."""
    page = browser.new_page(viewport={"width": 1366, "height": 860})  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    if console_errors:
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    return page, errors


def _hit_classes(page: object) -> list[str]:
    return page.eval_on_selector_all("#hits .hit .class", "spans => spans.map(s => s.textContent)")  # type: ignore[attr-defined]


def test_type_a_query_see_boxed_hits_then_more_like_this(
    browser: object, server: str, tmp_path: Path, world_index: WorldIndex
) -> None:
    page, errors = _opened(browser, console_errors=True)
    page.goto(server + "/")
    page.wait_for_function("() => document.querySelectorAll('#class-list input').length > 0")
    page.keyboard.type("a red triangle")  # the search box has the focus when the page opens
    page.keyboard.press("Enter")
    page.wait_for_selector("#hits .hit")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#hits .hit:nth-child(-n+4) img')].every(i => i.naturalWidth > 0)"
    )
    classes = _hit_classes(page)
    # 4 to 12 of the first 20 hits were red triangles over worlds of three seeds (tests/serve/test_api.py).
    assert sum("red triangle" in label for label in classes) >= 3, classes
    boxed = page.eval_on_selector_all(
        "#hits .hit[data-kind=crop]",
        """hits => hits.filter(hit => hit.querySelector('.class').textContent.includes('red triangle'))
                      .map(hit => hit.querySelector('.parent .box').getBoundingClientRect().width)""",
    )
    assert len(boxed) >= 3 and all(width > 0 for width in boxed), boxed
    page.screenshot(path=tmp_path / "search.png")

    first_label = classes[0]
    page.click("#hits .hit:first-child button.matched")
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('more like this')")
    page.wait_for_selector("#hits .hit")
    assert _hit_classes(page)[0].split(" (")[0] == first_label.split(" (")[0]  # the hit itself comes first

    page.click("#hits .hit:first-child button.parent")
    page.wait_for_selector("#viewer[open] #viewer-frame .box")
    outlined = page.eval_on_selector_all("#viewer-frame .box", "boxes => boxes.length")
    assert outlined >= 1
    page.keyboard.press("Escape")
    assert errors == []
    page.close()


def test_upload_a_scene_and_drag_a_box_to_search_by_that_region(
    browser: object, server: str, world_index: WorldIndex, tmp_path: Path
) -> None:
    from components.evaluation.synthetic import read_world

    scene, thing = max(
        ((s, o) for s in read_world(world_index.scenes) for o in s.objects), key=lambda pair: pair[1].area
    )
    page = browser.new_page(viewport={"width": 1366, "height": 860})  # type: ignore[attr-defined]
    page.goto(server + "/")
    page.set_input_files("#photo", str(world_index.scenes / scene.file_name))
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('your photo')")
    preview = page.locator("#photo-preview")
    page.wait_for_function("() => document.querySelector('#photo-preview').complete")
    area = preview.bounding_box()
    scale = area["width"] / 256  # the scene's width in pixels
    page.mouse.move(area["x"] + thing.x1 * scale, area["y"] + thing.y1 * scale)
    page.mouse.down()
    page.mouse.move(area["x"] + thing.x2 * scale, area["y"] + thing.y2 * scale, steps=5)
    page.mouse.up()
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('the region you drew')")
    page.wait_for_selector("#hits .hit")
    page.check("input[name=kinds][value=crop]")  # a filter change runs the same region search again
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('the region you drew')")
    assert thing.class_name in _hit_classes(page)[0]
    page.screenshot(path=tmp_path / "region.png")
    page.close()


def test_the_region_facet_lists_each_source_and_keeps_its_crops_with_their_own_boxes(
    browser: object, server: str, tmp_path: Path
) -> None:
    page, errors = _opened(browser)
    page.goto(server + "/?text=a+small+red+triangle&kinds=crop&mode=vector&region_sources=proposal")
    page.wait_for_selector("#hits .hit")
    listed = page.eval_on_selector_all("#source-list input", "boxes => boxes.map(b => [b.value, b.checked])")
    assert listed == [["detector", False], ["proposal", True]]  # the index's sources; the address ticked one
    labels = _hit_classes(page)
    assert labels and all(label.split(" ")[1] == "proposal" for label in labels), labels
    # A proposal's box is drawn dashed, in its own colour: told apart from the detector's at a glance.
    styles = page.eval_on_selector_all(
        "#hits .hit .parent .box", "boxes => boxes.map(b => [b.className, getComputedStyle(b).borderTopStyle])"
    )
    assert styles and all(style == ["box source-proposal", "dashed"] for style in styles), styles
    page.screenshot(path=tmp_path / "proposals.png")

    page.uncheck("#source-list input[value=proposal]")
    page.check("#source-list input[value=detector]")  # a facet change runs the search again
    page.wait_for_function(
        "() => [...document.querySelectorAll('#hits .hit .class')].every(s => !s.textContent.includes('proposal'))"
    )
    solid = page.eval_on_selector_all(
        "#hits .hit .parent .box", "boxes => boxes.map(b => getComputedStyle(b).borderTopStyle)"
    )
    assert solid and set(solid) == {"solid"}
    assert errors == []
    page.close()


def test_the_page_tells_the_truth_about_classes_whole_photos_scores_and_unknown_facets(
    browser: object, server: str
) -> None:
    """Issue 42, item 9 (and 4): what a new user met on the page."""
    page, errors = _opened(browser)
    # A class facet keeps that class's crops only (whole photos holding one came through as well).
    page.goto(server + "/?text=a+red+shape&classes=red+triangle")
    page.wait_for_selector("#hits .hit")
    kinds = page.eval_on_selector_all("#hits .hit", "hits => hits.map(h => h.dataset.kind)")
    assert kinds and set(kinds) == {"crop"}, kinds
    assert all(label.split(" ", 1)[1].startswith("red triangle") for label in _hit_classes(page))
    # The status line says once what the scores mean; hybrid's read 0-1.
    status = page.text_content("#status") or ""
    assert "ranked by hybrid (scores: 0-1, 1 first by looks and by words)" in status, status
    scores = page.eval_on_selector_all("#hits .hit .score", "spans => spans.map(s => Number(s.textContent))")
    assert all(0 < score <= 1 for score in scores) and max(scores) > 0.4, scores

    # A whole-photo hit shows its photo once, not the same picture twice side by side.
    page.goto(server + "/?text=a+red+shape&kinds=image")
    page.wait_for_selector("#hits .hit")
    pictures = page.eval_on_selector_all("#hits .hit", "hits => hits.map(h => h.querySelectorAll('img').length)")
    assert pictures and set(pictures) == {1}, pictures

    # A class the index does not have is named, not dropped (the search ran over every class).
    page.goto(server + "/?text=a+red+shape&classes=red+triangle,unicorn")
    page.wait_for_function("() => document.querySelector('#status').classList.contains('error')")
    status = page.text_content("#status") or ""
    assert status.startswith("classes: unicorn not in this index (it has "), status
    assert page.eval_on_selector_all("#hits .hit", "hits => hits.length") == 0
    assert errors == []
    page.close()
