"""Step 2 of detection, along the rays: the droplet boundary as the strongest closed, smooth path.

Droplets are star-shaped around their centre. Intensity profiles are sampled along rays from each
proposal (at the pyramid level that matches its size), every sample is scored as a possible
boundary, dynamic programming finds the best closed path through those scores, and each point is
placed on the edge with sub-sample precision (:func:`fit_boundaries`).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .proposals import Proposals

__all__ = ["REACH", "SAMPLES", "clear_edge", "fit_boundaries", "sample_rays", "smooth_around"]

SAMPLES = 32  # samples per ray
REACH = 1.6  # rays reach this many proposal radii


def ray_levels(r: np.ndarray, n_levels: int) -> np.ndarray:
    """The pyramid level each droplet of radius ``r`` is sampled at: where one sample step along
    its rays is about one pixel."""
    step = REACH * np.asarray(r) / SAMPLES
    return np.clip(np.floor(np.log2(np.maximum(step, 1.0))).astype(int), 0, n_levels - 1)


def sample_rays(pyramid: list[np.ndarray], props: Proposals, n_rays: int) -> tuple[np.ndarray, np.ndarray]:
    """Intensity profiles (N, rays, samples) and the sample radii (N, samples) in full-res pixels.

    Each droplet is sampled at the pyramid level where one sample step is about one pixel.
    """
    n = len(props)
    unit = (np.arange(SAMPLES, dtype=np.float32) + 0.5) / SAMPLES * REACH
    rho = props.r.astype(np.float32)[:, None] * unit[None, :]
    angles = np.linspace(0, 2 * np.pi, n_rays, endpoint=False)
    # (rays, samples) unit offsets; a droplet's sample points are centre + r * offset.
    off_x = (np.cos(angles)[:, None] * unit[None, :]).astype(np.float32).ravel()
    off_y = (np.sin(angles)[:, None] * unit[None, :]).astype(np.float32).ravel()
    level = ray_levels(props.r, len(pyramid))
    profiles = np.zeros((n, n_rays, SAMPLES), dtype=np.float32)
    for lv in np.unique(level):
        idx = np.flatnonzero(level == lv)
        s = np.float32(2.0**lv)
        # Pixel centres at level lv sit at (i + 0.5) * s - 0.5 in full-resolution pixels.
        cx = ((props.cx[idx] + 0.5) / s - 0.5).astype(np.float32)[:, None]
        cy = ((props.cy[idx] + 0.5) / s - 0.5).astype(np.float32)[:, None]
        r = (props.r[idx] / s).astype(np.float32)[:, None]
        for start in range(0, len(idx), 8192):  # remap maps are limited to 32767 rows
            sl = slice(start, start + 8192)
            map_x = cx[sl] + r[sl] * off_x[None, :]
            map_y = cy[sl] + r[sl] * off_y[None, :]
            vals = _remap(pyramid[lv], map_x, map_y)
            profiles[idx[sl]] = vals.reshape(-1, n_rays, SAMPLES)
    return profiles, rho


_REMAP_MAX = 32000  # cv2.remap takes images and maps under 32767 (SHRT_MAX) pixels a side


def _remap(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """``cv2.remap`` (bilinear, reflected borders) of one row of points per droplet, for images of
    any size: on a side of 32,000 px or more (a long strip, a stitched scan) droplets are sampled
    in bands along that side, each from its own crop."""
    h, w = image.shape
    if h < _REMAP_MAX and w < _REMAP_MAX:
        return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    wide = w >= _REMAP_MAX
    along = map_x if wide else map_y
    lo, hi = np.floor(along.min(axis=1)), np.ceil(along.max(axis=1))
    order = np.argsort(lo, kind="stable")
    out = np.empty(map_x.shape, np.float32)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and hi[order[start : end + 1]].max() - lo[order[start]] < _REMAP_MAX - 8:
            end += 1
        rows = order[start:end]
        a = int(max(lo[rows].min() - 2, 0))
        b = int(min(hi[rows].max() + 3, w if wide else h))
        crop = image[:, a:b] if wide else image[a:b]
        mx, my = (map_x[rows] - a, map_y[rows]) if wide else (map_x[rows], map_y[rows] - a)
        out[rows] = cv2.remap(crop, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        start = end
    return out


def smooth_around(profiles: np.ndarray, radii: np.ndarray, arc_px: float = 3.0) -> np.ndarray:
    """Average each ray with its neighbours over about ``arc_px`` pixels of the outline.

    On a small droplet neighbouring rays cross the same few pixels, and a single ray's profile is
    mostly noise; averaging along the outline keeps the edge and removes the noise.
    """
    rays = profiles.shape[1]
    out = profiles.copy()
    width = np.clip(np.round(rays * arc_px / (2 * np.pi * np.maximum(radii, 1e-6))), 1, rays // 4).astype(int)
    for w in np.unique(width):
        if w <= 1:
            continue
        idx = np.flatnonzero(width == w)
        half = w // 2
        sub = profiles[idx]
        acc = np.zeros_like(sub)
        for k in range(-half, w - half):
            acc += np.roll(sub, k, axis=1)
        out[idx] = acc / w
    return out


def _crossing(profile: np.ndarray, level: np.ndarray, start: np.ndarray, direction: int, above: bool) -> np.ndarray:
    """Fractional sample index where ``profile`` first crosses ``level`` walking from ``start``.

    Args:
        profile: (..., S) values.
        level: (...) thresholds.
        start: (...) integer start indices.
        direction: +1 (outward) or -1 (inward).
        above: look for the first sample >= level (True) or <= level (False).
    Returns:
        (...) fractional indices, NaN where there is no crossing.
    """
    s = profile.shape[-1]
    j = np.arange(s)
    hit = profile >= level[..., None] if above else profile <= level[..., None]
    if direction > 0:
        hit &= j > start[..., None]
        first = _first_true(hit)
        ok = first < s
        prev = np.clip(first - 1, 0, s - 1)
    else:
        hit &= j < start[..., None]
        first = s - 1 - _first_true(hit[..., ::-1])
        ok = first >= 0
        prev = np.clip(first + 1, 0, s - 1)
    first_c = np.clip(first, 0, s - 1)
    a = np.take_along_axis(profile, prev[..., None], -1)[..., 0]
    b = np.take_along_axis(profile, first_c[..., None], -1)[..., 0]
    frac = np.where(np.abs(b - a) > 1e-9, (level - a) / (b - a + 1e-12), 0.5)
    pos = prev + direction * np.clip(frac, 0.0, 1.0)
    return np.where(ok, pos, np.nan)


def _first_true(mask: np.ndarray) -> np.ndarray:
    """Index of the first True along the last axis, its length where there is none (argmax of
    booleans: several times faster than a masked minimum)."""
    return np.where(mask.any(axis=-1), mask.argmax(axis=-1), mask.shape[-1])


def _shift(x: np.ndarray, k: int) -> np.ndarray:
    """``x`` moved ``k`` samples along the last axis (positive: value from further out), edges held."""
    if k == 0:
        return x
    k = max(min(k, x.shape[-1]), -x.shape[-1])
    if k > 0:
        return np.concatenate([x[..., k:], np.repeat(x[..., -1:], k, axis=-1)], axis=-1)
    return np.concatenate([np.repeat(x[..., :1], -k, axis=-1), x[..., :k]], axis=-1)


_INF = np.float32(np.inf)


def _along(x: np.ndarray, op: int) -> np.ndarray:
    """Minimum or maximum (``cv2.REDUCE_MIN`` / ``cv2.REDUCE_MAX``) of float32 ``x`` over its last
    axis. Rays are short rows, where OpenCV's reduction is several times faster than NumPy's."""
    rows = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
    return cv2.reduce(rows, 1, op).reshape(x.shape[:-1])


def _window(x: np.ndarray, lo: int, hi: int, fn: Any) -> np.ndarray:
    """``fn`` (np.minimum or np.maximum) of x[j + lo .. j + hi] along the last axis (lo <= 0 <= hi;
    edges held).

    OpenCV's erosion and dilation by a one-row kernel compute exactly that, several times faster
    than SciPy's filters on these short rows.
    """
    if not lo <= 0 <= hi:
        raise ValueError("the window must contain its sample (lo <= 0 <= hi)")
    rows = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    op = cv2.erode if fn is np.minimum else cv2.dilate
    out = op(rows, np.ones((1, hi - lo + 1), np.uint8), anchor=(-lo, 0), borderType=cv2.BORDER_REPLICATE)
    return out.reshape(x.shape)


def _edge_strength(
    p: np.ndarray, cue: str, rho_step: np.ndarray, min_contrast: np.ndarray, past_contents: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """How strongly each sample of each ray looks like the droplet's boundary, and whether as a rim.

    ``rim``: the outer flank of the first dark band met going outward (intensity rising just after
    a dip below the interior level), or a step down into a darker background that does not recover
    (a droplet next to dark oil). ``bright``: intensity falling outward. (``dark`` images are
    inverted by the caller.) Windows are set in pixels (1.5 px for a slope, 2.5 px for a rim), so
    a 9 px droplet and a 500 px one are judged alike. ``min_contrast`` is per ray bundle (N, 1, 1).
    With ``past_contents`` a rim further out than the first dark band met counts too (the rays of a
    droplet carrying beads or cells cross them before its rim).
    """
    s = p.shape[2]
    step_px = np.maximum(rho_step, 1e-6)
    k = _slope_samples(step_px)
    # Windows are rounded to a few sizes so that rays are processed in a handful of groups.
    w = _quantize(np.clip(2.5 / step_px, max(2, s // 8), s // 3), (5, 7, 10, 13))
    # A step must stay down over 6 px (or half a radius); shorter rays cannot tell.
    far = _quantize(np.maximum(6.0 / step_px, 0.5 / REACH * s), (12, 16, 22, 30, 40))
    strength = np.zeros_like(p)
    is_rim = np.zeros(p.shape, dtype=bool)
    for kk, ww, ff in {(int(a), int(b), int(c)) for a, b, c in zip(k, w, far, strict=True)}:
        idx = np.flatnonzero((k == kk) & (w == ww) & (far == ff))
        strength[idx], is_rim[idx] = _edge_strength_group(p[idx], cue, kk, ww, ff, min_contrast[idx], past_contents)
    return strength, is_rim


def _slope_samples(step_px: np.ndarray) -> np.ndarray:
    """Half-width of the slope window in samples: about 1.5 px, 1 to 4 samples."""
    return np.clip(np.round(1.5 / np.maximum(step_px, 1e-6)), 1, 4).astype(int)


def _usable_samples(s: int) -> np.ndarray:
    """Samples where an edge may lie: beyond 0.3 proposal radii, short of the ray's end."""
    frac = (np.arange(s) + 0.5) / s * REACH
    return (frac >= 0.3) & (frac <= REACH - 0.05)


