"""The demo history: played through the real workflow, the same for the same seed."""

from __future__ import annotations

import asyncio
import datetime as dt

import psycopg

from layers import db, metrics
from layers.demo_events import END, START, replay

DIGEST = ("SELECT md5(string_agg(concat_ws('|', id, category_code, state, micro_grid_code, "
          "reported_at, deadline, closed_at, satisfaction, ST_AsText(geom)), ',' ORDER BY id)) "
          "FROM events")


def test_the_demo_history_holds_every_stage(events_db_url: str) -> None:
    with psycopg.connect(events_db_url) as conn:
        states = dict(conn.execute("SELECT state, count(*) FROM events GROUP BY 1").fetchall())
        actions = {r[0] for r in conn.execute("SELECT DISTINCT action FROM event_history")}
        (bad,) = conn.execute(
            "SELECT count(*) FROM events e WHERE e.state = 'closed' AND NOT EXISTS (SELECT 1 "
            "FROM event_history h WHERE h.event_id = e.id AND h.action = 'verify_pass')"
        ).fetchone()
    assert states["closed"] > 300 and states["merged"] > 0
    assert {"rework", "verify_fail", "escalate", "approve_extension", "callback",
            "reject"} & (actions | set(states)) >= {"verify_fail", "escalate", "callback"}
    assert bad == 0
    assert sum(states.values()) >= 600


def test_the_demo_history_gives_figures_and_grades(events_db_url: str) -> None:
    async def go() -> list[dict]:
        async with await db.aconnect(events_db_url) as conn:
            return await metrics.figures(conn, "community", START, END, now=END)

    groups = asyncio.run(go())
    assert len(groups) >= 5
    assert all(g["grade"] in "ABCD" for g in groups)
    assert {g["grade"] for g in groups} != {"A"}  # slow workers and hot spots show
    total = sum(g["received"] for g in groups)
    assert total >= 600


def test_the_same_seed_gives_the_same_history(fresh_db_url: str, events_db_url: str) -> None:
    async def go(url: str) -> None:
        async with await db.aconnect(url) as conn:
            await replay(conn, 600, 2023)

    asyncio.run(go(fresh_db_url))
    with psycopg.connect(fresh_db_url) as a, psycopg.connect(events_db_url) as b:
        assert a.execute(DIGEST).fetchone() == b.execute(DIGEST).fetchone()
    assert END > START > dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
