"""What QGIS-style clients see at /ogc: GDAL's OGC API Features driver and OWSLib.

One real uvicorn server on a free port for the module; GDAL's command-line tools
(``ogrinfo``, ``ogr2ogr`` with the ``OAPIF`` driver) and OWSLib's ``Features`` client
read it, and every count is checked against the database.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from psycopg import sql

from api.app import create_app
from api.settings import Settings
from layers.registry import LAYERS

Served = Callable[[Any], AbstractContextManager[str]]  # the `served` fixture (conftest)
BOX = (117.99, 36.76, 118.04, 36.80)  # a part of the demo town (CRS84)
CURRENT = "generation_id = (SELECT id FROM grid_generations WHERE valid_to IS NULL)"


@pytest.fixture(scope="module")
def ogc(db_url: str, tmp_path_factory: pytest.TempPathFactory, served: Served
        ) -> Iterator[str]:
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


def test_owslib_follows_next_links_through_a_box(ogc: str, conn: psycopg.Connection[Any]
                                                 ) -> None:
    """OWSLib's Features client pages through the cameras in a box as a client does: the
    query of each page's ``next`` link (offset and keyset cursor) as the next call's."""
    from owslib.ogcapi.features import Features

    rows = conn.execute(
        "SELECT id FROM cameras WHERE ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, "
        "4490)) ORDER BY id", BOX).fetchall()
    expected = [r[0] for r in rows]
    limit = len(expected) // 3 + 1  # three pages, the last one short
    client = Features(ogc, timeout=30)
    params: dict[str, Any] = {"limit": limit, "bbox": list(BOX)}
    seen: list[int] = []
    cursors = 0
    for _ in range(10):
        page = client.collection_items("cameras", **params)
        assert page["numberMatched"] == len(expected)
        assert page["numberReturned"] == len(page["features"]) <= limit
        seen += [f["id"] for f in page["features"]]
        following = [x["href"] for x in page["links"] if x["rel"] == "next"]
        if not following:
            break
        query = {k: v[0] for k, v in parse_qs(urlsplit(following[0]).query).items()}
        cursors += "cursor" in query
        # OWSLib joins a bbox list itself: give it back the numbers
        params = {**query, "bbox": [float(v) for v in query["bbox"].split(",")]}
    assert seen == expected
    assert cursors == 2  # two next links, both keyset reads


def test_owslib_reads_what_the_items_paths_accept(ogc: str) -> None:
    """The OpenAPI document OWSLib finds (the landing page's service-desc) lists our own
    parameters on the items paths, and a request built from it is answered."""
    from owslib.ogcapi.features import Features

    client = Features(ogc, timeout=30)
    doc = client.api()
    shared = doc["components"]["parameters"]
    listed = {p["$ref"].rsplit("/", 1)[-1] if "$ref" in p else p["name"]
              for p in doc["paths"]["/collections/cameras/items"]["get"]["parameters"]}
    for name in ("cursor", "filter", "filter-lang", "filter-crs", "sortby", "limit"):
        assert name in listed and shared[name]["in"] == "query", name
    assert shared["filter-lang"]["schema"]["enum"] == ["cql2-text", "cql2-json"]
    page = client.collection_items("cameras", limit=3, sortby=("code", "desc"),
                                   filter="kind = 'dome'",
                                   **{"filter-lang": shared["filter-lang"]["schema"]["enum"][0]})
    codes = [f["properties"]["code"] for f in page["features"]]
    assert codes == sorted(codes, reverse=True) and len(codes) == 3
    assert {f["properties"]["kind"] for f in page["features"]} == {"dome"}
