"""CQL2 filters: translation, execution on the demo town against independent references
(hand-written SQL, shapely, pyproj), and a corpus of bad input refused before any SQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Any

import numpy as np
import psycopg
import pyproj
import pytest
import shapely
from psycopg import sql
from shapely.geometry.base import BaseGeometry

from layers.cql2 import (
    CRS84,
    FILTER_CRS,
    MAX_DEPTH,
    FilterError,
    Queryable,
    filter_crs,
    parse,
    queryables,
    to_sql,
)
from layers.errors import InvalidInput
from layers.registry import LAYERS
from seed_data.town import Town

Conn = psycopg.Connection[tuple[Any, ...]]

# an irregular pentagon inside the demo town (CRS84 lon/lat)
PENTAGON = [(118.00, 36.76), (118.06, 36.77), (118.07, 36.81), (118.03, 36.83), (117.99, 36.80),
            (118.00, 36.76)]
CENTRE = (118.05, 36.8)


@pytest.fixture(scope="module")
def conn(db_url: str) -> Iterator[Conn]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def q(layer: str) -> Any:
    return queryables(LAYERS[layer])


def ids(conn: Conn, layer: str, cql: Any, lang: str = "cql2-text", crs: str | None = None
        ) -> set[int]:
    where, params = to_sql(cql, lang, q(layer), crs)
    stmt = sql.SQL("SELECT id FROM {} WHERE {}").format(sql.Identifier(layer), where)
    return {row[0] for row in conn.execute(stmt, params)}


def ref(conn: Conn, query: str) -> set[int]:
    return {row[0] for row in conn.execute(query)}  # type: ignore[call-overload]


def wkt_ring(points: list[tuple[float, float]]) -> str:
    return ", ".join(f"{x!r} {y!r}" for x, y in points)


@cache
def _features(db_url: str, layer: str) -> tuple[np.ndarray, np.ndarray]:
    with psycopg.connect(db_url) as c:
        rows = c.execute(
            sql.SQL("SELECT id, ST_AsBinary(geom) FROM {} ORDER BY id").format(
                sql.Identifier(layer))
        ).fetchall()
    return np.array([r[0] for r in rows]), shapely.from_wkb([bytes(r[1]) for r in rows])


def shapely_ids(db_url: str, layer: str, test: Any) -> set[int]:
    fid, geoms = _features(db_url, layer)
    return set(fid[test(geoms)].tolist())


# -- translation ------------------------------------------------------------------------


def test_comparison_renders_bound_parameters_in_both_encodings(conn: Conn) -> None:
    text = to_sql("kind = 'dome' AND range_m > 150", "cql2-text", q("cameras"))
    json_ = to_sql({"op": "and", "args": [
        {"op": "=", "args": [{"property": "kind"}, "dome"]},
        {"op": ">", "args": [{"property": "range_m"}, 150]},
    ]}, "cql2-json", q("cameras"))
    for where, params in (text, json_):
        assert where.as_string(conn) == (
            '(("kind" = %(cql0)s::text) AND ("range_m" > %(cql1)s::bigint))')
        assert params == {"cql0": "dome", "cql1": 150}


def test_precedence_not_over_and_over_or(conn: Conn) -> None:
    where, _ = to_sql("kind = 'a' OR NOT kind = 'b' AND range_m > 1", "cql2-text",
                      q("cameras"))
    assert where.as_string(conn) == (
        '(("kind" = %(cql0)s::text) OR ((NOT ("kind" = %(cql1)s::text)) AND '
        '("range_m" > %(cql2)s::bigint)))')


def test_alias_and_prefix(conn: Conn) -> None:
    where, params = to_sql("CASEI(kind) LIKE CASEI('D%')", "cql2-text", q("cameras"),
                           prefix="f_", alias="t")
    assert where.as_string(conn) == '(lower("t"."kind") LIKE lower(%(f_0)s::text))'
    assert params == {"f_0": "D%"}


def test_geometry_literal_is_transformed_once_with_integer_srids(conn: Conn) -> None:
    # EPSG:4548 is northing first; the bound WKT is x/y (easting, northing) with the SRID
    where, params = to_sql("S_INTERSECTS(geometry, POINT(4070000 590000))", "cql2-text",
                           q("cameras"), "EPSG:4548")
    assert where.as_string(conn) == (
        'ST_Intersects("geom", (SELECT ST_Transform(ST_GeomFromText(%(cql0)s::text, '
        '%(cql1)s::integer), 4490)))')
    assert params == {"cql0": "POINT (590000 4070000)", "cql1": 4548}


def test_date_meets_timestamp_at_midnight_utc(conn: Conn) -> None:
    where, params = to_sql("installed_on < TIMESTAMP('2023-01-01T00:00:00Z')", "cql2-text",
                           q("sensors"))
    assert where.as_string(conn) == (
        """(("installed_on"::timestamp AT TIME ZONE 'UTC') < %(cql0)s::timestamptz)""")


@pytest.mark.parametrize(("cql", "expected"), [
    ("T_DURING(seen_at, INTERVAL('2023-01-01', '..'))", {3}),  # strict, as CQL2 defines it
    ("T_INTERSECTS(seen_at, INTERVAL('2023-01-01', '..'))", {2, 3}),
    ("T_BEFORE(seen_at, DATE('2023-01-01'))", {1}),
    ("T_EQUALS(seen_at, TIMESTAMP('2023-01-01T08:00:00+08:00'))", {2}),
    ("T_DISJOINT(seen_at, INTERVAL('2022-12-31T23:59:59Z', '2023-01-01T00:00:00Z'))", {3}),
    ("seen_at >= DATE('2023-01-01') AND seen_at IS NOT NULL", {2, 3}),
])
def test_timestamps_and_the_edges_of_intervals(conn: Conn, cql: str, expected: set[int]) -> None:
    seen = {"seen_at": Queryable("seen_at", "timestamp", "seen_at")}
    where, params = to_sql(cql, "cql2-text", seen)
    rows = sql.SQL(
        "SELECT n FROM (VALUES (1, timestamptz '2022-12-31 23:59:59Z'), "
        "(2, timestamptz '2023-01-01 00:00:00Z'), (3, timestamptz '2023-01-01 00:00:01Z'), "
        "(4, NULL)) AS t(n, seen_at) WHERE {}").format(where)
    assert {r[0] for r in conn.execute(rows, params)} == expected


def test_sql_in_a_string_stays_a_bound_value(conn: Conn, demo_town: Town) -> None:
    hostile = "x'); DROP TABLE cameras; SELECT pg_sleep(10); --"
    where, params = to_sql(f"name = '{hostile.replace(chr(39), chr(39) * 2)}'", "cql2-text",
                           q("cameras"))
    assert where.as_string(conn) == '("name" = %(cql0)s::text)'
    assert params == {"cql0": hostile}
    assert ids(conn, "cameras", f"name = '{hostile.replace(chr(39), chr(39) * 2)}'") == set()
    assert conn.execute("SELECT count(*) FROM cameras").fetchone() == (
        demo_town.counts()["cameras"],)


def test_queryables_match_the_database(conn: Conn) -> None:
    pg = {"text": "text", "character varying": "text", "integer": "integer",
          "smallint": "integer", "bigint": "integer",
          "double precision": "number", "date": "date",
          "timestamp with time zone": "timestamp"}
    for layer in LAYERS.values():
        found = q(layer.name)
        assert found["geometry"].column == "geom"
        cols = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = %s", (layer.table,)).fetchall())
        for col in layer.columns:
            assert found[col].sql_type == pg[cols[col]], (layer.name, col)
    assert q("sensors")["installed_on"].json_schema() == {
        "title": "installed_on", "type": "string", "format": "date"}


def test_filter_crs_axis_order_agrees_with_proj() -> None:
    for fcrs in FILTER_CRS.values():
        if fcrs is CRS84:
            continue
        first = pyproj.CRS.from_epsg(fcrs.srid).axis_info[0].direction
        assert fcrs.yx == (first == "north"), fcrs.uri


@pytest.mark.parametrize("spelling", [
    None, "", "CRS84", "OGC:CRS84", "http://www.opengis.net/def/crs/OGC/1.3/CRS84",
    "[OGC:CRS84]",
])
def test_filter_crs_defaults_to_crs84(spelling: str | None) -> None:
    assert filter_crs(spelling) is CRS84


@pytest.mark.parametrize("spelling", [
    "EPSG:4548", "epsg:4548", "[EPSG:4548]", "http://www.opengis.net/def/crs/EPSG/0/4548",
    "https://www.opengis.net/def/crs/EPSG/0/4548", "urn:ogc:def:crs:EPSG::4548",
])
def test_filter_crs_spellings(spelling: str) -> None:
    assert filter_crs(spelling).srid == 4548


# -- execution against the demo town -------------------------------------------------------

ATTRIBUTE_CASES = [
    ("cameras", "kind = 'dome' AND range_m > 150",
     {"op": "and", "args": [{"op": "=", "args": [{"property": "kind"}, "dome"]},
                            {"op": ">", "args": [{"property": "range_m"}, 150]}]},
     "SELECT id FROM cameras WHERE kind = 'dome' AND range_m > 150"),
    ("cameras", "code LIKE 'CAM370303106%'",
     {"op": "like", "args": [{"property": "code"}, "CAM370303106%"]},
     "SELECT id FROM cameras WHERE starts_with(code, 'CAM370303106')"),
    ("cameras", "kind IN ('dome', 'fixed')",
     {"op": "in", "args": [{"property": "kind"}, ["dome", "fixed"]]},
     "SELECT id FROM cameras WHERE kind = 'dome' OR kind = 'fixed'"),
    ("cameras", "kind NOT IN ('dome', 'fixed')",
     {"op": "not", "args": [{"op": "in", "args": [{"property": "kind"}, ["dome", "fixed"]]}]},
     "SELECT id FROM cameras WHERE kind = 'high_point'"),
    ("cameras", "high_point_id IS NOT NULL",
     {"op": "not", "args": [{"op": "isNull", "args": [{"property": "high_point_id"}]}]},
     "SELECT id FROM cameras WHERE kind = 'high_point'"),
    ("buildings", "height_m BETWEEN 20 AND 40",
     {"op": "between", "args": [{"property": "height_m"}, 20, 40]},
     "SELECT id FROM buildings WHERE height_m >= 20 AND height_m <= 40"),
    ("buildings", "floors > 10 OR height_m < 4.5 AND use = 'industrial'",
     {"op": "or", "args": [
         {"op": ">", "args": [{"property": "floors"}, 10]},
         {"op": "and", "args": [{"op": "<", "args": [{"property": "height_m"}, 4.5]},
                                {"op": "=", "args": [{"property": "use"}, "industrial"]}]}]},
     "SELECT id FROM buildings WHERE floors > 10 OR (height_m < 4.5 AND use = 'industrial')"),
    ("parcels", "permit_no IS NULL AND NOT permit_status = 'none'",
     {"op": "and", "args": [
         {"op": "isNull", "args": [{"property": "permit_no"}]},
         {"op": "not", "args": [{"op": "=", "args": [{"property": "permit_status"}, "none"]}]}]},
     "SELECT id FROM parcels WHERE permit_no IS NULL AND permit_status <> 'none'"),
    ("micro_grids", "kind = 'village' AND population >= 500",
     {"op": "and", "args": [{"op": "=", "args": [{"property": "kind"}, "village"]},
                            {"op": ">=", "args": [{"property": "population"}, 500]}]},
     "SELECT id FROM micro_grids WHERE kind = 'village' AND population >= 500"),
    ("sensors", "CASEI(kind) = CASEI('PM25_Station')",
     {"op": "=", "args": [{"op": "casei", "args": [{"property": "kind"}]},
                          {"op": "casei", "args": ["PM25_Station"]}]},
     "SELECT id FROM sensors WHERE kind = 'pm25_station'"),
    ("sensors", "T_AFTER(installed_on, DATE('2022-01-01'))",
     {"op": "t_after", "args": [{"property": "installed_on"}, {"date": "2022-01-01"}]},
     "SELECT id FROM sensors WHERE installed_on > '2022-01-01'"),
    ("sensors", "T_BEFORE(installed_on, DATE('2023-03-01'))",
     {"op": "t_before", "args": [{"property": "installed_on"}, {"date": "2023-03-01"}]},
     "SELECT id FROM sensors WHERE installed_on < '2023-03-01'"),
    ("sensors", "T_DURING(installed_on, INTERVAL('2023-01-01', '2023-06-30'))",
     {"op": "t_during", "args": [{"property": "installed_on"},
                                 {"interval": ["2023-01-01", "2023-06-30"]}]},
     "SELECT id FROM sensors WHERE installed_on > '2023-01-01' AND installed_on < '2023-06-30'"),
    ("sensors", "T_INTERSECTS(installed_on, INTERVAL('2023-01-01', '..'))",
     {"op": "t_intersects", "args": [{"property": "installed_on"},
                                     {"interval": ["2023-01-01", ".."]}]},
     "SELECT id FROM sensors WHERE installed_on >= '2023-01-01'"),
    ("sensors", "NOT T_INTERSECTS(installed_on, INTERVAL('2023-01-01', '..'))",
     {"op": "not", "args": [{"op": "t_intersects", "args": [
         {"property": "installed_on"}, {"interval": ["2023-01-01", ".."]}]}]},
     "SELECT id FROM sensors WHERE installed_on < '2023-01-01'"),  # NULL dates match nothing
    ("sensors", "T_EQUALS(installed_on, DATE('2023-01-01'))",
     {"op": "t_equals", "args": [{"property": "installed_on"}, {"date": "2023-01-01"}]},
     "SELECT id FROM sensors WHERE installed_on = '2023-01-01'"),
    ("sensors", "T_AFTER(installed_on, TIMESTAMP('2023-06-30T23:00:00Z'))",
     {"op": "t_after", "args": [{"property": "installed_on"},
                                {"timestamp": "2023-06-30T23:00:00Z"}]},
     "SELECT id FROM sensors WHERE installed_on >= '2023-07-01'"),
    ("sensors", "installed_on IS NULL",
     {"op": "isNull", "args": [{"property": "installed_on"}]},
     "SELECT id FROM sensors WHERE installed_on IS NULL"),
]


@pytest.mark.parametrize(("layer", "text", "json_", "reference"), ATTRIBUTE_CASES,
                         ids=[c[1] for c in ATTRIBUTE_CASES])
def test_attribute_filters_match_hand_written_sql(
    conn: Conn, layer: str, text: str, json_: Any, reference: str
) -> None:
    expected = ref(conn, reference)
    total = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(layer)))
    assert 0 < len(expected) < total.fetchone()[0]  # type: ignore[index]
    assert ids(conn, layer, text) == expected
    assert ids(conn, layer, json_, "cql2-json") == expected


def _pentagon_in(crs: int, yx: bool) -> list[tuple[float, float]]:
    t = pyproj.Transformer.from_crs("OGC:CRS84", crs, always_xy=True)
    pts = [t.transform(x, y) for x, y in PENTAGON]
    return [(b, a) for a, b in pts] if yx else pts


def _to_lonlat(points: list[tuple[float, float]], crs: int, yx: bool) -> BaseGeometry:
    t = pyproj.Transformer.from_crs(crs, 4490, always_xy=True)
    return shapely.Polygon([t.transform(*((b, a) if yx else (a, b))) for a, b in points])


@pytest.mark.parametrize("layer", ["cameras", "buildings"])
def test_s_intersects_and_s_within_match_shapely(conn: Conn, db_url: str, layer: str) -> None:
    poly = shapely.Polygon(PENTAGON)
    wkt = f"POLYGON(({wkt_ring(PENTAGON)}))"
    expected = shapely_ids(db_url, layer, lambda g: shapely.intersects(g, poly))
    assert 10 < len(expected)
    assert ids(conn, layer, f"S_INTERSECTS(geometry, {wkt})") == expected
    geojson = {"type": "Polygon", "coordinates": [[list(p) for p in PENTAGON]]}
    assert ids(conn, layer, {"op": "s_intersects", "args": [{"property": "geometry"}, geojson]},
               "cql2-json") == expected
    within = shapely_ids(db_url, layer, lambda g: shapely.within(g, poly))
    assert ids(conn, layer, f"S_WITHIN(geometry, {wkt})") == within
    assert ids(conn, layer, f"S_DISJOINT(geometry, {wkt})") == (
        set(_features(db_url, layer)[0].tolist()) - expected)


def test_s_contains_a_point_matches_shapely(conn: Conn, db_url: str) -> None:
    _, grids = _features(db_url, "micro_grids")
    pt = grids[len(grids) // 2].representative_point()
    expected = shapely_ids(db_url, "micro_grids", lambda g: shapely.contains(g, pt))
    assert len(expected) == 1
    assert ids(conn, "micro_grids", f"S_CONTAINS(geometry, POINT({pt.x!r} {pt.y!r}))") == expected
    assert ids(conn, "micro_grids", {"op": "s_contains", "args": [
        {"property": "geometry"}, {"type": "Point", "coordinates": [pt.x, pt.y]}]},
        "cql2-json") == expected


def test_bbox_in_crs84_and_in_lat_first_epsg_4326(conn: Conn, db_url: str) -> None:
    box = shapely.box(118.0, 36.78, 118.06, 36.82)
    expected = shapely_ids(db_url, "cameras", lambda g: shapely.intersects(g, box))
    assert 10 < len(expected)
    assert ids(conn, "cameras", "S_INTERSECTS(geometry, BBOX(118.0, 36.78, 118.06, 36.82))"
               ) == expected
    assert ids(conn, "cameras", {"op": "s_intersects", "args": [
        {"property": "geometry"}, {"bbox": [118.0, 36.78, 118.06, 36.82]}]}, "cql2-json"
    ) == expected
    assert ids(conn, "cameras", "S_INTERSECTS(geometry, BBOX(36.78, 118.0, 36.82, 118.06))",
               crs="http://www.opengis.net/def/crs/EPSG/0/4326") == expected
    assert ids(conn, "cameras", "S_INTERSECTS(geometry, POLYGON((36.78 118.0, 36.78 118.06, "
               "36.82 118.06, 36.82 118.0, 36.78 118.0)))", crs="EPSG:4490") == expected


@pytest.mark.parametrize(("srid", "yx"), [(4548, True), (3857, False)])
def test_filter_in_a_projected_crs_matches_shapely(
    conn: Conn, db_url: str, srid: int, yx: bool
) -> None:
    points = _pentagon_in(srid, yx)
    poly = _to_lonlat(points, srid, yx)
    expected = shapely_ids(db_url, "buildings", lambda g: shapely.intersects(g, poly))
    assert 10 < len(expected)
    got = ids(conn, "buildings", f"S_INTERSECTS(geometry, POLYGON(({wkt_ring(points)})))",
              crs=f"EPSG:{srid}")
    assert got == expected
    geojson = {"type": "Polygon", "coordinates": [[list(p) for p in points]]}
    assert ids(conn, "buildings", {"op": "s_intersects", "args": [
        {"property": "geometry"}, geojson]}, "cql2-json", f"EPSG:{srid}") == expected


def test_s_dwithin_points_match_ellipsoidal_distances(conn: Conn, db_url: str) -> None:
    fid, geoms = _features(db_url, "cameras")
    _, _, dist = pyproj.Geod(ellps="GRS80").inv(
        np.full(len(geoms), CENTRE[0]), np.full(len(geoms), CENTRE[1]),
        shapely.get_x(geoms), shapely.get_y(geoms))
    assert not np.any(np.abs(dist - 500.0) < 0.01)  # nothing on the edge: a clean reference
    expected = set(fid[dist <= 500.0].tolist())
    assert len(expected) > 5
    text = f"S_DWITHIN(geometry, POINT({CENTRE[0]} {CENTRE[1]}), 500, meters)"
    assert ids(conn, "cameras", text) == expected
    assert ids(conn, "cameras", "S_DWITHIN(geometry, POINT(118.05 36.8), 0.5, km)") == expected
    assert ids(conn, "cameras", {"op": "s_dwithin", "args": [
        {"property": "geometry"}, {"type": "Point", "coordinates": list(CENTRE)}, 500, "meters"]},
        "cql2-json") == expected
    e, n = pyproj.Transformer.from_crs(4490, 4548, always_xy=True).transform(*CENTRE)
    assert ids(conn, "cameras", f"S_DWITHIN(POINT({n!r} {e!r}), geometry, 500, meters)",
               crs="EPSG:4548") == expected


def test_s_dwithin_polygons_match_gauss_kruger_distances(conn: Conn, db_url: str) -> None:
    fid, geoms = _features(db_url, "buildings")
    to_gk = pyproj.Transformer.from_crs(4490, 4548, always_xy=True)
    centre = shapely.Point(to_gk.transform(*CENTRE))
    dist = shapely.distance(shapely.transform(geoms, lambda xy: np.column_stack(
        to_gk.transform(xy[:, 0], xy[:, 1]))), centre)
    got = ids(conn, "buildings", "S_DWITHIN(geometry, POINT(118.05 36.8), 600, meters)")
    # Gauss-Krüger scale 93 km off the central meridian: ~0.1 m in 600 m
    assert set(fid[dist < 599.0].tolist()) <= got <= set(fid[dist <= 601.0].tolist())
    assert len(got) > 10


def test_literal_geometry_is_transformed_once_even_in_a_generic_plan(conn: Conn) -> None:
    where, params = to_sql(f"S_INTERSECTS(geometry, POLYGON(({wkt_ring(PENTAGON)})))",
                           "cql2-text", q("buildings"))
    names = list(params)
    text = sql.SQL("SELECT id FROM buildings WHERE {}").format(where).as_string(conn)
    text = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", text)
    args = sql.SQL(", ").join(sql.Literal(v) for v in params.values()).as_string(conn)
    with conn.transaction():
        conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        conn.execute(sql.SQL("PREPARE cql_generic AS {}").format(sql.SQL(text)))
        try:
            plan = conn.execute(
                sql.SQL("EXPLAIN EXECUTE cql_generic({})").format(sql.SQL(args))).fetchall()
        finally:
            conn.execute("DEALLOCATE cql_generic")
    lines = "\n".join(row[0] for row in plan)
    assert "Index Cond: (geom && $0)" in lines
    assert "InitPlan 1" in lines


# -- bad input -----------------------------------------------------------------------------

DEEP_JSON: Any = {"op": "=", "args": [{"property": "kind"}, "x"]}
for _ in range(MAX_DEPTH + 5):
    DEEP_JSON = {"op": "not", "args": [DEEP_JSON]}

BAD = [
    # properties: never read as literals
    ("cameras", "kindd = 'dome'", None, "unknown property 'kindd'; did you mean 'kind'?"),
    ("cameras", "kind = dome", None, "unknown property 'dome'"),
    ("cameras", "Kind = 'dome'", None, "unknown property 'Kind'"),
    ("cameras", "名称 = '摄像头'", None, "unknown property '名称'"),
    ("cameras", "phone = '1'", None, "unknown property 'phone'"),
    ("cameras", {"op": "=", "args": [{"property": "kindd"}, "dome"]}, None,
     "unknown property 'kindd'"),
    ("cameras", "(SELECT count(*) FROM workers) > 0", None, "unknown property 'SELECT'"),
    # functions: nothing outside the allow-list reaches SQL
    ("cameras", "pg_sleep(10) IS NULL", None, "unknown function 'pg_sleep'"),
    ("cameras", "kind = 'x' OR pg_sleep(10) = 1", None, "unknown function 'pg_sleep'"),
    ("cameras", "query_to_xml('select * from workers', true, true, '') = 'x'", None,
     "unknown function 'query_to_xml'"),
    ("cameras", "version() = 'x'", None, "unknown function 'version'"),
    ("cameras", "CASEI(version()) = 'x'", None, "unknown function 'version'"),
    ("cameras", {"op": "pg_sleep", "args": [10]}, None, "unknown function 'pg_sleep'"),
    ("cameras", {"op": "=", "args": [{"op": "query_to_xml", "args": ["select 1"]}, "x"]}, None,
     "unknown function 'query_to_xml'"),
    ("cameras", {"op": "=", "args": [{"function": {"name": "pg_sleep", "args": [10]}}, 1]},
     None, "unknown function 'pg_sleep'"),
    ("cameras", "ACCENTI(name) = 'x'", None, "'ACCENTI' is not supported"),
    ("cameras", "S_NEAR(geometry, POINT(118 36.8))", None, "unknown spatial operator 'S_NEAR'"),
    ("cameras", "A_CONTAINS(kind, ('a'))", None, "unknown array operator 'A_CONTAINS'"),
    # SQL syntax smuggled in
    ("cameras", "1=1; DROP TABLE cameras", None, "unexpected character ';'"),
    ("cameras", "kind = 'x'; DROP TABLE cameras", None, "unexpected character ';'"),
    ("cameras", "kind = 'x' -- and the rest", None, "comments are not allowed"),
    ("cameras", "kind = 'x' /* c */", None, "comments are not allowed"),
    ("cameras", "kind = (SELECT 1)", None, "expected a value at character 8, found '('"),
    ("cameras", "kind = 'a'::text", None, "unexpected character ':'"),
    ("cameras", "kind = $$a$$", None, "unexpected character '$'"),
    ("cameras", "kind != 'x'", None, "unexpected character '!'"),
    # syntax
    ("cameras", "(kind = 'dome'", None, "unbalanced '(' at character 1"),
    ("cameras", "kind = 'dome')", None, "unbalanced ')' at character 14"),
    ("cameras", "kind = 'dome", None, "unterminated string starting at character 8"),
    ("cameras", "kind = 'x' AND", None, "ends where a value was expected"),
    ("cameras", "kind = NULL", None, "use IS NULL"),
    ("cameras", "kind IN ()", None, "expected a value"),
    ("cameras", "", None, "the filter is empty"),
    ("cameras", '{"op": "=", "args": [', None, "not JSON"),
    ("cameras", {"op": "=", "args": [{"property": "kind"}, "x"], "extra": 1}, None,
     "found 'extra'"),
    ("buildings", {"op": "between", "args": [{"property": "height_m"}, [20, 40]]}, None,
     "'between' takes 3 arguments"),
    ("cameras", {"op": "=", "args": [{"property": "kind"}, None]}, None,
     "expected a value, found null"),
    # types
    ("cameras", "kind = 150", None, "cannot compare property 'kind' (text) with number 150"),
    ("cameras", "range_m = 'far'", None, "cannot compare property 'range_m' (number)"),
    ("sensors", "installed_on > '2022-01-01'", None, "write dates as DATE('2022-01-01')"),
    ("buildings", "T_AFTER(built_year, DATE('2020-01-01'))", None,
     "property 'built_year' (integer) is not one"),
    ("buildings", "built_year BETWEEN DATE('2020-01-01') AND 2022", None,
     "BETWEEN compares numbers"),
    ("cameras", "range_m LIKE '1%'", None, "LIKE compares text"),
    ("cameras", "S_INTERSECTS(kind, POINT(118 36.8))", None, "property 'kind' (text)"),
    ("cameras", "geometry = POINT(118 36.8)", None, "relate geometries with S_INTERSECTS"),
    ("cameras", "CASEI(range_m) = 'x'", None, "CASEI takes text"),
    ("sensors", "installed_on = DATE('2023-02-30')", None, "is not a date"),
    ("sensors", "installed_on = TIMESTAMP('2023-01-01T00:00:00')", None, "with a time zone"),
    ("buildings", "height_m + 1 > 3", None, "arithmetic ('+') is not supported"),
    ("buildings", {"op": ">", "args": [{"op": "+", "args": [{"property": "height_m"}, 1]}, 3]},
     None, "arithmetic ('+') is not supported"),
    ("buildings", "height_m > 99999999999999999999999", None, "out of range"),
    ("buildings", '{"op": ">", "args": [{"property": "height_m"}, NaN]}', None,
     "NaN is not a number"),
    ("buildings", {"op": ">", "args": [{"property": "height_m"}, float("nan")]}, None,
     "not JSON"),
    ("cameras", {"op": "s_intersects", "args": [{"property": "geometry"}, {
        "type": "Point", "coordinates": [118.05, float("inf")]}]}, None, "not JSON"),
    # size and depth
    ("cameras", "(" * 30 + "kind = 'x'" + ")" * 30, None, f"more than {MAX_DEPTH} levels"),
    ("cameras", "NOT " * 30 + "kind = 'x'", None, f"more than {MAX_DEPTH} levels"),
    ("cameras", DEEP_JSON, None, f"more than {MAX_DEPTH} levels"),
    ("cameras", "[" * 5001 + "]" * 5001, None, "longer than 10000"),
    ("cameras", "[" * 4000 + "]" * 4000, None, f"more than {MAX_DEPTH} levels"),
    ("cameras", "kind = '" + "x" * 10_001 + "'", None, "longer than 10000 characters"),
    # geometry literals
    ("cameras", "S_INTERSECTS(geometry, POLYGON((118 36.8, 118.1 36.8, 118.1 36.9)))", None,
     "at least 4 positions"),
    ("cameras", "S_INTERSECTS(geometry, POLYGON((118 36.8, 118.1 36.8, 118.1 36.9, 118 36.9)))",
     None, "not closed"),
    ("cameras", "S_INTERSECTS(geometry, POLYGON((118 36.8, 118.1 36.9, 118.1 36.8, 118 36.9, "
     "118 36.8)))", None, "Self-intersection"),
    ("cameras", "S_INTERSECTS(geometry, POINT(118))", None, "2 to 4 numbers"),
    ("cameras", "S_INTERSECTS(geometry, POINT(NaN 36.8))", None, "found 'NaN'"),
    ("cameras", "S_INTERSECTS(geometry, POINT(1e999 36.8))", None, "not a finite number"),
    ("cameras", "S_INTERSECTS(geometry, POINT(200 36.8))", None, "not on the Earth"),
    ("cameras", "S_INTERSECTS(geometry, POINT(118 36.8)", None, "expected ')'"),
    ("cameras", "S_INTERSECTS(geometry, LINESTRING(118 36.8))", None, "at least 2 positions"),
    ("cameras", "S_INTERSECTS(geometry, GEOMETRYCOLLECTION(POINT(118 36.8)))", None,
     "GEOMETRYCOLLECTION literals are not supported"),
    ("cameras", "S_INTERSECTS(geometry, BBOX(118.1, 36.7, 118.0, 36.8))", None,
     "lower corner must come first"),
    ("cameras", {"op": "s_intersects", "args": [{"property": "geometry"},
                                                 {"type": "Point", "coordinates": ["118", 36]}]},
     None, "coordinate must be a number"),
    ("cameras", {"op": "s_intersects", "args": [{"property": "geometry"},
                                                 {"type": "Circle", "coordinates": [118, 36]}]},
     None, "unknown geometry type 'Circle'"),
    ("cameras", "S_INTERSECTS(geometry, POINT(118.05 36.8))", "EPSG:4326",
     "(whose coordinates are latitude, longitude)"),
    ("cameras", "S_INTERSECTS(geometry, POINT(593000 4073000))", "EPSG:4548",
     "(whose coordinates are northing, easting): outside the area"),
    ("cameras", "S_INTERSECTS(geometry, POINT(118.05 36.8))", "EPSG:9999",
     "unsupported filter-crs 'EPSG:9999'"),
    ("cameras", "S_DWITHIN(geometry, POINT(118 36.8), 500, parsecs)", None,
     "unknown distance units 'parsecs'"),
    ("cameras", "S_DWITHIN(geometry, POINT(118 36.8), 1e9, meters)", None,
     "distance must be between 0 and 100000 m"),
    ("cameras", "S_DWITHIN(geometry, POINT(118 36.8), -1, meters)", None,
     "distance must be between 0"),
]


def _bad_id(case: tuple[Any, ...]) -> str:
    cql = case[1] if isinstance(case[1], str) else "json:" + str(case[1])
    return cql[:50]


@pytest.fixture
def no_sql(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any statement sent through psycopg fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("SQL ran while a filter was being translated")

    for cls in (psycopg.Connection, psycopg.Cursor, psycopg.AsyncConnection, psycopg.AsyncCursor):
        monkeypatch.setattr(cls, "execute", refuse)


@pytest.mark.parametrize(("layer", "cql", "crs", "message"), BAD, ids=[_bad_id(c) for c in BAD])
@pytest.mark.usefixtures("no_sql")
def test_bad_filters_are_refused_before_any_sql(
    layer: str, cql: Any, crs: str | None, message: str
) -> None:
    lang = "cql2-text" if isinstance(cql, str) and not cql.lstrip().startswith(("{", "[")) \
        else "cql2-json"
    for check in (to_sql, parse):  # parse checks everything to_sql would
        with pytest.raises(FilterError) as err:
            check(cql, lang, q(layer), crs)
        assert message in str(err.value)
        assert isinstance(err.value, InvalidInput)  # the API maps it to 400


def test_unknown_filter_lang_is_refused() -> None:
    with pytest.raises(FilterError, match="unsupported filter-lang 'ecql'"):
        to_sql("kind = 'x'", "ecql", q("cameras"))


def test_the_database_is_untouched_after_the_corpus(conn: Conn, demo_town: Town) -> None:
    counts = conn.execute("SELECT (SELECT count(*) FROM cameras), (SELECT count(*) FROM workers)")
    assert counts.fetchone() == (demo_town.counts()["cameras"], demo_town.counts()["workers"])
