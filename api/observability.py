"""Request ids, one JSON log line per request, Prometheus metrics at ``/metrics``.

``install(app)`` wires it all into an app built by :func:`api.app.create_app`:

- ``X-Request-Id``: taken from the request when it is sane (1-128 of ``A-Z a-z 0-9 . _
  : -``), otherwise generated; echoed in the response, put in every problem+json body
  (``request_id``) and in the request's log line.
- one log record per request on the ``gridgov.access`` logger: method, route template
  (``/ogc/collections/{collection_id}/items``, never the raw path), status, duration,
  request id; :class:`JsonFormatter` writes it as one JSON line.
- ``/metrics``: request counts and latency histograms per method and route template
  (summed over every worker process when ``PROMETHEUS_MULTIPROC_DIR`` is set, as
  ``gridgov serve --workers N`` does),
  the pools' ``get_stats()``, the OGC job queue (read from the job manager's TinyDB file)
  and the gauges of :mod:`api.metrics_sql`, computed by the database on each scrape.

The middleware is plain ASGI (no ``BaseHTTPMiddleware``), so streamed answers stream.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from psycopg_pool import AsyncConnectionPool
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import metrics_sql

access_log = logging.getLogger("gridgov.access")
log = logging.getLogger("gridgov.api")

REQUEST_ID = "x-request-id"
SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
UNMATCHED = "<unmatched>"  # no route: one label for every unknown path, not one each

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "gridgov_request_id", default=None)

# latency buckets (seconds): a point lookup takes ~1 ms, a big batch or tile seconds
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def current_request_id() -> str | None:
    """The id of the request being served (None outside a request)."""
    return _request_id.get()


def request_id_of(header: str | None) -> str:
    """The client's id when it is sane, else a new one."""
    if header is not None and SANE_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The path template of the route that answered (``/ogc/collections/{collection_id}``).

    FastAPI's routes leave themselves in ``scope["route"]``; plain Starlette routes (those
    added with ``add_route``: pygeoapi's under ``/ogc``) leave only their ``endpoint``, so
    the route holding that endpoint is looked up in the router (and matched again when
    several hold it)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    endpoint, router = scope.get("endpoint"), scope.get("router")
    if endpoint is None or router is None:
        return UNMATCHED
    holders = [r for r in getattr(router, "routes", ())
               if getattr(r, "endpoint", getattr(r, "app", None)) is endpoint]
    if len(holders) > 1:
        probe = {k: v for k, v in scope.items() if k not in ("route", "endpoint")}
        probe["path"] = scope.get("root_path", "") + scope.get("path", "")
        holders = [r for r in holders if r.matches(probe)[0] is not Match.NONE] or holders
    path = getattr(holders[0], "path", None) if holders else None
    return path if isinstance(path, str) else UNMATCHED


class Metrics:
    """One app's request metrics, in a registry of its own (tests build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gridgov_http_requests", "HTTP requests answered, by method, route template "
            "and status", ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "gridgov_http_request_duration_seconds", "Time to answer (to the last byte), "
            "by method and route template", ["method", "route"], buckets=BUCKETS,
            registry=self.registry)
        self.scrape_errors = Counter(
            "gridgov_metrics_query_errors", "Database gauges that failed on a scrape",
            ["gauge"], registry=self.registry)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> Path | None:
    """Where the server processes of ``gridgov serve --workers N`` keep their counters
    (prometheus_client's multiprocess mode, chosen by this variable before the first
    metric is made); None for a single process."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def request_registry(metrics: Metrics) -> CollectorRegistry:
    """The request counters to answer a scrape with: this process's own, or with several
    worker processes the sum over all of them (every process writes its counters to
    files in :func:`multiprocess_dir`; ``MultiProcessCollector`` adds them up), so any
    process answers the same totals."""
    if multiprocess_dir() is None:
        return metrics.registry
    from prometheus_client import multiprocess

    registry = CollectorRegistry(auto_describe=False)
    multiprocess.MultiProcessCollector(registry)
    return registry


def mark_process_dead() -> None:
    """At a worker's shutdown: drop its live gauges from the multiprocess files (its
    counters stay: they count what it answered)."""
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


class RequestContext:
    """ASGI middleware: request id, access log line, request metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                header = value.decode("latin-1")
                break
        rid = request_id_of(header)
        scope.setdefault("state", {})["request_id"] = rid
        token = _request_id.set(rid)
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            method, route = scope["method"], route_template(scope)
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            access_log.info(
                "%s %s %s %.1f ms", method, route, status, elapsed * 1000,
                extra={"request_id": rid, "method": method, "route": route,
                       "path": scope.get("path"), "status": status,
                       "duration_ms": round(elapsed * 1000, 3)})
            _request_id.reset(token)


# -- logs -----------------------------------------------------------------------------

_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the record's extras and the
    request id of the request being served."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                out[key] = value
        rid = out.get("request_id") or current_request_id()
        if rid:
            out["request_id"] = rid
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: int = logging.INFO, json_lines: bool = True) -> None:
    """Root logger to stderr, JSON lines (or plain text); uvicorn's loggers through it."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # gridgov.access replaces it


