"""Size distributions as particle sizing reports them, and size populations by a mixture on volume.

:func:`size_distribution` gives, over equivalent diameters d:

- ``mean``, ``sd`` (n - 1), ``cv``;
- number-weighted percentiles ``dn10``, ``dn50``, ``dn90`` and volume-weighted (weights d³)
  percentiles ``dv10``, ``dv50``, ``dv90`` (D[v,0.1], D[v,0.5], D[v,0.9]);
- ``span = (dv90 - dv10) / dv50``;
- ``d32 = Σd³ / Σd²`` (Sauter mean, D[3,2]) and ``d43 = Σd⁴ / Σd³`` (De Brouckere mean, D[4,3]).

Percentiles interpolate the cumulative distribution at its midpoints: with the diameters sorted and
weights w (1, or d³), droplet i stands at P_i = (W_i - w_i / 2) / W, where W_i is the cumulative
weight up to and including it and W the total; a percentile q is interpolated linearly in P between
the two droplets around it, and is the smallest or largest diameter beyond the first or last
midpoint. With equal weights this is Hazen's definition (numpy's ``method="hazen"``); either way a
percentile lies between two neighbouring droplets' diameters. The page computes the same
(``static/js/analysis.js``).

:func:`size_populations` splits the droplets into populations with a mixture of log-normal
distributions on droplet volume (a Gaussian mixture on log d³; 1 to 4 components, the number
chosen by BIC among fits whose every component holds 5 droplets or more). On a monodisperse ddPCR
monolayer satellites sit near a tenth of the main volume and merged doublets at twice it: on log
volume they stand many standard deviations apart, while a single polydisperse (log-normal)
population stays one population instead of being cut into pieces, as a Gaussian mixture on volume
itself would cut its long tail. Neighbouring components that are not clearly apart are one
population: Ashman's D <= 2 (the usual bimodality criterion; a mixture fits a heavy-tailed
population as a narrow and a wide component with the same mean, and a broad spread of debris is
not a population either), or the lighter one's mean within 3 standard deviations of the heavier
one (a few droplets in a tail).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["size_distribution", "size_populations", "weighted_percentile"]

# Each component's spread on log volume is at least this (1 % of the volume): equivalent diameters
# come from whole pixels, so many droplets share one value, and a component must not collapse onto one.
_MIN_SD = 0.01
_MAX_COMPONENTS = 4
_MIN_DROPLETS_TO_SPLIT = 10
_MIN_SEPARATION = 2.0  # Ashman's D between two populations
_MIN_POPULATION = 5  # droplets: fewer make no population (a narrow component fits any small clump)


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The ``q``-th fraction (0 to 1) of ``values`` weighted by ``weights`` (see the module docstring)."""
    order = np.argsort(values, kind="stable")
    v, w = np.asarray(values, np.float64)[order], np.asarray(weights, np.float64)[order]
    total = w.sum()
    if v.size == 0 or total <= 0:
        return math.nan
    positions = (np.cumsum(w) - w / 2) / total
    return float(np.interp(q, positions, v))


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def size_distribution(diameters: np.ndarray, unit: str) -> dict[str, Any]:
    """``{unit, n, mean, sd, cv, dn10, dn50, dn90, dv10, dv50, dv90, span, d32, d43}`` of ``diameters``
    (in ``unit``); None where undefined (no droplets; sd and cv of one)."""
    d = np.asarray(diameters, dtype=np.float64)
    out: dict[str, Any] = {"unit": unit, "n": int(d.size)}
    keys = ("mean", "sd", "cv", "dn10", "dn50", "dn90", "dv10", "dv50", "dv90", "span", "d32", "d43")
    if d.size == 0:
        return {**out, **dict.fromkeys(keys)}
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if d.size > 1 else None
    ones, cubes = np.ones_like(d), d**3
    dv = {q: weighted_percentile(d, cubes, q / 100) for q in (10, 50, 90)}
    out.update(
        mean=mean,
        sd=sd,
        cv=sd / mean if sd is not None and mean > 0 else None,
        dn10=weighted_percentile(d, ones, 0.1),
        dn50=weighted_percentile(d, ones, 0.5),
        dn90=weighted_percentile(d, ones, 0.9),
        dv10=dv[10],
        dv50=dv[50],
        dv90=dv[90],
        span=(dv[90] - dv[10]) / dv[50] if dv[50] > 0 else None,
        d32=_clean(cubes.sum() / (d**2).sum()) if (d**2).sum() > 0 else None,
        d43=_clean((d**4).sum() / cubes.sum()) if cubes.sum() > 0 else None,
    )
    return out


def _starts(x: np.ndarray, k: int) -> list[list[np.ndarray]]:
    """Starting groups for EM: the k quantile groups of the sorted values, and the groups between
    the k - 1 widest gaps (well-separated populations, such as a few satellites, start apart)."""
    xs = np.sort(x)
    starts = [np.array_split(xs, k)]
    if k > 1:
        cuts = np.sort(np.argsort(np.diff(xs), kind="stable")[-(k - 1) :]) + 1
        starts.append(np.split(xs, cuts))
    return starts


