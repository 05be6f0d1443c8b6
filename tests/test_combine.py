"""How the combined detector settles the droplets both detectors found: the outlines that lie on
image edges win, whichever detector drew them."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

import sam_droplet as sd
from sam_droplet.engine.detect.combine import combine_detections, seen_through_confirmed
from sam_droplet.engine.instances import Instance
from sam_droplet.settings import EngineSettings
from sam_droplet.tools import synthetic
from sam_droplet.tools.evaluate import match_instances

SHAPE = (200, 300)


def _instance(mask: np.ndarray) -> Instance:
    ys, xs = np.nonzero(mask)
    y0, x0 = ys.min(), xs.min()
    return Instance(x0=int(x0), y0=int(y0), mask=mask[y0 : ys.max() + 1, x0 : xs.max() + 1].copy())


def _ellipse(cx: int, cy: int, ax: int, ay: int) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    cv2.ellipse(mask, (cx, cy), (ax, ay), 0, 0, 360, 1, -1)
    return mask.astype(bool)


def _picture(*masks: np.ndarray) -> np.ndarray:
    """Bright-field droplets: a dark rim around a slightly darker interior, with a little noise."""
    img = np.full(SHAPE, 200.0)
    for mask in masks:
        img[mask] = 170.0
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, contours, -1, 60.0, 3)
    img = cv2.GaussianBlur(img, (0, 0), 1.0) + np.random.default_rng(0).normal(0, 3, SHAPE)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_a_droplet_cut_in_two_is_replaced_by_the_whole_outline():
    drop = _ellipse(150, 100, 80, 40)
    gray = _picture(drop)
    left, right = drop.copy(), drop.copy()
    left[:, 150:] = False
    right[:, :150] = False
    out = combine_detections([_instance(left), _instance(right)], [_instance(drop)], gray)
    assert len(out) == 1 and out[0].area == int(drop.sum())


def test_where_both_outline_the_droplet_the_classical_outline_stays():
    drop = _ellipse(150, 100, 40, 40)
    gray = _picture(drop)
    classical, model = _instance(drop), _instance(_ellipse(150, 100, 38, 38))
    out = combine_detections([classical], [model], gray)
    assert out == [classical]


def test_on_a_tie_the_outermost_outline_is_the_droplets():
    """A bright bubble with a thick bright rim has two edges, the rim's outer and inner sides. The
    classical fit may follow the inner one; the model's outline, on the outer one, encloses it and
    is as much on edges: it wins (and loses when it is the inner one)."""
    outer, inner = _ellipse(150, 100, 50, 50), _ellipse(150, 100, 38, 38)
    img = np.full(SHAPE, 20.0)
    img[outer] = 230.0
    img[inner] = 40.0
    gray = np.clip(cv2.GaussianBlur(img, (0, 0), 1.0) + np.random.default_rng(0).normal(0, 3, SHAPE), 0, 255)
    gray = gray.astype(np.uint8)
    classical, model = _instance(inner), _instance(outer)
    assert combine_detections([classical], [model], gray) == [model]
    classical, model = _instance(outer), _instance(inner)
    assert combine_detections([classical], [model], gray) == [classical]


def test_on_a_tie_a_classical_outline_a_pixel_outside_the_models_rim_is_still_enclosed():
    """The classical outline of one end of an elongated bright bubble runs a pixel outside the
    model's outline along the rim (the two set it on either side of the rim's edge): that band is
    an eighth of the piece's pixels, yet the piece lies inside the model's bubble, which wins."""
    bubble = _ellipse(150, 100, 30, 12)
    gray = _bright_bubbles(bubble)
    piece = cv2.dilate(bubble.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))) > 0
    piece[:, 135:] = False
    assert np.count_nonzero(piece & ~bubble) > 0.1 * np.count_nonzero(piece)
    classical, model = _instance(piece), _instance(bubble)
    assert combine_detections([classical], [model], gray) == [model]


def test_two_touching_droplets_are_not_merged_into_the_model_outline():
    a, b = _ellipse(110, 100, 40, 40), _ellipse(190, 100, 40, 40)
    gray = _picture(a, b)
    b &= ~a
    merged = a | b
    out = combine_detections([_instance(a), _instance(b)], [_instance(merged)], gray)
    assert len(out) == 2


def _bright_bubbles(*masks: np.ndarray) -> np.ndarray:
    """Bubbles seen as bright rims 3 px thick on a dark background, blurred, a little noise."""
    img = np.full(SHAPE, 20.0)
    for mask in masks:
        img[mask] = 230.0
        img[cv2.erode(mask.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0] = 40.0
    img = cv2.GaussianBlur(img, (0, 0), 1.2) + np.random.default_rng(0).normal(0, 3, SHAPE)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_a_small_bubble_cut_where_its_interior_is_is_one_bubble():
    """In a small elongated bubble every line across it runs within a few pixels of its rim, so
    the two halves' outlines lie on edges as much as the whole one's. Where the halves meet, the
    picture looks like the bubble's interior, not a rim: one bubble cut in two. Two small bubbles
    touching meet along their rims and stay two."""
    drop = _ellipse(150, 100, 14, 8)
    left, right = drop.copy(), drop.copy()
    left[:, 150:] = False
    right[:, :150] = False
    out = combine_detections([_instance(left), _instance(right)], [_instance(drop)], _bright_bubbles(drop))
    assert len(out) == 1 and out[0].area == int(drop.sum())

    a, b = _ellipse(142, 100, 8, 8), _ellipse(158, 100, 8, 8)
    b &= ~a
    out = combine_detections([_instance(a), _instance(b)], [_instance(a | b)], _bright_bubbles(a, b))
    assert len(out) == 2


def _faint_bubble_with_highlights() -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """A bubble with a faint rim and two bright crescent highlights inside it (strong edges)."""
    bubble = _ellipse(150, 100, 40, 40)
    img = np.full(SHAPE, 30.0)
    img[bubble] = 45.0
    crescents = []
    for cx in (128, 172):  # left and right, each between the rim and a disk 14 px inside it
        crescent = bubble & _ellipse(cx, 100, 14, 24) & ~_ellipse(150, 100, 26, 26)
        img[crescent] = 220.0
        crescents.append(crescent)
    gray = cv2.GaussianBlur(img, (0, 0), 1.0) + np.random.default_rng(0).normal(0, 2, SHAPE)
    return np.clip(gray, 0, 255).astype(np.uint8), bubble, crescents


def test_highlights_without_a_centre_of_their_own_are_pieces_of_the_model_droplet():
    """A faint bubble's bright highlights are outlined by the classical detector on strong edges,
    which the model's outline along the faint rim cannot match. The model sees one centre, the
    bubble's: the highlights have none of their own, so the bubble is one droplet, whether the
    classical detector outlined two highlights or one. Two droplets
    inside a larger model outline, each with its own centre, stay two."""
    gray, bubble, crescents = _faint_bubble_with_highlights()
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    centerness = [np.clip(1 - np.hypot(xx - 150, yy - 100) / 40, 0, 1).astype(np.float32)]
    foreground = [np.where(bubble, 0.95, 0.05).astype(np.float32)]
    pieces, model = [_instance(c) for c in crescents], _instance(bubble)
    # The edges alone keep the highlights: without the centerness maps they stay.
    assert combine_detections(pieces, [model], gray, foreground) == pieces
    assert combine_detections(pieces, [model], gray, foreground, centerness) == [model]
    # One highlight alone is a piece too.
    assert pieces[0] in combine_detections(pieces[:1], [model], gray, foreground)
    assert combine_detections(pieces[:1], [model], gray, foreground, centerness) == [model]

    # The same pieces, each with a centre of its own (two droplets seen inside a larger one).
    centres = [np.argwhere(c).mean(axis=0) for c in crescents]
    own = np.maximum.reduce([np.clip(1 - np.hypot(xx - x, yy - y) / 8, 0, 1) for y, x in centres])
    assert combine_detections(pieces, [model], gray, foreground, [own.astype(np.float32)]) == pieces


def test_a_cell_the_model_cut_out_of_a_droplets_rim_does_not_cost_the_droplet_its_round_outline(monkeypatch):
    """A faint droplet carrying a bright cell at its rim (fluorescence overlaid on bright field):
    the model outlines the cell apart and cuts a bay into the droplet around it; the classical
    outline runs round along the rim. The cell's outline lies on strong edges of its own, which make
    the model's pair look better on edges; judged without what the droplet holds, the model's bitten
    outline is no better, so the classical outline stays, and the cell with it (overlap resolution
    then decides what it is: what the droplet carries, or a droplet seen through it)."""
    drop, cell = _ellipse(150, 100, 40, 40), _ellipse(178, 100, 8, 8)
    img = np.full(SHAPE, 170.0)
    img[drop] = 164.0
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    img[cell] = 255.0
    noise = np.random.default_rng(0).normal(0, 2, SHAPE)
    gray = np.clip(cv2.GaussianBlur(img, (0, 0), 0.8) + noise, 0, 255).astype(np.uint8)
    bay = cv2.dilate(cell.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    classical, bitten, held = _instance(drop), _instance(drop & ~bay), _instance(cell)
    out = combine_detections([classical], [bitten, held], gray)
    assert [id(i) for i in out] == [id(classical), id(held)]
    # What the rule changes: counted with the cell, the model's outlines win on edges.
    monkeypatch.setattr("sam_droplet.engine.detect.combine._held_inside", lambda outer, model: [])
    assert [id(i) for i in combine_detections([classical], [bitten, held], gray)] == [id(bitten), id(held)]


def test_the_model_adds_droplets_only_where_no_classical_droplet_lies():
    a, b = _ellipse(80, 100, 30, 30), _ellipse(220, 100, 30, 30)
    gray = _picture(a, b)
    classical = [_instance(a)]
    beside = _instance(b)
    inside_a = _instance(_ellipse(80, 100, 10, 10))  # a small droplet the model saw in a's interior
    out = combine_detections(classical, [beside, inside_a], gray)
    assert classical[0] in out and beside in out and inside_a not in out


@pytest.mark.parametrize(
    ("kind", "make"),
    [("stretched", synthetic.stretched_emulsion), ("touching_pair", synthetic.touching_pair)],
)
def test_the_default_detector_outlines_looks_the_classical_one_cuts(kind, make):
    """The classical detector alone cuts stretched droplets in two (F1 0.72 on seeds 3-6)."""
    scene = make(seed=3)
    engine = sd.Engine.start(EngineSettings(segmenter="classical"))
    result = sd.segment(scene.image, engine)
    m = match_instances(scene.labels, result.all_labels)
    assert m.f1 >= 0.95, (kind, m.precision, m.recall)


def test_a_classical_droplet_where_the_model_sees_background_goes():
    """Texture or a highlight the classical detector outlined, where the model (at the level it
    judges that size) gives under 0.2 probability of a droplet, is dropped; a droplet the model
    also found, or one it is unsure of, stays."""
    a, b, c = _ellipse(60, 100, 20, 20), _ellipse(150, 100, 20, 20), _ellipse(240, 100, 20, 20)
    gray = _picture(a, b, c)
    foreground = [np.full(SHAPE, 0.05, np.float32)]  # one level: background everywhere ...
    foreground[0][c] = 0.4  # ... but unsure over c
    classical = [_instance(a), _instance(b), _instance(c)]
    model_of_a = _instance(_ellipse(60, 100, 19, 19))
    out = combine_detections(classical, [model_of_a], gray, foreground)
    assert classical[1] not in out and classical[2] in out
    assert classical[0] in out or model_of_a in out
    assert combine_detections(classical, [], gray) == classical  # without the model's maps nothing goes


def test_a_classical_droplet_with_no_centre_in_its_inner_half_goes_even_when_linked():
    """The gap between packed droplets: the classical detector outlines it with an outline that
    spills onto a neighbour, so it overlaps the neighbour's model droplet (and the neighbour's
    centerness reaches into its mask's edge). The model sees no centre in its inner half: it goes.
    A droplet with a centre in its inner half stays."""
    droplet = _ellipse(100, 100, 30, 30)
    gap = _ellipse(136, 100, 14, 14)  # spills 8 px onto the droplet
    gray = _picture(droplet, gap)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    centerness = [np.clip(1 - np.hypot(xx - 100, yy - 100) / 30, 0, 1).astype(np.float32)]
    foreground = [np.where(droplet, 0.95, 0.35).astype(np.float32)]  # the gap: a third foreground
    assert centerness[0][gap].max() > 0.2  # its whole mask would pass; its inner half does not
    kept_droplet, kept_gap = _instance(droplet & ~gap), _instance(gap)
    model_droplet = _instance(_ellipse(100, 100, 29, 29))
    out = combine_detections([kept_droplet, kept_gap], [model_droplet], gray, foreground, centerness)
    assert kept_gap not in out
    assert kept_droplet in out or model_droplet in out
    # Without the centerness maps only the background rule judges, and the gap (linked) stays.
    assert kept_gap in combine_detections([kept_droplet, kept_gap], [model_droplet], gray, foreground)


def test_a_speck_only_the_model_found_needs_a_confident_score():
    """Generated high magnification (seed 4): two specks of correlated noise, found by the model
    alone at scores 0.61-0.62, were counted as droplets (F1 0.667); the model-only floor drops them."""
    import sam_droplet as sd
    from sam_droplet.tools import synthetic
    from sam_droplet.tools.evaluate import match_instances

    scene = synthetic.EVALUATION_SETS["high_magnification"](seed=4)
    assert match_instances(scene.labels, sd.segment(scene.image).labels).f1 == 1.0


def test_a_population_of_small_droplets_vouches_only_for_small_unsure_ones():
    """A confident population of small droplets lifts the floor a droplet only the model found
    needs, for the small ones, which sit at its edge; a large unsure outline still needs it.
    Generated emulsion micrograph, seed 43: a 443 px piece of the dark shadow at 0.68 was kept as
    a droplet (with the droplets seen inside it lost) because the picture's small droplets lifted
    the floor for every size."""
    small = [replace(_instance(_ellipse(20 + 15 * k, 20, 3, 3)), score=0.9) for k in range(12)]
    unsure_small = replace(_instance(_ellipse(100, 60, 4, 4)), score=0.65)
    unsure_large = replace(_instance(_ellipse(200, 130, 45, 45)), score=0.68)
    kept = combine_detections([], [*small, unsure_small, unsure_large], np.full(SHAPE, 128, np.uint8))
    assert any(k is unsure_small for k in kept) and all(any(k is s for k in kept) for s in small)
    assert not any(k is unsure_large for k in kept)
    sure_large = replace(unsure_large, score=0.8)
    assert any(k is sure_large for k in combine_detections([], [*small, sure_large], np.full(SHAPE, 128, np.uint8)))


def test_an_unsure_droplet_only_the_model_found_needs_a_picture_that_shows_droplets_clearly():
    """Generated noise-only pictures, noise correlated over 3-6 px: blobs the model alone scored
    0.75-0.82 were reported as droplets (36 on six pictures correlated over 6 px). Such a droplet
    stays in a picture that shows ten droplets clearly, of any size: model droplets of 0.85 or more,
    or classical outlines whose rim stands out of the noise; alone, or among faint outlines, it
    goes. One the model is sure of (0.85) stands alone."""
    gray = np.full(SHAPE, 128, np.uint8)
    unsure = replace(_instance(_ellipse(150, 100, 20, 20)), score=0.8)
    assert combine_detections([], [unsure], gray) == []
    alone = replace(unsure, score=0.9)
    assert combine_detections([], [alone], gray) == [alone]
    spots = [_ellipse(30 + 60 * k, y, 7, 7) for k in range(5) for y in (20, 180)]
    sure = [replace(_instance(m), score=0.9) for m in spots]
    assert any(k is unsure for k in combine_detections([], [*sure, unsure], gray))
    assert not any(k is unsure for k in combine_detections([], [*sure[:9], unsure], gray))

    def classical(contrast: float) -> list[Instance]:
        return [replace(_instance(m), contrast=contrast) for m in spots]

    assert any(k is unsure for k in combine_detections(classical(3.0), [unsure], gray))
    assert not any(k is unsure for k in combine_detections(classical(1.2), [unsure], gray))


def test_in_a_picture_that_shows_few_droplets_clearly_a_rim_barely_out_of_the_noise_needs_backing():
    """Generated noise-only pictures correlated over 6 px: after the model's unsure blobs went, 0-3
    classical outlines a picture were left whose rims stood just out of the noise (contrast 1.5-1.9):
    texture 200-330 px across, bright specks of 15-20 px. In a picture that shows fewer than ten
    droplets clearly such an outline needs a droplet the model is sure of; among ten clear ones it
    is one more of them."""
    spots = [_ellipse(30 + 60 * k, y, 9, 9) for k in range(5) for y in (25, 175)]
    doubtful = _ellipse(150, 100, 9, 9)
    gray = _picture(*spots, doubtful)
    foreground = [np.full(SHAPE, 0.9, np.float32)]
    clear = [replace(_instance(m), contrast=3.0) for m in spots]
    confirmed = [replace(_instance(m), score=0.9) for m in spots]
    outline = replace(_instance(doubtful), contrast=1.7)

    def kept(out: list[Instance]) -> bool:
        return any(inst.mask.sum() > 100 and inst.x0 <= 150 < inst.x1 and inst.y0 <= 100 < inst.y1 for inst in out)

    assert not kept(combine_detections([outline], [], gray, foreground))
    assert kept(combine_detections([outline], [replace(_instance(doubtful), score=0.9)], gray, foreground))
    assert kept(combine_detections([*clear, outline], confirmed, gray, foreground))
    assert kept(combine_detections([replace(outline, contrast=2.5)], [], gray, foreground))


def test_a_size_of_classical_droplets_the_model_confirms_none_of_is_noise():
    """Specks of correlated noise are a population only the classical detector sees: of twelve 8 px
    classical droplets the model found none, though it sees no clear background there (0.6). They
    go. When the model confirms half of such a population, the others stay (a detector misses
    some real droplets)."""
    specks = [_ellipse(20 + 22 * k, 100, 4, 4) for k in range(12)]
    gray = _picture(*specks)
    foreground = [np.full(SHAPE, 0.6, np.float32)]
    elsewhere = _instance(_ellipse(150, 30, 20, 20))  # the model found a droplet, none of the specks
    out = combine_detections([_instance(m) for m in specks], [elsewhere], gray, foreground)
    assert out == [elsewhere]
    confirmed = [_instance(m) for m in specks[:6]]
    out = combine_detections([_instance(m) for m in specks], confirmed, gray, foreground)
    assert len(out) == 12


def test_a_faint_droplet_the_model_outlined_alike_stays_where_its_size_is_clearly_populated():
    """emulsion_gt IMG_1063: out-of-focus droplets 20 px across, rims just under the faint floor
    (contrast 1.3-1.5) and the model's outlines of them alike but unsure (0.64-0.75), were dropped
    as noise though both detectors drew them. Where the picture's clear droplets hold ten of that
    size, such a droplet stays; alone (a speck of noise on a noise-only picture) or drawn
    differently by the model, it goes."""
    clear = [_ellipse(30 + 60 * k, y, 9, 9) for k in range(5) for y in (35, 165)]
    faint = _ellipse(150, 100, 9, 9)
    gray = _picture(*clear, faint)
    foreground = [np.full(SHAPE, 0.9, np.float32)]

    def classical(with_clear: bool) -> list[Instance]:
        out = [replace(_instance(m), contrast=3.0) for m in clear] if with_clear else []
        return [*out, replace(_instance(faint), contrast=1.3)]

    def model(twin: np.ndarray) -> list[Instance]:
        confirmed = [replace(_instance(m), score=0.9) for m in clear[:5]]
        return [*confirmed, replace(_instance(twin), score=0.7)]

    def kept_faint(out: list[Instance]) -> bool:
        return any(inst.mask.sum() > 100 and inst.x0 <= 150 < inst.x1 and inst.y0 <= 100 < inst.y1 for inst in out)

    alike, unlike = _ellipse(151, 100, 9, 9), _ellipse(155, 100, 9, 6)
    assert kept_faint(combine_detections(classical(True), model(alike), gray, foreground))
    assert not kept_faint(combine_detections(classical(False), model(alike)[-1:], gray, foreground))
    assert not kept_faint(combine_detections(classical(True), model(unlike), gray, foreground))


def test_a_droplet_the_model_sees_over_a_larger_ones_rim_is_not_covered_by_that_droplet():
    """emulsion_gt IMG_538: a droplet 44 px across seen over the rim of one 197 px across. Both
    detectors outlined the large one alike; the model also found the small one (0.85), sharing a
    contact line with its own large outline, but a quarter of it lay under the classical outline
    of the large one, and a droplet only the model found was added only where at most a fifth of
    it lies under classical droplets. The classical twin of another model droplet does not count:
    the model, which saw both, settled where they meet."""
    large, small = _ellipse(120, 100, 50, 50), _ellipse(172, 100, 14, 14)
    gray = _picture(large, small)
    foreground = [np.full(SHAPE, 0.9, np.float32)]
    classical = [replace(_instance(large), contrast=4.0)]
    model_small = replace(_instance(small), score=0.85)
    model_large = replace(_instance(large & ~small), score=0.95)
    assert np.count_nonzero(large & small) > 0.25 * np.count_nonzero(small)
    out = combine_detections(classical, [model_large, model_small], gray, foreground)
    assert model_small in out
    # Where the model did not outline the large droplet alike, the classical outline covers it.
    model_other = replace(_instance(_ellipse(120, 100, 30, 30)), score=0.95)
    assert model_small not in combine_detections(classical, [model_other, model_small], gray, foreground)


def test_a_droplet_is_seen_through_a_large_one_only_where_both_detectors_found_that_one():
    """The model's droplets inside a large one stay when the large one is 2.5 times their diameter
    and the classical detector outlined it alike (emulsion_gt IMG_160: droplets seen through a dark
    out-of-focus droplet were all dropped); a blob only the model saw is no droplet to see through."""
    large = _instance(_ellipse(150, 100, 90, 90))
    small, half = _instance(_ellipse(120, 100, 20, 20)), _instance(_ellipse(170, 100, 40, 40))
    confirmed = seen_through_confirmed([replace(large, mask=_ellipse(150, 100, 88, 88)[10:191, 60:241])])
    assert confirmed(large, small) and not confirmed(large, half)
    assert not seen_through_confirmed([small])(large, small)
    assert not seen_through_confirmed([])(large, small)


def test_a_blob_the_model_alone_saw_over_a_field_of_droplets_does_not_swallow_them():
    """Generated condensation, seed 84 (fresh): the model saw a blob 458 px across over hundreds of
    droplets 15-34 px across. Kept as a droplet to see them through, it took them for its contents
    and the picture lost every droplet; the classical detector found no such droplet, so it is not one."""
    scene = synthetic.condensation(seed=84)
    result = sd.segment(scene.image, sd.Engine.start(EngineSettings(segmenter="classical")))
    m = match_instances(scene.labels, result.labels)
    assert m.f1 >= 0.98, (m.f1, m.tp, m.fp, m.fn)
