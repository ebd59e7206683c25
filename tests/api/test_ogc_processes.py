"""pygeoapi mounted at /ogc: the OGC shell, the locate process, jobs and their progress.

The locate process is checked against GET /locate on the same database; jobs are
followed through /ogc/jobs; a test-only processor that waits for the test between its
steps shows the progress a running job reports; a real uvicorn server and a plain HTTP
client check the links a remote client sees.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import psycopg
import pytest
import shapely
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.ogc import mount
from api.ogc.processes import (
    ASYNC_AND_SYNC,
    GridgovProcessor,
    LocateProcessor,
    ProcessContext,
    Progress,
)
from api.settings import Settings
from gis.chinacrs import wgs84_to_gcj02
from layers.errors import InvalidInput
from layers.registry import LAYERS

Served = Callable[[Any], AbstractContextManager[str]]  # the `served` fixture (conftest)
PROCESSES_CORE = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/core"
EXECUTE = "/ogc/processes/locate/execution"
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ogc")


@pytest.fixture(scope="module")
def client(db_url: str, data_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(env="test", data_dir=data_dir), db_url)) as c:
        yield c


@pytest.fixture(scope="module")
def grids(db_url: str) -> tuple[list[str], np.ndarray]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT code, ST_AsBinary(geom) FROM micro_grids ORDER BY code").fetchall()
    return [r[0] for r in rows], shapely.from_wkb([bytes(r[1]) for r in rows])


def officer(url: str) -> dict[str, str]:
    """An officer's Authorization header (a new account each time)."""
    from layers.auth import create_user

    with psycopg.connect(url) as conn:
        token = create_user(conn, f"科长-{uuid.uuid4().hex[:8]}", "officer")
        conn.commit()
    return {"Authorization": f"Bearer {token}"}


def hrefs(doc: Any) -> list[str]:
    """Every link href anywhere in a JSON document."""
    if isinstance(doc, Mapping):
        found = [doc["href"]] if isinstance(doc.get("href"), str) else []
        return found + [h for v in doc.values() for h in hrefs(v)]
    if isinstance(doc, list):
        return [h for v in doc for h in hrefs(v)]
    return []


