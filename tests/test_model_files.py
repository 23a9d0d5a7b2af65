"""Proves what tests/model_files.py claims about each file it writes (see MODEL_FILES.md)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from tests import model_files as mf
from vizcore.data.images import load_sample, resize_center_crop, to_tensor01

CAT_CLASSES = range(281, 286)


def _normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _chelsea(size: int, crop_fraction: float) -> torch.Tensor:
    image = resize_center_crop(load_sample("chelsea"), size=size, crop_fraction=crop_fraction)
    return to_tensor01(image)


def _load(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, weights_only=True)


# ---------------------------------------------------------------- 1. SqueezeNet -> torchvision


def _tv_squeezenet(state: dict[str, torch.Tensor], num_classes: int = 1000) -> nn.Module:
    model = torchvision.models.squeezenet1_1(weights=None, num_classes=num_classes)
    model.load_state_dict(state, strict=True)
    return model.eval()


def test_squeezenet_torchvision_logits_match_bundled(squeezenet: nn.Module) -> None:
    tv = _tv_squeezenet(mf.squeezenet_torchvision_state_dict())
    x = torch.cat([_chelsea(224, 1.0), _random_images(2, 224)])
    with torch.no_grad():
        expected = squeezenet(x)
        got = tv(_normalize(x, mf.IMAGENET_MEAN, mf.IMAGENET_STD))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_squeezenet_torchvision_differs_at_227_ceil_mode_pooling(squeezenet: nn.Module) -> None:
    tv = _tv_squeezenet(mf.squeezenet_torchvision_state_dict())
    x = _random_images(1, 227)
    with torch.no_grad():
        diff = (tv(_normalize(x, mf.IMAGENET_MEAN, mf.IMAGENET_STD)) - squeezenet(x)).abs().max()
    assert diff > 0.1


def test_squeezenet_torchvision_chelsea_is_a_cat() -> None:
    tv = _tv_squeezenet(mf.squeezenet_torchvision_state_dict())
    x = _chelsea(224, 224 / 256)  # torchvision's Resize(256) + CenterCrop(224)
    with torch.no_grad():
        top1 = int(tv(_normalize(x, mf.IMAGENET_MEAN, mf.IMAGENET_STD)).argmax())
    assert top1 in CAT_CLASSES


def test_squeezenet_state_dict_is_a_fresh_copy() -> None:
    first = mf.squeezenet_torchvision_state_dict()
    first["features.0.weight"].zero_()
    assert mf.squeezenet_torchvision_state_dict()["features.0.weight"].abs().sum() > 0


@pytest.mark.parametrize("writer", [mf.write_squeezenet_pth, mf.write_squeezenet_safetensors])
def test_squeezenet_files_round_trip(tmp_path: Path, writer) -> None:
    path = writer(tmp_path / "sub")
    assert path.parent == tmp_path / "sub" and path.is_file()
    loaded = _load(path)
    expected = mf.squeezenet_torchvision_state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    _tv_squeezenet(loaded)


# ---------------------------------------------------------------- 2. Lite0 as torch.export


@pytest.fixture(scope="module")
def lite0_unflat(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    path = mf.write_lite0_pt2(tmp_path_factory.mktemp("pt2"))
    return torch.export.unflatten(torch.export.load(path))


@pytest.mark.slow
def test_lite0_pt2_same_top5_on_chelsea(lite0: nn.Module, lite0_unflat: nn.Module) -> None:
    x = _chelsea(224, 224 / 256)
    with torch.no_grad():
        expected, got = lite0(x), lite0_unflat(x)
    assert got.topk(5).indices.tolist() == expected.topk(5).indices.tolist()
    torch.testing.assert_close(got, expected)


@pytest.mark.slow
def test_lite0_pt2_names_and_types(lite0: nn.Module, lite0_unflat: nn.Module) -> None:
    from torch.export.unflatten import InterpreterModule, UnflattenedModule

    names = dict(lite0_unflat.named_modules())
    assert set(names) == {name for name, _ in lite0.named_modules()}
    assert isinstance(lite0_unflat, UnflattenedModule)
    for name in ("blocks.10", "head.act", "stem.conv", "stem.bn", "fc", "pool"):
        assert isinstance(names[name], InterpreterModule), name
    # Modules that never run (nn.Identity) stay as empty plain nn.Module placeholders.
    assert type(names["blocks.0.project.act"]) is nn.Module
    assert not hasattr(names["blocks.0.project.act"], "graph")


@pytest.mark.slow
def test_lite0_pt2_graph_ops_find_convs_and_activations(lite0_unflat: nn.Module) -> None:
    def ops(module: nn.Module) -> list[object]:
        graph = getattr(module, "graph", None)
        return [] if graph is None else [n.target for n in graph.nodes if n.op == "call_function"]

    aten = torch.ops.aten
    modules = dict(lite0_unflat.named_modules())
    assert ops(modules["stem.conv"]) == [aten.conv2d.default]
    assert ops(modules["stem.act"]) == [aten.hardtanh.default]
    assert ops(modules["head.act"]) == [aten.hardtanh.default]
    assert ops(modules["stem.bn"]) == [aten.batch_norm.default]
    convs = [name for name, m in modules.items() if aten.conv2d.default in ops(m)]
    acts = [name for name, m in modules.items() if ops(m) == [aten.hardtanh.default]]
    assert len(convs) == 1 + 1 + 2 + 15 * 3  # stem, head, block 0 (dw + pw), 15 x 3
    assert len(acts) == 1 + 1 + 1 + 15 * 2  # stem, head, block 0 dw, 15 x (expand + dw)
    # The container's graph calls its children; it holds no aten conv itself.
    assert ops(modules["blocks.10"]) == [aten.add.Tensor]


@pytest.mark.slow
def test_lite0_pt2_hooks_fire_once_and_gradients_flow(
    lite0: nn.Module, lite0_unflat: nn.Module
) -> None:
    names = ("blocks.10", "head.act", "blocks.10.expand.act", "blocks.0.project.act")
    calls = dict.fromkeys(names, 0)
    outputs: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
            calls[name] += 1
            outputs[name] = output

        return hook

    handles = [lite0_unflat.get_submodule(n).register_forward_hook(hook_for(n)) for n in names]
    try:
        x = _chelsea(224, 224 / 256).requires_grad_(True)
        logits = lite0_unflat(x)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == {"blocks.10": 1, "head.act": 1, "blocks.10.expand.act": 1, **{names[3]: 0}}
    (grad,) = torch.autograd.grad(logits[0, 285], outputs["blocks.10"])
    reference: dict[str, torch.Tensor] = {}
    handle = lite0.get_submodule("blocks.10").register_forward_hook(
        lambda m, a, o: reference.__setitem__("out", o)
    )
    try:
        expected_logits = lite0(x.detach().requires_grad_(True))
    finally:
        handle.remove()
    (expected,) = torch.autograd.grad(expected_logits[0, 285], reference["out"])
    torch.testing.assert_close(grad, expected)


@pytest.mark.slow
def test_lite0_pt2_batch16_and_fixed_size(lite0: nn.Module, lite0_unflat: nn.Module) -> None:
    x = _random_images(16, 224)
    with torch.no_grad():
        torch.testing.assert_close(lite0_unflat(x), lite0(x))
        with pytest.raises(RuntimeError, match=r"shape\[2\] to be equal to 224, but got 256"):
            lite0_unflat(_random_images(1, 256))


@pytest.mark.slow
def test_lite0_pt2_parameters_reachable_and_frozen(
    lite0: nn.Module, lite0_unflat: nn.Module
) -> None:
    conv = lite0_unflat.get_submodule("stem.conv")
    assert isinstance(conv.weight, nn.Parameter)
    assert torch.equal(conv.weight, lite0.get_submodule("stem.conv").weight)
    assert {n for n, _ in lite0_unflat.named_parameters()} == {
        n for n, _ in lite0.named_parameters()
    }
    assert not any(p.requires_grad for p in lite0_unflat.parameters())  # exported frozen
    assert lite0_unflat.training  # the flag says train; the graph runs eval (baked in)
    x = _random_images(2, 224)
    with torch.no_grad():
        torch.testing.assert_close(lite0_unflat.train()(x), lite0_unflat.eval()(x))


@pytest.mark.slow
def test_lite0_pt2_static_batch_refuses_batch2(tmp_path: Path) -> None:
    path = mf.write_lite0_pt2(tmp_path, dynamic_batch=False)
    assert path.name == "lite0_static.pt2"
    program = torch.export.load(path)
    with pytest.raises(RuntimeError, match=r"shape\[0\] to be equal to 1, but got 2"):
        torch.export.unflatten(program)(_random_images(2, 224))
    with pytest.raises(AssertionError, match=r"Guard failed: x.size\(\)\[0\] == 1"):
        program.module()(_random_images(2, 224))


# ---------------------------------------------------------------- 3. Lite0 -> timm


def _timm(arch: str) -> nn.Module:
    import timm

    model = timm.create_model(arch, pretrained=False)
    model.load_state_dict(mf.lite0_timm_state_dict(), strict=True)
    return model.eval()


def test_lite0_timm_logits_match_bundled(lite0: nn.Module) -> None:
    model = _timm(mf.LITE0_TIMM_ARCH)
    x = torch.cat([_chelsea(224, 224 / 256), _random_images(1, 224)])
    with torch.no_grad():
        torch.testing.assert_close(model(_normalize(x, mf.LITE0_MEAN, mf.LITE0_STD)), lite0(x))
        # timm's own config (mean = std = 0.5) is close, not equal: same top-5 on chelsea.
        cfg = model.pretrained_cfg
        assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5)
        approx = model(_normalize(x, cfg["mean"], cfg["std"]))
        expected = lite0(x)
    assert 1e-3 < (approx - expected).abs().max() < 0.1
    assert approx[0].topk(5).indices.tolist() == expected[0].topk(5).indices.tolist()


def test_lite0_timm_non_tf_variant_loads_but_differs(lite0: nn.Module) -> None:
    model = _timm("efficientnet_lite0")  # symmetric padding, BN eps 1e-5
    x = _random_images(1, 224)
    with torch.no_grad():
        assert (model(_normalize(x, mf.LITE0_MEAN, mf.LITE0_STD)) - lite0(x)).abs().max() > 0.5


def test_lite0_timm_safetensors(tmp_path: Path) -> None:
    loaded = _load(mf.write_lite0_timm_safetensors(tmp_path))
    assert len(loaded) == 296
    for key, value in mf.lite0_timm_state_dict().items():
        assert torch.equal(loaded[key], value), key


# ---------------------------------------------------------------- 4. Tiny 10-class models


@pytest.mark.parametrize("writer", [mf.write_tiny_pth, mf.write_tiny_safetensors])
def test_tiny_squeezenet_files(tmp_path: Path, writer) -> None:
    before = torch.random.get_rng_state()
    path = writer(tmp_path)
    assert torch.equal(torch.random.get_rng_state(), before)
    model = _tv_squeezenet(_load(path), num_classes=mf.TINY_NUM_CLASSES)
    with torch.no_grad():
        logits = model(_random_images(3, mf.TINY_INPUT_SIZE))
    assert logits.shape == (3, mf.TINY_NUM_CLASSES)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    reference = mf.tiny_squeezenet_state_dict()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in reference.items())


def test_class_name_files(tmp_path: Path) -> None:
    txt = mf.write_class_names_txt(tmp_path)
    names = json.loads(mf.write_class_names_json(tmp_path).read_text(encoding="utf-8"))
    assert txt.read_text(encoding="utf-8").splitlines() == list(mf.TINY_CLASS_NAMES)
    assert names == list(mf.TINY_CLASS_NAMES)
    assert len(names) == len(set(names)) == mf.TINY_NUM_CLASSES
    assert names[0] == "zero-cat" and names[-1] == "nine-dog"


def test_tiny_pt2(tmp_path: Path) -> None:
    from torch.export.unflatten import InterpreterModule

    unflat = torch.export.unflatten(torch.export.load(mf.write_tiny_pt2(tmp_path)))
    names = dict(unflat.named_modules())
    for name in ("conv1", "relu1", "conv2", "relu2", "pool", "fc"):
        assert isinstance(names[name], InterpreterModule), name
    x = _random_images(5, mf.TINY_INPUT_SIZE)
    with torch.no_grad():
        torch.testing.assert_close(unflat(x), mf._tiny_export_net()(x))
        assert unflat(x[:1]).shape == (1, mf.TINY_NUM_CLASSES)


# ---------------------------------------------------------------- 5. Hostile files


def test_pickle_payload_refused_by_weights_only(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = mf.write_pickle_payload_pt(tmp_path, marker)
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global: GLOBAL getattr"):
        torch.load(path, weights_only=True)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: this is what must never run
    assert marker.exists()


def test_pickled_module_refused_by_weights_only(tmp_path: Path) -> None:
    path = mf.write_pickled_module_pt(tmp_path)
    message = "Unsupported global: GLOBAL tests.model_files.TinyExportNet"
    with pytest.raises(pickle.UnpicklingError, match=message):
        torch.load(path, weights_only=True)
    assert isinstance(torch.load(path, weights_only=False), mf.TinyExportNet)


@pytest.mark.parametrize("where", ["sample_inputs", "weights"])
def test_pt2_payload_runs_inside_torch_export_load(tmp_path: Path, where: str) -> None:
    marker = tmp_path / f"marker_{where}"
    path = mf.write_pt2_with_pickle_payload(tmp_path, marker, where=where)
    assert not marker.exists()
    program = torch.export.load(path)  # loads without error, and has run the payload
    assert marker.exists()
    with torch.no_grad():
        logits = torch.export.unflatten(program)(_random_images(2, mf.TINY_INPUT_SIZE))
    assert logits.shape == (2, mf.TINY_NUM_CLASSES)


def test_pt2_payload_rejects_unknown_place(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="where must be"):
        mf.write_pt2_with_pickle_payload(tmp_path, tmp_path / "m", where="constants")


# ---------------------------------------------------------------- 6. State dicts that do not fit


def test_mismatched_state_dict_error(tmp_path: Path) -> None:
    state = _load(mf.write_squeezenet_mismatch_pth(tmp_path))
    model = torchvision.models.squeezenet1_1(weights=None)
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(state, strict=True)
    message = str(info.value)
    expected, stored = mf.MISMATCH_RENAMED_KEY
    assert f'Missing key(s) in state_dict: "{expected}", "{mf.MISMATCH_MISSING_KEY}".' in message
    assert f'Unexpected key(s) in state_dict: "{stored}".' in message


def test_wrong_shape_state_dict_error(tmp_path: Path) -> None:
    state = _load(mf.write_squeezenet_wrong_shape_pth(tmp_path))
    model = torchvision.models.squeezenet1_1(weights=None)
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(state, strict=True)
    message = str(info.value)
    assert "Missing key" not in message and "Unexpected key" not in message
    assert (
        "size mismatch for classifier.1.weight: copying a param with shape "
        "torch.Size([10, 512, 1, 1]) from checkpoint, the shape in current model is "
        "torch.Size([1000, 512, 1, 1])."
    ) in message
