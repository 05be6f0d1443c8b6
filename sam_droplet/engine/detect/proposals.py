"""Step 1 of detection: droplet proposals, centres and rough radii from four cues.

A proposal is only a hypothesis; the boundary fit (:mod:`.outlines`) decides. See the package
docstring (:mod:`sam_droplet.engine.detect`) for the cues: ``rim``, ``bright``, ``dark``, ``hough``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from ..thresholds import otsu_threshold
from .normalize import noise_sigma
from .params import Check, DetectionParams
from .regions import remove_small, round_regions, split_regions

__all__ = ["LEVEL_MAX_RADIUS", "Proposals", "merge_proposals", "propose_all", "propose_droplets"]

_STRIP_PX = 3_500_000  # the most pixels of one full-resolution rim strip (about 0.7 s of work)
LEVEL_MAX_RADIUS = 48.0  # interiors wider than this (level px) are left to the next, coarser level


@dataclass
class Proposals:
    """Droplet proposals: centres (x, y), radii and scores in full-resolution pixels."""

    cx: np.ndarray
    cy: np.ndarray
    r: np.ndarray
    score: np.ndarray

    @classmethod
    def empty(cls) -> Proposals:
        z = np.zeros(0, dtype=np.float64)
        return cls(z, z.copy(), z.copy(), z.copy())

    def __len__(self) -> int:
        return int(self.r.size)

    def take(self, index: np.ndarray) -> Proposals:
        return Proposals(self.cx[index], self.cy[index], self.r[index], self.score[index])

    @classmethod
    def concat(cls, parts: list[Proposals]) -> Proposals:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("cx", "cy", "r", "score")))


def rim_map(norm: np.ndarray, kernel: int, noise: float) -> tuple[np.ndarray, float]:
    """Rim mask (thin dark structures) and the rim contrast threshold used."""
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    closed = cv2.morphologyEx(norm, cv2.MORPH_CLOSE, se)
    # Contrast relative to the local brightness, so that vignetting does not matter; the floor on
    # the denominator keeps the noise of dark backgrounds from turning into rims.
    typical = max(float(np.median(closed)), 0.05)
    contrast = (closed - norm) / np.maximum(closed, 0.25 * typical)
    threshold = max(otsu_threshold(contrast, histogram=True), 2.5 * noise / typical, 0.03)
    return remove_small(contrast > threshold, 8), threshold


def rim_levels(shape: tuple[int, int], params: DetectionParams) -> int:
    """Pyramid levels of the rim cue: halve until the shorter side would drop under 48 px."""
    n_levels = 1
    while min(shape) / 2**n_levels >= 48:
        n_levels += 1
    if params.max_levels is not None:
        n_levels = min(n_levels, params.max_levels)
    return n_levels


def rim_regions(
    rim: np.ndarray, params: DetectionParams, max_radius: float | None, max_split_side: int | None = None
) -> Proposals:
    """Round regions enclosed by the rim mask ``rim``, in the mask's own pixels."""
    # Specks of interior too small to hold a droplet are dropped before the (costly) split;
    # interiors wider than ``max_radius`` are seen, better resolved, at a coarser level.
    interior = remove_small(~rim, 6)
    regions, n = split_regions(interior, max_radius=max_radius, max_split_side=max_split_side)
    if n == 0:
        return Proposals.empty()
    f = round_regions(regions, rim, n, params.min_rim_support, params.min_roundness)
    # An interior sits inside its rim: the droplet is about half a kernel larger.
    r = np.sqrt(f["area"] / np.pi) + 0.5 * (params.rim_kernel_px | 1)
    return Proposals(f["cx"], f["cy"], r, f["support"] * f["roundness"])


def full_resolution_split(max_radius: float) -> int:
    """Largest piece of interior split into droplets at full resolution: a few droplets of the
    largest size split there (seeds up to ``max_radius / 0.7`` px)."""
    return int(4 * max_radius / 0.7)


def rim_strip_jobs(
    rim: np.ndarray, params: DetectionParams, max_radius: float, strips: int, check: Check | None = None
) -> list[Any]:
    """:func:`rim_regions` on horizontal strips of ``rim``, as callables to run in parallel.

    Full resolution costs as much as all coarser levels together, and one call would keep one
    core busy while the other waits. Strips overlap by more than a region split at
    ``max_radius`` can span (inscribed radius at most ``max_radius / 0.7``, roundness at least
    ``min_roundness``); each strip keeps the regions centred in its own rows, so every region is
    judged whole, once. ``check`` is called before each strip.
    """
    h = rim.shape[0]
    margin = int(np.ceil(2.0 * max_radius / 0.7 / max(params.min_roundness, 0.5))) + 4
    cuts = np.linspace(0, h, strips + 1).round().astype(int)

    def job(k: int) -> Proposals:
        if check:
            check("droplet proposals")
        top, bottom = max(cuts[k] - margin, 0), min(cuts[k + 1] + margin, h)
        props = rim_regions(rim[top:bottom], params, max_radius, full_resolution_split(max_radius))
        own = np.flatnonzero((props.cy + top >= cuts[k] - 0.5) & (props.cy + top < cuts[k + 1] - 0.5))
        props = props.take(own)
        return Proposals(props.cx, props.cy + top, props.r, props.score)

    return [lambda k=k: job(k) for k in range(strips)]


