"""The documented limits: each answered with a 4xx problem, and the README's table true."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api import locate_io, open311
from api.app import create_app
from api.ogc import transactions
from api.settings import Settings
from layers import cql2, events, features, nearby, photos
from layers.auth import create_token

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    s = Settings(env="test", data_dir=tmp_path_factory.mktemp("limits"), max_body_bytes=20_000)
    with TestClient(create_app(s, db_url)) as c:
        yield c


@pytest.fixture(scope="module")
def point(db_url: str) -> tuple[float, float]:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p "
                            "FROM micro_grids ORDER BY code LIMIT 1) s").fetchone()


def is_problem(r: object, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    assert r.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body: dict[str, object] = r.json()  # type: ignore[attr-defined]
    assert body["status"] == status
    return body


def test_a_body_over_the_limit_is_413_before_it_is_read(
    client: TestClient, point: tuple[float, float]
) -> None:
    x, y = point
    small = f"lon,lat\n{x},{y}\n"
    assert client.post("/locate", content=small,
                       headers={"content-type": "text/csv"}).status_code == 200
    big = small + f"{x},{y}\n" * 1000  # ~33 kB, over the 20 kB of this server
    body = is_problem(client.post("/locate", content=big,
                                  headers={"content-type": "text/csv"}), 413)
    assert body["limit_bytes"] == 20_000 and "20,000 bytes" in str(body["detail"])

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield small.encode()
        for _ in range(100):
            yield f"{x},{y}\n".encode() * 10

    r = client.post("/locate", content=chunks(), headers={"content-type": "text/csv"})
    assert "content-length" not in r.request.headers
    assert is_problem(r, 413)["limit_bytes"] == 20_000


def test_nearby_radius_and_limit(client: TestClient, point: tuple[float, float]) -> None:
    x, y = point
    is_problem(client.get("/nearby", params={"lon": x, "lat": y,
                                             "radius": nearby.MAX_RADIUS_M + 1}), 400)
    is_problem(client.get("/nearby", params={"lon": x, "lat": y,
                                             "limit": nearby.MAX_LIMIT + 1}), 400)


def test_batch_size(client: TestClient) -> None:
    # the batch limit is checked on the parsed input; here through the reader itself, as
    # 100,001 points are more bytes than this test server's body limit
    with pytest.raises(locate_io.TooMany):
        locate_io.parse(b"lon,lat\n" + b"118,36.8\n" * (locate_io.MAX_POINTS + 1),
                        "text/csv")


def test_cql2_depth_and_length(client: TestClient) -> None:
    items = "/ogc/collections/buildings/items"
    deep = "(" * (cql2.MAX_DEPTH + 5) + "name = 'x'" + ")" * (cql2.MAX_DEPTH + 5)
    r = client.get(items, params={"f": "json", "filter": deep})
    assert r.status_code == 400 and "nested" in r.text
    long = "name = '" + "x" * cql2.MAX_FILTER_CHARS + "'"
    r = client.get(items, params={"f": "json", "filter": long})
    assert r.status_code == 400 and "longer" in r.text


def test_page_size_is_capped(client: TestClient) -> None:
    r = client.get("/ogc/collections/buildings/items",
                   params={"f": "json", "limit": features.MAX_LIMIT + 5})
    assert r.status_code == 200
    assert len(r.json()["features"]) <= features.MAX_LIMIT


def test_the_readme_limits_table_says_what_the_code_does() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Limits", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines()
            if line.startswith("|") and not line.startswith("| ---")}

    def number(row: str) -> str:
        assert row in rows, f"README Limits has no row {row!r}"
        return rows[row]

    def shows(row: str, value: float) -> None:
        assert re.search(rf"\b{value:,.0f}\b", number(row)), (row, value)

    defaults = Settings()
    shows("page size (OGC items)", features.MAX_LIMIT)
    shows("POST /locate points", locate_io.MAX_POINTS)
    shows("POST /locate body (MiB)", locate_io.MAX_BODY / 2**20)
    shows("any request body (MiB)", defaults.max_body_bytes / 2**20)
    shows("OGC Part 4 body (MiB)", transactions.MAX_BODY / 2**20)
    shows("CQL2 nesting depth", cql2.MAX_DEPTH)
    shows("CQL2 filter length (characters)", cql2.MAX_FILTER_CHARS)
    shows("CQL2 S_DWITHIN distance (m)", cql2.MAX_DWITHIN_M)
    shows("/nearby radius (m)", nearby.MAX_RADIUS_M)
    shows("/nearby limit", nearby.MAX_LIMIT)
    shows("sortby keys", features.MAX_SORT_KEYS)
    shows("statement timeout (ms)", defaults.statement_timeout_ms)
    shows("bbox area (km², OGC items)", defaults.max_bbox_km2)
    shows("page size (/api/v1/events)", events.MAX_LIST)
    shows("page size (Open311 requests)", open311.MAX_REQUESTS)
    shows("photo size (MB)", photos.MAX_BYTES / 2**20)
    assert "413" in number("OGC Part 4 body (MiB)")
    shows("wait for a pooled connection (s)", defaults.pool_timeout)


def test_page_size_over_the_maximum_is_read_as_the_maximum_in_every_format(
    client: TestClient
) -> None:
    # OGC API Features: a limit above the declared maximum is no error, the server pages
    # by its maximum; pygeoapi's HTML pages (its own limit check) do the same as our JSON
    items = "/ogc/collections/micro_grids/items"
    for f in ("json", "html", "jsonld"):
        r = client.get(items, params={"f": f, "limit": features.MAX_LIMIT + 1})
        assert r.status_code == 200, (f, r.text[:500])
    r = client.get(items, params={"f": "json", "limit": 0})
    assert r.status_code == 400 and f"{features.MAX_LIMIT:,}" in r.text


def test_our_own_apis_refuse_a_limit_over_the_maximum_naming_it(
    client: TestClient, point: tuple[float, float]
) -> None:
    body = is_problem(client.get("/api/v1/events", params={"limit": events.MAX_LIST + 1}),
                      400)
    assert f"{events.MAX_LIST}" in str(body["detail"])
    x, y = point
    body = is_problem(client.get("/nearby", params={"lon": x, "lat": y,
                                                    "limit": nearby.MAX_LIMIT + 1}), 400)
    assert f"{nearby.MAX_LIMIT}" in str(body["detail"])


def test_gdal_with_a_page_size_over_the_maximum_still_reads_everything(
    db_url: str, tmp_path: Path, served: Any
) -> None:
    # GDAL's PAGE_SIZE is the user's: 20,000 is sent as limit=20000; a 400 would break
    # ogr2ogr, the cap makes it page by 10,000 and follow `next`
    with psycopg.connect(db_url) as conn:
        (expected,) = conn.execute("SELECT count(*) FROM buildings").fetchone()
    s = Settings(env="test", data_dir=tmp_path / "data")
    with served(create_app(s, db_url)) as base:
        r = subprocess.run(["ogrinfo", "-ro", "-so", "-oo", "PAGE_SIZE=20000",
                            f"OAPIF:{base}/ogc", "buildings"], capture_output=True,
                           text=True, timeout=120,
                           env={**os.environ, "CPL_DEBUG": "ON"})
        out = r.stdout + r.stderr
        assert r.returncode == 0 and "ERROR" not in r.stderr, out
        got = subprocess.run(["ogrinfo", "-ro", "-al", "-q", "-oo", "PAGE_SIZE=20000",
                              "-fields=NO", "-geom=NO", f"OAPIF:{base}/ogc", "buildings"],
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "CPL_DEBUG": "ON"})
    assert got.returncode == 0 and "ERROR" not in got.stderr, got.stderr[-2000:]
    assert "limit=20000" in got.stderr  # GDAL did ask for more than the maximum
    assert got.stdout.count("OGRFeature(buildings)") == expected


def test_part4_bodies_over_16_mib_are_413(db_url: str, tmp_path: Path) -> None:
    with psycopg.connect(db_url) as conn:
        token = create_token(conn, "超限科员", "officer")
        conn.commit()
    s = Settings(env="test", data_dir=tmp_path / "data")
    auth = {"Authorization": f"Bearer {token}", "content-type": "application/geo+json"}
    items = "/ogc/collections/cameras/items"
    big = b'{"type": "Feature", "properties": {"name": "' + b"x" * transactions.MAX_BODY \
        + b'"}, "geometry": null}'
    with psycopg.connect(db_url) as conn:
        (before,) = conn.execute("SELECT count(*) FROM cameras").fetchone()
    with TestClient(create_app(s, db_url)) as c:
        body = is_problem(c.post(items, content=big, headers=auth), 413)
        assert body["limit_bytes"] == transactions.MAX_BODY
        assert f"{transactions.MAX_BODY:,} bytes" in str(body["detail"])

        def chunks() -> Iterator[bytes]:  # chunked, no Content-Length
            for i in range(0, len(big), 1 << 20):
                yield big[i:i + (1 << 20)]

        r = c.put(f"{items}/1", content=chunks(), headers=auth)
        assert "content-length" not in r.request.headers
        assert is_problem(r, 413)["limit_bytes"] == transactions.MAX_BODY
        r = c.patch(f"{items}/1", content=big, headers=auth)
        is_problem(r, 413)
    with psycopg.connect(db_url) as conn:
        (after,) = conn.execute("SELECT count(*) FROM cameras").fetchone()
    assert after == before


# -- bbox: inside the CRS's area, lower corner first, at most GRIDGOV_MAX_BBOX_KM2 ---------


def test_bbox_area_is_computed_on_the_ground() -> None:
    one_degree = features.ItemsQuery(bbox=(118.0, 36.0, 119.0, 37.0))
    # 1° × 1° at 36-37°N: 111.2 km × (111.2 × cos 36.5°) ≈ 9,944 km²
    assert features.bbox_area_km2(one_degree) == pytest.approx(9944, rel=0.005)
    lat_first = features.ItemsQuery(bbox=(36.0, 118.0, 37.0, 119.0),
                                    bbox_crs=features.crs_of(
                                        "http://www.opengis.net/def/crs/EPSG/0/4490", "bbox-crs"))
    assert features.bbox_area_km2(lat_first) == pytest.approx(
        features.bbox_area_km2(one_degree))
    gk = features.ItemsQuery(bbox=(4_000_000, 500_000, 4_010_000, 520_000),
                             bbox_crs=features.crs_of(
                                 "http://www.opengis.net/def/crs/EPSG/0/4548", "bbox-crs"))
    assert features.bbox_area_km2(gk) == pytest.approx(200)
    world = features.ItemsQuery(bbox=(-180, -90, 180, 90))
    assert features.bbox_area_km2(world) == pytest.approx(510_065_622, rel=0.001)
    merc = features.ItemsQuery(bbox=(-20037508.34, -20037508.34, 20037508.34, 20037508.34),
                               bbox_crs=features.crs_of(
                                   "http://www.opengis.net/def/crs/EPSG/0/3857", "bbox-crs"))
    assert features.bbox_area_km2(merc) == pytest.approx(
        features.bbox_area_km2(features.ItemsQuery(bbox=(-180, -85.0511, 180, 85.0511))),
        rel=1e-4)


def test_bbox_over_the_area_limit_is_a_400_naming_it(db_url: str, tmp_path: Path) -> None:
    s = Settings(env="test", data_dir=tmp_path / "data", max_bbox_km2=5_000)
    items = "/ogc/collections/buildings/items"
    with TestClient(create_app(s, db_url)) as c:
        assert c.get(items, params={"f": "json", "bbox": "117.9,36.7,118.1,36.9"}
                     ).status_code == 200  # ~400 km²
        for f in ("json", "html"):
            r = c.get(items, params={"f": f, "bbox": "117,36,119,38"})  # ~40,000 km²
            assert r.status_code == 400, r.text[:300]
            assert "5,000 km²" in r.text and "bbox" in r.text
        r = c.get(items, params={"f": "json", "bbox": "36,117,38,119",
                                 "bbox-crs": "http://www.opengis.net/def/crs/EPSG/0/4490"})
        assert r.status_code == 400 and "5,000 km²" in r.text
        # inverted, outside the CRS's area, not numbers: 400 each, before any SQL
        for bad in ("118.1,36.9,117.9,36.7", "117,36,200,38", "a,b,c,d", "118,36,119"):
            assert c.get(items, params={"f": "json", "bbox": bad}).status_code == 400, bad
    default = Settings()
    assert default.max_bbox_km2 == 1_000_000


def test_gdal_spatial_filters_against_the_bbox_limit(db_url: str, tmp_path: Path,
                                                     served: Any) -> None:
    """A real client: GDAL's -spat becomes the bbox; the territory zoomed out well beyond
    its edges is answered, a box of half of China is refused with the limit named."""
    with psycopg.connect(db_url) as conn:
        x0, y0, x1, y1 = conn.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
            "(SELECT ST_Extent(geom) e FROM micro_grids) s").fetchone()
        (expected,) = conn.execute(
            "SELECT count(*) FROM micro_grids m JOIN grid_generations g "
            "ON g.id = m.generation_id AND g.valid_to IS NULL").fetchone()
    w, h = x1 - x0, y1 - y0
    zoomed_out = (x0 - 5 * w, y0 - 5 * h, x1 + 5 * w, y1 + 5 * h)  # 11× the territory
    env = {**os.environ, "CPL_DEBUG": "ON"}
    s = Settings(env="test", data_dir=tmp_path / "data")
    with served(create_app(s, db_url)) as base:
        ok = subprocess.run(["ogrinfo", "-ro", "-al", "-q", "-fields=NO", "-geom=NO",
                             "-spat", *map(str, zoomed_out), "-oo", "PAGE_SIZE=1000",
                             f"OAPIF:{base}/ogc", "micro_grids"],
                            capture_output=True, text=True, timeout=120, env=env)
        assert ok.returncode == 0 and "ERROR" not in ok.stderr, ok.stderr[-2000:]
        assert "bbox=" in ok.stderr  # the filter reached the server
        assert ok.stdout.count("OGRFeature(micro_grids)") == expected
        refused = subprocess.run(["ogrinfo", "-ro", "-al", "-q", "-spat", "90", "20", "120",
                                  "45", f"OAPIF:{base}/ogc", "micro_grids"],
                                 capture_output=True, text=True, timeout=120, env=env)
    assert "1,000,000 km²" in refused.stdout + refused.stderr, refused.stderr[-2000:]
    assert refused.stdout.count("OGRFeature(micro_grids)") == 0
