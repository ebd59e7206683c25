"""One real PostGIS cluster for the whole run, a seeded template database, and copies.

The cluster lives in ``.data/test-pg-<pid>`` on a free port and is destroyed at the end:
tests never touch the user's own cluster or data.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
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
