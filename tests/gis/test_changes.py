"""The change detector's numeric core on small arrays with known answers."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import shapely

import gis.changes
import gis.changes_eval
import gis.changes_raster
from gis.changes import (
    HEIGHT_GAIN_M,
    PixelClass,
    Radiometry,
    change_threshold,
    classify,
    clean,
    dsm_offset,
    fit_radiometry,
    object_stats,
    otsu_threshold,
    pixel_classes,
    pixel_cues,
    roof_like,
)
from gis.changes_eval import evaluate

GREEN = (0.32, 0.46, 0.20)
RIPE = (0.74, 0.64, 0.33)
PLOUGHED = (0.44, 0.35, 0.26)
BLUE = (0.20, 0.36, 0.68)
WHITE = (0.86, 0.86, 0.86)


@pytest.mark.parametrize("module", [gis.changes, gis.changes_raster, gis.changes_eval])
def test_doctests(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.failed == 0 and result.attempted > 0


def _field(h: int, w: int, colour: tuple[float, float, float], rng: np.random.Generator,
           noise: float = 0.012) -> np.ndarray:
    img = np.empty((3, h, w), np.float32)
    img[:] = np.asarray(colour, np.float32)[:, None, None]
    return img + rng.normal(0, noise, img.shape).astype(np.float32)


def test_radiometric_fit_recovers_an_exposure_shift_despite_changes() -> None:
    rng = np.random.default_rng(3)
    before = rng.uniform(0.1, 0.8, (3, 20_000)).astype(np.float32)
    gain, offset = np.array([1.1, 1.06, 0.97]), np.array([0.02, 0.015, 0.03])
    after = before * gain[:, None] + offset[:, None] + rng.normal(0, 0.01, before.shape)
    after[:, :5000] = rng.uniform(0, 1, (3, 5000))  # a quarter changed for real
    r = fit_radiometry(before, after)
    # the fit maps after back onto before: the inverse of the shift
    assert np.allclose(r.gain, 1 / gain, atol=0.02)
    assert np.allclose(r.offset, -offset / gain, atol=0.015)


def test_thresholds_come_from_the_data() -> None:
    rng = np.random.default_rng(4)
    quiet = np.abs(rng.normal(0, 0.02, 50_000))
    changed = rng.uniform(0.4, 0.8, 5_000)
    t = change_threshold(np.concatenate([quiet, changed]))
    assert quiet.max() * 0.5 < t < 0.4
    assert quiet.max() * 0.5 < otsu_threshold(np.concatenate([quiet, changed])) < 0.4
    # scaled data, scaled threshold: nothing is hard-coded to the magnitudes
    assert change_threshold(np.concatenate([quiet, changed]) * 3) > t


def test_dsm_offset_is_measured_on_stable_ground_only() -> None:
    before = np.zeros((50, 50), np.float32)
    after = before + 1.3
    after[10:20, 10:20] += 6.0  # a new shed: not stable ground
    stable = np.ones_like(before, bool)
    stable[10:20, 10:20] = False
    assert dsm_offset(before, after, stable) == pytest.approx(1.3)


def test_roof_spectra_are_not_crop_colours() -> None:
    px = np.array([GREEN, RIPE, PLOUGHED, BLUE, WHITE], np.float32).T[:, None, :]
    assert roof_like(px)[0].tolist() == [False, False, False, True, True]


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 200x200 window at 0.5 m: green wheat that ripened (left) and was ploughed
    (right), with a new blue shed (30x20 px = 150 m²) in the ripened half."""
    before = _field(200, 200, GREEN, rng)
    after = _field(200, 200, RIPE, rng)
    after[:, :, 100:] = _field(200, 100, PLOUGHED, rng)
    after[:, 50:70, 30:60] = _field(20, 30, BLUE, rng)
    return before, after


def test_crop_ripening_and_ploughing_are_not_structures() -> None:
    rng = np.random.default_rng(5)
    before, after = _scene(rng)
    valid = np.ones((200, 200), bool)
    cues = pixel_cues(before, after, valid, threshold=0.1)
    classes = clean(pixel_classes(cues), 2, 2)
    new = classes == PixelClass.NEW
    assert new[50:70, 30:60].mean() > 0.9  # the shed
    assert new.sum() < 1.2 * 600  # and nothing else
    assert (classes == PixelClass.OTHER).mean() > 0.9  # the fields changed: "other"


def _objects(classes: np.ndarray, cues: object, pixel_area: float, has_dsm: bool
             ) -> list[tuple[str, str, float]]:
    from rasterio.features import shapes
    from scipy import ndimage

    out = []
    for cls in (PixelClass.NEW, PixelClass.REMOVED, PixelClass.OTHER):
        lab, n = ndimage.label(classes == cls)
        if not n:
            continue
        stats = object_stats(lab, n, cues)  # type: ignore[arg-type]
        for geojson, value in shapes(lab.astype(np.int32), mask=lab > 0):
            geom = shapely.geometry.shape(geojson)
            v = classify(cls, stats[int(value)], geom, pixel_area, has_dsm, 0.1)
            if v is not None:
                out.append((v.kind, v.cue, stats[int(value)][0] * pixel_area))
    return out


