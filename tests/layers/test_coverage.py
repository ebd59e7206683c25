"""Coverage of the micro-grids by high points and cameras, against direct computations."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
import rasterio
import shapely
from typer.testing import CliRunner

from layers import db
from layers.coverage import Coverage, compute, store
from layers.errors import InvalidInput

GK = 4548


@pytest.fixture(scope="module")
def grids(db_url: str) -> dict[str, shapely.Geometry]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT code, ST_AsBinary(ST_Transform(geom, %s)) FROM micro_grids", (GK,)
        ).fetchall()
    return {r[0]: shapely.from_wkb(bytes(r[1])) for r in rows}


@pytest.fixture(scope="module")
def observers(db_url: str) -> tuple[list[tuple], list[tuple]]:
    with psycopg.connect(db_url) as conn:
        hps = conn.execute(
            "SELECT ST_X(p), ST_Y(p), radius_m FROM (SELECT ST_Transform(geom, %s) p, radius_m "
            "FROM high_points) t", (GK,)).fetchall()
        cams = conn.execute(
            "SELECT ST_X(p), ST_Y(p), heading_deg, fov_deg, range_m FROM ("
            "SELECT ST_Transform(geom, %s) p, heading_deg, fov_deg, range_m FROM cameras "
            "WHERE high_point_id IS NULL) t", (GK,)).fetchall()
    return hps, cams


@pytest.fixture(scope="module")
def flat(db_url: str) -> Coverage:
    with db.connect(db_url) as conn:
        return compute(conn, None)


@pytest.fixture(scope="module")
def sighted(db_url: str, demo_dsm: object) -> Coverage:
    with db.connect(db_url) as conn:
        return compute(conn, Path(demo_dsm.path))  # type: ignore[attr-defined]


def wedge(x: float, y: float, heading: float, fov: float, rng: float) -> shapely.Geometry:
    """A camera's sector as a polygon, independently of the raster code."""
    if fov >= 360:
        return shapely.Point(x, y).buffer(rng, quad_segs=64)
    steps = max(8, int(fov))
    angles = np.radians(heading - fov / 2 + np.linspace(0, fov, steps + 1))
    pts = [(x, y)] + [(x + rng * math.sin(a), y + rng * math.cos(a)) for a in angles]
    return shapely.Polygon(pts)


def test_ring_fractions_agree_with_shapely(flat: Coverage, grids: dict, observers: tuple) -> None:
    hps, _ = observers
    rings = shapely.union_all([shapely.Point(x, y).buffer(r, quad_segs=256) for x, y, r in hps])
    assert len(flat.grids) == len(grids)
    partial = 0
    for g in flat.grids:
        geom = grids[g.code]
        want = shapely.intersection(geom, rings).area / geom.area
        assert g.high_point_ring_fraction == pytest.approx(want, abs=2e-3), g.code
        partial += 0.01 < want < 0.99
    assert partial >= 5  # some grids straddle a ring's edge: the test sees real geometry


def test_camera_sectors_without_dsm_agree_with_shapely(
    flat: Coverage, grids: dict, observers: tuple
) -> None:
    _, cams = observers
    tree = shapely.STRtree([shapely.Point(c[0], c[1]).buffer(c[4]) for c in cams])
    checked = 0
    for g in flat.grids[::8]:
        geom = grids[g.code]
        near = [cams[i] for i in tree.query(geom)]
        sectors = shapely.union_all([wedge(*c) for c in near]) if near else shapely.Polygon()
        want = shapely.intersection(geom, sectors).area / geom.area
        # counted on 2 m cells against exact polygons: a band of half a cell differs
        assert g.camera_fraction == pytest.approx(want, abs=0.02), g.code
        assert g.high_point_visible_fraction is None
        checked += 1
    assert checked >= 40


