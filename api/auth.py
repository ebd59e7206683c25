"""Who sends a request: ``Authorization: Bearer <token>`` (API clients), or the session
cookie a phone page gets when a grid worker signs in (``POST /api/v1/session``).

Tokens are made with ``gridgov token create NAME --role officer`` (or by signing in) and
checked against their SHA-256 in ``api_tokens``. A missing or unknown token is 401 (with
``WWW-Authenticate: Bearer``), a token whose role is too low 403.

The session cookie (:data:`COOKIE`) is ``base64url(expiry | token | mac)``: the expiry as
unsigned 32-bit Unix seconds, the account's bearer token made at sign-in, and the first
16 bytes of HMAC-SHA256 over both, keyed from ``GRIDGOV_SECRET_KEY`` (a key of its own,
so a link MAC never passes as a cookie MAC). It is ``HttpOnly`` (page scripts never see
it), ``SameSite=Strict``, ``Secure`` when ``GRIDGOV_PUBLIC_URL`` is https, and lasts
``GRIDGOV_SESSION_HOURS``. A forged or expired cookie is a 401 that clears it (an expired
one also revokes its token); signing out revokes the token. A request authenticated by
the cookie that changes anything (not GET/HEAD/OPTIONS) must come from our own origin
(``Origin``, else ``Referer``, equal to ``GRIDGOV_PUBLIC_URL``'s origin when set, else
the request's own): SameSite=Strict keeps other sites' requests from carrying the
cookie, the origin check also covers sibling origins (another port on the same host is
the same site).
A bearer token is never subject to the origin check: no browser adds it by itself.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import re
import struct
from typing import Any
from urllib.parse import urlsplit

import psycopg
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from api.problems import problem
from layers.auth import Principal, authenticate, revoke_session

COOKIE = "gridgov_session"
SESSION_MAC_BYTES = 16
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_EXPIRY = struct.Struct(">I")


class NotAuthenticated(Exception):  # noqa: N818 - named after the HTTP answer
    """No token, or one that is unknown or revoked; a forged or expired session cookie."""


class NotPermitted(Exception):  # noqa: N818
    """A valid token whose role may not do this."""


class CrossOrigin(NotPermitted):
    """A cookie-authenticated write sent from a page that is not ours."""


class SessionError(Exception):
    """A session cookie that does not sign anybody in."""


class ForgedSession(SessionError):
    """Malformed, altered, or signed with another key."""


class ExpiredSession(SessionError):
    """Signed by us, but past its expiry; ``token`` is what it carried (to revoke)."""

    def __init__(self, message: str, token: str) -> None:
        super().__init__(message)
        self.token = token


# -- the cookie ---------------------------------------------------------------------------


def _key(secret: str) -> bytes:
    return hashlib.sha256(b"gridgov session cookie\0" + secret.encode()).digest()


def seal(secret: str, token: str, expires: dt.datetime) -> str:
    """The cookie value carrying ``token`` until ``expires``.

    >>> v = seal("k" * 32, "ggv_abc", dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    >>> unseal("k" * 32, v, dt.datetime(2029, 1, 1, tzinfo=dt.UTC))
    'ggv_abc'
    """
    body = _EXPIRY.pack(int(expires.timestamp())) + token.encode()
    mac = hmac.new(_key(secret), body, hashlib.sha256).digest()[:SESSION_MAC_BYTES]
    return base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode()


def unseal(secret: str, value: str, now: dt.datetime | None = None) -> str:
    """The token a cookie carries, or :class:`ForgedSession` / :class:`ExpiredSession`.
    The signature is checked before the expiry is believed."""
    if len(value) > 200 or not re.fullmatch(r"[A-Za-z0-9_-]+", value):
        raise ForgedSession("the session cookie is malformed")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        raise ForgedSession("the session cookie is malformed") from None
    if len(raw) <= _EXPIRY.size + SESSION_MAC_BYTES:
        raise ForgedSession("the session cookie is malformed")
    body, mac = raw[:-SESSION_MAC_BYTES], raw[-SESSION_MAC_BYTES:]
    good = hmac.new(_key(secret), body, hashlib.sha256).digest()[:SESSION_MAC_BYTES]
    if not hmac.compare_digest(mac, good):
        raise ForgedSession("the session cookie's signature does not match")
    (seconds,) = _EXPIRY.unpack_from(body)
    try:
        token = body[_EXPIRY.size:].decode()
    except UnicodeDecodeError:
        raise ForgedSession("the session cookie is malformed") from None
    if (now or dt.datetime.now(dt.UTC)).timestamp() >= seconds:
        raise ExpiredSession("the session has expired; sign in again", token)
    return token


def secure_cookies(request: Request) -> bool:
    public = request.app.state.settings.public_url
    return bool(public) and urlsplit(public).scheme == "https"


def set_session(request: Request, response: Response, token: str,
                expires: dt.datetime) -> None:
    root = str(request.scope.get("root_path", "")).rstrip("/")
    response.set_cookie(
        COOKIE, seal(request.app.state.secret_key, token, expires),
        max_age=max(1, round((expires - dt.datetime.now(dt.UTC)).total_seconds())),
        expires=expires, path=root or "/", httponly=True, samesite="strict",
        secure=secure_cookies(request))


def clear_session(request: Request, response: Response) -> None:
    root = str(request.scope.get("root_path", "")).rstrip("/")
    response.delete_cookie(COOKIE, path=root or "/", httponly=True, samesite="strict",
                           secure=secure_cookies(request))


def own_origin(request: Request) -> str:
    """The origin our own pages are served from."""
    public = request.app.state.settings.public_url
    if public:
        u = urlsplit(public)
        return f"{u.scheme}://{u.netloc}"
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def check_origin(request: Request) -> None:
    """:class:`CrossOrigin` unless a state-changing request comes from our own origin."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        ref = request.headers.get("referer")
        if ref:
            u = urlsplit(ref)
            origin = f"{u.scheme}://{u.netloc}"
    if origin != own_origin(request):
        raise CrossOrigin(f"a signed-in request from {origin or 'an unknown origin'} is "
                          f"refused: only pages of {own_origin(request)} may act with the "
                          "session cookie")


def session_token(request: Request) -> str | None:
    """The token of the request's session cookie (None without one); a forged or expired
    cookie is :class:`NotAuthenticated`."""
    value = request.cookies.get(COOKIE)
    if value is None:
        return None
    try:
        return unseal(request.app.state.secret_key, value)
    except ExpiredSession as exc:
        request.state.expired_session = exc.token
        raise NotAuthenticated(str(exc)) from None
    except ForgedSession as exc:
        raise NotAuthenticated(str(exc)) from None


# -- who is asking ----------------------------------------------------------------------


async def principal(request: Request, role: str = "officer") -> Principal:
    """Who sends ``request``, if they hold at least ``role``: the bearer token when there
    is an ``Authorization`` header, else the session cookie."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated("this needs a token: send Authorization: Bearer <token>")
        token = token.strip()
    else:
        cookie = session_token(request)
        if cookie is None:
            raise NotAuthenticated("this needs a token (Authorization: Bearer <token>) or "
                                   "signing in")
        check_origin(request)
        token = cookie
    pool: AsyncConnectionPool = request.app.state.pool
    async with pool.connection() as conn:
        who = await authenticate(conn, token)
    if who is None:
        raise NotAuthenticated("the token is unknown or revoked")
    if not who.may(role):
        raise NotPermitted(f"{who.name} ({who.role}) may not do this; it needs {role}")
    return who


async def optional_principal(request: Request, role: str = "officer") -> Principal | None:
    """None when the request carries neither a token nor a session cookie; otherwise as
    :func:`principal` (a bad token or cookie is still a 401, never read as anonymous)."""
    if not request.headers.get("authorization") and COOKIE not in request.cookies:
        return None
    return await principal(request, role)


# Routes served by pygeoapi (no FastAPI dependency can guard them) that need a role:
# (method, path) -> role. detect-changes reads the server's imagery and files events.
# The list of every job is for officers: a job's id, answered to whoever submitted it
# (Location), is what lets a client follow, fetch or dismiss that job, so it is not
# handed to everyone.
GUARDED: dict[tuple[str, str], str] = {
    ("POST", "/ogc/processes/detect-changes/execution"): "officer",
    ("GET", "/ogc/jobs"): "officer",
    ("HEAD", "/ogc/jobs"): "officer",
}


# Dismissing (DELETE) a job of these processes needs the role too: an anonymous client
# must not stop an officer's detection. Jobs of other processes stay public.
GUARDED_JOBS: dict[str, str] = {"detect-changes": "officer"}
_JOB_PATH = re.compile(r"/ogc/jobs/([^/]+)")


async def _job_role(scope: Any, job_id: str) -> str | None:
    """The role needed to dismiss ``job_id`` (None: anyone, or no such job: pygeoapi then
    answers its 404)."""
    from starlette.concurrency import run_in_threadpool

    ogc = getattr(scope["app"].state, "ogc", None)
    if ogc is None:
        return None
    try:
        job = await run_in_threadpool(ogc.manager.get_job, job_id)
    except Exception:  # noqa: BLE001 - unknown job: not ours to answer
        return None
    return GUARDED_JOBS.get(str((job or {}).get("process_id")))


class Guard:
    """ASGI middleware: a request to a :data:`GUARDED` route (or dismissing a job of a
    :data:`GUARDED_JOBS` process) is answered 401/403 unless it carries a token (or
    session) of the role; every other request passes untouched."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"].rstrip("/")
            role = GUARDED.get((scope["method"], path))
            if role is None and scope["method"] == "DELETE":
                job = _JOB_PATH.fullmatch(path)
                if job is not None:
                    role = await _job_role(scope, job.group(1))
            if role is not None:
                request = Request(scope, receive)
                try:
                    await principal(request, role)
                except (NotAuthenticated, NotPermitted) as exc:
                    handler = request.app.exception_handlers[type(exc)]
                    response = await handler(request, exc)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    async def unauthenticated(request: Request, exc: Exception) -> JSONResponse:
        r = problem(401, "Unauthorized", str(exc), instance=request.url.path)
        r.headers["WWW-Authenticate"] = 'Bearer realm="gridgov"'
        if COOKIE in request.cookies and not request.headers.get("authorization"):
            clear_session(request, r)  # a dead cookie is not sent again
            expired = getattr(request.state, "expired_session", None)
            if expired:  # best effort: the cookie is cleared anyway, and a token of an
                # expired session is never accepted from a cookie again
                with contextlib.suppress(psycopg.Error, PoolTimeout):
                    async with request.app.state.pool.connection() as conn:
                        await revoke_session(conn, expired)
        return r

    async def forbidden(request: Request, exc: Exception) -> JSONResponse:
        return problem(403, "Forbidden", str(exc), instance=request.url.path)

    app.add_exception_handler(NotAuthenticated, unauthenticated)
    app.add_exception_handler(NotPermitted, forbidden)
    app.add_middleware(Guard)
