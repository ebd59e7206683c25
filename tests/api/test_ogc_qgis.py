"""QGIS itself reads /ogc: its OAPIF provider, run by Debian's python3 with python3-qgis.

The real app runs under uvicorn on a free port; each check starts Debian's
``/usr/bin/python3`` (not the venv: the QGIS bindings live in the system Python) with
the small QGIS script below, which loads a layer through the ``OAPIF`` provider the way
Layer > Add WFS / OGC API - Features layer does, iterates every feature and prints JSON.
A recorder around the app keeps the requests QGIS sent, so the tests also show how
QGIS pages (its ``limit``, whether it follows ``next``, whether ``bbox`` reaches the
server) and that it trusted ``numberMatched`` for the layer's feature count.

QGIS 3.22 (Debian 12) has no OGC API - Features Part 2 support: the OAPIF provider's CRS
is always EPSG:4326 (lon/lat, i.e. CRS84), it never sends ``crs`` or ``bbox-crs``, and
a ``srsname`` in the URI is ignored.  An officer working in EPSG:4548 gets the features
reprojected by QGIS; ``test_qgis_reprojects_to_gauss_kruger`` checks exactly that, and
asks the server for EPSG:4548 only if the installed QGIS offers it.

Fails when ``/usr/bin/python3`` cannot import ``qgis.core`` (``make os-deps`` installs
``python3-qgis``): a broken set-up, not a reason to skip.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import psycopg
import pytest
from psycopg import sql

from api.app import create_app
from api.settings import Settings

Served = Callable[[Any], AbstractContextManager[str]]  # the `served` fixture (conftest)
QGIS_PYTHON = "/usr/bin/python3"
RUN_TIMEOUT = 120  # seconds per QGIS run; a run takes a few seconds

# Run by Debian's python3: load one OAPIF layer, iterate it, print one JSON object.
QGIS_SCRIPT = r"""
import json, sys
from qgis.core import (Qgis, QgsApplication, QgsCoordinateReferenceSystem,
                       QgsCoordinateTransformContext, QgsFeatureRequest, QgsRectangle,
                       QgsVectorLayer)

job = json.loads(sys.argv[1])
app = QgsApplication([], False)
app.setPrefixPath("/usr", True)
app.initQgis()
messages = []
QgsApplication.messageLog().messageReceived.connect(
    lambda msg, tag, level: messages.append(f"[{tag}] {msg}"))

uri = f"url='{job['url']}' typename='{job['collection']}'" + job.get("extra", "")
layer = QgsVectorLayer(uri, job["collection"], "OAPIF")
out = {"qgis": Qgis.QGIS_VERSION, "uri": uri, "valid": layer.isValid()}
if layer.isValid():
    out["crs"] = layer.crs().authid()
    out["fields"] = layer.fields().names()
    out["count_before"] = layer.featureCount()  # before any iteration: numberMatched
    e = layer.extent()  # before any iteration: the collection's extent
    out["extent"] = [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()]
    request = QgsFeatureRequest()
    if job.get("bbox"):
        request.setFilterRect(QgsRectangle(*job["bbox"]))  # in the layer's CRS
        request.setFlags(QgsFeatureRequest.ExactIntersect)
    if job.get("to_crs"):
        request.setDestinationCrs(QgsCoordinateReferenceSystem(job["to_crs"]),
                                  QgsCoordinateTransformContext())
    codes, points = [], {}
    for f in layer.getFeatures(request):
        code = f["code"] if "code" in out["fields"] else str(f.id())
        codes.append(code)
        if job.get("points") and f.hasGeometry():
            p = f.geometry().asPoint()
            points[code] = [p.x(), p.y()]
    out["codes"] = codes
    out["points"] = points
    out["count_after"] = layer.featureCount()
    error = layer.dataProvider().error()  # QgsError.message() crashes when empty
    out["provider_error"] = "" if error.isEmpty() else error.summary()
