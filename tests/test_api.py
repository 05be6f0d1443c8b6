"""HTTP API in classical mode: the JSON contract, every output format, every error path."""

import base64
import csv
import io
import json
import re

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from sam_droplet.tools.evaluate import match_instances

from .conftest import png_bytes


def post_file(client, data: bytes, name: str = "droplets.png", **fields):
    return client.post(
        "/segment_file",
        data={"file": (io.BytesIO(data), name), **{k: str(v) for k, v in fields.items()}},
        content_type="multipart/form-data",
    )


def assert_error(response, status: int, code: str, text: str = ""):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["success"] is False and body["error"]["code"] == code
    assert text.lower() in body["error"]["message"].lower()
    assert "Traceback" not in response.get_data(as_text=True)


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200
    h = r.get_json()
    assert h["status"] == "ok" and h["model_loaded"] is False and h["segmenter"] == "classical"
    for key in ("model_type", "checkpoint", "device", "cuda", "uptime_s", "memory_mb", "version"):
        assert key in h
    assert r.headers["X-Request-ID"]


def test_request_id_is_echoed(client):
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"


def test_defaults(client):
    d = client.get("/defaults").get_json()
    assert d["filters"] == {"exclude_edge_touching": True, "circularity_min": 0.6, "outliers": "none"}
    assert "packed_monolayer" in d["presets"] and d["presets"]["default"]["description"]
    assert set(d["formats"]) == {"json", "csv", "labels", "overlay", "coco", "imagej", "report"}
    assert d["limits"]["max_upload_mb"] == 8 and d["segmenters"] == ["auto", "classical"]


def test_index_page(client):
    r = client.get("/")
    assert r.status_code == 200 and b"sam_droplet" in r.data and b"/static/js/app.js" in r.data
    # Every asset is served here (lab networks are often offline): no CDN, no other origin.
    assets = re.findall(rb'(?:src|href)="([^"]+)"', r.data)
    assert assets and all(a.startswith(b"/static/") for a in assets), assets
    for asset in assets:
        assert client.get(asset.decode()).status_code == 200
    for module in ("app.js", "analysis.js", "masks.js", "viewer.js"):
        assert client.get(f"/static/js/{module}").status_code == 200


def test_segment_file_json_contract(client, packed, packed_png):
    r = post_file(client, packed_png)
    assert r.status_code == 200
    body = r.get_json()
    assert body["success"] is True and body["segmenter"] == "classical" and body["model"] is None
    assert body["image"]["width"] == 640 and body["image"]["height"] == 512 and len(body["image"]["sha256"]) == 64
    assert body["num_droplets"] == len(body["droplets"]) > 200
    assert r.headers["X-Droplet-Count"] == str(body["num_droplets"])
    for stage in ("queue", "decode", "detect", "measure", "filter", "serialize"):
        assert stage in body["timing_ms"]
    # Overlap resolution runs once, inside the detector: classical mode has no second pass.
    assert "postprocess" not in body["timing_ms"]
    assert sum(body["summary"]["resolved"].values()) > 0 and body["summary"]["detector"]["median_diameter_px"] > 10
    d = body["droplets"][0]
    for key in (
        "id",
        "bbox",
        "centroid",
        "area_px",
        "perimeter_px",
        "equivalent_diameter_px",
        "max_feret_px",
        "min_feret_px",
        "circularity",
        "aspect_ratio",
        "intensity_mean",
        "intensity_median",
        "intensity_std",
        "intensity_min",
        "intensity_max",
        "touches_edge",
        "min_edge_distance_px",
        "score",
        "mask",
    ):
        assert key in d, key
    assert all(r_["removed_reason"] for r_ in body["removed"])
    s = body["summary"]
    assert s["count"] == body["num_droplets"] and s["diameter_px"]["cv"] is not None and s["histogram"]["counts"]
    assert sum(s["removed"].values()) == len(body["removed"])
    # No preset asked: the image chose one (a generated packed monolayer: the monolayer's filters).
    assert body["filters_applied"]["preset"] == "packed_monolayer" and body["filters_applied"]["units"] == "px"
    assert s["preset"]["requested"] == "auto" and s["preset"]["area_fraction"] > 0.4
    # The masks decode with pycocotools and reproduce the ground truth.
    h, w = 512, 640
    labels = np.zeros((h, w), np.int32)
    for rec in body["droplets"]:
        m = coco_mask.decode({"size": rec["mask"]["size"], "counts": rec["mask"]["counts"].encode()})
        assert m.sum() == rec["area_px"]
        labels[m > 0] = rec["id"]
    result = match_instances(packed.labels, labels)
    assert result.precision >= 0.95 and np.mean(result.matched_iou) >= 0.85


