"""The event store and its state machine (GB/T 30428 stages).

collect (``reported``) → register (立案, ``registered``) or reject with a reason →
dispatch (``dispatched``) → accept (``accepted``) → handle with an "after" photo
(``handled``) → verify on site (核查): pass → ``closed``, fail → ``rework`` → dispatch
again. Besides: return (回退) to the dispatcher, reassign (改派), extension (延期) and
suspension (挂账) requested by the handler and approved by an officer, resume,
escalation one level up (街呼区应, ``escalated``, dispatched by the level above),
supervision (督办), resident callback with a satisfaction rating, reopen.

Every transition runs in one transaction holding the event's row lock (concurrent
transitions of one event are serialised; none is lost) and appends one row to
``event_history`` (append-only, enforced by a trigger). An action the event's state or
the asker's role does not allow is :class:`Conflict` (409) listing what is allowed.

Intake locates the point in the current grid generation, links a duplicate (same
category within the category's radius and time window, still open) to the first report
instead of multiplying it, sets the deadline on the Chinese working calendar and, for
categories registered automatically, registers and dispatches at once to the default
handler: the grid worker who owns the micro-grid, or the category's department.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from layers import workdays
from layers.auth import Principal
from layers.errors import Conflict, InvalidInput, NotAllowed, NotFound, Refused

AConn = psycopg.AsyncConnection[Any]

OPEN_STATES = ("reported", "registered", "dispatched", "accepted", "handled", "rework",
               "suspended", "escalated")
DONE_STATES = ("closed", "rejected", "merged")

DISPATCH = frozenset({"dispatcher", "officer", "admin"})
APPROVE = frozenset({"officer", "admin"})
HANDLE = frozenset({"grid_worker", "department"})
REPORTER = "reporter"  # the resident who reported the event (callback)

SOURCES_BY_ROLE: Mapping[str | None, frozenset[str]] = {
    None: frozenset({"resident"}),
    "resident": frozenset({"resident"}),
    "grid_worker": frozenset({"grid_worker"}),
    "department": frozenset({"grid_worker"}),
    "dispatcher": frozenset({"resident", "hotline", "transfer", "grid_worker"}),
    "officer": frozenset({"resident", "grid_worker", "hotline", "transfer", "ai_camera",
                          "drone", "sensor", "change_detection"}),
    "admin": frozenset({"resident", "grid_worker", "hotline", "transfer", "ai_camera",
                        "drone", "sensor", "change_detection"}),
}


@dataclass(frozen=True)
class Action:
    name: str
    title_zh: str
    sources: tuple[str, ...]  # states it applies to
    target: str | None  # state after it; None: unchanged
    roles: frozenset[str]
    needs_reason: bool = False


ACTIONS: Mapping[str, Action] = {a.name: a for a in (
    Action("register", "立案", ("reported",), "registered", DISPATCH),
    Action("reject", "不予立案", ("reported",), "rejected", DISPATCH, needs_reason=True),
    Action("dispatch", "派遣", ("registered", "rework", "escalated"), "dispatched", DISPATCH),
    Action("accept", "签收", ("dispatched",), "accepted", HANDLE),
    Action("return", "回退", ("dispatched", "accepted"), "registered", HANDLE,
           needs_reason=True),
    Action("reassign", "改派", ("dispatched", "accepted"), "dispatched", DISPATCH),
    Action("handle", "处置完成", ("dispatched", "accepted"), "handled", HANDLE),
    Action("verify_pass", "核查通过", ("handled",), "closed", DISPATCH),
    Action("verify_fail", "核查不通过(返工)", ("handled",), "rework", DISPATCH,
           needs_reason=True),
    Action("request_extension", "申请延期", ("dispatched", "accepted"), None, HANDLE,
           needs_reason=True),
    Action("approve_extension", "批准延期", ("dispatched", "accepted"), None, APPROVE),
    Action("deny_extension", "驳回延期", ("dispatched", "accepted"), None, APPROVE,
           needs_reason=True),
    Action("request_suspension", "申请挂账", ("dispatched", "accepted"), None, HANDLE,
           needs_reason=True),
    Action("approve_suspension", "批准挂账", ("dispatched", "accepted"), "suspended", APPROVE),
    Action("deny_suspension", "驳回挂账", ("dispatched", "accepted"), None, APPROVE,
           needs_reason=True),
    Action("resume", "恢复办理", ("suspended",), None, APPROVE),
    Action("escalate", "上报(街呼区应)", ("registered", "dispatched", "accepted", "rework"),
           "escalated", DISPATCH, needs_reason=True),
    Action("supervise", "督办", OPEN_STATES, None, APPROVE, needs_reason=True),
    Action("callback", "回访评价", ("closed",), None, DISPATCH | {REPORTER}),
    Action("reopen", "重新办理", ("closed", "rejected"), "registered", DISPATCH,
           needs_reason=True),
)}
# what the level above does: an escalated event is dispatched by an officer
ESCALATED_DISPATCH = APPROVE


SMS_LINK: ContextVar[Callable[[int], str] | None] = ContextVar("sms_link", default=None)
"""The phone link a dispatch text message carries, made by api/ for the request it serves
(signing needs the key, which layers/ never holds); unset: the message has no link."""


# -- reading ---------------------------------------------------------------------------

PUBLIC = """
e.id, e.category_code, e.category_name, e.state, e.source, e.source_ref, e.description,
e.address, e.micro_grid_code, m.name, e.department_code, d.name_zh, e.level, e.duplicate_of,
e.duplicates, e.reported_at, e.registered_at, e.dispatched_at, e.handled_at, e.closed_at,
e.deadline, e.warn_at, e.paused_at, e.pending, e.supervised, e.rework_count, e.reopen_count,
e.satisfaction, e.version, ST_X(e.geom), ST_Y(e.geom), w.name, e.assignee_worker_id,
e.reporter_user_id
"""
FROM = """
FROM events e
JOIN micro_grids m ON m.id = e.micro_grid_id
LEFT JOIN departments d ON d.code = e.department_code
LEFT JOIN workers w ON w.id = e.assignee_worker_id
"""


def _iso(t: dt.datetime | None) -> str | None:
    """Beijing time, as the people who read these answers live by it."""
    return t.astimezone(workdays.BEIJING).isoformat() if t else None


def _light(row: tuple[Any, ...], now: dt.datetime) -> str | None:
    state, due, warn, paused = row[3], row[20], row[21], row[22]
    if state in DONE_STATES:
        return None
    if state == "suspended":
        return "paused"
    return workdays.light(paused or now, warn, due)


def _event(row: tuple[Any, ...], now: dt.datetime) -> dict[str, Any]:
    return {
        "id": row[0],
        "category": {"code": row[1], "name": row[2]},
        "state": row[3],
        "source": row[4],
        "source_ref": row[5],
        "description": row[6],
        "address": row[7],
        "micro_grid": {"code": row[8], "name": row[9]},
        "community_code": row[8][:12],
        "street_code": row[8][:9],
        "department": {"code": row[10], "name": row[11]} if row[10] else None,
        "assignee": {"name": row[31]} if row[31] else None,
        "level": row[12],
        "duplicate_of": row[13],
        "duplicates": row[14],
        "reported_at": _iso(row[15]),
        "registered_at": _iso(row[16]),
        "dispatched_at": _iso(row[17]),
        "handled_at": _iso(row[18]),
        "closed_at": _iso(row[19]),
        "deadline": _iso(row[20]),
        "light": _light(row, now),
        "pending": row[23],
        "supervised": row[24],
        "rework_count": row[25],
        "reopen_count": row[26],
        "satisfaction": row[27],
        "version": row[28],
        "location": {"lon": round(row[29], 8), "lat": round(row[30], 8), "crs": "EPSG:4490"},
    }


async def _row(conn: AConn, event_id: int, lock: bool = False) -> tuple[Any, ...]:
    q = "SELECT " + PUBLIC + FROM + "WHERE e.id = %s"
    if lock:
        q += " FOR UPDATE OF e"
    cur = await conn.execute(q, (event_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no event {event_id}")
    return row


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def get(conn: AConn, event_id: int, now: dt.datetime | None = None) -> dict[str, Any]:
    return _event(await _row(conn, event_id), now or now_utc())


async def photos_of(conn: AConn, event_id: int) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT id, stage, media_type, bytes, uploaded_at FROM event_photos "
        "WHERE event_id = %s ORDER BY id", (event_id,))
    return [{"id": r[0], "stage": r[1], "media_type": r[2], "bytes": r[3],
             "uploaded_at": r[4].isoformat()} for r in await cur.fetchall()]


async def history(conn: AConn, event_id: int) -> list[dict[str, Any]]:
    await _row(conn, event_id)
    cur = await conn.execute(
        "SELECT seq, action, from_state, to_state, actor, actor_role, at, reason, photo_ids, "
        "data FROM event_history WHERE event_id = %s ORDER BY seq", (event_id,))
    return [{"seq": r[0], "action": r[1], "from_state": r[2], "to_state": r[3],
             "actor": r[4], "actor_role": r[5], "at": r[6].isoformat(), "reason": r[7],
             "photo_ids": list(r[8]), "data": r[9]} for r in await cur.fetchall()]


async def contact(conn: AConn, who: Principal, event_id: int, route: str) -> dict[str, Any]:
    """The reporter's contact and the assigned worker's phone (personal data): for the
    roles that call people back only; every read is logged."""
    if who.role not in DISPATCH:
        raise NotAllowed(f"{who.name} ({who.role}) may not read personal data")
    await _row(conn, event_id)
    cur = await conn.execute(
        "SELECT c.name, c.phone, c.email, w.name, w.phone FROM events e "
        "LEFT JOIN event_contacts c ON c.event_id = e.id "
        "LEFT JOIN workers w ON w.id = e.assignee_worker_id WHERE e.id = %s", (event_id,))
    row = await cur.fetchone()
    assert row is not None  # noqa: S101 - the event exists (checked above)
    await conn.execute(
        "INSERT INTO personal_data_reads (actor, actor_role, what, event_id, route) "
        "VALUES (%s, %s, %s, %s, %s)",
        (who.name, who.role, "reporter contact, worker phone", event_id, route))
    return {"reporter": {"name": row[0], "phone": row[1], "email": row[2]},
            "worker": {"name": row[3], "phone": row[4]} if row[3] else None}


@dataclass(frozen=True)
class ListQuery:
    state: tuple[str, ...] = ()
    category: str | None = None
    grid: str | None = None  # code prefix: a street, community or micro-grid
    source: str | None = None
    light: str | None = None  # green/yellow/red (open events only)
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    mine: bool = False
    limit: int = 50
    before: int | None = None  # cursor: ids below this one (newest first)


MAX_LIST = 500


async def list_events(
    conn: AConn, q: ListQuery, who: Principal | None = None, now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """Events newest first, filtered; ``mine`` is the asker's work list (a grid worker's
    grids and assignments, a department's events)."""
    now = now or now_utc()
    where: list[sql.Composable] = []
    params: list[Any] = []
    if q.state:
        where.append(sql.SQL("e.state = ANY(%s)"))
        params.append(list(q.state))
    if q.category:
        where.append(sql.SQL("e.category_code = %s"))
        params.append(q.category)
    if q.grid:
        where.append(sql.SQL("e.micro_grid_code LIKE %s"))
        params.append(q.grid.replace("%", "").replace("_", "") + "%")
    if q.source:
        where.append(sql.SQL("e.source = %s"))
        params.append(q.source)
    if q.since:
        where.append(sql.SQL("e.reported_at >= %s"))
        params.append(q.since)
    if q.until:
        where.append(sql.SQL("e.reported_at < %s"))
        params.append(q.until)
    if q.light:
        where.append(sql.SQL("e.state = ANY(%s) AND e.state <> 'suspended'"))
        params.append(list(OPEN_STATES))
        if q.light == "red":
            where.append(sql.SQL("e.deadline <= %s"))
            params.append(now)
        elif q.light == "yellow":
            where.append(sql.SQL("e.warn_at <= %s AND e.deadline > %s"))
            params += [now, now]
        elif q.light == "green":
            where.append(sql.SQL("e.warn_at > %s"))
            params.append(now)
        else:
            raise InvalidInput(f"light is green, yellow or red, not {q.light!r}")
    if q.mine:
        if who is None:
            raise InvalidInput("mine=true needs a signed-in account")
        clause, extra = _scope(who)
        where.append(clause)
        params += extra
    if q.before is not None:
        where.append(sql.SQL("e.id < %s"))
        params.append(q.before)
    stmt = sql.SQL("SELECT " + PUBLIC + FROM + "{where} ORDER BY e.id DESC LIMIT %s").format(
        where=sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""))
    params.append(q.limit)
    cur = await conn.execute(stmt, params)
    return [_event(r, now) for r in await cur.fetchall()]


