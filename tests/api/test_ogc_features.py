"""OGC API – Features (Part 1 core, Part 2 CRS) at /ogc: collections, items, item.

The answers are checked against the database (counts, ids, extents, SQL order), against
pyproj (coordinates in EPSG:4548 and EPSG:3857, a bbox in EPSG:4548), and our fast route
against pygeoapi's door to the same engine (its items handler through our provider):
same features, same counts, same links.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from pyproj import Transformer
from starlette.requests import Request

from api.app import create_app
from api.ogc import features as routes
from api.settings import Settings
from layers import features as engine
from layers.registry import LAYERS

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG = "http://www.opengis.net/def/crs/EPSG/0/{}"
CRS_LIST = [CRS84, *(EPSG.format(c) for c in (4490, 4326, 3857, 4548))]
CURRENT = "generation_id = (SELECT id FROM grid_generations WHERE valid_to IS NULL)"
# a part of the demo town (CRS84)
BOX = (117.99, 36.76, 118.04, 36.80)


@pytest.fixture(scope="module")
def client(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(env="test", data_dir=tmp_path_factory.mktemp("features"))
    with TestClient(create_app(settings, db_url)) as c:
        yield c


@pytest.fixture(scope="module")
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def items(client: TestClient, cid: str, **params: Any) -> dict[str, Any]:
    r = client.get(f"/ogc/collections/{cid}/items", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/geo+json"
    body: dict[str, Any] = r.json()
    return body


def link(page: dict[str, Any], rel: str) -> str | None:
    found = [x["href"] for x in page["links"] if x["rel"] == rel]
    assert len(found) <= 1, page["links"]
    return found[0] if found else None


def walk(client: TestClient, cid: str, **params: Any) -> list[dict[str, Any]]:
    """Every page, following ``next`` links from the first."""
    pages = [items(client, cid, **params)]
    while (href := link(pages[-1], "next")) is not None:
        r = client.get(href)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        assert len(pages) < 200
    return pages


def ids(pages: list[dict[str, Any]]) -> list[int]:
    return [f["id"] for page in pages for f in page["features"]]


def column(conn: psycopg.Connection[Any], query: str, *args: Any) -> list[Any]:
    return [row[0] for row in conn.execute(query, args).fetchall()]


# -- collections ---------------------------------------------------------------------------


def test_every_registry_layer_is_a_collection(client: TestClient,
                                              conn: psycopg.Connection[Any]) -> None:
    listing = client.get("/ogc/collections").json()["collections"]
    assert [c["id"] for c in listing] == list(LAYERS)
    for coll in listing:
        layer = LAYERS[coll["id"]]
        where = f"WHERE {CURRENT}" if layer.grid_level else ""
        row = conn.execute(
            f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "  # noqa: S608
            f"(SELECT ST_Extent(geom) e FROM {layer.table} {where}) s").fetchone()
        empty = row[0] is None  # nothing stored yet (events in the demo town): the world
        assert coll["extent"]["spatial"]["bbox"] == (
            [[-180.0, -90.0, 180.0, 90.0]] if empty else [list(row)]), coll["id"]
        assert coll["extent"]["spatial"]["crs"] == CRS84
        assert coll["crs"] == CRS_LIST
        assert coll["storageCrs"] == EPSG.format(4490)
        assert coll["itemType"] == "feature"
        assert coll["title"] == layer.title
        rels = {x["rel"] for x in coll["links"]}
        assert {"items", "http://www.opengis.net/def/rel/ogc/1.0/queryables"} <= rels
        assert client.get(f"/ogc/collections/{coll['id']}").json()["id"] == coll["id"]
        temporal = coll["extent"].get("temporal")
        # in time: the grid levels and coverage by generation, sensors by installation
        assert (temporal is not None) == ("generation_id" in layer.columns
                                          or layer.name == "sensors")
    sensors = next(c for c in listing if c["id"] == "sensors")
    first, last = conn.execute("SELECT min(installed_on), max(installed_on) FROM sensors"
                               ).fetchone()
    assert sensors["extent"]["temporal"]["interval"] == [
        [f"{first}T00:00:00+00:00", f"{last}T00:00:00+00:00"]]
    zh = client.get("/ogc/collections/cameras", params={"lang": "zh"}).json()
    assert zh["title"] == "视频监控"


def test_configuration_with_collections_is_valid_and_holds_no_secret(
        client: TestClient, db_url: str) -> None:
    from pygeoapi.config import validate_config

    service = client.app.state.ogc  # type: ignore[attr-defined]
    config = service.config("https://grid.example.cn/gov")
    assert validate_config(config)
    assert [k for k, v in config["resources"].items() if v["type"] == "collection"] == list(
        LAYERS)
    password = urlsplit(db_url).password
    assert password and password not in repr(config) and "postgresql" not in repr(config)
    for page in ("/ogc/collections/cameras/items?f=html", "/ogc/collections/cameras?f=html",
                 "/ogc/collections/cameras/items/1?f=html", "/ogc/openapi"):
        r = client.get(page)
        assert r.status_code == 200 and password not in r.text, page


def test_conformance_declares_features_and_crs(client: TestClient) -> None:
    classes = client.get("/ogc/conformance").json()["conformsTo"]
    for conf in ("ogcapi-features-1/1.0/conf/core", "ogcapi-features-1/1.0/conf/geojson",
                 "ogcapi-features-1/1.0/conf/html", "ogcapi-features-1/1.0/conf/oas30",
                 "ogcapi-features-2/1.0/conf/crs", "ogcapi-features-3/1.0/conf/queryables",
                 "ogcapi-features-3/1.0/conf/filter", "cql2/1.0/conf/cql2-text"):
        assert f"http://www.opengis.net/spec/{conf}" in classes, conf


def test_queryables_and_schema_come_from_the_database_types(client: TestClient) -> None:
    q = client.get("/ogc/collections/sensors/queryables").json()
    assert q["properties"]["installed_on"] == {
        "title": "installed_on", "type": "string", "format": "date",
        "x-ogc-role": "primary-instant"}
    assert q["properties"]["code"]["type"] == "string"
    assert set(q["properties"]) == {"geometry", *LAYERS["sensors"].columns}
    b = client.get("/ogc/collections/buildings/queryables").json()["properties"]
    assert b["height_m"]["type"] == "number" and b["floors"]["type"] == "integer"
    schema = client.get("/ogc/collections/buildings/schema").json()
    assert set(schema["properties"]) == {"geometry", *LAYERS["buildings"].columns}


# -- paging --------------------------------------------------------------------------------


@pytest.mark.parametrize("cid", ["micro_grids", "cameras"])
def test_next_links_visit_every_feature_once(client: TestClient, conn: psycopg.Connection[Any],
                                             cid: str) -> None:
    layer = LAYERS[cid]
    where = f"WHERE {CURRENT}" if layer.grid_level else ""
    expected = column(conn, f"SELECT id FROM {layer.table} {where} ORDER BY id")  # noqa: S608
    pages = walk(client, cid, limit=1000)
    got = ids(pages)
    assert got == expected and len(set(got)) == len(got)
    assert all(p["numberMatched"] == len(expected) for p in pages)
    assert [p["numberReturned"] for p in pages] == [len(p["features"]) for p in pages]
    assert len(pages) == -(-len(expected) // 1000)
    assert link(pages[0], "prev") is None
    for n, page in enumerate(pages[1:], 1):  # offset links back
        assert parse_qs(urlsplit(link(page, "prev") or "").query)["offset"] == [
            str((n - 1) * 1000)]


def test_offset_pages_equal_cursor_pages(client: TestClient) -> None:
    pages = walk(client, "cameras", limit=1000)
    deep = items(client, "cameras", limit=1000, offset=3000)
    assert [f["id"] for f in deep["features"]] == [f["id"] for f in pages[3]["features"]]
    # the next link of an offset page is a cursor link: the same as the keyset walk's
    assert link(deep, "next") == link(pages[3], "next")
    # a cursor that does not belong to the offset given is ignored: offset decides
    stale = link(pages[1], "next") or ""
    cursor = parse_qs(urlsplit(stale).query)["cursor"][0]
    again = items(client, "cameras", limit=1000, offset=0, cursor=cursor)
    assert [f["id"] for f in again["features"]] == [f["id"] for f in pages[0]["features"]]


SORTED = [  # (collection, sortby, the SQL order); nullable keys both ways
    ("parcels", "land_use,-permit_no", "land_use, permit_no DESC NULLS LAST, id"),
    ("parcels", "+permit_no", "permit_no NULLS LAST, id"),
    ("cameras", "-high_point_id,-heading_deg",
     "high_point_id DESC NULLS LAST, heading_deg DESC, id"),
    ("buildings", "-built_year,+name", "built_year DESC, name NULLS LAST, id"),  # no names
]


@pytest.mark.parametrize(("cid", "sortby", "order"), SORTED, ids=[s for _, s, _ in SORTED])
def test_sorted_paging_is_exact_with_nulls(client: TestClient, conn: psycopg.Connection[Any],
                                           cid: str, sortby: str, order: str) -> None:
    """Keyset paging on sort keys with nulls: the SQL order, every feature once."""
    expected = column(conn, f"SELECT id FROM {cid} WHERE ST_Intersects(geom, "  # noqa: S608
                            f"ST_MakeEnvelope(%s, %s, %s, %s, 4490)) ORDER BY {order}", *BOX)
    assert len(expected) > 300
    pages = walk(client, cid, limit=97, sortby=sortby, bbox=",".join(map(str, BOX)))
    assert ids(pages) == expected
    first = sortby.split(",")[0].lstrip("+-")
    values = [f["properties"][first] for p in pages for f in p["features"]]
    if None in values:  # nulls last, whichever way
        assert values[-1] is None and values[0] is not None


def test_sortby_and_properties(client: TestClient, conn: psycopg.Connection[Any]) -> None:
    page = items(client, "cameras", limit=20, sortby="-range_m,code",
                 properties="kind,range_m,code")
    assert [f["id"] for f in page["features"]] == column(
        conn, "SELECT id FROM cameras ORDER BY range_m DESC, code, id LIMIT 20")
    assert all(list(f["properties"]) == ["kind", "range_m", "code"] for f in page["features"])
    assert "sortby=-range_m,code" in (link(page, "self") or "")
    bare = items(client, "cameras", limit=3, skipGeometry="true")
    assert all(f["geometry"] is None for f in bare["features"])


# -- bbox and CRS --------------------------------------------------------------------------


@pytest.mark.parametrize("cid", ["buildings", "cameras", "micro_grids"])
def test_bbox_matches_sql(client: TestClient, conn: psycopg.Connection[Any], cid: str) -> None:
    layer = LAYERS[cid]
    grid = f"AND {CURRENT}" if layer.grid_level else ""
    expected = column(conn, f"SELECT id FROM {layer.table} WHERE ST_Intersects(geom, "  # noqa: S608
                            f"ST_MakeEnvelope(%s, %s, %s, %s, 4490)) {grid} ORDER BY id", *BOX)
    assert 0 < len(expected) < column(conn, f"SELECT count(*) FROM {layer.table}")[0]  # noqa: S608
    pages = walk(client, cid, limit=1000, bbox=",".join(map(str, BOX)))
    assert ids(pages) == expected and pages[0]["numberMatched"] == len(expected)
    # the same box in lat/lon order, as EPSG:4326 and EPSG:4490 define it
    x0, y0, x1, y1 = BOX
    for code in (4326, 4490):
        latlon = items(client, cid, limit=1, bbox=f"{y0},{x0},{y1},{x1}",
                       **{"bbox-crs": EPSG.format(code)})
        assert latlon["numberMatched"] == len(expected)


def test_bbox_in_gauss_kruger(client: TestClient, conn: psycopg.Connection[Any]) -> None:
    """A box drawn in EPSG:4548 (northing, easting), checked with pyproj point by point."""
    to_gk = Transformer.from_crs(4490, 4548)  # authority order: (lat, lon) -> (N, E)
    n0, e0 = to_gk.transform(36.765, 117.995)
    n1, e1 = to_gk.transform(36.795, 118.035)
    rows = conn.execute("SELECT id, ST_Y(geom), ST_X(geom) FROM cameras ORDER BY id").fetchall()
    ns, es = to_gk.transform([r[1] for r in rows], [r[2] for r in rows])
    inside = [r[0] for r, n, e in zip(rows, ns, es, strict=True)
              if n0 <= n <= n1 and e0 <= e <= e1]
    assert len(inside) > 100
    pages = walk(client, "cameras", limit=1000, bbox=f"{n0},{e0},{n1},{e1}",
                 **{"bbox-crs": EPSG.format(4548)})
    assert ids(pages) == inside


def test_output_crs_follows_each_crs_axis_order(client: TestClient,
                                                conn: psycopg.Connection[Any]) -> None:
    plain = items(client, "cameras", limit=50)
    stored = {f["id"]: f["geometry"]["coordinates"] for f in plain["features"]}
    rows = conn.execute("SELECT id, ST_X(ST_Transform(geom, 4548)), ST_Y(ST_Transform(geom, "
                        "4548)) FROM cameras ORDER BY id LIMIT 50").fetchall()
    gk_sql = {r[0]: (r[1], r[2]) for r in rows}
    to_gk = Transformer.from_crs(4490, 4548)
    to_merc = Transformer.from_crs(4490, 3857)
    for code in (4490, 4326, 3857, 4548):
        r = client.get("/ogc/collections/cameras/items",
                       params={"limit": 50, "crs": EPSG.format(code)})
        assert r.status_code == 200, r.text
        assert r.headers["content-crs"] == f"<{EPSG.format(code)}>"
        for f in r.json()["features"]:
            lon, lat = stored[f["id"]]
            x, y = f["geometry"]["coordinates"]
            if code in (4490, 4326):  # latitude first
                assert (x, y) == (lat, lon)
            elif code == 4548:  # northing first; pyproj and PostGIS agree to the mm
                n, e = to_gk.transform(lat, lon)
                assert x == pytest.approx(n, abs=1e-3) and y == pytest.approx(e, abs=1e-3)
                assert (y, x) == pytest.approx(gk_sql[f["id"]], abs=1e-3)
                assert round(x, 3) == x  # 3 decimals for metres
            else:
                e, n = to_merc.transform(lat, lon)
                assert (x, y) == pytest.approx((e, n), abs=1e-3)
    assert client.get("/ogc/collections/cameras/items").headers["content-crs"] == f"<{CRS84}>"
    grid = items(client, "micro_grids", limit=1, crs=EPSG.format(4548))
    ring = grid["features"][0]["geometry"]["coordinates"][0][0]
    assert 4.0e6 < ring[0][0] < 4.2e6 and 4.0e5 < ring[0][1] < 7.0e5  # N, E


# -- time and generations --------------------------------------------------------------------


def test_datetime_on_sensors(client: TestClient, conn: psycopg.Connection[Any]) -> None:
    def count(where: str, *args: Any) -> int:
        return int(column(conn, f"SELECT count(*) FROM sensors WHERE {where}", *args)[0])  # noqa: S608

    cases = {
        "2023-01-01/2023-06-30": count("installed_on BETWEEN '2023-01-01' AND '2023-06-30'"),
        "2023-03-01/..": count("installed_on >= '2023-03-01'"),
        "../2022-12-31": count("installed_on <= '2022-12-31'"),
        "/2022-12-31": count("installed_on <= '2022-12-31'"),
        "2023-02-01T00:00:00Z/2023-02-28T23:59:59Z":
            count("installed_on BETWEEN '2023-02-01' AND '2023-02-28'"),
    }
    day = column(conn, "SELECT installed_on FROM sensors WHERE installed_on IS NOT NULL "
                       "ORDER BY id LIMIT 1")[0]
    cases[str(day)] = count("installed_on = %s", day)
    for value, expected in cases.items():
        page = items(client, "sensors", limit=1000, datetime=value)
        assert page["numberMatched"] == expected > 0, value
        assert len(page["features"]) == expected
    everything = items(client, "sensors", limit=1)["numberMatched"]
    assert count("installed_on IS NULL") > 0 and everything == count("TRUE")


def test_grid_generations(fresh_db_url: str, tmp_path: Path) -> None:
    with psycopg.connect(fresh_db_url, autocommit=True) as c:
        old = c.execute("INSERT INTO grid_generations (name, valid_from, valid_to) "
                        "VALUES ('2020', '2020-01-01', '2023-04-01') RETURNING id").fetchone()[0]
        c.execute("INSERT INTO streets (generation_id, code, name, population, households, geom)"
                  " SELECT %s, code, name, population, households, geom FROM streets "
                  "ORDER BY id LIMIT 2", (old,))
        current = c.execute("SELECT count(*) FROM streets WHERE " + CURRENT).fetchone()[0]
    with TestClient(create_app(Settings(env="test", data_dir=tmp_path), fresh_db_url)) as c:
        def matched(**params: Any) -> int:
            return int(items(c, "streets", limit=100, **params)["numberMatched"])

        assert matched() == current
        assert matched(generation_id=old) == 2
        assert matched(datetime="2021-06-01") == 2
        assert matched(datetime="2024-01-01") == current
        assert matched(datetime="2019-01-01/2024-01-01") == current + 2
        assert matched(datetime="2023-04-01/..") == current  # valid_to is exclusive
        assert matched(datetime="2010-01-01") == 0
        page = items(c, "streets", generation_id=old)
        assert {f["properties"]["generation_id"] for f in page["features"]} == {old}


# -- one feature -----------------------------------------------------------------------------------


def test_single_item(client: TestClient) -> None:
    page = items(client, "parcels", limit=5, offset=7)
    feature = page["features"][2]
    r = client.get(f"/ogc/collections/parcels/items/{feature['id']}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
    one = r.json()
    assert {k: one[k] for k in ("type", "id", "geometry", "properties")} == feature
    rels = {(x["rel"], x["type"]) for x in one["links"]}
    assert ("self", "application/geo+json") in rels and ("collection", "application/json") in rels
    gk = client.get(f"/ogc/collections/parcels/items/{feature['id']}",
                    params={"crs": EPSG.format(4548)})
    assert gk.headers["content-crs"] == f"<{EPSG.format(4548)}>"
    assert gk.json()["geometry"]["coordinates"][0][0][0][0] > 4e6  # northing first
    for missing in ("99999999", "abc", "1.5", "-1"):
        r = client.get(f"/ogc/collections/parcels/items/{missing}")
        assert r.status_code == 404, missing
        assert r.json()["code"] == "NotFound"
    assert client.get("/ogc/collections/nope/items").status_code == 404
    assert client.get("/ogc/collections/nope/items/1").status_code == 404
    html = client.get(f"/ogc/collections/parcels/items/{feature['id']}", params={"f": "html"})
    assert html.status_code == 200 and feature["properties"]["code"] in html.text


# -- both doors ----------------------------------------------------------------------------------


def pygeoapi_door(client: TestClient, cid: str, params: dict[str, Any]) -> dict[str, Any]:
    """The page pygeoapi's own items handler makes through our provider, as JSON."""
    from pygeoapi.api import APIRequest

    service = client.app.state.ogc  # type: ignore[attr-defined]
    params = {k: str(v) for k, v in params.items()}
    coll = service.source.catalog()[cid]
    uri = f"http://testserver/ogc/collections/{cid}/items"
    call = routes.items_call(cid, uri, list(params.items()),
                             engine.parse_items(coll, params))
    # as the route hands it over: pygeoapi never sees the CQL2 parameters
    seen = {k: v for k, v in {**params, "f": "json"}.items() if k not in routes.FILTER_PARAMS}
    scope = {"type": "http", "method": "GET", "path": f"/ogc/collections/{cid}/items",
             "query_string": urlencode(seen).encode(), "headers": [],
             "server": ("testserver", 80), "scheme": "http", "root_path": ""}
    request = APIRequest(Request(scope), service.locales)
    _, status, content = routes.pygeoapi_items(service.api("http://testserver"), request, call)
    assert status == 200, content
    page: dict[str, Any] = json.loads(content)
    return page


