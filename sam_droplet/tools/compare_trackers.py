"""Which linker tracks droplets best: this package's LAP linker against laptrack and trackpy.

    python -m sam_droplet.tools.compare_trackers --write docs/tracking-linkers.md
    # laptrack and trackpy installed (pip), else skipped

Generated channel-flow videos (:mod:`.synthetic_video`) at rising speeds, droplets 36 px apart, are
segmented once per frame with the classical detector; then each linker links the same detections,
with the same search radius (the median diameter) and one frame of gap closing. Links are judged
against the truth (each detection is the true droplet whose centre it lies on): link precision and
recall, true droplets followed whole by one track, and the crossing frequency and median speed that
this package's measurement (:func:`~sam_droplet.engine.tracking.link_tracks`'s) gives from each
linker's tracks. Time is the linking alone, per frame.
"""

from __future__ import annotations

import argparse
import itertools
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import tracking
from ..engine.tracking import FrameDroplets, Track, link_tracks
from ..io.read import read_image
from ..pipeline import segment
from .synthetic_video import SyntheticVideo, channel_flow

Linker = Callable[[list[FrameDroplets], float], list[list[int]]]  # per frame: each detection's track


def _ours(frames: list[FrameDroplets], reach: float) -> list[list[int]]:
    return link_tracks(frames, None, reach, 1).track_ids


def _table(frames: list[FrameDroplets]) -> Any:
    import pandas as pd

    rows = [(k, i, f.x[i], f.y[i]) for k, f in enumerate(frames) for i in range(len(f))]
    return pd.DataFrame(rows, columns=["frame", "det", "x", "y"])


def _ids_from(df: Any, frames: list[FrameDroplets], column: str) -> list[list[int]]:
    ids = [[-1] * len(f) for f in frames]
    for k, i, t in zip(df["frame"], df["det"], df[column], strict=True):
        ids[int(k)][int(i)] = int(t)
    return ids


def _laptrack(frames: list[FrameDroplets], reach: float) -> list[list[int]]:
    from laptrack import LapTrack

    lt = LapTrack(cutoff=reach**2, gap_closing_cutoff=reach**2, gap_closing_max_frame_count=1)
    tracked, _, _ = lt.predict_dataframe(_table(frames), ["x", "y"], only_coordinate_cols=False)
    return _ids_from(tracked, frames, "track_id")


def _trackpy(frames: list[FrameDroplets], reach: float, predict: bool = False) -> list[list[int]]:
    import trackpy

    trackpy.quiet()
    table = _table(frames)
    if predict:
        linked = trackpy.predict.NearestVelocityPredict().link_df(table, reach, memory=1)
    else:
        linked = trackpy.link_df(table, reach, memory=1)
    return _ids_from(linked, frames, "particle")


def _truth_of(video: SyntheticVideo, frames: list[FrameDroplets]) -> list[np.ndarray]:
    """Per frame: the true droplet under each detection (-1: none within its radius)."""
    out = []
    for k, f in enumerate(frames):
        here = [
            (j, d.x[k - d.frames[0]], d.y[0], d.radius)
            for j, d in enumerate(video.droplets)
            if d.frames[0] <= k <= d.frames[-1]
        ]
        owner = np.full(len(f), -1)
        for i in range(len(f)):
            best = min(here, key=lambda h: np.hypot(h[1] - f.x[i], h[2] - f.y[i]), default=None)
            if best is not None and np.hypot(best[1] - f.x[i], best[2] - f.y[i]) < best[3]:
                owner[i] = best[0]
        out.append(owner)
    return out


