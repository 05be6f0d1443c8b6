"""Droplets across frames: linking, per-track motion and size, crossings, merges and splits.

Linking is the linear assignment problem solved frame to frame (``scipy.optimize.
linear_sum_assignment``, as LAP trackers such as laptrack and TrackMate do): each open track is
predicted one frame ahead from its last velocity, and the assignment minimises the summed squared
distances between predictions and detections, none longer than ``max_distance`` and none that
changes the droplet's area by more than 40 % (volume is conserved: such a jump is a merge or a
split). A track missed in a frame stays open for ``max_gap`` frames (gap closing). Droplets that
touch the image border are linked like the others but left out of speeds and sizes, which they
would bias.

A merge is two tracks that meet: one ends next to the other, whose area then grows by about the
ended droplet's; or both end and a new droplet of their summed area starts between them. A split is
the same backwards in time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from .sizes import size_distribution

__all__ = ["TRACK_COLUMNS", "FrameDroplets", "TrackingResult", "link_tracks"]

TRACK_COLUMNS = (
    "track_id", "first_frame", "last_frame", "n_frames", "mean_diameter_px", "vx_px_per_s", "vy_px_per_s",
    "speed_px_per_s", "diameter_change_px_per_s",
)  # fmt: skip
_AREA_TOLERANCE = 0.25  # a merge's or split's areas add up within this fraction
_AREA_JUMP = 1.4  # a link may not change a droplet's area by more than this factor


@dataclass
class FrameDroplets:
    """The droplets found in one frame: centres (x, y), areas in px, and whether each touches the
    image border."""

    index: int
    time_s: float
    x: np.ndarray
    y: np.ndarray
    area: np.ndarray
    on_border: np.ndarray

    def __len__(self) -> int:
        return int(self.x.size)


@dataclass
class Track:
    """One droplet over time: (frame position, detection index) for each frame it was found in."""

    id: int
    points: list[tuple[int, int]] = field(default_factory=list)  # (position in the frame list, detection)

    @property
    def last(self) -> tuple[int, int]:
        return self.points[-1]


@dataclass
class TrackingResult:
    """Tracks, events and the summary of a sequence (see :func:`link_tracks`)."""

    tracks: list[dict[str, Any]]
    events: list[dict[str, Any]]
    frames: list[dict[str, Any]]
    summary: dict[str, Any]
    positions: list[dict[str, Any]] = field(default_factory=list)
    track_ids: list[list[int]] = field(default_factory=list)  # per frame: each detection's track
    crossing_times: list[float] = field(default_factory=list)  # when centres crossed the middle


def _predict(track: Track, frames: list[FrameDroplets], at: int) -> tuple[float, float]:
    """Where ``track`` should be in frame position ``at``: its last position moved by its last
    velocity (per frame) times the frames since."""
    k, i = track.last
    x, y = frames[k].x[i], frames[k].y[i]
    if len(track.points) >= 2:
        k0, i0 = track.points[-2]
        steps = k - k0
        vx, vy = (x - frames[k0].x[i0]) / steps, (y - frames[k0].y[i0]) / steps
        return x + vx * (at - k), y + vy * (at - k)
    return x, y


def link_tracks(
    frames: list[FrameDroplets],
    fps: float | None,
    max_distance: float | None = None,
    max_gap: int = 1,
    um_per_px: float | None = None,
    shape: tuple[int, int] | None = None,
) -> TrackingResult:
    """Link droplets across ``frames`` into tracks and measure them.

    Args:
        frames: the droplets of each frame, in time order.
        fps: frames per second; None reports per-frame units (``_per_frame`` instead of ``_per_s``).
        max_distance: the farthest a droplet may be from its track's prediction, px (default: the
            median droplet diameter).
        max_gap: frames a track may be missed and still continue.
        um_per_px: calibration; adds micrometre columns.
        shape: (height, width) of the frames, for the crossing line (default: the extent of the
            droplets).

    Returns:
        Tracks (``TRACK_COLUMNS``, plus ``_um`` columns when calibrated), merge and split events,
        per-frame statistics, and a summary: frames, fps, tracks, crossing frequency across the
        middle of the field, median speed, size statistics over tracks (each droplet once),
        merges and splits.
    """
    all_area = np.concatenate([f.area for f in frames]) if frames else np.zeros(0)
    typical = float(2 * np.sqrt(np.median(all_area) / np.pi)) if all_area.size else 10.0
    max_distance = max_distance or typical
    tracks: list[Track] = []
    active: list[Track] = []  # tracks seen within the last max_gap + 1 frames: the only candidates
    for k, frame in enumerate(frames):
        active = [t for t in active if k - t.last[0] <= max_gap + 1]
        open_tracks = list(active)
        matched: set[int] = set()
        if open_tracks and len(frame):
            pred = np.array([_predict(t, frames, k) for t in open_tracks])
            d2 = (pred[:, None, 0] - frame.x[None, :]) ** 2 + (pred[:, None, 1] - frame.y[None, :]) ** 2
            too_far = d2 > max_distance**2
            # A droplet keeps its volume: an area that jumps (two became one, one became two) starts
            # a new track, and the jump is judged a merge or split afterwards. Droplets cut by the
            # border show only part of their area and are exempt.
            last = [t.last for t in open_tracks]
            before = np.array([frames[q].area[i] for q, i in last])
            cut = np.array([frames[q].on_border[i] for q, i in last])
            ratio = frame.area[None, :] / np.maximum(before[:, None], 1.0)
            jump = (ratio > _AREA_JUMP) | (ratio < 1 / _AREA_JUMP)
            too_far |= jump & ~cut[:, None] & ~frame.on_border[None, :]
            cost = np.where(too_far, 1e12, d2)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols, strict=True):
                if not too_far[r, c]:
                    open_tracks[r].points.append((k, int(c)))
                    matched.add(int(c))
        for i in range(len(frame)):
            if i not in matched:
                track = Track(len(tracks), [(k, i)])
                tracks.append(track)
                active.append(track)
    return _measure(frames, tracks, fps, um_per_px, shape, typical)


def _fit_slope(t: np.ndarray, v: np.ndarray) -> float | None:
    if t.size < 2 or np.ptp(t) == 0:
        return None
    return float(np.polyfit(t, v, 1)[0])


def _measure(
    frames: list[FrameDroplets],
    tracks: list[Track],
    fps: float | None,
    um_per_px: float | None,
    shape: tuple[int, int] | None,
    typical: float,
) -> TrackingResult:
    per = "s" if fps else "frame"
    times = np.array([f.time_s if fps else f.index for f in frames], dtype=np.float64)
    rows: list[dict[str, Any]] = []
    velocities = []
    for t in tracks:
        ks = np.array([k for k, _ in t.points])
        inside = np.array([not frames[k].on_border[i] for k, i in t.points])
        tt = times[ks]
        x = np.array([frames[k].x[i] for k, i in t.points])
        y = np.array([frames[k].y[i] for k, i in t.points])
        d = np.array([2 * np.sqrt(frames[k].area[i] / np.pi) for k, i in t.points])
        vx = _fit_slope(tt[inside], x[inside])
        vy = _fit_slope(tt[inside], y[inside])
        speed = float(np.hypot(vx, vy)) if vx is not None and vy is not None else None
        row = {
            "track_id": t.id,
            "first_frame": frames[ks[0]].index,
            "last_frame": frames[ks[-1]].index,
            "n_frames": len(t.points),
            "mean_diameter_px": float(d[inside].mean()) if inside.any() else None,
            f"vx_px_per_{per}": vx,
            f"vy_px_per_{per}": vy,
            f"speed_px_per_{per}": speed,
            f"diameter_change_px_per_{per}": _fit_slope(tt[inside], d[inside]),
        }
        if um_per_px:
            for key in list(row):
                if "_px" in key and row[key] is not None:
                    row[key.replace("_px", "_um")] = row[key] * um_per_px
        rows.append(row)
        if vx is not None and inside.sum() >= 3:
            velocities.append((vx, vy))
    events = _merges_and_splits(frames, tracks, times, typical)
    # Flow: droplets that travel at least their own size while tracked (a time-lapse's jitter does not).
    travel = [
        np.hypot(frames[t.points[-1][0]].x[t.points[-1][1]] - frames[t.points[0][0]].x[t.points[0][1]],
                 frames[t.points[-1][0]].y[t.points[-1][1]] - frames[t.points[0][0]].y[t.points[0][1]])
        for t in tracks if len(t.points) >= 3
    ]  # fmt: skip
    flowing = bool(travel) and float(np.median(travel)) >= typical
    crossings = _crossing_times(frames, tracks, times, velocities, shape) if flowing else np.zeros(0)
    speeds = [r[f"speed_px_per_{per}"] for r in rows if r[f"speed_px_per_{per}"] is not None and r["n_frames"] >= 3]
    diameters = np.array(
        [r["mean_diameter_px"] for r in rows if r["mean_diameter_px"] is not None and r["n_frames"] >= 3]
    )
    summary: dict[str, Any] = {
        "frames": len(frames),
        "fps": fps,
        "tracks": len(tracks),
        f"crossing_frequency_{'hz' if fps else 'per_frame'}": (
            float((crossings.size - 1) / (crossings[-1] - crossings[0])) if crossings.size >= 2 else None
        ),
        "crossings": int(crossings.size),
        "flow": flowing,
        f"median_speed_px_per_{per}": float(np.median(speeds)) if speeds else None,
        "size": size_distribution(diameters, "px"),
        "merges": sum(e["kind"] == "merge" for e in events),
        "splits": sum(e["kind"] == "split" for e in events),
    }
    if um_per_px and summary[f"median_speed_px_per_{per}"] is not None:
        summary[f"median_speed_um_per_{per}"] = summary[f"median_speed_px_per_{per}"] * um_per_px
    if um_per_px:
        summary["size_um"] = size_distribution(diameters * um_per_px, "um")
    per_frame = []
    for f in frames:
        d = 2 * np.sqrt(f.area[~f.on_border] / np.pi)
        per_frame.append(
            {
                "frame": f.index,
                "time_s": f.time_s if fps else None,
                "droplets": len(f),
                "mean_diameter_px": float(d.mean()) if d.size else None,
                "median_diameter_px": float(np.median(d)) if d.size else None,
                "total_area_px": float(f.area.sum()),
            }
        )
    positions = [
        {
            "track_id": t.id,
            "frame": frames[k].index,
            "time_s": frames[k].time_s if fps else None,
            "x_px": float(frames[k].x[i]),
            "y_px": float(frames[k].y[i]),
            "diameter_px": float(2 * np.sqrt(frames[k].area[i] / np.pi)),
            "on_border": bool(frames[k].on_border[i]),
        }
        for t in tracks
        for k, i in t.points
    ]
    track_ids = [[-1] * len(f) for f in frames]
    for t in tracks:
        for k, i in t.points:
            track_ids[k][i] = t.id
    return TrackingResult(rows, events, per_frame, summary, positions, track_ids, [float(t) for t in crossings])


def _crossing_times(
    frames: list[FrameDroplets],
    tracks: list[Track],
    times: np.ndarray,
    velocities: list[tuple[float, float]],
    shape: tuple[int, int] | None,
) -> np.ndarray:
    """Times at which track centres cross the middle of the field across the main flow direction
    (the median velocity), interpolated between frames; empty without flow."""
    if not velocities:
        return np.zeros(0)
    flow = np.median(np.array(velocities), axis=0)
    if np.hypot(*flow) == 0:
        return np.zeros(0)
    u = flow / np.hypot(*flow)
    if shape is not None:
        centre = np.array([shape[1] / 2, shape[0] / 2])
    else:
        xs = np.concatenate([f.x for f in frames])
        ys = np.concatenate([f.y for f in frames])
        centre = np.array([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2])
    out = []
    for t in tracks:
        s = np.array([(frames[k].x[i] - centre[0]) * u[0] + (frames[k].y[i] - centre[1]) * u[1] for k, i in t.points])
        tt = times[[k for k, _ in t.points]]
        for j in range(1, s.size):
            if s[j - 1] < 0 <= s[j]:
                out.append(tt[j - 1] + (tt[j] - tt[j - 1]) * (-s[j - 1]) / (s[j] - s[j - 1]))
    return np.sort(np.asarray(out))


def _merges_and_splits(
    frames: list[FrameDroplets], tracks: list[Track], times: np.ndarray, typical: float
) -> list[dict[str, Any]]:
    """Two tracks becoming one (a merge) or one becoming two (a split) between consecutive frames,
    judged by position (within reach of each other) and area (the parts add up to the whole)."""
    by_frame: dict[int, dict[int, int]] = {}  # frame position -> track id -> detection
    for t in tracks:
        for k, i in t.points:
            by_frame.setdefault(k, {})[t.id] = i
    events: list[dict[str, Any]] = []

    def whole(q: int, i: int) -> bool:
        return not frames[q].on_border[i]

    def radius(f: FrameDroplets, i: int) -> float:
        return float(np.sqrt(f.area[i] / np.pi))

    def near(f: FrameDroplets, i: int, g: FrameDroplets, j: int, reach: float) -> bool:
        return float(np.hypot(f.x[i] - g.x[j], f.y[i] - g.y[j])) <= 1.5 * reach + 0.5 * typical

    def adds_up(whole_area: float, parts: float) -> bool:
        return abs(whole_area - parts) <= _AREA_TOLERANCE * whole_area

    for k in range(len(frames) - 1):
        now, nxt = by_frame.get(k, {}), by_frame.get(k + 1, {})
        ended = {t: i for t, i in now.items() if t not in nxt and whole(k, i)}
        started = {t: i for t, i in nxt.items() if t not in now and whole(k + 1, i)}
        going_on = {t: (now[t], nxt[t]) for t in now.keys() & nxt.keys() if whole(k, now[t]) and whole(k + 1, nxt[t])}
        if not ended and not started:
            continue
        fa, fb = frames[k], frames[k + 1]

        # Merges: two that ended become one that starts; or one ends into another that grows.
        for s_id, j in started.items():
            ids = sorted(ended)
            for a_pos, a in enumerate(ids):
                for b in ids[a_pos + 1 :]:
                    ia, ib = ended[a], ended[b]
                    parts = fa.area[ia] + fa.area[ib]
                    reach = radius(fa, ia) + radius(fa, ib)
                    if adds_up(fb.area[j], parts) and near(fa, ia, fb, j, reach) and near(fa, ib, fb, j, reach):
                        events.append(_event("merge", frames, k + 1, times, [a, b], [s_id]))
        for c_id, (ic, jc) in going_on.items():
            for e_id, ie in ended.items():
                if adds_up(fb.area[jc], fa.area[ic] + fa.area[ie]) and near(
                    fa, ie, fa, ic, radius(fa, ie) + radius(fa, ic)
                ):
                    events.append(_event("merge", frames, k + 1, times, sorted([e_id, c_id]), [c_id]))
        # Splits: one that ended becomes two that start; or one that goes on sheds another.
        for e_id, i in ended.items():
            ids = sorted(started)
            for a_pos, a in enumerate(ids):
                for b in ids[a_pos + 1 :]:
                    ja, jb = started[a], started[b]
                    reach = radius(fb, ja) + radius(fb, jb)
                    if (
                        adds_up(fa.area[i], fb.area[ja] + fb.area[jb])
                        and near(fa, i, fb, ja, reach)
                        and near(fa, i, fb, jb, reach)
                    ):
                        events.append(_event("split", frames, k + 1, times, [e_id], [a, b]))
        for c_id, (ic, jc) in going_on.items():
            for s_id, js in started.items():
                if adds_up(fa.area[ic], fb.area[jc] + fb.area[js]) and near(
                    fb, js, fb, jc, radius(fb, js) + radius(fb, jc)
                ):
                    events.append(_event("split", frames, k + 1, times, [c_id], sorted([c_id, s_id])))
    return events


def _event(
    kind: str, frames: list[FrameDroplets], k: int, times: np.ndarray, tracks: list[int], into: list[int]
) -> dict[str, Any]:
    return {
        "kind": kind,
        "frame": frames[k].index,
        "time_s": float(times[k]) if frames[k].time_s is not None else None,
        "tracks": tracks,
        "into": into,
    }
