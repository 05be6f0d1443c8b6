"""Droplets in motion: generated videos with exact truth, read as AVI and as TIFF, segmented frame by
frame and tracked; frequency, speed, one-to-one tracks, a coalescence as a merge, the same video
backwards as a split, a time-lapse without flow, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sam_droplet.errors import InvalidImage, InvalidOptions
from sam_droplet.io.video import probe_sequence, read_frames
from sam_droplet.motion import TrackResult, track
from sam_droplet.tools.synthetic_video import (
    SyntheticVideo,
    channel_flow,
    shrinking_emulsion,
    write_avi,
    write_tiff,
)

WITHIN = 0.02  # the promise: frequency and speed within 2 % of the truth


@pytest.fixture(scope="module")
def flow() -> SyntheticVideo:
    return channel_flow(seed=0)


@pytest.fixture(scope="module")
def files(flow, tmp_path_factory):
    folder = tmp_path_factory.mktemp("video")
    return write_avi(flow, folder / "flow.avi"), write_tiff(flow, folder / "flow.tif")


@pytest.fixture(scope="module")
def tracked(files) -> tuple[TrackResult, TrackResult]:
    return track(files[0]), track(files[1])


def _whole_in_frame(video: SyntheticVideo, d, k: int) -> bool:
    w = video.frames[0].shape[1]
    return d.radius + 1 < d.x[k] < w - d.radius - 1


def test_sequences_are_read_frame_by_frame_with_their_rate(files, flow):
    avi, tif = files
    for path in files:
        info = probe_sequence(path)
        assert (info.frames, info.fps, info.width, info.height) == (len(flow.frames), flow.fps, 480, 160)
    frames = list(read_frames(avi, frame_step=3, max_frames=4))
    assert [f.index for f in frames] == [0, 3, 6, 9] and frames[1].time_s == pytest.approx(0.03)
    assert frames[0].image.pixels.ndim == 2  # a monochrome video gives gray frames
    # Lossless AVI and TIFF hold the same pixels; fps can be overridden.
    first_tif = next(read_frames(tif, fps=50))
    assert np.array_equal(first_tif.image.pixels, frames[0].image.pixels) and first_tif.time_s == 0
    assert probe_sequence(tif, fps=50).fps == 50


def test_bad_sequences_and_options_are_refused(tmp_path, files):
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(InvalidImage):
        probe_sequence(junk)
    with pytest.raises(InvalidImage):
        probe_sequence(tmp_path / "absent.mp4")
    with pytest.raises(InvalidOptions):
        next(read_frames(files[0], frame_step=0))


def test_frequency_and_speed_within_2_percent_of_the_truth(tracked, flow):
    for result in tracked:
        s = result.summary
        assert s["flow"] and s["crossings"] == flow.crossing_times().size
        assert s["crossing_frequency_hz"] == pytest.approx(flow.crossing_frequency_hz(), rel=WITHIN)
        assert s["median_speed_px_per_s"] == pytest.approx(flow.main_speed, rel=WITHIN)
        sizes = [2 * d.radius for d in flow.droplets]
        assert s["size"]["n"] == s["tracks"] - sum(1 for t in result.tracks if t["n_frames"] < 3)
        assert s["size"]["dn50"] == pytest.approx(float(np.median(sizes)), rel=0.05)


def test_a_multipage_tiff_gives_the_same_result_as_the_avi(tracked):
    avi, tif = tracked
    assert avi.tracks == tif.tracks and avi.events == tif.events
    assert {k: v for k, v in avi.summary.items() if k != "format"} == {
        k: v for k, v in tif.summary.items() if k != "format"
    }


def test_tracks_match_the_true_droplets_one_to_one(tracked, flow):
    result = tracked[0]
    by_track: dict[int, list[dict]] = {}
    for p in result.positions:
        by_track.setdefault(p["track_id"], []).append(p)
    truth_of: dict[int, int] = {}
    for tid, points in by_track.items():
        # The true droplet within 2 px of the track in every frame where the droplet is whole.
        owners = set()
        for p in points:
            if p["on_border"]:
                continue
            k = p["frame"]
            near = [
                n for n, d in enumerate(flow.droplets)
                if d.frames[0] <= k <= d.frames[-1]
                and np.hypot(d.x[k - d.frames[0]] - p["x_px"], d.y[0] - p["y_px"]) < 2.0
            ]  # fmt: skip
            assert len(near) == 1, (tid, k, near)
            owners.add(near[0])
        assert len(owners) == 1, (tid, owners)
        truth_of[tid] = owners.pop()
    assert len(set(truth_of.values())) == len(truth_of), "two tracks for one droplet"
    seen_whole = {
        n for n, d in enumerate(flow.droplets)
        if sum(_whole_in_frame(flow, d, k) for k in range(len(d.frames))) >= 3
    }  # fmt: skip
    assert seen_whole <= set(truth_of.values()), "a droplet seen whole in 3 frames has no track"


def test_a_coalescence_is_reported_as_a_merge(tracked, flow):
    result = tracked[0]
    assert result.summary["merges"] == 1 and result.summary["splits"] == 0
    (event,) = result.events
    assert event["kind"] == "merge" and event["frame"] == flow.merge_frame
    assert event["time_s"] == pytest.approx(flow.merge_frame / flow.fps)
    # The two tracks are the two droplets that merged; the new one is their union.
    ends = {t["track_id"]: t for t in result.tracks}
    assert all(ends[t]["last_frame"] == flow.merge_frame - 1 for t in event["tracks"])
    (into,) = event["into"]
    merged = flow.droplets[flow.merged[2]]
    assert ends[into]["first_frame"] == flow.merge_frame
    assert ends[into]["mean_diameter_px"] == pytest.approx(2 * merged.radius, rel=0.05)
    assert ends[into]["speed_px_per_s"] == pytest.approx(merged.speed, rel=WITHIN)


def test_the_same_video_backwards_shows_a_split(flow, tmp_path):
    backwards = SyntheticVideo(flow.frames[::-1], flow.fps, [])
    result = track(write_tiff(backwards, tmp_path / "backwards.tif"))
    assert result.summary["splits"] == 1 and result.summary["merges"] == 0
    (event,) = result.events
    assert event["kind"] == "split" and len(event["into"]) == 2
    assert event["frame"] == len(flow.frames) - flow.merge_frame
    assert result.summary["median_speed_px_per_s"] == pytest.approx(flow.main_speed, rel=WITHIN)


def test_a_time_lapse_without_flow_reports_sizes_over_time(tmp_path):
    video = shrinking_emulsion(seed=1)
    result = track(write_tiff(video, tmp_path / "timelapse.tif"))
    s = result.summary
    assert not s["flow"] and s["crossing_frequency_hz"] is None and s["tracks"] == len(video.droplets)
    measured = np.array([f["mean_diameter_px"] for f in result.frames])
    truth = np.array([2 * r.mean() for r in video.radii_by_frame])
    assert np.allclose(measured, truth, rtol=0.03)
    assert all(t["diameter_change_px_per_s"] < 0 for t in result.tracks)


def test_track_command_writes_tables_and_a_summary(files, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "sam_droplet.cli", "track", str(files[0]), "--out", str(out), "--max-frames", "30",
         "--um-per-px", "2.0", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["summary"]["frames"] == 30 and summary["summary"]["median_speed_um_per_s"] > 0
    header = (out / "tracks.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["track_id", "first_frame", "last_frame", "n_frames"] and "speed_um_per_s" in header
    assert (out / "frames.csv").read_text().startswith("frame,time_s,droplets")
    assert (out / "positions.csv").read_text().startswith("track_id,frame,time_s,x_px,y_px")
