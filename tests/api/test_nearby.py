"""/nearby against an independent shapely computation in the Gauss-Krüger zone."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from gis.crs import reproject, transformer

GK = 4548


@pytest.fixture(scope="module")
def client(db_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(env="test"), db_url)) as c:
        yield c


@pytest.fixture(scope="module")
def metric(db_url: str) -> dict[str, tuple[list[str], np.ndarray]]:
    """Every camera, high point and building as shapely geometries in EPSG:4548."""
    out = {}
    with psycopg.connect(db_url) as conn:
        for layer in ("cameras", "high_points", "buildings"):
            rows = conn.execute(
                f"SELECT id, ST_AsBinary(geom) FROM {layer} ORDER BY id"  # noqa: S608 - fixed
            ).fetchall()
            geoms = [reproject(g, 4490, GK) for g in shapely.from_wkb([bytes(r[1]) for r in rows])]
            out[layer] = ([f"{layer}.{r[0]}" for r in rows], np.array(geoms))
    return out


def centre_of_town(metric: dict) -> tuple[float, float]:
    x, y = shapely.centroid(shapely.MultiPoint(list(metric["cameras"][1]))).coords[0]
    return x, y


@pytest.mark.parametrize("radius", [60.0, 250.0])
def test_nearby_matches_shapely(client: TestClient, metric: dict, radius: float) -> None:
    rng = np.random.default_rng(int(radius))
    ids, geoms = metric["cameras"]
    layers_seen: set[str] = set()
    for k in rng.choice(len(ids), 8, replace=False):
        px, py = geoms[k].x + 15.0, geoms[k].y - 10.0
        lon, lat = transformer(GK, 4490).transform(px, py)
        r = client.get("/nearby", params={"lon": lon, "lat": lat, "radius": radius,
                                          "layers": "cameras,high_points,buildings",
                                          "limit": 1000})
        assert r.status_code == 200, r.text
        body = r.json()
        got = {f["id"]: f["properties"]["distance_m"] for f in body["features"]}
        want: dict[str, float] = {}
        band: set[str] = set()  # within 0.2 % of the radius: ellipsoid vs plane may differ
        for layer in ("cameras", "high_points", "buildings"):
            lids, lgeoms = metric[layer]
            d = shapely.distance(lgeoms, shapely.Point(px, py))
            for fid, dist in zip(lids, d, strict=True):
                if dist <= radius * 0.998:
                    want[fid] = float(dist)
                elif dist <= radius * 1.002:
                    band.add(fid)
        assert set(want) <= set(got) <= set(want) | band
        for fid, dist in want.items():
            assert got[fid] == pytest.approx(dist, rel=2e-3, abs=0.5)
        dists = [f["properties"]["distance_m"] for f in body["features"]]
        assert dists == sorted(dists)
        layers_seen |= {fid.split(".")[0] for fid in got}
    assert {"cameras", "buildings"} <= layers_seen


def test_properties_and_limit(client: TestClient, metric: dict) -> None:
    lon, lat = transformer(GK, 4490).transform(*centre_of_town(metric))
    r = client.get("/nearby", params={"lon": lon, "lat": lat, "radius": 1000,
                                      "layers": "cameras", "limit": 5})
    body = r.json()
    assert body["numberReturned"] == 5 and len(body["features"]) == 5
    f = body["features"][0]
    assert f["geometry"]["type"] == "Point"
    assert {"code", "heading_deg", "fov_deg", "range_m", "layer", "distance_m"} <= set(
        f["properties"])


def test_inside_a_building_is_distance_zero(client: TestClient, metric: dict) -> None:
    ids, geoms = metric["buildings"]
    p = reproject(shapely.point_on_surface(geoms[100]), GK, 4490)
    r = client.get("/nearby", params={"lon": p.x, "lat": p.y, "radius": 10,
                                      "layers": "buildings"})
    first = r.json()["features"][0]
    assert first["id"] == ids[100] and first["properties"]["distance_m"] == 0


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"radius": 0}, "radius"),
        ({"radius": 5001}, "radius"),
        ({"radius": "nan"}, "radius"),
        ({"layers": "workers"}, "workers"),
        ({"layers": "cameras;DROP TABLE cameras"}, "DROP"),
        ({"layers": ""}, "none given"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"lat": 95}, "Earth"),
    ],
)
def test_bad_nearby_is_400(client: TestClient, params: dict, needle: str) -> None:
    r = client.get("/nearby", params={"lon": 118.05, "lat": 36.8, **params})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert needle in r.text
