"""Engine settings: the model and how it runs, read from the environment (and ``.env``).

These are the settings of the library, whoever calls it: the web service, the command line and the
tools start an :class:`~sam_droplet.pipeline.Engine` from an :class:`EngineSettings`. The web
server's own settings (address, limits, keys) live in :mod:`sam_droplet.web.config`. Each setting
has a default, and a wrong value stops startup with one line that names the variable and what it
accepts. ``.env.example`` documents the same settings for people.

The small parsers here (``parse_int`` and friends) are shared with the web settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .sam.model import MODEL_TYPES

__all__ = [
    "DETECTORS",
    "SEGMENTERS",
    "EngineSettings",
    "detector_overrides",
    "env_int",
    "load_env",
    "parse_bool",
    "parse_choice",
    "parse_float",
    "parse_int",
    "parse_text",
]

# What finds the droplets: auto (sam when the model is loaded, else classical), SAM prompted by the
# classical detector, the classical detector alone, or SAM's automatic mask generator.
SEGMENTERS = ("auto", "sam", "classical", "grid")

# What proposes the droplets SAM refines (or that the classical segmenter reports): auto (the default,
# see sam_droplet.pipeline.AUTO_DETECTOR), the classical detector, the learned droplet model, or both
# pooled.
DETECTORS = ("auto", "classical", "net", "combined")

Parser = Callable[[str, str], Any]


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}={raw!r} is not valid: use true or false")


def parse_int(lo: int, hi: int | None = None) -> Parser:
    """A parser of whole numbers from ``lo`` to ``hi`` (no upper bound when None)."""

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
    """An integer setting of a server process (not of a settings class) from ``env``, checked like the others.

    Raises:
        ConfigError: the value is not a whole number within [lo, hi].
    """
    raw = env.get(name, "").strip()
    return parse_int(lo, hi)(name, raw) if raw else default


def parse_float(minimum: float, inclusive: bool) -> Parser:
    """A parser of finite numbers above ``minimum`` (or at least it, when ``inclusive``)."""
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


def parse_choice(options: tuple[str, ...], upper: bool = False) -> Parser:
    """A parser that accepts one of ``options`` (case-insensitive)."""

    def parse(name: str, raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in options:
            raise ConfigError(f"{name}={raw!r} is not valid: use one of {', '.join(options)}")
        return value

    return parse


def parse_text(name: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ConfigError(f"{name} is empty: give a value or remove the variable")
    return value


def _path(name: str, raw: str) -> Path:
    return Path(parse_text(name, raw)).expanduser()


def _optional_path(name: str, raw: str) -> Path | None:
    return Path(raw.strip()).expanduser() if raw.strip() else None


def _device(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value in ("auto", "cpu", "cuda", "mps") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise ConfigError(f"{name}={raw!r} is not valid: use auto, cpu, cuda, cuda:N or mps")


def load_env(overrides: Mapping[str, str] | None = None, dotenv_path: str | None = ".env") -> dict[str, str]:
    """The process environment after loading ``.env`` (which never overrides it), with ``overrides``
    (e.g. command-line options) on top."""
    if dotenv_path:
        from dotenv import load_dotenv

        load_dotenv(dotenv_path, override=False)
    return {**os.environ, **(overrides or {})}


def parse_fields(cls: type, variables: Mapping[str, tuple[str, Parser]], values: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments of the dataclass ``cls`` for the variables ``values`` sets."""
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        env_name, parse = variables[f.name]
        if env_name in values:
            kwargs[f.name] = parse(env_name, str(values[env_name]))
    return kwargs


