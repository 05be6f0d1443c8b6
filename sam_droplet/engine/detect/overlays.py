"""Burnt-in annotations: timestamps, scale bars and their labels drawn into the picture.

Cameras and acquisition software draw them in the picture's brightest (or darkest) value, often
edged in the other, so they read on any background; or in a pure colour (yellow, red, green),
which reaches the file's white in one channel at least, whatever its luminance, so bright strokes
are sought in each pixel's brightest channel. Their glyphs ("0", "6", "8", "o") are closed, round
and high-contrast: the detector takes them for droplets. They are found by what only such graphics
have: thin strokes at exactly the picture's brightest value (or, in a picture whose brightest
value is the file's white or black or just short of white, near it: a JPEG, or resampling, blurs
the strokes) that form a line of glyphs (three or more of one height on one baseline) or a bar (a
thin filled rectangle), with the strokes around them, in a compact group or a strip across the
picture. Saturated droplets, beads, highlights and foam films are neither.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import cv2
import numpy as np

__all__ = ["annotation_mask", "off_annotations", "shared_annotation_mask"]

_STROKE_PX = 6.0  # half-width of the widest stroke: a 12 px scale bar is still a stroke
_GROUP_PX = 25  # strokes this close belong to one annotation
_MAX_GROUP_SHARE = 0.05  # an annotation covers at most this share of the picture...
_STRIP_SHARE = 0.1  # ... or lies in a strip this share of its height (a line of text across it)
# Drawn at the file's own extreme (8- or 16-bit white, or black): a lossy file (JPEG) blurs the
# strokes, so only their cores keep the extreme value and the glyphs fall apart into fragments.
# There, strokes are the pixels within _LOSSY_BAND of the extreme (as a share of its distance to
# the picture's median): so a generated timestamp saved as JPEG of quality 85, and a real camera's
# JPEG timestamp, are found whole (0.1 found part of the latter).
_SATURATED = (0.0, 255.0, 65535.0)
_LOSSY_BAND = 0.2
# A picture smoothed after the annotation was drawn (resampled, or blurred by 1.5 px) keeps its
# strokes' cores just short of white: a brightest value within _NEAR_WHITE of the file's white is
# taken for white that was smoothed.
_NEAR_WHITE = 0.02
# An info bar: a band across the picture's top or bottom edge in the file's extreme value, with the
# camera's text in it. Its rows are mostly at the extreme (a line of text covers at most about
# half of a row: _BAR_GROUND), a picture's rows are not; it is at least a line of text high
# (_BAR_MIN_PX) and at most _STRIP_SHARE of the picture, and it holds ink (_INK_PX: a glyph's).
_BAR_GROUND = 0.25
_BAR_MIN_PX = 8
_INK_PX = 15


def _text_lines(ids: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """Of the strokes ``ids``, those in a line of text: at least three glyphs of about one height
    (within 30 %) side by side on one baseline, at most a glyph's height apart."""
    if ids.size < 3:
        return np.zeros(0, dtype=ids.dtype)
    x, y, w, h = (stats[ids, i].astype(np.float64) for i in range(4))
    bottom = y + h
    out: set[int] = set()
    for i in range(ids.size):
        same = (np.abs(h - h[i]) <= 0.3 * h[i]) & (np.abs(bottom - bottom[i]) <= 0.25 * h[i])
        row = np.flatnonzero(same)
        row = row[np.argsort(x[row])]
        # Runs of neighbours at most a glyph height apart.
        gaps = x[row][1:] - (x[row] + w[row])[:-1]
        run = [row[0]]
        for j, gap in enumerate(gaps):
            if gap <= h[i]:
                run.append(row[j + 1])
                continue
            if len(run) >= 3:
                out.update(int(ids[k]) for k in run)
            run = [row[j + 1]]
        if len(run) >= 3:
            out.update(int(ids[k]) for k in run)
    return np.array(sorted(out), dtype=ids.dtype)


