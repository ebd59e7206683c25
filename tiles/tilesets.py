"""What a client reads before asking for tiles: OGC tileset metadata and TileJSON.

The documents are built from a :class:`~tiles.mvt.Tileset`, the data's extent and the
URLs the caller hands in (``api/`` knows where it serves them); nothing here knows HTTP.
Property types come from the schema (``layers.models``), not from the database.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from layers.models import Base
from tiles.mvt import Tileset, VectorLayer
from tiles.tms import BBox, TileMatrixSet

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
MVT = "application/vnd.mapbox-vector-tile"
WORLD: BBox = (-180.0, -85.0511287798066, 180.0, 85.0511287798066)

_JSON_TYPES: dict[type, dict[str, str]] = {
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": "number"},
    str: {"type": "string"},
    dt.date: {"type": "string", "format": "date"},  # written as text in the tile
}


def properties_schema(v: VectorLayer) -> dict[str, Any]:
    """JSON Schema of a feature's properties: the registry's columns with their types.

    >>> from tiles.mvt import collection_tileset
    >>> properties_schema(collection_tileset("sensors").layers[0])["properties"]["installed_on"]
    {'type': 'string', 'format': 'date'}
    """
    table = Base.metadata.tables[v.layer.table]
    props = {c: dict(_JSON_TYPES.get(table.c[c].type.python_type, {"type": "string"}))
             for c in v.layer.columns}
    return {"type": "object", "properties": props}


def tilejson_fields(v: VectorLayer) -> dict[str, str]:
    """TileJSON ``fields``: name -> "String", "Number" or "Boolean"."""
    names = {"integer": "Number", "number": "Number", "boolean": "Boolean"}
    return {c: names.get(p["type"], "String")
            for c, p in properties_schema(v)["properties"].items()}


def center(tileset: Tileset, bounds: BBox) -> tuple[float, float, int]:
    """(lon, lat, zoom): the middle of ``bounds`` at the zoom that shows all of it."""
    w, s, e, n = bounds
    span = max(e - w, (n - s) * 1.5, 1e-9)  # degrees; latitude counts more near the poles
    zoom = max(tileset.minzoom, min(tileset.maxzoom, math.floor(math.log2(360.0 / span))))
    return ((w + e) / 2, (s + n) / 2, zoom)


def tilejson(tileset: Tileset, tiles_url: str, bounds: BBox | None) -> dict[str, Any]:
    """TileJSON 3.0.0 of ``tileset``; ``tiles_url`` is the XYZ template ({z}, {x}, {y})."""
    box = bounds or WORLD
    return {
        "tilejson": "3.0.0",
        "name": tileset.id,
        "description": tileset.description,
        "version": "1.0.0",
        "attribution": "gridgov",
        "scheme": "xyz",
        "tiles": [tiles_url],
        "minzoom": tileset.minzoom,
        "maxzoom": tileset.maxzoom,
        "bounds": list(box),
        "center": list(center(tileset, box)),
        "vector_layers": [
            {"id": v.name, "description": v.layer.title, "minzoom": v.minzoom,
             "maxzoom": v.maxzoom, "fields": tilejson_fields(v)}
            for v in tileset.layers
        ],
    }


def tileset_summary(tileset: Tileset, tms: TileMatrixSet, links: list[dict[str, Any]]
                    ) -> dict[str, Any]:
    """The entry of ``tileset`` in a list of tilesets."""
    return {"title": tileset.title, "dataType": "vector", "crs": tms.crs,
            "tileMatrixSetURI": tms.uri, "links": links}


def tileset_metadata(tileset: Tileset, tms: TileMatrixSet, links: list[dict[str, Any]],
                     bounds: BBox | None) -> dict[str, Any]:
    """OGC tileset metadata (OGC 17-083r4 ``tileSet``) of ``tileset`` in ``tms``."""
    doc = {
        **tileset_summary(tileset, tms, links),
        "description": tileset.description,
        "mediaTypes": [MVT],
        "layers": [
            {"id": v.name, "title": v.layer.title, "description": v.layer.description,
             "dataType": "vector", "geometryDimension": v.dimension,
             "minTileMatrix": str(v.minzoom), "maxTileMatrix": str(v.maxzoom),
             "propertiesSchema": properties_schema(v)}
            for v in tileset.layers
        ],
    }
    if bounds is not None:
        lon, lat, zoom = center(tileset, bounds)
        doc["boundingBox"] = {"lowerLeft": list(bounds[:2]), "upperRight": list(bounds[2:]),
                              "crs": CRS84}
        doc["centerPoint"] = {"coordinates": [lon, lat], "crs": CRS84, "tileMatrix": str(zoom)}
        doc["tileMatrixSetLimits"] = tms.limits(bounds, tileset.minzoom, tileset.maxzoom)
    return doc
