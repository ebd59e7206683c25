"""What the high points and cameras see of each micro-grid, and what nobody sees.

For every micro-grid of a grid generation:

* ``high_point_ring_fraction``: the share of its area within the radius of some high
  point (the plain range ring), computed by PostGIS in the data's Gauss-Krüger zone;
* ``high_point_visible_fraction``: the share a high point actually sees over the
  surface model (terrain plus buildings), by GDAL's viewshed; None without a DSM;
* ``camera_fraction``: the share inside some street camera's sector (heading, field of
  view, range), cut by line of sight over the DSM when there is one;
* ``covered_fraction`` and the uncovered part as geometry: what neither sees (without a
  DSM: outside every ring and sector).

Shares are counted on the DSM's cells (cell centres inside the micro-grid); without a DSM
on a 2 m grid of the same zone.  A target is seen when a person standing there
(:data:`TARGET_HEIGHT_M` above the surface) is in sight.  Metric work never happens in
degrees.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import rasterio
import shapely
from affine import Affine
from rasterio import features
from rasterio.windows import Window

from gis.crs import gk3_epsg
from gis.viewshed import ObserverOutsideError, gdal_viewshed, line_of_sight, sector_mask
from layers.errors import InvalidInput, NotFound

Progress = Callable[[int, int, str], None]
Conn = psycopg.Connection[Any]

TARGET_HEIGHT_M = 1.5
FLAT_RESOLUTION_M = 2.0  # grid for counting shares when there is no DSM
MIN_BLIND_SPOT_CELLS = 16  # blind spots smaller than this many cells are not drawn
_BLOCK = 2048  # cells per side of the DSM block read at a time for street cameras


@dataclass(frozen=True)
class Observer:
    code: str
    x: float
    y: float
    height_m: float
    range_m: float
    heading_deg: float = 0.0
    fov_deg: float = 360.0


@dataclass(frozen=True)
class GridCoverage:
    micro_grid_id: int
    code: str
    high_point_ring_fraction: float
    high_point_visible_fraction: float | None
    camera_fraction: float
    covered_fraction: float
    uncovered: shapely.MultiPolygon | None  # EPSG ``epsg`` of the run


@dataclass(frozen=True)
class Coverage:
    generation_id: int
    epsg: int
    surface_model: str | None
    grids: tuple[GridCoverage, ...]


# -- reading ----------------------------------------------------------------------------


def _generation(conn: Conn, generation_id: int | None) -> int:
    if generation_id is not None:
        row = conn.execute("SELECT id FROM grid_generations WHERE id = %s",
                           (generation_id,)).fetchone()
    else:
        row = conn.execute("SELECT id FROM grid_generations WHERE valid_to IS NULL").fetchone()
    if row is None:
        raise NotFound(f"no grid generation {generation_id if generation_id else '(current)'}")
    return int(row[0])


def _zone(conn: Conn, generation_id: int) -> int:
    row = conn.execute(
        "SELECT ST_X(ST_Centroid(ST_Extent(geom)::geometry)) FROM micro_grids "
        "WHERE generation_id = %s", (generation_id,)).fetchone()
    if row is None or row[0] is None:
        raise NotFound(f"grid generation {generation_id} holds no micro-grids")
    return gk3_epsg(float(row[0]))


def _grids(conn: Conn, generation_id: int, epsg: int) -> list[tuple[int, str, Any]]:
    rows = conn.execute(
        "SELECT id, code, ST_AsBinary(ST_Transform(geom, %s)) FROM micro_grids "
        "WHERE generation_id = %s ORDER BY code", (epsg, generation_id)).fetchall()
    geoms = shapely.from_wkb([bytes(r[2]) for r in rows])
    return [(int(r[0]), str(r[1]), g) for r, g in zip(rows, geoms, strict=True)]


def _ring_fractions(conn: Conn, generation_id: int, epsg: int) -> dict[int, float]:
    """Share of each micro-grid within some high point's radius, by PostGIS."""
    rows = conn.execute(
        """
        WITH rings AS (
            SELECT ST_Union(ST_Buffer(ST_Transform(geom, %(epsg)s), radius_m, 64)) AS g
            FROM high_points
        ), grids AS (
            SELECT id, ST_Transform(geom, %(epsg)s) AS g FROM micro_grids
            WHERE generation_id = %(gen)s
        )
        SELECT grids.id,
               COALESCE(ST_Area(ST_Intersection(grids.g, rings.g)), 0) / ST_Area(grids.g)
        FROM grids CROSS JOIN rings
        """, {"epsg": epsg, "gen": generation_id}).fetchall()
    return {int(r[0]): min(max(float(r[1]), 0.0), 1.0) for r in rows}


