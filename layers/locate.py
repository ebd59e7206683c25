"""Which grid owns a point: one parameterised statement over the subdivided micro-grids.

Boundary rule: a point covered by several micro-grids (on a shared edge or vertex)
belongs to the one with the lowest code, the same answer every time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import psycopg

from layers.errors import NotFound

AConn = psycopg.AsyncConnection[Any]

_LOCATE = """
WITH gen AS (
    SELECT id, name, valid_from, valid_to FROM grid_generations
    WHERE valid_from <= %(at)s AND (valid_to IS NULL OR valid_to > %(at)s)
), pt AS (SELECT ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4490) AS g)
SELECT m.code, m.name, c.code, c.name, s.code, s.name,
       gen.id, gen.name, gen.valid_from, gen.valid_to, w.name, {phone}
FROM gen CROSS JOIN pt
JOIN micro_grid_parts p ON p.generation_id = gen.id AND ST_Intersects(p.geom, pt.g)
JOIN micro_grids m ON m.id = p.micro_grid_id
JOIN communities c ON c.generation_id = m.generation_id AND c.code = m.community_code
JOIN streets s ON s.generation_id = c.generation_id AND s.code = c.street_code
LEFT JOIN worker_assignments wa ON wa.micro_grid_code = m.code
     AND wa.valid_from <= %(at)s AND (wa.valid_to IS NULL OR wa.valid_to > %(at)s)
