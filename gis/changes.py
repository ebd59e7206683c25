"""Orthophoto change detection, the numeric core: pure functions over numpy arrays.

Two co-registered epochs of an RGB orthophoto (``(3, h, w)`` float32 arrays scaled to
about 0..1), optionally with their surface models (DSM, metres), become three pixel
classes, cleaned by morphology, then per-object measures and a verdict:

* radiometry: the later epoch is mapped onto the earlier one band by band with a
  reduced-major-axis linear fit on pixels a first pass found unchanged
  (:func:`fit_radiometry`), which absorbs exposure, sun and white-balance shifts;
* change vector analysis: the length of the per-pixel difference vector
  (:func:`change_magnitude`), thresholded where the data say (:func:`otsu_threshold`,
  never below a noise floor measured on the same data, :func:`noise_floor`);
* cues (:func:`pixel_classes`): a pixel is a candidate *new structure* where it rose
  more than ``HEIGHT_GAIN_M`` above the vertically aligned earlier DSM, or (colour)
  where it changed and now looks like a roof that it did not look like before (blue
  steel, white or light-grey sheet or concrete: :func:`roof_like`); a candidate
  *removed structure* is the reverse; any other changed pixel is *other* (crops that
  ripened, fields ploughed, shadows that moved). Crops never turn blue or white-grey,
  so they stay *other*;
* morphology (:func:`clean`): an opening removes the slivers that a sub-pixel
  misalignment leaves along every edge, a closing fills holes;
* objects (:func:`object_stats`, :func:`classify`): connected pixels of one class,
  sieved to the minimum mapping unit; a new-structure candidate is a
  ``new_structure`` when its height gain covers at least ``HEIGHT_AREA_M2`` (cue
  ``height``), or when it is roof-coloured, compact and rectangular enough (cue
  ``colour``). Colour alone is weaker: without DSMs a concrete yard, a white
  tarpaulin or plastic greenhouse film looks like a roof, and a roof of an unusual
  colour (red tiles) is missed.

Nothing here reads files: :mod:`gis.changes_raster` drives these functions over
windows of raster files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import shapely
from scipy import ndimage

HEIGHT_GAIN_M = 3.0  # a new structure rises more than this...
HEIGHT_AREA_M2 = 100.0  # ...over at least this much ground
MMU_M2 = 40.0  # minimum mapping unit: smaller objects are dropped
MAX_COLOUR_AREA_M2 = 5000.0  # colour alone does not make a structure larger than this
MIN_RECTANGULARITY = 0.65  # area / minimum rotated rectangle, for colour-only structures
MIN_ROOF_SHARE = 0.5  # share of an object's pixels that must look like a new roof
OPEN_M = 0.8  # morphological opening radius (removes misalignment slivers)
CLOSE_M = 0.8  # closing radius (fills holes)

# roof spectra, on images scaled to ~0..1
BLUE_EXCESS = 0.06  # blue steel: blue above both red and green by this much...
BLUE_MIN = 0.30  # ...and at least this bright
WHITE_MIN = 0.58  # white / light-grey sheet or concrete: mean at least this...
WHITE_MAX_SAT = 0.16  # ...and nearly grey: (max - min) / max below this
RED_TILE_EXCESS = 0.15  # red tiles (only for removals): red above green by this...


class PixelClass(IntEnum):
    """Per-pixel change classes (also the values of the change-mask raster)."""

    NONE = 0
    NEW = 1
    REMOVED = 2
    OTHER = 3


KINDS = {PixelClass.NEW: "new_structure", PixelClass.REMOVED: "removed_structure",
         PixelClass.OTHER: "other"}


@dataclass(frozen=True)
class Radiometry:
    """Per-band ``before ≈ gain * after + offset`` (R, G, B)."""

    gain: tuple[float, float, float]
    offset: tuple[float, float, float]

    def apply(self, after: np.ndarray) -> np.ndarray:
        """``after`` (3, h, w) mapped onto the earlier epoch's radiometry (float32)."""
        g = np.asarray(self.gain, dtype=np.float32)[:, None, None]
        o = np.asarray(self.offset, dtype=np.float32)[:, None, None]
        out = after.astype(np.float32, copy=True)  # one array, worked in place
        out *= g
        out += o
        return out


IDENTITY = Radiometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))


