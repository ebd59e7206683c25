"""Scoring a change detection against truth polygons, object by object.

A truth object is *found* when detected objects of the kind cover at least
``min_cover`` (30 %) of its area; a detected object is *right* when at least
``min_cover`` of its area lies on truth objects of the kind, or it covers at least
``min_cover`` of one of them. Recall = found / truth, precision = right / detected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import shapely

MIN_COVER = 0.3


@dataclass(frozen=True)
class Scores:
    kind: str
    truth: int
    detected: int
    found: int
    right: int

    @property
    def recall(self) -> float:
        return self.found / self.truth if self.truth else 1.0

    @property
    def precision(self) -> float:
        return self.right / self.detected if self.detected else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def row(self) -> str:
        return (f"{self.kind}: recall {self.recall:.2f} ({self.found}/{self.truth}), "
                f"precision {self.precision:.2f} ({self.right}/{self.detected}), "
                f"F1 {self.f1:.2f}")


def evaluate(
    detected: Sequence[shapely.Geometry],
    truth: Sequence[shapely.Geometry],
    kind: str = "new_structure",
    min_cover: float = MIN_COVER,
) -> Scores:
    """Object-level recall and precision of ``detected`` against ``truth`` (same CRS).

    >>> t = [shapely.box(0, 0, 10, 10), shapely.box(50, 0, 60, 10)]
    >>> d = [shapely.box(2, 2, 12, 12), shapely.box(100, 100, 110, 110)]
    >>> s = evaluate(d, t); (s.found, s.right, s.recall, s.precision)
    (1, 1, 0.5, 0.5)
    """
    det = [g for g in detected if not g.is_empty]
    tru = [g for g in truth if not g.is_empty]
    tree_d = shapely.STRtree(det)
    tree_t = shapely.STRtree(tru)
    found = 0
    for t in tru:
        hits = tree_d.query(t, predicate="intersects")
        if len(hits) and shapely.union_all([det[int(i)] for i in hits]).intersection(
                t).area >= min_cover * t.area:
            found += 1
    right = 0
    for d in det:
        hits = [tru[int(i)] for i in tree_t.query(d, predicate="intersects")]
        if not hits:
            continue
        inside = shapely.union_all(hits).intersection(d).area
        covers = max(h.intersection(d).area / h.area for h in hits)
        if inside >= min_cover * d.area or covers >= min_cover:
            right += 1
    return Scores(kind, len(tru), len(det), found, right)
