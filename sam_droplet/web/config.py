"""The service's configuration: the engine's settings plus the web server's own, from the environment.

One :class:`Config` per process holds both parts: :class:`~sam_droplet.settings.EngineSettings`
(the model and how it runs, shared with the command line and the library) and
:class:`ServerSettings` (address, limits, keys, logs, cache). The app keeps the engine's settings
only as the engine it started with them, so there is one source of truth for each setting at run
time. A wrong value stops startup with one line that names the variable and what it accepts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..settings import (
    EngineSettings,
    Parser,
    load_env,
    parse_bool,
    parse_choice,
    parse_fields,
    parse_float,
    parse_int,
    parse_text,
)

__all__ = ["Config", "ServerSettings"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("json", "text")


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


@dataclass(frozen=True)
class ServerSettings:
    """The web server's settings.

    Attributes:
        host: address the development server and Waitress bind to (FLASK_HOST).
        port: TCP port (FLASK_PORT).
        debug: Flask debug mode; never on unless asked for (FLASK_DEBUG).
        max_upload_mb: largest request body in MB (MAX_UPLOAD_MB).
        max_image_pixels: largest image in pixels, checked from the header (MAX_IMAGE_PIXELS).
        max_request_memory_mb: memory one request may need: its decoded pixels (from the header:
            size, samples, bytes per sample, pages read) and the segmenter's working set. Beyond it
            413 before any pixel is decoded (MAX_REQUEST_MEMORY_MB).
        log_level: logging level (LOG_LEVEL).
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
        results_dir: where jobs (videos, stacks) keep their upload, state and results; shared by
            every worker of a host (RESULTS_DIR; default: sam-droplet-jobs in the temp folder).
        job_ttl_s: finished jobs are deleted after this many seconds (JOB_TTL_S).
        job_workers: jobs run at once per process (JOB_WORKERS).
        jobs_per_key: jobs queued or running per API key (or per everyone, keys off) (JOBS_PER_KEY).
        job_max_frames: frames (or images of a batch) one job may analyse; more is refused before
            decoding (JOB_MAX_FRAMES).
        job_max_upload_mb: largest upload to POST /jobs in MB: a video, TIFF stack or ZIP batch
            (JOB_MAX_UPLOAD_MB). It is written to RESULTS_DIR as it arrives, never held in memory.
        job_queue_url: redis URL of the RQ queue that ``sam-droplet worker`` processes serve;
            empty = jobs run in the web process (JOB_QUEUE_URL).
    """

    host: str = "0.0.0.0"
    port: int = 9487
    debug: bool = False
    max_upload_mb: float = 50.0
    max_image_pixels: int = 64_000_000
    max_request_memory_mb: float = 1200.0
    log_level: str = "INFO"
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
    results_dir: Path | None = None
    job_ttl_s: float = 86400.0
    job_workers: int = 1
    jobs_per_key: int = 4
    job_max_frames: int = 5000
    job_max_upload_mb: float = 500.0
    job_queue_url: str = ""

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def job_max_upload_bytes(self) -> int:
        return int(self.job_max_upload_mb * 1024 * 1024)

    @property
    def largest_body_bytes(self) -> int:
        """The largest request any endpoint accepts (a job's upload or an image's)."""
        return max(self.max_upload_bytes, self.job_max_upload_bytes)

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> ServerSettings:
        """Settings from ``values`` (environment-variable names) over the defaults.

        Raises:
            ConfigError: a value is wrong; the message names the variable.
        """
        return cls(**parse_fields(cls, SERVER_VARIABLES, values))

    def describe(self) -> dict[str, str]:
        """The settings as environment variables and values; API keys appear only as a count and
        a password in the storage URI as ``***``."""
        out = {SERVER_VARIABLES[f.name][0]: str(getattr(self, f.name)) for f in fields(self)}
        out["API_KEYS"] = f"<{len(self.api_key_hashes)} key(s)>"
        out["CORS_ORIGINS"] = ",".join(self.cors_origins)
        out["RATELIMIT_STORAGE_URI"] = re.sub(r"//[^@/]*@", "//***@", self.ratelimit_storage_uri)
        out["JOB_QUEUE_URL"] = re.sub(r"//[^@/]*@", "//***@", self.job_queue_url)
        return out


SERVER_VARIABLES: dict[str, tuple[str, Parser]] = {
    "host": ("FLASK_HOST", parse_text),
    "port": ("FLASK_PORT", parse_int(1, 65535)),
    "debug": ("FLASK_DEBUG", parse_bool),
    "max_upload_mb": ("MAX_UPLOAD_MB", parse_float(0, inclusive=False)),
    "max_image_pixels": ("MAX_IMAGE_PIXELS", parse_int(1024)),
    "max_request_memory_mb": ("MAX_REQUEST_MEMORY_MB", parse_float(0, inclusive=False)),
    "log_level": ("LOG_LEVEL", parse_choice(LOG_LEVELS, upper=True)),
    "log_format": ("LOG_FORMAT", parse_choice(LOG_FORMATS)),
    "api_key_hashes": ("API_KEYS", _key_hashes),
    "api_keys_file": ("API_KEYS_FILE", _optional_path),
    "rate_limit": ("RATE_LIMIT", _rate_limit),
    "ratelimit_storage_uri": ("RATELIMIT_STORAGE_URI", parse_text),
    "trusted_proxies": ("TRUSTED_PROXIES", parse_int(0, 10)),
    "cors_origins": ("CORS_ORIGINS", _origins),
    "max_concurrent": ("MAX_CONCURRENT_INFERENCES", parse_int(1, 64)),
    "max_queue": ("MAX_QUEUE", parse_int(0, 10000)),
    "request_timeout_s": ("REQUEST_TIMEOUT_S", parse_float(0, inclusive=False)),
    "image_cache_mb": ("IMAGE_CACHE_MB", parse_float(0, inclusive=True)),
    "results_dir": ("RESULTS_DIR", _optional_path),
    "job_ttl_s": ("JOB_TTL_S", parse_float(0, inclusive=False)),
    "job_workers": ("JOB_WORKERS", parse_int(1, 64)),
    "jobs_per_key": ("JOBS_PER_KEY", parse_int(1, 10000)),
    "job_max_frames": ("JOB_MAX_FRAMES", parse_int(1, 10_000_000)),
    "job_max_upload_mb": ("JOB_MAX_UPLOAD_MB", parse_float(0, inclusive=False)),
    "job_queue_url": ("JOB_QUEUE_URL", parse_text),
}


@dataclass(frozen=True)
class Config:
    """Everything a service process is configured with: the engine's settings and the server's.

    Build with :meth:`from_env` (environment and ``.env``), :meth:`from_mapping` (variable names to
    values), or directly: ``Config(engine=EngineSettings(segmenter="classical"),
    server=ServerSettings(max_upload_mb=8))``.
    """

    engine: EngineSettings = field(default_factory=EngineSettings)
    server: ServerSettings = field(default_factory=ServerSettings)

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> Config:
        """Both parts from one mapping of environment-variable names to values.

        Raises:
            ConfigError: a value is wrong; the message names the variable.
        """
        return cls(EngineSettings.from_mapping(values), ServerSettings.from_mapping(values))

    @classmethod
    def from_env(cls, overrides: Mapping[str, str] | None = None, dotenv_path: str | None = ".env") -> Config:
        """Both parts from the process environment (after loading ``.env``, which never overrides
        it), with ``overrides`` (e.g. command-line options) on top."""
        return cls.from_mapping(load_env(overrides, dotenv_path))

    def describe(self) -> dict[str, Any]:
        """Every setting as its environment variable and value (for logs and ``sam-droplet config``)."""
        return {**self.engine.describe(), **self.server.describe()}
