"""bench/ogc.py: gridgov against the same SQL from psycopg, at tiny sizes, answers equal.

Correctness only: no test here looks at a clock.  The peers (tipg, pygeoapi) need
their own venv and minutes to install, so they are not run here; their configuration
is checked as data.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` (not `python -m pytest`) leaves the root out
    sys.path.insert(0, str(ROOT))

from bench import harness, mvt_ids, peers  # noqa: E402
from bench import ogc as bench_ogc  # noqa: E402

LINES = [
    "GET /healthz (HTTP floor, no SQL)",
    "items, limit 10", "items, limit 10, bbox", "items, limit 10, filter",
    "items, limit 10, bbox + filter",
    "items, limit 1,000", "items, limit 1,000, bbox", "items, limit 1,000, filter",
    "items, limit 1,000, bbox + filter",
    "single item", "tile z12", "tile z13", "tile z14", "tile z15", "tile z16",
]


@pytest.fixture(scope="module")
def server(db_url: str) -> Iterator[harness.Server]:
    with harness.serve(harness.gridgov_app, db_url) as s:
        yield s


def test_ours_and_raw_sql_answer_alike_on_every_line(db_url: str, server: harness.Server,
                                                     tmp_path: Path) -> None:
    settings = bench_ogc.Settings(n=6, rounds=2, keep=6)
    report = bench_ogc.run(db_url, server, settings=settings)  # raises if answers differ
    assert [ln.name for ln in report.lines] == LINES
    for ln in report.lines:
        ours = ln.run(bench_ogc.OURS)
        assert ours is not None and ours.calls == 6
        raw = ln.outcomes[bench_ogc.RAW]
        if ln.kind == "floor":
            assert raw.run is None and raw.why == "no SQL"
        elif ln.name == "tile z12":  # buildings are drawn from z13: no SQL to compare with
            assert raw.run is None and "204" in raw.why and ln.ratio is None
        else:
            assert raw.run is not None and raw.run.calls == 6 and ln.ratio is not None

    table = report.markdown().splitlines()
    assert table[0].startswith("| line | gridgov req/s | raw SQL req/s | ratio |")
    rows = [r for r in table[2:] if r.startswith("| ")]
    assert [r.split(" | ")[0][2:] for r in rows] == LINES
    assert "n/a (1)" in rows[0] and "n/a (2)" in rows[LINES.index("tile z12")]
    assert "(1) no SQL" in table and any(r.startswith("(2) no statement") for r in table)
    assert "tile z13: raw SQL" in bench_ogc.cpu_table(report.lines, report.sides())

    out = tmp_path / "ogc.json"
    report.write_json(out)
    doc = json.loads(out.read_text())
    assert [ln["name"] for ln in doc["lines"]] == LINES
    assert doc["params"]["n"] == 6
    assert doc["lines"][1]["sides"]["raw SQL"]["calls"] == 6


def test_the_requests_are_the_same_for_every_server(db_url: str) -> None:
    cases = {c.name: c for c in bench_ogc.sample_cases(db_url, 5, warm=2, seed=3)}
    assert cases == {c.name: c for c in bench_ogc.sample_cases(db_url, 5, warm=2, seed=3)}
    both = cases["items, limit 10, bbox + filter"]
    assert len(both.queries) == 5 and len(both.warm) == 2
    q = both.queries[0]
    assert [k for k, _ in q.params] == ["limit", "bbox", "filter"]
    ours = bench_ogc.ours_target(both, q)
    assert ours.startswith("/ogc/collections/buildings/items?limit=10&bbox=")
    assert "filter-lang=cql2-text" in ours
    assert "filter-lang=cql2-text" in bench_ogc.tipg_target(both, q)
    pga = bench_ogc.pygeoapi_target(both, q)
    assert "filter-lang" not in pga and "bbox-crs=http" in pga and "crs=http" in pga
    tile = cases["tile z14"].queries[0]
    z, x, y = tile.tile
    assert bench_ogc.ours_target(cases["tile z14"], tile).endswith(f"/14/{y}/{x}")
    assert bench_ogc.tipg_target(cases["tile z14"], tile).endswith(f"/14/{x}/{y}")


def test_a_different_answer_is_an_error(db_url: str, server: harness.Server) -> None:
    with harness.http_get(server.url, "stdlib") as get:
        status, body = get("/ogc/collections/buildings/items?limit=3")
        assert status == 200
        status, tile = get("/ogc/collections/buildings/tiles/WebMercatorQuad/16/25554/54252")
        assert status == 200
    bench_ogc.check_items("same", body, body)
    doc = json.loads(body)
    doc["features"][1]["id"] = 999_999
    with pytest.raises(harness.BenchError, match="features"):
        bench_ogc.check_items("line", json.dumps(doc).encode(), body)
    doc = json.loads(body)
    doc["numberMatched"] += 1
    with pytest.raises(harness.BenchError, match="numberMatched"):
        bench_ogc.check_items("line", json.dumps(doc).encode(), body)
    doc = json.loads(body)
    doc["features"][0]["geometry"]["coordinates"][0][0][0][0] += 1e-6
    with pytest.raises(harness.BenchError, match="geometry"):
        bench_ogc.check_items("line", json.dumps(doc).encode(), body)

    import mapbox_vector_tile

    decoded = mapbox_vector_tile.decode(tile)
    want = {f["id"] for layer in decoded.values() for f in layer["features"]}
    assert mvt_ids.ids(tile) == want and want
    assert mvt_ids.content(tile) == mvt_ids.content(tile)
    extra = bench_ogc.TileCheck()
    bench_ogc.check_tile("same", (16, 54252, 25554), tile, tile, False, extra)
    with pytest.raises(harness.BenchError, match="differs"):
        bench_ogc.check_tile("line", (16, 54252, 25554), b"", tile, False, extra)


def test_peer_configurations() -> None:
    url = "postgresql://gridgov:secret@127.0.0.1:5999/gridgov_bench"
    env = peers.tipg_env(url)
    assert env["DATABASE_URL"].endswith("/gridgov_bench?application_name=tipg")
    assert json.loads(env["TIPG_DB_TABLES"]) == ["public.buildings"]
    assert env["TIPG_CATALOG_TTL"] == "0"
    config = peers.pygeoapi_config(url, "http://127.0.0.1:1234")
    providers = config["resources"]["buildings"]["providers"]
    assert [p["name"] for p in providers] == ["PostgreSQL", "MVT-postgresql"]
    for p in providers:
        assert (p["table"], p["id_field"], p["geom_field"]) == ("buildings", "id", "geom")
        assert p["data"]["port"] == 5999 and p["data"]["dbname"] == "gridgov_bench"
        assert p["storage_crs"] == peers.EPSG4490
    assert config["server"]["limits"]["max_items"] >= 1000
    pins = [ln for ln in peers.REQUIREMENTS.read_text().splitlines()
            if ln and not ln.startswith("#")]
    assert "tipg==1.6.1" in pins and "pygeoapi==0.21.0" in pins
    assert all("==" in ln for ln in pins)
