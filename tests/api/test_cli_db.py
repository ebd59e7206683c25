"""`gridgov db ...`: the project's own cluster, reuse, and an external database."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from api.cli import app
from api.database import ensure_database, local_cluster
from api.settings import Settings
from layers.cluster import free_port
from seed_data.town import Town, digest

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def local_settings() -> Iterator[Settings]:
    s = Settings(data_dir=ROOT / ".data" / f"test-local-{os.getpid()}", pg_port=free_port())
    yield s
    local_cluster(s).destroy()
    shutil.rmtree(s.data_dir, ignore_errors=True)


def test_local_cluster_is_created_once_then_reused(local_settings: Settings) -> None:
    said: list[str] = []
    first = ensure_database(local_settings, say=said.append)
    assert any("created a PostgreSQL cluster" in m for m in said)
    cluster = local_cluster(local_settings)
    assert (local_settings.data_dir / "pg" / "PG_VERSION").exists()
    # listens on 127.0.0.1 only, on the configured port, with a password
    with psycopg.connect(first.url) as conn:
        (addr,) = conn.execute("SHOW listen_addresses").fetchone()
        (port,) = conn.execute("SHOW port").fetchone()
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    assert addr == "127.0.0.1" and int(port) == local_settings.pg_port
    assert oct(cluster.password_file.stat().st_mode)[-3:] == "600"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(first.url.replace(cluster.password, "wrong")).close()

    said.clear()
    again = ensure_database(local_settings, say=said.append)
    assert again.url == first.url
    assert any("reusing" in m for m in said) and not any("created" in m for m in said)

    # stop, start: the same cluster with the same data
    assert cluster.stop()
    said.clear()
    ensure_database(local_settings, say=said.append)
    assert any("started" in m for m in said) and not any("created" in m for m in said)
    with psycopg.connect(first.url) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (42,)


def test_db_up_with_an_external_database_migrates_and_seeds_once(
    empty_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRIDGOV_DATABASE_URL", empty_db_url)
    monkeypatch.setenv("GRIDGOV_DATA_DIR", str(ROOT / ".data" / "must-not-exist"))
    r = runner.invoke(app, ["db", "up"])
    assert r.exit_code == 0, r.output
    assert "seeded:" in r.output
    assert not (ROOT / ".data" / "must-not-exist").exists()  # nothing local was started
    with psycopg.connect(empty_db_url) as conn:
        (n,) = conn.execute("SELECT count(*) FROM micro_grids").fetchone()
    assert n > 300
    r = runner.invoke(app, ["db", "up"])
    assert r.exit_code == 0, r.output
    assert "already holds a territory" in r.output
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM micro_grids").fetchone() == (n,)


def test_seed_digest_from_the_command_line_matches_the_generator(demo_town: Town) -> None:
    r = runner.invoke(app, ["seed", "--digest", "--seed", "2023"])
    assert r.exit_code == 0, r.output
    printed = re.findall(r"\b[0-9a-f]{64}\b", r.output)
    assert printed == [digest(demo_town)]


def test_seed_refuses_a_database_that_already_holds_a_territory(
    fresh_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRIDGOV_DATABASE_URL", fresh_db_url)
    r = runner.invoke(app, ["seed"])
    assert r.exit_code == 1
    assert "already holds a territory" in r.output


def test_bad_database_url_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDGOV_DATABASE_URL", "mysql://x@y/z")
    r = runner.invoke(app, ["db", "up"])
    assert r.exit_code != 0
    assert "postgresql://" in str(r.exception) or "postgresql://" in r.output
