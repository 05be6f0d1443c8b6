"""The fluorescence channel: per-droplet intensities, positive calls, ddPCR statistics, occupancy,
through the functions, the API and the CLI, on generated pairs with known answers."""

from __future__ import annotations

import base64
import csv
import io
import json
import math

import numpy as np
import pytest
import tifffile
from PIL import Image

from sam_droplet.cli import main as cli_main
from sam_droplet.engine.fluorescence import classify_positive, ddpcr_statistics, occupancy
from sam_droplet.tools import synthetic

from .conftest import png_bytes


@pytest.fixture(scope="module")
def pair() -> synthetic.FluorescencePair:
    return synthetic.fluorescence_pair(seed=1, objects_mean=1.0)


def fl_png(pair) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pair.fluorescence).save(buf, "PNG")  # 16-bit
    return buf.getvalue()


def truth_of(pair, record) -> int:
    cx, cy = record["centroid"]
    return int(pair.brightfield.labels[round(cy), round(cx)])


# -- statistics by hand ---------------------------------------------------------------------------


def test_ddpcr_lambda_and_interval_by_hand():
    out = ddpcr_statistics(900, 180, mean_volume_pl=0.85)
    assert out["p"] == 0.2 and abs(out["lambda"] - 0.2231) < 1e-4  # -ln(0.8) = 0.22314
    # Clopper-Pearson 95 % interval on p for 180/900: [0.1743, 0.2278] (beta quantiles), then -ln(1 - p).
    lo, hi = out["p_ci"]
    assert abs(lo - 0.17432) < 2e-4 and abs(hi - 0.22776) < 2e-4
    assert (
        abs(out["lambda_ci"][0] - (-math.log(1 - lo))) < 1e-6 and abs(out["lambda_ci"][1] - (-math.log(1 - hi))) < 1e-6
    )
    # 0.2231 copies per 0.85 pL droplet = 262,525 copies per uL.
    assert abs(out["copies_per_ul"] - 0.223144 / 0.85e-6) < 2
    assert out["copies_per_ul_ci"][0] < out["copies_per_ul"] < out["copies_per_ul_ci"][1]
    assert out["message"] is None


def test_ddpcr_edge_cases_say_what_is_missing():
    saturated = ddpcr_statistics(500, 500, 1.0)
    assert saturated["lambda"] is None and saturated["copies_per_ul"] is None and "saturated" in saturated["message"]
    # k = n: the lower bound of p is 0.025 ** (1 / n), so lambda's lower bound stays finite.
    assert (
        abs(saturated["lambda_ci"][0] + math.log(1 - 0.025 ** (1 / 500))) < 1e-4 and saturated["lambda_ci"][1] is None
    )
    uncalibrated = ddpcr_statistics(100, 10, None)
    assert uncalibrated["lambda"] > 0 and uncalibrated["copies_per_ul"] is None
    assert "calibration" in uncalibrated["message"]
    none = ddpcr_statistics(100, 0, 1.0)
    assert none["lambda"] == 0 and none["lambda_ci"][0] == 0 and none["lambda_ci"][1] > 0
    assert "no droplets" in ddpcr_statistics(0, 0, 1.0)["message"]


def test_thresholds_and_ambiguity():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(100, 10, 800), rng.normal(600, 40, 200)])
    for method in ("otsu", "gmm"):
        call = classify_positive(values, method=method)
        assert call.positive.sum() == 200 and 150 < call.threshold < 500 and call.ashman_d > 10
        assert not call.ambiguous and call.method == method
    user = classify_positive(values, threshold=1000)
    assert user.method == "user" and user.positive.sum() == 0 and user.ambiguous
    overlapping = classify_positive(rng.normal(100, 30, 500))
    assert overlapping.ambiguous and "check" in overlapping.message


def test_occupancy_against_poisson():
    counts = np.array([0] * 37 + [1] * 37 + [2] * 18 + [3] * 6 + [4, 5])
    occ = occupancy(counts)
    assert occ["observed"] == [37, 37, 18, 8] and occ["mean_per_droplet"] == 1.0
    assert occ["poisson_fraction"][:3] == [0.3679, 0.3679, 0.1839]
    assert abs(sum(occ["poisson_fraction"]) - 1) < 1e-3


# -- through the API --------------------------------------------------------------------------------