def annotation_mask(gray: np.ndarray, colour: np.ndarray | None = None) -> np.ndarray | None:
    """Pixels of burnt-in text and scale bars (the strokes and their outline) and of a camera's
    info bar (its whole rows), or None if none: white or coloured annotations, and black ones (dark
    text on a light info bar).

    Args:
        gray: HxW intensities as read (the extremes must be the file's own values).
        colour: the picture's HxWx3 pixels as read, when it has colour: bright strokes are sought in
            each pixel's brightest channel, where yellow or red text reaches the file's white as
            white text does (its luminance is a mid grey that the picture's own light outshines).
    """
    brightest = gray
    if colour is not None and colour.ndim == 3:
        # Channel by channel: a tenth of the time of ``colour.max(axis=2)`` on a 2200x1700 picture.
        brightest = np.maximum(np.maximum(colour[..., 0], colour[..., 1]), colour[..., 2]).astype(np.float32)
    found = [
        m
        for m in (_strokes_at_max(brightest), _strokes_at_max(-gray), _info_bar(gray), _info_bar(-gray))
        if m is not None
    ]
    if not found:
        return None
    return np.logical_or.reduce(found) if len(found) > 1 else found[0]


def _typical(gray: np.ndarray) -> float:
    """The picture's median, from a grid of at most 256 x 256 samples."""
    return float(np.median(gray[:: max(1, gray.shape[0] // 256), :: max(1, gray.shape[1] // 256)]))


def _info_bar(gray: np.ndarray) -> np.ndarray | None:
    """The rows of an info bar whose ground is the picture's brightest value, or None.

    A camera's info bar holds a timestamp whose colons and points a JPEG reduces to a pixel or two
    of ink, and whose glyphs fall apart, so no line of glyphs is found in it; but the bar itself is
    unmistakable: rows at the file's extreme value across the whole width, at the picture's edge,
    where the picture's own rows are not."""
    hi = float(gray.max())
    if hi not in _SATURATED:
        return None
    typical = _typical(gray)
    if hi <= typical:
        return None  # a picture mostly at its extreme (blown out) has no bar to tell apart
    band = _LOSSY_BAND * (hi - typical)
    ground = (gray >= hi - band).mean(axis=1) >= _BAR_GROUND
    h = gray.shape[0]
    most = int(_STRIP_SHARE * h)
    lo = float(gray.min())
    mask = None
    for top in (True, False):
        rows = ground if top else ground[::-1]
        n = int(np.argmin(rows[:most])) if not rows[:most].all() else most
        if not _BAR_MIN_PX <= n < most or rows[n:].mean() >= 0.5:
            continue
        bar = slice(0, n) if top else slice(h - n, h)
        if np.count_nonzero(gray[bar] <= lo + _LOSSY_BAND * (typical - lo)) < _INK_PX:
            continue  # a blank band: no text, nothing to tell apart from a picture's edge
        if mask is None:
            mask = np.zeros(gray.shape, bool)
        mask[bar] = True
    return mask


def _file_extreme(hi: float) -> float | None:
    """The file's extreme value that a picture's brightest value ``hi`` is (or is just short of,
    smoothed), or None."""
    if hi in _SATURATED:
        return hi
    return next((white for white in _SATURATED[1:] if (1.0 - _NEAR_WHITE) * white <= hi < white), None)


def _strokes_at_max(gray: np.ndarray) -> np.ndarray | None:
    """:func:`annotation_mask` for annotations drawn in the picture's brightest value."""
    hi = float(gray.max())
    if hi <= float(gray.min()):
        return None
    extreme = _file_extreme(hi)
    if extreme is not None:
        typical = _typical(gray)
        strokes = (gray >= extreme - _LOSSY_BAND * (extreme - typical)).astype(np.uint8)
    else:
        strokes = (gray == hi).astype(np.uint8)
    if not strokes.any():
        return None
    n, labels, stats, _ = cv2.connectedComponentsWithStats(strokes, connectivity=8)
    ids = np.arange(1, n)
    if ids.size == 0:
        return None
    width = cv2.distanceTransform(strokes, cv2.DIST_L2, 3)
    on = np.flatnonzero(strokes.ravel())  # the strokes only: usually a tiny part of the picture
    widest = np.zeros(n)
    np.maximum.at(widest, labels.ravel()[on], width.ravel()[on])
    thin_any = ids[widest[ids] <= _STROKE_PX]
    thin = thin_any[stats[thin_any, 4] >= 4]  # what may start or link a group: not single-pixel speckle
    # What only annotations hold: a line of glyphs, or a bar (a thin filled rectangle).
    w, h, area = stats[thin, 2], stats[thin, 3], stats[thin, 4]
    bars = thin[(area >= 0.85 * w * h) & (np.maximum(w, h) >= 4 * np.minimum(w, h)) & (np.maximum(w, h) >= 20)]
    # Glyphs are legible: at least 7 px tall and 15 px of ink (saturated speckle is smaller).
    glyphs = thin[(stats[thin, 3] >= 7) & (stats[thin, 4] >= 15)]
    seeds = np.union1d(_text_lines(glyphs, stats), bars)
    if seeds.size == 0:
        return None
    # The strokes of one annotation lie together: group them around the seeds, keep compact groups.
    near = cv2.dilate(np.isin(labels, thin).astype(np.uint8), np.ones((_GROUP_PX, _GROUP_PX), np.uint8))
    _, groups, gstats, _ = cv2.connectedComponentsWithStats(near, connectivity=8)
    seeded = np.unique(groups[np.isin(labels, seeds)])
    picture = gray.shape[0] * gray.shape[1]
    good = [
        g
        for g in seeded
        if g > 0
        and (gstats[g, 2] * gstats[g, 3] <= _MAX_GROUP_SHARE * picture or gstats[g, 3] <= _STRIP_SHARE * gray.shape[0])
    ]
    if not good:
        return None
    # Every thin stroke within a group is the annotation's, of any size: the colons and points of a
    # timestamp are too small to stand in the line of glyphs by themselves, and a JPEG leaves only
    # a pixel or two of each at the extreme (a camera's info bar: its colons were found as droplets).
    mask = (np.isin(labels, thin_any) & np.isin(groups, good)).astype(np.uint8)
    # The black outline belongs to the annotation too.
    return cv2.dilate(mask, np.ones((7, 7), np.uint8)) > 0


def shared_annotation_mask(gray: np.ndarray, colour: np.ndarray | None = None) -> Callable[[], np.ndarray | None]:
    """:func:`annotation_mask` of ``gray`` (and ``colour``), computed on the first call only
    (thread-safe): the combined detector's two halves each leave the annotations out, in two
    threads, and the mask costs about 70 ms of a 2200x1700 picture."""
    lock = threading.Lock()
    done: list[np.ndarray | None] = []

    def get() -> np.ndarray | None:
        with lock:
            if not done:
                done.append(annotation_mask(gray, colour))
            return done[0]

    return get


def off_annotations(
    instances: list, gray: np.ndarray, annotations: Callable[[], np.ndarray | None] | None = None
) -> tuple[list, int]:
    """The instances not lying mostly (half their area or more) on a burnt-in annotation of
    ``gray``, and how many were left out. ``annotations`` gives the picture's annotation mask when
    the caller shares one (:func:`shared_annotation_mask`); by default it is computed here."""
    overlay = annotations() if annotations is not None else annotation_mask(gray)
    if overlay is None:
        return instances, 0
    kept = [i for i in instances if np.count_nonzero(overlay[i.y0 : i.y1, i.x0 : i.x1][i.mask]) < 0.5 * i.area]
    return kept, len(instances) - len(kept)
