"""POST /locate: many points, GeoJSON or CSV, answers streamed in input order."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient

from api.app import create_app
from api.locate_io import MAX_POINTS
from api.settings import Settings
from gis.chinacrs import wgs84_to_gcj02
from layers.locate import BATCH_COLUMNS


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
    return [r[0] for r in rows], shapely.from_wkb([bytes(r[1]) for r in rows])


def owner(grids: tuple[list[str], np.ndarray], lon: float, lat: float) -> str | None:
    codes, geoms = grids
    hit = shapely.covers(geoms, shapely.Point(lon, lat))
    owners = [c for c, h in zip(codes, hit, strict=True) if h]
    return min(owners) if owners else None


def random_points(grids: tuple, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = shapely.total_bounds(grids[1])
    rng = np.random.default_rng(seed)
    return rng.uniform(x0 - 0.01, x1 + 0.01, n), rng.uniform(y0 - 0.01, y1 + 0.01, n)


def post_csv(client: TestClient, text: str | bytes, **kw: str) -> object:
    ctype = kw.pop("content_type", "text/csv")
    return client.post("/locate", content=text, headers={"content-type": ctype}, params=kw)


def test_csv_batch_agrees_with_shapely_in_input_order(client: TestClient, grids: tuple) -> None:
    xs, ys = random_points(grids, 12_000, seed=7)  # more than two statement chunks
    pairs = enumerate(zip(xs.tolist(), ys.tolist(), strict=True))
    text = "id,lon,lat,note\n" + "".join(f"p{i},{x!r},{y!r},备注{i}\n" for i, (x, y) in pairs)
    r = post_csv(client, text)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == len(xs)
    assert list(rows[0]) == ["id", "lon", "lat", "note", *BATCH_COLUMNS]
    sample = range(0, len(xs), 7)  # ~1,700 points checked one by one against shapely
    inside = 0
    for i in sample:
        row = rows[i]
        assert row["id"] == f"p{i}" and row["note"] == f"备注{i}"
        want = owner(grids, xs[i], ys[i])
        assert (row["micro_grid_code"] or None) == want, (i, xs[i], ys[i])
        if want:
            inside += 1
            assert row["community_code"] == want[:12] and row["street_code"] == want[:9]
            assert row["worker"] and not row["nearest_code"]
        else:
            assert row["nearest_code"] and float(row["distance_m"]) > 0
    assert 500 < inside < len(sample)


def test_outside_points_name_the_same_nearest_grid_as_get(
    client: TestClient, grids: tuple
) -> None:
    x0, y0, x1, y1 = shapely.total_bounds(grids[1])
    pts = [(x1 + 0.02, (y0 + y1) / 2), (x0 - 0.03, y0), ((x0 + x1) / 2, y1 + 0.015)]
    text = "lon,lat\n" + "".join(f"{x},{y}\n" for x, y in pts)
    rows = list(csv.DictReader(io.StringIO(post_csv(client, text).text)))
    for (x, y), row in zip(pts, rows, strict=True):
        single = client.get("/locate", params={"lon": x, "lat": y}).json()["nearest"]
        assert row["nearest_code"] == single["code"]
        assert float(row["distance_m"]) == pytest.approx(single["distance_m"], abs=0.11)


def test_geojson_batch_in_gcj02_keeps_ids_and_properties(
    client: TestClient, grids: tuple
) -> None:
    codes, geoms = grids
    pts = shapely.point_on_surface(geoms[::5])
    features = []
    for i, p in enumerate(pts):
        glon, glat = wgs84_to_gcj02(p.x, p.y)
        features.append({"type": "Feature", "id": f"ev{i}", "properties": {"kind": "垃圾"},
                         "geometry": {"type": "Point", "coordinates": [glon, glat]}})
    r = client.post("/locate", params={"crs": "gcj02"},
                    content=json.dumps({"type": "FeatureCollection", "features": features}),
                    headers={"content-type": "application/geo+json"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
    body = r.json()
    assert body["type"] == "FeatureCollection" and body["generation"]["id"] == 1
    assert len(body["features"]) == len(pts)
    for i, (f, p) in enumerate(zip(body["features"], pts, strict=True)):
        assert f["id"] == f"ev{i}" and f["properties"]["kind"] == "垃圾"
        assert f["properties"]["micro_grid_code"] == codes[i * 5]
        # the geometry comes back in EPSG:4490, converted exactly
        assert f["geometry"]["coordinates"] == pytest.approx([p.x, p.y], abs=1e-7)


def test_gbk_csv_and_excel_bom(client: TestClient, grids: tuple) -> None:
    p = shapely.point_on_surface(grids[1][3])
    text = f"名称,lon,lat\n张店区傅家镇,{p.x},{p.y}\n"
    r = post_csv(client, text.encode("gbk"), content_type="text/csv; charset=gbk")
    assert r.status_code == 200
    row = next(csv.DictReader(io.StringIO(r.text)))
    assert row["名称"] == "张店区傅家镇" and row["micro_grid_code"] == grids[0][3]
    r = post_csv(client, "\ufeff" + text)
    assert next(csv.DictReader(io.StringIO(r.text)))["micro_grid_code"] == grids[0][3]
    r = post_csv(client, text.encode("gbk"))  # GBK sent as UTF-8: said, not guessed
    assert r.status_code == 400 and "charset=gbk" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "ctype", "needle"),
    [
        ("lon,lat\n118.0,36.8\n118.0,abc\n", "text/csv", "CSV line 3"),
        ("lon,lat\n118.0,36.8\n118.0,91\n", "text/csv", "point 1"),
        ("lon,lat\n118.0,nan\n", "text/csv", "CSV line 2"),
        ("x,y\n118.0,36.8\n", "text/csv", "lon and lat"),
        ("lon,lat\n118.0,36.8,5\n", "text/csv", "3 fields"),
        ("", "text/csv", "empty"),
        ('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
         '{"type": "LineString", "coordinates": [[1, 2], [3, 4]]}}]}',
         "application/geo+json", "feature 0"),
        ('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
         '{"type": "Point", "coordinates": ["118", 36.8]}}]}', "application/json", "feature 0"),
        ('{"type": "Feature"}', "application/geo+json", "FeatureCollection"),
        ("{not json", "application/geo+json", "not JSON"),
        ("lon,lat\n118,36.8\n", "application/xml", "Content-Type"),
    ],
)
def test_bad_batches_are_400_naming_the_fault(
    client: TestClient, body: str, ctype: str, needle: str
) -> None:
    r = post_csv(client, body, content_type=ctype)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert needle in r.json()["detail"]


def test_unknown_crs_is_400(client: TestClient) -> None:
    r = post_csv(client, "lon,lat\n118,36.8\n", crs="EPSG:2000")
    assert r.status_code == 400 and "EPSG:2000" in r.json()["detail"]


def test_more_than_the_limit_is_413(client: TestClient) -> None:
    text = "lon,lat\n" + "118.0,36.8\n" * (MAX_POINTS + 1)
    r = post_csv(client, text)
    assert r.status_code == 413 and str(MAX_POINTS) in r.json()["detail"]


def test_the_limit_itself_is_answered_in_full(client: TestClient, grids: tuple) -> None:
    p = shapely.point_on_surface(grids[1][0])
    text = "lon,lat\n" + f"{p.x},{p.y}\n" * MAX_POINTS
    with client.stream("POST", "/locate", content=text,
                       headers={"content-type": "text/csv"}) as r:
        assert r.status_code == 200
        chunks = list(r.iter_bytes())
    lines = b"".join(chunks).decode().splitlines()
    assert len(lines) == MAX_POINTS + 1
    assert all(line.split(",")[2] == grids[0][0] for line in lines[1:])


def test_no_generation_at_that_date_is_404(client: TestClient) -> None:
    r = post_csv(client, "lon,lat\n118,36.8\n", at="2020-01-01")
    assert r.status_code == 404 and "no grid generation" in r.json()["detail"]
