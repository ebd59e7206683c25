"""Workload per grid worker and a re-gridding proposal, checked and imported as a dry run.

A micro-grid's ``load`` weighs its households and its events in the period equally,
each against the median micro-grid of the scope: ``load = (households / median
households + events / median events) / 2``, so 1.0 is a typical grid (when the scope
has no events, households alone).  :func:`propose` asks :func:`gis.regrid.propose` to
split grids above ``high`` and merge idle siblings under ``low``; the split follows where
the load lies (households on residential buildings, events at their places).
:func:`check` runs the grid topology check (:mod:`gis.topology`, as ``gridgov grid
check``) on the whole new micro-grid level, and :func:`dry_run_import` writes it to a
GeoJSON file and runs :func:`layers.grids.import_generation` on it without committing,
on a read-only connection: nothing is written to the database.

Workers appear by name only; their phones are personal data and never read here.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from psycopg import sql

from gis.crs import STORAGE_EPSG, reproject
from gis.regrid import LoadedUnit, Proposal
from gis.regrid import propose as regrid
from gis.topology import Level, TopologyReport, Unit, check_topology
from layers import frames
from layers.errors import InvalidInput
from layers.eventstats import _period, _prefix
from layers.grids import (
    ImportResult,
    Levels,
    get_generation,
    import_generation,
    read_features,
    read_generation,
)
from layers.siting import HOMES_SHARED, RESIDENTIAL

GEN = sql.SQL("(SELECT id FROM grid_generations WHERE valid_to IS NULL)")

PER_GRID = sql.SQL("""
SELECT m.code, m.name, m.community_code, m.kind, m.households, m.population,
       w.id AS worker_id, w.employee_no, w.name AS worker,
       count(e.id) AS events, m.geom
FROM micro_grids m
LEFT JOIN worker_assignments wa ON wa.micro_grid_code = m.code AND wa.valid_to IS NULL
LEFT JOIN workers w ON w.id = wa.worker_id
LEFT JOIN events e ON e.micro_grid_code = m.code AND e.state <> 'merged'
     AND (%(start)s::timestamptz IS NULL OR e.reported_at >= %(start)s)
     AND (%(end)s::timestamptz IS NULL OR e.reported_at < %(end)s)
WHERE m.generation_id = {gen} AND m.code LIKE %(within)s
GROUP BY m.id, w.id
ORDER BY m.code
""")


def _months(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max((end - start).total_seconds() / (30.44 * 86400), 1e-9)


def per_grid(source: frames.Source, start: dt.datetime | None = None,
             end: dt.datetime | None = None, within: str | None = None) -> gpd.GeoDataFrame:
    """Every micro-grid (current generation; ``within`` a street or community code) with
    its worker, households, events in the period, events per month and ``load``."""
    params = {**_period(start, end), "within": _prefix(within)}
    out = frames.query(source, PER_GRID.format(gen=GEN), params)
    if out.empty:
        raise InvalidInput(f"no micro-grid under {within!r}", parameter="within")
    months = _months(start, end)
    out["events_per_month"] = (out["events"] / months).round(2) if months else np.nan
    med_hh = float(out["households"].median())
    med_ev = float(out["events"].median())
    parts = [out["households"] / med_hh if med_hh > 0 else pd.Series(0.0, index=out.index)]
    if med_ev > 0:
        parts.append(out["events"] / med_ev)
    out["load"] = (sum(parts) / len(parts)).round(3)
    return out


def per_worker(grids: pd.DataFrame) -> pd.DataFrame:
    """:func:`per_grid` summed per worker: grids, households, events, load; busiest
    first (a micro-grid without a worker counts under ``worker`` None)."""
    g = grids.assign(worker=grids["worker"].fillna("(no worker)"))
    out = g.groupby(["worker_id", "employee_no", "worker"], dropna=False).agg(
        grids=("code", "count"), codes=("code", lambda c: ", ".join(sorted(c))),
        households=("households", "sum"), population=("population", "sum"),
        events=("events", "sum"), load=("load", "sum"))
    return out.reset_index().sort_values(["load", "events"], ascending=False,
                                         ignore_index=True)


def _zone(grids: gpd.GeoDataFrame) -> int:
    from gis.crs import gk3_epsg

    x0, _y0, x1, _y1 = grids.total_bounds
    return gk3_epsg(float(x0 + x1) / 2)


def _load_points(source: frames.Source, grids: gpd.GeoDataFrame, start: dt.datetime | None,
                 end: dt.datetime | None, epsg: int
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Where each grid's load lies: households on residential buildings, events at
    their places, each weighted as they count in ``load``."""
    homes = frames.query(source, HOMES_SHARED, {"uses": list(RESIDENTIAL)}).rename(
        columns={"micro_grid_code": "code"}) if _has_coverage_rows(source) else None
    ev = frames.query(source, """
        SELECT e.micro_grid_code AS code, e.geom FROM events e WHERE e.state <> 'merged'
          AND (%(start)s::timestamptz IS NULL OR e.reported_at >= %(start)s)
          AND (%(end)s::timestamptz IS NULL OR e.reported_at < %(end)s)""",
                      _period(start, end))
    med_hh = float(grids["households"].median()) or 1.0
    med_ev = float(grids["events"].median())
    pts: dict[str, list[np.ndarray]] = {}
    wts: dict[str, list[np.ndarray]] = {}
    n_parts = 2 if med_ev > 0 else 1
    if homes is not None and not homes.empty:
        xy = shapely.get_coordinates(homes.geometry.to_crs(epsg=epsg).values)
        w = homes["households"].to_numpy(float) / med_hh / n_parts
        for code, idx in homes.groupby("code").indices.items():
            pts.setdefault(code, []).append(xy[idx])
            wts.setdefault(code, []).append(w[idx])
    if med_ev > 0 and not ev.empty:
        xy = shapely.get_coordinates(ev.geometry.to_crs(epsg=epsg).values)
        for code, idx in ev.groupby("code").indices.items():
            pts.setdefault(code, []).append(xy[idx])
            wts.setdefault(code, []).append(np.full(len(idx), 1.0 / med_ev / n_parts))
    return ({c: np.vstack(v) for c, v in pts.items()},
            {c: np.concatenate(v) for c, v in wts.items()})


