"""What lies within a radius of a point, nearest first: one statement over the chosen layers.

Distances are metres on the CGCS2000 ellipsoid (``geography``), to the nearest part of
each feature (0 inside a building or parcel).  The GiST index on each layer prefilters
with a box a little larger than the radius; the exact distance decides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from layers.errors import InvalidInput
from layers.registry import LAYERS

AConn = psycopg.AsyncConnection[Any]

MAX_RADIUS_M = 5_000.0
MAX_LIMIT = 1_000
NEARBY_LAYERS = tuple(
    name for name, layer in LAYERS.items() if not (layer.grid_level or layer.derived)
)


def _branch(name: str) -> sql.Composed:
    layer = LAYERS[name]
    props = sql.SQL(", ").join(
        sql.SQL("{}, t.{}").format(sql.Literal(col), sql.Identifier(col))
        for col in layer.columns
    )
    return sql.SQL(
        "SELECT {layer}::text AS layer, t.id, "
        "ST_Distance(t.geom::geography, pt.g::geography) AS dist, "
        "jsonb_build_object({props}) AS props, ST_AsGeoJSON(t.geom, 7)::jsonb AS geometry "
        "FROM {table} t, pt "
        "WHERE t.geom && ST_Expand(pt.g, %(dlon)s, %(dlat)s) "
        "AND ST_DWithin(t.geom::geography, pt.g::geography, %(radius)s)"
    ).format(layer=sql.Literal(name), props=props, table=sql.Identifier(layer.table))


def statement(layers: Sequence[str]) -> sql.Composed:
    """The nearby statement over ``layers`` (names from the registry only)."""
    unknown = [name for name in layers if name not in NEARBY_LAYERS]
    if unknown or not layers:
        raise InvalidInput(
            f"unknown layer {', '.join(repr(u) for u in unknown) or '(none given)'}; "
            f"choose from {', '.join(NEARBY_LAYERS)}"
        )
    union = sql.SQL(" UNION ALL ").join(_branch(name) for name in dict.fromkeys(layers))
    return sql.SQL(
        "WITH pt AS (SELECT ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4490) AS g) "
        "SELECT layer, id, dist, props, geometry FROM ({union}) hits "
        "ORDER BY dist, layer, id LIMIT %(limit)s"
    ).format(union=union)


async def nearby(
    conn: AConn, lon: float, lat: float, radius_m: float, layers: Sequence[str], limit: int
) -> list[dict[str, Any]]:
    """GeoJSON features within ``radius_m`` metres of EPSG:4490 (lon, lat), nearest first."""
    if not 0 < radius_m <= MAX_RADIUS_M:
        raise InvalidInput(f"radius must be more than 0 and at most {MAX_RADIUS_M:.0f} m")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    query = statement(layers)
    # degrees a little larger than the radius, for the index prefilter
    dlat = radius_m / 110_574.0 * 1.01
    dlon = radius_m / (111_320.0 * max(math.cos(math.radians(lat)), 0.01)) * 1.01
    params = {"lon": lon, "lat": lat, "radius": radius_m, "dlon": dlon, "dlat": dlat,
              "limit": limit}
    cur = await conn.execute(query, params)
    return [
        {
            "type": "Feature",
            "id": f"{layer}.{fid}",
            "geometry": geometry,
            "properties": {"layer": layer, "distance_m": round(float(dist), 1), **props},
        }
        for layer, fid, dist, props, geometry in await cur.fetchall()
    ]
