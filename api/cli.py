"""The ``gridgov`` command line.

The database layer, the settings and the web stack are imported inside the commands that
use them: ``import api.cli`` (and a raster command such as ``changes detect``) stays
clear of SQLAlchemy, Alembic, psycopg, pydantic-settings... (~85 MB of resident size;
tests/api/test_cli_imports.py keeps it so).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from tqdm import tqdm

from gis.errors import GisError
from layers.errors import LayersError

if TYPE_CHECKING:
    from api.database import Database
    from api.settings import Settings

app = typer.Typer(help="gridgov: grid governance on PostGIS.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="The database: local cluster, migrations, demo data.",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")


def settings() -> Settings:
    from api.settings import Settings

    return Settings()


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


@contextmanager
def progress_bar(desc: str) -> Iterator[Callable[[str, int], None]]:
    """A tqdm bar fed by ``progress(step, n)`` callbacks."""
    with tqdm(desc=desc, unit="step", leave=True, dynamic_ncols=True) as bar:

        def update(step: str, n: int) -> None:
            bar.set_postfix_str(f"{step}: {n:,}")
            bar.update(1)

        yield update


def database_up(s: Settings, seed: bool = True) -> Database:
    """Local cluster (unless configured otherwise), migrations, demo town if empty."""
    from api.database import ensure_database, seed_if_empty
    from layers import db

    try:
        database = ensure_database(s, say=typer.echo)
        db.migrate(database.url)
        if seed:
            with progress_bar("seeding the demo town") as bar:
                counts = seed_if_empty(database.url, s.seed, progress=bar)
            if counts is None:
                typer.echo("database already holds a territory: not seeded again")
            else:
                typer.echo("seeded: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    except LayersError as exc:
        raise fail(str(exc)) from exc
    return database


@db_app.command("up")
def db_up(
    no_seed: Annotated[bool, typer.Option("--no-seed", help="Migrate only.")] = False,
) -> None:
    """Start the local cluster if needed, migrate, and seed the demo town if empty."""
    database = database_up(settings(), seed=not no_seed)
    typer.echo(f"database ready at {database.where}")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the project's local PostgreSQL cluster."""
    from api.database import local_cluster

    s = settings()
    if s.database_url:
        typer.echo("GRIDGOV_DATABASE_URL is set: no local cluster to stop")
        return
    cluster = local_cluster(s)
    typer.echo("stopped" if cluster.stop() else "not running")


