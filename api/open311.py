"""Open311 GeoReport v2 at ``/open311/v2`` so existing 311 clients work.

``service_code`` is the national category code, ``service_request_id`` the event id,
``expected_datetime`` the deadline. Requests are created synchronously, so the token a
client may poll (``/tokens/{token}.json``) resolves at once. ``api_key`` may carry an
account's bearer token (a resident's, a dispatcher's for hotline tickets); without it
the report is anonymous and rate-limited like any public intake. JSON only (``.json``
paths); errors follow the GeoReport format, a list of ``{"code", "description"}`` with
the HTTP status, because that is what 311 clients parse.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api import routes_events
from api.auth import NotAuthenticated, NotPermitted
from gis.errors import GisError
from layers import events
from layers.auth import Principal, authenticate
from layers.errors import LayersError, NotFound, RateLimited

router = APIRouter(prefix="/open311/v2", tags=["Open311 GeoReport v2"])

OPEN = set(events.OPEN_STATES)
_ID = re.compile(r"[0-9]{1,19}")  # ASCII digits only ("²".isdigit() is True)


MAX_REQUESTS = 1000  # GeoReport v2 has no paging: a list is the newest this many


def _error(status: int, description: str) -> JSONResponse:
    return JSONResponse([{"code": status, "description": description}], status_code=status)


async def _guard(request: Request, call: Any) -> JSONResponse:
    """Our faults as GeoReport errors."""
    from api.problems import STATUS

    try:
        return await call()
    except RateLimited as exc:
        r = _error(429, str(exc))
        r.headers["Retry-After"] = str(exc.retry_after)
        return r
    except (LayersError, GisError) as exc:
        status = next(s for t, s, _ in STATUS if isinstance(exc, t))
        return _error(status, str(exc))
    except NotAuthenticated as exc:
        return _error(401, str(exc))
    except NotPermitted as exc:
        return _error(403, str(exc))
    except psycopg.errors.QueryCanceled:
        ms = request.app.state.settings.statement_timeout_ms
        return _error(504, f"the query ran longer than the {ms} ms allowed per statement; "
                      "ask for less (a shorter period or one service_code)")


def _request(ev: dict[str, Any], base: str, photo: int | None) -> dict[str, Any]:
    dept = ev["department"]
    return {
        "service_request_id": str(ev["id"]),
        "status": "closed" if ev["state"] not in OPEN else "open",
        "status_notes": ev["state"] if ev["state"] not in ("closed",) else "closed (verified)",
        "service_name": ev["category"]["name"],
        "service_code": ev["category"]["code"],
        "description": ev["description"],
        "agency_responsible": dept["name"] if dept else "网格员 (grid worker)",
        "service_notice": f"duplicate of {ev['duplicate_of']}" if ev["duplicate_of"] else "",
        "requested_datetime": ev["reported_at"],
        "updated_datetime": ev["closed_at"] or ev["handled_at"] or ev["dispatched_at"]
        or ev["registered_at"] or ev["reported_at"],
        "expected_datetime": ev["deadline"],
        "address": ev["address"] or "",
        "address_id": ev["micro_grid"]["code"],
        "zipcode": "",
        "lat": ev["location"]["lat"],
        "long": ev["location"]["lon"],
        "media_url": f"{base}/api/v1/photos/{photo}" if photo else "",
    }


@router.get("/discovery.json", summary="GeoReport service discovery")
async def discovery(request: Request) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    return {"changeset": "2026-11-22T00:00:00Z", "contact": "the street's command centre",
            "key_service": "gridgov accounts: `gridgov users create NAME --role resident`",
            "endpoints": [{"specification": "http://wiki.open311.org/GeoReport_v2",
                           "url": f"{base}/open311/v2", "changeset": "2026-11-22T00:00:00Z",
                           "type": "production", "formats": ["application/json"]}]}


@router.get("/services.json", summary="Service list: the event categories")
async def services(request: Request) -> list[dict[str, Any]]:
    async with request.app.state.read_pool.connection() as conn:
        cats = await events.categories(conn)
    return [{"service_code": c["code"], "service_name": c["name_zh"],
             "description": f"{c['name_en']}; time limit {c['time_limit']['value']} "
             f"{c['time_limit']['unit'].replace('_', ' ')}",
             "metadata": True, "type": "realtime",
             "keywords": c["name_en"].lower(), "group": c["major"]} for c in cats]


@router.get("/services/{code}.json", summary="Service definition (its attributes)",
            response_model=None)
async def service_definition(request: Request, code: str) -> JSONResponse:
    async def call() -> JSONResponse:
        async with request.app.state.read_pool.connection() as conn:
            cats = {c["code"]: c for c in await events.categories(conn)}
        if code not in cats:
            raise NotFound(f"no service {code!r}")
        return JSONResponse({"service_code": code, "attributes": [{
            "variable": True, "code": "crs", "datatype": "singlevaluelist", "required": False,
            "datatype_description": "the CRS of lat/long (default EPSG:4490; WeChat and "
            "Amap send gcj02, Baidu bd09)", "order": 1, "description": "coordinate system",
            "values": [{"key": k, "name": k} for k in ("EPSG:4490", "EPSG:4326", "gcj02",
                                                        "bd09")]}]})
    return await _guard(request, call)


async def _who(request: Request, key: str | None) -> Principal | None:
    if not key:
        return None
    async with request.app.state.pool.connection() as conn:
        who = await authenticate(conn, key)
    if who is None:
        raise NotAuthenticated("api_key is unknown or revoked")
    return who


@router.post("/requests.json", summary="Create a service request (form-encoded or JSON)",
             response_model=None)
async def create_request(request: Request) -> JSONResponse:
    async def call() -> JSONResponse:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            form: dict[str, Any] = await request.json()
            if not isinstance(form, dict):
                return _error(400, "the body is a JSON object")
        else:
            form = dict(await request.form(max_files=0, max_fields=40))
        who = await _who(request, form.get("api_key"))
        missing = [k for k in ("service_code", "lat", "long") if not form.get(k)]
        if missing:
            return _error(400, f"missing {', '.join(missing)} (a location is lat/long)")
        name = " ".join(x for x in (form.get("last_name"), form.get("first_name")) if x)
        body = {"category": form["service_code"], "lon": form["long"], "lat": form["lat"],
                "crs": form.get("attribute[crs]") or "EPSG:4490",
                "description": form.get("description") or "",
                "address": form.get("address_string") or None,
                "source": "hotline" if who and who.role in events.DISPATCH else "resident",
                "contact": {"name": name or None, "phone": form.get("phone") or None,
                            "email": form.get("email") or None}}
        try:
            data = routes_events.EventIn.model_validate(body)
        except ValidationError as exc:
            return _error(400, str(routes_events._validation(exc)))
        r = await routes_events.file_report(request, who, data, [], body)
        import json

        ev = json.loads(bytes(r.body))
        answer = [{"service_request_id": str(ev["id"]), "token": str(ev["id"]),
                   "service_notice": f"linked to request {ev['duplicate_of']}, reported "
                   "earlier" if ev["duplicate_of"] else f"expected by {ev['deadline']}",
                   "account_id": None}]
        return JSONResponse(answer, status_code=r.status_code)

    return await _guard(request, call)


def _parse_time(text: str | None, name: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _Bad(f"{name} is not a W3C date-time: {text!r}") from None
    if t.tzinfo is None:
        raise _Bad(f"{name} needs a timezone offset")
    return t


class _Bad(Exception):
    pass


@router.get("/requests.json", summary="Requests by id, service, period or status",
            response_model=None)
async def list_requests(request: Request) -> JSONResponse:
    async def call() -> JSONResponse:
        q = request.query_params
        try:
            start = _parse_time(q.get("start_date"), "start_date")
            end = _parse_time(q.get("end_date"), "end_date")
        except _Bad as exc:
            return _error(400, str(exc))
        base = str(request.base_url).rstrip("/")
        async with request.app.state.read_pool.connection() as conn:
            if q.get("service_request_id"):
                try:
                    ids = [int(x) for x in q["service_request_id"].split(",")][:200]
                except ValueError:
                    return _error(400, "service_request_id is a comma-separated list of ids")
                found = []
                for i in ids:
                    try:
                        found.append(await events.get(conn, i))
                    except NotFound:
                        continue
            else:
                status = q.get("status")
                if status not in (None, "open", "closed"):
                    return _error(400, "status is open or closed")
                states = tuple(events.OPEN_STATES) if status == "open" else (
                    ("closed", "rejected", "merged") if status == "closed" else ())
                code = q.get("service_code")
                if code is not None and not (len(code) == 5 and code.isdigit()):
                    return _error(400, "service_code is a 5-digit category code")
                found = await events.list_events(conn, events.ListQuery(
                    state=states, category=code,
                    since=start or events.now_utc() - dt.timedelta(days=90), until=end,
                    limit=MAX_REQUESTS))
            photos = {}
            for ev in found:
                cur = await conn.execute("SELECT min(id) FROM event_photos WHERE event_id = %s",
                                         (ev["id"],))
                photos[ev["id"]] = (await cur.fetchone())[0]
        return JSONResponse([_request(ev, base, photos[ev["id"]]) for ev in found])

    return await _guard(request, call)


@router.get("/requests/{request_id}.json", summary="One request", response_model=None)
async def get_request(request: Request, request_id: str) -> JSONResponse:
    async def call() -> JSONResponse:
        if not _ID.fullmatch(request_id) or not 0 < int(request_id) < 2**62:
            return _error(404, f"no request {request_id!r}")
        async with request.app.state.read_pool.connection() as conn:
            ev = await events.get(conn, int(request_id))
            cur = await conn.execute("SELECT min(id) FROM event_photos WHERE event_id = %s",
                                     (ev["id"],))
            photo = (await cur.fetchone())[0]
        return JSONResponse([_request(ev, str(request.base_url).rstrip("/"), photo)])

    return await _guard(request, call)


@router.get("/tokens/{token}.json", summary="The request id behind a token",
            response_model=None)
async def get_token(request: Request, token: str) -> JSONResponse:
    async def call() -> JSONResponse:
        if not _ID.fullmatch(token) or not 0 < int(token) < 2**62:
            return _error(404, f"no token {token!r}")
        async with request.app.state.read_pool.connection() as conn:
            await events.get(conn, int(token))
        return JSONResponse([{"service_request_id": token, "token": token}])

    return await _guard(request, call)
