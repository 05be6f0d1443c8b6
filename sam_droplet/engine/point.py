"""One droplet at a point: what the page asks for when a person clicks a droplet that was missed.

The person's click is evidence that a droplet is there, so the search is local and more lenient
than the whole-image detector: the classical detector runs on a window around the point with
relaxed acceptance thresholds and the droplet containing the point is taken. In sam mode the
engine then prompts SAM with it (:meth:`sam_droplet.sam.refine.SamRefiner.at_point`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .detect import DetectionParams, detect_droplets
from .instances import Instance

__all__ = ["PointQuery", "detect_at_point"]

DEFAULT_DIAMETER_PX = 40.0  # search scale when neither the client nor the cache knows the droplet size
MIN_WINDOW_PX = 96
MAX_WINDOW_PX = 1024


@dataclass(frozen=True)
class PointQuery:
    """Where to look and at what scale.

    Attributes:
        x, y: the point in image pixels (column, row).
        diameter_px: typical droplet diameter in the image (None: unknown).
        appearance: detector cue (auto, rim, bright, dark).
    """

    x: float
    y: float
    diameter_px: float | None = None
    appearance: str = "auto"

    @property
    def scale_px(self) -> float:
        return float(self.diameter_px) if self.diameter_px else DEFAULT_DIAMETER_PX


def _lenient_params(query: PointQuery) -> DetectionParams:
    d = query.diameter_px
    return DetectionParams(
        appearance=query.appearance,
        min_diameter_px=max(4.0, 0.3 * d) if d else 5.0,
        max_diameter_px=3.0 * d if d else None,
        min_rim_support=0.35,
        min_edge_support=0.3,
        min_roundness=0.6,
        min_fit_support=0.25,
        min_fit_score=0.3,
        max_fit_irregularity=0.4,
        min_rim_fraction=0.3,
        min_circle_agreement=0.3,
        threads=1,
    )


def _pick(instances: list[Instance], px: float, py: float) -> Instance | None:
    """The instance whose mask holds (px, py), else the one whose centre is nearest within its radius."""
    best, best_dist = None, np.inf
    for inst in instances:
        ix, iy = int(np.floor(px)) - inst.x0, int(np.floor(py)) - inst.y0
        if 0 <= iy < inst.mask.shape[0] and 0 <= ix < inst.mask.shape[1] and inst.mask[iy, ix]:
            return inst
        cx, cy = inst.center or ((inst.x0 + inst.x1) / 2, (inst.y0 + inst.y1) / 2)
        dist = float(np.hypot(cx - px, cy - py))
        radius = inst.radius or np.sqrt(inst.area / np.pi)
        if dist <= radius and dist < best_dist:
            best, best_dist = inst, dist
    return best


def detect_at_point(gray: np.ndarray, query: PointQuery) -> Instance | None:
    """The droplet at ``query``'s point found by the classical detector on a window around it.

    Args:
        gray: HxW intensities of the whole image.
        query: the point, the typical diameter and the cue.

    Returns:
        The droplet's instance in image coordinates, or None when no droplet is found there. A
        droplet cut by the window's edge (not the image's) is searched again in a window twice as large.
    """
    h, w = gray.shape
    side = int(np.clip(4 * query.scale_px, MIN_WINDOW_PX, MAX_WINDOW_PX))
    params = _lenient_params(query)
    while True:
        x0 = int(np.clip(round(query.x - side / 2), 0, max(w - side, 0)))
        y0 = int(np.clip(round(query.y - side / 2), 0, max(h - side, 0)))
        x1, y1 = min(x0 + side, w), min(y0 + side, h)
        found = detect_droplets(gray[y0:y1, x0:x1], params).instances
        inst = _pick(found, query.x - x0, query.y - y0)
        if inst is None:
            return None
        cut = (inst.x0 == 0 and x0 > 0) or (inst.y0 == 0 and y0 > 0)
        cut = cut or (inst.x1 == x1 - x0 and x1 < w) or (inst.y1 == y1 - y0 and y1 < h)
        if not cut or side >= min(MAX_WINDOW_PX, max(h, w)):
            break
        side *= 2
    inst.x0 += x0
    inst.y0 += y0
    if inst.center is not None:
        inst.center = (inst.center[0] + x0, inst.center[1] + y0)
    return inst
