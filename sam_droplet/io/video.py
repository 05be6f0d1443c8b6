"""Read image sequences frame by frame: videos and multi-page TIFF stacks.

Videos (AVI, MP4, MOV, ...) are read with OpenCV's ``VideoCapture``, i.e. the FFmpeg inside the
OpenCV wheels; it gives BGR frames, turned into RGB here, or into one gray plane when the three are
equal (a monochrome camera). TIFF stacks are read page by page with tifffile, their frame interval
taken from ImageJ's ``finterval`` when it is recorded. Each frame becomes an
:class:`~.read.ImageData`, as a single image would, so the engine treats it the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidImage, InvalidOptions
from .read import ImageData, read_image, sniff_type

__all__ = ["Frame", "SequenceInfo", "probe_sequence", "read_frames"]


@dataclass(frozen=True)
class SequenceInfo:
    """What a sequence's header says.

    Attributes:
        format: ``video`` or ``TIFF``.
        frames: frames in the file (a video container's count may be an estimate).
        fps: frames per second the file records, or None.
        width, height: frame size in pixels.
    """

    format: str
    frames: int
    fps: float | None
    width: int
    height: int


@dataclass(frozen=True)
class Frame:
    """One frame: its index in the file, its time in seconds (None without a frame rate), the image."""

    index: int
    time_s: float | None
    image: ImageData


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as f:
        return sniff_type(f.read(4096)) == "image/tiff"


def probe_sequence(path: str | os.PathLike, fps: float | None = None) -> SequenceInfo:
    """Frame count, frame rate (``fps`` overrides the file's) and frame size of a video or TIFF stack.

    Raises:
        InvalidImage: not a readable video or TIFF.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidImage(f"{path}: no such file")
    if _is_tiff(path):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                shape = dict(zip(page.axes, page.shape, strict=False))
                interval = (tif.imagej_metadata or {}).get("finterval")
                recorded = 1.0 / float(interval) if interval else None
                return SequenceInfo("TIFF", len(tif.pages), fps or recorded, int(shape["X"]), int(shape["Y"]))
        except (KeyError, ValueError, tifffile.TiffFileError) as exc:
            raise InvalidImage(f"{path.name}: not a readable TIFF stack ({exc})") from None
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise InvalidImage(f"{path.name}: not a video OpenCV can read (AVI, MP4, MOV, ...) nor a TIFF stack")
        recorded = capture.get(cv2.CAP_PROP_FPS)
        return SequenceInfo(
            "video",
            int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
            fps or (recorded if recorded and np.isfinite(recorded) and recorded > 0 else None),
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        capture.release()


def read_frames(
    path: str | os.PathLike,
    fps: float | None = None,
    frame_step: int = 1,
    max_frames: int | None = None,
) -> Iterator[Frame]:
    """The frames of a video or TIFF stack, one at a time (never the whole file in memory).

    Args:
        path: the file.
        fps: frames per second, overriding what the file records.
        frame_step: keep every ``frame_step``-th frame (1: all).
        max_frames: stop after this many kept frames.

    Raises:
        InvalidOptions: ``frame_step`` or ``max_frames`` below 1.
        InvalidImage: not a readable video or TIFF.
    """
    if frame_step < 1 or (max_frames is not None and max_frames < 1):
        raise InvalidOptions("frame_step and max_frames must be at least 1")
    info = probe_sequence(path, fps)
    kept = 0
    for index, pixels in _planes(Path(path), info):
        if index % frame_step:
            continue
        time_s = index / info.fps if info.fps else None
        yield Frame(index, time_s, read_image(pixels))
        kept += 1
        if max_frames is not None and kept >= max_frames:
            return


def _planes(path: Path, info: SequenceInfo) -> Iterator[tuple[int, np.ndarray]]:
    if info.format == "TIFF":
        import tifffile

        with tifffile.TiffFile(path) as tif:
            for index, page in enumerate(tif.pages):
                yield index, page.asarray()
        return
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            if bgr.ndim == 3 and np.array_equal(bgr[..., 0], bgr[..., 1]) and np.array_equal(bgr[..., 1], bgr[..., 2]):
                yield index, np.ascontiguousarray(bgr[..., 0])  # a monochrome camera
            else:
                yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()
