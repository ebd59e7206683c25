"""Idempotency keys and the public-intake rate counter, kept in the database so that
every server process shares them (the API tier holds no state of its own)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from layers.errors import InvalidInput, RateLimited, Refused

AConn = psycopg.AsyncConnection[Any]
MAX_KEY = 255


def request_digest(route: str, body: Any) -> bytes:
    return hashlib.sha256(json.dumps([route, body], sort_keys=True, default=str).encode()
                          ).digest()


async def replay(conn: AConn, actor: str, key: str, route: str,
                 digest: bytes) -> tuple[int, Any] | None:
    """Claim ``key`` for this request inside the caller's transaction, or the answer a
    previous request with the same key got (a retry). A concurrent request with the same
    key waits here until the first one commits (or rolls back, freeing the key)."""
    if not 0 < len(key) <= MAX_KEY or not key.isprintable():
        raise InvalidInput(f"Idempotency-Key is 1–{MAX_KEY} printable characters",
                           parameter="Idempotency-Key")
    cur = await conn.execute(
        "INSERT INTO idempotency_keys (actor, key, route, request_sha256) VALUES (%s, %s, %s, "
        "%s) ON CONFLICT DO NOTHING RETURNING 1", (actor, key, route, digest))
    if await cur.fetchone() is not None:
        return None
    cur = await conn.execute("SELECT route, request_sha256, status, body FROM idempotency_keys "
                             "WHERE actor = %s AND key = %s", (actor, key))
    row = await cur.fetchone()
    assert row is not None  # noqa: S101 - the conflicting row is committed
    if row[0] != route or bytes(row[1]) != digest:
        raise Refused("this Idempotency-Key was used for a different request; use a new key",
                      parameter="Idempotency-Key")
    return int(row[2]), row[3]


async def remember(conn: AConn, actor: str, key: str, status: int, body: Any) -> None:
    await conn.execute("UPDATE idempotency_keys SET status = %s, body = %s "
                       "WHERE actor = %s AND key = %s", (status, Jsonb(body), actor, key))


async def count(conn: AConn, key: str, limit: int, window_s: int,
                now: dt.datetime | None = None) -> int:
    """Count one request for ``key`` in the current window (autocommit: a refused request
    still counts); :class:`RateLimited` past ``limit``."""
    now = now or dt.datetime.now(dt.UTC)
    start = dt.datetime.fromtimestamp(now.timestamp() // window_s * window_s, dt.UTC)
    cur = await conn.execute(
        "INSERT INTO rate_limits AS r (key, window_start, count) VALUES (%s, %s, 1) "
        "ON CONFLICT (key, window_start) DO UPDATE SET count = r.count + 1 RETURNING count",
        (key, start))
    (n,) = await cur.fetchone()  # type: ignore[misc]
    if n == 1:  # first of its window: forget the windows before the last one
        await conn.execute("DELETE FROM rate_limits WHERE key = %s AND window_start < %s",
                           (key, start - dt.timedelta(seconds=window_s)))
    if n > limit:
        retry = int(start.timestamp() + window_s - now.timestamp()) + 1
        raise RateLimited(f"more than {limit} reports in {window_s} s from this client; "
                          f"retry in {retry} s", retry_after=retry)
    return int(n)
