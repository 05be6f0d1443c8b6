"""Configuration: every setting in one place, read from the environment (and ``.env``).

Each setting has a default, and a wrong value stops startup with one line that names the variable
and what it accepts. ``.env.example`` documents the same settings for people.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["MODEL_TYPES", "SEGMENTERS", "Config", "env_int"]

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


def env_int(env: Mapping[str, str], name: str, default: int, lo: int = 1, hi: int | None = None) -> int:
    """An integer setting of a server (not of :class:`Config`) from ``env``, checked like the others.

    Raises:
        ConfigError: the value is not a whole number within [lo, hi].
    """
    raw = env.get(name, "").strip()
    return _int(lo, hi)(name, raw) if raw else default


def _float(minimum: float, inclusive: bool) -> Callable[[str, str], float]:
    words = f"a number of at least {minimum:g}" if inclusive else "a positive number"

    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not valid: use {words}") from None
        if not (value < float("inf") and (value >= minimum if inclusive else value > minimum)):
            raise ConfigError(f"{name}={raw!r} is not valid: use {words}")
        return value

    return parse


_positive_float = _float(0, inclusive=False)


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


def _optional_path(name: str, raw: str) -> Path | None:
    return Path(raw.strip()).expanduser() if raw.strip() else None


def _key_hashes(name: str, raw: str) -> tuple[str, ...]:
    """API keys, kept only as SHA-256 digests (the keys themselves are never stored or logged)."""
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    short = [k for k in keys if len(k) < 16]
    if short:
        raise ConfigError(f"{name}: {len(short)} key(s) shorter than 16 characters; use long random keys")
    return tuple(hashlib.sha256(k.encode()).hexdigest() for k in keys)


def _origins(name: str, raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ConfigError(f"{name}: {origin!r} is not an origin like https://lab.example.org")
    return origins


def _rate_limit(name: str, raw: str) -> str:
    value = raw.strip()
    if value.lower() in ("", "off", "none", "0"):
        return ""
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not valid: use e.g. '60 per minute' or '10/second;500/hour', or off"
        ) from None
    return value


def _log_format(name: str, raw: str) -> str:
    return _choice(("json", "text"))(name, raw)


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
        torch_threads: CPU threads for torch and the detector; 0 = torch's default and up to 4
            detector threads (TORCH_THREADS). Set it per worker when several share a machine.
        grid_points_per_side: point grid of the grid segmenter (GRID_POINTS_PER_SIDE).
        grid_crop_n_layers: crop layers of the grid segmenter (GRID_CROP_N_LAYERS).
        log_format: json (one object per line, for log collectors) or text (LOG_FORMAT).
        api_key_hashes: SHA-256 digests of the accepted API keys; empty = no keys needed (API_KEYS,
            comma-separated; each at least 16 characters).
        api_keys_file: a file with one API key per line, added to API_KEYS (API_KEYS_FILE).
        rate_limit: limit on the segmentation endpoints per API key, else per client address, in
            flask-limiter notation; empty = none (RATE_LIMIT).
        ratelimit_storage_uri: where the counters live: memory:// (per process) or redis://host:port
            (shared by every worker and replica) (RATELIMIT_STORAGE_URI).
        trusted_proxies: reverse proxies in front whose X-Forwarded-For is believed (TRUSTED_PROXIES).
        cors_origins: origins allowed to call the API from a browser; empty = CORS off (CORS_ORIGINS).
        max_concurrent: segmentations running at once in this process (MAX_CONCURRENT_INFERENCES).
        max_queue: segmentations waiting for a slot; beyond it 503 with Retry-After (MAX_QUEUE).
        request_timeout_s: deadline of one segmentation, waiting included; past it 503 while
            waiting, 504 while running (REQUEST_TIMEOUT_S).
        image_cache_mb: memory for the images (and SAM embeddings) kept per process after a
            segmentation, so /segment_point can add a droplet without the upload; 0 = off
            (IMAGE_CACHE_MB).
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
    log_format: str = "json"
    api_key_hashes: tuple[str, ...] = ()
    api_keys_file: Path | None = None
    rate_limit: str = "60 per minute"
    ratelimit_storage_uri: str = "memory://"
    trusted_proxies: int = 0
    cors_origins: tuple[str, ...] = ()
    max_concurrent: int = 1
    max_queue: int = 8
    request_timeout_s: float = 300.0
    image_cache_mb: float = 256.0

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
        """The settings as environment variables and values (for logs and ``sam-droplet config``);
        API keys appear only as a count."""
        out = {_VARIABLES[f.name][0]: str(getattr(self, f.name)) for f in fields(self)}
        out["API_KEYS"] = f"<{len(self.api_key_hashes)} key(s)>"
        out["CORS_ORIGINS"] = ",".join(self.cors_origins)
        out["RATELIMIT_STORAGE_URI"] = re.sub(r"//[^@/]*@", "//***@", self.ratelimit_storage_uri)
        return out


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
    "log_format": ("LOG_FORMAT", _log_format),
    "api_key_hashes": ("API_KEYS", _key_hashes),
    "api_keys_file": ("API_KEYS_FILE", _optional_path),
    "rate_limit": ("RATE_LIMIT", _rate_limit),
    "ratelimit_storage_uri": ("RATELIMIT_STORAGE_URI", _text),
    "trusted_proxies": ("TRUSTED_PROXIES", _int(0, 10)),
    "cors_origins": ("CORS_ORIGINS", _origins),
    "max_concurrent": ("MAX_CONCURRENT_INFERENCES", _int(1, 64)),
    "max_queue": ("MAX_QUEUE", _int(0, 10000)),
    "request_timeout_s": ("REQUEST_TIMEOUT_S", _positive_float),
    "image_cache_mb": ("IMAGE_CACHE_MB", _float(0, inclusive=True)),
}
