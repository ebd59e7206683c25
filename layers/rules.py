"""Rules that file events by themselves: the air-quality rule and AI camera detections.

Air quality (seed 000): a PM2.5 station whose reading is more than 30 % above the mean
of its three nearest stations' readings at the same time (each neighbour's latest
reading within :data:`SAME_TIME` of it) raises an alert event (category 90001, source
``sensor``) in the station's micro-grid, and a text message goes to the grid worker
responsible for that grid. A repeated alert from the same place is linked to the open
one by the category's duplicate rule.

AI camera detections (camera code, class, confidence, time) become events in the
micro-grid the camera looks at: the point half its range (at most 60 m) along its
heading. Detections below :data:`MIN_CONFIDENCE` are recorded nowhere and answered
as ignored; repeated detections of one place are linked by the duplicate rule.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg

from layers import events, notify
from layers.auth import Principal
from layers.errors import InvalidInput

AConn = psycopg.AsyncConnection[Any]
SAME_TIME = dt.timedelta(minutes=30)
EXCESS = 1.30
NEIGHBOURS = 3
AIR_CATEGORY = "90001"
MIN_CONFIDENCE = 0.6
MAX_READINGS = 10_000
RULE = Principal("规则引擎", "admin")

DETECTION_CLASSES = {
    "garbage": "06010",
    "materials_piled": "06002",
    "open_fire": "06019",
    "business_outside": "09001",
    "street_vending": "09006",
    "illegal_parking": "09009",
}


@dataclass(frozen=True)
class Reading:
    sensor: str
    at: dt.datetime
    pm25: float


NEIGHBOUR_SQL = """
WITH me AS (SELECT id, code, geom FROM sensors WHERE id = %(sid)s)
SELECT n.code, r.pm25
FROM me CROSS JOIN LATERAL (
    SELECT s.id, s.code FROM sensors s
    WHERE s.kind = 'pm25_station' AND s.id <> me.id
    ORDER BY s.geom::geography <-> me.geom::geography
    LIMIT %(k)s
) n
CROSS JOIN LATERAL (
    SELECT pm25 FROM sensor_readings
    WHERE sensor_id = n.id AND at BETWEEN %(at)s - %(tol)s AND %(at)s + %(tol)s
    ORDER BY abs(extract(epoch FROM at - %(at)s)) LIMIT 1
) r
"""


async def ingest_readings(conn: AConn, readings: Iterable[Reading],
                          now: dt.datetime | None = None) -> dict[str, Any]:
    """Store readings (caller's transaction) and run the air-quality rule on each new one.
    A reading already stored (same station and time) is counted, not stored twice."""
    rows = list(readings)
    if len(rows) > MAX_READINGS:
        raise InvalidInput(f"at most {MAX_READINGS:,} readings per request")
    codes = sorted({r.sensor for r in rows})
    cur = await conn.execute("SELECT code, id, kind FROM sensors WHERE code = ANY(%s)",
                             (codes,))
    known = {c: (i, k) for c, i, k in await cur.fetchall()}
    for i, r in enumerate(rows):
        if r.sensor not in known:
            raise InvalidInput(f"reading {i}: unknown sensor {r.sensor!r}", index=i)
        if known[r.sensor][1] != "pm25_station":
            raise InvalidInput(f"reading {i}: sensor {r.sensor} is a {known[r.sensor][1]}, "
                               "not a PM2.5 station", index=i)
        if not 0 <= r.pm25 < 10000 or r.pm25 != r.pm25:
            raise InvalidInput(f"reading {i}: pm25 must be 0–10,000 µg/m³", index=i)
        if r.at.tzinfo is None:
            raise InvalidInput(f"reading {i}: at needs a timezone offset", index=i)
    stored, alerts = 0, []
    fresh: list[tuple[int, Reading]] = []
    for r in rows:
        sid = known[r.sensor][0]
        cur = await conn.execute(
            "INSERT INTO sensor_readings (sensor_id, at, pm25) VALUES (%s, %s, %s) "
            "ON CONFLICT (sensor_id, at) DO NOTHING RETURNING id", (sid, r.at, r.pm25))
        if await cur.fetchone() is not None:
            stored += 1
            fresh.append((sid, r))
    for sid, r in fresh:  # after all are stored: a batch's readings are each other's peers
        alert = await _air_rule(conn, sid, r, now)
        if alert is not None:
            alerts.append(alert)
    return {"stored": stored, "already_stored": len(rows) - stored, "alerts": alerts}


async def _air_rule(conn: AConn, sid: int, r: Reading,
                    now: dt.datetime | None) -> dict[str, Any] | None:
    cur = await conn.execute(NEIGHBOUR_SQL, {"sid": sid, "k": NEIGHBOURS, "at": r.at,
                                             "tol": SAME_TIME})
    peers = await cur.fetchall()
    if len(peers) < NEIGHBOURS:
        return None  # not enough neighbours reporting at that time: no verdict
    mean = sum(p[1] for p in peers) / len(peers)
    if not r.pm25 > EXCESS * mean:
        return None
    cur = await conn.execute("SELECT ST_X(geom), ST_Y(geom) FROM sensors WHERE id = %s", (sid,))
    lon, lat = await cur.fetchone()  # type: ignore[misc]
    pct = 100 * (r.pm25 / mean - 1) if mean > 0 else float("inf")
    text = (f"{r.sensor} PM2.5 {r.pm25:.0f} µg/m³，高于周边{NEIGHBOURS}站均值{mean:.0f} µg/m³ "
            f"{pct:.0f}%（{', '.join(p[0] for p in peers)}）")
    ev = await events.report(conn, RULE, events.Report(
        category=AIR_CATEGORY, lon=lon, lat=lat, description=text, source="sensor",
        source_ref=r.sensor), now=now)
    primary = ev["duplicate_of"] or ev["id"]
    cur = await conn.execute(
        "SELECT w.phone FROM events e JOIN worker_assignments wa ON wa.micro_grid_code = "
        "e.micro_grid_code AND wa.valid_to IS NULL JOIN workers w ON w.id = wa.worker_id "
        "WHERE e.id = %s", (primary,))
    hit = await cur.fetchone()
    if hit and hit[0]:
        body = f"【网格通】空气质量预警：{text}，事件#{primary}。"
        await notify.enqueue(conn, "sms", hit[0], body, primary,
                             f"air:{r.sensor}:{r.at.isoformat()}", at=now)
    return {"sensor": r.sensor, "at": r.at.isoformat(), "pm25": r.pm25,
            "neighbours_mean": round(mean, 1), "event": ev["id"], "state": ev["state"],
            "duplicate_of": ev["duplicate_of"]}


LOOK_SQL = """
SELECT ST_X(p), ST_Y(p) FROM (
    SELECT ST_Project(geom::geography, least(range_m / 2, 60), radians(heading_deg))::geometry
      AS p FROM cameras WHERE code = %s
) q
"""


async def camera_detection(conn: AConn, who: Principal, camera: str, klass: str,
                           confidence: float, at: dt.datetime | None = None,
                           now: dt.datetime | None = None) -> dict[str, Any]:
    """File a detection as an event where the camera looks (caller's transaction)."""
    if klass not in DETECTION_CLASSES:
        raise InvalidInput(f"unknown class {klass!r}; classes: {', '.join(DETECTION_CLASSES)}",
                           parameter="class")
    if not 0 <= confidence <= 1:
        raise InvalidInput("confidence is between 0 and 1", parameter="confidence")
    cur = await conn.execute(LOOK_SQL, (camera,))
    row = await cur.fetchone()
    if row is None:
        raise InvalidInput(f"unknown camera {camera!r}", parameter="camera")
    if confidence < MIN_CONFIDENCE:
        return {"ignored": True, "reason": f"confidence under {MIN_CONFIDENCE}"}
    ev = await events.report(conn, who, events.Report(
        category=DETECTION_CLASSES[klass], lon=row[0], lat=row[1], source="ai_camera",
        source_ref=camera, description=f"AI识别：{klass}（置信度{confidence:.2f}）",
        reported_at=at if at is not None and who.role in events.DISPATCH else None), now=now)
    return {"ignored": False, "event": ev}
