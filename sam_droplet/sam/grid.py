"""``grid`` mode: SAM's automatic mask generator, the way the original app used it.

A regular grid of point prompts covers the image (and, with ``crop_n_layers``, overlapping crops of
it); every prompt is decoded and its masks are upsampled to full resolution, scored and deduplicated
by SAM's own code. It finds objects of any kind, not only droplets, at a much higher cost than the
droplet-prompted ``sam`` mode; it is here for comparison and for non-droplet objects.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.instances import Instance
from .model import LoadedModel, sam_package

__all__ = ["GridStats", "generate_masks", "segment_grid"]


def generate_masks(generator: Any, image: np.ndarray) -> list[dict[str, Any]]:
    """``generator.generate(image)``, returning no masks where SAM's generator crashes on none.

    With crop layers, a generator whose every crop keeps zero masks fails in its cross-crop
    de-duplication (``box_area`` of an empty tensor; segment-anything issue 614, sam2 issue 681).
    That case means "no masks"; any other error propagates.
    """
    try:
        return generator.generate(image)
    except IndexError as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        if frames and frames[-1].name == "box_area":
            return []
        raise


def _check_before(generator: Any, method: str, check: Callable[[str], None]) -> None:
    """Call ``check("grid")`` before each call of the generator's ``method`` (its crops and its
    prompt batches are the units of work the generator loops over)."""
    original = getattr(generator, method)

    def checked(*args: Any, **kwargs: Any) -> Any:
        check("grid")
        return original(*args, **kwargs)

    setattr(generator, method, checked)


@dataclass
class GridStats:
    """What the mask generator did."""

    points_per_side: int
    crop_n_layers: int
    masks: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"points_per_side": self.points_per_side, "crop_n_layers": self.crop_n_layers, "masks": self.masks}


def segment_grid(
    model: LoadedModel,
    rgb8: np.ndarray,
    points_per_side: int = 32,
    crop_n_layers: int = 1,
    points_per_batch: int = 64,
    check: Callable[[str], None] | None = None,
) -> tuple[list[Instance], GridStats]:
    """Run SAM's automatic mask generator and return its masks as crop instances.

    Args:
        model: the loaded SAM model.
        rgb8: HxWx3 uint8 image.
        points_per_side: prompts along each side of the image (and of each crop).
        crop_n_layers: layers of overlapping crops (0 = the whole image only).
        points_per_batch: prompts decoded at once.
        check: called before each crop's encoding and each batch of prompts; raise in it to stop.
    """
    import torch

    generator_cls = sam_package(model.model_type).SamAutomaticMaskGenerator
    generator = generator_cls(
        model.sam,
        points_per_side=points_per_side,
        crop_n_layers=crop_n_layers,
        points_per_batch=points_per_batch,
        output_mode="binary_mask",
    )
    if check is not None:
        _check_before(generator, "_process_crop", check)
        _check_before(generator, "_process_batch", check)
    stats = GridStats(points_per_side=points_per_side, crop_n_layers=crop_n_layers)
    with torch.inference_mode(), model.autocast():
        records = generate_masks(generator, rgb8)
    instances: list[Instance] = []
    for rec in records:
        x, y, w, h = (round(float(v)) for v in rec["bbox"])
        mask = rec["segmentation"][y : y + h + 1, x : x + w + 1]
        score = float(rec.get("predicted_iou", 1.0)) * float(rec.get("stability_score", 1.0))
        inst = Instance(x, y, mask.copy(), score=min(max(score, 0.0), 1.0), source="grid").tight()
        if inst is not None:
            inst.center = ((inst.x0 + inst.x1) / 2, (inst.y0 + inst.y1) / 2)
            inst.radius = float(np.sqrt(inst.area / np.pi))
            instances.append(inst)
    stats.masks = len(instances)
    return instances, stats
