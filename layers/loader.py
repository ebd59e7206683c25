"""Bulk loading of a whole territory (the demo town, or any data of the same shape).

Rows are mappings of column -> value with shapely geometries in EPSG:4490.  Loading
is one transaction of ``COPY``s: it either lands whole or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
import shapely
from psycopg import sql
from shapely.geometry.base import BaseGeometry

from layers.errors import InvalidInput
from layers.models import SRID, Base

# parents before children
LOAD_ORDER = (
    "grid_generations",
    "streets",
    "communities",
    "micro_grids",
    "roads",
    "buildings",
    "parcels",
    "high_points",
    "cameras",
    "sensors",
    "workers",
    "worker_assignments",
)

Conn = psycopg.Connection[Any]


def _value(v: object) -> object:
    if isinstance(v, BaseGeometry):
        return shapely.to_wkb(shapely.set_srid(v, SRID), hex=True, include_srid=True)
    return v


def load_tables(
    conn: Conn,
    tables: Mapping[str, Sequence[Mapping[str, object]]],
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """COPY every table of ``tables`` (names from :data:`LOAD_ORDER` only) into the database.

    Runs inside the caller's transaction when there is one.  Returns rows per table.
    """
    unknown = set(tables) - set(LOAD_ORDER)
    if unknown:
        raise InvalidInput(f"not a loadable table: {', '.join(sorted(unknown))}")
    counts: dict[str, int] = {}
    with conn.transaction():
        for name in LOAD_ORDER:
            rows = tables.get(name)
            if not rows:
                continue
            known = set(Base.metadata.tables[name].columns.keys())
            columns = list(rows[0].keys())
            bad = [c for c in columns if c not in known]
            if bad:
                raise InvalidInput(f"table {name} has no column {', '.join(bad)}")
            stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(name), sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            with conn.cursor() as cur, cur.copy(stmt) as copy:
                for row in rows:
                    copy.write_row([_value(row[c]) for c in columns])
            counts[name] = len(rows)
            if "id" in columns:
                conn.execute(
                    sql.SQL(
                        "SELECT setval(pg_get_serial_sequence({t}, 'id'), "
                        "(SELECT coalesce(max(id), 1) FROM {i}))"
                    ).format(t=sql.Literal(name), i=sql.Identifier(name))
                )
            if progress is not None:
                progress(name, len(rows))
        refresh_micro_grid_parts(conn)
    return counts


def refresh_micro_grid_parts(conn: Conn, generation_id: int | None = None) -> int:
    """Rebuild the ``ST_Subdivide``d copy of the micro-grids (of one generation, or all)."""
    if generation_id is None:
        conn.execute("DELETE FROM micro_grid_parts")
        cur = conn.execute(
            "INSERT INTO micro_grid_parts (micro_grid_id, generation_id, geom) "
            "SELECT id, generation_id, ST_Subdivide(geom, 64) FROM micro_grids"
        )
    else:
        conn.execute("DELETE FROM micro_grid_parts WHERE generation_id = %s", (generation_id,))
        cur = conn.execute(
            "INSERT INTO micro_grid_parts (micro_grid_id, generation_id, geom) "
            "SELECT id, generation_id, ST_Subdivide(geom, 64) FROM micro_grids "
            "WHERE generation_id = %s",
            (generation_id,),
        )
    conn.execute("ANALYZE micro_grid_parts")
    return cur.rowcount
