"""Which grid owns a point: one parameterised statement over the subdivided micro-grids.

Boundary rule: a point covered by several micro-grids (on a shared edge or vertex)
belongs to the one with the lowest code, the same answer every time.
"""

from __future__ import annotations

import datetime as dt
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
       gen.id, gen.name, gen.valid_from, gen.valid_to, w.name
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

_NEAREST = """
WITH gen AS (
    SELECT id FROM grid_generations
    WHERE valid_from <= %(at)s AND (valid_to IS NULL OR valid_to > %(at)s)
), pt AS (SELECT ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4490) AS g)
SELECT m.code, m.name, ST_Distance(m.geom::geography, pt.g::geography)
FROM gen CROSS JOIN pt JOIN micro_grids m ON m.generation_id = gen.id
ORDER BY m.geom <-> pt.g, m.code
LIMIT 1
"""


async def locate(conn: AConn, lon: float, lat: float, at: dt.date) -> dict[str, Any]:
    """The micro-grid, community, street, generation and worker owning (lon, lat) on ``at``.

    ``lon``/``lat`` are EPSG:4490.  Raises :class:`NotFound` outside the territory, with
    the nearest micro-grid and the distance to it in metres.
    """
    params = {"lon": lon, "lat": lat, "at": at}
    cur = await conn.execute(_LOCATE, params)
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
            "worker": {"name": row[10]} if row[10] else None,
        }
    cur = await conn.execute(_NEAREST, params)
    near = await cur.fetchone()
    if near is None:
        raise NotFound(f"no grid generation is valid on {at.isoformat()}")
    raise NotFound(
        f"({lon:.7f}, {lat:.7f}) lies outside the territory; the nearest micro-grid is "
        f"{near[0]} {near[1]}, {near[2]:.0f} m away",
        nearest={"code": near[0], "name": near[1], "distance_m": round(float(near[2]), 1)},
    )
