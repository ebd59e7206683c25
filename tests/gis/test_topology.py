"""gis.topology on tiny explicit grids (metres), one planted defect at a time.

The clean grid: two streets side by side, one community each, two micro-grids each::

    y=100 +---------+---------+---------+---------+
          | S1C1G1  | S1C1G2  | S2C1G1  | S2C1G2  |
    y=0   +---------+---------+---------+---------+
          x=0      100       200       300       400
"""

from __future__ import annotations

import doctest
import math

import pytest
import shapely
from shapely import Point, Polygon, box
from shapely.geometry.base import BaseGeometry

import gis.topology
from gis.topology import Kind, Level, Problem, TopologyReport, Unit, check_topology

S1, S2 = "370303001", "370303002"
C1, C2 = S1 + "001", S2 + "001"
G11, G12, G21, G22 = C1 + "001", C1 + "002", C2 + "001", C2 + "002"

Pairs = list[tuple[str, BaseGeometry | None]]


def clean() -> tuple[Pairs, Pairs, Pairs]:
    streets: Pairs = [(S1, box(0, 0, 200, 100)), (S2, box(200, 0, 400, 100))]
    communities: Pairs = [(C1, box(0, 0, 200, 100)), (C2, box(200, 0, 400, 100))]
    grids: Pairs = [
        (G11, box(0, 0, 100, 100)),
        (G12, box(100, 0, 200, 100)),
        (G21, box(200, 0, 300, 100)),
        (G22, box(300, 0, 400, 100)),
    ]
    return streets, communities, grids


def with_grid(code: str, geom: BaseGeometry | None) -> TopologyReport:
    streets, communities, grids = clean()
    grids = [(c, geom if c == code else g) for c, g in grids]
    return check_topology(streets, communities, grids)


def only(report: TopologyReport, kind: Kind) -> list[Problem]:
    return [p for p in report.problems if p.kind is kind]


def test_clean_grid_passes() -> None:
    report = check_topology(*clean())
    assert report.ok
    assert report.problems == ()
    assert report.summary() == "clean"
    assert dict(report.checked) == {Level.STREET: 2, Level.COMMUNITY: 2, Level.MICRO_GRID: 4}


def test_awkward_but_clean_shapes_pass() -> None:
    """A community with a hole filled by another community (an enclave), a multipolygon
    micro-grid in two pieces, units given as Unit with matching parent codes."""
    ring = box(0, 0, 300, 300).difference(box(100, 100, 200, 200))
    enclave = box(100, 100, 200, 200)
    left, right = box(0, 0, 100, 300), box(200, 0, 300, 300)
    middle = ring.difference(left).difference(right)  # two pieces: above and below
    assert middle.geom_type == "MultiPolygon"
    report = check_topology(
        [Unit(S1, box(0, 0, 300, 300))],
        [Unit(C1, ring, S1), Unit(S1 + "002", enclave, S1)],
        [Unit(G11, left, C1), Unit(G12, middle, C1), Unit(C1 + "003", right, C1),
         Unit(S1 + "002001", enclave, S1 + "002")],
    )
    assert report.ok, report.problems


def test_gap_is_reported_with_its_community_and_location() -> None:
    report = with_grid(G12, box(110, 0, 200, 100))
    [gap] = report.problems
    assert gap.kind is Kind.GAP
    assert gap.level is Level.MICRO_GRID
    assert gap.codes == (C1, G11, G12)
    assert gap.area_m2 == pytest.approx(1000.0)
    assert box(100, 0, 110, 100).contains(gap.location)
    assert not report.ok


def test_each_gap_polygon_is_reported_separately() -> None:
    report = with_grid(G12, box(110, 10, 190, 90))  # a ring-shaped gap around G12...
    streets, communities, grids = clean()
    grids[1] = (G12, box(110, 0, 200, 100).difference(box(150, 0, 160, 100)))  # ...two gaps
    assert len(only(report, Kind.GAP)) == 1
    gaps = only(check_topology(streets, communities, grids), Kind.GAP)
    assert len(gaps) == 2
    assert {round(g.area_m2) for g in gaps} == {1000}
    holes = [box(100, 0, 110, 100), box(150, 0, 160, 100)]
    assert sorted(next(k for k, h in enumerate(holes) if h.contains(g.location))
                  for g in gaps) == [0, 1]


