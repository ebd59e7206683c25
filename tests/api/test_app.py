"""The server's landing page, health, readiness and problem responses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from api.app import create_app
from api.settings import Settings
from layers.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(db_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(env="test"), db_url)) as c:
        yield c


def test_landing_page_lists_every_layer_with_counts(client: TestClient, db_url: str) -> None:
    r = client.get("/", params={"f": "json"})
    assert r.status_code == 200
    body = r.json()
    layers = {layer["name"]: layer for layer in body["layers"]}
    assert set(layers) >= {"streets", "communities", "micro_grids", "buildings", "parcels",
                           "cameras", "high_points", "sensors"}
    with psycopg.connect(db_url) as conn:
        for name in ("micro_grids", "buildings", "cameras"):
            q = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))
            (n,) = conn.execute(q).fetchone()
            assert layers[name]["count"] == n
    x0, y0, x1, y1 = layers["streets"]["bbox"]
    assert 117.8 < x0 < x1 < 118.3 and 36.6 < y0 < y1 < 37.0
    assert body["generation"]["valid_from"] == "2023-04-01"
    rels = {link["rel"] for link in body["links"]}
    assert {"self", "service-desc", "service-doc", "locate", "nearby", "data"} <= rels
    ogc = next(link["href"] for link in body["links"] if link["rel"] == "data")
    assert client.get(ogc).status_code == 200


def test_landing_page_in_a_browser_is_html(client: TestClient) -> None:
    r = client.get("/", headers={"accept": "text/html"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "微网格" in r.text and "micro_grids" in r.text
    # no script, style or font from outside this server
    assert "http" not in r.text.split("<body>")[0].replace("http-equiv", "")


def test_api_docs_load_only_assets_served_here(client: TestClient) -> None:
    import re

    r = client.get("/docs")
    assert r.status_code == 200 and "swagger" in r.text.lower()
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert len(assets) >= 2
    for url in assets:
        assert url.startswith("/"), url  # this host, never a CDN
        assert client.get(url).status_code == 200, url
    assert client.get("/openapi.json").json()["paths"]["/locate"]


def test_personal_data_is_not_a_layer(client: TestClient) -> None:
    body = client.get("/", params={"f": "json"}).json()
    assert "workers" not in {layer["name"] for layer in body["layers"]}
    assert "phone" not in client.get("/", params={"f": "json"}).text


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"


def test_readiness_fails_when_the_schema_is_behind(fresh_db_url: str) -> None:
    with psycopg.connect(fresh_db_url) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'old'")
    with TestClient(create_app(Settings(env="test"), fresh_db_url)) as c:
        r = c.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert "run migrations" in r.json()["detail"]


def test_unknown_path_is_a_problem(client: TestClient) -> None:
    r = client.get("/no-such-thing")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 404


def test_database_down_is_503_not_500(cluster: object) -> None:
    dead = f"postgresql://gridgov:x@127.0.0.1:{free_port()}/gridgov"
    with TestClient(create_app(Settings(env="test"), dead)) as c:
        r = c.get("/", params={"f": "json"})
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"


def test_gridgov_serve_prints_its_urls_answers_and_stops_on_ctrl_c(db_url: str) -> None:
    port = free_port()
    env = {**os.environ, "GRIDGOV_DATABASE_URL": db_url, "PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "serve", "--host", "127.0.0.1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/", params={"f": "json"}, timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not answer"
                time.sleep(0.3)
        assert r.status_code == 200 and r.json()["layers"]
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/" in out
    assert "database already holds a territory" in out
