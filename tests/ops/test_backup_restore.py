"""``gridgov backup`` / ``gridgov restore``: a round trip through pg_dump's custom format."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
from psycopg import sql

from layers import db

ROOT = Path(__file__).resolve().parents[2]


def gridgov(*args: str, url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GRIDGOV_DATABASE_URL": url, "GRIDGOV_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "api", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def fingerprint(url: str) -> dict[str, object]:
    """Row count of every table, and an md5 over every geometry column in key order."""
    out: dict[str, object] = {}
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'spatial_ref_sys' ORDER BY 1")]
        for table in tables:
            q = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            out[table] = conn.execute(q).fetchone()[0]
        columns = conn.execute(
            "SELECT f_table_name, f_geometry_column FROM geometry_columns "
            "WHERE f_table_schema = 'public' ORDER BY 1, 2").fetchall()
        for table, column in columns:
            q = sql.SQL("SELECT md5(string_agg(encode(ST_AsEWKB({c}), 'hex'), ',' "
                        "ORDER BY encode(ST_AsEWKB({c}), 'hex'))) FROM {t}").format(
                c=sql.Identifier(column), t=sql.Identifier(table))
            out[f"{table}.{column}"] = conn.execute(q).fetchone()[0]
    return out


def test_round_trip_keeps_rows_and_geometries(
    fresh_db_url: str, empty_db_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(fresh_db_url) as conn:  # a change the template does not have
        conn.execute("DELETE FROM buildings WHERE id IN "
                     "(SELECT id FROM buildings ORDER BY id LIMIT 7)")
        conn.execute("UPDATE cameras SET geom = ST_Translate(geom, 0.0001, 0) "
                     "WHERE id = (SELECT min(id) FROM cameras)")
    before = fingerprint(fresh_db_url)
    assert before["micro_grids"] and before["buildings.geom"]
    archive = tmp_path / "town.dump"

    dumped = gridgov("backup", str(archive), url=fresh_db_url, data_dir=tmp_path)
    assert dumped.returncode == 0, dumped.stderr
    assert archive.read_bytes()[:5] == b"PGDMP"  # custom format
    assert "backup" in dumped.stderr and "table" in dumped.stderr  # the tqdm bar
    assert "PGPASSWORD" not in dumped.stderr
    assert not archive.with_name("town.dump.partial").exists()

    restored = gridgov("restore", str(archive), url=empty_db_url, data_dir=tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert "restore" in restored.stderr  # the tqdm bar
    after = fingerprint(empty_db_url)
    assert after == before
    assert db.current_revision(empty_db_url) == db.head_revision()


def test_restore_refuses_a_database_with_tables(
    db_url: str, empty_db_url: str, tmp_path: Path
) -> None:
    archive = tmp_path / "shared.dump"
    assert gridgov("backup", str(archive), url=db_url, data_dir=tmp_path).returncode == 0
    # a database provisioned like the server's (owned by the role), then restored once
    assert gridgov("restore", str(archive), url=empty_db_url, data_dir=tmp_path).returncode == 0
    with psycopg.connect(empty_db_url) as conn:
        conn.execute("DELETE FROM cameras")
    refused = gridgov("restore", str(archive), url=empty_db_url, data_dir=tmp_path)
    assert refused.returncode == 3
    assert "not empty" in refused.stderr and "--force" in refused.stderr
    assert fingerprint(empty_db_url)["cameras"] == 0  # untouched

    forced = gridgov("restore", "--force", str(archive), url=empty_db_url, data_dir=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert fingerprint(empty_db_url) == fingerprint(db_url)


def test_backup_refuses_to_overwrite_and_restore_refuses_other_files(
    db_url: str, empty_db_url: str, tmp_path: Path
) -> None:
    archive = tmp_path / "exists.dump"
    archive.write_text("precious")
    refused = gridgov("backup", str(archive), url=db_url, data_dir=tmp_path)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert archive.read_text() == "precious"
    bad = gridgov("restore", str(archive), url=empty_db_url, data_dir=tmp_path)
    assert bad.returncode == 2 and "not a pg_dump" in bad.stderr
    missing = gridgov("restore", str(tmp_path / "nope.dump"), url=empty_db_url,
                      data_dir=tmp_path)
    assert missing.returncode == 2 and "no archive" in missing.stderr
