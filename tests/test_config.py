"""Configuration from the environment and .env; one clear line for a bad value."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sam_droplet.errors import ConfigError
from sam_droplet.settings import EngineSettings
from sam_droplet.web.config import Config

ROOT = Path(__file__).resolve().parent.parent


def test_defaults():
    cfg = Config.from_mapping({})
    engine, server = cfg.engine, cfg.server
    assert (server.host, server.port, server.debug) == ("0.0.0.0", 9487, False)
    assert engine.model_path == Path("model/mobile_sam.pt") and engine.model_type == "vit_t"
    assert engine.device == "auto" and engine.segmenter == "auto"
    assert server.max_upload_mb == 50 and server.max_image_pixels == 64_000_000 and server.log_level == "INFO"
    assert engine == EngineSettings.from_mapping({}) == EngineSettings()


def test_engine_and_server_settings_are_apart():
    # The library's settings know nothing of the web server, and each variable has one home.
    engine_vars, server_vars = EngineSettings().describe(), Config().server.describe()
    assert not set(engine_vars) & set(server_vars)
    assert "SAM_MODEL_PATH" in engine_vars and "FLASK_PORT" in server_vars and "API_KEYS" in server_vars
    assert EngineSettings.from_mapping({"FLASK_PORT": "nonsense", "SEGMENTER": "classical"}).segmenter == "classical"


def test_values_are_parsed():
    cfg = Config.from_mapping(
        {
            "FLASK_PORT": "8000",
            "FLASK_DEBUG": "yes",
            "SAM_MODEL_TYPE": "VIT_B",
            "SAM_DEVICE": "cuda:1",
            "SEGMENTER": "classical",
            "MAX_UPLOAD_MB": "12.5",
            "MAX_IMAGE_PIXELS": "1_000_000",
            "LOG_LEVEL": "debug",
        }
    )
    engine, server = cfg.engine, cfg.server
    assert server.port == 8000 and server.debug is True and engine.model_type == "vit_b" and engine.device == "cuda:1"
    assert engine.segmenter == "classical"
    assert server.max_upload_bytes == int(12.5 * 2**20) and server.max_image_pixels == 1_000_000
    assert server.log_level == "DEBUG"


@pytest.mark.parametrize(
    "name, value, accepts",
    [
        ("FLASK_PORT", "http", "whole number"),
        ("FLASK_PORT", "70000", "from 1 to 65535"),
        ("FLASK_DEBUG", "maybe", "true or false"),
        ("SAM_MODEL_TYPE", "vit_x", "vit_t, vit_b, vit_l, vit_h"),
        ("SAM_DEVICE", "gpu", "auto, cpu, cuda, cuda:N or mps"),
        ("SEGMENTER", "magic", "auto, sam, classical, grid"),
        ("MAX_UPLOAD_MB", "-5", "positive number"),
        ("MAX_UPLOAD_MB", "nan", "positive number"),
        ("MAX_IMAGE_PIXELS", "12", "at least 1024"),
        ("LOG_LEVEL", "LOUD", "DEBUG, INFO"),
        ("SAM_MODEL_PATH", "  ", "empty"),
    ],
)
def test_bad_values_name_the_variable_and_what_it_accepts(name, value, accepts):
    with pytest.raises(ConfigError) as info:
        Config.from_mapping({name: value})
    message = str(info.value)
    assert message.startswith(name) and accepts in message and "\n" not in message


def test_dotenv_is_read_but_never_overrides_the_environment(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("FLASK_PORT=9999\nSEGMENTER=classical\n")
    monkeypatch.delenv("FLASK_PORT", raising=False)
    monkeypatch.setenv("SEGMENTER", "grid")
    cfg = Config.from_env(dotenv_path=str(env_file))
    assert cfg.server.port == 9999 and cfg.engine.segmenter == "grid"
    assert Config.from_env({"FLASK_PORT": "1234"}, dotenv_path=None).server.port == 1234
    os.environ.pop("FLASK_PORT", None)  # set by load_dotenv, unknown to monkeypatch


def test_env_example_documents_every_setting():
    text = (ROOT / ".env.example").read_text()
    for name in Config.from_mapping({}).describe():
        assert f"\n{name}=" in text, name


def test_app_py_stops_with_one_clear_line(tmp_path):
    env = {**os.environ, "SAM_DEVICE": "gpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "app.py")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["sam-droplet: cannot start: SAM_DEVICE='gpu' is not valid: use auto, cpu, cuda, cuda:N or mps"]
