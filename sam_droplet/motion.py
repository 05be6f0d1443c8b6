"""Droplets in motion: segment every frame of a video or TIFF stack and track the droplets.

``track(path)`` reads the frames one at a time (:mod:`.io.video`), segments each with the same
engine and options as :func:`~sam_droplet.pipeline.segment`, and links the droplets across frames
(:mod:`.engine.tracking`). The result holds one row per track (each droplet counted once), merge and
split events, per-frame statistics (the size distribution over time of a time-lapse) and a summary:
crossing frequency, median speed, sizes over tracks.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .engine.tracking import FrameDroplets, TrackingResult, link_tracks
from .io.video import Frame, probe_sequence, read_frames
from .pipeline import Engine, segment
from .result import Result

__all__ = ["RESULT_FILES", "TrackResult", "track"]

# The files of a result, by the format name the jobs API serves them under.
RESULT_FILES = {
    "json": "summary.json",
    "csv": "tracks.csv",
    "frames": "frames.csv",
    "positions": "positions.csv",
    "zip": "results.zip",  # the four above in one archive (written by a job, not by write())
}
FRAME_COLUMNS = ("frame", "time_s", "droplets", "mean_diameter_px", "median_diameter_px", "total_area_px")


@dataclass
class TrackResult:
    """What :func:`track` found.

    Attributes:
        tracks: one dict per track (``engine.tracking.TRACK_COLUMNS``; ``_um`` columns when calibrated).
        events: merges and splits: ``{kind, frame, time_s, tracks, into}``.
        frames: per-frame statistics (``FRAME_COLUMNS``).
        positions: every droplet in every frame with its track: ``{track_id, frame, time_s, x_px,
            y_px, diameter_px, on_border}``.
        summary: frames, fps, tracks, crossing frequency, median speed, size over tracks, merges, splits.
        source: the file's name.
        track_ids: per analysed frame, the track of each kept droplet, in the segmentation's order.
        crossing_times: when droplet centres crossed the middle of the field (s, or frames
            without a frame rate), sorted; empty without flow.
    """

    tracks: list[dict[str, Any]]
    events: list[dict[str, Any]]
    frames: list[dict[str, Any]]
    positions: list[dict[str, Any]]
    summary: dict[str, Any]
    source: str
    track_ids: list[list[int]] = field(default_factory=list)
    crossing_times: list[float] = field(default_factory=list)

    def tracks_csv(self) -> str:
        return _csv(self.tracks)

    def frames_csv(self) -> str:
        return _csv(self.frames)

    def positions_csv(self) -> str:
        return _csv(self.positions)

    def write(self, folder: str | os.PathLike) -> Path:
        """The result as ``RESULT_FILES`` in ``folder`` (created): summary.json, tracks.csv,
        frames.csv, positions.csv."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        bodies = {
            "json": self.to_json(),
            "csv": self.tracks_csv(),
            "frames": self.frames_csv(),
            "positions": self.positions_csv(),
        }
        for kind, body in bodies.items():
            (folder / RESULT_FILES[kind]).write_text(body)
        return folder

    def to_json(self) -> str:
        body = {
            "source": self.source,
            "summary": self.summary,
            "events": self.events,
            "tracks": self.tracks,
            "frames": self.frames,
            "crossing_times": self.crossing_times,
        }
        return json.dumps(body, indent=2, default=float)


def _csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return out.getvalue()


def _droplets_of(frame: Frame, result: Result) -> FrameDroplets:
    kept = result.droplets
    return FrameDroplets(
        frame.index,
        frame.time_s if frame.time_s is not None else float(frame.index),
        np.array([d.centroid[0] for d in kept], dtype=np.float64),
        np.array([d.centroid[1] for d in kept], dtype=np.float64),
        np.array([d.area_px for d in kept], dtype=np.float64),
        np.array([d.touches_edge for d in kept], dtype=bool),
    )


def track(
    path: str | os.PathLike,
    model: Engine | None = None,
    *,
    fps: float | None = None,
    frame_step: int = 1,
    max_frames: int | None = None,
    max_distance_px: float | None = None,
    max_gap: int = 1,
    on_frame: Callable[[int, int], None] | None = None,
    on_segmented: Callable[[Frame, Result], None] | None = None,
    **options: Any,
) -> TrackResult:
    """Segment every frame of a video (AVI, MP4, MOV) or multi-page TIFF and track the droplets.

    Args:
        path: the file.
        model: an engine from :func:`~sam_droplet.load_model`; None uses the classical detector.
        fps: frames per second, overriding the file's (without either, times are in frames).
        frame_step: analyse every ``frame_step``-th frame.
        max_frames: stop after this many analysed frames.
        max_distance_px: farthest a droplet may move from its predicted place between two
            analysed frames (default: the median droplet diameter).
        max_gap: analysed frames a droplet may be missed in and keep its track.
        on_frame: called with (frames done, frames expected) after each frame (a progress bar).
        on_segmented: called with each frame and its segmentation (to keep views of the frames:
            :class:`~sam_droplet.io.frames.FrameViews`); its kept droplets are, in order, the ones
            :attr:`TrackResult.track_ids` numbers.
        **options: :class:`~sam_droplet.pipeline.SegmentOptions` fields, as for ``segment``.

    Raises:
        InvalidImage: not a readable video or TIFF stack.
        InvalidOptions: a wrong option.
    """
    info = probe_sequence(path, fps)
    expected = len(range(0, info.frames, frame_step)) if info.frames else 0
    if max_frames is not None:
        expected = min(expected, max_frames) if expected else max_frames
    frames: list[FrameDroplets] = []
    shape = (info.height, info.width)
    um_per_px = options.get("um_per_px")
    for frame in read_frames(path, fps, frame_step, max_frames):
        result = segment(frame.image, model, **options)
        if on_segmented is not None:
            on_segmented(frame, result)
        frames.append(_droplets_of(frame, result))
        shape = frame.image.pixels.shape[:2]
        if on_frame is not None:
            on_frame(len(frames), max(expected, len(frames)))
    linked: TrackingResult = link_tracks(frames, info.fps, max_distance_px, max_gap, um_per_px, shape)
    summary = {"source_frames": info.frames, "frame_step": frame_step, "format": info.format, **linked.summary}
    name = os.path.basename(os.fspath(path))
    return TrackResult(
        linked.tracks,
        linked.events,
        linked.frames,
        linked.positions,
        summary,
        name,
        linked.track_ids,
        linked.crossing_times,
    )
