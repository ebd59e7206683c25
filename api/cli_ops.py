"""Operations commands: ``gridgov backup`` / ``gridgov restore``, and the app factory that
``gridgov serve --workers N`` hands to uvicorn (each worker process builds its own app).

Backups are ``pg_dump`` custom-format archives of the server's database (the one
``GRIDGOV_DATABASE_URL`` names, or the local cluster's).  The password never appears on
a command line: it goes to ``pg_dump``/``pg_restore`` through ``PGPASSWORD``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from tqdm import tqdm

if TYPE_CHECKING:
    from fastapi import FastAPI

    from api.settings import Settings

# pg_restore must not recreate what the provisioning made and only its owner may touch:
# the extensions (PostGIS is not trusted; it is installed by the superuser), their
# configuration rows (spatial_ref_sys: the target's PostGIS has its own) and the public
# schema.  Lines of `pg_restore --list`: "id; oid oid TYPE schema name owner".
SKIPPED_ENTRY = re.compile(r"^\d+; \d+ \d+ (EXTENSION|COMMENT - EXTENSION|SCHEMA - public|"
                           r"COMMENT - SCHEMA public|ACL - SCHEMA public|"
                           r"TABLE DATA public spatial_ref_sys) ")
PROGRESS_LINE = {
    "dump": re.compile(r"dumping contents of table \"?([^\"]+)\"?"),
    "restore": re.compile(r"processing data for table \"?([^\"]+)\"?"),
}


def server_app() -> FastAPI:
    """The app of one uvicorn worker (``uvicorn.run(..., factory=True)``): the settings
    and the database URL come from the environment the serving command prepared."""
    from api.app import create_app
    from api.observability import configure_logging
    from api.settings import Settings

    settings = Settings()
    if not settings.database_url:
        raise RuntimeError("GRIDGOV_DATABASE_URL is not set for the worker")
    configure_logging(json_lines=settings.log_json)
    return create_app(settings, settings.database_url)


def _client_env(url: str) -> tuple[str, dict[str, str]]:
    """A conninfo without the password, and the environment that carries it."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from layers import db

    params = conninfo_to_dict(db.libpq_url(url))
    password = params.pop("password", None)
    env = {**os.environ}
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**params), env


def _run_with_bar(argv: list[str], env: dict[str, str], desc: str, total: int,
                  kind: str) -> tuple[int, str]:
    """Run a pg_dump/pg_restore ``--verbose`` command, a tqdm bar advanced per table."""
    pattern = PROGRESS_LINE[kind]
    tail: list[str] = []
    with tqdm(desc=desc, total=total, unit="table", dynamic_ncols=True) as bar:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None  # noqa: S101 - PIPE above
        for line in proc.stderr:
            match = pattern.search(line)
            if match:
                bar.set_postfix_str(match[1][-40:])
                bar.update(1)
            elif "error" in line.lower() or "warning" in line.lower():
                tail.append(line.rstrip())
        code = proc.wait()
    return code, "\n".join(tail[-20:])


def _bindir(settings: Settings) -> Path:
    return settings.pg_bindir


def register(app: typer.Typer) -> None:
    """Add ``backup`` and ``restore`` to the ``gridgov`` command line."""
    from api.cli import fail, settings

    @app.command("backup")
    def backup(
        file: Annotated[Path, typer.Argument(help="Archive to write (pg_dump custom format).")],
        force: Annotated[bool, typer.Option("--force", help="Overwrite FILE.")] = False,
    ) -> None:
        """Dump the server's database to FILE (pg_dump custom format), with progress."""
        from api.database import ensure_database
        from layers import db
        from layers.errors import LayersError

        s = settings()
        if file.exists() and not force:
            raise fail(f"{file} exists; --force to overwrite it", 2)
        try:
            database = ensure_database(s, say=lambda _m: None)
            with db.connect(database.url) as conn:
                tables = conn.execute(
                    "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN "
                    "('pg_catalog', 'information_schema')").fetchone()
        except LayersError as exc:
            raise fail(str(exc)) from exc
        conninfo, env = _client_env(database.url)
        partial = file.with_name(file.name + ".partial")
        argv = [str(_bindir(s) / "pg_dump"), "--format=custom", "--verbose",
                f"--file={partial}", f"--dbname={conninfo}"]
        code, errors = _run_with_bar(argv, env, "backup", int(tables[0]) if tables else 0,
                                     "dump")
        if code != 0:
            partial.unlink(missing_ok=True)
            raise fail(f"pg_dump failed ({code}): {errors}")
        partial.replace(file)  # never a half-written archive under the real name
        typer.echo(f"wrote {file} ({file.stat().st_size:,} bytes) from {database.where}")

    @app.command("restore")
    def restore(
        file: Annotated[Path, typer.Argument(help="Archive written by `gridgov backup`.")],
        force: Annotated[bool, typer.Option(
            "--force", help="Restore into a database that holds tables (they are "
                            "dropped and replaced).")] = False,
    ) -> None:
        """Restore FILE into the server's database, in one transaction, with progress.

        Refuses a database that already holds tables unless --force."""
        from api.database import ensure_database
        from layers import db
        from layers.errors import LayersError

        s = settings()
        if not file.is_file():
            raise fail(f"no archive at {file}", 2)
        listing = subprocess.run([str(_bindir(s) / "pg_restore"), "--list", str(file)],
                                 capture_output=True, text=True)
        if listing.returncode != 0:
            raise fail(f"{file} is not a pg_dump custom-format archive: "
                       f"{listing.stderr.strip()}", 2)
        try:
            database = ensure_database(s, say=lambda _m: None)
            with db.connect(database.url) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = "
                    "c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN "
                    "('pg_catalog', 'information_schema', 'topology', 'tiger') "
                    "AND n.nspname NOT LIKE 'pg\\_%' AND NOT EXISTS (SELECT 1 FROM pg_depend d "
                    "WHERE d.objid = c.oid AND d.deptype = 'e')").fetchone()
        except LayersError as exc:
            raise fail(str(exc)) from exc
        existing = int(row[0]) if row else 0
        if existing and not force:
            raise fail(f"{database.where} is not empty ({existing} tables); restore into an "
                       "empty database, or --force to replace its tables", 3)
        entries = [line for line in listing.stdout.splitlines()
                   if line and not line.startswith(";") and not SKIPPED_ENTRY.match(line)]
        use_list = file.with_name(file.name + ".restore-list")
        use_list.write_text("\n".join(entries) + "\n")
        conninfo, env = _client_env(database.url)
        argv = [str(_bindir(s) / "pg_restore"), "--verbose", "--exit-on-error",
                "--single-transaction", "--no-owner", "--no-privileges",
                f"--use-list={use_list}", f"--dbname={conninfo}"]
        if existing:
            argv += ["--clean", "--if-exists"]
        argv.append(str(file))
        total = sum(1 for line in entries if " TABLE DATA " in line)
        try:
            code, errors = _run_with_bar(argv, env, "restore", total, "restore")
        finally:
            use_list.unlink(missing_ok=True)
        if code != 0:
            raise fail(f"pg_restore failed ({code}); nothing was changed: {errors}")
        with db.connect(database.url, autocommit=True) as conn:
            conn.execute("ANALYZE")
        typer.echo(f"restored {file} into {database.where}")