def _slope_bound(p: np.ndarray, step_px: np.ndarray, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rays (N, rays) with a rise, and with a fall, of at least ``floor`` over the slope window.

    Edge strength never exceeds the slope: a rim's strength is its outward rise damped by its
    depth, a step's its fall. Rays without such a slope cannot show a clear edge, a cheap test.
    """
    rise = np.zeros_like(p)
    k = _slope_samples(step_px)
    for kk in np.unique(k):
        idx = np.flatnonzero(k == kk)
        rise[idx] = _shift(p[idx], int(kk)) - _shift(p[idx], -int(kk))
    rise[..., ~_usable_samples(p.shape[-1])] = 0.0
    return _along(rise, cv2.REDUCE_MAX) >= floor[:, :, 0], _along(rise, cv2.REDUCE_MIN) <= -floor[:, :, 0]


def _quantize(values: np.ndarray, levels: tuple[int, ...]) -> np.ndarray:
    """Each value rounded up to the next of ``levels`` (the largest where none is larger)."""
    lv = np.asarray(levels)
    idx = np.clip(np.searchsorted(lv, values, side="left"), 0, len(lv) - 1)
    return lv[idx]


def _edge_strength_group(
    p: np.ndarray, cue: str, k: int, w: int, far: int, min_contrast: np.ndarray, past_contents: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_edge_strength` for rays sharing the slope window ``k``, rim window ``w`` and step
    window ``far`` (in samples)."""
    n, _, s = p.shape
    rise = _shift(p, k) - _shift(p, -k)
    frac = (np.arange(s) + 0.5) / s * REACH
    usable = _usable_samples(s)[None, None, :]
    if cue != "rim":
        return np.where(usable, np.clip(-rise, 0, None), 0.0), np.zeros(p.shape, dtype=bool)
    level_in = np.median(p[:, :, frac <= 0.3].reshape(n, -1), axis=1)[:, None, None]
    dip = level_in - _window(p, -w, 0, np.minimum)
    rim = np.clip(rise, 0, None) * np.clip(dip / (2.0 * min_contrast), 0.0, 1.0)
    j = np.arange(s)[None, None, :]
    if not past_contents:
        # Only the first rim met going outward is the droplet's own; further out lie its neighbours'.
        floor = _along(np.where(usable, p, _INF), cv2.REDUCE_MIN)[..., None]
        below = usable & (p <= level_in - 0.5 * (level_in - floor)) & (level_in - floor >= min_contrast)
        first = _first_true(below)[..., None]
        rim = np.where(j <= first + 2 * w, rim, 0.0)
    # A fall is a step (not the way into a rim) when the profile stays down over ``far`` samples
    # that the ray still covers; a rim recovers within a few pixels.
    ahead_min = _window(p, 0, far, np.minimum)
    recovery = _window(p, 0, far, np.maximum) - ahead_min
    depth = np.clip(level_in - ahead_min, 1e-6, None)
    step = np.clip(-rise, 0, None) * (recovery < 0.25 * depth) * (j + far < s)
    return np.where(usable, np.maximum(rim, step), 0.0), rim >= step


def _closed_path(cost: np.ndarray, max_step: int = 2, step_cost: float = 0.05) -> np.ndarray:
    """Cheapest closed path through (N, rays, samples) costs, moving at most ``max_step`` samples
    from ray to ray (dynamic programming over two laps; the second lap is the closed outline).

    Costs are summed in fixed point (1/4096) times 8, so the low 3 bits of each candidate carry
    the move that reached it: one running minimum gives both the best cost and its move, three
    times faster than a stack and an argmin.
    """
    n, rays, s = cost.shape
    moves = np.arange(-max_step, max_step + 1)
    if len(moves) > 8:
        raise ValueError("max_step must be at most 3")
    c8 = np.round(cost * 4096.0).astype(np.int32) * 8
    add = np.round(step_cost * np.abs(moves) * 4096.0).astype(np.int32) * 8 + np.arange(len(moves), dtype=np.int32)
    acc = c8[:, 0].copy()
    back = np.zeros((2 * rays, n, s), dtype=np.int8)
    padded = np.full((n, s + 2 * max_step), 1 << 28, dtype=np.int32)  # out of range: never chosen
    best = np.empty((n, s), dtype=np.int32)
    cand = np.empty((n, s), dtype=np.int32)
    for r in range(1, 2 * rays):
        padded[:, max_step:-max_step] = acc
        # Arriving at sample j from j - m costs acc[j - m] plus the move's penalty.
        for k, m in enumerate(moves.tolist()):
            np.add(padded[:, max_step - m : max_step - m + s], add[k], out=best if k == 0 else cand)
            if k:
                np.minimum(best, cand, out=best)
        back[r] = best & 7  # the move's index; its step is looked up only along the chosen path
        acc = (best & ~np.int32(7)) + c8[:, r % rays]
    path = np.zeros((n, 2 * rays), dtype=np.int64)
    path[:, -1] = acc.argmin(axis=1)
    rows = np.arange(n)
    for r in range(2 * rays - 1, rays, -1):
        path[:, r - 1] = np.clip(path[:, r] - moves[back[r, rows, path[:, r]]], 0, s - 1)
    return path[:, rays:]


def _place_edges(p: np.ndarray, path: np.ndarray, is_rim: np.ndarray, cue: str) -> np.ndarray:
    """Sub-sample edge positions around the chosen samples.

    A rim edge sits where the outer flank has climbed a quarter of the way from the rim's minimum
    to the level outside (where hand-drawn outlines put droplet edges); a step edge half-way
    between the levels inside and outside.
    """
    s = p.shape[2]
    w = max(2, s // 8)
    j = np.arange(s)[None, None, :]
    jp = path[..., None]
    inner = (j >= jp - w) & (j <= jp)
    outer = (j >= jp) & (j <= jp + w)
    lo_i = np.where(inner, p, _INF).argmin(axis=-1)
    lo = np.take_along_axis(p, lo_i[..., None], -1)[..., 0]
    hi = _along(np.where(outer, p, -_INF), cv2.REDUCE_MAX)
    level = np.where(is_rim, lo + 0.25 * (hi - lo), np.nan) if cue == "rim" else np.full(lo.shape, np.nan)
    # Steps (and the bright model): half-way between the highest point inside and lowest outside.
    top = _along(np.where(inner, p, -_INF), cv2.REDUCE_MAX)
    bottom = _along(np.where(outer, p, _INF), cv2.REDUCE_MIN)
    level = np.where(np.isnan(level), 0.5 * (top + bottom), level)
    rising = np.where(np.isnan(level), False, is_rim if cue == "rim" else np.zeros_like(is_rim))
    start = np.where(rising, lo_i, path - w).clip(0, s - 1)
    # Each ray needs one crossing: the rise for rims, the fall otherwise.
    pos = np.empty(path.shape)
    pos[rising] = _crossing(p[rising], level[rising], start[rising] - 1, +1, above=True)
    falling = ~rising
    pos[falling] = _crossing(p[falling], level[falling], (path[falling] - w).clip(0, s - 1) - 1, +1, above=False)
    return np.where(np.isfinite(pos) & (np.abs(pos - path) <= w), pos, path.astype(np.float64))


def fit_boundaries(
    profiles: np.ndarray,
    rho: np.ndarray,
    cue: str,
    noise: float | np.ndarray,
    min_support: float = 0.0,
    min_rim_fraction: float = 0.0,
    past_contents: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The droplet outline along rays: the strongest closed, smooth path through the edge evidence.

    Args:
        profiles: (N, rays, samples) normalised intensities along rays from each proposal centre.
        rho: (N, samples) radius of each sample in pixels.
        cue: ``rim``, ``bright`` or ``dark``.
        noise: pixel noise of the normalised image, or one value per proposal (the noise of the
            pyramid level it is sampled from).
        min_support, min_rim_fraction: proposals with fewer rays than this showing a clear edge
            anywhere (or, for the second, a clear rim) cannot give an accepted outline: they are not
            traced (radii NaN, strength 0). On a busy image that is most of them, and tracing is
            most of the cost.
        past_contents: the rim may lie beyond the first dark band a ray meets (``rim`` only; see
            :func:`_edge_strength`).

    Returns:
        radii (N, rays) in pixels, edge strength at the outline (N, rays) and whether each ray's edge
        is a rim (N, rays; always False for ``bright`` and ``dark``).
    """
    p = profiles if cue != "dark" else 1.0 - profiles
    step = (rho[:, 1] - rho[:, 0])[:, None, None]
    noise = np.broadcast_to(np.asarray(noise, dtype=np.float64), (p.shape[0],))[:, None, None]
    # float32 like the profiles: a float64 threshold would turn every (N, rays, samples) array float64.
    min_contrast = np.maximum(1.25 * noise, 0.03).astype(np.float32)
    floor = clear_edge(noise)
    radii = np.full(p.shape[:2], np.nan)
    at = np.zeros(p.shape[:2], dtype=p.dtype)
    rim_at = np.zeros(p.shape[:2], dtype=bool)
    # Two bounds, cheap then exact, spare the work on proposals that cannot be accepted.
    up, down = _slope_bound(p, step[:, 0, 0], floor)
    rim_rays = up if cue == "rim" else down
    hopeful = np.flatnonzero(
        ((up | down if cue == "rim" else down).mean(axis=1) >= min_support)
        & (rim_rays.mean(axis=1) >= min_rim_fraction)
    )
    p, step, floor, min_contrast = p[hopeful], step[hopeful], floor[hopeful], min_contrast[hopeful]
    strength, is_rim = _edge_strength(
        p, "rim" if cue == "rim" else "bright", step[:, 0, 0], min_contrast, past_contents
    )
    clear = strength >= floor
    keep = np.flatnonzero(
        (clear.any(axis=-1).mean(axis=1) >= min_support)
        & ((clear & is_rim).any(axis=-1).mean(axis=1) >= min_rim_fraction)
    )
    traced = hopeful[keep]
    if traced.size:
        p, strength, is_rim, step, min_contrast = p[keep], strength[keep], is_rim[keep], step[keep], min_contrast[keep]
        scale = np.maximum(strength.max(axis=(1, 2), keepdims=True), min_contrast)
        path = _closed_path(-strength / scale)
        at[traced] = np.take_along_axis(strength, path[..., None], -1)[..., 0]
        rim_at[traced] = np.take_along_axis(is_rim, path[..., None], -1)[..., 0] & (at[traced] > 0)
        pos = _place_edges(p, path, rim_at[traced], "rim" if cue == "rim" else "bright")
        radii[traced] = rho[traced, :1] + pos * step[:, :, 0]
    return radii, at, rim_at


def clear_edge(noise: Any) -> Any:
    """Edge strength a ray needs to support an outline: clearly above the pixel noise (a number,
    or an array of them)."""
    return np.maximum(1.75 * np.asarray(noise, dtype=np.float64), 0.02)
