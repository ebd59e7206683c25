"""A demo history of events for the demo town, played through the real workflow.

Every event is filed with :func:`layers.events.report` and moved on with
:func:`layers.events.transition` at its own instants, so the history holds only what the
workflow allows (duplicates linked, deadlines on the working calendar, reworks,
extensions, suspensions, escalations, callbacks) and the figures computed from it are
the figures the system would report. The same seed gives the same history: instants
come from a fixed period, random draws from ``random.Random(seed)``, places from
``ST_GeneratePoints`` with a seed.

Hot spots: a few micro-grids (market streets, a village with a wholesale yard) draw far
more reports than the rest; a few workers are slow; the last days of the period are
left open at every stage, some of them overdue.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any

import psycopg

from layers import events
from layers.auth import Principal
from layers.workdays import BEIJING, add_working_seconds

AConn = psycopg.AsyncConnection[Any]
START = dt.datetime(2026, 1, 5, tzinfo=BEIJING)
END = dt.datetime(2026, 11, 20, 18, tzinfo=BEIJING)

# category, weight, sources
MIX: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("06010", 30, ("grid_worker", "resident", "ai_camera")),
    ("06002", 12, ("grid_worker", "resident")),
    ("06005", 8, ("grid_worker", "hotline")),
    ("06019", 3, ("ai_camera", "grid_worker")),
    ("06001", 4, ("drone", "grid_worker", "hotline")),
    ("09001", 12, ("grid_worker", "ai_camera")),
    ("09006", 10, ("ai_camera", "grid_worker", "resident")),
    ("09009", 12, ("ai_camera", "hotline", "resident")),
    ("01005", 3, ("resident", "hotline")),
    ("90002", 6, ("hotline",)),
)
RECENT = dt.timedelta(days=14)
DISPATCHER = Principal("指挥中心调度员", "dispatcher")
OFFICER = Principal("指挥中心科长", "officer")
SYSTEM = Principal("演示数据", "admin")


def _hours(h: float) -> dt.timedelta:
    return dt.timedelta(hours=h)


async def replay(conn: AConn, n: int = 1500, seed: int = 2023,
                 progress: Callable[[int, int, str], None] | None = None) -> int:
    """File ``n`` reports over [START, END) and walk them (each in its own transaction);
    returns how many events (duplicates included) exist afterwards."""
    rnd = random.Random(seed)
    cur = await conn.execute(
        "SELECT m.code, wa.worker_id, m.population FROM micro_grids m "
        "LEFT JOIN worker_assignments wa ON wa.micro_grid_code = m.code AND wa.valid_to IS NULL"
        " WHERE m.generation_id = (SELECT id FROM grid_generations WHERE valid_to IS NULL) "
        "AND m.code LIKE (SELECT min(code) FROM streets WHERE generation_id = (SELECT id FROM "
        "grid_generations WHERE valid_to IS NULL) AND name LIKE '%%傅家%%') || '%%' "
        "ORDER BY m.code")
    grids = await cur.fetchall()
    if not grids:  # not the demo town's names: every current micro-grid
        cur = await conn.execute(
            "SELECT m.code, wa.worker_id, m.population FROM micro_grids m LEFT JOIN "
            "worker_assignments wa ON wa.micro_grid_code = m.code AND wa.valid_to IS NULL "
            "WHERE m.generation_id = (SELECT id FROM grid_generations WHERE valid_to IS NULL) "
            "ORDER BY m.code")
        grids = await cur.fetchall()
    hot = {g[0] for g in rnd.sample(grids, max(1, len(grids) // 15))}
    slow = {g[1] for g in rnd.sample(grids, max(1, len(grids) // 20))}
    weights = [(g[2] or 1) * (6 if g[0] in hot else 1) for g in grids]
    cur = await conn.execute(
        "SELECT m.code, array_agg(ARRAY[ST_X(p.geom), ST_Y(p.geom)]) FROM micro_grids m, "
        "ST_Dump(ST_GeneratePoints(m.geom, 40, %s)) p WHERE m.code = ANY(%s) AND "
        "m.generation_id = (SELECT id FROM grid_generations WHERE valid_to IS NULL) "
        "GROUP BY m.code", (seed, [g[0] for g in grids]))
    spots = {code: pts for code, pts in await cur.fetchall()}
    span = (END - START).total_seconds()
    times = sorted(START + dt.timedelta(seconds=rnd.random() * span) for _ in range(n))
    cats = [c for c, _w, _s in MIX]
    for i, at in enumerate(times):
        # reports come mostly in daytime
        at = at.replace(hour=rnd.choice((7, 8, 9, 10, 10, 11, 14, 15, 16, 17, 19, 21)))
        g = rnd.choices(grids, weights)[0]
        cat = rnd.choices(cats, [w for _c, w, _s in MIX])[0]
        source = rnd.choice(next(s for c, _w, s in MIX if c == cat))
        lon, lat = rnd.choice(spots[g[0]])
        worker = Principal("网格员", "grid_worker", worker_id=g[1]) if g[1] else None
        async with conn.transaction():
            ev = await events.report(conn, SYSTEM, events.Report(
                cat, lon, lat, source=source, description="演示数据",
                source_ref=None), now=at)
            if ev["state"] != "merged" and cat != "90002" and rnd.random() < 0.08:
                # (90002 requests have no duplicate rule: each call is its own request)
                # a neighbour reports the same thing minutes later: linked, not multiplied
                await events.report(conn, SYSTEM, events.Report(
                    cat, lon + 0.00005, lat, source="resident", description="演示数据（重复上报）"),
                    now=at + _hours(rnd.uniform(0.01, 0.04)))
            if ev["state"] != "merged":
                await _walk(conn, rnd, ev, at + _hours(0.05), worker, g[1] in slow)
        if progress:
            progress(i + 1, n, g[0])
    cur = await conn.execute("SELECT count(*) FROM events")
    (total,) = await cur.fetchone()  # type: ignore[misc]
    return int(total)


async def _walk(conn: AConn, rnd: random.Random, ev: dict[str, Any], at: dt.datetime,
                worker: Principal | None, slow: bool) -> None:
    """Move one event on through a plausible life, stopping before END."""
    eid = ev["id"]
    t = at
    # the last fortnight is still being worked on: each recent event stops somewhere
    stop = END
    if END - at < RECENT:
        stop = at + (END - at) * rnd.random()

    async def act(who: Principal, action: str, after_h: float, **p: Any) -> bool:
        nonlocal t
        nxt = add_working_seconds(t, max(after_h, 0.05) * 3600)
        if nxt >= stop:
            return False
        t = nxt
        await events.transition(conn, who, eid, action, p, now=t)
        return True

    if ev["state"] == "reported":  # reviewed categories
        if not await act(DISPATCHER, "register" if rnd.random() > 0.06 else "reject",
                         rnd.uniform(0.2, 6), reason="非本级受理范围，已告知"):
            return
        cur = await conn.execute("SELECT state FROM events WHERE id = %s", (eid,))
        if (await cur.fetchone())[0] == "rejected":  # type: ignore[index]
            return
        if ev["category"]["code"] == "06001" and rnd.random() < 0.4:
            if not await act(DISPATCHER, "escalate", rnd.uniform(0.5, 4),
                             reason="街道无执法权，街呼区应"):
                return
            if not await act(OFFICER, "dispatch", rnd.uniform(1, 8), department="urban_mgmt"):
                return
        elif not await act(DISPATCHER, "dispatch", rnd.uniform(0.3, 10)):
            return
    cur = await conn.execute("SELECT state, department_code, assignee_worker_id FROM events "
                             "WHERE id = %s", (eid,))
    state, dept, assignee = await cur.fetchone()  # type: ignore[misc]
    if state != "dispatched":
        return
    handler = (Principal(dept, "department", department=dept) if dept else
               Principal("网格员", "grid_worker", worker_id=assignee) if assignee else worker)
    if handler is None:
        return
    if not await act(handler, "accept", rnd.uniform(0.05, 1.5)):
        return
    if rnd.random() < 0.04:
        if not await act(handler, "request_extension", 0.5, reason="需协调清运车辆",
                         extend=1, unit="working_days"):
            return
        if not await act(OFFICER, "approve_extension", rnd.uniform(0.2, 2)):
            return
    elif rnd.random() < 0.015:
        if not await act(handler, "request_suspension", 0.5, reason="产权纠纷待裁决"):
            return
        if not await act(OFFICER, "approve_suspension", rnd.uniform(0.5, 3)):
            return
        if not await act(OFFICER, "resume", rnd.uniform(8, 60)):
            return
    for attempt in range(3):
        base = rnd.lognormvariate(0.3, 0.8) * (3.0 if slow else 1.0)
        pid = await _photo(conn, eid)
        if not await act(handler, "handle", base, photo_ids=[pid]):
            return
        fail = rnd.random() < (0.12 if attempt == 0 else 0.03)
        if fail:
            if not await act(DISPATCHER, "verify_fail", rnd.uniform(0.2, 3),
                             reason="复核未整改到位"):
                return
            if not await act(DISPATCHER, "dispatch", rnd.uniform(0.1, 1)):
                return
            continue
        if not await act(DISPATCHER, "verify_pass", rnd.uniform(0.2, 4)):
            return
        break
    if rnd.random() < 0.6:
        rating = rnd.choices((5, 4, 3, 2, 1), (60, 25, 9, 4, 2))[0]
        await act(DISPATCHER, "callback", rnd.uniform(1, 16), satisfaction=rating)


async def _photo(conn: AConn, eid: int) -> int:
    """A stand-in "after" photo row (the demo has no image files)."""
    cur = await conn.execute(
        "INSERT INTO event_photos (event_id, stage, media_type, bytes, sha256, private_path, "
        "public_path, uploaded_by) VALUES (%s, 'after', 'image/jpeg', 0, '\\x00', "
        "'demo/none', 'demo/none', 'demo') RETURNING id", (eid,))
    (pid,) = await cur.fetchone()  # type: ignore[misc]
    return int(pid)
