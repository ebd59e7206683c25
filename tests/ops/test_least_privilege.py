"""Least privilege (#9): the server reads through a role that may SELECT only the published
views, writes through a role limited to the tables it writes, never connects as a
superuser or the owner in production, and no published view exposes personal data."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from conftest import EventTown
from psycopg import errors, sql

from api import links
from api.app import check_roles, create_app
from api.settings import InsecureSettings, Settings
from layers import db
from layers.cluster import LocalCluster
from layers.models import Base, personal_columns

ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = "k" * 40
READER, WRITER, OWNER = "gridgov_reader", "gridgov_writer", "gridgov"
# tables no view publishes at all
UNPUBLISHED = {"users", "event_contacts", "idempotency_keys", "personal_data_reads",
               "outbox", "rate_limits"}


def as_role(url: str, role: str) -> psycopg.Connection[Any]:
    return psycopg.connect(db.libpq_url(db.with_user(url, role)), autocommit=True)


def refused(conn: psycopg.Connection[Any], statement: str | sql.Composable) -> bool:
    """True when ``statement`` is refused for want of a privilege (or ownership)."""
    try:
        conn.execute(statement)
    except errors.InsufficientPrivilege:
        return True
    return False


def base_tables(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
        "AND tablename <> 'spatial_ref_sys' ORDER BY 1").fetchall()]


def published_columns(conn: psycopg.Connection[Any]) -> dict[str, set[str]]:
    views: dict[str, set[str]] = {}
    for view, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'published'").fetchall():
        views.setdefault(view, set()).add(column)
    return views


def test_views_publish_no_personal_column(db_url: str) -> None:
    marks = personal_columns()
    # the marks are on the models: a new personal column is caught once it is marked
    assert {"phone"} <= marks["workers"] and {"name", "phone", "email"} <= marks[
        "event_contacts"] and "private_path" in marks["event_photos"]
    with psycopg.connect(db_url) as conn:
        views = published_columns(conn)
        tables = set(base_tables(conn))
        kinds = dict(conn.execute("SELECT c.relname, c.relkind FROM pg_class c JOIN "
                                  "pg_namespace n ON n.oid = c.relnamespace "
                                  "WHERE n.nspname = 'published'").fetchall())
    assert views and set(kinds.values()) == {"v"}  # views only, nothing stored there
    assert set(views) <= tables  # each view is named after the table it publishes
    for view, columns in views.items():
        assert not columns & marks.get(view, set()), f"published.{view} shows personal data"
    assert not UNPUBLISHED & set(views)
    # every table with personal data is either unpublished or published without it, and
    # every model table is known to the database (the marks cover the real schema)
    assert {t.name for t in Base.metadata.sorted_tables} <= tables
    assert views["workers"] == {"id", "employee_no", "name"}


def test_the_reader_selects_only_the_published_views(db_url: str) -> None:
    with psycopg.connect(db_url) as owner:
        tables = base_tables(owner)
        views = set(published_columns(owner))
    with as_role(db_url, READER) as conn:
        assert conn.execute("SHOW search_path").fetchone()[0] == "published, public"
        # unqualified names are the views: the read code runs unchanged
        assert conn.execute("SELECT count(*) FROM micro_grids").fetchone()[0] > 0
        assert conn.execute("SELECT ST_SRID(geom) FROM buildings LIMIT 1").fetchone()[0] == 4490
        for table in tables:  # no base table, personal data or not
            assert refused(conn, sql.SQL("SELECT 1 FROM public.{} LIMIT 1").format(
                sql.Identifier(table))), f"the reader reads public.{table}"
        for table in UNPUBLISHED:  # and unqualified, they resolve to the refused table
            assert refused(conn, sql.SQL("SELECT 1 FROM {} LIMIT 1").format(
                sql.Identifier(table)))
        # a plain view is inlined: a bbox read through it still uses the table's GiST index
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT id FROM buildings WHERE geom && "
            "ST_MakeEnvelope(118.05, 36.80, 118.06, 36.81, 4490)").fetchall())
        assert "ix_buildings_geom" in plan and "Seq Scan" not in plan, plan
        conn.execute("RESET enable_seqscan")
        with pytest.raises(errors.UndefinedColumn):  # the view has no phone column
            conn.execute("SELECT phone FROM workers")
        for view in views:  # it writes nothing, not even through the views
            assert refused(conn, sql.SQL("DELETE FROM published.{}").format(
                sql.Identifier(view)))
        assert refused(conn, "UPDATE micro_grids SET name = 'x'")
        assert refused(conn, "CREATE TABLE published.mine (x int)")
        assert refused(conn, "CREATE TABLE public.mine (x int)")
        role = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                            "WHERE rolname = current_user").fetchone()
        assert role == (False, False, False)


def test_the_writer_writes_only_what_the_server_writes(fresh_db_url: str) -> None:
    with as_role(fresh_db_url, WRITER) as conn:
        role = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
                            "FROM pg_roles WHERE rolname = current_user").fetchone()
        assert role == (False, False, False, False)
        assert conn.execute("SELECT count(*) FROM event_categories").fetchone()[0] > 0
        assert refused(conn, "CREATE TABLE mine (x int)")
        assert refused(conn, "CREATE SCHEMA mine")
        assert refused(conn, "DROP TABLE events")
        assert refused(conn, "ALTER TABLE events ADD COLUMN x int")
        assert refused(conn, "TRUNCATE events")
        assert refused(conn, "TRUNCATE event_history")
        assert refused(conn, "DELETE FROM event_history")
        assert refused(conn, "DELETE FROM events")
        assert refused(conn, "DELETE FROM micro_grids")
        assert refused(conn, "UPDATE grid_generations SET name = name")
        assert refused(conn, "INSERT INTO workers (employee_no, name, phone) "
                             "VALUES ('X', 'x', '1')")
        assert refused(conn, "UPDATE alembic_version SET version_num = 'x'")
        assert refused(conn, "SELECT nextval('grid_generations_id_seq')")
        conn.execute("GRANT SELECT ON event_contacts TO PUBLIC")  # a warning, no grant
        assert not conn.execute(
            "SELECT has_table_privilege('public', 'event_contacts', 'SELECT')").fetchone()[0]
        # what the server does write, it may (rolled back: nothing is left)
        with conn.transaction(force_rollback=True):
            conn.execute("INSERT INTO rate_limits (key, window_start, count) "
                         "VALUES ('test', now(), 1)")
            conn.execute("UPDATE parcels SET permit_no = permit_no")
            conn.execute("DELETE FROM cameras WHERE code = 'none'")


def test_the_app_reads_as_the_reader_and_writes_as_the_writer(
        event_town: EventTown, cluster: LocalCluster) -> None:
    t, c = event_town, event_town.client
    lon, lat = t.point
    r = t.post(None, "/api/v1/events", json={"category": "06010", "lon": lon, "lat": lat,
                                            "description": "路边垃圾堆",
                                            "contact": {"phone": "13900000000"}})
    assert r.status_code == 201, r.text  # a write: the writer
    eid = r.json()["id"]
    zoom = 16
    tx = int((lon + 180) / 360 * 2**zoom)
    ty = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2**zoom)
    bbox = f"{lon - 1e-3},{lat - 1e-3},{lon + 1e-3},{lat + 1e-3}"
    secret = c.app.state.secret_key  # type: ignore[attr-defined]
    reads = [
        "/?f=json", "/readyz", "/metrics",
        f"/locate?lon={lon}&lat={lat}", f"/nearby?lon={lon}&lat={lat}&radius=200&layers=roads",
        f"/ogc/collections/buildings/items?bbox={bbox}&limit=5",
        "/ogc/collections/micro_grids/items?f=html&limit=2",  # pygeoapi's provider
        "/ogc/collections/buildings/queryables",
        f"/ogc/collections/micro_grids/tiles/WebMercatorQuad/{zoom}/{ty}/{tx}",
        "/api/v1/categories", "/api/v1/events", f"/api/v1/events/{eid}",
        f"/api/v1/events/{eid}/history", "/api/v1/metrics?level=street",
        "/open311/v2/services.json", f"/open311/v2/requests/{eid}.json",
        "/open311/v2/requests.json", f"/m/g/{t.grid}", "/screen", "/screen/data.json",
        links.url("", secret, "e", eid, 1),
    ]
    for path in reads:
        got = c.get(path)
        assert got.status_code == 200, (path, got.status_code, got.text[:300])
    tile = c.get(f"/ogc/collections/micro_grids/tiles/WebMercatorQuad/{zoom}/{ty}/{tx}")
    assert len(tile.content) > 0
    # personal data, for those who may see it: through the writer, logged
    contact = t.get("dispatcher", f"/api/v1/events/{eid}/contact")
    assert contact.status_code == 200 and contact.json()["reporter"]["phone"] == "13900000000"
    officer = t.get("officer", f"/locate?lon={lon}&lat={lat}")
    assert officer.status_code == 200 and officer.json()["worker"].get("phone")
    assert "phone" not in c.get(f"/locate?lon={lon}&lat={lat}").json()["worker"]

    name = db.libpq_url(t.url).rsplit("/", 1)[1]
    with psycopg.connect(db.libpq_url(cluster.url("postgres"))) as admin:
        users = {r[0] for r in admin.execute(
            "SELECT usename FROM pg_stat_activity WHERE datname = %s "
            "AND application_name LIKE 'gridgov%%'", (name,)).fetchall()}
    assert users == {READER, WRITER}  # never the owner


def test_what_is_published_names_no_resident(event_town: EventTown) -> None:
    """A resident's account name stays out of the published history (as ``resident``), and
    who uploaded a photo (an account, or an anonymous reporter's address) out of every
    published view; staff still act by name, and the record itself keeps everyone."""
    t = event_town
    lon, lat = t.point
    r = t.post("resident", "/api/v1/events", json={"category": "06010", "lon": lon,
                                                   "lat": lat, "description": "楼道堆物"})
    assert r.status_code == 201, r.text
    eid = r.json()["id"]
    hist = t.get(None, f"/api/v1/events/{eid}/history").json()
    report = hist[0]
    assert report["action"] == "report" and report["actor_role"] == "resident"
    assert report["actor"] == "resident"
    staff = [h for h in hist if h["actor_role"] != "resident"]
    assert staff and all(h["actor"] not in ("resident", "") for h in staff)
    with psycopg.connect(t.url) as owner:
        (kept,) = owner.execute("SELECT actor FROM public.event_history WHERE event_id = %s "
                                "AND seq = 1", (eid,)).fetchone()
        assert kept not in ("resident", "anonymous")  # the account's own name, for an audit
    with as_role(t.url, READER) as conn:
        columns = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "'published' AND table_name = 'event_photos'").fetchall()}
        assert "uploaded_by" not in columns and {"id", "event_id", "public_path"} <= columns
        assert refused(conn, "SELECT uploaded_by FROM public.event_photos")
        assert conn.execute("SELECT count(*) FROM event_history WHERE actor_role = "
                            "'resident' AND actor <> 'resident'").fetchone()[0] == 0
        # the reader still reads the photos' list the pages show
        assert conn.execute("SELECT count(*) FROM event_photos").fetchone()[0] >= 0


def test_the_unnamed_views_migrate_down_and_up(fresh_db_url: str) -> None:
    from alembic import command

    def photo_columns() -> set[str]:
        with as_role(fresh_db_url, READER) as conn:
            assert conn.execute("SELECT count(*) FROM event_photos").fetchone() is not None
            return {r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "'published' AND table_name = 'event_photos'").fetchall()}

    cfg = db.alembic_config(fresh_db_url)
    assert "uploaded_by" not in photo_columns()
    command.downgrade(cfg, "0008")
    assert "uploaded_by" in photo_columns()  # as it was, and still granted to the reader
    command.upgrade(cfg, "head")
    assert "uploaded_by" not in photo_columns()


def test_production_refuses_a_superuser_or_the_owner(db_url: str, tmp_path: Path) -> None:
    reader, writer = db.with_user(db_url, READER), db.with_user(db_url, WRITER)

    def app(url: str, read_url: str) -> Any:
        settings = Settings(env="production", data_dir=tmp_path, secret_key=GOOD_KEY,
                            database_url=url, database_read_url=read_url)
        return create_app(settings, url)

    with pytest.raises(InsecureSettings, match="superuser"):
        app(db.with_user(db_url, "postgres"), reader)
    # (the test databases are clones the superuser made: gridgov owns their tables)
    with pytest.raises(InsecureSettings, match="role gridgov owns"):
        app(db_url, reader)
    with pytest.raises(InsecureSettings, match="role gridgov owns"):
        app(writer, db_url)  # reading as the owner
    with pytest.raises(InsecureSettings, match="may read .*event_contacts"):
        app(writer, writer)  # the writer may read personal data: not a reader
    with pytest.raises(InsecureSettings, match="GRIDGOV_DATABASE_READ_URL"):
        create_app(Settings(env="production", data_dir=tmp_path, secret_key=GOOD_KEY,
                            database_url=writer), writer)
    assert app(writer, reader) is not None  # the two roles: it starts


def test_the_database_owner_is_refused(empty_db_url: str) -> None:
    with pytest.raises(InsecureSettings, match="role gridgov owns the database"):
        check_roles(empty_db_url, [])
    check_roles(db.with_user(empty_db_url, WRITER), [db.with_user(empty_db_url, READER)])


def test_grants_can_be_given_again(fresh_db_url: str) -> None:
    """Roles created after migration 0007 ran get its grants from `gridgov db grant`."""
    with psycopg.connect(fresh_db_url, autocommit=True) as owner:
        owner.execute("REVOKE ALL ON ALL TABLES IN SCHEMA published FROM gridgov_reader")
        owner.execute("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM gridgov_writer")
        with as_role(fresh_db_url, READER) as conn:
            assert refused(conn, "SELECT 1 FROM micro_grids LIMIT 1")
        assert db.grant_roles(owner) == [READER, WRITER]
    with as_role(fresh_db_url, READER) as conn:
        assert conn.execute("SELECT count(*) FROM micro_grids").fetchone()[0] > 0
        assert refused(conn, "SELECT 1 FROM public.workers LIMIT 1")
    with as_role(fresh_db_url, WRITER) as conn:
        assert conn.execute("SELECT count(*) FROM event_categories").fetchone()[0] > 0
        assert refused(conn, "DELETE FROM event_history")


def test_serve_refuses_the_owner_in_production(db_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "GRIDGOV_ENV": "production", "GRIDGOV_DATA_DIR": str(tmp_path),
           "GRIDGOV_SECRET_KEY": GOOD_KEY, "GRIDGOV_DATABASE_URL": db_url,
           "GRIDGOV_DATABASE_READ_URL": db.with_user(db_url, READER)}
    proc = subprocess.run([sys.executable, "-m", "api", "serve", "--no-setup", "--port", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "refusing to start" in proc.stderr and "role gridgov owns" in proc.stderr
    password = urlsplit(db_url).password
    assert password and password not in proc.stderr + proc.stdout
