"""The event store below the API: metrics on a known history, reminders, the outbox, the
air-quality rule and camera detections, on the real database."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import pytest

from layers import db, events, metrics, notify, rules
from layers.auth import Principal
from layers.workdays import BEIJING

T = TypeVar("T")
DISPATCHER = Principal("调度员", "dispatcher")
OFFICER = Principal("科长", "officer")


def run(url: str, fn: Callable[[Any], Awaitable[T]]) -> T:
    async def go() -> T:
        async with await db.aconnect(url) as conn:
            async with conn.transaction():
                return await fn(conn)

    return asyncio.run(go())


def bj(*a: int) -> dt.datetime:
    return dt.datetime(*a, tzinfo=BEIJING)


def grids(url: str) -> list[tuple[str, float, float, int]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT m.code, ST_X(ST_PointOnSurface(m.geom)), ST_Y(ST_PointOnSurface(m.geom)), "
            "wa.worker_id FROM micro_grids m JOIN worker_assignments wa ON "
            "wa.micro_grid_code = m.code AND wa.valid_to IS NULL JOIN grid_generations g ON "
            "g.id = m.generation_id AND g.valid_to IS NULL ORDER BY m.code LIMIT 2").fetchall()


def after_photo(url: str, event_id: int) -> int:
    with psycopg.connect(url) as conn:
        (pid,) = conn.execute(
            "INSERT INTO event_photos (event_id, stage, media_type, bytes, sha256, "
            "private_path, public_path, uploaded_by) VALUES (%s, 'after', 'image/jpeg', 1, "
            "'\\x00', 'x', 'x', 'test') RETURNING id", (event_id,)).fetchone()
    return int(pid)


@pytest.fixture
def history(fresh_db_url: str) -> dict[str, Any]:
    """A known week: two events in grid A (one closed on time and rated 5, one reworked,
    closed late and rated 3), a duplicate report, one late-dispatched event in grid B."""
    url = fresh_db_url
    (a, ax, ay, aw), (b, bx, by, _bw) = grids(url)
    worker = Principal("网格员", "grid_worker", worker_id=aw)

    def report(cat: str, x: float, y: float, at: dt.datetime) -> dict[str, Any]:
        return run(url, lambda c: events.report(c, DISPATCHER, events.Report(
            cat, x, y, source="hotline"), now=at))

    def act(who: Principal, eid: int, action: str, at: dt.datetime, **p: Any) -> None:
        run(url, lambda c: events.transition(c, who, eid, action, p, now=at))

    e1 = report("06010", ax, ay, bj(2026, 3, 2, 9))
    e4 = report("06010", ax, ay, bj(2026, 3, 2, 9, 30))
    act(worker, e1["id"], "handle", bj(2026, 3, 2, 10), photo_ids=[after_photo(url, e1["id"])])
    act(DISPATCHER, e1["id"], "verify_pass", bj(2026, 3, 2, 10, 30))
    act(DISPATCHER, e1["id"], "callback", bj(2026, 3, 2, 11), satisfaction=5)
    with psycopg.connect(url) as conn:  # another spot in grid A, beyond the 30 m rule
        a2x, a2y = conn.execute(
            "SELECT ST_X(p.geom), ST_Y(p.geom) FROM micro_grids m, ST_Dump(ST_GeneratePoints("
            "m.geom, 50, 7)) p WHERE m.code = %s AND m.generation_id = (SELECT id FROM "
            "grid_generations WHERE valid_to IS NULL) ORDER BY ST_Distance(p.geom::geography, "
            "ST_SetSRID(ST_MakePoint(%s, %s), 4490)::geography) DESC LIMIT 1",
            (a, ax, ay)).fetchone()
    e2 = report("06010", a2x, a2y, bj(2026, 3, 2, 14))
    act(worker, e2["id"], "handle", bj(2026, 3, 2, 17), photo_ids=[after_photo(url, e2["id"])])
    act(DISPATCHER, e2["id"], "verify_fail", bj(2026, 3, 2, 17, 10), reason="未清理干净")
    act(DISPATCHER, e2["id"], "dispatch", bj(2026, 3, 2, 17, 20))
    act(worker, e2["id"], "handle", bj(2026, 3, 3, 9, 30),
        photo_ids=[after_photo(url, e2["id"])])
    act(DISPATCHER, e2["id"], "verify_pass", bj(2026, 3, 3, 9, 40))
    act(DISPATCHER, e2["id"], "callback", bj(2026, 3, 3, 10), satisfaction=3)
    e3 = report("06001", bx, by, bj(2026, 3, 2, 10))
    act(DISPATCHER, e3["id"], "register", bj(2026, 3, 2, 11))
    act(DISPATCHER, e3["id"], "dispatch", bj(2026, 3, 2, 15, 30))  # limit: 15:00
    return {"url": url, "a": a, "b": b, "e": (e1, e2, e3, e4), "a_point": (ax, ay)}


def test_the_history_is_what_happened(history: dict[str, Any]) -> None:
    e1, e2, e3, e4 = history["e"]
    assert e4["duplicate_of"] == e1["id"]
    assert e2["micro_grid"]["code"] == history["a"] and e2["duplicate_of"] is None
    assert e1["deadline"] == bj(2026, 3, 2, 11).isoformat()  # 2 working hours
    assert e3["deadline"] == bj(2026, 3, 5, 18).isoformat()  # 3 working days


def test_metrics_on_a_known_week(history: dict[str, Any]) -> None:
    url, a, b = history["url"], history["a"], history["b"]
    figs = {f["code"]: f for f in run(url, lambda c: metrics.figures(
        c, "micro_grid", bj(2026, 3, 1), bj(2026, 3, 8), now=bj(2026, 3, 9)))}
    fa, fb = figs[a], figs[b]
    assert (fa["received"], fa["registered"], fa["dispatched"], fa["dispatched_on_time"]) == (
        3, 2, 2, 2)
    assert (fa["closed"], fa["closed_on_time"], fa["due"]) == (2, 1, 2)
    assert (fa["closure_rate"], fa["on_time_rate"]) == (1.0, 0.5)
    assert (fa["verified"], fa["reworked"], fa["rework_rate"]) == (2, 1, 0.5)
    assert fa["satisfaction"] == 4.0 and fa["rated"] == 2
    assert fa["avg_transfer_h"] == 0.0
    assert fa["avg_handling_h"] == pytest.approx((1 + 19.5) / 2, abs=0.01)
    # 30*0.5 + 20*1 + 15*1 + 20*(4/5) + 15*(1-0.5) = 73.5
    assert fa["score"] == 73.5 and fa["grade"] == "C"
    assert (fb["received"], fb["dispatched_on_time"], fb["due"], fb["closed"]) == (1, 0, 1, 0)
    assert fb["avg_transfer_h"] == 5.5 and fb["overdue_events"] == 1
    assert fb["rework_rate"] is None and fb["score"] == 0.0 and fb["grade"] == "D"
    # a period before anything happened has no groups; the street sums both grids
    assert run(url, lambda c: metrics.figures(c, "street", bj(2026, 1, 1), bj(2026, 2, 1),
                                              now=bj(2026, 3, 9))) == []
    (st,) = run(url, lambda c: metrics.figures(c, "street", bj(2026, 3, 1), bj(2026, 3, 8),
                                               now=bj(2026, 3, 9)))
    assert st["received"] == 4 and st["due"] == 3 and st["closure_rate"] == round(2 / 3, 4)
    depts = run(url, lambda c: metrics.figures(c, "department", bj(2026, 3, 1),
                                               bj(2026, 3, 8), now=bj(2026, 3, 9)))
    assert [d["code"] for d in depts] == ["urban_mgmt"]


def test_scores_collection_is_refreshed_for_every_grid(history: dict[str, Any]) -> None:
    url = history["url"]
    n = run(url, lambda c: metrics.refresh_scores(c, bj(2026, 3, 1), bj(2026, 3, 8),
                                                  now=bj(2026, 3, 9)))
    with psycopg.connect(url) as conn:
        (grids_now,) = conn.execute(
            "SELECT count(*) FROM micro_grids WHERE generation_id = "
            "(SELECT id FROM grid_generations WHERE valid_to IS NULL)").fetchone()
        row = conn.execute("SELECT score, grade, received FROM micro_grid_scores "
                           "WHERE code = %s", (history["a"],)).fetchone()
    assert n == grids_now and row == (73.5, "C", 3)


def test_reminders_once_per_light_and_the_outbox_retries(history: dict[str, Any]) -> None:
    url = history["url"]
    e3 = history["e"][2]
    with psycopg.connect(url) as conn:  # the department has a phone to text
        conn.execute("UPDATE departments SET phone = '12319' WHERE code = 'urban_mgmt'")
    near = bj(2026, 3, 5, 14)  # 80 % of three working days used: yellow
    assert run(url, lambda c: notify.queue_reminders(c, now=near)) == 1
    assert run(url, lambda c: notify.queue_reminders(c, now=near)) == 0  # not twice
    assert run(url, lambda c: notify.queue_reminders(c, now=bj(2026, 3, 6, 9))) == 1  # red

    class Flaky:
        def __init__(self) -> None:
            self.sent: list[str] = []
            self.fail = True

        def send(self, channel: str, recipient: str, body: str) -> None:
            if self.fail and recipient == "12319":
                raise ConnectionError("SMS gateway down")
            self.sent.append(body)

    sender = Flaky()
    t0 = bj(2026, 3, 6, 10)
    sent, failed = run(url, lambda c: notify.deliver(c, sender, now=t0))
    assert (sent, failed) == (3, 2)  # three dispatch texts to the worker; the gateway
    # refuses the department's two reminders
    assert run(url, lambda c: notify.deliver(c, sender, now=t0)) == (0, 0)  # backing off
    sender.fail = False
    sent, failed = run(url, lambda c: notify.deliver(c, sender, now=t0 + dt.timedelta(hours=2)))
    assert (sent, failed) == (2, 0)
    assert any(f"#{e3['id']}" in b and "已超期" in b for b in sender.sent)
    with psycopg.connect(url) as conn:
        (left,) = conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
        (tries,) = conn.execute("SELECT max(attempts) FROM outbox").fetchone()
    assert left == 0 and tries == 2


def stations(url: str) -> tuple[str, list[str]]:
    with psycopg.connect(url) as conn:
        (me,) = conn.execute("SELECT code FROM sensors WHERE kind = 'pm25_station' "
                             "ORDER BY code LIMIT 1").fetchone()
        near = [r[0] for r in conn.execute(
            "SELECT s.code FROM sensors s, sensors m WHERE m.code = %s AND s.kind = "
            "'pm25_station' AND s.id <> m.id ORDER BY s.geom::geography <-> m.geom::geography "
            "LIMIT 3", (me,))]
    return me, near


def test_the_air_quality_rule(fresh_db_url: str) -> None:
    url = fresh_db_url
    me, near = stations(url)
    t = bj(2026, 11, 20, 10)

    def ingest(values: dict[str, float], at: dt.datetime) -> dict[str, Any]:
        return run(url, lambda c: rules.ingest_readings(
            c, [rules.Reading(k, at, v) for k, v in values.items()], now=at))

    calm = ingest({me: 58.0, near[0]: 40.0, near[1]: 45.0, near[2]: 50.0}, t)  # 58 < 1.3*45
    assert calm["stored"] == 4 and calm["alerts"] == []
    t2 = t + dt.timedelta(hours=1)
    hot = ingest({near[0]: 40.0, near[1]: 45.0, near[2]: 50.0, me: 59.0}, t2)
    (alert,) = hot["alerts"]
    assert alert["sensor"] == me and alert["neighbours_mean"] == 45.0
    again = ingest({near[0]: 40.0, near[1]: 45.0, near[2]: 50.0, me: 59.0}, t2)
    assert again == {"stored": 0, "already_stored": 4, "alerts": []}
    later = ingest({near[0]: 40.0, near[1]: 45.0, near[2]: 50.0, me: 80.0},
                   t2 + dt.timedelta(hours=1))
    assert later["alerts"][0]["duplicate_of"] == alert["event"]  # linked, not multiplied
    with psycopg.connect(url) as conn:
        ev = conn.execute("SELECT e.category_code, e.source, e.source_ref, e.micro_grid_code, "
                          "ST_Intersects(m.geom, e.geom) FROM events e JOIN micro_grids m ON "
                          "m.id = e.micro_grid_id WHERE e.id = %s", (alert["event"],)).fetchone()
        sms = conn.execute(
            "SELECT o.recipient FROM outbox o WHERE o.body LIKE '%%空气质量预警%%'").fetchall()
        (phone,) = conn.execute(
            "SELECT w.phone FROM worker_assignments wa JOIN workers w ON w.id = wa.worker_id "
            "WHERE wa.micro_grid_code = %s AND wa.valid_to IS NULL", (ev[3],)).fetchone()
    assert ev[:3] == ("90001", "sensor", me) and ev[4]
    assert [s[0] for s in sms] == [phone, phone]  # one text per alerting reading
    with pytest.raises(Exception, match="unknown sensor"):
        ingest({"NOPE": 1.0}, t)


def test_a_camera_detection_lands_where_the_camera_looks(fresh_db_url: str) -> None:
    url = fresh_db_url
    with psycopg.connect(url) as conn:
        code, heading = conn.execute("SELECT code, heading_deg FROM cameras WHERE range_m >= 40 "
                                     "ORDER BY code LIMIT 1").fetchone()
        (look_grid,) = conn.execute(
            "SELECT m.code FROM cameras c JOIN micro_grid_parts p ON ST_Intersects(p.geom, "
            "ST_Project(c.geom::geography, least(c.range_m / 2, 60), radians(c.heading_deg))"
            "::geometry) JOIN micro_grids m ON m.id = p.micro_grid_id WHERE c.code = %s "
            "ORDER BY m.code LIMIT 1", (code,)).fetchone()
    first = run(url, lambda c: rules.camera_detection(c, OFFICER, code, "garbage", 0.91))
    assert first["event"]["micro_grid"]["code"] == look_grid
    assert first["event"]["source"] == "ai_camera" and first["event"]["source_ref"] == code
    second = run(url, lambda c: rules.camera_detection(c, OFFICER, code, "garbage", 0.88))
    assert second["event"]["duplicate_of"] == first["event"]["id"]
    low = run(url, lambda c: rules.camera_detection(c, OFFICER, code, "garbage", 0.3))
    assert low["ignored"] is True
    with pytest.raises(Exception, match="unknown class"):
        run(url, lambda c: rules.camera_detection(c, OFFICER, code, "ufo", 0.9))
    _ = heading
