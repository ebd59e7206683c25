"""Where one more observer would see the most: greedy maximal coverage.

Pure functions on points in a *metric* CRS.  Demand is a set of weighted points (e.g.
households in buildings nobody sees); a candidate site covers the demand points within
its reach (a range ring, or any other relation the caller computes, such as a
viewshed).  :func:`rank_sites` picks sites one after another, each time the one that
covers the most demand not covered by the sites picked before (the classic greedy
answer to the maximal covering location problem, within 1 - 1/e of the best set).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely

from gis.errors import GisError

__all__ = ["Pick", "rank_sites", "within_reach"]

IntArray = npt.NDArray[np.intp]


class SitingError(GisError):
    """Inputs the ranking cannot use (shapes that disagree, negative weights)."""


@dataclass(frozen=True)
class Pick:
    """One chosen site: its index among the candidates, the demand it adds (``gain``),
    the demand covered by it and every site picked before (``cumulative``), and the
    indexes of the demand points it newly covers."""

    rank: int
    site: int
    gain: float
    cumulative: float
    covered: tuple[int, ...]


def within_reach(demand_xy: npt.ArrayLike, sites_xy: npt.ArrayLike,
                 reach_m: float | npt.ArrayLike) -> list[IntArray]:
    """For each site, the indexes of the demand points within ``reach_m`` of it (one
    reach for all sites, or one per site).

    >>> [c.tolist() for c in within_reach([(0, 0), (50, 0), (300, 0)], [(0, 0), (290, 0)], 100)]
    [[0, 1], [2]]
    """
    demand = np.asarray(demand_xy, dtype=float).reshape(-1, 2)
    sites = np.asarray(sites_xy, dtype=float).reshape(-1, 2)
    reach = np.broadcast_to(np.asarray(reach_m, dtype=float), (len(sites),))
    if not np.all(np.isfinite(reach)) or np.any(reach < 0):
        raise SitingError("reach must be finite and non-negative")
    out: list[IntArray] = [np.empty(0, dtype=np.intp) for _ in range(len(sites))]
    if not len(demand) or not len(sites):
        return out
    tree = shapely.STRtree(shapely.points(demand))
    site_idx, demand_idx = tree.query(shapely.points(sites), predicate="dwithin",
                                      distance=reach)
    order = np.lexsort((demand_idx, site_idx))
    site_idx, demand_idx = site_idx[order], demand_idx[order]
    bounds = np.searchsorted(site_idx, np.arange(len(sites) + 1))
    for s in range(len(sites)):
        out[s] = demand_idx[bounds[s]:bounds[s + 1]].astype(np.intp)
    return out


def rank_sites(weights: npt.ArrayLike, covers: Sequence[npt.ArrayLike], k: int) -> list[Pick]:
    """Pick up to ``k`` sites greedily by the demand weight each adds; stops early when
    no site adds anything.  Ties go to the lower site index.

    >>> picks = rank_sites([5, 1, 1, 4], [[0, 1], [0, 3], [2]], k=3)
    >>> [(p.site, p.gain, p.cumulative) for p in picks]
    [(1, 9.0, 9.0), (0, 1.0, 10.0), (2, 1.0, 11.0)]
    """
    w = np.asarray(weights, dtype=float)
    if w.ndim != 1 or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise SitingError("weights must be finite, non-negative numbers")
    if k < 0:
        raise SitingError(f"k must be non-negative, not {k}")
    cover = [np.unique(np.asarray(c, dtype=np.intp)) for c in covers]
    for s, c in enumerate(cover):
        if len(c) and (c[0] < 0 or c[-1] >= len(w)):
            raise SitingError(f"site {s} covers demand point {c[-1]}; there are {len(w)}")
    open_ = np.ones(len(w), dtype=bool)
    picks: list[Pick] = []
    total = 0.0
    for rank in range(1, k + 1):
        gains = np.array([w[c[open_[c]]].sum() for c in cover]) if cover else np.empty(0)
        if not len(gains) or gains.max() <= 0:
            break
        best = int(np.argmax(gains))
        newly = cover[best][open_[cover[best]]]
        open_[newly] = False
        total += float(gains[best])
        picks.append(Pick(rank, best, float(gains[best]), total, tuple(int(i) for i in newly)))
    return picks