def _scope(who: Principal) -> tuple[sql.Composable, list[Any]]:
    """The events ``who`` acts on as a handler."""
    if who.role == "grid_worker":
        # their assignments, and their grids' events no department holds
        return (sql.SQL("(e.assignee_worker_id = %s OR (e.department_code IS NULL AND "
                        "e.micro_grid_code IN (SELECT micro_grid_code FROM worker_assignments "
                        "WHERE worker_id = %s AND valid_to IS NULL)))"),
                [who.worker_id, who.worker_id])
    if who.role == "department":
        return sql.SQL("e.department_code = %s"), [who.department]
    return sql.SQL("TRUE"), []


async def _in_scope(conn: AConn, who: Principal, event_id: int) -> bool:
    clause, params = _scope(who)
    cur = await conn.execute(sql.SQL("SELECT 1 FROM events e WHERE e.id = %s AND {c}").format(
        c=clause), [event_id, *params])
    return await cur.fetchone() is not None


# -- intake ----------------------------------------------------------------------------

INTAKE_SQL = """
WITH pt AS (SELECT ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4490) AS g)
SELECT m.id, m.code, wa.worker_id
FROM pt
JOIN micro_grid_parts p ON ST_Intersects(p.geom, pt.g)
 AND p.generation_id = (SELECT id FROM grid_generations WHERE valid_to IS NULL)
JOIN micro_grids m ON m.id = p.micro_grid_id
LEFT JOIN worker_assignments wa ON wa.micro_grid_code = m.code AND wa.valid_to IS NULL
ORDER BY m.code
LIMIT 1
"""

