"""Topology of the three-level grid: every fault that makes the boundaries unusable.

Pure functions on shapely geometries in a *metric* CRS (the caller reprojects to the
Gauss-Krüger zone of the data), so areas are square metres.  Each level is a sequence
of ``(code, geometry)`` pairs, optionally ``(code, geometry, parent_code)`` when the
data names the parent explicitly; a child's parent is the unit whose code is the
child's code prefix (street 9 digits, community 12, micro-grid 15).

Faults, each reported with the representative point of the offending piece:

``invalid``         GEOS's reason (``shapely.is_valid_reason``), or not polygonal
``empty``           no geometry (location is an empty point)
``orphan``          a child whose code prefix names no parent
``outside_parent``  a child reaching more than the tolerance outside its parent
``overlap``         two units of one level sharing more than the tolerance of area
``gap``             part of a parent covered by none of its children (one per piece)
``code_format``     wrong length or non-digits, or a parent code the prefix denies
``duplicate_code``  one code used twice in a level

Invalid geometries are repaired (``make_valid``) for the other checks, so one bow-tie
does not hide the rest.  Pieces smaller than ``min_area_m2`` are floating-point noise
and ignored.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

__all__ = [
    "CODE_LENGTH",
    "Kind",
    "Level",
    "Problem",
    "TopologyReport",
    "Unit",
    "check_topology",
    "level_of_code",
]

ObjArray = npt.NDArray[np.object_]


class Level(StrEnum):
    """The three levels of the grid, top down."""

    STREET = "street"
    COMMUNITY = "community"
    MICRO_GRID = "micro_grid"


class Kind(StrEnum):
    """What is wrong."""

    INVALID = "invalid"
    EMPTY = "empty"
    ORPHAN = "orphan"
    OUTSIDE_PARENT = "outside_parent"
    OVERLAP = "overlap"
    GAP = "gap"
    CODE_FORMAT = "code_format"
    DUPLICATE_CODE = "duplicate_code"


LEVELS: tuple[Level, ...] = (Level.STREET, Level.COMMUNITY, Level.MICRO_GRID)
CODE_LENGTH: dict[Level, int] = {Level.STREET: 9, Level.COMMUNITY: 12, Level.MICRO_GRID: 15}
PARENT: dict[Level, Level] = {Level.COMMUNITY: Level.STREET, Level.MICRO_GRID: Level.COMMUNITY}
_KIND_ORDER = {k: i for i, k in enumerate(Kind)}
_LEVEL_ORDER = {lv: i for i, lv in enumerate(LEVELS)}
_POLYGONAL = (3, 6)  # shapely type ids of Polygon and MultiPolygon
_WHERE = re.compile(r"\[(\S+) (\S+)\]")  # the point in a GEOS validity reason
_ADJACENT_M = 0.01  # children within this distance of a gap are named with it


class Unit(NamedTuple):
    """One grid unit: its code, its geometry and, when the data names it, its parent's code."""

    code: str
    geom: BaseGeometry | None
    parent: str | None = None


UnitLike = Unit | tuple[str, BaseGeometry | None] | tuple[str, BaseGeometry | None, str | None]


@dataclass(frozen=True)
class Problem:
    """One fault: what, at which level, which codes, where (metric CRS) and how big."""

    kind: Kind
    level: Level
    codes: tuple[str, ...]
    location: Point
    area_m2: float
    detail: str


@dataclass(frozen=True)
class TopologyReport:
    """Every fault found, sorted by level, kind and codes; ``ok`` when there is none.

    ``epsg`` records the metric CRS of the locations when the caller gave it.
    """

    problems: tuple[Problem, ...]
    checked: tuple[tuple[Level, int], ...] = ()
    min_area_m2: float = 1.0
    epsg: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def with_problems(self, extra: Iterable[Problem]) -> TopologyReport:
        """This report with ``extra`` problems added, sorted like the others."""
        return replace(self, problems=tuple(sorted([*self.problems, *extra], key=_order)))

    def count(self, kind: Kind) -> int:
        """How many problems of ``kind``."""
        return sum(1 for p in self.problems if p.kind is kind)

    def summary(self) -> str:
        """One line: ``'clean'`` or ``'3 problems: 2 overlap, 1 gap'``.

        >>> TopologyReport(()).summary()
        'clean'
        """
        if self.ok:
            return "clean"
        n = len(self.problems)
        kinds = Counter(p.kind for p in self.problems)
        parts = ", ".join(f"{kinds[k]} {k.value}" for k in Kind if kinds[k])
        return f"{n} problem{'s' if n != 1 else ''}: {parts}"