# -- /metrics -------------------------------------------------------------------------

POOL_STATS = {  # psycopg_pool get_stats() key -> (metric, help)
    "pool_size": ("gridgov_pool_connections", "Connections open in the pool"),
    "pool_available": ("gridgov_pool_connections_idle", "Idle connections in the pool"),
    "requests_waiting": ("gridgov_pool_requests_waiting", "Requests waiting for a connection"),
    "pool_max": ("gridgov_pool_connections_max", "Most connections the pool may open"),
}
POOL_COUNTERS = {
    "requests_num": ("gridgov_pool_requests", "Connections asked of the pool"),
    "requests_errors": ("gridgov_pool_request_errors", "Requests the pool failed (timeout)"),
    "connections_errors": ("gridgov_pool_connection_errors", "Failed connection attempts"),
    "connections_lost": ("gridgov_pool_connections_lost", "Connections found broken"),
}


def pool_families(pools: Mapping[str, AsyncConnectionPool]) -> list[Any]:
    """Gauges (and counters since start) from each pool's ``get_stats()``."""
    from prometheus_client.core import CounterMetricFamily

    stats = {name: pool.get_stats() for name, pool in pools.items()}
    families: list[Any] = []
    for key, (metric, text) in POOL_STATS.items():
        fam = GaugeMetricFamily(metric, text, labels=["pool"])
        for name, s in stats.items():
            fam.add_metric([name], float(s.get(key, 0)))
        families.append(fam)
    for key, (metric, text) in POOL_COUNTERS.items():
        cfam = CounterMetricFamily(metric, text, labels=["pool"])
        for name, s in stats.items():
            cfam.add_metric([name], float(s.get(key, 0)))
        families.append(cfam)
    return families


JOB_STATES = ("accepted", "running", "successful", "failed", "dismissed")


def job_counts(jobs_file: Path) -> dict[str, int] | None:
    """OGC jobs by status, read from the TinyDB file of the job manager (never written
    here); None when the file is being rewritten at this instant."""
    counts = dict.fromkeys(JOB_STATES, 0)
    try:
        data = json.loads(jobs_file.read_text() or "{}")
    except FileNotFoundError:
        return counts
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    for table in data.values() if isinstance(data, dict) else ():
        for job in table.values() if isinstance(table, dict) else ():
            status = str(job.get("status", "unknown")) if isinstance(job, dict) else "unknown"
            counts[status] = counts.get(status, 0) + 1
    return counts


def job_families(jobs_file: Path | None) -> list[Any]:
    if jobs_file is None:
        return []
    counts = job_counts(jobs_file)
    if counts is None:
        return []
    fam = GaugeMetricFamily("gridgov_ogc_jobs", "OGC API Processes jobs by status "
                            "(queue: accepted and running)", labels=["status"])
    for status, n in sorted(counts.items()):
        fam.add_metric([status], float(n))
    queue = GaugeMetricFamily("gridgov_ogc_job_queue", "OGC jobs accepted or running")
    queue.add_metric([], float(counts.get("accepted", 0) + counts.get("running", 0)))
    return [fam, queue]


async def database_families(pool: AsyncConnectionPool, metrics: Metrics,
                            gauges: Iterable[metrics_sql.DatabaseGauge]) -> list[Any]:
    """Each gauge's SQL, run on one pooled connection; a gauge that fails is left out
    (and counted), the others are still answered."""
    import psycopg
    from psycopg_pool import PoolTimeout

    families: list[Any] = []
    try:
        async with pool.connection(timeout=2) as conn:
            for gauge in gauges:
                try:
                    async with conn.transaction():
                        cur = await conn.execute(gauge.query)
                        rows = await cur.fetchall()
                except psycopg.Error as exc:
                    log.warning("metric %s failed: %s", gauge.name, exc)
                    metrics.scrape_errors.labels(gauge.name).inc()
                    if conn.broken:
                        break
                    continue
                fam = GaugeMetricFamily(gauge.name, gauge.help, labels=list(gauge.labels))
                for row in rows:
                    *labels, value = row
                    fam.add_metric([str(v) for v in labels], float(value or 0))
                families.append(fam)
    except (psycopg.OperationalError, PoolTimeout) as exc:
        log.warning("database gauges skipped: %s", exc)
        metrics.scrape_errors.labels("<database>").inc()
    return families


class _Families:
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families


def install(app: FastAPI, jobs_file: Path | None = None) -> Metrics:
    """Request ids, access log and ``/metrics`` on ``app`` (add other middleware after)."""
    metrics = Metrics()
    app.state.metrics = metrics
    app.add_middleware(RequestContext, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        state = request.app.state
        pools = {"primary": state.pool}  # the writer's
        if state.read_pool is not state.pool:  # the reader's, on the replicas or the primary
            replicas = state.settings.database_replica_urls
            pools["replica" if replicas else "reader"] = state.read_pool
        families = pool_families(pools) + job_families(jobs_file)
        families += await database_families(state.read_pool, metrics, metrics_sql.GAUGES)
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(_Families(families))
        body = generate_latest(request_registry(metrics)) + generate_latest(scrape)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics
