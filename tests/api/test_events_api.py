"""/api/v1/events: intake, the whole workflow with every branch, permissions, personal data,
photos, idempotency and concurrency, against the real database."""

from __future__ import annotations

import datetime as dt
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from conftest import EventTown, jpeg

from gis.chinacrs import wgs84_to_gcj02


def report(t: EventTown, role: str | None = None, category: str = "06010",
           point: tuple[float, float] | None = None, **extra: Any) -> Any:
    lon, lat = point or t.point
    return t.post(role, "/api/v1/events", json={"category": category, "lon": lon, "lat": lat,
                                                  "description": "路边垃圾堆", **extra})


def one(url: str, query: str, *args: Any) -> Any:
    with psycopg.connect(url) as conn:
        return conn.execute(query, args).fetchone()


def upload(t: EventTown, role: str, event_id: int, data: bytes, stage: str = "after") -> Any:
    return t.post(role, f"/api/v1/events/{event_id}/photos",
                  files={"photo": ("after.jpg", data, "image/jpeg")}, data={"stage": stage})


def test_a_gcj02_report_lands_on_the_grid_workers_list_at_once(event_town: EventTown) -> None:
    t = event_town
    glon, glat = wgs84_to_gcj02(*t.point)
    r = t.post(None, "/api/v1/events", json={
        "category": "06010", "lon": float(glon), "lat": float(glat), "crs": "gcj02",
        "description": "小区门口暴露垃圾", "contact": {"name": "王女士", "phone": "13912345678"}})
    assert r.status_code == 201, r.text
    ev = r.json()
    assert r.headers["location"] == f"/api/v1/events/{ev['id']}"
    assert ev["micro_grid"]["code"] == t.grid
    assert ev["state"] == "dispatched" and ev["assignee"]["name"]
    assert ev["light"] == "green" and ev["deadline"]
    assert abs(ev["location"]["lon"] - t.point[0]) < 1e-6  # GCJ-02 shift undone
    assert "13912345678" not in r.text and "王女士" not in r.text
    mine = t.get("worker", "/api/v1/events", params={"mine": "true"}).json()["events"]
    assert [e["id"] for e in mine] == [ev["id"]]
    assert t.get("other_worker", "/api/v1/events", params={"mine": "true"}).json()["events"] == []
    hist = t.get(None, f"/api/v1/events/{ev['id']}/history").json()
    assert [h["action"] for h in hist] == ["report", "register", "dispatch"]
    # the worker is told by text message, through the outbox
    (n,) = one(t.url, "SELECT count(*) FROM outbox WHERE event_id = %s", ev["id"])
    assert n == 1


def test_a_second_report_of_the_same_pile_is_linked_not_multiplied(event_town: EventTown) -> None:
    t = event_town
    first = report(t).json()
    lon, lat = t.point
    second = report(t, point=(lon + 0.0001, lat)).json()  # ~9 m away, within 30 m
    assert second["state"] == "merged" and second["duplicate_of"] == first["id"]
    assert t.get(None, f"/api/v1/events/{first['id']}").json()["duplicates"] == 1
    other_kind = report(t, category="09006").json()  # street vending at the same spot
    assert other_kind["state"] == "dispatched" and other_kind["duplicate_of"] is None
    far = report(t, point=(lon + 0.001, lat)).json()  # ~90 m: another pile
    if far["micro_grid"]["code"] == t.grid:
        assert far["duplicate_of"] is None


