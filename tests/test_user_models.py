"""Your own model (issue 12): the three sources with real weights, safety, mismatches, ownership.

The real-weight files are the bundled nets converted (tests/model_files.py): SqueezeNet 1.1 as a
torchvision ``squeezenet1_1`` state_dict, EfficientNet-Lite0 as a ``torch.export`` archive and as
timm's ``tf_efficientnet_lite0``.
"""

from __future__ import annotations

import gc
import io

import numpy as np
import pytest
import torch

from tests import model_files as mf
from vizcore import attribution
from vizcore.core.hooks import ModelState, count_hooks
from vizcore.data.images import load_sample
from vizcore.models import registry, sources
from vizcore.models.predict import predict

CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _chelsea(spec: registry.ModelSpec) -> torch.Tensor:
    return registry.preprocess(load_sample("chelsea"), spec)


@pytest.fixture(scope="module")
def squeeze_tv(tmp_path_factory) -> sources.UserModel:
    path = mf.write_squeezenet_pth(tmp_path_factory.mktemp("sq"))
    return sources.load_user_model("torchvision", arch="squeezenet1_1", weights=path)


def test_torchvision_squeezenet_state_dict_sees_a_cat(squeeze_tv) -> None:
    spec = squeeze_tv.spec
    assert spec.user and spec.key.startswith("user:") and len(spec.categories()) == 1000
    prediction = predict(squeeze_tv.model, _chelsea(spec), categories=spec.categories())
    assert prediction.top1[0] in CATS, prediction.top1
    # Derived presets for an architecture with no hand-set ones: the GAP head is found.
    assert spec.preset("cam") == ("net.features.12",) or spec.preset("cam")[0].startswith("net.")
    facts = spec.facts()
    assert facts is not None and facts.head is not None and facts.head.kind == "conv1x1"


def test_safetensors_gives_the_same_model(tmp_path, squeeze_tv) -> None:
    path = mf.write_squeezenet_safetensors(tmp_path)
    loaded = sources.load_user_model(
        "torchvision", arch="squeezenet1_1", weights=path.read_bytes(), weights_name=path.name
    )
    x = _chelsea(loaded.spec)
    with torch.no_grad():
        np.testing.assert_allclose(loaded.model(x), squeeze_tv.model(x), rtol=1e-5, atol=1e-5)


def test_exported_lite0_has_the_bundled_top5(tmp_path) -> None:
    path = mf.write_lite0_pt2(tmp_path)
    loaded = sources.load_user_model("export", weights=path.read_bytes(), weights_name="l.pt2")
    bundled = registry.load_model("efficientnet_lite0")
    spec = loaded.spec
    x = registry.preprocess(load_sample("chelsea"), registry.get_spec("efficientnet_lite0"))
    ours = predict(loaded.model, x, categories=spec.categories())
    theirs = predict(bundled, x)
    assert ours.indices.tolist() == theirs.indices.tolist()
    # Layer discovery through the graph: the same names and the same derived CAM layer.
    assert spec.preset("cam") == ("head.act",)
    assert spec.facts().layer("stem.conv").kind == "conv"
    assert spec.facts().layer("head.act").kind == "activation"
    state = ModelState.of(loaded.model)
    result = attribution.grad_cam(loaded.model, x, layer="head.act")
    assert result.map.max() > 0 and count_hooks(loaded.model) == 0
    assert ModelState.of(loaded.model) == state


def test_timm_lite0_matches_the_bundled_model(tmp_path) -> None:
    path = mf.write_lite0_timm_safetensors(tmp_path)
    config = sources.InputConfig(
        input_size=224, crop_fraction=224 / 256, resample="bicubic",
        mean=mf.LITE0_MEAN, std=mf.LITE0_STD,
    )  # fmt: skip
    loaded = sources.load_user_model(
        "timm", arch=mf.LITE0_TIMM_ARCH, weights=path, input_config=config
    )
    x = registry.preprocess(load_sample("chelsea"), registry.get_spec("efficientnet_lite0"))
    with torch.no_grad():
        ours = loaded.model(x)
        theirs = registry.load_model("efficientnet_lite0")(x)
    assert ours.topk(5).indices.tolist() == theirs.topk(5).indices.tolist()
    assert loaded.spec.preset("cam")  # derived for a timm EfficientNet


