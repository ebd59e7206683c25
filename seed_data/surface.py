"""The demo town's surface model: a DSM GeoTIFF of terrain plus building heights.

The ground is a smooth function of position (:func:`ground_m`): gentle hills between
about 31 and 79 m above sea level, drawn from the town's seed, the same everywhere the
town is (any scale).  The DSM (:func:`write_dsm`) is that ground sampled at cell
centres in the town's Gauss-Krüger zone, plus ``height_m`` of the building whose
footprint holds the cell centre (the tallest, where footprints overlap), so it agrees
with the buildings layer.  It is written tile by tile: memory does not grow with the
extent, and the same town and resolution give the same file, byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.features import rasterize
from rasterio.transform import from_origin
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from gis.crs import STORAGE_EPSG, transformer
from seed_data.town import Progress, Town

TILE = 512
MARGIN_M = 200.0  # around the streets' extent
GROUND_MEAN_M = 55.0
_TERRAIN_STREAM = 1_000_003  # keeps the terrain's random numbers apart from the town's


@dataclass(frozen=True)
class SurfaceInfo:
    """Where a DSM was written and the grid it covers (``bounds`` in EPSG ``epsg``)."""

    path: Path
    epsg: int
    resolution: float
    bounds: tuple[float, float, float, float]
    width: int
    height: int


@dataclass(frozen=True)
class _Terrain:
    # ridges: amp * sin(k . p + phase); hills: amp * sin(k1 . p + ph1) * sin(k2 . p + ph2)
    ridges: tuple[tuple[float, float, float, float], ...]
    hills: tuple[tuple[float, float, float, float, float, float, float], ...]


@lru_cache(maxsize=16)
def _terrain(seed: int) -> _Terrain:
    rng = np.random.default_rng([seed, _TERRAIN_STREAM])
    ridges = []
    for amp in (5.0, 4.0, 3.0):  # long swells, 6-12 km
        wavelength = rng.uniform(6000.0, 12000.0)
        direction = rng.uniform(0.0, math.pi)
        k = 2 * math.pi / wavelength
        ridges.append(
            (amp, k * math.cos(direction), k * math.sin(direction), rng.uniform(0, 2 * math.pi))
        )
    hills = []
    for amp in (6.0, 4.0, 2.0):  # hill fields, 1.5-4 km
        wavelength = rng.uniform(1500.0, 4000.0)
        direction = rng.uniform(0.0, math.pi)
        k = 2 * math.pi / wavelength
        across = direction + math.pi / 2 + rng.uniform(-0.3, 0.3)
        hills.append(
            (
                amp,
                k * math.cos(direction),
                k * math.sin(direction),
                rng.uniform(0, 2 * math.pi),
                k * math.cos(across),
                k * math.sin(across),
                rng.uniform(0, 2 * math.pi),
            )
        )
    return _Terrain(tuple(ridges), tuple(hills))


def ground_m(x: np.ndarray | float, y: np.ndarray | float, seed: int) -> np.ndarray:
    """Ground height (m a.s.l.) at metric ``x``, ``y`` (arrays broadcast) for ``seed``.

    Smooth and gentle (slopes of a few per cent), within 31-79 m.

    >>> z = ground_m(np.array([590000.0, 591000.0]), np.array([4074000.0, 4074000.0]), 2023)
    >>> z.shape, bool(np.all((z > 30) & (z < 80)))
    ((2,), True)
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    t = _terrain(seed)
    z = np.full(np.broadcast_shapes(xa.shape, ya.shape), GROUND_MEAN_M)
    for amp, kx, ky, ph in t.ridges:
        z += amp * np.sin(kx * xa + ky * ya + ph)
    for amp, kx1, ky1, ph1, kx2, ky2, ph2 in t.hills:
        z += amp * np.sin(kx1 * xa + ky1 * ya + ph1) * np.sin(kx2 * xa + ky2 * ya + ph2)
    return z


def _ground_grid(xs: np.ndarray, ys: np.ndarray, seed: int) -> np.ndarray:
    """:func:`ground_m` on the grid ``ys`` x ``xs`` (rows, columns), in separable form.

    ``sin(a + b) = sin a cos b + cos a sin b`` turns every term into a sum of outer
    products of a function of x and a function of y: no sine per cell, and the same
    heights as :func:`ground_m` to ~1e-12 m.
    """
    t = _terrain(seed)
    z = np.full((ys.size, xs.size), GROUND_MEAN_M)
    for amp, kx, ky, ph in t.ridges:
        a, b = kx * xs, ky * ys + ph
        z += np.multiply.outer(amp * np.cos(b), np.sin(a))
        z += np.multiply.outer(amp * np.sin(b), np.cos(a))
    for amp, kx1, ky1, ph1, kx2, ky2, ph2 in t.hills:
        sa1, ca1, sa2, ca2 = (f(k * xs) for k in (kx1, kx2) for f in (np.sin, np.cos))
        b1, b2 = ky1 * ys + ph1, ky2 * ys + ph2
        sb1, cb1, sb2, cb2 = np.sin(b1), np.cos(b1), np.sin(b2), np.cos(b2)
        z += np.multiply.outer(amp * cb1 * cb2, sa1 * sa2)
        z += np.multiply.outer(amp * cb1 * sb2, sa1 * ca2)
        z += np.multiply.outer(amp * sb1 * cb2, ca1 * sa2)
        z += np.multiply.outer(amp * sb1 * sb2, ca1 * ca2)
    return z


