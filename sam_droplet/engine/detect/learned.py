"""Droplets from the learned droplet model (:mod:`sam_droplet.modeling.droplet_net`).

The network answers, per pixel, "inside a droplet?" and "how central?" for droplets about 5 to 90
px across. Any other size is brought into that range by running it on an image pyramid (full,
half, quarter... size), as Cellpose rescales to its canonical cell size; each level keeps the
droplets of the sizes it sees best (a droplet the picture's border cuts by its chord along the
border too, see ``_kept_size``), and overlap resolution keeps one outline per droplet. The levels
of a quarter size and smaller are seen mirrored beyond the picture's border, so that a large
droplet the border cuts through or beyond its centre shows the network a whole shape (see
``_level_droplets``).

Instances are decoded from the two maps without a watershed: the cores (centerness above one half,
inside the foreground) are one connected piece per droplet, since two touching droplets meet where
centerness is low; every foreground pixel then joins its nearest core if it lies within reach of
it (one and a half times the core's own inscribed radius; a disk's core has half its radius). A
core that yields no droplet (a speck of centerness on a rim) gives its pixels back, and each
droplet's mask is opened to drop spurs running into the gaps (see ``_smooth``). Where beads or
cells inside a large droplet break its centerness into several cores, the droplet is offered
whole as well (see ``_whole_pieces``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import cv2
import numpy as np
from scipy import ndimage as ndi

from ..instances import Instance, convex_hull_mask, fill_holes, paint_labels
from .normalize import even_illumination

__all__ = [
    "SMALL_POPULATION_PX",
    "TWICE_SIZE_MAX_PX",
    "detect_with_net",
    "foreground_level",
    "has_small_droplets",
    "net_maps",
    "normalize_for_net",
    "off_the_border",
    "sharpen_outlines",
]

Check = Callable[[str], None]

_KEEP = (24.0, 64.0)  # diameters (level pixels) a level keeps, except the finest (all below) and coarsest (all above)
_TILE = 2048  # level pixels per tile side: bounds the network's memory on large images
_MARGIN = 48  # context around each tile, cut off after the network ran
_MIN_LEVEL_SIDE = 48
# Level pixels of the picture mirrored beyond its border (see ``_level_droplets``): half the
# largest diameter a level keeps, so a droplet it keeps that the border cuts is seen whole.
_REFLECTED = 32
# The levels seen so (from a quarter size on): those keeping droplets of 96 px and more. The finer
# ones are judged by their chord where the border cuts them (``_kept_size``); mirrored, the
# network's maps changed over the whole of small pictures (its reach spans them), and beads by the
# rim were cut off their droplets as wedges (generated droplets with beads: 3 -> 5 of 414 miscounted).
_MIRRORED_FROM = 2
# Confidence floor (mean foreground probability times the core's peak centerness over 0.9). Chosen on
# generated pictures (seeds 1-2 of every look): it keeps 99.2 % of the true droplets and drops 77 %
# of the false ones, mostly specks of pixel noise and slivers at the border.
_MIN_SCORE = 0.6
# A droplet this confident stays even inside a coarser droplet: a droplet seen through a larger one
# or inside a dark out-of-focus patch is one, texture is not this sure. Chosen on generated
# pictures (seeds 3-6) as the lowest of 0.95, 0.9 ... 0.75 that costs no generated set (0.75 lets
# specks of high-magnification texture through; 0.8 also finds more boiling bubbles).
_CONFIDENT = 0.8
# Beads or cells inside a large droplet can break its centerness into several cores while its
# foreground stays one round piece: the cores then cut the droplet along the beads into pieces that
# are not convex. A piece of foreground at least _ROUND convex (its area over its convex hull's)
# that its cores cut into pieces of which one is under _CONVEX_PIECE convex is offered whole too;
# overlap resolution keeps the better score. Droplets touching are each convex and together not
# round (two equal disks touching: 0.88). A 340 px droplet carrying 23 beads (samples/reinjection)
# came out as ragged pieces 117 and 250 px across, and now whole.
_ROUND = 0.95
_CONVEX_PIECE = 0.9
# Droplets under _SMALL px are at the small end of what the network resolves: it finds about 2/3
# of 5-7 px bubbles, and nearly all of them on the picture enlarged twice, where they are 10-14 px.
# So when the full-size level finds at least _FINER_COUNT droplets under _SMALL px with a median
# score of at least _FINER_MEDIAN, the picture is looked at again at twice its size: that level
# keeps the droplets under _FINER_KEEP px, the full-size one those from _SMALL_CUT px (the overlap
# is resolved like any other). Pixel noise and texture give small specks too, but right at the
# score floor (median 0.61-0.64 on generated seeds 1, 2, 7-10 of the high-magnification and
# touching-pair looks) where real small droplets are well above it (0.69-0.83: boiling and bright
# bubbles, condensation); enlarged, noise gives more specks. The enlarged level costs about three
# times the network's time, so it runs on pictures of up to TWICE_SIZE_MAX_PX (1920x1080 fits),
# which then take under 3 s on 2 cores.
_SMALL = 10.0
_FINER_COUNT = 10
_FINER_MEDIAN = 0.665
_FINER_KEEP = 16.0
# The droplets a confident population of small ones vouches for when they score under the floor a
# droplet only the model found needs (:mod:`.combine`): those under this many px, not a large
# unsure outline (a 443 px piece of a shadow at 0.68, generated emulsion look seed 43). Chosen on
# generated bright bubbles, seeds 1, 2, 7-10, as the lowest of 16, 24, 32 and 48 px that costs
# none of their bubbles (16: F1 0.963 -> 0.958, 24: 0.962).
SMALL_POPULATION_PX = 32.0
_SMALL_CUT = 12.0
TWICE_SIZE_MAX_PX = 2_100_000


def normalize_for_net(gray: np.ndarray) -> np.ndarray:
    """float32 picture centred on its median and scaled by its 1-99 percentile spread."""
    img = np.asarray(gray, dtype=np.float32)
    sample = img[:: max(1, img.shape[0] // 512), :: max(1, img.shape[1] // 512)]
    lo, mid, hi = np.percentile(sample, (1, 50, 99))
    return ((img - float(mid)) / max(float(hi - lo), 1e-6)).astype(np.float32)


def net_maps(loaded, image: np.ndarray, check: Check | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Foreground probability and centerness (both float32 HxW in [0, 1]) of a normalised picture.

    ``loaded`` is a :class:`sam_droplet.modeling.LoadedDropletNet`. Large pictures run in tiles of
    ``_TILE`` pixels with ``_MARGIN`` pixels of context each side.
    """
    import torch

    h, w = image.shape
    fg = np.zeros((h, w), np.float32)
    cen = np.zeros((h, w), np.float32)
    step = _TILE
    for y in range(0, h, step):
        for x in range(0, w, step):
            if check:
                check("droplet model")
            y0, x0 = max(0, y - _MARGIN), max(0, x - _MARGIN)
            y1, x1 = min(h, y + step + _MARGIN), min(w, x + step + _MARGIN)
            tile = image[y0:y1, x0:x1]
            th, tw = tile.shape
            ph, pw = (-th) % 16, (-tw) % 16
            if ph or pw:
                tile = np.pad(tile, ((0, ph), (0, pw)), mode="reflect" if min(th, tw) > max(ph, pw) else "edge")
            tensor = torch.from_numpy(np.ascontiguousarray(tile))[None, None].to(loaded.device)
            if loaded.device.type == "cpu":
                tensor = tensor.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                fast = loaded.precision == "bfloat16"
                with torch.autocast(loaded.device.type, dtype=torch.bfloat16, enabled=fast):
                    out = loaded.net(tensor)
                out = torch.sigmoid(out.float())[0, :, :th, :tw].cpu().numpy()
            yy, xx = slice(y - y0, y - y0 + min(step, h - y)), slice(x - x0, x - x0 + min(step, w - x))
            fg[y : y + step, x : x + step] = out[0][yy, xx]
            cen[y : y + step, x : x + step] = out[1][yy, xx]
    return fg, cen