def test_timm_pretrained_weights_are_never_downloaded() -> None:
    with pytest.raises(sources.ModelFileError, match="not in the local Hugging Face cache"):
        sources.load_user_model("timm", arch="resnet18")


def test_ten_class_model_uses_its_class_names(tmp_path) -> None:
    names = sources.parse_class_names(
        mf.write_class_names_json(tmp_path).read_bytes(), filename="names.json"
    )
    assert names == tuple(mf.TINY_CLASS_NAMES)
    txt = mf.write_class_names_txt(tmp_path).read_bytes()
    assert sources.parse_class_names(txt, filename="names.txt") == names
    loaded = sources.load_user_model(
        "torchvision",
        arch="squeezenet1_1",
        weights=mf.write_tiny_pth(tmp_path),
        class_names=names,
        input_config=sources.InputConfig(input_size=mf.TINY_INPUT_SIZE),
    )
    spec = loaded.spec
    assert spec.categories() == names and spec.facts().num_classes == 10
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert predict(loaded.model, x, categories=spec.categories()).labels[0] in names
    cam_map = attribution.cam(loaded.model, x, layer=spec.preset("cam")[0])
    assert cam_map.map.shape == (64, 64)


def test_a_fixed_size_export_takes_any_size_resized(tmp_path) -> None:
    loaded = sources.load_user_model("export", weights=mf.write_tiny_pt2(tmp_path))
    spec = loaded.spec
    assert spec.preprocessing.input_size == mf.TINY_INPUT_SIZE  # read from the export
    assert spec.preprocessing.fixed_size
    big = torch.rand(2, 3, 100, 90, generator=torch.Generator().manual_seed(1))
    small = torch.nn.functional.interpolate(big, size=(64, 64), mode="bilinear")
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(big), loaded.model(small))
    assert count_hooks(loaded.model) == 0


def test_tiny_export_and_its_derived_presets(tmp_path) -> None:
    loaded = sources.load_user_model(
        "export", weights=mf.write_tiny_pt2(tmp_path),
        input_config=sources.InputConfig(input_size=mf.TINY_INPUT_SIZE, mean=(0, 0, 0),
                                         std=(1, 1, 1)),
    )  # fmt: skip
    spec = loaded.spec
    assert spec.preprocessing.fixed_size and spec.facts().num_classes == mf.TINY_NUM_CLASSES
    assert spec.preset("cam") == ("relu2",) and spec.preset("first_conv") == ("conv1",)
    assert [n.startswith("class ") for n in spec.categories()] == [True] * 10


def test_class_names_must_match_the_outputs(tmp_path) -> None:
    with pytest.raises(sources.ModelFileError, match="lists 3 classes, but the model has 10"):
        sources.load_user_model(
            "torchvision", arch="squeezenet1_1", weights=mf.write_tiny_pth(tmp_path),
            class_names=["a", "b", "c"], input_config=sources.InputConfig(input_size=64),
        )  # fmt: skip


@pytest.mark.parametrize("bad", [b"", b"\xff\xfe not json", b'{"a": 1}', b"[1, 2]"])
def test_bad_class_name_files(bad: bytes) -> None:
    with pytest.raises(sources.ModelFileError):
        sources.parse_class_names(bad, filename="c.json")


# ------------------------------------------------------------------------------------ safety


