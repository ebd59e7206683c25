"""The demo town: determinism, its figures, and its consistency."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from seed_data.town import Town, digest, generate


@pytest.fixture(scope="module")
def town(demo_town: Town) -> Town:
    return demo_town


def test_same_seed_gives_byte_identical_data(town: Town) -> None:
    again = generate(seed=2023)
    assert digest(again) == digest(town)
    assert digest(generate(seed=7)) != digest(town)


def test_the_town_has_the_figures_of_fujia(town: Town) -> None:
    streets = town.tables["streets"]
    assert len(streets) >= 3
    fujia = streets[0]
    assert fujia["name"] == "傅家镇"
    assert fujia["households"] == 68_000 and fujia["population"] == 158_000
    fujia_comms = [c for c in town.tables["communities"] if c["street_code"] == fujia["code"]]
    assert len(fujia_comms) == 7
    fujia_grids = [g for g in town.tables["micro_grids"] if g["code"].startswith(fujia["code"])]
    assert 220 <= len(fujia_grids) <= 240
    # a few hundred households each
    hh = sorted(g["households"] for g in fujia_grids)
    assert 100 <= hh[len(hh) // 2] <= 500
    cams = [c for c in town.tables["cameras"] if fujia["code"] in c["code"]]
    assert len(cams) == 4_955
    hps = [h for h in town.tables["high_points"] if fujia["code"] in h["code"]]
    assert len(hps) == 4 and all(h["radius_m"] == 3000 for h in hps)
    stations = [s for s in town.tables["sensors"] if s["kind"] == "pm25_station"
                and fujia["code"] in s["code"]]
    assert len(stations) == 12
    # one worker per micro-grid
    assert len(town.tables["workers"]) == len(town.tables["micro_grids"])
    assigned = {a["micro_grid_code"] for a in town.tables["worker_assignments"]}
    assert assigned == {g["code"] for g in town.tables["micro_grids"]}


def test_codes_nest_and_counts_add_up(town: Town) -> None:
    streets = {s["code"]: s for s in town.tables["streets"]}
    comms = {c["code"]: c for c in town.tables["communities"]}
    for c in comms.values():
        assert c["code"][:9] in streets and len(c["code"]) == 12
    for g in town.tables["micro_grids"]:
        assert g["code"][:12] in comms and len(g["code"]) == 15
    for s in streets.values():
        children = [c for c in comms.values() if c["street_code"] == s["code"]]
        assert sum(c["households"] for c in children) == s["households"]
        assert sum(c["population"] for c in children) == s["population"]


def test_the_town_stands_at_fujia(town: Town) -> None:
    lon, lat = town.tables["streets"][0]["geom"].centroid.coords[0]
    assert 117.9 < lon < 118.15 and 36.7 < lat < 36.9


def test_scale_builds_towns_side_by_side_with_distinct_codes() -> None:
    two = generate(seed=2023, scale=2)
    codes = [g["code"] for g in two.tables["micro_grids"]]
    assert len(codes) == len(set(codes))
    # the second town is another draw of the same plan, beside the first
    assert 2 * 300 < len(codes) < 2 * 340
    fujia = [s for s in two.tables["streets"] if s["name"].startswith("傅家镇")]
    assert len(fujia) == 2
    assert fujia[0]["geom"].disjoint(fujia[1]["geom"])
    b = [b["code"] for b in two.tables["buildings"]]
    assert len(b) == len(set(b))


def test_seeded_database_matches_the_generator(db_url: str, town: Town) -> None:
    with psycopg.connect(db_url) as conn:
        for table in ("streets", "communities", "micro_grids", "buildings", "parcels",
                      "cameras", "high_points", "sensors", "workers"):
            q = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            (n,) = conn.execute(q).fetchone()
            assert n == len(town.tables[table]), table
        # areas in the database agree with the generator's (km², geodesic vs planar GK)
        (km2,) = conn.execute(
            "SELECT ST_Area(geom::geography) / 1e6 FROM streets WHERE name = '傅家镇'"
        ).fetchone()
        assert 70 < km2 < 74
        # parcels cover the land: the union of parcels equals the union of micro-grids
        (gap,) = conn.execute(
            "SELECT ST_Area(ST_Transform(ST_SymDifference((SELECT ST_Union(geom) FROM parcels),"
            " (SELECT ST_Union(geom) FROM micro_grids)), 4548))"
        ).fetchone()
        assert gap < 100.0  # m² over ~130 km²
        # every building stands in exactly one micro-grid
        (n_multi,) = conn.execute(
            "SELECT count(*) FROM (SELECT b.id FROM buildings b JOIN micro_grid_parts p ON "
            "ST_Intersects(p.geom, ST_PointOnSurface(b.geom)) GROUP BY b.id "
            "HAVING count(DISTINCT p.micro_grid_id) <> 1) x"
        ).fetchone()
        assert n_multi == 0


def test_seeding_twice_gives_identical_databases(
    fresh_db_url: str, empty_db_url: str
) -> None:
    from api.database import seed_town
    from layers import db

    db.migrate(empty_db_url)
    seed_town(empty_db_url, seed=2023)
    q = (
        "SELECT md5(string_agg(code || ST_AsEWKB(geom)::text, ',' ORDER BY code)) FROM {}"
    )
    for table in ("micro_grids", "buildings", "parcels", "cameras"):
        with psycopg.connect(fresh_db_url) as a, psycopg.connect(empty_db_url) as b:
            (ha,) = a.execute(q.format(table)).fetchone()  # noqa: S608 - fixed table names
            (hb,) = b.execute(q.format(table)).fetchone()  # noqa: S608
            assert ha == hb, table
