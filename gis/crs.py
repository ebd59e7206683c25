"""Coordinate reference systems used by the project.

Storage is EPSG:4490 (CGCS2000 geographic, lon/lat in GeoJSON order; numerically WGS84
to the centimetre).  Metric work happens in the CGCS2000 3-degree Gauss-Krüger zone
that holds the data (EPSG:4534 for CM 75°E ... EPSG:4554 for CM 135°E), chosen from
the data's longitude, never hard-coded.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import pyproj
import shapely
from shapely.geometry.base import BaseGeometry

from gis.errors import CRSError, GisError

STORAGE_EPSG = 4490
_GK3_FIRST_EPSG = 4534  # CGCS2000 / 3-degree Gauss-Kruger CM 75E
_GK3_FIRST_CM = 75
_GK3_LAST_CM = 135

G = TypeVar("G", bound=BaseGeometry)


def gk3_epsg(lon: float) -> int:
    """EPSG code of the CGCS2000 3-degree Gauss-Krüger zone (no zone prefix) holding ``lon``.

    >>> gk3_epsg(118.0)
    4548
    >>> gk3_epsg(116.6)
    4548
    >>> gk3_epsg(121.4)
    4549
    """
    if not -180.0 <= lon <= 180.0 or lon != lon:
        raise CRSError(f"longitude {lon!r} is not a longitude")
    cm = round(lon / 3.0) * 3
    if not _GK3_FIRST_CM <= cm <= _GK3_LAST_CM:
        raise CRSError(
            f"longitude {lon} lies outside China's CGCS2000 Gauss-Krüger zones (CM 75°E-135°E)"
        )
    return _GK3_FIRST_EPSG + (cm - _GK3_FIRST_CM) // 3


@lru_cache(maxsize=64)
def transformer(src: int, dst: int) -> pyproj.Transformer:
    """A cached always-x/y (lon/lat) transformer between two EPSG codes."""
    return pyproj.Transformer.from_crs(src, dst, always_xy=True)


def reproject(geom: G, src: int, dst: int) -> G:
    """Reproject a shapely geometry (x/y order) from EPSG ``src`` to EPSG ``dst``."""
    if src == dst:
        return geom
    t = transformer(src, dst)
    fn: Callable[..., object] = t.transform
    out = shapely.transform(geom, lambda xy: _apply(fn, xy))
    return out  # type: ignore[no-any-return]


def _apply(fn: Callable[..., object], xy: object) -> object:
    import numpy as np

    arr = np.asarray(xy)
    x, y = fn(arr[:, 0], arr[:, 1])
    return np.column_stack([x, y])


# Coordinate systems a client may send a point in.  EPSG codes are read x/y (easting,
# northing or longitude, latitude) whatever the CRS's own axis order: the parameters
# are named, so there is nothing to guess.
INPUT_CRS = ("EPSG:4490", "EPSG:4326", "CRS84", "EPSG:3857", "EPSG:4548", "gcj02", "bd09")


def to_storage(x: float, y: float, crs: str) -> tuple[float, float]:
    """A point given in ``crs`` (one of :data:`INPUT_CRS`) as EPSG:4490 lon/lat.

    >>> to_storage(118.0, 36.8, "EPSG:4490")
    (118.0, 36.8)
    """
    from gis import chinacrs

    key = crs.strip()
    low = key.lower()
    if low in ("gcj02", "gcj-02"):
        lon, lat = chinacrs.gcj02_to_wgs84(x, y)
        return float(lon), float(lat)
    if low in ("bd09", "bd-09"):
        lon, lat = chinacrs.bd09_to_wgs84(x, y)
        return float(lon), float(lat)
    if not (x == x and y == y) or abs(x) == float("inf") or abs(y) == float("inf"):
        raise CRSError("coordinates must be finite numbers")
    norm = key.upper().replace("HTTP://WWW.OPENGIS.NET/DEF/CRS/EPSG/0/", "EPSG:")
    if norm in ("EPSG:4490", "EPSG:4326", "CRS84", "OGC:CRS84",
                "HTTP://WWW.OPENGIS.NET/DEF/CRS/OGC/1.3/CRS84"):
        lon, lat = x, y
    elif norm.startswith("EPSG:") and norm[5:].isdigit():
        code = int(norm[5:])
        if code != 3857 and not 4534 <= code <= 4554:
            raise CRSError(f"unsupported crs {crs!r}; use one of {', '.join(INPUT_CRS)}")
        lon, lat = transformer(code, STORAGE_EPSG).transform(x, y)
        # a projected point far outside the projection's domain comes back clamped or
        # wrapped: refuse it rather than answer for another place
        bx, by = transformer(STORAGE_EPSG, code).transform(lon, lat)
        if not (abs(bx - x) <= 1.0 and abs(by - y) <= 1.0):
            raise CRSError(f"point ({x}, {y}) lies outside the valid area of {crs}")
    else:
        raise CRSError(f"unsupported crs {crs!r}; use one of {', '.join(INPUT_CRS)}")
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise CRSError(f"point ({x}, {y}) in {crs} is not on the Earth (lon {lon}, lat {lat})")
    return float(lon), float(lat)


def to_storage_many(
    xs: npt.ArrayLike, ys: npt.ArrayLike, crs: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Many points given in ``crs`` as EPSG:4490 lon/lat arrays, in the same order.

    The vectorised twin of :func:`to_storage`, with the same checks; the first bad point
    is named by its position (0-based) in the error.

    >>> lon, lat = to_storage_many([118.0, 118.1], [36.8, 36.9], "EPSG:4326")
    >>> lon.tolist(), lat.tolist()
    ([118.0, 118.1], [36.8, 36.9])
    """
    from gis import chinacrs

    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise CRSError("x and y must be one-dimensional arrays of the same length")
    _first_bad(~(np.isfinite(x) & np.isfinite(y)), "coordinates must be finite numbers")
    low = crs.strip().lower()
    norm = crs.strip().upper().replace("HTTP://WWW.OPENGIS.NET/DEF/CRS/EPSG/0/", "EPSG:")
    if low in ("gcj02", "gcj-02", "bd09", "bd-09"):
        _first_bad(
            (np.abs(x) > 180) | (np.abs(y) > 90), f"coordinates are not {crs} longitude/latitude"
        )
        fn = chinacrs.gcj02_to_wgs84 if low.startswith("gcj") else chinacrs.bd09_to_wgs84
        lon, lat = fn(x, y)
        lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    elif norm in ("EPSG:4490", "EPSG:4326", "CRS84", "OGC:CRS84",
                  "HTTP://WWW.OPENGIS.NET/DEF/CRS/OGC/1.3/CRS84"):
        lon, lat = x, y
    elif norm.startswith("EPSG:") and norm[5:].isdigit() and (
        int(norm[5:]) == 3857 or 4534 <= int(norm[5:]) <= 4554
    ):
        code = int(norm[5:])
        lon, lat = transformer(code, STORAGE_EPSG).transform(x, y)
        bx, by = transformer(STORAGE_EPSG, code).transform(lon, lat)
        _first_bad(
            ~((np.abs(bx - x) <= 1.0) & (np.abs(by - y) <= 1.0)),
            f"point lies outside the valid area of {crs}",
        )
    else:
        raise CRSError(f"unsupported crs {crs!r}; use one of {', '.join(INPUT_CRS)}")
    _first_bad(
        ~((np.abs(lon) <= 180.0) & (np.abs(lat) <= 90.0)), f"point in {crs} is not on the Earth"
    )
    return lon, lat


