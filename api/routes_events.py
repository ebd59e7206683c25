"""``/api/v1``: events from report to closure, categories, photos, sign-in.

Thin: parses, authorises, calls :mod:`layers.events`, renders. Every write runs in
one transaction; ``Idempotency-Key`` on a POST makes a retry answer what the first
request got instead of doing it twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.auth import optional_principal, principal
from api.settings import Settings
from gis.crs import INPUT_CRS, to_storage
from layers import events, guards, metrics, photos, rules
from layers.auth import Principal, login
from layers.errors import InvalidInput, NotAllowed, NotFound
from layers.models import EVENT_SOURCES, EVENT_STATES

router = APIRouter(prefix="/api/v1", tags=["events"])

EventId = Annotated[int, Path(ge=1, le=2**62, description="event id")]


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, max_length=30, pattern=r"^[0-9+\- ]{3,30}$")
    email: str | None = Field(default=None, max_length=200)


class EventIn(BaseModel):
    """A report. ``lon``/``lat`` in ``crs`` (GCJ-02 from WeChat/Amap, BD-09 from Baidu
    are accepted); ``contact`` is personal data, never published."""

    model_config = ConfigDict(extra="forbid")
    category: str = Field(pattern=r"^[0-9]{5}$", description="national category code")
    lon: float = Field(allow_inf_nan=False)
    lat: float = Field(allow_inf_nan=False)
    crs: str = Field(default="EPSG:4490", description="one of " + ", ".join(INPUT_CRS))
    description: str = Field(default="", max_length=2000)
    source: Literal[EVENT_SOURCES] = "resident"  # type: ignore[valid-type]
    source_ref: str | None = Field(default=None, max_length=100,
                                   description="camera code, hotline ticket number, ...")
    address: str | None = Field(default=None, max_length=200)
    contact: ContactIn | None = None
    reported_at: dt.datetime | None = Field(
        default=None, description="a hotline call's time (dispatchers only)")


class TransitionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: str = Field(description="one of " + ", ".join(events.ACTIONS))
    reason: str | None = Field(default=None, max_length=2000)
    version: int | None = Field(default=None, description="the version you saw (optional): "
                                "refused with 409 when the event changed meanwhile")
    photo_ids: list[int] = Field(default_factory=list, max_length=20)
    department: str | None = Field(default=None, max_length=50)
    worker: str | None = Field(default=None, max_length=50, description="employee number")
    extend: int | None = Field(default=None, description="extension asked for")
    unit: Literal["working_hours", "working_days"] | None = None
    satisfaction: int | None = Field(default=None, description="1-5, at callback")


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=100)
    password: str = Field(max_length=200)


def _pool(request: Request) -> AsyncConnectionPool:
    """The writer's pool: writes, and reads of personal data (logged)."""
    return request.app.state.pool  # type: ignore[no-any-return]


def _reads(request: Request) -> AsyncConnectionPool:
    """The reader's pool (published views only, or the replicas): the public reads."""
    return request.app.state.read_pool  # type: ignore[no-any-return]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _validation(exc: ValidationError, prefix: str = "") -> InvalidInput:
    errors = [{"parameter": prefix + ".".join(str(x) for x in e["loc"]), "problem": e["msg"]}
              for e in exc.errors()]
    return InvalidInput("; ".join(f"{e['parameter']}: {e['problem']}" for e in errors),
                        errors=errors)


