"""An injection corpus against /locate, /nearby and the OGC items, item and tiles URLs.

Read-only.  Every answer must be a 4xx problem (or an OGC exception under /ogc) or the
correct 200/404, never a 5xx.  The server runs with a 1 s statement timeout: an injected
``pg_sleep`` that ran would come back as a 504, which is counted as a failure too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings

SQL = [
    "' OR '1'='1", "1 OR 1=1", "1; DROP TABLE cameras", "1); DROP TABLE cameras; --",
    "'; SELECT pg_sleep(10); --", "pg_sleep(10)", "(SELECT pg_sleep(10))",
    "1 AND (SELECT 1 FROM pg_sleep(10)) IS NULL",
    "query_to_xml('select * from workers', true, true, '')",
    "(select string_agg(phone, ',') from workers)", "$$ || pg_sleep(10) || $$",
    "cameras\" WHERE pg_sleep(10) IS NULL --", "\\'; SELECT 1; --", "%27%20OR%201=1",
    "\u0000", "name/**/OR/**/1=1", "UNION SELECT phone FROM workers",
]
TRAVERSAL = ["../../../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "..\\..\\windows\\win.ini",
             "%2e%2e/%2e%2e/etc/passwd", "....//....//etc/passwd", "/etc/passwd",
             "cameras/../workers", "file:///etc/passwd"]
NUMBERS = ["NaN", "nan", "Infinity", "-Infinity", "inf", "1e309", "-1e309", "1e308",
           "0x1p3", "", " ", "1,2", "--1", "1e5e5"]
PHONE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")  # a mainland mobile number
BOWTIE = "POLYGON((118 36.7,118.1 36.8,118.1 36.7,118 36.8,118 36.7))"


def huge_polygon(n: int, r: float = 0.05) -> str:
    import math

    ring = [(118.0 + r * math.cos(2 * math.pi * k / n),
             36.8 + r * math.sin(2 * math.pi * k / n)) for k in range(n)]
    ring.append(ring[0])
    return "POLYGON((" + ",".join(f"{x:.7f} {y:.7f}" for x, y in ring) + "))"


def nested(depth: int) -> str:
    return "(" * depth + "name = 'x'" + ")" * depth


FILTERS = [*SQL, "pg_sleep(10) = 1", "name = 'x' OR pg_sleep(10) IS NULL",
           "query_to_xml('select 1', true, true, '') IS NOT NULL", "name = 'x'; DROP TABLE a",
           f"S_INTERSECTS(geometry, {BOWTIE})", f"S_INTERSECTS(geometry, {huge_polygon(2500)})",
           nested(60),
           "S_INTERSECTS(geometry, POINT(NaN NaN))", "S_INTERSECTS(geometry, POINT(inf 36))",
           "S_DWITHIN(geometry, POINT(118 36.8), 1e309, meters)",
           json.dumps({"op": "s_intersects", "args": [{"property": "geometry"},
                       {"type": "Polygon", "coordinates": [[[118, 36.7], [118.1, 36.8],
                                                            [118.1, 36.7], [118, 36.8],
                                                            [118, 36.7]]]}]}),
           json.dumps({"op": "=", "args": [{"function": {"name": "pg_sleep", "args": [10]}},
                                           1]})]


@pytest.fixture(scope="module")
def client(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    s = Settings(env="test", data_dir=tmp_path_factory.mktemp("inj"), statement_timeout_ms=1000)
    with TestClient(create_app(s, db_url), raise_server_exceptions=False) as c:
        yield c


def verdict(r: Any, allowed: set[int]) -> str | None:
    """None when the answer is allowed; else why not."""
    ctype = r.headers.get("content-type", "")
    if r.status_code >= 500:
        return f"{r.status_code}: {r.text[:200]}"
    if r.status_code not in allowed:
        return f"{r.status_code} not in {sorted(allowed)}: {r.text[:200]}"
    text = r.text.replace(r.headers.get("x-request-id", "\0"), "")  # a random hex id may
    # hold eleven digits that look like a phone number
    if PHONE.search(text) or "root:x:0:0" in text:
        return f"leaked: {r.text[:200]}"
    if 400 <= r.status_code < 500:
        body = r.json() if "json" in ctype else None
        if ctype.startswith("application/problem+json") and isinstance(body, dict) and (
                body.get("status") == r.status_code):
            return None
        if r.url.path.startswith("/ogc") and isinstance(body, dict) and (
                "code" in body and "description" in body):
            return None
        return f"{r.status_code} {ctype} is neither a problem nor an OGC exception"
    return None


def run(client: TestClient, cases: list[tuple[str, str, dict[str, Any], set[int]]]) -> None:
    failures = []
    for method, path, kwargs, allowed in cases:
        r = client.request(method, path, **kwargs)
        why = verdict(r, allowed)
        if why:
            failures.append(f"{method} {path} {kwargs.get('params', '')!s:.200}: {why}")
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def inside(db_url: str) -> tuple[float, float]:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p "
                            "FROM micro_grids ORDER BY code LIMIT 1) s").fetchone()


def test_locate_and_nearby(client: TestClient, inside: tuple[float, float]) -> None:
    x, y = inside
    bad = {400}
    cases: list[tuple[str, str, dict[str, Any], set[int]]] = []
    for v in NUMBERS:
        cases.append(("GET", "/locate", {"params": {"lon": v, "lat": y}}, bad | {404}))
        cases.append(("GET", "/locate", {"params": {"lon": x, "lat": v}}, bad | {404}))
        cases.append(("GET", "/nearby", {"params": {"lon": v, "lat": y}}, bad | {200}))
        cases.append(("GET", "/nearby", {"params": {"lon": x, "lat": y, "radius": v}}, bad))
        cases.append(("GET", "/nearby", {"params": {"lon": x, "lat": y, "limit": v}}, bad))
    for v in SQL + TRAVERSAL:
        cases.append(("GET", "/locate", {"params": {"lon": x, "lat": y, "crs": v}}, bad))
        cases.append(("GET", "/locate", {"params": {"lon": x, "lat": y, "at": v}}, bad))
        cases.append(("GET", "/locate", {"params": {"lon": v, "lat": y}}, bad))
        cases.append(("GET", "/nearby", {"params": {"lon": x, "lat": y, "layers": v}}, bad))
        cases.append(("GET", "/nearby", {"params": {"lon": x, "lat": y, "crs": v}}, bad))
    csv = {"headers": {"content-type": "text/csv"}}
    geojson = {"headers": {"content-type": "application/geo+json"}}
    for v in NUMBERS + SQL:
        cases.append(("POST", "/locate", {**csv, "content": f"lon,lat\n{v},{y}\n"}, bad))
    for body in (
        '{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},'
        '"geometry":{"type":"Point","coordinates":[NaN, 36.8]}}]}',
        '{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},'
        '"geometry":{"type":"Point","coordinates":[Infinity, -Infinity]}}]}',
        '{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},'
        '"geometry":{"type":"Point","coordinates":[1e309, 36.8]}}]}',
        json.dumps({"type": "FeatureCollection", "features": [{
            "type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [
                [[118, 36.7], [118.1, 36.8], [118.1, 36.7], [118, 36.8], [118, 36.7]]]}}]}),
        json.dumps({"type": "FeatureCollection", "features": [{
            "type": "Feature", "properties": {}, "geometry": {
                "type": "LineString", "coordinates": [[118 + k * 1e-6, 36.8] for k in
                                                      range(200_000)]}}]}),
    ):
        cases.append(("POST", "/locate", {**geojson, "content": body}, bad))
    # properties are carried through as data; a third coordinate is read as a height and
    # not used (api/locate_io.py does not check its type: never reaches SQL)
    body = json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"x": "'; SELECT pg_sleep(10); --"},
        "geometry": {"type": "Point", "coordinates": [x, y, "pg_sleep(10)"]}}]})
    cases.append(("POST", "/locate", {**geojson, "content": body}, {200, 400}))
    run(client, cases)


def test_ogc_items_item_and_tiles(client: TestClient) -> None:
    items = "/ogc/collections/{}/items"
    cases: list[tuple[str, str, dict[str, Any], set[int]]] = []
    for v in SQL + TRAVERSAL:
        if "\u0000" in v:
            continue  # not a URL path character
        quoted = v.replace("/", "%2F").replace("?", "%3F").replace("#", "%23")
        cases.append(("GET", items.format(quoted), {"params": {"f": "json"}}, {400, 404}))
        cases.append(("GET", items.format("cameras") + "/" + quoted, {"params": {"f": "json"}},
                      {400, 404}))
        cases.append(("GET", f"/ogc/collections/{quoted}/tiles/WebMercatorQuad/14/6400/13600",
                      {}, {400, 404}))
        cases.append(("GET", f"/ogc/collections/buildings/tiles/{quoted}/14/6400/13600",
                      {}, {400, 404}))
        for param in ("sortby", "properties", "crs", "bbox-crs", "datetime", "limit",
                      "offset", "cursor", "filter-lang", "filter-crs", "f"):
            cases.append(("GET", items.format("cameras"), {"params": {param: v}}, {400}))
    for v in NUMBERS:
        cases.append(("GET", items.format("buildings"),
                      {"params": {"f": "json", "bbox": f"{v},36.7,118.1,36.8"}}, {400}))
        cases.append(("GET", items.format("buildings"),
                      {"params": {"f": "json", "limit": v}}, {400}))
        cases.append(("GET", items.format("cameras") + "/" + (v or "%20"),
                      {"params": {"f": "json"}}, {400, 404}))
        for z, row, col in ((v, "0", "0"), ("14", v, "13600"), ("14", "6400", v)):
            if v.strip():
                cases.append(("GET", f"/ogc/collections/buildings/tiles/WebMercatorQuad/"
                              f"{z}/{row}/{col}", {}, {400, 404}))
    for coll, prop in (("roads", "name"), ("events", "state"), ("cameras", "code")):
        for v in ("\x00", "a\x00b", "%00", "'\x00; SELECT pg_sleep(10)"):
            cases.append(("GET", items.format(coll), {"params": {"f": "json", prop: v}},
                          {200, 400}))
    cases.append(("GET", items.format("cameras") + "/1%00", {"params": {"f": "json"}}, {400}))
    for f in FILTERS:
        lang = "cql2-json" if f.startswith("{") else "cql2-text"
        cases.append(("GET", items.format("buildings"), {
            "params": {"f": "json", "filter": f, "filter-lang": lang}}, {400, 413}))
    # the world is over GRIDGOV_MAX_BBOX_KM2 (400); a box of ~800,000 km² around the
    # town with the largest page is answered
    cases.append(("GET", items.format("buildings"), {
        "params": {"f": "json", "bbox": "-180,-90,180,90", "limit": "10000"}}, {400}))
    cases.append(("GET", items.format("buildings"), {
        "params": {"f": "json", "bbox": "113,32,123,40", "limit": "10000"}}, {200}))
    cases.append(("GET", "/ogc/collections/buildings/tiles/WebMercatorQuad/99/0/0", {}, {400,
                                                                                         404}))
    run(client, cases)


def test_a_big_but_allowed_polygon_filter_gives_the_right_answer(
    client: TestClient, db_url: str
) -> None:
    polygon = huge_polygon(400, 0.006)  # ~9,000 characters: under the 10,000 limit
    r = client.get("/ogc/collections/buildings/items", params={
        "f": "json", "filter": f"S_INTERSECTS(geometry, {polygon})", "limit": 10000})
    assert r.status_code == 200, r.text
    got = sorted(f["id"] for f in r.json()["features"])
    with psycopg.connect(db_url) as conn:
        want = [row[0] for row in conn.execute(
            "SELECT id FROM buildings WHERE ST_Intersects(geom, ST_GeomFromText(%s, 4490)) "
            "ORDER BY id", (polygon,))]
    assert 0 < len(want) < 10000 and got == want


def test_the_corpus_left_the_database_as_it_was(client: TestClient, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"cameras", "workers", "buildings", "micro_grids"} <= tables
        assert conn.execute("SELECT count(*) FROM cameras").fetchone()[0] > 0


def test_data_dir_is_not_reachable_through_paths(client: TestClient, tmp_path: Path) -> None:
    for path in ("/ogc/static/../../../../etc/passwd", "/ogc/static/%2e%2e/%2e%2e/etc/passwd",
                 "/static/swagger-ui/../../../etc/passwd", "/ogc/jobs/..%2F..%2Fjobs.json",
                 "/ogc/jobs/../../../etc/passwd/results"):
        r = client.get(path)
        assert r.status_code in (400, 404), (path, r.status_code)
        assert "root:x:0:0" not in r.text


def test_nul_bytes_in_bodies_are_400_not_500(
    fresh_db_url: str, inside: tuple[float, float], tmp_path: Path
) -> None:
    x, y = inside
    with TestClient(create_app(Settings(env="test", data_dir=tmp_path), fresh_db_url),
                    raise_server_exceptions=False) as c:
        r = c.post("/api/v1/events", json={"category": "06010", "lon": x, "lat": y,
                                           "description": "a\u0000b"})
        assert r.status_code in (201, 400), r.text
        if r.status_code == 400:
            assert r.headers["content-type"] == "application/problem+json"
            assert "NUL" in r.json()["detail"]
        body = json.dumps({"type": "FeatureCollection", "features": [{
            "type": "Feature", "properties": {"n": "a\u0000b"},
            "geometry": {"type": "Point", "coordinates": [x, y]}}]})
        r = c.post("/locate", content=body, headers={"content-type": "application/geo+json"})
        assert r.status_code in (200, 400), r.text


def test_a_value_the_database_refuses_is_a_400_problem(db_url: str, tmp_path: Path) -> None:
    """The safety net under every route: psycopg's DataError (here a real one, from a NUL
    byte sent as a text parameter by a route added to this app only) is a 400."""
    app = create_app(Settings(env="test", data_dir=tmp_path), db_url)

    @app.get("/echo")
    async def echo(text: str) -> dict[str, str]:
        async with app.state.pool.connection() as conn:
            cur = await conn.execute("SELECT %s::text", (text.replace("~", "\x00"),))
            return {"text": (await cur.fetchone())[0]}

    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/echo", params={"text": "ab"}).json() == {"text": "ab"}
        r = c.get("/echo", params={"text": "a~b"})
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["title"] == "Invalid value" and "NUL" in r.json()["detail"]
        r = c.get("/echo", params={"text": "a\x00b"})  # a NUL in the URL: refused at the edge
        assert r.status_code == 400 and "NUL" in r.json()["detail"]
