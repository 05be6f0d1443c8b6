"""The Python API: one call segments an array or a file, with or without SAM, and no web layer loads."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sam_droplet as sd
from sam_droplet.tools import synthetic

from .conftest import ROOT, png_bytes

PACKAGE = ROOT / "sam_droplet"


def readme_snippet() -> str:
    """The README's first Python example (the front door's promise)."""
    match = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert match, "README.md has no Python example"
    return match.group(1)


def run_snippet(folder: Path, image: np.ndarray) -> dict:
    """Run the README's example in ``folder`` with its image (and a short video) there, as a user would."""
    from sam_droplet.tools.synthetic_video import channel_flow, write_avi

    (folder / "droplets.png").write_bytes(png_bytes(image))
    write_avi(channel_flow(n_frames=6, coalescence=False), folder / "channel.avi")
    scope: dict = {}
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        exec(compile(readme_snippet(), "README.md", "exec"), scope)
    finally:
        os.chdir(cwd)
    return scope


def check_result(r: sd.Result, image: np.ndarray) -> None:
    assert r.labels.dtype == np.uint32 and r.labels.shape == image.shape[:2]
    ids = {d.id for d in r.droplets}
    assert set(np.unique(r.labels)) - {0} == ids and len(ids) > 50
    for d in r.droplets[:5]:
        assert np.count_nonzero(r.labels == d.id) == d.area_px == d.as_dict()["area_px"]
    assert r.removed and all(d.removed_reason for d in r.removed)
    assert r.summary["count"] == len(r.droplets)


def test_import_does_not_load_flask_or_torch():
    code = "import sys, sam_droplet; print(sorted({'flask', 'torch', 'werkzeug'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_no_module_below_the_web_layer_imports_it():
    """The library knows nothing of HTTP: no Flask, no web config, admission or cache outside web/."""
    forbidden = re.compile(r"^(flask|werkzeug|flask_limiter|prometheus_client)(\.|$)|(^|\.)web(\.|$)")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "web" or (rel.name == "__init__.py" and rel.parent == Path(".")):
            continue  # the web layer itself; the package's lazy create_app
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else ["." * node.level + (node.module or "")]
            offenders += [f"{rel}: {n}" for n in names if forbidden.search(n.lstrip("."))]
    # The command line starts the server, and only there (imported inside `serve`, `config` and
    # `worker`, which reads the server's job settings).
    assert sorted(set(offenders)) == ["cli.py: .web", "cli.py: .web.config", "cli.py: .web.waitress_server"], offenders


def test_readme_example_without_a_checkpoint(tmp_path, packed):
    scope = run_snippet(tmp_path, packed.image)
    model, r = scope["model"], scope["r"]
    assert model.status == "degraded" and "not found" in model.status_reason and model.model is None
    assert r.segmenter == "classical"
    check_result(r, packed.image)
    assert (tmp_path / "droplets.csv").read_text().startswith("id,centroid_x_px")
    t = scope["t"]
    assert t.summary["frames"] == 6 and t.summary["fps"] == 100 and t.tracks and t.positions


def test_readme_example_with_a_checkpoint(tmp_path, packed, random_checkpoint):
    (tmp_path / "model").mkdir()
    shutil.copy(random_checkpoint, tmp_path / "model" / "mobile_sam.pt")
    scope = run_snippet(tmp_path, packed.image)
    assert scope["model"].status == "ok" and scope["r"].segmenter == "sam"
    check_result(scope["r"], packed.image)


def test_arrays_of_every_kind_and_paths_give_the_same_droplets(tmp_path):
    gray8 = synthetic.packed_monolayer(shape=(256, 320), radius=12, seed=1).image
    reference = sd.segment(gray8)
    n = len(reference.droplets)
    path = tmp_path / "p.png"
    path.write_bytes(png_bytes(gray8))
    kinds = {
        "uint16": gray8.astype(np.uint16) * 257,
        "float": gray8.astype(np.float32) / 255,
        "float64": gray8.astype(np.float64),
        "rgb": np.repeat(gray8[:, :, None], 3, axis=2),
        "path": path,
        "str path": str(path),
        "bytes": path.read_bytes(),
    }
    for name, source in kinds.items():
        r = sd.segment(source)
        assert abs(len(r.droplets) - n) <= 2, (name, len(r.droplets), n)
    assert sd.segment(path).image.sha256 == sd.read_image(path.read_bytes()).sha256
    assert sd.segment(kinds["uint16"]).droplets[0].intensity_max > 255  # measured on the original values