async def _body(request: Request) -> tuple[dict[str, Any], list[bytes]]:
    """A JSON body, or multipart/form-data with the JSON in ``event`` and ``photo`` files."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form(max_files=5, max_fields=5,
                                  max_part_size=photos.MAX_BYTES + 1)
        raw = form.get("event")
        if not isinstance(raw, str):
            raise InvalidInput("multipart reports carry the report as JSON in field 'event'",
                               parameter="event")
        files = []
        for f in form.getlist("photo"):
            if isinstance(f, str):
                raise InvalidInput("'photo' must be a file", parameter="photo")
            files.append(await f.read())
        text = raw
    elif kind in ("application/json", ""):
        files, text = [], (await request.body()).decode("utf-8", "replace")
    else:
        raise InvalidInput(f"send application/json or multipart/form-data, not {kind}",
                           parameter="Content-Type")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body is a JSON object")
    return body, files


async def _idempotent(request: Request, actor: str, route: str, body: Any, work: Any,
                      status: int) -> JSONResponse:
    """Run ``work(conn)`` in a transaction, once per Idempotency-Key."""
    key = request.headers.get("idempotency-key")
    async with _pool(request).connection() as conn, conn.transaction():
        if key is not None:
            digest = guards.request_digest(route, body)
            seen = await guards.replay(conn, actor, key, route, digest)
            if seen is not None:
                r = JSONResponse(seen[1], status_code=seen[0])
                r.headers["Idempotent-Replayed"] = "true"
                return r
        answer = await work(conn)
        if key is not None:
            await guards.remember(conn, actor, key, status, answer)
    r = JSONResponse(answer, status_code=status)
    if status == 201:
        r.headers["Location"] = f"/api/v1/events/{answer['id']}"
    return r


def _actor(who: Principal | None, request: Request) -> str:
    return f"user:{who.name}" if who else f"ip:{_client(request)}"


@router.get("/categories", summary="Event categories with handler, time limit, duplicate rule")
async def get_categories(request: Request) -> list[dict[str, Any]]:
    async with _reads(request).connection() as conn:
        return await events.categories(conn)


@router.post(
    "/events",
    summary="Report an event",
    status_code=201,
    description="JSON (see EventIn), or multipart/form-data with the JSON in field `event` "
    "and up to 5 `photo` files (JPEG, PNG or WebP, 10 MB each; the public copies lose their "
    "EXIF/GPS). The point is located in its micro-grid; an open event of the same category "
    "within the category's radius and time window makes this report a linked duplicate "
    "(`state: merged`, `duplicate_of`). Anonymous and resident reports are rate-limited "
    "per client (429 with Retry-After). `Idempotency-Key` makes retries safe.",
    responses={201: {"description": "the event (or the linked duplicate report)"},
               400: {"description": "bad input"}, 403: {"description": "source not allowed"},
               422: {"description": "outside the territory"},
               429: {"description": "too many reports"}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/EventIn"}},
        "multipart/form-data": {"schema": {"type": "object", "required": ["event"],
                                           "properties": {
            "event": {"type": "string", "description": "EventIn as JSON"},
            "photo": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}},
)
async def create_event(request: Request) -> Response:
    who = await optional_principal(request, "resident")
    body, files = await _body(request)
    try:
        data = EventIn.model_validate(body)
    except ValidationError as exc:
        raise _validation(exc) from None
    return await file_report(request, who, data, files, body)


async def file_report(request: Request, who: Principal | None, data: EventIn,
                      files: list[bytes], body: Any) -> JSONResponse:
    """Intake shared by /api/v1/events and Open311."""
    settings = _settings(request)
    if who is None or who.role == "resident":
        async with _pool(request).connection() as conn:
            await guards.count(conn, "intake:" + _actor(who, request), settings.intake_limit,
                               settings.intake_window_s)
    for f in files:
        photos.check(f)  # refuse a bad photo before anything is written
    lon, lat = to_storage(data.lon, data.lat, data.crs)
    report = events.Report(
        category=data.category, lon=lon, lat=lat, description=data.description,
        source=data.source, source_ref=data.source_ref, address=data.address,
        contact=data.contact.model_dump() if data.contact else None,
        reported_at=data.reported_at)
    root = settings.photos_dir
    written: list[str] = []
    actor = _actor(who, request)

    async def work(conn: Any) -> dict[str, Any]:
        ev = await events.report(conn, who, report)
        ids = []
        for f in files:
            stored = await asyncio.to_thread(photos.store, root, ev["id"], f)
            written.extend([stored.private_path, stored.public_path])
            ids.append(await _photo_row(conn, ev["id"], "report", stored, actor))
        ev["photos"] = await events.photos_of(conn, ev["id"]) if ids else []
        return ev

    try:
        return await _idempotent(request, actor, "POST /api/v1/events",
                                 {"body": body, "photos": len(files)}, work, 201)
    except BaseException:
        photos.remove(root, *written)
        raise


async def _photo_row(conn: Any, event_id: int, stage: str, s: photos.Stored,
                     actor: str) -> int:
    cur = await conn.execute(
        "INSERT INTO event_photos (event_id, stage, media_type, bytes, sha256, private_path, "
        "public_path, uploaded_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (event_id, stage, s.media_type, s.bytes, s.sha256, s.private_path, s.public_path,
         actor))
    (pid,) = await cur.fetchone()
    return int(pid)


@router.get("/events", summary="Events, newest first, filtered; `mine=true`: your work list")
async def list_events(
    request: Request,
    state: Annotated[list[Literal[EVENT_STATES]] | None,  # type: ignore[valid-type]
                     Query(description="one or more states")] = None,
    category: Annotated[str | None, Query(pattern=r"^[0-9]{5}$")] = None,
    grid: Annotated[str | None, Query(pattern=r"^[0-9]{1,15}$",
                                      description="street, community or micro-grid code")] = None,
    source: Annotated[Literal[EVENT_SOURCES] | None, Query()] = None,  # type: ignore[valid-type]
    light: Annotated[Literal["green", "yellow", "red"] | None,
                     Query(description="open events by traffic light")] = None,
    since: Annotated[dt.datetime | None, Query(description="reported at or after")] = None,
    until: Annotated[dt.datetime | None, Query(description="reported before")] = None,
    mine: bool = False,
    limit: Annotated[int, Query(ge=1, le=events.MAX_LIST)] = 50,
    cursor: Annotated[int | None, Query(ge=1, description="`next` link's cursor")] = None,
) -> dict[str, Any]:
    who = await optional_principal(request, "resident")
    q = events.ListQuery(state=tuple(state or ()), category=category, grid=grid,
                         source=source, light=light, since=since, until=until, mine=mine,
                         limit=limit, before=cursor)
    async with _reads(request).connection() as conn:
        items = await events.list_events(conn, q, who)
    links = []
    if len(items) == limit:
        params = dict(request.query_params)
        params["cursor"] = str(items[-1]["id"])
        links.append({"rel": "next", "href": str(request.url.replace_query_params(**params))})
    return {"events": items, "numberReturned": len(items), "links": links}


@router.get("/events/{event_id}", summary="One event (public fields) with its photos")
async def get_event(request: Request, event_id: EventId) -> dict[str, Any]:
    async with _reads(request).connection() as conn:
        ev = await events.get(conn, event_id)
        ev["photos"] = await events.photos_of(conn, event_id)
        who = await optional_principal(request, "resident")
        ev["allowed"] = await _allowed(conn, who, event_id, ev)
    return ev


async def _allowed(conn: Any, who: Principal | None, event_id: int,
                   ev: dict[str, Any]) -> list[str]:
    if who is None:
        return []
    in_scope = who.role not in events.HANDLE or await events._in_scope(conn, who, event_id)
    cur = await conn.execute("SELECT reporter_user_id FROM events WHERE id = %s", (event_id,))
    (rep,) = await cur.fetchone()
    return events.allowed_actions(ev["state"], who, in_scope=in_scope,
                                  reporter=who.user_id is not None and rep == who.user_id,
                                  pending=ev["pending"])


@router.get("/events/{event_id}/history", summary="Every transition, in order (append-only)")
async def get_history(request: Request, event_id: EventId) -> list[dict[str, Any]]:
    async with _reads(request).connection() as conn:
        return await events.history(conn, event_id)


@router.get("/events/{event_id}/contact",
            summary="The reporter's contact and the worker's phone (personal data; "
            "dispatchers and officers; every read is logged)")
async def get_contact(request: Request, event_id: EventId) -> dict[str, Any]:
    who = await principal(request, "resident")
    async with _pool(request).connection() as conn, conn.transaction():
        return await events.contact(conn, who, event_id, request.url.path)


@router.post("/events/{event_id}/transitions", summary="Move an event through the workflow",
             description="Actions: " + ", ".join(
                 f"`{a.name}` ({a.title_zh}: {'/'.join(a.sources)} → {a.target or 'same'})"
                 for a in events.ACTIONS.values()) + ". An action the state or your role "
             "does not allow is 409 with the allowed ones listed.",
             responses={409: {"description": "not allowed in this state"},
                        403: {"description": "not your grid or department"}})
async def post_transition(request: Request, event_id: EventId, body: TransitionIn) -> Response:
    who = await principal(request, "resident")
    payload = body.model_dump(exclude_none=True)
    action = payload.pop("action")

    async def work(conn: Any) -> dict[str, Any]:
        return await events.transition(conn, who, event_id, action, payload)

    return await _idempotent(request, _actor(who, request),
                             f"POST /api/v1/events/{event_id}/transitions",
                             body.model_dump(), work, 200)


@router.post("/events/{event_id}/photos", status_code=201,
             summary="Add a photo (multipart field `photo`; `stage` report/after/verify)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "multipart/form-data": {"schema": {"type": "object", "required": ["photo"],
                                                    "properties": {
                     "photo": {"type": "string", "format": "binary"},
                     "stage": {"type": "string", "enum": list(photos.STAGES)}}}}}}})
async def post_photo(request: Request, event_id: EventId) -> Response:
    who = await principal(request, "grid_worker")
    form = await request.form(max_files=1, max_fields=2, max_part_size=photos.MAX_BYTES + 1)
    f = form.get("photo")
    stage = form.get("stage", "after")
    if f is None or isinstance(f, str):
        raise InvalidInput("send the photo as a file in multipart field 'photo'",
                           parameter="photo")
    if stage not in photos.STAGES:
        raise InvalidInput(f"stage is one of {', '.join(photos.STAGES)}", parameter="stage")
    data = await f.read()
    root = _settings(request).photos_dir
    async with _pool(request).connection() as conn:
        await events.get(conn, event_id)  # 404 before anything is written
        if who.role in events.HANDLE and not await events._in_scope(conn, who, event_id):
            raise NotAllowed(f"event {event_id} is not in {who.name}'s grids or department")
    stored = await asyncio.to_thread(photos.store, root, event_id, data)
    try:
        async with _pool(request).connection() as conn, conn.transaction():
            pid = await _photo_row(conn, event_id, str(stage), stored, _actor(who, request))
    except BaseException:
        photos.remove(root, stored.private_path, stored.public_path)
        raise
    return JSONResponse({"id": pid, "event_id": event_id, "stage": stage,
                         "media_type": stored.media_type, "bytes": stored.bytes,
                         "href": f"/api/v1/photos/{pid}"}, status_code=201)


# the original's path is personal: only the writer's pool can read that column
PHOTO_WITH_ORIGINAL = ("SELECT event_id, media_type, private_path, public_path "
                       "FROM event_photos WHERE id = %s")
PHOTO_PUBLIC = "SELECT event_id, media_type, NULL, public_path FROM event_photos WHERE id = %s"


@router.get("/photos/{photo_id}", summary="A photo: the public copy (no EXIF/GPS); "
            "`original=true` for dispatchers and officers (logged)", response_model=None)
async def get_photo(request: Request, photo_id: Annotated[int, Path(ge=1, le=2**62)],
                    original: bool = False) -> Response:
    # the original's path is personal data (the writer's pool, the read logged); the
    # public copy is read through the published views
    pool = _pool(request) if original else _reads(request)
    query = PHOTO_WITH_ORIGINAL if original else PHOTO_PUBLIC
    async with pool.connection() as conn:
        cur = await conn.execute(query, (photo_id,))
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no photo {photo_id}")
        rel = row[3]
        if original:
            who = await principal(request, "resident")
            if who.role not in events.DISPATCH:
                raise NotAllowed("originals (with their EXIF/GPS) are for dispatchers and "
                                 "officers")
            await conn.execute(
                "INSERT INTO personal_data_reads (actor, actor_role, what, event_id, route) "
                "VALUES (%s, %s, %s, %s, %s)",
                (who.name, who.role, f"original photo {photo_id}", row[0], request.url.path))
            rel = row[2]
    file = photos.path(_settings(request).photos_dir, rel)
    if not file.exists():
        raise NotFound(f"photo {photo_id}'s file is missing from the photo store")
    return FileResponse(file, media_type=row[1])


@router.post("/login", summary="A bearer token for an account's name and password",
             description="The token expires after `GRIDGOV_LOGIN_TOKEN_DAYS` (30 days): "
             "`expires_at` and `expires_in` (seconds) say when.",
             responses={401: {"description": "unknown account or wrong password"}})
async def post_login(request: Request, body: LoginIn) -> dict[str, Any]:
    ttl = dt.timedelta(days=_settings(request).login_token_days)
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + ttl
    async with _pool(request).connection() as conn:
        await guards.count(conn, "login:" + _client(request), 10, 60)
        async with conn.transaction():
            token = await login(conn, body.name, body.password, expires)
    return {"token": token, "token_type": "bearer", "expires_at": expires.isoformat(),
            "expires_in": int(ttl.total_seconds())}


# -- rules: sensor readings and camera detections -----------------------------------------


class ReadingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sensor: str = Field(max_length=50, description="station code")
    at: dt.datetime
    pm25: float = Field(ge=0, lt=10000, allow_inf_nan=False, description="µg/m³")


class ReadingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    readings: list[ReadingIn] = Field(max_length=rules.MAX_READINGS)


class DetectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    camera: str = Field(max_length=50)
    klass: str = Field(alias="class", description="one of " + ", ".join(rules.DETECTION_CLASSES))
    confidence: float = Field(ge=0, le=1, allow_inf_nan=False)
    at: dt.datetime | None = None


@router.post("/sensors/readings", tags=["rules"],
             summary="Sensor readings in; the air-quality rule files alerts",
             description="PM2.5 readings by station code. A station more than 30 % above the "
             "mean of its three nearest stations (readings within 30 minutes) raises an "
             "event in its micro-grid and a text message to its grid worker. A reading "
             "already stored is counted, not stored again. Needs an officer's token "
             "(the integration's account).")
async def post_readings(request: Request, body: ReadingsIn) -> dict[str, Any]:
    await principal(request, "officer")
    async with _pool(request).connection() as conn, conn.transaction():
        return await rules.ingest_readings(
            conn, [rules.Reading(r.sensor, r.at, r.pm25) for r in body.readings])


@router.post("/detections", tags=["rules"], status_code=201,
             summary="An AI camera detection becomes an event where the camera looks")
async def post_detection(request: Request, body: DetectionIn) -> dict[str, Any]:
    who = await principal(request, "officer")
    async with _pool(request).connection() as conn, conn.transaction():
        return await rules.camera_detection(conn, who, body.camera, body.klass,
                                            body.confidence, body.at)


# -- figures -------------------------------------------------------------------------------


@router.get("/metrics", tags=["metrics"],
            summary="Event figures per micro-grid, community, street, department or worker",
            description=(metrics.__doc__ or "").split("\n\n", 1)[1])
async def get_metrics(
    request: Request,
    level: Literal["micro_grid", "community", "street", "department", "worker"] = "community",
    start: Annotated[dt.datetime | None, Query(alias="from",
                                               description="period start (default: 30 days "
                                               "back)")] = None,
    end: Annotated[dt.datetime | None, Query(alias="to", description="period end "
                                             "(default: now)")] = None,
    within: Annotated[str | None, Query(pattern=r"^[0-9]{1,15}$",
                                        description="only under this grid code")] = None,
) -> dict[str, Any]:
    now = events.now_utc()
    end = end or now
    start = start or end - dt.timedelta(days=30)
    async with _reads(request).connection() as conn:
        rows = await metrics.figures(conn, level, start, end, within, now)
    return {"level": level, "from": start.isoformat(), "to": end.isoformat(),
            "groups": rows}
