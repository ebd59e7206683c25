"""The peer servers of the OGC bench: tipg and pygeoapi's stock PostgreSQL providers.

They run from their own venv (``.data/bench-peers-venv``, pinned in ``bench/peers.txt``
and made here when missing or stale): tipg pins its own FastAPI, Starlette and
pydantic, which must not meet the project's.  Each runs as uvicorn with one worker,
no access log, on a free port, pointed at the same database as our server:

- tipg (``tipg.main:app``), configured by environment variables: ``DATABASE_URL``
  (with ``application_name=tipg``), ``TIPG_DB_TABLES=["public.buildings"]``, no
  functions, no catalog refresh during the run (``TIPG_CATALOG_TTL=0``).  Its working
  directory is a scratch folder, since pydantic-settings reads ``.env`` from there.
- pygeoapi (``pygeoapi.starlette_app:APP``) with a generated configuration: the
  collection ``buildings`` with the ``PostgreSQL`` feature provider and the
  ``MVT-postgresql`` tile provider (table ``buildings``, ``id_field`` id, ``geom_field``
  geom, storage CRS EPSG:4490, CRS list CRS84 and EPSG:4490), and the OpenAPI document
  from ``pygeoapi openapi generate``.  Both providers connect with
  ``application_name=pygeoapi``, so the bench can cancel a query it gave up on.

Nothing here imports tipg or pygeoapi: they only ever run in their own processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.harness import ROOT, BenchError, Server, launch
from layers import db
from layers.cluster import free_port

VENV = ROOT / ".data" / "bench-peers-venv"
REQUIREMENTS = Path(__file__).with_name("peers.txt")
STAMP = ".bench-peers"  # in the venv: the hash of the peers.txt it was made from
PEERS = ("tipg", "pygeoapi")
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG4490 = "http://www.opengis.net/def/crs/EPSG/0/4490"
TABLE = "buildings"
# variables of the user's shell that would change what the peers do
_DROP = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DATABASE_URL", "PYGEOAPI_CONFIG",
         "PYGEOAPI_OPENAPI")


def _requirements_hash(requirements: Path) -> str:
    return hashlib.sha256(requirements.read_bytes()).hexdigest()


def venv_ready(venv: Path = VENV, requirements: Path = REQUIREMENTS) -> bool:
    """The peers' venv exists and was made from this ``peers.txt``."""
    stamp = venv / STAMP
    return ((venv / "bin" / "python").exists() and stamp.exists()
            and stamp.read_text().strip() == _requirements_hash(requirements))


def ensure_venv(venv: Path = VENV, requirements: Path = REQUIREMENTS) -> Path:
    """The peers' Python, after making their venv from ``peers.txt`` when it is missing
    or was made from another version of the file (pip's output goes to stderr)."""
    python = venv / "bin" / "python"
    if venv_ready(venv, requirements):
        return python
    print(f"bench: installing the peer servers (tipg, pygeoapi; {requirements.name}) into "
          f"{venv.relative_to(ROOT) if venv.is_relative_to(ROOT) else venv}: "
          "once, a minute or two ...", file=sys.stderr, flush=True)
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                           stdout=sys.stderr)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", "-r", str(requirements)],
                       check=True, stdout=sys.stderr)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BenchError(f"could not make the peers' venv in {venv}: {exc}") from exc
    (venv / STAMP).write_text(_requirements_hash(requirements) + "\n")
    print("bench: peer servers installed", file=sys.stderr, flush=True)
    return python


def versions(python: Path) -> dict[str, str]:
    """The versions of the peers (and of what serves them) in their venv."""
    code = ("import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
            "('tipg', 'pygeoapi', 'fastapi', 'starlette', 'asyncpg', 'SQLAlchemy', "
            "'uvicorn')}))")
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True,
                         text=True, env=_env({}))
    got: dict[str, str] = json.loads(out.stdout)
    return got


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in _DROP and not k.startswith(("TIPG_", "PYGEOAPI_"))}
    return {**env, **extra}


def _with_application_name(url: str, name: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, f"application_name={name}") if q)
    return urlunsplit(parts._replace(query=query))


# -- tipg ----------------------------------------------------------------------------------


def tipg_env(database_url: str) -> dict[str, str]:
    """tipg's settings (environment variables; tipg.settings)."""
    return {
        "DATABASE_URL": _with_application_name(database_url, "tipg"),
        "TIPG_DB_SCHEMAS": '["public"]',
        "TIPG_DB_TABLES": f'["public.{TABLE}"]',
        "TIPG_DB_FUNCTIONS": "[]",  # no function collections
        "TIPG_CATALOG_TTL": "0",  # no catalog refresh in the middle of a run
        "TIPG_MAX_FEATURES_PER_QUERY": "10000",  # as ours (and its default)
        "TIPG_DEBUG": "false",
    }


