"""Deployment files, checked by parsing: no Docker engine and no network in CI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV_REF = re.compile(r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:[:?-][^}]*)?\}$")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = (line.strip() for line in text.splitlines())
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.split(None, 1) for line in lines if line and not line.startswith("#"))
    ]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def host_ips(service: dict[str, Any]) -> list[str]:
    """Host address of each published port; '' means all interfaces."""
    ips = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            ips.append(str(port.get("host_ip", "")))
        else:
            parts = str(port).split(":")
            ips.append(parts[0] if len(parts) == 3 else "")
    return ips


def test_services_exist(services: dict[str, Any]) -> None:
    assert {"db", "server"} <= services.keys()


def test_db_is_postgis_on_postgresql_15(services: dict[str, Any]) -> None:
    image, _, tag = services["db"]["image"].partition(":")
    assert image == "postgis/postgis"
    assert tag.split("-")[0].split(".")[0] == "15", tag


def test_server_builds_from_repo_dockerfile(services: dict[str, Any]) -> None:
    build = services["server"]["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = (ROOT / build.get("context", ".")).resolve()
    assert context == ROOT
    assert (context / build.get("dockerfile", "Dockerfile")).resolve() == ROOT / "Dockerfile"
    assert (ROOT / "Dockerfile").is_file()


def test_server_waits_for_healthy_db(services: dict[str, Any]) -> None:
    depends_on = services["server"]["depends_on"]
    assert isinstance(depends_on, dict), "need the long form to state a condition"
    assert depends_on["db"]["condition"] == "service_healthy"
    assert services["db"]["healthcheck"]["test"]


def test_database_url_uses_db_host_and_env_password(services: dict[str, Any]) -> None:
    db_env = environment(services["db"])
    admin = ENV_REF.match(db_env["POSTGRES_PASSWORD"])
    assert admin, "passwords must come from the environment, not literals"
    urls = {(service, key): environment(services[service])[key] for service, key in (
        ("server", "GRIDGOV_DATABASE_URL"), ("server", "GRIDGOV_DATABASE_READ_URL"),
        ("migrate", "GRIDGOV_DATABASE_URL"))}
    users = {}
    for where, value in urls.items():
        url = urlsplit(value)
        assert url.scheme.startswith("postgresql") and url.hostname == "db", where
        assert url.password is not None
        ref = ENV_REF.match(url.password)
        assert ref, "passwords must come from the environment, not literals"
        # the role's password is the one the database's init script gave it, not the
        # superuser's
        assert ref["name"] != admin["name"] and ref["name"] in db_env, where
        users[where] = url.username
    # the server is neither the superuser nor the owner (who migrates)
    assert users[("server", "GRIDGOV_DATABASE_URL")] == "gridgov_writer"
    assert users[("server", "GRIDGOV_DATABASE_READ_URL")] == "gridgov_reader"
    assert users[("migrate", "GRIDGOV_DATABASE_URL")] == "gridgov" != db_env["POSTGRES_USER"]
    assert services["server"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully")


def test_db_init_script_creates_the_roles(services: dict[str, Any]) -> None:
    mounts = [str(v) for v in services["db"]["volumes"]]
    script = next(m.split(":")[0] for m in mounts if "/docker-entrypoint-initdb.d/" in m)
    text = (ROOT / script).read_text()
    for role, var in (("gridgov", "owner_pw"), ("gridgov_writer", "writer_pw"),
                      ("gridgov_reader", "reader_pw")):
        assert f"CREATE ROLE {role} LOGIN PASSWORD :'{var}';" in text
    assert "ALTER ROLE gridgov_reader SET search_path = published, public;" in text
    assert 'ALTER DATABASE :"db" OWNER TO gridgov;' in text
    assert "SUPERUSER" not in text.replace("NOSUPERUSER", "")


def test_db_port_not_public(services: dict[str, Any]) -> None:
    assert all(ip == "127.0.0.1" for ip in host_ips(services["db"]))


def test_server_port_bound_to_localhost(services: dict[str, Any]) -> None:
    ips = host_ips(services["server"])
    assert ips and all(ip == "127.0.0.1" for ip in ips)


def test_db_data_volume_declared(services: dict[str, Any]) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = [str(v) for v in services["db"].get("volumes") or []]
    named = [m.split(":")[0] for m in mounts if m.endswith(":/var/lib/postgresql/data")]
    assert named, "the PostgreSQL data directory must be on a volume"
    assert named[0] in (compose.get("volumes") or {})


def test_dockerfile_installs_lock_and_runs_unprivileged(
    dockerfile: list[tuple[str, str]],
) -> None:
    runs = [args for op, args in dockerfile if op == "RUN"]
    assert any(re.search(r"pip install .*-r requirements\.lock", run) for run in runs)
    users = [args for op, args in dockerfile if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_entrypoint_and_cmd(dockerfile: list[tuple[str, str]]) -> None:
    copies = [args.split() for op, args in dockerfile if op == "COPY"]
    target = next(c[-1] for c in copies if "docker/entrypoint.sh" in c)
    entrypoint = [json.loads(args) for op, args in dockerfile if op == "ENTRYPOINT"]
    assert entrypoint and entrypoint[-1] == [target]
    cmd = [json.loads(args) for op, args in dockerfile if op == "CMD"]
    assert cmd and cmd[-1][:2] == ["gridgov", "serve"]


def test_entrypoint_migrates_then_execs() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "docker" / "entrypoint.sh").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert "set -eu" in lines
    assert "gridgov db up" in lines
    assert lines[-1] == 'exec "$@"'
    assert lines.index("gridgov db up") < lines.index('exec "$@"')


def test_server_data_dir_is_a_writable_volume(
    services: dict[str, Any], dockerfile: list[tuple[str, str]]
) -> None:
    """OGC process jobs and the surface model live in GRIDGOV_DATA_DIR: it must persist."""
    mounts = [v.split(":") for v in services["server"]["volumes"]]
    envs = " ".join(arg for op, arg in dockerfile if op == "ENV")
    assert "GRIDGOV_DATA_DIR=/var/lib/gridgov" in envs
    assert ["gridgov-data", "/var/lib/gridgov"] in [m[:2] for m in mounts]
    runs = " ".join(arg for op, arg in dockerfile if op == "RUN")
    assert "install -d -o gridgov -g gridgov /var/lib/gridgov" in runs
