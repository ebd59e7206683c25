"""Event figures per micro-grid, community, street, department or worker over a period.

For a period [start, end):

- ``received``: reports filed in the period, linked duplicates included;
- ``registered``: events registered (立案) in the period;
- ``dispatched``, ``dispatched_on_time``: events dispatched in the period, and those
  dispatched within their category's dispatch limit (working hours from the report);
- ``closed``, ``closed_on_time``: events closed (verified) in the period, and those
  closed by their deadline;
- ``due`` (应结案数): registered events whose deadline falls in the period (up to now);
  ``closure_rate`` = due events closed / ``due``; ``on_time_rate`` = due events closed by
  their deadline / ``due``;
- ``rework_rate`` = events sent back at verification (返工) at least once / events
  verified at least once, both counted over verifications in the period (its denominator
  is ``verified``);
- ``avg_transfer_h``: mean hours from report to first dispatch (events dispatched in the
  period; the seeds' "transfer time"); ``avg_handling_h``: mean hours from dispatch to
  the handler's report of completion (events handled in the period);
- ``satisfaction``: mean callback rating (1–5) given in the period, ``rated`` how many;
- ``open_events``, ``overdue_events``: open now, and open past their deadline now.

``score`` (0–100) weighs on-time closure 30, closure 20, dispatch on time 15,
satisfaction 20 (rating / 5) and no rework 15; a component without a denominator is
left out and the others are re-weighted; no component at all gives no score.
Grades: A ≥ 90, B ≥ 80, C ≥ 60, D below.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import psycopg
from psycopg import sql

from layers.errors import InvalidInput

AConn = psycopg.AsyncConnection[Any]
Level = Literal["micro_grid", "community", "street", "department", "worker"]
LEVELS: dict[str, sql.Composable] = {
    "micro_grid": sql.SQL("e.micro_grid_code"),
    "community": sql.SQL("left(e.micro_grid_code, 12)"),
    "street": sql.SQL("left(e.micro_grid_code, 9)"),
    "department": sql.SQL("e.department_code"),
    "worker": sql.SQL("e.assignee_worker_id::text"),
}
NAMES: dict[str, str] = {
    "micro_grid": "SELECT code, name FROM micro_grids WHERE generation_id = "
                  "(SELECT id FROM grid_generations WHERE valid_to IS NULL)",
    "community": "SELECT code, name FROM communities WHERE generation_id = "
                 "(SELECT id FROM grid_generations WHERE valid_to IS NULL)",
    "street": "SELECT code, name FROM streets WHERE generation_id = "
              "(SELECT id FROM grid_generations WHERE valid_to IS NULL)",
    "department": "SELECT code, name_zh FROM departments",
    "worker": "SELECT id::text, name FROM workers",
}
WEIGHTS = {"on_time_rate": 30, "closure_rate": 20, "dispatched_on_time_rate": 15,
           "satisfaction": 20, "no_rework": 15}

FIGURES = sql.SQL("""
SELECT {key} AS key,
  count(*) FILTER (WHERE e.reported_at >= %(start)s AND e.reported_at < %(end)s) AS received,
  count(*) FILTER (WHERE e.registered_at >= %(start)s AND e.registered_at < %(end)s)
    AS registered,
  count(*) FILTER (WHERE e.dispatched_at >= %(start)s AND e.dispatched_at < %(end)s)
    AS dispatched,
  count(*) FILTER (WHERE e.dispatched_at >= %(start)s AND e.dispatched_at < %(end)s
                   AND e.dispatched_at <= e.dispatch_due) AS dispatched_on_time,
  count(*) FILTER (WHERE e.state = 'closed' AND e.closed_at >= %(start)s
                   AND e.closed_at < %(end)s) AS closed,
  count(*) FILTER (WHERE e.state = 'closed' AND e.closed_at >= %(start)s
                   AND e.closed_at < %(end)s AND e.closed_at <= e.deadline) AS closed_on_time,
  count(*) FILTER (WHERE e.registered_at IS NOT NULL AND e.state <> 'rejected'
                   AND e.deadline >= %(start)s AND e.deadline < least(%(end)s, %(now)s)) AS due,
  count(*) FILTER (WHERE e.registered_at IS NOT NULL AND e.state = 'closed'
                   AND e.deadline >= %(start)s AND e.deadline < least(%(end)s, %(now)s))
    AS due_closed,
  count(*) FILTER (WHERE e.registered_at IS NOT NULL AND e.state = 'closed'
                   AND e.deadline >= %(start)s AND e.deadline < least(%(end)s, %(now)s)
                   AND e.closed_at <= e.deadline) AS due_closed_on_time,
  count(*) FILTER (WHERE v.verified) AS verified,
  count(*) FILTER (WHERE v.reworked) AS reworked,
  avg(extract(epoch FROM e.dispatched_at - e.reported_at) / 3600)
    FILTER (WHERE e.dispatched_at >= %(start)s AND e.dispatched_at < %(end)s)
    AS avg_transfer_h,
  avg(extract(epoch FROM e.handled_at - e.dispatched_at) / 3600)
    FILTER (WHERE e.handled_at >= %(start)s AND e.handled_at < %(end)s) AS avg_handling_h,
  avg(c.rating) FILTER (WHERE c.rating IS NOT NULL) AS satisfaction,
  count(c.rating) AS rated,
  count(*) FILTER (WHERE e.state IN ('registered', 'dispatched', 'accepted', 'handled',
                   'rework', 'suspended', 'escalated', 'reported')) AS open_events,
  count(*) FILTER (WHERE e.state IN ('registered', 'dispatched', 'accepted', 'rework',
                   'escalated', 'reported') AND e.deadline <= %(now)s) AS overdue_events
