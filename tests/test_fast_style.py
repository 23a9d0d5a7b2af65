"""Fast style network: shipped preset, determinism, conditional-instance-norm blending, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vizcore.style import fast_style
from vizcore.style.fast_style import TransformNet, apply_style, style_vector


@pytest.fixture
def preset() -> fast_style.StylePreset:
    torch.manual_seed(0)
    net = TransformNet(3, width=4, blocks=1).eval()
    with torch.no_grad():  # make the styles really different (and the output not the identity)
        net.out_conv.weight.normal_(0.0, 0.05)
        for module in net.modules():
            if isinstance(module, fast_style.ConditionalInstanceNorm2d):
                module.weight.normal_(1.0, 0.5)
                module.bias.normal_(0.0, 0.5)
    return fast_style.StylePreset("tiny", ("a", "b", "c"), net, {})


def test_shipped_preset_loads_weights_only_and_gives_right_size_and_range() -> None:
    names = fast_style.list_presets()
    assert fast_style.DEFAULT_PRESET in names
    path = fast_style.PRESETS_DIR / f"{fast_style.DEFAULT_PRESET}.pt"
    state = torch.load(path, weights_only=True)  # plain state_dict: no pickled code
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert path.stat().st_size < 2_000_000
    loaded = fast_style.load_preset()
    assert len(loaded.styles) >= 2
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["steps"] > 0 and meta["seconds"] > 0
    x = torch.rand(1, 3, 61, 90, generator=torch.Generator().manual_seed(0))
    result = apply_style(loaded, x, style=loaded.styles[0])
    assert result.image.shape == (61, 90, 3) and result.image.dtype == np.uint8
    # A trained style changes the image (an untrained network is the identity).
    assert result.image.std() > 10
    assert np.abs(result.image.astype(float) - x[0].permute(1, 2, 0).numpy() * 255).mean() > 5


def test_inference_is_deterministic(preset) -> None:
    x = torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    a = apply_style(preset, x, style="b")
    b = apply_style(preset, x, style="b")
    np.testing.assert_array_equal(a.image, b.image)
    assert a.image.shape == (32, 40, 3)


def test_blend_weight_zero_or_one_equals_single_style(preset) -> None:
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    a = apply_style(preset, x, style="a").image
    c = apply_style(preset, x, style="c").image
    at0 = apply_style(preset, x, style="a", blend_with="c", blend=0.0).image
    at1 = apply_style(preset, x, style="a", blend_with="c", blend=1.0).image
    np.testing.assert_array_equal(at0, a)
    np.testing.assert_array_equal(at1, c)
    half = apply_style(preset, x, style="a", blend_with="c", blend=0.5).image
    assert not np.array_equal(half, a) and not np.array_equal(half, c)
    with torch.no_grad():
        raw_a = preset.net(x, 0)
        raw_blend = preset.net(x, style_vector(3, 0, 2, 0.0))
    assert torch.equal(raw_a, raw_blend)


def test_bad_style_arguments(preset) -> None:
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="no style"):
        apply_style(preset, x, style="zzz")
    with pytest.raises(ValueError, match=r"blend must be in \[0, 1\]"):
        apply_style(preset, x, style="a", blend_with="b", blend=1.5)
    with pytest.raises(ValueError, match="out of range"):
        preset.net(x, 5)


def test_save_and_load_roundtrip(tmp_path, preset) -> None:
    fast_style.save_preset(preset.net, tmp_path / "p.pt", preset.styles, {"steps": 1})
    loaded = fast_style.load_preset("p", directory=tmp_path)
    x = torch.rand(1, 3, 20, 20)
    np.testing.assert_array_equal(
        apply_style(loaded, x, style="c").image, apply_style(preset, x, style="c").image
    )
    with pytest.raises(ValueError, match="No style preset"):
        fast_style.load_preset("missing", directory=tmp_path)


def test_training_cli_runs_and_lowers_the_style_loss(tmp_path) -> None:
    from PIL import Image

    from vizcore.style import train as train_fast_style

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "p.pt"
    code = train_fast_style.main(
        [
            "--styles",
            "marble",
            "--images",
            str(folder),
            "--out",
            str(out),
            "--steps",
            "30",
            "--size",
            "32",
            "--style-size",
            "64",
            "--batch",
            "2",
            "--width",
            "4",
            "--blocks",
            "1",
            "--log-every",
            "10",
            "--checkpoint-every",
            "10",
            "--lr",
            "0.01",
        ]
    )
    assert code == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["final_losses"]["style"] < meta["first_losses"]["style"]
    assert out.with_suffix(".ckpt").is_file()
    assert fast_style.load_preset("p", directory=tmp_path).styles == ("marble",)


def test_untrained_network_is_the_identity() -> None:
    net = TransformNet(2, width=4, blocks=1).eval()
    x = torch.rand(1, 3, 21, 30, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(net(x, 1), x)
