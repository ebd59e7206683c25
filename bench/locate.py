"""``/locate`` throughput next to the same SQL sent straight from psycopg (issue #4).

    .venv/bin/python -m bench.locate [--n 2000] [--batch 100000] [--json out.json]

Starts a throwaway PostGIS cluster with the demo town (seed 2023) and the real server
(uvicorn, one worker, its own process), then measures, in one run:

- ``GET /healthz``: the HTTP and framework floor, no SQL (no reference).
- ``GET /locate``, one client: ``--n`` random points inside the territory, one request
  after the other over one keep-alive HTTP connection; reference: ``layers.locate``'s
  single-point statement on one psycopg connection, the same points in the same order.
- ``GET /locate``, ``--concurrency`` clients: the same from that many threads, each
  with its own connection; reference: that many threads and psycopg connections.
- ``POST /locate`` with ``--batch`` points as CSV and as GeoJSON, timed to the last
  byte of the streamed answer; reference: the batch statement in 5,000-point chunks
  on one psycopg connection.

Server and reference alternate in rounds, and every server answer is compared with
the reference's before a number is printed.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import shapely

from api.locate_io import MAX_POINTS
from bench import harness
from bench.harness import (
    Line,
    Probes,
    Report,
    Run,
    Server,
    check_same,
    measure,
    measure_parallel,
)
from layers import db
from layers.errors import LayersError
from layers.locate import BATCH_COLUMNS, BATCH_SQL, CHUNK, GENERATION_SQL, LOCATE_SQL

Point = tuple[float, float]
Single = tuple[Any, ...] | None  # (micro-grid, community, street codes and names, worker)
TIMEOUT = httpx.Timeout(300.0, connect=10.0)


# -- points ----------------------------------------------------------------------------


def sample_points(url: str, n: int, seed: int = 7) -> list[Point]:
    """``n`` random EPSG:4490 points strictly inside today's micro-grids, reproducible."""
    today = dt.date.today()
    with db.connect(url) as conn:
        gen = conn.execute(GENERATION_SQL, {"at": today}).fetchone()
        if gen is None:
            raise harness.BenchError("the database holds no grid generation valid today")
        row = conn.execute("SELECT ST_AsBinary(ST_Union(geom)) FROM micro_grids "
                           "WHERE generation_id = %s", (gen[0],)).fetchone()
    if row is None or row[0] is None:
        raise harness.BenchError("the database holds no micro-grids")
    territory = shapely.from_wkb(bytes(row[0]))
    shapely.prepare(territory)
    x0, y0, x1, y1 = territory.bounds
    rng = np.random.default_rng(seed)
    points: list[Point] = []
    while len(points) < n:
        xs, ys = rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)
        keep = shapely.contains_xy(territory, xs, ys)
        points += zip(xs[keep].tolist(), ys[keep].tolist(), strict=True)
    return points[:n]


# -- one point at a time ---------------------------------------------------------------


def _single_answer(status: int, body: bytes) -> Single:
    """The comparable part of a ``GET /locate`` answer; None outside the territory."""
    if status == 404:
        return None
    if status != 200:
        raise harness.BenchError(f"GET /locate answered {status}: {body[:200]!r}")
    b = json.loads(body)
    worker = b["worker"]["name"] if b["worker"] else None
    return (b["micro_grid"]["code"], b["micro_grid"]["name"], b["community"]["code"],
            b["community"]["name"], b["street"]["code"], b["street"]["name"],
            b["generation"]["id"], worker)


def _single_row(row: tuple[Any, ...] | None) -> Single:
    """The same from a row of the single-point statement."""
    return None if row is None else (*row[:7], row[10])


def _params(p: Point) -> dict[str, float]:
    return {"lon": p[0], "lat": p[1]}


def _target(p: Point) -> str:
    return f"/locate?lon={p[0]!r}&lat={p[1]!r}"  # repr: the exact float, URL-safe


def healthz(
    base: str, n: int, warmup: int = 50, probes: Probes | None = None, client: str = "httpx"
) -> Run:
    """``GET /healthz`` ``n`` times over one keep-alive connection: HTTP, uvicorn and
    FastAPI with no SQL, the floor under every line."""
    with harness.http_get(base, client) as get:

        def call(_: int) -> int:
            status, body = get("/healthz")
            if status != 200:
                raise harness.BenchError(f"GET /healthz answered {status}: {body[:200]!r}")
            return status

        return measure(call, range(n), "server GET /healthz", warmup=range(warmup),
                       probes=probes)[0]