def rim_proposals(
    norm: np.ndarray, params: DetectionParams, levels: range | None = None, check: Check | None = None
) -> Proposals:
    """Round regions enclosed by dark rims, at every pyramid level (or the given ``levels``)."""
    w = norm.shape[1]
    n_levels = rim_levels(norm.shape, params)
    levels = levels if levels is not None else range(n_levels)
    kernel = params.rim_kernel_px | 1
    parts: list[Proposals] = []
    level_img = norm
    for level in range(max(levels, default=-1) + 1):
        if level > 0:
            size = (max(level_img.shape[1] // 2, 1), max(level_img.shape[0] // 2, 1))
            level_img = cv2.resize(level_img, size, interpolation=cv2.INTER_AREA)
        if level not in levels:
            continue
        if check:
            check("droplet proposals")
        rim, _ = rim_map(level_img, kernel, noise_sigma(level_img))
        max_radius = None if level == n_levels - 1 else LEVEL_MAX_RADIUS
        split_side = full_resolution_split(max_radius) if level == 0 and max_radius else None
        props = rim_regions(rim, params, max_radius, split_side)
        s = w / level_img.shape[1]
        parts.append(Proposals((props.cx + 0.5) * s - 0.5, (props.cy + 0.5) * s - 0.5, props.r * s, props.score))
    return Proposals.concat(parts)


def _flat_background(norm: np.ndarray, polarity: str) -> np.ndarray:
    """``norm`` minus a smooth background (per-tile percentile), signed so droplets are positive."""
    h, w = norm.shape
    tiles = 12
    # Tiles of at least 8 px, but never larger than the image (a 16 px wide strip is one tile wide).
    th, tw = min(max(h // tiles, 8), h), min(max(w // tiles, 8), w)
    gh, gw = max(h // th, 1), max(w // tw, 1)
    blocks = norm[: gh * th, : gw * tw].reshape(gh, th, gw, tw).transpose(0, 2, 1, 3).reshape(gh, gw, -1)
    q = 10 if polarity == "bright" else 90
    grid = np.percentile(blocks[..., :: max(1, blocks.shape[-1] // 2048)], q, axis=-1).astype(np.float32)
    grid = cv2.GaussianBlur(grid, (0, 0), 0.8)
    background = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return norm - background if polarity == "bright" else background - norm


def _threshold_proposals(norm: np.ndarray, polarity: str, params: DetectionParams) -> Proposals:
    """Round regions brighter (or darker) than the local background.

    Large images are thresholded at reduced resolution (longer side about 1100 px): proposals only
    need centre and size, and the boundary fit runs at full resolution.
    """
    # Never below 16 px on the short side: a long thin strip (a channel, a line scan) keeps its width.
    factor = max(1, min(int(np.ceil(max(norm.shape) / 1100)), min(norm.shape) // 16))
    if factor > 1:
        small = cv2.resize(norm, (norm.shape[1] // factor, norm.shape[0] // factor), interpolation=cv2.INTER_AREA)
        props = _threshold_proposals(small, polarity, params)
        sx, sy = norm.shape[1] / small.shape[1], norm.shape[0] / small.shape[0]
        return Proposals((props.cx + 0.5) * sx - 0.5, (props.cy + 0.5) * sy - 0.5, props.r * sx, props.score)
    flat = _flat_background(norm, polarity)
    threshold = max(otsu_threshold(np.clip(flat, 0, None), histogram=True), 4.0 * noise_sigma(norm), 0.04)
    fg = flat > threshold
    fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)
    fg = ndi.binary_fill_holes(fg)
    regions, n = split_regions(fg)
    if n == 0:
        return Proposals.empty()
    f = round_regions(regions, ~fg, n, params.min_edge_support, params.min_roundness)
    return Proposals(f["cx"], f["cy"], np.sqrt(f["area"] / np.pi), np.sqrt(f["support"]) * f["roundness"])


def merge_proposals(props: Proposals, check: Check | None = None) -> Proposals:
    """Drop proposals that repeat a better one: the boundary fit converges from any proposal whose
    centre is within a quarter radius and whose radius is within a factor 1.4 of the droplet's.
    ``check`` is called every few thousand proposals."""
    if len(props) < 2:
        return props
    tree = cKDTree(np.stack([props.cx, props.cy], axis=1))
    alive = np.ones(len(props), dtype=bool)
    for k, i in enumerate(np.argsort(-props.score, kind="stable")):
        if check and k % 8192 == 0:
            check("droplet proposals")
        if not alive[i]:
            continue
        for j in tree.query_ball_point((props.cx[i], props.cy[i]), 0.25 * props.r[i]):
            if j != i and alive[j] and 1 / 1.4 < props.r[j] / props.r[i] < 1.4:
                alive[j] = False
    return props.take(np.flatnonzero(alive))


# A work budget: HoughCircles' cost grows with the edge pixels times their density (each edge
# votes, each candidate centre measures every edge near it), so a large level covered in edges
# (pixel noise, texture: 1.5 M edge pixels and 8 s at 2000x2000) would take minutes. Real
# outlines at full resolution stay far below both bounds (at most 7 % and 270 k edge pixels on
# the team's micrographs); only a level beyond both gets a higher edge threshold.
_HOUGH_MAX_EDGE_FRACTION = 0.15
_HOUGH_EDGE_BUDGET = 250_000
_HOUGH_EDGE_THRESHOLD = 60.0  # Canny's upper threshold on 8-bit gradients (the lower is half)


def _hough_edge_threshold(blur: np.ndarray) -> float | None:
    """Canny's upper threshold for HoughCircles on ``blur``: the usual one, raised while the edges
    exceed both the fraction and the budget; None when even the highest does (the level is
    nothing but texture and gives no proposals)."""
    threshold = _HOUGH_EDGE_THRESHOLD
    limit = max(_HOUGH_MAX_EDGE_FRACTION * blur.size, _HOUGH_EDGE_BUDGET)
    while threshold <= 255:
        if np.count_nonzero(cv2.Canny(blur, threshold / 2, threshold)) <= limit:
            return threshold
        threshold *= 1.5
    return None


def _hough_proposals(norm: np.ndarray, params: DetectionParams, check: Check | None = None) -> Proposals:
    """Circles voted for by edge gradients (Hough), on every pyramid level.

    A permissive accumulator threshold finds faint and partly hidden outlines too; most of these
    proposals are wrong, and the boundary fit throws them out.
    """
    img = np.clip(norm * 255.0, 0, 255).astype(np.uint8)
    w = norm.shape[1]
    parts: list[Proposals] = []
    for level in range(8):
        if level:
            if min(img.shape) < 64:
                break
            img = cv2.pyrDown(img)
        if check:
            check("droplet proposals")
        blur = cv2.GaussianBlur(img, (0, 0), 1.0)
        edge_threshold = _hough_edge_threshold(blur)
        if edge_threshold is None:
            continue
        found = cv2.HoughCircles(
            blur, cv2.HOUGH_GRADIENT, dp=1, minDist=8, param1=edge_threshold, param2=15, minRadius=3, maxRadius=24
        )
        if found is None:
            continue
        x, y, r = found[0].T.astype(np.float64)
        scale = w / img.shape[1]
        # OpenCV returns circles by decreasing votes: rank them 0.5 down to 0.1.
        rank = 0.5 - 0.4 * np.arange(x.size) / max(x.size, 1)
        parts.append(Proposals((x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5, r * scale, rank))
    return Proposals.concat(parts)


def propose_droplets(norm: np.ndarray, cue: str, params: DetectionParams, check: Check | None = None) -> Proposals:
    """Droplet proposals of one cue on a normalised image (see the module docstring)."""
    if cue == "rim":
        return rim_proposals(norm, params, check=check)
    if cue == "hough":
        return _hough_proposals(norm, params, check)
    return _threshold_proposals(norm, cue, params)


def propose_all(
    norm: np.ndarray, noise: float, params: DetectionParams, check: Check | None = None
) -> dict[str, Proposals]:
    """Proposals of every cue, computed in parallel threads.

    The rim cue at full resolution is the longest single job: it is split into strips so the
    cores share it with the other cues. ``check`` is called between pyramid levels in every job;
    what it raises stops the others too (no job waits for the rest to finish).
    """
    workers = params.workers()
    n_levels = rim_levels(norm.shape, params)
    # Two strips share the cores; a large picture is cut finer, so a stop waits for one strip's
    # work (well under a second) and not half the picture's.
    strips = max(min(workers, norm.size // 1_500_000), -(-norm.size // _STRIP_PX)) if n_levels > 1 else 1
    pool = ThreadPoolExecutor(max_workers=params.workers())
    try:
        others = {cue: pool.submit(propose_droplets, norm, cue, params, check) for cue in ("bright", "dark", "hough")}
        if strips == 1:
            rim_jobs = [pool.submit(rim_proposals, norm, params, None, check)]
        else:
            coarse = pool.submit(rim_proposals, norm, params, range(1, n_levels), check)
            rim, _ = rim_map(norm, params.rim_kernel_px | 1, noise)
            jobs = rim_strip_jobs(rim, params, LEVEL_MAX_RADIUS, strips, check)
            rim_jobs = [pool.submit(job) for job in jobs] + [coarse]
        out = {"rim": Proposals.concat([f.result() for f in rim_jobs])}
        out.update({cue: f.result() for cue, f in others.items()})
    finally:
        # On a stop, jobs not started are dropped; running ones stop at their next check.
        pool.shutdown(wait=False, cancel_futures=True)
    return out
