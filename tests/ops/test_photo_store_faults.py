"""An unwritable or full photo store: the report (or photo) is refused with a 503 problem
naming the photo store, and nothing is half-written: no event, history, outbox message,
photo row or file.

Two real faults, no stub: the store under a path whose parent is a regular file
(``ENOTDIR``, in-process), and a full disk simulated by a real server process whose file
size limit (``RLIMIT_FSIZE``, with ``SIGXFSZ`` ignored) makes the photo's write fail half
way with ``EFBIG``, as ``ENOSPC`` would (as root, permission bits stop nothing).
"""

from __future__ import annotations

import io
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import EventTown, jpeg
from fastapi.testclient import TestClient
from psycopg import sql

from api.app import create_app
from api.settings import Settings
from layers.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
TABLES = ("events", "event_history", "outbox", "event_photos")
FSIZE_LIMIT = 64 * 1024  # bytes any file of the server process may reach


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                    sql.Identifier(t))).fetchone()[0] for t in TABLES}


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def big_jpeg() -> bytes:
    """A JPEG of noise, several times FSIZE_LIMIT (noise does not compress)."""
    from PIL import Image

    rng = random.Random(9)
    img = Image.frombytes("RGB", (640, 480), rng.randbytes(640 * 480 * 3))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=95)
    assert len(out.getvalue()) > 3 * FSIZE_LIMIT
    return out.getvalue()


def is_store_problem(r: Any) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["title"] == "Photo store unavailable" and "photo store" in body["detail"]


@pytest.fixture
def broken(event_town: EventTown, tmp_path: Path) -> Iterator[TestClient]:
    """A second server on the same database whose photo store cannot be created: its
    parent is a regular file (ENOTDIR)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the photo store's parent should be")
    s = Settings(env="test", intake_limit=10_000, data_dir=tmp_path / "data",
                 GRIDGOV_PHOTOS_DIR=blocker / "photos")
    with TestClient(create_app(s, event_town.url)) as c:
        yield c


def test_a_report_with_a_photo_into_an_unwritable_store_leaves_nothing(
    event_town: EventTown, broken: TestClient
) -> None:
    t = event_town
    before = counts(t.url)
    body = {"category": "06010", "lon": t.point[0], "lat": t.point[1], "description": "垃圾"}
    r = broken.post("/api/v1/events", data={"event": json.dumps(body)},
                    files=[("photo", ("a.jpg", jpeg(), "image/jpeg"))],
                    headers={**t.auth["resident"], "Idempotency-Key": "store-down-1"})
    is_store_problem(r)
    assert counts(t.url) == before
    # the same report once the store works: accepted (the key was not used up)
    r = t.post("resident", "/api/v1/events", data={"event": json.dumps(body)},
               files=[("photo", ("a.jpg", jpeg(), "image/jpeg"))],
               headers={"Idempotency-Key": "store-down-1"})
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers


def test_an_after_photo_into_an_unwritable_store_leaves_the_event_unhandled(
    event_town: EventTown, broken: TestClient
) -> None:
    t = event_town
    ev = t.post("resident", "/api/v1/events", json={
        "category": "06010", "lon": t.point[0], "lat": t.point[1]}).json()
    eid = ev["id"]
    assert t.act("worker", eid, "accept").json()["state"] == "accepted"
    before = counts(t.url)
    r = broken.post(f"/api/v1/events/{eid}/photos", headers=t.auth["worker"],
                    files={"photo": ("after.jpg", jpeg(), "image/jpeg")},
                    data={"stage": "after"})
    is_store_problem(r)
    assert counts(t.url) == before
    r = t.act("worker", eid, "handle")  # no after photo was stored: no handling
    assert r.status_code == 422 and "after" in r.json()["detail"]
    assert t.get("worker", f"/api/v1/events/{eid}").json()["state"] == "accepted"
    assert counts(t.url) == before


def _limited() -> None:  # in the server's child process, before exec
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG


def test_a_full_disk_refuses_the_report_and_the_after_photo(
    event_town: EventTown, tmp_path: Path
) -> None:
    t = event_town
    store = tmp_path / "full-store"
    port = free_port()
    env = {**os.environ, "GRIDGOV_DATABASE_URL": t.url, "GRIDGOV_DATA_DIR": str(tmp_path / "d"),
           "GRIDGOV_PHOTOS_DIR": str(store), "GRIDGOV_ENV": "test", "WORKERS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--no-setup"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=_limited)  # noqa: PLW1509 - no threads started yet
    base = f"http://127.0.0.1:{port}"
    photo = big_jpeg()
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
        with httpx.Client(base_url=base, timeout=60) as c:
            # a small photo fits: the store works, the limit is what fails the big one
            body = {"category": "06010", "lon": t.point[0], "lat": t.point[1]}
            r = c.post("/api/v1/events", data={"event": json.dumps(body)},
                       files=[("photo", ("s.jpg", jpeg(), "image/jpeg"))],
                       headers=t.auth["resident"])
            assert r.status_code == 201, r.text
            eid = r.json()["id"]
            kept = sorted(files_under(store))
            assert len(kept) == 2  # the original and its public copy
            before = counts(t.url)
            r = c.post("/api/v1/events", data={"event": json.dumps(body)},
                       files=[("photo", ("big.jpg", photo, "image/jpeg"))],
                       headers=t.auth["resident"])
            is_store_problem(r)
            assert "File too large" in r.json()["detail"]
            assert counts(t.url) == before
            assert sorted(files_under(store)) == kept  # no part-written file left
            # the handler's after photo: refused the same way, the event stays accepted
            assert t.act("worker", eid, "accept").json()["state"] == "accepted"
            before = counts(t.url)
            r = c.post(f"/api/v1/events/{eid}/photos", headers=t.auth["worker"],
                       files={"photo": ("after.jpg", photo, "image/jpeg")},
                       data={"stage": "after"})
            is_store_problem(r)
            assert counts(t.url) == before
            assert sorted(files_under(store)) == kept
            assert c.post(f"/api/v1/events/{eid}/transitions", headers=t.auth["worker"],
                          json={"action": "handle"}).status_code == 422
            assert c.get(f"/api/v1/events/{eid}").json()["state"] == "accepted"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
