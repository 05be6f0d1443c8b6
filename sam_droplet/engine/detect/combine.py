"""One set of droplets from two detectors: the classical outlines and the droplet model's.

Where the two find the same droplets they may still outline them differently: the classical
detector fits star-shaped outlines around a centre, so it can cut an elongated droplet in two or
outline half of it, while the model can merge two droplets or stop short of a faint rim. Neither
detector's own score says which is right, so the image decides: a true outline runs along an
intensity edge over its whole length, and a cut through a droplet's interior does not. Each group
of overlapping droplets keeps the outlines (classical or model) more of whose length lies on an
edge; on a tie the classical ones stay, since they follow rims to the pixel, unless the model's enclose
them (to within a pixel, where the two set the outline on the rim) and are clearly larger: a
droplet is bounded by its outermost edge, and a classical outline inside it follows the inner side
of a thick rim (bright bubbles), a lens highlight, or one end of an elongated bubble. The model's
outline also wins a tie where the classical droplets it holds meet along a line that looks like
its interior, not a rim: in a small elongated bubble every line across lies near the rim, so the
edge test cannot see the cut, but the picture can (two droplets touching meet along their rims).
A droplet both outlined alike (one each, IoU 0.7 or more) differs only in where its outline sits
on the rim: all such droplets of a picture take the convention that lies more on edges over the
whole picture, so that one convention measures them all (mixing two gave a ddPCR monolayer a CV
of 5.4 % instead of 1.9 %; either detector alone, 2.0-2.6 %). A droplet only the model found is
added where no classical droplet lies; a classical droplet the model outlined alike as another of
its droplets does not count there, since the model saw both and settled where they meet (a
droplet seen over a larger one's rim). A droplet only the classical detector found
is dropped where the model, at the scale it judges that size, sees background (under 0.2
probability of being inside a droplet, on average over it): texture of the background, specks
between bubbles. On generated pictures (where the truth is known) that rule drops 478 false
droplets for 1 true one; 0.2 is where more false ones stop falling away.

Two detectors that work differently agree on real droplets: the model also finds 39-100 % of the
classical droplets of any one size on every picture measured, and 0-3 % of the specks correlated
pixel noise gives the classical detector. So where the model confirms under a tenth of at least ten
classical droplets of one size (an octave of diameters), the unconfirmed ones of that size go
(generated noise-only pictures: about 90 specks -> 2-7, no labelled set changed).

An outline only stands for a droplet when its rim stands out of the picture's own noise along most
of its length. The classical detector already needs each ray's edge clearly above the noise of the
scale it sees the droplet at, but among ten thousand proposals on a noisy picture some blobs of
correlated noise pass that ray by ray; their typical edge is then barely above the floor. So a
classical droplet whose rim's typical edge is under 1.5 times the floor (``_FAINT``) stays only
where the model backs it with a confident droplet of its own (generated noise-only pictures,
correlated over 2 px: 2-7 specks -> 0-1). The model's outline of a speck so dropped is not its
better outline: where every classical droplet of a group was dropped, the model's droplets there
are ones only the model found, with that floor (correlated over 3 px: 4-9 specks -> 0-2). A faint
outline the model drew alike (IoU 0.7 or more, ``_SAME``), however unsure the model is, stays
where the picture's clear droplets (rims above that floor) number at least ten of its size (an
octave, ``_POPULATION``): two detectors that work differently drew the same droplet, of a size the
picture is known to hold, one more of that population seen out of focus. Specks of noise have no
clear population of their size, on a noise-only picture nor on the textured background of a
picture of a few large droplets.
A droplet only the model found, and that it is unsure of (under ``_MODEL_ONLY_SURE``), stands
only in a picture that shows droplets clearly (ten the model is sure of, or classical outlines
whose rims stand out of the noise): in a picture of nothing but correlated noise the model's blobs
reach its floor, and such a model droplet backs no faint classical outline either. In a picture
that shows few droplets clearly, a classical outline whose rim stands only a little out of the
noise (``_DOUBTFUL``) needs the same backing as a faint one.

The classical droplets linked to one model droplet are pieces of it, whatever the edges say,
when at most one of them holds a centre of its own as the model sees it (centerness in its inner
half of 0.5 or more) and at least one holds none: the bright highlights inside a faint bubble,
whose outlines lie on strong edges, are not droplets. Droplets seen through a larger one, or
inside a vignette the model took for a droplet, each have their own centre and stay (bubbles_gt
0.752 -> 0.776, generated bright bubbles 0.962 -> 0.964, emulsion_gt unchanged).

What a droplet carries is not evidence of where its rim runs. Where the model outlines a cell or
bead at a droplet's rim apart from the droplet and cuts a bay into the droplet around it, the held
outline lies on strong edges of its own (a bright cell, a fluorescence spot overlaid), which can
make the model's outlines look better on edges than the classical droplet's round one. So where one
classical droplet holds (``_INSIDE`` of their pixels) every model droplet of its group but the
largest, each under half that one's diameter (``_HELD_AREA``), and the model leads on edges only
with the held ones counted, the classical outline stays, and the held droplets with it (overlap
resolution then decides what they are). GY_image (droplets carrying cells, unlabelled): 8 droplets
lost to the circularity filter -> 5; every labelled and generated set unchanged.

Before any of that, a classical droplet in whose inner half the model sees no centre (centerness
nowhere above 0.2) is dropped, linked to model droplets or not: the gap between three packed
droplets, which the classical detector outlines as a droplet whose outline spills onto its
neighbours' rims, is a third foreground to the model but has no centre (generated monolayers of
2300 droplets 9 px across counted 2630, of 2080 droplets 20 px across 2600).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import cv2
import numpy as np

from ..instances import CARRIER_RATIO, Instance, mask_intersection, mask_iou, paint_labels
from .learned import SMALL_POPULATION_PX, foreground_level, has_small_droplets
from .normalize import normalize_intensity

__all__ = ["combine_detections", "seen_through_confirmed"]

_T = TypeVar("_T")
_CHECK_EVERY = 1024  # droplets or groups judged between two calls of ``check`` (a fraction of a second)

_LINKED = 0.2  # two droplets compete when their overlap is this share of the smaller one
_MARGIN = 0.1  # the model's outlines replace the classical ones only when clearly better on edges
_EDGE_SHARE = 0.35  # an outline pixel is on an edge when within this share of the group's strong edges
_FREE = 0.8  # a droplet only the model found is added when this share of it lies outside classical ones
_SAME = 0.7  # one classical and one model droplet this alike are the same droplet, outlined twice
_BACKGROUND = 0.2  # a droplet only the classical detector found goes when the model's probability is below this
_NO_CENTRE = 0.2  # a classical droplet goes when the model's centerness is nowhere in its inner half above this
_INSIDE = 0.9  # on a tie, the model's outlines win when this share of the classical ones lies inside them
_LARGER = 1.2  # ... and they cover this many times the classical ones' area
# ... counting as inside the classical pixels within this many pixels of the model's outline.
# Where generated bright bubbles failed, the classical outline of one end of an elongated bubble
# ran a pixel outside the model's along the rim: 14-22 % of its pixels. Generated bright bubbles
# 0.964 -> 0.972 (2 px: 0.972); held out: bubbles_gt 0.776 -> 0.781, foam_gt and emulsion_gt
# unchanged, as is every other generated set.
_RIM_PX = 1
# A contact line between classical droplets inside one model droplet is a cut when its intensity
# lies within this share of the rim's contrast from the interior. Cuts on generated seeds 1 and 2
# (elongated bubbles and droplets): 37 of 40 within 0.1.
_CUT_LOOK = 0.2
# Two detectors that work differently agree on real droplets: of the classical droplets of one size
# (an octave of diameters) the model also finds 39-100 % on every real and generated picture
# measured (bright field, bubbles, foam, dense and packed fields); of the specks correlated pixel
# noise gives the classical detector, 0-3 %. A size class of at least _POPULATION classical
# droplets of which the model confirms under _CONFIRMED is noise: its unconfirmed droplets go.
_POPULATION = 10
_CONFIRMED = 0.1
# A droplet only the model found needs this score, unless the model found a confident population
# of small droplets and it is one of their sizes (``learned.SMALL_POPULATION_PX``: the small ones,
# at the score floor's edge, are real; a large unsure outline is not made surer by them): specks of
# correlated noise and texture score 0.61-0.64. Chosen on generated seeds 1, 2, 7-10 (0.75 and
# 0.80 tie); held out: emulsion_gt 0.777 -> 0.800, high magnification 0.900 -> 1.000, foam_gt
# 0.650 -> 0.637.
_MODEL_ONLY_FLOOR = 0.75
# ... and, under _MODEL_ONLY_SURE, a picture that shows droplets clearly: at least _VOUCHING model
# droplets of _MODEL_ONLY_SURE or more, or classical outlines whose rim stands out of the noise
# (``_FAINT``) and that stay. A faint droplet is then one more of what the picture shows; in a
# picture of nothing but correlated noise the model's blobs score 0.75-0.82 and at most a few
# outlines stand out, so none is vouched for (noise-only pictures correlated over 3-6 px: 61 specks
# on seeds 0-5 -> 19, 52 on held-out seeds 6-11 -> 9). _MODEL_ONLY_SURE was read off the model-only
# droplets of seven such pictures and of every labelled set (specks 0.75-0.82); _VOUCHING is
# _POPULATION's ten. Counting clear droplets of the unsure one's own size instead (three of its
# octave) dropped as many specks but lost the large droplets of pictures of a few (generated large
# droplets with contents 1.000 -> 0.356); as it is, no labelled set, real or generated, changes.
_MODEL_ONLY_SURE = 0.85
_VOUCHING = 10
# A classical droplet has a centre of its own where the model's centerness in its inner half reaches
# this. Classical droplets sharing one model droplet on bubbles_gt, emulsion_gt and generated
# pictures: pieces of one droplet 0.20-0.50 (median 0.36) but for the piece holding the droplet's
# own centre; droplets seen inside a larger outline 0.74-0.92.
_OWN_CENTRE = 0.5
# A classical outline whose rim's typical edge is under this many times the edge a ray needs (the
# classical detector's ``contrast``; 1.5 is about 2.6 standard deviations of the picture's own
# noise at the droplet's scale) barely stands out of that noise: it stays only where a model
# droplet of at least _MODEL_ONLY_FLOOR overlaps it. Specks of correlated noise lie at 1.0-1.5;
# chosen on generated noise-only pictures (seeds 1-6) as the lowest of 1.0, 1.2, 1.5, 2, 2.5 that
# drops what any of them drops (correlated over 2 px: 2-7 specks a picture -> 0-1). Every
# generated set is unchanged; held out: emulsion_gt 0.805 -> 0.800 (precision 0.858 -> 0.871,
# recall 0.759 -> 0.740), foam_gt and bubbles_gt unchanged. Outlined alike by the model (``_SAME``)
# and of a size with at least ``_POPULATION`` clear droplets, a faint one stays too: no new number;
# generated noise-only pictures and every generated set unchanged, emulsion_gt 0.799 -> 0.803.
_FAINT = 1.5
# In a picture that shows fewer than _VOUCHING droplets clearly, a classical outline whose rim is
# under this many times that edge needs the same backing: with the model's blobs gone, noise-only
# pictures correlated over 6 px kept 0-3 classical outlines of contrast 1.5-1.9 (texture 200-330 px
# across, bright specks of 15-20 px). 2.0 is the next value of the grid _FAINT was chosen from, not
# fitted. Noise-only pictures (seeds 0-11, correlated over 0-6 px): 28 droplets -> none. Held out:
# foam_gt 0.6453 -> 0.6446 (image_00008, a few bubbles: one lost), every other labelled set, real
# and generated, unchanged image by image.
_DOUBTFUL = 2.0
# A model droplet held inside a classical one is under this share of the area (half the diameter)
# of the model's largest droplet there: what a droplet carries, or a droplet seen through it.
_HELD_AREA = 0.25


def seen_through_confirmed(classical: list[Instance]) -> Callable[[Instance, Instance], bool]:
    """Whether a model droplet inside another is seen through it (for the model's own overlap
    resolution before combining, ``resolve_overlaps(seen_through=...)``): the other is
    ``CARRIER_RATIO`` times its diameter and the classical detector outlined it alike (``_SAME``).

    Two detectors that work differently then saw the large droplet (emulsion_gt IMG_160: a dark
    out-of-focus droplet over a third of the picture, with sharp droplets seen through it). A blob
    the model alone saw over a field of droplets (generated condensation, seed 84: 458 px over
    hundreds of droplets 15-34 px across) is not a droplet to see them through.
    """
    boxes = np.array([(c.x0, c.y0, c.x1, c.y1) for c in classical], dtype=np.int64).reshape(-1, 4)
    confirmed: dict[int, bool] = {}

    def outlined_alike(large: Instance) -> bool:
        if id(large) not in confirmed:
            near = (
                (boxes[:, 0] < large.x1)
                & (boxes[:, 2] > large.x0)
                & (boxes[:, 1] < large.y1)
                & (boxes[:, 3] > large.y0)
            )
            confirmed[id(large)] = any(mask_iou(classical[i], large) >= _SAME for i in np.flatnonzero(near))
        return confirmed[id(large)]

    return lambda large, small: large.area >= CARRIER_RATIO**2 * small.area and outlined_alike(large)


def _edge_strength(norm: np.ndarray) -> np.ndarray:
    """Gradient magnitude of the normalised picture, each pixel the strongest within 2 px (an
    outline may sit on either flank of a dark rim, or a pixel off the steepest point)."""
    norm = cv2.GaussianBlur(norm, (0, 0), 1.0)
    gx = cv2.Sobel(norm, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(norm, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.dilate(cv2.magnitude(gx, gy), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))


def _outline_values(inst: Instance, edges: np.ndarray) -> np.ndarray:
    """Edge strength under the outline (the mask's boundary pixels) of one droplet."""
    mask = inst.mask.astype(np.uint8)
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    inner = cv2.erode(padded, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)))[1:-1, 1:-1]
    ys, xs = np.nonzero(mask & (inner == 0))
    return edges[ys + inst.y0, xs + inst.x0]


