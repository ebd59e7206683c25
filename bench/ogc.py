"""OGC API data paths side by side: gridgov, the same SQL from psycopg, tipg, pygeoapi (#3).

    .venv/bin/python -m bench.ogc [--n 400] [--scale 10] [--json out.json] [--only ours]

Starts a throwaway PostGIS cluster with the demo town (seed 2023, ``--scale`` towns),
our server, tipg and pygeoapi's stock PostgreSQL providers (uvicorn, one worker each,
each in its own process, all on the same database; the peers from their own venv,
``bench/peers.txt``, made on first use), then measures on ``buildings``, one client
after the other over keep-alive HTTP (the standard library's client: no compression
is asked for, so none is done):

- ``GET /healthz``: the HTTP and framework floor under every line (gridgov, tipg);
- items pages, ``limit`` 10 and 1,000, plain, with ``bbox`` (boxes of about 2.7 km
  around random buildings), with ``filter`` (CQL2 text that ECQL reads alike: four
  shapes with random values) and with both;
- single items (``/items/{id}`` of random buildings);
- vector tiles at z12 to z16 (the tiles around random buildings).

Each line alternates the servers in ``--rounds`` rounds (gridgov, raw SQL, tipg,
pygeoapi, then again).  The raw SQL reference is the statement our route runs, built
with the same builders (``layers.features.items_statement`` / ``item_statement``,
``tiles.mvt.tile_statement``) before the clock starts, sent from one autocommit
psycopg connection, the one value fetched as bytes.  A peer gets ``--peer-budget``
seconds per line (after one or two untimed calls that say how long a request takes),
at most ``--n`` requests; a request of a peer slower than ``--peer-timeout`` makes the
line ``n/a`` for it (its statement is cancelled in PostgreSQL).

Answers are compared before any number is printed: gridgov and raw SQL feature for
feature (tiles: the same features with the same ids, properties and encoded geometry,
in whatever order PostgreSQL read them); the peers on numberMatched, the ids in order,
the properties and the coordinates (to 1.5e-7 degrees: each rounds its own way); tiles
on the ids (the peers keep the features that intersect the tile, ours also those in
its 64-unit buffer: the difference must lie outside the tile, checked in PostGIS).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import psycopg
from psycopg.adapt import Buffer, Loader

from bench import harness, mvt_ids, peers
from bench.harness import BenchError, Run, Server, measure
from layers import db
from layers import features as engine
from layers.errors import LayersError
from tiles import mvt
from tiles.tms import TileId

COLLECTION = "buildings"
OURS, RAW, TIPG, PYGEOAPI = "gridgov", "raw SQL", "tipg", "pygeoapi"
SIDES = (OURS, RAW, TIPG, PYGEOAPI)
PEER_NAMES = (TIPG, PYGEOAPI)
KINDS = ("floor", "items", "item", "tiles")
LIMITS = (10, 1000)
ZOOMS = (12, 13, 14, 15, 16)
TMS = "WebMercatorQuad"
FLOOR = "GET /healthz (HTTP floor, no SQL)"
HALF_BOX = (0.015, 0.012)  # degrees: a box of about 2.7 x 2.7 km at 37 N
EPSG4490 = peers.EPSG4490
COORD_TOLERANCE = 1.5e-7  # degrees: ours rounds to 7 decimals, tipg to 9, pygeoapi not
USES = ("rural_residential", "residential", "industrial", "commercial")
HTTP_TIMEOUT = 300.0  # our server's requests (the peers get --peer-timeout)


# -- what each line asks -----------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One request of a line, the same for every server; answers are compared by ``i``."""

    i: int
    params: tuple[tuple[str, str], ...] = ()  # items: limit, bbox, filter
    fid: int = 0  # item
    tile: tuple[int, int, int] = (0, 0, 0)  # z, x, y


@dataclass(frozen=True)
class Case:
    """A line: its requests (timed) and the warm-up requests (untimed, different)."""

    name: str
    kind: str  # floor | items | item | tiles
    queries: tuple[Query, ...]
    warm: tuple[Query, ...]


def cql_filter(rng: np.random.Generator) -> str:
    """A CQL2-text filter on buildings that ECQL (pygeoapi's parser) reads alike."""
    shape = int(rng.integers(4))
    year = int(rng.integers(1990, 2021))
    if shape == 0:
        use = USES[int(rng.integers(len(USES)))]
        return f"use = '{use}' AND floors >= {int(rng.integers(1, 3))}"
    if shape == 1:
        return f"built_year >= {year} AND floors = {int(rng.integers(1, 3))}"
    if shape == 2:
        return (f"use IN ('residential', 'commercial', 'public') "
                f"OR height_m > {int(rng.integers(10, 40))}")
    return f"floors BETWEEN 2 AND {int(rng.integers(2, 7))} AND built_year < {year}"


