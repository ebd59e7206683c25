"""Map pages for grid workers' phones (``/m/{kind}/{id}``) and the command-centre screen
(``/screen``), made with folium and served with every script, style and icon from
``/static`` (nothing from a CDN: the intranet has no internet).

- ``/m/e/{id}?t=…``  an event: the spot, its public photos, the micro-grid boundary,
  cameras and high points nearby, the phone's position, navigate links (Amap GCJ-02,
  Baidu BD-09, ``geo:`` WGS84), and for a signed-in grid worker accept / handle with an
  "after" photo.
  Needs a valid signed link, or a grid worker's session (signed in on a phone page: the
  session cookie of :mod:`api.auth`).
- ``/m/g/{code}``, ``/m/h/{code}``, ``/m/c/{id}``  a micro-grid, a high point, a detected
  change (orthophoto comparison: the outline, parcel, permit, verdict, before/after
  chips, review): public, no sign-in unless ``GRIDGOV_PAGES_REQUIRE_LINK`` (then a signed
  link as for events).
- ``/screen``  1920×1080: micro-grids coloured by open/overdue events, live events by
  state, counts per community, the overdue list, coverage and the change detections of
  the last comparisons (suspected illegal ones in red) on demand; polls
  ``/screen/data.json`` every ``GRIDGOV_SCREEN_REFRESH_SECONDS``.

The background is our own layers as vector tiles from ``/ogc/collections/{c}/tiles``
drawn by Leaflet.VectorGrid (micro-grids, roads, buildings), over the drone orthophoto
mosaic (``/tiles/imagery``, :data:`IMAGERY`) where imagery is registered: only within the
orthophotos' extent, enlarged beyond their native zoom.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import folium
from branca.element import Element, Figure, MacroElement
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from folium.elements import JSCSSMixin
from jinja2 import Environment, FileSystemLoader, Template, select_autoescape
from psycopg_pool import AsyncConnectionPool

from api import links
from api.auth import NotAuthenticated, NotPermitted, principal
from api.settings import Settings
from gis.chinacrs import wgs84_to_bd09, wgs84_to_gcj02
from layers import events, maps, nearby
from layers.errors import NotFound

STATIC = Path(__file__).with_name("static")
TEMPLATES = Path(__file__).with_name("templates")
VECTOR_LAYERS = ("micro_grids", "roads", "buildings")
IMAGERY = "/tiles/imagery/{z}/{x}/{y}.png"  # the orthophoto mosaic, drawn under the vectors
CAMERA_RADIUS_M = 300.0
HIGH_POINT_RADIUS_M = 3000.0

router = APIRouter(include_in_schema=False)
_env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                   autoescape=select_autoescape(["html"]))


# -- folium, pointed at our own copies -----------------------------------------------------


def _assets(root: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    v = f"{root}/static/vendor"
    return ([("leaflet", f"{v}/leaflet/leaflet.js")],
            [("leaflet_css", f"{v}/leaflet/leaflet.css"),
             ("gridgov_css", f"{root}/static/pages/pages.css")])


class _Script(JSCSSMixin):
    """Our page script (a static file) and the call that wires it to folium's objects."""

    def __init__(self, root: str, call: str, config: dict[str, Any],
                 names: dict[str, MacroElement]) -> None:
        super().__init__()
        self._name = "gridgov"
        self.default_js = [
            ("vectorgrid", f"{root}/static/vendor/leaflet.vectorgrid/"
                           "Leaflet.VectorGrid.bundled.min.js"),
            ("gridgov", f"{root}/static/pages/gridgov.js"),
        ]
        refs = ", ".join(f"{json.dumps(k)}: {v.get_name()}" for k, v in names.items())
        data = json.dumps(config, ensure_ascii=False).replace("</", "<\\/")
        self._template = Template(
            "{% macro script(this, kwargs) %}{% raw %}" + f"{call}({{{refs}}}, {data});"
            + "{% endraw %}{% endmacro %}")


