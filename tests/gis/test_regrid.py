"""gis.regrid: cutting micro-grids by load, merging idle neighbours, codes, topology."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import shapely

import gis.regrid
from gis.regrid import LoadedUnit, RegridError, divide, propose
from gis.topology import check_topology

COMMUNITY = "370303106001"


def test_doctests() -> None:
    assert doctest.testmod(gis.regrid).failed == 0


@pytest.mark.parametrize("n", [2, 3, 4])
def test_divide_tiles_the_shape_by_area(n: int) -> None:
    # an L-shaped, rotated polygon with a hole: pieces tile it, equal areas
    shape = shapely.difference(
        shapely.union(shapely.box(0, 0, 600, 100), shapely.box(0, 0, 100, 300)),
        shapely.box(20, 20, 40, 40))
    shape = shapely.affinity.rotate(shape, 30, origin=(0, 0))
    pieces = divide(shape, n)
    assert len(pieces) == n
    areas = [p.area for p in pieces]
    assert max(areas) - min(areas) < 1e-3 * shape.area
    assert abs(sum(areas) - shape.area) < 1e-6 * shape.area
    union = shapely.union_all(pieces)
    assert shapely.symmetric_difference(union, shape).area < 1e-6
    for a in range(n):
        for b in range(a + 1, n):
            assert shapely.intersection(pieces[a], pieces[b]).area < 1e-6


def test_divide_by_weights_follows_the_load() -> None:
    # all the weight in the left tenth: the cut lands there, not at the middle
    rng = np.random.default_rng(1)
    pts = np.column_stack([rng.uniform(0, 100, 200), rng.uniform(0, 100, 200)])
    left, right = divide(shapely.box(0, 0, 1000, 100), 2, pts, np.ones(200))
    assert left.bounds[2] < 100 or right.bounds[0] < 100
    inside = shapely.covers(left, shapely.points(pts)).sum()
    assert 95 <= inside <= 105


def test_divide_refuses_what_it_cannot_cut() -> None:
    with pytest.raises(RegridError):
        divide(shapely.Point(0, 0), 2)
    with pytest.raises(RegridError):
        divide(shapely.box(0, 0, 1, 1), 0)
    assert divide(shapely.box(0, 0, 1, 1), 1)[0].equals(shapely.box(0, 0, 1, 1))


def _row(loads: list[float]) -> list[LoadedUnit]:
    return [LoadedUnit(f"{COMMUNITY}{i + 1:03d}", f"G{i + 1}",
                       shapely.box(i * 100, 0, (i + 1) * 100, 100), load,
                       households=100 * (i + 1), population=300 * (i + 1))
            for i, load in enumerate(loads)]


def test_proposal_keeps_a_clean_topology_and_the_totals() -> None:
    units = _row([4.0, 1.0, 0.3, 0.2, 1.1, 0.4])
    p = propose(units, high=1.8, low=0.5, merged_max=1.0)
    splits = [c for c in p.changes if c.action == "split"]
    merges = [c for c in p.changes if c.action == "merge"]
    assert [c.before for c in splits] == [(f"{COMMUNITY}001",)]
    assert len(splits[0].after) == 3  # ceil(4.0 / 1.8)
    assert splits[0].after[1:] == (f"{COMMUNITY}007", f"{COMMUNITY}008")  # new codes
    assert [c.before for c in merges] == [(f"{COMMUNITY}003", f"{COMMUNITY}004")]
    # 006 (0.4) is idle but its only idle neighbour would not touch it: left alone
    codes = [u.code for u in p.units]
    assert f"{COMMUNITY}006" in codes and f"{COMMUNITY}004" not in codes
    assert sum(u.households for u in p.units) == sum(u.households for u in units)
    assert sum(u.population for u in p.units) == sum(u.population for u in units)
    assert sum(u.load for u in p.units) == pytest.approx(sum(u.load for u in units))
    street = [("370303106", shapely.box(0, 0, 600, 100))]
    community = [(COMMUNITY, shapely.box(0, 0, 600, 100))]
    report = check_topology(street, community, [(u.code, u.geom) for u in p.units])
    assert report.ok, report.summary()


def test_merges_only_siblings_that_touch() -> None:
    a = LoadedUnit(f"{COMMUNITY}001", "A", shapely.box(0, 0, 100, 100), 0.1)
    far = LoadedUnit(f"{COMMUNITY}002", "B", shapely.box(300, 0, 400, 100), 0.1)
    corner = LoadedUnit(f"{COMMUNITY}003", "C", shapely.box(100, 100, 200, 200), 0.1)
    cousin = LoadedUnit("370303106002001", "D", shapely.box(-100, 0, 0, 100), 0.1)
    assert propose([a, far, corner, cousin]).changes == ()


def test_split_shares_households_by_where_they_live() -> None:
    # five homes at the west end, one at the east end: the cut lands between the third
    # and the fourth, and each side gets half the households and half the load
    pts = np.array([[5.0, 50.0], [15, 50], [25, 50], [35, 50], [45, 50], [395, 50]])
    u = LoadedUnit(f"{COMMUNITY}001", "A", shapely.box(0, 0, 400, 100), 3.0, households=100,
                   population=250, points=pts, weights=np.ones(6))
    p = propose([u], high=1.8)
    assert [x.households for x in p.units] == [50, 50]
    assert [len(x.points) for x in p.units] == [3, 3]
    assert min(x.geom.area for x in p.units) == pytest.approx(30 * 100)
    assert [round(x.load, 2) for x in p.units] == [1.5, 1.5]


def test_thresholds_and_codes_checked() -> None:
    with pytest.raises(RegridError):
        propose(_row([1.0]), high=1.0, low=1.5)
    full = [LoadedUnit(f"{COMMUNITY}999", "Z", shapely.box(0, 0, 100, 100), 5.0)]
    with pytest.raises(RegridError, match="no micro-grid code left"):
        propose(full)
