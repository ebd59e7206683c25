"""The ``coverage`` OGC process: a job with progress that stores micro_grid_coverage."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings

EXECUTE = "/ogc/processes/coverage/execution"


def test_coverage_job_reports_progress_and_stores_every_grid(
    fresh_db_url: str, tmp_path: Path
) -> None:
    settings = Settings(env="test", data_dir=tmp_path)
    with TestClient(create_app(settings, fresh_db_url)) as client:
        described = client.get("/ogc/processes/coverage").json()
        assert set(described["inputs"]) == {"line_of_sight", "generation"}
        r = client.post(EXECUTE, json={"inputs": {"line_of_sight": False}},
                        headers={"Prefer": "respond-async"})
        assert r.status_code == 201, r.text
        location = r.headers["location"]
        seen: list[tuple[str, int]] = []
        deadline = time.monotonic() + 300
        while True:
            job = client.get(location).json()
            seen.append((job["status"], job.get("progress", 0)))
            if job["status"] not in ("accepted", "running"):
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["status"] == "successful", job
        # a running job showed how far it got, between nothing and done
        assert any(s == "running" and 0 < p < 100 for s, p in seen), seen
        result = client.get(location + "/results").json()
        assert result["micro_grids"] == 321 and result["surface_model"] is False
        assert 0 < result["mean_camera_fraction"] < 1
    with psycopg.connect(fresh_db_url) as conn:
        n, visible = conn.execute(
            "SELECT count(*), count(high_point_visible_fraction) FROM micro_grid_coverage"
        ).fetchone()
    assert n == 321 and visible == 0


def test_bad_coverage_inputs_are_400(db_url: str, tmp_path: Path) -> None:
    settings = Settings(env="test", data_dir=tmp_path)  # no surface model in there
    with TestClient(create_app(settings, db_url)) as client:
        for inputs, needle in [({"line_of_sight": "yes"}, "line_of_sight"),
                               ({"generation": 0}, "generation"),
                               ({"radius": 3}, "radius"),
                               ({}, "surface model")]:
            r = client.post(EXECUTE, json={"inputs": inputs})
            assert r.status_code == 400, (inputs, r.text)
            assert needle in r.text