def _map(root: str, location: tuple[float, float], zoom: int, height: str,
         width: str = "100%") -> folium.Map:
    m = folium.Map(location=location, zoom_start=zoom, tiles=None, control_scale=True,
                   width=width, height=height, max_zoom=20, min_zoom=11)
    m.default_js, m.default_css = _assets(root)
    return m


async def _vector_config(request: Request) -> dict[str, Any]:
    root = _root(request)
    return {
        "tiles": {name: f"{root}/ogc/collections/{name}/tiles/WebMercatorQuad/{{z}}/{{y}}/{{x}}"
                  for name in VECTOR_LAYERS},
        **await _imagery(request, root),
    }


async def _imagery(request: Request, root: str) -> dict[str, Any]:
    """The orthophoto background: URL template, extent (Leaflet's [[s, w], [n, e]]) and the
    native zoom of the finest image; empty when no orthophoto is registered."""
    from tiles.raster import native_zoom

    async with _pool(request).connection() as conn:
        cur = await conn.execute(
            "SELECT r, ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT "
            "min(resolution_m) AS r, ST_Extent(footprint) AS e FROM imagery "
            "WHERE kind = 'orthophoto') q")
        row = await cur.fetchone()
    if row is None or row[0] is None:
        return {}
    res, w, s, e, n = row
    return {"imagery": root + IMAGERY, "imagery_bounds": [[s, w], [n, e]],
            "imagery_max_zoom": native_zoom(res, (s + n) / 2)}


def _figure(title: str, *, wide: bool = False) -> Figure:
    fig = Figure()
    fig.header.add_child(Element(
        f"<title>{_env.from_string('{{ t }}').render(t=title)}</title>"
        "<meta name='theme-color' content='#003a8c'>"), name="title")
    fig.header.add_child(Element(
        "<link rel='icon' href='data:,'>"), name="no_favicon_request")
    if wide:
        fig.header.add_child(Element(
            "<meta name='viewport' content='width=1920'>"), name="wall")
    return fig


def _html(fig: Figure, status: int = 200) -> HTMLResponse:
    body = fig.render().replace("<html>", "<html lang='zh-CN'>", 1)
    return HTMLResponse(body, status_code=status,
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                                 "X-Robots-Tag": "noindex"})


def _refused(status: int, title: str, detail: str) -> HTMLResponse:
    """A page with no data at all: what went wrong, in Chinese, and what to do."""
    body = _env.get_template("page_refused.html").render(status=status, title=title,
                                                         detail=detail)
    return HTMLResponse(body, status_code=status,
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


# -- access ------------------------------------------------------------------------------


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _pool(request: Request) -> AsyncConnectionPool:
    return request.app.state.read_pool  # type: ignore[no-any-return]


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _check(request: Request, kind: str, ident: str, t: str | None) -> HTMLResponse | None:
    """None when the page may open; else the refusal page (403 forged/missing, 410
    expired, 404 not a link). Events always need a link; other kinds only when
    ``pages_require_link`` is set."""
    k = links.KINDS[kind]
    if not (k.personal or _settings(request).pages_require_link or t):
        return None
    try:
        links.verify(request.app.state.secret_key, kind, ident, t)
    except links.ExpiredLink:
        return _refused(410, "链接已过期", "这个链接已经过期。请向调度员索取新的链接。")
    except links.ForgedLink:
        return _refused(403, "链接无效", "这个链接的签名不正确，可能被改动过。")
    except links.BadLink as exc:
        if t:
            return _refused(404, "找不到页面", str(exc))
        return _refused(403, "需要链接", "这个页面只能通过短信里的签名链接打开。")
    return None


async def _worker_session(request: Request, ident: str) -> bool:
    """Whether the request's session cookie signs in a grid worker (or above), for a
    well-formed id; a forged or expired cookie is simply no session here."""
    try:
        links.KINDS["e"].check(ident)
        await principal(request, "grid_worker")
    except (links.BadLink, NotAuthenticated, NotPermitted):
        return False
    return True


def _expiry(request: Request, kind: str, ident: str, t: str) -> dt.datetime:
    """The expiry of a link already checked by :func:`_check`."""
    return links.verify(request.app.state.secret_key, kind, ident, t).expires


def _link_to(request: Request, kind: str, ident: str | int,
             expires: dt.datetime | None) -> str:
    """A page's link to another page: plain to a public page; signed until ``expires``
    when the page itself was opened by a signed link (a link sent to a worker keeps
    opening what it shows); else plain to an event (it opens with a session) and signed
    for ``GRIDGOV_LINK_HOURS`` to a page that needs a link."""
    path = f"{_root(request)}/m/{kind}/{quote(str(ident), safe='')}"
    personal = links.KINDS[kind].personal
    if not personal and not _settings(request).pages_require_link:
        return path  # a public page
    if expires is None:
        if personal:
            return path  # opens for a signed-in grid worker, else asks for a link
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=_settings(request).link_hours)
    return f"{path}?t={links.sign(request.app.state.secret_key, kind, ident, expires)}"


