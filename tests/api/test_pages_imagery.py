"""The phone pages over the drone orthophoto, in headless Chromium (Debian's ``chromium``)
against a real uvicorn: once an orthophoto of the demo town (seed_data.orthophoto) is
registered, a micro-grid page under it asks 127.0.0.1 for imagery tiles and gets PNGs,
nothing leaves 127.0.0.1, and the first load without the imagery stays under 500 KB."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from layers import db, imagery
from seed_data.orthophoto import write_pair
from seed_data.town import Town

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / ".data" / "artifacts" / "pages"
SECRET = "pages-imagery-secret-0123456789abcdef-01234567"
PHONE = {"width": 390, "height": 844}
FIRST_LOAD_LIMIT = 500_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def test_a_grid_page_draws_the_orthophoto_from_our_own_tiles(
        browser: Any, demo_town: Town, fresh_db_url: str, tmp_path: Path, served: Any) -> None:
    from api.app import create_app
    from api.settings import Settings

    pair = write_pair(demo_town, tmp_path / "pair", seed=1, size_m=(600.0, 450.0))
    s = Settings(env="test", secret_key=SECRET, data_dir=tmp_path / "data", log_json=False,
                 GRIDGOV_PHOTOS_DIR=tmp_path / "photos")
    with served(create_app(s, fresh_db_url)) as base:
        with db.connect(fresh_db_url) as conn:
            (code,) = conn.execute(
                "SELECT m.code FROM micro_grids m JOIN grid_generations g ON g.id = "
                "m.generation_id AND g.valid_to IS NULL WHERE ST_Intersects(m.geom, "
                "ST_SetSRID(ST_MakePoint(%s, %s), 4490)) ORDER BY m.code LIMIT 1",
                _centre(pair.after)).fetchone()
        before = httpx.get(f"{base}/m/g/{code}").text
        assert "/tiles/imagery/" not in before  # no imagery yet: no background asked for
        with db.connect(fresh_db_url) as conn:
            imagery.add(conn, s.imagery_dir, pair.after, "demo-after")
            conn.commit()
        after = httpx.get(f"{base}/m/g/{code}").text
        assert '"imagery": "/tiles/imagery/{z}/{x}/{y}.png"' in after
        assert '"imagery_max_zoom": 18' in after

        context = browser.new_context(viewport=PHONE, locale="zh-CN")
        page = context.new_page()
        requests: list[str] = []
        tiles: dict[str, tuple[int, str]] = {}
        sizes: dict[str, int] = {}
        page.on("request", lambda r: requests.append(r.url))
        page.on("response", lambda r: tiles.__setitem__(
            r.url, (r.status, r.headers.get("content-type", ""))) if "/tiles/imagery/" in r.url
            else None)

        def finished(request: Any) -> None:
            n = request.sizes()
            sizes[request.url] = n["responseBodySize"] + n["responseHeadersSize"]

        page.on("requestfinished", finished)
        try:
            response = page.goto(f"{base}/m/g/{code}", wait_until="load")
            assert response.status == 200
            deadline = time.monotonic() + 30
            loaded = page.locator(".gridgov-imagery img.leaflet-tile-loaded")
            while loaded.count() < 2 and time.monotonic() < deadline:
                page.wait_for_timeout(100)
            assert loaded.count() >= 2
            page.wait_for_load_state("networkidle")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "phone-grid-orthophoto.png"))
        finally:
            context.close()
    ok = [u for u, (status, kind) in tiles.items() if status == 200 and kind == "image/png"]
    assert ok, tiles
    assert all(status in (200, 204) for status, _ in tiles.values()), tiles
    assert all(u.startswith(f"{base}/tiles/imagery/") for u in ok)
    outside = [u for u in requests if not (u.startswith(base + "/") or u.startswith("data:"))]
    assert not outside, f"requests left 127.0.0.1: {outside[:5]}"
    first = sum(v for u, v in sizes.items() if "/tiles/imagery/" not in u)
    assert first < FIRST_LOAD_LIMIT, f"first load {first} bytes without the imagery"


def _centre(path: Path) -> tuple[float, float]:
    """The lon/lat of the middle of an image's valid data."""
    outline = imagery.footprint(path)
    point = outline.representative_point()
    return point.x, point.y
