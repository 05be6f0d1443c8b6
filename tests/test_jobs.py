"""Jobs through the app with the in-process queue: a video submitted, watched, fetched as JSON,
CSV and ZIP, its frames viewed with outlines and track tails, cancelled; a ZIP of images as a
batch; owned by its key; limited in frames, bytes and per key; failed (never left running) when a
process that held it is gone."""

from __future__ import annotations

import csv as csvlib
import io
import json
import os
import socket
import time
import zipfile
from pathlib import Path

import pytest

from sam_droplet.tools import synthetic
from sam_droplet.tools.synthetic_video import channel_flow, write_avi
from sam_droplet.web import create_app
from sam_droplet.web.config import Config

KEY_A = "jobs-key-a-0123456789abcdef"
KEY_B = "jobs-key-b-0123456789abcdef"
A, B = {"X-API-Key": KEY_A}, {"X-API-Key": KEY_B}


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> bytes:
    path = write_avi(channel_flow(n_frames=40, seed=0), tmp_path_factory.mktemp("jobs") / "flow.avi")
    return path.read_bytes()


def make_app(classical_engine, tmp_path: Path, **settings):
    mapping = {
        "SEGMENTER": "classical", "RATE_LIMIT": "off", "RESULTS_DIR": str(tmp_path / "results"),
        "API_KEYS": f"{KEY_A},{KEY_B}", **settings,
    }  # fmt: skip
    return create_app(Config.from_mapping(mapping), engine=classical_engine)


def submit(client, data: bytes, headers=A, name="flow.avi", **fields):
    body = {"file": (io.BytesIO(data), name), **fields}
    return client.post("/jobs", data=body, content_type="multipart/form-data", headers=headers)


def wait(client, job_id: str, headers=A, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}", headers=headers).get_json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished: {job}")


def test_a_video_job_runs_to_its_results(classical_engine, video, tmp_path):
    client = make_app(classical_engine, tmp_path).test_client()
    r = submit(client, video, fps="50")
    assert r.status_code == 202, r.get_json()
    body = r.get_json()
    assert body["frames"] == 40 and r.headers["Location"] == body["status_url"] == f"/jobs/{body['job_id']}"
    job = wait(client, body["job_id"])
    assert job["state"] == "done" and job["progress"] == {"done": 40, "total": 40} and job["error"] is None
    result = client.get(body["result_url"], headers=A).get_json()
    assert result["summary"]["frames"] == 40 and result["summary"]["fps"] == 50 and result["tracks"]
    csv = client.get(body["result_url"] + "?format=csv", headers=A)
    assert csv.status_code == 200 and csv.data.decode().startswith("track_id,first_frame")
    assert "flow_tracks.csv" in csv.headers["Content-Disposition"]
    assert client.get(body["result_url"] + "?format=xml", headers=A).status_code == 400
    assert len(result["frames"]) == 40 and result["crossing_times"] == sorted(result["crossing_times"])
    bundle = client.get(body["result_url"] + "?format=zip", headers=A)
    assert bundle.status_code == 200 and bundle.mimetype == "application/zip"
    names = set(zipfile.ZipFile(io.BytesIO(bundle.data)).namelist())
    assert names == {"summary.json", "tracks.csv", "frames.csv", "positions.csv"}
    # The frame viewer: every analysed frame, its preview, outlines, track ids and tails.
    stops = client.get(f"{body['status_url']}/frames", headers=A).get_json()["frames"]
    assert stops == list(range(40))
    frame = client.get(f"{body['status_url']}/frames/30", headers=A).get_json()
    assert (
        (frame["width"], frame["height"]) == (480, 160)
        and frame["droplets"]
        and frame["time_s"] == pytest.approx(30 / 50)
    )
    positions = list(
        csvlib.DictReader(io.StringIO(client.get(body["result_url"] + "?format=positions", headers=A).data.decode()))
    )
    at30 = {(int(p["track_id"]), round(float(p["x_px"]), 1)) for p in positions if p["frame"] == "30"}
    assert {(d["track_id"], round(d["x"], 1)) for d in frame["droplets"]} == at30
    inner = [d for d in frame["droplets"] if not d["on_border"]]
    assert inner and all(len(d["outline"]) >= 6 for d in inner)
    assert sum(len(d["tail"]) >= 5 for d in inner) >= len(inner) / 2  # most came a long way
    moving = max(inner, key=lambda d: len(d["tail"]))
    assert moving["tail"][-1][0] < moving["x"]  # the tail lies behind, upstream of the flow (+x)
    image = client.get(frame["image_url"], headers=A)
    assert image.status_code == 200 and image.mimetype == "image/jpeg" and image.data[:2] == b"\xff\xd8"
    assert client.get(f"{body['status_url']}/frames/99", headers=A).status_code == 404
    assert client.get(frame["image_url"], headers=B).status_code == 404
    # Another key: the job does not exist for it.
    for path in (body["status_url"], body["result_url"]):
        other = client.get(path, headers=B)
        assert other.status_code == 404 and other.get_json()["error"]["code"] == "job_not_found"
    assert client.delete(body["status_url"], headers=B).status_code == 404
    # A finished job is deleted on request.
    assert client.delete(body["status_url"], headers=A).get_json()["state"] == "deleted"
    assert client.get(body["status_url"], headers=A).status_code == 404