DUPLICATE_SQL = """
SELECT e.id FROM events e
WHERE e.category_code = %(category)s AND e.state = ANY(%(open)s)
  AND e.reported_at > %(now)s - make_interval(hours => %(window)s)
  AND ST_DWithin(e.geom::geography, ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4490)::geography,
                 %(radius)s)
ORDER BY e.reported_at, e.id
LIMIT 1
"""


@dataclass(frozen=True)
class Report:
    category: str
    lon: float  # EPSG:4490
    lat: float
    description: str = ""
    source: str = "resident"
    source_ref: str | None = None
    address: str | None = None
    contact: Mapping[str, str | None] | None = None
    reported_at: dt.datetime | None = None  # the call's time for hotline tickets


MAX_BACKDATE = dt.timedelta(days=400)


async def _category(conn: AConn, code: str) -> tuple[Any, ...]:
    cur = await conn.execute(
        "SELECT code, name_zh, department_code, registration, time_limit, time_unit, "
        "dispatch_limit_hours, dedup_radius_m, dedup_window_hours FROM event_categories "
        "WHERE code = %s", (code,))
    row = await cur.fetchone()
    if row is None:
        raise InvalidInput(f"unknown category {code!r}: GET /api/v1/categories lists them",
                           parameter="category")
    return row


