"""Long work as jobs: a video or TIFF stack tracked, or a ZIP of images segmented, in the background,
its state on disk.

The web service submits them (``POST /jobs``) and ``sam-droplet worker`` runs them; nothing here
knows HTTP.

Each job is a folder ``RESULTS_DIR/<id>/``: ``job.json`` (owner, kind, state, progress, options,
error), the uploaded file, and when done the results: for a video, ``summary.json``,
``tracks.csv``, ``frames.csv``, ``positions.csv``, ``results.zip`` and ``frames/`` (a preview and
the outlines of each analysed frame, :mod:`.io.frames`); for a batch, what
:func:`.batch.segment_archive` writes. State lives on disk, written atomically, so any process that
sees the folder (a restarted web process, a worker on another machine sharing the volume) sees the
job; a ``cancel`` file in the folder asks whoever runs it to stop at its next frame.

:class:`InProcessQueue` runs jobs in a bounded pool of threads inside the web process (the default:
``make run`` does everything). A web process that starts finds the jobs a previous one left
``queued`` or ``running`` and marks them ``failed`` with a message, so no job is left running
forever.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from .errors import DropletError

__all__ = ["QUEUE_NAME", "STATES", "InProcessQueue", "JobCancelled", "JobStore", "RQQueue", "run_job", "run_stored_job"]

log = logging.getLogger("sam_droplet")

STATES = ("queued", "running", "done", "failed", "cancelled")
KINDS = ("video", "batch")


def default_results_dir() -> Path:
    """Where jobs live without RESULTS_DIR: one folder in the temp directory, shared by every
    process of the host (web workers and ``sam-droplet worker`` alike)."""
    return Path(tempfile.gettempdir()) / "sam-droplet-jobs"


class JobCancelled(Exception):
    """The job's cancel file appeared while it ran."""


