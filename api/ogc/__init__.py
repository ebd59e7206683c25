"""pygeoapi mounted at ``/ogc``: the OGC API shell inside the FastAPI app.

``mount(app, settings, database_url)`` builds pygeoapi's ``API`` from a configuration
generated in code (:mod:`api.ogc.config`), routes the OGC paths to it and returns the
:class:`OgcService` that the app's lifespan closes.  pygeoapi is imported here, inside
functions, never when ``api`` is imported; its ``starlette_app`` module (which reads
``PYGEOAPI_CONFIG`` and builds a global app on import) is not used at all.

Links: pygeoapi builds every link from ``server.url``.  With ``GRIDGOV_PUBLIC_URL`` set
that is ``public_url + "/ogc"``, whatever the request's Host says; without it, the base
URL of each request (as ``/`` does), with one ``API`` per base URL kept (a few at most).

Threads: each pygeoapi call blocks (file, database, templates), so it runs through
``run_in_threadpool``, never on the event loop; asynchronous jobs run on the job
manager's own pool (:mod:`api.ogc.jobs`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.ogc import tiles as ogc_tiles
from api.ogc import transactions
from api.ogc.openapi import describe as describe_openapi
from api.settings import Settings
from layers import db, roles

if TYPE_CHECKING:
    from api.ogc.jobs import GridgovManager
    from api.ogc.processes import GridgovProcessor

log = logging.getLogger("gridgov.ogc")

JOB_WORKERS = 2  # asynchronous jobs running at once; more wait as "accepted"
BASES_KEPT = 8  # API objects kept when links follow each request's base URL

Answer = tuple[dict[str, str], int, Any]  # pygeoapi's (headers, status, content)
Work = Callable[[Any, Any], Answer]  # (pygeoapi API, APIRequest) -> Answer

CALLBACK = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/callback"
JOB_CLASSES = (  # served by our job manager and routes
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/job-list",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/dismiss",
)


class OgcService:
    """One app's pygeoapi: its configuration, job manager and ``API`` objects."""

    def __init__(self, settings: Settings, database_url: str,
                 processes: Mapping[str, type[GridgovProcessor]],
                 read_url: str | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from pygeoapi import l10n
        from pygeoapi.process.manager.base import get_manager

        from api.ogc.jobs import JobRuntime
        from api.ogc.processes import ProcessContext
        from api.ogc.provider import Source, register

        self.public_url = settings.public_url.rstrip("/") if settings.public_url else None
        # the collections' database for pygeoapi's provider: the reader's, through the
        # published views, under the statement timeout of every request path
        self.source = Source(read_url or database_url, options=" ".join((
            db.session_options(settings.statement_timeout_ms), roles.READER_OPTIONS)))
        self.source_token = register(self.source)
        self.jobs_dir = settings.data_dir.resolve() / "jobs" / _database_name(database_url)
        self._processes = dict(processes)
        self._apis: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        first = self.config(self.public_url or "http://localhost")
        self.locales = l10n.get_locales(first)
        self.manager: GridgovManager = get_manager(first)
        self.manager.attach(JobRuntime(
            ProcessContext(database_url=database_url, settings=settings),
            ThreadPoolExecutor(JOB_WORKERS, thread_name_prefix="ogc-job"),
        ))
        self.api(self.public_url or "http://localhost")  # a bad configuration fails now

    def config(self, root: str) -> dict[str, Any]:
        from api.ogc.config import pygeoapi_config

        return pygeoapi_config(root, self.jobs_dir, self._processes, self.catalog(),
                               self.source_token)

    def catalog(self) -> Mapping[str, Any] | None:
        """The published layers as the database describes them; None while it is down
        (the collections are then left out, and looked for again on the next call)."""
        from layers.errors import DatabaseNotReady

        try:
            return self.source.catalog()
        except DatabaseNotReady as exc:
            log.warning("OGC collections unpublished for now: %s", exc)
            return None

    def root_url(self, request: Request) -> str:
        return self.public_url or str(request.base_url).rstrip("/")

    def api(self, root: str) -> Any:
        """pygeoapi's ``API`` whose links start with ``root``/ogc (blocking: a thread's)."""
        from pygeoapi.api import API
        from pygeoapi.openapi import get_oas

        with self._lock:
            if root in self._apis:
                self._apis.move_to_end(root)
                return self._apis[root]
        catalog = self.catalog()
        complete = catalog is not None
        openapi = get_oas(self.config(root))  # ~40 ms: once per base URL
        describe_openapi(openapi, catalog)  # what our routes accept (cursor, filter ...)
        api = API(self.config(root), openapi)
        api.manager = self.manager  # one job manager, whatever the base URL
        # pygeoapi 0.21 renders the TileMatrixSets pages with the whole configuration as
        # template settings (api/tiles.py), so it would miss our templates and load CDNs
        api.tpl_config["path"] = api.config["server"]["templates"]["path"]
        if not complete:
            return api  # built again once the database answers
        with self._lock:
            self._apis[root] = api
            while len(self._apis) > BASES_KEPT:
                self._apis.popitem(last=False)
        return api

    async def respond(self, request: Request, work: Work) -> Response:
        """Run ``work(api, api_request)`` in a worker thread and answer what it returns."""
        from pygeoapi.api import APIRequest

        api_request = await APIRequest.from_starlette(request, self.locales)
        root = self.root_url(request)

        def call() -> Answer:
            api = self.api(root)
            if not api_request.is_valid():
                return api.get_format_exception(api_request)  # type: ignore[no-any-return]
            return work(api, api_request)

        headers, status, content = await run_in_threadpool(call)
        return _response(headers, status, content)

    def close(self) -> None:
        from api.ogc.provider import unregister

        self.manager.close()
        unregister(self.source_token)
        self.source.close()


def mount(app: FastAPI, settings: Settings, database_url: str,
          processes: Mapping[str, type[GridgovProcessor]] | None = None,
          read_url: str | None = None) -> OgcService:
    """Serve the OGC API at ``/ogc`` of ``app``; close the returned service on shutdown.
    Processes write through ``database_url``; pygeoapi's provider reads through
    ``read_url`` (default ``database_url``).

    ``processes`` (id -> processor class) defaults to :data:`api.ogc.processes.PROCESSES`.
    """
    from api.ogc.processes import PROCESSES

    # pygeoapi 0.21 tries every key of a collection's configuration as a locale when it
    # renders HTML and warns for each (hundreds of lines per page): keep its errors only
    logging.getLogger("pygeoapi.l10n").setLevel(logging.ERROR)
    service = OgcService(settings, database_url, PROCESSES if processes is None else processes,
                         read_url=read_url)
    _routes(app, service)
    app.include_router(ogc_tiles.router(service))  # OGC API Tiles: ours
    return service


def _routes(app: FastAPI, service: OgcService) -> None:
    import pygeoapi.api as core
    import pygeoapi.api.itemtypes as itemtypes
    import pygeoapi.api.processes as procs
    import pygeoapi.api.tiles as tiles
    from starlette.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    from api.ogc import features
    from api.ogc.config import STATIC

    def view(fn: Callable[..., Answer], *params: str
             ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            args = [request.path_params[p] for p in params]
            return await service.respond(request, lambda api, req: fn(api, req, *args))
        return endpoint

    job_status, job_dismiss = view(procs.get_jobs, "job_id"), view(procs.delete_job, "job_id")

    async def job(request: Request) -> Response:
        return await (job_dismiss if request.method == "DELETE" else job_status)(request)

    async def execute(request: Request) -> Response:
        process_id = request.path_params["process_id"]
        return await service.respond(
            request, lambda api, req: _execute(procs, api, req, process_id))

    get = ["GET"]
    table: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = [
        *features.routes(service),  # items and item: our engine first (see features.py)
        ("/ogc/collections/{collection_id}/queryables",
         view(itemtypes.get_collection_queryables, "collection_id"), get),
        ("/ogc/collections/{collection_id}/schema",
         view(core.get_collection_schema, "collection_id"), get),
        ("/ogc", view(core.landing_page), get),
        ("/ogc/", view(core.landing_page), get),
        ("/ogc/openapi", view(core.openapi_), get),
        ("/ogc/conformance", view(conformance), get),
        ("/ogc/TileMatrixSets", view(tiles.tilematrixsets), get),  # the landing page links
        ("/ogc/TileMatrixSets/{tms}", view(tiles.tilematrixset, "tms"), get),  # to them
        ("/ogc/collections", view(core.describe_collections), get),
        ("/ogc/collections/{collection_id}",
         view(core.describe_collections, "collection_id"), get),
        ("/ogc/processes", view(procs.describe_processes), get),
        ("/ogc/processes/{process_id}", view(procs.describe_processes, "process_id"), get),
        ("/ogc/processes/{process_id}/execution", execute, ["POST"]),
        ("/ogc/jobs", view(procs.get_jobs), get),
        ("/ogc/jobs/{job_id}", job, ["GET", "DELETE"]),
        ("/ogc/jobs/{job_id}/results", view(_job_result(procs), "job_id"), get),
    ]
    for path, endpoint, methods in table:
        app.add_route(path, endpoint, methods=methods, include_in_schema=False)
    # assets of the HTML pages: ours, then pygeoapi's own (logo, favicon, default.css)
    app.mount("/ogc/static/swagger-ui", StaticFiles(directory=str(swagger_ui_path)),
              name="ogc-swagger-ui")
    app.mount("/ogc/static", StaticFiles(directory=str(STATIC),
                                         packages=[("pygeoapi", "static")]), name="ogc-static")


def _job_result(procs: Any) -> Callable[..., Answer]:
    def job_result(api: Any, request: Any, job_id: str) -> Answer:
        from pygeoapi.api import F_JSON

        if request.format is None:
            # pygeoapi 0.21 answers a JSON result as HTML unless asked for f=json
            # (api/processes.py, get_job_result); OGC clients ask for nothing
            request._format = F_JSON
        return procs.get_job_result(api, request, job_id)  # type: ignore[no-any-return]

    return job_result


def _execute(procs: Any, api: Any, request: Any, process_id: str) -> Answer:
    """pygeoapi's execution, with two steps before it and one after.

    Before: the body's shape is checked (pygeoapi answers 500 for a JSON array or a
    string ``subscriber``) and the inputs are parsed, so a bad input is answered here,
    outside any ``except`` block (pygeoapi logs an exception it answers inside one with
    its traceback, as an error).  After: an accepted job is answered with its status
    document (pygeoapi answers ``null``); a synchronous answer loses the ``Location``
    of a job that does not exist.
    """
    from pygeoapi.api import SYSTEM_LOCALE
    from pygeoapi.process.base import ProcessorExecuteError

    fault: tuple[int, str, str] | None = None
    doc: Any = None
    try:
        if request.data:  # else pygeoapi answers: missing request data
            doc = json.loads(request.data)
            fault = _body_fault(doc)
    except ValueError:
        pass  # pygeoapi answers: invalid request data
    prepared: AbstractContextManager[None] = nullcontext()
    if fault is None and isinstance(doc, dict) and process_id in api.manager.processes:
        try:
            parsed = api.manager.parse(process_id, doc.get("inputs", {}),
                                       base_url=api.config["server"]["url"])
            prepared = api.manager.prepared(process_id, parsed)
        except ProcessorExecuteError as err:
            fault = (err.http_status_code, err.ogc_exception_code, err.message)
    if fault is not None:
        headers = request.get_response_headers(SYSTEM_LOCALE, **api.api_headers)
        return api.get_exception(  # type: ignore[no-any-return]
            fault[0], headers, request.format, fault[1], fault[2])
    _prefer(request.headers)
    with prepared:
        headers, status, content = procs.execute_process(api, request, process_id)
    if status == HTTPStatus.CREATED:
        job_id = headers["Location"].rsplit("/", 1)[-1]
        status_headers, _, content = procs.get_jobs(api, request, job_id)
        headers["Content-Type"] = status_headers["Content-Type"]
    else:
        headers.pop("Location", None)  # a synchronous execution leaves no job
    return headers, status, content


def _prefer(headers: dict[str, str]) -> None:
    """Reduce ``Prefer`` to the one token pygeoapi understands: it compares the whole
    header with "respond-async", so ``respond-async, wait=10`` (RFC 7240) ran synchronously."""
    for key in [k for k in headers if k.lower() == "prefer"]:
        tokens = {t.split("=")[0].strip().lower() for t in re.split(r"[,;]", headers[key])}
        headers[key] = "respond-async" if "respond-async" in tokens else "wait"


def _body_fault(doc: Any) -> tuple[int, str, str] | None:
    code = "InvalidParameterValue"
    if not isinstance(doc, dict):
        return 400, code, "the execute request must be a JSON object with 'inputs'"
    if not isinstance(doc.get("inputs", {}), dict):
        return 400, code, "'inputs' must be an object: input id -> value"
    if doc.get("response", "raw") not in ("raw", "document"):
        return 400, code, "'response' must be 'raw' or 'document'"
    if not isinstance(doc.get("subscriber", {}), dict):
        return 400, code, "'subscriber' must be an object"
    return None


def conformance(api: Any, request: Any) -> Answer:
    """pygeoapi's conformance page without its leak: pygeoapi 0.21 extends the module's
    list of classes on every request (api/__init__.py, ``conformance``), so it grows
    without bound and one app's classes show in another's."""
    from pygeoapi.api import CONFORMANCE_CLASSES, F_HTML, all_apis
    from pygeoapi.util import render_j2_template, to_json

    apis = all_apis()
    classes = set(CONFORMANCE_CLASSES)
    for resource in api.config["resources"].values():
        if resource["type"] == "process":
            classes |= set(apis["process"].CONFORMANCE_CLASSES) - {CALLBACK}
            classes |= set(JOB_CLASSES)
            continue
        for provider in resource.get("providers", []):
            kind = provider["type"]
            if kind in apis:
                classes |= set(apis[kind].CONFORMANCE_CLASSES)
            if kind == "feature":  # ours, not pygeoapi's list (which claims Part 4)
                from api.ogc.features import CONFORMANCE_CLASSES as FEATURE_CLASSES

                classes |= set(FEATURE_CLASSES)
            if kind == "record":
                classes |= set(apis["itemtypes"].CONFORMANCE_CLASSES_RECORDS)
    classes |= set(ogc_tiles.CONFORMANCE)  # served by api/ogc/tiles.py
    classes |= set(transactions.CONFORMANCE)  # Part 4: api/ogc/transactions.py
    body = {"conformsTo": sorted(classes)}
    headers = request.get_response_headers(**api.api_headers)
    if request.format == F_HTML:
        html = render_j2_template(api.tpl_config, api.config["server"]["templates"],
                                  "conformance.html", body, request.locale)
        return headers, HTTPStatus.OK, html
    return headers, HTTPStatus.OK, to_json(body, api.pretty_print)


def _response(headers: dict[str, str], status: int, content: Any) -> Response:
    headers = {**headers}
    media = headers.pop("Content-Type", "application/json")
    if isinstance(content, dict | list):
        content = json.dumps(content, ensure_ascii=False)
    return Response(content, status_code=int(status), headers=headers, media_type=media)


def _database_name(url: str) -> str:
    """A file-system-safe name for the database ``url`` points at (its jobs live apart)."""
    name = urlsplit(url).path.lstrip("/") or "default"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
