"""One real PostGIS cluster for the whole run, a seeded template database, and copies.

The cluster lives in ``.data/test-pg-<pid>`` on a free port and is destroyed at the end:
tests never touch the user's own cluster or data.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from layers import db
from layers.cluster import LocalCluster, free_port
from seed_data.surface import SurfaceInfo, write_dsm
from seed_data.town import Town, generate

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "gridgov_template"
ROLE = "gridgov"
_names = itertools.count(1)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(datadir=ROOT / ".data" / f"test-pg-{os.getpid()}", port=free_port())
    c.destroy()
    c.init()
    c.start()
    try:
        yield c
    finally:
        c.destroy()


@pytest.fixture(scope="session")
def admin_url(cluster: LocalCluster) -> str:
    return cluster.url("postgres")


@pytest.fixture(scope="session")
def template_db(cluster: LocalCluster, admin_url: str) -> str:
    """Name of the migrated database holding the demo town (seed 2023); never opened by tests."""
    from api.database import seed_town

    db.provision(admin_url, TEMPLATE, ROLE, cluster.password)
    url = cluster.url(TEMPLATE, user=ROLE)
    db.migrate(url)
    seed_town(url, seed=2023)
    # the demo town's coverage (range rings and camera sectors; no surface model here,
    # line of sight has its own tests), so micro_grid_coverage is published with data
    from layers.coverage import compute, store

    with db.connect(url) as conn:
        store(conn, compute(conn, None))
        conn.commit()
    return TEMPLATE


def _clone(cluster: LocalCluster, admin_url: str, template: str, prefix: str) -> str:
    name = f"{prefix}_{next(_names)}"
    db.drop_database(admin_url, name)
    db.clone_database(admin_url, template, name)
    return name


@pytest.fixture(scope="session")
def db_url(cluster: LocalCluster, admin_url: str, template_db: str) -> str:
    """A seeded database shared by tests that only read."""
    name = _clone(cluster, admin_url, template_db, "shared")
    return cluster.url(name, user=ROLE)


@pytest.fixture
def fresh_db_url(cluster: LocalCluster, admin_url: str, template_db: str) -> Iterator[str]:
    """A private seeded copy (``CREATE DATABASE ... TEMPLATE``) for a test that writes."""
    name = _clone(cluster, admin_url, template_db, "fresh")
    yield cluster.url(name, user=ROLE)
    db.drop_database(admin_url, name)


@pytest.fixture
def empty_db_url(cluster: LocalCluster, admin_url: str) -> Iterator[str]:
    """A provisioned database with PostGIS and no schema."""
    name = f"empty_{next(_names)}"
    db.drop_database(admin_url, name)
    db.provision(admin_url, name, ROLE, cluster.password)
    yield cluster.url(name, user=ROLE)
    db.drop_database(admin_url, name)


@pytest.fixture(scope="session")
def demo_town() -> Town:
    """The demo town as the generator makes it (seed 2023), shared by the run."""
    return generate(seed=2023)


@pytest.fixture(scope="session")
def demo_dsm(demo_town: Town, tmp_path_factory: pytest.TempPathFactory) -> SurfaceInfo:
    """The demo town's surface model (2 m DSM GeoTIFF, EPSG:4548), written once per run."""
    return write_dsm(demo_town, tmp_path_factory.mktemp("dsm") / "demo_dsm.tif")


# -- the event workflow -----------------------------------------------------------------


@dataclass
class EventTown:
    """A writable demo town served by the app, with one account per role."""

    url: str
    client: Any  # fastapi.testclient.TestClient
    auth: dict[str, dict[str, str]]  # role name -> Authorization header
    grid: str  # a micro-grid owned by the grid worker "网格员甲"
    point: tuple[float, float]  # a point inside it (EPSG:4490)
    other_grid: str  # a micro-grid somebody else owns
    other_point: tuple[float, float]
    photos: Path

    def post(self, role: str | None, path: str, **kw: Any) -> Any:
        headers = {**(self.auth[role] if role else {}), **kw.pop("headers", {})}
        return self.client.post(path, headers=headers, **kw)

    def get(self, role: str | None, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=self.auth[role] if role else {}, **kw)

    def act(self, role: str, event_id: int, action: str, **body: Any) -> Any:
        return self.post(role, f"/api/v1/events/{event_id}/transitions",
                         json={"action": action, **body})


