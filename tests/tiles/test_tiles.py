"""OGC API - Tiles: vector tiles made by PostGIS, checked against the database.

Tiles are decoded with mapbox-vector-tile and compared with plain SQL over the same
tile envelope; against a real server, GDAL's MVT driver reads tiles and QGIS (Debian's
python3-qgis) adds a vector tile layer from the TileJSON and draws it; the tile matrix
set is compared with pygeoapi's own definition of WebMercatorQuad.
"""

from __future__ import annotations

import datetime as dt
import doctest
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import mapbox_vector_tile
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

import tiles.tilesets
import tiles.tms
from api.app import create_app
from api.settings import Settings
from layers.registry import LAYERS
from tiles import mvt
from tiles.errors import InvalidTile
from tiles.tms import MAX_ZOOM, WEB_MERCATOR_QUAD, TileId

Served = Callable[[Any], AbstractContextManager[str]]  # the `served` fixture (conftest)
CENTRE = (118.02, 36.80)  # the demo town's seat (seed_data.town.CENTRE_LON/LAT)
MVT_TYPE = "application/vnd.mapbox-vector-tile"
TILES_CORE = "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core"
POINTS = {name for name, layer in LAYERS.items() if layer.geometry == "Point"}


def tile_at(lon: float, lat: float, z: int) -> TileId:
    r = WEB_MERCATOR_QUAD.tile_range((lon, lat, lon, lat), z)
    return TileId(z, r.min_col, r.min_row)


def path(tile: TileId, collection: str | None = None) -> str:
    """The OGC path of ``tile``: tileMatrix / tileRow / tileCol."""
    base = f"/ogc/collections/{collection}/tiles" if collection else "/ogc/tiles"
    return f"{base}/WebMercatorQuad/{tile.z}/{tile.y}/{tile.x}"


def decode(data: bytes) -> dict[str, Any]:
    return mapbox_vector_tile.decode(data, default_options={"y_coord_down": True})


def ids(layer: dict[str, Any]) -> set[int]:
    return {f["id"] for f in layer["features"]}


def ids_in_envelope(conn: psycopg.Connection[Any], name: str, tile: TileId, margin: float
                    ) -> set[int]:
    """Rows of ``name`` (current generation) meeting the tile grown by ``margin``."""
    layer = LAYERS[name]
    current = ("AND generation_id = (SELECT id FROM grid_generations WHERE valid_to IS NULL)"
               if "generation_id" in layer.columns else "")
    rows = conn.execute(sql.SQL(
        "SELECT id FROM {} WHERE ST_Intersects(geom, "
        "ST_Transform(ST_TileEnvelope(%s, %s, %s, margin => %s), 4490)) " + current
    ).format(sql.Identifier(layer.table)), (tile.z, tile.x, tile.y, margin)).fetchall()
    return {r[0] for r in rows}


@pytest.fixture(scope="module")
def client(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(env="test", data_dir=tmp_path_factory.mktemp("tiles"))
    with TestClient(create_app(settings, db_url)) as c:
        yield c


@pytest.fixture(scope="module")
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture(scope="module")
def centre() -> TileId:
    return tile_at(*CENTRE, 14)


# -- tile addresses and the tile matrix set ---------------------------------------------


def test_doctests() -> None:
    for module in (tiles.tms, tiles.tilesets):
        assert doctest.testmod(module).failed == 0, module.__name__


@pytest.mark.parametrize("z, x, y", [(-1, 0, 0), (MAX_ZOOM + 1, 0, 0), (1, 2, 0), (1, 0, 2),
                                     (3, -1, 0), (2, 0, -1), (True, 0, 0), (1.0, 0, 0)])
def test_tile_ids_out_of_range_are_refused(z: Any, x: Any, y: Any) -> None:
    with pytest.raises(InvalidTile):
        TileId(z, x, y)


def test_tile_bounds_are_postgis_tile_envelopes(conn: psycopg.Connection[Any],
                                                centre: TileId) -> None:
    for tile in (TileId(0, 0, 0), centre, TileId(MAX_ZOOM, (1 << MAX_ZOOM) - 1, 0),
                 TileId(7, 3, 101)):
        row = conn.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
            "FROM ST_TileEnvelope(%s, %s, %s) e", (tile.z, tile.x, tile.y)).fetchone()
        assert tile.bounds == row  # to the last bit