def tile_of(lon: np.ndarray, lat: np.ndarray, z: int) -> tuple[np.ndarray, np.ndarray]:
    """WebMercatorQuad column and row of the points at zoom ``z``."""
    n = 2 ** z
    x = np.floor((lon + 180.0) / 360.0 * n).astype(int)
    phi = np.radians(lat)
    y = np.floor((1.0 - np.log(np.tan(phi) + 1.0 / np.cos(phi)) / math.pi) / 2.0 * n)
    return x, y.astype(int)


def sample_cases(url: str, n: int, warm: int = 10, seed: int = 7,
                 kinds: Sequence[str] = KINDS) -> list[Case]:
    """Every line's requests: ``n`` timed and ``warm`` untimed, reproducible (numpy
    ``seed``); boxes, items and tiles around buildings drawn at random (so the dense
    town centre is asked for more often than the fields, as a map user would)."""
    with db.connect(url) as conn:
        rows = conn.execute(
            "SELECT id, ST_X(p), ST_Y(p) FROM (SELECT id, ST_PointOnSurface(geom) p "
            f"FROM {COLLECTION}) s ORDER BY id").fetchall()
    if not rows:
        raise BenchError(f"the database has no {COLLECTION}")
    ids = np.array([r[0] for r in rows])
    xs = np.array([r[1] for r in rows])
    ys = np.array([r[2] for r in rows])
    rng = np.random.default_rng(seed)
    total = n + warm

    def picks() -> np.ndarray:
        return rng.integers(0, len(ids), total)

    def split(queries: list[Query]) -> tuple[tuple[Query, ...], tuple[Query, ...]]:
        return tuple(queries[:n]), tuple(queries[n:])

    cases: list[Case] = []
    if "floor" in kinds:
        cases.append(Case(FLOOR, "floor", *split([Query(i) for i in range(total)])))
    if "items" in kinds:
        centres = picks()
        boxes = [f"{xs[k] - HALF_BOX[0]:.6f},{ys[k] - HALF_BOX[1]:.6f},"
                 f"{xs[k] + HALF_BOX[0]:.6f},{ys[k] + HALF_BOX[1]:.6f}" for k in centres]
        filters = [cql_filter(rng) for _ in range(total)]
        for limit in LIMITS:
            for with_bbox, with_filter in ((False, False), (True, False), (False, True),
                                           (True, True)):
                queries = []
                for i in range(total):
                    params = [("limit", str(limit))]
                    if with_bbox:
                        params.append(("bbox", boxes[i]))
                    if with_filter:
                        params.append(("filter", filters[i]))
                    queries.append(Query(i, tuple(params)))
                what = " + ".join(w for w, on in (("bbox", with_bbox), ("filter", with_filter))
                                  if on)
                name = f"items, limit {limit:,}" + (f", {what}" if what else "")
                cases.append(Case(name, "items", *split(queries)))
    if "item" in kinds:
        fids = ids[picks()]
        cases.append(Case("single item", "item",
                          *split([Query(i, fid=int(f)) for i, f in enumerate(fids)])))
    if "tiles" in kinds:
        for z in ZOOMS:
            k = picks()
            tx, ty = tile_of(xs[k], ys[k], z)
            cases.append(Case(f"tile z{z}", "tiles", *split(
                [Query(i, tile=(z, int(x), int(y))) for i, (x, y) in enumerate(zip(tx, ty,
                                                                                   strict=True))])))
    return cases


# -- the same request to each server -------------------------------------------------------


def _query_string(params: Sequence[tuple[str, str]]) -> str:
    return urlencode(list(params))


def _target(base: str, case: Case, q: Query, yx: bool) -> str:
    """The path of ``q`` on a server whose collection is at ``base``; ``yx``: tiles in
    the OGC order z/y/x (ours) rather than z/x/y (tipg)."""
    if case.kind == "floor":
        return "/healthz"
    if case.kind == "items":
        extra = [("filter-lang", "cql2-text")] if any(k == "filter" for k, _ in q.params) else []
        return f"{base}/items?{_query_string([*q.params, *extra])}"
    if case.kind == "item":
        return f"{base}/items/{q.fid}"
    z, x, y = q.tile
    return f"{base}/tiles/{TMS}/{z}/{y}/{x}" if yx else f"{base}/tiles/{TMS}/{z}/{x}/{y}"


def ours_target(case: Case, q: Query) -> str:
    return _target(f"/ogc/collections/{COLLECTION}", case, q, yx=True)


def tipg_target(case: Case, q: Query) -> str:
    return _target(f"/collections/public.{COLLECTION}", case, q, yx=False)


