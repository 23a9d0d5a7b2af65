"""Real browser: "Your model" loads an uploaded model, and the pages use it (issue 12).

One ``streamlit run app.py`` server, Debian's headless Chromium (Playwright, never a downloaded
browser). Like a user, the test opens the sidebar expander "Your model", keeps Source =
torchvision, picks the architecture ``squeezenet1_1``, uploads the tiny 10-class state_dict
(:func:`tests.model_files.write_tiny_pth`: random seeded weights, a test model only) and its
class-names ``.txt`` (``zero-cat``, ``one-dog``, ...), sets the input size to 64 px and presses
"Load model". Then:

* the model picker shows the uploaded model and the home page's prediction is a custom name;
* the Attribution page (reached through the sidebar link, same session) shows a Grad-CAM tile,
  no exception box, and its class picker offers the custom names;
* a second browser context (a fresh Streamlit session) does not list the uploaded model.

Set ``VIZCORE_SHOTS=0`` to skip the sidebar screenshot (``tests/e2e/shots/``, git-ignored).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from st_browser import (
    StreamlitServer,
    assert_no_exception,
    open_app,
    rerun_and_wait,
    wait_idle,
    wait_rendered,
)

from tests import model_files as mf

pytestmark = pytest.mark.e2e

SHOTS = Path(__file__).resolve().parent / "shots"
ARCH = "squeezenet1_1"
SIDEBAR = '[data-testid="stSidebar"]'
UPLOAD_INPUT = '[data-testid="stFileUploaderDropzoneInput"]'
NAMES = re.compile("|".join(re.escape(name) for name in mf.TINY_CLASS_NAMES))


def expect(*args: Any, **kwargs: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(*args, **kwargs)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamlitServer]:
    """A server with its own empty cache folder (a user model's results never touch ~/.cache)."""
    cache = tmp_path_factory.mktemp("cache")
    previous = os.environ.get("VIZCORE_CACHE_DIR")
    os.environ["VIZCORE_CACHE_DIR"] = str(cache)
    try:
        with StreamlitServer() as srv:
            yield srv
    finally:
        if previous is None:
            os.environ.pop("VIZCORE_CACHE_DIR", None)
        else:
            os.environ["VIZCORE_CACHE_DIR"] = previous


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tiny")
    return mf.write_tiny_pth(folder), mf.write_class_names_txt(folder)


class Stages:
    """Seconds per stage of the test (printed with ``pytest -s``)."""

    def __init__(self) -> None:
        self.t0 = self.last = time.monotonic()
        self.stages: list[tuple[str, float]] = []

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.stages.append((name, now - self.last))
        self.last = now

    def __str__(self) -> str:
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.stages)
        return f"user-model browser test: {parts}; total {self.last - self.t0:.1f} s"


def model_picker(page: Any) -> Any:
    return page.locator(SIDEBAR).get_by_role("combobox", name="Model")


def picker_options(page: Any) -> list[str]:
    """The model picker's option labels (opens the list, reads it, closes it).

    In headless Chromium the first click on a sidebar selectbox after another control was used
    (the Load button, or Escape on another list) sometimes leaves the list closed; a second
    click opens it. So click until the list is open (at most three times).
    """
    picker = model_picker(page)
    for _ in range(3):
        picker.click()
        try:
            expect(picker).to_have_attribute("aria-expanded", "true", timeout=2_000)
            break
        except AssertionError:
            continue
    options = page.get_by_role("option")
    expect(options.first).to_be_visible()
    labels = [text.strip() for text in options.all_inner_texts()]
    page.keyboard.press("Escape")
    expect(page.get_by_role("listbox")).to_have_count(0)
    return labels


def your_model(page: Any) -> Any:
    """The sidebar expander "Your model", opened (opening it is client-side: no rerun)."""
    expander = page.locator(f'{SIDEBAR} [data-testid="stExpander"]').filter(
        has=page.locator("summary", has_text="Your model")
    )
    expect(expander).to_have_count(1)
    if expander.locator("details").get_attribute("open") is None:
        expander.locator("summary").click()
    expect(expander.get_by_role("combobox", name="Source")).to_be_visible()
    return expander


def upload(page: Any, key: str, path: Path) -> None:
    """Put ``path`` into the file uploader with widget key ``key`` and wait for the rerun."""
    field = page.locator(f".st-key-{key}")
    rerun_and_wait(page, lambda: field.locator(UPLOAD_INPUT).set_input_files(str(path)))
    # the chip shortens long names in the narrow sidebar ("tiny_sq...enet10.pth"); its title
    # holds the whole name
    expect(field.locator('[data-testid="stFileChipName"]')).to_have_attribute("title", path.name)