def test_our_tile_matrix_set_is_pygeoapis_webmercatorquad(client: TestClient) -> None:
    from pygeoapi.models.provider.base import TileMatrixSetEnum

    ours = client.get("/ogc/tileMatrixSets/WebMercatorQuad")
    assert ours.status_code == 200 and ours.json() == WEB_MERCATOR_QUAD.document()
    doc = ours.json()
    assert doc["crs"] == "http://www.opengis.net/def/crs/EPSG/0/3857"
    theirs = TileMatrixSetEnum.WEBMERCATORQUAD.value
    assert doc["uri"] == theirs.tileMatrixSetURI
    assert doc["wellKnownScaleSet"] == theirs.wellKnownScaleSet
    assert len(doc["tileMatrices"]) == 25  # 0..24, as OGC 17-083r4 defines it
    for mine, peer in zip(doc["tileMatrices"], theirs.tileMatrices, strict=False):
        assert mine["id"] == peer["id"]
        assert mine["scaleDenominator"] == pytest.approx(peer["scaleDenominator"], rel=1e-12)
        assert mine["cellSize"] == pytest.approx(peer["cellSize"], rel=1e-9)
        assert mine["pointOfOrigin"] == pytest.approx(peer["pointOfOrigin"], rel=1e-15)
        for key in ("matrixWidth", "matrixHeight", "tileWidth", "tileHeight",
                    "cornerOfOrigin"):
            assert mine[key] == peer[key], key
    # pygeoapi's own pages stay, and its list's self link (lower-case) now resolves
    assert client.get("/ogc/TileMatrixSets/WebMercatorQuad?f=json").status_code == 200
    listing = client.get("/ogc/TileMatrixSets?f=json").json()
    self_link = next(link["href"] for link in listing["links"]
                     if link["rel"] == "self" and link["type"] == "application/json")
    assert client.get(self_link).json()["tileMatrixSets"] == listing["tileMatrixSets"]
    assert client.get("/ogc/tileMatrixSets/NoSuchQuad").status_code == 404


# -- tiles against the database ------------------------------------------------------------


@pytest.mark.parametrize("name", list(LAYERS))
def test_collection_tile_holds_the_rows_of_its_envelope(
    client: TestClient, conn: psycopg.Connection[Any], centre: TileId, name: str
) -> None:
    tile = centre if mvt.vector_layer(LAYERS[name]).minzoom <= 14 else tile_at(*CENTRE, 15)
    r = client.get(path(tile, name))
    buffered = ids_in_envelope(conn, name, tile, mvt.MARGIN)
    if not buffered:
        assert r.status_code == 204
        return
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == MVT_TYPE
    layers = decode(r.content)
    assert list(layers) == [name]
    got = ids(layers[name])
    assert len(got) == len(layers[name]["features"])  # one feature per row
    if name in POINTS:
        assert got == buffered  # points: exactly those inside the buffered tile
    else:  # areas and lines: whatever meets the tile, nothing beyond the buffer
        assert ids_in_envelope(conn, name, tile, 0.0) <= got <= buffered


@pytest.mark.parametrize("name", ["cameras", "sensors", "buildings", "micro_grids"])
def test_feature_properties_are_the_rows_values(
    client: TestClient, conn: psycopg.Connection[Any], centre: TileId, name: str
) -> None:
    layer = LAYERS[name]
    features = decode(client.get(path(centre, name)).content)[name]["features"]
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in layer.columns)
    rows = conn.execute(sql.SQL("SELECT id, {} FROM {} WHERE id = ANY(%s)").format(
        cols, sql.Identifier(layer.table)), ([f["id"] for f in features],)).fetchall()
    expected = {
        row[0]: {c: v.isoformat() if isinstance(v, dt.date) else v
                 for c, v in zip(layer.columns, row[1:], strict=True) if v is not None}
        for row in rows
    }
    assert len(expected) == len(features)
    nulls = 0
    for f in features:
        assert f["properties"] == expected[f["id"]], f["id"]
        nulls += len(layer.columns) - len(f["properties"])
    if name in ("cameras", "buildings"):  # high_point_id, name, built_year: NULL often
        assert nulls > 0  # a NULL is left out of its feature, never written as ""


