"""Database faults on the request paths, answered as problems (never a 500 trace).

- a statement cancelled by ``statement_timeout`` (``QueryCanceled``): 504, naming the
  limit, so a slow query never holds a worker for longer than that;
- the database unreachable, a connection lost mid-request, no free connection in time:
  503; the pool is then asked to check its idle connections, so the broken ones left by
  a restart are replaced at once rather than failing the next requests one by one;
- a value the database refuses as data (``DataError``: a NUL byte in a text, a number
  out of range): 400 naming it, never a 500; a NUL byte (``%00``) anywhere in the URL is
  refused before any route runs, as no parameter or id of this API may hold one;
- a request body over ``GRIDGOV_MAX_BODY_BYTES``: 413, from its ``Content-Length``
  before anything is read, or as soon as a streamed (chunked) body passes the limit, so
  an upload is never held whole in memory before being refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import psycopg
import psycopg_pool
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import problems

log = logging.getLogger("gridgov.api")


class BodyTooLarge(Exception):
    """A request body over the server's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is over {limit:,} bytes, the most this server "
                         "accepts; split the input")
        self.limit = limit


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` (413 problem)."""

    def __init__(self, app: ASGIApp, max_bytes: int,
                 larger: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = dict(larger or {})  # path -> its own limit (file uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
        if b"%00" in raw or b"\x00" in raw or b"%00" in scope.get("query_string", b""):
            await problems.problem(400, "Invalid parameter",
                                   "the URL holds a NUL byte (%00), which no parameter or id "
                                   "may contain")(scope, receive, send)
            return
        max_bytes = self.larger.get(scope.get("path", ""), self.max_bytes)
        declared = next((v for k, v in scope.get("headers", ()) if k == b"content-length"),
                        None)
        if declared is not None:
            if not declared.isdigit():
                await problems.problem(400, "Invalid Content-Length",
                                       "Content-Length is not a byte count")(
                    scope, receive, send)
                return
            if int(declared) > max_bytes:
                exc = BodyTooLarge(max_bytes)
                await problems.problem(413, "Payload too large", str(exc),
                                       limit_bytes=max_bytes)(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise BodyTooLarge(max_bytes)
            return message

        await self.app(scope, limited, send)


def install(app: FastAPI) -> None:
    app.state.pool_checks = set()  # at most one running check of the pools
    settings = app.state.settings
    timeout_ms = settings.statement_timeout_ms
    from api.routes_uploads import UPLOADS_PATH

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes,
                       larger={UPLOADS_PATH: settings.imagery_upload_max_bytes})

    async def too_large(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BodyTooLarge)  # noqa: S101 - registered for it
        return problems.problem(413, "Payload too large", str(exc),
                                instance=request.url.path, limit_bytes=exc.limit)

    async def query_cancelled(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: statement cancelled: %s", request.method, request.url.path, exc)
        return problems.problem(
            504, "Statement timeout",
            f"the query ran longer than the {timeout_ms} ms allowed per statement; "
            "ask for less (a smaller page, bbox or batch)",
            instance=request.url.path, limit_ms=timeout_ms)

    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
        _check_pools(request.app)
        return problems.problem(503, "Database unavailable",
                                "the database is unavailable; retry later",
                                instance=request.url.path)

    async def data_error(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: value refused by the database: %s", request.method,
                    request.url.path, exc, exc_info=exc)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return problems.problem(400, "Invalid value",
                                f"the database refused a value of the request: {detail}",
                                instance=request.url.path)

    app.add_exception_handler(psycopg.DataError, data_error)
    app.add_exception_handler(BodyTooLarge, too_large)
    app.add_exception_handler(psycopg.errors.QueryCanceled, query_cancelled)
    app.add_exception_handler(psycopg.OperationalError, database_down)
    app.add_exception_handler(psycopg_pool.PoolTimeout, database_down)


def _check_pools(app: FastAPI) -> None:
    """Start (once at a time) a check of each pool's idle connections in the background."""
    checks: set[asyncio.Task[None]] = app.state.pool_checks
    if checks:
        return
    pools = {id(p): p for p in (getattr(app.state, "pool", None),
                                getattr(app.state, "read_pool", None)) if p is not None}

    async def check() -> None:
        for pool in pools.values():
            for member in getattr(pool, "pools", [pool]):
                try:
                    await member.check()
                except Exception as exc:  # noqa: BLE001 - a check must never fail a request
                    log.info("pool check: %s", exc)

    task = asyncio.get_running_loop().create_task(check())
    checks.add(task)
    task.add_done_callback(checks.discard)
