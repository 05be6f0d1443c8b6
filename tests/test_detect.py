"""Classical detection on generated images with exact ground truth."""

import numpy as np
import pytest

from sam_droplet import synthetic
from sam_droplet.detect import DetectionParams, detect_droplets, normalize_intensity
from sam_droplet.eval import match_instances
from sam_droplet.instances import paint_labels


def score(image: synthetic.SyntheticImage, params: DetectionParams | None = None):
    gray = image.image if image.image.ndim == 2 else image.image.mean(axis=2)
    detection = detect_droplets(gray, params)
    labels = paint_labels(detection.instances, gray.shape)
    return detection, match_instances(image.labels, labels)


def test_packed_brightfield_monolayer(packed):
    detection, m = score(packed)
    assert detection.appearance == "rim"
    assert m.f1 >= 0.95, (m.precision, m.recall)
    assert m.matched_iou.mean() >= 0.85
    assert abs(np.median(m.diameter_rel_error)) <= 0.05


@pytest.mark.parametrize("seed", [1, 2])
def test_sparse_fluorescence(seed):
    image = synthetic.fluorescent_disks(shape=(480, 640), n=60, seed=seed)
    detection, m = score(image)
    assert detection.appearance == "bright"
    assert m.f1 >= 0.95, (m.precision, m.recall)
    assert m.matched_iou.mean() >= 0.9


def test_sparse_polydisperse_brightfield():
    image = synthetic.sparse_emulsion(shape=(480, 640), n=40, seed=4)
    _, m = score(image)
    assert m.f1 >= 0.95, (m.precision, m.recall)


def test_16bit_input_gives_the_same_droplets(packed):
    as16 = packed.image.astype(np.uint16) * 257
    d8 = detect_droplets(packed.image)
    d16 = detect_droplets(as16)
    assert abs(len(d8.instances) - len(d16.instances)) <= 2


def test_appearance_can_be_forced(fluorescent):
    forced = detect_droplets(fluorescent.image, DetectionParams(appearance="bright"))
    assert forced.appearance == "bright"
    with pytest.raises(ValueError):
        detect_droplets(fluorescent.image, DetectionParams(appearance="purple"))


def test_every_pixel_belongs_to_at_most_one_droplet(packed):
    detection = detect_droplets(packed.image)
    coverage = np.zeros(packed.image.shape[:2], dtype=np.int32)
    for inst in detection.instances:
        coverage[inst.y0 : inst.y1, inst.x0 : inst.x1] += inst.mask
    assert coverage.max() == 1
    for inst in detection.instances:
        assert inst.center is not None and inst.radius and 0 <= inst.score <= 1


def test_blank_image_has_no_droplets():
    flat = np.full((200, 300), 120, dtype=np.uint8)
    assert detect_droplets(flat).instances == []
    noise = np.random.default_rng(0).normal(120, 3, (200, 300)).clip(0, 255).astype(np.uint8)
    assert len(detect_droplets(noise).instances) <= 2


def test_normalize_intensity_maps_percentiles_to_unit_range():
    ramp = np.tile(np.arange(1000, dtype=np.uint16), (10, 1))
    norm = normalize_intensity(ramp)
    assert norm.dtype == np.float32 and norm.min() == 0.0 and norm.max() == 1.0
