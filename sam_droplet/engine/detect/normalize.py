"""The image the detector works on: intensities normalised to [0, 1], the pixel noise, a pyramid.

All intensities in the detector are this normalised copy, used only to find droplets; measurements
use the original pixels (:mod:`sam_droplet.engine.measure`).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["noise_sigma", "normalize_intensity", "pyramid"]


def normalize_intensity(gray: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Map the ``low``..``high`` percentile range of ``gray`` to [0, 1] (float32, clipped).

    Integer images use an exact histogram (fast for 8 and 16 bit); float images a subsample.
    """
    if gray.dtype in (np.uint8, np.uint16):
        hist = np.bincount(gray.ravel())
        cdf = np.cumsum(hist) / gray.size
        lo = float(np.searchsorted(cdf, low / 100.0))
        hi = float(np.searchsorted(cdf, high / 100.0))
    else:
        sample = gray.ravel()[:: max(1, gray.size // 1_000_000)]
        sample = sample[np.isfinite(sample)]
        if sample.size == 0:
            return np.zeros(gray.shape, np.float32)
        lo, hi = (float(v) for v in np.percentile(sample, [low, high]))
    scale = 1.0 / (hi - lo) if hi > lo else 0.0
    out = (np.nan_to_num(gray.astype(np.float32)) - lo) * scale
    return np.clip(out, 0.0, 1.0, out=out)


def noise_sigma(norm: np.ndarray, block: int = 16) -> float:
    """Pixel-noise estimate: MAD of the finest diagonal Haar coefficients, in the quietest blocks.

    Diagonal coefficients barely respond to edges, and taking the 20th percentile of per-block
    estimates ignores textured parts of the image (Donoho's estimator, made local).
    """
    h, w = norm.shape
    a = norm[: h // 2 * 2, : w // 2 * 2]
    hh = np.abs(a[0::2, 0::2] - a[0::2, 1::2] - a[1::2, 0::2] + a[1::2, 1::2]) / 2
    bh, bw = hh.shape[0] // block, hh.shape[1] // block
    if bh == 0 or bw == 0:
        return float(np.median(hh) / 0.6745 + 1e-4)
    blocks = (
        hh[: bh * block, : bw * block].reshape(bh, block, bw, block).transpose(0, 2, 1, 3).reshape(-1, block * block)
    )
    return float(np.percentile(np.median(blocks, axis=1), 20) / 0.6745 + 1e-4)


def pyramid(norm: np.ndarray, levels: int) -> list[np.ndarray]:
    out = [cv2.GaussianBlur(norm, (0, 0), 0.7)]
    for _ in range(1, levels):
        out.append(cv2.pyrDown(out[-1]))
    return out
