"""The documented limits: each answered with a 4xx problem, and the README's table true."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from api import locate_io
from api.app import create_app
from api.ogc import transactions
from api.settings import Settings
from layers import cql2, features, nearby

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
    shows("wait for a pooled connection (s)", defaults.pool_timeout)
