"""Read queries shared by the surfaces. Each takes a connection; identifiers come from
the layer registry and are quoted with ``psycopg.sql``."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from layers.registry import LAYERS

AConn = psycopg.AsyncConnection[Any]


def _summary_stmt() -> sql.Composable:
    parts = []
    for layer in LAYERS.values():
        where = (
            sql.SQL(
                "WHERE generation_id = (SELECT id FROM grid_generations WHERE valid_to IS NULL)"
            )
            if "generation_id" in layer.columns
            else sql.SQL("")
        )
        parts.append(
            sql.SQL(
                "(SELECT {name}::text AS layer, count(*) AS n, ST_Extent(geom) AS e "
                "FROM {table} {where})"
            ).format(name=sql.Literal(layer.name), table=sql.Identifier(layer.table), where=where)
        )
    return sql.SQL(
        "SELECT layer, n, ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM ({}) s"
    ).format(sql.SQL(" UNION ALL ").join(parts))


async def layer_summaries(conn: AConn) -> list[dict[str, Any]]:
    """Every published layer with its feature count and extent (current grid generation)."""
    cur = await conn.execute(_summary_stmt())
    out = []
    for name, n, x0, y0, x1, y1 in await cur.fetchall():
        layer = LAYERS[name]
        out.append(
            {
                "name": name,
                "title": layer.title,
                "title_zh": layer.title_zh,
                "description": layer.description,
                "geometry": layer.geometry,
                "count": int(n),
                "bbox": None if x0 is None else [x0, y0, x1, y1],
            }
        )
    return out


async def current_generation(conn: AConn) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT id, name, valid_from, valid_to FROM grid_generations WHERE valid_to IS NULL"
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return {"id": row[0], "name": row[1], "valid_from": row[2].isoformat(), "valid_to": None}