LEFT JOIN workers w ON w.id = wa.worker_id
ORDER BY m.code
LIMIT 1
"""
# The worker's phone is personal data: selected only for an officer (on the writer's
# connection; the reader's view of workers has no phone column).
LOCATE_SQL = _LOCATE.format(phone="NULL::text")
LOCATE_PHONE_SQL = _LOCATE.format(phone="w.phone")

NEAREST_SQL = """
WITH gen AS (
    SELECT id FROM grid_generations
    WHERE valid_from <= %(at)s AND (valid_to IS NULL OR valid_to > %(at)s)
), pt AS (SELECT ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4490) AS g)
SELECT k.code, k.name, ST_Distance(k.geom::geography, pt.g::geography) AS dist
FROM pt CROSS JOIN LATERAL (
    -- a few nearest by the index (planar degrees), then ranked by true metres
    SELECT m.code, m.name, m.geom FROM gen JOIN micro_grids m ON m.generation_id = gen.id
    ORDER BY m.geom <-> pt.g
    LIMIT 4
) k
ORDER BY dist, k.code
LIMIT 1
"""


async def locate(
    conn: AConn, lon: float, lat: float, at: dt.date, with_phone: bool = False
) -> dict[str, Any]:
    """The micro-grid, community, street, generation and worker owning (lon, lat) on ``at``.

    ``lon``/``lat`` are EPSG:4490.  The worker's phone (personal data) is included only
    ``with_phone`` (the caller has checked the asker's role).  Raises :class:`NotFound`
    outside the territory, with the nearest micro-grid and the distance to it in metres.
    """
    params = {"lon": lon, "lat": lat, "at": at}
    cur = await conn.execute(LOCATE_PHONE_SQL if with_phone else LOCATE_SQL, params)
    row = await cur.fetchone()
    if row is not None:
        return {
            "micro_grid": {"code": row[0], "name": row[1]},
            "community": {"code": row[2], "name": row[3]},
            "street": {"code": row[4], "name": row[5]},
            "generation": {
                "id": row[6],
                "name": row[7],
                "valid_from": row[8].isoformat(),
                "valid_to": row[9].isoformat() if row[9] else None,
            },
            "worker": ({"name": row[10], **({"phone": row[11]} if with_phone else {})}
                       if row[10] else None),
        }
    cur = await conn.execute(NEAREST_SQL, params)
    near = await cur.fetchone()
    if near is None:
        raise NotFound(f"no grid generation is valid on {at.isoformat()}")
    raise NotFound(
        f"({lon:.7f}, {lat:.7f}) lies outside the territory; the nearest micro-grid is "
        f"{near[0]} {near[1]}, {near[2]:.0f} m away",
        nearest={"code": near[0], "name": near[1], "distance_m": round(float(near[2]), 1)},
    )


# -- many points: one statement per chunk, answers in input order ------------------------

BATCH_COLUMNS = (
    "micro_grid_code", "micro_grid_name", "community_code", "community_name",
    "street_code", "street_name", "worker", "nearest_code", "nearest_name", "distance_m",
)
"""Columns of each answer of :func:`locate_many`; ``nearest_*`` and ``distance_m`` are set
only for points outside the territory (then ``micro_grid_code`` is None)."""

CHUNK = 5_000

GENERATION_SQL = """
SELECT id, name, valid_from, valid_to FROM grid_generations
WHERE valid_from <= %(at)s AND (valid_to IS NULL OR valid_to > %(at)s)
"""

BATCH_SQL = """
WITH pts AS (
    SELECT t.i, ST_SetSRID(ST_MakePoint(t.x, t.y), 4490) AS g
    FROM unnest(%(xs)s::float8[], %(ys)s::float8[]) WITH ORDINALITY AS t(x, y, i)
)
SELECT hit.m_code, hit.m_name, hit.c_code, hit.c_name, hit.s_code, hit.s_name, hit.worker,
       near.code, near.name, round(near.dist::numeric, 1)::float8
FROM pts
LEFT JOIN LATERAL (
    SELECT m.code AS m_code, m.name AS m_name, c.code AS c_code, c.name AS c_name,
           s.code AS s_code, s.name AS s_name, w.name AS worker
    FROM micro_grid_parts p
    JOIN micro_grids m ON m.id = p.micro_grid_id
    JOIN communities c ON c.generation_id = m.generation_id AND c.code = m.community_code
    JOIN streets s ON s.generation_id = c.generation_id AND s.code = c.street_code
    LEFT JOIN worker_assignments wa ON wa.micro_grid_code = m.code
         AND wa.valid_from <= %(at)s AND (wa.valid_to IS NULL OR wa.valid_to > %(at)s)
    LEFT JOIN workers w ON w.id = wa.worker_id
    WHERE p.generation_id = %(gen)s AND ST_Intersects(p.geom, pts.g)
    ORDER BY m.code
    LIMIT 1
) hit ON true
LEFT JOIN LATERAL (
    SELECT k.code, k.name, ST_Distance(k.geom::geography, pts.g::geography) AS dist
    FROM (
        SELECT m.code, m.name, m.geom FROM micro_grids m
        WHERE hit.m_code IS NULL AND m.generation_id = %(gen)s
        ORDER BY m.geom <-> pts.g
        LIMIT 4
    ) k
    ORDER BY dist, k.code
    LIMIT 1
) near ON true
ORDER BY pts.i
"""


def _generation(row: tuple[Any, ...] | None, at: dt.date) -> dict[str, Any]:
    if row is None:
        raise NotFound(f"no grid generation is valid on {at.isoformat()}")
    return {
        "id": row[0],
        "name": row[1],
        "valid_from": row[2].isoformat(),
        "valid_to": row[3].isoformat() if row[3] else None,
    }


async def generation_at(conn: AConn, at: dt.date) -> dict[str, Any]:
    """The grid generation valid on ``at``; :class:`NotFound` when none is."""
    cur = await conn.execute(GENERATION_SQL, {"at": at})
    return _generation(await cur.fetchone(), at)


def _chunks(
    lons: Sequence[float], lats: Sequence[float], chunk: int
) -> Iterator[tuple[list[float], list[float]]]:
    for start in range(0, len(lons), chunk):
        yield list(lons[start:start + chunk]), list(lats[start:start + chunk])


async def locate_many(
    conn: AConn,
    lons: Sequence[float],
    lats: Sequence[float],
    generation: dict[str, Any],
    at: dt.date,
    chunk: int = CHUNK,
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Answers for many EPSG:4490 points, in input order, one statement per ``chunk``.

    Yields one list of :data:`BATCH_COLUMNS` tuples per chunk, so a caller can stream
    them out while the next chunk is computed.
    """
    for xs, ys in _chunks(lons, lats, chunk):
        cur = await conn.execute(BATCH_SQL, {"xs": xs, "ys": ys, "gen": generation["id"], "at": at})
        yield await cur.fetchall()


def locate_many_sync(
    conn: psycopg.Connection[Any],
    lons: Sequence[float],
    lats: Sequence[float],
    at: dt.date,
    chunk: int = CHUNK,
) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """:func:`locate_many` for blocking callers (processes, notebooks): all answers at once."""
    generation = _generation(conn.execute(GENERATION_SQL, {"at": at}).fetchone(), at)
    rows: list[tuple[Any, ...]] = []
    for xs, ys in _chunks(lons, lats, chunk):
        params = {"xs": xs, "ys": ys, "gen": generation["id"], "at": at}
        rows += conn.execute(BATCH_SQL, params).fetchall()
    return generation, rows
