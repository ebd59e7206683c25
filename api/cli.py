"""The ``gridgov`` command line."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from api.database import Database, ensure_database, local_cluster, seed_if_empty, seed_town
from api.settings import Settings
from layers import db
from layers.errors import LayersError

app = typer.Typer(help="gridgov: grid governance on PostGIS.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="The database: local cluster, migrations, demo data.",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")


def settings() -> Settings:
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


@db_app.command("url")
def db_url() -> None:
    """Print the database URL the server uses (starts the local cluster if needed)."""
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
    s = settings()
    database = ensure_database(s, say=typer.echo)
    db.migrate(database.url)
    with db.connect(database.url) as conn:
        if db.is_seeded(conn):
            raise fail("the database already holds a territory; `make reset-db` to start over")
    with progress_bar("seeding") as bar:
        counts = seed_town(database.url, seed, scale=scale, progress=bar)
    typer.echo("seeded: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(envvar="HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT")] = 8000,
    no_setup: Annotated[bool, typer.Option("--no-setup", help="Skip cluster start, "
                                           "migration and seeding.")] = False,
) -> None:
    """Serve the API (setting up the database first unless --no-setup)."""
    import uvicorn

    from api.app import create_app

    s = settings()
    database = ensure_database(s, say=typer.echo) if no_setup else database_up(s)
    base = s.public_url or f"http://{host}:{port}"
    typer.echo(f"gridgov serving {database.where}")
    typer.echo(f"  landing page   {base}/")
    typer.echo(f"  API docs       {base}/docs")
    typer.echo(f"  OpenAPI        {base}/openapi.json")
    typer.echo(f"  health         {base}/healthz  {base}/readyz")
    typer.echo("Ctrl-C stops the server (the database keeps running: `make stop`).")
    uvicorn.run(create_app(s, database.url), host=host, port=port, log_level="info")


def _register_subcommands() -> None:
    from api import cli_grid

    app.add_typer(cli_grid.grid_app, name="grid")


_register_subcommands()


def main() -> None:
    app()