def wait_for(client: TestClient | httpx.Client, url: str, until: Any, timeout: float = 30
             ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(url)
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        if until(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.02)


# -- the OGC shell --------------------------------------------------------------------


def test_landing_page_and_conformance_declare_processes(client: TestClient,
                                                        db_url: str) -> None:
    landing = client.get("/ogc")
    assert landing.status_code == 200, landing.text
    body = landing.json()
    rels = {link["rel"] for link in body["links"]}
    assert {"conformance", "service-desc", "data",
            "http://www.opengis.net/def/rel/ogc/1.0/processes",
            "http://www.opengis.net/def/rel/ogc/1.0/job-list"} <= rels
    assert all(h.startswith("http://testserver/") for h in hrefs(body))
    for href in hrefs(body):  # no dangling link (the job list is for officers)
        if href.endswith("/ogc/jobs"):
            assert client.get(href).status_code == 401
            assert client.get(href, headers=officer(db_url)).status_code == 200
        else:
            assert client.get(href).status_code == 200, href
    assert client.get("/ogc/").json() == body
    classes = client.get("/ogc/conformance").json()["conformsTo"]
    assert PROCESSES_CORE in classes
    assert "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/ogc-process-description" \
        in classes
    assert "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/job-list" in classes
    assert not any(c.endswith("/conf/callback") for c in classes)  # no callbacks here
    # pygeoapi 0.21's own conformance page grows a module-level list on every request
    assert client.get("/ogc/conformance").json()["conformsTo"] == classes


def test_process_list_and_description(client: TestClient) -> None:
    listing = client.get("/ogc/processes").json()
    ids = [p["id"] for p in listing["processes"]]
    assert "locate" in ids
    locate = client.get("/ogc/processes/locate").json()
    assert set(locate["jobControlOptions"]) == {"sync-execute", "async-execute"}
    assert set(locate["inputs"]) == {"points", "crs", "at"}
    assert "gcj02" in locate["inputs"]["crs"]["schema"]["enum"]
    assert "result" in locate["outputs"]
    execute = [link for link in locate["links"] if link["rel"].endswith("/execute")]
    assert execute[0]["href"].startswith("http://testserver/ogc/processes/locate/execution")
    assert client.get("/ogc/processes/nope").status_code == 404
    r = client.post("/ogc/processes/nope/execution", json={"inputs": {}})
    assert r.status_code == 404 and r.json()["code"] == "NoSuchProcess"


def test_openapi_and_collections(client: TestClient) -> None:
    doc = client.get("/ogc/openapi").json()
    assert doc["servers"][0]["url"] == "http://testserver/ogc"
    assert "/processes/locate/execution" in doc["paths"]
    collections = client.get("/ogc/collections").json()
    assert [c["id"] for c in collections["collections"]] == list(LAYERS)
    r = client.get("/ogc/collections/nope")
    assert r.status_code == 404 and r.json()["code"] == "NotFound"


def test_generated_configuration_is_valid_for_pygeoapi(tmp_path: Path) -> None:
    from pygeoapi.config import validate_config

    from api.ogc.config import pygeoapi_config

    config = pygeoapi_config("https://grid.example.cn/gov", tmp_path, {"locate": LocateProcessor})
    assert validate_config(config)
    assert config["server"]["url"] == "https://grid.example.cn/gov/ogc"
    assert "postgresql" not in repr(config)  # the templates see the whole configuration


# -- locate -----------------------------------------------------------------------------


def test_locate_agrees_with_get_locate_on_500_random_points(
    client: TestClient, grids: tuple[list[str], np.ndarray]
) -> None:
    x0, y0, x1, y1 = shapely.total_bounds(grids[1])
    rng = np.random.default_rng(7)
    pts = np.column_stack([rng.uniform(x0 - 0.01, x1 + 0.01, 500),
                           rng.uniform(y0 - 0.01, y1 + 0.01, 500)])
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": f"p{i}", "properties": {"n": i},
         "geometry": {"type": "Point", "coordinates": [x, y]}}
        for i, (x, y) in enumerate(pts.tolist())]}
    r = client.post(EXECUTE, json={"inputs": {"points": fc, "at": "2024-06-01"}})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/geo+json")
    assert "location" not in r.headers  # a synchronous execution leaves no job
    out = r.json()
    assert out["type"] == "FeatureCollection" and out["numberReturned"] == 500
    inside = outside = 0
    for i, (feature, (x, y)) in enumerate(zip(out["features"], pts.tolist(), strict=True)):
        assert feature["id"] == f"p{i}" and feature["properties"]["n"] == i
        assert feature["geometry"]["coordinates"] == pytest.approx([x, y])
        props = feature["properties"]
        one = client.get("/locate", params={"lon": x, "lat": y, "at": "2024-06-01"})
        if one.status_code == 404:
            assert props["micro_grid_code"] is None and props["nearest_code"]
            outside += 1
        else:
            assert props["micro_grid_code"] == one.json()["micro_grid"]["code"]
            assert props["street_code"] == one.json()["street"]["code"]
            assert props["nearest_code"] is None
            inside += 1
    assert inside > 250 and outside > 10
    # every answer, nearest grids included, is POST /locate's
    batch = client.post("/locate", params={"at": "2024-06-01"}, json=fc,
                        headers={"content-type": "application/geo+json"})
    assert batch.status_code == 200, batch.text
    assert out["features"] == batch.json()["features"]
    assert out["generation"] == batch.json()["generation"]


def test_pairs_in_gcj02_land_in_the_true_grid(
    client: TestClient, grids: tuple[list[str], np.ndarray]
) -> None:
    codes, geoms = grids
    chosen = list(range(0, len(codes), 9))
    pts = [shapely.point_on_surface(geoms[i]) for i in chosen]
    gcj = [list(map(float, wgs84_to_gcj02(p.x, p.y))) for p in pts]
    r = client.post(EXECUTE, json={"inputs": {"points": gcj, "crs": "gcj02"}})
    assert r.status_code == 200, r.text
    got = [f["properties"]["micro_grid_code"] for f in r.json()["features"]]
    assert got == [codes[i] for i in chosen]
    # the same points read as CGCS2000 land elsewhere for many of them
    naive = client.post(EXECUTE, json={"inputs": {"points": {"value": gcj}}}).json()
    moved = sum(f["properties"]["micro_grid_code"] != codes[i]
                for f, i in zip(naive["features"], chosen, strict=True))
    assert moved > len(chosen) // 3


