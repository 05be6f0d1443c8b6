"""Jobs through the app with the in-process queue: a video submitted, watched, fetched as JSON and
CSV, cancelled; owned by its key; limited in frames and per key; failed (never left running) when a
process that held it is gone."""

from __future__ import annotations

import io
import os
import socket
import time
from pathlib import Path

import pytest

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


def submit(client, data: bytes, headers=A, **fields):
    body = {"file": (io.BytesIO(data), "flow.avi"), **fields}
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

    def post(data: bytes) -> str:
        r = requests.post(web.url + "/jobs", files={"file": ("v.avi", data)}, timeout=60)
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
        assert state(waiting)["state"] == "cancelled"  # never run
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
