"""Labelled pictures as other microscopes would show them: ``sam-droplet-look-shift OUT DIR...``
(or ``python -m sam_droplet.tools.look_shift``).

The detector is judged on pictures nobody tuned it on. The labelled sets at hand hold one look
each; this writes copies of them under the changes another microscope or camera brings, with the
labels carried along, so that the evaluator can say which change the detector does not hold up
under (``sam-droplet-evaluate OUT/*/*``: a folder per change and set, ``original`` among them):

- ``half``: half the magnification (area-averaged; droplets half as wide);
- ``x1.6``: 1.6 times the magnification (cubic), the centre kept at the original size;
- ``noisy``: a noisier camera, Gaussian noise of 6 % of the range;
- ``lowcontrast``: a dim, flat exposure, the range squeezed into 35-55 % of it;
- ``inverted``: the opposite polarity (dark field, a negative);
- ``gradient``: light falling from 100 % to 45 % across the picture.

Labels follow the picture: resampled by nearest neighbour where the geometry changes, unchanged
otherwise. Pictures are read as the service reads them (any of its formats, alpha removed) and
written as 8-bit PNG (16-bit ones scaled to 8 bits, float ones over their range), labels as uint16
``<stem>_labels.png``, in ``OUT/<change>/<set folder's name>/``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ..io.read import read_image
from ..io.write import label_png, png_bytes
from .evaluate import pairs_in, read_truth

__all__ = ["SHIFTS", "main", "shift_look", "write_shifted"]

_NOISE = 0.06  # of the intensity range
_ZOOM = 1.6


def _unit(image: np.ndarray) -> np.ndarray:
    """float32 in 0-1 from an 8- or 16-bit picture (a float one spread over its own range)."""
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    lo, hi = float(np.nanmin(image)), float(np.nanmax(image))
    return np.nan_to_num((image.astype(np.float32) - lo) / max(hi - lo, 1e-12))


def _eight_bit(unit: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)


def _half(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = labels.shape
    size = (max(w // 2, 1), max(h // 2, 1))
    return (
        cv2.resize(_unit(image), size, interpolation=cv2.INTER_AREA),
        cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST),
    )


def _zoom(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = labels.shape
    size = (round(w * _ZOOM), round(h * _ZOOM))
    big = cv2.resize(_unit(image), size, interpolation=cv2.INTER_CUBIC)
    big_labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
    y0, x0 = (size[1] - h) // 2, (size[0] - w) // 2
    return big[y0 : y0 + h, x0 : x0 + w], big_labels[y0 : y0 + h, x0 : x0 + w]


def _noisy(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    unit = _unit(image)
    return unit + rng.normal(0.0, _NOISE, unit.shape).astype(np.float32), labels


def _low_contrast(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return 0.35 + 0.2 * _unit(image), labels


def _inverted(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return 1.0 - _unit(image), labels


def _gradient(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    unit = _unit(image)
    w = labels.shape[1]
    light = (0.45 + 0.55 * np.arange(w, dtype=np.float32) / max(w, 1))[None, :]
    return unit * (light[..., None] if unit.ndim == 3 else light), labels


Shift = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]
SHIFTS: dict[str, Shift] = {
    "half": _half,
    "x1.6": _zoom,
    "noisy": _noisy,
    "lowcontrast": _low_contrast,
    "inverted": _inverted,
    "gradient": _gradient,
}


def shift_look(image: np.ndarray, labels: np.ndarray, shift: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (HxW or HxWx3; 8-bit, 16-bit or float) and its ``labels`` (HxW) under one of
    :data:`SHIFTS`.

    Returns the picture as uint8 and the labels as uint16; the noise is drawn from ``seed``.
    """
    if shift not in SHIFTS:
        raise ValueError(f"unknown look shift {shift!r}; one of {', '.join(SHIFTS)}")
    if image.shape[:2] != labels.shape:
        raise ValueError(f"picture {image.shape[:2]} and labels {labels.shape} differ in size")
    if labels.size and int(labels.max()) > 65535:
        raise ValueError("more than 65535 labels do not fit the 16-bit label image written")
    shifted, shifted_labels = SHIFTS[shift](image, labels.astype(np.uint16), np.random.default_rng(seed))
    return _eight_bit(shifted), shifted_labels.astype(np.uint16)


def write_shifted(out: Path, folders: list[Path], shifts: list[str], seed: int = 0) -> dict[str, int]:
    """Every labelled picture of ``folders`` (as ``sam-droplet-evaluate`` finds them), as it is and
    under each of ``shifts``, written to ``out/<shift>/<folder's name>/`` (``original`` for the
    picture as it is).

    Returns how many pictures each change received.
    """
    written: dict[str, int] = {}
    for folder in folders:
        pairs = pairs_in(folder)
        if not pairs:
            raise SystemExit(f"{folder}: no labelled pictures (<stem>_labels.png beside <stem>.<ext>)")
        for image_path, truth_path in pairs:
            image = read_image(image_path).pixels  # any format the service reads, alpha removed
            labels = read_truth(truth_path, image.shape[:2])
            for shift in ["original", *shifts]:
                if shift == "original":
                    picture, shifted_labels = _eight_bit(_unit(image)), labels
                else:
                    picture, shifted_labels = shift_look(image, labels, shift, seed)
                target = out / shift / folder.resolve().name
                target.mkdir(parents=True, exist_ok=True)
                (target / f"{image_path.stem}.png").write_bytes(png_bytes(picture))
                (target / f"{image_path.stem}_labels.png").write_bytes(label_png(shifted_labels))
                written[shift] = written.get(shift, 0) + 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sam-droplet-look-shift", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write <shift>/<set>/<stem>.png (+ _labels.png) into")
    parser.add_argument("folders", type=Path, nargs="+", help="folders of labelled pictures")
    parser.add_argument(
        "--shifts", default=",".join(SHIFTS), help=f"comma-separated, from {', '.join(SHIFTS)} (default: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the added noise")
    args = parser.parse_args(argv)
    shifts = [s for s in args.shifts.split(",") if s]
    unknown = [s for s in shifts if s not in SHIFTS]
    if unknown:
        parser.error(f"unknown look shift(s) {', '.join(unknown)}; choose from {', '.join(SHIFTS)}")
    written = write_shifted(args.out, args.folders, shifts, args.seed)
    for shift, count in written.items():
        print(f"{args.out / shift}: {count} pictures")
    print(f"score them with: sam-droplet-evaluate {args.out}/*/*")
    return 0


if __name__ == "__main__":
    sys.exit(main())
