"""Coverage gaps and where one more high point or camera would see the most households.

Reads the stored coverage (``micro_grid_coverage``: its geometry is the part of each
micro-grid nobody sees) and places households on buildings: a micro-grid's
``households`` are shared among its residential buildings (``residential`` and
``rural_residential``) by floor area (footprint × floors).  A building is unseen when a
point on its footprint lies in its micro-grid's unseen part.

Candidate sites, ranked greedily by :func:`gis.siting.rank_sites` on the unseen
households within reach:

* ``high_point``: rooftops of the tallest buildings (a high point is mounted high);
  reach: the high points' radius (median of the existing ones, 3 km in the demo);
* ``camera``: points every ``spacing_m`` along the roads; reach: the street cameras'
  median range, all around (a dome camera).

Reach is the range ring, as ``high_point_ring_fraction`` is, or for high points with a
surface model what a viewshed from the rooftop sees; the stored coverage the
demand comes from is what the last ``gridgov coverage`` saw (over the surface model when
it had one).  Metric work happens in the grid's Gauss-Krüger zone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from psycopg import sql

from gis.crs import STORAGE_EPSG, reproject
from gis.siting import rank_sites, within_reach
from gis.viewshed import ObserverOutsideError, gdal_viewshed
from layers import frames
from layers.errors import InvalidInput, NotFound

Kind = Literal["high_point", "camera"]
KINDS = ("high_point", "camera")
RESIDENTIAL = ("residential", "rural_residential")
ROOFTOPS = 5000  # tallest buildings considered for a high point (at most one per grid)
MAX_SITES = 50
DEFAULT_MOUNT_M = 80.0  # a high point's height above ground when none exists yet
MIN_MAST_M = 10.0  # a high point on a roof stands at least this far above it

GEN = sql.SQL("(SELECT id FROM grid_generations WHERE valid_to IS NULL)")

GAPS = sql.SQL("""
SELECT m.code, m.name, m.community_code, m.kind, m.households, m.population,
       c.covered_fraction, c.high_point_ring_fraction, c.camera_fraction,
       coalesce(u.households, 0) AS unseen_households,
       coalesce(u.buildings, 0) AS unseen_buildings,
       m.geom
FROM micro_grids m
JOIN micro_grid_coverage c ON c.micro_grid_id = m.id
LEFT JOIN (
    SELECT micro_grid_code, sum(households) AS households, count(*) AS buildings
    FROM ({homes}) h WHERE NOT seen GROUP BY 1
) u ON u.micro_grid_code = m.code
WHERE m.generation_id = {gen}
ORDER BY unseen_households DESC, c.covered_fraction, m.code
""")

HOMES = sql.SQL("""
WITH b AS MATERIALIZED (
    SELECT id, code, use, ST_Area(geom) * greatest(floors, 1) AS floor_area,
           ST_PointOnSurface(geom) AS p
    FROM buildings WHERE use = ANY(%(uses)s)
)
SELECT DISTINCT ON (b.id) b.id AS building_id, b.code AS building_code, b.use,
       m.code AS micro_grid_code, b.floor_area, m.households AS grid_households,
       c.geom IS NULL OR NOT ST_Intersects(c.geom, b.p) AS seen,
       b.p AS geom
FROM b
JOIN micro_grid_parts p ON p.generation_id = {gen} AND ST_Intersects(p.geom, b.p)
JOIN micro_grids m ON m.id = p.micro_grid_id
JOIN micro_grid_coverage c ON c.micro_grid_id = m.id
ORDER BY b.id, m.code
""")

# households of a micro-grid shared among its residential buildings by floor area
HOMES_SHARED = sql.SQL("""
SELECT building_id, building_code, use, micro_grid_code,
       grid_households * floor_area / sum(floor_area) OVER (PARTITION BY micro_grid_code)
         AS households, seen, geom