@dataclass(frozen=True)
class EngineSettings:
    """How the engine finds droplets. Build with :meth:`from_env` or :meth:`from_mapping`.

    Attributes:
        model_path: SAM checkpoint file (SAM_MODEL_PATH).
        model_type: SAM architecture: vit_t (MobileSAM), vit_b, vit_l, vit_h (SAM_MODEL_TYPE).
        device: auto (cuda when available, else cpu), cpu, cuda, cuda:N or mps (SAM_DEVICE).
        segmenter: default segmenter: auto (sam when the checkpoint loads, else classical), sam,
            classical or grid (SEGMENTER). sam and grid refuse to start without the checkpoint.
        sam_batch_size: prompts decoded per batch in sam mode; 0 = auto: 4 on a CPU (small batches
            stay in cache and run twice as fast per prompt), 64 on a GPU (SAM_BATCH_SIZE).
        torch_threads: CPU threads for torch and the detector; 0 = torch's default and up to 4
            detector threads (TORCH_THREADS). Set it per worker when several share a machine.
        grid_points_per_side: point grid of the grid segmenter (GRID_POINTS_PER_SIDE).
        grid_crop_n_layers: crop layers of the grid segmenter (GRID_CROP_N_LAYERS).
        detector: what finds the droplets: auto, classical, net (the learned droplet model) or
            combined (both, pooled) (DETECTOR).
        droplet_model_path: the droplet model's weights; empty for the ones shipped in the package
            (DROPLET_MODEL_PATH; ``sam-droplet train`` writes them).
        droplet_model_precision: what the droplet model computes in: auto (bfloat16 on CUDA and on
            a CPU with native bfloat16, float32 elsewhere), float32 or bfloat16
            (DROPLET_MODEL_PRECISION).
    """

    model_path: Path = Path("model/mobile_sam.pt")
    model_type: str = "vit_t"
    device: str = "auto"
    segmenter: str = "auto"
    sam_batch_size: int = 0
    torch_threads: int = 0
    grid_points_per_side: int = 32
    grid_crop_n_layers: int = 1
    detector: str = "auto"
    droplet_model_path: Path | None = None
    droplet_model_precision: str = "auto"

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> EngineSettings:
        """Settings from ``values`` (environment-variable names) over the defaults.

        Raises:
            ConfigError: a value is wrong; the message names the variable.
        """
        return cls(**parse_fields(cls, ENGINE_VARIABLES, values))

    @classmethod
    def from_env(cls, overrides: Mapping[str, str] | None = None, dotenv_path: str | None = ".env") -> EngineSettings:
        """Settings from the process environment and ``.env``, with ``overrides`` on top."""
        return cls.from_mapping(load_env(overrides, dotenv_path))

    def describe(self) -> dict[str, str]:
        """The settings as environment variables and values (for logs and ``sam-droplet config``)."""
        return {
            ENGINE_VARIABLES[f.name][0]: "" if getattr(self, f.name) is None else str(getattr(self, f.name))
            for f in fields(self)
        }


ENGINE_VARIABLES: dict[str, tuple[str, Parser]] = {
    "model_path": ("SAM_MODEL_PATH", _path),
    "model_type": ("SAM_MODEL_TYPE", parse_choice(MODEL_TYPES)),
    "device": ("SAM_DEVICE", _device),
    "segmenter": ("SEGMENTER", parse_choice(SEGMENTERS)),
    "sam_batch_size": ("SAM_BATCH_SIZE", parse_int(0, 4096)),
    "torch_threads": ("TORCH_THREADS", parse_int(0, 1024)),
    "grid_points_per_side": ("GRID_POINTS_PER_SIDE", parse_int(1, 128)),
    "grid_crop_n_layers": ("GRID_CROP_N_LAYERS", parse_int(0, 4)),
    "detector": ("DETECTOR", parse_choice(DETECTORS)),
    "droplet_model_path": ("DROPLET_MODEL_PATH", _optional_path),
    "droplet_model_precision": ("DROPLET_MODEL_PRECISION", parse_choice(("auto", "float32", "bfloat16"))),
}


def detector_overrides(detector: str | None, droplet_model: str | Path | None) -> dict[str, str]:
    """The engine variables a command's ``--detector`` and ``--droplet-model`` override (none when
    not given)."""
    overrides = {"DETECTOR": detector} if detector else {}
    if droplet_model:
        overrides["DROPLET_MODEL_PATH"] = str(droplet_model)
    return overrides
