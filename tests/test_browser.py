"""The upload page, used as a person would: a real Chromium (Debian's) driven by Playwright against a
real Waitress server.

Screenshots of each step go to artifacts/browser/ (look at them). ``.ci/run`` installs the
``chromium`` package; without it (or without Playwright) these tests skip with a message.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from sam_droplet.io.write import BATCH_COLUMNS
from sam_droplet.tools import synthetic

from .conftest import ROOT, png_bytes
from .servers import free_port, waitress

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
expect = playwright_api.expect

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "artifacts" / "browser"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
API_KEY = "page-test-key-0123456789"

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and shutil.which("chromium") is None and not os.environ.get("CI"),
        reason=f"no Chromium at {CHROMIUM}: install Debian's chromium package (.ci/run does)",
    ),
]


def _server(tmp_path_factory, name: str, **env: str):
    port = free_port()
    log = tmp_path_factory.mktemp(name) / "server.log"
    base_env = {**os.environ, "SEGMENTER": "classical", "RATE_LIMIT": "", "LOG_FORMAT": "text", **env}
    server = waitress(port, log, base_env)
    server.wait_healthy(120)
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, url = _server(tmp_path_factory, "page")
    yield url
    proc.stop()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 720}, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on(
        "console",
        # Chromium logs every failed response; the HTTP errors are the tests' own doing.
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    yield pg
    context.close()
    assert not errors, f"the page logged errors: {errors}"


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    """Generated bright-field droplets with one dyed droplet the detector misses, as a PNG file."""
    scene = synthetic.odd_droplet()
    path = tmp_path_factory.mktemp("images") / "odd_droplet.png"
    path.write_bytes(png_bytes(scene.image))
    return scene, path


def screen_point(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of image pixel (x, y) in the viewer as it is now zoomed and panned."""
    return tuple(
        page.evaluate(
            """([x, y]) => { const v = window.samDroplet.viewer; const r = v.canvas.getBoundingClientRect();
                const [sx, sy] = v.toScreen(x, y); return [r.left + sx, r.top + sy]; }""",
            [x, y],
        )
    )


def count(page) -> int:
    return int(page.inner_text("#count"))


def upload(page, *paths: Path) -> None:
    page.set_input_files("#file-input", [str(p) for p in paths])
    page.wait_for_selector("li.job.done, li.job.error", timeout=120_000)