@contextmanager
def tipg(python: Path, database_url: str, workdir: Path) -> Iterator[Server]:
    """tipg on the database, one uvicorn worker."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [str(python), "-m", "uvicorn", "tipg.main:app", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--log-level", "warning",
            "--no-access-log"]
    with launch(argv, port, ready="/healthz", cwd=workdir, env=_env(tipg_env(database_url)),
                log=workdir / "server.log") as server:
        yield server


# -- pygeoapi ------------------------------------------------------------------------------


def pygeoapi_config(database_url: str, server_url: str) -> dict[str, Any]:
    """pygeoapi's configuration: one collection, ``buildings``, on the stock
    PostgreSQL feature provider and MVT-postgresql tile provider."""
    u = urlsplit(database_url)
    data = {"host": u.hostname, "port": u.port or 5432, "dbname": u.path.lstrip("/"),
            "user": u.username, "password": u.password, "search_path": ["public"]}
    common = {
        "data": data, "id_field": "id", "table": TABLE, "geom_field": "geom",
        # The table is EPSG:4490.  With the default storage CRS (CRS84), bbox is a
        # mixed-SRID error (ST_MakeEnvelope(..., 4326) against 4490); declared as
        # EPSG:4490, pygeoapi swaps axes on the way out and on bbox (#2010, #2102)
        # unless the request's crs and bbox-crs are EPSG:4490 too: then it passes
        # the stored numbers through untouched, its cheapest path (see bench/ogc.py).
        "storage_crs": EPSG4490,
        "crs": [CRS84, EPSG4490],
    }
    return {
        "server": {
            "bind": {"host": "127.0.0.1", "port": 0},  # unused: uvicorn binds
            "url": server_url,
            "mimetype": "application/json; charset=UTF-8",
            "encoding": "utf-8",
            "gzip": False,
            "languages": ["en-US"],
            "cors": False,
            "pretty_print": False,
            "limits": {"default_items": 10, "max_items": 10000},
            # no public tile host: the schema needs the key, the bench needs no map
            "map": {"url": "", "attribution": ""},
        },
        "logging": {"level": "ERROR"},
        "metadata": {
            "identification": {"title": "gridgov bench: pygeoapi", "description": "bench",
                               "keywords": ["bench"], "keywords_type": "theme",
                               "terms_of_service": "", "url": server_url},
            "license": {"name": "CC-BY 4.0", "url": ""},
            "provider": {"name": "gridgov bench", "url": ""},
            "contact": {"name": "gridgov bench"},
        },
        "resources": {
            TABLE: {
                "type": "collection",
                "title": "Buildings",
                "description": "Building footprints",
                "keywords": ["buildings"],
                "extents": {"spatial": {"bbox": [-180, -90, 180, 90], "crs": CRS84}},
                "providers": [
                    {"type": "feature", "name": "PostgreSQL", **common},
                    {"type": "tile", "name": "MVT-postgresql", **common,
                     "options": {"zoom": {"min": 0, "max": 22}},
                     "format": {"name": "pbf",
                                "mimetype": "application/vnd.mapbox-vector-tile"}},
                ],
            },
        },
    }


@contextmanager
def pygeoapi(python: Path, database_url: str, workdir: Path) -> Iterator[Server]:
    """pygeoapi's Starlette app with the generated configuration, one uvicorn worker."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config, openapi = workdir / "config.yml", workdir / "openapi.yml"
    url = f"http://127.0.0.1:{port}"
    # JSON is YAML: pygeoapi reads it as its configuration
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds a password
    with os.fdopen(fd, "w") as f:
        json.dump(pygeoapi_config(_with_application_name(database_url, "pygeoapi"), url), f,
                  indent=1)
    env = _env({"PYGEOAPI_CONFIG": str(config), "PYGEOAPI_OPENAPI": str(openapi)})
    cli = python.parent / "pygeoapi"
    done = subprocess.run([str(cli), "openapi", "generate", str(config), "--output-file",
                           str(openapi)], cwd=workdir, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"pygeoapi openapi generate failed: {done.stderr[-2000:]}")
    argv = [str(python), "-m", "uvicorn", "pygeoapi.starlette_app:APP", "--host",
            "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning",
            "--no-access-log"]
    with launch(argv, port, ready="/conformance?f=json", cwd=workdir, env=env,
                log=workdir / "server.log") as server:
        yield server


# -- both ------------------------------------------------------------------------------------


@contextmanager
def scratch() -> Iterator[Path]:
    """A working folder for the peers' configuration and logs, removed on exit."""
    path = ROOT / ".data" / f"bench-peers-run-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def cancel_queries(database_url: str, application_name: str) -> int:
    """Cancel the running statements of the peer connected as ``application_name``
    (after the bench gave up waiting on one of its answers); how many were running."""
    with db.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = %s "
            "AND state = 'active' AND pid <> pg_backend_pid()", (application_name,)
        ).fetchall()
    return len(rows)


def busy(database_url: str, application_name: str) -> bool:
    """Whether the peer still has a statement running."""
    with db.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                           "AND state = 'active'", (application_name,)).fetchone()
    return bool(row and row[0])
