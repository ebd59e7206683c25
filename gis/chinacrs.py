"""GCJ-02 and BD-09: the two non-EPSG coordinate systems Chinese phones report.

GCJ-02 ("Mars coordinates") is what WeChat mini-programs (``gcj02``), Amap and Tencent
maps give; BD-09 is Baidu's, a further offset of GCJ-02.  Both are obfuscations of
WGS84 (numerically EPSG:4490 to the centimetre) that move a point by up to ~700 m,
which is several micro-grids: a report must be converted exactly before it is located.

The forward transforms are the published closed formulas.  The inverses have no closed
form: they are solved by fixed-point iteration to 1e-10° (about 0.01 mm), not the
one-step approximation (1-2 m off) that many libraries ship.

Outside mainland China the obfuscation is not applied (the points are returned as
given), as every implementation of the formula does.

All functions are vectorised: scalars or numpy arrays in, the same shape out.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from gis.errors import CRSError

Coord = float | npt.NDArray[np.float64]

_A = 6378245.0  # Krasovsky 1940 semi-major axis used by the formula
_EE = 0.00669342162296594323  # its first eccentricity squared
_X_PI = np.pi * 3000.0 / 180.0
_TOL = 1e-10
_MAX_ITER = 30


def outside_china(lon: Coord, lat: Coord) -> npt.NDArray[np.bool_]:
    """True where the point lies outside the rectangle the formula is applied in.

    >>> bool(outside_china(118.0, 36.8)), bool(outside_china(2.35, 48.85))
    (False, True)
    """
    lon_a, lat_a = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    return np.asarray((lon_a < 72.004) | (lon_a > 137.8347) | (lat_a < 0.8293) | (lat_a > 55.8271))


def _delta(lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64]) -> tuple[
    npt.NDArray[np.float64], npt.NDArray[np.float64]
]:
    x, y = lon - 105.0, lat - 35.0
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
    dlat += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    dlat += (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
    dlat += (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
    dlon += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    dlon += (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
    dlon += (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    rad = lat / 180.0 * np.pi
    magic = 1.0 - _EE * np.sin(rad) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * np.pi)
    dlon = (dlon * 180.0) / (_A / sqrt_magic * np.cos(rad) * np.pi)
    return dlon, dlat


def _check(lon: Coord, lat: Coord) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    lon_a, lat_a = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    if not (np.all(np.isfinite(lon_a)) and np.all(np.isfinite(lat_a))):
        raise CRSError("coordinates must be finite numbers")
    if np.any(np.abs(lat_a) > 90) or np.any(np.abs(lon_a) > 180):
        raise CRSError("longitude must be within ±180 and latitude within ±90")
    return lon_a, lat_a


def _out(a: npt.NDArray[np.float64], like: Coord) -> Coord:
    return float(a) if np.ndim(like) == 0 else a


def wgs84_to_gcj02(lon: Coord, lat: Coord) -> tuple[Coord, Coord]:
    """WGS84 / CGCS2000 → GCJ-02.

    >>> wgs84_to_gcj02(116.404, 39.915)
    (116.41024449916938, 39.91640428150164)
    """
    lon_a, lat_a = _check(lon, lat)
    dlon, dlat = _delta(lon_a, lat_a)
    out = outside_china(lon_a, lat_a)
    return (_out(np.where(out, lon_a, lon_a + dlon), lon),
            _out(np.where(out, lat_a, lat_a + dlat), lat))


def gcj02_to_wgs84(lon: Coord, lat: Coord) -> tuple[Coord, Coord]:
    """GCJ-02 → WGS84 / CGCS2000, exact to 1e-10° by fixed-point iteration."""
    g_lon, g_lat = _check(lon, lat)
    w_lon, w_lat = _invert(wgs84_to_gcj02, g_lon, g_lat, g_lon.copy(), g_lat.copy())
    return _out(w_lon, lon), _out(w_lat, lat)


def _invert(
    forward: Callable[[Coord, Coord], tuple[Coord, Coord]],
    t_lon: npt.NDArray[np.float64],
    t_lat: npt.NDArray[np.float64],
    lon: npt.NDArray[np.float64],
    lat: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Solve ``forward(lon, lat) == (t_lon, t_lat)`` by fixed-point iteration from a guess."""
    for _ in range(_MAX_ITER):
        f_lon, f_lat = forward(lon, lat)
        e_lon, e_lat = np.asarray(f_lon) - t_lon, np.asarray(f_lat) - t_lat
        lon, lat = lon - e_lon, lat - e_lat
        if np.max(np.abs(e_lon)) < _TOL and np.max(np.abs(e_lat)) < _TOL:
            break
    return lon, lat


def gcj02_to_bd09(lon: Coord, lat: Coord) -> tuple[Coord, Coord]:
    """GCJ-02 → BD-09.

    >>> gcj02_to_bd09(116.404, 39.915)
    (116.41036949371029, 39.92133699351021)
    """
    x, y = _check(lon, lat)
    z = np.sqrt(x * x + y * y) + 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) + 0.000003 * np.cos(x * _X_PI)
    return _out(z * np.cos(theta) + 0.0065, lon), _out(z * np.sin(theta) + 0.006, lat)


def bd09_to_gcj02(lon: Coord, lat: Coord) -> tuple[Coord, Coord]:
    """BD-09 → GCJ-02, exact to 1e-10° by fixed-point iteration."""
    b_lon, b_lat = _check(lon, lat)
    # the usual closed-form approximation as the starting point
    x, y = b_lon - 0.0065, b_lat - 0.006
    z = np.sqrt(x * x + y * y) - 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _X_PI)
    g_lon, g_lat = _invert(gcj02_to_bd09, b_lon, b_lat, z * np.cos(theta), z * np.sin(theta))
    return _out(g_lon, lon), _out(g_lat, lat)


def wgs84_to_bd09(lon: Coord, lat: Coord) -> tuple[Coord, Coord]:
    """WGS84 / CGCS2000 → BD-09."""
    return gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))


def bd09_to_wgs84(lon: Coord, lat: Coord) -> tuple[Coord, Coord]:
    """BD-09 → WGS84 / CGCS2000 (exact inverse of :func:`wgs84_to_bd09`)."""
    return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))