def _score(
    ids: list[list[int]], truth: list[np.ndarray], frames: list[FrameDroplets], fps: float, shape: tuple[int, int]
) -> dict[str, float]:
    links = {(k, i): t for k, row in enumerate(ids) for i, t in enumerate(row)}
    by_track: dict[int, list[tuple[int, int]]] = {}
    for (k, i), t in sorted(links.items()):
        by_track.setdefault(t, []).append((k, i))
    made = [(a, b) for pts in by_track.values() for a, b in itertools.pairwise(pts)]
    good = sum(truth[a[0]][a[1]] == truth[b[0]][b[1]] >= 0 for a, b in made)
    # The true links: each true droplet's consecutive detections.
    by_true: dict[int, list[tuple[int, int]]] = {}
    for k, owner in enumerate(truth):
        for i, j in enumerate(owner):
            if j >= 0:
                by_true.setdefault(int(j), []).append((k, i))
    wanted = [(a, b) for pts in by_true.values() for a, b in itertools.pairwise(pts)]
    found = sum(links[a] == links[b] for a, b in wanted)
    whole = sum(
        len({links[p] for p in pts}) == 1 and len(by_track[links[pts[0]]]) == len(pts)
        for pts in by_true.values()
        if len(pts) >= 3
    )
    followed = sum(len(pts) >= 3 for pts in by_true.values())
    tracks = [Track(t, pts) for t, pts in by_track.items()]
    typical = float(2 * np.sqrt(np.median(np.concatenate([f.area for f in frames])) / np.pi))
    summary = tracking._measure(frames, tracks, fps, None, shape, typical).summary
    return {
        "link_precision": good / max(len(made), 1),
        "link_recall": found / max(len(wanted), 1),
        "whole_tracks": whole / max(followed, 1),
        "frequency_hz": summary["crossing_frequency_hz"] or float("nan"),
        "speed_px_s": summary["median_speed_px_per_s"] or float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=80)
    parser.add_argument("--speeds", default="400,1200,1500,1800,2400", help="px/s at 100 frames/s")
    parser.add_argument("--write", type=Path, help="also write the report (Markdown) here")
    args = parser.parse_args(argv)
    lines: list[str] = []

    def out(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    linkers: dict[str, Linker] = {"sam_droplet (scipy LAP, velocity)": _ours}
    for name, module, fn in (
        ("laptrack 0.17 (LAP)", "laptrack", _laptrack),
        ("trackpy (nearest)", "trackpy", _trackpy),
        ("trackpy (velocity predict)", "trackpy", lambda f, r: _trackpy(f, r, predict=True)),
    ):
        try:
            __import__(module)
            linkers[name] = fn
        except ImportError:
            out(f"{name}: not installed, skipped (pip install {module})\n")
    out(
        "| speed px/s (px/frame, of 36 px spacing) | linker | link precision | link recall | whole tracks | frequency error | speed error | ms/frame |"
    )
    out("|---|---|---|---|---|---|---|---|")
    for speed in (float(s) for s in args.speeds.split(",")):
        video = channel_flow(n_frames=args.frames, speed_px_s=speed, rate_hz=speed / 36, coalescence=False, seed=1)
        frames = []
        for k, image in enumerate(video.frames):
            kept = segment(read_image(image), segmenter="classical").droplets
            frames.append(FrameDroplets(k, k / video.fps, *(np.array(v, dtype=float) for v in (
                [d.centroid[0] for d in kept], [d.centroid[1] for d in kept], [d.area_px for d in kept])),
                np.array([d.touches_edge for d in kept], dtype=bool)))  # fmt: skip
        truth = _truth_of(video, frames)
        reach = float(2 * np.sqrt(np.median(np.concatenate([f.area for f in frames])) / np.pi))
        true_f, true_v = video.crossing_frequency_hz(), video.main_speed
        for name, linker in linkers.items():
            start = time.perf_counter()
            ids = linker(frames, reach)
            ms = (time.perf_counter() - start) * 1000 / len(frames)
            s = _score(ids, truth, frames, video.fps, video.frames[0].shape[:2])
            out(
                f"| {speed:.0f} ({speed / video.fps:.0f}) | {name} | {s['link_precision']:.3f} | {s['link_recall']:.3f} | "
                f"{s['whole_tracks']:.2f} | {100 * (s['frequency_hz'] / true_f - 1):+.1f} % | "
                f"{100 * (s['speed_px_s'] / true_v - 1):+.1f} % | {ms:.2f} |"
            )
    if args.write:
        from .bench import _describe_machine, _machine

        header = [
            "# Tracking linkers",
            "",
            "`python -m sam_droplet.tools.compare_trackers --write docs/tracking-linkers.md` (laptrack and "
            "trackpy installed beside the package). "
            + re.sub(r":\w+:`[~.]*([^`]+)`", r"`\1`", __doc__.split("\n\n")[2].replace("\n", " ")),
            "",
            f"Machine: {_describe_machine(_machine())} {args.frames} frames of 480x160 at 100 frames/s per speed.",
            "",
        ]
        args.write.write_text("\n".join(header + lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
