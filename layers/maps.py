"""What the phone map pages and the command-centre screen draw (api/pages.py renders it).

Every answer is public: grid boundaries, cameras, high points, events by category and
state. Nothing personal (reporters' contacts, workers' names or phones) is selected here;
an event's own page reads it through :mod:`layers.events` behind a signed link.
Each function is one statement; GeoJSON is made in PostGIS.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from layers.errors import NotFound

AConn = psycopg.AsyncConnection[Any]

CURRENT = "(SELECT id FROM grid_generations WHERE valid_to IS NULL)"
OPEN_STATES = ("reported", "registered", "dispatched", "accepted", "handled", "rework",
               "suspended", "escalated")
# past its deadline and still on somebody's desk (not handled, not suspended)
OVERDUE_STATES = ("reported", "registered", "dispatched", "accepted", "rework", "escalated")
SCREEN_SIMPLIFY_DEG = 0.00002  # ~2 m: the wall shows the whole street, not every vertex


async def _one(conn: AConn, query: str, params: Any, missing: str) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    if row is None:
        raise NotFound(missing)
    return row[0]


async def micro_grid(conn: AConn, code: str) -> dict[str, Any]:
    """The current micro-grid ``code`` as a GeoJSON Feature (with its community's name,
    open events and coverage)."""
    return await _one(conn, """
SELECT json_build_object('type', 'Feature', 'id', m.code,
  'geometry', ST_AsGeoJSON(m.geom, 7)::json,
  'properties', json_build_object('code', m.code, 'name', m.name, 'kind', m.kind,
    'population', m.population, 'households', m.households,
    'community', c.name, 'community_code', m.community_code,
    'covered_fraction', cov.covered_fraction,
    'lon', ST_X(ST_PointOnSurface(m.geom)), 'lat', ST_Y(ST_PointOnSurface(m.geom))))
FROM micro_grids m
LEFT JOIN communities c ON c.code = m.community_code AND c.generation_id = m.generation_id
LEFT JOIN micro_grid_coverage cov ON cov.micro_grid_id = m.id
WHERE m.code = %s AND m.generation_id = """ + CURRENT, (code,), f"no micro-grid {code}")


async def micro_grid_by_id(conn: AConn, grid_id: int) -> dict[str, Any]:
    """A micro-grid of any generation (an event keeps the grid it was filed under)."""
    return await _one(conn, """
SELECT json_build_object('type', 'Feature', 'id', m.code,
  'geometry', ST_AsGeoJSON(m.geom, 7)::json,
  'properties', json_build_object('code', m.code, 'name', m.name))
FROM micro_grids m WHERE m.id = %s""", (grid_id,), f"no micro-grid id {grid_id}")


async def event_grid_id(conn: AConn, event_id: int) -> int:
    return int(await _one(conn, "SELECT micro_grid_id FROM events WHERE id = %s",
                          (event_id,), f"no event {event_id}"))


async def high_point(conn: AConn, code: str) -> dict[str, Any]:
    """High point ``code`` as a GeoJSON Feature, with its cameras and the micro-grids its
    ring reaches (share of each within range)."""
    return await _one(conn, """
SELECT json_build_object('type', 'Feature', 'id', h.code,
  'geometry', ST_AsGeoJSON(h.geom, 7)::json,
  'properties', json_build_object('code', h.code, 'name', h.name,
    'mount_height_m', h.mount_height_m, 'radius_m', h.radius_m,
    'cameras', (SELECT count(*) FROM cameras c WHERE c.high_point_id = h.id),
    'grids', (SELECT count(*) FROM micro_grids m WHERE m.generation_id = """ + CURRENT + """
              AND ST_DWithin(m.geom::geography, h.geom::geography, h.radius_m))))
FROM high_points h WHERE h.code = %s""", (code,), f"no high point {code}")


async def change(conn: AConn, change_id: int) -> dict[str, Any]:
    """Detected change ``change_id`` (``change_detections``) as a GeoJSON Feature: the
    changed object's outline, what was found (kind, area, score, cue), the parcel it
    stands on with its land use and permit, the verdict and its reason, the officer's
    review, the event filed for it and that event's report photos (the before/after
    chips, public copies). Nothing personal: the event is named by id and state only."""
    return await _one(conn, """
SELECT json_build_object('type', 'Feature', 'id', d.id,
  'geometry', ST_AsGeoJSON(d.geom, 7)::json,
  'properties', json_build_object('id', d.id, 'kind', d.kind, 'area_m2', d.area_m2,
    'score', d.score, 'cue', d.cue, 'verdict', d.verdict, 'reason', d.reason,
    'parcel_code', d.parcel_code, 'land_use', d.land_use, 'approved_use', d.approved_use,
    'permit_status', d.permit_status, 'permit_no', d.permit_no,
    'micro_grid_code', d.micro_grid_code, 'review', d.review,
    'detected_at', d.detected_at, 'run', d.run_id, 'before_name', r.before_name,
    'after_name', r.after_name, 'with_dsm', r.with_dsm,
    'event_id', d.event_id, 'event_state', e.state,
    'chips', (SELECT coalesce(json_agg(p.id ORDER BY p.id), '[]'::json) FROM event_photos p
              WHERE p.event_id = d.event_id AND p.stage = 'report'),
    'lon', ST_X(ST_PointOnSurface(d.geom)), 'lat', ST_Y(ST_PointOnSurface(d.geom))))
