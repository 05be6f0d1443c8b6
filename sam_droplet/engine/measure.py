"""Per-droplet measurements and the population summary.

Lengths are in pixels; with a calibration ``um_per_px`` the same lengths are also given in
micrometres, areas in um^2 and volumes in picolitres (1 pL = 1000 um^3) for a sphere of the
equivalent diameter. Intensities are the image's original values (gray, or RGB luminance), never a
contrast-stretched copy.

The perimeter is the Crofton estimate (4 directions), which is within about 1 % of the true
perimeter for digital disks from 8 px across, so circularity (4 pi A / P^2) is close to 1 for round
droplets. Feret diameters are measured on the convex hull of the mask's boundary pixel edges.
Shape and size are those of the droplet's outline, holes filled: a droplet seen through a larger
one keeps the pixels they share, and the larger one is still whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from skimage.measure import perimeter_crofton

from .instances import Instance, encode_rle, fill_holes
from .sizes import size_distribution, size_populations

__all__ = ["Droplet", "feret_diameters", "measure_droplets", "summarize"]


@dataclass
class Droplet:
    """One droplet: its mask and measurements (lengths in px, intensities in image units).

    Attributes:
        id: number of the droplet in this image (1-based, reading order: top to bottom, left to right).
        instance: the mask, as a crop with its offset.
        bbox: [x, y, w, h] in pixels.
        centroid: (x, y) in pixels.
        image_shape: (height, width) of the image it was found in (the frame of its mask).
        um_per_px: the image's calibration, or None; :meth:`as_dict` adds lengths in um with it.
        removed_reason: why a filter removed it, or None when kept.
        fluorescence: its fluorescence columns (``fl_mean`` ... ``positive``, ``objects``) when a
            fluorescence channel was measured; empty otherwise.
        contents: the objects it carries, seen in bright field, ``{"count", "areas_px"}``, when
            they were counted (:mod:`sam_droplet.engine.contents`); None otherwise.
    """

    id: int
    instance: Instance
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    area_px: int
    perimeter_px: float
    equivalent_diameter_px: float
    max_feret_px: float
    min_feret_px: float
    circularity: float
    aspect_ratio: float
    intensity_mean: float
    intensity_median: float
    intensity_std: float
    intensity_min: float
    intensity_max: float
    touches_edge: bool
    min_edge_distance_px: float
    score: float
    source: str
    image_shape: tuple[int, int] = (0, 0)
    um_per_px: float | None = None
    removed_reason: str | None = None
    fluorescence: dict[str, Any] = field(default_factory=dict)
    contents: dict[str, Any] | None = None

    def calibrated(self, um_per_px: float) -> dict[str, float]:
        """Lengths in um, area in um^2 and sphere volume in pL."""
        d_um = self.equivalent_diameter_px * um_per_px
        return {
            "area_um2": self.area_px * um_per_px**2,
            "perimeter_um": self.perimeter_px * um_per_px,
            "equivalent_diameter_um": d_um,
            "max_feret_um": self.max_feret_px * um_per_px,
            "min_feret_um": self.min_feret_px * um_per_px,
            "min_edge_distance_um": self.min_edge_distance_px * um_per_px,
            "volume_pl": math.pi / 6.0 * d_um**3 / 1000.0,
        }

    def as_dict(self, mask: bool = True) -> dict[str, Any]:
        """The droplet's record (the API's JSON): measurements in px, the same in um when calibrated,
        its fluorescence columns, ``removed_reason`` when a filter removed it, and its mask as COCO
        RLE in the image's frame (``mask=False`` leaves it out)."""
        rec: dict[str, Any] = {
            "id": self.id,
            "bbox": list(self.bbox),
            "centroid": [round(self.centroid[0], 3), round(self.centroid[1], 3)],
            "area_px": self.area_px,
            "perimeter_px": round(self.perimeter_px, 3),
            "equivalent_diameter_px": round(self.equivalent_diameter_px, 3),
            "max_feret_px": round(self.max_feret_px, 3),
            "min_feret_px": round(self.min_feret_px, 3),
            "circularity": round(self.circularity, 4),
            "aspect_ratio": round(self.aspect_ratio, 4),
            "intensity_mean": round(self.intensity_mean, 4),
            "intensity_median": round(self.intensity_median, 4),
            "intensity_std": round(self.intensity_std, 4),
            "intensity_min": round(self.intensity_min, 4),
            "intensity_max": round(self.intensity_max, 4),
            "touches_edge": self.touches_edge,
            "min_edge_distance_px": self.min_edge_distance_px,
            "score": round(self.score, 4),
            "source": self.source,
        }
        if self.um_per_px:
            rec.update({k: round(v, 6) for k, v in self.calibrated(self.um_per_px).items()})
        rec.update(self.fluorescence)
        if self.contents is not None:
            rec["contents"] = self.contents
        if self.removed_reason is not None:
            rec["removed_reason"] = self.removed_reason
        if mask:
            rec["mask"] = encode_rle(self.instance, *self.image_shape)
        return rec