def _observers(conn: Conn, epsg: int) -> tuple[list[Observer], list[Observer]]:
    hps = [
        Observer(code, x, y, h, r)
        for code, x, y, h, r in conn.execute(
            "SELECT code, ST_X(p), ST_Y(p), mount_height_m, radius_m FROM ("
            " SELECT code, ST_Transform(geom, %s) AS p, mount_height_m, radius_m"
            " FROM high_points) t ORDER BY code", (epsg,)).fetchall()
    ]
    cams = [
        Observer(code, x, y, h, r, heading, fov)
        for code, x, y, h, r, heading, fov in conn.execute(
            "SELECT code, ST_X(p), ST_Y(p), mount_height_m, range_m, heading_deg, fov_deg FROM ("
            " SELECT code, ST_Transform(geom, %s) AS p, mount_height_m, range_m, heading_deg,"
            " fov_deg FROM cameras WHERE high_point_id IS NULL) t ORDER BY code",
            (epsg,)).fetchall()
    ]
    return hps, cams


# -- the raster of what is seen ----------------------------------------------------------


@dataclass
class _Seen:
    """Boolean rasters on one grid: seen by a high point, seen by a street camera."""

    transform: Affine
    shape: tuple[int, int]
    high_point: np.ndarray
    camera: np.ndarray

    @classmethod
    def empty(cls, transform: Affine, shape: tuple[int, int]) -> _Seen:
        return cls(transform, shape, np.zeros(shape, bool), np.zeros(shape, bool))

    def paste(self, target: np.ndarray, mask: np.ndarray, transform: Affine) -> None:
        """OR ``mask`` (on a window of the same grid, at ``transform``) into ``target``."""
        res = self.transform.a
        col = round((transform.c - self.transform.c) / res)
        row = round((self.transform.f - transform.f) / res)
        h, w = mask.shape
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + h, self.shape[0]), min(col + w, self.shape[1])
        if r1 <= r0 or c1 <= c0:
            return
        target[r0:r1, c0:c1] |= mask[r0 - row:r1 - row, c0 - col:c1 - col]


def _flat_grid(grids: list[tuple[int, str, Any]]) -> tuple[Affine, tuple[int, int]]:
    x0, y0, x1, y1 = shapely.total_bounds([g for _, _, g in grids])
    res = FLAT_RESOLUTION_M
    x0, y1 = math.floor(x0 / res) * res, math.ceil(y1 / res) * res
    w, h = math.ceil((x1 - x0) / res) + 1, math.ceil((y1 - y0) / res) + 1
    return Affine(res, 0, x0, 0, -res, y1), (h, w)


def _window(transform: Affine, shape: tuple[int, int], x: float, y: float,
            reach_m: float) -> tuple[Window, Affine]:
    res = transform.a
    col, row = ~transform @ (x, y)
    n = math.ceil(reach_m / res) + 1
    c0, r0 = max(math.floor(col) - n, 0), max(math.floor(row) - n, 0)
    c1, r1 = min(math.floor(col) + n + 1, shape[1]), min(math.floor(row) + n + 1, shape[0])
    win = Window(c0, r0, max(c1 - c0, 0), max(r1 - r0, 0))
    return win, rasterio.windows.transform(win, transform)


def _without_dsm(seen: _Seen, hps: list[Observer], cams: list[Observer],
                 tick: Callable[[str], None]) -> None:
    for obs, target in [(o, seen.high_point) for o in hps] + [(o, seen.camera) for o in cams]:
        win, t = _window(seen.transform, seen.shape, obs.x, obs.y, obs.range_m)
        if win.width and win.height:
            mask = sector_mask((win.height, win.width), t, obs.x, obs.y, obs.heading_deg,
                               obs.fov_deg, obs.range_m)
            seen.paste(target, mask, t)
        tick(obs.code)


