"""Which database the server uses: the configured one, or the project's own cluster."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.settings import Settings
from layers import db, roles
from layers.cluster import LocalCluster
from layers.loader import load_tables


@dataclass(frozen=True)
class Database:
    url: str  # the owner: migrations, seeding, the CLI
    cluster: LocalCluster | None  # None when GRIDGOV_DATABASE_URL points elsewhere
    writer_url: str | None = None  # the server's writes (None: ``url``)
    reader_url: str | None = None  # the server's reads (None: see :func:`server_urls`)

    @property
    def server_url(self) -> str:
        return self.writer_url or self.url

    @property
    def where(self) -> str:
        return self.url.rsplit("@", 1)[-1]


def local_cluster(settings: Settings) -> LocalCluster:
    return LocalCluster(
        datadir=(settings.data_dir / "pg").resolve(),
        port=settings.pg_port,
        bindir=settings.pg_bindir,
    )


def ensure_database(settings: Settings, say: Callable[[str], None] = print) -> Database:
    """Start (or reuse) the local cluster and provision the database, unless one is set."""
    if settings.database_url:
        return Database(url=settings.database_owner_url or settings.database_url, cluster=None,
                        writer_url=settings.database_url, reader_url=settings.database_read_url)
    cluster = local_cluster(settings)
    if cluster.init():
        say(f"created a PostgreSQL cluster in {cluster.datadir}")
    if cluster.start():
        say(f"started PostgreSQL on 127.0.0.1:{cluster.port}")
    else:
        say(f"reusing PostgreSQL on 127.0.0.1:{cluster.port} ({cluster.datadir})")
    db.provision(
        cluster.url("postgres"), settings.database_name, settings.database_role, cluster.password
    )
    owner = settings.database_role
    return Database(
        url=cluster.url(settings.database_name, user=owner), cluster=cluster,
        writer_url=cluster.url(settings.database_name, user=roles.writer_role(owner)),
        reader_url=cluster.url(settings.database_name, user=roles.reader_role(owner)),
    )


def server_urls(settings: Settings, url: str, read_url: str | None = None
                ) -> tuple[str, str]:
    """The URLs the server writes and reads through, given its ``url`` (and ``read_url``,
    else GRIDGOV_DATABASE_READ_URL).

    Outside production, one URL of the owner role (``GRIDGOV_DATABASE_ROLE``, as the tests
    and ``gridgov db url`` give it) stands for the local cluster's convention: the server
    connects as the owner's writer and reader roles instead, with the same password
    (``provision`` creates them so).  Without a read URL, reads go through ``url`` (still
    through the published views: the read pools' search path starts with them)."""
    read_url = read_url or settings.database_read_url
    if read_url is None and settings.env != "production" and (
            db.url_user(url) == settings.database_role):
        owner = settings.database_role
        return (db.with_user(url, roles.writer_role(owner)),
                db.with_user(url, roles.reader_role(owner)))
    return url, read_url or url


def seed_if_empty(
    url: str, seed: int, scale: int = 1, progress: Callable[[str, int], None] | None = None
) -> dict[str, int] | None:
    """Load the demo town when the database holds no territory yet."""
    with db.connect(url) as conn:
        if db.is_seeded(conn):
            return None
    return seed_town(url, seed, scale, progress)


def seed_town(
    url: str, seed: int, scale: int = 1, progress: Callable[[str, int], None] | None = None
) -> dict[str, int]:
    from seed_data.town import generate

    town = generate(seed=seed, scale=scale, progress=progress)
    with db.connect(url) as conn:
        counts = load_tables(conn, town.tables, progress=progress)
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")
    return counts


def demo_town_of(url: str) -> tuple[int, int] | None:
    """(seed, scale) when the current grid is the generated demo town, else None."""
    import re

    with db.connect(url) as conn:
        row = conn.execute(
            "SELECT source FROM grid_generations WHERE valid_to IS NULL").fetchone()
    match = re.fullmatch(r"seed_data demo town, seed (\d+), scale (\d+)", row[0] if row else "")
    return (int(match[1]), int(match[2])) if match else None


def write_demo_dsm(
    url: str, path: Path, progress: Callable[[str, int], None] | None = None
) -> bool:
    """Write the demo town's surface model to ``path`` (when the database holds the demo
    town); False when it holds other data, whose DSM must come from its survey."""
    from seed_data.surface import write_dsm
    from seed_data.town import generate

    demo = demo_town_of(url)
    if demo is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    town = generate(seed=demo[0], scale=demo[1], progress=progress)
    tmp = path.with_suffix(".tmp.tif")
    write_dsm(town, tmp, progress=progress)
    tmp.replace(path)  # never a half-written DSM under the real name
    return True


# -- the server's pools ------------------------------------------------------------------

def new_pool(settings: Settings, url: str, name: str, reads: bool = False
             ) -> AsyncConnectionPool:
    """A pool for the request paths: autocommit, no JIT, the statement timeout, and bounded
    waits (connecting, and waiting for a free connection), so a database that is down
    answers 503 quickly instead of holding requests.  A pool for ``reads`` searches the
    published views first (whatever role it connects as)."""
    options = db.session_options(settings.statement_timeout_ms)
    if reads:
        options += " " + roles.READER_OPTIONS
    return AsyncConnectionPool(
        db.libpq_url(url),
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        open=False,
        timeout=settings.pool_timeout,
        name=name,
        # autocommit: a read is one round trip, not BEGIN/statement/COMMIT; a route
        # that writes opens its own `conn.transaction()`
        kwargs={"application_name": "gridgov",
                "options": options,
                "autocommit": True, "connect_timeout": max(1, int(settings.pool_timeout))},
    )


class ReadPools:
    """Several replica pools behind one ``connection()``: each call takes the next one."""

    def __init__(self, pools: list[AsyncConnectionPool]) -> None:
        self.pools = pools
        self._next = itertools.cycle(pools)

    @asynccontextmanager
    async def connection(self, timeout: float | None = None
                         ) -> AsyncIterator[AsyncConnection[Any]]:
        async with next(self._next).connection(timeout=timeout) as conn:
            yield conn

    def get_stats(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for pool in self.pools:
            for key, value in pool.get_stats().items():
                total[key] = total.get(key, 0) + value
        return total

    async def open(self, wait: bool = False) -> None:
        for pool in self.pools:
            await pool.open(wait=wait)

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close()


def read_pool(settings: Settings, read_url: str) -> AsyncConnectionPool | ReadPools:
    """Reads go to the replicas when GRIDGOV_DATABASE_REPLICA_URLS names some (their URLs
    carry the reader's credentials), else to ``read_url`` on the primary."""
    urls = settings.database_replica_urls
    if not urls:
        return new_pool(settings, read_url, "reader", reads=True)
    pools = [new_pool(settings, url, f"replica-{i}", reads=True) for i, url in enumerate(urls)]
    return pools[0] if len(pools) == 1 else ReadPools(pools)
