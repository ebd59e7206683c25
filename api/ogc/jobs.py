"""The job manager behind /ogc/processes and /ogc/jobs.

pygeoapi's TinyDB manager keeps the job records (one JSON file under the server's data
directory, shared by every worker process of the server); this subclass changes how
processes run:

- inputs are parsed before a job exists: a bad input is a 400, never a failed job;
- synchronous executions run on the request's thread and leave no job record;
- asynchronous jobs run on the manager's own thread pool (closed with the app), not on
  a thread per job; a job is ``running`` from its first instruction, and its
  ``progress(done, total, message)`` calls are visible at once to this process (kept in
  memory) and to the others at most ``interval`` seconds later (written to the file);
- a dismissed job (``DELETE /ogc/jobs/{id}``) or a stopping server makes the next
  ``progress`` call raise :class:`JobCancelled`, so a long job stops between two steps;
- faults map through ``api.problems.STATUS``, the same table as the JSON routes;
- no callbacks: ``subscriber`` URLs are ignored, so an anonymous client cannot make the
  server send requests to addresses of its choosing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import tinydb
from filelock import FileLock
from pygeoapi.process.base import JobResultNotFoundError, ProcessorExecuteError
from pygeoapi.process.manager.tinydb_ import TinyDBManager
from pygeoapi.util import (
    JobStatus,
    RequestedProcessExecutionMode,
    RequestedResponse,
    get_current_datetime,
)

from api.ogc.processes import NO_PROGRESS, GridgovProcessor, JobCancelled, ProcessContext
from api.problems import STATUS

log = logging.getLogger("gridgov.ogc")

ASYNC = "async-execute"
JSON = "application/json"
MESSAGE_MAX = 300


@dataclass(frozen=True)
class JobRuntime:
    """What the manager runs jobs with; made by the app, closed with it."""

    context: ProcessContext
    executor: ThreadPoolExecutor
    interval: float = 0.5  # seconds between two writes of a running job's progress


def classify(exc: BaseException) -> tuple[int, str]:
    """HTTP status and title of a fault, from the API's one table."""
    for exc_type, status, title in STATUS:
        if isinstance(exc, exc_type):
            return status, title
    if isinstance(exc, psycopg.OperationalError):
        return 503, "Database unavailable"
    return 500, "Process failed"


def ogc_error(exc: BaseException) -> ProcessorExecuteError:
    """The OGC exception (status, code, description) pygeoapi answers for ``exc``.

    Raise it ``from exc``: pygeoapi logs what it answers, with the traceback."""
    status, title = classify(exc)
    if status >= 500:
        text, code = f"{title}; the server log has the details", "NoApplicableCode"
    else:
        text = f"{title}: {exc}"
        code = "NotFound" if status == 404 else "InvalidParameterValue"
    err = ProcessorExecuteError(user_msg=text)
    err.http_status_code = status
    err.ogc_exception_code = code
    return err


def percent(done: int, total: int) -> int | None:
    """0..99 while running (100 means finished); None when ``total`` is unknown."""
    if total <= 0:
        return None
    return max(0, min(99, int(100 * done / total)))