def test_line_of_sight_only_takes_away(flat: Coverage, sighted: Coverage) -> None:
    by_code = {g.code: g for g in flat.grids}
    hidden = 0
    for g in sighted.grids:
        ring = by_code[g.code]
        assert g.high_point_visible_fraction is not None
        # a high point sees nothing beyond its ring, and buildings hide some of it
        assert g.high_point_visible_fraction <= g.high_point_ring_fraction + 0.01, g.code
        assert g.camera_fraction <= ring.camera_fraction + 0.005, g.code
        assert g.covered_fraction >= max(g.high_point_visible_fraction, g.camera_fraction)
        hidden += g.high_point_visible_fraction < g.high_point_ring_fraction - 0.05
    assert hidden > len(sighted.grids) // 3
    assert sighted.surface_model is not None


def test_uncovered_geometry_is_what_is_not_covered(sighted: Coverage, grids: dict) -> None:
    for g in sighted.grids[::4]:
        area = grids[g.code].area
        blind = g.uncovered.area if g.uncovered is not None else 0.0
        # sieving spots under 16 cells and smoothing to half a cell: a few percent
        assert blind / area == pytest.approx(1 - g.covered_fraction, abs=0.04), g.code
        if g.uncovered is not None:
            assert g.uncovered.is_valid
            assert shapely.difference(g.uncovered, grids[g.code]).area < 1.0


def test_store_replaces_the_generation_rows(fresh_db_url: str, flat: Coverage) -> None:
    with db.connect(fresh_db_url) as conn:
        assert store(conn, flat) == len(flat.grids)
        store(conn, flat)  # again: replaced, not doubled
        conn.commit()
        n, with_geom = conn.execute(
            "SELECT count(*), count(geom) FROM micro_grid_coverage").fetchone()
        assert n == len(flat.grids) and with_geom > 0
        (srid,) = conn.execute("SELECT DISTINCT ST_SRID(geom) FROM micro_grid_coverage "
                               "WHERE geom IS NOT NULL").fetchone()
        assert srid == 4490


def test_a_dsm_in_another_crs_is_refused(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "wgs84.tif"
    with rasterio.open(path, "w", driver="GTiff", width=10, height=10, count=1,
                       dtype="float32", crs="EPSG:4326",
                       transform=rasterio.transform.from_origin(118, 37, 0.01, 0.01)) as ds:
        ds.write(np.zeros((1, 10, 10), np.float32))
    with db.connect(db_url) as conn, pytest.raises(InvalidInput, match="EPSG:4548"):
        compute(conn, path)


@pytest.fixture
def env_for(fresh_db_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    yield {"GRIDGOV_DATABASE_URL": fresh_db_url, "GRIDGOV_DATA_DIR": str(tmp_path)}


def test_cli_dry_run_then_store_with_progress(env_for: dict, fresh_db_url: str) -> None:
    from api.cli import app

    runner = CliRunner()
    stamp = "SELECT count(*), max(computed_at) FROM micro_grid_coverage"
    with psycopg.connect(fresh_db_url) as conn:
        before = conn.execute(stamp).fetchone()
    r = runner.invoke(app, ["coverage", "--no-dsm", "--dry-run"], env=env_for)
    assert r.exit_code == 0, r.output
    assert "dry run" in r.output and "seen by a street camera" in r.output
    with psycopg.connect(fresh_db_url) as conn:
        assert conn.execute(stamp).fetchone() == before  # nothing written
    r = runner.invoke(app, ["coverage", "--no-dsm"], env=env_for)
    assert r.exit_code == 0 and "stored 321 rows" in r.output
    assert "coverage: 100%" in r.output  # the bar reached its total
    with psycopg.connect(fresh_db_url) as conn:
        n, when = conn.execute(stamp).fetchone()
    assert n == 321 and when > before[1]  # replaced, not added to


def test_cli_missing_dsm_is_exit_2(env_for: dict, tmp_path: Path) -> None:
    from api.cli import app

    r = CliRunner().invoke(app, ["coverage", "--dsm", str(tmp_path / "nope.tif")], env=env_for)
    assert r.exit_code == 2 and "no surface model" in r.output
