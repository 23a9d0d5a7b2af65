"""The adversarial page under AppTest: Stop keeps the attack so far, where a missed target ended
up, the least likely class, and why an untargeted attack looks weak (issue 19 item 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.runtime.scriptrunner_utils.exceptions import StopException
from streamlit.testing.v1 import AppTest

from vizcore.core import progress
from vizcore.optvis import adversarial

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
ADVERSARIAL = "pages/5_Adversarial_examples.py"


def assert_ok(at: AppTest) -> None:
    assert not at.exception, [exc.value for exc in at.exception]
    assert not at.error, [err.value for err in at.error]


def verdicts(at: AppTest) -> list[str]:
    return [m.value for m in (*at.success, *at.warning)]


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


@pytest.fixture
def page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page(ADVERSARIAL).run()
    assert_ok(at)
    return at


def test_stop_keeps_the_attack_so_far_and_names_the_button(page, monkeypatch) -> None:
    at = page
    at.slider(key="adversarial_steps").set_value(2)
    at.button(key="adversarial_start").click().run()  # an older, finished attack
    assert_ok(at)
    assert any("2 step(s)" in v for v in verdicts(at)), verdicts(at)

    real_report = progress.report

    def stop_at_step_3(on_step, info):  # what Streamlit does when Stop is clicked mid-run
        go_on = real_report(on_step, info)
        if info.step == 3:
            raise StopException()
        return go_on

    monkeypatch.setattr(adversarial, "report", stop_at_step_3)
    at.slider(key="adversarial_steps").set_value(8)
    at.button(key="adversarial_start").click().run()
    monkeypatch.undo()
    at.run()  # the rerun that Stop triggers
    assert_ok(at)
    texts = verdicts(at)
    assert any("Stopped at step 3 of 8" in v and "Press **Attack**" in v for v in texts), texts
    assert not any("Press Start" in v for v in texts), texts
    assert any("(stopped early), 3 step(s)" in v for v in texts), texts  # not the old result
    assert len(at.dataframe) == 2
    assert not any("settings have changed" in c for c in captions(at))
    # Kept: another rerun still shows the stopped attack, now without the Stop message.
    at.run()
    assert_ok(at)
    assert any("(stopped early), 3 step(s)" in v for v in verdicts(at)), verdicts(at)
    assert not any("Stopped at step" in v for v in verdicts(at))


def test_an_attack_stopped_by_a_model_switch_is_dropped(page, monkeypatch) -> None:
    at = page

    def stop_at_step_2(on_step, info):
        progress.report(on_step, info)
        if info.step == 2:
            raise StopException()
        return True

    monkeypatch.setattr(adversarial, "report", stop_at_step_2)
    at.button(key="adversarial_start").click().run()
    monkeypatch.undo()
    at.selectbox(key="frame_model").set_value("squeezenet1_1").run()
    assert_ok(at)
    assert not any("Stopped at step" in v for v in verdicts(at)), verdicts(at)
    assert any("another model or image" in c for c in captions(at)), captions(at)
    assert at.info  # nothing to show: no EfficientNet result under SqueezeNet


def test_a_missed_target_shows_its_rank_and_the_least_likely_class(page) -> None:
    at = page
    at.radio(key="adversarial_method").set_value("fgsm").run()
    at.slider(key="adversarial_eps").set_value(1)
    at.selectbox(key="adversarial_target").set_value(adversarial.LEAST_LIKELY)
    at.button(key="adversarial_start").click().run()
    assert_ok(at)
    texts = verdicts(at)
    assert any("toward the least likely class, **" in v and "did not succeed" in v for v in texts)
    standing = [c for c in captions(at) if c.startswith("Target **")]
    assert len(standing) == 2, captions(at)  # below the top-5 before and after
    assert " rank 1000 of 1000" in standing[0], standing  # least likely on the original
    assert "probability" in standing[1]


def test_untargeted_attack_says_it_crosses_the_nearest_boundary(page) -> None:
    at = page
    at.toggle(key="adversarial_targeted").set_value(False)
    at.slider(key="adversarial_steps").set_value(3)
    at.button(key="adversarial_start").click().run()
    assert_ok(at)
    assert any(v.startswith("PGD untargeted") for v in verdicts(at)), verdicts(at)
    notes = [c for c in captions(at) if "nearest decision boundary" in c]
    assert notes and "was already number 2 on the original" in notes[0], captions(at)
    assert "least likely class" in notes[0]
