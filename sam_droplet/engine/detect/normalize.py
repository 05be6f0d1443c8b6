"""The image the detector works on: light evened out, intensities normalised to [0, 1], the pixel
noise, a pyramid.

All intensities in the detector are this normalised copy, used only to find droplets; measurements
use the original pixels (:mod:`sam_droplet.engine.measure`).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "background_noise",
    "even_illumination",
    "is_dark_field",
    "light_level",
    "noise_sigma",
    "normalize_intensity",
    "pyramid",
]


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


# The light level is a median over windows an eighth of the picture's shorter side (at least
# _MIN_WINDOW px): vignetting and the shadows of large out-of-focus objects change over that scale,
# a droplet's rim (a few px) far below it, and a median over several droplets reads the background.
_WINDOW_SHARE = 1 / 8
_MIN_WINDOW = 160
_WINDOW_STEPS = 24  # the median runs on a picture shrunk so that a window spans this many pixels
# Light under this share of the picture's bright level (its 99.5th percentile) is not light to
# divide by: a dark-field picture (fluorescence, background-subtracted bubbles) has its whole
# background there, at most about a tenth of its droplets' brightness.
_FLOOR_SHARE = 0.15


def light_level(gray: np.ndarray) -> np.ndarray:
    """The light that reaches each place of ``gray`` (float32, HxW; zero is no light, as a
    camera's black level): a median over windows of an eighth of the shorter side
    (:data:`_WINDOW_SHARE`), smoothed.
    """
    return _light_level(np.clip(np.nan_to_num(np.asarray(gray, dtype=np.float32)), 0.0, None))


def _light_level(g: np.ndarray) -> np.ndarray:
    """:func:`light_level` of a picture already finite and non-negative (float32)."""
    h, w = g.shape
    window = max(min(h, w) * _WINDOW_SHARE, _MIN_WINDOW)
    step = max(1, round(window / _WINDOW_STEPS))
    small = cv2.resize(g, (max(1, w // step), max(1, h // step)), interpolation=cv2.INTER_AREA)
    top = float(small.max())
    if top <= 0:
        return np.zeros_like(g)
    # cv2's median takes windows this wide only in 8 bit; 256 levels are plenty for a light level.
    small8 = np.round(small * (255.0 / top)).astype(np.uint8)
    k = min(_WINDOW_STEPS + 1, (min(small8.shape) - 1) | 1)
    median = cv2.medianBlur(small8, k) if k >= 3 else small8
    smooth = cv2.GaussianBlur(median.astype(np.float32), (0, 0), k / 3) * (top / 255.0)
    return cv2.resize(smooth, (w, h), interpolation=cv2.INTER_LINEAR)


def is_dark_field(gray: np.ndarray, droplets: np.ndarray) -> bool:
    """Whether ``gray`` is a dark-field picture: the background (outside the ``droplets`` mask)
    lies under :data:`_FLOOR_SHARE` of the picture's bright level (its 99.5th percentile), as
    in fluorescence or background-subtracted bubbles, never in bright field."""
    # Both figures are read off an even sample of about 250 000 pixels (4 ms, not 60, at 2200x1700).
    step = max(1, int(np.sqrt(gray.size / 250_000)))
    g = np.nan_to_num(np.asarray(gray[::step, ::step], dtype=np.float32))
    background = g[~droplets[::step, ::step]]
    if background.size == 0:
        return False
    floor = _dark_floor(g)
    return floor > 0 and float(np.median(background)) < floor


def _dark_floor(sample: np.ndarray) -> float:
    """:data:`_FLOOR_SHARE` of the bright level (99.5th percentile) of a sample of a picture."""
    return _FLOOR_SHARE * float(np.percentile(sample, 99.5))


def even_illumination(gray: np.ndarray) -> np.ndarray:
    """``gray`` divided by its :func:`light_level`: a droplet's contrast is a share of the light
    that reaches it, so after this a droplet in a dark corner or in the shadow of a large
    out-of-focus object stands out as much as one in the bright centre.

    Places with less light than 15 % of the picture's bright level are divided as if they had
    that much: in a dark-field picture (fluorescence, background-subtracted bubbles) no place has
    more, so it is only rescaled, and a deep shadow is not amplified without bound. A picture with
    negative values is first shifted so that its darkest value is zero. Intensities are in units
    of the local light level (float32, HxW), whatever the picture's gain.
    """
    g = np.asarray(gray, dtype=np.float32)
    if not np.isfinite(g).all():
        g = np.nan_to_num(g)
    darkest = float(g.min())
    if darkest < 0:
        g = g - darkest
    floor = _dark_floor(g[::4, ::4])
    if floor <= 0:
        return g.copy()
    return g / np.maximum(_light_level(g), floor)


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


# What the background residual (below) gives at level 0 for white noise of SD 1: it turns the
# residual of any noise, at any level, into the level-0 white noise the detector's floors are set in.
_WHITE_RESIDUAL = 0.3097
_RESIDUAL_BLUR = 2.0  # px of the level: the residual keeps the band the fit's 3 px slope window responds to
_BLOCK = 8


def background_noise(levels: list[np.ndarray], cx: np.ndarray, cy: np.ndarray, r: np.ndarray) -> np.ndarray | None:
    """The noise of the background, where no droplet was found, at each pyramid level.

    :func:`noise_sigma` reads the finest scale, where structure hardly shows; but noise correlated
    over a pixel or two (demosaicing, JPEG, an upscaled camera) hardly shows there either, and the
    boundary fit, which works on smoothed levels, then takes its blobs for droplets. Here each
    level's residual against a 2 px blur of itself (the band the fit's 3 px slope window sees) is read in 8 px blocks clear of every found
    droplet (circles of 1.3 r + 3 px); the quietest quarter of those blocks (texture, debris and
    out-of-focus droplets left in the background only raise the others) is expressed as the
    level-0 white noise that would give it. White noise thus gives its own SD at level 0 and less
    at coarser levels, where averaging has removed most of it; correlated noise gives more.

    Args:
        levels: the detector's pyramid (level 0 is the normalised image blurred by 0.7 px).
        cx, cy, r: the droplets found, in full-resolution pixels.

    Returns:
        One value per level, or None when level 0 has fewer than 16 clear blocks (a packed field
        has no background to read). A coarser level without enough clear blocks takes the value
        of the level below.
    """
    out: list[float] = []
    for k, level in enumerate(levels):
        scale = 2.0**-k
        residual = np.abs(level - cv2.GaussianBlur(level, (0, 0), _RESIDUAL_BLUR))
        mask = np.zeros(level.shape, np.uint8)
        for x, y, rr in zip(cx, cy, r, strict=True):
            centre = (round(float(x) * scale), round(float(y) * scale))
            cv2.circle(mask, centre, round((1.3 * float(rr) + 3) * scale), 1, -1)
        h, w = level.shape
        bh, bw = h // _BLOCK, w // _BLOCK

        def blocks(a: np.ndarray, bh: int = bh, bw: int = bw) -> np.ndarray:
            a = a[: bh * _BLOCK, : bw * _BLOCK]
            return a.reshape(bh, _BLOCK, bw, _BLOCK).transpose(0, 2, 1, 3).reshape(-1, _BLOCK * _BLOCK)

        clear = blocks(mask).max(axis=1) == 0 if bh and bw else np.zeros(0, bool)
        if np.count_nonzero(clear) < 16:
            if k == 0:
                return None
            out.append(out[-1])
            continue
        quiet = np.percentile(np.median(blocks(residual)[clear], axis=1), 25)
        out.append(float(quiet / 0.6745 / _WHITE_RESIDUAL))
    return np.asarray(out)


def pyramid(norm: np.ndarray, levels: int) -> list[np.ndarray]:
    out = [cv2.GaussianBlur(norm, (0, 0), 0.7)]
    for _ in range(1, levels):
        out.append(cv2.pyrDown(out[-1]))
    return out
