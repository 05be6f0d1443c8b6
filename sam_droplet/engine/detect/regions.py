"""Regions of a binary mask split into round pieces, and the features that judge them.

The rim cue and the threshold cues both end in a mask of droplet interiors; here it is cut into
one piece per droplet (distance transform, local-maximum seeds, watershed) and each piece's
boundary support and roundness are measured at once over the whole label image.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["remove_small", "round_regions", "split_regions"]


def remove_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    _, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_size
    keep[0] = False
    return keep[lab]


_MARKER_RADII = (1, 2, 3, 5, 8, 12, 18, 27, 40, 60, 90, 135, 200, 300)


def _local_max_markers(
    dist: np.ndarray, ratio: float = 0.7, floor: float = 1.0, max_radius: float | None = None
) -> tuple[np.ndarray, int]:
    """Watershed seeds: pixels that are the maximum of ``dist`` within ``ratio * dist`` of themselves.

    A disk's centre is the maximum within its own radius; the neck between two touching disks is
    not, so each droplet gets one seed without a scale parameter. Plateaus merge into one seed.
    Regions wider than ``max_radius`` are not split further (a coarser pyramid level handles them).
    """
    # Work on the candidate pixels only: most of a full-resolution image is background.
    ys, xs = np.nonzero(dist > floor)
    vals = dist[ys, xs]
    peak = np.zeros(dist.shape, dtype=np.uint8)
    dmax = float(vals.max()) if vals.size else 0.0
    # Candidates grouped by the radius that judges them (band k: radius k-1 < value * ratio <= k,
    # compared in float32 as ``vals`` is), once: a boolean selection per radius would scan them all.
    tops = np.array([r / ratio for r in _MARKER_RADII[:-1]], dtype=vals.dtype)
    band = np.searchsorted(tops, vals, side="left").astype(np.uint8)
    order = np.argsort(band, kind="stable")  # a radix sort on uint8
    starts = np.concatenate([[0], np.cumsum(np.bincount(band, minlength=len(_MARKER_RADII)))])
    ys, xs, vals = ys[order], xs[order], vals[order]
    prev = 0.0
    for k, radius in enumerate(_MARKER_RADII):
        lo = prev / ratio
        if lo > dmax or (max_radius is not None and lo > max_radius):
            break
        if starts[k + 1] > starts[k]:
            sy, sx, sv = (a[starts[k] : starts[k + 1]] for a in (ys, xs, vals))
            # Only the box around the candidates (plus the window) needs the maximum filter.
            y0, y1 = max(int(sy.min()) - radius, 0), min(int(sy.max()) + 1 + radius, dist.shape[0])
            x0, x1 = max(int(sx.min()) - radius, 0), min(int(sx.max()) + 1 + radius, dist.shape[1])
            size = 2 * radius + 1
            mx = cv2.dilate(dist[y0:y1, x0:x1], cv2.getStructuringElement(cv2.MORPH_RECT, (size, size)))
            top = sv >= mx[sy - y0, sx - x0] - 1e-3
            peak[sy[top], sx[top]] = 1
        prev = radius
    n, markers = cv2.connectedComponents(peak, connectivity=8)
    return markers, n - 1


def split_regions(
    mask: np.ndarray, max_radius: float | None = None, max_split_side: int | None = None
) -> tuple[np.ndarray, int]:
    """Label ``mask`` into round pieces: distance transform, local-max seeds, watershed.

    OpenCV's watershed floods in order of the step between neighbouring pixels of the relief, not
    of its level; on the distance map that cuts where the slope breaks. A level-ordered flood
    (scikit-image's) scored lower on emulsion_gt (F1 0.720 against 0.748) and took longer.

    With ``max_split_side``, only connected pieces of ``mask`` that fit in a box of that side are
    labelled (split where they hold several seeds); a larger piece is left out. At full
    resolution that piece is the background between droplets, and seeding and flooding it would
    be most of the cost (droplets joined to it through a broken rim are seen at the next pyramid
    level, where the rim is thicker).
    """
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    top = float(dist.max()) or 1.0
    if max_split_side is not None:
        n_cc, pieces, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        side = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
        small = side <= max_split_side
        small[0] = False
        markers, n = _local_max_markers(np.where(small[pieces], dist, np.float32(0)), max_radius=max_radius)
    else:
        markers, n = _local_max_markers(dist, max_radius=max_radius)
    if n == 0:
        return markers, 0
    relief = np.clip(255.0 - dist * (255.0 / top), 0, 255).astype(np.uint8)
    if max_split_side is None:
        regions = markers.astype(np.int32, copy=True)
        cv2.watershed(cv2.merge([relief, relief, relief]), regions)
        regions[(regions < 0) | ~mask] = 0
        return regions, n
    ys, xs = np.nonzero(markers)
    owned = np.unique(pieces[ys, xs].astype(np.int64) * (n + 1) + markers[ys, xs])
    piece_of, seed_of = owned // (n + 1), (owned % (n + 1)).astype(np.int32)
    seeds = np.bincount(piece_of, minlength=n_cc)
    # A piece with one seed is one region (the watershed would flood it from that seed alone).
    owner = np.zeros(n_cc, dtype=np.int32)
    owner[piece_of] = seed_of
    regions = owner[pieces]
    split = (seeds >= 2) & small
    if split.any():
        todo = split[pieces]
        # Everything else is labelled up front so the flood stays inside the pieces to split; a
        # one-pixel ring around them is left to the flood, as the rim between droplets is. OpenCV
        # floods in order of the step between neighbours, so the label outside sits on a step as
        # high as it gets: it reaches the ring last and never enters the pieces.
        ring = cv2.dilate(todo.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        flood = np.where(todo, markers, 0).astype(np.int32)
        flood[~ring] = n + 1
        relief = np.where(ring, relief, 0).astype(np.uint8)
        cv2.watershed(cv2.merge([relief, relief, relief]), flood)
        regions = np.where(todo, np.where((flood > 0) & (flood <= n), flood, 0), regions)
    return regions, n  # outside ``mask`` lies piece 0, which owns no seed


def round_regions(
    regions: np.ndarray, support_mask: np.ndarray, n: int, min_support: float, min_roundness: float
) -> dict[str, np.ndarray]:
    """Area, centroid, boundary support and roundness of the labels that pass ``min_support`` and
    ``min_roundness`` (and hold 6 pixels at least), vectorised over the label image.

    Boundary support is the fraction of a region's outline (4-neighbour steps leaving the region;
    the image border excluded) that lands on ``support_mask``. Roundness is (inscribed radius +
    0.5) / equivalent radius, with cuts between regions counting as boundary. Centroids cost a
    pass over a region's pixels, so they are computed for the passing regions only: most regions of
    a busy image fail.
    """
    flat = regions.ravel().astype(np.intp)
    area = np.bincount(flat, minlength=n + 1).astype(np.float64)
    hits = np.zeros(n + 1)
    total = np.zeros(n + 1)
    cut = np.zeros(regions.shape, dtype=bool)
    for axis in (0, 1):
        a0 = regions[:-1] if axis == 0 else regions[:, :-1]
        a1 = regions[1:] if axis == 0 else regions[:, 1:]
        s0 = support_mask[:-1] if axis == 0 else support_mask[:, :-1]
        s1 = support_mask[1:] if axis == 0 else support_mask[:, 1:]
        differ = a0 != a1
        for here, there_support in ((a0, s1), (a1, s0)):
            step = differ & (here > 0)
            total += np.bincount(here[step], minlength=n + 1)
            hits += np.bincount(here[step & there_support], minlength=n + 1)
        between = differ & (a0 > 0) & (a1 > 0)
        if axis == 0:
            cut[:-1] |= between
        else:
            cut[:, :-1] |= between
    support = hits / np.maximum(total, 1.0)
    inner = ((regions > 0) & ~cut).astype(np.uint8)
    dist = cv2.distanceTransform(inner, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    r_in = np.zeros(n + 1, dtype=np.float32)
    np.maximum.at(r_in, flat, dist.ravel())  # 40x faster than ndi.maximum here
    safe = np.maximum(area, 1.0)
    roundness = np.minimum((r_in.astype(np.float64) + 0.5) / np.sqrt(safe / np.pi), 1.0)
    passing = (support >= min_support) & (roundness >= min_roundness) & (area >= 6)
    passing[0] = False
    where = np.flatnonzero(passing[flat])
    row, col = np.divmod(where, regions.shape[1])
    sx = np.bincount(flat[where], weights=col, minlength=n + 1)
    sy = np.bincount(flat[where], weights=row, minlength=n + 1)
    return {
        "area": area[passing],
        "cx": sx[passing] / safe[passing],
        "cy": sy[passing] / safe[passing],
        "support": support[passing],
        "roundness": roundness[passing],
    }
