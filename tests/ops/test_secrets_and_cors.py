"""Secrets from the environment, refused defaults in production, CORS only when configured."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import InsecureSettings, Settings, check_production, secret_key

ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = "k" * 20 + "Q7f2xZp9Lm4RtY8wBv3N"
GOOD_URL = "postgresql://gridgov_writer:Zq8-long-Rand0m-pw@db:5432/gridgov"
GOOD_READ_URL = "postgresql://gridgov_reader:Wq3-long-Rand0m-pw@db:5432/gridgov"


def production(**kw: object) -> Settings:
    base: dict[str, object] = {"env": "production", "secret_key": GOOD_KEY,
                               "database_url": GOOD_URL, "database_read_url": GOOD_READ_URL}
    return Settings(**{**base, **kw})  # type: ignore[arg-type]


def test_production_with_real_secrets_passes() -> None:
    check_production(production())


@pytest.mark.parametrize(("change", "named"), [
    ({"secret_key": None}, "GRIDGOV_SECRET_KEY"),
    ({"secret_key": "changeme"}, "GRIDGOV_SECRET_KEY"),
    ({"secret_key": "short-but-random-7f"}, "GRIDGOV_SECRET_KEY"),
    ({"database_url": None}, "GRIDGOV_DATABASE_URL"),
    ({"database_url": "postgresql://gridgov:gridgov@db:5432/gridgov"}, "password"),
    ({"database_url": "postgresql://gridgov@db:5432/gridgov"}, "password"),
    ({"database_replica_urls": "postgresql://r:postgres@replica/gridgov"}, "password"),
    ({"database_read_url": "postgresql://gridgov_reader:gridgov@db/gridgov"}, "password"),
    ({"database_read_url": None}, "GRIDGOV_DATABASE_READ_URL"),
    ({"debug_headers": True}, "GRIDGOV_DEBUG_HEADERS"),
    ({"cors_origins": "*"}, "GRIDGOV_CORS_ORIGINS"),
])
def test_production_refuses_defaults(change: dict[str, object], named: str) -> None:
    with pytest.raises(InsecureSettings, match=named):
        check_production(production(**change))


def test_development_may_use_defaults(tmp_path: Path) -> None:
    check_production(Settings(env="development", data_dir=tmp_path))


def test_generated_development_key_is_kept_private_and_stable(tmp_path: Path) -> None:
    s = Settings(env="development", data_dir=tmp_path / "data")
    key = secret_key(s)
    path = tmp_path / "data" / "secret_key"
    assert len(key) >= 32 and path.read_text().strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_key(s) == key  # read back, not made again
    assert secret_key(Settings(env="development", data_dir=tmp_path / "data",
                               secret_key=GOOD_KEY)) == GOOD_KEY  # the environment wins
    with pytest.raises(InsecureSettings):
        secret_key(Settings(env="production", data_dir=tmp_path / "other"))


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDGOV_SECRET_KEY", GOOD_KEY)
    monkeypatch.setenv("GRIDGOV_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("GRIDGOV_DATABASE_REPLICA_URLS", "postgresql://u:p@r1/db,"
                       "postgresql://u:p@r2/db")
    monkeypatch.setenv("GRIDGOV_STATEMENT_TIMEOUT_MS", "2500")
    s = Settings()
    assert s.secret_key is not None and s.secret_key.get_secret_value() == GOOD_KEY
    assert GOOD_KEY not in repr(s)  # never printed
    assert s.cors_origins == ["https://a.example", "https://b.example"]
    assert s.database_replica_urls == ["postgresql://u:p@r1/db", "postgresql://u:p@r2/db"]
    assert s.statement_timeout_ms == 2500
    monkeypatch.setenv("GRIDGOV_CORS_ORIGINS", "javascript:alert(1)")
    with pytest.raises(ValueError, match="origin"):
        Settings()


def test_create_app_refuses_production_defaults(db_url: str, tmp_path: Path) -> None:
    with pytest.raises(InsecureSettings):
        create_app(Settings(env="production", data_dir=tmp_path, database_url=db_url), db_url)


def test_serve_refuses_to_start_in_production_with_defaults(tmp_path: Path) -> None:
    env = {**os.environ, "GRIDGOV_ENV": "production", "GRIDGOV_DATA_DIR": str(tmp_path),
           "GRIDGOV_DATABASE_URL": "postgresql://gridgov:gridgov@127.0.0.1:1/gridgov"}
    env.pop("GRIDGOV_SECRET_KEY", None)
    proc = subprocess.run([sys.executable, "-m", "api", "serve", "--port", "1"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "refusing to start" in proc.stderr and "GRIDGOV_SECRET_KEY" in proc.stderr
    assert "gridgov:gridgov" not in proc.stderr + proc.stdout  # the URL's password unsaid


def test_cors_is_off_by_default(db_url: str, tmp_path: Path) -> None:
    with TestClient(create_app(Settings(env="test", data_dir=tmp_path), db_url)) as c:
        r = c.get("/healthz", headers={"Origin": "https://a.example"})
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers
        pre = c.options("/locate", headers={"Origin": "https://a.example",
                                            "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in pre.headers


def test_cors_allows_only_the_configured_origins(db_url: str, tmp_path: Path) -> None:
    s = Settings(env="test", data_dir=tmp_path, cors_origins="https://a.example")
    with TestClient(create_app(s, db_url)) as c:
        r = c.get("/healthz", headers={"Origin": "https://a.example"})
        assert r.headers["access-control-allow-origin"] == "https://a.example"
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
        pre = c.options("/locate", headers={"Origin": "https://a.example",
                                            "Access-Control-Request-Method": "GET"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://a.example"
        other = c.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        denied = c.options("/locate", headers={"Origin": "https://evil.example",
                                               "Access-Control-Request-Method": "GET"})
        assert denied.status_code == 400