def _first_bad(bad: npt.NDArray[np.bool_], message: str) -> None:
    if bad.any():
        i = int(np.argmax(bad))
        raise GisError(f"point {i}: {message}", index=i)


@lru_cache(maxsize=64)
def north_first(epsg: int) -> bool:
    """True when the EPSG definition orders coordinates northing/latitude first.

    OGC API Features Part 2 sends coordinates in the CRS's own axis order (CRS84 aside),
    so such coordinates must be swapped to and from our x/y.

    >>> north_first(4490), north_first(4548), north_first(3857)
    (True, True, False)
    """
    try:
        axes = pyproj.CRS.from_epsg(epsg).axis_info
    except pyproj.exceptions.CRSError as exc:
        raise CRSError(f"EPSG:{epsg} is not a known CRS") from exc
    return bool(axes) and axes[0].direction.lower() == "north"


CRS84_URI = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG_URI = "http://www.opengis.net/def/crs/EPSG/0/{}"
OGC_EPSG = (4490, 4326, 3857, 4548)
"""EPSG codes the OGC API offers besides CRS84 (Features Part 2)."""


def ogc_crs(uri: str) -> tuple[int, bool]:
    """(SRID, swap) for an OGC CRS URI, ``[EPSG:n]`` safe CURIE or ``EPSG:n``.

    ``swap`` is True when coordinates come in the CRS's north-first axis order and must
    be flipped to x/y.  CRS84 is EPSG:4326 in lon/lat order.

    >>> ogc_crs("http://www.opengis.net/def/crs/OGC/1.3/CRS84")
    (4326, False)
    >>> ogc_crs("<http://www.opengis.net/def/crs/EPSG/0/4548>")
    (4548, True)
    >>> ogc_crs("[EPSG:3857]")
    (3857, False)
    """
    key = uri.strip().strip("<>[]").strip()
    if key.upper() in ("CRS84", "OGC:CRS84") or key.rstrip("/") in (
        CRS84_URI, CRS84_URI.replace("http://", "https://")
    ):
        return 4326, False
    for prefix in ("http://www.opengis.net/def/crs/EPSG/0/",
                   "https://www.opengis.net/def/crs/EPSG/0/", "EPSG:", "epsg:"):
        if key.startswith(prefix) and key[len(prefix):].isdigit():
            code = int(key[len(prefix):])
            if code in OGC_EPSG:
                return code, north_first(code)
            break
    offered = ", ".join([CRS84_URI] + [EPSG_URI.format(c) for c in OGC_EPSG])
    raise CRSError(f"unsupported crs {uri!r}; this server offers {offered}")
