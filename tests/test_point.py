"""Adding a missed droplet: POST /segment_point, the image cache behind it, and GET /image/<sha256>.png."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from sam_droplet.io.read import decode_image, read_image
from sam_droplet.pipeline import Engine, ImageContext
from sam_droplet.tools import synthetic
from sam_droplet.web import create_app
from sam_droplet.web.cache import ImageCache
from sam_droplet.web.config import Config

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
    # The classical detector misses the dyed droplet (the droplet model finds it: combined does not).
    body = _segment(client, data, detector="classical")
    assert body["num_droplets"] == scene.count - 1
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


def test_sam_mode_reuses_the_embedding(sam_app, sam_engine, odd):
    scene, data = odd
    client = sam_app.test_client()
    cache = sam_app.extensions["sam_droplet"].cache
    body = _segment(client, data)
    sha = body["image"]["sha256"]
    entry = cache.get("", sha)  # keys off: one tenant
    assert entry is not None and len(entry.encodings) == 1  # kept from the segmentation
    ((view, encoding),) = entry.encodings.items()
    cx, cy = scene.centers[-1]
    r = client.post("/segment_point", json={"sha256": sha, "x": cx, "y": cy})
    found = r.get_json()
    assert r.status_code == 200 and found["segmenter"] == "sam"
    # The cached encoding answered: nothing was encoded, and it is still the one in the cache.
    assert "encode" not in found["timing_ms"] and "decode" in found["timing_ms"]
    assert cache.get("", sha).encodings[view] is encoding
    # The answer is the engine's for this prompt on that encoding: SAM's own mask when it agrees
    # with the detection; otherwise (a random-weight SAM) exactly the classical detection.
    image = read_image(data)
    known = {"appearance": entry.appearance, "diameter_px": entry.diameter_px}
    same = sam_engine.segment_from_point(ImageContext(image, {view: encoding}, **known), cx, cy)
    assert (found["verdict"], found["droplet"]["area_px"]) == (same.verdict, same.droplet.area_px)
    detector = Engine().segment_from_point(ImageContext(image, **known), cx, cy).droplet
    if same.verdict == "sam":
        assert same.droplet.source == "sam"
    else:
        assert same.verdict in ("disagrees", "escaped", "empty")  # why SAM's mask was not used
        assert same.droplet.source == "detector" and same.droplet.area_px == detector.area_px


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
    def context(seed: int) -> ImageContext:
        arr = np.random.default_rng(seed).integers(0, 255, (256, 256), dtype=np.uint8)
        return ImageContext(decode_image(png_bytes(arr), 10**8))

    first = context(0)
    cache = ImageCache(max_mb=2.5 * first.nbytes / 2**20)  # room for two
    a, b, c = first, context(1), context(2)
    cache.put("t", a)
    cache.put("t", b)
    cache.get("t", a.image.sha256)  # a is now the most recent
    cache.put("t", c)
    assert cache.get("t", b.image.sha256) is None
    assert cache.get("t", a.image.sha256) is a and cache.get("t", c.image.sha256) is c
    assert cache.used_bytes <= cache.max_bytes
    assert ImageCache(0).put("t", context(3)) is None  # 0 MB keeps nothing


def test_cache_entries_belong_to_their_tenant():
    arr = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    entry = ImageContext(decode_image(png_bytes(arr), 10**8))
    cache = ImageCache(max_mb=16)
    cache.put("a", entry)
    assert cache.get("a", entry.image.sha256) is entry
    assert cache.get("b", entry.image.sha256) is None and cache.get("", entry.image.sha256) is None
    cache.add_encoding("b", entry.image.sha256, "view", object())
    assert not entry.encodings  # another tenant cannot attach to it either


def test_cache_off_still_answers_uploads(odd, classical_engine):
    scene, data = odd
    client = create_app(Config.from_mapping({"IMAGE_CACHE_MB": "0"}), engine=classical_engine).test_client()
    sha = _segment(client, data)["image"]["sha256"]
    assert client.post("/segment_point", json={"sha256": sha, "x": 1, "y": 1}).status_code == 404
    cx, cy = scene.centers[-1]
    r = client.post("/segment_point", data={"file": (io.BytesIO(data), "odd.png"), "x": str(cx), "y": str(cy)})
    assert r.status_code == 200 and r.get_json()["droplet"] is not None


def test_point_query_through_the_library(odd):
    """The engine answers a point query from what a segmentation learnt, without the web layer."""
    import sam_droplet as sd

    scene, data = odd
    result = sd.segment(data)
    context = ImageContext(result.image)
    context.learn(result)
    assert context.appearance == "rim" and context.diameter_px == pytest.approx(
        np.median([d.equivalent_diameter_px for d in result.droplets]), rel=0.1
    )
    cx, cy = scene.centers[-1]
    found = Engine().segment_from_point(context, cx, cy)
    assert found.verdict == "detector" and found.droplet is not None
    assert abs(found.droplet.area_px - _true_area(scene)) / _true_area(scene) < 0.05