def test_points_land_where_the_database_has_them(
    client: TestClient, conn: psycopg.Connection[Any], centre: TileId
) -> None:
    features = decode(client.get(path(centre, "cameras")).content)["cameras"]["features"]
    x0, _, x1, y1 = centre.bounds
    unit = (x1 - x0) / mvt.EXTENT
    rows = dict(conn.execute(
        "SELECT id, ARRAY[ST_X(g), ST_Y(g)] FROM (SELECT id, ST_Transform(geom, 3857) g "
        "FROM cameras WHERE id = ANY(%s)) s", ([f["id"] for f in features],)).fetchall())
    for f in features:
        px, py = f["geometry"]["coordinates"]
        x, y = rows[f["id"]]
        assert abs(x0 + px * unit - x) <= unit / 2 + 1e-6
        assert abs(y1 - py * unit - y) <= unit / 2 + 1e-6


def test_grid_tiles_show_the_current_generation_only(
    fresh_db_url: str, tmp_path: Path, centre: TileId
) -> None:
    with psycopg.connect(fresh_db_url, autocommit=True) as c:
        old = c.execute(
            "INSERT INTO grid_generations (name, valid_from, valid_to, source) "
            "VALUES ('old grid', '2020-01-01', '2023-04-01', 'test') RETURNING id").fetchone()
        assert old is not None
        for table, extra in (("streets", ""), ("communities", "street_code, "),
                             ("micro_grids", "community_code, kind, ")):
            c.execute(sql.SQL(
                "INSERT INTO {t} (generation_id, " + extra + "code, name, population, "
                "households, geom) SELECT %s, " + extra + "code, name, population, "
                "households, geom FROM {t}").format(t=sql.Identifier(table)), (old[0],))
        current = {t: {r[0] for r in c.execute(sql.SQL(
            "SELECT id FROM {} WHERE generation_id <> %s").format(sql.Identifier(t)),
            (old[0],))} for t in ("streets", "communities", "micro_grids")}
        stale = {t: ids_in_envelope(c, t, centre, mvt.MARGIN) - current[t] for t in current}
    assert all(not s for s in stale.values())  # ids_in_envelope keeps the current only
    app = create_app(Settings(env="test", data_dir=tmp_path), fresh_db_url)
    with TestClient(app) as client:
        together = decode(client.get(path(centre)).content)
        for name in ("streets", "communities", "micro_grids"):
            alone = decode(client.get(path(centre, name)).content)[name]
            assert ids(alone) and ids(alone) <= current[name], name
            assert ids(together[name]) == ids(alone), name
            assert {f["properties"]["generation_id"] for f in alone["features"]} == {1}


def test_every_layer_in_one_tile(client: TestClient, conn: psycopg.Connection[Any],
                                 centre: TileId) -> None:
    r = client.get(path(centre))
    assert r.status_code == 200 and r.headers["content-type"] == MVT_TYPE
    together = decode(r.content)
    present = {n for n in LAYERS if ids_in_envelope(conn, n, centre, mvt.MARGIN)}
    assert set(together) == present
    assert len(present) >= 8  # all but the sparse high points meet the town's centre tile
    names = [v.name for v in mvt.all_layers_tileset().layers]
    assert list(together) == [n for n in names if n in present]  # areas first
    for name in present:  # the same features as each collection's own tile
        assert ids(together[name]) == ids(decode(client.get(path(centre, name)).content)[name])
    # below their minimum zoom, buildings and cameras leave the shared tile
    z12 = decode(client.get(path(tile_at(*CENTRE, 12))).content)
    assert "micro_grids" in z12 and not {"buildings", "cameras"} & set(z12)
    assert client.get(path(tile_at(*CENTRE, 12), "buildings")).status_code == 204


def test_empty_tiles_are_204(client: TestClient) -> None:
    ocean = tile_at(-150.0, -40.0, 10)  # the South Pacific
    for p in (path(ocean, "cameras"), path(ocean), path(TileId(0, 0, 0), "cameras")):
        r = client.get(p)
        assert r.status_code == 204 and r.content == b"", p
        assert "max-age" in r.headers["cache-control"]