def test_jobs_are_limited_and_checked_before_any_frame_is_decoded(classical_engine, video, tmp_path):
    client = make_app(classical_engine, tmp_path, JOB_MAX_FRAMES="30", JOBS_PER_KEY="1").test_client()
    too_long = submit(client, video)
    assert too_long.status_code == 413 and "JOB_MAX_FRAMES" in too_long.get_json()["error"]["message"]
    assert not list((tmp_path / "results").iterdir())  # nothing left behind
    first = submit(client, video, max_frames="20")
    assert first.status_code == 202  # within the limit with max_frames
    second = submit(client, video, max_frames="20")
    assert second.status_code == 429 and second.get_json()["error"]["code"] == "too_many_jobs"
    assert wait(client, first.get_json()["job_id"])["progress"]["done"] == 20
    junk = submit(client, b"not a video" * 1000, headers=B)
    assert junk.status_code == 400
    assert submit(client, video, headers=B, frame_step="0").status_code == 400
    assert submit(client, video, headers=B, colour="red").status_code == 400


def test_a_running_job_is_cancelled(classical_engine, video, tmp_path):
    client = make_app(classical_engine, tmp_path).test_client()
    job_id = submit(client, video).get_json()["job_id"]
    deadline = time.monotonic() + 60
    while client.get(f"/jobs/{job_id}", headers=A).get_json()["state"] == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = client.delete(f"/jobs/{job_id}", headers=A)
    assert r.status_code == 200 and r.get_json()["state"] in ("cancelling", "deleted")
    if r.get_json()["state"] == "cancelling":
        assert wait(client, job_id)["state"] == "cancelled"
        assert client.get(f"/jobs/{job_id}/result", headers=A).status_code == 409


def test_jobs_of_a_process_that_is_gone_fail_instead_of_staying_running(classical_engine, video, tmp_path):
    app = make_app(classical_engine, tmp_path)
    store = app.extensions["sam_droplet"].jobs
    host = socket.gethostname()
    job = store.create("", "flow.avi", video, {})
    store.update(job["job_id"], state="running", process=f"{host}:999999999")  # no such process
    alive = store.create("", "flow.avi", video, {})  # held by another live process: left alone
    store.update(alive["job_id"], state="running", process=f"{host}:{os.getppid()}")
    make_app(classical_engine, tmp_path)  # a web process starting on the same RESULTS_DIR
    failed = store.get(job["job_id"])
    assert failed["state"] == "failed" and "restarted" in failed["error"]
    assert store.get(alive["job_id"])["state"] == "running"


@pytest.mark.system
def test_a_job_survives_as_failed_when_its_server_is_killed(video, tmp_path):
    """A real Waitress killed with SIGKILL mid-job; the next one on the same RESULTS_DIR reports the
    job failed, with a message, instead of running forever."""
    import requests

    from . import servers

    env = {"SEGMENTER": "classical", "RATE_LIMIT": "off", "RESULTS_DIR": str(tmp_path / "results")}
    long_video = write_avi(channel_flow(n_frames=300, seed=1), tmp_path / "long.avi").read_bytes()
    server = servers.waitress(servers.free_port(), tmp_path / "first.log", env)
    try:
        server.wait_healthy()
        r = requests.post(server.url + "/jobs", files={"file": ("long.avi", long_video)}, timeout=60)
        assert r.status_code == 202, r.text
        status_url = server.url + r.json()["status_url"]
        deadline = time.monotonic() + 60
        while requests.get(status_url, timeout=10).json()["progress"]["done"] < 5:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.2)
    finally:
        server.stop()  # SIGKILL to the whole process group
    again = servers.waitress(servers.free_port(), tmp_path / "second.log", env)
    try:
        again.wait_healthy()
        job = requests.get(again.url + r.json()["status_url"], timeout=10).json()
        assert job["state"] == "failed" and "restarted" in job["error"], job
    finally:
        again.stop()