def _assign(inside: np.ndarray, cores: np.ndarray, n: int) -> np.ndarray:
    """Labels giving every foreground pixel to its nearest core, if within that core's reach."""
    # Inscribed radius of each core, then every foreground pixel to its nearest core within reach
    # (OpenCV's distance transforms: a tenth of SciPy's exact ones' time, within a few percent).
    in_core = (cores > 0).astype(np.uint8)
    core_ids = cores[in_core > 0]  # scan order
    reach = np.zeros(n + 1, np.float32)
    np.maximum.at(reach, core_ids, cv2.distanceTransform(in_core, cv2.DIST_L2, 5)[in_core > 0])
    reach = 1.5 * reach + 1.5
    dist, nearest = cv2.distanceTransformWithLabels(1 - in_core, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    # ``nearest`` numbers the core pixels (the zeros of the transform's input) in scan order.
    owner = np.concatenate([[0], core_ids]).astype(np.int32)[nearest]
    return np.where(inside & (dist <= reach[owner]), owner, 0)


_DISKS = {r: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)) for r in (1, 2, 3)}


def _smooth(mask: np.ndarray, close: bool = False) -> np.ndarray:
    """The droplet's mask without spurs a pixel or two wide (foreground running into the gap
    between droplets), which a droplet's smooth outline never has and which add a tenth to its
    perimeter, enough for the circularity filter to reject a round droplet: a morphological opening
    by a disk of 1/16 of the droplet's diameter (1 to 3 px), keeping the largest piece; with
    ``close``, then a closing by the same disk (notches as well as spurs)."""
    r = int(np.clip(round(np.sqrt(np.count_nonzero(mask) / np.pi) / 8), 1, 3))  # the disk's radius
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), r, r, r, r, cv2.BORDER_CONSTANT, value=0)
    opened = cv2.morphologyEx(padded, cv2.MORPH_OPEN, _DISKS[r])[r:-r, r:-r]
    # OpenCV's labelling and border: a third of SciPy's and NumPy's time on a droplet's crop (called
    # once per droplet), the same pieces (4-connected, numbered in scan order).
    n, pieces, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=4)
    if n > 2:
        mask = pieces == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    elif n > 1:
        mask = opened.astype(bool)
    if not close:
        return mask
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), r, r, r, r, cv2.BORDER_CONSTANT, value=0)
    return cv2.morphologyEx(padded, cv2.MORPH_CLOSE, _DISKS[r])[r:-r, r:-r].astype(bool)


