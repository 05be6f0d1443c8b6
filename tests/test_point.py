"""Adding a missed droplet: POST /segment_point, the image cache behind it, and GET /image/<sha256>.png."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from sam_droplet import synthetic
from sam_droplet.config import Config
from sam_droplet.decode import decode_image
from sam_droplet.image_cache import CachedImage, ImageCache
from sam_droplet.pipeline import Engine

from .conftest import png_bytes


@pytest.fixture(scope="module")
def odd():
    scene = synthetic.odd_droplet()
    return scene, png_bytes(scene.image)


def _segment(client, data: bytes, **fields):
    r = client.post("/segment_file", data={"file": (io.BytesIO(data), "odd.png"), **fields})
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def _true_area(scene) -> int:
    return int(np.count_nonzero(scene.labels == scene.count))


def test_missed_droplet_is_found_from_the_cache(client, odd):
    scene, data = odd
    body = _segment(client, data)
    assert body["num_droplets"] == scene.count - 1  # the dyed droplet is missed by the rim detector
    cx, cy = scene.centers[-1]
    r = client.post("/segment_point", json={"sha256": body["image"]["sha256"], "x": cx, "y": cy})
    assert r.status_code == 200
    found = r.get_json()
    assert found["segmenter"] == "classical" and found["verdict"] == "detector"
    d = found["droplet"]
    assert d["source"] == "manual" and d["mask"]["size"] == list(scene.labels.shape)
    assert abs(d["area_px"] - _true_area(scene)) / _true_area(scene) < 0.05
    assert abs(d["centroid"][0] - cx) < 2 and abs(d["centroid"][1] - cy) < 2


def test_background_click_finds_nothing(client, odd):
    _, data = odd
    sha = _segment(client, data)["image"]["sha256"]
    r = client.post("/segment_point", json={"sha256": sha, "x": 140, "y": 140})
    assert r.status_code == 200
    assert r.get_json()["droplet"] is None and "no droplet" in r.get_json()["message"]


def test_uncached_image_is_sent_again(client, odd):
    scene, data = odd
    missing = client.post("/segment_point", json={"sha256": "0" * 64, "x": 10, "y": 10})
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "image_not_cached"
    cx, cy = scene.centers[-1]
    r = client.post("/segment_point", data={"file": (io.BytesIO(data), "odd.png"), "x": str(cx), "y": str(cy)})
    assert r.status_code == 200 and r.get_json()["droplet"] is not None


@pytest.mark.parametrize(
    "body",
    [
        {"sha256": "abc", "x": 1, "y": 1},
        {"sha256": "0" * 64, "x": "left", "y": 1},
        {"sha256": "0" * 64, "y": 1},
        {"sha256": "0" * 64, "x": float("nan"), "y": 1},
        {"sha256": "0" * 64, "x": 1, "y": 1, "segmenter": "magic"},
        {"sha256": "0" * 64, "x": 1, "y": 1, "diameter_px": -3},
        {"sha256": "0" * 64, "x": 1, "y": 1, "colour": "red"},
    ],
)
def test_bad_point_requests(client, body):
    r = client.post("/segment_point", data=json.dumps(body), content_type="application/json")
    assert r.status_code == 400
    assert r.get_json()["error"]["code"] == "invalid_options"


def test_point_outside_the_image(client, odd):
    _, data = odd
    sha = _segment(client, data)["image"]["sha256"]
    r = client.post("/segment_point", json={"sha256": sha, "x": 5000, "y": 10})
    assert r.status_code == 400 and "outside" in r.get_json()["error"]["message"]


def test_cached_image_is_served_for_display(client, odd):
    scene, data = odd
    sha = _segment(client, data)["image"]["sha256"]
    r = client.get(f"/image/{sha}.png")
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert decode_image(r.data, 10**8).pixels.shape[:2] == scene.image.shape
    assert client.get(f"/image/{'1' * 64}.png").status_code == 404
    assert client.get("/image/not-a-digest.png").status_code == 404


def test_sam_mode_reuses_the_embedding(sam_client, sam_engine, odd):
    scene, data = odd
    body = _segment(sam_client, data)
    sha = body["image"]["sha256"]
    entry = sam_engine.image_cache.get(sha)
    assert entry is not None and len(entry.encodings) == 1  # kept from the segmentation
    encoding = next(iter(entry.encodings.values()))
    cx, cy = scene.centers[-1]
    r = sam_client.post("/segment_point", json={"sha256": sha, "x": cx, "y": cy})
    found = r.get_json()
    assert r.status_code == 200 and found["segmenter"] == "sam"
    assert "encode" in found["timing_ms"] and found["timing_ms"]["encode"] < 50  # no new encoding
    assert next(iter(sam_engine.image_cache.get(sha).encodings.values())) is encoding
    # A random-weight SAM disagrees with the detection, so the detector's droplet is returned.
    assert found["droplet"] is not None and found["verdict"] in ("sam", "disagrees", "escaped", "empty")


def test_added_droplet_gets_fluorescence(client):
    pair = synthetic.fluorescence_pair(n=30, seed=4)
    bf, fl = png_bytes(pair.brightfield.image), png_bytes(pair.fluorescence)
    r = client.post(
        "/segment_file",
        data={"file": (io.BytesIO(bf), "bf.png"), "fluorescence": (io.BytesIO(fl), "fl.png")},
    )
    body = r.get_json()
    d = body["droplets"][0]
    point = client.post(
        "/segment_point", json={"sha256": body["image"]["sha256"], "x": d["centroid"][0], "y": d["centroid"][1]}
    ).get_json()["droplet"]
    # The same droplet found again measures the same fluorescence and gets the same call.
    assert point["positive"] == d["positive"]
    assert point["fl_corrected_mean"] == pytest.approx(d["fl_corrected_mean"], rel=0.05, abs=5)


def test_cache_is_bounded_and_least_recently_used():
    def image(seed: int):
        arr = np.random.default_rng(seed).integers(0, 255, (256, 256), dtype=np.uint8)
        return decode_image(png_bytes(arr), 10**8)

    first = CachedImage(image(0))
    cache = ImageCache(max_mb=2.5 * first.nbytes / 2**20)  # room for two
    a, b, c = first, CachedImage(image(1)), CachedImage(image(2))
    cache.put(a)
    cache.put(b)
    cache.get(a.image.sha256)  # a is now the most recent
    cache.put(c)
    assert cache.get(b.image.sha256) is None
    assert cache.get(a.image.sha256) is a and cache.get(c.image.sha256) is c
    assert cache.used_bytes <= cache.max_bytes
    assert ImageCache(0).put(CachedImage(image(3))) is None  # 0 MB keeps nothing


def test_cache_off_still_answers_uploads(odd):
    from sam_droplet.factory import create_app

    scene, data = odd
    engine = Engine.start(Config(segmenter="classical", image_cache_mb=0))
    client = create_app(Config(segmenter="classical", image_cache_mb=0), engine=engine).test_client()
    sha = _segment(client, data)["image"]["sha256"]
    assert client.post("/segment_point", json={"sha256": sha, "x": 1, "y": 1}).status_code == 404
    cx, cy = scene.centers[-1]
    r = client.post("/segment_point", data={"file": (io.BytesIO(data), "odd.png"), "x": str(cx), "y": str(cy)})
    assert r.status_code == 200 and r.get_json()["droplet"] is not None