def _edge_support(outlines: list[np.ndarray], strong: float) -> float:
    """Share of the outline pixels (all outlines together) with an edge of at least ``strong``."""
    total = sum(len(v) for v in outlines)
    return float(sum(np.count_nonzero(v >= strong) for v in outlines) / total) if total else 0.0


def _checked(items: Iterable[_T], check: Callable[[str], None] | None) -> Iterator[_T]:
    """``items``, calling ``check`` before every ``_CHECK_EVERY``-th (a deadline may stop the work)."""
    for i, item in enumerate(items):
        if check and i % _CHECK_EVERY == 0:
            check("combining detections")
        yield item


def _groups(
    classical: list[Instance],
    found: list[Instance],
    shape: tuple[int, int],
    check: Callable[[str], None] | None = None,
) -> list[tuple[list[int], list[int]]]:
    """Connected groups of overlapping droplets, as (classical indices, model indices)."""
    owner = paint_labels(classical, shape)  # classical droplets are disjoint after overlap resolution
    parent = list(range(len(classical) + len(found)))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    linked = np.zeros(len(parent), bool)
    for j, inst in enumerate(_checked(found, check)):
        under = np.bincount(owner[inst.y0 : inst.y1, inst.x0 : inst.x1][inst.mask], minlength=len(classical) + 1)
        for i in np.flatnonzero(under[1:]):
            if under[i + 1] > _LINKED * min(classical[i].area, inst.area):
                parent[root(len(classical) + j)] = root(int(i))
                linked[[i, len(classical) + j]] = True
    members: dict[int, tuple[list[int], list[int]]] = {}
    for k in np.flatnonzero(linked):
        side = members.setdefault(root(int(k)), ([], []))
        (side[0].append(int(k)) if k < len(classical) else side[1].append(int(k) - len(classical)))
    return list(members.values())


