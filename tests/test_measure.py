"""Measurements on analytic shapes and original intensities."""

import math

import numpy as np
import pytest

from sam_droplet.engine.instances import Instance
from sam_droplet.engine.measure import feret_diameters, measure_droplets, summarize


def disk(radius: float, cx: float = 0.37, cy: float = 0.21) -> np.ndarray:
    size = int(2 * radius + 6)
    yy, xx = np.mgrid[0:size, 0:size]
    c = size / 2
    return (xx - c - cx) ** 2 + (yy - c - cy) ** 2 < radius**2


@pytest.mark.parametrize("radius", [4.5, 8, 15, 40, 120])
def test_analytic_disks(radius):
    mask = disk(radius)
    (d,) = measure_droplets([Instance(20, 30, mask)], np.ones((400, 400), np.float32))
    assert d.equivalent_diameter_px == pytest.approx(2 * radius, rel=0.02)
    assert d.circularity > 0.9
    assert d.max_feret_px == pytest.approx(2 * radius, abs=1.0)
    assert d.min_feret_px == pytest.approx(2 * radius, abs=1.0)
    assert d.aspect_ratio == pytest.approx(1.0, abs=0.08)
    assert d.perimeter_px == pytest.approx(2 * math.pi * radius, rel=0.04)


def test_ellipse_and_rectangle_shapes():
    yy, xx = np.mgrid[0:60, 0:100]
    ellipse = ((xx - 50) / 40) ** 2 + ((yy - 30) / 20) ** 2 < 1
    (d,) = measure_droplets([Instance(0, 0, ellipse)], np.ones((60, 100)))
    assert d.aspect_ratio == pytest.approx(2.0, rel=0.05)
    assert d.max_feret_px == pytest.approx(80, rel=0.03)
    assert d.min_feret_px == pytest.approx(40, rel=0.05)
    assert d.circularity < 0.95
    max_f, min_f = feret_diameters(np.ones((10, 20), bool))
    assert min_f == pytest.approx(10.0) and max_f == pytest.approx(math.hypot(10, 20), abs=1.0)


def test_intensities_are_the_original_values():
    gray = np.zeros((100, 100), np.float32)
    gray[40:60, 40:60] = 40000.0  # a 16-bit value, never rescaled
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    (d,) = measure_droplets([Instance(40, 40, mask)], gray)
    assert d.intensity_mean == 40000.0 and d.intensity_std == 0.0
    assert d.intensity_min == d.intensity_max == d.intensity_median == 40000.0


def test_edges_and_ids_in_reading_order():
    gray = np.ones((100, 100))
    a = Instance(0, 50, disk(5)).tight()
    a.x0 = 0  # on the left border
    b = Instance(60, 10, disk(5))
    c = Instance(20, 10, disk(5))
    droplets = measure_droplets([a, b, c], gray)
    by_x = {round(d.centroid[0]): d for d in droplets}
    assert [d.id for d in droplets] == [1, 2, 3]
    assert droplets[0].centroid[0] < droplets[1].centroid[0]  # same row band: left to right
    touching = [d for d in droplets if d.touches_edge]
    assert len(touching) == 1 and touching[0].min_edge_distance_px == 0
    assert min(by_x) < 10


def test_calibration_and_volume():
    (d,) = measure_droplets([Instance(10, 10, disk(20))], np.ones((80, 80)))
    cal = d.calibrated(2.0)
    assert cal["equivalent_diameter_um"] == pytest.approx(2 * d.equivalent_diameter_px)
    assert cal["area_um2"] == pytest.approx(4 * d.area_px)
    assert cal["volume_pl"] == pytest.approx(math.pi / 6 * cal["equivalent_diameter_um"] ** 3 / 1000)


def test_summary_statistics():
    gray = np.ones((300, 300))
    droplets = measure_droplets([Instance(10 + 60 * i, 100, disk(8 + 2 * i)) for i in range(4)], gray)
    s = summarize(droplets, gray.shape, um_per_px=0.5, removed_counts={"edge_touching": 2})
    diam = np.array([d.equivalent_diameter_px for d in droplets])
    assert s["count"] == 4
    assert s["diameter_px"]["mean"] == pytest.approx(diam.mean())
    assert s["diameter_px"]["cv"] == pytest.approx(diam.std(ddof=1) / diam.mean())
    assert s["diameter_um"]["median"] == pytest.approx(np.median(diam) * 0.5)
    assert s["histogram"]["unit"] == "um" and sum(s["histogram"]["counts"]) == 4
    assert s["removed"] == {"edge_touching": 2}
    empty = summarize([], gray.shape)
    assert empty["count"] == 0 and empty["diameter_px"]["mean"] is None
