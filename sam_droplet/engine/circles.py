"""Circles fitted to outline points: the algebraic (Kasa) least-squares fit, batched.

The classical detector judges every outline by how many of its points lie on a circle
(``detect.outlines.circle_agreement``), and the border rule cuts a leak back to the circle the
rest of an outline traces (``border.fit_circle``); both fit that circle here, each refitting to
the points it trusts.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_circles"]


def fit_circles(
    xs: np.ndarray, ys: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The least-squares circle through each row's weighted points, and every point's distance
    from it.

    Args:
        xs, ys: (N, K) points in pixels, one outline a row.
        weights: (N, K) weight of each point (0 leaves it out).

    Returns:
        cx, cy, r: (N,) each row's circle (a row of no weight gets a circle through nothing).
        residuals: (N, K) each point's distance from its row's circle, |distance to centre - r|.

    The fit is Kasa's, minimising the algebraic error over coordinates centred on the points'
    weighted mean (the same circle as the plain normal equations, without their cancellation).
    """
    w = np.asarray(weights, dtype=np.float64)
    sw = np.maximum(w.sum(axis=1), 1e-9)
    mx, my = (w * xs).sum(axis=1) / sw, (w * ys).sum(axis=1) / sw
    u, v = xs - mx[:, None], ys - my[:, None]
    suu, svv, suv = (w * u * u).sum(1), (w * v * v).sum(1), (w * u * v).sum(1)
    z = u * u + v * v
    suz, svz = (w * u * z).sum(1), (w * v * z).sum(1)
    det = np.where(np.abs(suu * svv - suv**2) > 1e-12, suu * svv - suv**2, 1e-12)
    a = 0.5 * (suz * svv - svz * suv) / det
    b = 0.5 * (svz * suu - suz * suv) / det
    r = np.sqrt(a * a + b * b + (w * z).sum(1) / sw)
    residuals = np.abs(np.hypot(u - a[:, None], v - b[:, None]) - r[:, None])
    return mx + a, my + b, r, residuals