def _decode(
    fg: np.ndarray, cen: np.ndarray, keep: tuple[float, float], check: Check | None = None
) -> list[tuple[int, int, np.ndarray, float]]:
    """Instances (x0, y0, mask crop, score) of one level whose equivalent diameter is within ``keep``.

    ``check`` is called between the steps (each a fraction of a second on a 13 Mpx level)."""
    inside = fg > 0.5
    cores, n = ndi.label(inside & (cen > 0.5))
    if n == 0:
        return []
    if check:
        check("droplet model")
    peak = np.zeros(n + 1, np.float32)
    np.maximum.at(peak, cores[cores > 0], cen[cores > 0])
    labels = _assign(inside, cores, n)
    if check:
        check("droplet model")
    # A core that yields no droplet (a speck of centerness on a droplet's rim, mostly) must not keep
    # the pixels nearest to it: they would be cut out of the droplet around it as a wedge. Such
    # cores are dropped and the pixels given out again.
    area = np.bincount(labels.ravel(), minlength=n + 1)
    prob = np.bincount(labels.ravel(), weights=fg.ravel(), minlength=n + 1) / np.maximum(area, 1)
    failed = (area < 12) | (prob * np.minimum(1.0, peak / 0.9) < _MIN_SCORE)
    if failed[1:].any():
        if check:
            check("droplet model")
        keep_core = ~failed
        keep_core[0] = False
        cores = np.where(keep_core[cores], cores, 0)
        labels = _assign(inside, cores, n)
    if check:
        check("droplet model")
    out = []
    boxes = ndi.find_objects(labels)
    for idx, sl in enumerate(boxes, start=1):
        if check and idx % 2048 == 0:
            check("droplet model")
        if sl is None:
            continue
        mask = _smooth(labels[sl] == idx)
        if int(mask.sum()) < 12:
            continue
        score = float(fg[sl][mask].mean()) * min(1.0, float(peak[idx]) / 0.9)
        if score >= _MIN_SCORE and _kept_size(mask, (sl[1].start, sl[0].start), fg.shape, keep, score):
            out.append((sl[1].start, sl[0].start, mask, score))
    return out + _whole_pieces(fg, inside, cores, labels, boxes, peak, keep)


def _kept_size(
    mask: np.ndarray, corner: tuple[int, int], shape: tuple[int, int], keep: tuple[float, float], score: float
) -> bool:
    """Whether a level keeps a droplet of this mask (a crop at ``corner`` (x0, y0) of a level of
    ``shape``): its equivalent diameter lies in ``keep`` (level pixels); or the level's border cuts
    it, the model is sure of it (``_CONFIDENT``) and the chord the border cuts through it, where
    longer than that diameter, lies in ``keep``. A droplet cut by the picture's border shows only
    part of itself, so its equivalent diameter understates its size: the level that sees it whole
    may take it for too small, and the finer level sees it in pieces (generated large droplets
    carrying beads: the beads in a droplet no level kept were reported as droplets)."""
    diameter = 2.0 * np.sqrt(np.count_nonzero(mask) / np.pi)
    if keep[0] <= diameter < keep[1]:
        return True
    if score < _CONFIDENT:
        return False
    (x0, y0), (h, w) = corner, shape
    chords = [
        np.count_nonzero(edge)
        for cut, edge in (
            (y0 == 0, mask[0]),
            (x0 == 0, mask[:, 0]),
            (y0 + mask.shape[0] == h, mask[-1]),
            (x0 + mask.shape[1] == w, mask[:, -1]),
        )
        if cut
    ]
    return bool(chords) and keep[0] <= max(diameter, max(chords)) < keep[1]


def _convexity(mask: np.ndarray) -> float:
    """A mask's area over its convex hull's (1 for a disk, less for a mask with bays)."""
    return float(np.count_nonzero(mask)) / max(np.count_nonzero(convex_hull_mask(mask) | mask), 1)