def single_server(
    base: str, points: Sequence[Point], warmup: Sequence[Point] = (),
    probes: Probes | None = None, client: str = "httpx",
) -> tuple[Run, list[Single]]:
    """``GET /locate`` for each point in turn over one keep-alive connection."""
    with harness.http_get(base, client) as get:

        def call(p: Point) -> tuple[int, bytes]:
            return get(_target(p))

        run, responses = measure(call, points, "server GET /locate", warmup=warmup,
                                 probes=probes)
    return run, [_single_answer(*r) for r in responses]


def single_raw(
    url: str, points: Sequence[Point], warmup: Sequence[Point] = (),
    probes: Probes | None = None,
) -> tuple[Run, list[Single]]:
    """The single-point statement for each point in turn on one psycopg connection."""
    today = dt.date.today()
    with db.connect(url, autocommit=True) as conn:

        def call(p: Point) -> tuple[Any, ...] | None:
            return conn.execute(LOCATE_SQL, {**_params(p), "at": today}).fetchone()

        run, rows = measure(call, points, "raw SQL single", warmup=warmup, probes=probes)
    return run, [_single_row(r) for r in rows]


def single_server_parallel(
    base: str, points: Sequence[Point], concurrency: int, warmup: Sequence[Point] = (),
    probes: Probes | None = None, client: str = "httpx",
) -> tuple[Run, list[Single]]:
    """``GET /locate`` from ``concurrency`` threads, each on its own connection."""
    with ExitStack() as stack:
        gets = [stack.enter_context(harness.http_get(base, client))
                for _ in range(concurrency)]

        def bind(get: harness.Get) -> Callable[[Point], tuple[int, bytes]]:
            return lambda p: get(_target(p))

        run, responses = measure_parallel([bind(g) for g in gets], points,
                                          f"server GET /locate ×{concurrency}",
                                          warmup=warmup, probes=probes)
    return run, [_single_answer(*r) for r in responses]


def single_raw_parallel(
    url: str, points: Sequence[Point], concurrency: int, warmup: Sequence[Point] = (),
    probes: Probes | None = None,
) -> tuple[Run, list[Single]]:
    """The single-point statement from ``concurrency`` threads, each on its own
    psycopg connection."""
    today = dt.date.today()
    with ExitStack() as stack:
        conns = [stack.enter_context(db.connect(url, autocommit=True))
                 for _ in range(concurrency)]

        def bind(conn: psycopg.Connection[Any]) -> Callable[[Point], Any]:
            return lambda p: conn.execute(LOCATE_SQL, {**_params(p), "at": today}).fetchone()

        run, rows = measure_parallel([bind(c) for c in conns], points,
                                     f"raw SQL single ×{concurrency}", warmup=warmup,
                                     probes=probes)
    return run, [_single_row(r) for r in rows]


# -- many points in one request -----------------------------------------------------------


def csv_body(points: Sequence[Point]) -> bytes:
    lines = ["id,lon,lat", *(f"{i},{x!r},{y!r}" for i, (x, y) in enumerate(points))]
    return ("\n".join(lines) + "\n").encode()


def geojson_body(points: Sequence[Point]) -> bytes:
    features = [{"type": "Feature", "properties": {"id": i},
                 "geometry": {"type": "Point", "coordinates": [x, y]}}
                for i, (x, y) in enumerate(points)]
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


BODIES = {"csv": (csv_body, "text/csv"), "geojson": (geojson_body, "application/geo+json")}


def _csv_answers(content: bytes) -> list[tuple[str, ...]]:
    rows = list(csv.reader(io.StringIO(content.decode("utf-8"), newline="")))
    k = len(rows[0]) - len(BATCH_COLUMNS)
    return [tuple(r[k:]) for r in rows[1:]]


def _geojson_answers(content: bytes) -> list[tuple[Any, ...]]:
    features = json.loads(content)["features"]
    return [tuple(f["properties"][c] for c in BATCH_COLUMNS) for f in features]


def _as_csv(rows: Sequence[tuple[Any, ...]]) -> list[tuple[str, ...]]:
    return [tuple("" if v is None else str(v) for v in r) for r in rows]


