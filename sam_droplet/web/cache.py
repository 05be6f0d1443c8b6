"""A per-process LRU cache of segmented images and their SAM embeddings, bounded in megabytes.

After a segmentation the page may ask for one more droplet at a point (``/segment_point``). Keeping
the image's :class:`~sam_droplet.pipeline.ImageContext` (the decoded image, what its segmentation
found, and in sam mode the encoder's output for each view) lets that answer come in milliseconds
instead of a new upload and a new encoding. Entries are keyed by the SHA-256 of the uploaded image,
so a client names an image without sending it; when the entry has been evicted (or another worker
served the upload) the client sends the image again.

Every entry belongs to a tenant, the API key that uploaded it: a client names only its own images,
and knowing another's SHA-256 reveals nothing (not even that it was uploaded). With API keys off
everyone is one tenant (``""``). A channel of a multi-channel file has its own digest, so the two
channels of one file are two entries.

It is guarded by a lock and never holds more than ``max_bytes``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from ..pipeline import ImageContext

__all__ = ["ImageCache"]


class ImageCache:
    """Least-recently-used image contexts, at most ``max_mb`` megabytes in all (0 keeps nothing)."""

    def __init__(self, max_mb: float):
        self.max_bytes = int(max_mb * 2**20)
        self._entries: OrderedDict[tuple[str, str], ImageContext] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def get(self, tenant: str, sha256: str) -> ImageContext | None:
        """``tenant``'s entry for ``sha256`` (now the most recently used), or None."""
        key = (tenant, sha256)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, tenant: str, entry: ImageContext) -> ImageContext | None:
        """Keep ``entry`` for ``tenant`` (replacing the tenant's entry for the same image) and evict
        the least recently used beyond the budget. Returns the entry, or None when it alone
        exceeds the budget."""
        key = (tenant, entry.image.sha256)
        with self._lock:
            self._entries.pop(key, None)
            if entry.nbytes > self.max_bytes:
                return None
            self._entries[key] = entry
            self._evict()
            return entry if key in self._entries else None

    def add_encoding(self, tenant: str, sha256: str, view: Any, encoding: Any) -> None:
        """Attach a SAM encoding of ``view`` to ``tenant``'s cached image (dropped when over the budget)."""
        key = (tenant, sha256)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            entry.encodings[view] = encoding
            self._entries.move_to_end(key)
            if entry.nbytes > self.max_bytes:
                del entry.encodings[view]
            self._evict()

    def _evict(self) -> None:
        total = sum(e.nbytes for e in self._entries.values())
        while total > self.max_bytes and len(self._entries) > 1:
            _, old = self._entries.popitem(last=False)
            total -= old.nbytes
