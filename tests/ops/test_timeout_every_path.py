"""``statement_timeout`` on every family of request paths, proven by a real slow statement:
another session holds an ACCESS EXCLUSIVE lock on the table a path reads or writes, the
request's statement waits on it, and the server's timeout (2 s here) cancels the wait:
a 504 naming the limit, within a few seconds, and the path works again once the lock is
gone.  A path without the timeout would wait as long as the lock is held; the client
gives up after CLIENT_TIMEOUT seconds and the test fails.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from conftest import EventTown
from psycopg import sql

from api.app import create_app
from api.settings import Settings

TIMEOUT_MS = 2000  # long enough for any path here to answer on a loaded machine
CLIENT_TIMEOUT = 15.0


@pytest.fixture
def slow(event_town: EventTown, served: Any, tmp_path: Any) -> Iterator[tuple[str, EventTown]]:
    s = Settings(env="test", data_dir=tmp_path / "data", statement_timeout_ms=TIMEOUT_MS,
                 intake_limit=10_000, GRIDGOV_PHOTOS_DIR=tmp_path / "photos")
    with served(create_app(s, event_town.url)) as base:
        yield base, event_town


def tile_of(lon: float, lat: float, z: int) -> str:
    n = 2 ** z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return f"{z}/{y}/{x}"


def paths(t: EventTown, eid: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(table to lock, method, path, request arguments) for each path family."""
    lon, lat = t.point
    tile = tile_of(lon, lat, 15)
    with psycopg.connect(t.url) as conn:
        (parcel,) = conn.execute("SELECT min(id) FROM parcels").fetchone()
    return [
        ("events", "GET", "/api/v1/events", {"headers": t.auth["dispatcher"]}),
        ("events", "GET", f"/api/v1/events/{eid}", {}),
        ("events", "POST", "/api/v1/events", {"json": {
            "category": "06010", "lon": lon, "lat": lat}, "headers": t.auth["resident"]}),
        ("events", "GET", "/api/v1/metrics", {"params": {"level": "community"},
                                              "headers": t.auth["officer"]}),
        ("events", "GET", "/open311/v2/requests.json", {}),
        ("events", "GET", "/screen/data.json", {}),
        ("micro_grids", "GET", f"/m/g/{t.grid}", {}),
        ("buildings", "GET", "/ogc/collections/buildings/items", {"params": {"f": "json"}}),
        ("buildings", "GET", "/ogc/collections/buildings/items/1", {"params": {"f": "json"}}),
        ("buildings", "GET", f"/ogc/collections/buildings/tiles/WebMercatorQuad/{tile}", {}),
        ("parcels", "PATCH", f"/ogc/collections/parcels/items/{parcel}", {
            "content": json.dumps({"properties": {"permit_no": "超时-1"}}),
            "headers": {**t.auth["officer"], "content-type": "application/geo+json"}}),
    ]


def test_every_path_family_is_cut_by_the_statement_timeout(
    slow: tuple[str, EventTown]
) -> None:
    base, t = slow
    eid = t.post("resident", "/api/v1/events", json={
        "category": "06010", "lon": t.point[0], "lat": t.point[1]}).json()["id"]
    with httpx.Client(base_url=base, timeout=CLIENT_TIMEOUT) as c:
        for table, method, path, kw in paths(t, eid):
            ok = c.request(method, path, **kw)
            assert ok.status_code < 400, (path, ok.status_code, ok.text[:300])
            with psycopg.connect(t.url) as blocker:
                blocker.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                    sql.Identifier(table)))
                r = c.request(method, path, **kw)
            assert r.status_code == 504, (path, r.status_code, r.text[:300])
            assert f"{TIMEOUT_MS} ms" in r.text, (path, r.text[:300])
            again = c.request(method, path, **kw)
            assert again.status_code < 400, (path, again.status_code, again.text[:300])


def test_pygeoapi_rendered_pages_are_cut_too(slow: tuple[str, EventTown]) -> None:
    base, t = slow
    path = "/ogc/collections/buildings/items"
    with httpx.Client(base_url=base, timeout=CLIENT_TIMEOUT) as c:
        assert c.get(path, params={"f": "html"}).status_code == 200
        with psycopg.connect(t.url) as blocker:
            blocker.execute("LOCK TABLE buildings IN ACCESS EXCLUSIVE MODE")
            r = c.get(path, params={"f": "html"})
        assert r.status_code == 504, r.text[:300]
        assert c.get(path, params={"f": "html"}).status_code == 200
