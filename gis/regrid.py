"""Re-gridding proposals: split overloaded micro-grids, merge idle neighbours.

Pure functions on shapely geometries in a *metric* CRS.  A split cuts a micro-grid
across its long axis (the long side of its minimum rotated rectangle) into pieces that
share its load evenly: by the weights of points inside it when given (households of
buildings, events), by area otherwise.  Pieces are the grid cut by half-planes and the
remainder, so they tile the original exactly (no gap, no overlap).  A merge is the union
of two siblings (same community) that share a boundary.  The result keeps every unit it
does not touch; :func:`gis.topology.check_topology` checks it like any other grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

from gis.errors import GisError
from gis.topology import CODE_LENGTH, Level

__all__ = ["Change", "LoadedUnit", "Proposal", "RegridError", "divide", "propose"]

MAX_PIECES = 4
COMMUNITY_LEN = CODE_LENGTH[Level.COMMUNITY]
MIN_SHARED_M = 1.0  # two micro-grids are neighbours when they share this much boundary


class RegridError(GisError):
    """A proposal that cannot be made (a community out of codes, a geometry that is not
    polygonal)."""


@dataclass(frozen=True)
class LoadedUnit:
    """A micro-grid with its workload (``load`` 1.0 = a typical grid) and counts;
    ``points``/``weights`` (optional) place the load inside it, for fair splits."""

    code: str
    name: str
    geom: BaseGeometry
    load: float
    households: int = 0
    population: int = 0
    kind: str | None = None
    points: npt.NDArray[np.float64] = field(
        default_factory=lambda: np.empty((0, 2)), compare=False, repr=False)
    weights: npt.NDArray[np.float64] = field(
        default_factory=lambda: np.empty(0), compare=False, repr=False)

    @property
    def community(self) -> str:
        return self.code[:COMMUNITY_LEN]


@dataclass(frozen=True)
class Change:
    """One change of the proposal: ``split`` (one code into several) or ``merge``
    (several into one), with the loads before and after."""

    action: str
    before: tuple[str, ...]
    after: tuple[str, ...]
    load_before: tuple[float, ...]
    load_after: tuple[float, ...]


@dataclass(frozen=True)
class Proposal:
    """The new micro-grid level (every unit, changed or not) and what changed."""

    units: tuple[LoadedUnit, ...]
    changes: tuple[Change, ...]

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)


def _axis(geom: BaseGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Centre and unit vector of the long side of the minimum rotated rectangle."""
    rect = shapely.minimum_rotated_rectangle(geom)
    xy = np.asarray(rect.exterior.coords)[:4]
    sides = np.diff(np.vstack([xy, xy[:1]]), axis=0)
    longest = sides[int(np.argmax(np.hypot(sides[:, 0], sides[:, 1])))]
    norm = math.hypot(*longest)
    if norm == 0:
        raise RegridError("cannot split a geometry without extent")
    return np.asarray(geom.centroid.coords[0]), longest / norm


def _slab(geom: BaseGeometry, centre: np.ndarray, u: np.ndarray, t0: float,
          t1: float) -> BaseGeometry:
    """The part of ``geom`` whose position along ``u`` (from ``centre``) is in [t0, t1].
    Neighbouring slabs cut their shared line with the same numbers, so they meet exactly."""
    x0, y0, x1, y1 = geom.bounds
    big = 2.0 * math.hypot(x1 - x0, y1 - y0) + 1.0
    v = np.array([-u[1], u[0]])
    corners = [centre + t1 * u + big * v, centre + t0 * u + big * v,
               centre + t0 * u - big * v, centre + t1 * u - big * v]
    return shapely.intersection(geom, shapely.Polygon(corners))


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    parts = [p for p in shapely.get_parts(shapely.make_valid(geom))
             if p.geom_type in ("Polygon", "MultiPolygon")]
    polys = [q for p in parts for q in shapely.get_parts(p) if q.area > 0]
    return shapely.MultiPolygon(polys) if polys else shapely.MultiPolygon()