async def report(
    conn: AConn, who: Principal | None, r: Report, now: dt.datetime | None = None
) -> dict[str, Any]:
    """File a report (caller's transaction): the new event, or the report linked to the
    open event it duplicates (``state`` ``merged``, ``duplicate_of`` set)."""
    now = now or now_utc()
    role = who.role if who else None
    if r.source not in SOURCES_BY_ROLE[role]:
        raise NotAllowed(f"{role or 'an anonymous reporter'} may not file events from source "
                         f"{r.source!r}; allowed: {', '.join(sorted(SOURCES_BY_ROLE[role]))}")
    if len(r.description) > 2000:
        raise InvalidInput("description is longer than 2,000 characters",
                           parameter="description")
    at = now
    if r.reported_at is not None:
        if role not in DISPATCH:
            raise NotAllowed("only a dispatcher may give reported_at (a hotline call's time)")
        if r.reported_at.tzinfo is None:
            raise InvalidInput("reported_at needs a timezone offset", parameter="reported_at")
        if not now - MAX_BACKDATE <= r.reported_at <= now:
            raise InvalidInput("reported_at lies in the future or more than 400 days back",
                               parameter="reported_at")
        at = r.reported_at
    cat = await _category(conn, r.category)
    cur = await conn.execute(INTAKE_SQL, {"lon": r.lon, "lat": r.lat})
    grid = await cur.fetchone()
    if grid is None:
        raise Refused(f"({r.lon:.6f}, {r.lat:.6f}) lies outside every micro-grid of the "
                      "territory: report it to the neighbouring street",
                      parameter="location")
    # one intake per category at a time: two reports of one pile cannot both be first
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('intake:' || %s))", (cat[0],))
    dup = None
    if cat[7] > 0 and cat[8] > 0:
        cur = await conn.execute(DUPLICATE_SQL, {
            "category": cat[0], "open": list(OPEN_STATES), "now": at, "window": cat[8],
            "lon": r.lon, "lat": r.lat, "radius": cat[7]})
        hit = await cur.fetchone()
        dup = hit[0] if hit else None
    due = workdays.deadline(at, cat[4], cat[5])
    dispatch_due = workdays.deadline(at, cat[6], "working_hours")
    warn = workdays.warn_at(at, due)
    actor, actor_role = (who.name, who.role) if who else ("anonymous", "resident")
    cur = await conn.execute(
        "INSERT INTO events (category_code, category_name, source, source_ref, state, "
        "description, address, micro_grid_id, micro_grid_code, duplicate_of, "
        "reporter_user_id, reported_at, dispatch_due, deadline, warn_at, geom) VALUES (%s, %s, "
        "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
        "ST_SetSRID(ST_MakePoint(%s, %s), 4490)) "
        "RETURNING id",
        (cat[0], cat[1], r.source, r.source_ref, "merged" if dup else "reported",
         r.description, r.address, grid[0], grid[1], dup,
         who.user_id if who else None, at, dispatch_due, due, warn, r.lon, r.lat))
    (event_id,) = await cur.fetchone()  # type: ignore[misc]
    if r.contact and any(r.contact.values()):
        await conn.execute(
            "INSERT INTO event_contacts (event_id, name, phone, email) VALUES (%s, %s, %s, %s)",
            (event_id, r.contact.get("name"), r.contact.get("phone"), r.contact.get("email")))
    await _append(conn, event_id, "report", None, "merged" if dup else "reported", actor,
                  actor_role, at, None, (), {"source": r.source, "duplicate_of": dup})
    if dup is not None:
        await conn.execute("UPDATE events SET duplicates = duplicates + 1, "
                           "version = version + 1, updated_at = %s WHERE id = %s", (now, dup))
        await _append(conn, dup, "link_duplicate", None, None, actor, actor_role, at, None, (),
                      {"report": event_id}, same_state=True)
        return await get(conn, event_id, now)
    if cat[3] == "auto":
        await _register(conn, event_id, "system", "system", at, auto=True)
        if cat[2] or grid[2]:  # else it waits, registered, for a dispatcher to name someone
            await _dispatch(conn, event_id, cat[2], grid[2], "system", "system", at, None,
                            from_state="registered")
    return await get(conn, event_id, now)