def pygeoapi_target(case: Case, q: Query) -> str:
    """pygeoapi with crs (and bbox-crs) EPSG:4490 and the box in the stored lon/lat
    order: it passes the stored numbers through untouched (see bench/peers.py); the
    filter goes as its default ``filter-lang``, ECQL (``cql2-text`` it refuses)."""
    base = f"/collections/{COLLECTION}"
    if case.kind == "items":
        params = [("f", "json"), ("crs", EPSG4490), *q.params]
        if any(k == "bbox" for k, _ in q.params):
            params.append(("bbox-crs", EPSG4490))
        return f"{base}/items?{_query_string(params)}"
    if case.kind == "item":
        return f"{base}/items/{q.fid}?{_query_string([('f', 'json'), ('crs', EPSG4490)])}"
    z, x, y = q.tile
    return f"{base}/tiles/{TMS}/{z}/{y}/{x}?f=mvt"


TARGETS: Mapping[str, Callable[[Case, Query], str]] = {
    OURS: ours_target, TIPG: tipg_target, PYGEOAPI: pygeoapi_target}


# -- the raw SQL reference -------------------------------------------------------------------


class _Bytes(Loader):
    """``text`` as the bytes that came over the wire, as our route takes them."""

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


Statement = tuple[bytes, Mapping[str, Any]] | None  # None: the route runs no SQL


def _item_links(base: str, fid: int) -> list[dict[str, str]]:
    """Links shaped like the ones our item route adds (the same size of bound JSON)."""
    uri = f"{base}/ogc/collections/{COLLECTION}/items/{fid}"
    kinds = (("root", "application/json", f"{base}/ogc?f=json"),
             ("root", "text/html", f"{base}/ogc?f=html"),
             ("self", "application/geo+json", f"{uri}?f=json"),
             ("alternate", "application/ld+json", f"{uri}?f=jsonld"),
             ("alternate", "text/html", f"{uri}?f=html"),
             ("collection", "application/json", f"{base}/ogc/collections/{COLLECTION}"))
    return [{"rel": rel, "type": media, "title": "-" * 36, "href": href}
            for rel, media, href in kinds]


def _page_links(base: str, params: Sequence[tuple[str, str]], query: engine.ItemsQuery
                ) -> engine.PageLinks:
    """The paging links our items route passes to the statement (its public
    ``items_call``); without the route, none."""
    uri = f"{base}/ogc/collections/{COLLECTION}/items"
    try:
        from api.ogc.features import items_call
    except ImportError:
        return engine.PageLinks()
    return items_call(COLLECTION, uri, list(params), query).links


def statements(conn: psycopg.Connection[Any], case: Case, queries: Sequence[Query],
               base: str) -> dict[int, Statement]:
    """The statement our route runs for each request, as bytes and parameters."""
    out: dict[int, Statement] = {}
    if case.kind == "floor":
        return {q.i: None for q in queries}
    if case.kind in ("items", "item"):
        coll = engine.load_catalog(conn)[COLLECTION]
        for q in queries:
            if case.kind == "items":
                params = [*q.params]
                if any(k == "filter" for k, _ in params):
                    params.append(("filter-lang", "cql2-text"))
                parsed = engine.parse_items(coll, dict(params))
                stmt, values = engine.items_statement(coll, parsed, _page_links(base, params,
                                                                                 parsed))
            else:
                stmt, values = engine.item_statement(coll, q.fid, engine.CRS84,
                                                     _item_links(base, q.fid))
            out[q.i] = (stmt, values)  # bytes: composed once per shape
    else:
        tileset = mvt.collection_tileset(COLLECTION)
        for q in queries:
            z, x, y = q.tile
            layers = tileset.at(z)
            if not layers:
                out[q.i] = None
                continue
            out[q.i] = (mvt.tile_statement(layers).as_bytes(conn),
                        mvt.tile_params(TileId(z, x, y)))
    return out


# -- timed runs --------------------------------------------------------------------------------

Answers = dict[int, bytes]  # request index -> body, for the first ``keep`` requests


def http_run(base: str, case: Case, target: Callable[[Case, Query], str],
             queries: Sequence[Query], warm: Sequence[Query], desc: str,
             probes: harness.Probes | None = None, keep: int = 50,
             timeout: float = HTTP_TIMEOUT) -> tuple[Run, Answers]:
    """GET each request in turn on one keep-alive connection (stdlib client), after
    the ``warm`` ones; the bodies of the requests numbered below ``keep``."""
    ok = (200, 204, 404) if case.kind == "tiles" else (200,)
    targets = [(q.i, target(case, q)) for q in queries]
    warm_targets = [(q.i, target(case, q)) for q in warm]
    with harness.http_get(base, "stdlib", timeout) as get:

        def call(item: tuple[int, str]) -> bytes | None:
            status, body = get(item[1])
            if status not in ok:
                raise BenchError(f"{desc}: GET {item[1]} answered {status}: {body[:300]!r}")
            return (body if status == 200 else b"") if item[0] < keep else None

        run, bodies = measure(call, targets, desc, warmup=warm_targets, probes=probes)
    return run, {i: b for (i, _), b in zip(targets, bodies, strict=True) if b is not None}


