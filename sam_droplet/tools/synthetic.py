"""Synthetic droplet micrographs with exact instance labels.

Every generator returns a :class:`SyntheticImage`: the rendered picture, a uint16 label image
(0 = background, ``i + 1`` = droplet ``i``) and the true centres and radii. The pictures imitate what
the service sees in practice: bright-field droplets with a dark refraction rim (packed hexagonal
monolayers and sparse polydisperse emulsions), bright fluorescent disks on a dark background, dense
small droplets, all under an illumination gradient with sensor noise; and a few very large droplets
at high magnification over a textured background with out-of-focus blobs and heavy, partly
correlated noise (``high_magnification``), with its droplet-free twin (``noise_only``).

A pixel belongs to a droplet when its centre lies inside the droplet's circle, so the labels are the
ground truth the detector and the evaluator score against.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "EVALUATION_SETS",
    "ContentsScene",
    "FluorescencePair",
    "SyntheticImage",
    "boiling_bubbles",
    "bright_bubbles",
    "condensation",
    "dense_small",
    "droplets_with_beads",
    "emulsion_micrograph",
    "fluorescence_pair",
    "fluorescent_disks",
    "high_magnification",
    "large_droplets_with_contents",
    "monolayer_with_contents",
    "noise_only",
    "odd_droplet",
    "packed_monolayer",
    "sparse_emulsion",
    "stretched",
    "stretched_emulsion",
    "touching_pair",
    "write_sets",
]


@dataclass(frozen=True)
class SyntheticImage:
    """A generated micrograph and its ground truth.

    Attributes:
        image: rendered picture, uint8 or uint16, HxW (gray) or HxWx3 (RGB).
        labels: uint16 HxW, 0 = background, ``i + 1`` = droplet ``i``.
        centers: float (N, 2) droplet centres as (x, y) in pixels.
        radii: float (N,) droplet radii in pixels.
        kind: name of the generator.
    """

    image: np.ndarray
    labels: np.ndarray
    centers: np.ndarray
    radii: np.ndarray
    kind: str

    @property
    def count(self) -> int:
        return len(self.radii)

    def write(self, folder: Path, name: str) -> Path:
        """Write ``<folder>/<name>.png`` and ``<name>_labels.png`` (the evaluator's pair); the picture's path."""
        from ..io.write import label_png, png_bytes

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.png").write_bytes(png_bytes(self.image))
        (folder / f"{name}_labels.png").write_bytes(label_png(self.labels))
        return folder / f"{name}.png"


def _illumination(shape: tuple[int, int], strength: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative illumination field: a tilted plane times a radial vignette."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    plane = (np.cos(angle) * (xx / w - 0.5) + np.sin(angle) * (yy / h - 0.5)) * strength
    radial = ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) * strength
    return (1.0 + plane - radial).astype(np.float32)


def _finish(
    canvas: np.ndarray,
    shape: tuple[int, int],
    gradient: float,
    noise: float,
    rgb: bool,
    dtype: type,
    rng: np.random.Generator,
) -> np.ndarray:
    """Apply illumination and noise to a [0, 1] canvas and quantise it."""
    img = canvas * _illumination(shape, gradient, rng)
    img = img + rng.normal(0.0, noise, size=img.shape).astype(np.float32)
    img = np.clip(img, 0.0, 1.0)
    top = np.iinfo(dtype).max
    out = np.round(img * top).astype(dtype)
    if rgb:
        tint = np.array([1.0, 0.97, 0.93], dtype=np.float32)
        out = np.clip(out[..., None] * tint, 0, top).astype(dtype)
    return out


def _paint_disks(labels: np.ndarray, centers: np.ndarray, radii: np.ndarray) -> None:
    """Write each droplet's disk (pixel centres inside the circle) into ``labels``."""
    h, w = labels.shape
    for i, ((cx, cy), r) in enumerate(zip(centers, radii, strict=True)):
        x0, x1 = max(int(np.floor(cx - r)), 0), min(int(np.ceil(cx + r)) + 1, w)
        y0, y1 = max(int(np.floor(cy - r)), 0), min(int(np.ceil(cy + r)) + 1, h)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        labels[y0:y1, x0:x1][inside] = i + 1


# A refraction rim's sharp outer flank is this wide (px); its minimum lies this far inside the edge,
# which puts the quarter-climb back to the outside on the edge itself.
_RIM_OUTER = 0.9
_RIM_OFFSET = 0.536 * _RIM_OUTER


def _rim(signed: np.ndarray, inner: float) -> np.ndarray:
    """A bright-field droplet's refraction rim, 0-1, at ``signed`` px from its edge (< 0 inside):
    darkening gradually from ``inner`` px inside and ending sharply at the edge."""
    x = signed + _RIM_OFFSET
    return np.where(x < 0, np.exp(-((x / inner) ** 2)), np.exp(-((x / _RIM_OUTER) ** 2)))


def _render_brightfield(
    canvas: np.ndarray,
    centers: np.ndarray,
    radii: np.ndarray,
    background: float,
    interior: float,
    rim_depth: float,
    rim_width: float,
) -> None:
    """Draw bright-field droplets: a lens-brightened interior and a dark refraction rim.

    The rim darkens gradually from the inside (``rim_width``) and ends sharply at the droplet's edge,
    as in real micrographs: the edge (and the hand-drawn outline of the evaluation sets) sits on the
    rim's outer flank, where the intensity has climbed a quarter of the way back to the outside.
    """
    h, w = canvas.shape
    for (cx, cy), r in zip(centers, radii, strict=True):
        pad = 3.0
        x0, x1 = max(int(np.floor(cx - r - pad)), 0), min(int(np.ceil(cx + r + pad)) + 1, w)
        y0, y1 = max(int(np.floor(cy - r - pad)), 0), min(int(np.ceil(cy + r + pad)) + 1, h)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        signed = dist - r  # < 0 inside
        inner = min(rim_width, 0.45 * r)
        rho2 = np.clip(dist / r, 0, 1) ** 2
        inside_value = interior * (1.0 + 0.06 * (1.0 - rho2))
        # Anti-aliased coverage of the droplet over the pixel.
        cover = np.clip(0.5 - signed, 0.0, 1.0)
        patch = canvas[y0:y1, x0:x1]
        base = cover * inside_value + (1.0 - cover) * patch
        patch[:] = base * (1.0 - rim_depth * _rim(signed, inner))


def _hex_lattice(
    shape: tuple[int, int], radius: float, cv: float, gap: float, vacancy: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Centres and radii of a packed, slightly rotated hexagonal monolayer covering ``shape``."""
    h, w = shape
    spacing = 2.0 * radius * (1.0 + 2.5 * cv) + gap
    row_height = spacing * np.sqrt(3.0) / 2.0
    offset = rng.uniform(0, spacing, size=2)
    angle = rng.uniform(-0.15, 0.15)
    centers = []
    n_rows = int(np.ceil((h + 2 * spacing) / row_height)) + 2
    n_cols = int(np.ceil((w + 2 * spacing) / spacing)) + 2
    for row in range(-1, n_rows):
        for col in range(-1, n_cols):
            u = col * spacing + (row % 2) * spacing / 2.0 + offset[0] - spacing
            v = row * row_height + offset[1] - spacing
            # Rotate the lattice slightly around the image centre.
            x = (u - w / 2) * np.cos(angle) - (v - h / 2) * np.sin(angle) + w / 2
            y = (u - w / 2) * np.sin(angle) + (v - h / 2) * np.cos(angle) + h / 2
            centers.append((x, y))
    centers = np.asarray(centers, dtype=np.float64)
    radii = np.clip(rng.normal(radius, cv * radius, len(centers)), 0.6 * radius, (spacing - gap) / 2)
    jitter = (spacing - gap) / 2 - radii
    centers += rng.uniform(-1, 1, centers.shape) * jitter[:, None] * 0.5
    keep = (
        (rng.uniform(size=len(centers)) >= vacancy)
        & (centers[:, 0] + radii > 0)
        & (centers[:, 0] - radii < w - 1)
        & (centers[:, 1] + radii > 0)
        & (centers[:, 1] - radii < h - 1)
    )
    return centers[keep], radii[keep]


def packed_monolayer(
    shape: tuple[int, int] = (768, 1024),
    radius: float = 14.0,
    cv: float = 0.03,
    gap: float = 1.0,
    vacancy: float = 0.02,
    gradient: float = 0.25,
    noise: float = 0.02,
    rgb: bool = False,
    dtype: type = np.uint8,
    seed: int = 0,
) -> SyntheticImage:
    """A packed hexagonal monolayer of bright-field droplets (ddPCR-like).

    Args:
        shape: image (height, width) in pixels.
        radius: mean droplet radius in pixels.
        cv: coefficient of variation of the radii (polydispersity).
        gap: minimum spacing between neighbouring droplets' edges, in pixels.
        vacancy: fraction of lattice sites left empty.
        gradient: strength of the illumination gradient (0 = flat).
        noise: standard deviation of additive noise, as a fraction of full scale.
        rgb: return an RGB picture instead of gray.
        dtype: uint8 or uint16.
        seed: random seed.
    """
    rng = np.random.default_rng(seed)
    centers, radii = _hex_lattice(shape, radius, cv, gap, vacancy, rng)
    canvas = np.full(shape, 0.42, dtype=np.float32)  # the oil between droplets is darker
    _render_brightfield(canvas, centers, radii, 0.42, 0.62, rim_depth=0.65, rim_width=3.5)
    labels = np.zeros(shape, dtype=np.uint16)
    _paint_disks(labels, centers, radii)
    image = _finish(canvas, shape, gradient, noise, rgb, dtype, rng)
    return _relabel(image, labels, centers, radii, "packed_monolayer")


def _place_sparse(
    shape: tuple[int, int],
    n: int,
    r_min: float,
    r_max: float,
    min_gap: float,
    rng: np.random.Generator,
    max_tries: int = 20000,
) -> tuple[np.ndarray, np.ndarray]:
    """Random sequential placement of non-overlapping circles, radii log-uniform."""
    h, w = shape
    centers: list[tuple[float, float]] = []
    radii: list[float] = []
    tries = 0
    while len(radii) < n and tries < max_tries:
        tries += 1
        r = float(np.exp(rng.uniform(np.log(r_min), np.log(r_max))))
        x, y = rng.uniform(-0.5 * r, w - 1 + 0.5 * r), rng.uniform(-0.5 * r, h - 1 + 0.5 * r)
        if radii:
            c = np.asarray(centers)
            d = np.hypot(c[:, 0] - x, c[:, 1] - y)
            if np.any(d < np.asarray(radii) + r + min_gap):
                continue
        centers.append((x, y))
        radii.append(r)
    return np.asarray(centers, dtype=np.float64).reshape(-1, 2), np.asarray(radii, dtype=np.float64)


def sparse_emulsion(
    shape: tuple[int, int] = (768, 1024),
    n: int = 60,
    r_min: float = 6.0,
    r_max: float = 60.0,
    min_gap: float = 3.0,
    gradient: float = 0.3,
    noise: float = 0.02,
    rgb: bool = True,
    dtype: type = np.uint8,
    seed: int = 0,
) -> SyntheticImage:
    """Sparse polydisperse bright-field droplets on a bright background.

    The droplet interior has nearly the background's brightness, so only the dark rim tells a droplet
    from its surroundings, as in a real bright-field emulsion.
    """
    rng = np.random.default_rng(seed)
    centers, radii = _place_sparse(shape, n, r_min, r_max, min_gap, rng)
    canvas = np.full(shape, 0.7, dtype=np.float32)
    _render_brightfield(canvas, centers, radii, 0.7, 0.72, rim_depth=0.6, rim_width=4.0)
    labels = np.zeros(shape, dtype=np.uint16)
    _paint_disks(labels, centers, radii)
    image = _finish(canvas, shape, gradient, noise, rgb, dtype, rng)
    return _relabel(image, labels, centers, radii, "sparse_emulsion")


def _uneven_field(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A bright-field microscope's uneven light: a vignette off-centre, sometimes the dark, soft
    edge of a large out-of-focus object or of the aperture across part of the field, and blotches
    (a multiplicative field, about 1 where the light is full)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    reach = rng.uniform(0.6, 1.2) * np.hypot(h, w) / 2
    field = 1.0 - rng.uniform(0.1, 0.6) * np.clip(np.hypot(xx - cx, yy - cy) / reach, 0, 1.5) ** 2
    if rng.random() < 0.5:
        # A dark disc with a soft edge (its centre anywhere, even outside the picture).
        dx, dy = rng.uniform(-0.3, 1.3) * w, rng.uniform(-0.3, 1.3) * h
        radius, soft = rng.uniform(0.25, 0.6) * max(h, w), rng.uniform(0.03, 0.12) * max(h, w)
        inside = 1.0 / (1.0 + np.exp((np.hypot(xx - dx, yy - dy) - radius) / soft))
        field *= 1.0 - rng.uniform(0.4, 0.75) * inside
    field *= 1.0 + rng.uniform(0.02, 0.08) * _smooth_field(shape, rng.uniform(30, 120), rng)
    return np.clip(field, 0.05, None).astype(np.float32)


def _droplet_transmission(
    r: float, blur: float, lens: float, rim_depth: float, rim_width: float, shade: float, angle: float
) -> tuple[np.ndarray, int]:
    """How much light one bright-field droplet lets through (1 = none taken), on a square patch
    around it, and the patch's half-width: a lens-brightened interior, a dark refraction rim heavier
    on one side (oblique light), and the whole blurred by ``blur`` px where it is out of focus."""
    import cv2

    half = int(np.ceil(r + 3 * blur + 4))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    dist = np.hypot(xx, yy)
    signed = dist - r
    rho2 = np.clip(dist / r, 0, 1) ** 2
    cover = np.clip(0.5 - signed, 0.0, 1.0)
    t = 1.0 + cover * (lens * (1.0 - rho2) + 0.02)
    side = 1.0 + shade * (np.cos(angle) * xx + np.sin(angle) * yy) / max(dist.max(), 1.0)
    t = t * (1.0 - np.clip(rim_depth * side, 0, 0.95) * _rim(signed, min(rim_width, 0.45 * r)))
    if blur > 0.3:
        t = cv2.GaussianBlur(t, (0, 0), blur)
    return t.astype(np.float32), half


def emulsion_micrograph(
    shape: tuple[int, int] = (850, 1100),
    n: int = 90,
    r_median: float = 10.0,
    r_max: float = 140.0,
    defocused: float = 0.35,
    noise: float = 0.015,
    rgb: bool = True,
    dtype: type = np.uint8,
    seed: int = 0,
) -> SyntheticImage:
    """A polydisperse emulsion in bright field as a microscope sees it through a thick sample:
    droplets of log-normal sizes at different depths, so some sharp (a dark rim around a
    lens-bright interior, heavier on one side under oblique light) and some out of focus (soft
    discs whose edge still shows, brighter or darker than around them); under uneven light (an
    off-centre vignette, sometimes a large dark soft-edged region, blotches) with debris (small
    specks and clumps that are not droplets). Every droplet is labelled, out of focus too; the
    smallest are 4 px across.
    """
    import cv2

    rng = np.random.default_rng(seed)
    h, w = shape
    wanted = np.sort(np.clip(r_median * np.exp(rng.normal(0.0, 0.8, n)), 2.0, r_max))[::-1]
    centers: list[tuple[float, float]] = []
    radii: list[float] = []
    for r in wanted:  # the largest first, then the others wherever they fit
        placed, reach = np.asarray(centers).reshape(-1, 2), np.asarray(radii) + r + 1.0
        for _ in range(200):
            x, y = rng.uniform(-0.4 * r, w + 0.4 * r), rng.uniform(-0.4 * r, h + 0.4 * r)
            if np.all(np.hypot(placed[:, 0] - x, placed[:, 1] - y) > reach):
                centers.append((x, y))
                radii.append(float(r))
                break
    c, rr = np.asarray(centers, dtype=np.float64).reshape(-1, 2), np.asarray(radii, dtype=np.float64)
    transmission = np.ones(shape, np.float32)
    for (cx, cy), r in zip(c, rr, strict=True):
        # Out of focus: blurred, yet with an edge still seen (fainter ones are not labelled in real
        # sets), and brighter or darker than around it by a tenth to a third.
        blur = rng.uniform(0.05, 0.12) * r + rng.uniform(0.5, 2) if rng.random() < defocused else rng.uniform(0, 0.8)
        sharp = blur < 1.0
        t, half = _droplet_transmission(
            r,
            blur,
            lens=rng.uniform(0.05, 0.35) if sharp else rng.choice([-1, 1]) * rng.uniform(0.1, 0.3),
            rim_depth=rng.uniform(0.25, 0.7) if sharp else rng.uniform(0.2, 0.5),
            rim_width=rng.uniform(1.5, 3.0 + 0.08 * r),
            shade=rng.uniform(0.0, 0.8),
            angle=rng.uniform(0, 2 * np.pi),
        )
        x0, y0 = round(cx) - half, round(cy) - half
        ya, xa, yb, xb = max(y0, 0), max(x0, 0), min(y0 + t.shape[0], h), min(x0 + t.shape[1], w)
        if ya < yb and xa < xb:
            transmission[ya:yb, xa:xb] *= t[ya - y0 : yb - y0, xa - x0 : xb - x0]
    # Debris: specks and clumps that absorb light; not droplets.
    debris = np.ones(shape, np.float32)
    for _ in range(int(rng.integers(20, 120))):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        axes = (int(rng.integers(1, 4)), int(rng.integers(1, 3)))
        cv2.ellipse(debris, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0.5, 0.9)), -1)
    clumps = _smooth_field(shape, rng.uniform(3, 6), rng) > rng.uniform(2.6, 3.2)
    debris[clumps] *= rng.uniform(0.75, 0.95)
    debris = cv2.GaussianBlur(debris, (0, 0), 0.7)
    canvas = rng.uniform(0.6, 0.85) * _uneven_field(shape, rng) * transmission * debris
    # Shot noise: less where less light comes through.
    canvas += np.sqrt(np.clip(canvas, 0, None) / 0.7) * _sensor_noise(shape, noise, rng.uniform(0, 1.5), rng)
    labels = np.zeros(shape, dtype=np.uint16)
    _paint_disks(labels, c, rr)
    image = _finish(canvas, shape, 0.0, 0.0, rgb, dtype, rng)
    return _relabel(image, labels, c, rr, "emulsion_micrograph")


def fluorescent_disks(
    shape: tuple[int, int] = (768, 1024),
    n: int = 80,
    r_min: float = 8.0,
    r_max: float = 30.0,
    min_gap: float = 0.0,
    background: float = 0.06,
    brightness: tuple[float, float] = (0.45, 0.9),
    gradient: float = 0.3,
    noise: float = 0.015,
    dtype: type = np.uint8,
    seed: int = 0,
) -> SyntheticImage:
    """Bright fluorescent droplets on a dark background; neighbours may touch (``min_gap=0``)."""
    rng = np.random.default_rng(seed)
    centers, radii = _place_sparse(shape, n, r_min, r_max, min_gap, rng)
    h, w = shape
    canvas = np.full(shape, background, dtype=np.float32)
    for (cx, cy), r in zip(centers, radii, strict=True):
        level = rng.uniform(*brightness)
        x0, x1 = max(int(np.floor(cx - r - 2)), 0), min(int(np.ceil(cx + r + 2)) + 1, w)
        y0, y1 = max(int(np.floor(cy - r - 2)), 0), min(int(np.ceil(cy + r + 2)) + 1, h)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        signed = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) - r
        cover = np.clip(0.5 - signed / 1.2, 0.0, 1.0)  # slightly soft optical edge
        patch = canvas[y0:y1, x0:x1]
        patch[:] = np.maximum(patch, background + cover * (level - background))
    labels = np.zeros(shape, dtype=np.uint16)
    _paint_disks(labels, centers, radii)
    image = _finish(canvas, shape, gradient, noise, False, dtype, rng)
    return _relabel(image, labels, centers, radii, "fluorescent_disks")


def dense_small(
    shape: tuple[int, int] = (512, 512),
    radius: float = 4.5,
    cv: float = 0.05,
    gradient: float = 0.2,
    noise: float = 0.015,
    seed: int = 0,
) -> SyntheticImage:
    """A packed monolayer of small droplets (under 10 px across)."""
    image = packed_monolayer(
        shape=shape, radius=radius, cv=cv, gap=1.0, vacancy=0.01, gradient=gradient, noise=noise, seed=seed
    )
    return SyntheticImage(image.image, image.labels, image.centers, image.radii, "dense_small")


def odd_droplet(
    shape: tuple[int, int] = (480, 640),
    radius: float = 30.0,
    spacing: float = 120.0,
    odd_level: float = 0.35,
    seed: int = 1,
) -> SyntheticImage:
    """A grid of bright-field droplets with rims, the last one dyed: uniformly dark, without a rim.

    A detector that has chosen the rim model for the image misses the dyed droplet; the page's
    "add a droplet" click has to find it. The dyed droplet is the last label.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    xs = np.arange(spacing * 2 / 3, w - radius, spacing)
    ys = np.arange(spacing * 2 / 3, h - radius, spacing)
    centers = np.array([(x, y) for y in ys for x in xs], dtype=np.float64)
    radii = np.full(len(centers), radius)
    canvas = np.full(shape, 0.7, dtype=np.float32)
    _render_brightfield(canvas, centers[:-1], radii[:-1], 0.7, 0.72, rim_depth=0.6, rim_width=4.0)
    labels = np.zeros(shape, dtype=np.uint16)
    _paint_disks(labels, centers, radii)
    canvas[labels == len(centers)] = odd_level
    image = _finish(canvas, shape, 0.2, 0.02, False, np.uint8, rng)
    return SyntheticImage(image, labels, centers, radii, "odd_droplet")


def _smooth_field(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-SD random texture with features about ``scale`` px across."""
    import cv2

    field = rng.standard_normal(shape).astype(np.float32)
    field = cv2.GaussianBlur(field, (0, 0), max(scale, 0.3))
    return (field - field.mean()) / max(float(field.std()), 1e-9)


def _textured_background(
    shape: tuple[int, int], level: float, texture: float, blobs: int, rng: np.random.Generator
) -> np.ndarray:
    """A microscope's background at high magnification: texture at two scales and out-of-focus
    blobs (soft discs, darker or brighter, 15-120 px across) that are not droplets."""
    h, w = shape
    canvas = level + texture * (
        0.6 * _smooth_field(shape, rng.uniform(4, 10), rng) + 0.4 * _smooth_field(shape, rng.uniform(20, 60), rng)
    )
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(blobs):
        r = rng.uniform(8, 60)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        soft = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)))
        canvas += rng.choice([-1, 1]) * rng.uniform(0.03, 0.12) * soft
    return canvas.astype(np.float32)


def _sensor_noise(shape: tuple[int, int], sigma: float, correlation_px: float, rng: np.random.Generator) -> np.ndarray:
    """Noise of SD ``sigma``; with ``correlation_px`` > 0 part of it is spatially correlated, as
    after demosaicing, JPEG or an upscaled camera, so it is coarser than single pixels."""
    white = rng.standard_normal(shape).astype(np.float32)
    if correlation_px <= 0:
        return sigma * white
    return sigma * (0.5 * white + 0.87 * _smooth_field(shape, correlation_px, rng))


def high_magnification(
    shape: tuple[int, int] = (1200, 1600),
    n: int = 8,
    r_min: float = 120.0,
    r_max: float = 360.0,
    noise: float = 0.07,
    correlation_px: float = 1.0,
    texture: float = 0.05,
    blobs: int = 14,
    rgb: bool = True,
    dtype: type = np.uint8,
    seed: int = 0,
) -> SyntheticImage:
    """A few large bright-field droplets (hundreds of px across) at high magnification, over a
    textured background with out-of-focus blobs and heavy, partly correlated sensor noise: the look
    in which pixel noise must never be found as droplets and the droplets must not be lost."""
    rng = np.random.default_rng(seed)
    centers, radii = _place_sparse(shape, n, r_min, r_max, 12.0, rng)
    canvas = _textured_background(shape, 0.6, texture, blobs, rng)
    for c, r in zip(centers, radii, strict=True):
        _render_brightfield(canvas, c[None], np.array([r]), 0.6, 0.62, rim_depth=0.45, rim_width=max(4.0, r / 20))
    canvas += _sensor_noise(shape, noise, correlation_px, rng)
    labels = np.zeros(shape, dtype=np.uint16)
    _paint_disks(labels, centers, radii)
    image = _finish(canvas, shape, 0.2, 0.0, rgb, dtype, rng)
    return _relabel(image, labels, centers, radii, "high_magnification")


def noise_only(
    shape: tuple[int, int] = (1024, 1024),
    noise: float = 0.08,
    correlation_px: float = 1.0,
    texture: float = 0.05,
    blobs: int = 10,
    seed: int = 0,
) -> SyntheticImage:
    """No droplet at all: textured background, out-of-focus blobs and sensor noise (the right
    answer is zero droplets)."""
    rng = np.random.default_rng(seed)
    canvas = _textured_background(shape, 0.55, texture, blobs, rng) + _sensor_noise(shape, noise, correlation_px, rng)
    image = _finish(canvas, shape, 0.2, 0.0, False, np.uint8, rng)
    return SyntheticImage(image, np.zeros(shape, np.uint16), np.zeros((0, 2)), np.zeros(0), "noise_only")


# How acquisition software draws its annotations: white or a pure colour, edged in black or not.
_ANNOTATION_COLOURS = ((255, 255, 255), (255, 255, 0), (255, 0, 0), (0, 255, 0), (0, 0, 0))


def _burn_in(rgb8: np.ndarray, rng: np.random.Generator, varied: bool = True) -> None:
    """Burn a timestamp and a scale bar with its label into an 8-bit picture, as cameras do, in two
    corners. They are not droplets. White with a black outline; ``varied``: white, yellow, red,
    green or black, with a black (or, for black, white) outline or none. The style is drawn from
    ``rng`` after the timestamp's digits, so the picture beneath is the same either way."""
    import cv2

    h, w = rgb8.shape[:2]
    size = max(0.6, w / 1600 * 1.6)
    stamp = f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}.{rng.integers(0, 1000):03d}"
    colour, edge = (255, 255, 255), (0, 0, 0)
    if varied:
        colour = _ANNOTATION_COLOURS[int(rng.integers(len(_ANNOTATION_COLOURS)))]
        edge = None if rng.random() < 0.5 else ((255, 255, 255) if colour == (0, 0, 0) else (0, 0, 0))
    bar_px = max(4, h // 120)
    for text, (x, y) in ((stamp, (int(0.02 * w), int(0.06 * h))), ("100 um", (int(0.8 * w), int(0.93 * h)))):
        if edge is not None:
            cv2.putText(rgb8, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, size, edge, int(4 * size) + 2, cv2.LINE_AA)
        cv2.putText(rgb8, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, size, colour, int(2 * size), cv2.LINE_AA)
    bar = (int(0.8 * w), int(0.95 * h), int(0.8 * w) + int(0.12 * w), int(0.95 * h) + bar_px)
    if edge is not None:
        cv2.rectangle(rgb8, bar[:2], bar[2:], edge, bar_px // 2 + 2)
    cv2.rectangle(rgb8, bar[:2], bar[2:], colour, -1)


def touching_pair(
    shape: tuple[int, int] = (1200, 1600),
    r_range: tuple[float, float] = (125.0, 385.0),
    noise: float = 0.03,
    seed: int = 0,
    annotation: str = "varied",
) -> SyntheticImage:
    """Two large bright-field droplets pressed together (a flat contact a few percent of their
    size), with a burnt-in timestamp and scale bar, over a mildly textured background.

    ``annotation``: ``"varied"``, drawn in a colour chosen per picture (see :func:`_burn_in`), or
    ``"white"``, white edged in black in every picture (the pictures the shipped droplet model was
    trained on)."""
    if annotation not in ("varied", "white"):
        raise ValueError(f"annotation must be 'varied' or 'white', got {annotation!r}")
    rng = np.random.default_rng(seed)
    h, w = shape
    r1 = rng.uniform(*r_range)
    r2 = rng.uniform(r_range[0], min(r_range[1], 0.45 * w - r1))
    press = rng.uniform(0.0, 0.06) * min(r1, r2)
    angle = rng.uniform(-0.4, 0.4)
    d = r1 + r2 - press
    mid = np.array([w / 2, h / 2]) + rng.uniform(-0.05, 0.05, 2) * [w, h]
    u = np.array([np.cos(angle), np.sin(angle)])
    c1 = mid - u * d * r2 / (r1 + r2)
    c2 = mid + u * d * r1 / (r1 + r2)
    centers, radii = np.array([c1, c2]), np.array([r1, r2])
    canvas = _textured_background(shape, 0.6, 0.02, 4, rng)
    _render_brightfield(canvas, centers, radii, 0.6, 0.62, rim_depth=0.5, rim_width=max(4.0, min(r1, r2) / 25))
    canvas += _sensor_noise(shape, noise, 1.0, rng)
    labels = np.zeros(shape, dtype=np.uint16)
    _paint_disks(labels, centers, radii)
    # Where the two overlap, each pixel goes to the droplet it is nearer the centre of (in units of
    # radius): the flat contact line.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    both = ((xx - c1[0]) ** 2 + (yy - c1[1]) ** 2 < r1 * r1) & ((xx - c2[0]) ** 2 + (yy - c2[1]) ** 2 < r2 * r2)
    nearer_2 = np.hypot(xx - c2[0], yy - c2[1]) / r2 < np.hypot(xx - c1[0], yy - c1[1]) / r1
    labels[both] = np.where(nearer_2[both], 2, 1)
    image = _finish(canvas, shape, 0.15, 0.0, True, np.uint8, rng)
    _burn_in(image, rng, varied=annotation == "varied")
    return _relabel(image, labels, centers, radii, "touching_pair")


def boiling_bubbles(
    shape: tuple[int, int] = (480, 1280),
    n: int = 300,
    r_range: tuple[float, float] = (2.5, 10.0),
    noise: float = 0.03,
    seed: int = 0,
) -> SyntheticImage:
    """A high-speed frame of small vapour bubbles on a heated tube under backlight: dark bubbles
    with a bright centre spot, 5-20 px across, uneven light and a dark band (the tube's shadow),
    slight motion blur along the flow."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = shape
    centers, radii = _place_sparse(shape, n, *r_range, 1.0, rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    band_y, band_h = rng.uniform(0.3, 0.7) * h, rng.uniform(0.08, 0.15) * h
    light = 0.75 * (1 - 0.35 * (xx / w)) * (1 - 0.55 * np.exp(-(((yy - band_y) / band_h) ** 2)))
    canvas = light.astype(np.float32)
    for (cx, cy), r in zip(centers, radii, strict=True):
        x0, x1 = max(int(cx - r - 2), 0), min(int(cx + r + 3), w)
        y0, y1 = max(int(cy - r - 2), 0), min(int(cy + r + 3), h)
        if x0 >= x1 or y0 >= y1:
            continue
        dist = np.hypot(xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy)
        cover = np.clip(0.5 - (dist - r), 0, 1)
        spot = np.exp(-((dist / max(0.35 * r, 0.8)) ** 2))
        patch = canvas[y0:y1, x0:x1]
        patch[:] = patch * (1 - 0.7 * cover) + 0.6 * spot * cover * patch
    canvas = cv2.blur(canvas, (3, 1))  # motion blur along the flow
    canvas += _sensor_noise(shape, noise, 0.0, rng)
    labels = np.zeros(shape, dtype=np.uint16)
    _paint_disks(labels, centers, radii)
    image = _finish(canvas, shape, 0.0, 0.0, False, np.uint8, rng)
    return _relabel(image, labels, centers, radii, "boiling_bubbles")


def bright_bubbles(
    shape: tuple[int, int] = (460, 1200),
    n: int = 260,
    r_range: tuple[float, float] = (3.0, 30.0),
    noise: float = 0.02,
    seed: int = 0,
) -> SyntheticImage:
    """A background-subtracted high-speed frame of gas bubbles: bright rims (and a faint interior)
    on black, many of them deformed into ellipses and slugs, overlapping little."""
    import cv2

    rng = np.random.default_rng(seed)
    centers, radii = _place_sparse(shape, n, *r_range, 2.0, rng)
    canvas = np.zeros(shape, np.float32)
    labels = np.zeros(shape, dtype=np.uint16)
    for i, ((cx, cy), r) in enumerate(zip(centers, radii, strict=True)):
        stretch = float(np.exp(rng.normal(0.0, 0.25)))  # deformed bubbles: ellipses of either axis
        axes = (max(1, round(r * stretch)), max(1, round(r / stretch)))
        angle = float(rng.uniform(0, 180))
        centre = (round(cx), round(cy))
        cv2.ellipse(labels, centre, axes, angle, 0, 360, i + 1, -1)
        cv2.ellipse(canvas, centre, axes, angle, 0, 360, float(rng.uniform(0.03, 0.15)), -1)
        rim = float(rng.uniform(0.35, 1.0))
        cv2.ellipse(canvas, centre, axes, angle, 0, 360, rim, max(1, round(rng.uniform(1, 2.5))), cv2.LINE_AA)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 0.7)
    canvas += rng.normal(0.0, noise, shape).astype(np.float32) + 0.02
    image = np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8)
    return _relabel(image, labels, centers, radii, "bright_bubbles")


def condensation(
    shape: tuple[int, int] = (900, 1200),
    r_range: tuple[float, float] = (5.0, 17.5),
    n: int = 1500,
    noise: float = 0.02,
    seed: int = 0,
) -> SyntheticImage:
    """A colour macro photograph of dropwise condensation: hundreds of touching droplets 10-35 px
    across on a tinted surface, each with a dark outline, a specular highlight up-left and a
    bright crescent of refracted light low-right."""
    rng = np.random.default_rng(seed)
    h, w = shape
    centers, radii = _place_sparse(shape, n, *r_range, 0.0, rng)
    surface = np.array(rng.uniform([0.25, 0.35, 0.3], [0.45, 0.55, 0.5]), dtype=np.float32)
    canvas = np.ones((h, w, 3), np.float32) * surface
    canvas *= (1 + 0.1 * _smooth_field(shape, 40, rng))[..., None]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for (cx, cy), r in zip(centers, radii, strict=True):
        x0, x1 = max(int(cx - r - 2), 0), min(int(cx + r + 3), w)
        y0, y1 = max(int(cy - r - 2), 0), min(int(cy + r + 3), h)
        if x0 >= x1 or y0 >= y1:
            continue
        dx, dy = xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy
        dist = np.hypot(dx, dy)
        cover = np.clip(0.5 - (dist - r), 0, 1)[..., None]
        edge = np.exp(-(((dist - r + 1.2) / 1.2) ** 2))[..., None]
        spec = np.exp(-((np.hypot(dx + 0.4 * r, dy + 0.4 * r) / max(0.15 * r, 0.8)) ** 2))[..., None]
        crescent = (np.clip((dx + dy) / (1.41 * r), 0, 1) * np.exp(-(((dist - 0.75 * r) / (0.15 * r + 0.5)) ** 2)))[
            ..., None
        ]
        patch = canvas[y0:y1, x0:x1]
        inside = patch * 1.08 * (1 - 0.65 * edge) + 0.9 * spec + 0.25 * crescent
        patch[:] = cover * np.clip(inside, 0, 1) + (1 - cover) * patch
    canvas += noise * rng.standard_normal(canvas.shape).astype(np.float32)
    labels = np.zeros(shape, dtype=np.uint16)
    _paint_disks(labels, centers, radii)
    image = np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8)
    return _relabel(image, labels, centers, radii, "condensation")


def stretched(base: SyntheticImage, factor: float = 1.5, axis: int = 1) -> SyntheticImage:
    """``base`` resampled ``factor`` times longer along ``axis`` (1: x): round droplets become
    ellipses, as in a camera with non-square pixels or an anamorphic view. Labels are resampled
    with the same grid (nearest), so the truth stays exact to the pixel."""
    import cv2

    h, w = base.labels.shape
    size = (round(w * factor), h) if axis == 1 else (w, round(h * factor))
    image = cv2.resize(base.image, size, interpolation=cv2.INTER_LINEAR)
    labels = cv2.resize(base.labels, size, interpolation=cv2.INTER_NEAREST)
    centers = base.centers * ([factor, 1.0] if axis == 1 else [1.0, factor])
    return SyntheticImage(image, labels, centers, base.radii * np.sqrt(factor), f"stretched_{base.kind}")


def stretched_emulsion(seed: int = 0) -> SyntheticImage:
    """A sparse polydisperse emulsion seen 1.5 times longer along x."""
    return stretched(sparse_emulsion(seed=seed), 1.5)


def _relabel(
    image: np.ndarray, labels: np.ndarray, centers: np.ndarray, radii: np.ndarray, kind: str
) -> SyntheticImage:
    """Drop droplets that left no pixel in the image and renumber the rest 1..N."""
    present = np.unique(labels)
    present = present[present > 0]
    lut = np.zeros(len(radii) + 1, dtype=np.uint16)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.uint16)
    idx = present.astype(np.int64) - 1
    return SyntheticImage(image, lut[labels], centers[idx], radii[idx], kind)


@dataclass(frozen=True)
class ContentsScene:
    """Bright-field droplets carrying beads, with the true count in each.

    Attributes:
        image: the picture with its labels, centres and radii.
        contents: int (N,), beads inside droplet ``i`` (label ``i + 1``).
        bead_radius: the beads' radius in pixels.
    """

    image: SyntheticImage
    contents: np.ndarray
    bead_radius: float


def droplets_with_beads(
    shape: tuple[int, int] = (480, 640),
    n: int = 30,
    beads_mean: float = 1.0,
    bead_radius: float = 3.0,
    bead_contrast: float = 0.45,
    seed: int = 0,
) -> ContentsScene:
    """Sparse bright-field droplets (radius 18 to 34 px) carrying Poisson-distributed dark beads.

    Beads are anti-aliased disks ``bead_contrast`` darker than the droplet, apart from each other
    and from the droplet's rim, so every one can be counted.
    """
    rng = np.random.default_rng(seed)
    centers, radii = _place_sparse(shape, n, 18.0, 34.0, 8.0, rng)
    canvas = np.full(shape, 0.7, dtype=np.float32)
    _render_brightfield(canvas, centers, radii, 0.7, 0.72, rim_depth=0.6, rim_width=4.0)
    labels = np.zeros(shape, dtype=np.uint16)
    _paint_disks(labels, centers, radii)
    h, w = shape
    contents = np.zeros(len(radii), dtype=np.int64)
    for i, ((cx, cy), r) in enumerate(zip(centers, radii, strict=True)):
        if cx - r < 0 or cy - r < 0 or cx + r > w - 1 or cy + r > h - 1:
            continue  # droplets cut by the border carry nothing: their count is not judged
        wanted = rng.poisson(beads_mean)
        placed: list[tuple[float, float]] = []
        for _ in range(200):
            if len(placed) == wanted:
                break
            reach = r - 8.0 - bead_radius  # clear of the rim
            a, d = rng.uniform(0, 2 * np.pi), reach * np.sqrt(rng.uniform(0, 1))
            x, y = cx + d * np.cos(a), cy + d * np.sin(a)
            if all(np.hypot(x - px, y - py) > 4 * bead_radius for px, py in placed):
                placed.append((x, y))
        for x, y in placed:
            reach = int(bead_radius) + 3
            x0, x1, y0, y1 = int(x) - reach, int(x) + reach + 1, int(y) - reach, int(y) + reach + 1
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            cover = np.clip(bead_radius + 0.5 - np.hypot(xx - x, yy - y), 0.0, 1.0)
            canvas[y0:y1, x0:x1] *= 1.0 - bead_contrast * cover
        contents[i] = len(placed)
    image = _finish(canvas, shape, 0.2, 0.015, False, np.uint8, rng)
    present = np.isin(np.arange(1, len(radii) + 1), np.unique(labels))  # as _relabel keeps them
    return ContentsScene(_relabel(image, labels, centers, radii, "droplets_with_beads"), contents[present], bead_radius)


def monolayer_with_contents(
    shape: tuple[int, int] = (480, 640),
    radius: float = 30.0,
    carrying: float = 0.4,
    object_radius: float = 7.0,
    seed: int = 0,
) -> ContentsScene:
    """A packed bright-field monolayer whose droplets carry, with probability ``carrying``, one
    small round object (a bead or a cell) outlined like a small droplet, anywhere in the inner
    part of the droplet. The labels hold the droplets only: the objects are their contents.
    """
    rng = np.random.default_rng(seed)
    centers, radii = _hex_lattice(shape, radius, 0.02, 2.0, 0.02, rng)
    carries = rng.uniform(size=len(radii)) < carrying
    angle = rng.uniform(0, 2 * np.pi, int(carries.sum()))
    reach = rng.uniform(0, 0.4, int(carries.sum())) * radii[carries]
    objects = centers[carries] + np.stack([reach * np.cos(angle), reach * np.sin(angle)], axis=1)
    canvas = np.full(shape, 0.7, dtype=np.float32)
    _render_brightfield(
        canvas,
        np.concatenate([centers, objects]),
        np.concatenate([radii, np.full(len(objects), object_radius)]),
        0.7,
        0.72,
        rim_depth=0.6,
        rim_width=4.0,
    )
    labels = np.zeros(shape, dtype=np.uint16)
    _paint_disks(labels, centers, radii)
    image = _finish(canvas, shape, 0.1, 0.02, False, np.uint8, rng)
    present = np.isin(np.arange(1, len(radii) + 1), np.unique(labels))
    scene = _relabel(image, labels, centers, radii, "monolayer_with_contents")
    return ContentsScene(scene, carries[present].astype(np.int64), object_radius)


@dataclass(frozen=True)
class FluorescencePair:
    """A bright-field picture and a registered fluorescence picture of the same droplets.

    Attributes:
        brightfield: the bright-field picture with its labels, centres and radii.
        fluorescence: uint16 HxW fluorescence picture.
        positive: bool (N,), droplet ``i`` (label ``i + 1``) is uniformly bright.
        objects: int (N,), fluorescent objects (spots) placed inside droplet ``i``.
    """

    brightfield: SyntheticImage
    fluorescence: np.ndarray
    positive: np.ndarray
    objects: np.ndarray


def fluorescence_pair(
    shape: tuple[int, int] = (512, 640),
    n: int = 40,
    positive_fraction: float = 0.25,
    objects_mean: float = 0.0,
    spot_sigma: float = 1.5,
    seed: int = 0,
) -> FluorescencePair:
    """Sparse bright-field droplets and their fluorescence: positives uniformly bright (ddPCR), and
    Poisson-distributed compact objects (cells, beads) as Gaussian spots away from the rims.

    Intensities (16-bit counts): background 400, negative droplets 600, positive droplets 2400,
    spot peaks +3000; Gaussian noise of 40 counts.
    """
    rng = np.random.default_rng(seed)
    bf = sparse_emulsion(shape=shape, n=n, r_min=14, r_max=30, min_gap=8.0, seed=seed)
    count = bf.count
    positive = np.zeros(count, bool)
    positive[rng.choice(count, round(positive_fraction * count), replace=False)] = True
    objects = rng.poisson(objects_mean, count) if objects_mean > 0 else np.zeros(count, np.int64)
    fl = np.full(shape, 400.0, np.float32)
    fl[bf.labels > 0] = 600.0
    for i in np.flatnonzero(positive):
        fl[bf.labels == i + 1] = 2400.0
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    for i in range(count):
        (cx, cy), r = bf.centers[i], bf.radii[i]
        placed: list[tuple[float, float]] = []
        while len(placed) < objects[i]:
            a, d = rng.uniform(0, 2 * np.pi), (r - 4 * spot_sigma) * np.sqrt(rng.uniform(0, 1))
            x, y = cx + d * np.cos(a), cy + d * np.sin(a)
            if all((x - px) ** 2 + (y - py) ** 2 > (5 * spot_sigma) ** 2 for px, py in placed):
                placed.append((x, y))
        for x, y in placed:
            x0, x1, y0, y1 = int(x) - 8, int(x) + 9, int(y) - 8, int(y) + 9
            fl[y0:y1, x0:x1] += 3000.0 * np.exp(
                -((xx[y0:y1, x0:x1] - x) ** 2 + (yy[y0:y1, x0:x1] - y) ** 2) / (2 * spot_sigma**2)
            )
    fl += rng.normal(0, 40, shape).astype(np.float32)
    return FluorescencePair(bf, np.clip(fl, 0, 65535).astype(np.uint16), positive, objects)


def large_droplets_with_contents(
    shape: tuple[int, int] = (480, 640),
    n: int = 3,
    r_min: float = 60.0,
    r_max: float = 170.0,
    objects_mean: float = 12.0,
    object_radius: float = 6.0,
    seed: int = 0,
) -> ContentsScene:
    """A few large bright-field droplets apart from each other, each carrying a Poisson number of
    small round objects (beads or cells with a dark rim, like small droplets) spread over its
    interior: droplets reinjected with beads, seen at high speed. The labels hold the droplets only.
    """
    rng = np.random.default_rng(seed)
    centers, radii = _place_sparse(shape, n, r_min, r_max, 12.0, rng)
    objects: list[tuple[float, float]] = []
    contents = np.zeros(len(radii), dtype=np.int64)
    for i, ((cx, cy), r) in enumerate(zip(centers, radii, strict=True)):
        placed: list[tuple[float, float]] = []
        wanted = rng.poisson(objects_mean * (r / 100.0) ** 2)
        for _ in range(40 * wanted):
            if len(placed) == wanted:
                break
            angle, reach = rng.uniform(0, 2 * np.pi), (r - object_radius - 3.0) * np.sqrt(rng.uniform())
            x, y = cx + reach * np.cos(angle), cy + reach * np.sin(angle)
            if all(np.hypot(x - a, y - b) > 2.5 * object_radius for a, b in placed):
                placed.append((x, y))
        objects += placed
        contents[i] = len(placed)
    canvas = np.full(shape, 0.75, dtype=np.float32)
    _render_brightfield(canvas, centers, radii, 0.75, 0.77, rim_depth=0.35, rim_width=3.0)
    if objects:
        _render_brightfield(
            canvas, np.asarray(objects), np.full(len(objects), object_radius), 0.77, 0.8, rim_depth=0.55, rim_width=2.5
        )
    labels = np.zeros(shape, dtype=np.uint16)
    _paint_disks(labels, centers, radii)
    image = _finish(canvas, shape, 0.15, 0.02, bool(rng.integers(2)), np.uint8, rng)
    present = np.isin(np.arange(1, len(radii) + 1), np.unique(labels))
    scene = _relabel(image, labels, centers, radii, "large_droplets_with_contents")
    return ContentsScene(scene, contents[present], object_radius)


def _monolayer_with_contents_image(seed: int = 0) -> SyntheticImage:
    """:func:`monolayer_with_contents`' picture and labels (the droplets; the objects are contents)."""
    return monolayer_with_contents(seed=seed).image


def _large_droplets_with_contents_image(seed: int = 0) -> SyntheticImage:
    """:func:`large_droplets_with_contents`' picture and labels (the droplets)."""
    return large_droplets_with_contents(seed=seed).image


# The generators scored by the evaluator and the benchmark, by set name.
EVALUATION_SETS: dict[str, Callable[..., SyntheticImage]] = {
    "packed": packed_monolayer,
    "sparse": sparse_emulsion,
    "fluorescent": fluorescent_disks,
    "dense_small": dense_small,
    "high_magnification": high_magnification,
    "touching_pair": touching_pair,
    "boiling_bubbles": boiling_bubbles,
    "bright_bubbles": bright_bubbles,
    "condensation": condensation,
    "stretched_emulsion": stretched_emulsion,
    "emulsion_micrograph": emulsion_micrograph,
    "monolayer_with_contents": _monolayer_with_contents_image,
    "large_droplets_with_contents": _large_droplets_with_contents_image,
}


def write_sets(folder: Path, seeds: Iterable[int], kinds: Iterable[str] | None = None) -> dict[str, Path]:
    """Write evaluation sets the evaluator reads: ``<folder>/<kind>/<seed>.png`` and ``<seed>_labels.png``.

    Args:
        folder: where to write (created).
        seeds: random seeds; one image per seed and kind.
        kinds: set names (default: all of ``packed``, ``sparse``, ``fluorescent``, ``dense_small``,
            ``high_magnification``).

    Returns:
        The folder of each kind.
    """
    kinds = list(kinds) if kinds is not None else list(EVALUATION_SETS)
    unknown = sorted(set(kinds) - set(EVALUATION_SETS))
    if unknown:
        raise ValueError(f"unknown synthetic sets {unknown}; choose from {sorted(EVALUATION_SETS)}")
    seeds = list(seeds)
    out = {}
    for kind in kinds:
        sub = Path(folder) / kind
        sub.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            EVALUATION_SETS[kind](seed=seed).write(sub, str(seed))
        out[kind] = sub
    return out


def _seeds(text: str) -> list[int]:
    """``1,2,5`` or ``2-13`` (inclusive) or a mix."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sam-droplet-synthetic",
        description="Write synthetic evaluation sets (images and exact labels) for sam-droplet-evaluate.",
    )
    parser.add_argument("folder", type=Path, help="output folder; one subfolder per set")
    parser.add_argument("--seeds", type=_seeds, default=[1, 2], help="e.g. 1,2 or 2-13 (default 1,2)")
    parser.add_argument("--kinds", default=",".join(EVALUATION_SETS), help="comma-separated set names")
    args = parser.parse_args(argv)
    try:
        written = write_sets(args.folder, args.seeds, [k for k in args.kinds.split(",") if k])
    except ValueError as exc:
        parser.error(str(exc))
    for sub in written.values():
        print(f"{sub}  ({len(args.seeds)} images)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