def test_calibrated_output(client, packed_png):
    body = post_file(client, packed_png, um_per_px=0.8).get_json()
    d = body["droplets"][0]
    assert d["equivalent_diameter_um"] == pytest.approx(0.8 * d["equivalent_diameter_px"], rel=1e-3)
    assert "volume_pl" in d and body["summary"]["volume_pl"]["total"] > 0
    assert body["filters_applied"]["units"] == "um" and body["summary"]["histogram"]["unit"] == "um"


def test_filters_and_presets_change_the_result(client, packed_png):
    base = post_file(client, packed_png).get_json()
    median = base["summary"]["diameter_px"]["median"]
    filtered = post_file(client, packed_png, filters=json.dumps({"diameter_min": median})).get_json()
    assert 0 < filtered["num_droplets"] < base["num_droplets"]
    assert filtered["summary"]["removed"]["diameter_min"] >= 1
    everything = post_file(client, packed_png, preset="all_objects").get_json()
    assert everything["num_droplets"] >= base["num_droplets"] and not everything["removed"]


def test_contents_preset_reports_the_droplets_not_what_they_carry(client):
    """Droplets each carrying a small round object (a bead or a cell with an outline like a small
    droplet's): the default reports both, as droplets seen through droplets; the
    droplets_with_contents preset reports the droplets only."""
    from sam_droplet.tools import synthetic

    rng = np.random.default_rng(2)
    shape = (360, 480)
    droplets = np.array([[120.0, 120.0], [330.0, 130.0], [130.0, 260.0], [340.0, 260.0]])
    inside = droplets + np.array([[20.0, -15.0]])
    centers = np.concatenate([droplets, inside])
    radii = np.array([60.0, 55.0, 58.0, 62.0, 8.0, 7.0, 9.0, 8.0])
    canvas = np.full(shape, 0.7, dtype=np.float32)
    synthetic._render_brightfield(canvas, centers, radii, 0.7, 0.72, rim_depth=0.6, rim_width=4.0)
    image = synthetic._finish(canvas, shape, 0.1, 0.02, False, np.uint8, rng)
    png = png_bytes(image)

    default = post_file(client, png, preset="polydisperse").get_json()
    contents = post_file(client, png, preset="droplets_with_contents").get_json()
    sizes = sorted(round(d["equivalent_diameter_px"]) for d in contents["droplets"])
    assert len(sizes) == 4 and min(sizes) > 100, sizes
    assert default["num_droplets"] == 8, [d["equivalent_diameter_px"] for d in default["droplets"]]
    presets = client.get("/defaults").get_json()["presets"]
    assert presets["droplets_with_contents"]["nested_droplets"] is False
    assert presets["default"]["nested_droplets"] is True


@pytest.mark.parametrize("fmt", ["csv", "labels", "overlay", "coco"])
def test_formats(client, packed_png, fmt):
    r = post_file(client, packed_png, format=fmt)
    assert r.status_code == 200
    count = int(r.headers["X-Droplet-Count"])
    if fmt == "csv":
        assert r.mimetype == "text/csv"
        rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
        assert len(rows) == count and "equivalent_diameter_px" in rows[0]
    elif fmt == "labels":
        labels = cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert labels.dtype == np.uint16 and labels.shape == (512, 640)
        assert len(np.unique(labels)) - 1 == count
    elif fmt == "overlay":
        img = cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (512, 640, 3)
    else:
        coco = r.get_json()
        assert len(coco["annotations"]) == count and coco["categories"][0]["name"] == "droplet"
    assert "attachment" in r.headers["Content-Disposition"]


def test_segment_json_with_data_url_and_bare_base64(client, packed_png):
    b64 = base64.b64encode(packed_png).decode()
    a = client.post("/segment", json={"image": "data:image/png;base64," + b64, "preset": "packed_monolayer"})
    b = client.post("/segment", json={"image": b64, "filters": {"circularity_min": 0.5}, "format": "csv"})
    assert a.status_code == 200 and a.get_json()["filters_applied"]["preset"] == "packed_monolayer"
    assert b.status_code == 200 and b.mimetype == "text/csv"


