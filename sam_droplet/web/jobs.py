"""Long work as jobs: a video or TIFF stack tracked in the background, its state on disk.

Each job is a folder ``RESULTS_DIR/<id>/``: ``job.json`` (owner, state, progress, options,
error), the uploaded file, and when done the results (``summary.json``, ``tracks.csv``,
``frames.csv``, ``positions.csv``). State lives on disk, written atomically, so any process that
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
import shutil
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import DropletError

__all__ = ["STATES", "InProcessQueue", "JobCancelled", "JobStore", "run_job"]

log = logging.getLogger("sam_droplet")

STATES = ("queued", "running", "done", "failed", "cancelled")
RESULT_FILES = {"json": "summary.json", "csv": "tracks.csv", "frames": "frames.csv", "positions": "positions.csv"}


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

    def create(self, owner: str, file_name: str, data: bytes, options: dict[str, Any]) -> dict[str, Any]:
        """A new ``queued`` job for ``owner`` with the uploaded ``data``."""
        job_id = uuid.uuid4().hex
        folder = self.folder(job_id)
        folder.mkdir()
        suffix = Path(file_name).suffix.lower()[:8] or ".bin"
        (folder / f"input{suffix}").write_bytes(data)
        job = {
            "job_id": job_id,
            "owner": owner,
            "file_name": file_name,
            "input": f"input{suffix}",
            "options": options,
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


def _process_gone(process: str) -> bool:
    """Whether ``host:pid`` names a process of this host that no longer runs."""
    import psutil

    host, _, pid = process.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return not psutil.pid_exists(int(pid)) or int(pid) == os.getpid()


def run_job(store: JobStore, job_id: str, engine: Any) -> None:
    """Track the job's upload with ``engine`` and write its results; the job ends ``done``,
    ``failed`` (with the error's message) or ``cancelled``. Progress is written at most twice a
    second."""
    from ..motion import track

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

    options = dict(job["options"])
    folder = store.folder(job_id)
    try:
        result = track(folder / job["input"], engine, on_frame=on_frame, **options)
    except JobCancelled:
        store.update(job_id, state="cancelled", finished=time.time())
        return
    except DropletError as exc:
        store.update(job_id, state="failed", error=exc.message, finished=time.time())
        return
    except Exception:  # a job must end, whatever happened; the traceback goes to the log
        log.exception("job %s failed", job_id)
        store.update(job_id, state="failed", error="internal error while tracking", finished=time.time())
        return
    (folder / "summary.json").write_text(result.to_json())
    (folder / "tracks.csv").write_text(result.tracks_csv())
    (folder / "frames.csv").write_text(result.frames_csv())
    (folder / "positions.csv").write_text(result.positions_csv())
    done = store.get(job_id) or job
    store.update(
        job_id,
        state="done",
        finished=time.time(),
        progress={"done": done["progress"]["done"], "total": done["progress"]["done"]},
    )


class InProcessQueue:
    """Jobs run by ``workers`` threads of this process, at most ``limit`` queued or running."""

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
