"""The detected-change page ``/m/c/{id}`` in headless Chromium at a phone's viewport: a
small generated orthophoto pair is compared (its truth stands in for the detector, which
has its own tests) and committed as ``gridgov changes detect --commit`` does, filing the
suspected illegal structures as events with before/after chips; the page draws the
outline and the micro-grid, shows parcel, permit, verdict, chips and review, links to the
event and back, loads nothing from outside 127.0.0.1 and under 500 KB; a forged ``c``
link is refused when pages need links."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_pages import (
    ARGS,
    CHROMIUM,
    FIRST_LOAD_LIMIT,
    PHONE,
    SECRET,
    WALL,
    Visit,
    link,
    local_only,
    make_app,
    serve,
)

from layers import db
from seed_data.orthophoto import PairInfo, write_pair
from seed_data.town import Town


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def pair(demo_town: Town, tmp_path_factory: pytest.TempPathFactory) -> PairInfo:
    return write_pair(demo_town, tmp_path_factory.mktemp("changepair"), seed=3,
                      size_m=(600.0, 600.0))


@pytest.fixture
def changed_town(pair: PairInfo, fresh_db_url: str, tmp_path: Path) -> dict[str, Any]:
    """A town where an orthophoto pair was compared and committed: the ids of one
    suspected illegal structure (with its event and chips) and one permitted one."""
    from api.changes_store import commit
    from api.settings import Settings

    truth = json.loads(pair.truth.read_text())
    doc = {"type": "FeatureCollection", "properties": {"method": "cva", "with_dsm": True},
           "features": [{"type": "Feature", "geometry": f["geometry"],
                         "properties": {"kind": f["properties"]["kind"],
                                        "area_m2": f["properties"]["area_m2"],
                                        "score": 0.87, "cue": "height+colour"}}
                        for f in truth["features"]]}
    settings = Settings(env="test", GRIDGOV_PHOTOS_DIR=tmp_path / "photos")
    out = commit(settings, fresh_db_url, pair.before, pair.after, doc)
    assert out["events"], out
    with db.connect(fresh_db_url) as conn:
        illegal = conn.execute(
            "SELECT d.id, d.event_id, d.micro_grid_code, d.parcel_code, d.reason, "
            "(SELECT array_agg(p.id ORDER BY p.id) FROM event_photos p "
            " WHERE p.event_id = d.event_id), e.description FROM change_detections d "
            "JOIN events e ON e.id = d.event_id WHERE d.verdict = 'illegal_suspected' "
            "AND (SELECT count(*) FROM event_photos p WHERE p.event_id = d.event_id) = 2 "
            "ORDER BY d.id LIMIT 1").fetchone()
        permitted = conn.execute("SELECT id FROM change_detections WHERE verdict = "
                                 "'permitted' ORDER BY id LIMIT 1").fetchone()
        conn.execute("UPDATE change_detections SET review = 'confirmed' WHERE id = %s",
                     (illegal[0],))
        worker = conn.execute(
            "SELECT w.name, w.phone FROM worker_assignments a JOIN workers w ON "
            "w.id = a.worker_id WHERE a.micro_grid_code = %s AND a.valid_to IS NULL",
            (illegal[2],)).fetchone()
        conn.commit()
    return {"url": fresh_db_url, "tmp": tmp_path, "id": illegal[0], "event": illegal[1],
            "grid": illegal[2], "parcel": illegal[3], "reason": illegal[4],
            "chips": illegal[5], "permitted": permitted and permitted[0],
            "worker": worker}


def test_change_page_on_a_phone(browser: Any, changed_town: dict[str, Any]) -> None:
    t = changed_town
    with serve(make_app(t["url"], t["tmp"])) as base:
        v = Visit(browser, f"{base}/m/c/{t['id']}", PHONE)
        try:
            assert v.response.status == 200
            # the changed object's outline (red: suspected illegal) over the micro-grid
            assert v.settle(".leaflet-overlay-pane path[stroke='#cf1322']", 1) == 1
            assert v.page.locator(".leaflet-overlay-pane path[stroke='#0050b3']").count() == 1
            assert v.settle(".gridgov-vt-buildings path", 1) >= 1
            # the page names what was found, where, and what it means, in Chinese
            text = v.page.locator("#panel").inner_text()
            assert "疑似违法建设" in v.page.locator("#verdict").inner_text()
            reason = v.page.locator("#reason").inner_text()
            assert re.search("[\u4e00-\u9fff]{4}", reason) and not re.search(
                "permit|land|parcel", reason)
            assert t["parcel"] in text and t["grid"] in text and "新增建构筑物" in text
            assert "87%" in text and "高度和颜色变化" in text
            assert v.page.locator("#review").inner_text() == "已确认"
            # the before/after chips: the event's photos, public copies served by us
            chips = v.page.locator(".chips img")
            assert chips.count() == 2
            assert [c.get_attribute("alt") for c in chips.all()] == ["比对前", "比对后"]
            assert [c.get_attribute("src") for c in chips.all()] == [
                f"/api/v1/photos/{i}" for i in t["chips"]]
            v.page.wait_for_function("[...document.querySelectorAll('.chips img')]"
                                     ".every(i => i.complete && i.naturalWidth > 0)")
            # navigate and the event: thumb-sized targets
            hrefs = [a.get_attribute("href") for a in v.page.locator("nav.buttons a").all()]
            assert hrefs[0].startswith("amapuri://route/plan/?dlat=")
            assert v.page.locator("#event-link").get_attribute("href") == f"/m/e/{t['event']}"
            for box in (b.bounding_box() for b in v.page.locator(
                    ".btn:visible, .leaflet-bar a:visible").all()):
                assert box is not None and box["height"] >= 44 and box["width"] >= 44
            v.page.wait_for_load_state("networkidle")
            local_only(v.requests, base)
            total = sum(v.bytes.values())
            assert total < FIRST_LOAD_LIMIT, f"first load {total} bytes"
            v.shoot("phone-change")
            v.page.locator(".chips").scroll_into_view_if_needed()
            v.shoot("phone-change-chips")
            html = v.page.content()
        finally:
            v.close()
        # nothing personal: not the grid worker's name or phone
        assert t["worker"] and all(str(x) not in html for x in t["worker"] if x)
        # the event page (through its signed link) links back to the change
        r = httpx.get(base + link("e", t["event"]))
        assert r.status_code == 200 and f'href="/m/c/{t["id"]}"' in r.text
        if t["permitted"]:
            r = httpx.get(f"{base}/m/c/{t['permitted']}")
            assert r.status_code == 200 and "合法建设" in r.text and "event-link" not in r.text
        assert httpx.get(f"{base}/m/c/99999999").status_code == 404
        r = httpx.get(f"{base}/m/c/abc")
        assert r.status_code == 400 and "leaflet" not in r.text
        assert httpx.get(f"{base}/m/c/0").status_code == 400


def test_a_change_link_is_signed_when_pages_need_links(
        changed_town: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from api import links
    from api.cli import app

    t = changed_town
    cid = t["id"]
    with serve(make_app(t["url"], t["tmp"], pages_require_link=True)) as base:
        assert httpx.get(f"{base}/m/c/{cid}").status_code == 403
        good = link("c", cid)
        token = good.split("t=")[1]
        for path, status in [(f"/m/c/{cid + 1}?t={token}", 403),  # another change's link
                             (link("e", cid).replace("/m/e/", "/m/c/"), 403),  # another kind
                             (links.url("", "another key" * 4, "c", cid, 2), 403),
                             (f"/m/c/{cid}?t=AAAAAAAAAAAAAAAAAAAAAAA", 403)]:
            r = httpx.get(base + path)
            assert r.status_code == status, path
            assert t["parcel"] not in r.text and "leaflet" not in r.text
        r = httpx.get(base + good)
        assert r.status_code == 200 and t["parcel"] in r.text
        # the event link on it is signed until the change link expires, and opens
        m = re.search(r'href="(/m/e/\d+\?t=[A-Za-z0-9_-]+)" id="event-link"', r.text)
        assert m, r.text[-2000:]
        ev = links.verify(SECRET, "e", str(t["event"]), m.group(1).split("t=")[1])
        assert ev.expires == links.verify(SECRET, "c", str(cid), token).expires
        assert httpx.get(base + m.group(1)).status_code == 200
        # `gridgov links make c ID` prints a link that opens; an unknown change is refused
        monkeypatch.setenv("GRIDGOV_SECRET_KEY", SECRET)
        monkeypatch.setenv("GRIDGOV_PUBLIC_URL", base)
        monkeypatch.setenv("GRIDGOV_DATABASE_URL", t["url"])

        def cli(*args: str) -> Any:  # off this thread: playwright's loop may be running here
            with ThreadPoolExecutor(1) as pool:
                return pool.submit(CliRunner().invoke, app, list(args)).result()

        out = cli("links", "make", "c", str(cid), "--hours", "2")
        assert out.exit_code == 0, out.output
        assert out.output.strip().startswith(f"{base}/m/c/{cid}?t=")
        assert httpx.get(out.output.strip()).status_code == 200
        bad = cli("links", "make", "c", "99999999")
        assert bad.exit_code != 0 and "no detected change 99999999" in bad.output


def test_the_screen_shows_the_last_changes_on_demand(browser: Any,
                                                     changed_town: dict[str, Any]) -> None:
    t = changed_town
    with db.connect(t["url"]) as conn:  # an officer dismissed one: no longer in red
        conn.execute("UPDATE change_detections SET review = 'dismissed' WHERE id = (SELECT "
                     "max(id) FROM change_detections WHERE verdict = 'illegal_suspected' "
                     "AND id <> %s)", (t["id"],))
        total, red = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE verdict = 'illegal_suspected' AND "
            "review IS DISTINCT FROM 'dismissed') FROM change_detections").fetchone()
        conn.commit()
    assert red >= 1 and total > red
    with serve(make_app(t["url"], t["tmp"])) as base:
        v = Visit(browser, f"{base}/screen", WALL)
        try:
            assert v.response.status == 200
            assert v.page.locator(".gridgov-change, .gridgov-change-illegal").count() == 0
            v.page.click("#changes")
            assert v.settle(".gridgov-change-illegal", red) == red
            assert v.page.locator(".gridgov-change").count() == total - red
            assert v.page.locator("#changes-count").inner_text() == \
                f"{total} 处，疑似违法 {red} 处"
            assert v.page.evaluate("(e => e.scrollHeight <= e.clientHeight)"
                                   "(document.getElementById('side'))")
            v.page.wait_for_load_state("networkidle")
            local_only(v.requests, base)
            v.shoot("screen-changes")
            v.page.click("#changes")  # and off again
            v.page.wait_for_function(
                "!document.querySelector('.gridgov-change, .gridgov-change-illegal')")
        finally:
            v.close()
        data = httpx.get(f"{base}/screen/changes.json").json()
        assert len(data["features"]) == total and len(data["runs"]) == 1
    with serve(make_app(t["url"], t["tmp"], pages_require_link=True)) as base:
        assert httpx.get(f"{base}/screen/changes.json").status_code == 403
