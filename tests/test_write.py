"""Rendering results: COCO RLE from crops, CSV, label PNG, overlay PNG, COCO JSON, the batch summary."""

import csv
import dataclasses
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

import sam_droplet as sd
from sam_droplet.engine.instances import Instance, encode_rle
from sam_droplet.errors import InvalidImage, InvalidOptions
from sam_droplet.io.write import BATCH_COLUMNS, DROPLET_COLUMNS, FORMATS, batch_row, render, write_batch_csv


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
def result(packed):
    return sd.segment(packed.image, um_per_px=0.5)


def test_csv_has_units_in_column_names(result, packed):
    rows = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert len(rows) == len(result.droplets)
    assert {"equivalent_diameter_px", "area_px2", "equivalent_diameter_um", "volume_pl"} <= set(rows[0])
    assert float(rows[0]["equivalent_diameter_um"]) == pytest.approx(
        0.5 * float(rows[0]["equivalent_diameter_px"]), rel=1e-4
    )
    plain = sd.segment(packed.image).to_csv().splitlines()[0].split(",")
    assert plain == list(DROPLET_COLUMNS)


def test_label_png_is_16bit_with_droplet_ids(result, packed):
    out = render(result, "labels")
    labels = cv2.imdecode(np.frombuffer(out.body, np.uint8), cv2.IMREAD_UNCHANGED)
    assert out.mimetype == "image/png" and out.suffix == "_labels.png"
    assert labels.dtype == np.uint16 and labels.shape == packed.image.shape[:2]
    assert set(np.unique(labels)) - {0} == {d.id for d in result.droplets}
    assert np.array_equal(labels, result.labels)
    d = result.droplets[len(result.droplets) // 2]
    assert np.count_nonzero(labels == d.id) == d.area_px


def test_labels_beyond_16_bits_are_refused_clearly(result):
    big = dataclasses.replace(result)  # the same droplets, the last renumbered past 16 bits
    last = big.droplets[-1]
    saved = last.id
    try:
        last.id = 70_000
        assert big.labels.dtype == np.uint32 and big.labels.max() == 70_000
        with pytest.raises(InvalidOptions, match="65535"):
            render(big, "labels")
    finally:
        last.id = saved


def test_coco_json_loads_in_pycocotools(result, tmp_path):
    path = tmp_path / "coco.json"
    result.to_coco(path, file_name="packed.png")
    coco = COCO(str(path))
    ann_ids = coco.getAnnIds(imgIds=[1])
    assert len(ann_ids) == len(result.droplets)
    assert coco.loadImgs([1])[0]["file_name"] == "packed.png"
    first = coco.loadAnns(ann_ids[:1])[0]
    mask = coco.annToMask(first)
    assert mask.sum() == first["area"]
    assert json.loads(render(result, "coco", file_name="packed.png").body) == json.loads(path.read_text())


def test_overlay(result, packed):
    rgb = result.overlay()
    assert rgb.shape == (*packed.image.shape[:2], 3) and rgb.dtype == np.uint8
    assert np.any(rgb[:, :, 1].astype(int) > rgb[:, :, 0].astype(int) + 60)  # green outlines were drawn
    png = cv2.imdecode(np.frombuffer(render(result, "overlay").body, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(png[..., ::-1], rgb)


def test_json_record_has_no_http_keys(result, tmp_path):
    path = tmp_path / "r.json"
    text = result.to_json(path)
    saved = json.loads(path.read_text())
    assert saved == json.loads(text) and "success" not in saved
    assert saved["num_droplets"] == len(saved["droplets"]) == len(result.droplets)
    assert saved["droplets"][0] == result.droplets[0].as_dict()
    assert saved["filters_applied"]["um_per_px"] == 0.5 and "volume_pl" in saved["droplets"][0]
    served = json.loads(render(result, "json", envelope={"success": True}).body)
    assert next(iter(served)) == "success" and served["droplets"] == saved["droplets"]
    assert "serialize" in served["timing_ms"]


def test_every_format_renders_and_unknown_ones_are_refused(result):
    for fmt in FORMATS:
        out = render(result, fmt)
        assert out.body and out.mimetype and out.suffix
    with pytest.raises(InvalidOptions, match="unknown format"):
        render(result, "tiff")


def test_batch_summary_has_one_schema(result, tmp_path):
    row = batch_row(result, "packed.png", 1.5)
    assert tuple(row) == BATCH_COLUMNS
    assert row["droplets"] == len(result.droplets) and row["removed_by_filters"] == len(result.removed)
    assert row["diameter_mean_um"] == pytest.approx(0.5 * row["diameter_mean_px"])
    path = tmp_path / "summary.csv"
    write_batch_csv([row, {"file": "broken.png", "error": "not an image"}], path)
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == BATCH_COLUMNS and rows[1]["error"] == "not an image" and rows[1]["droplets"] == ""


def test_imagej_rois_give_back_each_droplet(result, tmp_path):
    """format=imagej: a ROI Manager zip roifile reads, one polygon ROI per kept droplet named by its
    id; filled as ImageJ fills polygons (pixel centres inside), each is its droplet's mask."""
    import roifile

    from sam_droplet.io.imagej import labels_from_rois

    out = render(result, "imagej")
    assert out.mimetype == "application/zip" and out.suffix == "_rois.zip"
    path = tmp_path / "rois.zip"
    path.write_bytes(out.body)
    rois = roifile.roiread(path)
    assert [r.name for r in rois] == [str(d.id) for d in result.droplets]
    assert all(r.roitype == roifile.ROI_TYPE.POLYGON for r in rois)
    labels = labels_from_rois(path, result.shape)
    for k, d in enumerate(result.droplets, start=1):
        assert np.array_equal(labels == k, result.labels == d.id), d.id
    assert result.to_imagej(tmp_path / "again.zip") == out.body


def test_imagej_square_is_filled_as_imagej_fills_it(tmp_path):
    import roifile

    from sam_droplet.io.imagej import labels_from_rois

    square = roifile.ImagejRoi.frompoints([[10, 10], [20, 10], [20, 20], [10, 20]])
    square.roitype = roifile.ROI_TYPE.POLYGON
    labels = labels_from_rois(square.tobytes(), (32, 32))
    assert labels.sum() == 100 and labels[10:20, 10:20].all()  # pixels 10..19: corners at 10 and 20
    with pytest.raises(InvalidImage, match="no area ROI"):
        labels_from_rois(roifile.ImagejRoi.frompoints([[1, 1]]).tobytes(), (8, 8))


def test_report_is_a_one_page_pdf_with_every_section(result, tmp_path):
    """format=report: a one-page PDF; rendered to PNG (pdftoppm) for a look (artifacts/reports/)."""
    import shutil
    import subprocess

    out = render(result, "report", file_name="packed.png")
    assert out.mimetype == "application/pdf" and out.body[:5] == b"%PDF-" and out.body.count(b"/Type /Page\n") <= 1
    text = out.body
    assert b"sam_droplet" in text
    if shutil.which("pdftoppm"):
        folder = Path(__file__).resolve().parent.parent / "artifacts" / "reports"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "packed_report.pdf").write_bytes(out.body)
        subprocess.run(["pdftoppm", "-r", "50", "-png", str(folder / "packed_report.pdf"), str(folder / "packed")], check=True)
        from PIL import Image

        pages = sorted(folder.glob("packed-*.png"))
        assert len(pages) == 1 and Image.open(pages[0]).size[1] > Image.open(pages[0]).size[0]  # portrait A4
