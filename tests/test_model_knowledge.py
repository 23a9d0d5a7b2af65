"""Model knowledge lives in the spec (issue 12): no technique module names a model, and the
derived CAM-family defaults give non-blank, class-specific maps on the bundled nets."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vizcore import attribution
from vizcore.data.images import load_sample, to_tensor01
from vizcore.models import registry

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("attribution", "optvis", "style", "inside")
# The fast-style trainer (vizcore/style/train.py) trains on a named net by design.
TECHNIQUE_FILES = [
    path
    for family in FAMILIES
    for path in sorted((ROOT / "vizcore" / family).glob("*.py"))
    if path.name != "train.py"
]
assert len(TECHNIQUE_FILES) > 2 * len(FAMILIES), TECHNIQUE_FILES


def test_no_technique_module_names_a_model_key() -> None:
    keys = set(registry.MODELS)
    offenders = []
    for path in TECHNIQUE_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value in keys
            ):
                offenders.append(f"{path.name}:{node.lineno} {node.value!r}")
    assert not offenders, offenders


def test_bundled_presets_are_derived_except_the_hand_set_ones() -> None:
    lite, squeeze = registry.get_spec("efficientnet_lite0"), registry.get_spec("squeezenet1_1")
    # The CAM layer is derived (the GAP head's input after its activation), not hand-set.
    assert "cam" not in lite.layer_presets and "cam" not in squeeze.layer_presets
    assert lite.preset("cam") == ("head.act",)
    assert squeeze.preset("cam") == ("fire9",)
    assert lite.preset("first_conv") == ("stem.conv",) and squeeze.preset("first_conv") == (
        "conv1",
    )
    # Every family a page asks for has layers on both nets.
    for spec in (lite, squeeze):
        for family in (
            "activations",
            "cam",
            "embedding",
            "deepdream",
            "style",
            "content",
            "inversion",
        ):
            assert spec.preset(family), (spec.key, family)


def _two_objects() -> tuple[torch.Tensor, tuple[int, int]]:
    """The cat (left half) beside the coffee cup (right half), 224 x 224, and their classes as
    the bundled Lite0 sees each half alone."""
    cat = load_sample("chelsea").resize((300, 200)).crop((0, 0, 112 + 60, 200))
    cup = load_sample("coffee").resize((300, 200)).crop((60, 0, 232, 200))
    canvas = Image.new("RGB", (224, 224), (128, 128, 128))
    canvas.paste(cat.resize((112, 160)), (0, 32))
    canvas.paste(cup.resize((112, 160)), (112, 32))
    model = registry.load_model("efficientnet_lite0")
    x = to_tensor01(canvas)
    classes = []
    for half in (canvas.crop((0, 32, 112, 192)), canvas.crop((112, 32, 224, 192))):
        with torch.no_grad():
            classes.append(int(model(to_tensor01(half.resize((224, 224)))).argmax()))
    return x, (classes[0], classes[1])


def _peak_column(heat: np.ndarray) -> int:
    return int(np.unravel_index(np.argmax(heat), heat.shape)[1])


@pytest.mark.slow
def test_lite0_cam_defaults_are_non_blank_and_class_specific() -> None:
    model = registry.load_model("efficientnet_lite0")
    layer = registry.get_spec("efficientnet_lite0").preset("cam")[0]
    x, (cat, cup) = _two_objects()
    assert cat != cup
    for method in (attribution.grad_cam_plus_plus, attribution.grad_cam):
        left = method(model, x, target=cat, layer=layer).map
        right = method(model, x, target=cup, layer=layer).map
        assert left.max() > 0 and right.max() > 0
        assert _peak_column(left) < 112 <= _peak_column(right), method.__name__
    chelsea = registry.preprocess(load_sample("chelsea"), registry.get_spec("efficientnet_lite0"))
    score = attribution.score_cam(model, chelsea, layer=layer, batch_size=64)
    assert score.map.max() > 0 and float((score.map > 0).mean()) > 0.05


def test_layers_that_never_run_are_not_offered_and_are_explained() -> None:
    """Issue 18 item 3: Lite0's ``blocks`` (a ModuleList its parent iterates) never runs."""
    from vizcore.core.hooks import LayerNotCalledError
    from vizcore.optvis import synthesis

    spec = registry.get_spec("efficientnet_lite0")
    facts = spec.facts()
    assert facts is not None and "blocks" not in facts.names() and "blocks.3" in facts.names()
    model = registry.load_model(spec.key)
    settings = synthesis.default_synthesis_settings("fourier", size=64)
    with pytest.raises(LayerNotCalledError, match=r"never calls it.*'blocks\.0'"):
        synthesis.neuron_visualization(model, layer="blocks", channel=0, settings=settings)


def test_gram_layers_too_small_for_the_image_are_explained() -> None:
    """Issue 12 item 5: Gram/style on a model whose features are too small says why."""
    from vizcore.style import gram

    model = registry.load_model("squeezenet1_1")
    style = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"too small: fire9 \(1x1\)"):
        gram.gram_targets(model, style, ["conv1", "fire9"])
    assert set(gram.gram_targets(model, style, ["conv1", "fire3"]).grams) == {"conv1", "fire3"}