def change_magnitude(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Change vector analysis: Euclidean length of the per-pixel band difference.

    >>> b = np.zeros((3, 1, 2), np.float32); a = b.copy(); a[:, 0, 1] = [0.3, 0.4, 0.0]
    >>> change_magnitude(b, a).round(3).tolist()
    [[0.0, 0.5]]
    """
    d = np.subtract(after, before, dtype=np.float32)
    out = np.einsum("bij,bij->ij", d, d).astype(np.float32, copy=False)
    del d
    return np.sqrt(out, out=out)


def fit_radiometry(
    before: np.ndarray, after: np.ndarray, iterations: int = 4, keep: float = 0.6
) -> Radiometry:
    """Relative radiometric normalisation from sample pixels (``(3, n)`` arrays).

    Start from matching each band's mean and spread, then refit on the ``keep`` share
    of pixels whose change vector is shortest (pixels unchanged by the previous pass)
    with a reduced-major-axis line (symmetric in the two dates, unbiased by noise in
    either), ``iterations`` times.

    >>> rng = np.random.default_rng(0)
    >>> b = rng.uniform(0.1, 0.8, (3, 5000)).astype(np.float32)
    >>> a = (b - 0.02) / 1.2; a[:, :1000] = rng.uniform(0, 1, (3, 1000))  # 20 % changed
    >>> r = fit_radiometry(b, a)
    >>> np.allclose(r.gain, 1.2, atol=0.02), np.allclose(r.offset, 0.02, atol=0.01)
    (True, True)
    """
    b = np.asarray(before, dtype=np.float64).reshape(3, -1)
    a = np.asarray(after, dtype=np.float64).reshape(3, -1)
    if b.shape[1] < 100:
        return IDENTITY
    sel = np.ones(b.shape[1], dtype=bool)
    gain = np.ones(3)
    offset = np.zeros(3)
    for _ in range(iterations + 1):
        for k in range(3):
            bs, as_ = b[k, sel], a[k, sel]
            sa = as_.std()
            gain[k] = bs.std() / sa if sa > 1e-9 else 1.0
            offset[k] = bs.mean() - gain[k] * as_.mean()
        mag = np.sqrt((((a * gain[:, None] + offset[:, None]) - b) ** 2).sum(axis=0))
        sel = mag <= np.quantile(mag, keep)
    return Radiometry(
        tuple(float(round(x, 6)) for x in gain),  # type: ignore[arg-type]
        tuple(float(round(x, 6)) for x in offset),  # type: ignore[arg-type]
    )


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut that maximises the between-class variance.

    >>> v = np.concatenate([np.full(900, 0.1), np.full(100, 0.9)])
    >>> 0.1 <= otsu_threshold(v) < 0.9
    True
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def noise_floor(values: np.ndarray, k: float = 4.0) -> float:
    """Median plus ``k`` robust standard deviations (1.4826 MAD) of ``values``.

    >>> noise_floor(np.array([1.0, 1.0, 1.0, 2.0, 1.0]))
    1.0
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return 0.0
    med = float(np.median(v))
    return med + k * 1.4826 * float(np.median(np.abs(v - med)))


def change_threshold(magnitudes: np.ndarray) -> float:
    """The colour-change threshold from the data: the noise floor of the unchanged
    pixels (median + 4 robust sigma, at least 0.1), or Otsu's cut where that is lower.

    Otsu alone, on a scene where whole fields ripened, cuts between the crops and
    everything else and misses subtler changes (a red roof become rubble); the floor
    alone is too low when most of the scene changed a little.
    """
    return min(otsu_threshold(magnitudes), max(noise_floor(magnitudes), 0.1))


def dsm_offset(before_dsm: np.ndarray, after_dsm: np.ndarray, stable: np.ndarray) -> float:
    """Vertical shift between two DSMs: the median of ``after - before`` on ``stable`` ground.

    >>> b = np.zeros((4, 4)); a = b + 1.5; a[0, 0] = 20.0
    >>> dsm_offset(b, a, np.ones((4, 4), bool))
    1.5
    """
    d = (np.asarray(after_dsm, np.float64) - np.asarray(before_dsm, np.float64))[stable]
    d = d[np.isfinite(d)]
    return float(np.median(d)) if d.size else 0.0


def roof_like(rgb: np.ndarray) -> np.ndarray:
    """Pixels whose colour is that of a steel-sheet or concrete roof: blue, or white-grey.

    >>> px = np.array([[[0.2, 0.9, 0.7, 0.3]], [[0.35, 0.9, 0.6, 0.45]], [[0.75, 0.88, 0.3, 0.2]]])
    >>> roof_like(px.astype(np.float32)).tolist()  # blue, white, yellow crop, green
    [[True, True, False, False]]
    """
    r, g, b = rgb[0], rgb[1], rgb[2]
    hi = np.maximum(np.maximum(r, g), b)
    lo = np.minimum(np.minimum(r, g), b)
    blue = (b - np.maximum(r, g) > BLUE_EXCESS) & (b > BLUE_MIN)
    sat = np.divide(hi - lo, hi, out=np.ones_like(hi), where=hi > 1e-6)
    white = ((r + g + b) / 3 > WHITE_MIN) & (sat < WHITE_MAX_SAT)
    return blue | white


def built_like(rgb: np.ndarray) -> np.ndarray:
    """:func:`roof_like` or red tiles: what a removed building may have looked like."""
    r, g, b = rgb[0], rgb[1], rgb[2]
    red = (r - g > RED_TILE_EXCESS) & (r - b > RED_TILE_EXCESS) & (r > 0.4) & (g < 0.4)
    return roof_like(rgb) | red


def disk(radius_px: int) -> np.ndarray:
    """A disk structuring element of ``radius_px`` (a single pixel for 0).

    >>> disk(1).astype(int).tolist()
    [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    """
    r = max(0, int(radius_px))
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y) <= r * r + (r > 1) * r * 0.5


