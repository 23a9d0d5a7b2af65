"""Train a conditional fast-style network (Johnson et al. 2016 + Dumoulin et al. 2017).

Usage (the shipped preset; ``vizcore/data/styles/README.md`` has the exact command and numbers)::

    vizcore train-style --styles marble mosaic gravel --steps 1500 \
        --loss-model squeezenet1_1 --size 160 --batch 4 --out vizcore/data/styles/fast_styles.pt

Training images are random crops and flips of the bundled photos (``vizcore/data/samples``, kind
"photo"), or of every image in ``--images DIR``. Styles are names of generated patterns
(:data:`vizcore.style.patterns.STYLE_PATTERNS`), bundled samples (``gravel``, ``brick``,
``grass``), or image files. The loss is the Gram style loss plus the relative content loss and a
total-variation term of :mod:`vizcore.style.gram`, on the frozen loss network. One style per
step, round-robin, so every style's conditional-instance-norm parameters get trained. A GPU is used
when one is present; otherwise it trains on CPU. Checkpoints (``<out>.ckpt``) allow ``--resume``.
``python -m vizcore.style.train`` takes the same options.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image

from vizcore.core import devices
from vizcore.core.hooks import inference_session
from vizcore.data import images
from vizcore.models import registry
from vizcore.style import gram
from vizcore.style.fast_style import TransformNet, save_preset
from vizcore.style.patterns import STYLE_PATTERNS

logger = logging.getLogger(__name__)

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def load_style_image(name: str, size: int = 256) -> Image.Image:
    """A style image by name: a generated pattern, a bundled sample, or an image file."""
    if name in STYLE_PATTERNS:
        return STYLE_PATTERNS[name](size, seed=0)
    path = Path(name)
    image = images.load_image(path) if path.is_file() else images.load_sample(name)
    return images.resize_center_crop(image, size=size)


def load_training_images(folder: Path | None, max_side: int = 512) -> list[Image.Image]:
    """The user's folder of images, or the bundled photos; each shrunk to at most ``max_side``."""
    if folder is None:
        sources: list[Path] = [s.path for s in images.list_samples("photo")]
    else:
        sources = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    loaded = []
    for path in sources:
        try:
            image = images.load_image(path)
        except images.ImageLoadError as exc:
            logger.warning("Skipping %s: %s", path, exc)
            continue
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
        loaded.append(image)
    if not loaded:
        raise ValueError(f"No usable training images in {folder or images.SAMPLES_DIR}.")
    return loaded


def random_batch(
    pool: Sequence[torch.Tensor], batch: int, size: int, generator: torch.Generator
) -> torch.Tensor:
    """Random rescaled crops with horizontal flips, ``(batch, 3, size, size)`` in [0, 1]."""
    crops = []
    for _ in range(batch):
        img = pool[int(torch.randint(len(pool), (1,), generator=generator))]
        h, w = img.shape[-2:]
        short = min(h, w)
        scale = float(torch.empty(1, device="cpu").uniform_(size / short, 1.0, generator=generator))
        side = max(size, round(short * scale))
        top = int(torch.randint(h - side + 1, (1,), generator=generator))
        left = int(torch.randint(w - side + 1, (1,), generator=generator))
        crop = img[None, :, top : top + side, left : left + side]
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True)
        if bool(torch.rand(1, generator=generator) < 0.5):
            crop = crop.flip(-1)
        crops.append(crop)
    return torch.cat(crops).clamp(0, 1)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored in the preset's JSON sidecar)."""

    styles: tuple[str, ...]
    loss_model: str = "squeezenet1_1"
    style_layers: tuple[str, ...] | None = None
    content_layer: str | None = None
    style_weight: float = 10.0
    content_weight: float = 1.0
    tv_weight: float = 10.0
    size: int = 160
    style_size: int = 256
    batch: int = 4
    steps: int = 1500
    lr: float = 2e-3
    norm_lr_mult: float = 10.0
    width: int = 16
    blocks: int = 5
    seed: int = 0


