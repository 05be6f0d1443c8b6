"""Outlines that reach the picture's border by a leak, not because the border cuts the droplet.

A droplet the border cuts is removed (``exclude_edge_touching``): its size is unknown. But an
outline can reach the border from a droplet that lies wholly inside the picture, through a spur
where its rim is faint near the border (generated high magnification seeds 84 and 85: 168 and
154 px droplets 9-12 px off the border, outlined onto it by a leak of 0.3-2 % of their area, and
so removed). A droplet is round: when the rest of the outline traces a circle that lies inside
the picture, what reaches the border beyond that circle is a leak, and is cut off.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from .circles import fit_circles
from .instances import Instance

__all__ = ["fit_circle", "trim_border_leaks"]

_OFF_BORDER_PX = 2  # outline points this close to the border are where a leak or a cut lies
_MIN_POINTS = 24  # fewer outline points (a droplet under ~8 px) fix no circle
_FIT_TOLERANCE = (1.5, 0.04)  # an outline point is on the circle within max(px, fraction * r)
_MIN_ON_CIRCLE = 0.8  # of the outline points off the border
_MIN_ARC = 0.75  # of the directions around the centre holding a point on the circle
_MIN_GAP_PX = 1.5  # between the circle (through the outline's pixel centres) and the border
_MAX_LEAK = 0.1  # of the droplet's area outside the circle


def fit_circle(points: np.ndarray, rounds: int = 4) -> tuple[float, float, float, np.ndarray] | None:
    """The circle (cx, cy, r) most of ``points`` (N x 2, x then y) lie on, and which of them do.

    A least-squares (Kasa) fit (:func:`~sam_droplet.engine.circles.fit_circles`), refitted to the
    points within ``_FIT_TOLERANCE`` of the last fit, so a leak's points do not pull it; None with
    too few points.
    """
    on = np.ones(len(points), dtype=bool)
    xs, ys = points[None, :, 0].astype(np.float64), points[None, :, 1].astype(np.float64)
    cx = cy = r = 0.0
    for _ in range(rounds):
        if on.sum() < _MIN_POINTS // 2:
            return None
        fit_x, fit_y, fit_r, residuals = fit_circles(xs, ys, on[None])
        cx, cy, r = float(fit_x[0]), float(fit_y[0]), float(fit_r[0])
        on = residuals[0] <= max(_FIT_TOLERANCE[0], _FIT_TOLERANCE[1] * r)
    return cx, cy, r, on


def _trimmed(inst: Instance, shape: tuple[int, int]) -> Instance | None:
    """The instance cut to its circle when it reaches the border by a leak; None otherwise."""
    h, w = shape
    padded = np.pad(inst.mask, 1).astype(np.uint8)
    contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    points = np.vstack([c[:, 0] for c in contours]) + np.array([inst.x0 - 1, inst.y0 - 1])
    px, py = points[:, 0], points[:, 1]
    off = (np.minimum(px, w - 1 - px) > _OFF_BORDER_PX) & (np.minimum(py, h - 1 - py) > _OFF_BORDER_PX)
    if off.sum() < _MIN_POINTS:
        return None
    fit = fit_circle(points[off])
    if fit is None:
        return None
    cx, cy, r, on = fit
    if on.mean() < _MIN_ON_CIRCLE or min(cx, cy, w - 1 - cx, h - 1 - cy) - r < _MIN_GAP_PX:
        return None
    # The circle's points go round it: a circle fitted to a short arc is not the droplet's.
    angles = np.arctan2(points[off][on, 1] - cy, points[off][on, 0] - cx)
    sectors = np.unique(((angles + np.pi) / (2 * np.pi) * 36).astype(int) % 36)
    if len(sectors) < _MIN_ARC * 36:
        return None
    rows = np.arange(inst.y0, inst.y1)[:, None]
    cols = np.arange(inst.x0, inst.x1)[None, :]
    inside = inst.mask & ((cols - cx) ** 2 + (rows - cy) ** 2 <= (r + 1.0) ** 2)
    area = int(np.count_nonzero(inst.mask))
    if area - int(np.count_nonzero(inside)) > _MAX_LEAK * area:
        return None
    return replace(inst, mask=inside).tight()


def trim_border_leaks(instances: list[Instance], shape: tuple[int, int]) -> list[Instance]:
    """The instances, each outline that reaches the border of a picture of ``shape`` (h, w) by a
    leak from a droplet lying inside it cut back to the droplet's circle (see the module's doc).

    An outline that reaches the border any other way (a droplet the border cuts, a shape that is
    not round, a leak of more than a tenth of the droplet) is left as it is.
    """
    h, w = shape
    out = []
    for inst in instances:
        if min(inst.x0, inst.y0) > 0 and inst.x1 < w and inst.y1 < h:
            out.append(inst)
            continue
        trimmed = _trimmed(inst, shape)
        out.append(trimmed if trimmed is not None else inst)
    return out