@dataclass(frozen=True)
class Cues:
    """Per-pixel cues of one window (all ``(h, w)`` bool, ``dz`` float32 or None)."""

    valid: np.ndarray
    colour: np.ndarray  # changed colour
    roof_new: np.ndarray  # looks like a roof now, not before
    roof_gone: np.ndarray  # looked built before, not now
    gain: np.ndarray  # rose more than HEIGHT_GAIN_M
    loss: np.ndarray  # dropped more than HEIGHT_GAIN_M
    magnitude: np.ndarray
    dz: np.ndarray | None


def pixel_cues(
    before: np.ndarray,
    after: np.ndarray,
    valid: np.ndarray,
    threshold: float,
    before_dsm: np.ndarray | None = None,
    after_dsm: np.ndarray | None = None,
    dsm_shift: float = 0.0,
) -> Cues:
    """Cues from normalised images (``after`` already on ``before``'s radiometry)."""
    mag = change_magnitude(before, after)
    mag[~valid] = 0.0
    colour = (mag > threshold) & valid
    roof_a, built_b = roof_like(after), built_like(before)
    roof_new = roof_a & ~built_b & valid
    roof_gone = built_b & ~roof_a & ~built_like(after) & valid
    del built_b
    no = np.zeros_like(valid)
    dz = None
    gain = loss = no
    if before_dsm is not None and after_dsm is not None:
        dz = (after_dsm.astype(np.float32) - before_dsm.astype(np.float32) - dsm_shift)
        dz = np.where(valid & np.isfinite(dz), dz, 0.0).astype(np.float32)
        gain = dz > HEIGHT_GAIN_M
        loss = dz < -HEIGHT_GAIN_M
    return Cues(valid, colour, roof_new, roof_gone, gain, loss, mag, dz)


def pixel_classes(cues: Cues) -> np.ndarray:
    """Raw class map (uint8 :class:`PixelClass`) before morphology.

    New: height gain, or changed colour that now looks like a roof and did not;
    removed: height loss, or changed colour that looked built and no longer does;
    other: any other changed colour.
    """
    new = cues.gain | (cues.colour & cues.roof_new)
    removed = (cues.loss | (cues.colour & cues.roof_gone)) & ~new
    other = cues.colour & ~new & ~removed
    out = np.zeros(cues.valid.shape, dtype=np.uint8)
    out[other] = PixelClass.OTHER
    out[removed] = PixelClass.REMOVED
    out[new] = PixelClass.NEW
    return out


def clean(classes: np.ndarray, open_px: int, close_px: int) -> np.ndarray:
    """Opening then closing of each class on its own (a class map in, one out), with
    square structuring elements of side ``2 r + 1`` (separable min/max filters: the
    same answer as binary morphology, several times faster).

    New and removed structures are cleaned first and keep their pixels; *other* fills
    only what they leave.

    >>> m = np.zeros((9, 9), np.uint8); m[2:7, 2:7] = PixelClass.NEW; m[0, 8] = 1
    >>> int((clean(m, 1, 1) == PixelClass.NEW).sum())  # the lone pixel goes
    25
    """
    out = np.zeros_like(classes)
    for cls in (PixelClass.NEW, PixelClass.REMOVED, PixelClass.OTHER):
        m = (classes == cls).view(np.uint8)
        if not m.any():
            continue
        if open_px > 0:
            size = 2 * open_px + 1
            m = ndimage.maximum_filter(ndimage.minimum_filter(m, size=size, mode="nearest"),
                                       size=size, mode="nearest")
        if close_px > 0:
            size = 2 * close_px + 1
            m = ndimage.minimum_filter(ndimage.maximum_filter(m, size=size, mode="nearest"),
                                       size=size, mode="nearest")
        out[(m > 0) & (out == 0)] = cls
    return out


def margin_px(open_px: int, close_px: int) -> int:
    """How far a window must be read beyond its core for :func:`clean` to be exact."""
    return 2 * open_px + 2 * close_px + 2


# per-object sums, in this order
STAT_NAMES = ("n", "colour", "roof_new", "roof_gone", "gain", "loss", "magnitude", "dz")
STATS_ROWS = 64  # object_stats sums this many rows of labels at a time