def feret_diameters(mask: np.ndarray) -> tuple[float, float]:
    """Maximum and minimum Feret diameter of a boolean mask, in pixels.

    Measured on the convex hull of the boundary pixels' edge midpoints, so a single pixel is 1 px
    wide and a digital disk of radius r spans 2 r within about 1 px.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 0.0, 0.0
    pts = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float32)
    # The midpoints of the boundary pixels' edges outline the pixel area without the extra reach of
    # the pixel corners along diagonals (within about 1 px of a true disk's diameter).
    offsets = np.array([[-0.5, 0.0], [0.5, 0.0], [0.0, -0.5], [0.0, 0.5]], np.float32)
    hull = cv2.convexHull((pts[:, None, :] + offsets).reshape(-1, 2)).reshape(-1, 2).astype(np.float64)
    if len(hull) < 3:
        span = float(np.ptp(hull, axis=0).max()) if len(hull) else 0.0
        return span, 0.0
    diff = hull[:, None, :] - hull[None, :, :]
    max_feret = float(np.sqrt((diff**2).sum(-1)).max())
    # Minimum width: for each hull edge, the farthest hull point from the edge's line.
    edges = np.roll(hull, -1, axis=0) - hull
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1) / np.maximum(lengths, 1e-12)[:, None]
    rel = hull[None, :, :] - hull[:, None, :]  # point j relative to the start of edge i
    dist = np.abs(rel[..., 0] * normals[:, None, 0] + rel[..., 1] * normals[:, None, 1])
    min_feret = float(dist.max(axis=1)[lengths > 1e-9].min())
    return max_feret, min_feret


def _axis_ratio(mask: np.ndarray) -> float:
    """Major over minor axis of the ellipse with the mask's second moments (>= 1)."""
    m = cv2.moments(mask.astype(np.uint8), binaryImage=True)
    if m["m00"] == 0:
        return 1.0
    mu20, mu02, mu11 = m["mu20"] / m["m00"], m["mu02"] / m["m00"], m["mu11"] / m["m00"]
    common = math.sqrt(max((mu20 - mu02) ** 2 + 4 * mu11**2, 0.0))
    major = (mu20 + mu02 + common) / 2
    minor = (mu20 + mu02 - common) / 2
    # A one-pixel-wide mask has zero minor variance; 1/12 is the variance of a unit pixel.
    return math.sqrt((major + 1 / 12) / (minor + 1 / 12))