def test_segment_file_with_fluorescence(client, pair):
    r = client.post(
        "/segment_file",
        data={
            "file": (io.BytesIO(png_bytes(pair.brightfield.image)), "bf.png"),
            "fluorescence": (io.BytesIO(fl_png(pair)), "fl.png"),
            "um_per_px": "1.0",
        },
        content_type="multipart/form-data",
    )
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    s = body["summary"]
    kept = body["droplets"]
    truth = [truth_of(pair, d) for d in kept]
    assert all(t > 0 for t in truth)
    # Exact positive calls and object counts against the generator's truth.
    assert [d["positive"] for d in kept] == [bool(pair.positive[t - 1]) for t in truth]
    assert [d["objects"] for d in kept] == [int(pair.objects[t - 1]) for t in truth]
    k = sum(d["positive"] for d in kept)
    dd = s["ddpcr"]
    assert dd["n"] == len(kept) and dd["k"] == k and abs(dd["lambda"] + math.log(1 - k / len(kept))) < 1e-5
    assert dd["mean_volume_pl"] > 0 and dd["copies_per_ul"] > 0
    call = s["fluorescence"]["call"]
    assert call["method"] == "otsu" and not call["ambiguous"] and call["ashman_d"] > 2
    assert s["occupancy"]["objects"] == sum(d["objects"] for d in kept)
    for key in ("fl_mean", "fl_max", "fl_integrated", "fl_background", "fl_corrected_mean"):
        assert key in kept[0]
    # Background from the annulus: the generator's 400 counts.
    assert abs(np.median([d["fl_background"] for d in kept]) - 400) < 20


def test_user_threshold_and_csv_columns(client, pair):
    data = {
        "file": (io.BytesIO(png_bytes(pair.brightfield.image)), "bf.png"),
        "fluorescence": (io.BytesIO(fl_png(pair)), "fl.png"),
        "fluorescence_threshold": "100000",
        "format": "csv",
    }
    r = client.post("/segment_file", data=data, content_type="multipart/form-data")
    assert r.status_code == 200
    rows = r.get_data(as_text=True).splitlines()
    header = rows[0].split(",")
    for col in ("fl_mean", "fl_corrected_mean", "positive", "objects"):
        assert col in header
    assert all(row.split(",")[header.index("positive")] == "0" for row in rows[1:])


def test_fluorescence_only_and_json_key(client, pair):
    fl = fl_png(pair)
    r = client.post(
        "/segment_file", data={"fluorescence": (io.BytesIO(fl), "fl.png")}, content_type="multipart/form-data"
    )
    assert r.status_code == 200 and r.get_json()["summary"]["ddpcr"]["n"] > 0
    r = client.post(
        "/segment",
        json={
            "image": base64.b64encode(png_bytes(pair.brightfield.image)).decode(),
            "fluorescence": base64.b64encode(fl).decode(),
        },
    )
    assert r.status_code == 200 and r.get_json()["summary"]["ddpcr"]["k"] == sum(
        d["positive"] for d in r.get_json()["droplets"]
    )


def test_multichannel_tiff_with_channel_indices(client, pair):
    gray_bf = np.asarray(Image.fromarray(pair.brightfield.image).convert("L")).astype(np.uint16) * 257
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.stack([gray_bf, pair.fluorescence]))  # two pages: bright-field, fluorescence
    data = {"file": (io.BytesIO(buf.getvalue()), "stack.tif"), "brightfield_channel": "0", "fluorescence_channel": "1"}
    r = client.post("/segment_file", data=data, content_type="multipart/form-data")
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["summary"]["fluorescence"]["call"]["positives"] > 0
    data = {"file": (io.BytesIO(buf.getvalue()), "stack.tif"), "brightfield_channel": "0", "fluorescence_channel": "5"}
    r = client.post("/segment_file", data=data, content_type="multipart/form-data")
    assert r.status_code == 400 and "channel 5" in r.get_json()["error"]["message"]


def test_size_mismatch_and_bad_options_are_400(client, pair):
    small = png_bytes(pair.fluorescence[:100, :100])
    data = {
        "file": (io.BytesIO(png_bytes(pair.brightfield.image)), "bf.png"),
        "fluorescence": (io.BytesIO(small), "f.png"),
    }
    r = client.post("/segment_file", data=data, content_type="multipart/form-data")
    assert r.status_code == 400 and "same field" in r.get_json()["error"]["message"]
    for field, value in (("threshold_method", "magic"), ("spot_diameter_px", "-3"), ("fluorescence_threshold", "nan")):
        data = {"file": (io.BytesIO(png_bytes(pair.brightfield.image)), "bf.png"), field: value}
        r = client.post("/segment_file", data=data, content_type="multipart/form-data")
        assert r.status_code == 400, (field, r.get_json())
    data = {"file": (io.BytesIO(png_bytes(pair.brightfield.image)), "bf.png"), "brightfield_channel": "0"}
    assert client.post("/segment_file", data=data, content_type="multipart/form-data").status_code == 400