def raw_run(url: str, prepared: Mapping[int, Statement], queries: Sequence[Query],
            warm: Sequence[Query], desc: str, probes: harness.Probes | None = None,
            keep: int = 50) -> tuple[Run, Answers]:
    """Each request's statement on one autocommit psycopg connection, its one value
    fetched as bytes (our route's loader), after the ``warm`` ones."""
    with db.connect(url, autocommit=True) as conn:
        conn.adapters.register_loader("text", _Bytes)

        def call(q: Query) -> bytes | None:
            stmt = prepared[q.i]
            if stmt is None:
                return b"" if q.i < keep else None
            row = conn.execute(stmt[0], stmt[1]).fetchone()
            body = b"" if row is None or row[0] is None else bytes(row[0])
            return body if q.i < keep else None

        run, bodies = measure(call, list(queries), desc, warmup=list(warm), probes=probes)
    return run, {q.i: b for q, b in zip(queries, bodies, strict=True) if b is not None}


# -- answers --------------------------------------------------------------------------------


def _close(a: Any, b: Any, tol: float = COORD_TOLERANCE) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(a - b) <= tol
    return bool(a == b)


def _feature(f: Mapping[str, Any]) -> tuple[Any, dict[str, Any], Any]:
    props = {k: v for k, v in (f.get("properties") or {}).items() if k != "id"}
    return f.get("id"), props, f.get("geometry")


def page(body: bytes) -> tuple[Any, list[tuple[Any, dict[str, Any], Any]]]:
    doc = json.loads(body)
    return doc.get("numberMatched"), [_feature(f) for f in doc["features"]]


def _same_feature(where: str, got: tuple[Any, dict[str, Any], Any],
                  want: tuple[Any, dict[str, Any], Any]) -> None:
    if got[0] != want[0]:
        raise BenchError(f"{where}: feature id {got[0]!r}, gridgov {want[0]!r}")
    if got[1] != want[1]:
        raise BenchError(f"{where}, feature {want[0]}: properties {got[1]!r}, gridgov {want[1]!r}")
    geometry_got, geometry_want = got[2] or {}, want[2] or {}
    if (geometry_got.get("type") != geometry_want.get("type")
            or not _close(geometry_got.get("coordinates"), geometry_want.get("coordinates"))):
        raise BenchError(f"{where}, feature {want[0]}: the geometry differs from gridgov's")


def check_items(where: str, got: bytes, want: bytes) -> None:
    """Same numberMatched, the same features in the same order, alike."""
    matched_got, features_got = page(got)
    matched_want, features_want = page(want)
    if matched_got != matched_want:
        raise BenchError(f"{where}: numberMatched {matched_got}, gridgov {matched_want}")
    if [f[0] for f in features_got] != [f[0] for f in features_want]:
        ids_got, ids_want = [f[0] for f in features_got], [f[0] for f in features_want]
        raise BenchError(f"{where}: {len(ids_got)} features (ids {ids_got[:5]}...), gridgov "
                         f"{len(ids_want)} (ids {ids_want[:5]}...)")
    for g, w in zip(features_got, features_want, strict=True):
        _same_feature(where, g, w)


def check_item(where: str, got: bytes, want: bytes) -> None:
    _same_feature(where, _feature(json.loads(got)), _feature(json.loads(want)))


@dataclass
class TileCheck:
    """Tiles whose feature sets differ as they may (ours has its buffer's features too);
    what the differences are is checked at the end of the line, in PostGIS."""

    extra: dict[tuple[int, int, int], set[int]] = field(default_factory=dict)


def check_tile(where: str, tile: tuple[int, int, int], got: bytes, want: bytes, peer: bool,
               extra: TileCheck) -> None:
    if not peer:  # the same statement: the same features (in whatever order PostgreSQL
        # read them, which decides the order of the MVT's key and value tables)
        if got != want and mvt_ids.content(got) != mvt_ids.content(want):
            raise BenchError(f"{where}: the tile differs from gridgov's ({len(got):,} bytes "
                             f"against {len(want):,})")
        return
    ids_got = mvt_ids.ids(got, "id") if got else frozenset()
    ids_want = mvt_ids.ids(want) if want else frozenset()
    missing = ids_got - ids_want
    if missing:
        raise BenchError(f"{where}: features {sorted(missing)[:10]} are not in gridgov's tile")
    if ids_want - ids_got:
        extra.extra.setdefault(tile, set()).update(ids_want - ids_got)


