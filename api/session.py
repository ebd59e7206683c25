"""Signing in on a phone page: ``/api/v1/session``.

``POST`` (name and password) sets the session cookie (:mod:`api.auth`) and answers who
signed in, never the token; ``GET`` says who the cookie (or a bearer token) signs in;
``DELETE`` signs out: the token is revoked and the cookie cleared. ``POST`` and
``DELETE`` are refused from any origin but ours, like every cookie-authenticated write.
API clients keep using ``POST /api/v1/login`` and ``Authorization: Bearer``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import (
    COOKIE,
    check_origin,
    clear_session,
    principal,
    session_token,
    set_session,
)
from layers import guards
from layers.auth import login, revoke_session

router = APIRouter(prefix="/api/v1", tags=["events"])


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=100)
    password: str = Field(max_length=200)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("/session", summary="Sign in on a phone page: sets the session cookie",
             responses={401: {"description": "unknown account or wrong password"},
                        403: {"description": "sent from a page that is not ours"}})
async def post_session(request: Request, body: SessionIn, response: Response
                       ) -> dict[str, Any]:
    check_origin(request)
    settings = request.app.state.settings
    async with request.app.state.pool.connection() as conn:
        await guards.count(conn, "login:" + _client(request), 10, 60)
        expires = (dt.datetime.now(dt.UTC).replace(microsecond=0)
                   + dt.timedelta(hours=settings.session_hours))
        async with conn.transaction():  # the token ends with the session, as bearer too
            token = await login(conn, body.name, body.password, expires)
    set_session(request, response, token, expires)
    return {"name": body.name, "expires": expires.isoformat()}


@router.get("/session", summary="Who the session cookie (or a bearer token) signs in",
            responses={401: {"description": "not signed in, or the session expired"}})
async def get_session(request: Request) -> dict[str, Any]:
    who = await principal(request, "resident")
    return {"name": who.name, "role": who.role}


@router.delete("/session", status_code=204, summary="Sign out: revoke and clear the cookie",
               responses={403: {"description": "sent from a page that is not ours"}})
async def delete_session(request: Request) -> Response:
    out = Response(status_code=204)
    if COOKIE in request.cookies:
        check_origin(request)
        token = session_token(request)
        if token is not None:
            async with request.app.state.pool.connection() as conn:
                await revoke_session(conn, token)
    clear_session(request, out)
    return out