def level_of_code(code: str) -> Level | None:
    """The level a code's length names, or None.

    >>> level_of_code("370303106001"), level_of_code("12")
    (<Level.COMMUNITY: 'community'>, None)
    """
    for level, n in CODE_LENGTH.items():
        if len(code) == n:
            return level
    return None


def check_topology(
    streets: Iterable[UnitLike],
    communities: Iterable[UnitLike],
    micro_grids: Iterable[UnitLike],
    min_area_m2: float = 1.0,
    epsg: int | None = None,
) -> TopologyReport:
    """Check the three levels of a grid (geometries in a metric CRS).

    >>> from shapely import box
    >>> report = check_topology(
    ...     [("370303106", box(0, 0, 200, 100))],
    ...     [("370303106001", box(0, 0, 200, 100))],
    ...     [("370303106001001", box(0, 0, 100, 100)),
    ...      ("370303106001002", box(120, 0, 200, 100))],
    ... )
    >>> [(p.kind.value, p.codes, p.area_m2, p.location.x) for p in report.problems]
    [('gap', ('370303106001', '370303106001001', '370303106001002'), 2000.0, 110.0)]
    >>> report.ok
    False
    """
    if not min_area_m2 >= 0.0:
        raise ValueError(f"min_area_m2 must be a non-negative number, not {min_area_m2!r}")
    given = (streets, communities, micro_grids)
    problems: list[Problem] = []
    levels = {
        level: _prepare(level, [_unit(u) for u in units], problems)
        for level, units in zip(LEVELS, given, strict=True)
    }
    for level in LEVELS:
        _overlaps(levels[level], min_area_m2, problems)
    for child_level, parent_level in PARENT.items():
        _hierarchy(levels[child_level], levels[parent_level], min_area_m2, problems)
    problems.sort(key=_order)
    return TopologyReport(
        problems=tuple(problems),
        checked=tuple((lv, len(levels[lv].codes)) for lv in LEVELS),
        min_area_m2=min_area_m2,
        epsg=epsg,
    )


def _order(p: Problem) -> tuple[int, int, tuple[str, ...]]:
    return _LEVEL_ORDER[p.level], _KIND_ORDER[p.kind], p.codes


# -- per level: format, emptiness, validity ----------------------------------------------


@dataclass
class _Level:
    level: Level
    codes: list[str]
    geoms: ObjArray  # polygonal (repaired when invalid) or None when unusable
    well_formed: npt.NDArray[np.bool_]  # code has the level's length and only digits
    tree: shapely.STRtree = field(init=False)
    usable: npt.NDArray[np.intp] = field(init=False)

    def __post_init__(self) -> None:
        self.usable = np.flatnonzero(~shapely.is_missing(self.geoms))
        self.tree = shapely.STRtree(self.geoms[self.usable])

    def near(self, geom: BaseGeometry, predicate: str, **kw: float) -> list[int]:
        """Indexes (into ``codes``) of usable units that satisfy ``predicate`` with ``geom``."""
        hits = self.tree.query(geom, predicate=predicate, **kw)
        return sorted(int(self.usable[h]) for h in hits)


def _unit(u: UnitLike) -> Unit:
    if isinstance(u, Unit):
        return u
    if len(u) == 2:
        return Unit(str(u[0]), u[1])
    return Unit(str(u[0]), u[1], u[2])