def train(
    config: TrainConfig,
    out: Path,
    *,
    image_folder: Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 200,
    log_every: int = 20,
) -> dict:
    """Train and save the preset at ``out`` (plus ``out.json``); return the training summary."""
    device = devices.default_device()  # VIZCORE_DEVICE, else CUDA, MPS, CPU
    eager = device.type == "cpu"  # accelerators: losses read at the log steps only
    spec = registry.get_spec(config.loss_model)
    style_layers = config.style_layers or spec.preset("style")
    content_layer = config.content_layer or spec.preset("content")[0]
    # Loaded on the device (its own copy there): the shared model is never moved in place.
    loss_net = registry.load_model(config.loss_model, device=device)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # weight initialization of the fresh network only

    photos = load_training_images(image_folder)
    pool = [images.to_tensor01(p)[0] for p in photos]
    logger.info(
        "%d training images, %d styles on %s (%s)",
        len(pool),
        len(config.styles),
        config.loss_model,
        device,
    )

    net = TransformNet(len(config.styles), width=config.width, blocks=config.blocks).to(device)
    optimizer = _optimizer(net, config)
    ckpt_path = out.with_suffix(".ckpt")
    start_step, elapsed_before, history = 0, 0.0, []
    if resume and ckpt_path.is_file():
        start_step, elapsed_before, history = _resume(ckpt_path, net, optimizer, device)
        generator.manual_seed(config.seed + start_step)
        logger.info("Resumed from %s at step %d", ckpt_path, start_step)

    with inference_session(loss_net):
        targets = [
            gram.gram_targets(
                loss_net,
                images.to_tensor01(load_style_image(s, config.style_size)).to(device),
                style_layers,
            )
            for s in config.styles
        ]
        losses = _Losses(loss_net, targets, tuple(style_layers), content_layer, config)
        started = time.perf_counter()
        running = {"style": 0.0, "content": 0.0, "tv": 0.0}
        step = start_step
        for step in range(start_step + 1, config.steps + 1):
            s = (step - 1) % len(config.styles)
            x = random_batch(pool, config.batch, config.size, generator).to(device)
            parts = losses.step(net, optimizer, x, s, eager=eager, step=step)
            for key, part in parts.items():
                running[key] += part.item() if eager else part.detach()  # type: ignore[assignment]
            if step % log_every == 0 or step == config.steps:
                seconds = time.perf_counter() - started
                entry = _log_entry(running, step, log_every, elapsed_before + seconds)
                history.append(entry)
                logger.info(
                    "step %d/%d  style %.4f  content %.4f  tv %.5f  %.1f img/s  %.0f s",
                    step,
                    config.steps,
                    entry["style"],
                    entry["content"],
                    entry["tv"],
                    (step - start_step) * config.batch / seconds,
                    entry["seconds"],
                )
                running = dict.fromkeys(running, 0.0)
            if step % checkpoint_every == 0 or step == config.steps:
                seconds = elapsed_before + time.perf_counter() - started
                _save_checkpoint(ckpt_path, net, optimizer, step, seconds, history)
    total_seconds = elapsed_before + time.perf_counter() - started
    summary = {
        "loss_model": config.loss_model,
        "style_layers": list(style_layers),
        "content_layer": content_layer,
        "config": {k: v for k, v in config.__dict__.items() if k != "styles"},
        "training_images": len(pool) if image_folder else "bundled photos",
        "steps": step,
        "seconds": round(total_seconds, 1),
        "device": str(device),
        "final_losses": history[-1] if history else {},
        "first_losses": history[0] if history else {},
    }
    save_preset(net.cpu().eval(), out, config.styles, summary)
    logger.info("Saved %s (%.0f s)", out, total_seconds)
    return summary


