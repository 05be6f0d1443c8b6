"""Frame views of a tracked sequence: what a person scrubbing through the result looks at.

For each analysed frame, :class:`FrameViews` writes a preview JPEG (the longest side at most
``PREVIEW_SIDE`` px, so a 2,000-frame job stays around 100 MB) and a JSON record of its droplets:
centre, diameter and outline in image pixels. Once the droplets are linked, :meth:`FrameViews.link`
adds each droplet's track id and its tail (its last positions), so a viewer draws outlines coloured
by track with the path each droplet came along, from one small file per frame.
"""

from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..engine.measure import Droplet
from .read import ImageData

__all__ = ["PREVIEW_SIDE", "TAIL_FRAMES", "FrameViews"]

PREVIEW_SIDE = 960  # px
TAIL_FRAMES = 12  # positions drawn behind a droplet


def _outline(droplet: Droplet, scale: float) -> list[list[float]]:
    """The droplet's outer contour in image pixels, simplified to within half a preview pixel."""
    inst = droplet.instance
    contours, _ = cv2.findContours(inst.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    contour = max(contours, key=len).astype(np.float32)
    contour = cv2.approxPolyDP(contour, 0.5 / scale, True).reshape(-1, 2)
    return [[round(float(x) + inst.x0 + 0.5, 1), round(float(y) + inst.y0 + 0.5, 1)] for x, y in contour]


class FrameViews:
    """Writes ``frames/<index>.jpg`` and ``frames/<index>.json`` under ``folder`` for each frame."""

    def __init__(self, folder: str | os.PathLike, create: bool = True):
        self.folder = Path(folder) / "frames"
        if create:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.indices: list[int] = []

    def stored(self) -> list[int]:
        """The indices of the frames recorded in the folder, in order."""
        return sorted(int(p.stem) for p in self.folder.glob("*.json")) if self.folder.is_dir() else []

    def path(self, index: int, suffix: str) -> Path:
        return self.folder / f"{index:06d}{suffix}"

    def add(self, index: int, time_s: float | None, image: ImageData, droplets: list[Droplet]) -> None:
        """Record frame ``index``: its preview and its kept droplets, in the order the tracker
        numbers them."""
        scale = min(1.0, PREVIEW_SIDE / max(image.width, image.height))
        rgb = image.rgb8
        if scale < 1.0:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            self.path(index, ".jpg").write_bytes(jpeg.tobytes())
        record = {
            "frame": index,
            "time_s": time_s,
            "width": image.width,
            "height": image.height,
            "droplets": [
                {
                    "x": round(d.centroid[0], 2),
                    "y": round(d.centroid[1], 2),
                    "diameter_px": round(d.equivalent_diameter_px, 2),
                    "on_border": d.touches_edge,
                    "outline": _outline(d, scale),
                }
                for d in droplets
            ],
        }
        self.path(index, ".json").write_text(json.dumps(record, separators=(",", ":")))
        self.indices.append(index)

    def link(self, track_ids: list[list[int]]) -> None:
        """Add each droplet's ``track_id`` and ``tail`` (its previous positions, oldest first,
        at most ``TAIL_FRAMES``) to every frame's record, given each frame's track ids in
        detection order (:attr:`~sam_droplet.engine.tracking.TrackingResult.track_ids`)."""
        tails: dict[int, deque[list[float]]] = {}
        last_seen: dict[int, int] = {}
        for n, (index, ids) in enumerate(zip(self.indices, track_ids, strict=True)):
            path = self.path(index, ".json")
            record: dict[str, Any] = json.loads(path.read_text())
            for droplet, track_id in zip(record["droplets"], ids, strict=True):
                tail = tails.setdefault(track_id, deque(maxlen=TAIL_FRAMES))
                droplet["track_id"] = track_id
                droplet["tail"] = list(tail)
                tail.append([droplet["x"], droplet["y"]])
                last_seen[track_id] = n
            for ended in [t for t, m in last_seen.items() if n - m > 2]:  # memory stays per open track
                del tails[ended], last_seen[ended]
            path.write_text(json.dumps(record, separators=(",", ":")))
