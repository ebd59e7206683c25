"""Notifications through an outbox: written in the same transaction as the event change
that causes them, sent later by a pluggable sender, retried with back-off, never lost.

A sender is anything with ``send(channel, recipient, body)`` that raises on failure.
The default :class:`LogSender` writes the message to the log (no SMS gateway is
configured in a fresh install). :func:`deliver` claims due messages with
``FOR UPDATE SKIP LOCKED``, so several senders may run at once without sending a
message twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Protocol

import psycopg

from layers import workdays

AConn = psycopg.AsyncConnection[Any]
log = logging.getLogger("gridgov.notify")
MAX_BACKOFF = dt.timedelta(hours=1)


class Sender(Protocol):
    def send(self, channel: str, recipient: str, body: str) -> None: ...


class LogSender:
    """Writes each message to the ``gridgov.notify`` log."""

    def send(self, channel: str, recipient: str, body: str) -> None:
        log.info("%s to %s: %s", channel, recipient, body)


class WebhookSender:
    """POSTs ``{"channel", "recipient", "body"}`` as JSON to an SMS/WeChat gateway's URL;
    any answer but 2xx (or no answer within ``timeout`` seconds) is a failure, retried."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"a webhook URL is http(s)://..., not {url!r}")
        self.url, self.timeout = url, timeout

    def send(self, channel: str, recipient: str, body: str) -> None:
        import json
        import urllib.request

        req = urllib.request.Request(
            self.url, data=json.dumps({"channel": channel, "recipient": recipient,
                                       "body": body}, ensure_ascii=False).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as r:  # noqa: S310 - http(s) only
            if not 200 <= r.status < 300:
                raise ConnectionError(f"gateway answered {r.status}")


def sender_from(spec: str) -> Sender:
    """``log``, ``webhook:URL`` or ``module:attribute`` (a class or factory taking no
    arguments) naming the sender to use."""
    if spec == "log":
        return LogSender()
    if spec.startswith("webhook:"):
        return WebhookSender(spec.removeprefix("webhook:"))
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"sender is log, webhook:URL or module:attribute, not {spec!r}")
    import importlib

    factory = getattr(importlib.import_module(module), attr)
    sender = factory()
    if not callable(getattr(sender, "send", None)):
        raise ValueError(f"{spec} has no send(channel, recipient, body)")
    return sender  # type: ignore[no-any-return]


async def enqueue(conn: AConn, channel: str, recipient: str, body: str,
                  event_id: int | None = None, dedup_key: str | None = None,
                  at: dt.datetime | None = None) -> bool:
    """Queue a message (caller's transaction); False when ``dedup_key`` was queued before."""
    at = at or dt.datetime.now(dt.UTC)
    cur = await conn.execute(
        "INSERT INTO outbox (channel, recipient, body, event_id, dedup_key, created_at, "
        "next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
        (channel, recipient, body, event_id, dedup_key, at, at))
    return await cur.fetchone() is not None


async def deliver(conn: AConn, sender: Sender, batch: int = 100,
                  now: dt.datetime | None = None) -> tuple[int, int]:
    """Send up to ``batch`` due messages: (sent, failed). A failure is recorded with its
    error and retried after 1, 2, 4 ... minutes (at most an hour)."""
    now = now or dt.datetime.now(dt.UTC)
    sent = failed = 0
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT id, channel, recipient, body, attempts FROM outbox "
            "WHERE sent_at IS NULL AND next_attempt_at <= %s ORDER BY id LIMIT %s "
            "FOR UPDATE SKIP LOCKED", (now, batch))
        for mid, channel, recipient, body, attempts in await cur.fetchall():
            try:
                sender.send(channel, recipient, body)
            except Exception as exc:  # noqa: BLE001 - any sender fault is retried
                wait = min(dt.timedelta(minutes=2 ** min(attempts, 10)), MAX_BACKOFF)
                await conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = %s, "
                    "next_attempt_at = %s WHERE id = %s", (str(exc)[:500], now + wait, mid))
                failed += 1
            else:
                await conn.execute("UPDATE outbox SET attempts = attempts + 1, sent_at = %s, "
                                   "last_error = NULL WHERE id = %s", (now, mid))
                sent += 1
    return sent, failed


REMIND_SQL = """
SELECT e.id, e.category_name, e.micro_grid_code, e.deadline,
       CASE WHEN e.deadline <= %(now)s THEN 'red' ELSE 'yellow' END AS light,
       coalesce(d.phone, w.phone) AS phone
FROM events e
LEFT JOIN departments d ON d.code = e.department_code
LEFT JOIN workers w ON w.id = e.assignee_worker_id
WHERE e.state IN ('dispatched', 'accepted', 'rework') AND e.warn_at <= %(now)s
ORDER BY e.deadline
"""


async def queue_reminders(conn: AConn, now: dt.datetime | None = None) -> int:
    """One reminder per open event turning yellow (near due) and one on turning red
    (overdue), to its handler; a moved deadline reminds again."""
    now = now or dt.datetime.now(dt.UTC)
    n = 0
    async with conn.transaction():
        cur = await conn.execute(REMIND_SQL, {"now": now})
        for eid, name, grid, due, light, phone in await cur.fetchall():
            if not phone:
                continue
            when = due.astimezone(workdays.BEIJING).strftime("%m-%d %H:%M")
            text = (f"【网格通】事件#{eid} {name}（网格{grid}）已超期，期限{when}，请尽快办结。"
                    if light == "red" else
                    f"【网格通】事件#{eid} {name}（网格{grid}）将于{when}到期，请抓紧办理。")
            if await enqueue(conn, "sms", phone, text, eid,
                             f"remind:{eid}:{light}:{due.isoformat()}", at=now):
                n += 1
    return n