def test_etag_and_not_modified(client: TestClient, centre: TileId) -> None:
    r = client.get(path(centre, "cameras"))
    etag = r.headers["etag"]
    assert client.get(path(centre, "cameras")).headers["etag"] == etag
    again = client.get(path(centre, "cameras"), headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert client.get(path(centre, "sensors"), headers={"If-None-Match": etag}
                      ).status_code == 200


@pytest.mark.parametrize("tail", ["23/0/0", "1/2/0", "1/0/2", "-1/0/0", "3/0/-1", "a/0/0",
                                  "1.5/0/0", "14/6388/1e3", "99999999999999999999/0/0",
                                  "1/0/0?f=png"])
def test_bad_tile_addresses_are_400(client: TestClient, tail: str) -> None:
    for base in ("/ogc/collections/cameras/tiles/WebMercatorQuad/", "/ogc/tiles/WebMercatorQuad/"):
        r = client.get(base + tail)
        assert r.status_code == 400, (base + tail, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 400


def test_unknown_collection_or_tile_matrix_set_is_404(client: TestClient) -> None:
    for p in ("/ogc/collections/nope/tiles", "/ogc/collections/nope/tiles/WebMercatorQuad",
              "/ogc/collections/nope/tiles/WebMercatorQuad/tilejson.json",
              "/ogc/collections/nope/tiles/WebMercatorQuad/0/0/0",
              "/ogc/collections/workers/tiles/WebMercatorQuad/0/0/0",  # stored, not published
              "/ogc/collections/cameras/tiles/WorldCRS84Quad",
              "/ogc/collections/cameras/tiles/WorldCRS84Quad/0/0/0",
              "/ogc/tiles/WorldCRS84Quad/0/0/0"):
        r = client.get(p)
        assert r.status_code == 404, p
        assert r.headers["content-type"] == "application/problem+json"


# -- metadata: tilesets, TileJSON, conformance -------------------------------------------


def test_tileset_metadata_links_resolve(client: TestClient, centre: TileId) -> None:
    listing = client.get("/ogc/collections/cameras/tiles")
    assert listing.status_code == 200
    [entry] = listing.json()["tilesets"]
    assert entry["dataType"] == "vector" and entry["crs"].endswith("/EPSG/0/3857")
    href = next(link["href"] for link in entry["links"] if link["rel"] == "self")
    doc = client.get(href).json()
    links = {link["rel"]: link for link in doc["links"]}
    assert all(link["href"].startswith("http://testserver/ogc/") for link in doc["links"])
    scheme = client.get(links["http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"]["href"])
    assert scheme.json()["id"] == "WebMercatorQuad"
    item = links["item"]
    assert item["type"] == MVT_TYPE and item["templated"]
    url = item["href"].format(tileMatrix=centre.z, tileRow=centre.y, tileCol=centre.x)
    assert client.get(url).content == client.get(path(centre, "cameras")).content
    assert client.get(links["describedby"]["href"]).json()["tilejson"] == "3.0.0"
    [layer] = doc["layers"]
    assert layer["id"] == "cameras" and layer["geometryDimension"] == 0
    assert list(layer["propertiesSchema"]["properties"]) == list(LAYERS["cameras"].columns)
    limits = {lim["tileMatrix"]: lim for lim in doc["tileMatrixSetLimits"]}
    assert min(map(int, limits)) == 13 and max(map(int, limits)) == MAX_ZOOM
    z14 = limits["14"]
    assert z14["minTileCol"] <= centre.x <= z14["maxTileCol"]
    assert z14["minTileRow"] <= centre.y <= z14["maxTileRow"]
    assert doc["boundingBox"]["crs"].endswith("CRS84")


def test_tilejson_for_qgis(client: TestClient, conn: psycopg.Connection[Any],
                           centre: TileId) -> None:
    for base, names in (("/ogc/collections/micro_grids/tiles/WebMercatorQuad", ["micro_grids"]),
                        ("/ogc/tiles/WebMercatorQuad",
                         [v.name for v in mvt.all_layers_tileset().layers])):
        tj = client.get(base + "/tilejson.json").json()
        assert tj["tilejson"] == "3.0.0" and tj["scheme"] == "xyz"
        assert 0 <= tj["minzoom"] <= tj["maxzoom"] == MAX_ZOOM
        [template] = tj["tiles"]
        assert template.startswith("http://testserver/") and template.endswith("/{z}/{y}/{x}")
        r = client.get(template.format(z=centre.z, x=centre.x, y=centre.y))
        assert r.status_code == 200
        assert [v["id"] for v in tj["vector_layers"]] == names
        assert set(decode(r.content)) <= set(names)
        for v in tj["vector_layers"]:
            assert list(v["fields"]) == list(LAYERS[v["id"]].columns)
            assert set(v["fields"].values()) <= {"String", "Number", "Boolean"}
        w, s, e, n = tj["bounds"]
        assert w < tj["center"][0] < e and s < tj["center"][1] < n
    box = conn.execute("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                       "(SELECT ST_Extent(geom) e FROM micro_grids) s").fetchone()
    tj = client.get("/ogc/collections/micro_grids/tiles/WebMercatorQuad/tilejson.json").json()
    assert tj["bounds"] == pytest.approx(list(box or ()))
    assert tj["vector_layers"][0]["fields"]["population"] == "Number"


def test_links_follow_the_public_url(db_url: str, tmp_path: Path) -> None:
    public = "https://grid.example.cn/gov"
    app = create_app(Settings(env="test", data_dir=tmp_path, public_url=public), db_url)
    with TestClient(app) as c:
        doc = c.get("/ogc/tiles/WebMercatorQuad", headers={"host": "evil.example"}).json()
        assert all(link["href"].startswith(public + "/ogc/") for link in doc["links"])
        tj = c.get("/ogc/tiles/WebMercatorQuad/tilejson.json").json()
        assert tj["tiles"] == [public + "/ogc/tiles/WebMercatorQuad/{z}/{y}/{x}"]


def test_conformance_declares_tiles(client: TestClient) -> None:
    classes = client.get("/ogc/conformance").json()["conformsTo"]
    for c in ("core", "tileset", "tilesets-list", "geodata-tilesets", "dataset-tilesets", "mvt"):
        assert f"http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/{c}" in classes
    assert TILES_CORE in client.get("/ogc/conformance").json()["conformsTo"]


def test_one_statement_with_integer_srids_on_the_spatial_index(
    conn: psycopg.Connection[Any], centre: TileId
) -> None:
    statement = mvt.tile_statement(mvt.collection_tileset("buildings").layers)
    text = statement.as_string(conn)
    assert "ST_Transform(t.geom, 3857)" in text and ", 4490)" in text
    assert not re.search(r"ST_Transform\([^)]*'", text)  # never a CRS as text
    plan = "\n".join(r[0] for r in conn.execute(
        sql.SQL("EXPLAIN ") + statement, mvt.tile_params(centre)))
    assert "ix_buildings_geom" in plan


# -- real clients: GDAL and QGIS against a real server -------------------------------------

QGIS_PYTHON = "/usr/bin/python3"  # Debian's python3-qgis, not the venv

# Run by Debian's python3: add a vector tile layer from a TileJSON's XYZ template, as
# QGIS's "New Generic Connection" does, draw it over ``extent`` (EPSG:3857), print JSON.
QGIS_SCRIPT = r"""
import json, sys, urllib.request
from qgis.core import (QgsApplication, QgsMapRendererSequentialJob, QgsMapSettings,
                       QgsRectangle, QgsVectorTileLayer)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor

job = json.loads(sys.argv[1])
app = QgsApplication([], False)
app.setPrefixPath("/usr", True)
app.initQgis()
tj = json.load(urllib.request.urlopen(job["tilejson"]))
uri = f"type=xyz&url={tj['tiles'][0]}&zmin={tj['minzoom']}&zmax={tj['maxzoom']}"
layer = QgsVectorTileLayer(uri, tj["name"])
out = {"valid": layer.isValid(), "zmin": layer.sourceMinZoom(), "zmax": layer.sourceMaxZoom(),
       "crs": layer.crs().authid()}
settings = QgsMapSettings()
settings.setLayers([layer])
settings.setDestinationCrs(layer.crs())
settings.setExtent(QgsRectangle(*job["extent"]))
settings.setOutputSize(QSize(256, 256))
settings.setBackgroundColor(QColor(255, 255, 255, 0))
render = QgsMapRendererSequentialJob(settings)
render.start()
render.waitForFinished()
image = render.renderedImage()
out["painted"] = sum(image.pixelColor(x, y).alpha() > 0 for x in range(256) for y in range(256))
out["errors"] = [e.message for e in render.errors()]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def server(db_url: str, served: Served) -> Iterator[tuple[str, list[str]]]:
    """The app under uvicorn, and the paths of the requests it received."""
    app = create_app(Settings(env="test", data_dir=Path(tempfile.mkdtemp())), db_url)
    paths: list[str] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            paths.append(scope["path"])
        await app(scope, receive, send)

    with served(recording) as base:
        yield base, paths


def test_gdal_reads_the_tiles(server: tuple[str, list[str]], client: TestClient,
                              centre: TileId) -> None:
    base, _ = server
    expected = {n: len(layer["features"]) for n, layer in
                decode(client.get(path(centre)).content).items()}
    x0, y0, x1, y1 = centre.bounds
    pad = (x1 - x0) * mvt.MARGIN + 1e-3
    for collection in ("cameras", None):
        # GDAL reads a URL ending in a number as a directory of tiles: ?f=mvt; its
        # z/x/y come from the -oo options (the path is OGC's z/y/x)
        url = f"{base}{path(centre, collection)}?f=mvt"
        out = subprocess.run(
            ["ogrinfo", "-ro", "-so", "-al", "-oo", f"Z={centre.z}", "-oo", f"X={centre.x}",
             "-oo", f"Y={centre.y}", f"MVT:{url}"],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        counts = {m[0]: int(m[1]) for m in re.findall(
            r"Layer name: (\w+)\n(?:.*\n)*?Feature Count: (\d+)", out.stdout)}
        assert counts == ({"cameras": expected["cameras"]} if collection else expected)
        for ext in re.findall(r"Extent: \(([-\d.]+), ([-\d.]+)\) - \(([-\d.]+), ([-\d.]+)\)",
                              out.stdout):  # georeferenced into this tile
            ex0, ey0, ex1, ey1 = map(float, ext)
            assert x0 - pad <= ex0 <= ex1 <= x1 + pad and y0 - pad <= ey0 <= ey1 <= y1 + pad


def test_qgis_draws_a_vector_tile_layer_from_the_tilejson(
    server: tuple[str, list[str]], centre: TileId
) -> None:
    base, paths = server
    tiles_path = "/ogc/collections/cameras/tiles/WebMercatorQuad/"

    def draw(extent: tuple[float, float, float, float]) -> dict[str, Any]:
        job = {"tilejson": f"{base}{tiles_path}tilejson.json", "extent": list(extent)}
        run = subprocess.run([QGIS_PYTHON, "-c", QGIS_SCRIPT, json.dumps(job)],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
        assert run.returncode == 0, run.stderr
        out: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
        assert out["valid"] and out["crs"] == "EPSG:3857" and not out["errors"], out
        assert (out["zmin"], out["zmax"]) == (13, MAX_ZOOM)
        return out

    del paths[:]
    assert draw(centre.bounds)["painted"] > 100  # the cameras of the town's centre
    asked = []
    for p in paths:
        if p.startswith(tiles_path) and not p.endswith(".json"):
            z, row, col = map(int, p[len(tiles_path):].split("/"))
            asked.append(TileId(z, col, row))
    # QGIS filled the template's {z}/{y}/{x} in our order: the tiles it asked for, at
    # the one zoom of the map's scale, cover the drawn extent (or touch its edge)
    assert asked and len({t.z for t in asked}) == 1 and asked[0].z >= 13
    x0, y0, x1, y1 = centre.bounds
    for t in asked:
        tx0, ty0, tx1, ty1 = t.bounds
        assert tx0 <= x1 and x0 <= tx1 and ty0 <= y1 and y0 <= ty1, t
    assert any(t.bounds[0] < (x0 + x1) / 2 < t.bounds[2]
               and t.bounds[1] < (y0 + y1) / 2 < t.bounds[3] for t in asked)
    ocean = tile_at(-150.0, -40.0, 14)
    assert draw(ocean.bounds)["painted"] == 0  # 204s draw nothing


def test_the_app_openapi_describes_the_tile_address(client: TestClient) -> None:
    """The tile routes read their address by hand; the document still names it."""
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/ogc/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/"
                 "{tileRow}/{tileCol}",
                 "/ogc/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}"):
        listed = {p["name"]: p for p in paths[path]["get"]["parameters"]}
        assert listed["tileMatrix"]["schema"] == {"type": "integer", "minimum": 0,
                                                  "maximum": MAX_ZOOM}
        assert listed["tileRow"]["in"] == listed["tileCol"]["in"] == "path"
        assert listed["f"]["schema"]["enum"] == ["mvt"]
