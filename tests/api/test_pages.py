"""Phone map pages and the command screen in headless Chromium (Debian's ``chromium``,
driven by playwright) against a real uvicorn on a free port: the map draws with its
features, no request leaves 127.0.0.1, expired and forged links are refused, the first
load stays under 500 KB; screenshots go to .data/artifacts/pages/."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from api import links
from gis.chinacrs import wgs84_to_bd09, wgs84_to_gcj02
from layers import db
from layers.cluster import free_port

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / ".data" / "artifacts" / "pages"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SECRET = "pages-test-secret-0123456789abcdef-0123456789"
PHONE = {"width": 390, "height": 844}
WALL = {"width": 1920, "height": 1080}
FIRST_LOAD_LIMIT = 500_000


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """``app`` under uvicorn on a free port in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def make_app(url: str, tmp: Path, **settings: Any) -> Any:
    from api.app import create_app
    from api.settings import Settings

    s = Settings(env="test", secret_key=SECRET, data_dir=tmp, log_json=False,
                 GRIDGOV_PHOTOS_DIR=tmp / "photos", **settings)
    return create_app(s, url)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(events_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo town with its history of events, served with the screen polling fast."""
    app = make_app(events_db_url, tmp_path_factory.mktemp("pages"), screen_refresh_seconds=2)
    with serve(app) as base:
        yield base


@pytest.fixture(scope="module")
def town(events_db_url: str) -> dict[str, Any]:
    """An open event, its micro-grid, a high point, and what the screen should count."""
    with db.connect(events_db_url) as conn:
        eid, lon, lat, grid = conn.execute(
            "SELECT id, ST_X(geom), ST_Y(geom), micro_grid_code FROM events WHERE state NOT IN "
            "('closed', 'rejected', 'merged') ORDER BY id LIMIT 1").fetchone()
        (hp,) = conn.execute("SELECT code FROM high_points ORDER BY code LIMIT 1").fetchone()
        grids = conn.execute("SELECT count(*) FROM micro_grids WHERE generation_id = "
                             "(SELECT id FROM grid_generations WHERE valid_to IS NULL)"
                             ).fetchone()[0]
        live = conn.execute("SELECT count(*) FROM events WHERE state NOT IN ('closed', "
                            "'rejected', 'merged')").fetchone()[0]
        text = conn.execute("SELECT description, address FROM events WHERE id = %s",
                            (eid,)).fetchone()
    return {"event": eid, "lon": lon, "lat": lat, "grid": grid, "high_point": hp,
            "grids": grids, "live": live, "text": text}


def link(kind: str, ident: Any, hours: float = 2, account: int | None = None) -> str:
    return links.url("", SECRET, kind, ident, hours, account)


class Visit:
    """One page load in a fresh context: every request URL and the bytes it brought."""

    def __init__(self, browser: Any, url: str, viewport: dict[str, int], **ctx: Any) -> None:
        self.requests: list[str] = []
        self.bytes: dict[str, int] = {}
        self.context = browser.new_context(viewport=viewport, locale="zh-CN", **ctx)
        self.page = self.context.new_page()
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("requestfinished", self._finished)
        self.response = self.page.goto(url, wait_until="load")

    def _finished(self, request: Any) -> None:
        sizes = request.sizes()
        self.bytes[request.url] = sizes["responseBodySize"] + sizes["responseHeadersSize"]

    def settle(self, selector: str, count: int = 1, timeout: float = 20) -> int:
        """Wait until ``selector`` matches at least ``count`` elements; how many match."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.page.locator(selector).count()
            if n >= count or time.monotonic() > deadline:
                return n
            self.page.wait_for_timeout(100)

    def shoot(self, name: str, keep: bool = True) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        # the README's copies are refreshed on request only: a test run leaves the tree clean
        if keep and os.environ.get("GRIDGOV_UPDATE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, SCREENSHOTS / path.name)
        return path

    def close(self) -> None:
        self.context.close()


def local_only(requests: list[str], base: str) -> None:
    outside = [u for u in requests if not (u.startswith(base + "/") or u.startswith("data:"))]
    assert not outside, f"requests left 127.0.0.1: {outside[:5]}"
    assert all(urlsplit(u).hostname == "127.0.0.1" for u in requests if u.startswith("http"))


# -- links ----------------------------------------------------------------------------


def test_links_are_short_signed_bound_and_expire() -> None:
    now = dt.datetime(2026, 11, 22, 8, tzinfo=dt.UTC)
    later = now + dt.timedelta(hours=48)
    t = links.sign(SECRET, "e", 123, later)
    bound = links.sign(SECRET, "e", 123, later, account=4_000_000_000)
    assert len(t) <= 24 and len(bound) <= 40 and re.fullmatch(r"[A-Za-z0-9_-]+", bound)
    ok = links.verify(SECRET, "e", "123", t, now)
    assert (ok.kind, ok.ident, ok.expires, ok.account) == ("e", "123", later, None)
    assert links.verify(SECRET, "e", "123", bound, now).account == 4_000_000_000
    for kind, ident, token, secret in [
        ("e", "124", t, SECRET),            # another event
        ("g", "123", t, SECRET),            # another kind
        ("e", "123", t, "another key" * 4),  # another key
        ("e", "123", t[:-2] + ("AA" if t[-2:] != "AA" else "BB"), SECRET),  # altered
        ("e", "123", "x" * 23, SECRET),     # made up
    ]:
        with pytest.raises(links.ForgedLink):
            links.verify(secret, kind, ident, token, now)
    # the expiry is inside the MAC: moving it forward breaks the signature
    raw = bytearray(links.base64.urlsafe_b64decode(t + "=="))
    raw[1:5] = (2**32 - 1).to_bytes(4, "big")
    with pytest.raises(links.ForgedLink):
        links.verify(SECRET, "e", "123", links.base64.urlsafe_b64encode(bytes(raw))
                     .rstrip(b"=").decode(), now)
    with pytest.raises(links.ExpiredLink):
        links.verify(SECRET, "e", "123", t, later)
    with pytest.raises(links.BadLink):
        links.verify(SECRET, "x", "1", t, now)
    with pytest.raises(links.BadLink):
        links.verify(SECRET, "e", "1; DROP", t, now)


def test_cli_prints_a_link_that_opens(site: str, town: dict[str, Any],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from api.cli import app

    monkeypatch.setenv("GRIDGOV_SECRET_KEY", SECRET)
    monkeypatch.setenv("GRIDGOV_PUBLIC_URL", site)
    out = CliRunner().invoke(app, ["links", "make", "e", str(town["event"]), "--hours", "48",
                                   "--no-check"])
    assert out.exit_code == 0, out.output
    url = out.output.strip()
    assert url.startswith(f"{site}/m/e/{town['event']}?t=")
    assert len(parse_qs(urlsplit(url).query)["t"][0]) <= 40
    r = httpx.get(url)
    assert r.status_code == 200 and "leaflet" in r.text
    bad = CliRunner().invoke(app, ["links", "make", "q", "1"])
    assert bad.exit_code == 2 and "no link kind" in bad.output


def test_refused_links_show_no_personal_data(browser: Any, site: str,
                                            town: dict[str, Any]) -> None:
    eid = town["event"]
    expired = links.url("", SECRET, "e", eid, 1, now=dt.datetime.now(dt.UTC)
                        - dt.timedelta(hours=3))
    good = link("e", eid)
    forged_other_event = f"/m/e/{eid + 1}?" + good.split("?")[1]
    other_key = links.url("", "other key" * 4, "e", eid, 2)
    for path, status in [(expired, 410), (forged_other_event, 403), (other_key, 403),
                         (f"/m/e/{eid}?t=AAAAAAAAAAAAAAAAAAAAAAA", 403), (f"/m/e/{eid}", 403)]:
        r = httpx.get(site + path)
        assert r.status_code == status, path
        assert "text/html" in r.headers["content-type"]
        for secret in (s for s in town["text"] if s):
            assert secret not in r.text
        assert "leaflet" not in r.text and str(town["grid"]) not in r.text
    r = httpx.get(site + good)
    assert r.status_code == 200
    for path, status, name in [(expired, 410, "phone-expired"),
                               (forged_other_event, 403, "phone-forged")]:
        v = Visit(browser, site + path, PHONE)
        try:  # what a phone shows: a plain refusal, no map, nothing fetched but the page
            assert v.response.status == status
            assert v.page.locator(".leaflet-container").count() == 0
            assert v.page.locator("h1").inner_text() in ("链接已过期", "链接无效")
            assert len(v.requests) == 1
            v.shoot(name, keep=name == "phone-expired")
        finally:
            v.close()
    assert httpx.get(site + "/m/g/NOPE").status_code == 404
    assert httpx.get(site + "/m/e/abc?t=x").status_code == 404


# -- the phone pages in Chromium --------------------------------------------------------


def test_event_page_on_a_phone(browser: Any, site: str, town: dict[str, Any]) -> None:
    v = Visit(browser, site + link("e", town["event"]), PHONE, geolocation={
        "longitude": town["lon"], "latitude": town["lat"]}, permissions=["geolocation"])
    try:
        assert v.response.status == 200
        # our own layers as vector tiles (SVG paths), the micro-grid boundary, the spot
        assert v.settle(".gridgov-vt-buildings path", 5) >= 5
        assert v.settle(".gridgov-vt-roads path", 1) >= 1
        assert v.settle(".gridgov-vt-micro_grids path", 1) >= 1
        assert v.page.locator(".leaflet-overlay-pane path").count() >= 1  # boundary
        assert v.page.locator(".leaflet-marker-icon").count() == 1  # the spot
        assert v.settle(".gridgov-me", 1) == 1  # the phone's own position
        v.page.wait_for_load_state("networkidle")
        local_only(v.requests, site)
        assets = v.page.evaluate(
            "[...document.querySelectorAll('script[src], link[href], img[src]')]"
            ".map(e => e.src || e.href)")
        assert assets and all(a.startswith(site + "/") or a.startswith("data:")
                              for a in assets), assets
        total = sum(v.bytes.values())
        assert total < FIRST_LOAD_LIMIT, f"first load {total} bytes"
        # navigate: Amap GCJ-02, Baidu BD-09, geo: WGS84
        hrefs = [a.get_attribute("href") for a in v.page.locator("nav.buttons a").all()]
        glon, glat = wgs84_to_gcj02(town["lon"], town["lat"])
        blon, blat = wgs84_to_bd09(town["lon"], town["lat"])
        assert hrefs[0].startswith("amapuri://route/plan/?") and \
            f"dlat={glat:.6f}&dlon={glon:.6f}" in hrefs[0]
        assert f"location={blat:.6f},{blon:.6f}" in hrefs[1] and "bd09ll" in hrefs[1]
        assert hrefs[2].startswith(f"geo:{town['lat']:.6f},{town['lon']:.6f}")
        # thumb-sized targets
        for box in (b.bounding_box() for b in v.page.locator(
                ".btn:visible, .leaflet-bar a:visible").all()):
            assert box is not None and box["height"] >= 44 and box["width"] >= 44
        assert v.page.locator("html").get_attribute("lang") == "zh-CN"
        v.shoot("phone-event")
    finally:
        v.close()


def test_grid_and_high_point_pages(browser: Any, site: str, town: dict[str, Any]) -> None:
    for path, name, selector in [(f"/m/g/{town['grid']}", "phone-grid", ".gridgov-vt path"),
                                 (f"/m/h/{town['high_point']}", "phone-high-point",
                                  ".gridgov-vt-micro_grids path")]:
        v = Visit(browser, site + path, PHONE)
        try:
            assert v.response.status == 200
            assert v.settle(selector, 3) >= 3
            assert v.page.locator(".leaflet-overlay-pane path").count() >= 1
            v.page.wait_for_load_state("networkidle")
            local_only(v.requests, site)
            assert sum(v.bytes.values()) < FIRST_LOAD_LIMIT
            v.shoot(name)
        finally:
            v.close()


def test_a_setting_makes_grid_pages_and_the_screen_need_a_link(
        events_db_url: str, tmp_path: Path, town: dict[str, Any]) -> None:
    with serve(make_app(events_db_url, tmp_path, pages_require_link=True)) as base:
        assert httpx.get(f"{base}/m/g/{town['grid']}").status_code == 403
        assert httpx.get(f"{base}{link('g', town['grid'])}").status_code == 200
        assert httpx.get(f"{base}/m/h/{town['high_point']}").status_code == 403
        assert httpx.get(f"{base}/screen").status_code == 403
        assert httpx.get(f"{base}/screen/data.json").status_code == 403
        token = link("s", "screen").split("t=")[1]
        assert httpx.get(f"{base}/screen?t={token}").status_code == 200
        assert httpx.get(f"{base}/screen/data.json?t={token}").status_code == 200


# -- the command screen ----------------------------------------------------------------


def test_screen_fills_the_wall_and_refreshes(browser: Any, site: str,
                                             town: dict[str, Any]) -> None:
    v = Visit(browser, site + "/screen", WALL)
    try:
        assert v.response.status == 200
        grids = v.page.locator(".leaflet-overlay-pane path")
        assert v.settle(".leaflet-overlay-pane path", town["grids"] + town["live"]) \
            == town["grids"] + town["live"]  # every micro-grid and every live event
        data = httpx.get(site + "/screen/data.json").json()
        assert data["open"] == town["live"] and sum(data["by_state"].values()) == town["live"]
        assert int(v.page.locator("#open").inner_text()) == town["live"]
        assert int(v.page.locator("#overdue-count").inner_text()) == data["overdue_count"]
        assert v.page.locator("#communities tr").count() == min(10, len(data["communities"]))
        assert v.page.locator("#overdue li").count() == min(8, len(data["overdue"]))
        red = sum(1 for c in data["grids"].values() if c[1] > 0)
        fills = [grids.nth(i).get_attribute("fill") for i in range(town["grids"])]
        assert fills.count("#cf1322") == red
        # it polls by itself
        v.page.wait_for_function("window.gridgovPolls >= 1", timeout=15_000)
        # coverage on demand
        v.page.click("#coverage")
        assert v.settle(".gridgov-coverage", 1) >= 1
        local_only(v.requests, site)
        side = v.page.locator("#side").bounding_box()
        assert side and side["x"] + side["width"] <= WALL["width"] + 1
        assert v.page.evaluate("document.documentElement.scrollHeight") <= WALL["height"]
        # the side panel holds everything without scrolling
        assert v.page.evaluate("(e => e.scrollHeight <= e.clientHeight)"
                               "(document.getElementById('side'))")
        v.page.click("#coverage")
        v.shoot("screen")
    finally:
        v.close()


# -- a grid worker acts from the page ----------------------------------------------------


def test_worker_accepts_and_handles_with_a_photo(browser: Any, event_town: Any,
                                                 tmp_path: Path) -> None:
    from conftest import jpeg

    from layers.auth import create_user

    with db.connect(event_town.url) as conn:
        create_user(conn, "网格员丙", "grid_worker", password="phone-pass-123",
                    grid=event_town.grid)
        conn.commit()
    app = make_app(event_town.url, tmp_path)
    with serve(app) as base:
        lon, lat = event_town.point
        r = httpx.post(f"{base}/api/v1/events", headers=event_town.auth["dispatcher"],
                       json={"category": "06010", "lon": lon, "lat": lat,
                             "description": "路边垃圾堆", "source": "hotline"})
        assert r.status_code == 201, r.text
        eid = r.json()["id"]
        assert r.json()["state"] == "dispatched"
        with db.connect(event_town.url) as conn:
            (sms,) = conn.execute("SELECT body FROM outbox WHERE event_id = %s AND "
                                  "dedup_key LIKE 'dispatch:%%'", (eid,)).fetchone()
        # the dispatch text message carries the event's signed link, which opens
        m = re.search(r"(http://127\.0\.0\.1:\d+/m/e/(\d+)\?t=([A-Za-z0-9_-]+))", sms)
        assert m and int(m.group(2)) == eid and len(m.group(3)) <= 40
        v = Visit(browser, m.group(1), PHONE)
        try:
            assert v.response.status == 200
            v.page.fill("#login input[name=name]", "网格员丙")
            v.page.fill("#login input[name=password]", "phone-pass-123")
            v.page.click("#login button")
            v.page.locator("#accept").wait_for(state="visible", timeout=15_000)
            # signed in by a cookie the page's scripts cannot read, kept nowhere else
            (cookie,) = v.context.cookies()
            assert cookie["name"] == "gridgov_session" and cookie["httpOnly"]
            assert cookie["sameSite"] == "Strict" and not cookie["secure"]  # http here
            assert cookie["expires"] > time.time()
            assert "gridgov_session" not in v.page.evaluate("document.cookie")
            assert v.page.evaluate("localStorage.length + sessionStorage.length") == 0
            v.page.click("#accept")
            v.page.locator("#handle").wait_for(state="visible", timeout=15_000)
            photo = tmp_path / "after.jpg"
            photo.write_bytes(jpeg())
            v.page.set_input_files("#photo", str(photo))
            v.page.click("#handle-go")
            v.page.wait_for_function(
                "document.getElementById('msg').textContent.indexOf('已办结') >= 0",
                timeout=15_000)
            local_only(v.requests, base)
            v.shoot("phone-event-worker", keep=False)
            # the session opens the event page without a link, on this phone only
            assert v.page.goto(f"{base}/m/e/{eid}").status == 200
            assert httpx.get(f"{base}/m/e/{eid}").status_code == 403
            v.page.locator("#logout").wait_for(state="visible", timeout=15_000)
            v.page.click("#logout")
            v.page.locator("#login").wait_for(state="visible", timeout=15_000)
            assert v.context.cookies() == []
            # signed out: the token the cookie carried is revoked on the server
            r = httpx.get(f"{base}/api/v1/session",
                          cookies={"gridgov_session": cookie["value"]})
            assert r.status_code == 401
            assert v.page.goto(f"{base}/m/e/{eid}").status == 403
        finally:
            v.close()
        ev = httpx.get(f"{base}/api/v1/events/{eid}").json()
        assert ev["state"] == "handled"
        assert [p["stage"] for p in ev["photos"]] == ["after"]
        v = Visit(browser, m.group(1), PHONE)
        try:  # the page now shows the after photo (the public copy, served by us)
            img = v.page.locator(".photos img")
            assert img.count() == 1
            v.page.wait_for_function("document.querySelector('.photos img').complete")
            assert v.page.evaluate("document.querySelector('.photos img').naturalWidth") == 64
            local_only(v.requests, base)
        finally:
            v.close()


def test_forged_expired_and_cross_origin_sessions_are_refused(
        browser: Any, event_town: Any, tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    from api.auth import seal, unseal
    from layers.auth import create_user

    with db.connect(event_town.url) as conn:
        create_user(conn, "网格员丁", "grid_worker", password="phone-pass-456",
                    grid=event_town.grid)
        conn.commit()
    lon, lat = event_town.point
    with serve(make_app(event_town.url, tmp_path)) as base:
        r = httpx.post(f"{base}/api/v1/events", headers=event_town.auth["dispatcher"],
                       json={"category": "06010", "lon": lon, "lat": lat,
                             "description": "占道经营", "source": "hotline"})
        assert r.status_code == 201, r.text  # bearer tokens keep working
        eid = r.json()["id"]
        # signing in from another origin is refused, from ours it sets the cookie
        login = {"name": "网格员丁", "password": "phone-pass-456"}
        r = httpx.post(f"{base}/api/v1/session", json=login,
                       headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and "set-cookie" not in r.headers
        r = httpx.post(f"{base}/api/v1/session", json=login, headers={"Origin": base})
        assert r.status_code == 200 and "token" not in r.json()
        value = r.cookies["gridgov_session"]
        header = r.headers["set-cookie"].lower()
        assert "httponly" in header and "samesite=strict" in header and "max-age=" in header
        jar = {"gridgov_session": value}
        assert httpx.get(f"{base}/api/v1/session", cookies=jar).json()["name"] == "网格员丁"
        accept = {"action": "accept"}
        # a write with the cookie but from elsewhere, or from nowhere said: refused
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {},
                        {"Referer": "http://127.0.0.1:1/x"}):
            r = httpx.post(f"{base}/api/v1/events/{eid}/transitions", json=accept,
                           cookies=jar, headers=headers)
            assert r.status_code == 403 and "refused" in r.json()["detail"], headers
        assert httpx.get(f"{base}/api/v1/events/{eid}").json()["state"] == "dispatched"
        # forged: altered, or signed with another key; expired: signed by us, too old
        token = unseal(SECRET, value)  # the account's bearer token, inside the cookie
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        forged = [value[:-3] + ("AAA" if value[-3:] != "AAA" else "BBB"),
                  seal("another key" * 4, token, later), "not-a-cookie"]
        for bad in forged:
            r = httpx.get(f"{base}/api/v1/session", cookies={"gridgov_session": bad})
            assert r.status_code == 401, bad
            assert 'gridgov_session=""' in r.headers["set-cookie"]  # cleared
            r = httpx.post(f"{base}/api/v1/events/{eid}/transitions", json=accept,
                           cookies={"gridgov_session": bad}, headers={"Origin": base})
            assert r.status_code == 401
        expired = seal(SECRET, token, past)
        r = httpx.get(f"{base}/api/v1/session", cookies={"gridgov_session": expired})
        assert r.status_code == 401 and "expired" in r.json()["detail"]
        # the expired session's token is revoked with it
        r = httpx.get(f"{base}/api/v1/session", cookies=jar)
        assert r.status_code == 401
        assert httpx.get(f"{base}/api/v1/events/{eid}").json()["state"] == "dispatched"

        # in Chromium: a forged cookie signs nobody in and opens no event page
        host = urlsplit(base).hostname
        v = Visit(browser, base + link("e", eid), PHONE)
        try:
            v.context.add_cookies([{"name": "gridgov_session", "value": forged[0],
                                    "domain": host, "path": "/", "httpOnly": True,
                                    "sameSite": "Strict"}])
            v.page.reload()
            v.page.locator("#login").wait_for(state="visible", timeout=15_000)
            assert v.page.locator("#actions").is_hidden()
            assert v.context.cookies() == []  # the server cleared it
            assert v.page.goto(f"{base}/m/e/{eid}").status == 403
        finally:
            v.close()

        # a page of a sibling origin (same host, another port: the same site, so the
        # SameSite=Strict cookie does travel) makes the phone post to us: refused
        target = f"{base}/api/v1/events/{eid}/photos"

        def attacker(_request: Any) -> HTMLResponse:
            return HTMLResponse(
                f"<!doctype html><form id=f method=post enctype=multipart/form-data "
                f"action='{target}'><input name=stage value=after></form>"
                "<script>document.getElementById('f').submit()</script>")

        with serve(Starlette(routes=[Route("/", attacker)])) as other:
            v = Visit(browser, base + link("e", eid), PHONE)
            try:
                v.page.fill("#login input[name=name]", "网格员丁")
                v.page.fill("#login input[name=password]", "phone-pass-456")
                v.page.click("#login button")
                v.page.locator("#accept").wait_for(state="visible", timeout=15_000)
                with v.page.expect_response(target) as got:
                    v.page.goto(other + "/")
                resp = got.value
                # 403, not 401: the cookie came along and the origin check refused it
                assert resp.status == 403
                assert f"from {other} is refused" in resp.json()["detail"]
            finally:
                v.close()
        ev = httpx.get(f"{base}/api/v1/events/{eid}").json()
        assert ev["state"] == "dispatched" and ev["photos"] == []


def test_the_cookie_is_secure_behind_https(event_town: Any, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from layers.auth import create_user

    with db.connect(event_town.url) as conn:
        create_user(conn, "网格员戊", "grid_worker", password="phone-pass-789",
                    grid=event_town.grid)
        conn.commit()
    public = "https://grid.example.gov.cn"
    app = make_app(event_town.url, tmp_path, public_url=public, session_hours=2)
    with TestClient(app, base_url=public) as c:
        login = {"name": "网格员戊", "password": "phone-pass-789"}
        # the origin is the public URL's, whatever host the request came in on
        assert c.post("/api/v1/session", json=login,
                      headers={"Origin": "http://127.0.0.1:8000"}).status_code == 403
        r = c.post("/api/v1/session", json=login, headers={"Origin": public})
        assert r.status_code == 200
        header = r.headers["set-cookie"].lower()
        assert "; secure" in header and "httponly" in header and "samesite=strict" in header
        age = re.search(r"max-age=(\d+)", header)
        assert age and 7000 < int(age.group(1)) <= 7200  # GRIDGOV_SESSION_HOURS=2
        expires = dt.datetime.fromisoformat(r.json()["expires"])
        assert dt.timedelta(hours=1.9) < expires - dt.datetime.now(dt.UTC) <= \
            dt.timedelta(hours=2)
        assert c.get("/api/v1/session").json()["name"] == "网格员戊"
        r = c.delete("/api/v1/session", headers={"Origin": public})
        assert r.status_code == 204 and "max-age=0" in r.headers["set-cookie"].lower()
        assert c.get("/api/v1/session").status_code == 401


def test_a_session_token_ends_with_the_session_also_as_bearer(
        event_town: Any, tmp_path: Path) -> None:
    """The token inside the cookie is stored with the session's end: once that passes it
    is refused as a bearer token too (a copied cookie is no lasting credential)."""
    from api.auth import unseal
    from layers.auth import create_user

    with db.connect(event_town.url) as conn:
        create_user(conn, "网格员己", "grid_worker", password="phone-pass-000",
                    grid=event_town.grid)
        conn.commit()
    with serve(make_app(event_town.url, tmp_path, session_hours=2)) as base:
        r = httpx.post(f"{base}/api/v1/session", headers={"Origin": base},
                       json={"name": "网格员己", "password": "phone-pass-000"})
        assert r.status_code == 200, r.text
        token = unseal(SECRET, r.cookies["gridgov_session"])
        bearer = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/api/v1/session", headers=bearer).json()["name"] == "网格员己"
        with db.connect(event_town.url) as conn:
            mine = hashlib.sha256(token.encode()).digest()  # only the digest is stored
            row = conn.execute("SELECT expires_at - now() FROM api_tokens "
                               "WHERE token_sha256 = %s", (mine,)).fetchone()
            assert row is not None and dt.timedelta(hours=1.9) < row[0] <= dt.timedelta(hours=2)
            conn.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second' "
                         "WHERE token_sha256 = %s", (mine,))
            conn.commit()
        r = httpx.get(f"{base}/api/v1/session", headers=bearer)
        assert r.status_code == 401, r.text
