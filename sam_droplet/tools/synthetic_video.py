"""Synthetic videos of droplets flowing in a channel, with exact truth.

:func:`channel_flow` renders bright-field frames (the look of :mod:`.synthetic`: a dark refraction
rim, illumination gradient, sensor noise) of droplets generated at a known rate, moving along x at
a known speed, with a coalescence: in a second lane a fast droplet catches a slow one and the two
become one droplet of their summed area. The truth holds every droplet's trajectory, so crossing
times, frequency, speeds and the merge are known exactly. :func:`write_avi` (lossless FFV1) and
:func:`write_tiff` save the same frames, so both containers must give the same result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .synthetic import _finish, _illumination, _render_brightfield

__all__ = ["SyntheticVideo", "TrueDroplet", "channel_flow", "shrinking_emulsion", "write_avi", "write_tiff"]


@dataclass
class TrueDroplet:
    """One droplet's truth: where it is in each frame it exists in (its centre may lie outside)."""

    radius: float
    speed: float  # px/s along +x
    frames: list[int] = field(default_factory=list)
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)


@dataclass
class SyntheticVideo:
    """Frames (uint8 HxW) at ``fps`` and the truth.

    Attributes:
        frames: the rendered frames.
        fps: frames per second.
        droplets: every droplet's trajectory; a merge ends two droplets and starts one.
        merge_frame: the first frame that shows the merged droplet, or None.
        merged: indices into ``droplets``: the two that merged and the one they became.
        radii_by_frame: each frame's droplet radii, for droplets whose size changes (a time-lapse).
    """

    frames: list[np.ndarray]
    fps: float
    droplets: list[TrueDroplet]
    merge_frame: int | None = None
    merged: tuple[int, int, int] | None = None
    radii_by_frame: list[np.ndarray] | None = None

    def crossing_times(self) -> np.ndarray:
        """When droplet centres cross the middle of the field (x = width / 2), interpolated
        between frames, sorted."""
        middle = self.frames[0].shape[1] / 2
        times = []
        for d in self.droplets:
            for k in range(1, len(d.frames)):
                x0, x1 = d.x[k - 1] - middle, d.x[k] - middle
                if x0 < 0 <= x1:
                    frac = -x0 / (x1 - x0)
                    times.append((d.frames[k - 1] + frac * (d.frames[k] - d.frames[k - 1])) / self.fps)
        return np.sort(np.asarray(times))

    def crossing_frequency_hz(self) -> float:
        t = self.crossing_times()
        return float((t.size - 1) / (t[-1] - t[0]))

    @property
    def main_speed(self) -> float:
        """The speed of the regular train (lane A), px/s."""
        return float(np.median([d.speed for d in self.droplets]))


def channel_flow(
    n_frames: int = 120,
    fps: float = 100.0,
    shape: tuple[int, int] = (160, 480),
    rate_hz: float = 10.0,
    speed_px_s: float = 400.0,
    radius: float = 12.0,
    cv: float = 0.02,
    noise: float = 0.02,
    coalescence: bool = True,
    seed: int = 0,
) -> SyntheticVideo:
    """Droplets generated at ``rate_hz`` in lane A (y = 0.3 h) at ``speed_px_s``; with
    ``coalescence``, in lane B (y = 0.72 h) a droplet at half the speed is caught by one at full
    speed, and the two merge into one droplet of their summed area moving at their mean speed."""
    rng = np.random.default_rng(seed)
    h, w = shape
    dt = 1.0 / fps
    duration = n_frames * dt
    # (x at t = 0, y, radius, speed, first frame, last frame) of each droplet.
    paths: list[list[float]] = []
    spacing = speed_px_s / rate_hz
    x0 = w / 2 + 0.37 * spacing  # the first droplet of lane A starts past the middle
    while x0 + speed_px_s * duration > -radius:
        paths.append([x0, 0.3 * h, radius * (1 + cv * rng.standard_normal()), speed_px_s, 0, n_frames - 1])
        x0 -= spacing
    merge_frame = merged = None
    if coalescence:
        r = 0.9 * radius
        slow = [0.25 * w, 0.72 * h, r, 0.5 * speed_px_s, 0, n_frames - 1]
        fast = [0.05 * w - 2 * r, 0.72 * h, r, speed_px_s, 0, n_frames - 1]
        gap = [(slow[0] + slow[3] * f * dt) - (fast[0] + fast[3] * f * dt) - slow[2] - fast[2] for f in range(n_frames)]
        touch = next((f for f, g in enumerate(gap) if g < 1.0), None)
        if touch is not None and touch < n_frames - 1:
            t = touch * dt
            xs, xf = slow[0] + slow[3] * t, fast[0] + fast[3] * t
            # One droplet of the summed area, at the area-weighted centre, at the mean speed.
            speed = 0.5 * (slow[3] + fast[3])
            x_m = (xs + xf) / 2
            slow[5] = fast[5] = touch
            merged_path = [x_m - speed * (touch + 1) * dt + speed * dt, 0.72 * h, float(np.hypot(r, r)), speed,
                           touch + 1, n_frames - 1]  # fmt: skip
            paths += [slow, fast, merged_path]
            merged = (len(paths) - 3, len(paths) - 2, len(paths) - 1)
            merge_frame = touch + 1
        else:
            paths += [slow, fast]
    droplets = []
    for x_0, y, r, v, first, last in paths:
        frames = list(range(int(first), int(last) + 1))
        droplets.append(TrueDroplet(r, v, frames, [x_0 + v * f * dt for f in frames], [y] * len(frames)))
    light = _illumination(shape, 0.15, rng)  # the microscope's: the same in every frame
    images = []
    for f in range(n_frames):
        here = [(d.x[f - d.frames[0]], d.y[0], d.radius) for d in droplets if d.frames[0] <= f <= d.frames[-1]]
        images.append(_render(shape, here, light, noise, rng))
    return SyntheticVideo(images, fps, droplets, merge_frame, merged)