def _optimizer(net: TransformNet, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam, with a larger step for the per-style norms.

    The per-style scales and shifts carry the styles (Dumoulin et al.); a larger step for them
    lets the styles separate within the few hundred steps a CPU run affords.
    """
    norm_params = [p for n, p in net.named_parameters() if ".norm" in n]
    other_params = [p for n, p in net.named_parameters() if ".norm" not in n]
    return torch.optim.Adam(
        [
            {"params": other_params, "lr": config.lr},
            {"params": norm_params, "lr": config.lr * config.norm_lr_mult},
        ]
    )


def _resume(
    ckpt_path: Path, net: TransformNet, optimizer: torch.optim.Optimizer, device: torch.device
) -> tuple[int, float, list[dict]]:
    """Load a checkpoint (tensors only) into ``net`` and ``optimizer``: (step, seconds, history)."""
    ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
    net.load_state_dict(ckpt["net"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return int(ckpt["step"]), float(ckpt["seconds"]), list(ckpt.get("history", []))


def _save_checkpoint(
    path: Path,
    net: TransformNet,
    optimizer: torch.optim.Optimizer,
    step: int,
    seconds: float,
    history: list[dict],
) -> None:
    state = {
        "net": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "seconds": seconds,
        "history": history,
    }
    torch.save(state, path)


@dataclass(frozen=True)
class _Losses:
    """Johnson et al.'s perceptual loss on the frozen loss network: style + content + TV."""

    loss_net: torch.nn.Module
    targets: list
    style_layers: tuple[str, ...]
    content_layer: str
    config: TrainConfig

    def step(
        self,
        net: TransformNet,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        style: int,
        *,
        eager: bool,
        step: int,
    ) -> dict[str, torch.Tensor]:
        """One optimizer step on batch ``x`` for style index ``style``; the three loss terms."""
        config = self.config
        with torch.no_grad():
            content_target = gram.extract_features(self.loss_net, x, (self.content_layer,))
        y = net(x, style)
        feats = gram.extract_features(self.loss_net, y, (*self.style_layers, self.content_layer))
        l_style = gram.style_loss(feats, self.targets[style])
        l_content = gram.content_loss(feats[self.content_layer], content_target[self.content_layer])
        l_tv = gram.total_variation(y)
        loss = (
            config.style_weight * l_style
            + config.content_weight * l_content
            + config.tv_weight * l_tv
        )
        if eager and not math.isfinite(loss.item()):
            raise FloatingPointError(f"Loss became {loss.item()} at step {step}.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"style": l_style, "content": l_content, "tv": l_tv}


def _log_entry(running: dict, step: int, log_every: int, seconds: float) -> dict:
    """The mean losses since the last log step, checked finite, for the history."""
    totals = {k: float(v) for k, v in running.items()}
    if not all(math.isfinite(v) for v in totals.values()):
        raise FloatingPointError(f"The loss became non-finite by step {step}.")
    n = log_every if step % log_every == 0 else step % log_every
    return {
        "step": step,
        **{k: round(v / n, 5) for k, v in totals.items()},
        "seconds": round(seconds, 1),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vizcore.style.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the trainer's options to ``p`` (also used by ``vizcore train-style``)."""
    p.add_argument("--styles", nargs="+", required=True, help="pattern names, samples or files")
    p.add_argument(
        "--out", type=Path, required=True, help="preset path, e.g. vizcore/data/styles/x.pt"
    )
    p.add_argument("--images", type=Path, default=None, help="folder of training images")
    p.add_argument("--loss-model", default="squeezenet1_1", choices=list(registry.MODELS))
    p.add_argument("--style-layers", nargs="+", default=None)
    p.add_argument("--content-layer", default=None)
    p.add_argument("--style-weight", type=float, default=10.0)
    p.add_argument("--content-weight", type=float, default=1.0)
    p.add_argument("--tv-weight", type=float, default=10.0)
    p.add_argument("--size", type=int, default=160, help="training crop size")
    p.add_argument("--style-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument(
        "--norm-lr-mult", type=float, default=10.0, help="learning-rate factor for the CIN params"
    )
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--resume", action="store_true", help="continue from <out>.ckpt")
    p.add_argument(
        "--export",
        action="store_true",
        help="write the preset from <out>.ckpt as it is (stop a long run early) and exit",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; progress goes to stdout through logging."""
    return run(_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Train (or ``--export``) with the options :func:`add_arguments` declared; returns 0."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps
    if args.export:
        ckpt_path = args.out.with_suffix(".ckpt")
        if not ckpt_path.is_file():
            raise SystemExit(f"No checkpoint {ckpt_path} to export.")
        steps = int(torch.load(ckpt_path, map_location="cpu", weights_only=True)["step"])
    config = TrainConfig(
        styles=tuple(args.styles),
        loss_model=args.loss_model,
        style_layers=tuple(args.style_layers) if args.style_layers else None,
        content_layer=args.content_layer,
        style_weight=args.style_weight,
        content_weight=args.content_weight,
        tv_weight=args.tv_weight,
        size=args.size,
        style_size=args.style_size,
        batch=args.batch,
        steps=steps,
        lr=args.lr,
        norm_lr_mult=args.norm_lr_mult,
        width=args.width,
        blocks=args.blocks,
        seed=args.seed,
    )
    train(
        config,
        args.out,
        image_folder=args.images,
        resume=args.resume or args.export,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
