"""Serialisation: COCO RLE from crops, CSV, label PNG, overlay PNG, COCO JSON."""

import csv
import io
import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from sam_droplet.detect import detect_droplets
from sam_droplet.export import CSV_COLUMNS, encode_rle, label_image, to_coco, to_csv, to_label_png, to_overlay_png
from sam_droplet.instances import Instance
from sam_droplet.measure import measure_droplets


@pytest.mark.parametrize("shape", [(37, 53), (5, 1), (1, 7), (64, 64)])
def test_rle_from_crops_equals_pycocotools_encoding(shape):
    h, w = shape
    rng = np.random.default_rng(h * 1000 + w)
    for _ in range(300):
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        hc, wc = int(rng.integers(1, h - y0 + 1)), int(rng.integers(1, w - x0 + 1))
        crop = rng.random((hc, wc)) < rng.random()
        full = np.zeros((h, w), np.uint8)
        full[y0 : y0 + hc, x0 : x0 + wc] = crop
        rle = encode_rle(Instance(x0, y0, crop), h, w)
        assert rle["size"] == [h, w]
        assert rle["counts"] == coco_mask.encode(np.asfortranarray(full))["counts"].decode()
        decoded = coco_mask.decode({"size": [h, w], "counts": rle["counts"].encode()})
        assert np.array_equal(decoded, full)


@pytest.fixture(scope="module")
def measured(packed):
    return measure_droplets(detect_droplets(packed.image).instances, packed.image.astype(np.float32))


def test_csv_has_units_in_column_names(measured):
    rows = list(csv.DictReader(io.StringIO(to_csv(measured, um_per_px=0.5))))
    assert len(rows) == len(measured)
    assert {"equivalent_diameter_px", "area_px2", "equivalent_diameter_um", "volume_pl"} <= set(rows[0])
    assert float(rows[0]["equivalent_diameter_um"]) == pytest.approx(
        0.5 * float(rows[0]["equivalent_diameter_px"]), rel=1e-4
    )
    plain = to_csv(measured, um_per_px=None).splitlines()[0].split(",")
    assert plain == [name for name, _ in CSV_COLUMNS]


def test_label_png_is_16bit_with_droplet_ids(measured, packed):
    data = to_label_png(measured, packed.image.shape[:2])
    labels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16 and labels.shape == packed.image.shape[:2]
    assert set(np.unique(labels)) - {0} == {d.id for d in measured}
    assert np.array_equal(labels, label_image(measured, labels.shape))
    d = measured[len(measured) // 2]
    assert np.count_nonzero(labels == d.id) == d.area_px


def test_coco_json_loads_in_pycocotools(measured, packed, tmp_path):
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(to_coco(measured, packed.image.shape[:2], "packed.png")))
    coco = COCO(str(path))
    ann_ids = coco.getAnnIds(imgIds=[1])
    assert len(ann_ids) == len(measured)
    first = coco.loadAnns(ann_ids[:1])[0]
    mask = coco.annToMask(first)
    assert mask.sum() == first["area"]


def test_overlay_png(measured, packed):
    rgb = np.repeat(packed.image[:, :, None], 3, axis=2)
    data = to_overlay_png(rgb, measured[:10], measured[10:12])
    overlay = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == rgb.shape
    assert np.any(overlay[:, :, 1] > overlay[:, :, 2] + 60)  # green outlines were drawn
