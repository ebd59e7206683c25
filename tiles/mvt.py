"""Vector tiles made by PostGIS: one parameterised statement per tile.

For each layer of a tileset::

    SELECT ST_AsMVT(q, <layer>, 4096, 'geom', 'id') FROM (
      SELECT t.id, t.<column>, ...,
             ST_AsMVTGeom(ST_Transform(t.geom, 3857), ST_TileEnvelope(z, x, y), 4096, 64, true)
      FROM <table> t
      WHERE t.geom && ST_Transform(ST_TileEnvelope(z, x, y, margin => 64 / 4096.0), 4490)
        [AND t.generation_id = <the current generation>]) q

and a tileset of several layers concatenates them with ``||`` (an MVT is a sequence of
layers).  SRIDs are integer literals: ``ST_Transform`` with a text CRS resolves it per row
(pygeoapi's MVT provider: 6 s per z14 tile against 4 ms).  The prefilter is the tile with
its buffer, taken to storage CRS once, so the GiST index on ``geom`` answers it.

Table and column names come from the layer registry (``psycopg.sql.Identifier``);
z, x and y are bound parameters.  Properties are the registry's columns, the feature id
is the table's ``id``; a NULL property is left out of its feature (MVT has no null).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Any

import psycopg
from psycopg import sql

from layers.models import SRID
from layers.registry import LAYERS, Layer
from tiles.errors import UnknownTileset
from tiles.tms import MAX_ZOOM, TileId

AConn = psycopg.AsyncConnection[Any]

EXTENT = 4096  # tile units per side
BUFFER = 64  # units drawn beyond each edge, so that lines and outlines do not break at seams
MARGIN = BUFFER / EXTENT  # the same buffer as a fraction of the tile (ST_TileEnvelope margin)
WEB_MERCATOR = 3857

MIN_ZOOM: MappingProxyType[str, int] = MappingProxyType({
    # Below these zooms a tile would carry more than a map can show, and cost the most:
    # over the demo town's centre a z12 tile of buildings is 855 kB (4,000 footprints,
    # 200 ms), at z13 250 kB (33 ms); cameras 270 kB at z12, 146 kB at z13; parcels
    # 94 kB and sensors 14 kB at z12.  The grid levels and roads are small at any zoom.
    "buildings": 13,
    "cameras": 13,
    "parcels": 12,
    "sensors": 12,
})
"""Zoom from which a layer is in its tiles (0 when not listed); below it, not at all."""

GEOMETRY_DIMENSION: MappingProxyType[str, int] = MappingProxyType({
    "Point": 0, "MultiPoint": 0, "LineString": 1, "MultiLineString": 1,
    "Polygon": 2, "MultiPolygon": 2,
})

CURRENT_GENERATION = sql.SQL(
    "t.generation_id = (SELECT id FROM grid_generations WHERE valid_to IS NULL)")


@dataclass(frozen=True, slots=True)
class VectorLayer:
    """A registry layer as a layer of vector tiles."""

    layer: Layer
    minzoom: int = 0
    maxzoom: int = MAX_ZOOM

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def dimension(self) -> int:
        """0 points, 1 lines, 2 areas."""
        return GEOMETRY_DIMENSION[self.layer.geometry]

    @property
    def current_only(self) -> bool:
        """Only the current grid generation is drawn (grid levels and what derives)."""
        return "generation_id" in self.layer.columns


@dataclass(frozen=True, slots=True)
class Tileset:
    """Layers drawn together in one tile, in the order given (areas first)."""

    id: str
    title: str
    description: str
    layers: tuple[VectorLayer, ...]

    @property
    def minzoom(self) -> int:
        return min(v.minzoom for v in self.layers)

    @property
    def maxzoom(self) -> int:
        return max(v.maxzoom for v in self.layers)

    def at(self, z: int) -> tuple[VectorLayer, ...]:
        """The layers drawn at zoom ``z``."""
        return tuple(v for v in self.layers if v.minzoom <= z <= v.maxzoom)


def vector_layer(layer: Layer) -> VectorLayer:
    return VectorLayer(layer, minzoom=MIN_ZOOM.get(layer.name, 0))


@cache
def collection_tileset(name: str) -> Tileset:
    """The tileset of one published collection; :class:`UnknownTileset` if none."""
    layer = LAYERS.get(name)
    if layer is None:
        raise UnknownTileset(f"no collection {name!r}; known: {', '.join(LAYERS)}",
                             collection=name)
    return Tileset(layer.name, layer.title, layer.description, (vector_layer(layer),))


DRAW_ORDER = ("streets", "communities", "micro_grids", "parcels", "buildings")
"""Areas drawn first to last in the tileset of every layer: the larger under the smaller."""


@cache
def all_layers_tileset() -> Tileset:
    """Every published collection in one tile: areas, then lines, then points, so that a
    client drawing in layer order shows them all (areas by :data:`DRAW_ORDER`, then
    registry order)."""
    def rank(v: VectorLayer) -> tuple[int, int]:
        order = DRAW_ORDER.index(v.name) if v.name in DRAW_ORDER else len(DRAW_ORDER)
        return (-v.dimension, order)

    layers = sorted((vector_layer(layer) for layer in LAYERS.values()), key=rank)
    return Tileset("gridgov", "gridgov: every layer",
                   "The grid and every published layer of the territory, one layer each.",
                   tuple(layers))


def layer_statement(v: VectorLayer) -> sql.Composed:
    """The ``SELECT`` making the MVT layer of ``v`` for the tile %(z)s/%(x)s/%(y)s."""
    columns = sql.SQL("").join(
        sql.SQL(", {}").format(sql.Identifier("t", c)) for c in v.layer.columns)
    where = sql.SQL("t.geom && ST_Transform(ST_TileEnvelope(%(z)s, %(x)s, %(y)s, "
                    "margin => {margin}), {srid})").format(
        margin=sql.Literal(MARGIN), srid=sql.Literal(SRID))
    if v.current_only:
        where = sql.SQL("{} AND {}").format(where, CURRENT_GENERATION)
    return sql.SQL(
        "SELECT ST_AsMVT(q, {name}, {extent}, 'geom', 'id') FROM ("
        "SELECT t.id{columns}, ST_AsMVTGeom(ST_Transform(t.geom, {merc}), "
        "ST_TileEnvelope(%(z)s, %(x)s, %(y)s), {extent}, {buffer}, true) AS geom "
        "FROM {table} t WHERE {where}) q"
    ).format(name=sql.Literal(v.name), extent=sql.Literal(EXTENT), columns=columns,
             merc=sql.Literal(WEB_MERCATOR), buffer=sql.Literal(BUFFER),
             table=sql.Identifier(v.layer.table), where=where)


def tile_statement(layers: tuple[VectorLayer, ...]) -> sql.Composed:
    """One statement for a tile of ``layers``: their MVT layers concatenated."""
    parts = [sql.SQL("COALESCE(({}), '')").format(layer_statement(v)) for v in layers]
    return sql.SQL("SELECT {}").format(sql.SQL(" || ").join(parts))


@cache
def tile_query(layers: tuple[VectorLayer, ...]) -> bytes:
    """:func:`tile_statement` rendered once.  Rendering a ``Composed`` quotes every
    identifier again on each execution: 0.14 ms for one layer, 1.3 ms for all nine (a
    light tile takes PostGIS 1 to 2 ms)."""
    return tile_statement(layers).as_bytes(None)


def tile_params(tile: TileId) -> dict[str, int]:
    return {"z": tile.z, "x": tile.x, "y": tile.y}


async def tile(conn: AConn, tileset: Tileset, tile_id: TileId) -> bytes:
    """The MVT tile ``tile_id`` of ``tileset``; ``b""`` when nothing is in it."""
    layers = tileset.at(tile_id.z)
    if not layers:
        return b""
    # binary: the tile comes as bytes, not hex text that PostgreSQL writes and psycopg
    # parses back (a third of the client's CPU for a 140 kB tile)
    cur = await conn.execute(tile_query(layers), tile_params(tile_id), binary=True)
    row = await cur.fetchone()
    return bytes(row[0]) if row and row[0] is not None else b""


def _extent_statement(layers: Iterable[VectorLayer]) -> sql.Composed:
    parts = []
    for v in layers:
        where = sql.SQL(" WHERE {}").format(CURRENT_GENERATION) if v.current_only else sql.SQL("")
        parts.append(sql.SQL("SELECT ST_Extent(t.geom) AS e FROM {} t{}").format(
            sql.Identifier(v.layer.table), where))
    return sql.SQL(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
        "(SELECT ST_Extent(e) AS e FROM ({}) u) s").format(sql.SQL(" UNION ALL ").join(parts))


async def extent(conn: AConn, tileset: Tileset) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) of the tileset's features in storage degrees (EPSG:4490,
    CRS84 to the centimetre); None when it has none."""
    cur = await conn.execute(_extent_statement(tileset.layers))
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return None
    return (float(row[0]), float(row[1]), float(row[2]), float(row[3]))