def _whole_pieces(
    fg: np.ndarray,
    inside: np.ndarray,
    cores: np.ndarray,
    labels: np.ndarray,
    cut_boxes: list[tuple[slice, slice] | None],
    peak: np.ndarray,
    keep: tuple[float, float],
) -> list[tuple[int, int, np.ndarray, float]]:
    """Round pieces of foreground that their cores cut into pieces not all convex, whole, as
    ``_decode``'s instances (see ``_ROUND``): a droplet whose contents broke its centerness.
    ``cut_boxes`` are ``ndi.find_objects(labels)``, which ``_decode`` has already computed."""
    if not cores.any():
        return []
    pieces, n = ndi.label(inside)
    in_core = cores > 0
    piece_of_core = np.zeros(int(cores.max()) + 1, np.int64)
    piece_of_core[cores[in_core]] = pieces[in_core]
    cores_per_piece = np.bincount(piece_of_core[np.unique(cores[in_core])], minlength=n + 1)
    boxes = ndi.find_objects(pieces)

    def convex(i: int) -> bool:  # the piece core i cut out (tiny ones are not judged)
        cut = labels[cut_boxes[i - 1]] == i
        return np.count_nonzero(cut) < 12 or _convexity(cut) >= _CONVEX_PIECE

    out = []
    for k in np.flatnonzero(cores_per_piece[1:] >= 2) + 1:
        sl = boxes[k - 1]
        whole = pieces[sl] == k
        ids = np.unique(labels[sl][whole])
        ids = ids[ids > 0]
        if ids.size < 2:
            continue
        mask = _smooth(whole)
        if int(mask.sum()) < 12:
            continue
        score = float(fg[sl][mask].mean()) * min(1.0, float(peak[ids].max()) / 0.9)
        if score < _MIN_SCORE or not _kept_size(mask, (sl[1].start, sl[0].start), fg.shape, keep, score):
            continue
        if _convexity(mask) >= _ROUND and not all(convex(i) for i in ids.tolist()):
            out.append((sl[1].start, sl[0].start, mask, score))
    return out


