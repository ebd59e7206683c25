"""/locate against an independent shapely computation on the seeded demo town."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from gis.chinacrs import wgs84_to_bd09, wgs84_to_gcj02
from gis.crs import transformer


@pytest.fixture(scope="module")
def client(db_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(env="test"), db_url)) as c:
        yield c


@pytest.fixture(scope="module")
def grids(db_url: str) -> tuple[list[str], np.ndarray]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT code, ST_AsBinary(geom) FROM micro_grids ORDER BY code"
        ).fetchall()
    codes = [r[0] for r in rows]
    geoms = shapely.from_wkb([bytes(r[1]) for r in rows])
    return codes, geoms


def expected(grids: tuple[list[str], np.ndarray], lon: float, lat: float) -> str | None:
    """Independent answer: the lowest code among the micro-grids that cover the point."""
    codes, geoms = grids
    hit = shapely.covers(geoms, shapely.Point(lon, lat))
    owners = [c for c, h in zip(codes, hit, strict=True) if h]
    return min(owners) if owners else None


def test_1000_random_points_agree_with_shapely(client: TestClient, grids: tuple) -> None:
    codes, geoms = grids
    x0, y0, x1, y1 = shapely.total_bounds(geoms)
    rng = np.random.default_rng(42)
    inside = outside = 0
    for lon, lat in zip(rng.uniform(x0 - 0.01, x1 + 0.01, 1000),
                        rng.uniform(y0 - 0.01, y1 + 0.01, 1000), strict=True):
        want = expected(grids, lon, lat)
        r = client.get("/locate", params={"lon": lon, "lat": lat})
        if want is None:
            assert r.status_code == 404, (lon, lat, r.text)
            outside += 1
        else:
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["micro_grid"]["code"] == want
            assert body["community"]["code"] == want[:12]
            assert body["street"]["code"] == want[:9]
            inside += 1
    assert inside > 500 and outside > 20


def test_points_on_shared_boundaries_and_vertices_get_one_stable_answer(
    client: TestClient, grids: tuple
) -> None:
    codes, geoms = grids
    # vertices shared by two or more micro-grids: on the boundary of each of them
    coords = np.concatenate([shapely.get_coordinates(shapely.boundary(g)) for g in geoms[:60]])
    uniq, counts = np.unique(coords, axis=0, return_counts=True)
    shared = uniq[counts >= 3][:150]  # a ring repeats its start, so >= 3 means >= 2 grids
    assert len(shared) > 50
    n_multi = 0
    for lon, lat in shared:
        want = expected(grids, lon, lat)
        owners = shapely.covers(geoms, shapely.Point(lon, lat)).sum()
        n_multi += owners >= 2
        first = client.get("/locate", params={"lon": lon, "lat": lat}).json()
        again = client.get("/locate", params={"lon": lon, "lat": lat}).json()
        assert first["micro_grid"]["code"] == want == again["micro_grid"]["code"]
    assert n_multi > 50


def test_gcj02_and_bd09_points_land_in_the_true_grid(client: TestClient, grids: tuple) -> None:
    codes, geoms = grids
    checked = moved = 0
    for g, code in zip(geoms[::7], codes[::7], strict=True):
        p = shapely.point_on_surface(g)
        lon, lat = p.x, p.y
        glon, glat = wgs84_to_gcj02(lon, lat)
        blon, blat = wgs84_to_bd09(lon, lat)
        r = client.get("/locate", params={"lon": glon, "lat": glat, "crs": "gcj02"})
        assert r.json()["micro_grid"]["code"] == code
        r = client.get("/locate", params={"lon": blon, "lat": blat, "crs": "bd09"})
        assert r.json()["micro_grid"]["code"] == code
        # read as if it were WGS84, the GCJ-02 point is hundreds of metres off
        naive = client.get("/locate", params={"lon": glon, "lat": glat})
        moved += naive.status_code != 200 or naive.json()["micro_grid"]["code"] != code
        checked += 1
    assert checked > 30 and moved > checked // 2


@pytest.mark.parametrize("epsg", [3857, 4548])
def test_projected_crs_input(client: TestClient, grids: tuple, epsg: int) -> None:
    codes, geoms = grids
    p = shapely.point_on_surface(geoms[10])
    x, y = transformer(4490, epsg).transform(p.x, p.y)
    r = client.get("/locate", params={"lon": x, "lat": y, "crs": f"EPSG:{epsg}"})
    assert r.status_code == 200 and r.json()["micro_grid"]["code"] == codes[10]


def test_outside_the_territory_names_the_nearest_grid(client: TestClient, grids: tuple) -> None:
    codes, geoms = grids
    x0, y0, x1, y1 = shapely.total_bounds(geoms)
    lon, lat = x1 + 0.05, (y0 + y1) / 2
    r = client.get("/locate", params={"lon": lon, "lat": lat})
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    near = r.json()["nearest"]
    dists = shapely.distance(geoms, shapely.Point(lon, lat))
    assert near["code"] == codes[int(np.argmin(dists))]
    # metres: 0.05° east at 36.8°N is a few km from the edge
    assert 1000 < near["distance_m"] < 6000


def test_worker_and_generation_in_the_answer(client: TestClient, grids: tuple) -> None:
    codes, geoms = grids
    p = shapely.point_on_surface(geoms[0])
    body = client.get("/locate", params={"lon": p.x, "lat": p.y}).json()
    assert body["generation"]["valid_from"] == "2023-04-01"
    assert body["worker"]["name"]
    assert "phone" not in body["worker"]


def test_before_the_first_generation_is_404(client: TestClient, grids: tuple) -> None:
    p = shapely.point_on_surface(grids[1][0])
    r = client.get("/locate", params={"lon": p.x, "lat": p.y, "at": "2020-01-01"})
    assert r.status_code == 404 and "no grid generation" in r.json()["detail"]


@pytest.mark.parametrize(
    "params",
    [
        {"lon": 118.0, "lat": 91},
        {"lon": "NaN", "lat": 36.8},
        {"lon": 118.0, "lat": "inf"},
        {"lon": "abc", "lat": 36.8},
        {"lat": 36.8},
        {"lon": 118.0, "lat": 36.8, "crs": "EPSG:9999"},
        {"lon": 118.0, "lat": 36.8, "crs": "wgs84'; DROP TABLE micro_grids; --"},
        {"lon": 118.0, "lat": 36.8, "at": "yesterday"},
        {"lon": 1e308, "lat": 1e308, "crs": "EPSG:3857"},
    ],
)
def test_bad_input_is_400_problem(client: TestClient, params: dict) -> None:
    r = client.get("/locate", params=params)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"]


def test_an_officer_sees_the_workers_phone_and_nobody_else(fresh_db_url: str) -> None:
    from layers import db
    from layers.auth import create_token

    with db.connect(fresh_db_url) as conn:
        token = create_token(conn, "网格中心值班员", "officer")
        conn.commit()
        lon, lat, code = conn.execute(
            "SELECT ST_X(p), ST_Y(p), code FROM (SELECT ST_PointOnSurface(geom) p, code "
            "FROM micro_grids ORDER BY code LIMIT 1) s").fetchone()
        (phone,) = conn.execute(
            "SELECT w.phone FROM workers w JOIN worker_assignments a ON a.worker_id = w.id "
            "WHERE a.micro_grid_code = %s AND a.valid_to IS NULL", (code,)).fetchone()
    with TestClient(create_app(Settings(env="test"), fresh_db_url)) as c:
        params = {"lon": lon, "lat": lat}
        anonymous = c.get("/locate", params=params).json()
        assert anonymous["micro_grid"]["code"] == code and "phone" not in anonymous["worker"]
        officer = c.get("/locate", params=params,
                        headers={"Authorization": f"Bearer {token}"}).json()
        assert officer["worker"]["phone"] == phone
        bad = c.get("/locate", params=params, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401  # a bad token is refused, not read as anonymous
    with db.connect(fresh_db_url) as conn:  # the read of personal data is on record
        assert conn.execute("SELECT actor, what FROM personal_data_reads").fetchall() == [
            ("网格中心值班员", f"worker phone of {code}")]
