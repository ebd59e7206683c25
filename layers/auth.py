"""Accounts, roles and bearer tokens. Only a token's SHA-256 is stored; the token is
shown once. Passwords are hashed with Argon2id (``argon2-cffi``).

Roles, lowest first (a role may do what the ones below it may, except where an action
names its roles explicitly, as the event workflow does):

- ``resident``: reports events and rates their own;
- ``grid_worker`` (网格员): acts on the events of their own micro-grids;
- ``department`` (职能部门): acts on the events dispatched to their department;
- ``dispatcher`` (受理/派遣员): registers, dispatches, verifies, calls back;
- ``officer``: approves extensions and suspensions, supervises, edits the GIS layers;
- ``admin``: everything, and manages accounts from the command line.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from layers.errors import InvalidInput, NotFound

ROLES = ("resident", "grid_worker", "department", "dispatcher", "officer", "admin")
RANK = {"resident": 0, "grid_worker": 1, "department": 1, "dispatcher": 2, "officer": 3,
        "admin": 4}
MIN_PASSWORD = 10

_hasher = PasswordHasher()


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    user_id: int | None = None
    worker_id: int | None = None  # a grid worker's entry in ``workers``
    department: str | None = None  # a department handler's department

    def may(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _new_token() -> str:
    return "ggv_" + secrets.token_urlsafe(32)


def create_token(conn: psycopg.Connection[Any], name: str, role: str) -> str:
    """A new service token for ``name`` (no account); an active name cannot have two."""
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; choose from {', '.join(ROLES)}")
    if not name.strip():
        raise InvalidInput("a token needs a name (who holds it)")
    token = _new_token()
    try:
        with conn.transaction():
            conn.execute("INSERT INTO api_tokens (name, role, token_sha256) VALUES (%s, %s, %s)",
                         (name.strip(), role, _digest(token)))
    except psycopg.errors.UniqueViolation:
        raise InvalidInput(f"{name!r} already holds an active token; revoke it first") from None
    return token


def revoke_token(conn: psycopg.Connection[Any], name: str) -> None:
    """Revoke every active token of ``name`` (a service token or an account's)."""
    cur = conn.execute("UPDATE api_tokens SET revoked_at = now() "
                       "WHERE name = %s AND revoked_at IS NULL", (name,))
    if cur.rowcount == 0:
        raise NotFound(f"no active token named {name!r}")


def list_tokens(conn: psycopg.Connection[Any]) -> list[tuple[str, str, str, str | None]]:
    rows = conn.execute("SELECT name, role, created_at, revoked_at FROM api_tokens "
                        "ORDER BY created_at, id").fetchall()
    return [(r[0], r[1], r[2].isoformat(), r[3].isoformat() if r[3] else None) for r in rows]


def create_user(
    conn: psycopg.Connection[Any],
    name: str,
    role: str,
    *,
    password: str | None = None,
    phone: str | None = None,
    department: str | None = None,
    worker: str | None = None,
    grid: str | None = None,
) -> str:
    """Make an account and return its first bearer token (caller commits).

    A grid worker is linked to their ``workers`` entry, named by employee number
    (``worker``) or by a micro-grid they currently own (``grid``); a department handler
    names their department.
    """
    name = name.strip()
    if not name:
        raise InvalidInput("an account needs a name")
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; choose from {', '.join(ROLES)}")
    if password is not None and len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a password has at least {MIN_PASSWORD} characters")
    worker_id = None
    if role == "grid_worker":
        if worker:
            row = conn.execute("SELECT id FROM workers WHERE employee_no = %s",
                               (worker,)).fetchone()
        elif grid:
            row = conn.execute("SELECT worker_id FROM worker_assignments "
                               "WHERE micro_grid_code = %s AND valid_to IS NULL",
                               (grid,)).fetchone()
        else:
            raise InvalidInput("a grid worker needs --worker EMPLOYEE_NO or --grid CODE")
        if row is None:
            raise NotFound(f"no worker {'numbered ' + worker if worker else 'owns ' + str(grid)}")
        worker_id = row[0]
    if role == "department":
        if not department:
            raise InvalidInput("a department handler needs --department CODE")
        if conn.execute("SELECT 1 FROM departments WHERE code = %s",
                        (department,)).fetchone() is None:
            codes = [r[0] for r in conn.execute("SELECT code FROM departments ORDER BY code")]
            raise InvalidInput(f"unknown department {department!r}; choose from "
                               f"{', '.join(codes)}")
    token = _new_token()
    try:
        with conn.transaction():
            (uid,) = conn.execute(
                "INSERT INTO users (name, role, password_hash, phone, department_code, "
                "worker_id) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (name, role, _hasher.hash(password) if password else None, phone,
                 department if role == "department" else None, worker_id),
            ).fetchone()  # type: ignore[misc]
            conn.execute("INSERT INTO api_tokens (name, role, token_sha256, user_id) "
                         "VALUES (%s, %s, %s, %s)", (name, role, _digest(token), uid))
    except psycopg.errors.UniqueViolation:
        raise InvalidInput(f"an account named {name!r} exists already") from None
    return token


async def login(conn: psycopg.AsyncConnection[Any], name: str, password: str,
                expires: dt.datetime | None = None) -> str:
    """A fresh bearer token for an account's name and password (caller commits).

    Unknown names and wrong passwords get the same answer (:class:`BadCredentials`).
    """
    cur = await conn.execute("SELECT id, role, password_hash FROM users "
                             "WHERE name = %s AND disabled_at IS NULL", (name,))
    row = await cur.fetchone()
    stored = row[2] if row else None
    try:
        _hasher.verify(stored or _DUMMY, password)
        ok = stored is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or row is None:
        raise BadCredentials("unknown account or wrong password")
    token = _new_token()
    await conn.execute("INSERT INTO api_tokens (name, role, token_sha256, user_id, expires_at) "
                       "VALUES (%s, %s, %s, %s, %s)",
                       (name, row[1], _digest(token), row[0], expires))
    return token


async def revoke_session(conn: psycopg.AsyncConnection[Any], token: str) -> bool:
    """Revoke the token a signed-in session carries (sign-out, or an expired session);
    whether it was active."""
    cur = await conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE "
                             "token_sha256 = %s AND revoked_at IS NULL", (_digest(token),))
    return cur.rowcount > 0


_DUMMY = _hasher.hash("not a password, only spends the same time")


class BadCredentials(Exception):  # noqa: N818 - named after what happened
    """A login with an unknown name or a wrong password."""


async def authenticate(conn: psycopg.AsyncConnection[Any], token: str) -> Principal | None:
    """Who holds ``token``, or None for an unknown, revoked or disabled one."""
    cur = await conn.execute(
        "SELECT t.name, t.role, u.id, u.worker_id, u.department_code FROM api_tokens t "
        "LEFT JOIN users u ON u.id = t.user_id "
        "WHERE t.token_sha256 = %s AND t.revoked_at IS NULL "
        "AND (t.expires_at IS NULL OR t.expires_at > now()) "
        "AND (t.user_id IS NULL OR u.disabled_at IS NULL)", (_digest(token),))
    row = await cur.fetchone()
    return Principal(row[0], row[1], row[2], row[3], row[4]) if row else None
