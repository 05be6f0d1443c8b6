"""The command line: batch segmentation, weights download/verify, configuration."""

import csv
import hashlib
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from sam_droplet.cli import main
from sam_droplet.io.write import BATCH_COLUMNS

from .conftest import png_bytes


@pytest.fixture()
def image_dir(tmp_path, packed, fluorescent):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "packed.png").write_bytes(png_bytes(packed.image))
    (folder / "fluo.png").write_bytes(png_bytes(fluorescent.image))
    (folder / "notes.txt").write_text("not an image, skipped by suffix")
    return folder


@pytest.mark.parametrize(
    "fmt, suffix",
    [
        ("csv", "_droplets.csv"),
        ("json", ".json"),
        ("labels", "_labels.png"),
        ("overlay", "_overlay.png"),
        ("coco", "_coco.json"),
    ],
)
def test_segment_folder(image_dir, tmp_path, fmt, suffix, monkeypatch):
    monkeypatch.setenv("SEGMENTER", "classical")
    out = tmp_path / f"out_{fmt}"
    assert main(["segment", str(image_dir), "--out", str(out), "--format", fmt, "--quiet", "--um-per-px", "0.5"]) == 0
    for stem in ("packed", "fluo"):
        assert (out / f"{stem}{suffix}").stat().st_size > 0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert tuple(rows[0]) == BATCH_COLUMNS  # the page's batch CSV has the same columns
    assert [Path(r["file"]).name for r in rows] == ["fluo.png", "packed.png"]
    assert all(int(r["droplets"]) > 20 for r in rows) and float(rows[0]["diameter_mean_um"]) > 0
    if fmt == "labels":
        labels = cv2.imread(str(out / "packed_labels.png"), cv2.IMREAD_UNCHANGED)
        assert labels.dtype == np.uint16 and labels.max() > 100
    if fmt == "json":
        saved = json.loads((out / "packed.json").read_text())
        assert "success" not in saved and saved["num_droplets"] == int(rows[1]["droplets"])


def test_segment_with_reports_contents_and_imagej(image_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGMENTER", "classical")
    out = tmp_path / "rep"
    args = ["segment", str(image_dir), "--out", str(out), "--format", "imagej", "--report", "--contents", "--quiet"]
    assert main(args) == 0
    for stem in ("packed", "fluo"):
        assert (out / f"{stem}_report.pdf").read_bytes()[:5] == b"%PDF-"
        assert (out / f"{stem}_rois.zip").read_bytes()[:2] == b"PK"
    assert (out / "batch_report.pdf").read_bytes()[:5] == b"%PDF-"
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert all(r["contents_mean"] != "" and float(r["dv50"]) > 0 and int(r["populations"]) >= 1 for r in rows)


def test_segment_reports_bad_files_and_continues(tmp_path, image_dir, monkeypatch, capsys):
    monkeypatch.setenv("SEGMENTER", "classical")
    (image_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code = main(["segment", str(image_dir), "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 1
    assert "broken.png" in capsys.readouterr().err
    rows = list(csv.DictReader((tmp_path / "o" / "summary.csv").open()))
    assert len(rows) == 3 and any(r["error"] for r in rows)


def test_segment_with_sam(tmp_path, image_dir, random_checkpoint, monkeypatch):
    monkeypatch.setenv("SAM_MODEL_PATH", str(random_checkpoint))
    monkeypatch.setenv("SAM_DEVICE", "cpu")
    small = tmp_path / "one"
    small.mkdir()
    img = cv2.imread(str(image_dir / "fluo.png"), cv2.IMREAD_GRAYSCALE)[:128, :128]
    cv2.imwrite(str(small / "crop.png"), img)
    assert (
        main(["segment", str(small), "--out", str(tmp_path / "s"), "--segmenter", "sam", "--format", "json", "--quiet"])
        == 0
    )
    assert json.loads((tmp_path / "s" / "crop.json").read_text())["segmenter"] == "sam"


def test_bad_options_exit_2(tmp_path, image_dir, capsys):
    assert main(["segment", str(image_dir), "--out", str(tmp_path / "x"), "--filters", "{nope"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["segment", str(image_dir), "--out", str(tmp_path / "x"), "--um-per-px", "-3"]) == 2


class _FileServer:
    """A real HTTP server on loopback serving one payload."""

    def __init__(self, payload: bytes):
        payload_ = payload

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload_)))
                self.end_headers()
                self.wfile.write(payload_)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mobile_sam.pt"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_weights_download_verifies_the_hash(tmp_path, capsys):
    payload = b"pretend checkpoint bytes" * 1000
    server = _FileServer(payload)
    try:
        dest = tmp_path / "model" / "mobile_sam.pt"
        good = hashlib.sha256(payload).hexdigest()
        assert main(["weights", "download", "--path", str(dest), "--url", server.url, "--sha256", good, "--quiet"]) == 0
        assert dest.read_bytes() == payload and "verified" in capsys.readouterr().out
        bad = tmp_path / "bad.pt"
        assert main(["weights", "download", "--path", str(bad), "--url", server.url, "--quiet"]) == 1
        err = capsys.readouterr().err
        assert "expected 6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f" in err
        assert not bad.exists() and not list(tmp_path.glob("*.part"))
    finally:
        server.close()


def test_weights_download_offline_says_what_to_do(tmp_path, capsys):
    code = main(
        [
            "weights",
            "download",
            "--path",
            str(tmp_path / "m.pt"),
            "--url",
            "http://127.0.0.1:9/mobile_sam.pt",
            "--quiet",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot download mobile_sam.pt" in err and "by hand" in err and "http://127.0.0.1:9/mobile_sam.pt" in err


def test_weights_verify(tmp_path, capsys):
    wrong = tmp_path / "mobile_sam.pt"
    wrong.write_bytes(b"not the real weights")
    assert main(["weights", "verify", "--path", str(wrong)]) == 1
    assert "download it again" in capsys.readouterr().err
    assert main(["weights", "verify", "--path", str(tmp_path / "none.pt")]) == 1


def test_console_scripts_and_config(tmp_path):
    def run(name: str, *args: str) -> subprocess.CompletedProcess:
        exe = Path(sys.executable).with_name(name)
        env = {"PATH": "/usr/bin:/bin", "SEGMENTER": "classical"}
        return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)

    proc = run("sam-droplet", "config")
    assert proc.returncode == 0, proc.stderr
    assert "SEGMENTER=classical" in proc.stdout and "FLASK_PORT=9487" in proc.stdout
    # Each instrument is a command of its own.
    for tool in ("sam-droplet-evaluate", "sam-droplet-bench", "sam-droplet-synthetic"):
        proc = run(tool, "--help")
        assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {tool}"), (tool, proc.stderr)
