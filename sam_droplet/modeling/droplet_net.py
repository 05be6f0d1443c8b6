"""The learned droplet model: a compact U-Net that maps a picture to two maps per pixel.

* ``foreground``: the probability that the pixel lies inside a droplet;
* ``centerness``: the pixel's distance to its droplet's edge divided by the largest such distance
  in that droplet (1 at the centre, falling to 0 at the edge). Touching droplets meet at a line of
  low centerness, so the cores (centerness above one half) of two droplets never touch.

The network sees the picture through a 2x2 space-to-depth step, so its first layer already works at
half resolution (half the time of a full-resolution U-Net) while every input pixel still reaches it.
Droplets from about 5 to 90 px across are what it is trained on; :mod:`sam_droplet.engine.detect.learned`
runs it on an image pyramid so that any size falls in that range at some level.

A checkpoint is a ``torch.save`` dict: ``format`` (``sam-droplet-net``), ``version``, ``channels``,
``state_dict`` and ``meta`` (what it was trained on, the command, the validation F1).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import StartupError

__all__ = [
    "CHECKPOINT_FORMAT",
    "DropletModelError",
    "DropletNet",
    "LoadedDropletNet",
    "load_droplet_net",
    "save_droplet_net",
    "shipped_path",
    "weights_version",
]

CHECKPOINT_FORMAT = "sam-droplet-net"
_CHANNELS = (16, 32, 64, 64)


class DropletModelError(StartupError):
    """The droplet model file is missing, corrupt, or not a droplet model; the message says which."""


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DropletNet(nn.Module):
    """U-Net on a 2x2 space-to-depth input; outputs (N, 2, H, W) logits: foreground, centerness.

    Input: (N, 1, H, W) float, the picture normalised by :func:`normalize_for_net`; H and W
    multiples of 16.
    """

    def __init__(self, channels: tuple[int, ...] = _CHANNELS):
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.encoder = nn.ModuleList()
        prev = 4
        for c in self.channels:
            self.encoder.append(_block(prev, c))
            prev = c
        self.decoder = nn.ModuleList()
        for c in reversed(self.channels[:-1]):
            self.decoder.append(_block(prev + c, c))
            prev = c
        self.head = nn.Conv2d(prev, 2 * 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pixel_unshuffle(x, 2)
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i < len(self.encoder) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for block in self.decoder:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return F.pixel_shuffle(self.head(x), 2)


@dataclass
class LoadedDropletNet:
    """A droplet model ready to run: the network (in eval mode) on its device, and what it is.

    Attributes:
        net: the network, ``.eval()``.
        device: where it runs.
        path: the file it came from.
        version: a short name of the weights (:func:`weights_version`): the same weights give the
            same version whatever file they were saved in.
        meta: what the checkpoint says of its training.
        precision: what its convolutions compute in: ``"bfloat16"`` (autocast) on CUDA and on a
            CPU with native bfloat16 instructions, else ``"float32"`` (see :func:`load_droplet_net`).
    """

    net: DropletNet
    device: torch.device
    path: Path
    version: str
    meta: dict[str, Any] = field(default_factory=dict)
    precision: str = "float32"

    def describe(self) -> dict[str, Any]:
        return {
            "name": "droplet-net",
            "version": self.version,
            "file": str(self.path),
            "device": str(self.device),
            "precision": self.precision,
            "trained_on": self.meta.get("trained_on"),
        }


def weights_version(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 prefix of the weights themselves (names, shapes, dtypes and values, in name order).
    A file's own hash would not do: ``torch.save`` names the archive after the file and its
    metadata holds timings, so the same training writes different bytes."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:12]


def shipped_path() -> Path:
    """The weights shipped in the package (trained on generated images and CC BY 4.0 bubbles)."""
    return Path(__file__).with_name("weights") / "droplet_net.pt"


def save_droplet_net(net: DropletNet, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write ``net`` as a checkpoint :func:`load_droplet_net` reads (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    # Plain JSON types only: the file must load with torch.load(weights_only=True).
    meta = json.loads(json.dumps(meta or {}, default=str))
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "channels": list(net.channels),
        "state_dict": state,
        "meta": meta,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def fuse_batchnorm(net: DropletNet) -> DropletNet:
    """Fold every BatchNorm into the convolution before it (inference only: same outputs, about a
    fifth less time on a CPU)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net.eval()
    for block in [*net.encoder, *net.decoder]:
        layers = list(block)
        fused: list[nn.Module] = []
        i = 0
        while i < len(layers):
            if isinstance(layers[i], nn.Conv2d) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d):
                fused.append(fuse_conv_bn_eval(layers[i], layers[i + 1]))
                i += 2
            else:
                fused.append(layers[i])
                i += 1
        for name in list(block._modules):
            del block._modules[name]
        for k, layer in enumerate(fused):
            block.add_module(str(k), layer)
    return net


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), so that oneDNN's bfloat16
    convolutions are faster than float32 ones (elsewhere they are emulated, and slower)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the query
        return False


def load_droplet_net(
    path: str | Path | None = None,
    device: str | torch.device = "cpu",
    for_training: bool = False,
    precision: str = "auto",
) -> LoadedDropletNet:
    """Load a droplet model (the shipped one when ``path`` is None) onto ``device``, in eval mode
    with its BatchNorm folded into the convolutions (kept apart ``for_training``).

    ``precision`` "auto" runs the convolutions in bfloat16 autocast on CUDA and on a CPU with
    native bfloat16 (:func:`cpu_has_bfloat16`; about 1.9 times faster there), in float32
    elsewhere and ``for_training`` (validation figures stay those of the float32 network);
    "float32" or "bfloat16" force one.

    Raises:
        DropletModelError: the file is missing, not a torch file, or not a droplet model.
    """
    path = Path(path) if path is not None else shipped_path()
    if not path.is_file():
        raise DropletModelError(f"droplet model {path} not found (DROPLET_MODEL_PATH or --droplet-model)")
    raw = path.read_bytes()
    try:
        payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DropletModelError(
            f"droplet model {path} is not a readable torch checkpoint ({type(exc).__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DropletModelError(
            f"{path} is not a sam-droplet droplet model (a SAM checkpoint belongs in SAM_MODEL_PATH; "
            "droplet models are written by `sam-droplet train`)"
        )
    try:
        net = DropletNet(tuple(payload["channels"]))
        net.load_state_dict(payload["state_dict"])
    except Exception as exc:
        raise DropletModelError(f"droplet model {path} does not fit the network: {exc}") from None
    dev = torch.device(device)
    net = net.eval() if for_training else fuse_batchnorm(net)
    net = net.to(dev)
    if dev.type == "cpu" and not for_training:
        net = net.to(memory_format=torch.channels_last)  # about 1.5x faster convolutions on a CPU
    if precision == "auto":
        fast = dev.type == "cuda" or (dev.type == "cpu" and cpu_has_bfloat16())
        precision = "bfloat16" if fast and not for_training else "float32"
    elif precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision must be auto, float32 or bfloat16, not {precision!r}")
    version = weights_version(payload["state_dict"])
    return LoadedDropletNet(net, dev, path, version, dict(payload.get("meta") or {}), precision)
