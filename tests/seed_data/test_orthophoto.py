"""The two-epoch orthophoto pair: deterministic, aligned with the town, truth where said."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely

from gis.crs import transformer
from seed_data.orthophoto import AFTER_EPSG, FARMLAND, PairInfo, digest, write_pair
from seed_data.town import Town

SIZE = (600.0, 600.0)


@pytest.fixture(scope="module")
def pair(demo_town: Town, tmp_path_factory: pytest.TempPathFactory) -> PairInfo:
    return write_pair(demo_town, tmp_path_factory.mktemp("ortho"), seed=5, size_m=SIZE)


def _truth(info: PairInfo) -> list[dict]:
    return json.loads(info.truth.read_text())["features"]


def test_same_seed_same_bytes_other_seed_other_scene(demo_town: Town, pair: PairInfo,
                                                     tmp_path: Path) -> None:
    again = write_pair(demo_town, tmp_path / "again", seed=5, size_m=SIZE)
    assert digest(again) == digest(pair)
    other = write_pair(demo_town, tmp_path / "other", seed=6, size_m=SIZE)
    assert other.bounds != pair.bounds
    assert digest(other) != digest(pair)


def test_the_epochs_differ_as_real_flights_do(pair: PairInfo) -> None:
    with rasterio.open(pair.before) as b, rasterio.open(pair.after) as a:
        assert b.crs.to_epsg() == pair.before_epsg == 4548
        assert a.crs.to_epsg() == AFTER_EPSG
        assert b.res == pytest.approx((0.4, 0.4)) and a.res == pytest.approx((0.5, 0.5))
        assert b.count == a.count == 3 and b.dtypes[0] == a.dtypes[0] == "uint8"
        assert a.nodata == 0 and (a.read(1) == 0).mean() > 0.01  # irregular footprint
        assert b.profile["tiled"] and b.block_shapes[0] == (512, 512)
    with rasterio.open(pair.before_dsm) as bd, rasterio.open(pair.after_dsm) as ad:
        assert bd.res == pytest.approx((1.0, 1.0)) and ad.crs.to_epsg() == AFTER_EPSG
        assert bd.dtypes[0] == "float32"
        assert 25 < float(np.median(bd.read(1))) < 90  # the town's ground, m a.s.l.


def test_truth_has_every_kind_of_change(pair: PairInfo) -> None:
    details = {f["properties"]["detail"] for f in _truth(pair)}
    assert {"shed", "permitted_construction", "demolished"} <= details
    assert details & {"crop_ripened", "ploughed"}
    for f in _truth(pair):
        p = f["properties"]
        assert p["kind"] in ("new_structure", "removed_structure", "other")
        if p["detail"] in ("shed", "permitted_construction"):
            assert p["area_m2"] >= 99  # 11 x 9 m at least
            assert p["roof"] in ("blue", "white", "concrete")


def test_sheds_stand_on_farmland_parcels_without_permit(demo_town: Town,
                                                        pair: PairInfo) -> None:
    parcels = {p["code"]: p for p in demo_town.tables["parcels"]}
    sheds = [f for f in _truth(pair) if f["properties"]["detail"] == "shed"]
    assert sheds
    for f in sheds:
        p = parcels[f["properties"]["parcel"]]
        assert p["land_use"] in FARMLAND and p["approved_use"] in FARMLAND
        assert p["permit_status"] == "none"
        # and really inside that parcel (truth in CRS84, parcels in EPSG:4490: ~cm apart)
        shed = shapely.geometry.shape(f["geometry"])
        assert p["geom"].buffer(1e-6).contains(shed)
    for f in _truth(pair):
        if f["properties"]["detail"] == "permitted_construction":
            assert parcels[f["properties"]["parcel"]]["permit_status"] == "approved"


def test_demolished_buildings_are_town_buildings(demo_town: Town, pair: PairInfo) -> None:
    gone = [shapely.geometry.shape(f["geometry"]) for f in _truth(pair)
            if f["properties"]["detail"] == "demolished"]
    assert gone
    tree = shapely.STRtree([b["geom"] for b in demo_town.tables["buildings"]])
    for g in gone:
        hits = tree.query(g.centroid, predicate="within")
        assert len(hits) == 1


def test_the_later_image_sees_the_new_shed_the_earlier_does_not(pair: PairInfo) -> None:
    shed = next(f for f in _truth(pair) if f["properties"]["detail"] == "shed")
    lon, lat = shapely.geometry.shape(shed["geometry"]).centroid.coords[0]
    colour = {"blue": (0.20, 0.36, 0.68), "white": (0.86, 0.86, 0.86)}[
        shed["properties"]["roof"]]
    for path, epsg, want in ((pair.before, pair.before_epsg, False),
                             (pair.after, AFTER_EPSG, True)):
        x, y = transformer(4326, epsg).transform(lon, lat)
        with rasterio.open(path) as src:
            r, c = src.index(x, y)
            px = src.read(window=((r - 2, r + 3), (c - 2, c + 3))).reshape(3, -1).mean(axis=1)
        near = np.abs(px / 255 - np.asarray(colour)).max() < 0.15
        assert near == want, (path.name, px)


def test_uint16_alpha_and_striped_variants(demo_town: Town, tmp_path: Path) -> None:
    info = write_pair(demo_town, tmp_path, seed=5, size_m=(300.0, 300.0), dtype="uint16",
                      alpha=True, striped=True)
    with rasterio.open(info.after) as a, rasterio.open(info.before) as b:
        assert a.count == 4 and a.dtypes[0] == "uint16" and a.read(1).max() <= 4095
        assert a.colorinterp[3].name == "alpha" and a.nodata is None
        assert not b.profile.get("tiled")