DOORS = [
    {"limit": 7},
    {"limit": 5, "offset": 4},
    {"limit": 50, "bbox": ",".join(map(str, BOX)), "sortby": "-installed_on,name"},
    {"limit": 3, "crs": EPSG.format(4548), "properties": "name,kind"},
    {"limit": 40, "datetime": "2023-01-01/..", "kind": "manhole_cover"},
    {"limit": 1000, "offset": 400},  # the last page: pygeoapi adds its own prev
    {"limit": 4, "filter": "kind = 'noise' AND S_INTERSECTS(geometry, BBOX(117.9, 36.7, "
                           "118.1, 36.9))"},
]


@pytest.mark.parametrize("params", DOORS, ids=lambda p: "&".join(p))
def test_both_doors_give_the_same_page(client: TestClient, params: dict[str, Any]) -> None:
    ours = items(client, "sensors", f="json", **params)
    theirs = pygeoapi_door(client, "sensors", {"f": "json", **params})
    for page in (ours, theirs):
        assert page.pop("timeStamp")
    if "filter" in params:
        # pygeoapi's own alternates are built from what it saw: no filter (documented)
        mine = [x for x in ours["links"] if x["rel"] in ("self", "alternate")]
        its = [x for x in theirs["links"] if x["rel"] in ("self", "alternate")]
        assert [x["href"].split("&filter=")[0] for x in mine] == [x["href"] for x in its]
        for page in (ours, theirs):
            page["links"] = [x for x in page["links"] if x["rel"] not in ("self", "alternate")]
    assert ours == theirs  # features, counts and links, in order
    # and the next page, from the cursor link both gave
    if (href := link(ours, "next")) is not None:
        nxt = dict(parse_qs(urlsplit(href).query, keep_blank_values=True))
        flat = {k: v[0] for k, v in nxt.items()}
        again = client.get(href).json()
        other = pygeoapi_door(client, "sensors", flat)
        again.pop("timeStamp"), other.pop("timeStamp")
        assert [f["id"] for f in again["features"]] == [f["id"] for f in other["features"]]


