"""Benchmark: the index-backed page reruns in AppTest (issue 17: "in about a second").

Run ``python bench/index_app.py`` first (it builds ``bench/out/index-app``), then
``python bench/index_app_pages.py``. Each line is one widget change and the page's whole rerun
(sidebar, model, the view), timed around ``AppTest.run()``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VIZCORE_OFFLINE", "1")
INDEX = str(ROOT / "bench" / "out" / "index-app")
os.environ["VIZCORE_INDEXES"] = INDEX


def timed(label: str, fn: object) -> None:
    t0 = time.perf_counter()
    fn()
    print(f"{label}: {time.perf_counter() - t0:.2f} s", flush=True)


def main() -> None:
    from streamlit.testing.v1 import AppTest

    from vizcore.data.index import open_index

    print(f"index of {len(open_index(INDEX))} images, load {os.getloadavg()}")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page("pages/1_Filters_and_activations.py").run()
    timed("filters: choose the index (open + the first top 12 patches)",
          lambda: at.selectbox(key="filters_index").set_value(INDEX).run())  # fmt: skip
    for ch in (5, 6, 7):
        channel = at.number_input(key="filters_ix_channel")
        timed(f"filters: channel {ch} (top 12 patches of blocks.4)",
              lambda ch=ch, w=channel: w.set_value(ch).run())  # fmt: skip
    timed("filters: layer head.act",
          lambda: at.selectbox(key="filters_ix_layer").set_value("head.act").run())  # fmt: skip
    assert not at.exception, at.exception
    at.switch_page("pages/2_Feature_space.py").run()
    timed("fspace: neighbours k=12 over the whole index",
          lambda: at.slider(key="fspace_ix_k").set_value(12).run())  # fmt: skip
    timed("fspace: cosine", lambda: at.radio(key="fspace_ix_metric").set_value("cosine").run())
    assert not at.exception, at.exception
    at.switch_page("pages/8_Unit.py").run()
    timed("unit: channel 9 (patches, activation, classes)",
          lambda: at.number_input(key="unit_channel").set_value(9).run())  # fmt: skip
    assert not at.exception, at.exception
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
