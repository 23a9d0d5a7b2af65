"""App overhead: the same run in the library and through the real app in a browser.

Run from the repository root: ``python bench/app_overhead.py [--quick] [--rounds 2]``.

Each run (class visualization, neuron visualization, feature inversion, DeepDream, Gatys style
transfer, PGD, occlusion) is timed two ways, alternately (library, app, library, app, ...):

* **library**: the ``vizcore`` call the page makes, with the page's default settings, in this
  process, without a progress callback;
* **app**: ``streamlit run app.py`` started as ``make run`` starts it (``.streamlit/config.toml``
  decides the file watcher), driven like a user in Debian's headless Chromium with Playwright
  (``tests/e2e/st_browser.py``): a fresh session opens the page, sets it up (tab, methods) untimed,
  then the time runs from the click on Start (Attack, Stylize, Run) until the rerun it caused has
  finished and every image of the page has loaded: what a user waits for.

The ratio app / library of each run is the app's overhead (progress bar, live frames, the rerun,
rendering the result). Each cell is the minimum over ``--rounds`` (the first round also warms up
both sides). ``--quick`` runs one round, the class and neuron visualizations at 128 px, the
inversion at 96 px, DeepDream at 256 px and Gatys at 192 px (the pages' size sliders are moved in
the browser before the timed click; the library gets the same settings). The machine may be shared:
the load average before and after is printed; compare ratios of one run, not seconds across runs.
The server's log is checked for inotify overflows (issue 19 item 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
os.environ.setdefault("VIZCORE_OFFLINE", "1")

import torch  # noqa: E402
from st_browser import (  # noqa: E402
    _RENDERED_JS,
    CHROMIUM,
    StreamlitServer,
    assert_no_exception,
    launch_chromium,
    open_app,
    rerun_and_wait,
    track_runs,
    wait_idle,
)

from vizcore import attribution  # noqa: E402
from vizcore.core.layers import list_layers  # noqa: E402
from vizcore.data import images  # noqa: E402
from vizcore.models import registry  # noqa: E402
from vizcore.optvis import adversarial, dream, inversion, synthesis  # noqa: E402
from vizcore.style import gatys as style  # noqa: E402
from vizui import method_labels  # noqa: E402

MODEL = registry.DEFAULT_MODEL
FEATVIS = "/Feature_visualization"
ADVERSARIAL = "/Adversarial_examples"
STYLE = "/Texture_and_style"
ATTRIBUTION = "/Attribution"
#: ``--quick`` sizes (the pages' size sliders are moved to them; the library gets the same).
QUICK_SYNTH_SIZE = 128
QUICK_INV_SIZE = 96


@dataclass(frozen=True)
class Run:
    """One run: the library call and how a user starts the same run in the app."""

    name: str
    path: str
    library: Callable[[], object]
    setup: Callable[[Any], None]
    start: Callable[[Any], Any]
    done_text: re.Pattern[str]


def _select_slider_to(page: Any, key: str, label: str) -> None:
    """Move a select_slider with the keyboard until its shown value is ``label``."""
    thumb = page.locator(f".st-key-{key} input[type=range]")
    for _ in range(20):
        if thumb.get_attribute("aria-valuetext") == label:
            return
        thumb.focus()
        rerun_and_wait(page, lambda: thumb.press("ArrowLeft"))
    raise RuntimeError(f"select slider {key} did not reach {label}")


def _tab(name: str) -> Callable[[Any], None]:
    def setup(page: Any) -> None:
        page.get_by_role("tab", name=name).click()
        page.wait_for_timeout(200)

    return setup


def _button(key: str, label: str) -> Callable[[Any], Any]:
    return lambda page: page.locator(f".st-key-{key}").get_by_role("button", name=label)


def build_runs(quick: bool) -> list[Run]:
    """The seven runs with the pages' default settings on the default model and image."""
    spec = registry.get_spec(MODEL)
    model = registry.load_model(MODEL)
    photo = images.load_sample(images.DEFAULT_SAMPLE)
    x = registry.preprocess(photo, spec)
    names = spec.categories()
    has_relu6 = any(isinstance(m, torch.nn.ReLU6) for m in model.modules())
    facts = spec.facts()
    called = facts.names() if facts is not None else list_layers(model)

    # Feature visualization (pages/4 + vizui/synthesis_view.settings_controls at defaults).
    def page_settings() -> synthesis.SynthesisSettings:
        preset = synthesis.synthesis_preset(spec, "fourier")
        pct = round((preset.scale[1] - 1) * 100)
        return dataclasses.replace(
            preset,
            size=QUICK_SYNTH_SIZE if quick else preset.size,
            scale=(1 - pct / 100, 1 + pct / 100),
            rotate=float(int(preset.rotate)),
            pad=preset.pad if (pct or int(preset.rotate)) else 0,
            relu6_passthrough=bool(preset.relu6_passthrough and has_relu6),
        )

    classes = [names.index(c) for c in ("goldfish", "flamingo", "pineapple") if c in names]
    presets = [n for n in spec.preset("activations") if n in called]
    nv_layer = presets[len(presets) // 2] if presets else called[-1]
    inv_layers_all, inv_preset = inversion.inversion_preset(spec)
    inv_layers = (
        [inv_layers_all[0], inv_layers_all[len(inv_layers_all) // 2], inv_layers_all[-1]]
        if len(inv_layers_all) >= 3
        else list(inv_layers_all)
    )
    known = {n: inversion.depth_tv_weight(model, n) for n in inv_layers}
    known |= {n: w for n, w in inv_preset.tv_weights if n in known}
    inv_settings = dataclasses.replace(
        inv_preset, tv_weights=tuple(known.items()), relu6_passthrough=has_relu6
    )
    inv_size = QUICK_INV_SIZE if quick else 160
    inv_photo = images.to_tensor01(images.resize_center_crop(photo, size=inv_size))
    dd_layers = dream.deepdream_layers(spec, model)
    dd_size = 256 if quick else 400
    dd_settings = dream.DreamSettings(max_size=dd_size)

    # Texture & style, Gatys tab (pages/6 at defaults: marble, 256 px, the measured settings).
    from vizui.style_view import default_lr, pil_tensor, style_image  # no Streamlit call

    g_settings = style.style_settings(spec)
    g_size = 192 if quick else 256

    def gatys() -> object:
        return style.style_transfer(
            model,
            pil_tensor(photo, g_size),
            style=pil_tensor(style_image("marble"), g_size),
            style_layers=list(spec.preset("style")),
            content_layer=spec.preset("content")[0],
            style_weight=g_settings.style_weight,
            content_weight=g_settings.content_weight,
            tv_weight=g_settings.tv_weight,
            optimizer=g_settings.optimizer,
            steps=g_settings.steps,
            lr=default_lr(g_settings.optimizer, g_settings.lr),
        )

    with torch.inference_mode():
        top1 = int(model(x).argmax())

    def occlusion_setup(page: Any) -> None:
        from vizui.attribution_view import method_key

        for label in method_labels.DEFAULT_METHODS:
            if label != "Occlusion":
                rerun_and_wait(page, page.locator(f".st-key-{method_key(label)} label").click)
        rerun_and_wait(page, page.locator(".st-key-attribution_auc label").click)

    def featvis_setup(tab: str, key: str, size: int) -> Callable[[Any], None]:
        def setup(page: Any) -> None:
            _tab(tab)(page)
            if quick:
                page.locator("summary:visible", has_text="Settings").first.click()
                _select_slider_to(page, key, str(size))

        return setup

    def dd_setup(page: Any) -> None:
        _tab("DeepDream")(page)
        if quick:
            _select_slider_to(page, "featvis_dd_size", str(dd_size))

    def gatys_setup(page: Any) -> None:
        _tab("Style transfer (Gatys)")(page)
        if quick:
            _select_slider_to(page, "gatys_style_size", str(g_size))

    synth = QUICK_SYNTH_SIZE if quick else page_settings().size
    steps_done = re.compile(r"\d+ steps in \d")
    return [
        Run(
            f"class visualization ({synth} px)",
            FEATVIS,
            lambda: synthesis.class_visualization(
                model, target=classes, settings=page_settings(), categories=names, seed=0
            ),
            featvis_setup(
                "Class visualization", f"featvis_cv_{MODEL}_fourier_size", QUICK_SYNTH_SIZE
            ),
            _button("featvis_cv_start", "Start"),
            steps_done,
        ),
        Run(
            f"neuron visualization ({synth} px)",
            FEATVIS,
            lambda: synthesis.neuron_visualization(
                model,
                layer=nv_layer,
                channel=[0, 1, 2],
                mode="channel",
                settings=page_settings(),
                seed=0,
            ),
            featvis_setup(
                "Neuron visualization", f"featvis_nv_{MODEL}_fourier_size", QUICK_SYNTH_SIZE
            ),
            _button("featvis_nv_start", "Start"),
            steps_done,
        ),
        Run(
            f"feature inversion ({inv_size} px)",
            FEATVIS,
            lambda: inversion.feature_inversion(
                model, inv_photo, layer=inv_layers, settings=inv_settings
            ),
            featvis_setup("Feature inversion", "featvis_inv_size", QUICK_INV_SIZE),
            _button("featvis_inv_start", "Start"),
            steps_done,
        ),
        Run(
            f"DeepDream ({dd_size} px)",
            FEATVIS,
            lambda: dream.deep_dream(
                model,
                images.to_tensor01(photo),
                layer=dd_layers[min(1, len(dd_layers) - 1)],
                settings=dd_settings,
            ),
            dd_setup,
            _button("featvis_dd_start", "Start"),
            steps_done,
        ),
        Run(
            f"Gatys ({g_size} px)",
            STYLE,
            gatys,
            gatys_setup,
            _button("gatys_style_go", "Stylize"),
            re.compile(r"Gatys on .*steps"),
        ),
        Run(
            "PGD (10 steps)",
            ADVERSARIAL,
            lambda: adversarial.pgd(
                model,
                x,
                target=names.index("goldfish"),
                epsilon=4 / 255,
                step_size=1 / 255,
                steps=10,
                random_start=False,
                categories=names,
                seed=0,
            ),
            lambda page: None,
            _button("adversarial_start", "Attack"),
            re.compile(r"the attack (succeeded|did not succeed)"),
        ),
        Run(
            "occlusion (32/8)",
            ATTRIBUTION,
            lambda: attribution.occlusion(model, x, target=top1, window=32, stride=8, fill="gray"),
            occlusion_setup,
            _button("attribution_run", "Run"),
            re.compile(r"Done in"),
        ),
    ]


def time_library(run: Run) -> float:
    t0 = time.perf_counter()
    run.library()
    return time.perf_counter() - t0


def time_app(
    browser: Any, server: StreamlitServer, run: Run, timeout_s: float = 600
) -> tuple[float, float]:
    """A fresh session: open the page, set it up (untimed), click Start, wait for the result.

    Returns ``(answered, rendered)`` seconds from the click: the server finished the run (its
    ``script_finished`` message arrived), and the browser drew every image and chart. The
    browser runs on the same cores as the server, so *rendered* also pays for its drawing."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(int(timeout_s * 1000))
    try:
        page = context.new_page()
        tracker = track_runs(page)
        open_app(page, server.url + run.path, timeout_ms=180_000)
        run.setup(page)
        wait_idle(page)
        button = run.start(page)
        before = tracker.finished
        t0 = time.monotonic()  # the clock of tracker.finished_at
        button.click()
        deadline = t0 + timeout_s
        while tracker.finished <= before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{run.name}: no finished run within {timeout_s} s")
            page.wait_for_timeout(10)
        answered = tracker.finished_at[-1] - t0
        page.wait_for_function(_RENDERED_JS, timeout=int(timeout_s * 1000), polling=10)
        elapsed = time.monotonic() - t0
        assert_no_exception(page)
        body = page.locator('[data-testid="stMain"]').inner_text()
        if not run.done_text.search(body):
            raise AssertionError(f"{run.name}: no result on the page ({run.done_text.pattern})")
        return answered, elapsed
    finally:
        context.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, smaller DeepDream/Gatys")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 2; quick 1)")
    parser.add_argument("--only", default="", help="comma-separated substrings of run names")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on a timeout
    rounds = args.rounds or (1 if args.quick else 2)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing (make browser)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    runs = build_runs(args.quick)
    if args.only:
        wanted = [w.strip().lower() for w in args.only.split(",") if w.strip()]
        runs = [r for r in runs if any(w in r.name.lower() for w in wanted)]
    load_before = os.getloadavg()
    print(
        f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
        f"{os.cpu_count()} CPUs; torch threads {torch.get_num_threads()}; rounds {rounds}"
    )
    rows = []
    with StreamlitServer() as server, sync_playwright() as pw:
        print(f"server: {' '.join(server.command()[1:])} (started in {server.startup_s:.1f} s)")
        browser = launch_chromium(pw)
        try:
            for run in runs:
                lib: list[float] = []
                app: list[float] = []
                answered: list[float] = []
                for _ in range(rounds):
                    lib.append(time_library(run))
                    server_s, drawn_s = time_app(browser, server, run)
                    answered.append(server_s)
                    app.append(drawn_s)
                best_lib, best_app = min(lib), min(app)
                rows.append((run.name, best_lib, best_app, min(answered)))
                print(
                    f"{run.name:26s} library {best_lib:7.2f} s  app {best_app:7.2f} s  "
                    f"ratio {best_app / best_lib:5.2f}x   "
                    f"(all: lib {', '.join(f'{t:.2f}' for t in lib)}; "
                    f"app {', '.join(f'{t:.2f}' for t in app)}; "
                    f"server answered {', '.join(f'{t:.2f}' for t in answered)})",
                    flush=True,
                )
        finally:
            browser.close()
        log = server.log_tail(10_000_000)
        overflows = log.count("Inotify queue overflowed")
        watches = server.inotify_watches()
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(f"server log: {overflows} 'Inotify queue overflowed' lines; inotify watches {watches}")
    print("\n| run | library (s) | app, drawn (s) | app / library | server answered (s) |")
    print("|---|---:|---:|---:|---:|")
    for name, best_lib, best_app, best_answer in rows:
        print(f"| {name} | {best_lib:.2f} | {best_app:.2f} | {best_app / best_lib:.2f}x | "
              f"{best_answer:.2f} ({best_answer / best_lib:.2f}x) |")  # fmt: skip
    worst = max((a / b for _, b, a, _ in rows), default=0.0)
    print(f"\nworst ratio {worst:.2f}x (budget 1.2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