def batch_server(
    base: str, points: Sequence[Point], fmt: str, repeat: int = 1,
    warmup: Sequence[Point] = (), probes: Probes | None = None,
) -> tuple[Run, list[list[tuple[Any, ...]]]]:
    """``POST /locate`` with all ``points`` as ``fmt`` (csv or geojson), ``repeat`` times,
    each timed until the last byte of the answer; the answers of each request."""
    make, media = BODIES[fmt]
    body = make(points)
    with httpx.Client(base_url=base, timeout=TIMEOUT) as client:

        def call(content: bytes) -> bytes:
            r = client.post("/locate", content=content, headers={"content-type": media})
            r.raise_for_status()
            return r.content

        warm = [make(warmup)] if warmup else []
        run, contents = measure(call, [body] * repeat, f"server POST /locate {fmt}",
                                per_call=len(points), warmup=warm, probes=probes)
    parse = _csv_answers if fmt == "csv" else _geojson_answers
    return run, [parse(c) for c in contents]


def batch_raw(
    url: str, points: Sequence[Point], repeat: int = 1, warmup: Sequence[Point] = (),
    chunk: int = CHUNK, probes: Probes | None = None,
) -> tuple[Run, list[list[tuple[Any, ...]]]]:
    """The generation, then the batch statement per ``chunk`` points, on one psycopg
    connection, ``repeat`` times; the rows of each repetition."""
    today = dt.date.today()
    with db.connect(url, autocommit=True) as conn:

        def call(pts: Sequence[Point]) -> list[tuple[Any, ...]]:
            gen = conn.execute(GENERATION_SQL, {"at": today}).fetchone()
            if gen is None:
                raise harness.BenchError("no grid generation is valid today")
            rows: list[tuple[Any, ...]] = []
            for start in range(0, len(pts), chunk):
                part = pts[start:start + chunk]
                params = {"xs": [p[0] for p in part], "ys": [p[1] for p in part],
                          "gen": gen[0], "at": today}
                rows += conn.execute(BATCH_SQL, params).fetchall()
            return rows

        warm = [warmup] if warmup else []
        return measure(call, [points] * repeat, "raw SQL batch", per_call=len(points),
                       warmup=warm, probes=probes)


# -- the whole bench -------------------------------------------------------------------


def _pts(n: int) -> str:
    return f"{n:,} pts"


