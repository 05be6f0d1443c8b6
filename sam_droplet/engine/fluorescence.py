"""The fluorescence channel: intensities per droplet, positive calls, ddPCR concentration, occupancy.

The droplets are found on the bright-field picture (or on the fluorescence picture alone); this
module reads a second, registered picture of the same field inside each droplet's mask:

- :func:`droplet_intensities`: mean, max and integrated intensity per droplet, and the local
  background (median of an annulus around the droplet that excludes every droplet pixel);
- :func:`classify_positive`: positive/negative by Otsu's threshold or a two-component Gaussian
  mixture on the background-corrected means, or a threshold given by the user, with the separation
  of the two populations (Ashman's D) so an ambiguous call is visible;
- :func:`ddpcr_statistics`: digital PCR: p = k / n, copies per droplet lambda = -ln(1 - p) with an exact
  (Clopper-Pearson) 95 % interval, and copies per uL from the mean droplet volume;
- :func:`count_spots` and :func:`occupancy`: fluorescent objects (cells, beads) per droplet by spot
  detection inside each mask, and their distribution beside Poisson's at the observed mean.

The pipeline calls :func:`measure_fluorescence` for a segmentation and :func:`fluorescence_of_added`
for a droplet added later at a point. Intensities are in the fluorescence picture's own units (raw
counts, 8- or 16-bit), never rescaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import ndimage, stats

from .measure import Droplet
from .thresholds import otsu_threshold

__all__ = [
    "FLUORESCENCE_COLUMNS",
    "THRESHOLD_METHODS",
    "DropletIntensities",
    "PositiveCall",
    "classify_positive",
    "count_spots",
    "ddpcr_statistics",
    "droplet_intensities",
    "fluorescence_of_added",
    "measure_fluorescence",
    "occupancy",
]

# How a positive threshold is chosen when none is given, and how the page names each way.
THRESHOLD_METHODS = {"otsu": "Otsu", "gmm": "two-component mixture"}
# The per-droplet fluorescence columns (JSON keys and CSV columns), in order.
FLUORESCENCE_COLUMNS = ("fl_mean", "fl_max", "fl_integrated", "fl_background", "fl_corrected_mean", "positive", "objects")


@dataclass(frozen=True)
class DropletIntensities:
    """Fluorescence per droplet, arrays of length N in droplet order.

    Attributes:
        mean, max, integrated: over the droplet's mask (integrated = sum of pixel values).
        background: median of the annulus around the droplet (other droplets excluded); where no
            annulus pixel is free, the median of every non-droplet pixel of the image.
        corrected_mean: ``mean - background``.
    """

    mean: np.ndarray
    max: np.ndarray
    integrated: np.ndarray
    background: np.ndarray
    corrected_mean: np.ndarray


def droplet_intensities(
    image: np.ndarray,
    labels: np.ndarray,
    ids: np.ndarray,
    gap_px: float = 2.0,
    width_px: float = 6.0,
) -> DropletIntensities:
    """Measure each droplet of ``labels`` on the fluorescence ``image``.

    Args:
        image: fluorescence picture, HxW, any numeric dtype (original units).
        labels: int HxW, 0 = background, droplet ids elsewhere (all droplets found, kept or not, so
            that the annuli avoid every one of them).
        ids: the droplet ids to measure, in the order of the returned arrays.
        gap_px: distance between a droplet's edge and its annulus, in pixels.
        width_px: width of the annulus, in pixels.
    """
    img = image.astype(np.float64, copy=False)
    n = len(ids)
    out = {k: np.zeros(n) for k in ("mean", "max", "integrated", "background")}
    free = labels == 0
    global_background = float(np.median(img[free])) if free.any() else float(np.percentile(img, 5))
    objects = ndimage.find_objects(labels)
    reach = math.ceil(gap_px + width_px) + 1
    h, w = labels.shape
    disk_outer = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
    inner = math.ceil(gap_px)
    disk_inner = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * inner + 1, 2 * inner + 1))
    for k, i in enumerate(ids):
        sl = objects[i - 1] if i - 1 < len(objects) else None
        if sl is None:
            out["background"][k] = global_background
            continue
        y0, y1 = max(sl[0].start - reach, 0), min(sl[0].stop + reach, h)
        x0, x1 = max(sl[1].start - reach, 0), min(sl[1].stop + reach, w)
        lab = labels[y0:y1, x0:x1]
        crop = img[y0:y1, x0:x1]
        mask = lab == i
        values = crop[mask]
        out["mean"][k] = values.mean()
        out["max"][k] = values.max()
        out["integrated"][k] = values.sum()
        m8 = mask.astype(np.uint8)
        ring = (cv2.dilate(m8, disk_outer) > 0) & ~(cv2.dilate(m8, disk_inner) > 0) & (lab == 0)
        out["background"][k] = float(np.median(crop[ring])) if ring.sum() >= 8 else global_background
    return DropletIntensities(
        mean=out["mean"],
        max=out["max"],
        integrated=out["integrated"],
        background=out["background"],
        corrected_mean=out["mean"] - out["background"],
    )


@dataclass(frozen=True)
class PositiveCall:
    """Positive/negative call on one value per droplet.

    Attributes:
        positive: bool array, one per value.
        threshold: the value above which a droplet is positive.
        method: ``otsu``, ``gmm`` or ``user``.
        ashman_d: separation of the two populations, ``sqrt(2) |m1 - m2| / sqrt(s1^2 + s2^2)``;
            above 2 they are cleanly separated; None when one class is empty.
        gap: lowest positive minus highest negative (negative when they overlap); None likewise.
        ambiguous: True when the call should be checked by eye: D <= 2, no gap of at least one
            standard deviation of the negatives between the populations, or too few droplets.
        message: why the call is ambiguous, in words; None otherwise.
    """

    positive: np.ndarray
    threshold: float
    method: str
    ashman_d: float | None
    gap: float | None
    ambiguous: bool
    message: str | None

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "threshold": _round(self.threshold),
            "positives": int(self.positive.sum()),
            "negatives": int((~self.positive).sum()),
            "ashman_d": _round(self.ashman_d),
            "gap": _round(self.gap),
            "ambiguous": self.ambiguous,
            "message": self.message,
        }


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), digits)


def _gmm(values: np.ndarray, iterations: int = 200) -> float:
    """Threshold where a two-component 1-D Gaussian mixture's posteriors are equal (EM from Otsu's split)."""
    t = otsu_threshold(values)
    lo, hi = values[values <= t], values[values > t]
    w, mu, var = (
        np.array([lo.size, hi.size], float) / values.size,
        np.array([lo.mean(), hi.mean()]),
        np.array([lo.var() + 1e-9, hi.var() + 1e-9]),
    )
    for _ in range(iterations):
        dens = w / np.sqrt(2 * np.pi * var) * np.exp(-((values[:, None] - mu) ** 2) / (2 * var))
        resp = dens / np.maximum(dens.sum(1, keepdims=True), 1e-300)
        nk = resp.sum(0) + 1e-12
        new_mu = (resp * values[:, None]).sum(0) / nk
        var = np.maximum((resp * (values[:, None] - new_mu) ** 2).sum(0) / nk, 1e-9 * (values.var() + 1e-9))
        w = nk / values.size
        if np.allclose(new_mu, mu, rtol=1e-7, atol=1e-9):
            mu = new_mu
            break
        mu = new_mu
    order = np.argsort(mu)
    mu, var, w = mu[order], var[order], w[order]
    # Equal posterior between the means: scan finely (robust where the quadratic has no real root there).
    grid = np.linspace(mu[0], mu[1], 2049)
    diff = (
        np.log(w[1])
        - 0.5 * np.log(var[1])
        - (grid - mu[1]) ** 2 / (2 * var[1])
        - (np.log(w[0]) - 0.5 * np.log(var[0]) - (grid - mu[0]) ** 2 / (2 * var[0]))
    )
    crossing = np.flatnonzero(diff > 0)
    return float(grid[crossing[0]]) if crossing.size else t


def _raise_low_outliers(values: np.ndarray, fence: float = 6.0) -> np.ndarray:
    """``values`` with those far below the bulk raised to a fence (median - ``fence`` robust sigmas).

    A droplet cannot be much dimmer than its own background: a corrected mean far below the others
    is a measurement artefact (a background ring on a burned-in scale bar or a saturated neighbour).
    Left alone, two such values draw Otsu's split between themselves and every other droplet.
    Values above are untouched: positives are rare and bright by nature.
    """
    median = float(np.median(values))
    sigma = 1.4826 * float(np.median(np.abs(values - median)))
    if sigma <= 0:
        return values
    return np.maximum(values, median - fence * sigma)


def classify_positive(values: np.ndarray, threshold: float | None = None, method: str = "otsu") -> PositiveCall:
    """Call each value positive (above the threshold) or negative.

    Args:
        values: one value per droplet (the background-corrected mean fluorescence).
        threshold: a user threshold; None chooses one by ``method``.
        method: ``otsu`` (Otsu's threshold on the values) or ``gmm`` (two-component Gaussian mixture).
    """
    values = np.asarray(values, dtype=np.float64)
    if threshold is not None:
        t, used = float(threshold), "user"
    elif values.size < 2 or np.ptp(values) == 0:
        t, used = (float(values.max()) if values.size else 0.0), method
    else:
        robust = _raise_low_outliers(values)
        t, used = (_gmm(robust) if method == "gmm" else otsu_threshold(robust)), method
    positive = values > t
    pos, neg = values[positive], values[~positive]
    d = gap = None
    if pos.size and neg.size:
        spread = math.sqrt(pos.var() + neg.var())
        d = math.sqrt(2) * abs(pos.mean() - neg.mean()) / spread if spread > 0 else math.inf
        gap = float(pos.min() - neg.max())
    message = None
    if values.size < 20:
        message = f"only {values.size} droplets: too few for a reliable threshold"
    elif d is None:
        message = "all droplets fall on one side of the threshold: no second population"
    elif d <= 2:
        message = f"the populations overlap (Ashman's D {d:.2f} <= 2): check the threshold"
    elif gap is not None and gap < neg.std():
        # A single population split in two has D near 2.7 but no empty zone between the halves.
        message = (
            f"no clear gap between negatives and positives ({gap:.3g}, under one standard deviation of the "
            "negatives): the threshold cuts one population; check it"
        )
    return PositiveCall(positive, t, used, d, gap, message is not None, message)


def ddpcr_statistics(n: int, k: int, mean_volume_pl: float | None, confidence: float = 0.95) -> dict:
    """Digital PCR quantities from n droplets of which k are positive.

    Args:
        n: droplets analysed.
        k: positive droplets.
        mean_volume_pl: mean droplet volume in picolitres (None when uncalibrated).
        confidence: level of the intervals.

    Returns:
        n, k, p, lambda (copies per droplet) with its interval (from the exact Clopper-Pearson interval
        on p), mean_volume_pl, and copies_per_ul with its interval when the volume is known; ``message``
        explains what is missing (no droplets, saturation, no calibration).
    """
    out: dict = {"n": n, "k": k, "confidence": confidence, "p": None, "p_ci": None, "lambda": None,
                 "lambda_ci": None, "mean_volume_pl": _round(mean_volume_pl, 6), "copies_per_ul": None,
                 "copies_per_ul_ci": None, "message": None}  # fmt: skip
    if n <= 0:
        out["message"] = "no droplets: nothing to quantify"
        return out
    alpha = 1 - confidence
    p = k / n
    p_lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    p_hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))

    def lam(q: float) -> float:
        return math.inf if q >= 1 else -math.log1p(-q)

    out.update({"p": round(p, 6), "p_ci": [round(p_lo, 6), round(p_hi, 6)]})
    out["lambda"] = _round(lam(p), 6)
    out["lambda_ci"] = [_round(lam(p_lo), 6), _round(lam(p_hi), 6)]
    messages = []
    if k == n:
        messages.append("every droplet is positive: the sample is saturated; dilute it and run again")
    if mean_volume_pl is None or not mean_volume_pl > 0:
        messages.append("no calibration (um_per_px): droplet volume unknown, so no concentration")
    elif k < n:
        per_ul = 1e6 / mean_volume_pl  # droplets per uL
        out["copies_per_ul"] = _round(lam(p) * per_ul, 3)
        out["copies_per_ul_ci"] = [_round(lam(p_lo) * per_ul, 3), _round(lam(p_hi) * per_ul, 3)]
    out["message"] = "; ".join(messages) or None
    return out


def count_spots(
    image: np.ndarray, labels: np.ndarray, ids: np.ndarray, spot_diameter_px: float = 5.0, min_snr: float = 8.0
) -> np.ndarray:
    """Fluorescent objects (cells, beads) inside each droplet, by spot detection.

    The picture is smoothed at the objects' scale and each droplet's own median is subtracted, so a
    uniformly bright (positive) droplet gives no response and a compact object does; local maxima at
    least ``min_snr`` robust standard deviations above it, inside the droplet and away from its rim,
    count as objects.

    Args:
        image: fluorescence picture, HxW.
        labels: droplet ids, 0 = background.
        ids: droplets to count in, in the order of the returned array.
        spot_diameter_px: typical object diameter in pixels.
        min_snr: peak height in units of the smoothed picture's noise inside droplets.
    """
    from skimage.feature import peak_local_max

    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == 0:
        return np.zeros(0, np.int64)
    img = image.astype(np.float32, copy=False)
    sigma = max(spot_diameter_px / (2 * math.sqrt(2)), 0.8)
    smooth = cv2.GaussianBlur(img, (0, 0), sigma)
    n_labels = int(labels.max())
    medians = np.zeros(n_labels + 1, np.float32)
    medians[ids] = ndimage.median(img, labels, index=ids)
    response = smooth - medians[labels]
    # Away from the rim, where smoothing mixes in the surroundings.
    rim = max(round(1.5 * sigma), 1)
    inner_labels = np.where(
        cv2.erode((labels > 0).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim + 1,) * 2)) > 0,
        labels,
        0,
    ).astype(np.int32)
    inside = response[inner_labels > 0]
    if inside.size == 0:
        return np.zeros(ids.size, np.int64)
    noise = 1.4826 * float(np.median(np.abs(inside - np.median(inside)))) + 1e-6
    peaks = peak_local_max(
        response,
        min_distance=max(round(spot_diameter_px * 0.8), 1),
        threshold_abs=min_snr * noise,
        labels=inner_labels,
        exclude_border=False,
    )
    counts = np.bincount(labels[peaks[:, 0], peaks[:, 1]], minlength=n_labels + 1)
    return counts[ids]


def occupancy(counts: np.ndarray, max_bin: int = 3) -> dict:
    """Distribution of objects per droplet (0, 1, ..., max_bin+) beside Poisson's at the observed mean."""
    counts = np.asarray(counts, dtype=np.int64)
    n = counts.size
    mean = float(counts.mean()) if n else 0.0
    bins = [str(i) for i in range(max_bin)] + [f"{max_bin}+"]
    observed = [int((counts == i).sum()) for i in range(max_bin)] + [int((counts >= max_bin).sum())]
    pmf = [math.exp(-mean) * mean**i / math.factorial(i) for i in range(max_bin)]
    expected_fraction = [*pmf, max(0.0, 1.0 - sum(pmf))]
    return {
        "droplets": n,
        "objects": int(counts.sum()),
        "mean_per_droplet": round(mean, 4),
        "bins": bins,
        "observed": observed,
        "observed_fraction": [round(o / n, 4) if n else None for o in observed],
        "poisson_fraction": [round(f, 4) for f in expected_fraction],
        "poisson_expected": [round(f * n, 2) for f in expected_fraction],
    }


def _columns(fl: DropletIntensities, spots: np.ndarray, i: int, positive: bool) -> dict[str, Any]:
    """The per-droplet fluorescence columns (:data:`FLUORESCENCE_COLUMNS`) of droplet ``i``."""
    values = (
        round(float(fl.mean[i]), 4),
        round(float(fl.max[i]), 4),
        round(float(fl.integrated[i]), 2),
        round(float(fl.background[i]), 4),
        round(float(fl.corrected_mean[i]), 4),
        bool(positive),
        int(spots[i]),
    )
    return dict(zip(FLUORESCENCE_COLUMNS, values, strict=True))


def measure_fluorescence(
    droplets: list[Droplet],
    labels: np.ndarray,
    channel: np.ndarray,
    threshold: float | None = None,
    method: str = "otsu",
    spot_diameter_px: float = 5.0,
    um_per_px: float | None = None,
) -> dict[str, Any]:
    """Fluorescence per droplet (set in each droplet's ``fluorescence``) and the population figures.

    Every droplet found is measured (removed ones too, so a client can restore them); the positive
    call, the ddPCR statistics and the occupancy use the kept droplets.

    Args:
        droplets: every droplet found, kept or removed.
        labels: their label image (ids as values, 0 = background), so each annulus avoids them all.
        channel: the fluorescence picture, HxW, in its own units.
        threshold, method: the positive call (:func:`classify_positive`).
        spot_diameter_px: the objects counted per droplet (:func:`count_spots`).
        um_per_px: calibration, for copies per uL from the mean droplet volume.

    Returns:
        ``{"fluorescence": {mean_of_droplet_means, histogram, call}, "ddpcr": ..., "occupancy": ...}``.
    """
    ids = np.array([d.id for d in droplets], dtype=np.int64)
    fl = droplet_intensities(channel, labels, ids)
    spots = count_spots(channel, labels, ids, spot_diameter_px)
    kept_idx = np.array([i for i, d in enumerate(droplets) if d.removed_reason is None], dtype=np.int64)
    corrected = fl.corrected_mean[kept_idx]
    call = classify_positive(corrected, threshold, method)
    positive = fl.corrected_mean > call.threshold
    for i, d in enumerate(droplets):
        d.fluorescence.update(_columns(fl, spots, i, positive[i]))
    kept = [droplets[i] for i in kept_idx]
    volume = float(np.mean([d.calibrated(um_per_px)["volume_pl"] for d in kept])) if kept and um_per_px else None
    counts, edges = np.histogram(corrected, bins=32) if corrected.size else (np.zeros(0), np.zeros(1))
    return {
        "fluorescence": {
            "mean_of_droplet_means": round(float(fl.mean[kept_idx].mean()), 4) if kept else None,
            "histogram": {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]},
            "call": call.as_dict(),
        },
        "ddpcr": ddpcr_statistics(len(kept), int(call.positive.sum()), volume),
        "occupancy": {**occupancy(spots[kept_idx]), "spot_diameter_px": spot_diameter_px},
    }


def fluorescence_of_added(
    droplet: Droplet, labels: np.ndarray, channel: np.ndarray, threshold: float | None, spot_diameter_px: float
) -> None:
    """Set the fluorescence columns of a droplet added after the segmentation, measured as the
    segmentation measured its droplets: its annulus avoids the droplets of ``labels`` (not
    modified), and it is positive above the segmentation's ``threshold``."""
    labels = np.array(labels, copy=True)
    new_id = int(labels.max()) + 1
    inst = droplet.instance
    labels[inst.y0 : inst.y1, inst.x0 : inst.x1][inst.mask] = new_id  # the added droplet owns its whole mask
    ids = np.array([new_id])
    fl = droplet_intensities(channel, labels, ids)
    spots = count_spots(channel, labels, ids, spot_diameter_px)
    positive = threshold is not None and fl.corrected_mean[0] > threshold
    droplet.fluorescence.update(_columns(fl, spots, 0, positive))
