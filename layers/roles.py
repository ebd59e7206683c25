"""The database roles: who may do what (issue #9, least privilege).

Three login roles per database, none a superuser, none with CREATEROLE or CREATEDB:

- the **owner** (``gridgov``): owns the database and every table; migrations, seeding
  and the CLI's administration run as it.  The server never connects as it outside
  development.
- the **writer** (``<owner>_writer``): the server's writes and the reads that return
  personal data (reporter contacts, worker phones, photo originals, tokens).  SELECT on
  the tables, INSERT/UPDATE only on the tables the server writes, DELETE only where it
  deletes; no DDL, no TRUNCATE.
- the **reader** (``<owner>_reader``): every other read.  USAGE on schema ``published``
  and SELECT on its views, nothing on any table; its ``search_path`` is
  ``published, public``, so the unqualified ``FROM micro_grids`` of the read code reads
  the view ``published.micro_grids`` (public columns only) while PostGIS's functions
  still resolve in ``public``.  A read path that touches a personal column or an
  unpublished table fails loudly: permission denied.

Migration 0007 creates the views and grants to the two roles when they exist;
:func:`ensure_roles` (the superuser, at provisioning) creates them on the project's own
cluster.  Nothing here reads the environment.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

PUBLISHED_SCHEMA = "published"
# libpq options of the server's read connections: the published views first, whichever
# role connects (the reader role also has it as its own default)
READER_OPTIONS = f"-c search_path={PUBLISHED_SCHEMA},public"


def reader_role(owner: str) -> str:
    return f"{owner}_reader"


def writer_role(owner: str) -> str:
    return f"{owner}_writer"


def ensure_roles(admin: psycopg.Connection[Any], owner: str, password: str) -> None:
    """Create the owner, writer and reader login roles if missing (``admin`` is a
    superuser's autocommit connection) and give the reader its ``search_path``."""
    for role in (owner, writer_role(owner), reader_role(owner)):
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if not exists:
            admin.execute(sql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                "NOBYPASSRLS PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    admin.execute(sql.SQL("ALTER ROLE {} SET search_path = {}, public").format(
        sql.Identifier(reader_role(owner)), sql.Identifier(PUBLISHED_SCHEMA)))


# What a role the server connects as must not be or hold.
_ROLE_FAULTS = """
SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls,
       pg_has_role(current_user, d.datdba, 'USAGE'),
       EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname IN ('public', 'published') AND c.relkind IN ('r', 'v', 'p')
                 AND pg_has_role(current_user, c.relowner, 'USAGE'))
FROM pg_roles r, pg_database d
WHERE r.rolname = current_user AND d.datname = current_database()
"""


def server_role_faults(conn: psycopg.Connection[Any]) -> list[str]:
    """Why the role of ``conn`` must not serve requests: a superuser, a role that may
    create roles or databases or bypass row security, the database's owner (or a
    member of it), or the owner of any table or view.  Empty when it may."""
    row = conn.execute(_ROLE_FAULTS).fetchone()
    if row is None:  # pragma: no cover - current_user always has a pg_roles row
        return ["the connected role is unknown"]
    name, superuser, createrole, createdb, bypassrls, owns_db, owns_tables = row
    faults = []
    if superuser:
        faults.append(f"role {name} is a superuser")
    if createrole or createdb or bypassrls:
        faults.append(f"role {name} may create roles or databases or bypass row security")
    if owns_db:
        faults.append(f"role {name} owns the database (or is a member of its owner)")
    elif owns_tables:
        faults.append(f"role {name} owns tables or views of the schema")
    return faults


def reader_faults(conn: psycopg.Connection[Any], personal_tables: list[str]) -> list[str]:
    """Why the role of ``conn`` must not be the server's reader: it may read a table
    that holds personal data (it should read only the published views)."""
    rows = conn.execute(
        "SELECT t FROM unnest(%s::text[]) t WHERE to_regclass('public.' || quote_ident(t)) "
        "IS NOT NULL AND has_table_privilege('public.' || quote_ident(t), 'SELECT')",
        (personal_tables,)).fetchall()
    return [f"role {conn.info.user} (the read URL) may read {', '.join(r[0] for r in rows)}"
            ] if rows else []
