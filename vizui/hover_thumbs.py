"""Image thumbnails while hovering the points of a native ``st.plotly_chart``.

Plotly's hover label is SVG text and cannot show ``<img>``, and ``st.plotly_chart`` sends no hover
events to Python. This ``st.components.v2`` component runs in the app page (no iframe): it finds the
chart's graph div (``.st-key-<chart key> .js-plotly-plot``), subscribes to Plotly's own
``plotly_hover`` / ``plotly_unhover`` events and shows a floating ``<img>`` next to the cursor.
Hovering causes no rerun. Adapted from the team's ``shared/uitest`` notes (Streamlit 1.67).

Use: give the chart a ``key``, put each point's id first in ``custom_data``, then call
:func:`hover_thumbnails` with ``{id: data-URI}``. Component keys must not contain ``__``.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping

import numpy as np
import streamlit as st
from PIL import Image

_JS = r"""
export default function(component) {
  const { data } = component;
  const key = data.chart_key;
  const thumbs = data.thumbs || {};
  const captions = data.captions || {};
  const size = data.size || 96;
  const tipId = 'vz-hover-thumb-' + key;
  let tip = document.getElementById(tipId);
  if (!tip) {
    tip = document.createElement('div');
    tip.id = tipId;
    tip.className = 'vz-hover-thumb';
    tip.setAttribute('data-testid', 'vzHoverThumb');
    tip.style.cssText = 'position:fixed;z-index:100000;pointer-events:none;display:none;' +
      'background:white;color:#222;border:1px solid #888;border-radius:6px;padding:4px;' +
      'box-shadow:0 2px 8px rgba(0,0,0,.3);font:12px sans-serif;text-align:center;' +
      'max-width:' + (size + 60) + 'px';
    tip.innerHTML = '<img style="display:block;margin:auto"><div class="cap"></div>';
    document.body.appendChild(tip);
  }
  const img = tip.querySelector('img');
  const cap = tip.querySelector('.cap');
  img.width = size; img.height = size;

  function hook() {
    const gd = document.querySelector('.st-key-' + CSS.escape(key) + ' .js-plotly-plot');
    if (!gd || typeof gd.on !== 'function' || gd.__vzThumbs === thumbs) return;
    gd.__vzThumbs = thumbs;               // re-hook when a rerun sends new data
    if (gd.removeAllListeners) {
      gd.removeAllListeners('plotly_hover');
      gd.removeAllListeners('plotly_unhover');
    }
    gd.on('plotly_hover', (ev) => {
      const p = ev.points && ev.points[0];
      if (!p) return;
      const id = String(Array.isArray(p.customdata) ? p.customdata[0] : p.customdata);
      const url = thumbs[id];
      if (!url) return;
      img.src = url;
      img.setAttribute('data-point-id', id);
      cap.textContent = captions[id] || id;
      const e = ev.event || {};
      const x = (e.clientX || 0) + 16, y = (e.clientY || 0) + 16;
      tip.style.left = Math.min(x, window.innerWidth - size - 70) + 'px';
      tip.style.top = Math.min(y, window.innerHeight - size - 50) + 'px';
      tip.style.display = 'block';
    });
    gd.on('plotly_unhover', () => { tip.style.display = 'none'; });
  }
  hook();
  const timer = setInterval(hook, 300);   // the chart may mount after us or be re-created
  return () => { clearInterval(timer); tip.style.display = 'none'; };
}
"""

_component = st.components.v2.component("vizui_hover_thumbs", js=_JS, isolate_styles=False)


def data_uri(image: np.ndarray | Image.Image, size: int = 72, quality: int = 85) -> str:
    """A small JPEG ``data:`` URI of an RGB image (for hover thumbnails)."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    if pil.width != size or pil.height != size:
        pil = pil.resize((size, size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    pil.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def hover_thumbnails(
    chart_key: str,
    thumbs: Mapping[str, str],
    *,
    captions: Mapping[str, str] | None = None,
    size: int = 96,
) -> None:
    """Attach hover thumbnails to ``st.plotly_chart(..., key=chart_key)``.

    Args:
        chart_key: The chart's widget key (must not contain ``__``).
        thumbs: Point id (first ``custom_data`` column) to image URL.
        captions: Point id to a caption under the thumbnail (default: the id).
        size: Displayed thumbnail side in CSS pixels.
    """
    if "__" in chart_key:
        raise ValueError("Component keys must not contain '__'.")
    _component(
        key=f"{chart_key}-hover",
        data={
            "chart_key": chart_key,
            "thumbs": {str(k): v for k, v in thumbs.items()},
            "captions": {str(k): v for k, v in (captions or {}).items()},
            "size": size,
        },
        height=0,
    )
