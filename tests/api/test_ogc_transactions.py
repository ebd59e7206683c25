"""OGC API Features Part 4 writes: tokens, validation, CRS and axis order, nothing half-done."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.settings import Settings
from gis.crs import transformer
from layers import db
from layers.auth import create_token

ITEMS = "/ogc/collections/{}/items"
EPSG = "http://www.opengis.net/def/crs/EPSG/0/{}"


@pytest.fixture
def writer(fresh_db_url: str) -> Iterator[tuple[TestClient, dict[str, str], str]]:
    with db.connect(fresh_db_url) as conn:
        token = create_token(conn, "测试科员", "officer")
        conn.commit()
    with TestClient(create_app(Settings(env="test"), fresh_db_url)) as c:
        yield c, {"Authorization": f"Bearer {token}"}, fresh_db_url


def camera(lon: float = 118.05, lat: float = 36.80, **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {"code": "CAMTEST00001", "name": "测试枪机", "kind": "fixed",
                           "heading_deg": 90.0, "fov_deg": 70.0, "range_m": 120.0,
                           "mount_height_m": 6.0, "high_point_id": None, **props}}


def one(url: str, query: str, *args: Any) -> Any:
    with psycopg.connect(url) as conn:
        return conn.execute(query, args).fetchone()


def test_writes_need_an_officer_token(writer: tuple) -> None:
    client, auth, url = writer
    r = client.post(ITEMS.format("cameras"), json=camera())
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = client.post(ITEMS.format("cameras"), json=camera(),
                    headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401 and "unknown or revoked" in r.json()["detail"]
    assert one(url, "SELECT count(*) FROM cameras WHERE code = 'CAMTEST00001'")[0] == 0


def test_create_in_crs84_then_read_back(writer: tuple) -> None:
    client, auth, url = writer
    r = client.post(ITEMS.format("cameras"), json=camera(), headers=auth)
    assert r.status_code == 201, r.text
    fid = r.json()["id"]
    assert r.headers["location"].endswith(f"/ogc/collections/cameras/items/{fid}")
    row = one(url, "SELECT code, kind, range_m, ST_X(geom), ST_Y(geom), ST_SRID(geom) "
                   "FROM cameras WHERE id = %s", fid)
    assert row[:3] == ("CAMTEST00001", "fixed", 120.0)
    assert row[3:] == (pytest.approx(118.05), pytest.approx(36.80), 4490)


@pytest.mark.parametrize("epsg", [4548, 4326, 4490, 3857])
def test_content_crs_and_its_axis_order(writer: tuple, epsg: int) -> None:
    client, auth, url = writer
    x, y = transformer(4490, epsg).transform(118.06, 36.81)
    coords = [y, x] if epsg in (4548, 4326, 4490) else [x, y]  # north first where EPSG says
    r = client.post(ITEMS.format("cameras"), json=camera(*coords, code=f"CAMT{epsg}"),
                    headers={**auth, "Content-Crs": f"<{EPSG.format(epsg)}>"})
    assert r.status_code == 201, r.text
    lon, lat = one(url, "SELECT ST_X(geom), ST_Y(geom) FROM cameras WHERE id = %s",
                   r.json()["id"])
    assert (lon, lat) == (pytest.approx(118.06, abs=1e-7), pytest.approx(36.81, abs=1e-7))


def test_axis_mix_up_is_refused_not_stored_elsewhere(writer: tuple) -> None:
    client, auth, url = writer
    # lon/lat sent as if EPSG:4326 were lon-first: lands at latitude 118
    r = client.post(ITEMS.format("cameras"), json=camera(118.05, 36.80),
                    headers={**auth, "Content-Crs": f"<{EPSG.format(4326)}>"})
    assert r.status_code == 400
    assert one(url, "SELECT count(*) FROM cameras WHERE code = 'CAMTEST00001'")[0] == 0


BOWTIE = {"type": "Polygon", "coordinates": [[[118.05, 36.80], [118.051, 36.801],
                                              [118.051, 36.80], [118.05, 36.801],
                                              [118.05, 36.80]]]}


@pytest.mark.parametrize(
    ("collection", "body", "needle"),
    [
        ("cameras", camera(colour="red"), "colour"),
        ("cameras", camera(heading_deg="north"), "heading_deg"),
        ("cameras", camera(heading_deg=400.0), "ck_cameras_heading"),
        ("cameras", camera(kind="drone"), "ck_cameras_kind"),
        ("cameras", camera(code="CAM37030310600001"), "already taken"),
        ("cameras", camera(high_point_id=999999), "high_point"),
        ("cameras", {"type": "Feature", "properties": {"code": "X"},
                     "geometry": {"type": "Point", "coordinates": [118.05, 36.8]}},
         "required"),
        ("cameras", {**camera(), "geometry": {"type": "LineString",
                                             "coordinates": [[118, 36], [118.1, 36.1]]}},
         "must be Point"),
        ("cameras", {**camera(), "geometry": {"type": "Point", "coordinates": []}},
         "finite"),
        ("buildings", {"type": "Feature", "geometry": BOWTIE,
                       "properties": {"code": "BTEST1", "use": "residential", "height_m": 9.0,
                                      "floors": 3}}, "not valid"),
        ("cameras", [1, 2, 3], "GeoJSON Feature"),
    ],
)
def test_bad_writes_are_400_and_leave_nothing(
    writer: tuple, collection: str, body: Any, needle: str
) -> None:
    client, auth, url = writer
    before = one(url, f"SELECT count(*) FROM {collection}")[0]  # noqa: S608 - fixed names
    r = client.post(ITEMS.format(collection), json=body, headers=auth)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert needle in r.json()["detail"]
    assert one(url, f"SELECT count(*) FROM {collection}")[0] == before  # noqa: S608


def test_nan_in_the_body_is_400(writer: tuple) -> None:
    client, auth, _ = writer
    body = '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [NaN, 36.8]}}'
    r = client.post(ITEMS.format("cameras"), content=body,
                    headers={**auth, "content-type": "application/geo+json"})
    assert r.status_code == 400 and "NaN" in r.json()["detail"]


def test_parcels_take_permit_changes_only(writer: tuple) -> None:
    client, auth, url = writer
    fid, status = one(url, "SELECT id, permit_status FROM parcels WHERE permit_status = 'none' "
                           "ORDER BY id LIMIT 1")
    item = ITEMS.format("parcels") + f"/{fid}"
    assert client.post(ITEMS.format("parcels"), json=camera(), headers=auth).status_code == 405
    assert client.delete(item, headers=auth).status_code == 405
    r = client.patch(item, json={"properties": {"area_m2": 1.0}}, headers=auth)
    assert r.status_code == 400 and "read-only" in r.json()["detail"]
    # approved needs a permit number: the database's rule, nothing half-changed
    r = client.patch(item, json={"properties": {"permit_status": "approved"}}, headers=auth)
    assert r.status_code == 400 and "ck_parcels_permit_no" in r.json()["detail"]
    assert one(url, "SELECT permit_status FROM parcels WHERE id = %s", fid)[0] == status
    r = client.patch(item, json={"properties": {"permit_status": "approved",
                                                "permit_no": "建字第370303202600123号"}},
                     headers=auth)
    assert r.status_code == 204, r.text
    assert one(url, "SELECT permit_status, permit_no FROM parcels WHERE id = %s", fid) == (
        "approved", "建字第370303202600123号")


def test_replace_and_delete_a_building(writer: tuple) -> None:
    client, auth, url = writer
    fid = one(url, "SELECT min(id) FROM buildings")[0]
    item = ITEMS.format("buildings") + f"/{fid}"
    square = {"type": "Polygon", "coordinates": [[[118.05, 36.80], [118.0505, 36.80],
                                                  [118.0505, 36.8004], [118.05, 36.8004],
                                                  [118.05, 36.80]]]}
    new = {"type": "Feature", "geometry": square,
           "properties": {"code": "BREPLACED", "use": "commercial", "height_m": 24.0,
                          "floors": 8}}
    assert client.put(item, json=new, headers=auth).status_code == 204
    row = one(url, "SELECT code, use, name, built_year, GeometryType(geom), "
                   "round(ST_Area(geom::geography)) FROM buildings WHERE id = %s", fid)
    assert row[:5] == ("BREPLACED", "commercial", None, None, "MULTIPOLYGON")
    assert 1500 < row[5] < 2000  # 44.6 m x 44.5 m
    r = client.put(item, json={**new, "properties": {"code": "B2"}}, headers=auth)
    assert r.status_code == 400 and "required" in r.json()["detail"]
    assert client.delete(item, headers=auth).status_code == 204
    assert client.delete(item, headers=auth).status_code == 404
    assert client.put(ITEMS.format("buildings") + "/abc", json=new,
                      headers=auth).status_code == 404
    assert client.delete(ITEMS.format("micro_grids") + "/1", headers=auth).status_code == 405


def test_token_cli_create_list_revoke(fresh_db_url: str, tmp_path: Any) -> None:
    from api.cli import app

    env = {"GRIDGOV_DATABASE_URL": fresh_db_url, "GRIDGOV_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    r = runner.invoke(app, ["token", "create", "gis-officer", "--role", "officer"], env=env)
    assert r.exit_code == 0, r.output
    token = r.output.strip().splitlines()[-1]
    assert token.startswith("ggv_") and len(token) > 40
    r = runner.invoke(app, ["token", "create", "gis-officer"], env=env)
    assert r.exit_code == 1 and "already holds" in r.output
    assert "gis-officer\tofficer" in runner.invoke(app, ["token", "list"], env=env).output
    with TestClient(create_app(Settings(env="test"), fresh_db_url)) as c:
        headers = {"Authorization": f"Bearer {token}"}
        assert c.post(ITEMS.format("cameras"), json=camera(), headers=headers).status_code == 201
        assert runner.invoke(app, ["token", "revoke", "gis-officer"], env=env).exit_code == 0
        r = c.post(ITEMS.format("cameras"), json=camera(code="CAMT2"), headers=headers)
        assert r.status_code == 401
    with psycopg.connect(fresh_db_url) as conn:
        (stored,) = conn.execute("SELECT token_sha256 FROM api_tokens").fetchone()
    assert token.encode() not in bytes(stored)  # only the digest is kept


def test_options_say_what_each_collection_takes(writer: tuple) -> None:
    """QGIS (3.32 and later) sends OPTIONS to the items and to one item and offers
    editing from the Allow header: POST, then PUT / DELETE / PATCH."""
    client, auth, _url = writer

    def allow(path: str) -> set[str]:
        r = client.options(path)
        assert r.status_code == 200, (path, r.text)
        return {m.strip() for m in r.headers["allow"].split(",")}

    reads = {"GET", "HEAD", "OPTIONS"}
    assert allow(ITEMS.format("cameras")) == reads | {"POST"}
    assert allow(ITEMS.format("cameras") + "/1") == reads | {"PUT", "DELETE", "PATCH"}
    assert allow(ITEMS.format("buildings")) == reads | {"POST"}
    assert allow(ITEMS.format("parcels")) == reads  # only some properties, by PATCH
    assert allow(ITEMS.format("parcels") + "/1") == reads | {"PATCH"}
    assert allow(ITEMS.format("micro_grids")) == reads
    assert allow(ITEMS.format("micro_grids") + "/1") == reads
    # what Allow lists is really taken (reads by anyone, writes with a token)
    fid = client.post(ITEMS.format("cameras"), json=camera(), headers=auth).json()["id"]
    item = ITEMS.format("cameras") + f"/{fid}"
    order = ["GET", "HEAD", "PATCH", "PUT", "DELETE"]  # the delete last
    assert allow(item) == {*order, "OPTIONS"}
    for method in order:
        body = ({"json": camera(name="改名枪机")} if method == "PUT"
                else {"json": {"properties": {"name": "再改名"}},
                      "headers": {**auth, "Content-Type": "application/merge-patch+json"}}
                if method == "PATCH" else {})
        r = client.request(method, item, **{"headers": auth, **body})
        assert r.status_code in (200, 204), (method, r.status_code, r.text)
    gone = client.options(ITEMS.format("no_such"))
    assert gone.status_code == 404
    assert gone.headers["content-type"].startswith("application/problem+json")
