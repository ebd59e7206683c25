"""Which database the server uses: the configured one, or the project's own cluster."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from api.settings import Settings
from layers import db
from layers.cluster import LocalCluster
from layers.loader import load_tables


@dataclass(frozen=True)
class Database:
    url: str
    cluster: LocalCluster | None  # None when GRIDGOV_DATABASE_URL points elsewhere

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
        return Database(url=settings.database_url, cluster=None)
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
    return Database(
        url=cluster.url(settings.database_name, user=settings.database_role), cluster=cluster
    )


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