@db_app.command("reset")
def db_reset(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    scale: Annotated[int, typer.Option(min=1, help="Towns side by side.")] = 1,
) -> None:
    """Drop the local database and build it again with the demo town."""
    from api.database import ensure_database, local_cluster, seed_town
    from layers import db

    s = settings()
    if s.database_url:
        raise fail("reset only drops the project's own local database; "
                   "GRIDGOV_DATABASE_URL is set")
    if not yes:
        typer.confirm(f"Drop database {s.database_name} on the local cluster?", abort=True)
    cluster = local_cluster(s)
    ensure_database(s, say=typer.echo)  # the cluster runs and the role exists
    db.drop_database(cluster.url("postgres"), s.database_name)
    database = ensure_database(s, say=typer.echo)
    db.migrate(database.url)
    with progress_bar("seeding the demo town") as bar:
        counts = seed_town(database.url, s.seed, scale=scale, progress=bar)
    typer.echo("seeded: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


@db_app.command("grant")
def db_grant() -> None:
    """Grant the published views to <owner>_reader and the tables to <owner>_writer again
    (migration 0007's grants; for roles created after the migration ran)."""
    from api.database import ensure_database
    from layers import db

    database = ensure_database(settings(), say=lambda _m: None)
    try:
        with db.connect(database.url, autocommit=True) as conn:
            granted = db.grant_roles(conn)
    except LayersError as exc:
        raise fail(str(exc)) from exc
    typer.echo("granted to " + (", ".join(granted) or "nobody: create the roles first"))


@db_app.command("url")
def db_url() -> None:
    """Print the owner's database URL: migrations, seeding, psql (starts the local cluster
    if needed; the server itself connects as <owner>_writer and <owner>_reader)."""
    from api.database import ensure_database

    typer.echo(ensure_database(settings(), say=lambda _m: None).url)


@app.command("seed")
def seed_cmd(
    seed: Annotated[int, typer.Option(help="Random seed of the generator.")] = 2023,
    scale: Annotated[int, typer.Option(min=1, help="Towns side by side.")] = 1,
    digest: Annotated[bool, typer.Option("--digest", help="Print the data's SHA-256 only; "
                                         "write nothing.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write canonical JSON lines here; "
                                             "write nothing to the database.")] = None,
) -> None:
    """Generate the demo town (into an empty database, or as a digest or file)."""
    from seed_data.town import digest as town_digest
    from seed_data.town import generate, records

    if digest or out is not None:
        with progress_bar("generating") as bar:
            town = generate(seed=seed, scale=scale, progress=bar)
        if out is not None:
            with out.open("w", encoding="utf-8") as fh:
                for line in records(town):
                    fh.write(line + "\n")
            typer.echo(f"wrote {out}")
        typer.echo(town_digest(town))
        return
    from api.database import ensure_database, seed_town
    from layers import db

    s = settings()
    database = ensure_database(s, say=typer.echo)
    db.migrate(database.url)
    with db.connect(database.url) as conn:
        if db.is_seeded(conn):
            raise fail("the database already holds a territory; `make reset-db` to start over")
    with progress_bar("seeding") as bar:
        counts = seed_town(database.url, seed, scale=scale, progress=bar)
    typer.echo("seeded: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


@contextmanager
def counting_bar(desc: str, unit: str) -> Iterator[Callable[[int, int, str], None]]:
    """A tqdm bar with a total, fed by ``progress(done, total, message)`` callbacks."""
    with tqdm(desc=desc, unit=unit, leave=True, dynamic_ncols=True) as bar:

        def update(done: int, total: int, message: str) -> None:
            bar.total = total
            bar.set_postfix_str(message)
            bar.update(done - bar.n)

        yield update


@app.command("coverage")
def coverage_cmd(
    dsm: Annotated[Path | None, typer.Option(
        help="Surface model (GeoTIFF, metres, the grid's Gauss-Krüger zone); default: "
             "GRIDGOV_SURFACE_MODEL or <data dir>/dsm.tif.")] = None,
    no_dsm: Annotated[bool, typer.Option(
        "--no-dsm", help="Range rings and camera sectors only, no line of sight.")] = False,
    generation: Annotated[int | None, typer.Option(
        help="Grid generation id; default the current one.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Compute and report; store nothing.")] = False,
) -> None:
    """Recompute what the high points and cameras see of every micro-grid, and store it."""
    from api.database import ensure_database, write_demo_dsm
    from layers import db
    from layers.coverage import compute, store

    s = settings()
    database = ensure_database(s, say=lambda _m: None)
    surface = None if no_dsm else (dsm or s.dsm_path)
    if surface is not None and not surface.exists():
        if dsm is not None or s.surface_model is not None:
            raise fail(f"no surface model at {surface}", 2)
        with progress_bar("writing the demo town's surface model") as bar:
            if not write_demo_dsm(database.url, surface, progress=bar):
                raise fail(f"no surface model at {surface}: set GRIDGOV_SURFACE_MODEL or "
                           "pass --dsm (or --no-dsm for range rings only)", 2)
    try:
        with db.connect(database.url) as conn, counting_bar("coverage", "item") as bar:
            result = compute(conn, surface, generation_id=generation, progress=bar)
            if not dry_run:
                store(conn, result)
                conn.commit()
    except (LayersError, GisError) as exc:
        raise fail(str(exc)) from exc
    grids = result.grids

    def mean(values: list[float | None]) -> str:
        known = [v for v in values if v is not None]
        return f"{100 * sum(known) / len(known):.1f} %" if known else "n/a (no DSM)"

    typer.echo(f"{len(grids)} micro-grids of generation {result.generation_id}, EPSG:"
               f"{result.epsg}, surface model: {result.surface_model or 'none'}")
    typer.echo(f"  within a high point's ring  {mean([g.high_point_ring_fraction for g in grids])}")
    typer.echo("  seen by a high point        "
               + mean([g.high_point_visible_fraction for g in grids]))
    typer.echo(f"  seen by a street camera     {mean([g.camera_fraction for g in grids])}")
    typer.echo(f"  seen by either              {mean([g.covered_fraction for g in grids])}")
    worst = sorted(grids, key=lambda g: (g.covered_fraction, g.code))[:5]
    typer.echo("  least covered: " + ", ".join(
        f"{g.code} {100 * g.covered_fraction:.0f} %" for g in worst))
    typer.echo("dry run: nothing stored" if dry_run else
               f"stored {len(grids)} rows in micro_grid_coverage")


def demo_coverage(s: Settings, database: Database) -> None:
    """On the project's own demo database: the surface model and coverage, once."""
    from api.database import write_demo_dsm
    from layers import db
    from layers.coverage import compute, store

    with db.connect(database.url) as conn:
        if conn.execute("SELECT EXISTS (SELECT 1 FROM micro_grid_coverage)").fetchone()[0]:
            return
    surface = s.dsm_path
    if not surface.exists():
        with progress_bar("writing the demo town's surface model") as bar:
            if not write_demo_dsm(database.url, surface, progress=bar):
                typer.echo("not the demo town: run `gridgov coverage --dsm PATH` for coverage")
                return
    try:
        with db.connect(database.url) as conn, counting_bar("coverage", "item") as bar:
            store(conn, compute(conn, surface, progress=bar))
            conn.commit()
    except LayersError as exc:
        typer.echo(f"coverage not computed: {exc}")


def demo_events(database: Database) -> None:
    """On the project's own demo database: a demo history of events, once."""
    import asyncio

    from layers import db
    from layers.demo_events import replay

    async def run() -> None:
        async with await db.aconnect(database.url) as conn:
            cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM events)")
            if (await cur.fetchone())[0]:  # type: ignore[index]
                return
            with counting_bar("demo events (Jan-Nov 2026)", "report") as bar:
                await replay(conn, progress=bar)

    asyncio.run(run())


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(envvar="HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT")] = 8000,
    workers: Annotated[int, typer.Option(envvar="WORKERS", min=1, help="Server processes "
                                         "(they share nothing but the database).")] = 1,
    no_setup: Annotated[bool, typer.Option("--no-setup", help="Skip cluster start, "
                                           "migration and seeding.")] = False,
) -> None:
    """Serve the API (setting up the database first unless --no-setup)."""
    import os

    import uvicorn

    from api.app import create_app
    from api.database import ensure_database, server_urls
    from api.observability import configure_logging
    from api.settings import InsecureSettings, check_production

    s = settings()
    try:
        check_production(s)
    except InsecureSettings as exc:
        raise fail(str(exc), 2) from exc
    database = ensure_database(s, say=typer.echo) if no_setup else database_up(s)
    if s.env == "production":  # refuse a superuser or the owner before any worker starts
        from api.app import check_roles

        write_url, read_url = server_urls(s, database.server_url, database.reader_url)
        try:
            check_roles(write_url, s.database_replica_urls or [read_url])
        except InsecureSettings as exc:
            raise fail(str(exc), 2) from exc
    if not no_setup and database.cluster is not None:
        demo_coverage(s, database)
        demo_events(database)
        from api.cli_imagery import demo_orthophoto

        try:
            demo_orthophoto(s, database.url)  # the pages' background, once
        except LayersError as exc:
            typer.echo(f"demo orthophoto not registered: {exc}")
    base = s.public_url or f"http://{host}:{port}"
    typer.echo(f"gridgov serving {database.where} with {workers} worker(s)")
    typer.echo(f"  landing page   {base}/")
    typer.echo(f"  API docs       {base}/docs")
    typer.echo(f"  OpenAPI        {base}/openapi.json")
    typer.echo(f"  health         {base}/healthz  {base}/readyz  {base}/metrics")
    typer.echo("Ctrl-C stops the server (the database keeps running: `make stop`).")
    configure_logging(json_lines=s.log_json)
    common = {"host": host, "port": port, "log_config": None, "access_log": False}
    if workers == 1:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # the operator's: empty it first
            with metrics_dir():
                uvicorn.run(create_app(s, database.server_url, read_url=database.reader_url),
                            **common)  # type: ignore[arg-type]
            return
        uvicorn.run(create_app(s, database.server_url, read_url=database.reader_url),
                    **common)  # type: ignore[arg-type]
        return
    os.environ["GRIDGOV_DATABASE_URL"] = database.server_url  # for the worker processes
    if database.reader_url:
        os.environ["GRIDGOV_DATABASE_READ_URL"] = database.reader_url
    with metrics_dir() as where:  # the workers' counters, summed on every /metrics
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(where)
        uvicorn.run("api.cli_ops:server_app", factory=True, workers=workers,
                    **common)  # type: ignore[arg-type]


