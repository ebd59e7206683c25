"""bench/: the locate benchmark runs end to end at tiny sizes, and what it times is right.

Correctness only: no test here looks at a clock.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` (not `python -m pytest`) leaves the root out
    sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402
from bench import locate as bench_locate  # noqa: E402

OUTSIDE = [(117.5, 36.5), (118.6, 37.2)]  # tens of km from the demo town


@pytest.fixture(scope="module")
def server(db_url: str) -> Iterator[harness.Server]:
    with harness.serve(harness.gridgov_app, db_url) as s:
        yield s


def test_tiny_run_reports_every_line(db_url: str, server: harness.Server,
                                     tmp_path: Path) -> None:
    report = bench_locate.run(db_url, server, n=24, batch=6_000, repeat=1, concurrency=2,
                              rounds=2)
    names = [ln.name for ln in report.lines]
    assert names == [
        "GET /healthz, 1 client (HTTP floor, no SQL)",
        "GET /locate, 1 client",
        "GET /locate, 2 clients",
        "POST /locate CSV, 6,000 pts",
        "POST /locate GeoJSON, 6,000 pts",
    ]
    assert [ln.server.items for ln in report.lines] == [24, 24, 24, 6_000, 6_000]
    assert all(ln.reference is not None and ln.reference.items == ln.server.items
               for ln in report.lines[1:])
    assert report.lines[2].server.concurrency == 2

    table = report.markdown().splitlines()
    assert table[0].startswith("| line | server | raw SQL (psycopg) | ratio |")
    assert len(table) == 2 + len(names)
    for row, name in zip(table[2:], names, strict=True):
        assert row.startswith(f"| {name} |")
        assert row.count("|") == 7
    assert "—" in table[2] and all("×" in row for row in table[3:])
    cpu = harness.cpu_table(report.lines)
    assert "GET /locate, 1 client: ref" in cpu and "server CPU" in cpu

    out = tmp_path / "bench.json"
    report.write_json(out)
    doc = json.loads(out.read_text())
    assert [ln["name"] for ln in doc["lines"]] == names
    assert doc["params"]["n"] == 24 and doc["machine"]["postgis"]


def test_server_answers_equal_raw_sql_for_the_same_points(db_url: str,
                                                         server: harness.Server) -> None:
    points = bench_locate.sample_points(db_url, 30, seed=11) + OUTSIDE
    _, got = bench_locate.single_server(server.url, points)
    _, want = bench_locate.single_raw(db_url, points)
    assert got == want
    assert all(a is not None for a in got[:30]) and got[30:] == [None, None]

    _, got_many = bench_locate.single_server_parallel(server.url, points, 3, client="stdlib")
    assert got_many == want

    _, raw = bench_locate.batch_raw(db_url, points, chunk=7)  # several statements
    rows = raw[0]
    assert [r[0] for r in rows[:30]] == [a[0] for a in want[:30] if a is not None]
    assert all(r[0] is None and r[7] for r in rows[30:])  # outside: the nearest grid
    _, csv_answers = bench_locate.batch_server(server.url, points, "csv")
    assert csv_answers[0] == bench_locate._as_csv(rows)
    _, geojson_answers = bench_locate.batch_server(server.url, points, "geojson")
    assert geojson_answers[0] == [tuple(r) for r in rows]


def test_a_disagreement_is_an_error_naming_the_point() -> None:
    with pytest.raises(harness.BenchError, match="item 1"):
        harness.check_same("line", [("a",), ("b",)], [("a",), ("c",)])
    with pytest.raises(harness.BenchError, match="2 answers"):
        harness.check_same("line", [1, 2], [1])


def test_ratio_is_server_time_over_reference_time() -> None:
    server = harness.Run(wall=2.0, latencies=(0.5,) * 4)  # 2 req/s
    reference = harness.Run(wall=1.0, latencies=(0.25,) * 4)  # 4 req/s
    line = harness.Line("x", "req", server, reference)
    assert line.ratio == pytest.approx(2.0)
    assert "| x | 2 req/s | 4 req/s | 2.00× | 500 ms / 250 ms |" in harness.table([line])
    merged = harness.Run.merge([server, reference])
    assert merged.wall == 3.0 and merged.calls == 8


def test_interleave_alternates_and_keeps_round_order() -> None:
    calls: list[str] = []

    def side(tag: str) -> Callable[[int], tuple[harness.Run, list[str]]]:
        def one(k: int) -> tuple[harness.Run, list[str]]:
            calls.append(f"{tag}{k}")
            return harness.Run(1.0, (1.0,), cpu={"client": 0.5}), [f"{tag}{k}"]

        return one

    (a, a_answers), _ = harness.interleave(3, side("s"), side("r"))
    assert calls == ["s0", "r0", "s1", "r1", "s2", "r2"]
    assert a_answers == ["s0", "s1", "s2"]
    assert a.calls == 3 and a.cpu == {"client": 1.5}