def _full_size(
    fg: np.ndarray,
    taken: np.ndarray,
    idx: int,
    box: tuple[int, int, tuple[int, int]],
    scale: tuple[float, float],
    shape: tuple[int, int],
) -> tuple[int, int, np.ndarray]:
    """A coarse level's droplet at full size, as (x0, y0, mask crop).

    Enlarging the level's mask would give an outline of steps a level pixel long (8 or 16 px on a
    large droplet), which the circularity filter then rejects. Instead the level's probability map
    is interpolated and cut at one half, a smooth outline between the level's pixels, within the
    droplet's own level pixels grown by one where no other droplet of the level lies (so touching
    droplets keep their contact line)."""
    x0, y0, (mh, mw) = box
    sx, sy = scale
    h, w = shape
    ly0, lx0 = max(0, y0 - 2), max(0, x0 - 2)
    ly1, lx1 = min(fg.shape[0], y0 + mh + 2), min(fg.shape[1], x0 + mw + 2)
    own = taken[ly0:ly1, lx0:lx1]
    grown = cv2.dilate((own == idx).astype(np.uint8), np.ones((3, 3), np.uint8)) & ((own == 0) | (own == idx))
    X0, Y0 = round(lx0 * sx), round(ly0 * sy)
    size = (min(w, round(lx1 * sx)) - X0, min(h, round(ly1 * sy)) - Y0)
    prob = cv2.resize(fg[ly0:ly1, lx0:lx1], size, interpolation=cv2.INTER_LINEAR)
    region = cv2.resize(grown.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    return X0, Y0, (prob > 0.5) & (cv2.GaussianBlur(region, (0, 0), 0.5 * sx) > 0.5)


def detect_with_net(
    gray: np.ndarray,
    loaded,
    check: Check | None = None,
    foreground: list[np.ndarray] | None = None,
    centerness: list[np.ndarray] | None = None,
    even_light: bool = True,
) -> list[Instance]:
    """Droplets of any size in ``gray`` (HxW, any dtype) found by the droplet model.

    Args:
        gray: the picture.
        loaded: a :class:`sam_droplet.modeling.LoadedDropletNet`.
        check: called between tiles and levels; whatever it raises stops the detection.
        foreground: when given, receives each pyramid level's inside-a-droplet probability map,
            finest (full size) first (see :func:`foreground_level`).
        centerness: when given, receives each pyramid level's centerness map, in the same order.
        even_light: divide the picture by the light reaching each place first
            (:func:`~sam_droplet.engine.detect.normalize.even_illumination`); training's validation
            passes False, as the model is trained on pictures as they are.

    Returns:
        Instances (``source='detector'``) with centre, radius and score set; several levels may
        report the same droplet, so resolve overlaps afterwards
        (:func:`sam_droplet.engine.instances.resolve_overlaps`).
    """
    norm = normalize_for_net(even_illumination(gray) if even_light else gray)
    h, w = norm.shape
    levels = 1
    while min(h, w) / 2**levels >= _MIN_LEVEL_SIDE and levels < 8:
        levels += 1
    scaled = [norm]
    for k in range(1, levels):
        scaled.append(
            cv2.resize(norm, (max(1, round(w / 2**k)), max(1, round(h / 2**k))), interpolation=cv2.INTER_AREA)
        )
    maps: list[np.ndarray] = []
    centres: list[np.ndarray] = []
    found: list[list[Instance]] = [[] for _ in range(levels)]  # every level's candidates
    for k in reversed(range(levels)):
        level = scaled[k]
        lo = 0.0 if k == 0 else _KEEP[0]
        hi = np.inf if k == levels - 1 else _KEEP[1]
        fg, cen, decoded = _level_droplets(
            loaded, level, (lo, hi), check, coarsest=k == levels - 1, mirrored=k >= _MIRRORED_FROM
        )
        maps.insert(0, fg)
        centres.insert(0, cen)
        if check:
            check("droplet model")
        found[k] = _at_full_size(fg, decoded, (h, w))
    if h * w <= TWICE_SIZE_MAX_PX and has_small_droplets(found[0]):
        found[0] = [inst for inst in found[0] if 2.0 * inst.radius >= _SMALL_CUT]
        found.insert(0, _twice_size_level(norm, loaded, check))
    kept = _judge_levels(found, (h, w))
    if foreground is not None:
        foreground[:] = maps
    if centerness is not None:
        centerness[:] = centres
    return kept


def sharpen_outlines(
    droplets: list[Instance], foreground: list[np.ndarray], which: set[int] | None = None
) -> list[Instance]:
    """The droplets, with the outlines of the model's droplets judged at a coarse pyramid level
    placed by a finer level's foreground (the level with pixels a quarter the size, or the full-size
    one).

    A coarse level sees a large droplet whole, but its outline, interpolated between pixels 8 or 16
    px apart, lies a few pixels off the edge: enough to take a droplet 5 px from the picture's
    border for one the border cuts. The finer level sees where the edge lies. Only a band one
    coarse pixel wide either side of the coarse outline is placed anew; inside it the droplet
    stays whole (a finer level sees a large droplet's interior as texture), and it grows only into
    pixels no other droplet holds (a finer level sees the neighbours of a foam's bubble too).

    Args:
        droplets: every droplet of the picture, overlaps resolved, in full-size pixels.
        foreground: the model's foreground maps, finest (full size) first
            (:func:`detect_with_net`).
        which: ``id()`` of the model's droplets among ``droplets`` (default: all of them).
    """
    if not foreground or not droplets:
        return droplets
    held = None  # 1 + the index of the droplet holding each pixel, painted once it is needed
    out = []
    for k, inst in enumerate(droplets):
        level = foreground_level(2.0 * (inst.radius or np.sqrt(inst.area / np.pi)), len(foreground))
        if level == 0 or (which is not None and id(inst) not in which):
            out.append(inst)
            continue
        if held is None:
            held = paint_labels(droplets, foreground[0].shape)
        out.append(_sharpened(inst, foreground[max(0, level - 2)], 2**level, held, k + 1))
    return out


def _sharpened(inst: Instance, fine: np.ndarray, step: int, held: np.ndarray, own: int) -> Instance:
    """A coarse level's droplet with its outline placed by the finer level's foreground ``fine``
    within ``step`` px (the level's pixel) of the coarse outline, growing only into pixels that
    ``held`` gives to no droplet or to ``own``."""
    h, w = held.shape
    box = (max(inst.y0 - step, 0), min(inst.y1 + step, h), max(inst.x0 - step, 0), min(inst.x1 + step, w))
    y0, y1, x0, x1 = box
    fine = _crop_at_full_size(fine, box, (h, w))
    coarse = np.zeros((y1 - y0, x1 - x0), np.uint8)
    coarse[inst.y0 - y0 : inst.y1 - y0, inst.x0 - x0 : inst.x1 - x0] = inst.mask
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * step + 1, 2 * step + 1))
    core = cv2.erode(coarse, disk, borderType=cv2.BORDER_REPLICATE).astype(bool)
    # Seen mirrored, a droplet a few pixels off the picture's border meets its mirror image there at
    # the coarse level, as if the border cut it. Where the finer level sees a gap there
    # (:func:`_off_the_border_line`), the finer level places that part too.
    off_line = _off_the_border_line(coarse.astype(bool), fine, box, (h, w), step)
    if off_line is not None:
        core &= off_line
    reach = cv2.dilate(coarse, disk).astype(bool)
    holder = held[y0:y1, x0:x1]
    free = (holder == 0) | (holder == own)
    # Smooth as a full-size droplet's mask is (the finer level's foreground runs a pixel or two
    # into the gaps between packed droplets, and a ragged outline fails the circularity filter),
    # and closed over the notches the same pixels leave.
    mask = _smooth(core | (reach & (fine > 0.5)), close=True)
    mask = fill_holes(mask) & free  # a droplet seen through this one keeps its pixels
    ys, xs = np.nonzero(mask)
    # Where the finer level cuts bays into it (beads or cells at its edge, a rim too faint for
    # that level), the coarse outline stays: a droplet is round (``_ROUND``).
    if ys.size == 0 or _convexity(mask) < min(_ROUND, _convexity(inst.mask)):
        return inst
    out = _instance(
        x0 + int(xs.min()), y0 + int(ys.min()), mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1], inst.score
    )
    return out if out is not None else inst


