"""OGC API Features Part 4 through a real client: OWSLib's ``Features`` creates, replaces
and deletes a camera on a served app, and reads each change back through the same API."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg
import pytest

from api.app import create_app
from api.settings import Settings
from layers import db
from layers.auth import create_token

Served = Callable[[Any], AbstractContextManager[str]]


def camera(code: str, lon: float, lat: float, range_m: float) -> dict[str, Any]:
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {"code": code, "name": "OWSLib 枪机", "kind": "fixed",
                           "heading_deg": 45.0, "fov_deg": 60.0, "range_m": range_m,
                           "mount_height_m": 5.0, "high_point_id": None}}


def find(api: Any, code: str) -> list[dict[str, Any]]:
    page = api.collection_items("cameras", filter=f"code = '{code}'", limit=10)
    return page["features"]  # type: ignore[no-any-return]


def test_owslib_creates_replaces_and_deletes(fresh_db_url: str, served: Served) -> None:
    from owslib.ogcapi.features import Features

    with db.connect(fresh_db_url) as conn:
        token = create_token(conn, "OWSLib 科员", "officer")
        conn.commit()
    code = "CAMOWSLIB0001"
    with served(create_app(Settings(env="test"), fresh_db_url)) as base:
        anonymous = Features(f"{base}/ogc")
        with pytest.raises(RuntimeError, match="token"):  # OWSLib raises the answer's text
            anonymous.collection_item_create("cameras", camera(code, 118.05, 36.80, 100.0))
        assert find(anonymous, code) == []

        api = Features(f"{base}/ogc", headers={"Authorization": f"Bearer {token}"})
        assert api.collection_item_create("cameras", camera(code, 118.05, 36.80, 100.0))
        (made,) = find(api, code)
        assert made["properties"]["range_m"] == 100.0
        assert made["geometry"]["coordinates"] == pytest.approx([118.05, 36.80])

        fid = str(made["id"])
        replaced = camera(code, 118.06, 36.81, 150.0)
        assert api.collection_item_update("cameras", fid, json.dumps(replaced))
        again = api.collection_item("cameras", fid)
        assert again["properties"]["range_m"] == 150.0
        assert again["geometry"]["coordinates"] == pytest.approx([118.06, 36.81])

        # a refused replacement (not a camera kind) changes nothing
        bad = camera(code, 118.07, 36.82, 150.0)
        bad["properties"]["kind"] = "drone"
        with pytest.raises(RuntimeError, match="kind"):
            api.collection_item_update("cameras", fid, json.dumps(bad))
        assert api.collection_item("cameras", fid)["geometry"]["coordinates"] == \
            pytest.approx([118.06, 36.81])

        assert api.collection_item_delete("cameras", fid)
        assert find(api, code) == []
    with psycopg.connect(fresh_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM cameras WHERE code = %s",
                            (code,)).fetchone() == (0,)