def test_bad_input_is_refused_clearly(packed):
    with pytest.raises(sd.InvalidImage, match="HxW"):
        sd.segment(np.zeros((4, 50, 50)))
    with pytest.raises(sd.InvalidImage, match="NaN"):
        sd.segment(np.full((64, 64), np.nan))
    with pytest.raises(sd.InvalidImage, match="at least 16x16"):
        sd.segment(np.zeros((8, 8), np.uint8))
    with pytest.raises(sd.InvalidOptions, match="unknown preset"):
        sd.segment(packed.image, preset="nope")
    with pytest.raises(sd.NotReady, match="load_model"):
        sd.segment(packed.image, segmenter="sam")
    with pytest.raises(TypeError, match="unexpected options"):
        sd.segment(packed.image, colour="red")
    with pytest.raises(sd.ImageTooLarge):
        sd.segment(packed.image, max_pixels=1000)


def test_required_model_and_check_callback(tmp_path, packed):
    with pytest.raises(sd.StartupError, match="not found"):
        sd.load_model(tmp_path / "absent.pt", required=True)
    with pytest.raises(sd.ConfigError, match="model_type='vit_x' is not valid: use one of vit_t"):
        sd.load_model(tmp_path / "absent.pt", model_type="vit_x")
    stages: list[str] = []
    sd.segment(packed.image, check=stages.append)
    # Called at bounded intervals inside every stage (a deadline can stop any of them), in order.
    assert {"droplet proposals", "boundary fit", "detection", "refinement", "measurement"} <= set(stages)
    assert stages.index("detection") < stages.index("refinement") < stages.index("measurement")

    class Stop(Exception):
        pass

    def stop(stage: str) -> None:
        raise Stop(stage)

    # The first check comes inside detection, before any proposal is computed.
    with pytest.raises(Stop, match="droplet proposals"):
        sd.segment(packed.image, check=stop)


def test_fluorescence_only_picture_finds_bright_droplets():
    pair = synthetic.fluorescence_pair(n=30, seed=4)
    r = sd.segment(pair.fluorescence, fluorescence=pair.fluorescence)
    assert r.details["detector"]["appearance"] == "bright" and r.summary["ddpcr"]["n"] == len(r.droplets) > 20


def test_python_api_doc_examples_run(tmp_path, packed):
    """Every example of docs/python-api.md runs as written, in a folder with the files it names."""
    (tmp_path / "droplets.png").write_bytes(png_bytes(packed.image))
    pair = synthetic.fluorescence_pair(n=30, seed=4)
    (tmp_path / "brightfield.png").write_bytes(png_bytes(pair.brightfield.image))
    (tmp_path / "green.png").write_bytes(png_bytes(pair.fluorescence))
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "python-api.md").read_text(), re.S)
    assert len(blocks) >= 6
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        for i, block in enumerate(blocks):
            exec(compile(block, f"docs/python-api.md, example {i + 1}", "exec"), {})
    finally:
        os.chdir(cwd)
    assert (tmp_path / "summary.csv").is_file() and (tmp_path / "overlay.png").is_file()


def test_readme_layout_names_every_module():
    """The README's Layout section matches the folders: every module and script of the package is named."""
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout") :]
    layout = layout[layout.index("```") : layout.index("```", layout.index("```") + 3)]
    missing = []
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix not in (".py", ".js") or path.name == "__init__.py" or "__pycache__" in path.parts:
            continue
        if path.name not in layout and path.stem not in layout:
            missing.append(str(path.relative_to(ROOT)))
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    missing += [f"{name}/" for name in sorted(folders) if f"{name}/" not in layout]
    assert not missing, f"README.md Layout does not name: {missing}"


def test_one_source_of_truth_for_settings(classical_engine):
    """The app's engine settings are its engine's: a config saying otherwise is not kept beside it."""
    from sam_droplet.settings import EngineSettings
    from sam_droplet.web import create_app
    from sam_droplet.web.config import Config

    app = create_app(Config(engine=EngineSettings(segmenter="auto", sam_batch_size=7)), engine=classical_engine)
    service = app.extensions["sam_droplet"]
    assert service.config.engine is classical_engine.settings and service.engine is classical_engine
    assert app.test_client().get("/health").get_json()["segmenter"] == "classical"