QgsApplication.processEvents()  # messages from the provider's download thread
out["messages"] = messages
sys.stderr.write("\n".join(messages) + "\n")
print(json.dumps(out), flush=True)
del layer  # before exitQgis: a layer outliving the registry crashes at exit
app.exitQgis()
"""


# -- the server and what it was asked --------------------------------------------------


@dataclass
class Recorder:
    """An ASGI wrapper keeping (path, query, status) of every HTTP request."""

    app: Any
    seen: list[tuple[str, str, int]] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [0]

        async def keep(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, keep)
        finally:
            self.seen.append((scope["path"], scope["query_string"].decode(), status[0]))


@pytest.fixture(scope="session")  # session: checked before the database is set up
def qgis_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment for Debian's python3 with QGIS; fails when it cannot import qgis."""
    home = tmp_path_factory.mktemp("qgis")
    runtime = home / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(home),
           "QGIS_CUSTOM_CONFIG_PATH": str(home), "XDG_RUNTIME_DIR": str(runtime),
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):  # the venv's, not Debian's
        env.pop(name, None)
    # `make test` installs python3-qgis (Makefile OS_PACKAGES): missing bindings are a
    # broken set-up, not a reason to skip
    assert Path(QGIS_PYTHON).exists(), f"{QGIS_PYTHON} missing (QGIS needs Debian's python3)"
    probe = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], env=env,
                           capture_output=True, text=True, timeout=60)
    last = (probe.stderr.strip().splitlines() or ["no error output"])[-1]
    assert probe.returncode == 0, (f"{QGIS_PYTHON} cannot import qgis.core (install "
                                   f"python3-qgis, as `make os-deps` does): {last}")
    return env


@pytest.fixture(scope="module")
def server(db_url: str, tmp_path_factory: pytest.TempPathFactory, served: Served
           ) -> Iterator[tuple[str, Recorder]]:
    settings = Settings(env="test", data_dir=tmp_path_factory.mktemp("ogc-qgis"))
    recorder = Recorder(create_app(settings, db_url))
    with served(recorder) as base:
        yield base + "/ogc", recorder


def qgis(env: dict[str, str], recorder: Recorder, **job: Any
         ) -> tuple[dict[str, Any], list[tuple[str, str, int]]]:
    """Run the QGIS script for ``job``; its JSON and the requests the server saw."""
    recorder.seen.clear()
    run = subprocess.run([QGIS_PYTHON, "-c", QGIS_SCRIPT, json.dumps(job)], env=env,
                         capture_output=True, text=True, timeout=RUN_TIMEOUT)
    seen = list(recorder.seen)
    assert run.returncode == 0, (f"QGIS failed ({run.returncode}):\n{run.stderr[-4000:]}\n"
                                 f"requests: {seen}")
    out: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    out["stderr"] = run.stderr[-4000:]
    return out, seen


def items_requests(seen: list[tuple[str, str, int]], collection: str
                   ) -> list[tuple[dict[str, list[str]], int]]:
    """The query parameters and status of each items request for ``collection``."""
    path = f"/ogc/collections/{collection}/items"
    return [(parse_qs(q), s) for p, q, s in seen if p.rstrip("/") == path]


def diagnose(out: dict[str, Any], seen: list[tuple[str, str, int]]) -> str:
    """The failure message: what QGIS said and what the server was asked."""
    brief = {k: v for k, v in out.items() if k not in ("codes", "points")}
    return f"QGIS: {json.dumps(brief, ensure_ascii=False)}\nrequests: {seen}"


# -- the truth, from the database ------------------------------------------------------

# CRS84 and EPSG:4490 are numerically the same lon/lat: a CRS84 bbox is an envelope in 4490.
PUBLISHED = {
    "cameras": sql.SQL("SELECT {cols} FROM cameras m WHERE {where}"),
    "micro_grids": sql.SQL("SELECT {cols} FROM micro_grids m JOIN grid_generations g "
                           "ON g.id = m.generation_id WHERE g.valid_to IS NULL AND {where}"),
}


