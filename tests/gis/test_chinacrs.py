"""GCJ-02 / BD-09 against vectors published by independent implementations."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from gis import chinacrs
from gis.chinacrs import (
    bd09_to_gcj02,
    bd09_to_wgs84,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)
from gis.errors import CRSError

EPS = 1e-9  # degrees, ~0.1 mm
# (WGS84 lon, lat) -> (GCJ-02 lon, lat), tolerance: googollee/eviltransform's test points
# (Shanghai, Shenzhen, Beijing) and wandergis/coordtransform's (116.404, 39.915) to 0.1 mm;
# pyxis's constants differ from the common formula by 0.8 mm, so to 1 cm.
WGS_GCJ = [
    ((121.5272106, 31.1774276), (121.531541859215, 31.17530398364597), EPS),
    ((113.912316, 22.543847), (113.9171764808363, 22.540796131694766), EPS),
    ((116.377817, 39.911954), (116.38404722455657, 39.91334545536069), EPS),
    ((116.404, 39.915), (116.41024449916938, 39.91640428150164), EPS),
    ((121.0917077, 30.6107779), (121.09626935575027, 30.608604331756705), 1e-7),
]
# GCJ-02 -> BD-09: coordtransform's and pyxis's
GCJ_BD = [
    ((116.404, 39.915), (116.41036949371029, 39.92133699351021)),
    ((121.09626935575027, 30.608604331756705), (121.10271732371203, 30.61484572185035)),
]
# WGS84 -> BD-09: hutool's (from coordtransform)
WGS_BD = [((116.404, 39.915), (116.41662724378733, 39.922699552216216))]


@pytest.mark.parametrize(("wgs", "gcj", "tol"), WGS_GCJ)
def test_wgs84_to_gcj02_matches_published_vectors(wgs: tuple, gcj: tuple, tol: float) -> None:
    lon, lat = wgs84_to_gcj02(*wgs)
    assert lon == pytest.approx(gcj[0], abs=tol) and lat == pytest.approx(gcj[1], abs=tol)


@pytest.mark.parametrize(("wgs", "gcj", "tol"), WGS_GCJ)
def test_gcj02_to_wgs84_is_exact(wgs: tuple, gcj: tuple, tol: float) -> None:
    lon, lat = gcj02_to_wgs84(*gcj)
    # the exact inverse recovers the published input (not the 1-2 m one-step approximation)
    assert lon == pytest.approx(wgs[0], abs=tol) and lat == pytest.approx(wgs[1], abs=tol)


@pytest.mark.parametrize(("gcj", "bd"), GCJ_BD)
def test_gcj02_bd09_both_ways(gcj: tuple, bd: tuple) -> None:
    lon, lat = gcj02_to_bd09(*gcj)
    assert lon == pytest.approx(bd[0], abs=EPS) and lat == pytest.approx(bd[1], abs=EPS)
    lon, lat = bd09_to_gcj02(*bd)
    assert lon == pytest.approx(gcj[0], abs=EPS) and lat == pytest.approx(gcj[1], abs=EPS)


@pytest.mark.parametrize(("wgs", "bd"), WGS_BD)
def test_wgs84_bd09_both_ways(wgs: tuple, bd: tuple) -> None:
    lon, lat = wgs84_to_bd09(*wgs)
    assert lon == pytest.approx(bd[0], abs=EPS) and lat == pytest.approx(bd[1], abs=EPS)
    lon, lat = bd09_to_wgs84(*bd)
    assert lon == pytest.approx(wgs[0], abs=EPS) and lat == pytest.approx(wgs[1], abs=EPS)


def test_round_trips_over_the_demo_town_are_exact_and_vectorised() -> None:
    rng = np.random.default_rng(1)
    lon = rng.uniform(117.9, 118.15, 5000)
    lat = rng.uniform(36.7, 36.9, 5000)
    glon, glat = wgs84_to_gcj02(lon, lat)
    assert isinstance(glon, np.ndarray) and glon.shape == lon.shape
    # the offset is hundreds of metres here: enough to land in another micro-grid
    shift_m = np.hypot((glon - lon) * 89_000, (glat - lat) * 111_000)
    assert 300 < shift_m.min() and shift_m.max() < 900
    back = gcj02_to_wgs84(glon, glat)
    assert np.max(np.abs(back[0] - lon)) < EPS and np.max(np.abs(back[1] - lat)) < EPS
    blon, blat = wgs84_to_bd09(lon, lat)
    back = bd09_to_wgs84(blon, blat)
    assert np.max(np.abs(back[0] - lon)) < EPS and np.max(np.abs(back[1] - lat)) < EPS


def test_outside_china_is_left_alone() -> None:
    assert wgs84_to_gcj02(2.35, 48.85) == (2.35, 48.85)
    assert gcj02_to_wgs84(2.35, 48.85) == (2.35, 48.85)


@pytest.mark.parametrize(("lon", "lat"), [(float("nan"), 36.8), (118.0, float("inf")),
                                          (118.0, 91.0), (181.0, 36.0)])
def test_bad_numbers_are_refused(lon: float, lat: float) -> None:
    with pytest.raises(CRSError):
        gcj02_to_wgs84(lon, lat)


def test_doctests() -> None:
    assert doctest.testmod(chinacrs).failed == 0
