"""Self-contained reports of what a page shows: one HTML file, and a zip of PNGs + params.json.

The HTML embeds every image as a ``data:`` URI and carries its own CSS, so it opens offline and
makes no network request (a test loads it in headless Chromium and counts requests). Figures are
the arrays the page displayed, never recomputed; tables hold the numbers of charts.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from vizcore.core import render

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#1f2328;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem}
.meta{color:#59636e}table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:left;vertical-align:top}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;vertical-align:top;max-width:340px}
figure img{max-width:100%;image-rendering:auto;border:1px solid #d0d7de}
figcaption{font-size:.85rem;color:#59636e}
"""


@dataclass(frozen=True)
class Figure:
    """One image as shown: uint8 RGB ``(H, W, 3)`` (or ``(H, W)`` grey), a title and a caption."""

    title: str
    image: np.ndarray
    caption: str = ""


@dataclass(frozen=True)
class Table:
    """The numbers behind a chart (or any small table): a title, column names and rows."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[object, ...], ...]


@dataclass(frozen=True)
class Report:
    """What one page showed: title, model, image, parameters, scores, figures, tables, link."""

    page: str
    model: str
    image: str
    params: Mapping[str, object] = field(default_factory=dict)
    scores: Mapping[str, object] = field(default_factory=dict)
    figures: Sequence[Figure] = ()
    tables: Sequence[Table] = ()
    link: str | None = None
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S %Z"))


def _png(image: np.ndarray) -> bytes:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"Report figures are uint8 images, got {array.dtype}.")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"Report figures are (H, W, 3) images, got shape {array.shape}.")
    return render.png_bytes(array[..., :3])


def _kv_table(values: Mapping[str, object]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in values.items()
    )
    return f"<table>{rows}</table>"


def _table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in table.rows
    )
    return f"<h3>{html.escape(table.title)}</h3><table><tr>{head}</tr>{body}</table>"


def to_html(report: Report) -> str:
    """The report as one HTML document with every image embedded (no external resource)."""
    figures = "".join(
        '<figure><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption><b>{title}'
        "</b>{caption}</figcaption></figure>".format(
            alt=html.escape(f.title, quote=True),
            data=base64.b64encode(_png(f.image)).decode("ascii"),
            title=html.escape(f.title),
            caption=("<br>" + html.escape(f.caption)) if f.caption else "",
        )
        for f in report.figures
    )
    link = (
        f'<p>Reopen this view: <a href="{html.escape(report.link, quote=True)}">'
        f"{html.escape(report.link)}</a></p>"
        if report.link
        else ""
    )
    about = {"Model": report.model, "Image": report.image, "Created": report.created}
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(report.page)} · CNN Visualization Studio</title>",
        f"<style>{_STYLE}</style></head><body>",
        f'<h1>{html.escape(report.page)}</h1><p class="meta">CNN Visualization Studio report</p>',
        _kv_table(about),
        link,
        "<h2>Parameters</h2>" + _kv_table(report.params) if report.params else "",
        "<h2>Scores</h2>" + _kv_table(report.scores) if report.scores else "",
        "<h2>Figures</h2>" + figures if report.figures else "",
        "".join(_table(t) for t in report.tables),
        "</body></html>",
    ]
    return "".join(parts)


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return slug[:60] or "figure"


def to_zip(report: Report) -> bytes:
    """A zip of every figure as a full-resolution PNG plus ``params.json`` (and the HTML)."""
    meta = {
        "page": report.page,
        "model": report.model,
        "image": report.image,
        "created": report.created,
        "link": report.link,
        "params": {k: _jsonable(v) for k, v in report.params.items()},
        "scores": {k: _jsonable(v) for k, v in report.scores.items()},
        "figures": [],
        "tables": [
            {
                "title": t.title,
                "columns": list(t.columns),
                "rows": [list(map(_jsonable, r)) for r in t.rows],
            }
            for t in report.tables
        ],
    }
    buffer = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for i, figure in enumerate(report.figures, 1):
            name = f"{i:02d}_{_slug(figure.title)}.png"
            while name in used:
                name = name.replace(".png", "_.png")
            used.add(name)
            archive.writestr(name, _png(figure.image))
            meta["figures"].append({"file": name, "title": figure.title, "caption": figure.caption})
        archive.writestr("params.json", json.dumps(meta, indent=2, ensure_ascii=False))
        archive.writestr("report.html", to_html(report))
    return buffer.getvalue()


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
