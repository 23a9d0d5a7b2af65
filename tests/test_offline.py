"""One offline switch: the gallery and the torchvision zoo read VIZCORE_OFFLINE the same way."""

from __future__ import annotations

import pytest

from vizcore.core import offline
from vizcore.data import datasets
from vizcore.models import torchvision_zoo


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", False), ("0", False), ("false", False), ("No", False), ("OFF", False),
     ("1", True), ("true", True), ("yes", True), ("on", True), ("2", True), ("offline", True)],
)  # fmt: skip
def test_every_module_reads_the_switch_the_same_way(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv(offline.OFFLINE_ENV, value)
    assert offline.is_offline() is expected
    assert datasets.is_offline() is expected
    assert torchvision_zoo.is_offline() is expected


def test_unset_means_online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(offline.OFFLINE_ENV, raising=False)
    assert not offline.is_offline()
    assert datasets.is_offline is torchvision_zoo.is_offline is offline.is_offline
