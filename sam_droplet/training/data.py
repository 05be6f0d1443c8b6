"""Training data for the droplet model: labelled pictures read from folders, generated pictures,
and the stream of augmented patches the network learns from.

Labelled folders hold, beside each picture ``<stem>.<ext>``, its ground truth as a label image
``<stem>_labels.png`` (0 = background, 1..N one droplet each) or an ImageJ / Fiji ROI Manager zip
(``<stem>_rois.zip`` or ``<stem>_RoiSet.zip``); or a COCO JSON file (``*.json`` with ``images``
and ``annotations``, polygons or RLE, file names relative to the JSON's folder).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi

from ..engine.detect.learned import normalize_for_net

__all__ = [
    "GENERATED_KINDS",
    "LabelledImage",
    "PatchSampler",
    "generated_images",
    "read_coco",
    "read_labelled",
    "targets_of",
]


@dataclass
class LabelledImage:
    """A picture normalised for the network (float32 HxW) and its droplets (int32 HxW labels)."""

    image: np.ndarray
    labels: np.ndarray
    name: str

    @property
    def median_diameter(self) -> float:
        areas = np.bincount(self.labels.ravel())[1:]
        areas = areas[areas > 0]
        return float(np.median(2 * np.sqrt(areas / np.pi))) if areas.size else 20.0


def _gray(path: Path) -> np.ndarray:
    from ..io.read import read_image

    return read_image(path).gray


def read_coco(path: Path) -> list[LabelledImage]:
    """Every image of a COCO instance-segmentation JSON, its annotations painted as labels."""
    from pycocotools import mask as coco_mask

    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{path}: not a COCO file (needs 'images' and 'annotations')")
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    out = []
    for info in data["images"]:
        file = Path(path).parent / info["file_name"]
        gray = _gray(file)
        h, w = gray.shape
        labels = np.zeros((h, w), np.int32)
        for k, ann in enumerate(by_image.get(info["id"], []), start=1):
            seg = ann.get("segmentation")
            if isinstance(seg, list):
                rle = coco_mask.merge(coco_mask.frPyObjects(seg, h, w))
            elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
                rle = coco_mask.frPyObjects(seg, h, w)
            elif isinstance(seg, dict):
                rle = seg
            else:
                continue
            labels[coco_mask.decode(rle).astype(bool)] = k
        out.append(LabelledImage(normalize_for_net(gray), labels, str(file)))
    return out


def read_labelled(folders: Iterable[Path]) -> list[LabelledImage]:
    """Every labelled picture in ``folders`` (label PNGs, ImageJ ROI zips, COCO JSON files).

    Raises:
        ValueError: a folder holds no labelled picture, or a label image does not fit its picture.
    """
    from ..tools.evaluate import pairs_in, read_truth

    out: list[LabelledImage] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder")
        found = []
        for image_path, truth_path in pairs_in(folder):
            gray = _gray(image_path)
            labels = read_truth(truth_path, gray.shape)
            if labels.shape != gray.shape:
                raise ValueError(f"{truth_path}: labels are {labels.shape}, the picture is {gray.shape}")
            found.append(LabelledImage(normalize_for_net(gray), labels.astype(np.int32), str(image_path)))
        for coco in sorted(folder.glob("*.json")):
            try:
                found += read_coco(coco)
            except (ValueError, KeyError, json.JSONDecodeError):
                continue  # another JSON (a result, a config): not training data
        if not found:
            raise ValueError(
                f"{folder}: no labelled pictures (<stem>_labels.png, <stem>_rois.zip or a COCO .json beside the pictures)"
            )
        out += found
    return out


# Generated looks the shipped model learns, with the parameter ranges each is drawn from. Seeds start
# at 10 000 so no training picture is one of the evaluation sets' (seeds 1-12).
GENERATED_KINDS = (
    "packed",
    "sparse",
    "fluorescent",
    "dense_small",
    "high_magnification",
    "touching_pair",
    "boiling_bubbles",
    "bright_bubbles",
    "condensation",
    "stretched_emulsion",
)


def generated_images(count: int, seed: int = 0, kinds: Iterable[str] = GENERATED_KINDS) -> list[LabelledImage]:
    """``count`` generated pictures, cycling through ``kinds`` with varied parameters."""
    from ..tools import synthetic

    rng = np.random.default_rng(seed)
    kinds = list(kinds)
    out = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        s = 10_000 + seed * 1000 + i
        if kind == "packed":
            img = synthetic.packed_monolayer(
                radius=float(rng.uniform(6, 30)),
                noise=float(rng.uniform(0.01, 0.06)),
                rgb=bool(rng.integers(2)),
                seed=s,
            )
        elif kind == "sparse":
            img = synthetic.sparse_emulsion(
                n=int(rng.integers(20, 120)), r_min=float(rng.uniform(3, 10)), r_max=float(rng.uniform(20, 90)), seed=s
            )
        elif kind == "fluorescent":
            img = synthetic.fluorescent_disks(seed=s)
        elif kind == "high_magnification":
            img = synthetic.high_magnification(
                noise=float(rng.uniform(0.02, 0.1)), correlation_px=float(rng.uniform(0, 2)), seed=s
            )
        elif kind == "touching_pair":
            # White annotations: the recipe the shipped weights were trained on (reproducible).
            img = synthetic.touching_pair(seed=s, annotation="white")
        else:
            img = synthetic.EVALUATION_SETS[kind](seed=s)
        gray = img.image.astype(np.float32)
        if gray.ndim == 3:
            gray = gray @ np.array([0.299, 0.587, 0.114], np.float32)
        out.append(LabelledImage(normalize_for_net(gray), img.labels.astype(np.int32), f"generated/{kind}/{s}"))
    return out


def targets_of(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Foreground (0/1) and centerness (distance to the droplet's edge over its largest) of a label patch."""
    fg = labels > 0
    # Pixels where two droplets meet count as edge, so touching droplets get separate cores.
    edge = np.zeros_like(fg)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:-1] |= labels[1:] != labels[:-1]
    depth = ndi.distance_transform_edt(fg & ~edge)
    n = int(labels.max())
    if n == 0:
        return fg.astype(np.float32), np.zeros(labels.shape, np.float32)
    peak = np.asarray(ndi.maximum(depth, labels, np.arange(n + 1)), np.float32)
    peak[0] = 1.0
    centre = np.where(fg, depth / np.maximum(peak[labels], 1e-6), 0.0)
    return fg.astype(np.float32), np.clip(centre, 0, 1).astype(np.float32)


