"""Storing orthophoto changes: parcel, verdict, one event per suspected illegal structure,
nothing twice on a re-run; the change_detections collection and its review column."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from layers import changes, db
from layers.auth import create_user

BOX = ("SELECT p.code, ST_AsGeoJSON(ST_Transform(ST_Expand(ST_Transform(ST_PointOnSurface("
       "p.geom), 4548), 6), 4326)) FROM parcels p WHERE {} AND p.area_m2 > 2000 "
       "AND EXISTS (SELECT 1 FROM micro_grid_parts mp WHERE ST_Intersects(mp.geom, "
       "ST_PointOnSurface(p.geom))) ORDER BY p.code LIMIT 1")


def feature(kind: str, geom: str, area: float = 144.0) -> dict[str, Any]:
    return {"type": "Feature", "geometry": json.loads(geom),
            "properties": {"kind": kind, "area_m2": area, "score": 0.9, "cue": "height"}}


def store(url: str, fc: dict[str, Any]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with await db.aconnect(url) as conn, conn.transaction():
            return await changes.store(conn, "pairkey", "before.tif", "after.tif", fc)

    return asyncio.run(go())


def test_verdicts_events_and_no_second_event_on_a_rerun(fresh_db_url: str) -> None:
    url = fresh_db_url
    with psycopg.connect(url) as conn:
        farm = conn.execute(BOX.format("p.approved_use LIKE '01%%' AND p.permit_status = "
                                       "'none'")).fetchone()
        ok = conn.execute(BOX.format("p.approved_use LIKE '07%%' AND p.permit_status = "
                                     "'approved'")).fetchone()
        expired = conn.execute(BOX.format("p.approved_use LIKE '0%%' AND p.approved_use NOT "
                                          "LIKE '01%%' AND p.permit_status = 'expired'")
                               ).fetchone()
    fc = {"type": "FeatureCollection", "properties": {"method": "cva", "with_dsm": True},
          "features": [feature("new_structure", farm[1]), feature("new_structure", ok[1]),
                       feature("new_structure", expired[1]),
                       feature("removed_structure", ok[1], 90.0)]}
    first = store(url, fc)
    assert first["stored"] == 4 and len(first["events"]) == 2
    assert first["verdicts"] == {"illegal_suspected": 2, "permitted": 1, "removed": 1}
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT parcel_code, verdict, reason, event_id IS NOT NULL FROM "
                            "change_detections ORDER BY id").fetchall()
        ev = conn.execute("SELECT e.category_code, e.source, e.state, e.micro_grid_code, "
                          "d.micro_grid_code FROM events e JOIN change_detections d ON "
                          "d.event_id = e.id ORDER BY e.id LIMIT 1").fetchone()
    assert rows[0][:2] == (farm[0], "illegal_suspected") and "not for building" in rows[0][2]
    assert rows[1][:2] == (ok[0], "permitted") and not rows[1][3]
    assert rows[2][1] == "illegal_suspected" and "no valid permit" in rows[2][2]
    assert ev[:2] == ("06001", "change_detection") and ev[3] == ev[4]
    again = store(url, fc)
    assert again["stored"] == 0 and again["already_stored"] == 4 and again["events"] == []
    with psycopg.connect(url) as conn:
        (n,) = conn.execute("SELECT count(*) FROM events").fetchone()
    assert n == 2


def test_the_collection_shows_them_and_an_officer_reviews_one(fresh_db_url: str) -> None:
    url = fresh_db_url
    with psycopg.connect(url) as conn:
        farm = conn.execute(BOX.format("p.approved_use LIKE '01%%' AND p.permit_status = "
                                       "'none'")).fetchone()
        token = create_user(conn, "国土所科员", "officer")
        conn.commit()
    store(url, {"type": "FeatureCollection", "features": [feature("new_structure", farm[1])]})
    with TestClient(create_app(Settings(env="test"), url)) as c:
        items = c.get("/ogc/collections/change_detections/items").json()
        (f,) = items["features"]
        assert f["properties"]["verdict"] == "illegal_suspected"
        assert f["properties"]["parcel_code"] == farm[0]
        h = {"Authorization": f"Bearer {token}"}
        url_item = f"/ogc/collections/change_detections/items/{f['id']}"
        r = c.patch(url_item, headers=h, json={"properties": {"review": "maybe"}})
        assert r.status_code == 400
        r = c.patch(url_item, headers=h, json={"properties": {"verdict": "permitted"}})
        assert r.status_code in (400, 405)
        r = c.patch(url_item, headers=h, json={"properties": {"review": "confirmed"}})
        assert r.status_code in (200, 204), r.text
        assert c.get(url_item).json()["properties"]["review"] == "confirmed"


def test_a_date_time_property_filter_is_checked(db_url: str) -> None:
    with TestClient(create_app(Settings(env="test"), db_url)) as c:
        r = c.get("/ogc/collections/change_detections/items", params={"detected_at": "é¦Ö"})
        assert r.status_code == 400 and "RFC 3339" in r.text
        r = c.get("/ogc/collections/change_detections/items",
                  params={"detected_at": "2026-11-01T00:00:00"})
        assert r.status_code == 400 and "offset" in r.text
        r = c.get("/ogc/collections/change_detections/items",
                  params={"detected_at": "2026-11-01T00:00:00+08:00"})
        assert r.status_code == 200 and r.json()["numberReturned"] == 0
