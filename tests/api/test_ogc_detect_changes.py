"""The ``detect-changes`` OGC process, through a real uvicorn server, OWSLib and plain
HTTP: jobs with progress, results in change_detections, events filed once per pair,
commit=false, uploads, refusals at submission, DELETE mid-run, a free event loop."""

from __future__ import annotations

import base64
import json
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from api.app import create_app
from api.settings import Settings
from seed_data.orthophoto import PairInfo, write_pair
from seed_data.town import Town

Served = Callable[[Any], AbstractContextManager[str]]
EXECUTE = "/ogc/processes/detect-changes/execution"
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inbox")


@pytest.fixture(scope="module")
def pair(demo_town: Town, inbox: Path) -> PairInfo:
    return write_pair(demo_town, inbox / "flights", seed=3, size_m=(600.0, 600.0))


@pytest.fixture(scope="module")
def elsewhere(pair: PairInfo, inbox: Path) -> Path:
    """A small RGB GeoTIFF in the same CRS as the earlier image, 20 km away."""
    with rasterio.open(pair.before) as src:
        t, crs = src.transform, src.crs
    path = inbox / "elsewhere.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3,
                       dtype="uint8", crs=crs,
                       transform=Affine.translation(t.c + 20_000, t.f) @ Affine.scale(
                           t.a, t.e)) as dst:
        dst.write(np.full((3, 64, 64), 120, np.uint8))
    return path


def no_crs_tiff(path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=3,
                           dtype="uint8") as dst:
            dst.write(np.zeros((3, 32, 32), np.uint8))
    return path


@contextmanager
def server(served: Served, url: str, data_dir: Path, inbox: Path, **more: Any
           ) -> Iterator[httpx.Client]:
    """A served app and an httpx client carrying an officer's token (detect-changes reads
    the server's imagery and files events: officers only)."""
    from layers.auth import create_user

    settings = Settings(env="test", data_dir=data_dir, GRIDGOV_IMAGERY_INBOX=inbox,
                        GRIDGOV_PHOTOS_DIR=data_dir / "photos", changes_workers=2, **more)
    with psycopg.connect(url) as conn:
        token = create_user(conn, f"变化检测员-{uuid.uuid4().hex[:8]}", "officer")
        conn.commit()
    with served(create_app(settings, url)) as base, httpx.Client(
            base_url=base, timeout=120, headers={"Authorization": f"Bearer {token}"}) as http:
        yield http


def inputs(pair: PairInfo, **more: Any) -> dict[str, Any]:
    return {"before": "flights/before.tif",
            "after": {"href": pair.after.resolve().as_uri()},  # a file: URL in the inbox
            "before_dsm": "flights/before_dsm.tif", "after_dsm": "flights/after_dsm.tif",
            "block": 256, **more}


