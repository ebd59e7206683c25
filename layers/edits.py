"""Writes through the OGC API (Features Part 4): create, replace, update, delete.

Only the layers and columns the registry marks ``editable`` may be written, only
layers marked ``creatable`` take new features, new geometries and deletions.  Every
write is checked before it reaches the table (properties known and writable, values of
the column's type, geometry of the layer's type, valid, finite, inside China once
reprojected) and runs in one transaction: a refused write leaves nothing behind.
Geometries arrive in the request's CRS (``Content-Crs``), in that CRS's axis order, and
are stored in EPSG:4490.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from layers.errors import InvalidInput, NotFound
from layers.models import Base
from layers.registry import LAYERS, Layer

AConn = psycopg.AsyncConnection[Any]

CHINA = (73.0, 3.0, 136.0, 54.0)  # lon/lat box of CGCS2000's domain

_GEOMETRY_TYPES = {"Point": ("Point",), "MultiPolygon": ("Polygon", "MultiPolygon")}


class Forbidden(InvalidInput):
    """The collection does not take this kind of write (answered 405)."""


def writable_layer(name: str, create: bool = False) -> Layer:
    layer = LAYERS.get(name)
    if layer is None:
        raise NotFound(f"no collection {name!r}")
    if not layer.editable:
        raise Forbidden(f"collection {name!r} is read-only")
    if create and not layer.creatable:
        raise Forbidden(f"features of {name!r} cannot be created, replaced or deleted here; "
                        f"only {', '.join(layer.editable)} may be updated (PATCH)")
    return layer


def _check_value(layer: Layer, column: str, value: Any) -> Any:
    col = Base.metadata.tables[layer.table].columns[column]
    if value is None:
        if not col.nullable:
            raise InvalidInput(f"property {column!r} may not be null")
        return None
    kind = col.type.python_type
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            ok = False
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is str:
        ok = isinstance(value, str)
    else:  # dates and others travel as ISO text
        ok = isinstance(value, str)
    if not ok:
        raise InvalidInput(f"property {column!r}: {value!r} is not a {kind.__name__}")
    return value


def _properties(layer: Layer, props: Any, whole: bool) -> dict[str, Any]:
    if not isinstance(props, Mapping):
        raise InvalidInput("'properties' must be an object")
    unknown = sorted(set(props) - set(layer.columns))
    if unknown:
        raise InvalidInput(f"unknown propert{'y' if len(unknown) == 1 else 'ies'} "
                           f"{', '.join(map(repr, unknown))} for {layer.name!r}")
    readonly = sorted(set(props) - set(layer.editable))
    if readonly:
        raise InvalidInput(f"read-only propert{'y' if len(readonly) == 1 else 'ies'} "
                        f"{', '.join(map(repr, readonly))} of {layer.name!r}")
    out = {k: _check_value(layer, k, v) for k, v in props.items()}
    if whole:  # a whole feature: every writable column, nullable ones may be left out
        for column in layer.editable:
            if column not in out:
                if not Base.metadata.tables[layer.table].columns[column].nullable:
                    raise InvalidInput(f"property {column!r} is required")
                out[column] = None
    return out


def _geometry(layer: Layer, geom: Any) -> dict[str, Any]:
    if not isinstance(geom, Mapping) or "type" not in geom:
        raise InvalidInput("'geometry' must be a GeoJSON geometry object")
    allowed = _GEOMETRY_TYPES[layer.geometry]
    if geom["type"] not in allowed:
        raise InvalidInput(f"geometry of {layer.name!r} must be {' or '.join(allowed)}, "
                           f"not {geom['type']!r}")

    def finite(c: Any) -> bool:
        if isinstance(c, list):
            return bool(c) and all(finite(x) for x in c)
        return isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c)

    if not finite(geom.get("coordinates")):
        raise InvalidInput("geometry coordinates must be non-empty arrays of finite numbers")
    return dict(geom)


def _geom_sql(layer: Layer, swap: bool) -> sql.Composable:
    g = sql.SQL("ST_GeomFromGeoJSON(%(geom)s)")
    if swap:
        g = sql.SQL("ST_FlipCoordinates({})").format(g)
    g = sql.SQL("ST_Transform(ST_SetSRID({}, %(srid)s::int), 4490)").format(g)
    if layer.geometry.startswith("Multi"):
        g = sql.SQL("ST_Multi({})").format(g)
    return g


async def _checked_geometry(conn: AConn, layer: Layer, geom: dict[str, Any], srid: int,
                            swap: bool) -> None:
    """Refuse an invalid geometry, or one that lands outside China (an axis mix-up)."""
    import json

    q = sql.SQL(
        "SELECT ST_IsValid(g), ST_IsValidReason(g), ST_XMin(g), ST_YMin(g), ST_XMax(g), "
        "ST_YMax(g), ST_IsEmpty(g) FROM (SELECT {} AS g) s"
    ).format(_geom_sql(layer, swap))
    try:
        async with conn.transaction():
            cur = await conn.execute(q, {"geom": json.dumps(geom), "srid": srid})
            valid, reason, x0, y0, x1, y1, empty = await cur.fetchone()  # type: ignore[misc]
    except psycopg.errors.DataError as exc:
        raise InvalidInput(f"geometry: {exc.diag.message_primary}") from None
    except psycopg.errors.InternalError as exc:  # PostGIS parse and transform faults
        raise InvalidInput(f"geometry: {exc.diag.message_primary}") from None
    if empty:
        raise InvalidInput("geometry is empty")
    if not valid:
        raise InvalidInput(f"geometry is not valid: {reason}")
    lx, ly, hx, hy = CHINA
    if not (lx <= x0 and hx >= x1 and ly <= y0 and hy >= y1):
        raise InvalidInput(
            f"geometry lies at lon {x0:.4f}..{x1:.4f}, lat {y0:.4f}..{y1:.4f} once in "
            "EPSG:4490, outside China: check Content-Crs and its axis order (EPSG:4326 and "
            "EPSG:4490 are latitude first, EPSG:4548 northing first; CRS84 is lon/lat)")


def _feature(doc: Any) -> tuple[Any, Any]:
    if not isinstance(doc, Mapping) or doc.get("type") != "Feature":
        raise InvalidInput("the body must be a GeoJSON Feature")
    return doc.get("properties") or {}, doc.get("geometry")


async def _write(conn: AConn, query: sql.Composable, params: dict[str, Any]) -> Any:
    try:
        async with conn.transaction():
            cur = await conn.execute(query, params)
            return await cur.fetchone()
    except psycopg.errors.UniqueViolation as exc:
        raise InvalidInput(f"already taken: {exc.diag.message_detail or exc}") from None
    except psycopg.errors.IntegrityError as exc:  # check, foreign key, not null
        name = exc.diag.constraint_name or exc.diag.column_name or ""
        raise InvalidInput(f"refused by the database rule {name}: "
                           f"{exc.diag.message_primary}") from None
    except psycopg.errors.DataError as exc:
        raise InvalidInput(f"bad value: {exc.diag.message_primary}") from None


async def create(conn: AConn, name: str, doc: Any, srid: int, swap: bool) -> int:
    """Insert a feature; its new id."""
    import json

    layer = writable_layer(name, create=True)
    props, geom = _feature(doc)
    values = _properties(layer, props, whole=True)
    geometry = _geometry(layer, geom)
    await _checked_geometry(conn, layer, geometry, srid, swap)
    cols = list(values)
    query = sql.SQL("INSERT INTO {t} ({cols}, geom) VALUES ({vals}, {g}) RETURNING id").format(
        t=sql.Identifier(layer.table),
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols),
        vals=sql.SQL(", ").join(sql.Placeholder(f"p_{c}") for c in cols),
        g=_geom_sql(layer, swap))
    params = {f"p_{c}": values[c] for c in cols} | {"geom": json.dumps(geometry), "srid": srid}
    row = await _write(conn, query, params)
    return int(row[0])


async def replace(conn: AConn, name: str, fid: int, doc: Any, srid: int, swap: bool) -> None:
    """Replace a feature's writable properties (all of them) and geometry."""
    await _update(conn, writable_layer(name, create=True), fid, doc, srid, swap, whole=True)