class GridgovManager(TinyDBManager):  # type: ignore[misc]
    def __init__(self, manager_def: dict[str, Any]) -> None:
        super().__init__(manager_def)
        self.supports_subscribing = False
        self.runtime: JobRuntime | None = None
        self._lock = threading.Lock()
        self._live: dict[str, dict[str, Any]] = {}  # running here: latest progress
        self._persisted: dict[str, float] = {}  # running here: when last written
        self._dismissed: set[str] = set()
        self._futures: dict[str, Future[None]] = {}
        self._closing = False
        self._prepared = threading.local()

    def attach(self, runtime: JobRuntime) -> None:
        self.runtime = runtime

    # -- the record store: pygeoapi's, made safe for threads and a fresh directory -----

    @contextmanager
    def _db(self) -> Iterator[tinydb.TinyDB]:
        path = Path(self.connection)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock"), tinydb.TinyDB(path) as store:
            yield store

    def update_job(self, job_id: str, update_dict: dict[str, Any]) -> bool:
        """Update a record; False when it is gone (dismissed)."""
        with self._db() as store:
            return bool(store.update(update_dict, tinydb.where("identifier") == job_id))

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._overlay(super().get_job(job_id))

    def get_jobs(self, status: Any = None, limit: int | None = None,
                 offset: int | None = None) -> dict[str, Any]:
        found = super().get_jobs(status=status, limit=limit, offset=offset)
        found["jobs"] = [self._overlay(job) for job in found["jobs"]]
        return dict(found)

    def get_job_result(self, job_id: str) -> tuple[str, Any]:
        if self.get_job(job_id)["status"] != JobStatus.successful.value:
            raise JobResultNotFoundError()  # pygeoapi's answers (None,), which its API unpacks
        return super().get_job_result(job_id)  # type: ignore[no-any-return]

    def delete_job(self, job_id: str) -> bool:
        with self._lock:
            if job_id in self._live:
                self._dismissed.add(job_id)  # its next progress() stops it
            future = self._futures.get(job_id)
            if future is not None and future.cancel():  # still queued: it never runs
                del self._futures[job_id]
        return bool(super().delete_job(job_id))

    def _overlay(self, job: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            live = self._live.get(job.get("identifier", ""))
        if live and job.get("status") == JobStatus.running.value:
            return {**job, **live}
        return job

    # -- execution ----------------------------------------------------------------------

    def parse(self, process_id: str, inputs: Any, base_url: str | None = None) -> Any:
        """The process's checked inputs; :class:`ProcessorExecuteError` (400...) if bad.
        ``base_url``: the OGC API's (``http://host/ogc``), for results that link to it."""
        processor = self.get_processor(process_id)
        if not isinstance(processor, GridgovProcessor):
            raise ogc_error(TypeError(f"{process_id} is not a gridgov processor"))
        try:
            ctx = self.runtime.context if self.runtime is not None else None
            return processor.parse_request(inputs, ctx, base_url)
        except Exception as exc:
            raise ogc_error(exc) from exc

    @contextmanager
    def prepared(self, process_id: str, parsed: Any) -> Iterator[None]:
        """Within the block, this thread's execution of ``process_id`` takes ``parsed``
        (inputs the route already checked) instead of parsing them again."""
        self._prepared.value = (process_id, parsed)
        try:
            yield
        finally:
            self._prepared.value = None

    def execute_process(
        self,
        process_id: str,
        data_dict: Any,
        execution_mode: RequestedProcessExecutionMode | None = None,
        requested_outputs: Any = None,
        subscriber: Any = None,
        requested_response: str = RequestedResponse.raw.value,
    ) -> tuple[str, str, Any, JobStatus, dict[str, str] | None]:
        runtime = self.runtime
        if runtime is None:
            raise RuntimeError("the job manager has no runtime: build it with api.ogc.mount")
        processor = self.get_processor(process_id)
        prepared = getattr(self._prepared, "value", None)
        if prepared is not None and prepared[0] == process_id:
            parsed = prepared[1]
        else:
            parsed = self.parse(process_id, data_dict)
        job_id = str(uuid.uuid4())
        wants_async = execution_mode == RequestedProcessExecutionMode.respond_async
        if wants_async and ASYNC in processor.metadata.get("jobControlOptions", []):
            self._submit(runtime, processor, job_id, process_id, parsed, requested_response)
            return (job_id, JSON, None, JobStatus.accepted,
                    {"Preference-Applied": RequestedProcessExecutionMode.respond_async.value})
        try:
            media_type, value = processor.run(runtime.context, parsed, NO_PROGRESS)
        except Exception as exc:
            raise ogc_error(exc) from exc
        media_type, payload = _shape(processor, media_type, value, requested_response,
                                     for_file=False)
        headers = None if execution_mode is None else {
            "Preference-Applied": RequestedProcessExecutionMode.wait.value}
        return job_id, media_type, payload, JobStatus.successful, headers

    def _submit(self, runtime: JobRuntime, processor: GridgovProcessor, job_id: str,
                process_id: str, parsed: Any, response: str) -> None:
        now = get_current_datetime()
        try:
            self.add_job({
                "type": "process", "identifier": job_id, "process_id": process_id,
                "created": now, "started": now, "updated": now, "finished": None,
                "status": JobStatus.accepted.value, "location": None, "mimetype": JSON,
                "message": "Queued", "progress": 0,
            })
        except OSError as exc:
            log.error("cannot write the job store %s", self.connection, exc_info=exc)
            err = ProcessorExecuteError(user_msg="the job store is not writable; asynchronous "
                                                 "execution is unavailable")
            err.http_status_code = 503
            raise err from exc
        try:
            with self._lock:  # held until the future is filed: _run's cleanup waits for it
                if self._closing:
                    raise RuntimeError("the server is stopping")
                self._futures[job_id] = runtime.executor.submit(
                    self._run, runtime, processor, job_id, parsed, response)
        except RuntimeError as exc:
            self.update_job(job_id, _ended(JobStatus.failed, f"Not started: {exc}"))
            err = ProcessorExecuteError(user_msg=f"not started: {exc}")
            err.http_status_code = 503
            raise err from exc

    def _run(self, runtime: JobRuntime, processor: GridgovProcessor, job_id: str,
             parsed: Any, response: str) -> None:
        now = get_current_datetime()
        with self._lock:
            self._live[job_id] = {"progress": 0, "message": "Running", "updated": now}
            self._persisted[job_id] = time.monotonic()
        try:
            if not self.update_job(job_id, {"status": JobStatus.running.value, "started": now,
                                            "updated": now, "message": "Running",
                                            "progress": 0}):
                return  # dismissed before it started
            media_type, value = processor.run(runtime.context, parsed,
                                              self._progress(job_id, runtime.interval))
            media_type, payload = _shape(processor, media_type, value, response,
                                         for_file=True)
            assert isinstance(payload, bytes)  # noqa: S101 - _shape's contract
            path = Path(self.output_dir) / f"{processor.metadata['id']}-{job_id}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)
            done = {**_ended(JobStatus.successful, "Job complete"), "progress": 100,
                    "location": str(path), "mimetype": media_type}
            if not self.update_job(job_id, done):
                path.unlink(missing_ok=True)  # dismissed while finishing
        except JobCancelled as exc:
            self.update_job(job_id, _ended(JobStatus.failed, f"Stopped: {exc}"))
        except Exception as exc:
            status, title = classify(exc)
            if status >= 500:
                log.error("job %s failed", job_id, exc_info=exc)
                text = f"{title}; the server log has the details"
            else:
                text = f"{title}: {exc}"
            self.update_job(job_id, _ended(JobStatus.failed, text[:MESSAGE_MAX]))
        finally:
            with self._lock:
                for table in (self._live, self._persisted, self._futures):
                    table.pop(job_id, None)
                self._dismissed.discard(job_id)

    def _progress(self, job_id: str, interval: float) -> Callable[..., None]:
        def progress(done: int, total: int, message: str = "") -> None:
            with self._lock:
                if self._closing:
                    raise JobCancelled("the server is stopping")
                if job_id in self._dismissed:
                    raise JobCancelled("the job was dismissed")
                live = self._live[job_id]
                pct = percent(done, total)
                if pct is not None:
                    live["progress"] = max(live["progress"], pct)
                live["message"] = str(message)[:MESSAGE_MAX]
                live["updated"] = get_current_datetime()
                now = time.monotonic()
                due = now - self._persisted[job_id] >= interval
                if due:
                    self._persisted[job_id] = now
                    record = dict(live)
            if due and not self.update_job(job_id, record):
                raise JobCancelled("the job was dismissed")  # by another worker process

        return progress

    def close(self) -> None:
        """Stop taking jobs; queued ones fail, running ones stop at their next progress."""
        with self._lock:
            self._closing = True
            queued = [job_id for job_id, f in self._futures.items() if f.cancel()]
        for job_id in queued:
            self.update_job(job_id, _ended(JobStatus.failed, "Stopped: the server stopped "
                                                            "before the job started"))
        if self.runtime is not None:
            self.runtime.executor.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        return f"<GridgovManager> {self.name}"


def _ended(status: JobStatus, message: str) -> dict[str, Any]:
    now = get_current_datetime()
    return {"status": status.value, "message": message, "finished": now, "updated": now}


def _shape(processor: GridgovProcessor, media_type: str, value: Any, response: str,
           for_file: bool) -> tuple[str, Any]:
    """The payload pygeoapi expects: JSON as a dict for its API (it serialises JSON
    itself) and as text in a result file; any other media type as bytes."""
    if response == RequestedResponse.document.value:
        media_type, value = JSON, {processor.output_id: value}
    if media_type == JSON and not for_file:
        return media_type, value
    if isinstance(value, bytes):
        return media_type, value
    if isinstance(value, str):
        return media_type, value.encode()
    return media_type, json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()

