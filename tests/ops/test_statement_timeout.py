"""A statement that runs past ``GRIDGOV_STATEMENT_TIMEOUT_MS`` is cancelled: 504 problem."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from api.app import create_app
from api.settings import Settings


@pytest.fixture
def client(fresh_db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    s = Settings(env="test", data_dir=tmp_path, statement_timeout_ms=300)
    with TestClient(create_app(s, fresh_db_url)) as c:
        yield c


def point(url: str) -> dict[str, float]:
    with psycopg.connect(url) as conn:
        x, y = conn.execute("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p "
                            "FROM micro_grids ORDER BY code LIMIT 1) s").fetchone()
    return {"lon": x, "lat": y}


@pytest.mark.parametrize(("table", "path"), [
    ("micro_grid_parts", "/locate"),
    ("cameras", "/nearby"),
    ("grid_generations", "/"),
])
def test_a_statement_past_the_timeout_is_a_504_problem(
    client: TestClient, fresh_db_url: str, table: str, path: str
) -> None:
    params = {**point(fresh_db_url), "f": "json"}
    assert client.get(path, params=params).status_code == 200
    with psycopg.connect(fresh_db_url) as blocker:  # holds the table until the block ends
        blocker.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
            sql.Identifier(table)))
        r = client.get(path, params=params)
        assert r.status_code == 504, r.text
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["title"] == "Statement timeout" and body["limit_ms"] == 300
        assert "300 ms" in body["detail"] and body["request_id"] == r.headers["x-request-id"]
    assert client.get(path, params=params).status_code == 200  # the pool carries on


def test_the_batch_lookup_is_cancelled_before_it_streams(
    client: TestClient, fresh_db_url: str
) -> None:
    p = point(fresh_db_url)
    body = f"lon,lat\n{p['lon']},{p['lat']}\n"
    with psycopg.connect(fresh_db_url) as blocker:
        blocker.execute("LOCK TABLE grid_generations IN ACCESS EXCLUSIVE MODE")
        r = client.post("/locate", content=body, headers={"content-type": "text/csv"})
        assert r.status_code == 504 and r.json()["title"] == "Statement timeout"
    r = client.post("/locate", content=body, headers={"content-type": "text/csv"})
    assert r.status_code == 200 and r.text.count("\n") == 2