def divide(geom: BaseGeometry, n: int, points: npt.ArrayLike | None = None,
           weights: npt.ArrayLike | None = None) -> list[BaseGeometry]:
    """Cut ``geom`` across its long axis into ``n`` pieces with equal shares of the
    weighted points (or of the area when no point weighs anything).

    >>> a, b = divide(shapely.box(0, 0, 400, 100), 2)
    >>> round(a.area), round(b.area), round(shapely.union_all([a, b]).area)
    (20000, 20000, 40000)
    """
    if n < 1:
        raise RegridError(f"cannot divide into {n} pieces")
    if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_empty:
        raise RegridError(f"only polygons are divided, not {geom.geom_type}")
    if n == 1:
        return [geom]
    centre, u = _axis(geom)
    ring = np.asarray(shapely.get_coordinates(geom))
    along = (ring - centre) @ u
    lo, hi = float(along.min()), float(along.max())
    pts = np.asarray(points if points is not None else np.empty((0, 2)), float).reshape(-1, 2)
    w = np.asarray(weights if weights is not None else np.ones(len(pts)), float).reshape(-1)
    cuts: list[float] = []
    if len(pts) and w.sum() > 0:
        pos = (pts - centre) @ u
        order = np.argsort(pos)
        cum = np.cumsum(w[order]) / w.sum()
        for k in range(1, n):
            i = int(np.searchsorted(cum, k / n))
            i = min(i, len(order) - 1)
            nxt = pos[order[min(i + 1, len(order) - 1)]]
            cuts.append(float((pos[order[i]] + nxt) / 2))
    else:
        total = geom.area
        for k in range(1, n):
            a, b = lo, hi
            for _ in range(50):  # bisection on the cut position: 2^-50 of the length
                mid = (a + b) / 2
                if _slab(geom, centre, u, lo - 1.0, mid).area < total * k / n:
                    a = mid
                else:
                    b = mid
            cuts.append((a + b) / 2)
    cuts = sorted(min(max(c, lo), hi) for c in cuts)
    bounds = [lo - 1.0, *cuts, hi + 1.0]
    pieces = [_polygonal(_slab(geom, centre, u, a, b))
              for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return [p for p in pieces if not p.is_empty]


def _neighbours(a: BaseGeometry, b: BaseGeometry) -> bool:
    shared = shapely.intersection(a.boundary, b.boundary)
    return bool(shared.length >= MIN_SHARED_M)


def _next_code(community: str, taken: set[str]) -> str:
    used = [int(c[COMMUNITY_LEN:]) for c in taken if c.startswith(community)
            and c[COMMUNITY_LEN:].isdigit()]
    n = max(used, default=0) + 1
    width = CODE_LENGTH[Level.MICRO_GRID] - COMMUNITY_LEN
    if n >= 10**width:
        raise RegridError(f"community {community} has no micro-grid code left")
    code = f"{community}{n:0{width}d}"
    taken.add(code)
    return code


def _assign(pieces: Sequence[BaseGeometry], points: npt.NDArray[np.float64]
            ) -> npt.NDArray[np.intp]:
    """Index of the piece holding each point (the first that covers it: a point on a cut
    counts once), -1 for none."""
    where = np.full(len(points), -1, dtype=np.intp)
    if not len(points):
        return where
    pts = shapely.points(points)
    for i, piece in enumerate(pieces):
        where[(where < 0) & shapely.covers(piece, pts)] = i
    return where


def _shares(unit: LoadedUnit, pieces: Sequence[BaseGeometry],
            where: npt.NDArray[np.intp]) -> list[float]:
    """Share of the unit's load in each piece: by its weighted points, else by area."""
    if len(unit.points) and unit.weights.sum() > 0:
        w = np.array([unit.weights[where == i].sum() for i in range(len(pieces))])
        if w.sum() > 0:
            return list(w / w.sum())
    areas = np.array([p.area for p in pieces])
    return list(areas / areas.sum())


def _split(unit: LoadedUnit, high: float, taken: set[str]) -> tuple[list[LoadedUnit], Change]:
    n = min(max(2, math.ceil(unit.load / high)), MAX_PIECES)
    pieces = divide(unit.geom, n, unit.points if len(unit.points) else None,
                    unit.weights if len(unit.weights) else None)
    where = _assign(pieces, unit.points)
    shares = _shares(unit, pieces, where)
    codes = [unit.code] + [_next_code(unit.community, taken) for _ in pieces[1:]]
    out = []
    hh_left, pop_left = unit.households, unit.population
    for i, (code, piece, share) in enumerate(zip(codes, pieces, shares, strict=True)):
        last = i == len(pieces) - 1
        hh = hh_left if last else round(unit.households * share)
        pop = pop_left if last else round(unit.population * share)
        hh_left, pop_left = hh_left - hh, pop_left - pop
        inside = where == i
        out.append(LoadedUnit(code, f"{unit.name}-{i + 1}", piece, unit.load * share, hh, pop,
                              unit.kind, unit.points[inside], unit.weights[inside]))
    change = Change("split", (unit.code,), tuple(codes), (unit.load,),
                    tuple(p.load for p in out))
    return out, change


def propose(units: Sequence[LoadedUnit], high: float = 1.8, low: float = 0.5,
            merged_max: float = 1.0) -> Proposal:
    """Split every unit whose load exceeds ``high`` (into ceil(load / high) pieces, 2 to
    :data:`MAX_PIECES`), and merge units under ``low`` with an idle sibling neighbour
    when the two together stay at or under ``merged_max`` (lightest pairs first; the
    merged unit keeps the lower code).  Units are micro-grids of one generation.

    >>> grid = [LoadedUnit("370303106001001", "A", shapely.box(0, 0, 100, 100), 3.0),
    ...         LoadedUnit("370303106001002", "B", shapely.box(100, 0, 200, 100), 0.2),
    ...         LoadedUnit("370303106001003", "C", shapely.box(200, 0, 300, 100), 0.3)]
    >>> p = propose(grid)
    >>> [(c.action, c.before, c.after) for c in p.changes]  # doctest: +NORMALIZE_WHITESPACE
    [('split', ('370303106001001',), ('370303106001001', '370303106001004')),
     ('merge', ('370303106001002', '370303106001003'), ('370303106001002',))]
    """
    if not (0 <= low < merged_max <= high):
        raise RegridError(f"thresholds must satisfy 0 <= low < merged_max <= high, "
                          f"not {low}, {merged_max}, {high}")
    taken = {u.code for u in units}
    out: dict[str, LoadedUnit] = {}
    changes: list[Change] = []
    busy: set[str] = set()
    for u in sorted(units, key=lambda u: u.code):
        if u.load > high:
            pieces, change = _split(u, high, taken)
            changes.append(change)
            busy.add(u.code)
            out.update((p.code, p) for p in pieces)
    idle = sorted((u for u in units if u.load < low), key=lambda u: (u.load, u.code))
    by_community: dict[str, list[LoadedUnit]] = {}
    for u in units:
        by_community.setdefault(u.community, []).append(u)
    for u in idle:
        if u.code in busy:
            continue
        mates = [m for m in by_community[u.community]
                 if m.code != u.code and m.code not in busy and m.load < low
                 and u.load + m.load <= merged_max and _neighbours(u.geom, m.geom)]
        if not mates:
            continue
        m = min(mates, key=lambda m: (m.load, m.code))
        first, second = sorted((u, m), key=lambda x: x.code)
        geom = _polygonal(shapely.union_all([first.geom, second.geom]))
        merged = LoadedUnit(first.code, f"{first.name}+{second.name}", geom,
                            first.load + second.load, first.households + second.households,
                            first.population + second.population, first.kind,
                            np.vstack([first.points, second.points]),
                            np.concatenate([first.weights, second.weights]))
        busy.update((u.code, m.code))
        out[merged.code] = merged
        changes.append(Change("merge", (first.code, second.code), (merged.code,),
                              (first.load, second.load), (merged.load,)))
    for u in units:
        if u.code not in busy:
            out[u.code] = u
    return Proposal(tuple(out[c] for c in sorted(out)), tuple(changes))