@pytest.mark.parametrize(("body", "status", "word"), [
    ({"category": "99999", "lon": 118.05, "lat": 36.8}, 400, "unknown category"),
    ({"category": "06010", "lon": 118.05, "lat": 36.8, "crs": "EPSG:9999"}, 400, "crs"),
    ({"category": "6010", "lon": 118.05, "lat": 36.8}, 400, "category"),
    ({"category": "06010", "lon": 100.0, "lat": 30.0}, 422, "outside"),
    ({"category": "06010", "lon": 118.05}, 400, "lat"),
    ({"category": "06010", "lon": 118.05, "lat": 36.8, "source": "ai_camera"}, 403, "source"),
    ({"category": "06010", "lon": 118.05, "lat": 36.8, "extra": 1}, 400, "extra"),
])
def test_bad_reports_are_refused_naming_the_problem(event_town: EventTown, body: dict[str, Any],
                                                    status: int, word: str) -> None:
    r = event_town.post(None, "/api/v1/events", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert word in r.json()["detail"]
    (n,) = one(event_town.url, "SELECT count(*) FROM events")
    assert n == 0


def test_non_finite_coordinates_are_refused(event_town: EventTown) -> None:
    r = event_town.post(None, "/api/v1/events", content=b'{"category": "06010", "lon": NaN, '
                        b'"lat": 36.8}', headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_the_whole_loop_with_rework_and_callback(event_town: EventTown) -> None:
    t = event_town
    ev = report(t, "resident").json()
    eid = ev["id"]
    assert t.act("worker", eid, "accept").json()["state"] == "accepted"
    r = t.act("worker", eid, "handle")
    assert r.status_code == 422 and "after" in r.json()["detail"]  # no photo, no handling
    pid = upload(t, "worker", eid, jpeg()).json()["id"]
    assert t.act("worker", eid, "handle", photo_ids=[pid]).json()["state"] == "handled"
    r = t.act("dispatcher", eid, "verify_fail")
    assert r.status_code == 400 and "reason" in r.json()["detail"]
    ev = t.act("dispatcher", eid, "verify_fail", reason="垃圾未清运干净").json()
    assert ev["state"] == "rework" and ev["rework_count"] == 1
    assert t.act("dispatcher", eid, "dispatch").json()["state"] == "dispatched"
    pid2 = upload(t, "worker", eid, jpeg()).json()["id"]
    assert t.act("worker", eid, "handle", photo_ids=[pid2]).json()["state"] == "handled"
    ev = t.act("dispatcher", eid, "verify_pass").json()
    assert ev["state"] == "closed" and ev["closed_at"] and ev["light"] is None
    r = t.act("resident", eid, "callback", satisfaction=6)
    assert r.status_code == 400
    assert t.act("resident", eid, "callback", satisfaction=5).json()["satisfaction"] == 5
    hist = t.get(None, f"/api/v1/events/{eid}/history").json()
    assert [h["action"] for h in hist] == [
        "report", "register", "dispatch", "accept", "handle", "verify_fail", "dispatch",
        "handle", "verify_pass", "callback"]
    assert [h["seq"] for h in hist] == list(range(1, 11))
    assert hist[4]["photo_ids"] == [pid] and hist[5]["reason"] == "垃圾未清运干净"
    assert all(h["actor"] and h["at"] for h in hist)
    # reopen: back to registered with a new deadline
    ev = t.act("dispatcher", eid, "reopen", reason="居民反映又有垃圾").json()
    assert ev["state"] == "registered" and ev["reopen_count"] == 1 and ev["closed_at"] is None


def test_illegal_transitions_are_409_with_the_allowed_ones(event_town: EventTown) -> None:
    t = event_town
    eid = report(t).json()["id"]
    r = t.act("dispatcher", eid, "verify_pass")
    assert r.status_code == 409
    body = r.json()
    assert body["state"] == "dispatched"
    assert set(body["allowed"]) == {"reassign", "escalate"}  # supervise: officers
    r = t.act("worker", eid, "register")
    assert r.status_code == 409 and set(r.json()["allowed"]) >= {"accept", "handle", "return"}
    r = t.act("worker", eid, "fly")
    assert r.status_code == 400 and "unknown action" in r.json()["detail"]
    assert t.get("worker", f"/api/v1/events/{eid}").json()["allowed"] == [
        "accept", "return", "handle", "request_extension", "request_suspension"]


def test_a_grid_worker_acts_only_on_their_own_grids(event_town: EventTown) -> None:
    t = event_town
    eid = report(t).json()["id"]
    r = t.act("other_worker", eid, "accept")
    assert r.status_code == 403 and "not in" in r.json()["detail"]
    assert upload(t, "other_worker", eid, jpeg()).status_code == 403
    assert t.act("sanitation", eid, "accept").status_code == 403
    assert t.post(None, f"/api/v1/events/{eid}/transitions",
                  json={"action": "accept"}).status_code == 401
    assert t.act("worker", eid, "accept").status_code == 200


def test_return_reassign_and_department_handling(event_town: EventTown) -> None:
    t = event_town
    eid = report(t).json()["id"]
    ev = t.act("worker", eid, "return", reason="不属于本网格职责").json()
    assert ev["state"] == "registered" and ev["assignee"] is None
    ev = t.act("dispatcher", eid, "dispatch", department="sanitation").json()
    assert ev["state"] == "dispatched" and ev["department"]["code"] == "sanitation"
    assert t.act("worker", eid, "accept").status_code == 403  # the department holds it now
    assert t.act("sanitation", eid, "accept").json()["state"] == "accepted"
    ev = t.act("dispatcher", eid, "reassign", department="urban_mgmt").json()
    assert ev["state"] == "dispatched"
    assert ev["department"]["code"] == "urban_mgmt"
    assert t.act("sanitation", eid, "handle").status_code == 403
    r = t.act("dispatcher", eid, "reassign", department="nope")
    assert r.status_code == 400 and "unknown department" in r.json()["detail"]


def test_extension_and_suspension_need_approval(event_town: EventTown) -> None:
    t = event_town
    ev = report(t).json()
    eid, due = ev["id"], ev["deadline"]
    r = t.act("worker", eid, "approve_extension")
    assert r.status_code == 409
    ev = t.act("worker", eid, "request_extension", reason="需要清运车", extend=1,
               unit="working_days").json()
    assert ev["pending"]["kind"] == "extension" and ev["deadline"] == due
    assert t.act("worker", eid, "request_suspension", reason="x").status_code == 409
    assert t.act("dispatcher", eid, "approve_extension").status_code == 409  # officers approve
    ev = t.act("officer", eid, "approve_extension").json()
    assert ev["pending"] is None and ev["deadline"] > due
    ev = t.act("worker", eid, "request_suspension", reason="涉及产权纠纷，待法院判决").json()
    ev = t.act("officer", eid, "approve_suspension").json()
    assert ev["state"] == "suspended" and ev["light"] == "paused"
    ev = t.act("officer", eid, "resume").json()
    assert ev["state"] == "dispatched" and ev["deadline"] >= due
    hist = [h["action"] for h in t.get(None, f"/api/v1/events/{eid}/history").json()]
    assert hist[-5:] == ["request_extension", "approve_extension", "request_suspension",
                         "approve_suspension", "resume"]
    ev = t.act("worker", eid, "request_extension", reason="再延", extend=2,
               unit="working_hours").json()
    ev = t.act("officer", eid, "deny_extension", reason="不予延期").json()
    assert ev["pending"] is None


def test_escalation_is_dispatched_by_the_level_above(event_town: EventTown) -> None:
    t = event_town
    ev = report(t, "resident", category="06001", description="农田里新搭钢棚").json()
    eid = ev["id"]
    assert ev["state"] == "reported"  # illegal construction is registered after review
    assert t.act("dispatcher", eid, "register").json()["state"] == "registered"
    ev = t.act("dispatcher", eid, "escalate", reason="街道无执法权，街呼区应").json()
    assert ev["state"] == "escalated" and ev["level"] == 1
    r = t.act("dispatcher", eid, "dispatch")
    assert r.status_code == 409
    ev = t.act("officer", eid, "dispatch", department="urban_mgmt").json()
    assert ev["state"] == "dispatched" and ev["department"]["code"] == "urban_mgmt"
    ev = t.act("officer", eid, "supervise", reason="区领导督办").json()
    assert ev["supervised"] is True
    assert t.act("dispatcher", eid, "supervise", reason="x").status_code == 409


def test_reject_needs_a_reason(event_town: EventTown) -> None:
    t = event_town
    eid = report(t, category="90002", description="咨询办事流程").json()["id"]
    assert t.act("dispatcher", eid, "reject").status_code == 400
    ev = t.act("dispatcher", eid, "reject", reason="非城市管理事项，已转相关部门答复").json()
    assert ev["state"] == "rejected"


def test_personal_data_only_for_those_who_call_back_and_every_read_logged(
        event_town: EventTown) -> None:
    t = event_town
    ev = report(t, contact={"name": "李先生", "phone": "13711112222"}).json()
    eid = ev["id"]
    assert "13711112222" not in t.get("officer", f"/api/v1/events/{eid}").text
    assert t.get(None, f"/api/v1/events/{eid}/contact").status_code == 401
    assert t.get("worker", f"/api/v1/events/{eid}/contact").status_code == 403
    c = t.get("dispatcher", f"/api/v1/events/{eid}/contact").json()
    assert c["reporter"]["phone"] == "13711112222" and c["worker"]["phone"]
    row = one(t.url, "SELECT actor, actor_role, event_id, route FROM personal_data_reads")
    assert row == ("调度员", "dispatcher", eid, f"/api/v1/events/{eid}/contact")
    # the public collection and list never carry it
    assert "13711112222" not in t.get(None, "/api/v1/events").text
    assert "13711112222" not in t.get(None, "/ogc/collections/events/items").text


def test_history_is_append_only(event_town: EventTown) -> None:
    t = event_town
    report(t)
    with psycopg.connect(t.url) as conn:
        for stmt in ("UPDATE event_history SET actor = 'x'", "DELETE FROM event_history",
                     "TRUNCATE event_history CASCADE"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
            conn.rollback()


def test_photos_are_checked_and_their_public_copy_has_no_location(
        event_town: EventTown) -> None:
    from PIL import Image

    t = event_town
    eid = report(t).json()["id"]
    r = upload(t, "worker", eid, jpeg(gps=True))
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    public = t.get(None, f"/api/v1/photos/{pid}")
    assert public.status_code == 200 and public.headers["content-type"] == "image/jpeg"
    exif = Image.open(io.BytesIO(public.content)).getexif()
    assert 0x8825 not in exif and 0x010F not in exif
    assert t.get("worker", f"/api/v1/photos/{pid}", params={"original": "true"}
                 ).status_code == 403
    orig = t.get("dispatcher", f"/api/v1/photos/{pid}", params={"original": "true"})
    assert Image.open(io.BytesIO(orig.content)).getexif()[0x010F] == "PhoneMaker"
    bad = upload(t, "worker", eid, b"<?php system($_GET['c']); ?>")
    assert bad.status_code == 400 and "JPEG, PNG or WebP" in bad.json()["detail"]
    huge = upload(t, "worker", eid, b"\xff\xd8" + b"0" * (10 * 1024 * 1024 + 10))
    assert huge.status_code in (400, 413)
    (n,) = one(t.url, "SELECT count(*) FROM event_photos")
    assert n == 1
    files = sorted(p.name for p in t.photos.rglob("*") if p.is_file())
    assert len(files) == 2  # the original and the public copy, nothing half-written


def test_a_report_with_photos_in_one_multipart_request(event_town: EventTown) -> None:
    import json

    t = event_town
    body = {"category": "06010", "lon": t.point[0], "lat": t.point[1]}
    r = t.post(None, "/api/v1/events", data={"event": json.dumps(body)},
               files=[("photo", ("a.jpg", jpeg(), "image/jpeg")),
                      ("photo", ("b.jpg", jpeg(gps=True), "image/jpeg"))])
    assert r.status_code == 201, r.text
    assert [p["stage"] for p in r.json()["photos"]] == ["report", "report"]
    # one bad photo refuses the whole report: no event, no file
    r = t.post(None, "/api/v1/events", data={"event": json.dumps(body)},
               files=[("photo", ("a.jpg", jpeg(), "image/jpeg")),
                      ("photo", ("b.txt", b"hello", "image/jpeg"))])
    assert r.status_code == 400
    (n,) = one(t.url, "SELECT count(*) FROM events")
    assert n == 1
    assert len([p for p in t.photos.rglob("*") if p.is_file()]) == 4


def test_idempotency_key_makes_a_retry_safe(event_town: EventTown) -> None:
    t = event_town
    body = {"category": "09006", "lon": t.point[0], "lat": t.point[1]}
    h = {"Idempotency-Key": "phone-42-report-1"}
    a = t.post("resident", "/api/v1/events", json=body, headers=h)
    b = t.post("resident", "/api/v1/events", json=body, headers=h)
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] == b.json()["id"] and b.headers["idempotent-replayed"] == "true"
    (n,) = one(t.url, "SELECT count(*) FROM events")
    assert n == 1
    r = t.post("resident", "/api/v1/events", json={**body, "description": "x"}, headers=h)
    assert r.status_code == 422 and "Idempotency-Key" in r.json()["detail"]
    # a transition retried does not run twice
    eid = a.json()["id"]
    h2 = {"Idempotency-Key": "accept-once"}
    for _ in range(2):
        assert t.post("worker", f"/api/v1/events/{eid}/transitions", json={"action": "accept"},
                      headers=h2).status_code == 200
    (n,) = one(t.url, "SELECT count(*) FROM event_history WHERE action = 'accept'")
    assert n == 1


def test_hundreds_of_concurrent_reports_and_transitions_are_all_counted(
        event_town: EventTown) -> None:
    t = event_town
    lon, lat = t.point
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: report(t, "dispatcher", category="06002",
                                                 point=(lon + i * 1e-7, lat),
                                                 source="hotline"), range(200)))
    assert all(a.status_code == 201 for a in answers), {a.status_code for a in answers}
    states = [a.json()["state"] for a in answers]
    assert states.count("dispatched") == 1 and states.count("merged") == 199
    primary = next(a.json()["id"] for a in answers if a.json()["state"] == "dispatched")
    assert t.get(None, f"/api/v1/events/{primary}").json()["duplicates"] == 199
    (n,) = one(t.url, "SELECT count(*) FROM events")
    assert n == 200
    # 100 concurrent supervision notes on one event: every one stored, in order
    with ThreadPoolExecutor(16) as pool:
        rs = list(pool.map(lambda i: t.act("officer", primary, "supervise", reason=f"第{i}次督办"),
                           range(100)))
    assert all(r.status_code == 200 for r in rs)
    seqs = [h["seq"] for h in t.get(None, f"/api/v1/events/{primary}/history").json()]
    assert seqs == list(range(1, len(seqs) + 1))
    assert sum(1 for h in t.get(None, f"/api/v1/events/{primary}/history").json()
               if h["action"] == "supervise") == 100
    # 30 concurrent accepts: exactly one wins, the rest are told it is accepted already
    with ThreadPoolExecutor(16) as pool:
        rs = list(pool.map(lambda _i: t.act("worker", primary, "accept"), range(30)))
    assert sorted(r.status_code for r in rs) == [200] + [409] * 29
    ev = t.get(None, f"/api/v1/events/{primary}").json()
    assert ev["version"] == 1 + 1 + 199 + 100 + 1 + 1  # report, register+dispatch, ...


