"""Databases: provisioning on the local cluster, migrations, connections.

Functions take URLs or connections; none reads the environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import create_engine, pool

from layers.errors import DatabaseNotReady
from layers.roles import ensure_roles

MIGRATIONS = Path(__file__).with_name("migrations")


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy form of a libpq URL (psycopg 3 driver)."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise DatabaseNotReady(f"not a PostgreSQL URL: {url.split('@')[-1]}")


def url_user(url: str) -> str | None:
    """The user name a URL connects as (None when it names none)."""
    return urlsplit(libpq_url(url)).username


def with_user(url: str, user: str) -> str:
    """``url`` connecting as ``user`` (same password, host and database)."""
    parts = urlsplit(url)
    password = f":{parts.password}" if parts.password is not None else ""
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}{password}@{host}"))


def libpq_url(url: str) -> str:
    """The libpq form of a URL that may carry SQLAlchemy's driver suffix."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


# Every session: no JIT.  PostgreSQL's JIT compiles the batch lookups' plans for ~0.6 s
# each (measured on the 5,000-point /locate statement, which then runs in 0.2 s).
SESSION_OPTIONS = "-c jit=off"


def session_options(statement_timeout_ms: int | None = None) -> str:
    """:data:`SESSION_OPTIONS`, plus a ``statement_timeout`` when given (the server's
    request paths: a statement running longer is cancelled, ``QueryCanceled``)."""
    if statement_timeout_ms is None:
        return SESSION_OPTIONS
    if not isinstance(statement_timeout_ms, int) or statement_timeout_ms <= 0:
        raise ValueError(f"statement timeout must be a positive integer: {statement_timeout_ms}")
    return f"{SESSION_OPTIONS} -c statement_timeout={statement_timeout_ms}"


def connect(url: str, **kwargs: object) -> psycopg.Connection[tuple[object, ...]]:
    kwargs.setdefault("options", SESSION_OPTIONS)
    try:
        return psycopg.connect(libpq_url(url), **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        raise DatabaseNotReady(f"cannot connect to the database: {exc}") from exc


async def aconnect(url: str, **kwargs: object) -> psycopg.AsyncConnection[tuple[object, ...]]:
    """An autocommit async connection (the server's pool's settings) for CLI work."""
    kwargs.setdefault("options", SESSION_OPTIONS)
    kwargs.setdefault("autocommit", True)
    try:
        return await psycopg.AsyncConnection.connect(libpq_url(url), **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        raise DatabaseNotReady(f"cannot connect to the database: {exc}") from exc


def provision(admin_url: str, database: str, role: str, password: str) -> bool:
    """Create ``role`` and ``database`` (owned by it, with PostGIS) if missing, and the
    server's writer and reader roles (:mod:`layers.roles`, same password).

    ``admin_url`` connects as a superuser to any existing database of the cluster.
    Returns True when the database was created.
    """
    created = False
    with connect(admin_url, autocommit=True) as conn:
        ensure_roles(conn, role, password)  # the owner, its writer and its reader
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(role)
                )
            )
            created = True
    # PostGIS is not a trusted extension: the superuser installs it for the owner.
    db_url = admin_url.rsplit("/", 1)[0] + "/" + database
    with connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    return created


def drop_database(admin_url: str, database: str) -> None:
    with connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )


def clone_database(admin_url: str, template: str, name: str) -> None:
    """``CREATE DATABASE name TEMPLATE template`` (the template must have no sessions)."""
    with connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (the newest by default)."""
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    """The newest migration the code ships (read from the migration scripts on disk)."""
    script = ScriptDirectory.from_config(alembic_config("postgresql://x@localhost/x"))
    head = script.get_current_head()
    if head is None:
        raise DatabaseNotReady(f"no migrations found in {MIGRATIONS}")
    return head


def current_revision(url: str) -> str | None:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def is_seeded(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """True when the database holds a grid generation (the territory has been loaded)."""
    row = conn.execute("SELECT to_regclass('grid_generations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return False
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM grid_generations)").fetchone()
    return bool(row and row[0])


@contextmanager
def transaction(url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection in one transaction: committed on success, rolled back on any error."""
    with connect(url) as conn:
        with conn.transaction():
            yield conn


def grant_roles(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """Run migration 0007's grants again as the owner ``conn`` connects as (for roles
    created after the migration ran); returns the roles that exist and were granted."""
    import importlib.util

    path = MIGRATIONS / "versions" / "0007_published_roles.py"
    spec = importlib.util.spec_from_file_location("gridgov_migration_0007", path)
    if spec is None or spec.loader is None:  # pragma: no cover - the file ships
        raise DatabaseNotReady(f"migration {path} is missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if conn.execute("SELECT to_regnamespace('published')").fetchone() == (None,):
        raise DatabaseNotReady("schema published does not exist: run the migrations first")
    conn.execute(module._grants())
    rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1",
                        ([f"{conn.info.user}_reader", f"{conn.info.user}_writer"],)).fetchall()
    return [r[0] for r in rows]