def object_stats(labels: np.ndarray, count: int, cues: Cues,
                 rows: int = STATS_ROWS) -> np.ndarray:
    """Per-label sums of the cues: ``(count + 1, len(STAT_NAMES))`` float64, row 0 unused
    (zero).

    Sums (not means) so that pieces of one object read in different windows add up.
    Summed ``rows`` rows at a time: the labelled pixels' indices and float64 weights
    exist for one strip at a time, so the memory is the same whether a tile has a few
    changed pixels or is changed all over (a tile of one large object needed ~6 MB more
    than its labels in one go).
    """
    n = count + 1
    out = np.zeros((n, len(STAT_NAMES)), np.float64)
    fields = (cues.colour, cues.roof_new, cues.roof_gone, cues.gain, cues.loss,
              cues.magnitude, cues.dz)
    step = max(1, rows)
    for r0 in range(0, labels.shape[0], step):
        s = slice(r0, r0 + step)
        flat = labels[s].ravel()
        # labelled pixels only: bincount would copy the whole strip to int64 and every
        # cue to float64, per cue
        sel = np.flatnonzero(flat)
        if not sel.size:
            continue
        lab = flat[sel]
        out[:, 0] += np.bincount(lab, minlength=n)
        for k, cue in enumerate(fields, start=1):
            if cue is not None:
                out[:, k] += np.bincount(lab, weights=cue[s].ravel()[sel].astype(np.float64),
                                         minlength=n)
    return out


def rectangularity(geom: shapely.Geometry) -> float:
    """Area over the area of the minimum rotated rectangle (1 for a rectangle).

    >>> rectangularity(shapely.box(0, 0, 4, 2))
    1.0
    """
    if geom.is_empty or geom.area <= 0:
        return 0.0
    rect = shapely.minimum_rotated_rectangle(geom)
    return float(min(1.0, geom.area / rect.area)) if rect.area > 0 else 0.0


def compactness(geom: shapely.Geometry) -> float:
    """Isoperimetric quotient 4πA/P² (1 for a disk, ~0.785 for a square)."""
    p = geom.length
    return float(4 * math.pi * geom.area / (p * p)) if p > 0 else 0.0


@dataclass(frozen=True)
class Verdict:
    """What an object is, how sure, and which cue said so."""

    kind: str  # new_structure, removed_structure, other
    score: float  # 0..1
    cue: str  # height, colour, height+colour


def classify(
    cls: PixelClass,
    stats: np.ndarray,
    geom: shapely.Geometry,
    pixel_area_m2: float,
    has_dsm: bool,
    threshold: float,
) -> Verdict | None:
    """The verdict on one object (``stats`` a row of :func:`object_stats`), or None if
    smaller than the minimum mapping unit.

    A new-structure candidate is a ``new_structure`` when its height gain covers at
    least ``HEIGHT_AREA_M2`` (cue ``height``), or, on colour, when at least half its
    pixels look like a new roof, it is rectangular (≥ ``MIN_RECTANGULARITY``) and not
    larger than ``MAX_COLOUR_AREA_M2``. Removals mirror that. Anything else is ``other``.
    """
    n = stats[0]
    area = n * pixel_area_m2
    if area < MMU_M2 or n <= 0:
        return None
    share = dict(zip(STAT_NAMES, stats / n, strict=True))
    rect = rectangularity(geom)
    mean_mag = share["magnitude"]
    colour_score = float(min(1.0, mean_mag / (2 * threshold))) if threshold > 0 else 0.0
    if cls in (PixelClass.NEW, PixelClass.REMOVED):
        height_share = share["gain"] if cls == PixelClass.NEW else share["loss"]
        roof_share = share["roof_new"] if cls == PixelClass.NEW else share["roof_gone"]
        kind = KINDS[cls]
        colour_ok = (
            roof_share >= MIN_ROOF_SHARE
            and share["colour"] >= MIN_ROOF_SHARE
            and rect >= MIN_RECTANGULARITY
            and area <= MAX_COLOUR_AREA_M2
        )
        if has_dsm and height_share * area >= HEIGHT_AREA_M2:
            cue = "height+colour" if colour_ok else "height"
            score = 0.6 + 0.25 * min(1.0, height_share) + 0.15 * (roof_share if colour_ok else 0)
            return Verdict(kind, round(float(min(1.0, score)), 4), cue)
        if colour_ok:
            score = 0.5 * roof_share + 0.3 * rect + 0.2 * colour_score
            if has_dsm:  # the surface model saw no height change: a slab, or a mistake
                score *= 0.6
            return Verdict(kind, round(float(min(1.0, score)), 4), "colour")
    cue = "height" if has_dsm and (share["gain"] + share["loss"]) > 0.5 else "colour"
    return Verdict("other", round(colour_score, 4), cue)