def measure_droplets(
    instances: list[Instance],
    gray: np.ndarray,
    um_per_px: float | None = None,
    check: Callable[[str], None] | None = None,
) -> list[Droplet]:
    """Measure each instance on the original intensities and number them in reading order.

    Args:
        instances: droplet masks (crops), each pixel in at most one.
        gray: HxW intensities in the image's own units (float or integer).
        um_per_px: the image's calibration (micrometres per pixel), or None.
        check: called every five hundred droplets (a deadline raises in it).

    Returns:
        Droplets sorted by centroid row band then column, with ids 1..N.
    """
    h, w = gray.shape
    droplets: list[Droplet] = []
    for k, inst in enumerate(instances):
        if check and k % 512 == 0:
            check("measurement")
        own = inst.mask
        if not own.any():
            continue
        # A droplet is what its outline bounds: a droplet seen through it keeps the pixels they
        # share (its holes), but they are not missing from it. Intensities are its own pixels'.
        mask = fill_holes(own)
        area = int(mask.sum())
        ys, xs = np.nonzero(mask)
        values = gray[inst.y0 : inst.y1, inst.x0 : inst.x1][own].astype(np.float64)
        padded = np.pad(mask, 1)
        perimeter = float(perimeter_crofton(padded, directions=4))
        circularity = min(4 * math.pi * area / perimeter**2, 1.0) if perimeter > 0 else 0.0
        max_feret, min_feret = feret_diameters(mask)
        x0, y0 = inst.x0 + int(xs.min()), inst.y0 + int(ys.min())
        x1, y1 = inst.x0 + int(xs.max()), inst.y0 + int(ys.max())
        edge_distance = float(min(x0, y0, w - 1 - x1, h - 1 - y1))
        droplets.append(
            Droplet(
                id=0,
                instance=inst,
                bbox=(x0, y0, x1 - x0 + 1, y1 - y0 + 1),
                centroid=(inst.x0 + float(xs.mean()), inst.y0 + float(ys.mean())),
                area_px=area,
                perimeter_px=perimeter,
                equivalent_diameter_px=math.sqrt(4 * area / math.pi),
                max_feret_px=max_feret,
                min_feret_px=min_feret,
                circularity=circularity,
                aspect_ratio=_axis_ratio(mask),
                intensity_mean=float(values.mean()),
                intensity_median=float(np.median(values)),
                intensity_std=float(values.std()),
                intensity_min=float(values.min()),
                intensity_max=float(values.max()),
                touches_edge=edge_distance <= 0,
                min_edge_distance_px=edge_distance,
                score=float(inst.score),
                source=inst.source,
                image_shape=(h, w),
                um_per_px=um_per_px,
            )
        )
    # Reading order: rows of about one droplet height, then left to right.
    if droplets:
        band = max(float(np.median([d.equivalent_diameter_px for d in droplets])), 1.0)
        droplets.sort(key=lambda d: (int(d.centroid[1] // band), d.centroid[0]))
    for i, d in enumerate(droplets, start=1):
        d.id = i
    return droplets


def _stats(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"mean": None, "median": None, "std": None, "cv": None, "min": None, "max": None}
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return {
        "mean": mean,
        "median": float(np.median(values)),
        "std": std,
        "cv": std / mean if mean > 0 else None,
        "min": float(values.min()),
        "max": float(values.max()),
    }


def _histogram(values: np.ndarray, bins: int = 20) -> dict[str, list[float]]:
    if values.size == 0:
        return {"edges": [], "counts": []}
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def summarize(
    kept: list[Droplet],
    image_shape: tuple[int, int],
    um_per_px: float | None = None,
    removed_counts: dict[str, int] | None = None,
) -> dict:
    """Population statistics of the kept droplets.

    Returns a dict with ``count``; ``diameter_px`` (mean, median, std, cv, min, max), and
    ``diameter_um`` and ``volume_pl`` when calibrated; ``size`` (the size distribution, in um when
    calibrated, else px: :func:`sam_droplet.engine.sizes.size_distribution`) and ``populations``
    (:func:`sam_droplet.engine.sizes.size_populations`); ``histogram`` of diameters (in um when
    calibrated, else px); ``area_fraction`` (droplet pixels over image pixels); mean circularity;
    ``removed`` counts per reason.
    """
    d_px = np.array([d.equivalent_diameter_px for d in kept], dtype=np.float64)
    out: dict = {
        "count": len(kept),
        "diameter_px": _stats(d_px),
        "circularity_mean": float(np.mean([d.circularity for d in kept])) if kept else None,
        "area_fraction": float(sum(d.area_px for d in kept)) / float(image_shape[0] * image_shape[1]),
        "polydispersity_cv": _stats(d_px)["cv"],
    }
    if um_per_px:
        d_um = d_px * um_per_px
        volumes = math.pi / 6.0 * d_um**3 / 1000.0
        out["diameter_um"] = _stats(d_um)
        out["volume_pl"] = {**_stats(volumes), "total": float(volumes.sum())}
        out["histogram"] = {"unit": "um", **_histogram(d_um)}
    else:
        out["histogram"] = {"unit": "px", **_histogram(d_px)}
    unit, sizes = ("um", d_px * um_per_px) if um_per_px else ("px", d_px)
    out["size"] = size_distribution(sizes, unit)
    out["populations"] = size_populations(sizes, unit)
    out["removed"] = dict(removed_counts or {})
    return out
