"""Bearer-token authentication for writes: ``Authorization: Bearer <token>``.

Tokens are made with ``gridgov token create NAME --role officer`` and checked against
their SHA-256 in ``api_tokens``. A missing or unknown token is 401 (with
``WWW-Authenticate: Bearer``), a token whose role is too low 403.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool

from api.problems import problem
from layers.auth import Principal, authenticate


class NotAuthenticated(Exception):  # noqa: N818 - named after the HTTP answer
    """No token, or one that is unknown or revoked."""


class NotPermitted(Exception):  # noqa: N818
    """A valid token whose role may not do this."""


async def principal(request: Request, role: str = "officer") -> Principal:
    """Who sends ``request``, if they hold at least ``role``."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("this needs a token: send Authorization: Bearer <token>")
    pool: AsyncConnectionPool = request.app.state.pool
    async with pool.connection() as conn:
        who = await authenticate(conn, token.strip())
    if who is None:
        raise NotAuthenticated("the token is unknown or revoked")
    if not who.may(role):
        raise NotPermitted(f"{who.name} ({who.role}) may not do this; it needs {role}")
    return who


async def optional_principal(request: Request, role: str = "officer") -> Principal | None:
    """None when the request carries no token; otherwise as :func:`principal` (a bad
    token is still a 401, never silently read as anonymous)."""
    if not request.headers.get("authorization"):
        return None
    return await principal(request, role)


def install(app: FastAPI) -> None:
    async def unauthenticated(request: Request, exc: Exception) -> JSONResponse:
        r = problem(401, "Unauthorized", str(exc), instance=request.url.path)
        r.headers["WWW-Authenticate"] = 'Bearer realm="gridgov"'
        return r

    async def forbidden(request: Request, exc: Exception) -> JSONResponse:
        return problem(403, "Forbidden", str(exc), instance=request.url.path)

    app.add_exception_handler(NotAuthenticated, unauthenticated)
    app.add_exception_handler(NotPermitted, forbidden)
