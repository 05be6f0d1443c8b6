"""Networks: the learned droplet model (:mod:`.droplet_net`). Needs torch, imported only here."""

from .droplet_net import (
    DropletModelError,
    DropletNet,
    LoadedDropletNet,
    load_droplet_net,
    save_droplet_net,
    shipped_path,
    weights_version,
)

__all__ = [
    "DropletModelError",
    "DropletNet",
    "LoadedDropletNet",
    "load_droplet_net",
    "save_droplet_net",
    "shipped_path",
    "weights_version",
]