def test_overlap_between_siblings() -> None:
    report = with_grid(G11, box(0, 0, 120, 100))
    [overlap] = report.problems
    assert overlap.kind is Kind.OVERLAP
    assert overlap.codes == (G11, G12)
    assert overlap.area_m2 == pytest.approx(2000.0)
    assert box(100, 0, 120, 100).contains(overlap.location)
    assert "siblings" in overlap.detail


def test_micro_grid_straddling_two_communities() -> None:
    report = with_grid(G12, box(100, 0, 250, 100))
    kinds = {p.kind for p in report.problems}
    assert kinds == {Kind.OUTSIDE_PARENT, Kind.OVERLAP}
    [outside] = only(report, Kind.OUTSIDE_PARENT)
    assert outside.level is Level.MICRO_GRID
    assert outside.codes == (G12, C1, C2)  # the grid, its community, the one it spills into
    assert outside.area_m2 == pytest.approx(5000.0)
    assert box(200, 0, 250, 100).contains(outside.location)
    [overlap] = only(report, Kind.OVERLAP)
    assert overlap.codes == (G12, G21)
    assert "across" in overlap.detail
    assert box(200, 0, 250, 100).contains(overlap.location)


def test_overlap_across_parents_at_the_same_level() -> None:
    streets, communities, grids = clean()
    communities[0] = (C1, box(0, 0, 230, 100))
    report = check_topology(streets, communities, grids)
    overlaps = only(report, Kind.OVERLAP)
    assert [(p.level, p.codes) for p in overlaps] == [(Level.COMMUNITY, (C1, C2))]
    assert box(200, 0, 230, 100).contains(overlaps[0].location)
    # C1 now also reaches outside street S1 and holds a gap its grids leave uncovered
    assert {p.kind for p in report.problems} == {Kind.OVERLAP, Kind.OUTSIDE_PARENT, Kind.GAP}


def test_invalid_bow_tie_is_reported_and_the_other_checks_still_run() -> None:
    bow_tie = Polygon([(0, 0), (100, 100), (100, 0), (0, 100), (0, 0)])
    assert not bow_tie.is_valid
    report = with_grid(G11, bow_tie)
    [invalid] = only(report, Kind.INVALID)
    assert invalid.codes == (G11,)
    assert "Self-intersection" in invalid.detail
    assert invalid.location.distance(Point(50, 50)) < 1e-9
    assert invalid.area_m2 == pytest.approx(5000.0)  # the two triangles, repaired
    # the repaired bow-tie leaves two triangles of C1 uncovered: still found
    gaps = only(report, Kind.GAP)
    assert len(gaps) == 2
    assert all(g.codes[0] == C1 and box(0, 0, 100, 100).contains(g.location) for g in gaps)


def test_non_polygonal_geometry_is_invalid() -> None:
    report = with_grid(G11, shapely.LineString([(0, 0), (100, 100)]))
    [invalid] = only(report, Kind.INVALID)
    assert invalid.codes == (G11,)
    assert "LineString" in invalid.detail


@pytest.mark.parametrize("geom", [None, Polygon()], ids=["none", "empty-polygon"])
def test_empty_geometry(geom: BaseGeometry | None) -> None:
    report = with_grid(G11, geom)
    [empty] = only(report, Kind.EMPTY)
    assert empty.codes == (G11,)
    assert empty.location.is_empty
    # and its community's area is uncovered
    [gap] = only(report, Kind.GAP)
    assert gap.codes[0] == C1
    assert box(0, 0, 100, 100).contains(gap.location)