def test_workbench(page, server, odd):
    scene, path = odd
    # The classical detector misses the dyed droplet (the droplet model finds it): the page adds it by hand below.
    api = requests.post(
        f"{server}/segment_file",
        files={"file": (path.name, path.read_bytes())},
        data={"detector": "classical"},
        timeout=120,
    ).json()
    requests_seen: list[str] = []
    page.on("request", lambda r: requests_seen.append(r.url))
    page.goto(server)
    page.screenshot(path=ARTIFACTS / "01_empty.png")
    page.select_option("#detector", "classical")

    # Upload: the count shown is the API's count for the same file.
    upload(page, path)
    assert "droplets" in page.inner_text("li.job.done .job-status")
    assert count(page) == api["num_droplets"] == scene.count - 1  # the dyed droplet is missed
    assert page.locator("#droplet-table tbody tr").count() == api["num_droplets"] + len(api["removed"])
    page.screenshot(path=ARTIFACTS / "02_result.png")

    # Hover shows the droplet's measurements.
    first = api["droplets"][0]
    page.mouse.move(*screen_point(page, *first["centroid"]))
    page.wait_for_selector("#tooltip:not([hidden])")
    assert f"#{first['id']}" in page.inner_text("#tooltip") and "diameter" in page.inner_text("#tooltip")

    # Click a droplet: it is removed and the count drops by one; undo brings it back.
    n = count(page)
    page.mouse.click(*screen_point(page, *first["centroid"]))
    assert count(page) == n - 1
    assert "removed by you" in page.inner_text(f'#droplet-table tr[data-id="{first["id"]}"]')
    page.screenshot(path=ARTIFACTS / "03_removed.png")
    page.click("#undo")
    assert count(page) == n
    page.mouse.click(*screen_point(page, *first["centroid"]))
    page.keyboard.press("Control+z")
    assert count(page) == n

    # Filters re-apply in the page without a new request.
    before = [u for u in requests_seen if "/segment" in u]
    diameters = sorted(d["equivalent_diameter_px"] for d in api["droplets"])
    limit = (diameters[len(diameters) // 2 - 1] + diameters[len(diameters) // 2]) / 2
    page.fill("#f-diameter-max", f"{limit:.4f}")
    expected = sum(d <= limit for d in diameters)
    expect(page.locator("#count")).to_have_text(str(expected))
    assert expected < n
    assert [u for u in requests_seen if "/segment" in u] == before
    page.screenshot(path=ARTIFACTS / "04_filtered.png")
    page.fill("#f-diameter-max", "")
    expect(page.locator("#count")).to_have_text(str(n))
    # A preset with the same detection hints refilters in the page too; one with other hints
    # (droplets carrying contents) segments the image again, and back.
    page.select_option("#preset", "polydisperse")
    assert [u for u in requests_seen if "/segment" in u] == before
    for name in ("droplets_with_contents", "default"):
        with page.expect_response(lambda r: r.url.endswith("/segment_file")):
            page.select_option("#preset", name)
        page.wait_for_selector("li.job.done", timeout=120_000)
    expect(page.locator("#count")).to_have_text(str(n))
    assert len([u for u in requests_seen if "/segment_file" in u]) == len(before) + 2

    # Sort the table by diameter, select a row: the droplet is highlighted.
    page.click("#droplet-table thead button:has-text('d (px)')")
    page.click("#droplet-table thead button:has-text('d (px)')")
    top = page.locator("#droplet-table tbody tr").first
    top.click()
    assert "selected" in top.get_attribute("class")
    assert page.evaluate("window.samDroplet.viewer.highlight !== null")

    # Add the missed droplet by clicking it.
    page.click("#fit")
    page.keyboard.press("a")
    assert page.is_checked("#tool-add")
    cx, cy = scene.centers[-1]
    page.mouse.click(*screen_point(page, cx, cy))
    expect(page.locator("#count")).to_have_text(str(n + 1))
    assert any("/segment_point" in u for u in requests_seen)
    added = page.evaluate("window.samDroplet.state.current.records.filter(r => r.added).map(r => r.area_px)")
    true_area = int(np.count_nonzero(scene.labels == scene.count))
    assert len(added) == 1 and abs(added[0] - true_area) / true_area < 0.1
    page.screenshot(path=ARTIFACTS / "05_added.png")

    # Clicking a background gap adds nothing and says so.
    page.mouse.click(*screen_point(page, 140, 140))
    expect(page.locator("#message")).to_contain_text("No droplet")
    assert count(page) == n + 1

    # Exports carry the corrections.
    page.keyboard.press("e")
    page.mouse.click(*screen_point(page, *first["centroid"]))
    assert count(page) == n
    with page.expect_download() as info:
        page.click("#export-csv")
    rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
    assert len(rows) == n
    assert str(first["id"]) not in {r["id"] for r in rows}
    assert sum(r["source"] == "manual" for r in rows) == 1
    # The same columns as the API's CSV of this image (the server defines them once).
    csv_file = {"file": (path.name, path.read_bytes())}
    served = requests.post(f"{server}/segment_file", files=csv_file, data={"format": "csv"}, timeout=120)
    assert list(rows[0]) == served.text.splitlines()[0].split(",")
    with page.expect_download() as info:
        page.click("#export-labels")
    from PIL import Image

    labels = np.array(Image.open(info.value.path()))
    assert labels.dtype == np.uint16 and labels.shape == scene.labels.shape
    assert len(np.unique(labels)) - 1 == n and first["id"] not in np.unique(labels)
    with page.expect_download() as info:
        page.click("#export-coco")
    coco = json.loads(Path(info.value.path()).read_text())
    assert len(coco["annotations"]) == n
    with page.expect_download() as info:
        page.click("#export-json")
    body = json.loads(Path(info.value.path()).read_text())
    assert body["corrections"]["removed"] == [first["id"]] and len(body["corrections"]["added"]) == 1
    with page.expect_download() as info:
        page.click("#export-overlay")
    assert Image.open(info.value.path()).size == (scene.image.shape[1], scene.image.shape[0])
    with page.expect_download() as info:
        page.click("#export-batch")
    batch = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
    assert batch[0]["file"] == path.name and int(batch[0]["droplets"]) == n
    # One schema with the command line's summary.csv, corrections counted.
    assert tuple(batch[0]) == BATCH_COLUMNS
    assert (batch[0]["removed_by_you"], batch[0]["added_by_you"]) == ("1", "1")

    # Zoom with the keyboard and the wheel, then fit.
    zoom = page.evaluate("window.samDroplet.viewer.zoom")
    page.focus("#viewer")
    page.keyboard.press("+")
    assert page.evaluate("window.samDroplet.viewer.zoom") > zoom
    page.mouse.move(*screen_point(page, 300, 200))
    page.mouse.wheel(0, 300)
    page.keyboard.press("0")
    assert abs(page.evaluate("window.samDroplet.viewer.zoom") - zoom) < 1e-6

    # Calibrate by drawing a line over a known length: 2 droplet spacings = 240 px = 120 um.
    page.keyboard.press("s")
    a, b = screen_point(page, 80, 140), screen_point(page, 320, 140)
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move((a[0] + b[0]) / 2, a[1], steps=4)
    page.mouse.move(*b, steps=4)
    page.mouse.up()
    page.fill("#scale-length", "120")
    page.click("#scale-form button[type=submit]")
    assert abs(float(page.input_value("#um-per-px")) - 0.5) < 0.02
    assert "µm" in page.inner_text("#stats") and "Mean volume (pL)" in page.inner_text("#stats")
    page.screenshot(path=ARTIFACTS / "06_calibrated.png")


def test_fluorescence_channel_and_threshold(page, server, tmp_path):
    pair = synthetic.fluorescence_pair(n=40, objects_mean=0.6, seed=3)
    bf, fl = tmp_path / "pair_bf.png", tmp_path / "pair_fl.png"
    bf.write_bytes(png_bytes(pair.brightfield.image))
    fl.write_bytes(png_bytes(pair.fluorescence))
    api = requests.post(
        f"{server}/segment_file",
        files={"file": (bf.name, bf.read_bytes()), "fluorescence": (fl.name, fl.read_bytes())},
        timeout=120,
    ).json()
    page.goto(server)
    upload(page, bf)
    page.set_input_files("li.job .fl-input", str(fl))
    page.wait_for_selector("#fl-panel:not([hidden])", timeout=120_000)
    page.wait_for_selector("li.job.done")
    ddpcr = page.inner_text("#ddpcr")
    assert f"Positive k\n{api['summary']['ddpcr']['k']}" in ddpcr.replace("\t", "\n")
    assert f"Droplets n\n{api['summary']['ddpcr']['n']}" in ddpcr.replace("\t", "\n")
    assert "Poisson" in page.inner_text("#occupancy")
    page.screenshot(path=ARTIFACTS / "07_fluorescence.png")

    # The slider re-classifies live: at its minimum every droplet is positive.
    k_before = page.evaluate(
        "window.samDroplet.state.current.kept.filter(r => r.fl_corrected_mean > window.samDroplet.state.current.threshold).length"
    )
    page.focus("#threshold")
    page.keyboard.press("Home")
    n = api["summary"]["ddpcr"]["n"]
    expect(page.locator("#ddpcr")).to_contain_text("saturated")
    assert k_before == api["summary"]["ddpcr"]["k"] < n
    page.screenshot(path=ARTIFACTS / "08_threshold_low.png")
    page.click("#threshold-auto")
    assert f"Positive k\n{api['summary']['ddpcr']['k']}" in page.inner_text("#ddpcr").replace("\t", "\n")


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    """A server with small limits: 4 segmentations a minute, 250k pixels, no waiting queue."""
    proc, url = _server(tmp_path_factory, "strict", RATE_LIMIT="4 per minute", MAX_IMAGE_PIXELS="250000", MAX_QUEUE="0")
    yield url
    proc.stop()


def test_errors_in_plain_words(page, strict_server, tmp_path):
    """415, 413, 503 and 429 from a real server, and a network failure, each next to its file."""
    import threading

    text = tmp_path / "notes.png"
    text.write_bytes(b"these are lab notes, not an image" * 10)
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(synthetic.sparse_emulsion(shape=(600, 600), n=10, seed=1).image))
    small = synthetic.sparse_emulsion(shape=(300, 400), n=12, seed=2)
    ok = tmp_path / "ok.png"
    ok.write_bytes(png_bytes(small.image))
    page.goto(strict_server)

    def status_of(name: str) -> str:
        row = page.locator("li.job", has_text=name)
        expect(row).to_have_class(re.compile(r"\b(done|error)\b"), timeout=120_000)
        return row.locator(".job-status").inner_text()

    page.set_input_files("#file-input", [str(text), str(big)])
    assert "not supported" in status_of("notes.png")  # 415
    assert "too large" in status_of("big.png")  # 413: too many pixels

    # 503: the only slot is taken by another client's segmentation and nothing may wait.
    slow = png_bytes(synthetic.packed_monolayer(shape=(480, 500), radius=5.0, seed=3).image)
    busy = threading.Thread(
        target=lambda: requests.post(f"{strict_server}/segment_file", files={"file": ("slow.png", slow)}, timeout=120)
    )
    busy.start()
    time.sleep(0.3)
    page.set_input_files("#file-input", [str(ok)])
    assert "busy" in status_of("ok.png")
    busy.join()

    # 429: the rate limit (4 a minute) is spent by now.
    page.click("li.job:has-text('ok.png') button:has-text('Retry')")
    assert "Too many requests" in status_of("ok.png")

    # The network fails (the connection is cut).
    page.route("**/segment_file", lambda route: route.abort("connectionreset"))
    page.click("li.job:has-text('ok.png') button:has-text('Retry')")
    assert "Could not reach the server" in status_of("ok.png")
    page.screenshot(path=ARTIFACTS / "09_errors.png")


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    proc, url = _server(tmp_path_factory, "keyed", API_KEYS=API_KEY)
    yield url
    proc.stop()


def test_api_key_prompt(page, keyed_server, odd):
    _, path = odd
    page.goto(keyed_server)
    assert API_KEY not in page.content()
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", API_KEY)
    page.click("#key-form button[type=submit]")
    assert page.evaluate("sessionStorage.getItem('sam_droplet_api_key')") == API_KEY
    upload(page, path)
    assert page.locator("li.job.done").count() == 1
    assert API_KEY not in page.content()


def test_dark_theme_and_large_image(browser, server, tmp_path):
    """A 2200x1700 image with about 1000 droplets in the dark theme: drawn, zoomed and panned."""
    image = synthetic.packed_monolayer(shape=(1700, 2200), radius=28.0, seed=5)
    path = tmp_path / "large.png"
    path.write_bytes(png_bytes(image.image))
    context = browser.new_context(viewport={"width": 1280, "height": 720}, color_scheme="dark")
    page = context.new_page()
    try:
        page.goto(server)
        upload(page, path)
        n = count(page)
        assert n > 900
        # Time 30 redraws after zoom steps, each read back so it is really drawn (reported, not
        # asserted: timings on shared machines are noisy).
        ms = page.evaluate(
            """() => { const v = window.samDroplet.viewer; const t0 = performance.now();
                for (let i = 0; i < 30; i++) { v.zoomAt(i % 2 ? 0.9 : 1.1, 400, 300); v.render(); v.ctx.getImageData(0, 0, 1, 1); }
                return (performance.now() - t0) / 30; }"""
        )
        print(f"redraw of a 2200x1700 image with {n} droplet outlines: {ms:.1f} ms per frame")
        page.screenshot(path=ARTIFACTS / "10_large_dark.png")
    finally:
        context.close()


def test_page_arithmetic_matches_the_server(page, server, odd):
    """The page's filters, statistics and ddPCR figures (static/js/analysis.js) equal the server's."""
    from sam_droplet.engine.fluorescence import ddpcr_statistics

    page.goto(server)
    for n, k in ((900, 180), (675, 19), (50, 0), (40, 40)):
        js = page.evaluate("async ([n, k]) => (await import('/static/js/analysis.js')).ddpcr(n, k, 0.52)", [n, k])
        py = ddpcr_statistics(n, k, 0.52)
        assert js["p_ci"] == pytest.approx(py["p_ci"], abs=2e-6)
        if k < n:
            assert js["lambda"] == pytest.approx(py["lambda"], abs=2e-6)
            assert js["copies_per_ul_ci"] == pytest.approx(py["copies_per_ul_ci"], rel=1e-5)
    # Filters with outlier fences on a packed monolayer: the same droplets removed for the same reasons.
    image = synthetic.packed_monolayer(shape=(512, 640), radius=13.0, seed=11)
    filters = {"circularity_min": 0.75, "outliers": "iqr", "outlier_factor": 1.0, "exclude_edge_touching": True}
    body = requests.post(
        f"{server}/segment_file",
        files={"file": ("packed.png", png_bytes(image.image))},
        data={"filters": json.dumps(filters)},
        timeout=120,
    ).json()
    records = body["droplets"] + body["removed"]
    reasons = page.evaluate(
        """async ([records, filters]) => [...(await import('/static/js/analysis.js'))
            .applyFilters(records, { ...filters, units: 'px' }, null).entries()]""",
        [[{k: v for k, v in r.items() if k != "mask"} for r in records], filters],
    )
    server_reasons = {r["id"]: r.get("removed_reason") for r in records}
    assert dict(reasons) == server_reasons
    assert sum(v == "outlier" for v in server_reasons.values()) > 0
    stats = page.evaluate(
        "async (d) => (await import('/static/js/analysis.js')).describe(d)",
        [r["equivalent_diameter_px"] for r in body["droplets"]],
    )
    server_stats = body["summary"]["diameter_px"]
    # Records carry 3 decimals: each diameter the page reads is off by up to 5e-4 px, and so can be
    # their mean, median and standard deviation (the CV by that over the mean).
    for key in ("mean", "median", "std"):
        assert stats[key] == pytest.approx(server_stats[key], abs=6e-4)
    assert stats["cv"] == pytest.approx(server_stats["cv"], abs=1.2e-3 / server_stats["mean"])
    # Size distribution and populations: the page's (live, after corrections) are the server's.
    from sam_droplet.engine.sizes import size_distribution, size_populations

    rng = np.random.default_rng(0)
    sets = {
        "records": [r["equivalent_diameter_px"] for r in body["droplets"]],
        "ddpcr qc": np.concatenate([rng.normal(40, 1.2, 700), rng.normal(50.4, 1.2, 30), rng.normal(18.6, 0.8, 12)]).tolist(),
        "bimodal": np.concatenate([rng.normal(20, 0.6, 120), rng.normal(40, 1.2, 80)]).tolist(),
    }
    for name, d in sets.items():
        js = page.evaluate(
            """async (d) => { const a = await import('/static/js/analysis.js');
                return [a.sizeDistribution(d, 'px'), a.sizePopulations(d, 'px')]; }""",
            d,
        )
        py = size_distribution(np.array(d), "px"), size_populations(np.array(d), "px")
        for key, value in py[0].items():
            assert js[0][key] == (value if not isinstance(value, float) else pytest.approx(value, rel=1e-9)), (name, key)
        assert [p["n"] for p in js[1]] == [p["n"] for p in py[1]], name
        for a, b in zip(js[1], py[1], strict=True):
            assert a["volume_fraction"] == pytest.approx(b["volume_fraction"], rel=1e-9)
    assert len(size_populations(np.array(sets["ddpcr qc"]), "px")) == 3


def test_sizes_contents_calibration_rois_and_reports(page, server, tmp_path):
    """Issue 19 in the page: the size table and populations as the server computes them, the
    calibration read from an ImageJ TIFF (and said so), bright-field contents, ImageJ ROIs that
    give back the droplets' pixels, and PDF reports with the user's corrections."""
    import subprocess

    import tifffile

    from sam_droplet.io.imagej import labels_from_rois

    scene = synthetic.droplets_with_beads(seed=3, beads_mean=1.2)
    path = tmp_path / "beads.tif"
    tifffile.imwrite(path, scene.image.image, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um"})
    fields = {"preset": "droplets_with_contents", "spot_diameter_px": "6"}
    api = requests.post(f"{server}/segment_file", files={"file": (path.name, path.read_bytes())}, data=fields, timeout=120).json()
    assert api["calibration"] == {"um_per_px": 0.5, "source": "file"}
    page.goto(server)
    page.select_option("#preset", "droplets_with_contents")
    page.fill("#spot-diameter", "6")
    upload(page, path)
    # Calibrated from the file, and the page says where the value came from.
    assert page.input_value("#um-per-px") == "0.5"
    expect(page.locator("#calibration-source")).to_contain_text("metadata of beads.tif")
    size = api["summary"]["size"]
    text = page.inner_text("#size-table").replace("\t", "\n")
    assert f"Dv50 (µm)\n{size['dv50']:.2f}" in text and f"D[3,2] Sauter (µm)\n{size['d32']:.2f}" in text
    assert page.locator("#populations tr").count() == len(api["summary"]["populations"]) + 1
    # Contents in bright field: the page's occupancy is the server's.
    assert page.is_visible("#contents-panel")
    observed = [int(t) for t in page.locator("#contents-occupancy tr").nth(1).locator("td").all_inner_texts()]
    assert observed == api["summary"]["contents"]["observed"]
    page.select_option("#cumulative-weight", "number")
    page.locator("#size-panel").screenshot(path=ARTIFACTS / "11_size_panel.png")

    # Remove one droplet by hand: every export below leaves it out.
    first = api["droplets"][0]
    page.mouse.click(*screen_point(page, *first["centroid"]))
    assert count(page) == api["num_droplets"] - 1
    with page.expect_download() as info:
        page.click("#export-imagej")
    zipped = Path(info.value.path()).read_bytes()
    labels = labels_from_rois(zipped, scene.image.labels.shape)
    with page.expect_download() as info:
        page.click("#export-labels")
    from PIL import Image

    page_labels = np.array(Image.open(info.value.path()))
    # ROI k is the k-th kept droplet; filled as ImageJ fills it, it is that droplet's pixels exactly.
    kept_ids = sorted(set(np.unique(page_labels)) - {0})
    assert len(np.unique(labels)) - 1 == len(kept_ids) == api["num_droplets"] - 1
    for k, droplet_id in enumerate(kept_ids, start=1):
        assert np.array_equal(labels == k, page_labels == droplet_id), droplet_id

    for button, pages in (("#export-report", 1), ("#export-batch-report", 1)):
        with page.expect_download(timeout=120_000) as info:
            page.click(button)
        pdf = Path(info.value.path())
        assert pdf.read_bytes()[:5] == b"%PDF-"
        png = ARTIFACTS / f"12_{button.lstrip('#')}"
        subprocess.run(["pdftoppm", "-r", "60", "-png", str(pdf), str(png)], check=True, timeout=60)
        rendered = sorted(ARTIFACTS.glob(f"{png.name}-*.png"))
        assert len(rendered) == pages and Image.open(rendered[0]).size[0] > 400
    expect(page.locator("#message")).to_contain_text("ready")


def test_a_video_runs_as_a_job_with_frames_tracks_plots_and_exports(page, server, tmp_path):
    """A generated channel-flow video dropped on the page: uploaded as a job, its progress and ETA
    shown, then the frames with outlines coloured by track and their tails, a slider, the speed,
    crossing and size plots, the tracks table and the files. A second video is cancelled."""
    from sam_droplet.tools.synthetic_video import channel_flow, write_avi

    flow = channel_flow(n_frames=60, seed=0)
    video = write_avi(flow, tmp_path / "channel.avi")
    page.goto(server)
    page.click("#long-card summary")  # the video options
    page.fill("#job-fps", "100")
    page.set_input_files("#file-input", str(video))  # a video dropped with the images goes to the jobs
    page.wait_for_selector("li.job.long.running, li.job.long.done", timeout=60_000)
    running = page.locator("li.job.long .job-status").inner_text()
    page.screenshot(path=str(ARTIFACTS / "video_1_running.png"))
    page.wait_for_selector("li.job.long.done", timeout=180_000)
    expect(page.locator("#frame-label")).to_contain_text("droplets", timeout=30_000)
    assert re.match(r"(frame \d+ of 60|waiting|uploading|done)", running), running
    assert not page.locator("#motion-stage").is_hidden() and page.locator("#image-stage").is_hidden()
    summary = page.inner_text("#motion-summary")
    assert "Crossing frequency (Hz)" in summary and "Merges\n1" in summary.replace("\t", "\n"), summary
    frequency = float(re.search(r"Crossing frequency \(Hz\)\s+([\d.]+)", summary).group(1))
    assert frequency == pytest.approx(flow.crossing_frequency_hz(), rel=0.02)
    assert page.locator("#motion-table tbody tr").count() >= 10
    assert page.locator("#motion-events li").count() >= 1
    # The slider moves through the frames; the outlines and tails are drawn over each.
    page.locator("#frame-slider").fill("40")
    expect(page.locator("#frame-label")).to_contain_text(re.compile(r"^frame 40 "))
    coloured = page.evaluate(
        """() => { const c = document.querySelector('#motion-canvas'); const d = c.getContext('2d')
              .getImageData(0, 0, c.width, c.height).data; let n = 0;
              for (let i = 0; i < d.length; i += 4) if (Math.max(d[i], d[i+1], d[i+2]) - Math.min(d[i], d[i+1], d[i+2]) > 80) n++;
              return n; }"""
    )
    assert coloured > 500, coloured  # the frames are gray: colour is outlines and tails
    page.screenshot(path=str(ARTIFACTS / "video_2_frame40.png"))
    page.uncheck("#show-tails")
    without_tails = page.evaluate(
        """() => { const c = document.querySelector('#motion-canvas'); const d = c.getContext('2d')
              .getImageData(0, 0, c.width, c.height).data; let n = 0;
              for (let i = 0; i < d.length; i += 4) if (Math.max(d[i], d[i+1], d[i+2]) - Math.min(d[i], d[i+1], d[i+2]) > 80) n++;
              return n; }"""
    )
    assert without_tails < coloured
    page.check("#show-tails")
    # The event list jumps to the merge.
    page.locator("#motion-events li").first.click()
    expect(page.locator("#frame-label")).to_contain_text(re.compile(rf"^frame {flow.merge_frame} "))
    page.screenshot(path=str(ARTIFACTS / "video_3_merge.png"))
    # Exports: the tracks table and the ZIP of every file.
    with page.expect_download() as dl:
        page.click("[data-job-export=csv]")
    assert dl.value.suggested_filename == "channel_tracks.csv"
    tracks = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    assert len(tracks) >= 10 and "speed_px_per_s" in tracks[0]
    with page.expect_download() as dl:
        page.click("[data-job-export=zip]")
    assert dl.value.suggested_filename == "channel_results.zip"
    # Back to the images; a second video cancelled while it runs.
    page.click("#motion-close")
    assert page.locator("#motion-stage").is_hidden() and not page.locator("#image-stage").is_hidden()
    long_video = write_avi(channel_flow(n_frames=400, seed=1), tmp_path / "long.avi")
    page.set_input_files("#long-input", str(long_video))
    page.wait_for_selector("li.job.long.running >> text=/frame \\d+ of 400/", timeout=60_000)
    expect(page.locator("li.job.long.running .job-status")).to_contain_text("left", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "video_4_progress.png"))
    page.locator("li.job.long.running button.cancel").click()
    page.wait_for_selector("li.job.long.cancelled", timeout=30_000)


def test_a_zip_of_images_runs_as_a_batch_job(page, server, tmp_path):
    import zipfile

    archive = tmp_path / "plate.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"well_{i}.png", png_bytes(synthetic.sparse_emulsion(seed=i).image))
        zf.writestr("broken.png", b"not a png")
    page.goto(server)
    page.set_input_files("#long-input", str(archive))
    page.wait_for_selector("li.job.long.done", timeout=180_000)
    page.wait_for_selector("#motion-table tbody tr")
    assert page.locator("#motion-table tbody tr").count() == 4
    assert "Failed\n1" in page.inner_text("#motion-summary").replace("\t", "\n")
    assert page.locator("#frame-slider").is_hidden() and page.locator("#motion-box").is_hidden()
    page.screenshot(path=str(ARTIFACTS / "batch.png"))
    with page.expect_download() as dl:
        page.click("[data-job-export=zip]")
    names = set(zipfile.ZipFile(dl.value.path()).namelist())
    assert {"summary.csv", "images/well_0.csv", "images/well_2_overlay.png"} <= names


def test_the_auto_preset_shows_what_the_image_chose(page, server, tmp_path):
    """The page starts on the auto preset: the server chooses each image's filters, and the filter
    fields show the choice for the image on screen until the person edits one."""
    scene = synthetic.packed_monolayer(seed=5)
    path = tmp_path / "monolayer.png"
    path.write_bytes(png_bytes(scene.image))
    page.goto(server)
    assert page.input_value("#preset") == "auto"
    upload(page, path)
    expect(page.locator("#preset-help")).to_contain_text("Auto: packed monolayer for this image")
    assert page.input_value("#f-outliers") == "iqr" and page.input_value("#f-circularity-min") == "0.75"
    shown = count(page)
    server_kept = page.evaluate("() => window.samDroplet.state.current.result.num_droplets")
    assert shown == server_kept  # the page judges the image by the filters the server chose
    page.screenshot(path=str(ARTIFACTS / "auto_preset.png"))
    # Choosing a preset by hand applies it to every image at once.
    page.select_option("#preset", "default")
    expect(page.locator("#preset-help")).not_to_contain_text("Auto")
    assert page.input_value("#f-outliers") == "none" and count(page) >= shown


def test_the_auto_preset_says_what_lies_inside_the_droplets(page, server, tmp_path):
    """A monolayer whose droplets carry beads: the page says the objects inside are contents."""
    scene = synthetic.monolayer_with_contents(seed=3)
    path = tmp_path / "carrying.png"
    path.write_bytes(png_bytes(scene.image.image))
    page.goto(server)
    upload(page, path)
    expect(page.locator("#preset-help")).to_contain_text("Auto: packed monolayer for this image")
    expect(page.locator("#preset-help")).to_contain_text("objects inside droplets are their contents")
