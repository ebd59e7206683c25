"""Storing orthophoto changes: the parcel each stands on, a verdict, an event for the
suspected illegal ones, filed exactly once however often the pair is compared.

A new structure is *permitted* when the parcel it mostly stands on is approved for
construction (GB/T 21010 classes 05–10: commercial, industrial, residential, public,
special, transport land) **and** holds a valid (``approved``) permit; otherwise it is
*illegal_suspected*, with the reason (land not approved for building, no valid permit,
outside every parcel). Removed structures and other changes are stored, not filed.

An object's ``object_key`` is the pair's key (both files' fingerprints, the method and
whether DSMs were used) plus the object's kind, its centroid to the metre and its area
to the square metre: comparing the same pair again finds the same keys, stores nothing
new and files no event twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from layers import events
from layers.auth import Principal
from layers.errors import InvalidInput

AConn = psycopg.AsyncConnection[Any]
BUILDABLE = ("05", "06", "07", "08", "09", "10")
ILLEGAL_CATEGORY = "06001"
DETECTOR = Principal("无人机变化检测", "admin")
KINDS = ("new_structure", "removed_structure", "other")


def fingerprint(path: str | Path) -> str:
    """A file's size and SHA-256 of its first and last MiB (cheap on multi-GB files)."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with p.open("rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), 2)
            h.update(f.read(1 << 20))
    return h.hexdigest()[:24]


def pair_key(before: str | Path, after: str | Path, method: str, with_dsm: bool) -> str:
    return f"{fingerprint(before)}-{fingerprint(after)}-{method}-{'dsm' if with_dsm else 'rgb'}"


def verdict(kind: str, parcel: Mapping[str, Any] | None) -> tuple[str, str]:
    """(verdict, reason) of one changed object on its parcel."""
    if kind == "removed_structure":
        return "removed", "a structure is gone"
    if kind != "new_structure":
        return "other", "not a structure"
    if parcel is None:
        return "illegal_suspected", "outside every parcel"
    if not str(parcel["approved_use"] or "").startswith(BUILDABLE):
        return "illegal_suspected", (f"land approved for {parcel['approved_use']} "
                                     "(not for building)")
    if parcel["permit_status"] != "approved":
        return "illegal_suspected", f"no valid permit ({parcel['permit_status']})"
    return "permitted", f"permit {parcel['permit_no']}"


PLACE_SQL = """
WITH g AS (SELECT ST_Multi(ST_Transform(ST_SetSRID(ST_GeomFromGeoJSON(%(geom)s), 4326), 4490))
           AS g)
SELECT ST_AsBinary(g.g), ST_X(ST_PointOnSurface(g.g)), ST_Y(ST_PointOnSurface(g.g)),
       ST_X(ST_Centroid(ST_Transform(g.g, 4548))), ST_Y(ST_Centroid(ST_Transform(g.g, 4548))),
       p.code, p.land_use, p.approved_use, p.permit_status, p.permit_no, m.code
FROM g
LEFT JOIN LATERAL (
    SELECT code, land_use, approved_use, permit_status, permit_no FROM parcels
    WHERE ST_Intersects(geom, g.g)
    ORDER BY ST_Area(ST_Intersection(geom, g.g)) DESC, code LIMIT 1
) p ON true
LEFT JOIN LATERAL (
    SELECT m.code FROM micro_grid_parts mp JOIN micro_grids m ON m.id = mp.micro_grid_id
    WHERE mp.generation_id = (SELECT id FROM grid_generations WHERE valid_to IS NULL)
      AND ST_Intersects(mp.geom, ST_PointOnSurface(g.g))
    ORDER BY m.code LIMIT 1
) m ON true
"""