def test_cli_with_fluorescence(pair, tmp_path):
    bf, fl = tmp_path / "sample.png", tmp_path / "sample_fl.png"
    bf.write_bytes(png_bytes(pair.brightfield.image))
    fl.write_bytes(fl_png(pair))
    out = tmp_path / "out"
    rc = cli_main(["segment", str(bf), "--out", str(out), "--format", "json", "--quiet", "--um-per-px", "1",
                   "--fluorescence", "{dir}/{stem}_fl{ext}"])  # fmt: skip
    assert rc == 0
    body = json.loads((out / "sample.json").read_text())
    assert body["summary"]["ddpcr"]["k"] == sum(d["positive"] for d in body["droplets"]) > 0
    (row,) = list(csv.DictReader((out / "summary.csv").open()))
    assert int(row["positive"]) == body["summary"]["ddpcr"]["k"] and float(row["lambda"]) > 0
    assert float(row["copies_per_ul"]) > 0 and row["threshold_method"] == "otsu"


def test_fluorescence_through_the_library_and_past_16_bit_ids(pair):
    """sd.segment measures the channel; ids beyond 65,535 change nothing (labels are 32-bit)."""
    import sam_droplet as sd
    from sam_droplet.engine.fluorescence import measure_fluorescence
    from sam_droplet.engine.instances import paint_labels

    reference = sd.segment(pair.brightfield.image, fluorescence=pair.fluorescence, um_per_px=1.0)
    assert reference.summary["ddpcr"]["k"] == sum(d.fluorescence["positive"] for d in reference.droplets) > 0
    many = sd.segment(pair.brightfield.image, um_per_px=1.0)
    for d in many.found:
        d.id += 70_000
    labels = paint_labels([d.instance for d in many.found], many.shape, [d.id for d in many.found])
    population = measure_fluorescence(many.found, labels, pair.fluorescence, um_per_px=1.0)
    assert [d.fluorescence for d in many.found] == [d.fluorescence for d in reference.found]
    assert population["ddpcr"] == reference.summary["ddpcr"]


# -- the team's real pair ---------------------------------------------------------------------------


def test_real_ddpcr_pair_and_cells(shared_data, client):
    folder = shared_data / "samples" / "ddpcr_original"
    data = {
        "file": (io.BytesIO((folder / "ddPCR_0_0.png").read_bytes()), "bf.png"),
        "fluorescence": (io.BytesIO((folder / "ddPCR_0_1.png").read_bytes()), "fl.png"),
    }
    r = client.post("/segment_file", data=data, content_type="multipart/form-data")
    assert r.status_code == 200, r.get_json()
    s = r.get_json()["summary"]
    dd, call = s["ddpcr"], s["fluorescence"]["call"]
    print("ddPCR_0_0 + ddPCR_0_1:", json.dumps({"ddpcr": dd, "call": call}))
    assert dd["n"] > 500 and 0 < dd["k"] < dd["n"] / 2  # sparse positive droplets
    gy = (folder / "GY_image.png").read_bytes()
    r = client.post(
        "/segment_file",
        data={"file": (io.BytesIO(gy), "gy.png"), "fluorescence": (io.BytesIO(gy), "gy.png"), "spot_diameter_px": "6"},
        content_type="multipart/form-data",
    )
    assert r.status_code == 200, r.get_json()
    print("GY_image occupancy:", json.dumps(r.get_json()["summary"]["occupancy"]))


def test_threshold_ignores_droplets_far_below_their_background():
    """Two droplets measured on a burned-in scale bar (corrected means of -200) must not pull the
    automatic threshold between themselves and all the others."""
    from sam_droplet.engine.fluorescence import classify_positive

    rng = np.random.default_rng(0)
    negatives, positives = rng.normal(5, 3, 600), rng.normal(80, 10, 20)
    clean = classify_positive(np.concatenate([negatives, positives]))
    spoiled = classify_positive(np.concatenate([negatives, positives, [-200.0, -160.0]]))
    assert clean.positive.sum() == spoiled.positive.sum() == 20
    assert abs(spoiled.threshold - clean.threshold) < 1.0