# -- pages -------------------------------------------------------------------------------


def navigation(lon: float, lat: float, name: str) -> dict[str, str]:
    """Links that open the phone's map app at (lon, lat) (WGS84/CGCS2000), by app schemes
    only (no public host): Amap wants GCJ-02, Baidu BD-09, a ``geo:`` URI WGS84."""
    glon, glat = wgs84_to_gcj02(lon, lat)
    blon, blat = wgs84_to_bd09(lon, lat)
    label = quote(name)
    return {
        # the Amap app's own scheme (Android and iOS): no public web host on the way, so
        # it works on an intranet; dev=0: the coordinates are GCJ-02 already
        "amap": f"amapuri://route/plan/?dlat={glat:.6f}&dlon={glon:.6f}&dname={label}"
                "&dev=0&t=0&sourceApplication=gridgov",
        "baidu": f"baidumap://map/marker?location={blat:.6f},{blon:.6f}&title={label}"
                 "&coord_type=bd09ll&src=gridgov",
        "geo": f"geo:{lat:.6f},{lon:.6f}?q={lat:.6f},{lon:.6f}({label})",
    }


def _points(fc: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": fc}


def _nearby_layers(m: folium.Map, cams: list[dict[str, Any]], hps: list[dict[str, Any]]
                   ) -> None:
    if cams:
        folium.GeoJson(_points(cams), name="视频监控", marker=folium.CircleMarker(
            radius=6, color="#0050b3", fill=True, fill_color="#40a9ff", fill_opacity=0.9,
            weight=2), tooltip=folium.GeoJsonTooltip(["name"], labels=False)).add_to(m)
    if hps:
        folium.GeoJson(_points(hps), name="高空之眼", marker=folium.CircleMarker(
            radius=9, color="#531dab", fill=True, fill_color="#b37feb", fill_opacity=0.95,
            weight=3), tooltip=folium.GeoJsonTooltip(["name"], labels=False)).add_to(m)


@router.get("/m/e/{event_id}")
async def event_page(request: Request, event_id: str, t: str | None = None) -> Response:
    refused = _check(request, "e", event_id, t)
    if refused is not None and not t and await _worker_session(request, event_id):
        refused = None  # a grid worker signed in on this phone opens it without a link
    if refused is not None:
        return refused
    root = _root(request)
    try:
        async with _pool(request).connection() as conn:
            ev = await events.get(conn, int(event_id))
            photos = await events.photos_of(conn, int(event_id))
            grid = await maps.micro_grid_by_id(conn, await maps.event_grid_id(conn, ev["id"]))
            lon, lat = ev["location"]["lon"], ev["location"]["lat"]
            cams = await nearby.nearby(conn, lon, lat, CAMERA_RADIUS_M, ["cameras"], 50)
            hps = await nearby.nearby(conn, lon, lat, HIGH_POINT_RADIUS_M, ["high_points"], 20)
            change_id = await maps.change_of_event(conn, ev["id"])
    except NotFound:
        return _refused(404, "找不到事件", f"没有编号为 {event_id} 的事件。")
    title = f"事件 #{ev['id']} {ev['category']['name']}"
    fig = _figure(title)
    m = _map(root, (lat, lon), 17, "52%")
    fig.add_child(m)
    boundary = folium.GeoJson(grid, name="微网格", style_function=lambda _f: {
        "color": "#d4380d", "weight": 4, "fill": False, "dashArray": "8 6"}).add_to(m)
    _nearby_layers(m, cams, hps)
    spot = folium.Marker((lat, lon), tooltip=title).add_to(m)
    fig.html.add_child(Element(_env.get_template("page_event.html").render(
        ev=ev, photos=photos, root=root,
        change=change_id and _link_to(request, "c", change_id, t and _expiry(request, "e",
                                                                          event_id, t)),
        nav=navigation(lon, lat, title), grid=grid["properties"], cameras=len(cams),
        high_points=len(hps))))
    m.add_child(_Script(root, "gridgovPhone",
                        {**await _vector_config(request), "event": ev["id"], "root": root,
                         "state": ev["state"], "icon": f"{root}/static/vendor/leaflet/images/"},
                        {"map": m, "focus": boundary, "spot": spot}))
    return _html(fig)


@router.get("/m/g/{code}")
async def grid_page(request: Request, code: str, t: str | None = None) -> Response:
    if (refused := _check(request, "g", code, t)) is not None:
        return refused
    root = _root(request)
    try:
        async with _pool(request).connection() as conn:
            grid = await maps.micro_grid(conn, code)
            p = grid["properties"]
            cams = await nearby.nearby(conn, p["lon"], p["lat"], 600.0, ["cameras"], 200)
            evs = await maps.grid_events(conn, code)
    except NotFound:
        return _refused(404, "找不到网格", f"没有编号为 {code} 的微网格。")
    fig = _figure(f"微网格 {p['name']}")
    m = _map(root, (p["lat"], p["lon"]), 16, "60%")
    fig.add_child(m)
    boundary = folium.GeoJson(grid, name="微网格", style_function=lambda _f: {
        "color": "#d4380d", "weight": 4, "fillOpacity": 0.05}).add_to(m)
    _nearby_layers(m, cams, [])
    if evs["features"]:
        folium.GeoJson(evs, name="在办事件", marker=folium.CircleMarker(
            radius=8, color="#000", weight=2, fill=True, fill_color="#fa8c16", fill_opacity=1),
            tooltip=folium.GeoJsonTooltip(["category", "state"], labels=False)).add_to(m)
    fig.html.add_child(Element(_env.get_template("page_grid.html").render(
        grid=p, events=len(evs["features"]),
        overdue=sum(1 for f in evs["features"] if f["properties"]["overdue"]),
        nav=navigation(p["lon"], p["lat"], p["name"]))))
    m.add_child(_Script(root, "gridgovPhone", {**await _vector_config(request), "root": root},
                        {"map": m, "focus": boundary}))
    return _html(fig)


@router.get("/m/h/{code}")
async def high_point_page(request: Request, code: str, t: str | None = None) -> Response:
    if (refused := _check(request, "h", code, t)) is not None:
        return refused
    root = _root(request)
    try:
        async with _pool(request).connection() as conn:
            hp = await maps.high_point(conn, code)
            lon, lat = hp["geometry"]["coordinates"]
            cams = await nearby.nearby(conn, lon, lat, 50.0, ["cameras"], 50)
    except NotFound:
        return _refused(404, "找不到高空之眼", f"没有编号为 {code} 的高空之眼。")
    p = hp["properties"]
    fig = _figure(f"高空之眼 {p['name']}")
    m = _map(root, (lat, lon), 13, "60%")
    fig.add_child(m)
    ring = folium.Circle((lat, lon), radius=p["radius_m"], color="#531dab", weight=3,
                         fill=True, fill_opacity=0.06, tooltip="监控范围").add_to(m)
    _nearby_layers(m, cams, [hp])
    fig.html.add_child(Element(_env.get_template("page_high_point.html").render(
        hp=p, cameras=len(cams), nav=navigation(lon, lat, p["name"]))))
    # a 3 km ring: the grid and roads; buildings at that zoom would outweigh the page
    m.add_child(_Script(root, "gridgovPhone", {**await _vector_config(request), "root": root,
                                               "only": ["micro_grids", "roads"]},
                        {"map": m, "focus": ring}))
    return _html(fig)


CHANGE_KIND = {"new_structure": "新增建构筑物", "removed_structure": "拆除建构筑物",
               "other": "其他变化"}
CHANGE_CUE = {"height": "高度变化", "colour": "颜色变化", "height+colour": "高度和颜色变化"}
CHANGE_VERDICT = {"illegal_suspected": "疑似违法建设", "permitted": "合法建设（有许可）",
                  "removed": "已拆除", "other": "非建构筑物"}
PERMIT_STATUS = {"approved": "已批准", "none": "无许可", "expired": "已过期",
                 "pending": "审批中"}
REVIEW = {"confirmed": "已确认", "dismissed": "已排除", None: "待复核"}
EVENT_STATE = {"reported": "已上报", "registered": "已立案", "dispatched": "已派遣",
               "accepted": "已接单", "handled": "已处置", "rework": "返工", "suspended": "挂起",
               "escalated": "已上报上级", "closed": "已结案", "rejected": "不予立案",
               "merged": "已合并"}
# GB/T 21010-2017: the second-level classes the demo uses, else the first level
LAND_USE = {"0101": "水田", "0102": "水浇地", "0103": "旱地", "0201": "果园",
            "0301": "乔木林地", "0501": "零售商业用地", "0601": "工业用地",
            "0701": "城镇住宅用地", "0702": "农村宅基地", "0801": "机关团体用地",
            "0803": "教育用地", "0809": "公园与绿地", "1104": "坑塘水面"}
LAND_USE_CLASS = {"01": "耕地", "02": "园地", "03": "林地", "04": "草地", "05": "商服用地",
                  "06": "工矿仓储用地", "07": "住宅用地", "08": "公共管理与公共服务用地",
                  "09": "特殊用地", "10": "交通运输用地", "11": "水域及水利设施用地",
                  "12": "其他土地"}


def land_use_zh(code: str | None) -> str:
    """A GB/T 21010 land-use code with its Chinese name: ``0103 旱地``."""
    if not code:
        return "—"
    name = LAND_USE.get(code) or LAND_USE_CLASS.get(code[:2])
    return f"{code} {name}" if name else code


def reason_zh(reason: str) -> str:
    """The verdict's reason (as :func:`layers.changes.verdict` words it) in Chinese."""
    fixed = {"a structure is gone": "原有建构筑物已不存在",
             "not a structure": "变化不是建构筑物",
             "outside every parcel": "不在任何登记地块内"}
    if reason in fixed:
        return fixed[reason]
    if m := re.fullmatch(r"land approved for (.*) \(not for building\)", reason):
        return f"土地批准用途为{land_use_zh(m.group(1))}，不是建设用地"
    if m := re.fullmatch(r"no valid permit \((.*)\)", reason):
        return f"没有有效的建设许可（{PERMIT_STATUS.get(m.group(1), m.group(1))}）"
    if m := re.fullmatch(r"permit (.*)", reason):
        return f"持有建设许可 {m.group(1)}"
    return reason


@router.get("/m/c/{change_id}")
async def change_page(request: Request, change_id: str, t: str | None = None) -> Response:
    if (refused := _check(request, "c", change_id, t)) is not None:
        return refused
    try:
        links.KINDS["c"].check(change_id)
    except links.BadLink:
        return _refused(400, "编号无效", f"“{change_id[:40]}”不是变化图斑的编号。")
    root = _root(request)
    try:
        async with _pool(request).connection() as conn:
            ch = await maps.change(conn, int(change_id))
            p = ch["properties"]
            try:
                grid = (await maps.micro_grid(conn, p["micro_grid_code"])
                        if p["micro_grid_code"] else None)
            except NotFound:  # re-gridded since: the code no longer names a current grid
                grid = None
    except NotFound:
        return _refused(404, "找不到变化图斑", f"没有编号为 {change_id} 的变化图斑。")
    title = f"变化图斑 #{p['id']} {CHANGE_VERDICT.get(p['verdict'], p['verdict'])}"
    fig = _figure(title)
    m = _map(root, (p["lat"], p["lon"]), 18, "48%")
    fig.add_child(m)
    if grid is not None:
        folium.GeoJson(grid, name="微网格", style_function=lambda _f: {
            "color": "#0050b3", "weight": 3, "fill": False, "dashArray": "8 6"}).add_to(m)
    illegal = p["verdict"] == "illegal_suspected"
    outline = folium.GeoJson(ch, name="变化图斑", style_function=lambda _f: {
        "color": "#cf1322" if illegal else "#d48806", "weight": 4, "fillOpacity": 0.25,
        "className": "gridgov-change"},
        tooltip=CHANGE_KIND.get(p["kind"], p["kind"])).add_to(m)
    expires = _expiry(request, "c", change_id, t) if t else None
    fig.html.add_child(Element(_env.get_template("page_change.html").render(
        c=p, root=root, grid=grid and grid["properties"], illegal=illegal,
        kind=CHANGE_KIND.get(p["kind"], p["kind"]), cue=CHANGE_CUE.get(p["cue"], p["cue"]),
        verdict=CHANGE_VERDICT.get(p["verdict"], p["verdict"]), reason=reason_zh(p["reason"]),
        land_use=land_use_zh(p["land_use"]), approved_use=land_use_zh(p["approved_use"]),
        permit=PERMIT_STATUS.get(p["permit_status"], p["permit_status"] or "—"),
        review=REVIEW.get(p["review"], p["review"]),
        event_state=EVENT_STATE.get(p["event_state"], p["event_state"]),
        event_link=p["event_id"] and _link_to(request, "e", p["event_id"], expires),
        nav=navigation(p["lon"], p["lat"], title))))
    m.add_child(_Script(root, "gridgovPhone", {**await _vector_config(request), "root": root},
                        {"map": m, "focus": outline}))
    return _html(fig)


# -- the command-centre screen -----------------------------------------------------------


def _screen_token(request: Request, t: str | None) -> HTMLResponse | None:
    if not _settings(request).pages_require_link:
        return None
    return _check(request, "s", "screen", t or "")


@router.get("/screen")
async def screen(request: Request, t: str | None = None) -> Response:
    if (refused := _screen_token(request, t)) is not None:
        return refused
    root = _root(request)
    now = dt.datetime.now(dt.UTC)
    async with _pool(request).connection() as conn:
        grids = await maps.screen_grids(conn, now)
        live = await maps.screen_live(conn, now)
        x0, y0, x1, y1 = await maps.bounds(conn)
    fig = _figure("一屏联全域 · 指挥中心", wide=True)
    m = _map(root, ((y0 + y1) / 2, (x0 + x1) / 2), 14, "100%", width="72%")
    fig.add_child(m)
    grid_layer = folium.GeoJson(grids, name="微网格", style_function=lambda _f: {
        "color": "#1f1f1f", "weight": 1, "fillOpacity": 0.5}).add_to(m)
    event_layer = folium.GeoJson(live["events"], name="在办事件", marker=folium.CircleMarker(
        radius=7, weight=2, color="#000", fill=True, fill_opacity=1)).add_to(m)
    fig.html.add_child(Element(_env.get_template("page_screen.html").render(
        refresh=_settings(request).screen_refresh_seconds)))
    token = f"?t={quote(t)}" if t else ""
    m.add_child(_Script(root, "gridgovScreen", {
        **await _vector_config(request), "root": root, "live": live,
        "bounds": [[y0, x0], [y1, x1]],
        "data": f"{root}/screen/data.json{token}",
        "coverage": f"{root}/screen/coverage.json{token}",
        "changes": f"{root}/screen/changes.json{token}",
        "change_page": f"{root}/m/c/",
        "refresh": _settings(request).screen_refresh_seconds,
    }, {"map": m, "grids": grid_layer, "events": event_layer}))
    return _html(fig)


@router.get("/screen/data.json")
async def screen_data(request: Request, t: str | None = None) -> Response:
    """What the screen polls: open events, counts by state and community, overdue list."""
    if _screen_token(request, t) is not None:
        return JSONResponse({"title": "Forbidden", "status": 403,
                             "detail": "the screen needs a valid signed link"}, 403,
                            media_type="application/problem+json")
    async with _pool(request).connection() as conn:
        live = await maps.screen_live(conn, dt.datetime.now(dt.UTC))
    return JSONResponse(live, headers={"Cache-Control": "no-store"})


@router.get("/screen/coverage.json")
async def screen_coverage(request: Request, t: str | None = None) -> Response:
    """micro_grid_coverage: each micro-grid's covered share (on demand)."""
    if _screen_token(request, t) is not None:
        return JSONResponse({"title": "Forbidden", "status": 403,
                             "detail": "the screen needs a valid signed link"}, 403,
                            media_type="application/problem+json")
    async with _pool(request).connection() as conn:
        return JSONResponse(await maps.coverage(conn))


SCREEN_CHANGE_RUNS = 3  # the screen's change layer: detections of the last comparisons


@router.get("/screen/changes.json")
async def screen_changes(request: Request, t: str | None = None) -> Response:
    """Change detections of the last comparisons (on demand), suspected illegal ones
    flagged by their verdict."""
    if _screen_token(request, t) is not None:
        return JSONResponse({"title": "Forbidden", "status": 403,
                             "detail": "the screen needs a valid signed link"}, 403,
                            media_type="application/problem+json")
    async with _pool(request).connection() as conn:
        return JSONResponse(await maps.screen_changes(conn, SCREEN_CHANGE_RUNS),
                            headers={"Cache-Control": "no-store"})


class SmsLinks:
    """ASGI middleware: while a request is served, a dispatch text message filed by it
    carries the event's signed phone link (``layers.events.SMS_LINK``), valid for
    ``GRIDGOV_LINK_HOURS``, starting with ``GRIDGOV_PUBLIC_URL`` or the request's host."""

    def __init__(self, app: Any, settings: Settings, secret: str) -> None:
        self.app, self.settings, self.secret = app, settings, secret

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        base = self.settings.public_url
        if not base:
            host = dict(scope["headers"]).get(b"host", b"localhost").decode("latin-1")
            base = f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}"
        hours = self.settings.link_hours

        def make(event_id: int) -> str:
            return links.url(base, self.secret, "e", event_id, hours)

        token = events.SMS_LINK.set(make)
        try:
            await self.app(scope, receive, send)
        finally:
            events.SMS_LINK.reset(token)


def install(app: FastAPI) -> None:
    """The pages and their static files (vendored Leaflet and plugins, our JS and CSS),
    and the link in dispatch text messages."""
    app.add_middleware(SmsLinks, settings=app.state.settings, secret=app.state.secret_key)
    from starlette.middleware.gzip import GZipMiddleware

    # compressed for phones on slow links: Leaflet's 148 KB script travels as ~43 KB
    app.mount("/static/vendor", GZipMiddleware(StaticFiles(directory=str(STATIC / "vendor")),
                                               minimum_size=1000), name="vendor")
    app.mount("/static/pages", GZipMiddleware(StaticFiles(directory=str(STATIC / "pages")),
                                              minimum_size=1000), name="pages")
    app.include_router(router)