def db_codes(db_url: str, collection: str, bbox: tuple[float, ...] | None = None
             ) -> list[str]:
    where, params = "true", ()
    if bbox is not None:
        where, params = "ST_Intersects(m.geom, ST_MakeEnvelope(%s, %s, %s, %s, 4490))", bbox
    with psycopg.connect(db_url) as conn:
        query = PUBLISHED[collection].format(cols=sql.SQL("m.code"), where=sql.SQL(where))
        rows = conn.execute(query, params).fetchall()
    return [r[0] for r in rows]


def db_extent(db_url: str, collection: str) -> tuple[float, float, float, float]:
    """The published features' extent (lon/lat)."""
    published = PUBLISHED[collection].format(cols=sql.SQL("ST_Extent(m.geom) AS e"),
                                             where=sql.SQL("true"))
    with psycopg.connect(db_url) as conn:
        row = conn.execute(sql.SQL("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
                                   "FROM ({}) s").format(published)).fetchone()
    assert row is not None
    return row


def middle_bbox(db_url: str, collection: str) -> tuple[float, ...]:
    """The middle third of the collection's extent (lon/lat, 6 decimals)."""
    x0, y0, x1, y1 = db_extent(db_url, collection)
    dx, dy = (x1 - x0) / 3, (y1 - y0) / 3
    return tuple(round(v, 6) for v in (x0 + dx, y0 + dy, x1 - dx, y1 - dy))


# -- the checks ------------------------------------------------------------------------


@pytest.mark.parametrize("collection", ["cameras", "micro_grids"])
def test_qgis_loads_every_feature(qgis_env: dict[str, str], collection: str, db_url: str,
                                  server: tuple[str, Recorder]) -> None:
    url, recorder = server
    out, seen = qgis(qgis_env, recorder, url=url, collection=collection)
    why = diagnose(out, seen)
    expected = db_codes(db_url, collection)
    assert out["valid"], why
    assert out["crs"] == "EPSG:4326", why  # QGIS's name for the CRS84 it reads
    assert "code" in out["fields"], why
    # the layer's count before any download is the server's numberMatched, trusted
    assert out["count_before"] == len(expected), why
    assert len(out["codes"]) == len(expected), why
    assert sorted(out["codes"]) == sorted(expected), why
    assert out["count_after"] == len(expected), why
    assert out["extent"] == pytest.approx(db_extent(db_url, collection), abs=1e-6), why
    items = items_requests(seen, collection)
    assert items and all(status == 200 for _, status in items), why
    # QGIS probes with `limit=10` when it opens the layer, then pages following `next`
    # (which keeps its `limit`) until a page has no `next`: each page once, none skipped
    pages = [q for q, _ in items[1:]]
    limit = int(pages[0]["limit"][0])
    # it takes its page size from the OpenAPI document's components.parameters.limit
    # (maximum 10,000): 1,000, not the 100 it falls back to without it
    assert limit == 1000, why
    assert all(q["limit"] == [str(limit)] for q in pages), why
    assert len({json.dumps(q, sort_keys=True) for q in pages}) == len(pages), why
    assert len(pages) in (math.ceil(len(expected) / limit),
                          math.ceil(len(expected) / limit) + 1), why  # + an empty last page


