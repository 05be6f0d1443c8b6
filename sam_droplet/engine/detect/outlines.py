"""Step 2 of detection, per droplet: fitted outlines judged, deduplicated and rasterised.

Proposals are fitted best first (:func:`fit_outlines`); an outline is accepted when enough rays
show a clear edge, it is regular and most of it lies on one circle; overlapping outlines are
suppressed (:func:`dedupe_outlines`) and the survivors become masks (:func:`rasterize`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields

import numpy as np
from scipy.spatial import cKDTree

from ..circles import fit_circles
from ..instances import Instance
from .boundary import clear_edge, fit_boundaries, ray_levels, sample_rays, smooth_around
from .params import Check, DetectionParams
from .proposals import Proposals

__all__ = [
    "FirstPass",
    "Outlines",
    "circle_agreement",
    "dedupe_outlines",
    "first_pass",
    "fit_outlines",
    "outline_quality",
    "rasterize",
]

_GROW = 1.4  # a failed proposal is tried again this much larger
_CLEAR = 0.8  # an outline scoring this keeps the droplets seen through it (see dedupe_outlines)
# A droplet found past its contents must show a clear edge on this share of its rays, and this
# share of its outline must lie on one circle (see _fit_refit).
_PAST_SUPPORT = 0.8
_PAST_AGREEMENT = 0.85
# An outline holding this many outlines of one size (radii within this coefficient of variation)
# carries them: see dedupe_outlines.
_CARRIED_MIN = 3
_CARRIED_CV = 0.1


def outline_quality(
    radii: np.ndarray, strength: np.ndarray, noise: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Support, smoothed radii and irregularity of fitted outlines.

    A ray supports the outline when its edge is clearly above noise and not much weaker than the
    outline's typical edge; unsupported rays are bridged from their neighbours.

    Returns:
        radii (N, rays), valid (N, rays), support (fraction of valid rays) and irregularity (std of
        the radii beyond half a pixel, over their mean).
    """
    rays = radii.shape[1]
    floor = np.reshape(clear_edge(noise), (-1, 1))  # one noise, or one per outline
    typical = np.median(strength, axis=1, keepdims=True)
    valid = (strength >= floor) & (strength >= 0.25 * typical)
    support = valid.mean(axis=1)
    # Bridge unsupported rays by circular linear interpolation between supported ones.
    idx3 = np.arange(3 * rays)
    good3 = np.tile(valid, 3)
    prev = np.maximum.accumulate(np.where(good3, idx3, -1), axis=1)[:, rays : 2 * rays]
    nxt = np.minimum.accumulate(np.where(good3, idx3, 3 * rays)[:, ::-1], axis=1)[:, ::-1][:, rays : 2 * rays]
    vals3 = np.tile(radii, 3)
    p_i, n_i = np.clip(prev, 0, 3 * rays - 1), np.clip(nxt, 0, 3 * rays - 1)
    v_prev, v_next = np.take_along_axis(vals3, p_i, 1), np.take_along_axis(vals3, n_i, 1)
    pos = np.arange(rays)[None, :] + rays
    t = np.where(n_i > p_i, (pos - p_i) / np.maximum(n_i - p_i, 1), 0.0)
    bridged = np.where((prev >= 0) & (nxt < 3 * rays), v_prev + t * (v_next - v_prev), radii)
    out = np.where(valid.sum(axis=1, keepdims=True) >= 2, bridged, radii)
    out = (np.roll(out, 1, axis=1) + 2 * out + np.roll(out, -1, axis=1)) / 4
    mean = out.mean(axis=1)
    # A digital outline wobbles by about half a pixel whatever the droplet's size: that much spread
    # is not irregularity.
    irregularity = np.maximum(out.std(axis=1) - 0.5, 0.0) / np.maximum(mean, 1e-9)
    return out, valid, support, irregularity