def _crop_at_full_size(fine: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """The rows ``y0:y1`` and columns ``x0:x1`` (``box``) of a level's map ``fine`` seen at the
    full size ``shape``: bilinear over the level's pixels, aligned as ``cv2.resize`` aligns the
    whole map."""
    (h, w), (y0, y1, x0, x1) = shape, box
    if fine.shape == (h, w):
        return fine[y0:y1, x0:x1]
    sy, sx = fine.shape[0] / h, fine.shape[1] / w
    fy0, fx0 = int(y0 * sy), int(x0 * sx)
    fy1, fx1 = min(fine.shape[0], int(np.ceil(y1 * sy)) + 1), min(fine.shape[1], int(np.ceil(x1 * sx)) + 1)
    yy = (np.arange(y0, y1) + 0.5) * sy - 0.5 - fy0
    xx = (np.arange(x0, x1) + 0.5) * sx - 0.5 - fx0
    grid_x, grid_y = np.meshgrid(xx.astype(np.float32), yy.astype(np.float32))
    local = np.ascontiguousarray(fine[fy0:fy1, fx0:fx1])
    return cv2.remap(local, grid_x, grid_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _off_the_border_line(
    inside: np.ndarray, fine: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int], step: int
) -> np.ndarray | None:
    """Where an outline reaching the picture's border should not: the pixels of the crop ``box``
    (y0, y1, x0, x1 of a picture of ``shape``) off the border line, when the foreground ``fine``
    (cropped alike) sees a gap between the droplet ``inside`` and the border; else None.

    A gap: background on most of the border line under the droplet, and clearly more droplet (a
    quarter of the band more) in the band ``step`` px wide inside it. The quarter was read off
    generated high magnification seed 15 (a 253 px droplet 5 px off the border: line 0.00, band
    0.45) and emulsion_gt IMG_3188's blobs the border does cut (line 0.00-0.37, band 0.00-0.35).
    """
    (h, w), (y0, y1, x0, x1) = shape, box
    if min(x0, y0) > 0 and x1 < w and y1 < h:  # only a crop on the border can reach it
        return None
    rows = np.arange(y0, y1)[:, None]
    cols = np.arange(x0, x1)[None, :]
    to_border = np.minimum(np.minimum(rows, h - 1 - rows), np.minimum(cols, w - 1 - cols))
    chord, band = inside & (to_border == 0), inside & (to_border > 0) & (to_border <= step)
    if not chord.any() or not band.any():
        return None
    on_line = float(np.mean(fine[chord] > 0.5))
    if on_line < 0.5 and float(np.mean(fine[band] > 0.5)) >= on_line + 0.25:
        return to_border > 0
    return None


def off_the_border(droplets: list[Instance], foreground: list[np.ndarray]) -> list[Instance]:
    """The droplets, each outline that reaches the picture's border where the model sees a gap
    between the droplet and the border (:func:`_off_the_border_line`) taken off the border line.

    The classical detector places an outline where the intensity beyond the rim is back at the
    outside level, a pixel or two outside the rim; a droplet whose rim ends two pixels short of the
    picture's border is then outlined onto the border, and removed as one the border cuts. The
    model, judging the droplet at the level that keeps its size and placing its outline with the
    finer level (as :func:`sharpen_outlines` does for its own droplets), sees the gap.

    Args:
        droplets: every droplet of the picture, in full-size pixels.
        foreground: the model's foreground maps, finest (full size) first.
    """
    if not foreground or not droplets:
        return droplets
    h, w = foreground[0].shape
    out = []
    for inst in droplets:
        if min(inst.x0, inst.y0) > 0 and inst.x1 < w and inst.y1 < h:  # off the border already
            out.append(inst)
            continue
        box = (inst.y0, inst.y1, inst.x0, inst.x1)
        level = foreground_level(2.0 * (inst.radius or np.sqrt(inst.area / np.pi)), len(foreground))
        fine = _crop_at_full_size(foreground[max(0, level - 2)], box, (h, w))
        off_line = _off_the_border_line(inst.mask, fine, box, (h, w), 2**level)
        if off_line is None:
            out.append(inst)
            continue
        mask = inst.mask & off_line
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            out.append(inst)
            continue
        crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        out.append(replace(inst, x0=inst.x0 + int(xs.min()), y0=inst.y0 + int(ys.min()), mask=crop))
    return out


def has_small_droplets(finest: list[Instance]) -> bool:
    """Whether the full-size level found a population of confident droplets under ``_SMALL`` px."""
    scores = [inst.score for inst in finest if 2.0 * (inst.radius or np.sqrt(inst.area / np.pi)) < _SMALL]
    return len(scores) >= _FINER_COUNT and float(np.median(scores)) >= _FINER_MEDIAN


def _twice_size_level(norm: np.ndarray, loaded, check: Check | None) -> list[Instance]:
    """The droplets under ``_FINER_KEEP`` px found on the picture enlarged twice, at full size."""
    h, w = norm.shape
    twice = cv2.resize(norm, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
    fg, _, decoded = _level_droplets(loaded, twice, (0.0, 2.0 * _FINER_KEEP), check, mirrored=False)
    return _at_full_size(fg, decoded, (h, w))


def _level_droplets(
    loaded,
    level: np.ndarray,
    keep: tuple[float, float],
    check: Check | None,
    coarsest: bool = False,
    mirrored: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, np.ndarray, float]]]:
    """One pyramid level's foreground and centerness maps and its droplets (``_decode``'s), seen
    with the level mirrored ``_REFLECTED`` pixels beyond its border (the ``coarsest`` level, which
    keeps droplets of every size above its range, by its own shorter side); as it is where not
    ``mirrored`` (the finest levels, see ``_MIRRORED_FROM``).

    A droplet the border cuts near its centre shows the network half a disk, or a cap, which it
    does not take for a droplet; mirrored, the cap is whole again (a half disk a disk, a smaller cap
    a lens) and the network finds it. Only its part inside the picture is kept, which is the cut
    droplet exactly, and the mirror images of droplets near the border lie wholly outside and go.
    The droplets such a border droplet carries are then seen inside it (generated large droplets
    carrying beads: the beads of droplets no detector found were reported as droplets). What
    reaches through the margin to the mirrored picture's own border is not seen whole even so (the
    bright field above a dark band, mirrored, is one vast blob) and goes."""
    h, w = level.shape
    # The coarsest level keeps droplets of any size and is small (under 96 px a side): all of it.
    pad = min(h, w) - 1 if coarsest else min(_REFLECTED, h - 1, w - 1)
    if not mirrored and not coarsest:
        pad = 0
    canvas = cv2.copyMakeBorder(level, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    fg, cen = net_maps(loaded, canvas, check)
    decoded = []
    for x0, y0, mask, score in _decode(fg, cen, keep, check):
        if pad and (min(x0, y0) == 0 or x0 + mask.shape[1] == fg.shape[1] or y0 + mask.shape[0] == fg.shape[0]):
            continue  # reaches through the mirrored margin: larger than the level can show whole
        if not pad:
            decoded.append((x0, y0, mask, score))
            continue
        # The crop's part inside the picture, in the level's own pixels, with a line more each side
        # (where the part ends a pixel short of the border, see ``_onto_the_border``).
        ya, xa = max(y0 - 1, pad), max(x0 - 1, pad)
        yb, xb = min(y0 + mask.shape[0] + 1, pad + h), min(x0 + mask.shape[1] + 1, pad + w)
        if ya >= yb or xa >= xb:
            continue
        part = np.zeros((yb - ya, xb - xa), bool)
        sy, sx = slice(max(ya, y0), min(yb, y0 + mask.shape[0])), slice(max(xa, x0), min(xb, x0 + mask.shape[1]))
        part[sy.start - ya : sy.stop - ya, sx.start - xa : sx.stop - xa] = mask[
            sy.start - y0 : sy.stop - y0, sx.start - x0 : sx.stop - x0
        ]
        part = _onto_the_border(part, fg[ya:yb, xa:xb], (ya - pad, xa - pad), (h, w))
        ys, xs = np.nonzero(part)
        if ys.size:
            part = part[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            decoded.append((xa - pad + int(xs.min()), ya - pad + int(ys.min()), part, score))
    inside = (slice(pad, pad + h), slice(pad, pad + w))
    return np.ascontiguousarray(fg[inside]), np.ascontiguousarray(cen[inside]), decoded


def _onto_the_border(part: np.ndarray, fg: np.ndarray, corner: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """A droplet's part inside the level (a crop at ``corner`` (y0, x0) of a level of ``shape``),
    carried onto the level's border line where it reaches the line next to it and the foreground
    ``fg`` (the same crop) is there. A droplet the border cuts near its rim meets its mirror image
    on the border line itself, and the pixels of that contact line can go to the mirror image:
    the droplet would then end a pixel short of the border and pass for one it does not cut."""
    (y0, x0), (h, w) = corner, shape
    out = part.copy()
    ph, pw = part.shape
    if y0 == 0 and ph > 1:
        out[0] |= part[1] & (fg[0] > 0.5)
    if y0 + ph == h and ph > 1:
        out[-1] |= part[-2] & (fg[-1] > 0.5)
    if x0 == 0 and pw > 1:
        out[:, 0] |= part[:, 1] & (fg[:, 0] > 0.5)
    if x0 + pw == w and pw > 1:
        out[:, -1] |= part[:, -2] & (fg[:, -1] > 0.5)
    return out


def _at_full_size(
    fg: np.ndarray, decoded: list[tuple[int, int, np.ndarray, float]], shape: tuple[int, int]
) -> list[Instance]:
    """A level's decoded droplets (see ``_decode``) as instances of the full-size picture ``shape``:
    those of a level of another size through ``_full_size``."""
    h, w = shape
    if fg.shape == (h, w):
        found = (_instance(x0, y0, mask, score) for x0, y0, mask, score in decoded)
        return [inst for inst in found if inst is not None]
    taken = np.zeros(fg.shape, np.int32)  # which droplet owns each level pixel
    for idx, (x0, y0, mask, _) in enumerate(decoded, start=1):
        taken[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]][mask] = idx
    scale = (w / fg.shape[1], h / fg.shape[0])
    out = []
    for idx, (x0, y0, mask, score) in enumerate(decoded, start=1):
        inst = _instance(*_full_size(fg, taken, idx, (x0, y0, mask.shape), scale, shape), score)
        if inst is not None:
            out.append(inst)
    return out


def _instance(x0: int, y0: int, mask: np.ndarray, score: float) -> Instance | None:
    """An instance with centre and radius set, or None for an empty mask."""
    area = int(np.count_nonzero(mask))
    if not area:
        return None
    ys, xs = np.nonzero(mask)
    inst = Instance(x0=int(x0), y0=int(y0), mask=mask, score=score, source="detector")
    inst.center = (float(xs.mean() + x0), float(ys.mean() + y0))
    inst.radius = float(np.sqrt(area / np.pi))
    return inst


def _tiled(inst: Instance, finer: list[Instance]) -> bool:
    """Whether droplets at most 1/2.5 of ``inst``'s diameter, found at finer levels, cover half of it:
    then it is a patch of droplets (a packed monolayer seen from afar), not one droplet."""
    limit = 2.0 * inst.radius / 2.5
    canvas = np.zeros(inst.mask.shape, bool)
    count = 0
    for f in finer:
        if 2.0 * f.radius > limit or f.x1 <= inst.x0 or f.x0 >= inst.x1 or f.y1 <= inst.y0 or f.y0 >= inst.y1:
            continue
        ya, xa = max(f.y0, inst.y0), max(f.x0, inst.x0)
        yb, xb = min(f.y1, inst.y1), min(f.x1, inst.x1)
        canvas[ya - inst.y0 : yb - inst.y0, xa - inst.x0 : xb - inst.x0] |= f.mask[
            ya - f.y0 : yb - f.y0, xa - f.x0 : xb - f.x0
        ]
        count += 1
    return count >= 3 and np.count_nonzero(canvas & inst.mask) >= 0.5 * inst.area


def _judge_levels(found: list[list[Instance]], shape: tuple[int, int]) -> list[Instance]:
    """The droplets kept from every level's candidates, judged coarse to fine.

    A droplet is judged at the level where its size is one the network knows. Inside a droplet
    found at a coarser level, a finer level sees only its interior's texture, magnified: what it
    finds there (mostly covered by a droplet 2.5 times its size) is dropped, unless the model is
    sure of it (score ``_CONFIDENT``). What it finds mostly inside a droplet 1.5 to 2.5 times its
    size (one of at least twice its area, so not the same droplet seen at two levels) must be round
    (``_ROUND``), as a droplet seen through another is: beads or cells inside a large droplet cut
    its foreground into ragged pieces, which a finer level, seeing them at a size it knows, takes
    for droplets 0.8-0.9 sure (generated large droplets with contents, seeds 15 and 51: a ragged
    piece of a droplet the border cuts was reported). A smaller one is too coarsely pixelled to be
    judged round, and the score rule takes it. And when finer droplets tile the coarse one (a
    packed monolayer seen at a coarse level is one bright patch), the patch goes and its droplets
    stay."""
    owner = np.zeros(shape, np.float32)  # diameter of the coarser droplet covering each pixel
    out: list[Instance] = []
    for k in reversed(range(len(found))):
        finer = [f for level in found[:k] for f in level]
        kept = []
        for inst in found[k]:
            diameter = 2.0 * inst.radius
            under = owner[inst.y0 : inst.y1, inst.x0 : inst.x1][inst.mask]
            inside = np.count_nonzero(under >= 2.5 * diameter) > 0.5 * inst.area
            if inside and inst.score < _CONFIDENT:
                continue
            # Only what is not already inside a droplet 2.5 times its size, and only then the hull.
            within = not inside and np.count_nonzero(under >= 1.5 * diameter) > 0.5 * inst.area
            if within and _convexity(inst.mask) < _ROUND:
                continue
            if k and _tiled(inst, finer):
                continue
            kept.append(inst)
        for inst in kept:
            view = owner[inst.y0 : inst.y1, inst.x0 : inst.x1]
            view[inst.mask] = np.maximum(view[inst.mask], 2.0 * inst.radius)
        out.extend(kept)
    return out


def foreground_level(diameter: float, levels: int) -> int:
    """The pyramid level at which the model judges a droplet of ``diameter`` px (the one that
    keeps its size, see ``_KEEP``)."""
    if diameter < 2 * _KEEP[0]:
        return 0
    return int(min(levels - 1, np.floor(np.log2(diameter / _KEEP[0]))))