def test_orphan() -> None:
    streets, communities, grids = clean()
    stray = "370303001009001"  # community 370303001009 does not exist
    grids.append((stray, box(450, 0, 500, 100)))
    communities.append(("370303009001", box(400, 0, 450, 100)))  # street 370303009 neither
    grids.append(("370303009001001", box(400, 0, 450, 100)))  # its child is no orphan
    report = check_topology(streets, communities, grids)
    orphans = only(report, Kind.ORPHAN)
    assert [(p.level, p.codes) for p in orphans] == [
        (Level.COMMUNITY, ("370303009001",)), (Level.MICRO_GRID, (stray,))]
    assert box(400, 0, 450, 100).contains(orphans[0].location)
    assert box(450, 0, 500, 100).contains(orphans[1].location)
    assert {p.kind for p in report.problems} == {Kind.ORPHAN}


@pytest.mark.parametrize(
    ("code", "why"),
    [("37030300100A", "not 15 digits"), ("3703030010010011", "not 15 digits"),
     ("３７０３０３００１００１００３", "not 15 digits")],  # full-width digits are not digits
    ids=["letter", "too-long", "full-width"],
)
def test_bad_code_format(code: str, why: str) -> None:
    streets, communities, grids = clean()
    grids.append((code, box(0, 100, 100, 150)))
    report = check_topology(streets, communities, grids)
    [bad] = only(report, Kind.CODE_FORMAT)
    assert bad.codes == (code,)
    assert why in bad.detail
    assert box(0, 100, 100, 150).contains(bad.location)
    assert not only(report, Kind.ORPHAN)  # a malformed code names no parent


def test_parent_code_that_the_prefix_denies() -> None:
    streets, communities, grids = clean()
    units = [Unit(c, g, C2 if c == G11 else c[:12]) for c, g in grids]
    report = check_topology(streets, communities, units)
    [bad] = report.problems
    assert (bad.kind, bad.codes) == (Kind.CODE_FORMAT, (G11,))
    assert C2 in bad.detail
    assert box(0, 0, 100, 100).contains(bad.location)


def test_duplicate_code() -> None:
    streets, communities, grids = clean()
    grids[0] = (G11, box(0, 0, 50, 100))
    grids.insert(1, (G11, box(50, 0, 100, 100)))
    report = check_topology(streets, communities, grids)
    [dup] = report.problems
    assert dup.kind is Kind.DUPLICATE_CODE
    assert dup.codes == (G11,)
    assert box(50, 0, 100, 100).contains(dup.location)  # the second one


def test_slivers_below_the_tolerance_are_ignored() -> None:
    streets, communities, grids = clean()
    grids[0] = (G11, box(0, 0, 100.004, 100))  # 0.4 m² overlap with G12
    grids[2] = (G21, box(200.003, 0, 300, 100))  # 0.3 m² gap in C2
    assert check_topology(streets, communities, grids).ok
    fine = check_topology(streets, communities, grids, min_area_m2=0.01)
    assert sorted(p.kind.value for p in fine.problems) == ["gap", "overlap"]
    assert check_topology(streets, communities, grids, min_area_m2=0.35).count(Kind.OVERLAP) == 1


def test_several_defects_at_once_each_reported_once() -> None:
    streets, communities, grids = clean()
    grids[0] = (G11, Polygon([(0, 0), (100, 100), (100, 0), (0, 100), (0, 0)]))
    grids[3] = (G22, box(300, 0, 390, 100))
    grids.append(("370303002001002", box(250, 0, 300, 100)))
    report = check_topology(streets, communities, grids)
    assert report.summary() == "6 problems: 1 invalid, 1 overlap, 3 gap, 1 duplicate_code"
    assert report.count(Kind.GAP) == 3


def test_problems_are_frozen_and_sorted() -> None:
    report = with_grid(G12, box(100, 0, 250, 100))
    with pytest.raises(AttributeError):
        report.problems[0].area_m2 = 0.0  # type: ignore[misc]
    keys = [(list(Level).index(p.level), list(Kind).index(p.kind), p.codes)
            for p in report.problems]
    assert keys == sorted(keys)
    assert all(math.isfinite(p.area_m2) for p in report.problems)


def test_negative_tolerance_is_refused() -> None:
    with pytest.raises(ValueError, match="min_area_m2"):
        check_topology(*clean(), min_area_m2=-1.0)


def test_docstring_examples() -> None:
    result = doctest.testmod(gis.topology)
    assert result.attempted > 0
    assert result.failed == 0
