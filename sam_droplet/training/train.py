"""Train or fine-tune the droplet model: ``sam-droplet train DATA_DIR... --out FILE``.

Patches are drawn on the fly (:class:`.data.PatchSampler`) from labelled pictures and generated
ones, so nothing is stored but the weights. After each epoch the model segments the held-back
pictures whole (every scale, as in use) and reports their F1 at IoU 0.5; the epoch with the best
validation F1 is written. With the same ``seed``, data, thread count and torch build, two runs give
the same weights.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import GENERATED_KINDS, LabelledImage, PatchSampler, generated_images, read_labelled

__all__ = ["TrainConfig", "evaluate_net", "train"]


@dataclass
class TrainConfig:
    """What :func:`train` does.

    Attributes:
        data: labelled folders (label PNGs, ImageJ ROI zips, COCO JSON).
        out: where the weights go.
        init: start from these weights (``"shipped"`` for the package's), or None for random ones.
        generated: generated pictures mixed in (cycling through the looks of :data:`.data.GENERATED_KINDS`).
        epochs, steps, batch, patch: epochs, optimiser steps per epoch, patches per step, patch side.
        lr: peak learning rate (cosine decay to a twentieth).
        seed: seeds patches, augmentations, the split and the initial weights.
        val_fraction: labelled pictures held back for validation (at least one when there are two).
        val_generated: generated pictures held back (one per look by default).
        threads: torch threads (0: torch's default).
    """

    data: list[Path] = field(default_factory=list)
    out: Path = Path("droplet_net.pt")
    init: str | None = None
    generated: int = 0
    epochs: int = 10
    steps: int = 200
    batch: int = 12
    patch: int = 128
    lr: float = 2e-3
    seed: int = 0
    val_fraction: float = 0.2
    val_generated: int = len(GENERATED_KINDS)
    threads: int = 0


def _val_view(item: LabelledImage, side: int = 1024) -> LabelledImage:
    """The central ``side`` x ``side`` window (bounds validation time on large pictures)."""
    h, w = item.labels.shape
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return LabelledImage(
        item.image[y0 : y0 + side, x0 : x0 + side], item.labels[y0 : y0 + side, x0 : x0 + side], item.name
    )


def evaluate_net(loaded: Any, items: list[LabelledImage]) -> dict[str, float]:
    """Micro-averaged precision, recall and F1 (IoU 0.5, border droplets ignored) of the model on ``items``."""
    from ..engine.detect.learned import detect_with_net
    from ..engine.instances import paint_labels, resolve_overlaps
    from ..tools.evaluate import match_instances

    tp = fp = fn = 0
    for item in items:
        instances, _ = resolve_overlaps(detect_with_net(item.image, loaded, even_light=False))
        pred = paint_labels(instances, item.labels.shape)
        m = match_instances(item.labels, pred)
        tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def train(config: TrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train (or fine-tune) and write the best epoch's weights to ``config.out``.

    Returns:
        ``{"out", "history": [{"epoch", "loss", "val_precision", "val_recall", "val_f1", "seconds"}],
        "best_epoch", "version"}``; ``version`` is the weights' name the service reports
        (:func:`~sam_droplet.modeling.weights_version`).

    Raises:
        ValueError: no training data, or a folder without labelled pictures.
        DropletModelError: ``config.init`` cannot be loaded.

    Training switches torch to deterministic algorithms (and ``config.threads`` threads) for its
    own run only: the caller's settings are restored when it ends, however it ends.
    """
    import torch

    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    try:
        torch.use_deterministic_algorithms(True)
        return _train(config, progress)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def _train(config: TrainConfig, progress: bool) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from ..modeling.droplet_net import (
        DropletNet,
        LoadedDropletNet,
        load_droplet_net,
        save_droplet_net,
        weights_version,
    )

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    labelled = read_labelled(config.data) if config.data else []
    order = rng.permutation(len(labelled))
    n_val = round(config.val_fraction * len(labelled)) if len(labelled) > 1 else 0
    if config.val_fraction > 0 and len(labelled) > 1:
        n_val = max(1, n_val)
    val = [labelled[i] for i in order[:n_val]]
    train_items = [labelled[i] for i in order[n_val:]]
    if config.generated:
        train_items += generated_images(config.generated, seed=config.seed)
    if not train_items:
        raise ValueError("nothing to train on: give labelled folders, --generated N, or both")
    val_generated = generated_images(config.val_generated, seed=config.seed + 500) if config.generated else []
    val_items = [_val_view(v) for v in val + val_generated]

    if config.init:
        start = load_droplet_net(None if config.init == "shipped" else config.init, for_training=True)
        net = start.net
        init_name = f"{start.path.name} ({start.version})"
    else:
        net = DropletNet()
        init_name = None
    net = net.cpu().train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    total = config.epochs * config.steps
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=config.lr,
        total_steps=max(total, 1),
        pct_start=0.1 if not config.init else 0.02,
        div_factor=10.0,
        final_div_factor=2.0,  # from a tenth of the peak up, down to a twentieth
    )
    bce = torch.nn.BCEWithLogitsLoss()
    sampler = PatchSampler(train_items, patch=config.patch, rng=rng)
    history: list[dict[str, Any]] = []
    best = (-1.0, 0)
    best_state = None
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        net.train()
        losses = []
        bar = tqdm(
            range(config.steps),
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
        )
        for _ in bar:
            patches = [sampler.sample() for _ in range(config.batch)]
            x = torch.from_numpy(np.stack([p[0] for p in patches]))[:, None]
            fg = torch.from_numpy(np.stack([p[1] for p in patches]))
            cen = torch.from_numpy(np.stack([p[2] for p in patches]))
            out = net(x)
            loss = bce(out[:, 0], fg) + bce(out[:, 1], cen)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        net.eval()
        scores = (
            evaluate_net(LoadedDropletNet(net, torch.device("cpu"), config.out, "training"), val_items)
            if val_items
            else None
        )
        row = {
            "epoch": epoch,
            "loss": round(float(np.mean(losses)), 5) if losses else None,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        if scores:
            row.update({f"val_{k}": round(v, 4) for k, v in scores.items()})
        history.append(row)
        f1 = scores["f1"] if scores else float(epoch)
        if progress:
            shown = (
                f" · val F1 {scores['f1']:.3f} (P {scores['precision']:.3f}, R {scores['recall']:.3f})"
                if scores
                else ""
            )
            print(
                f"epoch {epoch}/{config.epochs}: loss {row['loss']}{shown} · {row['seconds']} s",
                file=sys.stderr,
                flush=True,
            )
        if f1 >= best[0]:
            best = (f1, epoch)
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    assert best_state is not None
    net.load_state_dict(best_state)
    meta = {
        "trained_on": [str(p) for p in config.data]
        + ([f"{config.generated} generated pictures"] if config.generated else []),
        "init": init_name,
        "config": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k not in ("data", "out")
        },
        "validation": {"pictures": [v.name for v in val_items], "best_epoch": best[1], "history": history},
        "torch": torch.__version__,
    }
    meta["config"]["data"] = [str(p) for p in config.data]
    save_droplet_net(net.eval(), config.out, meta)
    return {
        "out": str(config.out),
        "history": history,
        "best_epoch": best[1],
        "version": weights_version(net.state_dict()),
    }
