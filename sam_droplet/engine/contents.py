"""What droplets carry, seen in bright field: the small objects (cells, beads) inside each droplet.

Inside a droplet an object is a small patch darker (a bead, an absorbing cell) or brighter (a
refractive cell, a dye-filled one) than the droplet around it. A bright-field droplet itself is
not flat: its refraction rim darkens a band inside its edge and it acts as a lens, brighter at the
centre. Both are round, so each droplet's own radial profile (its mean intensity at each whole
pixel of depth from its edge) is subtracted, and what remains is what is not round: the objects.
A pixel belongs to an object where that residual stands ``min_snr`` robust standard deviations
(over every droplet's interior) away from zero, and each connected piece of at least a quarter of an
object's area and a fifth of its diameter thick is one object (an outline off by a pixel leaves
thin arcs of the rim behind, which are not), or k objects when it covers about k times the
typical (median) object's area: touching objects merge into one piece. The outermost two pixels of
a droplet are left out, and with them an object sitting on the droplet's edge.

The fluorescence path counts objects on a fluorescence picture instead
(:func:`sam_droplet.engine.fluorescence.count_spots`).

A detector may also have outlined such an object as a small droplet of its own:
:func:`enclosed_droplets` finds those, :func:`gathered_in_droplets` tells objects carried by
droplets from small droplets seen through larger ones, and :func:`absorb_enclosed` gives their
pixels back to the droplet that carries them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage, stats

from .instances import CARRIER_RATIO, Instance, convex_hull_mask, convex_hull_points, fill_holes

__all__ = ["absorb_enclosed", "count_contents", "enclosed_droplets", "free_contents", "gathered_in_droplets"]

_MIN_PIECES_FOR_TYPICAL = 5


def _robust_sd(values: np.ndarray) -> float:
    """The standard deviation of the bulk of ``values`` (1.4826 x the median absolute deviation)."""
    if values.size == 0:
        return 0.0
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def count_contents(
    gray: np.ndarray,
    labels: np.ndarray,
    ids: np.ndarray,
    object_diameter_px: float = 5.0,
    min_snr: float = 6.0,
) -> list[list[float]]:
    """The objects inside each droplet, as their areas in pixels.

    Args:
        gray: HxW intensities (any numeric dtype).
        labels: droplet ids, 0 = background (all droplets found, so that none is taken for outside).
        ids: the droplets to look into, in the order of the returned list.
        object_diameter_px: typical object diameter (smaller pieces than a quarter of its area go).
        min_snr: how far an object must stand out of the droplets' own variation.

    Returns:
        For each droplet of ``ids``, the areas (px) of the objects in it, largest first.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == 0:
        return []
    img = np.nan_to_num(gray.astype(np.float32, copy=False))
    img = cv2.GaussianBlur(img, (0, 0), max(0.5, object_diameter_px / 10))
    lab = labels.astype(np.int64, copy=False)
    inside = lab > 0
    # Depth below the droplet's own edge, in whole pixels (droplets touching each other each count
    # from their own edge: the contact line is an edge too).
    edges = np.zeros(lab.shape, dtype=bool)
    edges[:-1] |= lab[:-1] != lab[1:]
    edges[1:] |= lab[:-1] != lab[1:]
    edges[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edges[:, 1:] |= lab[:, :-1] != lab[:, 1:]
    depth = cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, 3)
    interior = inside & (depth >= 2)
    # The rim and the lens change with depth near the edge; deeper than a third of a droplet's
    # radius it is nearly flat, and one group there keeps an object at the centre from being its
    # own ring's mean.
    radius = np.zeros(int(lab.max()) + 1)
    present = np.unique(lab[interior])
    radius[present] = ndimage.maximum(depth, lab, index=present)
    ring = np.minimum(depth, np.maximum(3.0, radius[lab] / 3)).astype(np.int64)
    # Each droplet's radial profile: mean intensity per (droplet, depth) group, computed twice: the
    # second time without the pixels that stood out the first time (an object would otherwise
    # darken or brighten the rest of its ring).
    key = np.where(interior, lab * (int(ring.max()) + 1) + ring, -1)
    sel = key >= 0
    _, group = np.unique(key[sel], return_inverse=True)
    values = img[sel].astype(np.float64)
    profile = np.bincount(group, weights=values) / np.bincount(group)
    residual = values - profile[group]
    spread = _robust_sd(residual)
    if spread <= 0:
        return [[] for _ in ids]
    calm = np.abs(residual) <= 3 * spread
    calm_sum = np.bincount(group, weights=np.where(calm, values, 0.0), minlength=profile.size)
    calm_count = np.bincount(group, weights=calm.astype(np.float64), minlength=profile.size)
    profile = np.where(calm_count > 0, calm_sum / np.maximum(calm_count, 1), profile)
    residual = values - profile[group]
    spread = _robust_sd(residual)
    full = np.zeros(lab.shape, dtype=np.float32)
    full[sel] = residual
    residual = full
    objects = sel & (np.abs(residual) > min_snr * spread)
    n_obj, obj_labels, stats, _ = cv2.connectedComponentsWithStats(objects.astype(np.uint8), connectivity=8)
    if n_obj <= 1:
        return [[] for _ in ids]
    # An object is a blob: big enough, and thick (an outline off by a pixel leaves thin arcs of
    # the rim behind, as long as an object but a pixel or two wide).
    min_area = max(3.0, 0.25 * math.pi * (object_diameter_px / 2) ** 2)
    thickness = cv2.distanceTransform(objects.astype(np.uint8), cv2.DIST_L2, 3)
    half_width = ndimage.maximum(thickness, obj_labels, index=np.arange(1, n_obj))
    blob = (stats[1:, cv2.CC_STAT_AREA] >= min_area) & (half_width >= max(1.5, object_diameter_px / 5))
    areas: dict[int, list[float]] = {}
    big = np.flatnonzero(blob) + 1
    if big.size:
        owner = ndimage.maximum(lab, obj_labels, index=big)  # an object lies in one droplet (its interior)
        sizes = stats[big, cv2.CC_STAT_AREA].astype(np.float64)
        # Objects touching each other are one piece: a piece of about k times the typical object's
        # area (the median piece, when there are enough to tell) is k objects of equal area.
        typical = float(np.median(sizes)) if sizes.size >= _MIN_PIECES_FOR_TYPICAL else None
        for droplet, area in zip(owner.astype(np.int64).tolist(), sizes.tolist(), strict=True):
            k = max(1, round(area / typical)) if typical else 1
            areas.setdefault(droplet, []).extend([round(area / k, 1)] * k)
    return [sorted(areas.get(int(i), []), reverse=True) for i in ids]