def _model_view(inst: Instance, maps: list[np.ndarray], part: np.ndarray | None = None) -> np.ndarray:
    """The values of one of the model's per-level maps under a droplet (or under ``part`` of its
    mask crop), at the pyramid level that judges a droplet of its size."""
    k = foreground_level(2.0 * np.sqrt(inst.area / np.pi), len(maps))
    level = maps[k]
    ys, xs = np.nonzero(inst.mask if part is None else part)
    fy = np.minimum(((ys + inst.y0) >> k), level.shape[0] - 1)
    fx = np.minimum(((xs + inst.x0) >> k), level.shape[1] - 1)
    return level[fy, fx]


def _core(mask: np.ndarray) -> np.ndarray:
    """The inner half of a mask: pixels at least half as deep inside it as its deepest one. A
    droplet's centre lies there; a gap outlined between packed droplets, whose outline spills onto
    its neighbours' rims, has there only the middle of the gap."""
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    depth = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    return depth >= 0.5 * depth.max()


def _box(group: list[Instance]) -> tuple[int, int, tuple[int, int]]:
    """The crop holding every droplet of ``group``: (x0, y0, (height, width))."""
    x0, y0 = min(i.x0 for i in group), min(i.y0 for i in group)
    return x0, y0, (max(i.y1 for i in group) - y0, max(i.x1 for i in group) - x0)