def shrinking_emulsion(
    n_frames: int = 12,
    fps: float = 1.0,
    shape: tuple[int, int] = (256, 320),
    n: int = 20,
    radius: tuple[float, float] = (16.0, 12.0),
    noise: float = 0.02,
    seed: int = 0,
) -> SyntheticVideo:
    """A time-lapse without flow: ``n`` droplets in place whose radii shrink linearly from
    ``radius[0]`` to ``radius[1]`` (evaporation, dissolution, Ostwald ripening)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    r0 = radius[0]
    centres: list[tuple[float, float]] = []
    while len(centres) < n:
        c = (rng.uniform(r0 + 3, w - r0 - 3), rng.uniform(r0 + 3, h - r0 - 3))
        if all(np.hypot(c[0] - x, c[1] - y) > 2 * r0 + 4 for x, y in centres):
            centres.append(c)
    scale = rng.uniform(0.9, 1.1, size=n)
    shrink = np.linspace(radius[0], radius[1], n_frames)
    droplets = [
        TrueDroplet(float(r0 * s), 0.0, list(range(n_frames)), [x] * n_frames, [y] * n_frames)
        for (x, y), s in zip(centres, scale, strict=True)
    ]
    light = _illumination(shape, 0.15, rng)
    frames = [
        _render(shape, [(x, y, shrink[f] * s) for (x, y), s in zip(centres, scale, strict=True)], light, noise, rng)
        for f in range(n_frames)
    ]
    return SyntheticVideo(frames, fps, droplets, radii_by_frame=[shrink[f] * scale for f in range(n_frames)])


def _render(
    shape: tuple[int, int],
    droplets: list[tuple[float, float, float]],
    light: np.ndarray,
    noise: float,
    rng: np.random.Generator,
) -> np.ndarray:
    canvas = np.full(shape, 0.78, dtype=np.float32)
    visible = [(x, y, r) for x, y, r in droplets if -r < x < shape[1] + r]
    if visible:
        centers = np.array([(x, y) for x, y, _ in visible], dtype=np.float64)
        radii = np.array([r for _, _, r in visible], dtype=np.float64)
        _render_brightfield(canvas, centers, radii, 0.78, 0.84, 0.55, 2.5)
    return _finish(canvas * light, shape, 0.0, noise, False, np.uint8, rng)


def write_avi(video: SyntheticVideo, path: Path) -> Path:
    """The frames as a lossless (FFV1) AVI at the video's frame rate."""
    import cv2

    h, w = video.frames[0].shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), video.fps, (w, h), isColor=True)
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write FFV1 AVI files here")
    for frame in video.frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def write_tiff(video: SyntheticVideo, path: Path) -> Path:
    """The frames as a multi-page ImageJ TIFF that records the frame interval."""
    import tifffile

    tifffile.imwrite(path, np.stack(video.frames), imagej=True, metadata={"axes": "TYX", "finterval": 1 / video.fps})
    return path
