"""Database faults on the request paths, answered as problems (never a 500 trace).

- a statement cancelled by ``statement_timeout`` (``QueryCanceled``): 504, naming the
  limit, so a slow query never holds a worker for longer than that;
- the database unreachable, a connection lost mid-request, no free connection in time:
  503; the pool is then asked to check its idle connections, so the broken ones left by
  a restart are replaced at once rather than failing the next requests one by one.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg
import psycopg_pool
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api import problems

log = logging.getLogger("gridgov.api")


def install(app: FastAPI) -> None:
    app.state.pool_checks = set()  # at most one running check of the pools
    timeout_ms = app.state.settings.statement_timeout_ms

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