def test_document_response(client: TestClient, grids: tuple[list[str], np.ndarray]) -> None:
    p = shapely.point_on_surface(grids[1][0])
    r = client.post(EXECUTE, json={"inputs": {"points": [[p.x, p.y]]}, "response": "document"})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["features"][0]["properties"]["micro_grid_code"] == grids[0][0]


line = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": {},
     "geometry": {"type": "LineString", "coordinates": [[118, 36.8], [118.1, 36.8]]}}]}


@pytest.mark.parametrize(("body", "says"), [
    ({"inputs": {"points": line}}, "must be a Point"),
    ({"inputs": {"points": [[118.0, 91.0]]}}, "not on the Earth"),
    ({"inputs": {"points": [[118.0, 36.8]], "crs": "EPSG:9999"}}, "unsupported crs"),
    ({"inputs": {"points": [[118.0, 36.8]], "crs": "wgs84'; DROP TABLE micro_grids; --"}},
     "unsupported crs"),
    ({"inputs": {"points": [[118.0, 36.8]], "at": "yesterday"}}, "must be a date"),
    ({"inputs": {"points": [[118.0, "36.8"]]}}, "is not a number"),
    ({"inputs": {"points": [[118.0]]}}, "[x, y]"),
    ({"inputs": {"points": "118,36.8"}}, "FeatureCollection"),
    ({"inputs": {"points": {"href": "http://169.254.169.254/"}}}, "by reference"),
    ({"inputs": {}}, "'points' is required"),
    ({"inputs": {"points": [[118.0, 36.8]], "colour": "red"}}, "unknown input"),
    ({"inputs": [[118.0, 36.8]]}, "'inputs' must be an object"),
    ([1, 2], "JSON object"),
    ({"inputs": {"points": [[118.0, 36.8]]}, "subscriber": "http://x"}, "subscriber"),
    ({"inputs": {"points": [[118.0, 36.8]]}, "response": "all"}, "'response'"),
])
@pytest.mark.parametrize("prefer", [{}, ASYNC])
def test_bad_input_is_400_with_an_ogc_exception(
    client: TestClient, body: Any, says: str, prefer: dict[str, str]
) -> None:
    r = client.post(EXECUTE, json=body, headers=prefer)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["code"] == doc["type"] == "InvalidParameterValue"
    assert says in doc["description"]


def test_bad_bodies_are_400_not_500(client: TestClient) -> None:
    for content in (b"", b"{not json", b"\xff\xfe", b"null", b'"text"'):
        r = client.post(EXECUTE, content=content,
                        headers={"content-type": "application/json"})
        assert r.status_code == 400, (content, r.text)
        assert r.json()["code"] in ("InvalidParameterValue", "MissingParameterValue")


def test_too_many_points_is_413(client: TestClient) -> None:
    r = client.post(EXECUTE, json={"inputs": {"points": [[118.0, 36.8]] * 100_001}})
    assert r.status_code == 413 and "split the input" in r.json()["description"]


def test_no_generation_on_that_day_is_404(client: TestClient) -> None:
    r = client.post(EXECUTE, json={"inputs": {"points": [[118.0, 36.8]], "at": "2020-01-01"}})
    assert r.status_code == 404 and "no grid generation" in r.json()["description"]


# -- jobs ---------------------------------------------------------------------------------