FROM events e
LEFT JOIN LATERAL (
  SELECT bool_or(h.action IN ('verify_pass', 'verify_fail')) AS verified,
         bool_or(h.action = 'verify_fail') AS reworked
  FROM event_history h
  WHERE h.event_id = e.id AND h.at >= %(start)s AND h.at < %(end)s
    AND h.action IN ('verify_pass', 'verify_fail')
) v ON true
LEFT JOIN LATERAL (
  SELECT (h.data ->> 'satisfaction')::int AS rating FROM event_history h
  WHERE h.event_id = e.id AND h.action = 'callback' AND h.at >= %(start)s AND h.at < %(end)s
  ORDER BY h.seq DESC LIMIT 1
) c ON true
WHERE e.reported_at < %(end)s AND {key} IS NOT NULL {within}
GROUP BY 1
ORDER BY 1
""")


def _rate(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def grade(score: float | None) -> str | None:
    if score is None:
        return None
    return "A" if score >= 90 else "B" if score >= 80 else "C" if score >= 60 else "D"


def score(f: dict[str, Any]) -> float | None:
    parts = {
        "on_time_rate": f["on_time_rate"],
        "closure_rate": f["closure_rate"],
        "dispatched_on_time_rate": f["dispatched_on_time_rate"],
        "satisfaction": f["satisfaction"] / 5 if f["satisfaction"] is not None else None,
        "no_rework": 1 - f["rework_rate"] if f["rework_rate"] is not None else None,
    }
    have = {k: v for k, v in parts.items() if v is not None}
    if not have:
        return None
    total = sum(WEIGHTS[k] for k in have)
    return round(100 * sum(WEIGHTS[k] * v for k, v in have.items()) / total, 1)


async def figures(conn: AConn, level: str, start: dt.datetime, end: dt.datetime,
                  within: str | None = None,
                  now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The figures of every group at ``level`` with events (``within``: a grid-code
    prefix to restrict to a street or community)."""
    if level not in LEVELS:
        raise InvalidInput(f"level is one of {', '.join(LEVELS)}", parameter="level")
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInput("period bounds need a timezone offset", parameter="from")
    if end <= start:
        raise InvalidInput("the period ends before it starts", parameter="to")
    now = now or dt.datetime.now(dt.UTC)
    params: dict[str, Any] = {"start": start, "end": end, "now": now}
    clause = sql.SQL("")
    if within:
        clause = sql.SQL("AND e.micro_grid_code LIKE %(within)s")
        params["within"] = within.replace("%", "").replace("_", "") + "%"
    cur = await conn.execute(FIGURES.format(key=LEVELS[level], within=clause), params)
    cols = [d.name for d in cur.description or ()]
    rows = [dict(zip(cols, r, strict=True)) for r in await cur.fetchall()]
    ncur = await conn.execute(NAMES[level])
    names = dict(await ncur.fetchall())
    out = []
    for r in rows:
        f: dict[str, Any] = {"level": level, "code": r["key"], "name": names.get(r["key"]),
                             **{k: v for k, v in r.items() if k != "key"}}
        for k in ("avg_transfer_h", "avg_handling_h", "satisfaction"):
            f[k] = round(float(f[k]), 2) if f[k] is not None else None
        f["closure_rate"] = _rate(r["due_closed"], r["due"])
        f["on_time_rate"] = _rate(r["due_closed_on_time"], r["due"])
        f["dispatched_on_time_rate"] = _rate(r["dispatched_on_time"], r["dispatched"])
        f["rework_rate"] = _rate(r["reworked"], r["verified"])
        f["score"] = score(f)
        f["grade"] = grade(f["score"])
        out.append(f)
    return out


REFRESH = """
INSERT INTO micro_grid_scores (micro_grid_id, generation_id, code, name, period_start,
    period_end, received, registered, due, closed, closed_on_time, closure_rate,
    on_time_rate, dispatched_on_time_rate, rework_rate, avg_transfer_h, avg_handling_h,
    satisfaction, open_events, overdue_events, score, grade, computed_at, geom)
SELECT m.id, m.generation_id, m.code, m.name, %(start)s, %(end)s,
    coalesce(f.received, 0), coalesce(f.registered, 0), coalesce(f.due, 0),
    coalesce(f.closed, 0), coalesce(f.closed_on_time, 0), f.closure_rate, f.on_time_rate,
    f.dispatched_on_time_rate, f.rework_rate, f.avg_transfer_h, f.avg_handling_h,
    f.satisfaction, coalesce(f.open_events, 0), coalesce(f.overdue_events, 0), f.score,
    f.grade, %(now)s, m.geom
FROM micro_grids m
LEFT JOIN jsonb_to_recordset(%(figures)s) AS f(code text, received int, registered int,
    due int, closed int, closed_on_time int, closure_rate float8, on_time_rate float8,
    dispatched_on_time_rate float8, rework_rate float8, avg_transfer_h float8,
    avg_handling_h float8, satisfaction float8, open_events int, overdue_events int,
    score float8, grade text) ON f.code = m.code
WHERE m.generation_id = (SELECT id FROM grid_generations WHERE valid_to IS NULL)
"""


async def refresh_scores(conn: AConn, start: dt.datetime, end: dt.datetime,
                         now: dt.datetime | None = None) -> int:
    """Replace ``micro_grid_scores`` with the current generation's figures for the period
    (one transaction: readers see the old table or the new one)."""
    from psycopg.types.json import Jsonb

    now = now or dt.datetime.now(dt.UTC)
    figs = await figures(conn, "micro_grid", start, end, now=now)
    async with conn.transaction():
        await conn.execute("DELETE FROM micro_grid_scores")
        cur = await conn.execute(REFRESH, {"start": start, "end": end, "now": now,
                                           "figures": Jsonb(figs)})
        return cur.rowcount
