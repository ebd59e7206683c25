"""``gridgov serve --workers N``: N processes, JSON log lines on stderr, Ctrl-C stops all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from layers.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_serve_with_two_workers_logs_json_lines(db_url: str, tmp_path: Path) -> None:
    with psycopg.connect(db_url) as conn:
        x, y = conn.execute("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p "
                            "FROM micro_grids ORDER BY code LIMIT 1) s").fetchone()
    port = free_port()
    env = {**os.environ, "GRIDGOV_DATABASE_URL": db_url, "GRIDGOV_DATA_DIR": str(tmp_path),
           "WORKERS": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--no-setup"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not answer"
            time.sleep(0.3)
        for i in range(10):
            r = httpx.get(f"{base}/locate", params={"lon": x, "lat": y},
                          headers={"X-Request-Id": f"workers-{i}"})
            assert r.status_code == 200 and r.headers["x-request-id"] == f"workers-{i}"
        assert httpx.get(f"{base}/metrics").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "with 2 worker(s)" in out
    records: list[dict[str, Any]] = [json.loads(line) for line in err.splitlines()
                                     if line.startswith("{")]
    assert records, err[-2000:]
    started = {r["pid"] for r in records if r["message"].startswith("Started server process")}
    assert len(started) == 2, started  # two processes served
    access = [r for r in records if r["logger"] == "gridgov.access" and r["route"] == "/locate"]
    assert sorted(r["request_id"] for r in access) == sorted(f"workers-{i}" for i in range(10))
    assert all(r["status"] == 200 and r["method"] == "GET" and r["duration_ms"] > 0
               for r in access)
    assert {r["pid"] for r in access} <= started


def test_compose_passes_secrets_and_workers_from_the_environment() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["server"]["environment"]
    assert env["GRIDGOV_ENV"] == "production"
    assert str(env["GRIDGOV_SECRET_KEY"]).startswith("${GRIDGOV_SECRET_KEY:?")
    assert str(env["WORKERS"]).startswith("${WORKERS")
    makefile = (ROOT / "Makefile").read_text()
    assert "--workers $(WORKERS)" in makefile


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text answer (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, value = line.rsplit(" ", 1)
        got = head[len(name):].strip("{}")
        if ",".join(sorted(got.split(","))) == want:
            total += float(value)
    return total


def test_metrics_count_every_workers_requests(db_url: str, tmp_path: Path) -> None:
    """Two worker processes: whichever answers /metrics, the request count is the number
    of requests sent (prometheus_client's multiprocess mode, the counters in files)."""
    from concurrent.futures import ThreadPoolExecutor

    with psycopg.connect(db_url) as conn:
        x, y = conn.execute("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p "
                            "FROM micro_grids ORDER BY code LIMIT 1) s").fetchone()
    port = free_port()
    shared = tmp_path / "prom"
    shared.mkdir()
    (shared / "counter_1.db").write_bytes(b"left by an earlier run")  # must be cleared
    env = {**os.environ, "GRIDGOV_DATABASE_URL": db_url, "GRIDGOV_DATA_DIR": str(tmp_path),
           "WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--no-setup"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    base = f"http://127.0.0.1:{port}"
    sent = 80
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not answer"
            time.sleep(0.3)

        def one(i: int) -> int:  # a new connection each: the kernel spreads them
            return httpx.get(f"{base}/locate", params={"lon": x, "lat": y},
                             headers={"X-Request-Id": f"count-{i}"}, timeout=30).status_code

        with ThreadPoolExecutor(16) as pool:
            assert set(pool.map(one, range(sent))) == {200}
        scrapes = [httpx.get(f"{base}/metrics", timeout=30) for _ in range(8)]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    locate_pids = {r["pid"] for r in records
                   if r.get("logger") == "gridgov.access" and r.get("route") == "/locate"}
    metrics_pids = {r["pid"] for r in records
                    if r.get("logger") == "gridgov.access" and r.get("route") == "/metrics"}
    assert len(locate_pids) == 2, "both workers answered lookups"
    assert metrics_pids, "scrapes were logged"
    for r in scrapes:
        assert r.status_code == 200
        text = r.text
        assert _sample(text, "gridgov_http_requests_total", method="GET", route="/locate",
                       status="200") == sent, text[:3000]
        assert _sample(text, "gridgov_http_request_duration_seconds_count", method="GET",
                       route="/locate") == sent
        assert "gridgov_ogc_job_queue" in text and 'gridgov_ogc_jobs{status="failed"}' in text
        assert "gridgov_pool_connections" in text
    assert not (shared / "counter_1.db").exists()