async def update(conn: AConn, name: str, fid: int, doc: Any, srid: int, swap: bool) -> None:
    """Change the given properties (and the geometry, where the layer allows)."""
    await _update(conn, writable_layer(name), fid, doc, srid, swap, whole=False)


async def _update(conn: AConn, layer: Layer, fid: int, doc: Any, srid: int, swap: bool,
                  whole: bool) -> None:
    import json

    if not isinstance(doc, Mapping):
        raise InvalidInput("the body must be a GeoJSON Feature or an object of changes")
    props = doc.get("properties") or {}
    values = _properties(layer, props, whole=whole)
    sets = [sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(f"p_{c}"))
            for c in values]
    params: dict[str, Any] = {f"p_{c}": v for c, v in values.items()}
    geom = doc.get("geometry")
    if whole or geom is not None:
        if not layer.creatable:
            raise InvalidInput(f"the geometry of {layer.name!r} is read-only")
        geometry = _geometry(layer, geom)
        await _checked_geometry(conn, layer, geometry, srid, swap)
        sets.append(sql.SQL("geom = {}").format(_geom_sql(layer, swap)))
        params |= {"geom": json.dumps(geometry), "srid": srid}
    if not sets:
        raise InvalidInput("nothing to change: give 'properties' and/or 'geometry'")
    query = sql.SQL("UPDATE {t} SET {sets} WHERE id = %(fid)s RETURNING id").format(
        t=sql.Identifier(layer.table), sets=sql.SQL(", ").join(sets))
    if await _write(conn, query, params | {"fid": fid}) is None:
        raise NotFound(f"no feature {fid} in {layer.name!r}")


async def delete(conn: AConn, name: str, fid: int) -> None:
    layer = writable_layer(name, create=True)
    query = sql.SQL("DELETE FROM {t} WHERE id = %(fid)s RETURNING id").format(
        t=sql.Identifier(layer.table))
    if await _write(conn, query, {"fid": fid}) is None:
        raise NotFound(f"no feature {fid} in {layer.name!r}")