def _prepare(level: Level, units: Sequence[Unit], problems: list[Problem]) -> _Level:
    codes = [u.code for u in units]
    raw = np.empty(len(units), dtype=object)
    raw[:] = [u.geom for u in units]
    geoms = raw.copy()
    missing = shapely.is_missing(raw) | shapely.is_empty(raw)
    polygonal = np.isin(shapely.get_type_id(raw), _POLYGONAL)
    valid = shapely.is_valid(raw) & polygonal & ~missing
    for i in np.flatnonzero(missing):
        problems.append(Problem(Kind.EMPTY, level, (codes[i],), Point(), 0.0, "no geometry"))
        geoms[i] = None
    for i in np.flatnonzero(~valid & ~missing):
        g = raw[i]
        fixed = _polygonal(shapely.make_valid(g, method="structure", keep_collapsed=False))
        if polygonal[i]:
            reason = str(shapely.is_valid_reason(g))
            where = _WHERE.search(reason)
            if where is not None:
                spot = Point(float(where.group(1)), float(where.group(2)))
            else:
                spot = _spot(fixed)
        else:
            reason = f"not polygonal: {g.geom_type}"
            spot = _spot(fixed) if not fixed.is_empty else _spot(g)
        geoms[i] = None if fixed.is_empty else fixed
        area = 0.0 if fixed.is_empty else float(fixed.area)
        problems.append(Problem(Kind.INVALID, level, (codes[i],), spot, area, reason))

    n = CODE_LENGTH[level]
    pattern = re.compile(rf"[0-9]{{{n}}}")
    well_formed = np.array([pattern.fullmatch(c) is not None for c in codes], dtype=bool)
    for i, u in enumerate(units):
        detail = ""
        if not well_formed[i]:
            detail = f"{level.value} code {u.code!r} is not {n} digits"
        elif level in PARENT and u.parent is not None:
            m = CODE_LENGTH[PARENT[level]]
            if u.parent != u.code[:m]:
                detail = (f"code {u.code} starts with {u.code[:m]} but names "
                          f"{PARENT[level].value} {u.parent!r} as its parent")
        if detail:
            problems.append(Problem(Kind.CODE_FORMAT, level, (u.code,), _spot(geoms[i]),
                                    _area(geoms[i]), detail))

    seen: dict[str, int] = {}
    for code, times in Counter(codes).items():
        if times > 1:
            seen[code] = times
    for code, times in seen.items():
        second = [i for i, c in enumerate(codes) if c == code][1]
        problems.append(Problem(Kind.DUPLICATE_CODE, level, (code,), _spot(geoms[second]),
                                _area(geoms[second]), f"{times} {level.value}s share code {code}"))
    return _Level(level, codes, geoms, well_formed)


# -- within a level: overlaps ------------------------------------------------------------


def _overlaps(lv: _Level, tol: float, problems: list[Problem]) -> None:
    if len(lv.usable) < 2:
        return
    pairs = lv.tree.query(lv.geoms[lv.usable], predicate="intersects")
    i, j = lv.usable[pairs[0]], lv.usable[pairs[1]]
    keep = i < j
    i, j = i[keep], j[keep]
    a, b = lv.geoms[i], lv.geoms[j]
    inner = shapely.relate_pattern(a, b, "2********")  # interiors share an area
    i, j, a, b = i[inner], j[inner], a[inner], b[inner]
    shared = shapely.intersection(a, b)
    areas = shapely.area(shared)
    parent_len = CODE_LENGTH[PARENT[lv.level]] if lv.level in PARENT else None
    for k in np.flatnonzero(areas > tol):
        ci, cj = lv.codes[i[k]], lv.codes[j[k]]
        detail = f"{lv.level.value}s {ci} and {cj} share {areas[k]:.1f} m²"
        if parent_len is not None and lv.well_formed[i[k]] and lv.well_formed[j[k]]:
            pi, pj = ci[:parent_len], cj[:parent_len]
            parent = PARENT[lv.level].value
            detail += (f" (siblings in {parent} {pi})" if pi == pj
                       else f" (across {parent} {pi} and {pj})")
        problems.append(Problem(Kind.OVERLAP, lv.level, tuple(sorted((ci, cj))),
                                _spot(shared[k]), float(areas[k]), detail))