class JobStore:
    """Jobs as folders under ``root``: create, read, update (atomic), cancel, expire."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def create(
        self,
        owner: str,
        file_name: str,
        data: bytes | BinaryIO,
        options: dict[str, Any],
        kind: str = "video",
        limits: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """A new ``queued`` job for ``owner`` with the uploaded ``data`` (bytes, or a file object
        copied in chunks); ``kind`` is ``video`` (a video or TIFF stack to track) or ``batch`` (a
        ZIP of images); ``limits`` (``max_pixels``, ``max_memory_bytes``) bound each image."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        job_id = uuid.uuid4().hex
        folder = self.folder(job_id)
        folder.mkdir()
        suffix = re.sub(r"[^.\w]", "", Path(file_name).suffix.lower())[:8] or ".bin"
        with open(folder / f"input{suffix}", "wb") as fh:
            if isinstance(data, bytes):
                fh.write(data)
            else:
                shutil.copyfileobj(data, fh, 1 << 20)
        job = {
            "job_id": job_id,
            "owner": owner,
            "kind": kind,
            "file_name": file_name,
            "input": f"input{suffix}",
            "options": options,
            "limits": limits or {},
            "state": "queued",
            "progress": {"done": 0, "total": None},
            "created": time.time(),
            "process": _this_process(),  # who holds it: the accepting process, then the runner
            "started": None,
            "finished": None,
            "error": None,
        }
        self._write(job)
        return job

    def get(self, job_id: str) -> dict[str, Any] | None:
        path = self.folder(job_id) / "job.json"
        if not job_id.isalnum() or not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def update(self, job_id: str, **fields: Any) -> dict[str, Any] | None:
        with self._lock:
            job = self.get(job_id)
            if job is None:
                return None
            job.update(fields)
            self._write(job)
            return job

    def _write(self, job: dict[str, Any]) -> None:
        folder = self.folder(job["job_id"])
        tmp = folder / f".job.{threading.get_ident()}.tmp"
        tmp.write_text(json.dumps(job))
        os.replace(tmp, folder / "job.json")  # readers never see half a file

    def jobs(self, owner: str | None = None) -> list[dict[str, Any]]:
        out = []
        for folder in self.root.iterdir():
            job = self.get(folder.name) if folder.is_dir() else None
            if job is not None and (owner is None or job["owner"] == owner):
                out.append(job)
        return out

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state (every state listed, zeros included)."""
        out = dict.fromkeys(STATES, 0)
        for job in self.jobs():
            out[job["state"]] = out.get(job["state"], 0) + 1
        return out

    def cancel(self, job_id: str) -> None:
        (self.folder(job_id) / "cancel").touch()

    def cancelled(self, job_id: str) -> bool:
        return (self.folder(job_id) / "cancel").exists()

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def expire(self, ttl_s: float) -> int:
        """Delete finished jobs older than ``ttl_s`` seconds; returns how many."""
        now, n = time.time(), 0
        for job in self.jobs():
            if job["state"] in ("done", "failed", "cancelled") and now - (job["finished"] or job["created"]) > ttl_s:
                self.delete(job["job_id"])
                n += 1
        return n

    def reconcile(
        self, job: dict[str, Any], holder_gone: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """``job``, marked ``failed`` when it is ``running`` in a process that is gone: one of this
        host (its pid), or one ``holder_gone`` says is gone (a queue's worker on another machine).
        A job is never left running forever."""
        gone = job["state"] == "running" and (
            _process_gone(job.get("process", ""), own_pid_is_gone=False)
            or (holder_gone is not None and holder_gone(job))
        )
        if gone:
            message = "the worker running this job stopped (killed or crashed) before it finished; submit it again"
            return self.update(job["job_id"], state="failed", error=message, finished=time.time()) or job
        return job

    def fail_interrupted(self, message: str) -> int:
        """Mark ``failed`` with ``message`` every ``queued`` or ``running`` job whose process, on
        this host, is gone (a job of a live process, another worker's, is left alone); returns
        how many."""
        n = 0
        for job in self.jobs():
            if job["state"] in ("queued", "running") and _process_gone(job.get("process", "")):
                self.update(job["job_id"], state="failed", error=message, finished=time.time())
                n += 1
        return n


def _this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_gone(process: str, own_pid_is_gone: bool = True) -> bool:
    """Whether ``host:pid`` names a process of this host that no longer runs (with
    ``own_pid_is_gone``, this process's own pid too: at startup it cannot hold a job yet, so
    a job with its pid was left by an earlier process that had the same pid)."""
    import psutil

    host, _, pid = process.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return own_pid_is_gone
    return not psutil.pid_exists(int(pid))


def _track_video(folder: Path, job: dict[str, Any], engine: Any, on_frame: Callable[[int, int], None]) -> None:
    from .io.frames import FrameViews
    from .motion import RESULT_FILES, track

    views = FrameViews(folder)
    result = track(
        folder / job["input"],
        engine,
        on_frame=on_frame,
        on_segmented=lambda frame, seg: views.add(frame.index, frame.time_s, frame.image, seg.droplets),
        **job["options"],
    )
    views.link(result.track_ids)
    result.write(folder)
    with zipfile.ZipFile(folder / RESULT_FILES["zip"], "w", zipfile.ZIP_DEFLATED) as bundle:
        for fmt, name in RESULT_FILES.items():
            if fmt != "zip":
                bundle.write(folder / name, name)


def _segment_batch(folder: Path, job: dict[str, Any], engine: Any, on_image: Callable[[int, int], None]) -> None:
    from .batch import segment_archive

    options = {
        k: v
        for k, v in job["options"].items()
        if k not in ("fps", "frame_step", "max_frames", "max_distance_px", "max_gap")
    }
    segment_archive(folder / job["input"], folder, engine, on_image=on_image, **job.get("limits", {}), **options)


def run_job(store: JobStore, job_id: str, engine: Any) -> None:
    """Run the job with ``engine`` (track a video, or segment a batch) and write its results; the
    job ends ``done``, ``failed`` (with the error's message) or ``cancelled``. Progress is written
    at most twice a second."""
    job = store.get(job_id)
    if job is None or job["state"] != "queued":
        return
    if store.cancelled(job_id):
        store.update(job_id, state="cancelled", finished=time.time())
        return
    store.update(job_id, state="running", started=time.time(), process=_this_process())
    last_write = 0.0

    def on_frame(done: int, total: int) -> None:
        nonlocal last_write
        if store.cancelled(job_id):
            raise JobCancelled
        if time.monotonic() - last_write > 0.5 or done == total:
            last_write = time.monotonic()
            store.update(job_id, progress={"done": done, "total": total})

    folder = store.folder(job_id)
    try:
        if job.get("kind", "video") == "batch":
            _segment_batch(folder, job, engine, on_frame)
        else:
            _track_video(folder, job, engine, on_frame)
    except JobCancelled:
        store.update(job_id, state="cancelled", finished=time.time())
        return
    except DropletError as exc:
        store.update(job_id, state="failed", error=exc.message, finished=time.time())
        return
    except Exception:  # a job must end, whatever happened; the traceback goes to the log
        log.exception("job %s failed", job_id)
        store.update(job_id, state="failed", error="internal error while running the job", finished=time.time())
        return
    done = store.get(job_id) or job
    store.update(
        job_id,
        state="done",
        finished=time.time(),
        progress={"done": done["progress"]["done"], "total": done["progress"]["done"]},
    )


class InProcessQueue:
    """Jobs run by ``workers`` threads of this process, at most ``limit`` queued or running."""

    holder_gone = None  # its jobs' holders are processes of this host: the pid tells

    def __init__(self, store: JobStore, engine: Any, workers: int = 1, limit: int = 16):
        self.store, self.engine, self.limit = store, engine, limit
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job")
        interrupted = store.fail_interrupted(
            "interrupted: the server restarted before the job finished; submit it again"
        )
        if interrupted:
            log.warning("%d job(s) left unfinished by a previous process marked failed", interrupted)

    def pending(self) -> int:
        return sum(job["state"] in ("queued", "running") for job in self.store.jobs())

    def submit(self, job_id: str) -> None:
        self._pool.submit(run_job, self.store, job_id, self.engine)


QUEUE_NAME = "sam-droplet-jobs"
_worker_engine: Any = None


def run_stored_job(root: str, job_id: str) -> None:
    """:func:`run_job` in a ``sam-droplet worker`` process: the engine is started once per
    worker (from the environment, as the web service's) and reused for every job. The job records
    the RQ worker's name, so a web process on another machine can tell when that worker is gone."""
    global _worker_engine
    from rq import get_current_job

    if _worker_engine is None:
        from .pipeline import Engine
        from .settings import EngineSettings

        _worker_engine = Engine.start(EngineSettings.from_env())
    store = JobStore(root)
    current = get_current_job()
    if current is not None and current.worker_name:
        store.update(job_id, rq_worker=current.worker_name)
    run_job(store, job_id, _worker_engine)


class RQQueue:
    """Jobs on an RQ queue in redis (JOB_QUEUE_URL), run by ``sam-droplet worker`` processes on
    any machine that shares RESULTS_DIR. A job waits in redis, not in a web process: it is
    marked as held by the queue until a worker takes it."""

    def __init__(self, store: JobStore, url: str, timeout_s: float = 86400):
        from redis import Redis
        from rq import Queue

        self.store = store
        self._queue = Queue(QUEUE_NAME, connection=Redis.from_url(url))
        self._timeout = int(timeout_s)

    def holder_gone(self, job: dict[str, Any]) -> bool:
        """Whether the RQ worker running ``job`` has stopped sending heartbeats (its registration
        in redis expired: killed, crashed, or its machine lost)."""
        from rq import Worker

        name = job.get("rq_worker")
        if not name:
            return False
        try:
            return name not in {w.name for w in Worker.all(connection=self._queue.connection)}
        except Exception:  # redis unreachable: no verdict
            return False

    def submit(self, job_id: str) -> None:
        self.store.update(job_id, process="queue:rq")
        self._queue.enqueue(
            run_stored_job, str(self.store.root), job_id, job_id=job_id, job_timeout=self._timeout, result_ttl=0
        )
