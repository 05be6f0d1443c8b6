"""Droplet instances as bounding-box crops, and the rules that make every droplet count once.

An image with a thousand droplets must never hold a thousand full-size masks: each
:class:`Instance` keeps only the boolean mask inside its bounding box. Label images are composed
from instances only when an export asks for one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as coco_mask
from scipy import ndimage as ndi

__all__ = [
    "CARRIER_RATIO",
    "Instance",
    "ResolveReport",
    "convex_hull_mask",
    "convex_hull_points",
    "encode_rle",
    "fill_holes",
    "instances_from_labels",
    "mask_intersection",
    "mask_iou",
    "paint_labels",
    "resolve_overlaps",
]

# How many times an object's diameter a droplet must be to carry it (a bead, a cell): such an
# object inside a droplet is its contents (:mod:`sam_droplet.engine.contents`), not a droplet
# beside others.
CARRIER_RATIO = 2.5


@dataclass
class Instance:
    """One object mask, stored as a crop.

    Attributes:
        x0, y0: top-left corner of the crop in image pixels.
        mask: boolean crop, shape (h, w); the bounding box is ``[x0, y0, x0 + w, y0 + h)``.
        score: confidence in [0, 1] (detector support, or SAM predicted IoU times stability).
        source: what produced the mask: ``detector``, ``sam`` or ``grid``.
        center: (x, y) of the prompt or detection centre, in image pixels.
        radius: detection radius in pixels (equivalent radius of the mask when not given).
        contrast: how far the outline's rim stands out of the picture's noise (the classical
            detector's: its typical edge over the edge it needs; None from other sources).
    """

    x0: int
    y0: int
    mask: np.ndarray
    score: float = 1.0
    source: str = "detector"
    center: tuple[float, float] | None = None
    radius: float | None = None
    contrast: float | None = None

    @property
    def x1(self) -> int:
        return self.x0 + self.mask.shape[1]

    @property
    def y1(self) -> int:
        return self.y0 + self.mask.shape[0]

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    def tight(self) -> Instance | None:
        """The same instance with its crop shrunk to the mask's extent; None when empty."""
        rows = np.flatnonzero(self.mask.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(self.mask.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        self.mask = np.ascontiguousarray(self.mask[r0:r1, c0:c1])
        self.x0 += int(c0)
        self.y0 += int(r0)
        return self


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes of a boolean mask (a droplet is a disk, whatever sits inside it).

    The same as ``scipy.ndimage.binary_fill_holes`` (background 4-connected to the outside stays),
    by one OpenCV flood fill: several times faster on the small crops droplets are stored in.
    """
    if mask.size == 0:
        return mask.astype(bool)
    # OpenCV's border, not np.pad: a dense monolayer fills tens of thousands of crops.
    outside = cv2.copyMakeBorder((~mask.astype(bool)).view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=1)
    cv2.floodFill(outside, None, (0, 0), 0)
    return mask.astype(bool) | outside[1:-1, 1:-1].astype(bool)


def convex_hull_points(mask: np.ndarray) -> np.ndarray | None:
    """The convex hull of a crop's mask, as OpenCV points in the crop (None for an empty mask)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return cv2.convexHull(np.concatenate(contours)) if contours else None


def convex_hull_mask(mask: np.ndarray) -> np.ndarray:
    """The filled convex hull of a crop's mask."""
    canvas = np.zeros(mask.shape, np.uint8)
    hull = convex_hull_points(mask)
    if hull is not None:
        cv2.fillConvexPoly(canvas, hull, 1)
    return canvas.astype(bool)


def instances_from_labels(
    labels: np.ndarray,
    scores: np.ndarray | None = None,
    source: str = "detector",
) -> list[Instance]:
    """Split a label image into instances (one per label > 0), in label order.

    Args:
        labels: HxW integer label image, 0 = background.
        scores: optional per-label scores indexed by label value.
        source: the ``source`` of every instance.
    """
    out: list[Instance] = []
    for idx, sl in enumerate(ndi.find_objects(labels.astype(np.int32, copy=False)), start=1):
        if sl is None:
            continue
        mask = labels[sl] == idx
        score = float(scores[idx]) if scores is not None else 1.0
        out.append(Instance(x0=sl[1].start, y0=sl[0].start, mask=mask, score=score, source=source))
    return out


def mask_intersection(a: Instance, b: Instance) -> int:
    """Pixels two instances' masks share (over the overlap of their crops only)."""
    x0, y0, x1, y1 = max(a.x0, b.x0), max(a.y0, b.y0), min(a.x1, b.x1), min(a.y1, b.y1)
    if x0 >= x1 or y0 >= y1:
        return 0
    ma = a.mask[y0 - a.y0 : y1 - a.y0, x0 - a.x0 : x1 - a.x0]
    return int(np.count_nonzero(ma & b.mask[y0 - b.y0 : y1 - b.y0, x0 - b.x0 : x1 - b.x0]))


def mask_iou(a: Instance, b: Instance) -> float:
    """Intersection over union of two instances' masks."""
    inter = mask_intersection(a, b)
    union = a.area + b.area - inter
    return inter / union if union else 0.0


def paint_labels(instances: list[Instance], shape: tuple[int, int], ids: list[int] | None = None) -> np.ndarray:
    """Compose instances into one label image (uint32), later instances painting over earlier.

    The one label painter: label exports, the fluorescence annuli and the evaluator all use it.

    Args:
        instances: masks to paint.
        shape: (height, width) of the output.
        ids: value for each instance; ``1..N`` in list order by default.
    """
    labels = np.zeros(shape, dtype=np.uint32)
    for i, inst in enumerate(instances):
        value = ids[i] if ids is not None else i + 1
        view = labels[inst.y0 : inst.y1, inst.x0 : inst.x1]
        view[inst.mask] = value
    return labels


def encode_rle(inst: Instance, height: int, width: int) -> dict[str, Any]:
    """COCO compressed RLE ``{"size": [h, w], "counts": str}`` of a crop mask in a full image.

    COCO RLE runs go down the columns (Fortran order) of the full image, alternating background and
    mask, starting with background. The runs are computed from the crop alone.
    """
    m = inst.mask
    hc, wc = m.shape
    # A zero row above and below each crop column makes every run start and end inside it.
    padded = np.zeros((hc + 2, wc), dtype=np.int8)
    padded[1:-1] = m
    flat = padded.T.ravel()
    change = np.flatnonzero(np.diff(flat)) + 1  # positions where the value flips
    col, row = np.divmod(change, hc + 2)
    pos = (inst.x0 + col).astype(np.int64) * height + (inst.y0 + row - 1)
    starts, ends = pos[0::2], pos[1::2]
    # Runs that continue from the bottom of one column into the top of the next are one run.
    if starts.size > 1:
        joined = starts[1:] == ends[:-1]
        if joined.any():
            keep_start = np.concatenate([[True], ~joined])
            keep_end = np.concatenate([~joined, [True]])
            starts, ends = starts[keep_start], ends[keep_end]
    bounds = np.empty(2 * starts.size + 2, dtype=np.int64)
    bounds[0] = 0
    bounds[1:-1:2] = starts
    bounds[2:-1:2] = ends
    bounds[-1] = height * width
    counts = np.diff(bounds).tolist()
    if len(counts) > 1 and counts[-1] == 0:
        counts.pop()  # a mask that reaches the last pixel ends on a run, as pycocotools writes it
    rle = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


@dataclass(frozen=True)
class ResolveReport:
    """How many candidates each overlap rule removed."""

    duplicate: int = 0
    gap: int = 0
    nested: int = 0
    cluster: int = 0
    fragment: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "duplicate": self.duplicate,
            "gap": self.gap,
            "nested": self.nested,
            "cluster": self.cluster,
            "fragment": self.fragment,
        }


def _overlaps(instances: list[Instance], check: Callable[[str], None] | None = None) -> list[tuple[int, int, int]]:
    """(i, j, intersection pixels) for every pair of instances whose masks intersect."""
    n = len(instances)
    if n < 2:
        return []
    boxes = np.array([(a.x0, a.y0, a.x1, a.y1) for a in instances], dtype=np.int64)
    order = np.argsort(boxes[:, 0], kind="stable")
    pairs: list[tuple[int, int, int]] = []
    # Sweep along x: only boxes whose x ranges overlap are compared, and of those (in one NumPy
    # step, not a Python loop over a packed image's hundreds of neighbours) only boxes that also
    # overlap in y.
    active = np.zeros(0, dtype=np.int64)
    for k, i in enumerate(order):
        if check and k % 1024 == 0:
            check("overlap resolution")
        x0 = boxes[i, 0]
        active = active[boxes[active, 2] > x0]
        near = active[(np.maximum(boxes[active, 1], boxes[i, 1]) < np.minimum(boxes[active, 3], boxes[i, 3]))]
        for j in near.tolist():
            inter = mask_intersection(instances[i], instances[j])
            if inter:
                pairs.append((int(i), int(j), inter))
        active = np.append(active, i)
    return pairs


def resolve_overlaps(
    instances: list[Instance],
    duplicate_iou: float = 0.5,
    contained_fraction: float = 0.7,
    gap_fraction: float = 0.15,
    cluster_fill: float = 0.5,
    min_area: int = 4,
    keep_nested: bool = False,
    seen_through: Callable[[Instance, Instance], bool] | None = None,
    check: Callable[[str], None] | None = None,
) -> tuple[list[Instance], ResolveReport]:
    """Make every object count once and give every pixel to at most one droplet.

    Rules, in order (``A`` contains ``B`` when at least ``contained_fraction`` of ``B`` lies in ``A``):

    1. Duplicates (IoU >= ``duplicate_iou``): the higher score wins.
    2. Gaps: a mask with at least ``gap_fraction`` of its area under two or more masks twice its
       size is the space between droplets: it goes.
    3. Clusters: a mask that contains two or more other masks covering at least ``cluster_fill`` of
       it is a group of droplets, not one: it goes. Masks small enough for the largest of them to
       carry (``CARRIER_RATIO``) do not count: they are its contents or specks.
    4. Nested: a mask contained in exactly one larger mask (a cell or a reflection inside a droplet)
       goes; the container stays. With ``keep_nested`` (droplets seen through larger droplets, as
       the detector reports them) both stay, and the nested one keeps the pixels they share
       (with ``seen_through``, only where ``seen_through(container, nested)`` holds).
    5. Remaining partial overlaps: between two droplets with centre and radius, each shared pixel
       goes to the droplet it is relatively closer to (the contact line of touching disks);
       otherwise to the higher score.

    Holes are filled first; instances left with fewer than ``min_area`` pixels are dropped as
    fragments. ``check`` is called every thousand or so instances (a deadline raises in it).

    Returns:
        The kept instances (in input order) and counts of what each rule removed.
    """
    items = []
    for k, inst in enumerate(instances):
        if check and k % 1024 == 0:
            check("overlap resolution")
        inst.mask = fill_holes(inst.mask)
        if inst.tight() is not None:
            items.append(inst)
    n = len(items)
    areas = np.array([it.area for it in items], dtype=np.int64)
    scores = np.array([it.score for it in items], dtype=np.float64)
    alive = np.ones(n, dtype=bool)
    reasons: Counter[str] = Counter()
    pairs = _overlaps(items, check)

    # 1. duplicates
    for i, j, inter in sorted(pairs, key=lambda p: -p[2]):
        if not (alive[i] and alive[j]):
            continue
        iou = inter / (areas[i] + areas[j] - inter)
        if iou >= duplicate_iou:
            # Ties go to the first instance (callers list finer detections first).
            loser = j if (scores[i], -i) >= (scores[j], -j) else i
            alive[loser] = False
            reasons["duplicate"] += 1

    # 2. gaps: a small mask mostly covered by several much larger ones is the space between them
    # (the interstice of a packed monolayer seen through its neighbours' rims), not a droplet.
    covered = np.zeros(n)
    big_neighbours = np.zeros(n, dtype=np.int64)
    for i, j, inter in pairs:
        if not (alive[i] and alive[j]):
            continue
        for small, big in ((i, j), (j, i)):
            if areas[big] >= 2 * areas[small]:
                covered[small] += inter
                big_neighbours[small] += 1
    gap = alive & (big_neighbours >= 2) & (covered >= gap_fraction * areas)
    alive &= ~gap
    reasons["gap"] += int(gap.sum())

    # 3. and 4. containment
    children: dict[int, list[int]] = {}
    parents: dict[int, list[int]] = {}
    for i, j, inter in pairs:
        if not (alive[i] and alive[j]):
            continue
        big, small = (i, j) if areas[i] >= areas[j] else (j, i)
        if inter >= contained_fraction * areas[small]:
            children.setdefault(big, []).append(small)
            parents.setdefault(small, []).append(big)
    for big, kids in children.items():
        # Several droplets that fill most of a larger mask make it a cluster; a few specks inside
        # a large droplet do not, nor does one droplet with specks: objects small enough for the
        # largest of them to carry are no droplets of the group (a piece of a large droplet
        # covering 47 % of it and the beads the droplet carries: generated large droplets with
        # contents, seed 76).
        largest = areas[kids].max()
        kids = [k for k in kids if CARRIER_RATIO**2 * areas[k] >= largest]
        if len(kids) >= 2 and alive[big] and areas[kids].sum() >= cluster_fill * areas[big]:
            alive[big] = False
            reasons["cluster"] += 1
    for small, bigs in parents.items():
        containers = [b for b in bigs if alive[b]]
        stays = keep_nested and all(seen_through is None or seen_through(items[b], items[small]) for b in containers)
        if alive[small] and containers and not stays:
            alive[small] = False
            reasons["nested"] += 1

    # 5. partial overlaps. Between two round droplets the contact line is where the distances to
    # the centres, relative to the radii, are equal; otherwise the higher score takes the pixels.
    rank = {i: r for r, i in enumerate(np.argsort(-scores, kind="stable"))}
    masks = {i: items[i].mask for i in range(n)}
    for k, (i, j, _) in enumerate(pairs):
        if check and k % 1024 == 0:
            check("overlap resolution")
        if not (alive[i] and alive[j]):
            continue
        a, b = items[i], items[j]
        ix0, iy0 = max(a.x0, b.x0), max(a.y0, b.y0)
        ix1, iy1 = min(a.x1, b.x1), min(a.y1, b.y1)
        ma = masks[i][iy0 - a.y0 : iy1 - a.y0, ix0 - a.x0 : ix1 - a.x0]
        mb = masks[j][iy0 - b.y0 : iy1 - b.y0, ix0 - b.x0 : ix1 - b.x0]
        shared = ma & mb
        if not shared.any():
            continue
        i_nested, j_nested = j in parents.get(i, ()), i in parents.get(j, ())
        if keep_nested and (i_nested or j_nested):
            to_a = np.full(shared.shape, i_nested)  # the nested one keeps its pixels
        elif a.center is not None and b.center is not None and a.radius and b.radius:
            yy, xx = np.mgrid[iy0:iy1, ix0:ix1]
            da = np.hypot(xx - a.center[0], yy - a.center[1]) / a.radius
            db = np.hypot(xx - b.center[0], yy - b.center[1]) / b.radius
            to_a = da <= db
        else:
            to_a = np.full(shared.shape, rank[i] < rank[j])
        if masks[i] is a.mask:
            masks[i] = a.mask.copy()
        if masks[j] is b.mask:
            masks[j] = b.mask.copy()
        masks[i][iy0 - a.y0 : iy1 - a.y0, ix0 - a.x0 : ix1 - a.x0] &= ~(shared & ~to_a)
        masks[j][iy0 - b.y0 : iy1 - b.y0, ix0 - b.x0 : ix1 - b.x0] &= ~(shared & to_a)
    for i in range(n):
        items[i].mask = masks[i]
    out: list[Instance] = []
    for i in range(n):
        if not alive[i]:
            continue
        inst = items[i]
        if inst.area < min_area or inst.tight() is None:
            reasons["fragment"] += 1
            continue
        out.append(inst)
    return out, ResolveReport(**reasons)
