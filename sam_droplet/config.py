"""Configuration: every setting in one place, read from the environment (and ``.env``).

Each setting has a default, and a wrong value stops startup with one line that names the variable
and what it accepts. ``.env.example`` documents the same settings for people.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["MODEL_TYPES", "SEGMENTERS", "Config"]

SEGMENTERS = ("auto", "sam", "classical", "grid")
MODEL_TYPES = ("vit_t", "vit_b", "vit_l", "vit_h")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}={raw!r} is not valid: use true or false")


def _int(lo: int, hi: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip().replace("_", ""))
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not valid: use a whole number") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"
            raise ConfigError(f"{name}={raw!r} is not valid: use a whole number {bound}")
        return value

    return parse


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not valid: use a positive number") from None
    if not (value > 0 and value < float("inf")):
        raise ConfigError(f"{name}={raw!r} is not valid: use a positive number")
    return value


def _choice(options: tuple[str, ...], upper: bool = False) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in options:
            raise ConfigError(f"{name}={raw!r} is not valid: use one of {', '.join(options)}")
        return value

    return parse


def _device(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value in ("auto", "cpu", "cuda", "mps") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise ConfigError(f"{name}={raw!r} is not valid: use auto, cpu, cuda, cuda:N or mps")


def _text(name: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ConfigError(f"{name} is empty: give a value or remove the variable")
    return value


def _path(name: str, raw: str) -> Path:
    return Path(_text(name, raw)).expanduser()


@dataclass(frozen=True)
class Config:
    """Service settings. Build with :meth:`from_env` (environment and ``.env``) or :meth:`from_mapping`.

    Attributes:
        host: address the development server and Waitress bind to (FLASK_HOST).
        port: TCP port (FLASK_PORT).
        debug: Flask debug mode; never on unless asked for (FLASK_DEBUG).
        model_path: SAM checkpoint file (SAM_MODEL_PATH).
        model_type: SAM architecture: vit_t (MobileSAM), vit_b, vit_l, vit_h (SAM_MODEL_TYPE).
        device: auto (cuda when available, else cpu), cpu, cuda, cuda:N or mps (SAM_DEVICE).
        segmenter: default segmenter: auto (sam when the checkpoint loads, else classical), sam,
            classical or grid (SEGMENTER).
        max_upload_mb: largest request body in MB (MAX_UPLOAD_MB).
        max_image_pixels: largest image in pixels, checked from the header (MAX_IMAGE_PIXELS).
        log_level: logging level (LOG_LEVEL).
        sam_batch_size: prompts decoded per batch in sam mode; 0 = auto: 4 on a CPU (small batches
            stay in cache and run twice as fast per prompt), 64 on a GPU (SAM_BATCH_SIZE).
        torch_threads: CPU threads for torch; 0 = leave torch's default (TORCH_THREADS).
        grid_points_per_side: point grid of the grid segmenter (GRID_POINTS_PER_SIDE).
        grid_crop_n_layers: crop layers of the grid segmenter (GRID_CROP_N_LAYERS).
    """

    host: str = "0.0.0.0"
    port: int = 9487
    debug: bool = False
    model_path: Path = Path("model/mobile_sam.pt")
    model_type: str = "vit_t"
    device: str = "auto"
    segmenter: str = "auto"
    max_upload_mb: float = 50.0
    max_image_pixels: int = 64_000_000
    log_level: str = "INFO"
    sam_batch_size: int = 0
    torch_threads: int = 0
    grid_points_per_side: int = 32
    grid_crop_n_layers: int = 1

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> Config:
        """Settings from ``values`` (environment-variable names) over the defaults.

        Raises:
            ConfigError: a value is wrong; the message names the variable.
        """
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            env_name, parse = _VARIABLES[f.name]
            if env_name in values:
                kwargs[f.name] = parse(env_name, str(values[env_name]))
        return cls(**kwargs)

    @classmethod
    def from_env(cls, overrides: Mapping[str, str] | None = None, dotenv_path: str | None = ".env") -> Config:
        """Settings from the process environment (after loading ``.env``, which never overrides it),
        with ``overrides`` (e.g. command-line options) on top."""
        if dotenv_path:
            from dotenv import load_dotenv

            load_dotenv(dotenv_path, override=False)
        return cls.from_mapping({**os.environ, **(overrides or {})})

    def describe(self) -> dict[str, Any]:
        """The settings as environment variables and values (for logs and ``sam-droplet config``)."""
        return {_VARIABLES[f.name][0]: str(getattr(self, f.name)) for f in fields(self)}


_VARIABLES: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "host": ("FLASK_HOST", _text),
    "port": ("FLASK_PORT", _int(1, 65535)),
    "debug": ("FLASK_DEBUG", _bool),
    "model_path": ("SAM_MODEL_PATH", _path),
    "model_type": ("SAM_MODEL_TYPE", _choice(MODEL_TYPES)),
    "device": ("SAM_DEVICE", _device),
    "segmenter": ("SEGMENTER", _choice(SEGMENTERS)),
    "max_upload_mb": ("MAX_UPLOAD_MB", _positive_float),
    "max_image_pixels": ("MAX_IMAGE_PIXELS", _int(1024)),
    "log_level": ("LOG_LEVEL", _choice(LOG_LEVELS, upper=True)),
    "sam_batch_size": ("SAM_BATCH_SIZE", _int(0, 4096)),
    "torch_threads": ("TORCH_THREADS", _int(0, 1024)),
    "grid_points_per_side": ("GRID_POINTS_PER_SIDE", _int(1, 128)),
    "grid_crop_n_layers": ("GRID_CROP_N_LAYERS", _int(0, 4)),
}
