"""Event hot spots, trends and lateness for planners, as (Geo)DataFrames.

Counts are of problems, not of reports: linked duplicate reports (``state = 'merged'``)
are left out (``layers.metrics`` counts them in ``received``).  Months are calendar
months in Beijing time.  Micro-grids are those of the current generation; an event
keeps the micro-grid it was filed in, so an event filed under a micro-grid that no
longer exists is counted under its code without a shape.  Figures per community,
department or worker (transfer and handling hours, on-time rates, scores) are
:func:`layers.metrics.figures`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import geopandas as gpd
import pandas as pd
from psycopg import sql

from layers import frames
from layers.errors import InvalidInput

BEIJING_TZ = "Asia/Shanghai"
KEYS: dict[str, sql.Composable] = {
    "category": sql.SQL("e.category_code || ' ' || e.category_name"),
    "micro_grid": sql.SQL("e.micro_grid_code"),
    "community": sql.SQL("left(e.micro_grid_code, 12)"),
    "street": sql.SQL("left(e.micro_grid_code, 9)"),
    "source": sql.SQL("e.source"),
}
OPEN = ("reported", "registered", "dispatched", "accepted", "rework", "escalated")
GEN = sql.SQL("(SELECT id FROM grid_generations WHERE valid_to IS NULL)")


def _period(start: dt.datetime | None, end: dt.datetime | None) -> dict[str, Any]:
    for name, value in (("start", start), ("end", end)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(f"{name} needs a timezone offset", parameter=name)
    if start is not None and end is not None and end <= start:
        raise InvalidInput("the period ends before it starts", parameter="end")
    return {"start": start, "end": end}


_WITHIN = sql.SQL("e.state <> 'merged' AND (%(start)s::timestamptz IS NULL OR "
                  "e.reported_at >= %(start)s) AND (%(end)s::timestamptz IS NULL OR "
                  "e.reported_at < %(end)s)")


def period(source: frames.Source) -> tuple[dt.datetime, dt.datetime]:
    """First and last report time of the history (raises when there are no events)."""
    row = frames.query(source, "SELECT min(reported_at) AS first, max(reported_at) AS last "
                       "FROM events")
    if row.empty or pd.isna(row["first"].iloc[0]):
        raise InvalidInput("there are no events yet")
    return row["first"].iloc[0].to_pydatetime(), row["last"].iloc[0].to_pydatetime()


def monthly(source: frames.Source, by: str = "category", start: dt.datetime | None = None,
            end: dt.datetime | None = None) -> pd.DataFrame:
    """Events per calendar month (rows, Beijing time) and ``by`` (columns: ``category``,
    ``micro_grid``, ``community``, ``street`` or ``source``), zeros where none."""
    if by not in KEYS:
        raise InvalidInput(f"by is one of {', '.join(KEYS)}, not {by!r}", parameter="by")
    stmt = sql.SQL(
        "SELECT to_char(date_trunc('month', e.reported_at AT TIME ZONE {tz}), 'YYYY-MM') "
        "AS month, {key} AS key, count(*) AS events FROM events e WHERE {within} "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    ).format(tz=sql.Literal(BEIJING_TZ), key=KEYS[by], within=_WITHIN)
    rows = frames.query(source, stmt, _period(start, end))
    table = rows.pivot_table(index="month", columns="key", values="events", aggfunc="sum",
                             fill_value=0)
    table.columns.name = by
    return table.astype(int)


HOT_SPOTS = sql.SQL("""
WITH ev AS (
    SELECT e.micro_grid_code AS code, e.reported_at FROM events e WHERE {within}
), last AS (SELECT max(reported_at) AS t FROM ev)
SELECT m.code, m.name, m.community_code, m.kind, m.households, m.population,
       count(ev.code) AS events,
       round((count(ev.code) * 100.0 / nullif(m.households, 0))::numeric, 2)
         AS per_100_households,
       count(ev.code) FILTER (WHERE ev.reported_at > last.t - interval '3 months')
         AS last_3_months,
       count(ev.code) FILTER (WHERE ev.reported_at <= last.t - interval '3 months'
                              AND ev.reported_at > last.t - interval '6 months')
         AS previous_3_months,
       m.geom