def _has_coverage_rows(source: frames.Source) -> bool:
    n = frames.query(source, "SELECT count(*) AS n FROM micro_grid_coverage")
    return int(n["n"].iloc[0]) > 0


def propose(source: frames.Source, grids: gpd.GeoDataFrame, high: float = 1.8,
            low: float = 0.5, merged_max: float = 1.0, start: dt.datetime | None = None,
            end: dt.datetime | None = None) -> tuple[Proposal, int]:
    """The re-gridding proposal for ``grids`` (from :func:`per_grid` over the same
    period) and the EPSG code of its metric geometries (the Gauss-Krüger zone)."""
    epsg = _zone(grids)
    metric = grids.geometry.to_crs(epsg=epsg)
    pts, wts = _load_points(source, grids, start, end, epsg)
    units = [
        LoadedUnit(r.code, r.name, g, float(r.load), int(r.households), int(r.population),
                   r.kind, pts.get(r.code, np.empty((0, 2))), wts.get(r.code, np.empty(0)))
        for r, g in zip(grids.itertuples(), metric.values, strict=True)
    ]
    return regrid(units, high=high, low=low, merged_max=merged_max), epsg


def proposal_frame(proposal: Proposal, epsg: int) -> gpd.GeoDataFrame:
    """The proposal's micro-grids in EPSG:4490 with ``change`` (split, merge or empty)."""
    changed = {c: ch.action for ch in proposal.changes for c in ch.after}
    rows = [{"code": u.code, "name": u.name, "community_code": u.community,
             "households": u.households, "population": u.population, "kind": u.kind,
             "load": round(u.load, 3), "change": changed.get(u.code, "")}
            for u in proposal.units]
    return gpd.GeoDataFrame(rows, geometry=[u.geom for u in proposal.units],
                            crs=f"EPSG:{epsg}").to_crs(epsg=STORAGE_EPSG)


def changes_frame(proposal: Proposal) -> pd.DataFrame:
    """One row per change: action, codes before and after, loads before and after."""
    return pd.DataFrame([{
        "action": c.action, "before": ", ".join(c.before), "after": ", ".join(c.after),
        "load_before": " + ".join(f"{x:.2f}" for x in c.load_before),
        "load_after": " / ".join(f"{x:.2f}" for x in c.load_after),
    } for c in proposal.changes], columns=["action", "before", "after", "load_before",
                                           "load_after"])


def _new_level(url: str, proposal: Proposal, epsg: int) -> tuple[Levels, list[Unit]]:
    with frames.connect(url) as conn:
        levels = read_generation(conn, None, epsg)
    mine = {u.code for u in proposal.units}
    gone = {c for ch in proposal.changes for c in ch.before}
    kept = [u for u in levels.micro_grids if u.code not in mine and u.code not in gone]
    new = kept + [Unit(u.code, u.geom, u.community) for u in proposal.units]
    return levels, sorted(new, key=lambda u: u.code)


def check(url: str, proposal: Proposal, epsg: int) -> TopologyReport:
    """The topology report of the current streets and communities with the proposal's
    micro-grids in place of the ones it covers (``gridgov grid check``'s rules)."""
    levels, micro = _new_level(url, proposal, epsg)
    return check_topology(levels.streets, levels.communities, micro, epsg=epsg)


def dry_run_import(url: str, proposal: Proposal, epsg: int, path: Path | str,
                   valid_from: dt.date, name: str) -> ImportResult:
    """Write the whole new micro-grid level (EPSG:4490 GeoJSON, ``code``, ``name``,
    ``households``, ``population``, ``kind``) to ``path`` and import it as a new grid
    generation without committing, on a read-only connection."""
    path = Path(path)
    with frames.connect(url) as conn:
        current = read_features(conn, get_generation(conn, None).id, epsg)
    by_code = {u.code: u for u in proposal.units}
    gone = {c for ch in proposal.changes for c in ch.before}
    rows, geoms = [], []
    for f in current[Level.MICRO_GRID]:
        if f.code in by_code or f.code in gone:
            continue
        rows.append({"code": f.code, "name": f.name, "households": f.households,
                     "population": f.population, "kind": f.kind})
        geoms.append(reproject(f.geom, epsg, STORAGE_EPSG))
    for u in proposal.units:
        rows.append({"code": u.code, "name": u.name, "households": u.households,
                     "population": u.population, "kind": u.kind})
        geoms.append(reproject(u.geom, epsg, STORAGE_EPSG))
    frame = gpd.GeoDataFrame(rows, geometry=geoms, crs=f"EPSG:{STORAGE_EPSG}")
    path.unlink(missing_ok=True)
    frame.sort_values("code").to_file(path, driver="GeoJSON")
    with frames.connect(url) as conn:
        return import_generation(conn, path, valid_from, name, commit=False)