def _split(items: Sequence[Point], parts: int) -> list[Sequence[Point]]:
    size = -(-len(items) // parts)
    return [items[i:i + size] for i in range(0, len(items), size)]


def run(
    url: str, server: Server, n: int = 2000, batch: int = 100_000, repeat: int = 3,
    concurrency: int = 4, rounds: int = 4, seed: int = 7,
    postgres_cpu: Callable[[], float] | None = None, client: str = "httpx",
) -> Report:
    """Every line against the seeded database at ``url`` served by ``server``.

    The GET lines run in ``rounds`` alternating server and reference rounds, the POST
    lines in ``repeat`` (see :func:`harness.interleave`).  ``postgres_cpu`` is a clock
    of the cluster's CPU seconds, when the bench owns it; ``client`` is the HTTP client
    of the GET lines (the POST lines use httpx).  Raises :class:`harness.BenchError`
    when any server answer differs from the reference's for the same point.
    """
    facts = harness.machine(url)
    probes: dict[str, Callable[[], float]] = {"server": server.cpu}
    if postgres_cpu is not None:
        probes["postgres"] = postgres_cpu
    base = server.url
    points = sample_points(url, max(n, batch), seed)
    parts = _split(points[:n], rounds)
    warm = points[-min(10, len(points)):]  # untimed, each round: prepares the statement
    lines = [Line("GET /healthz, 1 client (HTTP floor, no SQL)", "req",
                  healthz(base, n, probes=probes, client=client))]

    (s_run, s_ans), (r_run, r_ans) = harness.interleave(
        len(parts),
        lambda k: single_server(base, parts[k], warm, probes, client),
        lambda k: single_raw(url, parts[k], warm, probes))
    name = "GET /locate, 1 client"
    check_same(name, s_ans, r_ans)
    lines.append(Line(name, "req", s_run, r_run))

    if concurrency > 1:
        (s_run, s_ans), (r_run, r_ans) = harness.interleave(
            len(parts),
            lambda k: single_server_parallel(base, parts[k], concurrency, warm, probes,
                                             client),
            lambda k: single_raw_parallel(url, parts[k], concurrency, warm, probes))
        name = f"GET /locate, {concurrency} clients"
        check_same(name, s_ans, r_ans)
        lines.append(Line(name, "req", s_run, r_run))

    many = points[:batch]
    warm_batch = points[-min(2 * CHUNK, len(points)):]
    for fmt, label in (("csv", "CSV"), ("geojson", "GeoJSON")):
        (s_run, s_answers), (r_run, r_answers) = harness.interleave(
            repeat,
            lambda k, fmt=fmt: batch_server(base, many, fmt, 1, warm_batch if k == 0 else (),
                                            probes),
            lambda k: batch_raw(url, many, 1, warm_batch if k == 0 else (), probes=probes))
        name = f"POST /locate {label}, {_pts(batch)}"
        want = _as_csv(r_answers[0]) if fmt == "csv" else r_answers[0]
        for got in s_answers:
            check_same(name, got, want)
        lines.append(Line(name, "pts", s_run, r_run))

    params = {"n": n, "batch": batch, "repeat": repeat, "concurrency": concurrency,
              "rounds": rounds, "points_seed": seed, "chunk": CHUNK, "client": client}
    return Report("gridgov /locate", lines, facts, params)


@contextmanager
def _setup(
    database_url: str | None, seed: int, scale: int
) -> Iterator[tuple[harness.Database, Server]]:
    with ExitStack() as stack:
        if database_url:
            with db.connect(database_url) as conn:
                if not db.is_seeded(conn):
                    raise harness.BenchError("--database-url: the database holds no "
                                             "territory; `gridgov db up` seeds one")
            database = harness.Database(database_url)
        else:
            database = stack.enter_context(harness.seeded_database(seed, scale))
        server = stack.enter_context(harness.serve(harness.gridgov_app, database.url))
        yield database, server


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.locate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="single lookups per line (2000)")
    ap.add_argument("--batch", type=int, default=MAX_POINTS,
                    help="points per POST /locate (100000, the most it takes)")
    ap.add_argument("--repeat", type=int, default=3, help="POST requests per line (3)")
    ap.add_argument("--rounds", type=int, default=4,
                    help="alternating server / raw SQL rounds of the GET lines (4)")
    ap.add_argument("--concurrency", type=int, default=4,
                    help="clients of the concurrent GET line; 1 leaves it out (4)")
    ap.add_argument("--client", choices=harness.CLIENTS, default="httpx",
                    help="HTTP client of the GET lines (httpx); stdlib's "
                    "http.client costs the client less CPU per request")
    ap.add_argument("--scale", type=int, default=1, help="towns side by side (1)")
    ap.add_argument("--seed", type=int, default=2023, help="demo town seed (2023)")
    ap.add_argument("--database-url", help="use this migrated, seeded database instead "
                    "of a throwaway cluster")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if min(args.n, args.batch, args.repeat, args.rounds, args.concurrency, args.scale) < 1:
        ap.error("--n, --batch, --repeat, --rounds, --concurrency and --scale must be "
                 "at least 1")
    if args.batch > MAX_POINTS:
        ap.error(f"--batch: POST /locate takes at most {MAX_POINTS:,} points")

    try:
        with _setup(args.database_url, args.seed, args.scale) as (database, server):
            clock = database.postgres_cpu if database.cluster is not None else None
            report = run(database.url, server, n=args.n, batch=args.batch,
                         repeat=args.repeat, concurrency=args.concurrency,
                         rounds=args.rounds, postgres_cpu=clock, client=args.client)
    except (harness.BenchError, LayersError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report.params |= {"scale": args.scale, "town_seed": args.seed}
    print(f"{report.title}: {args.n:,} single lookups ({args.client}), {args.repeat} × "
          f"{args.batch:,}-point batches; server: uvicorn, 1 worker; "
          "ratio = server time / raw SQL time\n")
    print(report.markdown())
    print("\nWhere the time goes (per request or point):\n")
    print(harness.cpu_table(report.lines))
    print("\nmachine: " + report.machine_line())
    if args.json:
        report.write_json(args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
