"""The WebMercatorQuad tile matrix set: tile addresses, their bounds, its JSON document.

One tile matrix set is served: WebMercatorQuad (OGC 17-083r4, Annex D.1; the XYZ scheme
of web maps and QGIS), in EPSG:3857.  Its definition has 25 tile matrices (0-24); we
serve tiles at zoom 0 to :data:`MAX_ZOOM` = 22.  At zoom 22 a tile is 9.55 m wide at the
equator (7.6 m in the demo town), i.e. 2.3 mm per unit of a 4,096-unit vector tile: finer
than any stored coordinate, and as deep as MapLibre and QGIS ask by default.  Beyond it
clients over-zoom.

>>> TileId(14, 13563, 6388).bounds[0]  # the tile over the demo town's centre
13137384.925429814
>>> WEB_MERCATOR_QUAD.tile_range((118.0, 36.78, 118.03, 36.82), 14)
TileRange(z=14, min_col=13562, min_row=6387, max_col=13563, max_row=6389)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from tiles.errors import InvalidTile, UnknownTileMatrixSet

MAX_ZOOM = 22
"""The deepest zoom served (see the module's docstring)."""

EARTH_RADIUS = 6378137.0  # metres: the sphere of EPSG:3857
HALF_WORLD = math.pi * EARTH_RADIUS  # 20037508.342789244: the half width of the square
MAX_LATITUDE = math.degrees(math.atan(math.sinh(math.pi)))  # 85.0511287798066
TILE_SIZE = 256  # pixels per side, as the tile matrix set defines it
PIXEL_SIZE = 0.00028  # metres: OGC's standardised rendering pixel (scale denominators)

BBox = tuple[float, float, float, float]  # (xmin, ymin, xmax, ymax)


@dataclass(frozen=True, slots=True)
class TileId:
    """One tile of WebMercatorQuad: zoom ``z``, column ``x`` (from the west), row ``y``
    (from the north), as XYZ and OGC API Tiles (tileMatrix, tileCol, tileRow) number them.

    >>> TileId(0, 0, 0)
    TileId(z=0, x=0, y=0)
    >>> TileId(1, 2, 0)
    Traceback (most recent call last):
    ...
    tiles.errors.InvalidTile: tile column 2 is outside 0..1 at zoom 1
    """

    z: int
    x: int
    y: int

    def __post_init__(self) -> None:
        for name, value in (("zoom", self.z), ("column", self.x), ("row", self.y)):
            if type(value) is not int:  # bool is an int; so is nothing else
                raise InvalidTile(f"tile {name} must be an integer, not {value!r}")
        if not 0 <= self.z <= MAX_ZOOM:
            raise InvalidTile(f"zoom {self.z} is outside 0..{MAX_ZOOM}")
        last = (1 << self.z) - 1
        for name, value in (("column", self.x), ("row", self.y)):
            if not 0 <= value <= last:
                raise InvalidTile(f"tile {name} {value} is outside 0..{last} at zoom {self.z}")

    @property
    def bounds(self) -> BBox:
        """(xmin, ymin, xmax, ymax) in EPSG:3857 metres, as ``ST_TileEnvelope`` gives."""
        size = 2 * HALF_WORLD / (1 << self.z)  # computed as PostGIS does, to the last bit
        return (-HALF_WORLD + size * self.x, HALF_WORLD - size * (self.y + 1),
                -HALF_WORLD + size * (self.x + 1), HALF_WORLD - size * self.y)

    def __str__(self) -> str:
        return f"{self.z}/{self.x}/{self.y}"


@dataclass(frozen=True, slots=True)
class TileRange:
    """The tiles of zoom ``z`` from (min_col, min_row) to (max_col, max_row), inclusive."""

    z: int
    min_col: int
    min_row: int
    max_col: int
    max_row: int

    def limits(self) -> dict[str, Any]:
        """This range as an OGC ``tileMatrixSetLimits`` entry."""
        return {"tileMatrix": str(self.z), "minTileRow": self.min_row,
                "maxTileRow": self.max_row, "minTileCol": self.min_col,
                "maxTileCol": self.max_col}


@dataclass(frozen=True, slots=True)
class TileMatrixSet:
    """A quad-tree tile matrix set over a square CRS (only WebMercatorQuad is defined)."""

    id: str
    title: str
    uri: str
    crs: str
    well_known_scale_set: str
    ordered_axes: tuple[str, str]
    matrices: int  # the definition's tile matrices: 0 .. matrices - 1
    max_zoom: int  # the deepest served

    def cell_size(self, z: int) -> float:
        """Metres per pixel at zoom ``z``."""
        return 2 * HALF_WORLD / TILE_SIZE / (1 << z)

    def tile_matrix(self, z: int) -> dict[str, Any]:
        cell = self.cell_size(z)
        return {
            "id": str(z),
            "scaleDenominator": cell / PIXEL_SIZE,
            "cellSize": cell,
            "cornerOfOrigin": "topLeft",
            "pointOfOrigin": [-HALF_WORLD, HALF_WORLD],
            "tileWidth": TILE_SIZE,
            "tileHeight": TILE_SIZE,
            "matrixWidth": 1 << z,
            "matrixHeight": 1 << z,
        }

    def document(self) -> dict[str, Any]:
        """The tile matrix set as OGC Two Dimensional Tile Matrix Set 2.0 JSON."""
        return {
            "id": self.id,
            "title": self.title,
            "uri": self.uri,
            "crs": self.crs,
            "orderedAxes": list(self.ordered_axes),
            "wellKnownScaleSet": self.well_known_scale_set,
            "tileMatrices": [self.tile_matrix(z) for z in range(self.matrices)],
        }

    def tile_range(self, lonlat: BBox, z: int) -> TileRange:
        """The tiles of zoom ``z`` that a longitude/latitude box touches."""
        w, s, e, n = lonlat
        c0, r1 = self._col_row(w, s, z)
        c1, r0 = self._col_row(e, n, z)
        return TileRange(z, c0, r0, c1, r1)

    def limits(self, lonlat: BBox, minzoom: int, maxzoom: int) -> list[dict[str, Any]]:
        """``tileMatrixSetLimits`` for the data in ``lonlat`` from ``minzoom`` to ``maxzoom``."""
        return [self.tile_range(lonlat, z).limits() for z in range(minzoom, maxzoom + 1)]

    @staticmethod
    def _col_row(lon: float, lat: float, z: int) -> tuple[int, int]:
        n = 1 << z
        lat = max(-MAX_LATITUDE, min(MAX_LATITUDE, lat))
        fx = (lon + 180.0) / 360.0
        fy = (1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0
        return (min(n - 1, max(0, math.floor(fx * n))), min(n - 1, max(0, math.floor(fy * n))))


WEB_MERCATOR_QUAD = TileMatrixSet(
    id="WebMercatorQuad",
    title="Google Maps Compatible for the World",
    uri="http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad",
    crs="http://www.opengis.net/def/crs/EPSG/0/3857",
    well_known_scale_set="http://www.opengis.net/def/wkss/OGC/1.0/GoogleMapsCompatible",
    ordered_axes=("X", "Y"),
    matrices=25,
    max_zoom=MAX_ZOOM,
)

TILE_MATRIX_SETS: MappingProxyType[str, TileMatrixSet] = MappingProxyType(
    {WEB_MERCATOR_QUAD.id: WEB_MERCATOR_QUAD}
)


def tile_matrix_set(tms_id: str) -> TileMatrixSet:
    """The tile matrix set called ``tms_id``; :class:`UnknownTileMatrixSet` if none."""
    try:
        return TILE_MATRIX_SETS[tms_id]
    except KeyError:
        raise UnknownTileMatrixSet(
            f"tile matrix set {tms_id!r} is not served here; "
            f"known: {', '.join(TILE_MATRIX_SETS)}") from None
