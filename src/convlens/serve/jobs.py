"""Long work of the explorer (the fewest-units search, a unit's visualisation) as jobs.

A job is started by one request and answered by others: the page polls it for its
progress and its result, and cancels it when the user moves on. Jobs run one at a time
on a worker thread of their own, so short requests (top-5, maps, ablations) never wait
for them. A job whose page stops asking (a closed tab) is cancelled too. The same work
asked twice is one job: its id is a hash of what it computes.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Work = Callable[[Callable[[int, int], None]], Any]  # work(on_step) -> result


class Cancelled(Exception):
    """Raised inside a job's work when it was cancelled or abandoned."""


@dataclass
class Job:
    id: str
    kind: str
    work: Work
    status: str = "queued"  # queued, running, done, failed, cancelled
    done: int = 0
    total: int = 0
    result: Any = None
    error: str | None = None
    seen: float = field(default_factory=time.monotonic)  # last time someone asked
    cancel: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)

    def answer(self) -> dict[str, Any]:
        """What the page is told: status, progress and, once done, the result."""
        out: dict[str, Any] = {
            "id": self.id, "kind": self.kind, "status": self.status,
            "done": self.done, "total": self.total,
        }  # fmt: skip
        if self.status == "done":
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        return out


class Jobs:
    """Queued long work, run one job at a time on its own thread (see the module doc).

    Args:
        keep: finished jobs kept for their results, most recently asked first.
        abandon_after: seconds without a request after which a running job stops.
    """

    def __init__(self, keep: int = 128, abandon_after: float = 15.0) -> None:
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.keep, self.abandon_after = keep, abandon_after
        self.lock = threading.Lock()
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.worker = threading.Thread(target=self._run, name="convlens-jobs", daemon=True)
        self.worker.start()

    def submit(self, kind: str, key: tuple[Any, ...], work: Work) -> Job:
        """The job computing ``key``: the running or finished one, or a new one queued.
        A failed or cancelled job is started again."""
        job_id = hashlib.sha256(repr((kind, key)).encode()).hexdigest()[:16]
        with self.lock:
            job = self.jobs.get(job_id)
            if job is not None and job.status not in ("failed", "cancelled"):
                job.seen = time.monotonic()
                self.jobs.move_to_end(job_id)
                return job
            job = Job(job_id, kind, work)
            self.jobs[job_id] = job
            self._forget_old()
        self.queue.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        """The job ``job_id`` (and a sign of life from whoever asks), or None."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is not None:
                job.seen = time.monotonic()
                self.jobs.move_to_end(job_id)
            return job

    def cancel(self, job_id: str) -> Job | None:
        job = self.get(job_id)
        if job is not None and job.status in ("queued", "running"):
            job.cancel.set()
        return job

    def wait(self, job: Job) -> Job:
        """Block until ``job`` ends, keeping it alive meanwhile."""
        while not job.ended.wait(1.0):
            job.seen = time.monotonic()
        return job

    def close(self) -> None:
        for job in list(self.jobs.values()):
            job.cancel.set()
        self.queue.put(None)

    def _forget_old(self) -> None:
        finished = [k for k, j in self.jobs.items() if j.ended.is_set()]
        for k in finished[: max(0, len(finished) - self.keep)]:
            del self.jobs[k]

    def _run(self) -> None:
        while (job := self.queue.get()) is not None:
            self._run_one(job)

    def _run_one(self, job: Job) -> None:
        def on_step(done: int, total: int) -> None:
            if job.cancel.is_set() or time.monotonic() - job.seen > self.abandon_after:
                raise Cancelled
            job.done, job.total = done, total

        if job.cancel.is_set():
            job.status = "cancelled"
            job.ended.set()
            return
        job.status = "running"
        try:
            job.result = job.work(on_step)
            job.done = job.total
            job.status = "done"
        except Cancelled:
            job.status = "cancelled"
        except Exception as e:  # one job's failure is its answer, not the server's
            job.status, job.error = "failed", str(e) or type(e).__name__
        finally:
            job.ended.set()


__all__ = [
    "Cancelled",
    "Job",
    "Jobs",
    "Work",
]