FROM micro_grids m CROSS JOIN last
LEFT JOIN ev ON ev.code = m.code
WHERE m.generation_id = {gen} AND m.code LIKE %(within)s
GROUP BY m.id, last.t
ORDER BY events DESC, m.code
""")


def _prefix(within: str | None) -> str:
    if within is None:
        return "%"
    if not within.isdigit() or len(within) > 15:
        raise InvalidInput(f"within is a grid code (digits), not {within!r}",
                           parameter="within")
    return within + "%"


def hot_spots(source: frames.Source, start: dt.datetime | None = None,
              end: dt.datetime | None = None, within: str | None = None) -> gpd.GeoDataFrame:
    """Every micro-grid (current generation; ``within`` a street or community code) with
    its events in the period, per 100 households, in the last 3 months of the history and
    the 3 before (``trend`` = the difference), most events first."""
    params = {**_period(start, end), "within": _prefix(within)}
    out = frames.query(source, HOT_SPOTS.format(within=_WITHIN, gen=GEN), params)
    out["trend"] = out["last_3_months"] - out["previous_3_months"]
    out["share"] = (out["events"] / max(int(out["events"].sum()), 1)).round(4)
    return out


LATE = sql.SQL("""
WITH ev AS (
    SELECT e.micro_grid_code AS code, e.state, e.deadline, e.closed_at,
           e.registered_at IS NOT NULL AND e.state <> 'rejected' AS registered
    FROM events e WHERE {within}
)
SELECT m.code, m.name, m.community_code,
       count(ev.code) FILTER (WHERE ev.registered AND ev.deadline < %(now)s) AS due,
       count(ev.code) FILTER (WHERE ev.state = 'closed' AND ev.closed_at > ev.deadline)
         AS closed_late,
       count(ev.code) FILTER (WHERE ev.state = ANY(%(open)s) AND ev.deadline <= %(now)s)
         AS overdue_now,
       m.geom
FROM micro_grids m LEFT JOIN ev ON ev.code = m.code
WHERE m.generation_id = {gen} AND m.code LIKE %(within)s
GROUP BY m.id
""")


def late(source: frames.Source, start: dt.datetime | None = None,
         end: dt.datetime | None = None, now: dt.datetime | None = None,
         within: str | None = None) -> gpd.GeoDataFrame:
    """Where events are late: per micro-grid, registered events due before ``now``
    (default: the database's clock), those closed after their deadline, those open past
    it now, and ``late_share`` = (closed late + overdue now) / due; latest first."""
    when = now or dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        raise InvalidInput("now needs a timezone offset", parameter="now")
    params = {**_period(start, end), "now": when, "open": list(OPEN),
              "within": _prefix(within)}
    out = frames.query(source, LATE.format(within=_WITHIN, gen=GEN), params)
    late_n = out["closed_late"] + out["overdue_now"]
    out["late_share"] = (late_n / out["due"].where(out["due"] > 0)).round(4)
    out = out.sort_values(["late_share", "due", "code"], ascending=[False, False, True],
                          na_position="last")
    return out.reset_index(drop=True)


def overdue_events(source: frames.Source, now: dt.datetime | None = None) -> gpd.GeoDataFrame:
    """Open events past their deadline at ``now`` (public fields only), oldest first."""
    when = now or dt.datetime.now(dt.UTC)
    return frames.query(source, """
        SELECT e.id, e.category_code, e.category_name, e.state, e.micro_grid_code,
               e.department_code, e.reported_at, e.deadline,
               round((extract(epoch FROM %(now)s - e.deadline) / 3600)::numeric, 1)
                 AS hours_late, e.geom
        FROM events e WHERE e.state = ANY(%(open)s) AND e.deadline <= %(now)s
        ORDER BY e.deadline, e.id""", {"now": when, "open": list(OPEN)})