def test_deadlines_count_working_time_across_national_day(event_town: EventTown) -> None:
    t = event_town
    r = report(t, "dispatcher", category="90002", source="hotline",
               reported_at="2026-09-30T17:00:00+08:00")
    assert r.status_code == 201, r.text
    # 5 working days after Sep 30 2026: Oct 8, 9, 10 (a Saturday, worked), 12, 13
    assert r.json()["deadline"] == "2026-10-13T18:00:00+08:00"
    r = report(t, "dispatcher", category="06010", source="hotline",
               reported_at="2026-09-30T17:00:00+08:00", point=t.other_point)
    assert r.json()["deadline"] == "2026-10-08T10:00:00+08:00"
    assert r.json()["light"] == "red"
    red = t.get(None, "/api/v1/events", params={"light": "red"}).json()["events"]
    assert r.json()["id"] in [e["id"] for e in red]
    assert report(t, None, reported_at="2026-09-30T17:00:00+08:00").status_code == 403


def test_login_with_a_password_gives_a_token(event_town: EventTown) -> None:
    from layers import db
    from layers.auth import create_user

    t = event_town
    with db.connect(t.url) as conn:
        create_user(conn, "网格员丙", "grid_worker", grid=t.grid, password="correct horse 42")
        conn.commit()
    r = t.post(None, "/api/v1/login", json={"name": "网格员丙", "password": "wrong password"})
    assert r.status_code == 401
    r = t.post(None, "/api/v1/login", json={"name": "网格员丙", "password": "correct horse 42"})
    token = r.json()["token"]
    mine = t.client.get("/api/v1/events", params={"mine": "true"},
                        headers={"Authorization": f"Bearer {token}"})
    assert mine.status_code == 200
    # the token expires (GRIDGOV_LOGIN_TOKEN_DAYS, 30): the answer says when, the row too
    assert r.json()["expires_in"] == 30 * 86400
    ends = dt.datetime.fromisoformat(r.json()["expires_at"])
    assert abs((ends - dt.datetime.now(dt.UTC)) - dt.timedelta(days=30)) < dt.timedelta(minutes=5)
    with db.connect(t.url) as conn:
        (stored,) = conn.execute("SELECT expires_at FROM api_tokens WHERE name = '网格员丙' "
                                 "AND expires_at IS NOT NULL").fetchone()
        assert stored == ends
        conn.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second' "
                     "WHERE name = '网格员丙'")
        conn.commit()
    late = t.client.get("/api/v1/events", params={"mine": "true"},
                        headers={"Authorization": f"Bearer {token}"})
    assert late.status_code == 401
    (h,) = one(t.url, "SELECT password_hash FROM users WHERE name = '网格员丙'")
    assert h.startswith("$argon2id$") and "correct horse" not in h


def test_public_intake_is_rate_limited(event_town: EventTown) -> None:
    t = event_town
    t.client.app.state.settings = t.client.app.state.settings.model_copy(
        update={"intake_limit": 3})
    codes = [report(t, point=(t.point[0] + i * 0.001, t.point[1])).status_code
             for i in range(5)]
    assert codes[:3] != [429] * 3 and codes[3:] == [429, 429]
    r = report(t)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert report(t, "dispatcher", source="hotline").status_code == 201  # staff are not limited
