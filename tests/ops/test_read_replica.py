"""Reads from a streaming replica (``GRIDGOV_DATABASE_REPLICA_URLS``), writes to the primary.

A primary and a standby of its own (``pg_basebackup -R``), both under .data on free
ports; the app is given the primary's URL and the standby's, with the reader role's
credentials (SELECT on the published views only), as its replica.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.database import seed_town
from api.settings import Settings
from layers import db
from layers.auth import create_token
from layers.cluster import LocalCluster, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[LocalCluster, LocalCluster, str, str]]:
    base = ROOT / ".data" / f"test-replica-{os.getpid()}"
    primary = LocalCluster(datadir=base / "primary", port=free_port())
    standby = LocalCluster(datadir=base / "standby", port=free_port())
    standby.destroy()
    primary.destroy()
    primary.init()
    primary.start()
    try:
        db.provision(primary.url("postgres"), "gridgov", "gridgov", primary.password)
        url = primary.url("gridgov", user="gridgov")
        db.migrate(url)
        seed_town(url, seed=2023)
        standby = primary.standby(base / "standby", standby.port)
        standby.start()
        yield primary, standby, url, standby.url("gridgov", user="gridgov_reader")
    finally:
        standby.destroy()
        primary.destroy()
        shutil.rmtree(base, ignore_errors=True)


def camera(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {"code": "CAMREPLICA01", "name": "replica test", "kind": "fixed",
                           "heading_deg": 90.0, "fov_deg": 70.0, "range_m": 120.0,
                           "mount_height_m": 6.0, "high_point_id": None}}


def test_reads_go_to_the_standby_and_writes_to_the_primary(
    pair: tuple[LocalCluster, LocalCluster, str, str], tmp_path: Path
) -> None:
    primary, standby, primary_url, replica_url = pair
    with psycopg.connect(replica_url) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        x, y = conn.execute("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p "
                            "FROM micro_grids ORDER BY code LIMIT 1) s").fetchone()
    with db.connect(primary_url) as conn:
        token = create_token(conn, "replica tester", "officer")
        conn.commit()
    settings = Settings(env="test", data_dir=tmp_path, debug_headers=True,
                        database_replica_urls=[replica_url])
    with TestClient(create_app(settings, primary_url)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.headers["gridgov-read-replica"] == "true"  # answered by the standby

        near = {"lon": x, "lat": y, "radius": 50, "layers": "cameras", "limit": 1000}
        before = client.get("/nearby", params=near).json()["features"]
        assert "CAMREPLICA01" not in {f["properties"].get("code") for f in before}
        # a write through the app goes to the primary (the standby refuses writes) ...
        r = client.post("/ogc/collections/cameras/items", json=camera(x, y),
                        headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 201, r.text
        with psycopg.connect(primary_url) as conn:
            assert conn.execute("SELECT count(*) FROM cameras WHERE code = 'CAMREPLICA01'"
                                ).fetchone()[0] == 1
        # ... and becomes visible through the read path once the standby replays it
        deadline = time.monotonic() + 30
        while True:
            got = client.get("/nearby", params=near)
            assert got.status_code == 200
            if "CAMREPLICA01" in {f["properties"].get("code") for f in got.json()["features"]}:
                break
            assert time.monotonic() < deadline, "the write never reached the standby"
            time.sleep(0.1)

        metrics = client.get("/metrics").text
        assert 'gridgov_pool_connections{pool="replica"}' in metrics

        # with the primary stopped, the read routes still answer, from the standby
        primary.stop()
        try:
            assert client.get("/locate", params={"lon": x, "lat": y}).status_code == 200
            r = client.post("/locate", content=f"lon,lat\n{x},{y}\n",
                            headers={"content-type": "text/csv"})
            assert r.status_code == 200 and r.text.count("\n") == 2
            assert client.get("/nearby", params=near).status_code == 200
            assert client.get("/", params={"f": "json"}).status_code == 200
            # the OGC read paths too: our items, pygeoapi's HTML, a tile, the events
            items = client.get("/ogc/collections/cameras/items",
                               params={"bbox": f"{x - 1e-3},{y - 1e-3},{x + 1e-3},{y + 1e-3}"})
            assert items.status_code == 200
            assert "CAMREPLICA01" in {f["properties"]["code"]
                                      for f in items.json()["features"]}
            html = client.get("/ogc/collections/cameras/items", params={"f": "html",
                                                                        "limit": 2})
            assert html.status_code == 200 and "<html" in html.text.lower()
            assert client.get("/api/v1/events").status_code == 200
            assert client.get("/open311/v2/services.json").status_code == 200
            assert client.get("/readyz").status_code == 200
            # while a write, which needs the primary, is a 503 problem
            w = client.post("/ogc/collections/cameras/items", json=camera(x + 1e-4, y),
                            headers={"Authorization": f"Bearer {token}"})
            assert w.status_code == 503, w.text
            assert w.headers["content-type"] == "application/problem+json"
        finally:
            primary.start()


def test_without_replicas_reads_use_the_primary(db_url: str, tmp_path: Path) -> None:
    with TestClient(create_app(Settings(env="test", data_dir=tmp_path, debug_headers=True),
                               db_url)) as client:
        assert client.get("/readyz").headers["gridgov-read-replica"] == "false"
        assert 'gridgov_pool_connections{pool="reader"}' in client.get("/metrics").text