# -- between levels: orphans, children outside their parent, gaps -----------------------


def _hierarchy(child: _Level, parent: _Level, tol: float, problems: list[Problem]) -> None:
    m = CODE_LENGTH[parent.level]
    parent_index: dict[str, int] = {}
    for idx, code in enumerate(parent.codes):
        parent_index.setdefault(code, idx)
    children_of: dict[int, list[int]] = {}
    pairs: list[tuple[int, int]] = []
    for i, code in enumerate(child.codes):
        if not child.well_formed[i]:
            continue  # reported as code_format; its prefix means nothing
        j = parent_index.get(code[:m])
        if j is None:
            problems.append(Problem(
                Kind.ORPHAN, child.level, (code,), _spot(child.geoms[i]), _area(child.geoms[i]),
                f"no {parent.level.value} {code[:m]} for {child.level.value} {code}"))
            continue
        children_of.setdefault(j, []).append(i)
        if child.geoms[i] is not None and parent.geoms[j] is not None:
            pairs.append((i, j))

    if pairs:
        ci = np.array([p[0] for p in pairs])
        pj = np.array([p[1] for p in pairs])
        outside = shapely.difference(child.geoms[ci], parent.geoms[pj])
        areas = shapely.area(outside)
        for k in np.flatnonzero(areas > tol):
            i, j = int(ci[k]), int(pj[k])
            spill = outside[k]
            others = [parent.codes[o] for o in parent.near(spill, "intersects")
                      if o != j and _area(shapely.intersection(spill, parent.geoms[o])) > tol]
            detail = (f"{areas[k]:.1f} m² of {child.level.value} {child.codes[i]} lies "
                      f"outside {parent.level.value} {parent.codes[j]}")
            if others:
                detail += " (in " + ", ".join(others) + ")"
            problems.append(Problem(
                Kind.OUTSIDE_PARENT, child.level,
                (child.codes[i], parent.codes[j], *others), _spot(spill), float(areas[k]), detail))

    for j in parent.usable:
        kids = [i for i in children_of.get(int(j), []) if child.geoms[i] is not None]
        kid_set = set(kids)
        covered = shapely.union_all(child.geoms[kids]) if kids else None
        hole = parent.geoms[j] if covered is None else shapely.difference(parent.geoms[j],
                                                                          covered)
        for piece in _parts(hole):
            a = float(piece.area)
            if a <= tol:
                continue
            around = {child.codes[i] for i in child.near(piece, "dwithin", distance=_ADJACENT_M)
                      if i in kid_set}
            problems.append(Problem(
                Kind.GAP, child.level, (parent.codes[j], *sorted(around)),
                piece.representative_point(), a,
                f"{a:.1f} m² of {parent.level.value} {parent.codes[j]} lies in none of its "
                f"{child.level.value.replace('_', '-')}s"))


# -- small helpers -----------------------------------------------------------------------


def _parts(geom: BaseGeometry | None) -> list[BaseGeometry]:
    """The polygons of ``geom`` (any type), flattened."""
    if geom is None or geom.is_empty:
        return []
    type_id = shapely.get_type_id(geom)
    if type_id == 3:
        return [geom]
    if type_id in (6, 7):
        return [p for part in shapely.get_parts(geom) for p in _parts(part)]
    return []


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """The polygonal part of ``geom`` as a (Multi)Polygon, empty when it has none."""
    parts = _parts(geom)
    if len(parts) == 1:
        return parts[0]
    return shapely.multipolygons(parts) if parts else shapely.Polygon()


def _spot(geom: BaseGeometry | None) -> Point:
    """Representative point of the largest polygon of ``geom`` (empty point when none)."""
    parts = _parts(geom)
    if parts:
        return max(parts, key=lambda p: p.area).representative_point()  # type: ignore[no-any-return]
    if geom is None or geom.is_empty:
        return Point()
    return geom.representative_point()  # type: ignore[no-any-return]


def _area(geom: BaseGeometry | None) -> float:
    return 0.0 if geom is None else float(geom.area)
