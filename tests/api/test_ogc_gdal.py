"""What QGIS-style clients see at /ogc: GDAL's OGC API Features driver and OWSLib.

One real uvicorn server on a free port for the module; GDAL's command-line tools
(``ogrinfo``, ``ogr2ogr`` with the ``OAPIF`` driver) and OWSLib's ``Features`` client
read it, and every count is checked against the database.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from psycopg import sql

from api.app import create_app
from api.settings import Settings
from layers.cluster import free_port
from layers.registry import LAYERS

BOX = (117.99, 36.76, 118.04, 36.80)  # a part of the demo town (CRS84)
CURRENT = "generation_id = (SELECT id FROM grid_generations WHERE valid_to IS NULL)"


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn on a free port in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def ogc(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The OGC API root of a real server on the shared database."""
    app = create_app(Settings(env="test", data_dir=tmp_path_factory.mktemp("gdal")), db_url)
    with served(app) as base:
        yield f"{base}/ogc"


@pytest.fixture(scope="module")
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def count(conn: psycopg.Connection[Any], table: str, where: str = "TRUE", *args: Any) -> int:
    query = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(sql.Identifier(table),
                                                                sql.SQL(where))
    row = conn.execute(query, args).fetchone()
    assert row is not None
    return int(row[0])


def gdal(*args: str) -> str:
    env = {**os.environ, "CPL_DEBUG": "ON", "GDAL_HTTP_TIMEOUT": "30"}
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ERROR" not in r.stderr, r.stderr
    return r.stdout + r.stderr


def fetched(log: str) -> list[str]:
    """The URLs GDAL fetched (from its debug log)."""
    return re.findall(r"HTTP: Fetch\((\S+)\)", log)


def test_ogrinfo_lists_every_layer(ogc: str) -> None:
    out = gdal("ogrinfo", "-ro", "-so", f"OAPIF:{ogc}")
    listed = re.findall(r"^\d+: (\w+) \(title: ", out, re.M)
    assert listed == list(LAYERS)


def test_ogrinfo_counts_the_cameras(ogc: str, conn: psycopg.Connection[Any]) -> None:
    out = gdal("ogrinfo", "-ro", "-al", "-so", f"OAPIF:{ogc}", "cameras")
    assert f"Feature Count: {count(conn, 'cameras')}" in out
    assert "kind: String" in out and "range_m: Real" in out


def test_ogr2ogr_pages_every_micro_grid(ogc: str, conn: psycopg.Connection[Any],
                                       tmp_path: Path) -> None:
    out = tmp_path / "micro_grids.gpkg"
    log = gdal("ogr2ogr", "-f", "GPKG", str(out), f"OAPIF:{ogc}", "micro_grids")
    pages = [u for u in fetched(log) if "/items" in u]
    assert len(pages) > 10 and any("cursor=" in u for u in pages)  # GDAL's 10-item pages
    info = gdal("ogrinfo", "-ro", "-so", "-al", str(out))
    assert f"Feature Count: {count(conn, 'micro_grids', CURRENT)}" in info


def test_ogr2ogr_in_big_pages_like_qgis(ogc: str, conn: psycopg.Connection[Any],
                                        tmp_path: Path) -> None:
    out = tmp_path / "cameras.gpkg"
    log = gdal("ogr2ogr", "-f", "GPKG", "-oo", "PAGE_SIZE=1000", str(out), f"OAPIF:{ogc}",
               "cameras")
    assert sum("/items" in u and "limit=1000" in u for u in fetched(log)) >= 7
    with _gpkg(out) as rows:
        assert sorted(rows) == [r[0] for r in conn.execute(
            "SELECT code FROM cameras ORDER BY code").fetchall()]


@contextmanager
def _gpkg(path: Path) -> Iterator[list[str]]:
    import sqlite3

    db = sqlite3.connect(path)
    try:
        yield [r[0] for r in db.execute("SELECT code FROM cameras")]
    finally:
        db.close()


def test_spatial_filter_reaches_the_server(ogc: str, conn: psycopg.Connection[Any],
                                           tmp_path: Path) -> None:
    out = tmp_path / "box.gpkg"
    x0, y0, x1, y1 = BOX
    log = gdal("ogr2ogr", "-f", "GPKG", "-spat", *map(str, BOX), str(out), f"OAPIF:{ogc}",
               "buildings", "-oo", "PAGE_SIZE=1000")
    urls = [u for u in fetched(log) if "/items" in u]
    assert urls and all("bbox=" in u for u in urls[1:]), urls  # the first is GDAL's probe
    expected = count(conn, "buildings", "ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, "
                                        "4490))", x0, y0, x1, y1)
    assert len(urls) <= 1 + -(-expected // 1000) + 1  # only the box's pages were read
    assert f"Feature Count: {expected}" in gdal("ogrinfo", "-ro", "-so", "-al", str(out))


def test_owslib_features(ogc: str, conn: psycopg.Connection[Any]) -> None:
    from owslib.ogcapi.features import Features

    client = Features(ogc, timeout=30)
    assert [c["id"] for c in client.collections()["collections"]] == list(LAYERS)
    assert client.collection("sensors")["crs"][0].endswith("/OGC/1.3/CRS84")
    page = client.collection_items("cameras", limit=1000)
    assert page["numberMatched"] == count(conn, "cameras")
    assert page["numberReturned"] == len(page["features"]) == 1000
    boxed = client.collection_items("cameras", limit=5000, bbox=list(BOX))
    assert boxed["numberMatched"] == len(boxed["features"]) == count(
        conn, "cameras", "ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4490))", *BOX)
    one = client.collection_item("cameras", str(page["features"][0]["id"]))
    assert one["properties"] == page["features"][0]["properties"]
    queryables = client.collection_queryables("cameras")["properties"]
    assert {"geometry", *LAYERS["cameras"].columns} == set(queryables)