def dsm_grid(
    town: Town, resolution: float = 2.0
) -> tuple[tuple[float, float, float, float], int, int]:
    """Bounds (metric, snapped to the resolution), width and height of the town's DSM."""
    if not resolution > 0:
        raise ValueError("resolution must be positive")
    to_metric = transformer(STORAGE_EPSG, town.metric_epsg)
    boxes = []
    for row in town.tables["streets"]:
        minx, miny, maxx, maxy = row["geom"].bounds
        xs, ys = to_metric.transform([minx, minx, maxx, maxx], [miny, maxy, miny, maxy])
        boxes.append((min(xs), min(ys), max(xs), max(ys)))
    if not boxes:
        raise ValueError("the town has no streets to take an extent from")
    arr = np.asarray(boxes)
    minx = math.floor((arr[:, 0].min() - MARGIN_M) / resolution) * resolution
    miny = math.floor((arr[:, 1].min() - MARGIN_M) / resolution) * resolution
    maxx = math.ceil((arr[:, 2].max() + MARGIN_M) / resolution) * resolution
    maxy = math.ceil((arr[:, 3].max() + MARGIN_M) / resolution) * resolution
    width = round((maxx - minx) / resolution)
    height = round((maxy - miny) / resolution)
    return (minx, miny, minx + width * resolution, miny + height * resolution), width, height


def _buildings(town: Town) -> tuple[np.ndarray, np.ndarray]:
    """Metric footprints and heights, lowest first (so the tallest is drawn last)."""
    rows = town.tables.get("buildings", [])
    geoms = np.array([r["geom"] for r in rows], dtype=object)
    heights = np.array([r["height_m"] for r in rows], dtype=np.float64)
    to_metric = transformer(STORAGE_EPSG, town.metric_epsg)

    def project(xy: np.ndarray) -> np.ndarray:
        return np.column_stack(to_metric.transform(xy[:, 0], xy[:, 1]))

    metric = shapely.transform(geoms, project) if len(geoms) else geoms
    order = np.argsort(heights, kind="stable")
    return metric[order], heights[order]


def write_dsm(
    town: Town, path: Path, resolution: float = 2.0, progress: Progress | None = None
) -> SurfaceInfo:
    """Write the town's DSM (float32 metres, EPSG ``town.metric_epsg``) to ``path``.

    Tiled 512x512, DEFLATE with the floating-point predictor, no nodata.  Each tile is
    the ground at its cell centres plus the height of the tallest building footprint
    holding each centre.  ``progress("dsm rows", n)`` reports rows as they are written.
    """
    bounds, width, height = dsm_grid(town, resolution)
    transform = from_origin(bounds[0], bounds[3], resolution, resolution)
    footprints, heights = _buildings(town)
    tree = shapely.STRtree(footprints)
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "float32",
        "crs": f"EPSG:{town.metric_epsg}",
        "transform": transform,
        "nodata": None,
        "tiled": True,
        "blockxsize": TILE,
        "blockysize": TILE,
        "compress": "deflate",
        "predictor": 3,
        "interleave": "band",
    }
    path = Path(path)
    # whole tiles in order: GDAL writes each out as it is filled, so memory stays flat
    # (no GDAL_CACHEMAX here: setting it makes rasterize five times slower)
    with rasterio.open(path, "w", **profile) as dst:
        for row0 in range(0, height, TILE):
            rows = min(TILE, height - row0)
            for col0 in range(0, width, TILE):
                window = Window(col0, row0, min(TILE, width - col0), rows)
                dst.write(
                    _tile(window, transform, town.seed, tree, footprints, heights),
                    1,
                    window=window,
                )
            if progress is not None:
                progress("dsm rows", rows)
    return SurfaceInfo(
        path=path,
        epsg=town.metric_epsg,
        resolution=float(resolution),
        bounds=bounds,
        width=width,
        height=height,
    )


def _tile(
    window: Window,
    transform: rasterio.Affine,
    seed: int,
    tree: shapely.STRtree,
    footprints: np.ndarray,
    heights: np.ndarray,
) -> np.ndarray:
    wt = window_transform(window, transform)
    h, w = int(window.height), int(window.width)
    xs = wt.c + (np.arange(w) + 0.5) * wt.a
    ys = wt.f + (np.arange(h) + 0.5) * wt.e
    z = _ground_grid(xs, ys, seed)
    extent = shapely.box(wt.c, wt.f + h * wt.e, wt.c + w * wt.a, wt.f)
    hits = np.sort(tree.query(extent, predicate="intersects"))  # lowest first
    if hits.size:
        z += rasterize(
            zip(footprints[hits], heights[hits], strict=True),
            out_shape=(h, w),
            transform=wt,
            fill=0.0,
            dtype="float64",
        )
    return z.astype(np.float32)