def test_analyze_image(client, packed, packed_png):
    r = client.post(
        "/analyze_image", data={"file": (io.BytesIO(packed_png), "x.png")}, content_type="multipart/form-data"
    )
    body = r.get_json()
    assert r.status_code == 200 and body["success"]
    true_d = 2 * np.median(packed.radii)
    assert body["estimated_diameter_px"] == pytest.approx(true_d, rel=0.1)
    assert body["suggested_preset"] == "packed_monolayer"
    assert body["suggested_filters"]["diameter_min"] < true_d < body["suggested_filters"]["diameter_max"]
    assert len(body["intensity"]["histogram"]["counts"]) == 64 and body["image"]["width"] == 640
    j = client.post("/analyze_image", json={"image": base64.b64encode(packed_png).decode()})
    assert j.status_code == 200


# -- errors -----------------------------------------------------------------------------------------


def test_not_an_image(client):
    assert_error(
        post_file(client, b"just some text, not pixels", "fake.png"), 415, "unsupported_media_type", "text/plain"
    )


def test_type_is_sniffed_not_taken_from_the_name(client, packed_png):
    assert post_file(client, packed_png, "photo.txt").status_code == 200


def test_corrupt_and_truncated(client, packed_png):
    assert_error(post_file(client, packed_png[: len(packed_png) // 2]), 400, "invalid_image", "truncated")
    assert_error(post_file(client, b""), 400, "invalid_image", "empty")


def test_bad_options(client, packed_png):
    assert_error(post_file(client, packed_png, filters="{not json"), 400, "invalid_options", "not valid json")
    assert_error(post_file(client, packed_png, filters='{"diamter_min": 3}'), 400, "invalid_options", "diameter_min")
    assert_error(post_file(client, packed_png, filters='{"diameter_min": "big"}'), 400, "invalid_options", "number")
    assert_error(post_file(client, packed_png, filters="[1, 2]"), 400, "invalid_options", "object")
    assert_error(post_file(client, packed_png, filters='{"a":' * 5000 + "1" + "}" * 5000), 400, "invalid_options")
    assert_error(post_file(client, packed_png, um_per_px="-1"), 400, "invalid_options", "positive")
    assert_error(post_file(client, packed_png, um_per_px="NaN"), 400, "invalid_options", "positive")
    assert_error(post_file(client, packed_png, format="tiff"), 400, "invalid_options", "json, csv")
    assert_error(post_file(client, packed_png, preset="shiny"), 400, "invalid_options", "unknown preset")
    assert_error(post_file(client, packed_png, segmenter="magic"), 400, "invalid_options", "unknown segmenter")
    assert_error(post_file(client, packed_png, filter='{"x": 1}'), 400, "invalid_options", "unknown form field")


def test_wrong_field_names_and_bodies(client, packed_png):
    r = client.post(
        "/segment_file", data={"image": (io.BytesIO(packed_png), "x.png")}, content_type="multipart/form-data"
    )
    assert_error(r, 400, "invalid_options", "file field")
    assert_error(client.post("/segment_file"), 400, "invalid_options", "multipart")
    assert_error(
        client.post("/segment", data="{oops", content_type="application/json"), 400, "invalid_options", "json object"
    )
    assert_error(client.post("/segment", json=[1, 2]), 400, "invalid_options", "json object")
    assert_error(client.post("/segment", json={"img": "x"}), 400, "invalid_options", "unknown json key")
    assert_error(client.post("/segment", json={"image": "%%%not base64%%%"}), 400, "invalid_image", "base64")
    assert_error(client.post("/segment", json={"image": 12}), 400, "invalid_image", "string")


def test_too_many_bytes(client):
    big = b"\x89PNG\r\n\x1a\n" + b"\x00" * (9 * 2**20)
    assert_error(post_file(client, big), 413, "too_large", "8 MB")


def test_too_many_pixels_is_refused_from_the_header(client):
    from .test_read import _png_header_only

    assert_error(post_file(client, _png_header_only(3000, 3000)), 413, "too_large", "MAX_IMAGE_PIXELS")


def test_sam_without_model_is_503(client, packed_png):
    assert_error(post_file(client, packed_png, segmenter="sam"), 503, "not_ready", "not loaded")
    assert_error(post_file(client, packed_png, segmenter="grid"), 503, "not_ready")


def test_unknown_route_and_method_are_json(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/segment_file"), 405, "method_not_allowed")


def test_unexpected_errors_never_leak_a_traceback(app, packed_png, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app.extensions["sam_droplet"].engine, "segment", boom)
    r = post_file(app.test_client(), packed_png)
    assert_error(r, 500, "internal_error", "request id")
    assert "secret" not in r.get_data(as_text=True)


def test_a_bad_request_changes_nothing(client, small_png):
    first = post_file(client, small_png).get_json()
    post_file(client, b"garbage")
    post_file(client, small_png, filters='{"bad": 1}')
    again = post_file(client, small_png).get_json()
    assert again["num_droplets"] == first["num_droplets"]
    assert [d["mask"] for d in again["droplets"]] == [d["mask"] for d in first["droplets"]]


def test_16bit_tiff_upload(client, packed):
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, packed.image.astype(np.uint16) * 200)
    body = post_file(client, buf.getvalue(), "deep.tif").get_json()
    assert body["image"]["bit_depth"] == 16 and body["num_droplets"] > 200
    assert body["droplets"][0]["intensity_mean"] > 255  # measured on the original 16-bit values


def test_gray_and_rgba_images(client, packed):
    rgba = np.dstack([packed.image] * 3 + [np.full_like(packed.image, 255)])
    body = post_file(client, png_bytes(rgba)).get_json()
    assert body["image"]["channels"] == 4 and body["num_droplets"] > 200


def test_health_carries_the_deployment_guides_fields(client):
    h = client.get("/health").get_json()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", h["timestamp"])
    assert h["gpu_available"] is False and h["gpu_memory"] is None  # no GPU here; allocated/cached on CUDA
    assert h["memory_usage"] == h["memory_mb"] > 0 and h["cpu_percent"] >= 0


def test_imagej_report_and_contents_through_the_api(client, packed_png, tmp_path):
    import roifile

    r = post_file(client, packed_png, "packed.png", format="imagej")
    assert r.status_code == 200 and r.mimetype == "application/zip"
    assert r.headers["Content-Disposition"] == 'attachment; filename="packed_rois.zip"'
    (tmp_path / "r.zip").write_bytes(r.data)
    assert len(roifile.roiread(tmp_path / "r.zip")) == int(r.headers["X-Droplet-Count"])
    r = post_file(client, packed_png, "packed.png", format="report")
    assert r.status_code == 200 and r.mimetype == "application/pdf" and r.data[:5] == b"%PDF-"
    body = post_file(client, packed_png, contents="true").get_json()
    assert "contents" in body["summary"] and "contents" in body["droplets"][0]
    assert_error(post_file(client, packed_png, contents="maybe"), 400, "invalid_options", "true or false")


def test_report_from_the_pages_corrected_droplets(client):
    overlay = "data:image/png;base64," + base64.b64encode(png_bytes(np.zeros((40, 60, 3), np.uint8))).decode()
    image = {
        "file_name": "a.png",
        "diameters_px": [20.0, 21.0, 19.5, 40.0],
        "um_per_px": 0.5,
        "calibration": "file",
        "overlay": overlay,
        "positive": [True, False, False, True],
        "threshold": {"threshold": 12.0, "method": "user"},
        "objects": [0, 1, 0, 2],
        "contents": [1, 0, 0, 3],
        "settings": {"segmenter": "classical", "preset": "default"},
        "removed": {"edge touching": 2},
    }
    r = client.post("/report", json={"images": [image, {**image, "file_name": "b.png"}]})
    assert r.status_code == 200 and r.mimetype == "application/pdf" and r.data[:5] == b"%PDF-"
    assert "sam_droplet_batch_report.pdf" in r.headers["Content-Disposition"]
    assert_error(client.post("/report", json={"images": []}), 400, "invalid_options", "images")
    assert_error(client.post("/report", json={"images": [{**image, "positive": [True]}]}), 400, "invalid_options", "one value per droplet")
    assert_error(client.post("/report", json={"images": [{**image, "diameters_px": ["x"]}]}), 400, "invalid_options", "finite")
    assert_error(client.post("/report", json={"images": [{**image, "colour": 1}]}), 400, "invalid_options", "unknown")