FROM ({homes}) h0
""").format(homes=HOMES.format(gen=GEN))


def _has_coverage(source: frames.Source) -> None:
    n = frames.query(source, sql.SQL(
        "SELECT count(*) AS n FROM micro_grid_coverage c JOIN micro_grids m "
        "ON m.id = c.micro_grid_id WHERE m.generation_id = {}").format(GEN))
    if int(n["n"].iloc[0]) == 0:
        raise NotFound("no coverage is stored for the current grid generation: run "
                       "`gridgov coverage` first")


def homes(source: frames.Source) -> gpd.GeoDataFrame:
    """Residential buildings of the current generation (one point each, EPSG:4490) with
    their estimated ``households`` and whether a high point or camera sees them."""
    _has_coverage(source)
    return frames.query(source, sql.SQL("{} ORDER BY building_id").format(HOMES_SHARED),
                        {"uses": list(RESIDENTIAL)})


def gaps(source: frames.Source) -> gpd.GeoDataFrame:
    """Every micro-grid of the current generation with its coverage shares and its
    unseen households and buildings, most unseen households first."""
    _has_coverage(source)
    return frames.query(source, GAPS.format(homes=HOMES_SHARED, gen=GEN),
                        {"uses": list(RESIDENTIAL)})


def _zone(source: frames.Source) -> int:
    from gis.crs import gk3_epsg

    row = frames.query(source, sql.SQL(
        "SELECT ST_X(ST_Centroid(ST_Extent(geom)::geometry)) AS x FROM micro_grids "
        "WHERE generation_id = {}").format(GEN))
    if row.empty or pd.isna(row["x"].iloc[0]):
        raise NotFound("the current grid generation holds no micro-grids")
    return gk3_epsg(float(row["x"].iloc[0]))


def _candidates(source: frames.Source, kind: Kind, epsg: int,
                spacing_m: float) -> tuple[gpd.GeoDataFrame, float]:
    if kind == "high_point":
        # the tallest rooftop of each micro-grid (of the tallest buildings), so candidates
        # spread over the territory instead of crowding the town seat's towers
        sites = frames.query(source, sql.SQL("""
            SELECT DISTINCT ON (m.id) b.code AS site, b.name AS site_name, b.height_m,
                   ST_PointOnSurface(b.geom) AS geom
            FROM (SELECT * FROM buildings ORDER BY height_m DESC, code LIMIT %s) b
            JOIN micro_grids m ON m.generation_id = {}
                 AND ST_Intersects(m.geom, ST_PointOnSurface(b.geom))
            ORDER BY m.id, b.height_m DESC, b.code""").format(GEN), (ROOFTOPS,))
        reach = frames.query(source, "SELECT percentile_cont(0.5) WITHIN GROUP "
                             "(ORDER BY radius_m) AS r FROM high_points")["r"].iloc[0]
        default = 3000.0
    else:
        sites = frames.query(source, """
            SELECT r.id::text || ':' || n AS site, r.name AS site_name, r.road_class,
                   ST_Transform(ST_LineInterpolatePoint(g, least(n * %(s)s / L, 1.0)), 4490)
                     AS geom
            FROM (SELECT id, name, road_class, ST_Transform(geom, %(epsg)s::integer) AS g,
                         greatest(ST_Length(ST_Transform(geom, %(epsg)s::integer)), 1e-9) AS L
                  FROM roads) r,
                 generate_series(0, floor(r.L / %(s)s)::int) AS n
            ORDER BY r.id, n""", {"s": spacing_m, "epsg": epsg})
        reach = frames.query(source, "SELECT percentile_cont(0.5) WITHIN GROUP "
                             "(ORDER BY range_m) AS r FROM cameras "
                             "WHERE high_point_id IS NULL")["r"].iloc[0]
        default = 100.0
    r = float(reach) if reach is not None and not pd.isna(reach) else default
    return sites, r


def _mount_height(source: frames.Source) -> float:
    h = frames.query(source, "SELECT percentile_cont(0.5) WITHIN GROUP "
                     "(ORDER BY mount_height_m) AS h FROM high_points")["h"].iloc[0]
    return float(h) if h is not None and not pd.isna(h) else DEFAULT_MOUNT_M


def _seen_from_rooftops(dsm: Path, sites: gpd.GeoDataFrame, chosen: np.ndarray,
                        s_xy: np.ndarray, d_xy: np.ndarray, covers: list[np.ndarray],
                        reach: float, mount_m: float) -> list[np.ndarray]:
    """Of each chosen site's demand in reach, what its viewshed over ``dsm`` sees: the
    observer as high as the existing high points (at least :data:`MIN_MAST_M` above its
    roof, which the surface model already holds), a home seen when its roof is."""
    out = []
    for i in chosen:
        above_roof = max(mount_m - float(sites["height_m"].iloc[i]), MIN_MAST_M)
        try:
            vs = gdal_viewshed(dsm, float(s_xy[i, 0]), float(s_xy[i, 1]), above_roof, reach)
        except ObserverOutsideError:
            out.append(np.empty(0, dtype=np.intp))
            continue
        idx = covers[i]
        t = vs.transform  # north-up, square cells (checked by gdal_viewshed)
        c = np.floor((d_xy[idx, 0] - t.c) / t.a).astype(int)
        r = np.floor((d_xy[idx, 1] - t.f) / t.e).astype(int)
        inside = (r >= 0) & (r < vs.visible.shape[0]) & (c >= 0) & (c < vs.visible.shape[1])
        seen = np.zeros(len(idx), dtype=bool)
        seen[inside] = vs.visible[r[inside], c[inside]]
        out.append(idx[seen])
    return out


def candidate_sites(source: frames.Source, kind: Kind = "high_point", k: int = 10, *,
                    reach_m: float | None = None, spacing_m: float = 100.0,
                    demand: gpd.GeoDataFrame | None = None, dsm: Path | str | None = None,
                    pool: int = 20) -> gpd.GeoDataFrame:
    """The ``k`` best places for one more high point (``kind="high_point"``) or camera
    (``"camera"``), ranked: each adds the most unseen households not already reached by
    the sites ranked above it.  Columns: ``rank``, ``site`` (building code, or road
    id:step), ``site_name``, ``households_added``, ``households_cumulative``,
    ``share_of_unseen`` (cumulative, of all unseen households), ``micro_grid_code``
    (where it stands), ``grids_reached``, ``reach_m``; geometry: the site (EPSG:4490).
    ``demand``: :func:`homes` when already read (it takes a few seconds).

    With a surface model (``dsm``, in the grid's Gauss-Krüger zone) high-point sites are
    judged by what they would actually see: the ``pool`` best sites by range ring get
    a viewshed each (:func:`gis.viewshed.gdal_viewshed`, about half a second each) and are
    ranked on the homes they see; ``reached_by`` says which was used."""
    if kind not in KINDS:
        raise InvalidInput(f"kind is one of {', '.join(KINDS)}, not {kind!r}",
                           parameter="kind")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_SITES:
        raise InvalidInput(f"k is an integer from 1 to {MAX_SITES}, not {k!r}", parameter="k")
    if reach_m is not None and not (np.isfinite(reach_m) and 0 < reach_m <= 10_000):
        raise InvalidInput(f"reach_m is from 0 to 10,000 m, not {reach_m!r}",
                           parameter="reach_m")
    if not (np.isfinite(spacing_m) and 10 <= spacing_m <= 5_000):
        raise InvalidInput(f"spacing_m is from 10 to 5,000 m, not {spacing_m!r}",
                           parameter="spacing_m")
    epsg = _zone(source)
    demand = homes(source) if demand is None else demand
    demand = demand[~demand["seen"]].reset_index(drop=True)
    sites, default_reach = _candidates(source, kind, epsg, spacing_m)
    reach = float(reach_m) if reach_m is not None else default_reach
    columns = ["rank", "site", "site_name", "households_added", "households_cumulative",
               "share_of_unseen", "micro_grid_code", "grids_reached", "reach_m", "reached_by"]
    if demand.empty or sites.empty:
        return gpd.GeoDataFrame({c: [] for c in columns}, geometry=[], crs=STORAGE_EPSG)
    d_xy = shapely.get_coordinates(demand.geometry.to_crs(epsg=epsg).values)
    s_xy = shapely.get_coordinates(sites.geometry.to_crs(epsg=epsg).values)
    weights = demand["households"].to_numpy(dtype=float)
    covers = within_reach(d_xy, s_xy, reach)
    reached_by = "range ring"
    if dsm is not None and kind == "high_point":
        if not isinstance(pool, int) or isinstance(pool, bool) or not k <= pool <= 200:
            raise InvalidInput(f"pool is an integer from k to 200, not {pool!r}",
                               parameter="pool")
        gains = np.array([weights[c].sum() for c in covers])
        chosen = np.argsort(-gains, kind="stable")[:pool]
        seen = _seen_from_rooftops(Path(dsm), sites, chosen, s_xy, d_xy, covers, reach,
                                   _mount_height(source))
        covers = [np.empty(0, dtype=np.intp)] * len(covers)
        for i, c in zip(chosen, seen, strict=True):
            covers[int(i)] = c
        reached_by = f"viewshed over {Path(dsm).name}"
    picks = rank_sites(weights, covers, k)
    total = float(weights.sum())
    rows: list[dict[str, Any]] = []
    for p in picks:
        site = sites.iloc[p.site]
        point = sites.geometry.iloc[p.site]
        grids = demand["micro_grid_code"].iloc[list(p.covered)]
        rows.append({
            "rank": p.rank, "site": site["site"], "site_name": site["site_name"],
            "households_added": round(p.gain, 1),
            "households_cumulative": round(p.cumulative, 1),
            "share_of_unseen": round(p.cumulative / total, 4) if total else 0.0,
            "micro_grid_code": _grid_of(source, point),
            "grids_reached": int(grids.nunique()),
            "reach_m": reach,
            "reached_by": reached_by,
            "geometry": point,
        })
    out = gpd.GeoDataFrame(rows, geometry="geometry", crs=STORAGE_EPSG)
    return out[[*columns, "geometry"]]


def _grid_of(source: frames.Source, point: Any) -> str | None:
    found = frames.query(source, sql.SQL(
        "SELECT code FROM micro_grids WHERE generation_id = {} AND "
        "ST_Intersects(geom, ST_GeomFromText(%s, 4490)) ORDER BY code LIMIT 1").format(GEN),
        (shapely.to_wkt(point),))
    return None if found.empty else str(found["code"].iloc[0])


def reach_rings(sites: gpd.GeoDataFrame, epsg: int | None = None) -> gpd.GeoDataFrame:
    """The range ring of each ranked site (for a map), in EPSG:4490."""
    if sites.empty:
        return sites.copy()
    zone = epsg
    if zone is None:
        from gis.crs import gk3_epsg

        zone = gk3_epsg(float(sites.geometry.x.mean()))
    rings = [reproject(shapely.buffer(reproject(g, STORAGE_EPSG, zone), r, quad_segs=16), zone,
                       STORAGE_EPSG)
             for g, r in zip(sites.geometry, sites["reach_m"], strict=True)]
    return gpd.GeoDataFrame(sites.drop(columns="geometry"), geometry=rings, crs=STORAGE_EPSG)
