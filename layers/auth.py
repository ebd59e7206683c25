"""Bearer tokens with a role. Only a token's SHA-256 is stored; the token is shown once.

Roles: ``officer`` (GIS officers: edit the layers they maintain) and ``admin``
(everything an officer may, and managing tokens from the command line).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg

from layers.errors import InvalidInput, NotFound

ROLES = ("officer", "admin")
RANK = {"officer": 1, "admin": 2}


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    def may(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def create_token(conn: psycopg.Connection[Any], name: str, role: str) -> str:
    """A new token for ``name`` (caller commits); an active name cannot have two."""
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; choose from {', '.join(ROLES)}")
    if not name.strip():
        raise InvalidInput("a token needs a name (who holds it)")
    token = "ggv_" + secrets.token_urlsafe(32)
    try:
        with conn.transaction():
            conn.execute("INSERT INTO api_tokens (name, role, token_sha256) VALUES (%s, %s, %s)",
                         (name.strip(), role, _digest(token)))
    except psycopg.errors.UniqueViolation:
        raise InvalidInput(f"{name!r} already holds an active token; revoke it first") from None
    return token


def revoke_token(conn: psycopg.Connection[Any], name: str) -> None:
    cur = conn.execute("UPDATE api_tokens SET revoked_at = now() "
                       "WHERE name = %s AND revoked_at IS NULL", (name,))
    if cur.rowcount == 0:
        raise NotFound(f"no active token named {name!r}")


def list_tokens(conn: psycopg.Connection[Any]) -> list[tuple[str, str, str, str | None]]:
    rows = conn.execute("SELECT name, role, created_at, revoked_at FROM api_tokens "
                        "ORDER BY created_at").fetchall()
    return [(r[0], r[1], r[2].isoformat(), r[3].isoformat() if r[3] else None) for r in rows]


async def authenticate(conn: psycopg.AsyncConnection[Any], token: str) -> Principal | None:
    """Who holds ``token``, or None for an unknown or revoked one."""
    cur = await conn.execute("SELECT name, role FROM api_tokens "
                             "WHERE token_sha256 = %s AND revoked_at IS NULL", (_digest(token),))
    row = await cur.fetchone()
    return Principal(row[0], row[1]) if row else None
