"""GeoDataFrames of any published layer or any query, read-only, for notebooks.

>>> from layers import frames                                     # doctest: +SKIP
>>> grids = frames.frame(url, "micro_grids", columns=["code", "households"])
>>> worst = frames.query(url, "SELECT code, covered_fraction, geom FROM micro_grid_coverage "
...                      "WHERE covered_fraction < %(share)s", {"share": 0.2})

``url`` is the database's URL (a connection works too).  Everything runs in a
read-only transaction (``SET TRANSACTION READ ONLY``): a notebook cannot change the
data by accident.  :func:`frame` takes table and column names from the layer registry
only (quoted with ``psycopg.sql.Identifier``), so it serves exactly what the OGC API
publishes: no personal data.  Grid levels (and every layer with ``generation_id``)
give the current generation unless ``generation_id`` names another.  :func:`query`
runs the caller's SQL with bound parameters; every PostGIS geometry column becomes
shapely geometry (the first one, or ``geometry=``, is the active geometry, its CRS read
from the data), ``numeric`` becomes ``float``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import shapely
from psycopg import sql
from psycopg.types.numeric import FloatLoader

from layers import db
from layers.errors import InvalidInput, NotFound
from layers.registry import LAYERS, Layer

Conn = psycopg.Connection[Any]
Source = str | Conn
Statement = str | sql.Composable

KEY = "id"
GEOMETRY = "geom"
READ_ONLY = "-c default_transaction_read_only=on"


def layer_names() -> list[str]:
    """The layers :func:`frame` serves (the registry's, as the OGC API publishes them)."""
    return list(LAYERS)


def connect(url: str) -> Conn:
    """A read-only autocommit connection (every transaction defaults to READ ONLY)."""
    return db.connect(url, options=f"{db.SESSION_OPTIONS} {READ_ONLY}", autocommit=True)


@contextmanager
def _read_only(source: Source) -> Iterator[Conn]:
    if isinstance(source, str):
        with connect(source) as conn, conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            yield conn
        return
    if source.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise InvalidInput("frames read in a transaction of their own: commit or roll back "
                           "the connection's open transaction first")
    with source.transaction():
        source.execute("SET TRANSACTION READ ONLY")
        yield source


def _geometry_oids(conn: Conn) -> set[int]:
    rows = conn.execute(
        "SELECT oid FROM pg_type WHERE typname IN ('geometry', 'geography')").fetchall()
    return {int(r[0]) for r in rows}


def _to_frame(cur: psycopg.Cursor[Any], rows: list[tuple[Any, ...]], geo: set[int],
              geometry: str | None) -> pd.DataFrame:
    cols = [d.name for d in cur.description or ()]
    if len(set(cols)) != len(cols):
        dup = sorted({c for c in cols if cols.count(c) > 1})
        raise InvalidInput(f"the query returns column(s) {', '.join(dup)} more than once: "
                           "name them apart with AS")
    data: dict[str, Any] = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    geom_cols = [d.name for d in cur.description or () if d.type_code in geo]
    if geometry is not None and geometry not in cols:
        raise InvalidInput(f"the query returns no column {geometry!r} "
                           f"(columns: {', '.join(cols)})")
    active = geometry if geometry is not None else (geom_cols[0] if geom_cols else None)
    if active is not None and active not in geom_cols:
        raise InvalidInput(f"column {active!r} is not a PostGIS geometry")
    srid = 0
    for c in geom_cols:
        geoms = shapely.from_wkb(np.array(data[c], dtype=object)) if rows else \
            np.array([], dtype=object)
        data[c] = geoms
        if c == active and rows:
            srids = shapely.get_srid(geoms[~shapely.is_missing(geoms)])
            srid = int(srids[0]) if len(srids) else 0
    if active is None:
        return pd.DataFrame(data, columns=cols)
    frame = gpd.GeoDataFrame(
        {c: data[c] for c in cols if c != active}, columns=[c for c in cols if c != active],
        geometry=gpd.GeoSeries(data[active], crs=f"EPSG:{srid}" if srid else None),
    )
    frame = frame.rename_geometry(active) if active != "geometry" else frame
    return frame[cols]


def query(source: Source, statement: Statement, params: Sequence[Any] | Mapping[str, Any]
          | None = None, *, geometry: str | None = None) -> pd.DataFrame:
    """The rows of ``statement`` (bound ``params``) as a GeoDataFrame when it returns a
    geometry column, else a DataFrame; read-only."""
    with _read_only(source) as conn:
        geo = _geometry_oids(conn)
        with conn.cursor() as cur:
            cur.adapters.register_loader("numeric", FloatLoader)
            try:
                cur.execute(statement, params)
            except psycopg.errors.ReadOnlySqlTransaction as exc:
                raise InvalidInput("frames are read-only: the statement tries to write") \
                    from exc
            except (psycopg.errors.SyntaxError, psycopg.errors.UndefinedColumn,
                    psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction) as exc:
                raise InvalidInput(f"the query fails: {exc}") from exc
            if cur.description is None:
                raise InvalidInput("the statement returns no rows (not a query)")
            rows = cur.fetchall()
            return _to_frame(cur, rows, geo, geometry)


def _layer(name: str) -> Layer:
    layer = LAYERS.get(name)
    if layer is None:
        raise NotFound(f"no layer {name!r}; layers: {', '.join(LAYERS)}", layer=name)
    return layer


def frame(source: Source, layer: str, *, columns: Sequence[str] | None = None,
          where: Mapping[str, Any] | None = None,
          bbox: tuple[float, float, float, float] | None = None,
          generation_id: int | None = None, crs: int = 4490,
          limit: int | None = None) -> gpd.GeoDataFrame:
    """A published layer as a GeoDataFrame indexed by ``id``.

    ``columns``: registry columns (default all); ``where``: equality on registry columns;
    ``bbox``: (lon0, lat0, lon1, lat1) in EPSG:4490 degrees, features intersecting it;
    ``generation_id``: for grid levels and other generational layers (default: current);
    ``crs``: EPSG code of the geometries returned (e.g. 4548, the demo town's
    Gauss-Krüger zone, for metres); ``limit``: at most this many features, by ``id``.
    """
    spec = _layer(layer)
    wanted = list(spec.columns if columns is None else columns)
    unknown = [c for c in [*wanted, *(where or {})] if c not in spec.columns]
    if unknown:
        raise InvalidInput(f"layer {layer} has no column {', '.join(map(repr, unknown))}; "
                           f"columns: {', '.join(spec.columns)}", parameter="columns")
    if not isinstance(crs, int) or isinstance(crs, bool) or crs <= 0:
        raise InvalidInput(f"crs is an EPSG code (an integer), not {crs!r}", parameter="crs")
    conds: list[sql.Composable] = []
    params: dict[str, Any] = {"crs": crs}
    for i, (col, value) in enumerate((where or {}).items()):
        conds.append(sql.SQL("t.{} = {}").format(sql.Identifier(col),
                                                 sql.Placeholder(f"w{i}")))
        params[f"w{i}"] = value
    if "generation_id" in spec.columns:
        if generation_id is None:
            conds.append(sql.SQL("t.generation_id = (SELECT id FROM grid_generations "
                                 "WHERE valid_to IS NULL)"))
        else:
            conds.append(sql.SQL("t.generation_id = %(gen)s"))
            params["gen"] = generation_id
    elif generation_id is not None:
        raise InvalidInput(f"layer {layer} has no generations", parameter="generation_id")
    if bbox is not None:
        box = [float(v) for v in bbox]
        if len(box) != 4 or not all(map(math.isfinite, box)) or box[0] > box[2] \
                or box[1] > box[3]:
            raise InvalidInput(f"bbox is (lon0, lat0, lon1, lat1), not {bbox!r}",
                               parameter="bbox")
        conds.append(sql.SQL("t.{g} && ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4490) "
                             "AND ST_Intersects(t.{g}, ST_MakeEnvelope(%(x0)s, %(y0)s, "
                             "%(x1)s, %(y1)s, 4490))").format(g=sql.Identifier(GEOMETRY)))
        params.update(x0=box[0], y0=box[1], x1=box[2], y1=box[3])
    tail: sql.Composable = sql.SQL("")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise InvalidInput(f"limit is a non-negative integer, not {limit!r}",
                               parameter="limit")
        tail = sql.SQL("LIMIT %(limit)s")
        params["limit"] = limit
    stmt = sql.SQL(
        "SELECT t.{key}, {cols}{sep}ST_Transform(t.{g}, %(crs)s::integer) AS {g} "
        "FROM {table} t {where} ORDER BY t.{key} {tail}"
    ).format(
        key=sql.Identifier(KEY),
        cols=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in wanted),
        sep=sql.SQL(", ") if wanted else sql.SQL(""),
        g=sql.Identifier(GEOMETRY),
        table=sql.Identifier(spec.table),
        where=sql.SQL("WHERE ") + sql.SQL(" AND ").join(conds) if conds else sql.SQL(""),
        tail=tail,
    )
    try:
        out = query(source, stmt, params, geometry=GEOMETRY)
    except psycopg.errors.InternalError as exc:  # PROJ cannot transform to that code
        raise InvalidInput(f"cannot give layer {layer} in EPSG:{crs}: {exc}",
                           parameter="crs") from exc
    if out.crs is None:  # no rows: the CRS asked for
        out = out.set_crs(epsg=crs, allow_override=True)
    return out.set_index(KEY)