def follow(http: httpx.Client, location: str, timeout: float = 300,
           while_running: Callable[[dict[str, Any]], None] | None = None
           ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(location).json()
        seen.append(job)
        if job["status"] not in ("accepted", "running"):
            return job, seen
        if while_running is not None and job["status"] == "running":
            while_running(job)
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def counts(url: str) -> tuple[int, int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM change_runs), (SELECT count(*) "
                           "FROM change_detections), (SELECT count(*) FROM events)"
                           ).fetchone()
    assert row is not None
    return row


def test_described_in_the_process_list_and_openapi(db_url: str, served: Served,
                                                   tmp_path: Path, inbox: Path) -> None:
    from owslib.ogcapi.processes import Processes

    with server(served, db_url, tmp_path, inbox) as http:
        base = str(http.base_url).rstrip("/")
        api = Processes(f"{base}/ogc")
        assert "detect-changes" in [p["id"] for p in api.processes()]
        desc = api.process("detect-changes")
        assert set(desc["inputs"]) == {"before", "after", "before_dsm", "after_dsm", "commit",
                                       "baseline", "block"}
        assert desc["inputs"]["before"]["minOccurs"] == 1
        assert desc["inputs"]["after_dsm"]["minOccurs"] == 0
        assert desc["inputs"]["commit"]["schema"] == {"type": "boolean", "default": True}
        assert set(desc["jobControlOptions"]) == {"sync-execute", "async-execute"}
        assert "result" in desc["outputs"]
        paths = http.get("/ogc/openapi").json()["paths"]
        assert "/processes/detect-changes/execution" in paths
        upload = http.get("/openapi.json").json()["paths"]["/api/v1/imagery/uploads"]
        assert "image/tiff" in upload["post"]["requestBody"]["content"]


def test_job_with_progress_stores_the_run_and_files_each_event_once(
        fresh_db_url: str, served: Served, tmp_path: Path, inbox: Path,
        pair: PairInfo) -> None:
    from owslib.ogcapi.processes import Processes

    before = counts(fresh_db_url)
    answered: list[tuple[int, int]] = []
    with server(served, fresh_db_url, tmp_path, inbox) as http:
        base = str(http.base_url).rstrip("/")
        status = Processes(f"{base}/ogc", headers=dict(http.headers)).execute(
            "detect-changes", inputs(pair), async_=True)
        assert status["status"] in ("accepted", "running"), status
        location = f"/ogc/jobs/{status['jobID']}"

        def meanwhile(job: dict[str, Any]) -> None:
            # the server keeps answering other requests while the detection runs
            if 0 < job.get("progress", 0) < 100 and len(answered) < 3:
                h = http.get("/healthz")
                items = http.get("/ogc/collections/micro_grids/items?limit=1")
                still = http.get(location).json()["status"]
                if still == "running":
                    answered.append((h.status_code, items.status_code))

        job, seen = follow(http, location, while_running=meanwhile)
        assert job["status"] == "successful", job
        assert answered and all(a == (200, 200) for a in answered), answered
        running = [(j.get("progress", 0), j.get("message", "")) for j in seen
                   if j["status"] == "running"]
        assert any(0 < p < 100 and "tiles compared" in m for p, m in running), running
        assert [p for p, _ in running] == sorted(p for p, _ in running)
        result = http.get(location + "/results").json()["result"]  # OWSLib asks: document
        run = result["run_id"]
        assert isinstance(run, int) and result["committed"] is True
        assert result["with_dsm"] is True and result["counts"]["new_structure"] >= 3
        assert result["stored"] == result["objects"] == len(result["changes"]["features"])
        assert result["already_stored"] == 0
        assert result["events"] and result["verdicts"]["illegal_suspected"] >= len(
            result["events"])
        links = {link["rel"]: link["href"] for link in result["links"]}
        assert links["tiles"] == f"{base}/tiles/changes/{run}/{{z}}/{{x}}/{{y}}.png"
        assert links["mask"] == f"{base}/tiles/changes/{run}/mask.tif"
        related = [link["href"] for link in result["links"] if link["rel"] == "related"]
        assert related == [f"{base}/api/v1/events/{e}" for e in result["events"]]
        # the run's objects, through the OGC items endpoint the result links to
        items = http.get(links["items"], headers={"Accept": "application/geo+json"}).json()
        assert len(items["features"]) == result["stored"]
        assert {f["properties"]["run_id"] for f in items["features"]} == {run}
        kinds = sorted(f["properties"]["kind"] for f in items["features"])
        assert kinds == sorted(f["properties"]["kind"] for f in result["changes"]["features"])
        # the mask: a COG in data_dir/changes/run-<id>/, recorded with the run
        mask = tmp_path.resolve() / "changes" / f"run-{run}" / "mask.tif"
        with rasterio.open(mask) as src:
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert set(np.unique(src.read(1))) >= {0, 1}
        assert not list((tmp_path / "changes").glob(".job-*"))  # staging cleaned up
        with psycopg.connect(fresh_db_url) as conn:
            (mask_path,) = conn.execute("SELECT mask_path FROM change_runs WHERE id = %s",
                                        (run,)).fetchone()
            assert mask_path == str(mask)
            # each suspected illegal structure is an event in the micro-grid owning it
            rows = conn.execute(
                "SELECT d.event_id, e.micro_grid_code, m.code, e.category_code, e.source "
                "FROM change_detections d JOIN events e ON e.id = d.event_id "
                "JOIN micro_grid_parts mp ON ST_Intersects(mp.geom, ST_PointOnSurface(d.geom)) "
                "JOIN micro_grids m ON m.id = mp.micro_grid_id "
                "JOIN grid_generations g ON g.id = mp.generation_id AND g.valid_to IS NULL "
                "WHERE d.run_id = %s", (run,)).fetchall()
        assert sorted(r[0] for r in rows) == sorted(result["events"])
        assert all(grid == owner and cat == "06001" and src == "change_detection"
                   for _, grid, owner, cat, src in rows), rows
        runs, objects, events = counts(fresh_db_url)
        assert (runs, objects, events) == (before[0] + 1, before[1] + result["stored"],
                                           before[2] + len(result["events"]))

        # the same pair again (synchronously this time): nothing new, no second event
        r = http.post(EXECUTE, json={"inputs": inputs(pair)})
        assert r.status_code == 200, r.text
        again = r.json()
        assert again["run_id"] != run and again["stored"] == 0 and again["events"] == []
        assert again["already_stored"] == result["objects"]
    assert counts(fresh_db_url) == (runs + 1, objects, events)


def test_uploads_and_commit_false_store_nothing(fresh_db_url: str, served: Served,
                                                 tmp_path: Path, pair: PairInfo) -> None:
    from layers.auth import create_user

    with psycopg.connect(fresh_db_url) as conn:
        token = create_user(conn, "指挥中心科长", "officer")
        conn.commit()
    officer = {"Authorization": f"Bearer {token}", "Content-Type": "image/tiff"}
    inbox = tmp_path / "empty-inbox"  # the pair is not in this server's inbox
    before = counts(fresh_db_url)
    limit = 32 * 2**20  # more than the pair's files, less than the junk below
    assert max(pair.before.stat().st_size, pair.after.stat().st_size) < limit
    with server(served, fresh_db_url, tmp_path / "data", inbox,
                imagery_upload_max_bytes=limit) as http:
        # refusals: no token, not a TIFF, a TIFF without CRS, too big (declared or
        # streamed); nothing is left behind
        junk = b"\0" * (limit + 1)
        r = http.post("/api/v1/imagery/uploads", content=junk, headers=officer)
        assert r.status_code == 413 and r.json()["limit_bytes"] == limit, r.text
        r = http.post("/api/v1/imagery/uploads", headers=officer,
                      content=iter([junk[i:i + 2**20] for i in range(0, len(junk), 2**20)]))
        assert r.status_code == 413, r.text
        assert httpx.post(f"{http.base_url}/api/v1/imagery/uploads",
                          content=pair.before.read_bytes(),
                          headers={"Content-Type": "image/tiff"}).status_code == 401
        r = http.post("/api/v1/imagery/uploads", content=b"not a tiff", headers=officer)
        assert r.status_code == 400 and "not a GeoTIFF" in r.json()["detail"], r.text
        r = http.post("/api/v1/imagery/uploads",
                      content=no_crs_tiff(tmp_path / "nocrs.tif").read_bytes(), headers=officer)
        assert r.status_code == 400 and "no CRS" in r.json()["detail"], r.text
        r = http.post("/api/v1/imagery/uploads", content=b"x",
                      headers={**officer, "Content-Type": "text/plain"})
        assert r.status_code == 415
        assert not any(p.is_file() for p in inbox.rglob("*"))
        # the orthophotos streamed in (chunked), the DSMs inline as base64 values
        hrefs = {}
        for name, path in (("before", pair.before), ("after", pair.after)):
            r = http.post("/api/v1/imagery/uploads", headers=officer,
                          content=iter([path.read_bytes()[i:i + 65536] for i in range(
                              0, path.stat().st_size, 65536)]))
            assert r.status_code == 201, r.text
            up = r.json()
            assert up["bytes"] == path.stat().st_size and up["bands"] >= 3
            hrefs[name] = up["href"]
        assert (inbox / hrefs["before"]).read_bytes() == pair.before.read_bytes()

        def inline(path: Path) -> dict[str, str]:
            return {"value": base64.b64encode(path.read_bytes()).decode(),
                    "mediaType": "image/tiff; application=geotiff"}

        r = http.post(EXECUTE, json={"inputs": {
            "before": {"href": hrefs["before"]}, "after": hrefs["after"],
            "before_dsm": inline(pair.before_dsm), "after_dsm": inline(pair.after_dsm),
            "commit": False, "block": 512}})
        assert r.status_code == 200, r.text
        result = r.json()
    assert result["committed"] is False and result["run_id"] is None
    assert result["links"] == [] and result["events"] == []
    assert result["with_dsm"] is True and result["counts"]["new_structure"] >= 3
    assert len(result["changes"]["features"]) == result["objects"] > 0
    assert counts(fresh_db_url) == before
    assert not (tmp_path / "data" / "changes").exists() or not any(
        (tmp_path / "data" / "changes").iterdir())
    assert len(list((inbox / "uploads").glob("*.tif"))) == 4


def test_bad_inputs_are_refused_before_any_job(db_url: str, served: Served, tmp_path: Path,
                                               inbox: Path, pair: PairInfo,
                                               elsewhere: Path) -> None:
    (inbox / "notes.tif").write_text("not a raster")
    no_crs_tiff(inbox / "nocrs.tif")
    outside = tmp_path / "outside.tif"
    shutil.copy(pair.before, outside)
    link = inbox / "escape.tif"
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    ok = inputs(pair)
    cases = [
        ({**ok, "before": "../outside.tif"}, "before", "'..'"),
        ({**ok, "after": str(outside)}, "after", "outside the imagery inbox"),
        ({**ok, "before": {"href": outside.as_uri()}}, "before", "outside the imagery inbox"),
        ({**ok, "before": "escape.tif"}, "before", "outside the imagery inbox"),
        ({**ok, "after": {"href": "http://example.com/after.tif"}}, "after", "http:"),
        ({**ok, "after": "ftp://example.com/after.tif"}, "after", "ftp:"),
        ({**ok, "before": "flights/nope.tif"}, "before", "no file"),
        ({**ok, "after": "notes.tif"}, "after", "not a readable raster"),
        ({**ok, "after": "nocrs.tif"}, "after", "no CRS"),
        ({**ok, "after": "elsewhere.tif"}, "after", "does not overlap"),
        ({**ok, "before_dsm": None}, "before_dsm", "both DSMs"),
        ({**ok, "commit": "yes"}, "commit", "true or false"),
        ({**ok, "block": 10}, "block", "128 to 4096"),
        ({**ok, "before": {"value": "@@@", "mediaType": "image/tiff"}}, "before", "base64"),
        ({**ok, "before": {"value": "AAAA", "mediaType": "image/png"}}, "before", "mediaType"),
        ({"after": "flights/after.tif"}, "before", "required"),
    ]
    with server(served, db_url, tmp_path / "data", inbox) as http:
        jobs = len(http.get("/ogc/jobs").json()["jobs"])
        for body, name, needle in cases:
            r = http.post(EXECUTE, json={"inputs": body}, headers=ASYNC)
            assert r.status_code == 400, (body, r.text)
            text = r.json()["description"]
            assert f"'{name}'" in text or text.startswith(f"Invalid spatial input: {name}") \
                or f"{name} " in text, (name, text)
            assert needle in text, (needle, text)
            assert str(inbox) not in text  # the server's directories stay private
        assert len(http.get("/ogc/jobs").json()["jobs"]) == jobs
    assert not (inbox / "uploads").exists() or not list((inbox / "uploads").glob("*.tif"))


def test_delete_mid_run_stops_the_job_and_stores_nothing(
        fresh_db_url: str, served: Served, tmp_path: Path, inbox: Path,
        pair: PairInfo) -> None:
    before = counts(fresh_db_url)
    with server(served, fresh_db_url, tmp_path, inbox) as http:
        r = http.post(EXECUTE, json={"inputs": inputs(pair, block=128)}, headers=ASYNC)
        assert r.status_code == 201, r.text
        location = r.headers["location"]
        deadline = time.monotonic() + 120
        while True:
            job = http.get(location).json()
            if job["status"] == "running" and "tiles compared" in job.get("message", ""):
                break
            assert job["status"] in ("accepted", "running") and time.monotonic() < deadline, \
                job
            time.sleep(0.05)
        # only an officer stops it: anonymous is 401 and the job runs on
        anonymous = httpx.delete(str(http.base_url.join(location)))
        assert anonymous.status_code == 401, anonymous.text
        assert http.get(location).json()["status"] == "running"
        assert http.delete(location).status_code == 200
        assert http.get(location).status_code == 404
        # the worker process is ended and its staging directory removed
        deadline = time.monotonic() + 60
        while list((tmp_path / "changes").glob(".job-*")):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert counts(fresh_db_url) == before
    assert not list((tmp_path / "changes").glob("run-*"))


def test_a_failure_during_the_run_fails_the_job_and_stores_nothing(
        fresh_db_url: str, served: Served, tmp_path: Path, inbox: Path,
        pair: PairInfo) -> None:
    """An after image whose headers are fine but whose pixels are cut off: only the run
    can find out, and the job says so."""
    broken = inbox / "broken.tif"
    rasterio.shutil.copy(pair.after, broken, driver="COG")  # headers first, then pixels
    size = broken.stat().st_size
    with broken.open("r+b") as f:
        f.truncate(size // 3)
    before = counts(fresh_db_url)
    with server(served, fresh_db_url, tmp_path, inbox) as http:
        r = http.post(EXECUTE, json={"inputs": {**inputs(pair), "after": "broken.tif"}},
                      headers=ASYNC)
        assert r.status_code == 201, r.text
        job, _ = follow(http, r.headers["location"])
    assert job["status"] == "failed", job
    assert "cannot read" in job["message"] and "broken.tif" in job["message"], job
    assert str(inbox) not in job["message"]
    assert counts(fresh_db_url) == before
    assert json.dumps(job)  # a plain status document


def test_only_officers_run_it(db_url: str, served: Served, tmp_path: Path, inbox: Path,
                              pair: PairInfo) -> None:
    """Running detect-changes reads the server's imagery and files events: without a
    token it is a 401, a resident's token a 403, and no job is made either way."""
    from layers.auth import create_user

    with psycopg.connect(db_url) as conn:
        resident = create_user(conn, f"居民-{uuid.uuid4().hex[:8]}", "resident")
        conn.commit()
    with server(served, db_url, tmp_path, inbox) as http:
        jobs = len(http.get("/ogc/jobs?f=json").json()["jobs"])
        anonymous = httpx.post(f"{http.base_url}{EXECUTE}", json={"inputs": inputs(pair)})
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.headers["content-type"].startswith("application/problem+json")
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        other = httpx.post(f"{http.base_url}{EXECUTE}", json={"inputs": inputs(pair)},
                           headers={"Authorization": f"Bearer {resident}"})
        assert other.status_code == 403, other.text
        assert "officer" in other.json()["detail"]
        assert len(http.get("/ogc/jobs?f=json").json()["jobs"]) == jobs
        # reading the description stays public
        assert httpx.get(f"{http.base_url}/ogc/processes/detect-changes?f=json").status_code == 200