def enclosed_droplets(
    instances: list[Instance], shape: tuple[int, int], min_ratio: float = CARRIER_RATIO
) -> dict[int, int]:
    """Objects lying inside a much larger droplet: ``{index of the object: index of its droplet}``.

    An object is inside a droplet when its centre lies within the droplet's convex hull (a bead
    on the edge leaves a notch in the outline; the hull closes it) and the droplet is at least
    ``min_ratio`` times its equivalent diameter.

    Args:
        instances: the droplets found, each pixel in at most one.
        shape: (height, width) of the image.
        min_ratio: how many times larger (in diameter) a droplet must be to carry an object.
    """
    if len(instances) < 2:
        return {}
    areas = np.array([inst.area for inst in instances], dtype=np.float64)
    if not (areas > 0).any():
        return {}
    smallest = float(areas[areas > 0].min())
    # Only droplets that could hold one of the others are drawn (none on a monodisperse field).
    hosts = np.flatnonzero(areas >= min_ratio**2 * smallest)
    if hosts.size == 0:
        return {}
    # 1 + the index of the droplet whose hull covers the pixel; larger droplets are drawn last, over
    # the objects they hold (which may be large enough to hold others themselves).
    hull_of = np.zeros(shape, dtype=np.uint16 if len(instances) < 65535 else np.int32)
    for i in hosts[np.argsort(areas[hosts], kind="stable")].tolist():
        hull = convex_hull_points(instances[i].mask)
        if hull is not None:
            cv2.fillConvexPoly(hull_of, hull + np.array([instances[i].x0, instances[i].y0], np.int32), i + 1)
    out: dict[int, int] = {}
    for j, inst in enumerate(instances):
        if areas[j] <= 0 or areas[j] * min_ratio**2 > areas[hosts].max():
            continue
        ys, xs = np.nonzero(inst.mask)
        x, y = round(inst.x0 + float(xs.mean())), round(inst.y0 + float(ys.mean()))
        host = int(hull_of[y, x]) - 1
        if host >= 0 and host != j and areas[host] >= min_ratio**2 * areas[j]:
            out[j] = host
    return out


