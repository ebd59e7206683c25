"""RFC 9457 problem responses, and the one table mapping our faults to HTTP statuses."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.locate_io import TooMany
from api.observability import current_request_id
from gis.errors import CRSError, GisError
from layers.auth import BadCredentials
from layers.edits import Forbidden
from layers.errors import (
    Conflict,
    DatabaseNotReady,
    ImportRefused,
    InvalidInput,
    LayersError,
    NotAllowed,
    NotFound,
    RateLimited,
    Refused,
)
from layers.photos import PhotoStoreUnavailable, PhotoTooLarge

log = logging.getLogger("gridgov.api")

PROBLEM = "application/problem+json"

# most specific first
STATUS: tuple[tuple[type[Exception], int, str], ...] = (
    (DatabaseNotReady, 503, "Database unavailable"),
    (PhotoStoreUnavailable, 503, "Photo store unavailable"),
    (NotFound, 404, "Not found"),
    (Conflict, 409, "Conflict"),
    (Refused, 422, "Unprocessable"),
    (NotAllowed, 403, "Forbidden"),
    (RateLimited, 429, "Too many requests"),
    (BadCredentials, 401, "Unauthorized"),
    (PhotoTooLarge, 413, "Payload too large"),
    (ImportRefused, 422, "Import refused"),
    (TooMany, 413, "Payload too large"),
    (Forbidden, 405, "Method not allowed"),
    (InvalidInput, 400, "Invalid input"),
    (CRSError, 400, "Unsupported coordinate reference system"),
    (GisError, 400, "Invalid spatial input"),
    (LayersError, 500, "Storage error"),
)


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    rid = current_request_id()
    if rid is not None:
        body.setdefault("request_id", rid)
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def install(app: FastAPI) -> None:
    for exc_type, status, title in STATUS:

        async def handler(
            request: Request, exc: Exception, status: int = status, title: str = title
        ) -> JSONResponse:
            if status >= 500:
                log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
            else:
                log.info("%s %s: %s", request.method, request.url.path, exc)
            extra = getattr(exc, "extensions", None) or {}
            r = problem(status, title, str(exc), instance=request.url.path, **extra)
            if isinstance(exc, RateLimited):
                r.headers["Retry-After"] = str(exc.retry_after)
            return r

        app.add_exception_handler(exc_type, handler)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for it
        return problem(exc.status_code, _title(exc.status_code), str(exc.detail),
                       instance=request.url.path)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for it
        errors = [
            {"parameter": ".".join(str(p) for p in e.get("loc", ())[1:]) or None,
             "problem": e.get("msg")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['parameter']}: {e['problem']}" for e in errors)
        return problem(400, "Invalid parameter", detail, instance=request.url.path,
                       errors=errors)

    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
        return problem(503, "Database unavailable", "the database is unavailable; retry later",
                       instance=request.url.path)

    import psycopg
    import psycopg_pool

    app.add_exception_handler(psycopg.OperationalError, database_down)
    app.add_exception_handler(psycopg_pool.PoolTimeout, database_down)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