def test_object_stats_are_summed_strip_by_strip() -> None:
    """Per-label sums are those of the whole window whatever the strip height, and the
    memory they need does not grow with the labelled pixels: a tile that is one object
    all over needs less than its labels' size (7 times that in one go)."""
    import dataclasses
    import tracemalloc

    from scipy import ndimage

    from gis.changes import STAT_NAMES, Cues

    rng = np.random.default_rng(11)
    h, w = 512, 512
    labels, n = ndimage.label(ndimage.uniform_filter(rng.random((h, w)), 9) > 0.52)
    labels = labels.astype(np.int32)
    assert n > 50

    def bits() -> np.ndarray:
        return rng.random((h, w)) > 0.5

    cues = Cues(np.ones((h, w), bool), bits(), bits(), bits(), bits(), bits(),
                rng.random((h, w), dtype=np.float32), rng.random((h, w), dtype=np.float32))
    fields = [np.ones((h, w)), cues.colour, cues.roof_new, cues.roof_gone, cues.gain,
              cues.loss, cues.magnitude, cues.dz]
    expected = np.column_stack([  # by definition, over the whole window at once
        np.bincount(labels.ravel(), weights=f.ravel().astype(np.float64), minlength=n + 1)
        for f in fields])
    expected[0] = 0
    for rows in (1, 7, 64, h):
        got = object_stats(labels, n, cues, rows=rows)
        assert got.shape == (n + 1, len(STAT_NAMES))
        np.testing.assert_array_equal(got[:, :6], expected[:, :6])  # counts: exact
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    no_dz = object_stats(labels, n, dataclasses.replace(cues, dz=None))
    assert not no_dz[:, 7].any()

    whole = np.ones((h, w), np.int32)  # one object all over the tile
    peaks = {}
    for rows in (None, h):
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            object_stats(whole, 1, cues) if rows is None else object_stats(whole, 1, cues,
                                                                             rows=rows)
            peaks[rows] = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    assert peaks[None] < whole.nbytes < peaks[h] / 4, peaks


def test_colour_only_verdicts() -> None:
    rng = np.random.default_rng(6)
    before, after = _scene(rng)
    cues = pixel_cues(before, after, np.ones((200, 200), bool), threshold=0.1)
    objs = _objects(clean(pixel_classes(cues), 2, 2), cues, 0.25, has_dsm=False)
    new = [o for o in objs if o[0] == "new_structure"]
    assert len(new) == 1 and new[0][1] == "colour"
    assert new[0][2] == pytest.approx(150, rel=0.1)
    assert {o[0] for o in objs} == {"new_structure", "other"}


def test_height_gain_is_the_first_cue_when_dsms_exist() -> None:
    rng = np.random.default_rng(7)
    before, after = _scene(rng)
    # a grey concrete building the colour rule would also take, and a red-tiled one it
    # would miss: both rose 6 m; a 1 m pile of soil rose too little
    after[:, 120:150, 130:170] = _field(30, 40, (0.62, 0.30, 0.24), rng)
    zb = rng.normal(50, 0.15, (200, 200)).astype(np.float32)
    za = zb + 1.3 + rng.normal(0, 0.15, (200, 200)).astype(np.float32)
    za[50:70, 30:60] += 5.0
    za[120:150, 130:170] += 6.0
    za[150:190, 10:40] += 1.0
    cues = pixel_cues(before, after, np.ones((200, 200), bool), 0.1, zb, za, dsm_shift=1.3)
    assert cues.gain[120:150, 130:170].all() and not cues.gain[150:190, 10:40].any()
    objs = _objects(clean(pixel_classes(cues), 2, 2), cues, 0.25, has_dsm=True)
    new = sorted(o for o in objs if o[0] == "new_structure")
    assert [o[1] for o in new] == ["height", "height+colour"]
    assert HEIGHT_GAIN_M == 3.0


def test_too_small_for_the_height_rule() -> None:
    """More than 3 m over less than 100 m² is not a new structure on height alone."""
    stats = np.zeros(8)
    stats[0] = 300  # pixels, at 0.25 m² = 75 m²
    stats[4] = 300  # all rose
    geom = shapely.box(0, 0, 20, 15)
    v = classify(PixelClass.NEW, stats, geom, 0.25, True, 0.1)
    assert v is not None and v.kind == "other"
    stats[0] = stats[4] = 500  # 125 m²
    v = classify(PixelClass.NEW, stats, geom, 0.25, True, 0.1)
    assert v is not None and (v.kind, v.cue) == ("new_structure", "height")


def test_below_the_minimum_mapping_unit_is_dropped() -> None:
    stats = np.zeros(8)
    stats[0] = 100  # 25 m²
    assert classify(PixelClass.OTHER, stats, shapely.box(0, 0, 10, 10), 0.25, False, 0.1) \
        is None


def test_radiometry_apply_is_per_band() -> None:
    r = Radiometry((2.0, 1.0, 0.5), (0.0, 0.1, 0.0))
    out = r.apply(np.ones((3, 1, 1), np.float32))
    assert out[:, 0, 0].tolist() == pytest.approx([2.0, 1.1, 0.5])


def test_evaluation_counts_found_and_right() -> None:
    truth = [shapely.box(0, 0, 10, 10), shapely.box(100, 0, 110, 10), shapely.box(200, 0, 205, 4)]
    detected = [
        shapely.box(0, 0, 10, 3.5),  # covers 35 % of the first: found, right
        shapely.box(100, 0, 102, 10),  # covers 20 %: not found, but inside truth: right
        shapely.box(300, 300, 320, 320),  # nowhere: wrong
    ]
    s = evaluate(detected, truth)
    assert (s.found, s.right, s.truth, s.detected) == (1, 2, 3, 3)
    assert s.recall == pytest.approx(1 / 3) and s.precision == pytest.approx(2 / 3)