def check_tile_extras(url: str, line: str, extra: TileCheck) -> int:
    """The features only gridgov's tiles have must lie outside the tile proper (in its
    64-unit buffer); how many there were."""
    n = 0
    with db.connect(url) as conn:
        for (z, x, y), extra_ids in extra.extra.items():
            n += len(extra_ids)
            rows = conn.execute(
                f"SELECT id FROM {COLLECTION} WHERE id = ANY(%s) AND ST_Intersects(geom, "
                "ST_Transform(ST_TileEnvelope(%s, %s, %s), 4490))",
                (sorted(extra_ids), z, x, y)).fetchall()
            if rows:
                raise BenchError(f"{line}: tile {z}/{x}/{y}: features {[r[0] for r in rows][:10]}"
                                 " intersect the tile but only gridgov drew them")
    return n


# -- one line, every server -------------------------------------------------------------------


@dataclass
class Outcome:
    """One server's part in a line: its run, or why it has none."""

    run: Run | None = None
    why: str = ""  # n/a: the reason
    answers: Answers = field(default_factory=dict)


@dataclass
class OgcLine:
    name: str
    kind: str
    outcomes: dict[str, Outcome]
    notes: list[str] = field(default_factory=list)

    def run(self, side: str) -> Run | None:
        o = self.outcomes.get(side)
        return None if o is None else o.run

    @property
    def ratio(self) -> float | None:
        ours, raw = self.run(OURS), self.run(RAW)
        return None if ours is None or raw is None else raw.rate / ours.rate

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "ratio": self.ratio, "notes": self.notes,
                "sides": {s: (o.run.as_dict() if o.run is not None else {"n/a": o.why})
                          for s, o in self.outcomes.items()}}


@dataclass(frozen=True)
class Peer:
    server: Server
    application_name: str  # how its connections show in pg_stat_activity


