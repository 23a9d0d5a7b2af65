"""Top-k ImageNet predictions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vizcore.core.checks import check_image_batch, check_int
from vizcore.core.devices import to_model_device
from vizcore.core.hooks import inference_session


@dataclass(frozen=True)
class Prediction:
    """The model's top-k classes for one image, most probable first."""

    indices: np.ndarray
    probabilities: np.ndarray
    labels: tuple[str, ...]

    @property
    def top1(self) -> tuple[int, str, float]:
        """``(class index, label, probability)`` of the most probable class."""
        return int(self.indices[0]), self.labels[0], float(self.probabilities[0])


def predict(
    model: nn.Module,
    x: torch.Tensor,
    *,
    top_k: int = 5,
    categories: Sequence[str] | None = None,
) -> Prediction:
    """Softmax probabilities of the top ``top_k`` classes for one image ``x`` of shape (1, 3, H, W).

    Args:
        model: Classifier taking RGB in [0, 1].
        x: The image batch; must hold exactly one image.
        top_k: How many classes to return (1 to the number of classes).
        categories: Class names, one per output; default: the ImageNet names for a 1,000-way
            head, else ``class 0``, ``class 1``, ...

    Raises:
        ValueError: ``x`` is not a single RGB image in [0, 1] (see
            :func:`vizcore.core.checks.check_image_batch`) or ``top_k`` is out of range.
    """
    check_image_batch(x, model=model)
    top_k = check_int("top_k", top_k, minimum=1)
    with inference_session(model), torch.inference_mode():
        probs = torch.softmax(model(to_model_device(model, x)).float(), dim=1)[0].cpu()
    if not 1 <= top_k <= probs.numel():
        raise ValueError(f"top_k must be between 1 and {probs.numel()}, got {top_k}.")
    if categories is None:
        from vizcore.models.registry import imagenet_categories

        n = probs.numel()
        categories = imagenet_categories() if n == 1000 else [f"class {i}" for i in range(n)]
    if len(categories) != probs.numel():
        raise ValueError(f"{len(categories)} class names for a model with {probs.numel()} outputs.")
    values, indices = probs.topk(top_k)
    idx = indices.numpy()
    return Prediction(
        indices=idx,
        probabilities=values.numpy(),
        labels=tuple(categories[i] for i in idx),
    )
