"""Least privilege: the published views and the grants to the server's reader and writer.

Schema ``published`` holds one view per table the read paths may see, with the table's
name and only its public columns.  The reader role (``<owner>_reader``, search_path
``published, public``) may SELECT those views and nothing else; the writer role
(``<owner>_writer``) may SELECT the tables and write only those the server writes.
The roles are created beforehand (``layers.roles.ensure_roles`` on the project's own
cluster, the operator's SQL in production, see README); a role that does not exist yet
is not granted anything (run ``gridgov migrate`` again after creating it: the grants
are re-applied by downgrading and upgrading this revision, or by the README's SQL).

A view is a frozen column list: a column added to a table later is unpublished until a
migration republishes the view.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from alembic import op
from psycopg import sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# table -> its published columns (None: every column).  Not published at all: users,
# event_contacts, idempotency_keys, personal_data_reads, outbox, rate_limits.
PUBLISHED: dict[str, tuple[str, ...] | None] = {
    "alembic_version": None,  # /readyz
    "api_tokens": ("id", "role", "created_at", "revoked_at"),  # /metrics counts by role
    "grid_generations": None,
    "streets": None,
    "communities": None,
    "micro_grids": None,
    "micro_grid_parts": None,
    "roads": None,
    "buildings": None,
    "parcels": None,
    "high_points": None,
    "cameras": None,
    "sensors": None,
    "workers": ("id", "employee_no", "name"),  # not phone
    "worker_assignments": None,
    "micro_grid_coverage": None,
    "departments": ("code", "name_zh", "name_en"),  # the office phone: dispatch only
    "event_categories": None,
    "events": None,
    "event_photos": ("id", "event_id", "stage", "media_type", "bytes", "sha256",
                     "public_path", "uploaded_by", "uploaded_at"),  # not private_path
    "event_history": None,
    "sensor_readings": None,
    "micro_grid_scores": None,
    "change_runs": None,
    "change_detections": None,
    "imagery": None,  # path is server-internal (the tile code opens it), not personal
}

# table -> what the writer may do beyond SELECT (the server's request paths and jobs)
WRITES: dict[str, str] = {
    "events": "INSERT, UPDATE",
    "event_history": "INSERT",  # append-only (a trigger refuses the rest anyway)
    "event_contacts": "INSERT",
    "event_photos": "INSERT",
    "personal_data_reads": "INSERT",
    "outbox": "INSERT, UPDATE",
    "idempotency_keys": "INSERT, UPDATE",
    "rate_limits": "INSERT, UPDATE, DELETE",
    "sensor_readings": "INSERT",
    "api_tokens": "INSERT, UPDATE (revoked_at)",  # /api/v1/login, /api/v1/session
    "cameras": "INSERT, UPDATE, DELETE",  # OGC Part 4
    "buildings": "INSERT, UPDATE, DELETE",
    "parcels": "UPDATE",
    "micro_grid_coverage": "INSERT, UPDATE, DELETE",  # the coverage process
    "change_runs": "INSERT, UPDATE",  # the detect-changes process
    "change_detections": "INSERT, UPDATE",
    "imagery": "INSERT, UPDATE",
}

def _grants() -> str:
    """One DO block granting to the roles that exist (named after the owner running it)."""
    writes = "\n".join(
        f"        EXECUTE format('GRANT {what} ON {table} TO %I', writer);"
        for table, what in WRITES.items())
    inserts = ", ".join(f"'{table}'" for table, what in WRITES.items() if "INSERT" in what)
    return f"""
DO $grants$
DECLARE
    reader text := current_user || '_reader';
    writer text := current_user || '_writer';
    seq text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = reader) THEN
        EXECUTE format('GRANT USAGE ON SCHEMA published TO %I', reader);
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA published TO %I', reader);
        EXECUTE format('GRANT SELECT ON spatial_ref_sys TO %I', reader);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = writer) THEN
        EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', writer);
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA public TO %I', writer);
{writes}
        FOR seq IN  -- the id sequences of the tables it inserts into, no others
            SELECT c.oid::regclass::text FROM pg_depend d
            JOIN pg_class c ON c.oid = d.objid AND c.relkind = 'S'
            WHERE d.refobjid = ANY(ARRAY[{inserts}]::regclass[]) AND d.deptype IN ('a', 'i')
        LOOP
            EXECUTE format('GRANT USAGE ON SEQUENCE %s TO %I', seq, writer);
        END LOOP;
    END IF;
END
$grants$;
"""


def upgrade() -> None:
    op.execute("CREATE SCHEMA published")
    conn = op.get_bind().connection.driver_connection  # psycopg's, to quote names
    for table, columns in PUBLISHED.items():
        cols = (sql.SQL("*") if columns is None
                else sql.SQL(", ").join(sql.Identifier(c) for c in columns))
        view = sql.SQL("CREATE VIEW published.{table} AS SELECT {cols} FROM public.{table}")
        op.execute(view.format(table=sql.Identifier(table), cols=cols).as_string(conn))
    op.execute(_grants())


def downgrade() -> None:
    op.execute("""
DO $revoke$
DECLARE
    reader text := current_user || '_reader';
    writer text := current_user || '_writer';
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = writer) THEN
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA public FROM %I', writer);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM %I', writer);
        EXECUTE format('REVOKE ALL ON SCHEMA public FROM %I', writer);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = reader) THEN
        EXECUTE format('REVOKE ALL ON spatial_ref_sys FROM %I', reader);
    END IF;
END
$revoke$;
""")
    op.execute("DROP SCHEMA published CASCADE")