def _em(x: np.ndarray, groups: list[np.ndarray], iterations: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """EM for a 1-D Gaussian mixture started from ``groups``; weights, means, variances (sorted by
    mean) and the log-likelihood."""
    mu = np.array([g.mean() for g in groups])
    var = np.maximum(np.array([g.var() for g in groups]), _MIN_SD**2)
    w = np.array([g.size for g in groups], dtype=np.float64) / x.size
    log_like = -np.inf
    for _ in range(iterations):
        log_dens = np.log(w) - 0.5 * np.log(2 * np.pi * var) - (x[:, None] - mu) ** 2 / (2 * var)
        top = log_dens.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(log_dens - top).sum(axis=1))
        resp = np.exp(log_dens - log_norm[:, None])
        new_like = float(log_norm.sum())
        nk = resp.sum(axis=0) + 1e-12
        w = nk / x.size
        mu = (resp * x[:, None]).sum(axis=0) / nk
        var = np.maximum((resp * (x[:, None] - mu) ** 2).sum(axis=0) / nk, _MIN_SD**2)
        if abs(new_like - log_like) <= 1e-10 * abs(new_like) + 1e-12:
            log_like = new_like
            break
        log_like = new_like
    order = np.argsort(mu)
    return w[order], mu[order], var[order], log_like


def _separation(wa: float, ma: float, va: float, wb: float, mb: float, vb: float) -> float:
    """How clearly two components are two populations: Ashman's D, or 0 when the lighter one's mean
    lies within 3 standard deviations of the heavier one (a few droplets in a population's tail fit
    a narrow component of their own, which is no population)."""
    heavy_var = va if wa >= wb else vb
    if abs(ma - mb) < 3 * math.sqrt(heavy_var):
        return 0.0
    return math.sqrt(2) * abs(ma - mb) / math.sqrt(va + vb)


def _merge_close(w: np.ndarray, mu: np.ndarray, var: np.ndarray) -> list[list[int]]:
    """Groups of components (sorted by mean) that form one population: neighbours are merged, the
    closest first, while they are not clearly apart (:func:`_separation` at most
    :data:`_MIN_SEPARATION`; moments matched)."""
    groups = [[i] for i in range(len(mu))]
    w, mu, var = list(w), list(mu), list(var)
    while len(groups) > 1:
        d = [_separation(w[i], mu[i], var[i], w[i + 1], mu[i + 1], var[i + 1]) for i in range(len(groups) - 1)]
        i = int(np.argmin(d))
        if d[i] > _MIN_SEPARATION:
            break
        wa, wb = w[i], w[i + 1]
        m = (wa * mu[i] + wb * mu[i + 1]) / (wa + wb)
        v = (wa * (var[i] + mu[i] ** 2) + wb * (var[i + 1] + mu[i + 1] ** 2)) / (wa + wb) - m**2
        groups[i : i + 2] = [groups[i] + groups[i + 1]]
        w[i : i + 2], mu[i : i + 2], var[i : i + 2] = [wa + wb], [m], [v]
    return groups


def size_populations(diameters: np.ndarray, unit: str) -> list[dict[str, Any]]:
    """Size populations of the droplets (see the module docstring); each droplet belongs to its most
    likely component.

    Returns one record per non-empty population, smallest first: ``n``, ``mean_diameter`` and
    ``cv`` of its droplets' diameters (in ``unit``), ``number_fraction``, ``volume_fraction`` (of
    the total droplet volume), and ``volume_ratio`` (its mean volume over that of the most
    numerous population: about 0.1 for satellites, 2 for merged doublets).
    """
    d = np.asarray(diameters, dtype=np.float64)
    d = d[d > 0]
    if d.size == 0:
        return []
    volume = d**3
    x = 3 * np.log(d)
    best_bic, best = np.inf, None
    for k in range(1, min(_MAX_COMPONENTS, d.size // _MIN_DROPLETS_TO_SPLIT + 1) + 1):
        fit = max((_em(x, groups) for groups in _starts(x, k)), key=lambda f: f[3])
        if k > 1 and fit[0].min() * d.size < _MIN_POPULATION:
            continue
        bic = -2 * fit[3] + (3 * k - 1) * math.log(d.size)
        if bic < best_bic:
            best_bic, best = bic, fit
    assert best is not None
    w, mu, var, _ = best
    log_dens = np.log(w) - 0.5 * np.log(2 * np.pi * var) - (x[:, None] - mu) ** 2 / (2 * var)
    component = log_dens.argmax(axis=1)
    groups = _merge_close(w, mu, var)
    members = [m for m in (np.flatnonzero(np.isin(component, g)) for g in groups) if m.size]
    main = max(members, key=lambda m: m.size)
    main_volume = float(volume[main].mean())
    out = []
    for m in members:
        dm = d[m]
        sd = float(dm.std(ddof=1)) if dm.size > 1 else None
        out.append(
            {
                "n": int(m.size),
                "mean_diameter": float(dm.mean()),
                "cv": sd / float(dm.mean()) if sd is not None else None,
                "number_fraction": m.size / d.size,
                "volume_fraction": float(volume[m].sum() / volume.sum()),
                "volume_ratio": float(volume[m].mean()) / main_volume,
                "unit": unit,
            }
        )
    return out