@contextmanager
def metrics_dir() -> Iterator[Path]:
    """The directory the worker processes share their Prometheus counters in: the
    operator's ``PROMETHEUS_MULTIPROC_DIR`` (emptied of an earlier run's files first, or
    the counts would go on from them), else a temporary one removed at exit."""
    import os
    import shutil
    import tempfile

    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):
            old.unlink()
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="gridgov-metrics-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


token_app = typer.Typer(help="Bearer tokens for writes (OGC API Part 4).",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="Who holds it (a person or a system).")],
    role: Annotated[str, typer.Option(help="officer or admin.")] = "officer",
) -> None:
    """Make a token and print it once (only its SHA-256 is stored)."""
    from api.database import ensure_database
    from layers import db
    from layers.auth import create_token

    database = ensure_database(settings(), say=lambda _m: None)
    try:
        with db.connect(database.url) as conn:
            token = create_token(conn, name, role)
            conn.commit()
    except LayersError as exc:
        raise fail(str(exc)) from exc
    typer.echo(token)


@token_app.command("revoke")
def token_revoke(name: Annotated[str, typer.Argument(help="Holder of the token.")]) -> None:
    """Revoke the active token of NAME."""
    from api.database import ensure_database
    from layers import db
    from layers.auth import revoke_token

    database = ensure_database(settings(), say=lambda _m: None)
    try:
        with db.connect(database.url) as conn:
            revoke_token(conn, name)
            conn.commit()
    except LayersError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"revoked the token of {name}")


@token_app.command("list")
def token_list() -> None:
    """Every token: holder, role, created, revoked."""
    from api.database import ensure_database
    from layers import db
    from layers.auth import list_tokens

    database = ensure_database(settings(), say=lambda _m: None)
    with db.connect(database.url) as conn:
        for name, role, created, revoked in list_tokens(conn):
            state = f"revoked {revoked}" if revoked else "active"
            typer.echo(f"{name}\t{role}\t{created}\t{state}")


def _register_subcommands() -> None:
    from api import cli_changes, cli_events, cli_grid, cli_imagery, cli_links, cli_ops

    app.add_typer(cli_grid.grid_app, name="grid")
    app.add_typer(cli_changes.changes_app, name="changes")
    app.add_typer(cli_events.users_app, name="users")
    app.add_typer(cli_events.events_app, name="events")
    app.add_typer(cli_links.links_app, name="links")
    app.add_typer(cli_imagery.imagery_app, name="imagery")
    cli_ops.register(app)


_register_subcommands()


def main() -> None:
    app()
