"""ImageJ / Fiji ROIs: droplets out as a ROI Manager zip, ground truth in from one (with ``roifile``).

A droplet becomes a polygon ROI named by its id (``"17"``), traced along the boundary of its mask
(marching squares at half height), so ImageJ, which fills a polygon with the pixels whose centres lie
inside it, gets the droplet's own pixels back. ImageJ's pixel (x, y) covers [x, x + 1) x [y, y + 1);
this package's pixel (x, y) is the same square, so the two frames differ by nothing but the pixel
centre's half pixel, which the tracing and :func:`labels_from_rois` account for.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

from ..engine.instances import Instance
from ..engine.measure import Droplet
from ..errors import InvalidImage

__all__ = ["droplet_polygon", "labels_from_rois", "rois_zip"]


def droplet_polygon(inst: Instance) -> np.ndarray:
    """The outline of a crop mask as an (N, 2) float array of ImageJ (x, y) vertices, collinear
    vertices dropped; the largest outline when the mask has several pieces."""
    from skimage.measure import find_contours

    padded = np.pad(inst.mask.astype(np.float32), 1)
    contours = find_contours(padded, 0.5)
    if not contours:
        return np.zeros((0, 2))
    rc = max(contours, key=len)[:-1]  # closed: the last vertex repeats the first
    # Padded array coordinate -> image pixel index (- 1) -> ImageJ coordinate (+ 0.5 to the centre).
    xy = np.stack([rc[:, 1] + inst.x0 - 0.5, rc[:, 0] + inst.y0 - 0.5], axis=1).astype(np.float32)
    simplified = cv2.approxPolyDP(xy.reshape(-1, 1, 2), 0.05, True).reshape(-1, 2)
    return simplified.astype(np.float64)


def rois_zip(droplets: list[Droplet]) -> bytes:
    """A ROI Manager zip: one polygon ROI per droplet, named and ordered by droplet id."""
    import roifile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for d in droplets:
            points = droplet_polygon(d.instance)
            if len(points) < 3:
                continue
            roi = roifile.ImagejRoi.frompoints(points, name=str(d.id))
            roi.roitype = roifile.ROI_TYPE.POLYGON
            # A fixed date keeps the same droplets the same bytes.
            entry = zipfile.ZipInfo(f"{d.id}.roi", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(entry, roi.tobytes(), compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def labels_from_rois(source: str | os.PathLike | bytes, shape: tuple[int, int]) -> np.ndarray:
    """A uint32 label image (0 = background, ROI k of the file = k + 1) from an ImageJ ROI file or
    ROI Manager zip, each ROI filled as ImageJ fills it (pixel centres inside).

    Raises:
        InvalidImage: the file holds no area ROI ImageJ's reader understands.
    """
    import roifile
    from skimage.draw import polygon

    if isinstance(source, (bytes, bytearray)):
        with tempfile.NamedTemporaryFile(suffix=".zip" if bytes(source[:2]) == b"PK" else ".roi") as tmp:
            tmp.write(source)
            tmp.flush()
            rois = roifile.roiread(tmp.name)
    else:
        rois = roifile.roiread(Path(source))
    rois = rois if isinstance(rois, list) else [rois]
    labels = np.zeros(shape, dtype=np.uint32)
    filled = 0
    for k, roi in enumerate(rois, start=1):
        xy = np.asarray(roi.coordinates(), dtype=np.float64)
        if xy.ndim != 2 or len(xy) < 3:
            continue  # points and lines have no area
        rr, cc = polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)
        labels[rr, cc] = k
        filled += 1
    if not filled:
        raise InvalidImage(f"{source if not isinstance(source, bytes) else 'the ROI file'} holds no area ROI")
    return labels