def test_pygeoapi_arguments_map_onto_the_engine(client: TestClient) -> None:
    """The provider called as pygeoapi calls it (no route around it): the same features
    as the route, bbox arriving in the storage CRS's lat/lon order (pygeoapi #2010)."""
    from pygeoapi.api.itemtypes import create_crs_transform_spec
    from pygeoapi.util import transform_bbox

    from api.ogc.provider import GridgovProvider

    service = client.app.state.ogc  # type: ignore[attr-defined]
    config = service.api("http://testserver").config["resources"]["buildings"]["providers"][0]
    provider = GridgovProvider(config)
    bbox = transform_bbox(list(BOX), CRS84, config["storage_crs"])
    assert bbox[0] == BOX[1]  # lat first
    got = provider.query(offset=10, limit=30, bbox=bbox, sortby=[
        {"property": "height_m", "order": "-"}], select_properties=["code", "height_m"],
        properties=[("use", "residential")],
        crs_transform_spec=create_crs_transform_spec(config, EPSG.format(3857)))
    ours = items(client, "buildings", offset=10, limit=30, bbox=",".join(map(str, BOX)),
                 sortby="-height_m", properties="code,height_m", use="residential",
                 crs=EPSG.format(3857))
    assert got["features"] == ours["features"] and got["numberMatched"] == ours["numberMatched"]
    assert got["links"] == []  # pygeoapi pages by offset itself then
    stored = provider.query(limit=2, crs_transform_spec=None)  # pygeoapi: crs == storage
    assert stored["features"][0]["geometry"]["coordinates"][0][0][0][0] < 40  # lat first
    one = provider.get(ours["features"][0]["id"])
    assert one["id"] == ours["features"][0]["id"]
    from pygeoapi.provider.base import ProviderInvalidQueryError, ProviderItemNotFoundError

    with pytest.raises(ProviderItemNotFoundError):
        provider.get(10**9)
    with pytest.raises(ProviderInvalidQueryError, match="sortby"):
        provider.query(sortby=[{"property": "nope", "order": "+"}])


