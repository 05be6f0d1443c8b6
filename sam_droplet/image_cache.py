"""A per-process LRU cache of decoded images and their SAM embeddings, bounded in megabytes.

After a segmentation the page may ask for one more droplet at a point (``/segment_point``). Keeping
the decoded image, and in sam mode the encoder's output for each view, lets that answer come in
milliseconds instead of a new upload and a new encoding. Entries are keyed by the SHA-256 of the
uploaded bytes, so a client names an image without sending it; when the entry has been evicted (or
another worker served the upload) the client sends the image again.

The cache is the only state a request changes in the engine: it is guarded by a lock and never
holds more than ``max_bytes``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .decode import DecodedImage

__all__ = ["CachedImage", "ImageCache", "nbytes_of"]


def nbytes_of(obj: Any) -> int:
    """Bytes held by arrays and tensors in ``obj`` (a dataclass, mapping, sequence or array)."""
    if obj is None:
        return 0
    if hasattr(obj, "element_size") and hasattr(obj, "nelement"):  # torch.Tensor
        return int(obj.element_size() * obj.nelement())
    if hasattr(obj, "nbytes"):  # numpy.ndarray
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(nbytes_of(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes_of(v) for v in obj)
    if hasattr(obj, "__dataclass_fields__"):
        return sum(nbytes_of(getattr(obj, name)) for name in obj.__dataclass_fields__)
    return 0


@dataclass
class CachedImage:
    """What is kept of one uploaded image.

    Attributes:
        image: the decoded image (its ``gray`` and ``rgb8`` are computed once and kept).
        encodings: SAM encoder outputs by view (x0, y0, x1, y1), added as they are computed.
        appearance: the detector cue the segmentation used, so a point is detected the same way.
        diameter_px: median droplet diameter of the segmentation, the scale of a point's search.
        fluorescence: the fluorescence channel, when one was given.
        labels: ids of every droplet found (int32 HxW), kept with the fluorescence channel so an
            added droplet's background annulus avoids its neighbours as in the segmentation.
        fl_threshold: the positive threshold the segmentation used.
        spot_diameter_px: the object size the segmentation counted.
    """

    image: DecodedImage
    encodings: dict[tuple[int, int, int, int], Any] = field(default_factory=dict)
    appearance: str | None = None
    diameter_px: float | None = None
    fluorescence: DecodedImage | None = None
    labels: Any = None
    fl_threshold: float | None = None
    spot_diameter_px: float = 5.0

    @property
    def nbytes(self) -> int:
        img = self.image
        arrays = nbytes_of(img.pixels) + img.height * img.width * (4 + 3)  # + gray float32 + rgb8
        if self.fluorescence is not None and self.fluorescence is not img:
            arrays += nbytes_of(self.fluorescence.pixels) + img.height * img.width * 4
        arrays += nbytes_of(self.labels)
        return arrays + sum(nbytes_of(e) for e in self.encodings.values())


class ImageCache:
    """Least-recently-used images, at most ``max_mb`` megabytes in all (0 keeps nothing)."""

    def __init__(self, max_mb: float):
        self.max_bytes = int(max_mb * 2**20)
        self._entries: OrderedDict[str, CachedImage] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def get(self, sha256: str) -> CachedImage | None:
        """The entry for ``sha256`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(sha256)
            if entry is not None:
                self._entries.move_to_end(sha256)
            return entry

    def put(self, entry: CachedImage) -> CachedImage | None:
        """Keep ``entry`` (replacing one for the same image) and evict the least recently used
        beyond the budget. Returns the entry, or None when it alone exceeds the budget."""
        key = entry.image.sha256
        with self._lock:
            self._entries.pop(key, None)
            if entry.nbytes > self.max_bytes:
                return None
            self._entries[key] = entry
            self._evict()
            return entry if key in self._entries else None

    def add_encoding(self, sha256: str, view: tuple[int, int, int, int], encoding: Any) -> None:
        """Attach a SAM encoding of ``view`` to a cached image (dropped when over the budget)."""
        with self._lock:
            entry = self._entries.get(sha256)
            if entry is None:
                return
            entry.encodings[view] = encoding
            self._entries.move_to_end(sha256)
            if entry.nbytes > self.max_bytes:
                del entry.encodings[view]
            self._evict()

    def _evict(self) -> None:
        total = sum(e.nbytes for e in self._entries.values())
        while total > self.max_bytes and len(self._entries) > 1:
            _, old = self._entries.popitem(last=False)
            total -= old.nbytes