def _crop(a: np.ndarray, y0: int, x0: int, size: int, mode: str) -> np.ndarray:
    """``a[y0:y0+size, x0:x0+size]``, padded (``mode`` as np.pad) where it leaves the picture."""
    h, w = a.shape
    ya, xa, yb, xb = max(y0, 0), max(x0, 0), min(y0 + size, h), min(x0 + size, w)
    if ya >= yb or xa >= xb:
        return np.zeros((size, size), a.dtype)
    part = a[ya:yb, xa:xb]
    pads = ((ya - y0, y0 + size - yb), (xa - x0, x0 + size - xb))
    if any(v for pair in pads for v in pair):
        if mode == "reflect" and max(max(pads[0]), max(pads[1])) >= min(part.shape):
            mode = "edge"
        part = np.pad(part, pads, mode=mode)
    return part


class PatchSampler:
    """Random augmented patches: picture, foreground and centerness, each (patch, patch) float32.

    Each patch comes from a random picture at a random scale that brings its droplets to between
    ``diameters`` px across (log-uniform), mostly centred on a droplet, then flipped or turned, its
    contrast, brightness and gamma varied, sometimes inverted, blurred, or given extra (correlated)
    noise: the looks of other microscopes.
    """

    def __init__(
        self,
        images: list[LabelledImage],
        patch: int = 128,
        diameters: tuple[float, float] = (5.0, 90.0),
        rng: np.random.Generator | None = None,
    ):
        if not images:
            raise ValueError("no training pictures")
        self.images = images
        self.patch = patch
        self.diameters = diameters
        self.rng = rng or np.random.default_rng(0)
        self._medians = [im.median_diameter for im in images]
        self._objects = [ndi.find_objects(im.labels) for im in images]

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng, p = self.rng, self.patch
        k = int(rng.integers(len(self.images)))
        item = self.images[k]
        # Mostly the droplets at a size the network is for; also larger than that (a droplet's
        # interior fills the patch: no droplet to find inside it) and the picture at its own scale
        # (its pixel noise and texture, which a finer pyramid level sees).
        draw = rng.random()
        if draw < 0.6:
            target = float(np.exp(rng.uniform(*np.log(self.diameters))))
            scale = target / max(self._medians[k], 1.0)
        elif draw < 0.8:
            target = float(np.exp(rng.uniform(np.log(self.diameters[1]), np.log(4 * self.diameters[1]))))
            scale = target / max(self._medians[k], 1.0)
        else:
            scale = float(np.exp(rng.uniform(np.log(0.5), np.log(1.5))))
        scale = float(np.clip(scale, 1 / 32, 3.0))
        side = p / scale  # source pixels the patch covers
        h, w = item.labels.shape
        objects = [o for o in self._objects[k] if o is not None]
        if objects and rng.random() < 0.7:
            sl = objects[int(rng.integers(len(objects)))]
            cy, cx = (sl[0].start + sl[0].stop) / 2, (sl[1].start + sl[1].stop) / 2
            cy += rng.uniform(-0.5, 0.5) * side
            cx += rng.uniform(-0.5, 0.5) * side
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        size = max(2, round(side))
        # Stay inside the picture where it is large enough: padding is not a look to learn.
        y0 = int(np.clip(round(cy - size / 2), 0, max(h - size, 0))) if size <= h else round(cy - size / 2)
        x0 = int(np.clip(round(cx - size / 2), 0, max(w - size, 0))) if size <= w else round(cx - size / 2)
        img = _crop(item.image, y0, x0, size, "constant")
        lab = _crop(item.labels, y0, x0, size, "constant")
        img = cv2.resize(img, (p, p), interpolation=cv2.INTER_AREA if size > p else cv2.INTER_LINEAR)
        lab = cv2.resize(lab, (p, p), interpolation=cv2.INTER_NEAREST_EXACT)
        fg, cen = targets_of(lab)
        turns = int(rng.integers(4))
        img, fg, cen = (np.rot90(a, turns) for a in (img, fg, cen))
        if rng.random() < 0.5:
            img, fg, cen = (a[:, ::-1] for a in (img, fg, cen))
        img = self._augment(np.ascontiguousarray(img))
        return img, np.ascontiguousarray(fg), np.ascontiguousarray(cen)

    def _augment(self, img: np.ndarray) -> np.ndarray:
        rng = self.rng
        if rng.random() < 0.2:
            img = -img  # the other polarity: bright rims on dark, dark droplets on bright
        if rng.random() < 0.3:
            lo, hi = float(img.min()), float(img.max())
            span = max(hi - lo, 1e-6)
            img = lo + span * ((img - lo) / span) ** float(np.exp(rng.normal(0, 0.4)))
        img = img * float(np.exp(rng.normal(0, 0.4))) + float(rng.normal(0, 0.2))
        if rng.random() < 0.2:
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 1.5)))
        if rng.random() < 0.4:
            noise = rng.normal(0, float(rng.uniform(0.02, 0.25)), img.shape).astype(np.float32)
            if rng.random() < 0.5:
                noise = cv2.GaussianBlur(noise, (0, 0), float(rng.uniform(0.6, 1.5))) * 2.0
            img = img + noise
        if rng.random() < 0.2:
            yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]].astype(np.float32) / img.shape[0]
            img = img + float(rng.normal(0, 0.3)) * (xx - 0.5) + float(rng.normal(0, 0.3)) * (yy - 0.5)
        return img.astype(np.float32)
