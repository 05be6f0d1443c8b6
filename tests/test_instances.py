"""The rules that make every droplet count once."""

import cv2
import numpy as np

from sam_droplet.engine.instances import Instance, instances_from_labels, paint_labels, resolve_overlaps


def disk_instance(cx, cy, r, score=0.9, with_geometry=True):
    x0, y0 = int(cx - r - 1), int(cy - r - 1)
    size = int(2 * r + 3)
    yy, xx = np.mgrid[y0 : y0 + size, x0 : x0 + size]
    mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    inst = Instance(x0, y0, mask, score=score)
    if with_geometry:
        inst.center, inst.radius = (cx, cy), r
    return inst


def test_duplicates_keep_the_better_score():
    a = disk_instance(50, 50, 20, score=0.6)
    b = disk_instance(51, 50, 20, score=0.9)
    kept, report = resolve_overlaps([a, b])
    assert report.duplicate == 1 and len(kept) == 1 and kept[0].score == 0.9


def test_nested_object_inside_a_droplet_goes():
    droplet = disk_instance(60, 60, 30)
    cell = disk_instance(55, 60, 6, score=0.99)
    kept, report = resolve_overlaps([droplet, cell])
    assert report.nested == 1 and kept == [droplet]


def test_nested_droplets_stay_only_where_seen_through_says_so():
    """With ``seen_through`` (the droplet model's droplets before the detectors are combined), a
    nested droplet stays only where it holds for its container."""
    container = disk_instance(100, 100, 80)
    seen_through = disk_instance(70, 100, 20)  # a quarter of its diameter
    inner_outline = disk_instance(130, 100, 40)  # half its diameter
    kept, report = resolve_overlaps(
        [container, seen_through, inner_outline],
        keep_nested=True,
        seen_through=lambda large, small: large.area >= 2.5**2 * small.area,
    )
    assert report.nested == 1 and seen_through in kept and inner_outline not in kept and container in kept
    kept, _ = resolve_overlaps([disk_instance(100, 100, 80), disk_instance(130, 100, 40)], keep_nested=True)
    assert len(kept) == 2  # without it, every nested droplet stays


def test_cluster_of_droplets_goes():
    parts = [disk_instance(40 + 22 * i, 50, 10) for i in range(3)]
    union = paint_labels(parts, (100, 120)) > 0
    hugging = cv2.dilate(union.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # SAM's "all three" mask
    blob = Instance(0, 0, hugging, score=0.99).tight()
    kept, report = resolve_overlaps([*parts, blob])
    assert report.cluster == 1 and len(kept) == 3 and blob not in kept


def test_a_piece_of_a_droplet_and_the_beads_it_carries_are_no_cluster():
    """A detector's piece of a large droplet covering 47 % of it, with the beads the droplet carries
    adding the rest of half: no group of droplets, so the droplet stays (generated large droplets
    with contents, seed 76: it went as a cluster, and its beads were reported as droplets)."""
    droplet = disk_instance(100, 100, 60)
    piece = disk_instance(100, 85, 60 * np.sqrt(0.47))
    beads = [disk_instance(100 + dx, 140, 6, score=0.95) for dx in (-30, -15, 0, 15, 30)]
    assert (piece.area + sum(b.area for b in beads)) >= 0.5 * droplet.area
    kept, report = resolve_overlaps([droplet, piece, *beads])
    assert report.cluster == 0 and kept == [droplet]


def test_gap_between_packed_droplets_goes():
    r = 20.0
    d = 2 * r / np.sqrt(3)  # three mutually touching droplets around (100, 100)
    ring = [
        disk_instance(100 + d * np.cos(a), 100 + d * np.sin(a), r) for a in np.linspace(0, 2 * np.pi, 3, endpoint=False)
    ]
    gap = disk_instance(100, 100, 0.35 * r)  # the interstice, outlined a little into the neighbours' rims
    kept, report = resolve_overlaps([*ring, gap])
    assert report.gap == 1 and len(kept) == 3


def test_touching_droplets_split_at_the_contact_line():
    a = disk_instance(50, 50, 20)
    b = disk_instance(86, 50, 20)  # overlap 4 px wide
    kept, _ = resolve_overlaps([a, b])
    labels = paint_labels(kept, (120, 160))
    assert np.all(labels[50, 62:68] == 1) and np.all(labels[50, 69:75] == 2)
    assert abs(kept[0].area - kept[1].area) <= 0.02 * kept[0].area


def test_holes_are_filled_and_labels_round_trip():
    ring = disk_instance(40, 40, 15, with_geometry=False)
    inner = disk_instance(40, 40, 6, with_geometry=False)
    ring.mask[inner.y0 - ring.y0 : inner.y1 - ring.y0, inner.x0 - ring.x0 : inner.x1 - ring.x0] &= ~inner.mask
    kept, _ = resolve_overlaps([ring])
    assert kept[0].area == disk_instance(40, 40, 15).area
    labels = paint_labels(kept, (80, 80))
    (again,) = instances_from_labels(labels)
    assert again.area == kept[0].area and (again.x0, again.y0) == (kept[0].x0, kept[0].y0)