FROM change_detections d JOIN change_runs r ON r.id = d.run_id
LEFT JOIN events e ON e.id = d.event_id
WHERE d.id = %s""", (change_id,), f"no detected change {change_id}")


async def change_of_event(conn: AConn, event_id: int) -> int | None:
    """The detected change an event was filed for, if any."""
    cur = await conn.execute("SELECT id FROM change_detections WHERE event_id = %s "
                             "ORDER BY id LIMIT 1", (event_id,))
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def grid_events(conn: AConn, code: str, limit: int = 200) -> dict[str, Any]:
    """Open events filed in the current micro-grid ``code``: category, state, deadline
    light (no description, no address, nobody's name)."""
    cur = await conn.execute("""
SELECT json_build_object('type', 'FeatureCollection', 'features', coalesce(json_agg(
  json_build_object('type', 'Feature', 'id', e.id, 'geometry', ST_AsGeoJSON(e.geom, 7)::json,
    'properties', json_build_object('id', e.id, 'category', e.category_name,
      'state', e.state, 'overdue', e.state = ANY(%(overdue)s) AND e.deadline <= %(now)s))
  ORDER BY e.id), '[]'::json))
FROM (SELECT * FROM events e WHERE e.micro_grid_code = %(code)s
      AND e.state = ANY(%(open)s) ORDER BY e.id DESC LIMIT %(limit)s) e""",
                             {"code": code, "open": list(OPEN_STATES),
                              "overdue": list(OVERDUE_STATES), "limit": limit,
                              "now": dt.datetime.now(dt.UTC)})
    row = await cur.fetchone()
    return row[0]  # type: ignore[index]


async def screen_grids(conn: AConn, now: dt.datetime) -> dict[str, Any]:
    """Every current micro-grid (simplified) with its open and overdue event counts."""
    cur = await conn.execute("""
WITH counts AS (
  SELECT micro_grid_code AS code,
         count(*) FILTER (WHERE state = ANY(%(open)s)) AS open,
         count(*) FILTER (WHERE state = ANY(%(overdue)s) AND deadline <= %(now)s) AS overdue
  FROM events GROUP BY micro_grid_code)
SELECT json_build_object('type', 'FeatureCollection', 'features', coalesce(json_agg(
  json_build_object('type', 'Feature', 'id', m.code,
    'geometry', ST_AsGeoJSON(ST_SimplifyPreserveTopology(m.geom, %(tol)s), 6)::json,
    'properties', json_build_object('code', m.code, 'name', m.name,
      'community_code', m.community_code, 'open', coalesce(k.open, 0),
      'overdue', coalesce(k.overdue, 0)))
  ORDER BY m.code), '[]'::json))
FROM micro_grids m LEFT JOIN counts k ON k.code = m.code
WHERE m.generation_id = """ + CURRENT,
        {"open": list(OPEN_STATES), "overdue": list(OVERDUE_STATES), "now": now,
         "tol": SCREEN_SIMPLIFY_DEG})
    row = await cur.fetchone()
    return row[0]  # type: ignore[index]


async def screen_live(conn: AConn, now: dt.datetime, limit: int = 2000) -> dict[str, Any]:
    """The live picture the screen polls: open events (points, by state), counts per
    state and per community, the overdue list (most overdue first), per-grid counts."""
    cur = await conn.execute("""
WITH live AS (
  SELECT e.id, e.category_name, e.state, e.micro_grid_code, e.deadline, e.geom,
         e.state = ANY(%(overdue)s) AND e.deadline <= %(now)s AS overdue
  FROM events e WHERE e.state = ANY(%(open)s))
SELECT json_build_object(
  'at', %(now)s,
  'events', (SELECT json_build_object('type', 'FeatureCollection', 'features',
      coalesce(json_agg(json_build_object('type', 'Feature', 'id', l.id,
        'geometry', ST_AsGeoJSON(l.geom, 6)::json,
        'properties', json_build_object('id', l.id, 'category', l.category_name,
          'state', l.state, 'overdue', l.overdue)) ORDER BY l.id), '[]'::json))
      FROM (SELECT * FROM live ORDER BY id DESC LIMIT %(limit)s) l),
  'open', (SELECT count(*) FROM live),
  'overdue_count', (SELECT count(*) FROM live WHERE overdue),
  'by_state', (SELECT coalesce(json_object_agg(state, n), '{}'::json)
      FROM (SELECT state, count(*) AS n FROM live GROUP BY state) s),
  'grids', (SELECT coalesce(json_object_agg(code, json_build_array(open, overdue)), '{}'::json)
      FROM (SELECT micro_grid_code AS code, count(*) AS open,
                   count(*) FILTER (WHERE overdue) AS overdue
            FROM live GROUP BY micro_grid_code) g),
  'communities', (SELECT coalesce(json_agg(json_build_object('code', c.code, 'name', c.name,
        'open', coalesce(k.open, 0), 'overdue', coalesce(k.overdue, 0))
        ORDER BY coalesce(k.open, 0) DESC, c.code), '[]'::json)
      FROM communities c
      LEFT JOIN (SELECT left(micro_grid_code, 12) AS code, count(*) AS open,
                        count(*) FILTER (WHERE overdue) AS overdue
                 FROM live GROUP BY 1) k ON k.code = c.code
      WHERE c.generation_id = """ + CURRENT + """),
  'overdue', (SELECT coalesce(json_agg(json_build_object('id', o.id,
        'category', o.category_name, 'state', o.state, 'grid', o.micro_grid_code,
        'grid_name', m.name, 'deadline', o.deadline,
        'hours', round((extract(epoch FROM %(now)s - o.deadline) / 3600)::numeric, 1))
        ORDER BY o.deadline), '[]'::json)
      FROM (SELECT * FROM live WHERE overdue ORDER BY deadline LIMIT 50) o
      LEFT JOIN micro_grids m ON m.code = o.micro_grid_code
        AND m.generation_id = """ + CURRENT + """))""",
        {"open": list(OPEN_STATES), "overdue": list(OVERDUE_STATES), "now": now,
         "limit": limit})
    row = await cur.fetchone()
    return row[0]  # type: ignore[index]


async def coverage(conn: AConn) -> dict[str, Any]:
    """micro_grid_coverage of the current generation: each grid (simplified) with its
    covered share; empty when coverage was never computed."""
    cur = await conn.execute("""
SELECT json_build_object('type', 'FeatureCollection', 'features', coalesce(json_agg(
  json_build_object('type', 'Feature', 'id', m.code,
    'geometry', ST_AsGeoJSON(ST_SimplifyPreserveTopology(m.geom, %(tol)s), 6)::json,
    'properties', json_build_object('code', m.code, 'name', m.name,
      'covered', round(cov.covered_fraction::numeric, 3),
      'ring', round(cov.high_point_ring_fraction::numeric, 3)))
  ORDER BY m.code), '[]'::json))
FROM micro_grid_coverage cov JOIN micro_grids m ON m.id = cov.micro_grid_id
WHERE cov.generation_id = """ + CURRENT, {"tol": SCREEN_SIMPLIFY_DEG})
    row = await cur.fetchone()
    return row[0]  # type: ignore[index]


async def screen_changes(conn: AConn, runs: int = 3, limit: int = 5000) -> dict[str, Any]:
    """Change detections of the last ``runs`` comparisons (newest first): each outline
    with its kind, verdict, review, area and whether an event was filed."""
    cur = await conn.execute("""
SELECT json_build_object('type', 'FeatureCollection',
  'runs', (SELECT coalesce(json_agg(json_build_object('id', r.id, 'before', r.before_name,
             'after', r.after_name, 'at', r.created_at) ORDER BY r.id DESC), '[]'::json)
           FROM (SELECT * FROM change_runs ORDER BY id DESC LIMIT %(runs)s) r),
  'features', coalesce(json_agg(json_build_object('type', 'Feature', 'id', d.id,
    'geometry', ST_AsGeoJSON(d.geom, 7)::json,
    'properties', json_build_object('id', d.id, 'kind', d.kind, 'verdict', d.verdict,
      'review', d.review, 'area_m2', round(d.area_m2::numeric, 1),
      'event', d.event_id IS NOT NULL)) ORDER BY d.id), '[]'::json))
FROM (SELECT d.* FROM change_detections d
      WHERE d.run_id IN (SELECT id FROM change_runs ORDER BY id DESC LIMIT %(runs)s)
      ORDER BY d.id DESC LIMIT %(limit)s) d""", {"runs": runs, "limit": limit})
    row = await cur.fetchone()
    return row[0]  # type: ignore[index]


async def bounds(conn: AConn) -> tuple[float, float, float, float]:
    """Extent of the current micro-grids (minx, miny, maxx, maxy)."""
    cur = await conn.execute("SELECT ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) FROM "
                             "(SELECT ST_Extent(geom) AS b FROM micro_grids WHERE "
                             "generation_id = " + CURRENT + ") x")
    row = await cur.fetchone()
    if row is None or row[0] is None:
        raise NotFound("no micro-grids in the current generation")
    return row  # type: ignore[return-value]
