"""Open311 GeoReport v2: what an existing 311 client does, end to end."""

from __future__ import annotations

from conftest import EventTown, jpeg

from gis.chinacrs import wgs84_to_gcj02
from layers import db
from layers.auth import create_user

V2 = "/open311/v2"


def test_discovery_and_services_list_the_categories(event_town: EventTown) -> None:
    t = event_town
    d = t.get(None, f"{V2}/discovery.json").json()
    assert d["endpoints"][0]["url"].endswith("/open311/v2")
    services = t.get(None, f"{V2}/services.json").json()
    codes = {s["service_code"] for s in services}
    assert {"06010", "09006", "09009", "06001"} <= codes
    assert all(s["type"] == "realtime" and s["service_name"] for s in services)
    definition = t.get(None, f"{V2}/services/06010.json").json()
    assert definition["attributes"][0]["code"] == "crs"
    r = t.get(None, f"{V2}/services/00000.json")
    assert r.status_code == 404 and r.json()[0]["code"] == 404


def test_a_311_client_reports_follows_and_sees_it_closed(event_town: EventTown) -> None:
    t = event_town
    glon, glat = wgs84_to_gcj02(*t.point)
    r = t.post(None, f"{V2}/requests.json", data={
        "service_code": "09009", "lat": str(float(glat)), "long": str(float(glon)),
        "attribute[crs]": "gcj02", "description": "消防通道违停", "phone": "13600001111",
        "first_name": "小明", "last_name": "张", "address_string": "幸福路12号"})
    assert r.status_code == 201, r.text
    (created,) = r.json()
    rid = created["service_request_id"]
    assert "expected by" in created["service_notice"]
    (req,) = t.get(None, f"{V2}/requests/{rid}.json").json()
    assert req["service_code"] == "09009" and req["status"] == "open"
    assert req["agency_responsible"] == "交警中队"  # illegal parking goes to traffic police
    assert req["expected_datetime"] and req["address"] == "幸福路12号"
    assert abs(req["long"] - t.point[0]) < 1e-6 and "13600001111" not in str(req)
    assert t.get(None, f"{V2}/tokens/{created['token']}.json").json()[0][
        "service_request_id"] == rid
    # the traffic police handle it through the JSON API and the dispatcher verifies
    eid = int(rid)
    with db.connect(t.url) as conn:
        tok = create_user(conn, "交警", "department", department="traffic")
        conn.commit()
    h = {"Authorization": f"Bearer {tok}"}
    up = t.client.post(f"/api/v1/events/{eid}/photos", headers=h,
                       files={"photo": ("a.jpg", jpeg(), "image/jpeg")})
    assert t.client.post(f"/api/v1/events/{eid}/transitions", headers=h, json={
        "action": "handle", "photo_ids": [up.json()["id"]]}).status_code == 200
    assert t.act("dispatcher", eid, "verify_pass").status_code == 200
    listed = t.get(None, f"{V2}/requests.json", params={"status": "closed"}).json()
    assert rid in [x["service_request_id"] for x in listed]
    assert rid not in [x["service_request_id"] for x in
                       t.get(None, f"{V2}/requests.json", params={"status": "open"}).json()]
    (req,) = t.get(None, f"{V2}/requests.json", params={"service_request_id": rid}).json()
    assert req["status"] == "closed"


def test_an_api_key_files_as_that_account(event_town: EventTown) -> None:
    t = event_town
    key = t.auth["dispatcher"]["Authorization"].split()[1]
    r = t.post(None, f"{V2}/requests.json", data={
        "service_code": "90002", "lat": str(t.point[1]), "long": str(t.point[0]),
        "description": "12345热线：咨询垃圾分类", "api_key": key})
    assert r.status_code == 201
    eid = int(r.json()[0]["service_request_id"])
    assert t.get(None, f"/api/v1/events/{eid}").json()["source"] == "hotline"
    bad = t.post(None, f"{V2}/requests.json", data={
        "service_code": "90002", "lat": "36.8", "long": "118.0", "api_key": "nope"})
    assert bad.status_code == 401 and bad.json()[0]["code"] == 401


def test_open311_errors_are_georeport_errors(event_town: EventTown) -> None:
    t = event_town
    r = t.post(None, f"{V2}/requests.json", data={"service_code": "06010"})
    assert r.status_code == 400 and "lat" in r.json()[0]["description"]
    r = t.post(None, f"{V2}/requests.json", data={"service_code": "06010", "lat": "north",
                                                  "long": "118"})
    assert r.status_code == 400
    r = t.post(None, f"{V2}/requests.json", data={"service_code": "06010", "lat": "10",
                                                  "long": "100"})
    assert r.status_code == 422 and "outside" in r.json()[0]["description"]
    assert t.get(None, f"{V2}/requests/abc.json").status_code == 404
    assert t.get(None, f"{V2}/requests/999999.json").status_code == 404
    assert t.get(None, f"{V2}/requests.json", params={"start_date": "yesterday"}
                 ).status_code == 400
    assert t.get(None, f"{V2}/requests.json", params={"status": "maybe"}).status_code == 400
