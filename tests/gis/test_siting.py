"""gis.siting: demand within reach and the greedy ranking of candidate sites."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest

import gis.siting
from gis.siting import SitingError, rank_sites, within_reach


def test_doctests() -> None:
    assert doctest.testmod(gis.siting).failed == 0


def test_reach_is_inclusive_and_per_site() -> None:
    demand = [(0, 0), (100, 0), (100.001, 0), (0, 250)]
    covers = within_reach(demand, [(0, 0), (0, 0)], [100, 300])
    assert covers[0].tolist() == [0, 1]  # exactly 100 m away counts, 100.001 m does not
    assert covers[1].tolist() == [0, 1, 2, 3]


def test_reach_of_nothing() -> None:
    assert [c.tolist() for c in within_reach([], [(0, 0)], 10)] == [[]]
    assert within_reach([(0, 0)], np.empty((0, 2)), 10) == []
    with pytest.raises(SitingError):
        within_reach([(0, 0)], [(0, 0)], -1)


def test_greedy_does_not_count_twice() -> None:
    # two big overlapping sites and one small apart: the second pick is the one apart,
    # because the other big one adds almost nothing once the first is taken
    w = np.ones(21)
    covers = [list(range(0, 10)), list(range(1, 11)), list(range(11, 21))]
    picks = rank_sites(w, covers, k=3)
    assert [p.site for p in picks] == [0, 2, 1]
    assert [p.gain for p in picks] == [10.0, 10.0, 1.0]
    assert picks[-1].cumulative == 21.0
    assert picks[-1].covered == (10,)


def test_greedy_matches_brute_force_on_random_sets() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        w = rng.integers(0, 20, 30).astype(float)
        covers = [rng.choice(30, rng.integers(1, 10), replace=False) for _ in range(8)]
        first = rank_sites(w, covers, k=1)[0]
        best_single = max(w[np.unique(c)].sum() for c in covers)
        assert first.gain == best_single
        picks = rank_sites(w, covers, k=3)
        best3 = max(w[np.unique(np.concatenate([covers[i] for i in s]))].sum()
                    for s in itertools.combinations(range(8), 3))
        assert picks[-1].cumulative >= (1 - 1 / np.e) * best3  # the greedy guarantee
        assert picks[-1].cumulative <= best3


def test_stops_when_nothing_is_left() -> None:
    picks = rank_sites([1, 0], [[0], [0], [1]], k=5)
    assert [p.site for p in picks] == [0]


def test_bad_input() -> None:
    with pytest.raises(SitingError):
        rank_sites([1, -1], [[0]], 1)
    with pytest.raises(SitingError):
        rank_sites([1], [[3]], 1)
    with pytest.raises(SitingError):
        rank_sites([1], [[0]], -1)