@pytest.mark.parametrize("collection", ["cameras", "micro_grids"])
def test_qgis_bbox_reaches_the_server(qgis_env: dict[str, str], collection: str,
                                      db_url: str, server: tuple[str, Recorder]) -> None:
    url, recorder = server
    bbox = middle_bbox(db_url, collection)
    # restrictToRequestBBOX: the "Only request features overlapping the view extent"
    # box; without it QGIS 3.22 downloads the whole layer and filters it itself
    out, seen = qgis(qgis_env, recorder, url=url, collection=collection, bbox=bbox,
                     extra=" restrictToRequestBBOX='1'")
    why = diagnose(out, seen)
    expected = db_codes(db_url, collection, bbox)
    assert 0 < len(expected) < len(db_codes(db_url, collection)), bbox
    assert out["valid"], why
    assert sorted(out["codes"]) == sorted(expected), why
    # every page QGIS fetched for the map extent carried the bbox (so `next` kept it):
    # the server filtered; QGIS did not download the whole layer and filter it itself
    pages = [q for q, _ in items_requests(seen, collection)[1:]]  # after the probe
    assert pages, why
    for query in pages:
        assert query.get("bbox"), why
        assert [float(v) for v in query["bbox"][0].split(",")] == pytest.approx(bbox), why
    limit = int(pages[0]["limit"][0])
    assert len(pages) <= math.ceil(len(expected) / limit) + 1, why


def test_qgis_reprojects_to_gauss_kruger(qgis_env: dict[str, str], db_url: str,
                                         server: tuple[str, Recorder]) -> None:
    """An officer's EPSG:4548 project: the sensors land where PostGIS puts them."""
    url, recorder = server
    out, seen = qgis(qgis_env, recorder, url=url, collection="sensors",
                     extra=" srsname='EPSG:4548'", to_crs="EPSG:4548", points=True)
    why = diagnose(out, seen)
    assert out["valid"], why
    requested = [q for q, _ in items_requests(seen, "sensors")]
    if out["crs"] == "EPSG:4548":  # a QGIS with Part 2: the server must have been asked
        assert any("4548" in "".join(q.get("crs", [])) for q in requested), why
    else:  # QGIS 3.22: CRS84 only, reprojected on the client
        assert out["crs"] == "EPSG:4326", why
        assert not any("crs" in q or "bbox-crs" in q for q in requested), why
    with psycopg.connect(db_url) as conn:
        truth = {code: (x, y) for code, x, y in conn.execute(
            "SELECT code, ST_X(p), ST_Y(p) FROM "
            "(SELECT code, ST_Transform(geom, 4548) AS p FROM sensors) s")}
    assert set(out["points"]) == set(truth), why
    worst = max(math.dist(out["points"][c], truth[c]) for c in truth)
    assert worst < 0.05, f"worst offset {worst:.3f} m\n{why}"  # centimetres at most


def test_qgis_zoomed_out_over_the_territory_is_within_the_bbox_limit(
    qgis_env: dict[str, str], db_url: str, server: tuple[str, Recorder]
) -> None:
    """QGIS sends its view extent as bbox (restrictToRequestBBOX): the whole territory
    with ten times its size around it is far inside GRIDGOV_MAX_BBOX_KM2's default; a
    view of the whole world holds the layer's extent, and then QGIS sends no bbox."""
    url, recorder = server
    x0, y0, x1, y1 = db_extent(db_url, "micro_grids")
    w, h = x1 - x0, y1 - y0
    view = (x0 - 5 * w, y0 - 5 * h, x1 + 5 * w, y1 + 5 * h)
    out, seen = qgis(qgis_env, recorder, url=url, collection="micro_grids", bbox=view,
                     extra=" restrictToRequestBBOX='1'")
    why = diagnose(out, seen)
    assert out["valid"], why
    assert sorted(out["codes"]) == sorted(db_codes(db_url, "micro_grids")), why
    pages = [q for q, _ in items_requests(seen, "micro_grids")[1:]]
    assert pages and all(q.get("bbox") for q in pages), why
    assert all(status == 200 for _, status in items_requests(seen, "micro_grids")), why
    out, seen = qgis(qgis_env, recorder, url=url, collection="micro_grids",
                     bbox=(-180, -90, 180, 90), extra=" restrictToRequestBBOX='1'")
    why = diagnose(out, seen)
    assert sorted(out["codes"]) == sorted(db_codes(db_url, "micro_grids")), why
    items = items_requests(seen, "micro_grids")
    assert items and not any(q.get("bbox") for q, _ in items), why
    assert all(status == 200 for _, status in items), why
