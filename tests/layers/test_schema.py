"""The migrated schema: models match migrations, indexes, constraints."""

from __future__ import annotations

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, pool

from layers import db
from layers.models import Base


def test_models_match_the_migrated_database(db_url: str) -> None:
    engine = create_engine(db.sqlalchemy_url(db_url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "include_object": lambda o, n, t, r, c: not (t == "table" and n in {
                    "spatial_ref_sys", "alembic_version"}),
            },
        )
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    assert diff == []


def test_database_is_at_head(db_url: str) -> None:
    assert db.current_revision(db_url) == db.head_revision()


def test_every_geometry_column_has_a_gist_index(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        cols = conn.execute(
            "SELECT f_table_name, f_geometry_column, srid FROM geometry_columns "
            "WHERE f_table_schema = 'public'"
        ).fetchall()
        assert len(cols) >= 10
        for table, column, srid in cols:
            assert srid == 4490, (table, srid)
            hit = conn.execute(
                "SELECT 1 FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid "
                "JOIN pg_class ix ON ix.oid = i.indexrelid JOIN pg_am am ON am.oid = ix.relam "
                "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0] "
                "WHERE t.relname = %s AND a.attname = %s AND am.amname = 'gist'",
                (table, column),
            ).fetchone()
            assert hit, f"{table}.{column} has no GiST index"


def test_every_foreign_key_has_an_index(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        fks = conn.execute(
            "SELECT c.conrelid::regclass::text, c.conname, c.conkey FROM pg_constraint c "
            "WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace"
        ).fetchall()
        assert fks
        for table, name, conkey in fks:
            hit = conn.execute(
                "SELECT 1 FROM pg_index i WHERE i.indrelid = %s::regclass "
                "AND (i.indkey::int2[])[0:%s] = %s::int2[]",
                (table, len(conkey) - 1, conkey),
            ).fetchone()
            assert hit, f"foreign key {name} on {table} has no index leading with its columns"


@pytest.mark.parametrize(
    "stmt",
    [
        # a community whose code does not start with its street's code
        "INSERT INTO communities (generation_id, street_code, code, name, population, "
        "households, geom) SELECT 1, code, '370303999001', 'x', 0, 0, geom FROM streets LIMIT 1",
        # a micro-grid naming a community that does not exist
        "INSERT INTO micro_grids (generation_id, community_code, code, name, kind, population,"
        " households, geom) SELECT 1, '370303106999', '370303106999001', 'x', 'urban', 0, 0, "
        "geom FROM streets LIMIT 1",
        # a second open generation
        "INSERT INTO grid_generations (name, valid_from) VALUES ('again', '2024-01-01')",
        # a building stored in another SRID
        "INSERT INTO buildings (code, use, height_m, floors, geom) VALUES ('x', 'public', 3, 1,"
        " ST_Multi(ST_Buffer(ST_SetSRID(ST_Point(590000, 4074000), 4548), 5)))",
        # a camera heading of 360
        "UPDATE cameras SET heading_deg = 360 WHERE id = (SELECT min(id) FROM cameras)",
        # a permit status without a permit number
        "UPDATE parcels SET permit_status = 'approved', permit_no = NULL "
        "WHERE id = (SELECT min(id) FROM parcels)",
    ],
)
def test_the_database_refuses_inconsistent_rows(fresh_db_url: str, stmt: str) -> None:
    with psycopg.connect(fresh_db_url) as conn:
        with pytest.raises((psycopg.errors.IntegrityError, psycopg.errors.DataException,
                                 psycopg.errors.InvalidParameterValue)):
            conn.execute(stmt)


def test_migration_runs_on_an_empty_database_and_is_idempotent(empty_db_url: str) -> None:
    db.migrate(empty_db_url)
    db.migrate(empty_db_url)
    assert db.current_revision(empty_db_url) == db.head_revision()
    with psycopg.connect(empty_db_url) as conn:
        assert not db.is_seeded(conn)