async def _append(
    conn: AConn, event_id: int, action: str, from_state: str | None, to_state: str | None,
    actor: str, role: str, at: dt.datetime, reason: str | None, photos: Iterable[int],
    data: Mapping[str, Any], same_state: bool = False,
) -> None:
    if same_state or to_state is None:
        cur = await conn.execute("SELECT state FROM events WHERE id = %s", (event_id,))
        (state,) = await cur.fetchone()  # type: ignore[misc]
        from_state = from_state or state
        to_state = to_state or state
    await conn.execute(
        "INSERT INTO event_history (event_id, seq, action, from_state, to_state, actor, "
        "actor_role, at, reason, photo_ids, data) VALUES (%s, (SELECT coalesce(max(seq), 0) "
        "+ 1 FROM event_history WHERE event_id = %s), %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (event_id, event_id, action, from_state, to_state, actor, role, at, reason,
         list(photos), Jsonb(dict(data))))


async def _register(conn: AConn, event_id: int, actor: str, role: str, at: dt.datetime,
                    auto: bool = False) -> None:
    await conn.execute("UPDATE events SET state = 'registered', registered_at = %s, "
                       "version = version + 1, updated_at = %s WHERE id = %s",
                       (at, at, event_id))
    await _append(conn, event_id, "register", "reported", "registered", actor, role, at, None,
                  (), {"auto": auto})


async def _dispatch(
    conn: AConn, event_id: int, department: str | None, worker_id: int | None, actor: str,
    role: str, at: dt.datetime, reason: str | None, from_state: str, action: str = "dispatch",
) -> None:
    """Hand the event to ``department`` or the worker; notify them through the outbox."""
    if department is None and worker_id is None:
        raise Refused("nobody to dispatch to: the micro-grid has no worker on duty and the "
                      "category no department; name a department or worker")
    await conn.execute(
        "UPDATE events SET state = 'dispatched', dispatched_at = coalesce(dispatched_at, %s), "
        "department_code = %s, assignee_worker_id = %s, version = version + 1, "
        "updated_at = %s WHERE id = %s",
        (at, department, None if department else worker_id, at, event_id))
    await _append(conn, event_id, action, from_state, "dispatched", actor, role, at, reason, (),
                  {"department": department, "worker_id": None if department else worker_id})
    cur = await conn.execute(
        "SELECT e.category_name, e.micro_grid_code, e.deadline, "
        "coalesce(d.phone, w.phone), (SELECT max(seq) FROM event_history WHERE event_id = e.id)"
        " FROM events e LEFT JOIN departments d ON d.code = e.department_code "
        "LEFT JOIN workers w ON w.id = e.assignee_worker_id WHERE e.id = %s", (event_id,))
    name, grid, due, phone, seq = await cur.fetchone()  # type: ignore[misc]
    if phone:
        due_bj = due.astimezone(workdays.BEIJING).strftime("%m-%d %H:%M")
        await conn.execute(
            "INSERT INTO outbox (channel, recipient, body, event_id, dedup_key, created_at, "
            "next_attempt_at) VALUES ('sms', %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (dedup_key) DO NOTHING",
            (phone, f"【网格通】新派事件#{event_id} {name}，网格{grid}，请于{due_bj}前办结。"
             + (f" {link(event_id)}" if (link := SMS_LINK.get()) else ""),
             event_id, f"dispatch:{event_id}:{seq}", at, at))


# -- transitions -------------------------------------------------------------------------


def allowed_actions(state: str, who: Principal | None, *, in_scope: bool,
                    reporter: bool, pending: Mapping[str, Any] | None) -> list[str]:
    """What ``who`` may do to an event in ``state`` (their scope and the pending request
    considered)."""
    out = []
    for a in ACTIONS.values():
        if state not in a.sources:
            continue
        roles = ESCALATED_DISPATCH if (a.name == "dispatch" and state == "escalated") \
            else a.roles
        role_ok = who is not None and who.role in roles and (
            who.role not in HANDLE or in_scope)
        if not (role_ok or (reporter and REPORTER in roles)):
            continue
        kind = (pending or {}).get("kind")
        if a.name.startswith(("approve_", "deny_")) and kind != a.name.split("_", 1)[1]:
            continue
        if a.name.startswith("request_") and kind is not None:
            continue
        out.append(a.name)
    return out


