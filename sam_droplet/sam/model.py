"""Load a SAM checkpoint (MobileSAM vit_t, or SAM vit_b/l/h) onto the configured device.

Loading happens once per process (in a web server, after its fork: touching CUDA in a preloading
master breaks its workers). The checkpoint is read with
``weights_only=True`` onto the CPU, checked key by key against the architecture, and only then moved
to the device. Nothing is ever downloaded here; see :mod:`sam_droplet.sam.weights`.
"""

from __future__ import annotations

import logging
import time
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StartupError

__all__ = [
    "MODEL_TYPES",
    "CheckpointError",
    "LoadedModel",
    "build_sam",
    "load_sam",
    "resolve_device",
    "sam_package",
    "save_random_checkpoint",
]

log = logging.getLogger(__name__)

# vit_t is MobileSAM (package mobile_sam); vit_b, vit_l and vit_h are segment-anything's.
MODEL_TYPES = ("vit_t", "vit_b", "vit_l", "vit_h")


class CheckpointError(StartupError):
    """The checkpoint is missing, unreadable, or does not match the model type."""


def sam_package(model_type: str) -> Any:
    """The package that defines ``model_type``: mobile_sam for vit_t, segment_anything otherwise.

    Imported without the timm deprecation warnings that mobile_sam triggers.
    """
    import importlib

    name = "mobile_sam" if model_type == "vit_t" else "segment_anything"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        return importlib.import_module(name)


def build_sam(model_type: str) -> Any:
    """The SAM architecture for ``model_type`` with freshly initialised weights, in eval mode.

    vit_t is MobileSAM (package ``mobile_sam``); vit_b, vit_l and vit_h come from segment-anything's
    registry.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown SAM model type {model_type!r}")
    sam = sam_package(model_type).sam_model_registry[model_type](checkpoint=None)
    # TinyViT has BatchNorm and caches attention biases in eval(): never run it in train mode.
    return sam.eval()


def resolve_device(spec: str) -> Any:
    """torch.device for ``auto`` (cuda when available, else mps, else cpu), ``cpu``, ``cuda[:N]``, ``mps``."""
    import torch

    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StartupError(f"SAM_DEVICE={spec} but CUDA is not available on this machine: use auto or cpu")
    return device


@dataclass
class LoadedModel:
    """A SAM model ready for inference.

    Attributes:
        sam: the torch module, in eval mode, on ``device``.
        model_type: vit_t, vit_b, vit_l or vit_h.
        checkpoint: the file it was loaded from.
        device: torch.device it runs on.
        load_seconds: time spent loading.
    """

    sam: Any
    model_type: str
    checkpoint: Path
    device: Any
    load_seconds: float

    def autocast(self) -> AbstractContextManager:
        """bf16 autocast on CUDA (where TinyViT and SAM are safe in bf16); nothing elsewhere.

        ``.half()`` would leave TinyViT's cached fp32 attention biases behind and crash, so mixed
        precision comes from autocast only.
        """
        import torch

        if self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return nullcontext()

    def describe(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "checkpoint": str(self.checkpoint),
            "device": str(self.device),
            "load_seconds": round(self.load_seconds, 3),
        }


def _unwrap(obj: Any) -> dict:
    """The state dict inside a checkpoint (plain, or under 'model' / 'state_dict')."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        return obj
    raise TypeError(f"expected a state dict, found {type(obj).__name__}")


def load_sam(path: str | Path, model_type: str, device: str = "auto", threads: int = 0) -> LoadedModel:
    """Load a checkpoint into the ``model_type`` architecture on ``device``.

    Args:
        path: checkpoint file (a state dict saved with torch.save).
        model_type: vit_t, vit_b, vit_l or vit_h.
        device: auto, cpu, cuda, cuda:N or mps.
        threads: torch CPU threads (0 leaves torch's default).

    Raises:
        CheckpointError: the file is missing, unreadable, or its weights do not fit the architecture.
        StartupError: the device is not available.
    """
    start = time.perf_counter()
    path = Path(path)
    how_to_get = "get it with `sam-droplet weights download` (MobileSAM) or set SAM_MODEL_PATH to an existing file"
    if not path.is_file():
        # Checked before importing torch, so a service without weights starts fast and small.
        raise CheckpointError(f"SAM checkpoint not found: {path} ({how_to_get})")
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    try:
        state = _unwrap(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:
        raise CheckpointError(
            f"SAM checkpoint {path} cannot be read as a PyTorch state dict ({type(exc).__name__}): "
            f"the file is damaged or not a checkpoint; {how_to_get}"
        ) from None
    sam = build_sam(model_type)
    mismatch = f"SAM checkpoint {path} does not match SAM_MODEL_TYPE={model_type}"
    fix = "set SAM_MODEL_TYPE to the checkpoint's architecture (vit_t, vit_b, vit_l or vit_h)"
    try:
        result = sam.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        shapes = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        first = shapes[0] if shapes else str(exc).splitlines()[0]
        raise CheckpointError(f"{mismatch}: weights of other shapes ({first[:220]}); {fix}") from None
    if result.missing_keys or result.unexpected_keys:
        example = (result.missing_keys or result.unexpected_keys)[0]
        raise CheckpointError(
            f"{mismatch}: {len(result.missing_keys)} missing and {len(result.unexpected_keys)} unexpected "
            f"weights (first: {example!r}); {fix}"
        )
    dev = resolve_device(device)
    sam = sam.to(dev).eval()
    seconds = time.perf_counter() - start
    log.info("loaded SAM %s from %s on %s in %.2f s", model_type, path, dev, seconds)
    return LoadedModel(sam=sam, model_type=model_type, checkpoint=path, device=dev, load_seconds=seconds)


def save_random_checkpoint(path: str | Path, model_type: str = "vit_t", seed: int = 0) -> Path:
    """Save a randomly initialised state dict of ``model_type`` (for tests and timing only).

    Its masks are meaningless, but it has the exact architecture and size of the real model, so it
    exercises the real loading and inference code paths and times them faithfully.
    """
    import torch

    torch.manual_seed(seed)
    sam = build_sam(model_type)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sam.state_dict(), path)
    return path