async def store(
    conn: AConn, key: str, before_name: str, after_name: str, collection: Mapping[str, Any],
    *, mask_path: str | None = None, who: Principal = DETECTOR,
    evidence: Callable[[Mapping[str, Any]], list[bytes]] | None = None,
    photo_root: Path | None = None, now: dt.datetime | None = None,
    written: list[str] | None = None,
) -> dict[str, Any]:
    """Store a detection (the CRS84 GeoJSON of ``gridgov changes detect``) in the caller's
    transaction; file the suspected illegal new structures as events (category 06001,
    source ``change_detection``) with ``evidence(feature)`` photos (before/after chips)."""
    from layers import photos

    feats = collection.get("features")
    props = collection.get("properties") or {}
    if not isinstance(feats, list):
        raise InvalidInput("a change detection is a GeoJSON FeatureCollection")
    cur = await conn.execute(
        "INSERT INTO change_runs (pair_key, before_name, after_name, with_dsm, method, objects,"
        " params, mask_path) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (key, before_name, after_name, bool(props.get("with_dsm")), props.get("method", "?"),
         len(feats), Jsonb(props), mask_path))
    (run_id,) = await cur.fetchone()  # type: ignore[misc]
    out: dict[str, Any] = {"run": run_id, "stored": 0, "already_stored": 0, "events": [],
                           "verdicts": {}, "files": []}
    for i, f in enumerate(feats):
        p = f.get("properties") or {}
        kind = p.get("kind")
        if kind not in KINDS:
            raise InvalidInput(f"feature {i}: kind is one of {', '.join(KINDS)}", index=i)
        cur = await conn.execute(PLACE_SQL, {"geom": json.dumps(f.get("geometry"))})
        row = await cur.fetchone()
        assert row is not None  # noqa: S101 - one row from the CTE
        wkb, lon, lat, cx, cy = row[:5]
        parcel = (dict(zip(("code", "land_use", "approved_use", "permit_status", "permit_no"),
                           row[5:10], strict=True)) if row[5] else None)
        v, reason = verdict(kind, parcel)
        area = float(p.get("area_m2") or 0.0)
        okey = f"{key}:{kind}:{round(cx)}:{round(cy)}:{round(area)}"
        cur = await conn.execute(
            "INSERT INTO change_detections (run_id, object_key, kind, area_m2, score, cue, "
            "verdict, reason, parcel_code, land_use, approved_use, permit_status, permit_no, "
            "micro_grid_code, geom) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, ST_SetSRID(ST_GeomFromWKB(%s), 4490)) "
            "ON CONFLICT (object_key) DO NOTHING RETURNING id",
            (run_id, okey, kind, area, float(p.get("score") or 0.0), str(p.get("cue") or ""),
             v, reason, *(parcel[k] if parcel else None for k in (
                 "code", "land_use", "approved_use", "permit_status", "permit_no")),
             row[10], wkb))
        hit = await cur.fetchone()
        out["verdicts"][v] = out["verdicts"].get(v, 0) + 1
        if hit is None:
            out["already_stored"] += 1
            continue
        out["stored"] += 1
        if v != "illegal_suspected" or row[10] is None:
            continue
        where = f"地块{parcel['code']}" if parcel else "地块外"
        ev = await events.report(conn, who, events.Report(
            ILLEGAL_CATEGORY, lon, lat, source="change_detection", source_ref=f"change:{hit[0]}",
            description=f"无人机正射影像比对：新增建构筑物约{area:.0f}㎡，{where}，{reason}"),
            now=now)
        await conn.execute("UPDATE change_detections SET event_id = %s WHERE id = %s",
                           (ev["id"], hit[0]))
        if evidence is not None and photo_root is not None:
            for chip in evidence(f):
                s = photos.store(photo_root, ev["id"], chip)
                out["files"] += [s.private_path, s.public_path]
                if written is not None:  # the caller removes them if the transaction fails
                    written += [s.private_path, s.public_path]
                await conn.execute(
                    "INSERT INTO event_photos (event_id, stage, media_type, bytes, sha256, "
                    "private_path, public_path, uploaded_by) VALUES (%s, 'report', %s, %s, %s, "
                    "%s, %s, %s)", (ev["id"], s.media_type, s.bytes, s.sha256, s.private_path,
                                    s.public_path, who.name))
        out["events"].append(ev["id"])
    return out
