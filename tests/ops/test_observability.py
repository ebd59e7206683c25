"""Request ids, the JSON access log, ``/metrics``, health and readiness probes."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.observability import JsonFormatter
from api.settings import Settings

POINT = {"lon": 118.03, "lat": 36.78}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("obs")


@pytest.fixture(scope="module")
def client(db_url: str, data_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(env="test", data_dir=data_dir), db_url)) as c:
        yield c


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(got: dict[Any, float], name: str, **labels: str) -> float:
    return got.get((name, tuple(sorted(labels.items()))), 0.0)


def a_point(db_url: str) -> dict[str, float]:
    with psycopg.connect(db_url) as conn:
        x, y = conn.execute("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p "
                            "FROM micro_grids ORDER BY code LIMIT 1) s").fetchone()
    return {"lon": x, "lat": y}


def test_request_id_is_echoed_when_sane_and_made_when_not(client: TestClient) -> None:
    r = client.get("/healthz", headers={"X-Request-Id": "abc-123_x.y:z"})
    assert r.headers["x-request-id"] == "abc-123_x.y:z"
    for bad in ("a b", "x" * 129, "<script>", "é".encode(), "id\x7f"):
        r = client.get("/healthz", headers={"X-Request-Id": bad})
        rid = r.headers["x-request-id"]
        assert rid != bad and len(rid) == 32 and rid.isalnum()
    one, two = client.get("/healthz"), client.get("/healthz")
    assert one.headers["x-request-id"] != two.headers["x-request-id"]


def test_problem_bodies_carry_the_request_id(client: TestClient) -> None:
    r = client.get("/locate", params={"lon": "x", "lat": 1}, headers={"X-Request-Id": "req-1"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["request_id"] == "req-1" and r.headers["x-request-id"] == "req-1"
    r = client.get("/no/such/path", headers={"X-Request-Id": "req-2"})
    assert r.status_code == 404 and r.json()["request_id"] == "req-2"


def test_one_access_log_record_per_request_with_the_route_template(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="gridgov.access"):
        client.get("/ogc/collections/cameras", params={"f": "json"},
                   headers={"X-Request-Id": "log-1"})
    records = [r for r in caplog.records if r.name == "gridgov.access"]
    assert len(records) == 1
    rec = records[0]
    assert rec.request_id == "log-1" and rec.method == "GET" and rec.status == 200
    assert rec.route == "/ogc/collections/{collection_id}"
    assert rec.path == "/ogc/collections/cameras" and rec.duration_ms > 0
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["route"] == "/ogc/collections/{collection_id}" and doc["status"] == 200
    assert doc["request_id"] == "log-1" and doc["level"] == "info"
    assert doc["logger"] == "gridgov.access" and doc["duration_ms"] > 0


def test_request_metrics_are_per_route_template(client: TestClient, db_url: str) -> None:
    before = samples(client)
    point = a_point(db_url)
    for dx in (0.0, 1e-6, 2e-6):  # three raw paths, one route
        r = client.get("/locate", params={"lon": point["lon"] + dx, "lat": point["lat"]})
        assert r.status_code == 200, r.text
    client.get("/ogc/collections/cameras/items/1", params={"f": "json"})
    client.get("/ogc/collections/buildings/items/999999999", params={"f": "json"})
    client.get("/nothing/here/1")
    client.get("/nothing/here/2")
    after = samples(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("gridgov_http_requests_total", method="GET", route="/locate",
                 status="200") == 3
    assert delta("gridgov_http_request_duration_seconds_count", method="GET",
                 route="/locate") == 3
    assert delta("gridgov_http_request_duration_seconds_sum", method="GET",
                 route="/locate") > 0
    item = "/ogc/collections/{collection_id}/items/{feature_id}"
    assert delta("gridgov_http_requests_total", method="GET", route=item, status="200") == 1
    assert delta("gridgov_http_requests_total", method="GET", route=item, status="404") == 1
    assert delta("gridgov_http_requests_total", method="GET", route="<unmatched>",
                 status="404") == 2
    routes = {dict(labels).get("route") for (name, labels) in after
              if name == "gridgov_http_requests_total"}
    assert not any(r and ("cameras" in r or "/nothing" in r) for r in routes), routes


def test_pool_job_and_database_gauges(client: TestClient, db_url: str) -> None:
    got = samples(client)
    assert value(got, "gridgov_pool_connections_max", pool="primary") == 8
    assert value(got, "gridgov_pool_connections", pool="primary") >= 1
    assert ("gridgov_pool_requests_total", (("pool", "primary"),)) in got
    with psycopg.connect(db_url) as conn:
        (generation,) = conn.execute(
            "SELECT id FROM grid_generations WHERE valid_to IS NULL").fetchone()
        (size,) = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert value(got, "gridgov_grid_generation_current") == generation
    assert value(got, "gridgov_database_size_bytes") == pytest.approx(size, rel=0.2)
    assert value(got, "gridgov_ogc_job_queue") == 0
    with psycopg.connect(db_url) as conn:
        by_state = dict(conn.execute("SELECT state, count(*) FROM events GROUP BY state"))
    assert {dict(labels)["state"]: v for (name, labels), v in got.items()
            if name == "gridgov_events"} == by_state
    assert "# HELP gridgov_events Events by state" in client.get("/metrics").text


def test_job_queue_counts_the_job_managers_records(client: TestClient, db_url: str) -> None:
    point = a_point(db_url)
    r = client.post("/ogc/processes/locate/execution",
                    json={"inputs": {"points": [[point["lon"], point["lat"]]]}},
                    headers={"Prefer": "respond-async"})
    assert r.status_code == 201, r.text
    location = r.headers["location"]
    deadline = time.monotonic() + 30
    while client.get(location).json()["status"] in ("accepted", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    deadline = time.monotonic() + 10
    while value(samples(client), "gridgov_ogc_jobs", status="successful") < 1:
        assert time.monotonic() < deadline  # written to the file within the interval
        time.sleep(0.1)
    assert client.delete(location).status_code == 200


def test_a_failing_database_gauge_is_counted_not_fatal(
    fresh_db_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(fresh_db_url) as conn:
        conn.execute("DROP TABLE api_tokens CASCADE")  # and its published view
    with TestClient(create_app(Settings(env="test", data_dir=tmp_path), fresh_db_url)) as c:
        got = samples(c)
    assert value(got, "gridgov_metrics_query_errors_total",
                 gauge="gridgov_api_tokens_active") == 1
    assert value(got, "gridgov_grid_generation_current") > 0  # the others still answer


def test_health_and_readiness_probes(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    assert "gridgov-read-replica" not in r.headers  # debug header off by default