def _parts(queries: Sequence[Query], rounds: int) -> list[Sequence[Query]]:
    size = -(-len(queries) // rounds)
    return [queries[i:i + size] for i in range(0, len(queries), size)]


@dataclass(frozen=True)
class Settings:
    n: int = 400
    rounds: int = 4
    keep: int = 50  # answers compared per server and line
    peer_budget: float = 20.0  # seconds of timed requests per peer and line
    peer_timeout: float = 30.0  # a peer's request slower than this: n/a


def _calibrate(url: str, base: str, case: Case, peer: Peer, target: Callable[[Case, Query], str],
               settings: Settings) -> tuple[float | None, str]:
    """One or two untimed requests of the peer: how long one takes, or why it is n/a."""
    q = case.warm[0] if case.warm else case.queries[0]
    try:
        with harness.http_get(base, "stdlib", settings.peer_timeout) as get:
            t = time.perf_counter()
            status, body = get(target(case, q))
            took = time.perf_counter() - t
            if status == 200 and took < settings.peer_budget / 10:  # the first may be cold
                t = time.perf_counter()
                status, body = get(target(case, q))
                took = min(took, time.perf_counter() - t)
    except TimeoutError:
        _cancel(url, peer)
        return None, (f"a request took over {settings.peer_timeout:.0f} s "
                      "(--peer-timeout; cancelled)")
    ok = (200, 204, 404) if case.kind == "tiles" else (200,)
    if status not in ok:
        return None, f"answers {status}: {body[:160].decode(errors='replace')}"
    return took, ""


def _cancel(url: str, peer: Peer) -> None:
    peers.cancel_queries(url, peer.application_name)
    deadline = time.monotonic() + 30
    while peers.busy(url, peer.application_name) and time.monotonic() < deadline:
        time.sleep(0.2)


def run_line(url: str, case: Case, ours: Server, peer_servers: Mapping[str, Peer],
             settings: Settings, postgres_cpu: Callable[[], float] | None = None) -> OgcLine:
    """Every server on the line's requests, in alternating rounds; answers checked."""
    line = OgcLine(case.name, case.kind, {OURS: Outcome(), RAW: Outcome()})
    pg: dict[str, Callable[[], float]] = {} if postgres_cpu is None else {
        "postgres": postgres_cpu}
    with db.connect(url) as conn:
        prepared = statements(conn, case, [*case.queries, *case.warm], ours.url)
    raw_na = all(prepared[q.i] is None for q in case.queries)
    parts = _parts(case.queries, settings.rounds)

    plans: dict[str, tuple[list[Sequence[Query]], float]] = {}  # rounds, s per request
    for name, peer in peer_servers.items():
        if case.kind == "floor" and name == PYGEOAPI:
            line.outcomes[name] = Outcome(why="no route without work (its lightest page, "
                                              "the landing page, renders the configuration)")
            continue
        took, why = _calibrate(url, peer.server.url, case, peer, TARGETS[name], settings)
        if took is None:
            line.outcomes[name] = Outcome(why=why)
            continue
        count = max(1, min(len(case.queries), int(settings.peer_budget / max(took, 1e-3))))
        rounds = min(settings.rounds, count)
        plans[name] = (_parts(case.queries[:count], rounds), took)
        line.outcomes[name] = Outcome()

    runs: dict[str, list[Run]] = {s: [] for s in SIDES}
    warm_ours = list(case.warm)
    for k, part in enumerate(parts):
        warm = warm_ours if k == 0 else warm_ours[:3]
        run, answers = http_run(ours.url, case, ours_target, part, warm, f"{OURS} {case.name}",
                                {"server": ours.cpu, **pg}, settings.keep)
        runs[OURS].append(run)
        line.outcomes[OURS].answers.update(answers)
        if not raw_na:
            run, answers = raw_run(url, prepared, part, warm, f"{RAW} {case.name}", pg,
                                   settings.keep)
            runs[RAW].append(run)
            line.outcomes[RAW].answers.update(answers)
        for name, (peer_parts, took) in plans.items():
            outcome = line.outcomes[name]
            if outcome.why or k >= len(peer_parts):
                continue
            peer = peer_servers[name]
            spare = int(settings.peer_budget / 4 / max(took, 1e-3))
            peer_warm = list(case.warm[1:1 + min(len(case.warm) - 1, spare)]) if k == 0 else (
                list(case.warm[:1]) if took < 0.5 else [])
            try:
                run, answers = http_run(peer.server.url, case, TARGETS[name], peer_parts[k],
                                        peer_warm, f"{name} {case.name}",
                                        {"server": peer.server.cpu, **pg}, settings.keep,
                                        timeout=settings.peer_timeout)
            except TimeoutError:
                _cancel(url, peer)
                outcome.why = (f"a request took over {settings.peer_timeout:.0f} s "
                               "(--peer-timeout; cancelled)")
                continue
            runs[name].append(run)
            outcome.answers.update(answers)
    if case.kind == "floor":
        line.outcomes[RAW] = Outcome(why="no SQL")
    elif raw_na:
        line.outcomes[RAW] = Outcome(why="no statement: the route answers 204 without SQL "
                                         f"(buildings are drawn from z{_min_zoom()})")
        line.notes.append(f"gridgov draws buildings from z{_min_zoom()} (tiles.mvt.MIN_ZOOM): "
                          "its tiles here are empty (204) by design, the peers' are not; "
                          "not compared")
    for side, side_runs in runs.items():
        if side_runs and not line.outcomes[side].why:
            line.outcomes[side].run = Run.merge(side_runs)
    _check(url, case, line, raw_na)
    return line


def _min_zoom() -> int:
    return mvt.MIN_ZOOM.get(COLLECTION, 0)


def _check(url: str, case: Case, line: OgcLine, raw_na: bool) -> None:
    """Every answer kept, against gridgov's for the same request."""
    if case.kind == "floor":
        return
    want = line.outcomes[OURS].answers
    tiles = {q.i: q.tile for q in case.queries}
    for side, outcome in line.outcomes.items():
        if side == OURS or outcome.run is None or (raw_na and case.kind == "tiles"):
            continue
        extra = TileCheck()
        compared = 0
        for i, body in sorted(outcome.answers.items()):
            if i not in want:
                continue
            where = f"{case.name}: {side}, request {i}"
            if case.kind == "items":
                check_items(where, body, want[i])
            elif case.kind == "item":
                check_item(where, body, want[i])
            else:
                check_tile(where, tiles[i], body, want[i], side != RAW, extra)
            compared += 1
        if compared == 0:
            raise BenchError(f"{case.name}: no answer of {side} to compare")
        if extra.extra:
            n = check_tile_extras(url, case.name, extra)
            note = (f"{side}: the same features but for {n:,} in gridgov's 64-unit buffer, "
                    f"outside the tile, over {len(extra.extra)} of {compared} tiles compared")
            line.notes.append(note)
    for outcome in line.outcomes.values():
        outcome.answers = {}  # the bodies are big: checked, let go


# -- the whole bench ----------------------------------------------------------------------


@dataclass
class OgcReport:
    title: str
    lines: list[OgcLine] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def sides(self) -> list[str]:
        present = {s for ln in self.lines for s in ln.outcomes}
        return [s for s in SIDES if s in present or s in (OURS, RAW)]

    def markdown(self) -> str:
        return table(self.lines, self.sides(), int(self.params.get("n", 0)))

    def write_json(self, path: Path) -> None:
        doc = {"title": self.title, "machine": self.machine, "params": self.params,
               "lines": [ln.as_dict() for ln in self.lines]}
        path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def _rate(rate: float) -> str:
    if rate >= 100:
        return f"{rate:,.0f}"
    if rate >= 10:
        return f"{rate:.1f}"
    if rate >= 1:
        return f"{rate:.2f}"
    return f"{rate:.3f}"


def table(lines: Sequence[OgcLine], sides: Sequence[str], n: int = 0) -> str:
    """line | gridgov req/s | raw SQL req/s | ratio | peers req/s | p50 / p99 each;
    n/a cells carry a footnote with the reason, peers' rates the number of requests
    when fewer than the others'."""
    peer_sides = [s for s in sides if s in PEER_NAMES]
    head = ["line", f"{OURS} req/s", f"{RAW} req/s", "ratio",
            *[f"{s} req/s" for s in peer_sides], *[f"p50 / p99 {s}" for s in sides]]
    out = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    reasons: list[str] = []

    def na(why: str) -> str:
        if why not in reasons:
            reasons.append(why)
        return f"n/a ({reasons.index(why) + 1})"

    def rate(ln: OgcLine, side: str) -> str:
        o = ln.outcomes.get(side)
        if o is None:
            return "—"
        if o.run is None:
            return na(o.why)
        text = _rate(o.run.rate)
        if side in PEER_NAMES and n and o.run.calls < n:
            text += f" ({o.run.calls} req)"
        return text

    def latency(ln: OgcLine, side: str) -> str:
        run = ln.run(side)
        if run is None:
            return "—"
        return f"{harness._secs(run.percentile(50))} / {harness._secs(run.percentile(99))}"

    for ln in lines:
        ratio = "—" if ln.ratio is None else f"{ln.ratio:.2f}×"
        cells = [ln.name, rate(ln, OURS), rate(ln, RAW), ratio,
                 *[rate(ln, s) for s in peer_sides], *[latency(ln, s) for s in sides]]
        out.append("| " + " | ".join(cells) + " |")
    if reasons:
        out.append("")
        out += [f"({k}) {why}" for k, why in enumerate(reasons, 1)]
    return "\n".join(out)


def cpu_table(lines: Sequence[OgcLine], sides: Sequence[str]) -> str:
    """Where the time goes, per request: wall time and each process's CPU."""
    procs = ("client", "server", "postgres")
    out = ["| per request | wall | " + " | ".join(f"{p} CPU" for p in procs) + " |",
           "| --- | ---: |" + " ---: |" * len(procs)]
    for ln in lines:
        for side in sides:
            run = ln.run(side)
            if run is None:
                continue
            cells = " | ".join(harness._secs(run.cpu_per_item(p)) for p in procs)
            out.append(f"| {ln.name}: {side} | {harness._secs(run.wall / run.items)} | {cells} |")
    return "\n".join(out)


def run(url: str, ours: Server, peer_servers: Mapping[str, Peer] | None = None,
        settings: Settings | None = None, kinds: Sequence[str] = KINDS, seed: int = 7,
        postgres_cpu: Callable[[], float] | None = None,
        peer_versions: Mapping[str, str] | None = None) -> OgcReport:
    """Every line against the seeded database at ``url``: our server ``ours``, the raw
    SQL reference and each peer of ``peer_servers`` (name -> :class:`Peer`).

    Raises :class:`harness.BenchError` when an answer differs from gridgov's other than
    as documented (see the module notes)."""
    settings = settings or Settings()
    peer_servers = peer_servers or {}
    facts = harness.machine(url)
    facts |= {k: v for k, v in (peer_versions or {}).items()}
    cases = sample_cases(url, settings.n, seed=seed, kinds=kinds)
    report = OgcReport("gridgov OGC API data paths", [], facts, {
        "n": settings.n, "rounds": settings.rounds, "keep": settings.keep,
        "peer_budget_s": settings.peer_budget, "peer_timeout_s": settings.peer_timeout,
        "kinds": list(kinds), "seed": seed, "client": "stdlib http.client, 1 connection",
        "peers": list(peer_servers)})
    with harness.progress("lines", total=len(cases), unit="line") as bar:
        for case in cases:
            bar.set_postfix_str(case.name)
            report.lines.append(run_line(url, case, ours, peer_servers, settings, postgres_cpu))
            bar.update(1)
    return report


@contextmanager
def _setup(args: argparse.Namespace, wanted: Sequence[str]
           ) -> Iterator[tuple[harness.Database, Server, dict[str, Peer], dict[str, str]]]:
    with ExitStack() as stack:
        python = peers.ensure_venv() if wanted else None
        if args.database_url:
            with db.connect(args.database_url) as conn:
                if not db.is_seeded(conn):
                    raise BenchError("--database-url: the database holds no territory; "
                                     "`gridgov db up` seeds one")
            database = harness.Database(args.database_url)
        else:
            database = stack.enter_context(harness.seeded_database(args.seed, args.scale))
        ours = stack.enter_context(harness.serve(harness.gridgov_app, database.url))
        servers: dict[str, Peer] = {}
        versions: dict[str, str] = {}
        if python is not None:
            workdir = stack.enter_context(peers.scratch())
            versions = {f"peers: {k}": v for k, v in peers.versions(python).items()}
            if TIPG in wanted:
                servers[TIPG] = Peer(stack.enter_context(
                    peers.tipg(python, database.url, workdir / "tipg")), "tipg")
            if PYGEOAPI in wanted:
                servers[PYGEOAPI] = Peer(stack.enter_context(
                    peers.pygeoapi(python, database.url, workdir / "pygeoapi")), "pygeoapi")
        yield database, ours, servers, versions


def _choices(text: str, allowed: Sequence[str], option: str) -> list[str]:
    got = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in got if t not in allowed]
    if bad or not got:
        raise argparse.ArgumentTypeError(f"{option}: choose from {', '.join(allowed)}")
    return got


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ogc", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400,
                    help="requests per line for gridgov and raw SQL, at most for a peer (400)")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds per line (4)")
    ap.add_argument("--only", default="ours,tipg,pygeoapi",
                    help="servers: ours (always, with raw SQL), tipg, pygeoapi, "
                         "comma-separated; 'ours' alone needs no peer venv (all three)")
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help="lines: floor, items, item, tiles, comma-separated (all)")
    ap.add_argument("--peer-budget", type=float, default=20.0,
                    help="seconds of timed requests per peer and line (20)")
    ap.add_argument("--peer-timeout", type=float, default=30.0,
                    help="a peer request slower than this makes the line n/a for it (30)")
    ap.add_argument("--keep", type=int, default=50,
                    help="answers per server and line compared with gridgov's (50)")
    ap.add_argument("--scale", type=int, default=1,
                    help="towns side by side (1; 10 is the big run, about 10x longer)")
    ap.add_argument("--seed", type=int, default=2023, help="demo town seed (2023)")
    ap.add_argument("--database-url", help="use this migrated, seeded database instead "
                    "of a throwaway cluster")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    try:
        only = _choices(args.only, ("ours", TIPG, PYGEOAPI), "--only")
        kinds = _choices(args.kinds, KINDS, "--kinds")
    except argparse.ArgumentTypeError as exc:
        ap.error(str(exc))
    if min(args.n, args.rounds, args.scale, args.keep) < 1:
        ap.error("--n, --rounds, --scale and --keep must be at least 1")
    if args.peer_budget <= 0 or args.peer_timeout <= 0:
        ap.error("--peer-budget and --peer-timeout must be positive")
    wanted = [p for p in PEER_NAMES if p in only]
    settings = Settings(n=args.n, rounds=args.rounds, keep=args.keep,
                        peer_budget=args.peer_budget, peer_timeout=args.peer_timeout)
    started = time.monotonic()
    try:
        with _setup(args, wanted) as (database, ours, servers, versions):
            clock = database.postgres_cpu if database.cluster is not None else None
            report = run(database.url, ours, servers, settings, kinds, postgres_cpu=clock,
                         peer_versions=versions)
    except (BenchError, LayersError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report.params |= {"scale": args.scale, "town_seed": args.seed,
                      "minutes": round((time.monotonic() - started) / 60, 1)}
    sides = report.sides()
    budget = (f", up to {args.peer_budget:.0f} s per line for each peer ({', '.join(wanted)})"
              if wanted else "")
    print(f"{report.title} on `{COLLECTION}` (scale {args.scale}): {args.n:,} requests per "
          f"line for gridgov and raw SQL{budget}; one client, keep-alive; every server "
          "uvicorn with 1 worker; ratio = gridgov time / raw SQL time\n")
    print(report.markdown())
    notes = [f"- {ln.name}: {note}" for ln in report.lines for note in ln.notes]
    if notes:
        print("\nNotes on the answers (all others: the same features as gridgov's):\n")
        print("\n".join(notes))
    print("\nWhere the time goes (per request):\n")
    print(cpu_table(report.lines, sides))
    print("\nmachine: " + "; ".join(f"{k} {v}" for k, v in report.machine.items()))
    if args.json:
        report.write_json(args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
