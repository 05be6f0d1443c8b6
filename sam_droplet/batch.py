"""Many images as one piece of work: a ZIP archive of micrographs, segmented one after another.

:func:`probe_archive` lists an archive's images from its directory alone (nothing decompressed), so
a service can refuse one with too many images before starting. :func:`segment_archive` segments
each image with the same engine and options as :func:`~sam_droplet.pipeline.segment` and writes,
per image, in ``images/``: ``<stem>.csv`` (its droplets), ``<stem>.json`` (its record, without
masks), ``<stem>_labels.png`` and ``<stem>_overlay.png``; then ``summary.csv`` (one row per image, the
command line's batch columns, a failed image with its error), ``summary.json`` and
``results.zip`` holding all of it. One unreadable or oversized image fails alone.
"""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import DropletError, ImageTooLarge, InvalidImage
from .io.read import IMAGE_SUFFIXES, probe_image, read_image
from .io.write import batch_row, render, write_batch_csv
from .pipeline import Engine, segment

__all__ = ["ARCHIVE_FILES", "MAX_MEMBER_BYTES", "ArchiveInfo", "probe_archive", "segment_archive"]

# The files of a batch's result, by the format name the jobs API serves them under.
ARCHIVE_FILES = {"json": "summary.json", "csv": "summary.csv", "zip": "results.zip"}
MAX_MEMBER_BYTES = 1 << 30  # an image that inflates beyond 1 GiB is refused from the directory


@dataclass(frozen=True)
class ArchiveInfo:
    """An archive's images (member names, in archive order) and the other members it skips."""

    images: list[str]
    skipped: list[str]


def _is_image(name: str) -> bool:
    path = PurePosixPath(name)
    hidden = any(part.startswith(".") or part == "__MACOSX" for part in path.parts)
    return not hidden and path.suffix.lower() in IMAGE_SUFFIXES


def probe_archive(path: str | os.PathLike) -> ArchiveInfo:
    """The images of a ZIP archive, read from its directory without decompressing anything.

    Raises:
        InvalidImage: not a ZIP archive, or no image in it.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidImage(f"{Path(path).name}: not a readable ZIP archive ({exc})") from None
    images = [m.filename for m in members if _is_image(m.filename)]
    if not images:
        raise InvalidImage(
            f"{Path(path).name}: the archive holds no image ({', '.join(IMAGE_SUFFIXES)}); {len(members)} other file(s)"
        )
    skipped = [m.filename for m in members if not _is_image(m.filename)]
    return ArchiveInfo(images, skipped)


def _stems(names: list[str]) -> list[str]:
    """A file-system-safe, unique output stem per member name (folders flattened)."""
    out: list[str] = []
    used: set[str] = set()
    for name in names:
        stem = re.sub(r"[^\w.-]+", "_", PurePosixPath(name).stem)[:80] or "image"
        unique, n = stem, 2
        while unique.lower() in used:
            unique, n = f"{stem}_{n}", n + 1
        used.add(unique.lower())
        out.append(unique)
    return out


def _read_member(zf: zipfile.ZipFile, name: str) -> bytes:
    info = zf.getinfo(name)
    if info.file_size > MAX_MEMBER_BYTES:
        raise ImageTooLarge(f"{info.file_size / 2**20:.0f} MB once decompressed; at most {MAX_MEMBER_BYTES >> 20} MB")
    return zf.read(info)  # zipfile stops at the size the directory states and checks the CRC


def segment_archive(
    path: str | os.PathLike,
    folder: str | os.PathLike,
    model: Engine | None = None,
    *,
    max_pixels: int | None = None,
    max_memory_bytes: int | None = None,
    on_image: Callable[[int, int], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Segment every image of a ZIP archive and write the results to ``folder``.

    Args:
        path: the archive.
        folder: where the files go (created).
        model: an engine from :func:`~sam_droplet.load_model`; None uses the classical detector.
        max_pixels: an image with more pixels fails (from its header, before decoding).
        max_memory_bytes: an image whose decoding and segmentation would need more memory fails
            (:meth:`~sam_droplet.pipeline.Engine.working_bytes`; needs ``model``).
        on_image: called with (images done, images in all) after each image; an exception it
            raises stops the batch (a cancellation).
        **options: :class:`~sam_droplet.pipeline.SegmentOptions` fields.

    Returns:
        The summary written to ``summary.json``: ``{source, images, failed, droplets, rows}``, one
        row per image (``io.write.BATCH_COLUMNS``).

    Raises:
        InvalidImage: not a ZIP archive, or no image in it.
    """
    info = probe_archive(path)
    out = Path(folder)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    written: list[str] = []
    with zipfile.ZipFile(path) as zf:
        for n, (name, stem) in enumerate(zip(info.images, _stems(info.images), strict=True), 1):
            start = time.perf_counter()
            try:
                data = _read_member(zf, name)
                header = probe_image(data, max_pixels)
                if max_memory_bytes is not None and model is not None:
                    need = header.decoded_bytes() + model.working_bytes(
                        header.width, header.height, options.get("segmenter")
                    )
                    if need > max_memory_bytes:
                        raise ImageTooLarge(
                            f"{header.width}x{header.height} needs about {need >> 20} MB; "
                            f"at most {max_memory_bytes >> 20} MB per image"
                        )
                result = segment(read_image(data, max_pixels), model, **options)
            except (DropletError, zipfile.BadZipFile, OSError) as exc:
                message = exc.message if isinstance(exc, DropletError) else f"unreadable in the archive ({exc})"
                rows.append({"file": name, "error": message})
            else:
                for fmt, suffix in (("csv", ".csv"), ("labels", "_labels.png"), ("overlay", "_overlay.png")):
                    if fmt == "labels" and len(result.droplets) > 65535:
                        continue  # 16-bit labels hold at most 65,535 droplets; the CSV has them all
                    (out / "images" / f"{stem}{suffix}").write_bytes(render(result, fmt, file_name=name).body)
                    written.append(f"images/{stem}{suffix}")
                record = result.as_dict(masks=False)
                (out / "images" / f"{stem}.json").write_text(json.dumps(record, default=float))
                written.append(f"images/{stem}.json")
                rows.append(batch_row(result, name, time.perf_counter() - start))
            if on_image is not None:
                on_image(n, len(info.images))
    write_batch_csv(rows, out / ARCHIVE_FILES["csv"])
    failed = [r for r in rows if r.get("error")]
    summary = {
        "source": Path(path).name,
        "images": len(rows),
        "failed": len(failed),
        "droplets": sum(r.get("droplets") or 0 for r in rows),
        "skipped_members": info.skipped,
        "rows": rows,
    }
    (out / ARCHIVE_FILES["json"]).write_text(json.dumps(summary, indent=1, default=float))
    with zipfile.ZipFile(out / ARCHIVE_FILES["zip"], "w", zipfile.ZIP_DEFLATED) as bundle:
        for name in [ARCHIVE_FILES["csv"], ARCHIVE_FILES["json"], *written]:
            bundle.write(out / name, name)
    return summary
