"""``gridgov users`` (accounts) and ``gridgov events`` (reminders, the notification outbox)."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from api.cli import fail, settings
from layers.errors import LayersError

users_app = typer.Typer(help="Accounts with a role and a bearer token.", no_args_is_help=True)
events_app = typer.Typer(help="The event loop's background work: reminders, notifications.",
                         no_args_is_help=True)


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="Account name (unique).")],
    role: Annotated[str, typer.Option(
        help="resident, grid_worker, department, dispatcher, officer or admin.")],
    worker: Annotated[str | None, typer.Option(
        help="grid_worker: their employee number.")] = None,
    grid: Annotated[str | None, typer.Option(
        help="grid_worker: a micro-grid they own now (instead of --worker).")] = None,
    department: Annotated[str | None, typer.Option(
        help="department: the department code.")] = None,
    phone: Annotated[str | None, typer.Option(help="Phone (personal data).")] = None,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read a password (for /api/v1/login) from stdin.")] = False,
) -> None:
    """Make an account and print its bearer token once (only its SHA-256 is stored)."""
    from api.database import ensure_database
    from layers import db
    from layers.auth import create_user

    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    database = ensure_database(settings(), say=lambda _m: None)
    try:
        with db.connect(database.url) as conn:
            token = create_user(conn, name, role, password=password, phone=phone,
                                department=department, worker=worker, grid=grid)
            conn.commit()
    except LayersError as exc:
        raise fail(str(exc)) from exc
    typer.echo(token)


@events_app.command("remind")
def events_remind() -> None:
    """Queue reminders for open events that are overdue or near their deadline (once per
    event, light and deadline); run it from cron every few minutes."""
    from api.database import ensure_database
    from layers import db
    from layers.notify import queue_reminders

    database = ensure_database(settings(), say=lambda _m: None)

    async def run() -> int:
        async with await db.aconnect(database.url) as conn:
            return await queue_reminders(conn)

    typer.echo(f"{asyncio.run(run())} reminder(s) queued")


@events_app.command("send")
def events_send(
    batch: Annotated[int, typer.Option(help="Messages per run.")] = 100,
    sender: Annotated[str, typer.Option(
        envvar="GRIDGOV_NOTIFY_SENDER",
        help="log (default), webhook:URL (POST JSON to a gateway) or module:attribute.")]
    = "log",
) -> None:
    """Send what the outbox holds through the sender; failures are retried later with
    back-off, nothing is dropped."""
    from api.database import ensure_database
    from layers import db
    from layers.notify import deliver, sender_from

    try:
        chosen = sender_from(sender)
    except (ValueError, ImportError, AttributeError) as exc:
        raise fail(f"sender: {exc}") from exc
    database = ensure_database(settings(), say=lambda _m: None)

    async def run() -> tuple[int, int]:
        async with await db.aconnect(database.url) as conn:
            return await deliver(conn, chosen, batch)

    sent, failed = asyncio.run(run())
    typer.echo(f"{sent} sent, {failed} failed (will be retried)")


@events_app.command("score")
def events_score(
    start: Annotated[str | None, typer.Option(
        "--from", help="Period start, ISO date or date-time (default: 30 days back).")] = None,
    end: Annotated[str | None, typer.Option(
        "--to", help="Period end (default: now).")] = None,
) -> None:
    """Recompute the micro_grid_scores collection (QGIS colours it by grade or score)."""
    import datetime as dt

    from api.database import ensure_database
    from layers import db
    from layers.metrics import refresh_scores

    def when(text: str) -> dt.datetime:
        try:
            t = dt.datetime.fromisoformat(text)
        except ValueError:
            raise fail(f"{text!r} is not an ISO date or date-time") from None
        return t if t.tzinfo else t.replace(tzinfo=dt.timezone(dt.timedelta(hours=8)))

    now = dt.datetime.now(dt.UTC)
    t1 = when(end) if end else now
    t0 = when(start) if start else t1 - dt.timedelta(days=30)
    database = ensure_database(settings(), say=lambda _m: None)

    async def run() -> int:
        async with await db.aconnect(database.url) as conn:
            return await refresh_scores(conn, t0, t1)

    try:
        n = asyncio.run(run())
    except LayersError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"{n} micro-grids scored for {t0.isoformat()} – {t1.isoformat()}")


@events_app.command("demo")
def events_demo(
    n: Annotated[int, typer.Option(help="Reports to file.")] = 1500,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same history).")] = 2023,
) -> None:
    """File a demo history of events (Jan–Nov 2026) through the real workflow; refused
    when the database holds events already."""
    from api.cli import counting_bar
    from api.database import ensure_database
    from layers import db
    from layers.demo_events import replay

    database = ensure_database(settings(), say=lambda _m: None)

    async def run() -> int:
        async with await db.aconnect(database.url) as conn:
            cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM events)")
            if (await cur.fetchone())[0]:  # type: ignore[index]
                raise fail("the database holds events already; the demo goes into an empty "
                           "event store")
            with counting_bar("demo events", "report") as bar:
                return await replay(conn, n, seed, progress=bar)

    typer.echo(f"{asyncio.run(run())} events in the store")
