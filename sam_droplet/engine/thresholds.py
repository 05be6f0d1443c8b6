"""Otsu's threshold, the one implementation the detector and the fluorescence call share.

Otsu's split of a set of values is the one that maximises the variance between the two classes.
:func:`otsu_threshold` computes it on the distinct values themselves (exact: the threshold lies
midway between the two values it separates) or, for the millions of pixels of an image, on a
256-level histogram of the values from 0 to their maximum, as OpenCV's ``THRESH_OTSU`` does on
8-bit images (the threshold is then the top of the last level of the lower class).
"""

from __future__ import annotations

import numpy as np

__all__ = ["otsu_threshold"]

# A million values pin a 256-level histogram down; larger arrays are subsampled evenly.
_HISTOGRAM_SAMPLE = 1_000_000


def _best_split(levels: np.ndarray, counts: np.ndarray) -> int:
    """Index ``i`` of the split between ``levels[i]`` and ``levels[i + 1]`` (levels sorted and
    distinct) with the largest between-class variance; the first of equal maxima."""
    n = counts.sum()
    w0 = np.cumsum(counts)[:-1]
    s0 = np.cumsum(counts * levels)[:-1]
    w1 = n - w0
    valid = (w0 > 0) & (w1 > 0)
    m0 = np.divide(s0, w0, out=np.zeros_like(s0, dtype=np.float64), where=valid)
    m1 = np.divide(s0[-1] + counts[-1] * levels[-1] - s0, w1, out=np.zeros_like(s0, dtype=np.float64), where=valid)
    between = np.where(valid, w0 * w1 * (m0 - m1) ** 2, -1.0)
    return int(np.argmax(between))


def otsu_threshold(values: np.ndarray, histogram: bool = False) -> float:
    """Otsu's threshold of ``values``.

    Args:
        values: any shape; at least two distinct values for a meaningful split.
        histogram: split a 256-level histogram of the non-negative ``values`` from 0 to their
            maximum (large arrays, such as images) instead of the distinct values (small arrays,
            such as one value per droplet). Values above the threshold are the upper class.

    Returns:
        The threshold; with one distinct value, that value (the histogram form: 0).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if histogram:
        sample = v[:: max(1, v.size // _HISTOGRAM_SAMPLE)]
        top = float(sample.max()) if sample.size else 0.0
        if top <= 0:
            return 0.0
        level = np.clip(sample * (255.0 / top), 0, 255).astype(np.uint8)
        counts = np.bincount(level, minlength=256).astype(np.float64)
        return float(_best_split(np.arange(256, dtype=np.float64), counts)) / 255.0 * top
    levels, counts = np.unique(v, return_counts=True)
    if levels.size < 2:
        return float(levels[0]) if levels.size else 0.0
    i = _best_split(levels, counts.astype(np.float64))
    return float((levels[i] + levels[i + 1]) / 2)