def test_html_pages_come_from_pygeoapi_with_our_links(client: TestClient) -> None:
    params = {"limit": 3, "sortby": "-installed_on"}
    page = items(client, "sensors", **params)
    r = client.get("/ogc/collections/sensors/items", params=params,
                   headers={"accept": "text/html,application/xhtml+xml"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    hrefs = {h.replace("&amp;", "&") for h in re.findall(r'href="([^"]+)"', r.text)}
    assert link(page, "next") in hrefs
    for feature in page["features"]:
        assert feature["properties"]["name"] in r.text
    bad = client.get("/ogc/collections/sensors/items", params={"f": "html", "limit": 0})
    assert bad.status_code == 400 and bad.headers["content-type"].startswith("text/html")


def test_filter_in_both_cql2_encodings(client: TestClient, conn: psycopg.Connection[Any]) -> None:
    x0, y0, x1, y1 = BOX
    text = (f"kind IN ('dome', 'fixed') AND range_m > 50 AND "
            f"S_INTERSECTS(geometry, BBOX({x0}, {y0}, {x1}, {y1}))")
    json_filter = {"op": "and", "args": [
        {"op": "in", "args": [{"property": "kind"}, ["dome", "fixed"]]},
        {"op": ">", "args": [{"property": "range_m"}, 50]},
        {"op": "s_intersects", "args": [{"property": "geometry"}, {"bbox": list(BOX)}]}]}
    expected = column(conn, "SELECT id FROM cameras WHERE kind IN ('dome', 'fixed') AND "
                            "range_m > 50 AND ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, "
                            "%s, 4490)) ORDER BY id", *BOX)
    assert 0 < len(expected) < 2000
    as_text = walk(client, "cameras", limit=500, filter=text)
    as_json = walk(client, "cameras", limit=500, filter=json.dumps(json_filter),
                   **{"filter-lang": "cql2-json"})
    assert ids(as_text) == ids(as_json) == expected
    assert "filter=" in (link(as_text[0], "next") or "")  # the filter stays on every page


# -- bad input ------------------------------------------------------------------------------------


BAD = [
    ({"bbox": "1,2,3"}, "bbox"),
    ({"bbox": "a,b,c,d"}, "bbox"),
    ({"bbox": "1,2,3,4,5"}, "bbox"),
    ({"bbox": "181,30,182,31"}, "bbox"),
    ({"bbox": "118,36,117,37"}, "bbox"),
    ({"bbox": "nan,1,2,3"}, "bbox"),
    ({"bbox": "36,181,37,182", "bbox-crs": EPSG.format(4326)}, "bbox"),
    ({"bbox-crs": EPSG.format(4548)}, "bbox-crs"),
    ({"bbox": "1,2,3,4", "bbox-crs": "EPSG:9999"}, "bbox-crs"),
    ({"crs": EPSG.format(9999)}, "crs"),
    ({"crs": "EPSG:4548'; DROP TABLE cameras; --"}, "crs"),
    ({"limit": "-1"}, "limit"),
    ({"limit": "0"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"offset": "-5"}, "offset"),
    ({"offset": "100000000000000000000"}, "offset"),
    ({"bbox": "-1e20,-1e20,1e20,1e20", "bbox-crs": EPSG.format(4548)}, "bbox"),
    ({"bbox": "-1e20,-1e20,1e20,1e20", "bbox-crs": EPSG.format(3857)}, "bbox"),
    ({"properties": "name,phone"}, "properties"),
    ({"properties": "name; DROP TABLE cameras"}, "properties"),
    ({"properties": ""}, "properties"),
    ({"sortby": "name) OR 1=1 --"}, "sortby"),
    ({"sortby": "pg_sleep(10)"}, "sortby"),
    ({"sortby": "-name,+name"}, "sortby"),
    ({"sortby": "id"}, "sortby"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "WzMsICItbmFtZSIsICJ4IiwgMV0"}, "cursor"),  # made for sortby=-name
    ({"datetime": "yesterday"}, "datetime"),
    ({"datetime": "2023-05-01/2023-01-01"}, "datetime"),
    ({"datetime": "../.."}, "datetime"),
    ({"skipGeometry": "maybe"}, "skipGeometry"),
    ({"range_m": "far"}, "range_m"),
    ({"phone": "1"}, "phone"),
    ({"filter": "nosuchcolumn = 1"}, "filter"),
    ({"filter": "pg_sleep(10) = 1"}, "filter"),
    ({"filter": "kind = 'dome'", "filter-lang": "ecql"}, "filter-lang"),
    ({"filter": "kind = 'dome'", "filter-crs": "EPSG:9999"}, "filter-crs"),
    ({"filter-lang": "cql2-text"}, "filter-lang"),
]


@pytest.mark.parametrize(("params", "parameter"), BAD, ids=[str(p) for p, _ in BAD])
def test_bad_input_is_400_naming_the_parameter(client: TestClient, params: dict[str, str],
                                               parameter: str) -> None:
    r = client.get("/ogc/collections/cameras/items", params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "InvalidParameterValue" and body["parameter"] == parameter
    assert body["description"].startswith(f"{parameter}: ")


def test_datetime_where_there_is_no_time_is_400(client: TestClient) -> None:
    r = client.get("/ogc/collections/buildings/items", params={"datetime": "2023-01-01"})
    assert r.status_code == 400 and r.json()["parameter"] == "datetime"
    r = client.get("/ogc/collections/cameras/items/1", params={"crs": "EPSG:1"})
    assert r.status_code == 400 and r.json()["parameter"] == "crs"


def test_a_limit_over_the_maximum_is_read_as_the_maximum(client: TestClient) -> None:
    """OGC API Features 1 (/req/core/fc-limit-response-1): no error, at most the maximum."""
    page = items(client, "buildings", limit=20000)
    assert page["numberReturned"] == 10_000
    href = next(link["href"] for link in page["links"] if link["rel"] == "next")
    more = client.get(href).json()
    assert more["numberReturned"] == 10_000
    assert {f["id"] for f in more["features"]}.isdisjoint(f["id"] for f in page["features"])


def test_every_collection_links_its_vector_tiles(client: TestClient) -> None:
    """GDAL's OGC API driver and the geodata-tilesets class find tiles by this link."""
    rel = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"
    for coll in client.get("/ogc/collections").json()["collections"]:
        doc = client.get(f"/ogc/collections/{coll['id']}").json()
        hrefs = [link["href"] for link in doc["links"] if link["rel"] == rel]
        assert hrefs == [f"http://testserver/ogc/collections/{coll['id']}/tiles"], coll["id"]
        tilesets = client.get(hrefs[0]).json()
        assert tilesets["tilesets"][0]["tileMatrixSetURI"].endswith("WebMercatorQuad")


def test_coverage_is_a_collection_an_officer_can_colour_by(
    client: TestClient, conn: psycopg.Connection[Any]
) -> None:
    """micro_grid_coverage: one feature per micro-grid, blind spots as geometry."""
    page = items(client, "micro_grid_coverage", limit=1000, sortby="covered_fraction")
    assert page["numberMatched"] == page["numberReturned"] == 321
    shares = [f["properties"]["covered_fraction"] for f in page["features"]]
    assert shares == sorted(shares) and 0 <= shares[0] < shares[-1] <= 1
    worst = page["features"][0]
    assert worst["geometry"]["type"] == "MultiPolygon"  # the part nobody sees
    (code,) = conn.execute("SELECT code FROM micro_grid_coverage "
                           "ORDER BY covered_fraction, id LIMIT 1").fetchone()
    assert worst["properties"]["code"] == code


def test_openapi_describes_what_the_items_paths_accept(client: TestClient,
                                                       conn: psycopg.Connection[Any]) -> None:
    """/ogc/openapi lists our parameters on every items path (pygeoapi's document lacks
    them), refers to no file elsewhere for them, and what it declares is accepted."""
    doc = client.get("/ogc/openapi", params={"f": "json"}).json()
    shared = doc["components"]["parameters"]
    catalog = engine.load_catalog(conn)
    for cid, coll in catalog.items():
        listed = doc["paths"][f"/collections/{cid}/items"]["get"]["parameters"]
        names = {p["$ref"].rsplit("/", 1)[-1] if "$ref" in p else p["name"] for p in listed}
        assert {"limit", "offset", "cursor", "bbox", "bbox-crs", "crs", "properties", "sortby",
                "filter", "filter-lang", "filter-crs", *coll.layer.columns} <= names, cid
        assert ("datetime" in names) == coll.temporal, cid
        assert not [p for p in listed if p.get("$ref", "#").startswith("http")], cid
    assert shared["limit"]["schema"]["maximum"] == engine.MAX_LIMIT
    for crs in shared["crs"]["schema"]["enum"]:
        assert items(client, "cameras", limit=1, crs=crs)["numberReturned"] == 1
    for fcrs in shared["filter-crs"]["schema"]["enum"]:
        items(client, "cameras", limit=1, filter="kind = 'dome'", **{"filter-crs": fcrs})
    texts = {"cql2-text": "kind = 'dome'",
             "cql2-json": json.dumps({"op": "=", "args": [{"property": "kind"}, "dome"]})}
    for lang in shared["filter-lang"]["schema"]["enum"]:
        page = items(client, "cameras", limit=5, filter=texts[lang], **{"filter-lang": lang})
        assert {f["properties"]["kind"] for f in page["features"]} == {"dome"}
    first = items(client, "cameras", limit=5, sortby="-code")
    cursor = parse_qs(urlsplit(link(first, "next") or "").query)["cursor"][0]
    assert re.fullmatch(shared["cursor"]["schema"]["pattern"], cursor)
    after = items(client, "cameras", limit=5, sortby="-code", offset=5, cursor=cursor)
    assert after["features"][0]["properties"]["code"] < first["features"][-1]["properties"]["code"]
    # and what it does not declare is refused
    for bad in ({"filter": "kind = 'dome'", "filter-lang": "cql-text"}, {"crs": "EPSG:2000"},
                {"filter": "kind = 'dome'", "filter-crs": EPSG.format(2000)}):
        r = client.get("/ogc/collections/cameras/items", params=bad)
        assert r.status_code == 400, bad


def test_statements_are_composed_once_per_shape(conn: psycopg.Connection[Any]) -> None:
    """Requests that differ only in values send the same statement bytes (composed once,
    kept), with the values bound; a filter text seen before is not parsed again."""
    coll = engine.load_catalog(conn)["buildings"]
    one = {"limit": "10", "bbox": "117.99,36.76,118.0,36.77",
           "filter": "floors >= 2 AND use = 'rural_residential'"}
    two = {"limit": "50", "bbox": "118.0,36.7,118.04,36.8",
           "filter": "floors >= 3 AND use = 'residential'"}
    a, b = engine.parse_items(coll, one), engine.parse_items(coll, two)
    (sa, va), (sb, vb) = engine.items_statement(coll, a), engine.items_statement(coll, b)
    assert sa is sb and va != vb
    assert engine.parse_items(coll, dict(one)).filter is a.filter
    other = engine.parse_items(coll, {**one, "filter": "floors >= 2.5 AND use = 'industrial'"})
    assert engine.items_statement(coll, other)[0] != sa  # a float is another cast
    assert engine.items_statement(coll, engine.parse_items(coll, {"limit": "10"}))[0] != sa
    for statement, values, (x0, y0, x1, y1), floors, use in (
            (sa, va, (117.99, 36.76, 118.0, 36.77), 2, "rural_residential"),
            (sb, vb, (118.0, 36.7, 118.04, 36.8), 3, "residential")):
        row = conn.execute(statement, values).fetchone()
        assert row is not None
        expected = column(conn, "SELECT count(*) FROM buildings WHERE floors >= %s AND use = %s "
                                "AND ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4490))",
                          floors, use, x0, y0, x1, y1)[0]
        assert json.loads(row[0])["numberMatched"] == expected > 0


def test_datetime_on_a_timestamp_column(conn: psycopg.Connection[Any]) -> None:
    """A collection whose time is a timestamp (no published one has it yet: coverage's
    ``computed_at`` read as if the layer had no generations): a date is the whole UTC
    day, an instant is exact, open ends are open."""
    real = engine.load_catalog(conn)["micro_grid_coverage"]
    layer = dataclasses.replace(
        real.layer, columns=tuple(c for c in real.layer.columns if c != "generation_id"))
    coll = dataclasses.replace(real, layer=layer, time="computed_at")
    assert not coll.generational and coll.types["computed_at"] == "datetime"
    first, last = conn.execute("SELECT min(computed_at), max(computed_at) "
                               "FROM micro_grid_coverage").fetchone() or (None, None)
    assert first is not None and last is not None
    day = first.astimezone(dt.UTC).date()
    midnight = dt.datetime.combine(day, dt.time(), dt.UTC)
    cases = {
        day.isoformat(): ("computed_at >= %s AND computed_at < %s",
                          midnight, midnight + dt.timedelta(days=1)),
        f"../{day}": ("computed_at < %s", midnight + dt.timedelta(days=1)),
        f"../{day - dt.timedelta(days=1)}": ("computed_at < %s", midnight),
        f"{last.isoformat()}/..": ("computed_at >= %s", last),
        f"{first.isoformat()}/{first.isoformat()}": ("computed_at = %s", first),
    }
    for value, (where, *args) in cases.items():
        q = engine.parse_items(coll, {"datetime": value, "limit": "1"})
        statement, values = engine.items_statement(coll, q)
        row = conn.execute(statement, values).fetchone()
        assert row is not None
        count = sql.SQL("SELECT count(*) FROM micro_grid_coverage WHERE {}").format(sql.SQL(where))
        expected = conn.execute(count, args).fetchone()
        assert expected is not None
        assert json.loads(row[0])["numberMatched"] == expected[0], value
    assert column(conn, "SELECT count(*) FROM micro_grid_coverage")[0] > 0