def _encloses(outer: list[Instance], inner: list[Instance]) -> bool:
    """Whether the droplets ``outer`` together hold ``_INSIDE`` of ``inner``'s pixels (within
    ``_RIM_PX`` of their outline) and cover ``_LARGER`` times their area."""
    x0, y0, shape = _box(outer + inner)

    def union(instances: list[Instance]) -> np.ndarray:
        canvas = np.zeros(shape, bool)
        for i in instances:
            canvas[i.y0 - y0 : i.y1 - y0, i.x0 - x0 : i.x1 - x0] |= i.mask
        return canvas

    out, into = union(outer), union(inner)
    # The two detectors may set an outline a pixel apart on the same rim: a band that is a fifth
    # of a small droplet's pixels. Within that pixel, the classical droplet is inside.
    rim = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * _RIM_PX + 1, 2 * _RIM_PX + 1))
    inside = np.count_nonzero(cv2.dilate(out.astype(np.uint8), rim).astype(bool) & into)
    return inside >= _INSIDE * np.count_nonzero(into) and np.count_nonzero(out) >= _LARGER * np.count_nonzero(into)


def _cut_through(classical: list[Instance], model: list[Instance], gray: np.ndarray) -> bool:
    """Whether the classical droplets meet along a line that looks like the model droplet's interior:
    the middle part of their contact line differs from the droplet at the same depth below its
    outline by under ``_CUT_LOOK`` of the rim's contrast against the interior. That is one droplet
    cut in two (an elongated one, which a star-shaped outline around one centre cannot follow),
    not two droplets touching or seen through each other (their contact line carries a rim)."""
    if len(classical) < 2 or len(model) != 1:
        return False
    x0, y0, shape = _box(classical + model)
    owner = np.zeros(shape, np.int32)
    for k, inst in enumerate(classical, start=1):
        owner[inst.y0 - y0 : inst.y1 - y0, inst.x0 - x0 : inst.x1 - x0][inst.mask] = k
    inside = np.zeros(shape, np.uint8)
    inside[model[0].y0 - y0 : model[0].y1 - y0, model[0].x0 - x0 : model[0].x1 - x0][model[0].mask] = 1
    contact = np.zeros(shape, bool)
    contact[:-1] |= (owner[:-1] > 0) & (owner[1:] > 0) & (owner[:-1] != owner[1:])
    contact[:, :-1] |= (owner[:, :-1] > 0) & (owner[:, 1:] > 0) & (owner[:, :-1] != owner[:, 1:])
    padded = cv2.copyMakeBorder(inside, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    depth = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    deepest = float(depth.max())
    line = contact & (depth >= 0.5 * deepest)  # the middle of the contact line, away from the rim
    if np.count_nonzero(line) < 2:
        return False
    # The picture's own intensities: a contrast ratio needs no normalisation, and a normalised
    # picture saturates on bright rims.
    pixels = gray[y0 : y0 + shape[0], x0 : x0 + shape[1]].astype(np.float32)
    rim = float(np.median(pixels[(depth > 0) & (depth <= 2)]))
    core = float(np.median(pixels[depth >= 0.5 * deepest]))
    # The line against the droplet itself at the same depth below its outline (a bubble's rim
    # brightens the interior near it through the blur of the optics).
    ring = np.floor(depth).astype(np.int64)
    rest = (depth > 0) & ~line
    differences = []
    for k in np.unique(ring[line]).tolist():
        around = rest & (ring == k)
        if around.any():
            differences.append(float(np.median(pixels[line & (ring == k)]) - np.median(pixels[around])))
    return bool(differences) and abs(float(np.median(differences))) < _CUT_LOOK * abs(rim - core)


def _held_inside(outer: Instance, model: list[Instance]) -> list[int]:
    """Which of one group's model droplets (two or more) the classical droplet ``outer`` holds:
    all but the largest, when each lies within ``outer`` (``_INSIDE`` of its pixels) and is under
    half the largest one's diameter; else none."""
    if len(model) < 2:
        return []
    largest = max(range(len(model)), key=lambda k: model[k].area)
    held = [
        k
        for k, inst in enumerate(model)
        if k != largest
        and inst.area < _HELD_AREA * model[largest].area
        and mask_intersection(outer, inst) >= _INSIDE * inst.area
    ]
    return held if len(held) == len(model) - 1 else []


def _octave(inst: Instance) -> int:
    """The size class of a droplet: its equivalent diameter's octave."""
    return int(np.floor(np.log2(max(2.0 * np.sqrt(inst.area / np.pi), 1.0))))


def _unconfirmed_sizes(classical: list[Instance], linked: set[int]) -> set[int]:
    """The size classes (:func:`_octave`) holding at least ``_POPULATION`` classical droplets of
    which the model found under ``_CONFIRMED`` too: a population only one detector sees."""
    octaves = np.array([_octave(c) for c in classical], dtype=np.int64)
    out = set()
    for k in np.unique(octaves).tolist():
        members = np.flatnonzero(octaves == k)
        if members.size >= _POPULATION and sum(int(i) in linked for i in members) < _CONFIRMED * members.size:
            out.add(k)
    return out


def combine_detections(
    classical: list[Instance],
    found: list[Instance],
    gray: np.ndarray,
    foreground: list[np.ndarray] | None = None,
    centerness: list[np.ndarray] | None = None,
    vetoed: list[Instance] | None = None,
    check: Callable[[str], None] | None = None,
) -> list[Instance]:
    """The droplets of both detectors, one outline set per droplet (see the module's text).

    Args:
        classical: the classical detector's droplets, overlaps resolved (disjoint).
        found: the model's droplets, overlaps resolved (disjoint).
        gray: the picture they were found in.
        foreground: the model's inside-a-droplet probability per pyramid level (what
            :func:`~sam_droplet.engine.detect.learned.detect_with_net` fills in); without it no
            classical droplet is dropped.
        centerness: the model's centerness per pyramid level, in the same order; without it no
            classical droplet is dropped for want of a centre, nor taken for a piece of a model
            droplet.
        vetoed: when given, receives the classical droplets dropped because the model sees no
            centre or only background in them, or does not back their faint rim.
        check: called with the stage's name every thousand or so droplets; whatever it raises
            stops the work (a request's deadline).

    Returns:
        The combined droplets; overlaps between the two sets may remain where neither was
        replaced (resolve them afterwards).
    """
    dropped: list[Instance] = [] if vetoed is None else vetoed
    if centerness:
        # No centre: not a droplet, whatever model droplets it overlaps (a gap between packed
        # droplets spills onto its neighbours; linked to them it would decide their outlines).
        centre = [float(_model_view(c, centerness, _core(c.mask)).max()) for c in _checked(classical, check)]
        dropped.extend(c for c, v in zip(classical, centre, strict=True) if v < _NO_CENTRE)
        classical = [c for c, v in zip(classical, centre, strict=True) if v >= _NO_CENTRE]
        centre = [v for v in centre if v >= _NO_CENTRE]
    else:
        centre = [1.0] * len(classical)  # without the maps every classical droplet has its own centre
    small_population = has_small_droplets(found)
    # How many droplets the picture shows clearly: the model's sure ones, and the classical outlines
    # whose rim stands out of the noise and that stay (counted below, once they are judged).
    model_clear, classical_clear = sum(f.score >= _MODEL_ONLY_SURE for f in found), 0

    def shows_droplets_clearly() -> bool:
        return max(model_clear, classical_clear) >= _VOUCHING

    def sure(inst: Instance) -> bool:
        """Whether a droplet only the model found is sure enough: its score reaches
        ``_MODEL_ONLY_SURE``, or the floor in a picture that shows droplets clearly; or it is one of
        a confident population of small droplets (a large outline is not)."""
        small = 2.0 * np.sqrt(inst.area / np.pi) < SMALL_POPULATION_PX
        vouched = inst.score >= _MODEL_ONLY_FLOOR and shows_droplets_clearly()
        return inst.score >= _MODEL_ONLY_SURE or vouched or (small_population and small)

    if not classical:
        # Every model droplet is then one only the model found: the same floor holds (on generated
        # noise-only pictures the model's unsure blobs, 0.66-0.67, were all that was reported).
        return [f for f in found if sure(f)]
    keep_classical = np.ones(len(classical), bool)
    keep_found = np.zeros(len(found), bool)
    groups = _groups(classical, found, gray.shape[:2], check) if found else []
    # Per group, the (classical, model) pairs outlined alike: one droplet, drawn by both.
    twins = [
        [(i, j) for i in ci for j in fj if mask_iou(classical[i], found[j]) >= _SAME]
        for ci, fj in _checked(groups, check)
    ]
    faint = [c.contrast is not None and c.contrast < _FAINT for c in classical]
    if foreground:
        linked = {i for ci, _ in groups for i in ci}
        unconfirmed = _unconfirmed_sizes(classical, linked)
        for i, inst in enumerate(_checked(classical, check)):
            keep_classical[i] = i in linked or (
                _octave(inst) not in unconfirmed and float(_model_view(inst, foreground).mean()) >= _BACKGROUND
            )
        clear = Counter(_octave(c) for c, k, f in zip(classical, keep_classical, faint, strict=True) if k and not f)
        classical_clear = sum(clear.values())
        # Classical droplets a model droplet overlaps that reaches the floor and would stand alone:
        # their rim may be faint.
        backed = {
            i
            for ci, fj in groups
            if any(found[j].score >= _MODEL_ONLY_FLOOR and sure(found[j]) for j in fj)
            for i in ci
        }
        # ... or one the model outlined alike, unsure as it is, of a size with a clear population.
        alike = {i for pairs in twins for i, _ in pairs}
        # In a picture that shows few droplets clearly, a rim barely above the floor needs backing too.
        weak_below = _FAINT if shows_droplets_clearly() else _DOUBTFUL
        for i, inst in enumerate(classical):
            weak = inst.contrast is not None and inst.contrast < weak_below
            if weak and i not in backed and not (i in alike and clear[_octave(inst)] >= _POPULATION):
                keep_classical[i] = False  # a weak rim the model does not back: noise
        dropped.extend(c for c, k in zip(classical, keep_classical, strict=True) if not k)
    else:
        classical_clear = len(classical) - sum(faint)
    edges = _edge_strength(normalize_intensity(gray).astype(np.float32)) if groups else None
    # Per group: how much more of the model's outlines than of the classical lies on edges.
    lead, same = [], []
    held: list[list[int]] = []  # per group: which of its model droplets its one classical droplet holds
    lead_without_held: list[float] = []  # the model's lead on edges without those
    for (ci, fj), pairs in _checked(zip(groups, twins, strict=True), check):
        c_values = [_outline_values(classical[i], edges) for i in ci]
        f_values = [_outline_values(found[j], edges) for j in fj]
        every = np.concatenate(c_values + f_values)
        strong = _EDGE_SHARE * float(np.percentile(every, 90)) if every.size else 0.0
        lead.append(_edge_support(f_values, strong) - _edge_support(c_values, strong))
        same.append(len(ci) == len(fj) == 1 and bool(pairs))
        held.append(_held_inside(classical[ci[0]], [found[j] for j in fj]) if len(ci) == 1 else [])
        if held[-1]:
            outer = [v for k, v in enumerate(f_values) if k not in held[-1]]
            lead_without_held.append(_edge_support(outer, strong) - _edge_support(c_values, strong))
        else:
            lead_without_held.append(lead[-1])
    # A droplet both outlined alike differs only in where the outline sits on its rim. Those all
    # take the convention that lies more on edges over the whole picture: mixing two would widen
    # the size distribution (ddPCR_0_0's CV 1.9 % -> 5.4 %).
    model_convention = sum(d for d, alike in zip(lead, same, strict=True) if alike) > 0
    contents: list[int] = []  # model droplets kept as what a classical droplet holds
    for (ci, fj), ahead, alike, inside, ahead_without in zip(groups, lead, same, held, lead_without_held, strict=True):
        if not keep_classical[ci].any():
            # Every classical droplet here was dropped, its rim too faint to stand out of the
            # picture's noise: the model's droplets are then ones only the model found, and are
            # judged as those below (its floor), not kept as better outlines of noise.
            continue
        if alike:
            replace = model_convention
        elif len(fj) == 1 and sum(centre[i] < _OWN_CENTRE for i in ci) >= max(1, len(ci) - 1):
            # Pieces of one droplet (a bubble's highlights, crescents along a faint rim): at most
            # one of them holds a centre, the droplet's own, and at least one holds none. Their
            # outlines follow the highlights' strong edges, so the edge test would keep them.
            replace = True
        elif inside and ahead > _MARGIN >= ahead_without:
            # The model outlined the droplet and, apart from it, what it holds at its rim (a cell,
            # a bead), cutting a bay into the droplet there: the held outline lies on strong edges
            # of its own, which say nothing of where the droplet's rim runs. Without it the model's
            # outline is no better: the classical one stays, and the held droplets with it.
            replace = False
            contents.extend(fj[k] for k in inside)
        elif ahead > _MARGIN:
            replace = True
        elif ahead > -_MARGIN:
            # A tie on edges: the outermost outline is the droplet's (an inner one is the inner side
            # of a thick rim or a lens highlight), and so is one the classical outlines cut in two.
            ours, theirs = [found[j] for j in fj], [classical[i] for i in ci]
            replace = _encloses(ours, theirs) or _cut_through(theirs, ours, gray)
        else:
            replace = False
        if replace:
            keep_classical[ci] = False
            keep_found[fj] = True
    kept = [c for c, k in zip(classical, keep_classical, strict=True) if k]
    taken = paint_labels(kept, gray.shape[:2]) > 0
    for j in contents:  # inside a classical droplet by definition: never free of it
        keep_found[j] = sure(found[j])
    # A kept classical droplet the model outlined alike as another of its droplets does not cover
    # a model droplet: the model, whose droplets are disjoint, saw both and settled where they meet
    # (a droplet seen over a larger one's rim; the overlap resolution then decides the pixels).
    hosts: dict[int, list[Instance]] = {}
    for (_, fj), pairs in zip(groups, twins, strict=True):
        for j in fj:
            hosts[j] = [classical[i] for i, twin in pairs if keep_classical[i] and twin != j]
    for j, inst in enumerate(_checked(found, check)):
        if not keep_found[j]:
            covered = np.count_nonzero(taken[inst.y0 : inst.y1, inst.x0 : inst.x1][inst.mask])
            covered -= sum(mask_intersection(host, inst) for host in hosts.get(j, []))
            keep_found[j] = covered <= (1 - _FREE) * inst.area and sure(inst)
    return kept + [f for f, k in zip(found, keep_found, strict=True) if k]
