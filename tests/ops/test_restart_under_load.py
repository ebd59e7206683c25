"""PostgreSQL stopped and started under load: 503 problems while it is down (no hang, no
500), the pool reconnects by itself, every request after the restart succeeds, and no
accepted event (201) is lost.

A cluster of its own (not the session's), served by uvicorn on a free port, loaded by
threads of real HTTP clients.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn

from api.app import create_app
from api.database import seed_town
from api.settings import Settings
from layers import db
from layers.cluster import LocalCluster, free_port

CLIENT_TIMEOUT = 30.0  # a request still unanswered by then counts as a hang
THREADS = 6


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[tuple[LocalCluster, str]]:
    # under the project's .data like the session's cluster (as root, the postgres user
    # runs the server and cannot enter pytest's private temporary directories)
    c = LocalCluster(datadir=ROOT / ".data" / f"test-restart-{os.getpid()}", port=free_port())
    c.destroy()
    c.init()
    c.start()
    try:
        db.provision(c.url("postgres"), "gridgov", "gridgov", c.password)
        url = c.url("gridgov", user="gridgov")
        db.migrate(url)
        seed_town(url, seed=2023)
        yield c, url
    finally:
        c.destroy()


@contextmanager
def served(settings: Settings, url: str) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, url), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


@dataclass
class Tally:
    phase: str = "before"
    answers: list[tuple[str, int, str, str]] = field(default_factory=list)  # phase, status,
    hangs: list[str] = field(default_factory=list)  # content type, title
    accepted: list[int] = field(default_factory=list)  # ids of events answered 201
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int, ctype: str, title: str) -> None:
        with self.lock:
            self.answers.append((self.phase, status, ctype, title))

    def count(self, phase: str, status: int | None = None) -> int:
        return sum(1 for p, s, _c, _t in self.answers
                   if p == phase and (status is None or s == status))


def load(base: str, points: list[tuple[float, float]], tally: Tally, stop: threading.Event,
         offset: int, events: bool = False) -> None:
    with httpx.Client(base_url=base, timeout=CLIENT_TIMEOUT) as client:
        i = offset
        while not stop.is_set():
            lon, lat = points[i % len(points)]
            path = "/api/v1/events" if events else "/locate" if i % 3 else "/nearby"
            i += 1
            try:
                if events:
                    r = client.post(path, json={"category": "06010", "lon": lon, "lat": lat,
                                                "description": f"restart test {i}"})
                    if r.status_code == 201:
                        with tally.lock:
                            tally.accepted.append(r.json()["id"])
                else:
                    r = client.get(path, params={"lon": lon, "lat": lat})
            except httpx.TimeoutException:
                tally.hangs.append(path)
                continue
            title = r.json().get("title", "") if r.headers.get(
                "content-type", "").startswith("application/problem+json") else ""
            tally.add(r.status_code, r.headers.get("content-type", ""), title)


def test_requests_ride_out_a_postgresql_restart(
    own_cluster: tuple[LocalCluster, str], tmp_path: Path
) -> None:
    cluster, url = own_cluster
    with psycopg.connect(url) as conn:
        points = conn.execute("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p "
                              "FROM micro_grids ORDER BY code LIMIT 50) s").fetchall()
    settings = Settings(env="test", data_dir=tmp_path, pool_max=4, pool_timeout=2.0,
                        intake_limit=1_000_000)
    tally, stop = Tally(), threading.Event()
    with served(settings, url) as base:
        threads = [threading.Thread(target=load, args=(base, points, tally, stop, k * 7))
                   for k in range(THREADS)]
        threads.append(threading.Thread(target=load, args=(base, points, tally, stop, 0, True)))
        for t in threads:
            t.start()
        try:
            while tally.count("before", 200) < 200:  # a steady load first
                time.sleep(0.05)
            # requests caught in flight: the lookups wait behind this lock when it stops
            blocker = psycopg.connect(url, autocommit=False)
            blocker.execute("LOCK TABLE micro_grid_parts IN ACCESS EXCLUSIVE MODE")
            time.sleep(0.5)
            tally.phase = "down"
            cluster.stop(mode="fast")
            blocker.close()
            time.sleep(3)
            cluster.start()
            tally.phase = "restarting"
            deadline = time.monotonic() + 60
            while httpx.get(f"{base}/readyz", timeout=CLIENT_TIMEOUT).status_code != 200:
                assert time.monotonic() < deadline, "the server never became ready again"
                time.sleep(0.2)
            # /readyz asks the read pool (reads are served from replicas while the
            # primary is down); the write pool retries its connections on psycopg_pool's
            # backoff (1, 2, 4 s...) and can come back seconds later: wait for a write
            while tally.count("restarting", 201) == 0:
                assert time.monotonic() < deadline, "writes never came back"
                time.sleep(0.2)
            time.sleep(1)  # the pools have replaced their broken connections by now
            tally.phase = "after"
            while tally.count("after") < 300:
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(CLIENT_TIMEOUT + 5)
        readyz = httpx.get(f"{base}/readyz").json()

    statuses = {s for _p, s, _c, _t in tally.answers}
    print({phase: {s: tally.count(phase, s) for s in sorted(statuses)}
           for phase in ("before", "down", "restarting", "after")})
    assert not tally.hangs, f"{len(tally.hangs)} requests hung past {CLIENT_TIMEOUT} s"
    assert tally.count("before") == tally.count("before", 200) + tally.count("before", 201)
    down = [(s, c, t) for p, s, c, t in tally.answers if p in ("down", "restarting")
            and s != 200]
    assert down, "no request met the database down"
    assert tally.count("down", 503) >= 1
    for status, ctype, title in down:  # never a 500, never a trace
        assert status in (201, 503), (status, ctype)
        if status == 201:
            continue
        assert ctype == "application/problem+json", (status, ctype)
        assert title in ("Database unavailable",), title
    assert tally.count("after") == tally.count("after", 200) + tally.count(
        "after", 201) >= 300  # reconnected by itself
    assert readyz["status"] == "ready"
    # every event the server accepted is there after the restart
    assert len(tally.accepted) >= 10
    with psycopg.connect(url) as conn:
        stored = {r[0] for r in conn.execute("SELECT id FROM events WHERE id = ANY(%s)",
                                             (tally.accepted,))}
    assert stored == set(tally.accepted)