def sidebar_screenshot(page: Any, path: Path) -> Path:
    """The whole sidebar (grown to its content height: it scrolls on its own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    viewport = page.viewport_size
    height = page.evaluate(
        "() => document.querySelector('[data-testid=\"stSidebarContent\"]').scrollHeight"
    )
    page.set_viewport_size({"width": viewport["width"], "height": max(height, viewport["height"])})
    page.wait_for_timeout(300)
    page.locator(SIDEBAR).screenshot(path=str(path))
    page.set_viewport_size(viewport)
    return path


def tile(page: Any, method: str) -> Any:
    """The Attribution grid cell right under the bold title ``method`` (image or message).

    A grid column holds two methods (eight defaults in four columns), so the cell is the
    element that follows the title, not the whole column.
    """
    title = page.locator('[data-testid="stMarkdown"]').filter(
        has_text=re.compile(rf"^{re.escape(method)}$")
    )
    expect(title).to_have_count(1)
    return title.locator(
        'xpath=ancestor::div[@data-testid="stElementContainer"][1]/following-sibling::div[1]'
    )


def test_upload_weights_and_class_names_then_grad_cam(
    page: Any, browser: Any, server: StreamlitServer, model_files: tuple[Path, Path]
) -> None:
    weights, names = model_files
    clock = Stages()
    expected_label = f"{weights.name} (yours)"
    open_app(page, server.url)
    assert_no_exception(page)
    expect(model_picker(page)).to_have_value("EfficientNet-Lite0 (bundled)")
    clock.mark("home page")

    # --- the form, as a user fills it in
    form = your_model(page)
    expect(form.get_by_role("combobox", name="Source")).to_have_value("torchvision + weights file")
    arch = form.get_by_role("combobox", name="Architecture")
    arch.click()
    arch.press_sequentially(ARCH)
    rerun_and_wait(page, lambda: page.get_by_role("option", name=ARCH, exact=True).click())
    expect(arch).to_have_value(ARCH)
    upload(page, "um_file_torchvision", weights)
    upload(page, "um_names", names)
    size = form.get_by_role("spinbutton", name="Input size (px)")
    size.fill(str(mf.TINY_INPUT_SIZE))
    rerun_and_wait(page, lambda: size.press("Enter"))
    expect(size).to_have_value(str(mf.TINY_INPUT_SIZE))
    assert_no_exception(page)
    if os.environ.get("VIZCORE_SHOTS", "1") != "0":
        sidebar_screenshot(page, SHOTS / "sidebar_your_model.png")

    clock.mark("form filled in")

    # --- Load model: the picker switches to it, the home page predicts a custom class
    load = page.locator(".st-key-um_load").get_by_role("button", name="Load model")
    rerun_and_wait(page, load.click, timeout_ms=120_000)
    expect(form.locator('[data-testid="stAlert"]')).to_have_count(0)
    expect(model_picker(page)).to_have_value(expected_label)
    expect(form).to_contain_text(f"Loaded: {expected_label}")
    says = page.locator('[data-testid="stMarkdown"]', has_text="says:")
    expect(says).to_have_text(
        re.compile(
            rf"^{re.escape(expected_label)} says: ({NAMES.pattern}) with probability "
            r"\d{1,3}\.\d% \(class \d\)\.$"
        )
    )
    assert expected_label in picker_options(page)
    assert_no_exception(page)
    clock.mark("loaded, home page predicts")

    # --- Attribution, same session: a Grad-CAM tile and the custom class names
    link = page.locator(
        f'{SIDEBAR} a[data-testid="stPageLink-NavLink"]:visible', has_text="Attribution"
    )
    rerun_and_wait(page, link.click, timeout_ms=120_000)
    expect(page.locator('[data-testid="stMain"] h1').first).to_have_text("Attribution")
    wait_rendered(page, timeout_ms=120_000)
    clock.mark("attribution page")
    assert_no_exception(page)
    expect(model_picker(page)).to_have_value(expected_label)
    gradcam = tile(page, "Grad-CAM")
    expect(gradcam.locator('[data-testid="stAlert"]')).to_have_count(0)
    image = gradcam.locator('[data-testid="stImage"] img')
    expect(image).to_be_visible()
    expect(gradcam.locator('[data-testid="stImageCaption"]')).to_have_text(
        re.compile(r"^\d+ ms( · .*)?$")
    )
    assert page.evaluate("(img) => img.complete && img.naturalWidth > 0", image.element_handle())
    target = page.get_by_role("radiogroup", name="Explain the class")
    radios = target.locator("label")
    choices = [text.strip() for text in radios.all_inner_texts()]
    custom = [c for c in choices if NAMES.match(c)]
    assert len(custom) == 5, choices  # the top 5 of ten custom classes, then "Another class…"
    heading = page.locator('[data-testid="stMain"] h3', has_text="Why")
    expect(heading).to_have_text(re.compile(rf"^Why “({NAMES.pattern})”\? \(\d\)$"))
    assert_no_exception(page)

    # --- a fresh session (another browser context) never lists the uploaded model
    other = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        other.set_default_timeout(30_000)
        stranger = other.new_page()
        open_app(stranger, server.url)
        clock.mark("fresh session opened")
        assert_no_exception(stranger)
        expect(model_picker(stranger)).to_have_value("EfficientNet-Lite0 (bundled)")
        labels = picker_options(stranger)
        assert expected_label not in labels, labels
        assert not any("(yours)" in label for label in labels), labels
        wait_idle(stranger)
    finally:
        other.close()
    clock.mark("fresh session")
    print(clock)
