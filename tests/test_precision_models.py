"""bf16 on the real bundled models: faithful to float32 on every bundled sample.

These run real bf16 autocast, so only where bf16 is fast here (AMX / AVX-512 BF16): without that
hardware torch emulates bf16 about 34x slower than float32 and the default stays float32 anyway
(the skip reason says so). ``bench/bf16_numerics.py`` measures the same numbers on any machine
(with an emulation of bf16's rounding where bf16 is slow).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vizcore.attribution import occlusion, score_cam
from vizcore.core import precision
from vizcore.data import features
from vizcore.data.gallery import builtin_gallery
from vizcore.data.images import list_samples, load_sample
from vizcore.models.registry import get_spec, load_model, preprocess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not precision.bf16_fast("cpu") or precision.env_exact(),
        reason="bf16 is not fast on this CPU (no AMX / AVX-512 BF16): exact=False is float32 "
        "here, and real bf16 would take hours",
    ),
]

MODELS = ("efficientnet_lite0", "squeezenet1_1")
SAMPLES = tuple(s.name for s in list_samples())


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("key", MODELS)
@pytest.mark.parametrize("name", SAMPLES)
def test_occlusion_and_score_cam_bf16_match_float32(key: str, name: str) -> None:
    model, spec = load_model(key), get_spec(key)
    x = preprocess(load_sample(name), spec)
    kw = {"window": 32, "stride": 8}
    a, b = occlusion(model, x, exact=True, **kw), occlusion(model, x, exact=False, **kw)
    assert b.info["bf16"] == 1.0 and a.target == b.target
    assert _corr(a.map, b.map) >= 0.99
    layer = spec.preset("cam_features")[0]
    a, b = (
        score_cam(model, x, layer=layer, exact=True),
        score_cam(model, x, layer=layer, exact=False),
    )
    assert b.info["bf16"] == 1.0 and a.target == b.target
    assert _corr(a.map, b.map) >= 0.99


@pytest.mark.parametrize("key", MODELS)
def test_gallery_features_bf16_match_float32(key: str) -> None:
    model, spec = load_model(key), get_spec(key)
    g = builtin_gallery()
    kw = {"layer": spec.preset("embedding")[0], "model_key": key, "use_cache": False,
          "input_size": spec.preprocessing.input_size}  # fmt: skip
    a = features.gallery_features(model, g, exact=True, **kw).features
    b = features.gallery_features(model, g, exact=False, **kw).features
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.99
    # The same top-1 class for every gallery image from the pooled features (Lite0's and
    # SqueezeNet's heads read exactly these), and the same nearest neighbours nearly always.
    sq_a, sq_b = (a * a).sum(1), (b * b).sum(1)
    da = sq_a[:, None] + sq_a[None] - 2.0 * a @ a.T
    db = sq_b[:, None] + sq_b[None] - 2.0 * b @ b.T
    np.fill_diagonal(da, np.inf)
    np.fill_diagonal(db, np.inf)
    assert (da.argmin(1) == db.argmin(1)).mean() >= 0.95
    same = []
    with torch.inference_mode():
        for x in features.gallery_batches(g, kw["input_size"]):
            top32 = model(x).argmax(1)
            top16 = precision.forward_float(model, x, exact=False).argmax(1)
            same.append((top32 == top16).float())
    assert torch.cat(same).mean() >= 0.99
