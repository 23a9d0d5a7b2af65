"""Every page on a user model (issue 12), under AppTest: a 10-class torchvision model with its own
class names, and a torch.export archive, each held by the session as the sidebar would hold it.

The sidebar upload itself is a browser test (tests/e2e/test_browser_user_model.py): AppTest cannot
drive a file uploader.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests import model_files as mf
from vizcore.models import registry, sources

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
PAGES = (
    "pages/1_Filters_and_activations.py",
    "pages/2_Feature_space.py",
    "pages/3_Attribution.py",
    "pages/4_Feature_visualization.py",
    "pages/5_Adversarial_examples.py",
    "pages/6_Texture_and_style.py",
    "pages/8_Unit.py",
)


def assert_ok(at: AppTest) -> None:
    assert not at.exception, [exc.value for exc in at.exception]


@pytest.fixture(autouse=True)
def small_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIZCORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VIZCORE_GALLERY_PER_PHOTO", "2")
    from vizui import gallery_view

    gallery_view.builtin.clear()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> sources.UserModel:
    folder = tmp_path_factory.mktemp("tiny")
    names = sources.parse_class_names(mf.write_class_names_txt(folder).read_bytes())
    return sources.load_user_model(
        "torchvision",
        arch="squeezenet1_1",
        weights=mf.write_tiny_pth(folder),
        class_names=names,
        input_config=sources.InputConfig(input_size=mf.TINY_INPUT_SIZE),
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> sources.UserModel:
    folder = tmp_path_factory.mktemp("pt2")
    return sources.load_user_model(
        "export",
        weights=mf.write_tiny_pt2(folder),
        input_config=sources.InputConfig(input_size=mf.TINY_INPUT_SIZE, mean=(0, 0, 0),
                                         std=(1, 1, 1)),
    )  # fmt: skip


def _app(held: sources.UserModel) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["vz_user_model"] = held
    at.session_state["vz_model"] = held.spec.key
    at.run()
    assert_ok(at)
    return at


def _click(at: AppTest, key: str) -> None:
    buttons = [b for b in at.button if b.key == key]
    assert buttons, (key, [b.key for b in at.button])
    buttons[0].click().run()
    assert_ok(at)


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [s.value for s in at.subheader] + [e.value for e in at.error]
    parts += [s.value for s in at.success] + [w.value for w in at.warning]
    return " ".join(str(p) for p in parts)


def test_home_predicts_with_the_models_own_class_names(tiny) -> None:
    at = _app(tiny)
    assert at.selectbox(key="frame_model").value == tiny.spec.key
    says = next(m.value for m in at.markdown if " says: " in m.value)
    assert any(f"**{name}**" in says for name in mf.TINY_CLASS_NAMES), says
    assert "ImageNet class" not in says


@pytest.mark.parametrize("which", ["tiny", "exported"])
def test_every_page_renders_for_a_user_model(which, request) -> None:
    held = request.getfixturevalue(which)
    at = _app(held)
    for page in PAGES:
        at.switch_page(page).run()
        assert_ok(at)


def test_attribution_page_uses_the_models_classes_and_runs(tiny) -> None:
    at = _app(tiny)
    at.switch_page("pages/3_Attribution.py").run()
    assert_ok(at)
    text = _texts(at)
    assert any(name in text for name in mf.TINY_CLASS_NAMES), text[:500]
    _click(at, "attribution_run")
    assert not at.error, [e.value for e in at.error]


def test_feature_visualization_and_adversarial_run(tiny) -> None:
    at = _app(tiny)
    at.switch_page("pages/4_Feature_visualization.py").run()
    for key in ("featvis_cv_start", "featvis_nv_start", "featvis_inv_start", "featvis_dd_start"):
        _click(at, key)
    at.switch_page("pages/5_Adversarial_examples.py").run()
    _click(at, "adversarial_start")
    text = _texts(at)
    assert any(name in text for name in mf.TINY_CLASS_NAMES), text[:500]


def test_filters_feature_space_and_style_run(exported) -> None:
    at = _app(exported)
    at.switch_page("pages/1_Filters_and_activations.py").run()
    _click(at, "filters_patch_scan")
    at.switch_page("pages/2_Feature_space.py").run()
    _click(at, "fspace_extract")
    at.switch_page("pages/6_Texture_and_style.py").run()
    _click(at, "texture_style_go")
    _click(at, "gatys_style_go")


def test_another_session_never_sees_the_model(tiny) -> None:
    mine = _app(tiny)
    assert tiny.spec.label in mine.selectbox(key="frame_model").options  # formatted labels
    theirs = AppTest.from_file(APP, default_timeout=240).run()
    assert_ok(theirs)
    options = theirs.selectbox(key="frame_model").options
    assert tiny.spec.label not in options and not any("(yours)" in o for o in options)
    assert registry.get_spec(tiny.spec.key).user


def test_upload_can_be_turned_off(monkeypatch) -> None:
    monkeypatch.setenv("VIZCORE_ALLOW_MODEL_UPLOAD", "0")
    at = AppTest.from_file(APP, default_timeout=240).run()
    assert_ok(at)
    assert any("turned off" in c.value for c in at.caption)
    assert not [b for b in at.button if b.key == "um_load"]


def test_weights_uploader_states_the_limit_the_server_enforces() -> None:
    """Streamlit's server refuses an upload over ``server.maxUploadSize`` whatever a widget
    says, so the form must not promise more (it said "Up to 500 MB" with a 50 MB server cap)."""
    import streamlit as st

    at = AppTest.from_file(APP, default_timeout=240).run()
    assert_ok(at)
    server_mb = int(st.get_option("server.maxUploadSize"))
    limit = min(server_mb, sources.MAX_MODEL_BYTES // 2**20)
    uploader = at.get("file_uploader")
    weights = next(u for u in uploader if u.proto.id.endswith("um_file_torchvision"))
    assert f"Up to {limit} MB by upload" in weights.help, weights.help
    assert "VIZCORE_MODEL_DIR" in weights.help  # where a bigger file goes
    assert weights.proto.max_upload_size_mb == limit <= server_mb