def rasterize(cx: float, cy: float, radii: np.ndarray, shape: tuple[int, int]) -> Instance | None:
    """Mask of a star-shaped outline: pixels whose centre lies within the radius at their angle.

    Args:
        cx, cy: the centre the rays start from.
        radii: (rays,) boundary distance on equally spaced rays, the first along +x.
        shape: (height, width) of the image; the crop is clipped to it.
    """
    h, w = shape
    rays = radii.size
    reach = float(radii.max())
    x0, x1 = max(int(np.floor(cx - reach)), 0), min(int(np.ceil(cx + reach)) + 1, w)
    y0, y1 = max(int(np.floor(cy - reach)), 0), min(int(np.ceil(cy + reach)) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return None
    dx = np.arange(x0, x1) - cx
    dy = np.arange(y0, y1)[:, None] - cy
    d2 = dx * dx + dy * dy
    # Inside the shortest radius every pixel is in, beyond the longest none is: only the ring
    # between them needs its angle (most of a large droplet's crop is not in that ring).
    mask = d2 < float(radii.min()) ** 2
    ring_y, ring_x = np.nonzero(~mask & (d2 < reach * reach))
    t = (np.arctan2(dy[ring_y, 0], dx[ring_x]) % (2 * np.pi)) * (rays / (2 * np.pi))
    k = np.floor(t).astype(int) % rays
    f = t - np.floor(t)
    bound = radii[k] * (1 - f) + radii[(k + 1) % rays] * f
    mask[ring_y, ring_x] = d2[ring_y, ring_x] < bound * bound
    return Instance(x0=x0, y0=y0, mask=mask).tight()


@dataclass
class Outlines:
    """Fitted outlines: ray origins (ox, oy), radii per ray (N, rays), centroids, mean radii, scores."""

    ox: np.ndarray
    oy: np.ndarray
    radii: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    r: np.ndarray
    score: np.ndarray
    rim_fraction: np.ndarray  # fraction of rays whose edge is a rim (dark band), not a step
    support: np.ndarray  # fraction of rays with a clear edge
    # The rim's typical (median) edge over the edge a ray needs to count (1: barely out of noise).
    contrast: np.ndarray

    def _columns(self) -> list[np.ndarray]:
        """Every field, one row per outline, in declaration order."""
        return [getattr(self, f.name) for f in fields(self)]

    def take(self, index: np.ndarray | slice) -> Outlines:
        return Outlines(*(column[index] for column in self._columns()))

    @classmethod
    def empty(cls, rays: int) -> Outlines:
        return cls(*(np.zeros((0, rays)) if f.name == "radii" else np.zeros(0) for f in fields(cls)))

    @classmethod
    def concat(cls, parts: list[Outlines]) -> Outlines:
        return cls(*(np.concatenate(columns) for columns in zip(*(p._columns() for p in parts), strict=True)))

    def replace(self, index: np.ndarray, other: Outlines) -> Outlines:
        """A copy with the rows at ``index`` replaced by ``other``'s rows."""
        out = self.take(np.arange(len(self.score)))
        for mine, theirs in zip(out._columns(), other._columns(), strict=True):
            mine[index] = theirs
        return out


_CHECK_EVERY = 2048  # proposals fitted between two calls of ``check`` (under half a second)


@dataclass
class FirstPass:
    """One fit, without refits, of the batch :func:`fit_outlines` fits first (the proposals that
    lead their apparent droplet): where the droplets are, for a fraction of the whole fit's cost.

    Attributes:
        order: every proposal's index, in fitting order (the fit takes it over too).
        rows: the proposals fitted, the first of ``order``.
        fitted: their outlines, one row each, score 0 where not a droplet outline.
        noise: the noise they were judged against.
    """

    order: np.ndarray
    rows: np.ndarray
    fitted: Outlines
    noise: float | np.ndarray

    def found(self, params: DetectionParams) -> Outlines:
        """The accepted outlines (duplicates of one droplet included)."""
        return self.fitted.take(np.flatnonzero(_accepted(self.fitted, params)))


def _fit_order(props: Proposals, check: Check | None = None) -> tuple[np.ndarray, int]:
    """Proposals in fitting order, and the size of the first batch.

    Leaders first: the best proposal of each apparent droplet (proposal-level NMS), then the
    others, which are fitted only where no confident outline has appeared yet.
    """
    leaders = _proposal_leaders(props, check)
    rest = np.setdiff1d(np.argsort(-props.score, kind="stable"), leaders, assume_unique=True)
    rest = rest[np.argsort(-props.score[rest], kind="stable")]
    return np.concatenate([leaders, rest]), max(256, len(leaders))


def _chunks(rows: np.ndarray) -> list[slice]:
    """Fits are independent: a large batch is fitted in chunks, checking between them."""
    return [slice(i, i + _CHECK_EVERY) for i in range(0, rows.size, _CHECK_EVERY)]


def first_pass(
    pyramid: list[np.ndarray],
    props: Proposals,
    cue: str,
    noise: float | np.ndarray,
    params: DetectionParams,
    check: Check | None = None,
) -> FirstPass:
    """Fit :func:`fit_outlines`' first batch once (see :class:`FirstPass`); ``fit_outlines`` with
    the same proposals and noise takes it over instead of fitting that batch again."""
    order, batch = _fit_order(props, check) if len(props) else (np.zeros(0, np.int64), 0)
    rows = order[:batch]
    parts = [Outlines.empty(params.n_rays)]
    for chunk in _chunks(rows):
        if check:
            check("boundary fit")
        sub = props.take(rows[chunk])
        parts.append(
            _in_parallel(len(sub), lambda idx, sub=sub: _fit_once(pyramid, sub.take(idx), cue, noise, params), params)
        )
    return FirstPass(order, rows, Outlines.concat(parts), noise)


def fit_outlines(
    pyramid: list[np.ndarray],
    props: Proposals,
    cue: str,
    noise: float | np.ndarray,
    params: DetectionParams,
    check: Check | None = None,
    first: FirstPass | None = None,
) -> Outlines:
    """Fit proposals best first, in batches; keep good outlines, one per droplet.

    After each batch, proposals that fall inside a droplet already outlined (centre within its
    radius, similar size) are dropped unfitted: most droplets are proposed several times (by each
    cue and pyramid level), and one good fit is enough. ``noise`` is the image's pixel noise, or
    one value per pyramid level (each proposal judged against the noise of the level it is sampled
    at). ``first``, the :func:`first_pass` of these proposals against this noise, spares fitting the
    first batch twice; the result is the same.
    """
    if len(props) == 0:
        return Outlines.empty(params.n_rays)
    if first is None:
        order, batch = _fit_order(props, check)
    elif len(first.order) != len(props) or not np.array_equal(first.noise, noise):
        raise ValueError("the first pass was fitted to other proposals or against another noise")
    else:
        order, batch = first.order, len(first.rows)
    found: list[Outlines] = []
    known = first.fitted if first is not None else None
    while order.size:
        if check:
            check("boundary fit")
        current, order = order[:batch], order[batch:]
        batch = max(256, len(props) // 8)
        parts = []
        for chunk in _chunks(current):
            if check and parts:
                check("boundary fit")
            once = known.take(chunk) if known is not None else None
            parts.append(_fit_parallel(pyramid, props.take(current[chunk]), cue, noise, params, once))
        known = None  # only the first batch was fitted before
        out = Outlines.concat(parts)
        found.append(out)
        sure = out.take(np.flatnonzero(out.score >= 0.85))
        if order.size and len(sure.score):
            # Only confident outlines stand for their droplet; a poor one must not stop a better fit.
            tree = cKDTree(np.stack([sure.cx, sure.cy], axis=1))
            dist, nearest = tree.query(np.stack([props.cx[order], props.cy[order]], axis=1))
            ratio = props.r[order] / sure.r[nearest]
            covered = (dist < 0.5 * sure.r[nearest]) & (ratio > 0.5) & (ratio < 2.0)
            order = order[~covered]
    if check:
        check("boundary fit")
    return dedupe_outlines(Outlines.concat(found), keep_nested=params.nested_droplets)


def _proposal_leaders(props: Proposals, check: Check | None = None) -> np.ndarray:
    """Indices of proposals not repeating a better one (centre within half its radius, size
    within a factor 2), best first."""
    order = np.argsort(-props.score, kind="stable")
    tree = cKDTree(np.stack([props.cx, props.cy], axis=1))
    taken = np.zeros(len(props), dtype=bool)
    leaders = []
    for k, i in enumerate(order):
        if check and k % 8192 == 0:
            check("boundary fit")
        if taken[i]:
            continue
        leaders.append(i)
        near = np.asarray(tree.query_ball_point((props.cx[i], props.cy[i]), 0.5 * props.r[i]), dtype=np.int64)
        ratio = props.r[near] / props.r[i]
        taken[near[(ratio > 0.5) & (ratio < 2.0)]] = True
    return np.asarray(leaders, dtype=np.int64)


def _in_parallel(n: int, job: Callable[[np.ndarray], Outlines], params: DetectionParams) -> Outlines:
    """``job`` (rows -> their outlines) over ``n`` rows, in parts on parallel threads."""
    workers = params.workers()
    # Threads pay off on large batches only: small numpy arrays hold the interpreter lock.
    if workers <= 1 or n < 512:
        return job(np.arange(n))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return Outlines.concat(list(pool.map(job, np.array_split(np.arange(n), workers))))


def _fit_parallel(
    pyramid: list[np.ndarray],
    props: Proposals,
    cue: str,
    noise: float | np.ndarray,
    params: DetectionParams,
    once: Outlines | None = None,
) -> Outlines:
    """:func:`_fit_refit` on parts of ``props`` in parallel threads."""

    def job(idx: np.ndarray) -> Outlines:
        return _fit_refit(pyramid, props.take(idx), cue, noise, params, None if once is None else once.take(idx))

    return _in_parallel(len(props), job, params)


def _accepted(outlines: Outlines, params: DetectionParams) -> np.ndarray:
    """Which outlines are droplets: a positive score and a diameter within the limits."""
    ok = outlines.score > 0
    ok &= 2 * outlines.r >= params.min_diameter_px
    if params.max_diameter_px is not None:
        ok &= 2 * outlines.r <= params.max_diameter_px
    return ok


def _fit_refit(
    pyramid: list[np.ndarray],
    props: Proposals,
    cue: str,
    noise: float | np.ndarray,
    params: DetectionParams,
    once: Outlines | None = None,
) -> Outlines:
    """Fit proposals (or take their fit, ``once``); refit from the outline's own centre and size
    those that moved away from their proposal (off-centre, or another size) or fell just short of
    acceptance, keeping the better fit. Rays from the true centre meet the edge square on, so a
    refit sharpens most fits. Proposals that found edges on few rays are tried again ``_GROW``
    times larger. With the rim model, proposals still without an outline are fitted once more
    taking rims beyond the first dark band on each ray: a droplet carrying beads or cells. Returns
    the good outlines."""
    first = _fit_once(pyramid, props, cue, noise, params) if once is None else once
    first = _recentred(pyramid, props, first, cue, noise, params)
    # A proposal much smaller than its droplet (a bright core, a piece of interior) sends rays that
    # end before the edge: where the fit found edges on few rays, try the proposal larger once.
    idx = np.flatnonzero((first.score == 0) & (first.support < 0.5))
    if idx.size:
        grown = Proposals(props.cx[idx], props.cy[idx], _GROW * props.r[idx], props.score[idx])
        first = _keep_better(first, idx, _fit_once(pyramid, grown, cue, noise, params))
    if cue == "rim":
        # The first dark band a ray meets is the droplet's rim in a monolayer (beyond it lie the
        # neighbours'); in a droplet carrying beads or cells it is often one of them, and the
        # strongest closed path runs through them. Only where that gave no outline is the rim
        # sought beyond them; the outline must still be regular and round to be accepted.
        idx = np.flatnonzero((first.score == 0) & (first.support > 0))
        if idx.size:
            sub = props.take(idx)
            past = _fit_once(pyramid, sub, cue, noise, params, past_contents=True)
            past = _recentred(pyramid, sub, past, cue, noise, params, past_contents=True)
            past.score[~_clear_and_round(past)] = 0.0
            first = _keep_better(first, idx, past)
    return first.take(np.flatnonzero(_accepted(first, params)))


def _clear_and_round(outlines: Outlines) -> np.ndarray:
    """Which outlines show a clear edge on most rays (``_PAST_SUPPORT``) that lies on one circle
    (``_PAST_AGREEMENT``): what a droplet found past its contents must show."""
    xs, ys = _outline_points(outlines.ox, outlines.oy, outlines.radii)
    return (outlines.support >= _PAST_SUPPORT) & (circle_agreement(xs, ys) >= _PAST_AGREEMENT)


def _outline_points(ox: np.ndarray, oy: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (N, rays) points of outlines given as radii on equally spaced rays from (ox, oy), the
    first along +x."""
    angles = np.linspace(0, 2 * np.pi, radii.shape[1], endpoint=False)
    return ox[:, None] + radii * np.cos(angles), oy[:, None] + radii * np.sin(angles)


def _carries_objects(container: np.ndarray, object_r: np.ndarray, n: int) -> np.ndarray:
    """Which of ``n`` outlines hold at least ``_CARRIED_MIN`` outlines of one size (radii within a
    ``_CARRIED_CV`` coefficient of variation): beads or cells it carries, not droplets seen
    through it (a polydisperse population).

    Args:
        container, object_r: for each outline lying inside a larger one, that one's index and its
            own radius.
    """
    k = np.bincount(container, minlength=n).astype(np.float64)
    mean = np.bincount(container, weights=object_r, minlength=n) / np.maximum(k, 1)
    square = np.bincount(container, weights=object_r * object_r, minlength=n) / np.maximum(k, 1)
    cv = np.sqrt(np.maximum(square - mean * mean, 0.0)) / np.maximum(mean, 1e-9)
    return (k >= _CARRIED_MIN) & (cv <= _CARRIED_CV)


def _recentred(
    pyramid: list[np.ndarray],
    props: Proposals,
    fitted: Outlines,
    cue: str,
    noise: float | np.ndarray,
    params: DetectionParams,
    past_contents: bool = False,
) -> Outlines:
    """``fitted`` (the outlines of ``props``), with those that moved away from their proposal or
    were not accepted fitted again from their own centre and size, where that scores higher."""
    moved = (np.hypot(fitted.cx - props.cx, fitted.cy - props.cy) > 0.1 * props.r) | (
        np.abs(fitted.r / props.r - 1.0) > 0.15
    )
    # Refit only outlines worth it: edges found on half the rays at least.
    idx = np.flatnonzero((moved | (fitted.score == 0)) & (fitted.r > 0) & (fitted.support >= 0.5))
    if not idx.size:
        return fitted
    again = Proposals(fitted.cx[idx], fitted.cy[idx], fitted.r[idx], props.score[idx])
    return _keep_better(fitted, idx, _fit_once(pyramid, again, cue, noise, params, past_contents))


def _keep_better(first: Outlines, idx: np.ndarray, second: Outlines) -> Outlines:
    """``first`` with its rows ``idx`` replaced by ``second``'s (one per row) where they score higher."""
    better = second.score > first.score[idx]
    return first.replace(idx[better], second.take(np.flatnonzero(better)))


def _fit_once(
    pyramid: list[np.ndarray],
    props: Proposals,
    cue: str,
    noise: float | np.ndarray,
    params: DetectionParams,
    past_contents: bool = False,
) -> Outlines:
    """One boundary fit per proposal; score 0 where the fit is not a droplet outline.

    Small droplets get fewer rays (one per 2 px of outline, at least 16): more would cross the
    same pixels. Every outline is stored with ``params.n_rays`` radii.
    """
    n = len(props)
    rays_needed = np.clip(np.pi * props.r, 16, params.n_rays)
    levels = np.array(sorted({16, 24, 32, params.n_rays}))
    rays_of = levels[np.clip(np.searchsorted(levels, rays_needed), 0, len(levels) - 1)]
    radii = np.zeros((n, params.n_rays))
    support = np.zeros(n)
    irregularity = np.zeros(n)
    rim_fraction = np.zeros(n)
    edge_rays = np.zeros((n, params.n_rays), dtype=bool)
    contrast = np.zeros(n)
    for rays in np.unique(rays_of):
        idx = np.flatnonzero(rays_of == rays)
        sub = props.take(idx)
        profiles, rho = sample_rays(pyramid, sub, int(rays))
        profiles = smooth_around(profiles, sub.r)
        # One noise for the image, or each proposal the noise of the level its rays are sampled at.
        here = noise if np.ndim(noise) == 0 else np.asarray(noise)[ray_levels(sub.r, len(pyramid))]
        rr, strength, is_rim = fit_boundaries(
            profiles,
            rho,
            cue,
            here,
            # Past its contents a droplet must show clear edges on most rays: fewer need no tracing.
            max(params.min_fit_support, _PAST_SUPPORT) if past_contents else params.min_fit_support,
            params.min_rim_fraction if cue == "rim" else 0.0,
            past_contents,
        )
        rr = np.where(np.isnan(rr), sub.r[:, None], rr)  # untraced: hopeless, score 0 below
        rr, valid, support[idx], irregularity[idx] = outline_quality(rr, strength, here)
        contrast[idx] = np.median(strength, axis=1) / np.reshape(clear_edge(here), -1)
        rim_fraction[idx] = (is_rim & valid).mean(axis=1)
        radii[idx] = _resample_around(rr, params.n_rays)
        edge_rays[idx] = _resample_around(valid.astype(np.float64), params.n_rays) > 0.5
    score = support * (1.0 - irregularity)
    ok = (support >= params.min_fit_support) & (irregularity <= params.max_fit_irregularity)
    ok &= score >= min(params.min_fit_score, params.min_partial_score)
    if cue == "rim":
        # A bright-field droplet shows its rim on part of its outline at least; an outline made of
        # steps only is a speck of debris or a patch of background.
        ok &= rim_fraction >= params.min_rim_fraction
    xs, ys = _outline_points(props.cx, props.cy, radii)
    # A droplet's centre is the centroid of its outline, not the proposal's.
    cx, cy = xs.mean(axis=1), ys.mean(axis=1)
    r = np.hypot(xs - cx[:, None], ys - cy[:, None]).mean(axis=1)
    # Droplets are round: a wobbly outline through texture agrees with no circle. A partial outline
    # (a droplet half hidden, or half out of focus) is accepted when its clear edges lie on one.
    check = np.flatnonzero(ok)
    if check.size:
        ok[check] = circle_agreement(xs[check], ys[check]) >= params.min_circle_agreement
    partial = np.flatnonzero(ok & (score < params.min_fit_score))
    if partial.size:
        edges = circle_agreement(xs[partial], ys[partial], points=edge_rays[partial])
        ok[partial] = edges >= params.partial_circle_agreement
    score = np.where(ok, score, 0.0)
    return Outlines(props.cx.copy(), props.cy.copy(), radii, cx, cy, r, score, rim_fraction, support, contrast)


def circle_agreement(
    xs: np.ndarray, ys: np.ndarray, points: np.ndarray | None = None, iterations: int = 4
) -> np.ndarray:
    """Fraction of each outline's points within max(1.5 px, 5 %) of the radius of its best circle.

    Args:
        xs, ys: (N, rays) outline points in pixels.
        points: (N, rays) which points to judge (None: all).
        iterations: fits; each after the first uses the points closest to the previous circle.

    The circle is fitted algebraically (Kasa, :func:`~sam_droplet.engine.circles.fit_circles`) and
    refitted to the 60 % of points closest to it (or all within tolerance), so a droplet partly
    hidden behind another agrees on its visible arc.
    """
    use = np.ones(xs.shape, dtype=bool) if points is None else points
    w = use.astype(np.float64)
    for it in range(iterations):
        _, _, rc, res = fit_circles(xs, ys, w)
        tol = np.maximum(1.5, 0.05 * rc)[:, None]
        if it < iterations - 1:
            # The 60th percentile of the residuals of the points in use (np.nanpercentile is slow).
            ranked = np.sort(np.where(use, res, np.inf), axis=1)
            k = np.clip(np.ceil(0.6 * use.sum(axis=1)).astype(int) - 1, 0, res.shape[1] - 1)
            cut = np.take_along_axis(ranked, k[:, None], axis=1)
            w = (use & (res <= np.maximum(tol, cut))).astype(np.float64)
    return ((res <= tol) & use).sum(axis=1) / np.maximum(use.sum(axis=1), 1)


def _resample_around(radii: np.ndarray, rays: int) -> np.ndarray:
    """Radii on ``rays`` equally spaced angles, interpolated circularly from (N, k) radii."""
    k = radii.shape[1]
    if k == rays:
        return radii
    t = np.arange(rays) * (k / rays)
    i0 = np.floor(t).astype(int) % k
    f = t - np.floor(t)
    return radii[:, i0] * (1 - f) + radii[:, (i0 + 1) % k] * f


def _circle_overlap(d: np.ndarray, r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Intersection area of circles with radii r1, r2 whose centres are d apart."""
    d = np.maximum(d, 1e-9)
    inside = d <= np.abs(r1 - r2)
    apart = d >= r1 + r2
    c1 = np.clip((d**2 + r1**2 - r2**2) / (2 * d * r1), -1, 1)
    c2 = np.clip((d**2 + r2**2 - r1**2) / (2 * d * r2), -1, 1)
    lens = (
        r1**2 * np.arccos(c1)
        + r2**2 * np.arccos(c2)
        - 0.5 * np.sqrt(np.clip((-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2), 0, None))
    )
    return np.where(apart, 0.0, np.where(inside, np.pi * np.minimum(r1, r2) ** 2, lens))


def _overlapping_pairs(cx: np.ndarray, cy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Index pairs (i < j, sorted) of circles that may overlap: a superset of those whose centres
    lie closer than the sum of their radii.

    One search out to twice the largest radius finds millions of pairs on a packed picture holding
    a single large outline (38 000 outlines, 8.6 M pairs, a second); so the common radii are
    searched out to twice the 99th percentile, and the few larger circles each out to their own
    radius plus the largest.
    """
    tree = cKDTree(np.stack([cx, cy], axis=1))
    common = float(np.percentile(r, 99))
    pairs = tree.query_pairs(r=2.0 * common, output_type="ndarray").reshape(-1, 2)
    large = np.flatnonzero(r > common)
    if large.size:
        near = tree.query_ball_point(np.stack([cx[large], cy[large]], axis=1), r[large] + float(r.max()))
        extra = [(i, j) for i, js in zip(large.tolist(), near, strict=True) for j in js if j != i]
        if extra:
            pairs = np.concatenate([pairs, np.sort(np.array(extra, dtype=pairs.dtype), axis=1)])
    return np.unique(np.sort(pairs, axis=1), axis=0)


def dedupe_outlines(
    out: Outlines, max_iou: float = 0.3, max_inside: float = 0.6, keep_nested: bool = False
) -> Outlines:
    """Non-maximum suppression: keep the best outlines that do not repeat or swallow a better one.

    An outline goes when it overlaps a better-scored kept one with IoU above ``max_iou``, or when
    more than ``max_inside`` of either lies inside the other (an outline around a group of droplets,
    or one around part of a droplet). A small outline inside one at least twice as large is either a
    droplet seen through it or its content (a cell, a bead): with ``keep_nested``, both stay when
    the larger is a clear outline (``_CLEAR``) or carries three or more of one size (beads and
    cells are of one size; a faint droplet's outline would lose to a bead's sharp one); without
    it, the larger wins whatever the scores (a speck's small round outline easily scores higher
    than its droplet's). Either way the larger must not be mostly
    covered by what lies inside it (then it is an outline around a group of droplets). Overlaps are
    computed on the outlines' equivalent circles.
    """
    n = len(out.score)
    if n < 2:
        return out
    pairs = _overlapping_pairs(out.cx, out.cy, out.r)
    d = np.hypot(out.cx[pairs[:, 0]] - out.cx[pairs[:, 1]], out.cy[pairs[:, 0]] - out.cy[pairs[:, 1]])
    r1, r2 = out.r[pairs[:, 0]], out.r[pairs[:, 1]]
    pairs, d, r1, r2 = pairs[d < r1 + r2], d[d < r1 + r2], r1[d < r1 + r2], r2[d < r1 + r2]
    inter = _circle_overlap(d, r1, r2)
    a1, a2 = np.pi * r1**2, np.pi * r2**2
    inside = inter / np.minimum(a1, a2) > max_inside
    clash = (inter / (a1 + a2 - inter) > max_iou) | inside
    big = np.where(r1 >= r2, pairs[:, 0], pairs[:, 1])
    small = np.where(r1 >= r2, pairs[:, 1], pairs[:, 0])
    small_inside = inside & (np.minimum(r1, r2) < 0.5 * np.maximum(r1, r2))
    cover = np.bincount(big[small_inside], weights=np.minimum(a1, a2)[small_inside], minlength=n)
    container = cover / (np.pi * out.r**2) < 0.3
    # Pairs where only the larger outline can remove the smaller (its content).
    one_way = np.zeros(len(pairs), dtype=bool)
    if keep_nested:
        clear = (out.score >= _CLEAR) | _carries_objects(big[small_inside], np.minimum(r1, r2)[small_inside], n)
        clash &= ~(small_inside & (container & clear)[big])
    else:
        one_way = clash & small_inside & container[big]
    rivals: list[list[int]] = [[] for _ in range(n)]
    for i, j in pairs[clash & ~one_way].tolist():
        rivals[i].append(j)
        rivals[j].append(i)
    for b, s in zip(big[one_way].tolist(), small[one_way].tolist(), strict=True):
        rivals[s].append(b)
    kept = np.zeros(n, dtype=bool)
    for i in np.argsort(-out.score, kind="stable").tolist():
        if not any(kept[j] for j in rivals[i]):
            kept[i] = True
    # Content kept before its (lower-scored) container was reached goes now.
    kept[small[one_way][kept[big[one_way]]]] = False
    return out.take(np.flatnonzero(kept))