def jpeg(size: tuple[int, int] = (64, 48), gps: bool = False) -> bytes:
    """A small JPEG; with ``gps``, carrying an EXIF GPS position (as phones write)."""
    import io

    from PIL import Image

    img = Image.new("RGB", size, (200, 120, 40))
    out = io.BytesIO()
    exif = Image.Exif()
    if gps:
        exif[0x8825] = {1: "N", 2: (36.0, 48.0, 12.5), 3: "E", 4: (118.0, 3.0, 1.25)}
        exif[0x010F] = "PhoneMaker"
    img.save(out, "JPEG", exif=exif.tobytes() if gps else b"")
    return out.getvalue()


@pytest.fixture
def event_town(fresh_db_url: str, tmp_path: Path) -> Iterator[EventTown]:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings
    from layers.auth import create_user

    with db.connect(fresh_db_url) as conn:
        rows = conn.execute(
            "SELECT m.code, ST_X(ST_PointOnSurface(m.geom)), ST_Y(ST_PointOnSurface(m.geom)) "
            "FROM micro_grids m JOIN grid_generations g ON g.id = m.generation_id "
            "AND g.valid_to IS NULL JOIN worker_assignments wa ON wa.micro_grid_code = m.code "
            "AND wa.valid_to IS NULL ORDER BY m.code LIMIT 2").fetchall()
        (grid, x, y), (other, ox, oy) = rows
        tokens = {
            "dispatcher": create_user(conn, "调度员", "dispatcher", phone="13800000001"),
            "officer": create_user(conn, "指挥中心科长", "officer"),
            "admin": create_user(conn, "管理员", "admin"),
            "worker": create_user(conn, "网格员甲", "grid_worker", grid=grid),
            "other_worker": create_user(conn, "网格员乙", "grid_worker", grid=other),
            "sanitation": create_user(conn, "环卫所", "department", department="sanitation"),
            "resident": create_user(conn, "居民王", "resident"),
        }
        conn.commit()
    photos = tmp_path / "photos"
    settings = Settings(env="test", intake_limit=10_000, GRIDGOV_PHOTOS_DIR=photos)
    with TestClient(create_app(settings, fresh_db_url)) as client:
        yield EventTown(fresh_db_url, client,
                        {k: {"Authorization": f"Bearer {v}"} for k, v in tokens.items()},
                        grid, (x, y), other, (ox, oy), photos)


DEMO_EVENTS = 600


@pytest.fixture(scope="session")
def events_db_url(cluster: LocalCluster, admin_url: str, template_db: str) -> str:
    """A seeded database with a demo history of events (``layers.demo_events``, 600
    reports over 2026 walked through the workflow), shared by tests that only read."""
    import asyncio

    from layers.demo_events import replay

    name = _clone(cluster, admin_url, template_db, "events")
    url = cluster.url(name, user=ROLE)

    async def go() -> None:
        async with await db.aconnect(url) as conn:
            await replay(conn, DEMO_EVENTS, 2023)

    asyncio.run(go())
    return url


# -- a real HTTP server for the clients that need one (GDAL, QGIS, OWSLib, slow requests) --


@contextmanager
def _serve(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free port in a thread; yields its base URL."""
    import threading
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="session")
def served() -> Callable[[Any], AbstractContextManager[str]]:
    """``with served(app) as base:``: ``app`` (any ASGI app) under a real uvicorn on a free
    port in a thread for the block; ``base`` is its ``http://127.0.0.1:<port>``."""
    return _serve