def test_async_locate_job_status_and_results(
    client: TestClient, grids: tuple[list[str], np.ndarray], db_url: str
) -> None:
    codes, geoms = grids
    pts = [[p.x, p.y] for p in shapely.point_on_surface(geoms[:40])]
    sync = client.post(EXECUTE, json={"inputs": {"points": pts}}).json()
    r = client.post(EXECUTE, json={"inputs": {"points": pts}}, headers=ASYNC)
    assert r.status_code == 201, r.text
    assert r.headers["preference-applied"] == "respond-async"
    location = r.headers["location"]
    assert location.startswith("http://testserver/ogc/jobs/")
    status = r.json()
    job_id = status["jobID"]
    assert location.endswith(job_id) and status["processID"] == "locate"
    assert status["status"] in ("accepted", "running", "successful")
    done = wait_for(client, location, lambda j: j["status"] not in ("accepted", "running"))
    assert done["status"] == "successful" and done["progress"] == 100, done
    results = [link["href"] for link in done["links"]
               if link["rel"].endswith("/results") and link["type"] == "application/json"]
    assert results[0].startswith(f"http://testserver/ogc/jobs/{job_id}/results")
    got = client.get(f"/ogc/jobs/{job_id}/results")
    assert got.status_code == 200 and got.headers["content-type"].startswith(
        "application/geo+json")
    assert got.json()["features"] == sync["features"]
    assert [f["properties"]["micro_grid_code"] for f in got.json()["features"]] == codes[:40]
    # the list of every job is for officers; the job itself for whoever has its id
    anonymous = client.get("/ogc/jobs")
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["content-type"].startswith("application/problem+json")
    listed = client.get("/ogc/jobs", headers=officer(db_url)).json()["jobs"]
    doc = client.get("/ogc/openapi", params={"f": "json"}).json()  # and the document says so
    jobs = doc["paths"]["/jobs"]["get"]
    assert jobs["security"] == [{"bearer": []}] and {"401", "403"} <= set(jobs["responses"])
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert job_id in [j["jobID"] for j in listed]
    assert client.get("/ogc/jobs/no-such-job").status_code == 404
    assert client.get("/ogc/jobs/no-such-job/results").status_code == 404
    html = client.get(location, params={"f": "html"})
    assert html.status_code == 200 and "successful" in html.text
    gone = client.delete(location)
    assert gone.status_code == 200 and gone.json()["status"] == "dismissed"
    assert client.get(location).status_code == 404
    assert client.get(f"/ogc/jobs/{job_id}/results").status_code == 404


def test_a_failing_job_is_failed_not_lost(client: TestClient) -> None:
    r = client.post(EXECUTE, json={"inputs": {"points": [[118.0, 36.8]], "at": "2020-01-01"}},
                    headers=ASYNC)
    assert r.status_code == 201, r.text
    job = wait_for(client, r.headers["location"], lambda j: j["status"] == "failed")
    assert "no grid generation" in job["message"]
    assert client.get(r.headers["location"] + "/results").status_code == 400


class Stepper(GridgovProcessor):
    """Test-only process: reports a step, then waits until the test lets it go on."""

    METADATA: ClassVar[dict[str, Any]] = {
        "version": "0.1.0", "id": "stepper", "title": "Stepper", "description": "test only",
        "jobControlOptions": ASYNC_AND_SYNC, "keywords": [], "links": [],
        "inputs": {"steps": {"title": "steps", "schema": {"type": "integer"},
                             "minOccurs": 1, "maxOccurs": 1}},
        "outputs": {"result": {"title": "result", "schema": {"type": "object"}}},
    }
    gate = threading.Semaphore(0)
    finished: ClassVar[list[int]] = []

    def parse(self, inputs: Any) -> int:
        steps = inputs.get("steps") if isinstance(inputs, Mapping) else None
        if not isinstance(steps, int) or not 0 < steps < 100:
            raise InvalidInput("'steps' must be an integer from 1 to 99")
        return steps

    def run(self, ctx: ProcessContext, parsed: int, progress: Progress) -> tuple[str, Any]:
        assert ctx.database_url.startswith("postgresql://")
        for i in range(parsed):
            progress(i + 1, parsed + 1, f"step {i + 1} of {parsed}")
            if not self.gate.acquire(timeout=30):
                raise TimeoutError("the test never let the step finish")
        self.finished.append(parsed)
        return "application/json", {"steps": parsed}


@pytest.fixture(autouse=True)
def _closed_gate() -> Iterator[None]:
    while Stepper.gate.acquire(blocking=False):
        pass
    yield
    for _ in range(10):
        Stepper.gate.release()  # never leave a worker waiting


@pytest.fixture
def stepper_app(db_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, Any]]:
    """An app serving the test process (and locate), with its job service."""
    app = FastAPI()
    service = mount(app, Settings(env="test", data_dir=tmp_path), db_url,
                    processes={"locate": LocateProcessor, "stepper": Stepper})
    try:
        with TestClient(app) as c:
            yield c, service
    finally:
        service.close()


def test_a_running_job_shows_its_progress(stepper_app: tuple[TestClient, Any]) -> None:
    client, _ = stepper_app
    r = client.post("/ogc/processes/stepper/execution", json={"inputs": {"steps": 3}},
                    headers=ASYNC)
    assert r.status_code == 201, r.text
    url = r.headers["location"]
    seen = []
    for step in (1, 2, 3):
        job = wait_for(client, url, lambda j, s=step: j["message"] == f"step {s} of 3")
        assert job["status"] == "running"
        assert 0 < job["progress"] < 100
        seen.append(job["progress"])
        html = client.get(url, params={"f": "html"}).text
        assert f"step {step} of 3" in html
        Stepper.gate.release()
    assert seen == sorted(seen) and len(set(seen)) == 3, seen  # 25, 50, 75
    job = wait_for(client, url, lambda j: j["status"] != "running")
    assert job["status"] == "successful" and job["progress"] == 100
    assert client.get(url + "/results").json() == {"steps": 3}