def gathered_in_droplets(instances: list[Instance], enclosed: dict[int, int], shape: tuple[int, int]) -> float:
    """How likely it is that the ``enclosed`` objects lie inside droplets by chance (a p-value).

    Droplets seen through larger droplets are a population of their own, spread over the field:
    as many of them lie inside the larger droplets as those cover of it. Beads and cells are
    carried by droplets and gather inside them. Of the enclosed objects and the free ones of the
    same sizes, the chance of at least as many lying inside droplets large enough to hold them,
    were each placed anywhere (binomial, with the share of the field those droplets cover).
    """
    if not enclosed:
        return 1.0
    areas = np.array([inst.area for inst in instances], dtype=np.float64)
    share = min(float(areas[_could_carry(areas, enclosed)].sum()) / float(shape[0] * shape[1]), 1.0)
    n_free = len(free_contents(instances, enclosed))
    return float(stats.binom.sf(len(enclosed) - 1, len(enclosed) + n_free, share))


def free_contents(instances: list[Instance], enclosed: dict[int, int]) -> list[int]:
    """The indices of the objects of the ``enclosed`` objects' sizes that lie inside no droplet:
    free ones of the same population, as :func:`gathered_in_droplets` counts them.

    Their sizes: equivalent radii from the smallest enclosed object's to the largest's, each
    widened by a pixel (where an outline sits on a rim varies by that much).
    """
    if not enclosed:
        return []
    areas = np.array([inst.area for inst in instances], dtype=np.float64)
    inside = np.array(sorted(enclosed), dtype=np.int64)
    radii = np.sqrt(areas / np.pi)
    lo, hi = radii[inside].min() - 1.0, radii[inside].max() + 1.0
    free = np.flatnonzero((radii >= lo) & (radii <= hi) & ~_could_carry(areas, enclosed))
    return np.setdiff1d(free, inside).tolist()


def _could_carry(areas: np.ndarray, enclosed: dict[int, int]) -> np.ndarray:
    """Which droplets could carry the typical enclosed object, as :func:`enclosed_droplets` asks."""
    return areas >= CARRIER_RATIO**2 * float(np.median(areas[np.array(sorted(enclosed), dtype=np.int64)]))


def absorb_enclosed(instances: list[Instance], enclosed: dict[int, int]) -> list[Instance]:
    """The droplets without the objects they carry: each object's pixels within its droplet's
    convex hull go back to that droplet (holes filled), and the object is no longer a droplet.

    ``enclosed`` is what :func:`enclosed_droplets` returned for ``instances``.
    """
    for host in set(enclosed.values()):
        outer = instances[host]
        hull = convex_hull_mask(outer.mask)
        for j in (j for j, h in enclosed.items() if h == host):
            inner = instances[j]
            # The overlap of the two crops, in image pixels.
            x0, y0 = max(inner.x0, outer.x0), max(inner.y0, outer.y0)
            x1, y1 = min(inner.x1, outer.x1), min(inner.y1, outer.y1)
            if x0 < x1 and y0 < y1:
                mine = (slice(y0 - outer.y0, y1 - outer.y0), slice(x0 - outer.x0, x1 - outer.x0))
                theirs = inner.mask[y0 - inner.y0 : y1 - inner.y0, x0 - inner.x0 : x1 - inner.x0]
                outer.mask[mine] |= theirs & hull[mine]
        outer.mask = fill_holes(outer.mask)
    return [inst for k, inst in enumerate(instances) if k not in enclosed]
