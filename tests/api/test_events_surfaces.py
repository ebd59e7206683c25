"""The event workflow's other doors: rules over HTTP, metrics JSON, the OGC collections
QGIS loads, the CLI, and the OpenAPI document."""

from __future__ import annotations

import datetime as dt

import psycopg
from conftest import EventTown
from typer.testing import CliRunner

from api.cli import app as cli


def test_readings_and_detections_need_an_integration_token(event_town: EventTown) -> None:
    t = event_town
    with psycopg.connect(t.url) as conn:
        me, *near = [r[0] for r in conn.execute(
            "SELECT s.code FROM sensors s, (SELECT geom FROM sensors WHERE kind = "
            "'pm25_station' ORDER BY code LIMIT 1) m WHERE s.kind = 'pm25_station' "
            "ORDER BY s.geom::geography <-> m.geom::geography LIMIT 4")]
        (cam,) = conn.execute("SELECT code FROM cameras ORDER BY code LIMIT 1").fetchone()
    at = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    body = {"readings": [{"sensor": c, "at": at, "pm25": v}
                         for c, v in zip([*near, me], [30.0, 35.0, 40.0, 80.0], strict=True)]}
    assert t.post(None, "/api/v1/sensors/readings", json=body).status_code == 401
    assert t.post("worker", "/api/v1/sensors/readings", json=body).status_code == 403
    r = t.post("officer", "/api/v1/sensors/readings", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == 4 and [a["sensor"] for a in r.json()["alerts"]] == [me]
    bad = t.post("officer", "/api/v1/sensors/readings",
                 json={"readings": [{"sensor": me, "at": at, "pm25": -1}]})
    assert bad.status_code == 400
    r = t.post("officer", "/api/v1/detections",
               json={"camera": cam, "class": "street_vending", "confidence": 0.8})
    assert r.status_code == 201 and r.json()["event"]["category"]["code"] == "09006"


def test_metrics_json_and_the_scores_collection(event_town: EventTown) -> None:
    t = event_town
    for role in ("resident", "dispatcher"):
        t.post(role, "/api/v1/events", json={"category": "06010", "lon": t.point[0],
                                             "lat": t.point[1], "source": "resident"})
    m = t.get(None, "/api/v1/metrics", params={"level": "micro_grid"}).json()
    (g,) = m["groups"]
    assert g["code"] == t.grid and g["received"] == 2 and g["open_events"] == 1
    assert t.get(None, "/api/v1/metrics", params={"level": "planet"}).status_code == 400
    assert t.get(None, "/api/v1/metrics", params={
        "from": "2026-03-02T00:00:00+08:00", "to": "2026-03-01T00:00:00+08:00"}
        ).status_code == 400
    env = {"GRIDGOV_DATABASE_URL": t.url}
    r = CliRunner().invoke(cli, ["events", "score"], env=env)
    assert r.exit_code == 0, r.output
    items = t.get(None, "/ogc/collections/micro_grid_scores/items",
                  params={"code": t.grid}).json()
    (f,) = items["features"]
    assert f["properties"]["received"] == 2 and f["geometry"]["type"] == "MultiPolygon"
    ev = t.get(None, "/ogc/collections/events/items", params={"state": "dispatched"}).json()
    assert ev["numberReturned"] == 1
    props = ev["features"][0]["properties"]
    assert props["micro_grid_code"] == t.grid and "phone" not in str(props)
    assert set(props) <= {"category_code", "category_name", "state", "source",
                          "micro_grid_code", "department_code", "level", "duplicate_of",
                          "duplicates", "rework_count", "satisfaction",
                          "reported_at"}


def test_cli_users_create_and_the_token_works(event_town: EventTown) -> None:
    t = event_town
    env = {"GRIDGOV_DATABASE_URL": t.url}
    runner = CliRunner()
    r = runner.invoke(cli, ["users", "create", "城管队员", "--role", "department",
                            "--department", "urban_mgmt"], env=env)
    assert r.exit_code == 0, r.output
    token = r.output.strip().splitlines()[-1]
    assert token.startswith("ggv_")
    mine = t.client.get("/api/v1/events", params={"mine": "true"},
                        headers={"Authorization": f"Bearer {token}"})
    assert mine.status_code == 200
    r = runner.invoke(cli, ["users", "create", "城管队员", "--role", "department",
                            "--department", "urban_mgmt"], env=env)
    assert r.exit_code != 0 and "exists" in r.output
    r = runner.invoke(cli, ["users", "create", "x", "--role", "grid_worker"], env=env)
    assert r.exit_code != 0 and "--worker" in r.output
    r = runner.invoke(cli, ["users", "create", "y", "--role", "mayor"], env=env)
    assert r.exit_code != 0 and "unknown role" in r.output
    r = runner.invoke(cli, ["users", "create", "z", "--role", "resident", "--password-stdin"],
                      env=env, input="short\n")
    assert r.exit_code != 0 and "10 characters" in r.output
    t.post(None, "/api/v1/events", json={"category": "06010", "lon": t.point[0],
                                         "lat": t.point[1]})
    r = runner.invoke(cli, ["events", "send"], env=env)
    assert r.exit_code == 0 and "1 sent" in r.output
    r = runner.invoke(cli, ["events", "remind"], env=env)
    assert r.exit_code == 0 and "reminder" in r.output


def test_the_openapi_document_describes_the_event_api(event_town: EventTown) -> None:
    doc = event_town.get(None, "/openapi.json").json()
    paths = doc["paths"]
    for p in ("/api/v1/events", "/api/v1/events/{event_id}", "/api/v1/events/{event_id}/history",
              "/api/v1/events/{event_id}/transitions", "/api/v1/events/{event_id}/photos",
              "/api/v1/metrics", "/open311/v2/requests.json", "/open311/v2/services.json"):
        assert p in paths, p
    body = paths["/api/v1/events"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert "verify_fail" in paths["/api/v1/events/{event_id}/transitions"]["post"]["description"]


def test_the_outbox_goes_through_a_webhook_gateway_and_survives_its_outage(
        event_town: EventTown) -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    got: list[dict] = []
    state = {"up": False}

    class Gateway(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if state["up"]:
                got.append(body)
            self.send_response(200 if state["up"] else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        t = event_town
        t.post(None, "/api/v1/events", json={"category": "06010", "lon": t.point[0],
                                             "lat": t.point[1]})
        env = {"GRIDGOV_DATABASE_URL": t.url,
               "GRIDGOV_NOTIFY_SENDER": f"webhook:http://127.0.0.1:{server.server_port}/sms"}
        r = CliRunner().invoke(cli, ["events", "send"], env=env)
        assert r.exit_code == 0 and "0 sent, 1 failed" in r.output
        with psycopg.connect(t.url) as conn:  # due again now, as after the back-off
            conn.execute("UPDATE outbox SET next_attempt_at = now()")
        state["up"] = True
        r = CliRunner().invoke(cli, ["events", "send"], env=env)
        assert r.exit_code == 0 and "1 sent, 0 failed" in r.output
        assert got[0]["channel"] == "sms" and "暴露垃圾" in got[0]["body"]
        bad = CliRunner().invoke(cli, ["events", "send", "--sender", "nowhere"], env=env)
        assert bad.exit_code != 0 and "sender" in bad.output
    finally:
        server.shutdown()