def test_a_dismissed_job_stops_at_its_next_step(stepper_app: tuple[TestClient, Any]) -> None:
    client, _ = stepper_app
    before = len(Stepper.finished)
    r = client.post("/ogc/processes/stepper/execution", json={"inputs": {"steps": 2}},
                    headers=ASYNC)
    url = r.headers["location"]
    wait_for(client, url, lambda j: j["message"] == "step 1 of 2")
    gone = client.delete(url)
    assert gone.status_code == 200 and gone.json()["status"] == "dismissed"
    Stepper.gate.release()
    time.sleep(0.3)
    assert client.get(url).status_code == 404
    assert len(Stepper.finished) == before  # it never reached its end


def test_jobs_beyond_the_workers_wait_and_can_be_dismissed(
    stepper_app: tuple[TestClient, Any]
) -> None:
    client, _ = stepper_app
    before = len(Stepper.finished)
    urls = [client.post("/ogc/processes/stepper/execution", json={"inputs": {"steps": 1}},
                        headers=ASYNC).headers["location"] for _ in range(3)]
    for url in urls[:2]:  # two workers: two jobs run, the third waits
        wait_for(client, url, lambda j: j["message"] == "step 1 of 1")
    queued = client.get(urls[2]).json()
    assert queued["status"] == "accepted" and queued["progress"] == 0
    assert client.delete(urls[2]).status_code == 200
    Stepper.gate.release()
    Stepper.gate.release()
    for url in urls[:2]:
        assert wait_for(client, url, lambda j: j["status"] != "running")["status"] == \
            "successful"
    assert client.get(urls[2]).status_code == 404
    assert len(Stepper.finished) == before + 2


def test_stopping_the_server_stops_its_jobs(db_url: str, tmp_path: Path) -> None:
    def app() -> FastAPI:
        a = FastAPI()
        a.state.ogc = mount(a, Settings(env="test", data_dir=tmp_path), db_url,
                            processes={"stepper": Stepper})
        return a

    first = app()
    with TestClient(first) as client:
        r = client.post("/ogc/processes/stepper/execution", json={"inputs": {"steps": 2}},
                        headers=ASYNC)
        url = r.headers["location"].replace("http://testserver", "")
        wait_for(client, url, lambda j: j["message"] == "step 1 of 2")
        first.state.ogc.close()  # what the app's lifespan does on shutdown
        Stepper.gate.release()
        job = wait_for(client, url, lambda j: j["status"] != "running")
    assert job["status"] == "failed" and "stopping" in job["message"]
    # the record outlives the process: a new server on the same data directory has it
    with TestClient(app()) as again:
        assert again.get(url).json()["status"] == "failed"