@pytest.mark.system
@pytest.mark.skipif(__import__("shutil").which("redis-server") is None, reason="redis-server is not installed")
def test_jobs_on_redis_run_in_a_separate_worker_and_a_killed_worker_fails_its_job(video, tmp_path):
    """JOB_QUEUE_URL: a real redis-server, a real `sam-droplet worker`, a real Waitress. A job runs
    to its result; a worker killed with SIGKILL mid-job leaves it failed, not running; a queued
    job is cancelled before any worker takes it."""
    import signal
    import subprocess
    import sys

    import requests

    from . import servers

    redis = servers.RedisServer(tmp_path).start()
    env = {
        "SEGMENTER": "classical", "RATE_LIMIT": "off", "RESULTS_DIR": str(tmp_path / "results"),
        "JOB_QUEUE_URL": redis.url, "LOG_LEVEL": "warning",
    }  # fmt: skip
    web = servers.waitress(servers.free_port(), tmp_path / "web.log", env)

    def start_worker(name: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        full = {**__import__("os").environ, **env}
        return subprocess.Popen([sys.executable, "-m", "sam_droplet.cli", "worker"], env=full, stdout=log, stderr=log)

    def post(data: bytes, name: str = "v.avi") -> str:
        r = requests.post(web.url + "/jobs", files={"file": (name, data)}, timeout=60)
        assert r.status_code == 202, r.text
        return web.url + r.json()["status_url"]

    def state(url: str) -> dict:
        return requests.get(url, timeout=10).json()

    worker = None
    try:
        web.wait_healthy()
        # Queued with no worker yet: it waits in redis, and can be cancelled there.
        waiting = post(video)
        assert state(waiting)["state"] == "queued"
        assert requests.delete(waiting, timeout=10).json()["state"] == "cancelled"
        worker = start_worker("worker1")
        done_url = post(video)
        deadline = time.monotonic() + 180
        while state(done_url)["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, "the worker never finished the job"
            time.sleep(0.3)
        assert state(done_url)["state"] == "done"
        result = requests.get(done_url + "/result", timeout=10).json()
        assert result["summary"]["frames"] == 40 and result["tracks"]
        assert requests.get(done_url + "/frames/39", timeout=10).json()["droplets"]  # the worker kept the views
        assert state(waiting)["state"] == "cancelled"  # never run
        # A batch runs on the same worker.
        from .conftest import png_bytes

        batch_url = post(_archive({"a.png": png_bytes(synthetic.sparse_emulsion(seed=3).image)}), "plate.zip")
        while state(batch_url)["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline + 60, "the worker never finished the batch"
            time.sleep(0.3)
        assert requests.get(batch_url + "/result", timeout=10).json()["rows"][0]["droplets"] > 5
        # The job names the RQ worker that ran it; a web process elsewhere asks redis whether that
        # worker still lives (its registration expires when its heartbeats stop).
        from sam_droplet.jobs import JobStore, RQQueue

        store = JobStore(tmp_path / "results")
        ran = store.get(done_url.rsplit("/", 1)[1])
        queue = RQQueue(store, redis.url)
        assert ran["rq_worker"] and not queue.holder_gone(ran)
        assert queue.holder_gone({**ran, "rq_worker": "a-worker-that-died"})
        # A long job; the worker is killed mid-way.
        long_video = write_avi(channel_flow(n_frames=300, seed=2), tmp_path / "long.avi").read_bytes()
        killed_url = post(long_video)
        deadline = time.monotonic() + 120
        while state(killed_url)["progress"]["done"] < 5:
            assert time.monotonic() < deadline, "the long job never started"
            time.sleep(0.2)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        job = state(killed_url)
        assert job["state"] == "failed" and "stopped" in job["error"], job
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        web.stop()
        redis.stop()


def _archive(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_a_zip_of_images_is_a_batch_job_with_files_per_image(classical_engine, tmp_path):
    from .conftest import png_bytes

    images = {f"plate/well_{i}.png": png_bytes(synthetic.sparse_emulsion(seed=i).image) for i in range(3)}
    archive = _archive(
        {**images, "plate/broken.png": b"\x89PNG not really", "notes.txt": b"hello", "__MACOSX/._x.png": b""}
    )
    client = make_app(classical_engine, tmp_path).test_client()
    r = submit(client, archive, name="plate.zip")
    assert r.status_code == 202 and r.get_json()["kind"] == "batch" and r.get_json()["frames"] == 4
    job = wait(client, r.get_json()["job_id"])
    assert job["state"] == "done" and job["kind"] == "batch" and job["formats"] == ["json", "csv", "zip"]
    result = client.get(job["result_url"], headers=A).get_json()
    assert result["images"] == 4 and result["failed"] == 1 and result["droplets"] > 0
    assert result["skipped_members"] == ["notes.txt", "__MACOSX/._x.png"]
    rows = {row["file"]: row for row in result["rows"]}
    assert "error" in rows["plate/broken.png"] and rows["plate/well_0.png"]["droplets"] > 5
    summary = client.get(job["result_url"] + "?format=csv", headers=A).data.decode()
    assert summary.startswith("file,segmenter,droplets") and summary.count("\n") == 5
    bundle = zipfile.ZipFile(io.BytesIO(client.get(job["result_url"] + "?format=zip", headers=A).data))
    names = set(bundle.namelist())
    for i in range(3):
        assert {
            f"images/well_{i}.csv",
            f"images/well_{i}.json",
            f"images/well_{i}_labels.png",
            f"images/well_{i}_overlay.png",
        } <= names
    per_image = bundle.read("images/well_0.csv").decode()
    assert per_image.count("\n") - 1 == rows["plate/well_0.png"]["droplets"]
    assert json.loads(bundle.read("images/well_1.json"))["num_droplets"] == rows["plate/well_1.png"]["droplets"]
    # The options of /segment_file apply to every image: here a filter on the diameter.
    filtered = submit(client, archive, name="plate.zip", filters='{"diameter_min": 60}')
    assert filtered.status_code == 202, filtered.get_json()
    rows_filtered = client.get(wait(client, filtered.get_json()["job_id"])["result_url"], headers=A).get_json()["rows"]
    assert 0 < rows_filtered[0]["droplets"] < rows["plate/well_0.png"]["droplets"]
    assert submit(client, archive, name="plate.zip", filters="{not json").status_code == 400
    # Frames belong to videos; a batch has none.
    assert client.get(f"/jobs/{job['job_id']}/frames", headers=A).status_code == 409
    # An archive without images, and one with too many, are refused before anything runs.
    assert submit(client, _archive({"a.txt": b"x"}), name="empty.zip").status_code == 400
    limited = make_app(classical_engine, tmp_path / "limited", JOB_MAX_FRAMES="3").test_client()
    assert submit(limited, archive, name="plate.zip").status_code == 413


def test_job_uploads_have_their_own_size_limit(classical_engine, video, tmp_path):
    """Videos are larger than images: /jobs takes up to JOB_MAX_UPLOAD_MB, images MAX_UPLOAD_MB."""
    client = make_app(classical_engine, tmp_path, MAX_UPLOAD_MB="0.5", JOB_MAX_UPLOAD_MB="2").test_client()
    assert 0.5 * 2**20 < len(video) < 2 * 2**20
    accepted = submit(client, video, max_frames="2")
    assert accepted.status_code == 202, accepted.get_json()
    image = client.post("/segment_file", data={"file": (io.BytesIO(video), "x.png")}, headers=A)
    assert image.status_code == 413 and "MAX_UPLOAD_MB" in image.get_json()["error"]["message"]
    big = submit(client, video + b"\0" * (2**20), max_frames="2")
    assert big.status_code == 413 and "JOB_MAX_UPLOAD_MB" in big.get_json()["error"]["message"]
    wait(client, accepted.get_json()["job_id"])
