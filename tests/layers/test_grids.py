"""layers.grids and ``gridgov grid`` against a real PostGIS holding the demo town.

Defects are planted with SQL in private copies (``fresh_db_url``); import files are
made the way a surveying office would: exported with ``ogr2ogr`` to a GeoPackage in
another CRS (EPSG:4548, metres), edited with shapely, written back with ``ogr2ogr``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import shapely
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from shapely import box
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry
from typer.testing import CliRunner

from api.cli import app
from gis.crs import STORAGE_EPSG, reproject
from gis.topology import Kind, Level, Problem
from layers import db
from layers.errors import ImportRefused, InvalidInput, NotFound
from layers.grids import (
    check_generation,
    generation_epsg,
    import_generation,
    read_generation,
    read_grid_file,
)

FILE_EPSG = 4548  # CGCS2000 / 3-degree GK CM 117E: metres, unlike the stored EPSG:4490
GRID_TABLES = ("grid_generations", "streets", "communities", "micro_grids", "micro_grid_parts")
NEW_FROM = dt.date(2024, 1, 1)
runner = CliRunner()


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
def conn(fresh_db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(fresh_db_url, autocommit=True) as c:
        yield c


def row_counts(url: str) -> dict[str, int]:
    out = {}
    with db.connect(url) as c:
        for t in GRID_TABLES:
            row = c.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))
                            ).fetchone()
            assert row is not None
            out[t] = int(row[0])
    return out


def gen1_digest(url: str) -> str:
    """A digest of every generation-1 row (codes, names, counts, exact geometry)."""
    with db.connect(url) as c:
        row = c.execute(
            "SELECT md5(string_agg(t, '|' ORDER BY t)) FROM ("
            " SELECT concat_ws(',', code, name, population, households, md5(ST_AsEWKB(geom)))"
            "   AS t FROM micro_grids WHERE generation_id = 1"
            " UNION ALL SELECT concat_ws(',', code, name, md5(ST_AsEWKB(geom)))"
            "   FROM communities WHERE generation_id = 1"
            " UNION ALL SELECT concat_ws(',', code, name, md5(ST_AsEWKB(geom)))"
            "   FROM streets WHERE generation_id = 1) s"
        ).fetchone()
        assert row is not None
        return str(row[0])


def units(url: str) -> tuple[int, dict[str, BaseGeometry], dict[str, BaseGeometry]]:
    """(metric EPSG, community code -> geometry, micro-grid code -> geometry) of gen 1."""
    with db.connect(url) as c:
        epsg = generation_epsg(c, 1)
        levels = read_generation(c, 1, epsg)
    return (epsg, {u.code: u.geom for u in levels.communities},
            {u.code: u.geom for u in levels.micro_grids})


def plant(url: str, statement: str, params: dict[str, object]) -> None:
    with db.connect(url) as c:
        cur = c.execute(statement, params)
        assert cur.rowcount == 1
        c.commit()


BOW_TIE = (
    "UPDATE micro_grids SET geom = ST_SetSRID(ST_Multi(ST_MakePolygon(ST_MakeLine(ARRAY["
    " ST_MakePoint(ST_XMin(geom), ST_YMin(geom)), ST_MakePoint(ST_XMax(geom), ST_YMax(geom)),"
    " ST_MakePoint(ST_XMax(geom), ST_YMin(geom)), ST_MakePoint(ST_XMin(geom), ST_YMax(geom)),"
    " ST_MakePoint(ST_XMin(geom), ST_YMin(geom))]))), 4490)"
    " WHERE code = %(code)s AND generation_id = 1"
)


def plant_bow_tie(url: str, code: str) -> None:
    """Replace micro-grid ``code`` by a self-crossing quadrilateral over its envelope."""
    plant(url, BOW_TIE, {"code": code})

def report_of(url: str) -> list[Problem]:
    with db.connect(url) as c:
        return list(check_generation(c).problems)


def ogr_pg(url: str) -> str:
    info = conninfo_to_dict(db.libpq_url(url))
    keys = ("host", "port", "dbname", "user", "password")
    return "PG:" + " ".join(f"{k}={info[k]}" for k in keys if info.get(k))


def ogr2ogr(*args: str) -> None:
    res = subprocess.run(["ogr2ogr", *args], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


def export_micro_grids(url: str, path: Path) -> Path:
    ogr2ogr("-f", "GPKG", str(path), ogr_pg(url), "-sql",
            "SELECT * FROM micro_grids WHERE generation_id = 1", "-nln", "micro_grids",
            "-t_srs", f"EPSG:{FILE_EPSG}")
    return path


def read_features(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(["ogr2ogr", "-f", "GeoJSON", "/vsistdout/", str(path)],
                         check=True, capture_output=True).stdout
    features: list[dict[str, Any]] = json.loads(out)["features"]
    return features


def write_gpkg(features: list[dict[str, Any]], path: Path, epsg: int = FILE_EPSG) -> Path:
    src = path.with_suffix(".geojson")
    # an "id" property would become the GeoPackage's fid, which split features repeat
    plain = [{**f, "properties": {k: v for k, v in f["properties"].items() if k != "id"}}
             for f in features]
    src.write_text(json.dumps({"type": "FeatureCollection", "features": plain}),
                   encoding="utf-8")
    ogr2ogr("-f", "GPKG", str(path), str(src), "-a_srs", f"EPSG:{epsg}", "-nln", "micro_grids")
    return path


def feature(props: dict[str, Any], geom: BaseGeometry | None) -> dict[str, Any]:
    return {"type": "Feature", "properties": props,
            "geometry": mapping(geom) if geom is not None else None}


def split_one(features: list[dict[str, Any]], code: str) -> tuple[str, str, BaseGeometry,
                                                                  BaseGeometry]:
    """Replace micro-grid ``code`` by its west and east halves with new codes (in place)."""
    i = next(k for k, f in enumerate(features) if f["properties"]["code"] == code)
    old = features.pop(i)
    geom = shape(old["geometry"])
    x0, y0, x1, y1 = geom.bounds
    cx = geom.centroid.x
    west = shapely.intersection(geom, box(x0 - 1, y0 - 1, cx, y1 + 1))
    east = shapely.intersection(geom, box(cx, y0 - 1, x1 + 1, y1 + 1))
    p = old["properties"]
    a, b = code[:12] + "901", code[:12] + "902"
    half = p["population"] // 2, p["households"] // 2
    features.insert(i, feature({**p, "code": a, "name": p["name"] + "甲",
                                "population": half[0], "households": half[1]}, west))
    features.insert(i + 1, feature({**p, "code": b, "name": p["name"] + "乙",
                                    "population": p["population"] - half[0],
                                    "households": p["households"] - half[1]}, east))
    return a, b, west, east


def interior_grid(communities: dict[str, BaseGeometry],
                  grids: dict[str, BaseGeometry], margin: float) -> str:
    """The first micro-grid lying at least ``margin`` metres inside its community."""
    return next(c for c, g in sorted(grids.items())
                if communities[c[:12]].contains(g.buffer(margin)))


# -- the demo town and reading ------------------------------------------------------------


def test_demo_town_is_clean(db_url: str) -> None:
    with db.connect(db_url) as c:
        report = check_generation(c)
        n = c.execute("SELECT count(*) FROM micro_grids WHERE generation_id = 1").fetchone()
    assert report.problems == ()
    assert report.ok
    assert report.epsg == 4548  # chosen from the data (118.02°E)
    assert n is not None and dict(report.checked)[Level.MICRO_GRID] == n[0] > 300


def test_read_generation_is_metric_and_agrees_with_proj(db_url: str) -> None:
    """Geometries come back in metres; PostGIS's ST_Transform and pyproj (used for
    files) give the same areas, so unchanged boundaries never look changed."""
    with db.connect(db_url) as c:
        epsg = generation_epsg(c, 1)
        levels = read_generation(c)
        rows = c.execute(
            "SELECT code, ST_AsBinary(geom), ST_Area(ST_Transform(geom, %s::integer)) "
            "FROM micro_grids WHERE generation_id = 1 ORDER BY code", (epsg,)).fetchall()
    assert [u.code for u in levels.micro_grids] == [r[0] for r in rows]
    assert {u.parent for u in levels.micro_grids} == {u.code for u in levels.communities}
    metric = np.array([u.geom.area for u in levels.micro_grids])
    assert np.allclose(metric, [r[2] for r in rows], rtol=1e-9)
    via_pyproj = np.array([reproject(shapely.from_wkb(r[1]), STORAGE_EPSG, epsg).area
                           for r in rows])
    assert np.allclose(via_pyproj, metric, rtol=1e-7)
    x0, y0, _, _ = shapely.total_bounds(np.array([u.geom for u in levels.streets]))
    assert 300_000 < x0 < 700_000 and 4_000_000 < y0 < 4_200_000  # GK metres, not degrees


def test_unknown_generation_is_not_found(db_url: str) -> None:
    with db.connect(db_url) as c, pytest.raises(NotFound, match="no grid generation 42"):
        check_generation(c, 42)


# -- planted defects ------------------------------------------------------------------------


def test_shifted_micro_grid_makes_a_gap_and_overlaps(fresh_db_url: str) -> None:
    epsg, communities, grids = units(fresh_db_url)
    code = interior_grid(communities, grids, margin=40.0)
    plant(fresh_db_url,
          "UPDATE micro_grids SET geom = ST_Transform(ST_Translate(ST_Transform(geom, "
          "%(srid)s::integer), 20, 0), 4490) WHERE code = %(code)s AND generation_id = 1",
          {"srid": epsg, "code": code})
    problems = report_of(fresh_db_url)
    assert {p.kind for p in problems} == {Kind.GAP, Kind.OVERLAP}
    before = grids[code]
    after = shapely.affinity.translate(before, 20, 0)
    gaps = [p for p in problems if p.kind is Kind.GAP]
    overlaps = [p for p in problems if p.kind is Kind.OVERLAP]
    for gap in gaps:
        assert gap.level is Level.MICRO_GRID
        assert gap.codes[0] == code[:12] and code in gap.codes
        assert before.contains(gap.location) and not after.contains(gap.location)
    for overlap in overlaps:
        assert code in overlap.codes and "siblings" in overlap.detail
        assert after.contains(overlap.location) and not before.contains(overlap.location)
    # what the grid left is what it took from its neighbours
    lost = sum(p.area_m2 for p in gaps)
    assert lost == pytest.approx(before.difference(after).area, rel=1e-3)
    assert sum(p.area_m2 for p in overlaps) == pytest.approx(lost, rel=1e-3)


def _straddle_candidate(communities: dict[str, BaseGeometry],
                        grids: dict[str, BaseGeometry]) -> tuple[str, str]:
    """A micro-grid and another community along which it runs for a good length."""
    for g, geom in sorted(grids.items()):
        grown = geom.buffer(30)
        for c, cgeom in sorted(communities.items()):
            if c != g[:12] and grown.intersection(cgeom).area > 5_000:
                return g, c
    raise LookupError("no micro-grid runs along another community")


def test_micro_grid_straddling_two_communities(fresh_db_url: str) -> None:
    _, communities, grids = units(fresh_db_url)
    code, other = _straddle_candidate(communities, grids)
    # grown by ~30 m into the other community, in EPSG:4490 so that the shared boundary
    # stays exact (a detour through metres leaves near-coincident vertices behind)
    plant(fresh_db_url,
          "UPDATE micro_grids m SET geom = ST_Multi(ST_Union(m.geom,"
          " ST_Intersection(ST_Buffer(m.geom, 0.0003), c.geom)))"
          " FROM communities c WHERE c.code = %(other)s AND c.generation_id = 1"
          " AND m.code = %(code)s AND m.generation_id = 1",
          {"code": code, "other": other})
    problems = report_of(fresh_db_url)
    assert {p.kind for p in problems} == {Kind.OUTSIDE_PARENT, Kind.OVERLAP}
    [outside] = [p for p in problems if p.kind is Kind.OUTSIDE_PARENT]
    assert outside.codes == (code, code[:12], other)
    assert communities[other].contains(outside.location)
    assert outside.area_m2 > 5_000
    overlaps = [p for p in problems if p.kind is Kind.OVERLAP]
    assert overlaps and all(code in p.codes for p in overlaps)
    assert all(communities[other].contains(p.location) for p in overlaps)


def test_bow_tie_micro_grid_is_invalid_and_located(fresh_db_url: str) -> None:
    epsg, communities, grids = units(fresh_db_url)
    code = interior_grid(communities, grids, margin=0.0)
    plant_bow_tie(fresh_db_url, code)
    with db.connect(fresh_db_url) as c:
        row = c.execute(
            "SELECT ST_IsValid(geom), "
            "ST_AsBinary(ST_Transform(ST_Centroid(ST_Envelope(geom)), %s::integer))"
            " FROM micro_grids WHERE code = %s AND generation_id = 1", (epsg, code)).fetchone()
    assert row is not None and row[0] is False
    crossing = shapely.from_wkb(row[1])
    problems = report_of(fresh_db_url)
    [invalid] = [p for p in problems if p.kind is Kind.INVALID]
    assert invalid.codes == (code,)
    assert "Self-intersection" in invalid.detail
    assert invalid.location.distance(crossing) < 1.0
    # the repaired bow-tie still takes part in the other checks
    assert any(p.kind is Kind.OVERLAP and code in p.codes for p in problems)
    assert any(p.kind is Kind.GAP and code[:12] == p.codes[0] for p in problems)


def notched(x0: float, y0: float, w: float = 0.004, h: float = 0.003) -> shapely.Polygon:
    """A lon/lat ring whose notch touches its own top edge: invalid in EPSG:4490, yet
    valid once in Gauss-Krüger metres east of the central meridian, where the parallel
    bows away from the apex. Only a check of the stored form can see it."""
    xm = x0 + w / 2
    return shapely.Polygon([(x0, y0), (xm - 0.0005, y0), (xm, y0 + h), (xm + 0.0005, y0),
                            (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)])


def test_invalid_as_stored_though_valid_in_metres(fresh_db_url: str) -> None:
    epsg, communities, grids = units(fresh_db_url)
    code = interior_grid(communities, grids, margin=0.0)
    centre = reproject(grids[code].representative_point(), epsg, STORAGE_EPSG)
    ring = notched(round(centre.x, 4), round(centre.y, 4))
    assert not ring.is_valid and reproject(ring, STORAGE_EPSG, epsg).is_valid
    plant(fresh_db_url, "UPDATE micro_grids SET geom = ST_Multi(ST_GeomFromText(%(wkt)s, 4490))"
          " WHERE code = %(code)s AND generation_id = 1", {"wkt": ring.wkt, "code": code})
    [invalid] = [p for p in report_of(fresh_db_url) if p.kind is Kind.INVALID]
    assert invalid.codes == (code,)
    assert invalid.detail.startswith("in EPSG:4490: Ring Self-intersection")
    apex = reproject(shapely.Point(ring.exterior.coords[2]), STORAGE_EPSG, epsg)
    assert invalid.location.distance(apex) < 0.01


# -- reading files ---------------------------------------------------------------------------


def test_read_grid_file_any_crs_and_levels(tmp_path: Path) -> None:
    lon_lat = box(118.0, 36.8, 118.01, 36.81)
    metric = reproject(lon_lat, STORAGE_EPSG, FILE_EPSG)
    features = [
        feature({"code": "370303106", "name": "街道", "population": 10}, metric),
        feature({"code": "370303106001", "name": "社区", "level": "community"}, metric),
        feature({"code": "370303106001001", "name": "网格", "kind": "urban",
                 "community_code": "370303106001", "households": 4.0}, metric),
        feature({"code": "370303106001002", "name": "网格二", "level": "micro_grid"}, metric),
        feature({"code": "370303106001", "name": "错级", "level": "street"}, metric),
    ]
    data = read_grid_file(write_gpkg(features, tmp_path / "mixed.gpkg"))
    assert [f.code for f in data[Level.STREET]] == ["370303106", "370303106001"]
    assert [f.code for f in data[Level.COMMUNITY]] == ["370303106001"]
    g1, g2 = data[Level.MICRO_GRID]
    assert (g1.code, g1.kind, g1.parent, g1.households, g1.population) == (
        "370303106001001", "urban", "370303106001", 4, None)
    assert (g2.code, g2.level) == ("370303106001002", Level.MICRO_GRID)
    assert data[Level.STREET][0].population == 10
    # back in EPSG:4490 whatever the file's CRS
    assert np.allclose(g1.geom.bounds, lon_lat.bounds, rtol=0, atol=1e-8)


def test_integer_codes_read_as_codes(tmp_path: Path) -> None:
    data = read_grid_file(_geojson(tmp_path, [{"code": 370303106001001, "name": "x"},
                                              {"code": 370303106.0, "name": "y"}]))
    assert [f.code for f in data[Level.MICRO_GRID]] == ["370303106001001"]
    assert [f.code for f in data[Level.STREET]] == ["370303106"]


def _geojson(tmp_path: Path, props: list[dict[str, Any]], name: str = "f.geojson") -> Path:
    path = tmp_path / name
    geom = box(118.0, 36.8, 118.01, 36.81)
    path.write_text(json.dumps({"type": "FeatureCollection",
                                "features": [feature(p, geom) for p in props]}),
                    encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ([{"name": "x"}], "no column code"),
        ([{"code": "370303106001001"}], "no column name"),
        ([{"code": "370303106001001", "name": "x", "level": "village"}], "unknown level"),
        ([{"code": "3703031060", "name": "x"}], "10 characters and no level"),
        ([{"code": "370303106001001", "name": "x", "population": -3}], "not a count"),
        ([{"code": "370303106001001", "name": "x", "population": "many"}], "not a count"),
        ([{"code": "370303106001001", "name": "x", "households": 2**31}], "not a count"),
        ([{"code": "370303106001001", "name": ""}], "has no name"),
    ],
    ids=["no-code", "no-name", "bad-level", "bad-code-length", "negative", "text-count",
         "too-many", "blank-name"],
)
def test_bad_columns_are_invalid_input(tmp_path: Path, props: list[dict[str, Any]],
                                       message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        read_grid_file(_geojson(tmp_path, props))


def test_unreadable_files_are_invalid_input(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gpkg"
    junk.write_bytes(b"not a geopackage at all")
    with pytest.raises(InvalidInput, match="cannot read"):
        read_grid_file(junk)
    with pytest.raises(InvalidInput, match="no such file"):
        read_grid_file(tmp_path / "missing.gpkg")
    # a shapefile whose .prj is gone has no CRS: refused, not guessed
    src = _geojson(tmp_path, [{"code": "370303106001001", "name": "x"}])
    ogr2ogr("-f", "ESRI Shapefile", str(tmp_path / "nocrs.shp"), str(src))
    (tmp_path / "nocrs.prj").unlink()
    with pytest.raises(InvalidInput, match="cannot read"):
        read_grid_file(tmp_path / "nocrs.shp")
    # several layers and none named
    multi = write_gpkg([feature({"code": "370303106001001", "name": "x"},
                                box(0, 0, 1, 1))], tmp_path / "multi.gpkg")
    ogr2ogr("-update", "-f", "GPKG", str(multi), str(src), "-nln", "second")
    with pytest.raises(InvalidInput, match=r"several layers \(micro_grids, second\)"):
        read_grid_file(multi)
    assert len(read_grid_file(multi, layer="second")[Level.MICRO_GRID]) == 1
    with pytest.raises(InvalidInput, match="cannot read"):
        read_grid_file(multi, layer="third")
    with pytest.raises(InvalidInput, match="not a layer name"):
        read_grid_file(multi, layer="-sql")


def test_zipped_shapefile(tmp_path: Path) -> None:
    src = _geojson(tmp_path, [{"code": "370303106001001", "name": "网格", "households": 7}])
    ogr2ogr("-f", "ESRI Shapefile", str(tmp_path / "grid.shp"), str(src), "-lco",
            "ENCODING=UTF-8")
    archive = tmp_path / "grid.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for part in tmp_path.glob("grid.*"):
            if part.suffix != ".zip":
                z.write(part, part.name)
    [grid] = read_grid_file(archive)[Level.MICRO_GRID]
    assert (grid.code, grid.name, grid.households) == ("370303106001001", "网格", 7)
    assert np.allclose(grid.geom.bounds, (118.0, 36.8, 118.01, 36.81))


# -- importing ------------------------------------------------------------------------------


@pytest.fixture
def split_file(fresh_db_url: str, tmp_path: Path) -> tuple[Path, str, str, str]:
    """The micro-grids exported to EPSG:4548 with one of them split in two."""
    features = read_features(export_micro_grids(fresh_db_url, tmp_path / "export.gpkg"))
    code = sorted(f["properties"]["code"] for f in features)[-1]
    a, b, _, _ = split_one(features, code)
    return write_gpkg(features, tmp_path / "split.gpkg"), code, a, b


def test_dry_run_reports_changes_and_writes_nothing(
    fresh_db_url: str, conn: psycopg.Connection[Any], split_file: tuple[Path, str, str, str]
) -> None:
    path, code, a, b = split_file
    before, digest = row_counts(fresh_db_url), gen1_digest(fresh_db_url)
    result = import_generation(conn, path, NEW_FROM, "2024 re-grid", commit=False)
    assert not result.committed and result.generation is None
    assert result.report.ok
    assert result.built == (Level.COMMUNITY, Level.STREET)
    assert dict(result.counts) == {Level.STREET: 3, Level.COMMUNITY: 15,
                                   Level.MICRO_GRID: before["micro_grids"] + 1}
    grid = result.changes_of(Level.MICRO_GRID)
    assert (grid.added, grid.removed, grid.changed, grid.renamed) == ((a, b), (code,), (), ())
    assert result.changes_of(Level.COMMUNITY).none  # the union of the halves is the same
    assert result.changes_of(Level.STREET).none
    assert result.previous is not None and result.previous.id == 1
    assert row_counts(fresh_db_url) == before
    assert gen1_digest(fresh_db_url) == digest


def test_commit_adds_generation_2_and_keeps_generation_1(
    fresh_db_url: str, conn: psycopg.Connection[Any], split_file: tuple[Path, str, str, str]
) -> None:
    path, code, a, b = split_file
    before, digest = row_counts(fresh_db_url), gen1_digest(fresh_db_url)
    with db.connect(fresh_db_url) as c:
        parts_1 = c.execute("SELECT count(*) FROM micro_grid_parts WHERE generation_id = 1"
                            ).fetchone()
    result = import_generation(conn, path, NEW_FROM, "2024 re-grid", commit=True)
    assert result.committed and result.generation is not None
    assert result.generation.id == 2
    with db.connect(fresh_db_url) as c:
        gens = c.execute("SELECT id, name, valid_from, valid_to, source FROM grid_generations "
                         "ORDER BY id").fetchall()
        assert gens[0][2:4] == (dt.date(2023, 4, 1), NEW_FROM)
        assert gens[1][:4] == (2, "2024 re-grid", NEW_FROM, None)
        assert gens[1][4] == "split.gpkg"
        per_gen = dict(c.execute("SELECT generation_id, count(*) FROM micro_grids "
                                 "GROUP BY 1").fetchall())
        assert per_gen == {1: before["micro_grids"], 2: before["micro_grids"] + 1}
        # parents built from the children carry the old names and the summed counts
        same = c.execute(
            "SELECT count(*) FROM communities n JOIN communities o USING (code) "
            "WHERE n.generation_id = 2 AND o.generation_id = 1 AND n.name = o.name "
            "AND n.population = o.population AND n.households = o.households "
            "AND ST_Area(ST_SymDifference(n.geom, o.geom)::geography) < 1").fetchone()
        assert same == (15,)
        streets = c.execute("SELECT count(*) FROM streets n JOIN streets o USING (code, name) "
                            "WHERE n.generation_id = 2 AND o.generation_id = 1").fetchone()
        assert streets == (3,)
        # micro_grid_parts rebuilt for generation 2; generation 1's untouched
        assert c.execute("SELECT count(*) FROM micro_grid_parts WHERE generation_id = 1"
                         ).fetchone() == parts_1
        uncovered = c.execute(
            "SELECT count(*) FROM micro_grids m WHERE m.generation_id = 2 AND NOT EXISTS ("
            " SELECT 1 FROM micro_grid_parts p WHERE p.micro_grid_id = m.id"
            " AND p.generation_id = 2)").fetchone()
        assert uncovered == (0,)
        # a point lookup on the parts finds the new halves
        found = c.execute(
            "SELECT m.code FROM micro_grid_parts p JOIN micro_grids m ON m.id = p.micro_grid_id"
            " WHERE p.generation_id = 2 AND ST_Intersects(p.geom, "
            " (SELECT ST_PointOnSurface(geom) FROM micro_grids WHERE code = %s"
            "  AND generation_id = 2))", (a,)).fetchall()
        assert found == [(a,)]
        kinds = c.execute("SELECT DISTINCT kind FROM micro_grids WHERE generation_id = 2 "
                          "AND code IN (%s, %s)", (a, b)).fetchall()
        assert kinds and all(k[0] != "" for k in kinds)
    assert gen1_digest(fresh_db_url) == digest  # history is never rewritten
    with db.connect(fresh_db_url) as c:
        assert check_generation(c).ok
        assert check_generation(c, 1).ok
    # the same file again: the new generation must start later still
    with pytest.raises(InvalidInput, match="must come after 2024-01-01"):
        import_generation(conn, path, NEW_FROM, "again", commit=True)


@pytest.mark.parametrize("day", [dt.date(2023, 4, 1), dt.date(2022, 12, 31)],
                         ids=["same-day", "earlier"])
def test_valid_from_must_follow_the_current_generation(
    fresh_db_url: str, conn: psycopg.Connection[Any], split_file: tuple[Path, str, str, str],
    day: dt.date,
) -> None:
    before = row_counts(fresh_db_url)
    with pytest.raises(InvalidInput, match="must come after 2023-04-01"):
        import_generation(conn, split_file[0], day, "too early", commit=True)
    assert row_counts(fresh_db_url) == before


def test_overlapping_import_is_refused_and_leaves_nothing(
    fresh_db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    features = read_features(export_micro_grids(fresh_db_url, tmp_path / "export.gpkg"))
    victim = features[40]
    code = victim["properties"]["code"]
    victim["geometry"] = mapping(shape(victim["geometry"]).buffer(30.0))
    path = write_gpkg(features, tmp_path / "overlap.gpkg")
    before, digest = row_counts(fresh_db_url), gen1_digest(fresh_db_url)
    with pytest.raises(ImportRefused, match="overlap") as refused:
        import_generation(conn, path, NEW_FROM, "bad", commit=True)
    report = refused.value.report
    overlaps = [p for p in report.problems if p.kind is Kind.OVERLAP  # type: ignore[attr-defined]
                and p.level is Level.MICRO_GRID]
    assert overlaps and all(code in p.codes for p in overlaps)
    assert row_counts(fresh_db_url) == before
    assert gen1_digest(fresh_db_url) == digest
    with db.connect(fresh_db_url) as c:
        assert c.execute("SELECT id FROM grid_generations WHERE valid_to IS NULL"
                         ).fetchall() == [(1,)]


def test_import_refuses_what_is_invalid_as_stored(db_url: str, tmp_path: Path) -> None:
    ring = notched(118.05, 36.82)
    path = tmp_path / "notched.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        feature({"code": "370303106001901", "name": "x"}, ring)]}), encoding="utf-8")
    with db.connect(db_url) as c, pytest.raises(ImportRefused) as refused:
        import_generation(c, path, NEW_FROM, "notched", commit=False)
    report = refused.value.report
    assert [(p.kind, p.codes) for p in report.problems] == [  # type: ignore[attr-defined]
        (Kind.INVALID, ("370303106001901",))]
    assert "in EPSG:4490" in report.problems[0].detail  # type: ignore[attr-defined]


def test_moved_boundary_shows_as_changed(
    fresh_db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """20 m of one micro-grid handed to its sibling: both changed, the community not."""
    features = read_features(export_micro_grids(fresh_db_url, tmp_path / "export.gpkg"))
    by_code = {f["properties"]["code"]: f for f in features}
    a, b = next((x, y) for x in sorted(by_code) for y in sorted(by_code)
                if x < y and x[:12] == y[:12]
                and shape(by_code[x]["geometry"]).intersection(
                    shape(by_code[y]["geometry"])).length > 100)
    ga, gb = shape(by_code[a]["geometry"]), shape(by_code[b]["geometry"])
    band = gb.intersection(ga.buffer(20.0))
    by_code[a]["geometry"] = mapping(ga.union(band))
    by_code[b]["geometry"] = mapping(gb.difference(ga.buffer(20.0)))
    result = import_generation(conn, write_gpkg(features, tmp_path / "moved.gpkg"), NEW_FROM,
                               "moved", commit=False)
    changed = dict(result.changes_of(Level.MICRO_GRID).changed)
    assert sorted(changed) == [a, b]
    assert changed[a] == pytest.approx(band.area, rel=1e-3)
    assert changed[b] == pytest.approx(band.area, rel=1e-3)
    assert result.changes_of(Level.COMMUNITY).none


def test_import_of_all_three_levels_with_a_rename(
    fresh_db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Streets and communities given in the file are taken as they are, not rebuilt."""
    path = tmp_path / "all.gpkg"
    ogr2ogr("-f", "GPKG", str(path), ogr_pg(fresh_db_url), "-sql",
            "SELECT code, name, population, households, geom FROM streets "
            "WHERE generation_id = 1 UNION ALL "
            "SELECT code, CASE WHEN code = '370303106001' THEN '新傅家社区' ELSE name END, "
            "population, households, geom FROM communities WHERE generation_id = 1 UNION ALL "
            "SELECT code, name, population, households, geom FROM micro_grids "
            "WHERE generation_id = 1", "-nln", "grid", "-t_srs", "EPSG:3857")
    result = import_generation(conn, path, NEW_FROM, "renamed", commit=False)
    assert result.built == ()
    assert result.changes_of(Level.COMMUNITY).renamed == (
        ("370303106001", "傅家社区", "新傅家社区"),)
    assert result.changes_of(Level.MICRO_GRID).none
    assert result.changes_of(Level.STREET).none