def test_sync_execution_does_not_block_the_event_loop(db_url: str, tmp_path: Path,
                                                       served: Served) -> None:
    app = FastAPI()
    service = mount(app, Settings(env="test", data_dir=tmp_path), db_url,
                    processes={"stepper": Stepper})

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    with served(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        answer: dict[str, httpx.Response] = {}
        slow = threading.Thread(target=lambda: answer.setdefault("r", http.post(
            "/ogc/processes/stepper/execution", json={"inputs": {"steps": 1}})))
        slow.start()
        time.sleep(0.3)  # the execution now waits in its thread
        t0 = time.monotonic()
        assert http.get("/ping").json() == {"pong": "yes"}
        assert time.monotonic() - t0 < 1.0
        assert slow.is_alive()
        Stepper.gate.release()
        slow.join(10)
        assert answer["r"].status_code == 200 and answer["r"].json() == {"steps": 1}
    service.close()


# -- links and pages, as remote clients see them ----------------------------------------


def test_a_real_client_sees_links_to_the_real_server(
    db_url: str, data_dir: Path, grids: tuple[list[str], np.ndarray], served: Served
) -> None:
    app = create_app(Settings(env="test", data_dir=data_dir), db_url)
    with served(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        landing = http.get("/ogc").json()
        listing = http.get("/ogc/processes").json()
        locate = http.get("/ogc/processes/locate").json()
        links = hrefs(landing) + hrefs(listing) + hrefs(locate)
        assert len(links) > 20
        assert all(h.startswith(base + "/") for h in links), links
        execute = next(link["href"] for link in locate["links"]
                       if link["rel"].endswith("/execute"))
        p = shapely.point_on_surface(grids[1][3])
        r = http.post(execute, json={"inputs": {"points": [[p.x, p.y]]}})
        assert r.status_code == 200, r.text
        assert r.json()["features"][0]["properties"]["micro_grid_code"] == grids[0][3]
        job = http.post(execute, json={"inputs": {"points": [[p.x, p.y]]}},
                        headers={"Prefer": "respond-async, wait=10"})  # RFC 7240 form
        assert job.status_code == 201, job.text
        assert job.headers["location"].startswith(f"{base}/ogc/jobs/")
        done = wait_for(http, job.headers["location"], lambda j: j["status"] == "successful")
        assert all(h.startswith(base + "/") for h in hrefs(done))


def test_public_url_fixes_the_links_whatever_the_host(db_url: str, data_dir: Path) -> None:
    public = "https://grid.example.cn/gov"
    app = create_app(Settings(env="test", data_dir=data_dir, public_url=public), db_url)
    with TestClient(app) as c:
        for host in ("testserver", "evil.example"):
            body = c.get("/ogc", headers={"host": host}).json()
            assert all(h.startswith(public + "/") for h in hrefs(body)), hrefs(body)
        assert c.get("/ogc/openapi").json()["servers"][0]["url"] == public + "/ogc"
    # another app in the same process keeps its own links
    with TestClient(create_app(Settings(env="test", data_dir=data_dir), db_url)) as c:
        assert all(h.startswith("http://testserver/") for h in hrefs(c.get("/ogc").json()))


ASSET = re.compile(r"<(?:script|img)\b[^>]*\bsrc=\"([^\"]*)\"|<link\b[^>]*\bhref=\"([^\"]*)\"")


def test_html_pages_load_nothing_from_another_host(client: TestClient, db_url: str) -> None:
    job = client.post(EXECUTE, json={"inputs": {"points": [[118.0, 36.8]]}}, headers=ASYNC)
    wait_for(client, job.headers["location"], lambda j: j["status"] != "running")
    pages = ["/ogc", "/ogc/conformance", "/ogc/processes", "/ogc/processes/locate",
             "/ogc/jobs", job.headers["location"], "/ogc/collections", "/ogc/openapi",
             "/ogc/openapi?ui=redoc", "/ogc/collections/none", "/ogc/TileMatrixSets"]
    for page in pages:
        r = client.get(page, headers={"accept": "text/html", **officer(db_url)})
        assert r.headers["content-type"].startswith("text/html"), page
        assets = [a or b for a, b in ASSET.findall(r.text)]
        assert assets, page
        for url in assets:
            assert url.startswith("http://testserver/"), (page, url)
            if "/static/" in url:  # stylesheets, scripts, images: all served here
                assert client.get(url).status_code == 200, url
        assert "unpkg.com" not in r.text and "jsdelivr" not in r.text and "cdnjs" not in r.text


def test_no_template_pygeoapi_would_use_loads_a_cdn() -> None:
    """Every template pygeoapi renders, as resolved with our overrides first: no script or
    stylesheet from another host once _base.html drops the map blocks."""
    import pygeoapi

    from api.ogc.config import TEMPLATES

    theirs = Path(pygeoapi.__file__).parent / "templates"
    ours_base = (TEMPLATES / "_base.html").read_text()
    assert "block extrahead" not in ours_base and "block extrafoot" not in ours_base
    remote = re.compile(r"<(?:script|link)\b[^>]*(?:src|href)=\"(?:https?:)?//", re.I)
    checked = 0
    for path in sorted(theirs.rglob("*.html")):
        name = path.relative_to(theirs)
        text = (TEMPLATES / name).read_text() if (TEMPLATES / name).exists() else path.read_text()
        if '{% extends "_base.html" %}' in text:
            text = re.sub(r"{% block (extrahead|extrafoot) %}.*?{% endblock %}", "", text,
                          flags=re.S)
        assert not remote.search(text), name
        checked += 1
    assert checked > 25