async def transition(
    conn: AConn, who: Principal | None, event_id: int, action: str,
    payload: Mapping[str, Any] | None = None, now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Apply ``action`` to the event (caller's transaction): the event as it now stands."""
    now = now or now_utc()
    p = dict(payload or {})
    a = ACTIONS.get(action)
    if a is None:
        raise InvalidInput(f"unknown action {action!r}; actions: {', '.join(ACTIONS)}",
                           parameter="action")
    row = await _row(conn, event_id, lock=True)
    state, pending, version = row[3], row[23], row[28]
    expected = p.get("version")
    if expected is not None and expected != version:
        raise Conflict(f"event {event_id} changed meanwhile (version {version}, you sent "
                       f"{expected}); reload it", current_version=version)
    in_scope = who is not None and (who.role not in HANDLE or
                                    await _in_scope(conn, who, event_id))
    reporter = who is not None and who.user_id is not None and who.user_id == row[33]
    allowed = allowed_actions(state, who, in_scope=in_scope, reporter=reporter,
                              pending=pending)
    if action not in allowed:
        if who is not None and who.role in HANDLE and not in_scope and state in a.sources:
            raise NotAllowed(f"event {event_id} is not in {who.name}'s grids or department")
        raise Conflict(f"{action} is not allowed for event {event_id} in state {state!r}"
                       f"{' with a pending ' + pending['kind'] if pending else ''}",
                       state=state, allowed=allowed)
    reason = (p.get("reason") or "").strip() or None
    if a.needs_reason and not reason:
        raise InvalidInput(f"{action} needs a reason", parameter="reason")
    actor, role = (who.name, who.role) if who else ("anonymous", "resident")
    photos = [int(x) for x in p.get("photo_ids") or []]
    if photos:
        cur = await conn.execute("SELECT count(*) FROM event_photos WHERE event_id = %s "
                                 "AND id = ANY(%s)", (event_id, photos))
        (n,) = await cur.fetchone()  # type: ignore[misc]
        if n != len(set(photos)):
            raise InvalidInput(f"photo_ids must name photos of event {event_id}",
                               parameter="photo_ids")
    handler = _HANDLERS[action]
    data = await handler(conn, event_id, row, p, now) or {}
    if action not in ("dispatch", "reassign"):  # these append their own history row
        target = a.target
        if action == "resume":
            target = data.pop("_state")
        if target is not None:
            await conn.execute("UPDATE events SET state = %s WHERE id = %s", (target, event_id))
        await conn.execute("UPDATE events SET version = version + 1, updated_at = %s "
                           "WHERE id = %s", (now, event_id))
        await _append(conn, event_id, action, state, target or state, actor, role, now, reason,
                      photos, data)
    else:
        await _dispatch(conn, event_id, data["department"], data["worker_id"], actor, role, now,
                        reason, from_state=state, action=action)
    return await get(conn, event_id, now)


async def _h_register(conn: AConn, eid: int, row: tuple[Any, ...], p: dict[str, Any],
                      now: dt.datetime) -> dict[str, Any]:
    await conn.execute("UPDATE events SET registered_at = %s WHERE id = %s", (now, eid))
    return {}


async def _h_reject(conn: AConn, eid: int, row: tuple[Any, ...], p: dict[str, Any],
                    now: dt.datetime) -> dict[str, Any]:
    await conn.execute("UPDATE events SET closed_at = %s WHERE id = %s", (now, eid))
    return {}


async def _target(conn: AConn, eid: int, p: dict[str, Any]) -> dict[str, Any]:
    """Who a dispatch goes to: a named department or worker (employee number), else the
    default handler (the category's department, or the micro-grid's worker)."""
    if p.get("department"):
        cur = await conn.execute("SELECT code FROM departments WHERE code = %s",
                                 (p["department"],))
        if await cur.fetchone() is None:
            raise InvalidInput(f"unknown department {p['department']!r}",
                               parameter="department")
        return {"department": p["department"], "worker_id": None}
    if p.get("worker"):
        cur = await conn.execute("SELECT id FROM workers WHERE employee_no = %s",
                                 (str(p["worker"]),))
        hit = await cur.fetchone()
        if hit is None:
            raise InvalidInput(f"unknown worker {p['worker']!r}", parameter="worker")
        return {"department": None, "worker_id": hit[0]}
    cur = await conn.execute(
        "SELECT c.department_code, wa.worker_id FROM events e "
        "JOIN event_categories c ON c.code = e.category_code "
        "LEFT JOIN worker_assignments wa ON wa.micro_grid_code = e.micro_grid_code "
        "AND wa.valid_to IS NULL WHERE e.id = %s", (eid,))
    dept, worker = await cur.fetchone()  # type: ignore[misc]
    return {"department": dept, "worker_id": None if dept else worker}


async def _h_dispatch(conn: AConn, eid: int, row: tuple[Any, ...], p: dict[str, Any],
                      now: dt.datetime) -> dict[str, Any]:
    return await _target(conn, eid, p)


async def _h_reassign(conn: AConn, eid: int, row: tuple[Any, ...], p: dict[str, Any],
                      now: dt.datetime) -> dict[str, Any]:
    if not (p.get("department") or p.get("worker")):
        raise InvalidInput("reassign names the new department or worker",
                           parameter="department")
    return await _target(conn, eid, p)


async def _h_none(conn: AConn, eid: int, row: tuple[Any, ...], p: dict[str, Any],
                  now: dt.datetime) -> dict[str, Any]:
    return {}


async def _h_return(conn: AConn, eid: int, row: tuple[Any, ...], p: dict[str, Any],
                    now: dt.datetime) -> dict[str, Any]:
    await conn.execute("UPDATE events SET department_code = NULL, assignee_worker_id = NULL "
                       "WHERE id = %s", (eid,))
    return {}


async def _h_handle(conn: AConn, eid: int, row: tuple[Any, ...], p: dict[str, Any],
                    now: dt.datetime) -> dict[str, Any]:
    photos = [int(x) for x in p.get("photo_ids") or []]
    cur = await conn.execute("SELECT count(*) FROM event_photos WHERE event_id = %s AND "
                             "id = ANY(%s) AND stage = 'after'", (eid, photos))
    (n,) = await cur.fetchone()  # type: ignore[misc]
    if n == 0:
        raise Refused("handling needs an \"after\" photo: upload it (stage=after) and send "
                      "its id in photo_ids", parameter="photo_ids")
    await conn.execute("UPDATE events SET handled_at = %s WHERE id = %s", (now, eid))
    return {}


async def _h_verify_pass(conn: AConn, eid: int, row: tuple[Any, ...], p: dict[str, Any],
                         now: dt.datetime) -> dict[str, Any]:
    await conn.execute("UPDATE events SET closed_at = %s WHERE id = %s", (now, eid))
    return {"on_time": now <= row[20]}


async def _h_verify_fail(conn: AConn, eid: int, row: tuple[Any, ...], p: dict[str, Any],
                         now: dt.datetime) -> dict[str, Any]:
    await conn.execute("UPDATE events SET rework_count = rework_count + 1, handled_at = NULL "
                       "WHERE id = %s", (eid,))
    return {}


def _amount(p: Mapping[str, Any], key: str) -> tuple[int, workdays.Unit]:
    try:
        n = int(p.get(key) or 0)
    except (TypeError, ValueError):
        raise InvalidInput(f"{key} is a whole number", parameter=key) from None
    unit = p.get("unit", "working_days")
    if unit not in ("working_hours", "working_days") or not 0 < n <= 30 * (
            8 if unit == "working_hours" else 1):
        raise InvalidInput(f"{key}: 1–30 working days (or up to 240 working_hours), with "
                           "unit working_hours or working_days", parameter=key)
    return n, unit


async def _h_request_extension(conn: AConn, eid: int, row: tuple[Any, ...],
                               p: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    n, unit = _amount(p, "extend")
    pend = {"kind": "extension", "extend": n, "unit": unit, "reason": p.get("reason")}
    await conn.execute("UPDATE events SET pending = %s WHERE id = %s", (Jsonb(pend), eid))
    return {"extend": n, "unit": unit}


async def _h_request_suspension(conn: AConn, eid: int, row: tuple[Any, ...],
                                p: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    pend = {"kind": "suspension", "reason": p.get("reason")}
    await conn.execute("UPDATE events SET pending = %s WHERE id = %s", (Jsonb(pend), eid))
    return {}


async def _h_approve_extension(conn: AConn, eid: int, row: tuple[Any, ...],
                               p: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    pend = row[23]
    old_due, reported = row[20], row[15]
    seconds = pend["extend"] * 3600 if pend["unit"] == "working_hours" else None
    if seconds is not None:
        due = workdays.add_working_seconds(old_due, seconds)
    else:
        day = workdays.nth_working_day_after(old_due.astimezone(workdays.BEIJING).date(),
                                             pend["extend"])
        due = dt.datetime.combine(day, workdays.OFFICE[-1][1], workdays.BEIJING)
    warn = workdays.warn_at(reported, due)
    await conn.execute("UPDATE events SET deadline = %s, warn_at = %s, pending = NULL "
                       "WHERE id = %s", (due, warn, eid))
    return {"old_deadline": old_due.isoformat(), "deadline": due.isoformat()}


async def _h_deny(conn: AConn, eid: int, row: tuple[Any, ...], p: dict[str, Any],
                  now: dt.datetime) -> dict[str, Any]:
    await conn.execute("UPDATE events SET pending = NULL WHERE id = %s", (eid,))
    return {"denied": (row[23] or {}).get("kind")}


async def _h_approve_suspension(conn: AConn, eid: int, row: tuple[Any, ...],
                                p: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    await conn.execute("UPDATE events SET pending = NULL, paused_at = %s, resume_state = %s "
                       "WHERE id = %s", (now, row[3], eid))
    return {}


async def _h_resume(conn: AConn, eid: int, row: tuple[Any, ...], p: dict[str, Any],
                    now: dt.datetime) -> dict[str, Any]:
    cur = await conn.execute("SELECT resume_state FROM events WHERE id = %s", (eid,))
    (back,) = await cur.fetchone()  # type: ignore[misc]
    due, paused, reported = row[20], row[22], row[15]
    new_due = workdays.shift(due, paused, now)
    warn = workdays.warn_at(reported, new_due) if new_due > reported else new_due
    await conn.execute("UPDATE events SET deadline = %s, warn_at = least(%s, %s), "
                       "paused_at = NULL, resume_state = NULL WHERE id = %s",
                       (new_due, warn, new_due, eid))
    return {"_state": back, "old_deadline": due.isoformat(), "deadline": new_due.isoformat()}


async def _h_escalate(conn: AConn, eid: int, row: tuple[Any, ...], p: dict[str, Any],
                      now: dt.datetime) -> dict[str, Any]:
    await conn.execute("UPDATE events SET level = level + 1, department_code = NULL, "
                       "assignee_worker_id = NULL WHERE id = %s", (eid,))
    return {"level": row[12] + 1}


async def _h_supervise(conn: AConn, eid: int, row: tuple[Any, ...], p: dict[str, Any],
                       now: dt.datetime) -> dict[str, Any]:
    await conn.execute("UPDATE events SET supervised = true WHERE id = %s", (eid,))
    return {}


async def _h_callback(conn: AConn, eid: int, row: tuple[Any, ...], p: dict[str, Any],
                      now: dt.datetime) -> dict[str, Any]:
    s = p.get("satisfaction")
    if not isinstance(s, int) or isinstance(s, bool) or not 1 <= s <= 5:
        raise InvalidInput("satisfaction is a whole number from 1 (very dissatisfied) to 5 "
                           "(very satisfied)", parameter="satisfaction")
    await conn.execute("UPDATE events SET satisfaction = %s WHERE id = %s", (s, eid))
    return {"satisfaction": s}


async def _h_reopen(conn: AConn, eid: int, row: tuple[Any, ...], p: dict[str, Any],
                    now: dt.datetime) -> dict[str, Any]:
    cur = await conn.execute(
        "SELECT c.time_limit, c.time_unit FROM events e JOIN event_categories c "
        "ON c.code = e.category_code WHERE e.id = %s", (eid,))
    limit, unit = await cur.fetchone()  # type: ignore[misc]
    due = workdays.deadline(now, limit, unit)
    await conn.execute(
        "UPDATE events SET reopen_count = reopen_count + 1, closed_at = NULL, handled_at = NULL,"
        " satisfaction = NULL, registered_at = coalesce(registered_at, %s), deadline = %s, "
        "warn_at = %s, department_code = NULL, assignee_worker_id = NULL WHERE id = %s",
        (now, due, workdays.warn_at(now, due), eid))
    return {"deadline": due.isoformat()}


_HANDLERS: Mapping[str, Any] = {
    "register": _h_register,
    "reject": _h_reject,
    "dispatch": _h_dispatch,
    "accept": _h_none,
    "return": _h_return,
    "reassign": _h_reassign,
    "handle": _h_handle,
    "verify_pass": _h_verify_pass,
    "verify_fail": _h_verify_fail,
    "request_extension": _h_request_extension,
    "approve_extension": _h_approve_extension,
    "deny_extension": _h_deny,
    "request_suspension": _h_request_suspension,
    "approve_suspension": _h_approve_suspension,
    "deny_suspension": _h_deny,
    "resume": _h_resume,
    "escalate": _h_escalate,
    "supervise": _h_supervise,
    "callback": _h_callback,
    "reopen": _h_reopen,
}
assert set(_HANDLERS) == set(ACTIONS)  # noqa: S101 - every action has its handler


async def categories(conn: AConn) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT c.code, c.name_zh, c.name_en, c.department_code, d.name_zh, c.registration, "
        "c.time_limit, c.time_unit, c.dispatch_limit_hours, c.dedup_radius_m, "
        "c.dedup_window_hours, c.local FROM event_categories c "
        "LEFT JOIN departments d ON d.code = c.department_code ORDER BY c.code")
    return [{"code": r[0], "major": r[0][:2], "name_zh": r[1], "name_en": r[2],
             "handler": {"department": r[3], "name": r[4]} if r[3] else {"grid_worker": True},
             "registration": r[5], "time_limit": {"value": r[6], "unit": r[7]},
             "dispatch_limit_hours": r[8],
             "duplicates": {"radius_m": r[9], "window_hours": r[10]}, "local": r[11]}
            for r in await cur.fetchall()]