# -- the command line -----------------------------------------------------------------------


@pytest.fixture
def use_db(monkeypatch: pytest.MonkeyPatch) -> Any:
    def point_at(url: str) -> None:
        monkeypatch.setenv("GRIDGOV_DATABASE_URL", url)
    return point_at


def test_cli_check_clean(db_url: str, use_db: Any) -> None:
    use_db(db_url)
    result = runner.invoke(app, ["grid", "check"])
    assert result.exit_code == 0, result.output
    assert "generation 1 (2023年网格划分" in result.stdout
    assert "clean" in result.stdout
    result = runner.invoke(app, ["grid", "check", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["ok"] is True


def test_cli_check_reports_problems(fresh_db_url: str, use_db: Any) -> None:
    epsg, communities, grids = units(fresh_db_url)
    code = interior_grid(communities, grids, margin=0.0)
    plant_bow_tie(fresh_db_url, code)
    with db.connect(fresh_db_url) as c:
        centre = c.execute("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_Centroid(ST_Envelope(geom)) "
                           "p FROM micro_grids WHERE code = %s) s", (code,)).fetchone()
    assert centre is not None
    use_db(fresh_db_url)
    result = runner.invoke(app, ["grid", "check"])
    assert result.exit_code == 1
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("invalid")]
    assert len(lines) == 1 and code in lines[0] and "micro_grid" in lines[0]
    where = re.search(r" at ([0-9.]+),([0-9.]+) \(lon,lat\)", lines[0])
    assert where is not None and "m²" in lines[0]
    assert float(where.group(1)) == pytest.approx(centre[0], abs=1e-5)
    assert float(where.group(2)) == pytest.approx(centre[1], abs=1e-5)
    result = runner.invoke(app, ["grid", "check", "--json", "--generation", "1"])
    assert result.exit_code == 1
    body = json.loads(result.stdout)
    assert body["ok"] is False and body["generation"] == 1
    [invalid] = [p for p in body["problems"] if p["kind"] == "invalid"]
    assert invalid["codes"] == [code] and invalid["level"] == "micro_grid"
    assert invalid["lon"] == pytest.approx(centre[0], abs=1e-5)
    assert invalid["lat"] == pytest.approx(centre[1], abs=1e-5)
    assert {"overlap", "gap"} <= {p["kind"] for p in body["problems"]}


def test_cli_check_unknown_generation(db_url: str, use_db: Any) -> None:
    use_db(db_url)
    result = runner.invoke(app, ["grid", "check", "--generation", "99"])
    assert result.exit_code == 2
    assert "no grid generation 99" in result.stderr


def test_cli_import_dry_run_then_commit(
    fresh_db_url: str, use_db: Any, split_file: tuple[Path, str, str, str]
) -> None:
    path, code, a, b = split_file
    use_db(fresh_db_url)
    before = row_counts(fresh_db_url)
    result = runner.invoke(app, ["grid", "import", str(path), "--valid-from", "2024-01-01"])
    assert result.exit_code == 0, result.output
    assert "dry run: nothing written" in result.stdout
    assert f"added    {a}, {b}" in result.stdout
    assert f"removed  {code}" in result.stdout
    assert "micro_grid: 2 added, 1 removed, 0 changed, 0 renamed" in result.stdout
    assert "(communities, streets built from their children)" in result.stdout
    assert row_counts(fresh_db_url) == before
    result = runner.invoke(app, ["grid", "import", str(path), "--valid-from", "2024-01-01",
                                 "--name", "2024年网格调整", "--commit"])
    assert result.exit_code == 0, result.output
    assert "closed generation 1 on 2024-01-01" in result.stdout
    assert "wrote generation 2 (2024年网格调整, from 2024-01-01)" in result.stdout
    assert "dry run" not in result.stdout
    result = runner.invoke(app, ["grid", "check"])
    assert result.exit_code == 0 and "generation 2 (2024年网格调整" in result.stdout


def test_cli_import_refused(
    fresh_db_url: str, use_db: Any, tmp_path: Path
) -> None:
    features = read_features(export_micro_grids(fresh_db_url, tmp_path / "export.gpkg"))
    code = features[7]["properties"]["code"]
    features[7]["geometry"] = mapping(shape(features[7]["geometry"]).buffer(25.0))
    path = write_gpkg(features, tmp_path / "overlap.gpkg")
    use_db(fresh_db_url)
    before = row_counts(fresh_db_url)
    result = runner.invoke(app, ["grid", "import", str(path), "--commit"])
    assert result.exit_code == 1
    assert "import refused" in result.stderr
    assert any(ln.startswith("overlap") and code in ln for ln in result.stdout.splitlines())
    assert row_counts(fresh_db_url) == before


def test_cli_import_bad_file(tmp_path: Path, db_url: str, use_db: Any) -> None:
    use_db(db_url)
    junk = tmp_path / "junk.geojson"
    junk.write_text("{ nope", encoding="utf-8")
    result = runner.invoke(app, ["grid", "import", str(junk)])
    assert result.exit_code == 2
    assert "cannot read" in result.stderr