def _with_dsm(seen: _Seen, dsm: Path, hps: list[Observer], cams: list[Observer],
              tick: Callable[[str], None]) -> None:
    for hp in hps:
        try:
            vs = gdal_viewshed(dsm, hp.x, hp.y, hp.height_m, hp.range_m, TARGET_HEIGHT_M)
        except ObserverOutsideError:  # off the surface model: it sees nothing we can count
            tick(hp.code)
            continue
        seen.paste(seen.high_point, vs.visible, vs.transform)
        tick(hp.code)
    # street cameras block by block: each block read once with a halo of the longest range
    res = seen.transform.a
    halo = math.ceil(max((c.range_m for c in cams), default=0.0) / res) + 2
    blocks: dict[tuple[int, int], list[Observer]] = {}
    outside: list[Observer] = []
    for cam in cams:
        col, row = ~seen.transform @ (cam.x, cam.y)
        if not (0 <= row < seen.shape[0] and 0 <= col < seen.shape[1]):
            outside.append(cam)
            continue
        blocks.setdefault((int(row) // _BLOCK, int(col) // _BLOCK), []).append(cam)
    for cam in outside:  # off the surface model: nothing to stand on, nothing seen
        tick(cam.code)
    with rasterio.open(dsm) as ds:
        for (br, bc), members in sorted(blocks.items()):
            r0, c0 = max(br * _BLOCK - halo, 0), max(bc * _BLOCK - halo, 0)
            r1 = min((br + 1) * _BLOCK + halo, seen.shape[0])
            c1 = min((bc + 1) * _BLOCK + halo, seen.shape[1])
            win = Window(c0, r0, c1 - c0, r1 - r0)
            block = ds.read(1, window=win).astype(np.float32)
            bt = rasterio.windows.transform(win, ds.transform)
            for cam in members:
                cwin, ct = _window(bt, block.shape, cam.x, cam.y, cam.range_m)
                dem = block[cwin.row_off:cwin.row_off + cwin.height,
                            cwin.col_off:cwin.col_off + cwin.width]
                within = sector_mask(dem.shape, ct, cam.x, cam.y, cam.heading_deg,
                                     cam.fov_deg, cam.range_m)
                mask = line_of_sight(dem, ct, cam.x, cam.y, cam.height_m, cam.range_m,
                                     TARGET_HEIGHT_M, within=within)
                seen.paste(seen.camera, mask, ct)
                tick(cam.code)


def _surface(dsm: Path, epsg: int) -> tuple[Affine, tuple[int, int]]:
    try:
        with rasterio.open(dsm) as ds:
            ds_epsg = ds.crs.to_epsg() if ds.crs else None
            if ds_epsg != epsg:
                raise InvalidInput(
                    f"the surface model {dsm} is in {ds.crs}; coverage works in EPSG:{epsg}, "
                    "the grid's Gauss-Krüger zone: reproject it (gdalwarp -t_srs "
                    f"EPSG:{epsg})")
            if abs(ds.transform.a + ds.transform.e) > 1e-9 or ds.transform.b or ds.transform.d:
                raise InvalidInput(f"the surface model {dsm} must be north-up with square cells")
            return ds.transform, (ds.height, ds.width)
    except rasterio.errors.RasterioIOError as exc:
        raise InvalidInput(f"cannot read the surface model {dsm}: {exc}") from exc


# -- shares per micro-grid ----------------------------------------------------------------


def _per_grid(
    seen: _Seen, grids: list[tuple[int, str, Any]], rings: dict[int, float], has_dsm: bool,
    tick: Callable[[str], None],
) -> Iterator[GridCoverage]:
    for gid, code, geom in grids:
        x0, y0, x1, y1 = geom.bounds
        win = rasterio.windows.from_bounds(x0, y0, x1, y1, seen.transform)
        win = win.round_offsets(op="floor").round_lengths(op="ceil")
        win = win.intersection(Window(0, 0, seen.shape[1], seen.shape[0]))
        t = rasterio.windows.transform(win, seen.transform)
        shape = (int(win.height), int(win.width))
        inside = features.geometry_mask([geom], shape, t, invert=True, all_touched=False)
        cells = int(inside.sum())
        sl = (slice(int(win.row_off), int(win.row_off) + shape[0]),
              slice(int(win.col_off), int(win.col_off) + shape[1]))
        hp = seen.high_point[sl] & inside
        cam = seen.camera[sl] & inside
        blind = inside & ~(hp | cam)
        n = max(cells, 1)
        yield GridCoverage(
            micro_grid_id=gid,
            code=code,
            high_point_ring_fraction=rings.get(gid, 0.0),
            high_point_visible_fraction=float(hp.sum()) / n if has_dsm else None,
            camera_fraction=float(cam.sum()) / n,
            covered_fraction=float((hp | cam).sum()) / n if cells else 0.0,
            uncovered=_blind_spots(blind, t, geom),
        )
        tick(code)


def _blind_spots(blind: np.ndarray, transform: Affine, grid: Any) -> shapely.MultiPolygon | None:
    if not blind.any():
        return None
    sieved = features.sieve(blind.astype(np.uint8), MIN_BLIND_SPOT_CELLS, connectivity=4)
    shapes = [shapely.geometry.shape(g)
              for g, v in features.shapes(sieved, mask=sieved.astype(bool), transform=transform,
                                          connectivity=4) if v]
    if not shapes:
        return None
    res = transform.a
    # cells to polygons, trimmed to the grid's own edge and smoothed to half a cell
    merged = shapely.intersection(shapely.union_all(shapes).simplify(res / 2), grid)
    polys = [g for g in shapely.get_parts(shapely.make_valid(merged))
             if g.geom_type == "Polygon" and g.area > 0]
    return shapely.MultiPolygon(polys) if polys else None


# -- the whole run ------------------------------------------------------------------------


def compute(
    conn: Conn,
    dsm: Path | None,
    *,
    generation_id: int | None = None,
    progress: Progress | None = None,
) -> Coverage:
    """Coverage of every micro-grid of the generation (default: the current one)."""
    gen = _generation(conn, generation_id)
    epsg = _zone(conn, gen)
    grids = _grids(conn, gen, epsg)
    rings = _ring_fractions(conn, gen, epsg)
    hps, cams = _observers(conn, epsg)
    total = len(hps) + len(cams) + len(grids)
    done = 0

    def tick(what: str) -> None:
        nonlocal done
        done += 1
        if progress is not None and (done % 50 == 0 or done == total or done <= len(hps)):
            progress(done, total, what)

    if progress is not None:
        progress(0, total, "starting")
    if dsm is not None:
        transform, shape = _surface(dsm, epsg)
        seen = _Seen.empty(transform, shape)
        _with_dsm(seen, dsm, hps, cams, tick)
    else:
        transform, shape = _flat_grid(grids)
        seen = _Seen.empty(transform, shape)
        _without_dsm(seen, hps, cams, tick)
    result = tuple(_per_grid(seen, grids, rings, dsm is not None, tick))
    return Coverage(gen, epsg, str(dsm) if dsm is not None else None, result)


def store(conn: Conn, coverage: Coverage) -> int:
    """Replace the stored coverage of the generation with ``coverage`` (caller commits)."""
    conn.execute("DELETE FROM micro_grid_coverage WHERE generation_id = %s",
                 (coverage.generation_id,))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO micro_grid_coverage (micro_grid_id, generation_id, code, "
            "high_point_ring_fraction, high_point_visible_fraction, camera_fraction, "
            "covered_fraction, surface_model, geom) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
            "ST_Multi(ST_Transform(ST_GeomFromWKB(%s, %s), 4490)))",
            [
                (g.micro_grid_id, coverage.generation_id, g.code, g.high_point_ring_fraction,
                 g.high_point_visible_fraction, g.camera_fraction, g.covered_fraction,
                 coverage.surface_model,
                 None if g.uncovered is None else shapely.to_wkb(g.uncovered), coverage.epsg)
                for g in coverage.grids
            ],
        )
    return len(coverage.grids)