def test_pickle_payload_is_refused_and_never_runs(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = mf.write_pickle_payload_pt(tmp_path, marker)
    with pytest.raises(sources.UnsafeModelFileError, match="Nothing in it was run"):
        sources.load_user_model("torchvision", arch="squeezenet1_1", weights=path)
    assert not marker.exists()


def test_a_pickled_module_is_refused(tmp_path) -> None:
    with pytest.raises(sources.UnsafeModelFileError, match="state_dict"):
        sources.read_state_dict(mf.write_pickled_module_pt(tmp_path))


@pytest.mark.parametrize("where", ["sample_inputs", "weights"])
def test_a_pt2_carrying_a_pickle_payload_is_refused_before_torch_reads_it(tmp_path, where) -> None:
    marker = tmp_path / f"pwned_{where}"
    path = mf.write_pt2_with_pickle_payload(tmp_path, marker, where=where)
    with pytest.raises(sources.UnsafeModelFileError, match="Refused"):
        sources.exported_model(path)
    assert not marker.exists()


def test_weights_mismatch_lists_the_keys(tmp_path) -> None:
    path = mf.write_squeezenet_mismatch_pth(tmp_path)
    with pytest.raises(sources.WeightsMismatchError) as info:
        sources.load_user_model("torchvision", arch="squeezenet1_1", weights=path)
    old_name, new_name = mf.MISMATCH_RENAMED_KEY
    assert mf.MISMATCH_MISSING_KEY in info.value.missing and old_name in info.value.missing
    assert new_name in info.value.unexpected
    assert "Missing keys (" in str(info.value) and "Unexpected keys (" in str(info.value)


def test_a_10_class_head_with_1000_names_is_caught(tmp_path) -> None:
    path = mf.write_squeezenet_wrong_shape_pth(tmp_path)
    names = registry.imagenet_categories()
    with pytest.raises(sources.ModelFileError, match="lists 1000 classes, but the model has 10"):
        sources.load_user_model("torchvision", arch="squeezenet1_1", weights=path,
                                class_names=names)  # fmt: skip


def _export(net: torch.nn.Module, example: torch.Tensor, path) -> bytes:
    batch = torch.export.Dim("batch")
    program = torch.export.export(net.eval(), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    return path.read_bytes()


def test_wrong_channel_count_and_static_batch_are_explained(tmp_path) -> None:
    gray = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 3),
    )  # fmt: skip
    data = _export(gray, torch.rand(2, 1, 32, 32), tmp_path / "gray.pt2")
    with pytest.raises(sources.ModelFileError, match="fails on a \\(1, 3, 32, 32\\) RGB input"):
        sources.load_user_model("export", weights=data)
    static = mf.write_lite0_pt2(tmp_path / "static", dynamic_batch=False)
    with pytest.raises(sources.ModelFileError, match="dynamic batch dimension"):
        sources.load_user_model("export", weights=static)


@pytest.mark.parametrize(
    "data, match",
    [(b"", "empty"), (b"hello world", "Not a PyTorch weights file"), (b"PK\x03\x04junk", "Cannot")],
)
def test_garbage_weights_files(data: bytes, match: str) -> None:
    with pytest.raises(sources.ModelFileError, match=match):
        sources.read_state_dict(data, filename="w.pt")


def test_torchscript_is_not_offered() -> None:
    buffer = io.BytesIO(b"not a zip")
    with pytest.raises(sources.ModelFileError, match="TorchScript"):
        sources.exported_model(buffer.getvalue())


def test_unknown_architectures() -> None:
    with pytest.raises(ValueError, match="torchvision has no classification model"):
        sources.torchvision_model("resnet_nope", {})
    with pytest.raises(ValueError, match="timm has no architecture"):
        sources.timm_model("resnet_nope")


# -------------------------------------------------------------------------------- ownership


def test_a_user_model_is_freed_with_its_owner(tmp_path) -> None:
    loaded = sources.load_user_model(
        "torchvision", arch="squeezenet1_1", weights=mf.write_tiny_pth(tmp_path),
        input_config=sources.InputConfig(input_size=64),
    )  # fmt: skip
    key = loaded.spec.key
    assert registry.load_model(key) is loaded.model
    del loaded
    gc.collect()
    with pytest.raises(ValueError, match="no longer loaded"):
        registry.get_spec(key)
    assert key not in registry.list_models()
