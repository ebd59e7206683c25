"""Viewsheds on analytic surfaces, GDAL's and ours alike, and ours against GDAL's.

Every analytic case runs through both engines: ``gdal_viewshed`` on a GeoTIFF written
here, and ``line_of_sight`` on the same array.  Observers stand on cell centres, where
both measure distance from.
"""

from __future__ import annotations

import doctest
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.transform
import rasterio.windows
from affine import Affine

import gis.viewshed
from gis.crs import STORAGE_EPSG, transformer
from gis.errors import GisError
from gis.viewshed import (
    MAX_LOS_CELLS,
    GdalViewshedError,
    ObserverOutsideError,
    Viewshed,
    ViewshedParameterError,
    gdal_viewshed,
    line_of_sight,
    sector_mask,
)
from seed_data.surface import SurfaceInfo
from seed_data.town import Town

X0, Y0 = 590_000.0, 4_075_000.0  # north-west corner of the synthetic rasters, EPSG:4548

# (dem, transform, x, y, observer height, radius, target height) -> visible, dem's shape
Engine = Callable[[np.ndarray, Affine, float, float, float, float, float], np.ndarray]


def write_dem(path: Path, dem: np.ndarray, res: float) -> Affine:
    transform = Affine(res, 0.0, X0, 0.0, -res, Y0)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=dem.shape[1],
        height=dem.shape[0],
        count=1,
        dtype="float32",
        crs="EPSG:4548",
        transform=transform,
    ) as dst:
        dst.write(dem.astype(np.float32), 1)
    return transform


def paste(v: Viewshed, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """A window viewshed put back on the full grid ``transform`` of ``shape``."""
    col0, row0 = (round(c) for c in ~transform @ (v.transform.c, v.transform.f))
    out = np.zeros(shape, dtype=bool)
    out[row0 : row0 + v.visible.shape[0], col0 : col0 + v.visible.shape[1]] = v.visible
    return out


@pytest.fixture(params=["gdal", "ours"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    calls = iter(range(1_000_000))

    def gdal(
        dem: np.ndarray, transform: Affine, x: float, y: float, h: float, r: float, t: float
    ) -> np.ndarray:
        path = tmp_path / f"dem{next(calls)}.tif"
        write_dem(path, dem, transform.a)
        v = gdal_viewshed(path, x, y, h, r, t)
        assert v.crs == "EPSG:4548"
        return paste(v, transform, dem.shape)

    def ours(
        dem: np.ndarray, transform: Affine, x: float, y: float, h: float, r: float, t: float
    ) -> np.ndarray:
        return line_of_sight(dem, transform, x, y, h, r, t)

    return gdal if request.param == "gdal" else ours


def grid(n: int, res: float) -> tuple[Affine, np.ndarray, float, float]:
    """Transform, cell-centre distances (m) from the middle cell, and its centre (x, y)."""
    transform = Affine(res, 0.0, X0, 0.0, -res, Y0)
    c = n // 2
    rr, cc = np.indices((n, n))
    dist = np.hypot(rr - c, cc - c) * res
    x, y = transform @ (c + 0.5, c + 0.5)
    return transform, dist, x, y


def test_docstring_examples() -> None:
    assert doctest.testmod(gis.viewshed).failed == 0


def test_flat_ground_is_seen_to_the_radius_and_not_beyond(engine: Engine) -> None:
    n, res = 121, 2.0
    transform, dist, x, y = grid(n, res)
    dem = np.full((n, n), 47.5)
    for h, r in ((1.6, 80.3), (30.0, 101.0)):
        seen = engine(dem, transform, x, y, h, r, 0.0)
        assert np.array_equal(seen, dist <= r)


@pytest.mark.parametrize(("d", "h", "wall"), [(20, 20.0, 8.0), (30, 12.0, 4.0), (15, 9.0, 6.0)])
def test_the_shadow_behind_a_wall_is_what_similar_triangles_give(
    engine: Engine, d: int, h: float, wall: float
) -> None:
    # a ring wall two cells thick (no gaps between diagonal cells) whose outer cells are
    # d (cells) from the observer, give or take half a cell: its shadow on flat ground
    # ends at d * H / (H - h) in every direction
    n, res = 201, 1.0
    transform, dist, x, y = grid(n, res)
    dem = np.where((dist >= d - 1.5) & (dist <= d + 0.5), 50.0 + wall, 50.0)
    r = 99.0
    seen = engine(dem, transform, x, y, h, r, 0.0)
    k = h / (h - wall)
    shadow = (dist > d + 0.5) & (dist <= r)
    tol = 1.5  # cells
    assert not seen[shadow & (dist < (d - 0.5) * k - tol)].any()
    assert seen[shadow & (dist > (d + 0.5) * k + tol)].all()
    assert seen[dist < d - 1.5].all()
    end = d * k
    # along the axes the shadow length is within a cell of the formula
    c = n // 2
    for ray in (
        seen[c, c + d + 1 :],
        seen[c, c - d - 1 :: -1],
        seen[c + d + 1 :, c],
        seen[c - d - 1 :: -1, c],
    ):
        first_seen = d + 1 + int(np.argmax(ray))
        assert abs((first_seen - d) - (end - d)) <= 1.0 + 1e-9, (first_seen, end)


def test_a_wall_taller_than_the_eye_hides_all_behind_it(engine: Engine) -> None:
    n, res = 121, 2.0
    transform, dist, x, y = grid(n, res)
    c = n // 2
    dem = np.full((n, n), 50.0)
    dem[:, c + 10] = 60.0  # a north-south wall 20 m east, 10 m tall
    seen = engine(dem, transform, x, y, 6.0, 110.0, 0.0)
    assert not seen[c, c + 11 :].any()
    assert seen[c, c - 55 : c + 11].all()
    # a mast 15 m tall behind it shows while 6 + 15 >= 6 + D * (10 - 6) / 20, D <= 45 m
    mast = engine(dem, transform, x, y, 6.0, 110.0, 15.0)
    assert mast[c, c + 11 : c + 23].all()  # 22 ... 44 m
    assert not mast[c, c + 23 :].any()  # 46 m on


def _terrain(n: int, seed: int) -> np.ndarray:
    """A lumpy surface with blocks on it: no symmetry of its own."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n] / n
    z = 50 + 6 * np.sin(5 * xx + 1.3) * np.cos(3 * yy + 0.4) + 4 * xx * yy
    for _ in range(40):
        r0, c0 = rng.integers(0, n - 8, 2)
        z[r0 : r0 + rng.integers(2, 8), c0 : c0 + rng.integers(2, 8)] += rng.uniform(3, 25)
    return z


@pytest.mark.parametrize("flip", ["east-west", "north-south", "both"])
def test_mirror_image_surfaces_give_mirror_image_viewsheds(engine: Engine, flip: str) -> None:
    n, res = 151, 2.0
    transform, _, x, y = grid(n, res)
    dem = _terrain(n, 11)
    axes = {"east-west": (1,), "north-south": (0,), "both": (0, 1)}[flip]
    seen = engine(dem, transform, x, y, 5.0, 140.0, 1.0)
    mirrored = engine(np.flip(dem, axes), transform, x, y, 5.0, 140.0, 1.0)
    assert 0.2 < seen.mean() < 0.6  # a case with something hidden
    assert np.array_equal(np.flip(mirrored, axes), seen)


def test_our_viewshed_is_symmetric_under_transposition() -> None:
    n, res = 151, 2.0
    transform, _, x, y = grid(n, res)
    dem = _terrain(n, 12)
    seen = line_of_sight(dem, transform, x, y, 5.0, 140.0)
    assert np.array_equal(line_of_sight(dem.T.copy(), transform, x, y, 5.0, 140.0).T, seen)


def _brute_force(dem: np.ndarray, r0: int, c0: int, h: float, radius_cells: float) -> np.ndarray:
    """The definition, one sight line at a time, sampled every 1/50 of a cell.

    The surface is the cells' heights at their centres; a cell the line passes nearest
    blocks at the distance of the point of the line nearest its centre.
    """
    z0 = dem[r0, c0] + h
    out = np.zeros(dem.shape, dtype=bool)
    for r, c in np.ndindex(dem.shape):
        d = math.hypot(r - r0, c - c0)
        if d > radius_cells or d == 0:
            out[r, c] = d == 0
            continue
        t = np.arange(0.02 / d, 1.0, 0.02 / d)
        rr, cc = np.rint(t * (r - r0)).astype(int), np.rint(t * (c - c0)).astype(int)
        between = ~(((rr == 0) & (cc == 0)) | ((rr == r - r0) & (cc == c - c0)))
        rr, cc = rr[between], cc[between]
        along = (rr * (r - r0) + cc * (c - c0)) / d
        horizon = np.max((dem[r0 + rr, c0 + cc] - z0) / along) if rr.size else -np.inf
        out[r, c] = (dem[r, c] - z0) / d >= horizon
    return out


def test_our_viewshed_matches_its_definition_traced_finely() -> None:
    n, res = 61, 2.0
    transform, dist, x, y = grid(n, res)
    disc = dist <= 58.0
    for seed in (11, 13):
        dem = _terrain(n, seed)
        ours = line_of_sight(dem, transform, x, y, 4.0, 58.0)
        reference = _brute_force(dem, n // 2, n // 2, 4.0, 29.0)
        assert (ours == reference)[disc].mean() > 0.98


def _camera_cases(town: Town, count: int) -> list[tuple[float, float, float, float]]:
    to_metric = transformer(STORAGE_EPSG, town.metric_epsg)
    street = [c for c in town.tables["cameras"] if c["kind"] != "high_point"]
    step = len(street) // count
    cases = []
    for cam in street[::step][:count]:
        x, y = to_metric.transform(cam["geom"].x, cam["geom"].y)
        cases.append((x, y, cam["mount_height_m"], cam["range_m"]))
    return cases


def test_ours_agrees_with_gdal_on_the_demo_town(demo_dsm: SurfaceInfo, demo_town: Town) -> None:
    agree = total = 0
    with rasterio.open(demo_dsm.path) as ds:
        for x, y, h, r in _camera_cases(demo_town, 20):
            g = gdal_viewshed(demo_dsm.path, x, y, h, r)
            # ours on a window of the DSM read for the purpose: GDAL's own window
            window = rasterio.windows.from_bounds(
                *rasterio.transform.array_bounds(*g.visible.shape, g.transform),
                transform=ds.transform,
            ).round_offsets()
            window = rasterio.windows.Window(
                window.col_off, window.row_off, g.visible.shape[1], g.visible.shape[0]
            )
            dsm = ds.read(1, window=window)
            assert ds.window_transform(window) == g.transform
            ours = line_of_sight(dsm, g.transform, x, y, h, r)
            # both measure to the radius, GDAL from the observer's cell centre: leave the rim
            oc, orow = (math.floor(v) + 0.5 for v in ~g.transform @ (x, y))
            rr, cc = np.indices(g.visible.shape)
            core = np.hypot(rr + 0.5 - orow, cc + 0.5 - oc) * demo_dsm.resolution <= r - 4.0
            agree += int((ours[core] == g.visible[core]).sum())
            total += int(core.sum())
    assert agree / total >= 0.95, agree / total


def test_gdal_viewshed_returns_the_radius_window_of_the_dsm(demo_dsm: SurfaceInfo) -> None:
    minx, miny, maxx, maxy = demo_dsm.bounds
    x, y = (minx + maxx) / 2 + 0.3, (miny + maxy) / 2 - 0.7
    v = gdal_viewshed(demo_dsm.path, x, y, 80.0, 500.0)
    assert v.crs == "EPSG:4548"
    assert v.shape == (501, 501)  # 250 cells each side of the observer's cell
    col, row = ~v.transform @ (x, y)
    assert (math.floor(col), math.floor(row)) == (250, 250)
    rr, cc = np.indices(v.shape)
    assert not v.visible[np.hypot(rr - 250, cc - 250) * 2.0 > 500.0].any()
    assert v.visible[250, 250]


def test_an_observer_off_the_dsm_is_refused(demo_dsm: SurfaceInfo, tmp_path: Path) -> None:
    minx, miny, maxx, maxy = demo_dsm.bounds
    # half a cell west: gdal_viewshed 3.6 itself would take this as on the edge
    for x, y in ((minx - 1.0, (miny + maxy) / 2), (maxx + 5000, maxy), (minx, maxy + 0.5)):
        with pytest.raises(ObserverOutsideError) as err:
            gdal_viewshed(demo_dsm.path, x, y, 10.0, 100.0)
        assert isinstance(err.value, GisError)
        assert "outside" in str(err.value)
    dem = np.zeros((20, 20), dtype=np.float32)
    transform = Affine(2.0, 0, X0, 0, -2.0, Y0)
    with pytest.raises(ObserverOutsideError):
        line_of_sight(dem, transform, X0 - 1.0, Y0 - 10.0, 5.0, 30.0)
    with pytest.raises(ObserverOutsideError):
        line_of_sight(np.full((20, 20), np.nan), transform, X0 + 5, Y0 - 5, 5.0, 30.0)


def test_gdal_failures_are_gis_errors(tmp_path: Path) -> None:
    not_a_raster = tmp_path / "dsm.tif"
    not_a_raster.write_text("not a raster")
    with pytest.raises(GdalViewshedError):
        gdal_viewshed(not_a_raster, X0, Y0, 5.0, 100.0)
    with pytest.raises(ViewshedParameterError):
        gdal_viewshed(not_a_raster, X0, Y0, 5.0, -1.0)
    with pytest.raises(ViewshedParameterError):
        gdal_viewshed(not_a_raster, X0, float("nan"), 5.0, 10.0)


def test_line_of_sight_refuses_what_it_cannot_do() -> None:
    dem = np.zeros((50, 50), dtype=np.float32)
    transform = Affine(2.0, 0, X0, 0, -2.0, Y0)
    with pytest.raises(ViewshedParameterError, match="gdal_viewshed"):
        line_of_sight(dem, transform, X0 + 50, Y0 - 50, 5.0, 2.0 * MAX_LOS_CELLS)
    with pytest.raises(ViewshedParameterError, match="north-up"):
        line_of_sight(dem, Affine(2.0, 0, X0, 0, 2.0, Y0), X0 + 50, Y0 + 50, 5.0, 20.0)
    with pytest.raises(ViewshedParameterError):
        line_of_sight(dem, transform, X0 + 50, Y0 - 50, 5.0, 20.0, within=np.ones((3, 3), bool))


def test_nan_cells_neither_block_nor_are_seen() -> None:
    n, res = 41, 2.0
    transform, dist, x, y = grid(n, res)
    dem = np.full((n, n), 50.0)
    dem[:, n // 2 + 5] = np.nan
    seen = line_of_sight(dem, transform, x, y, 2.0, 38.0)
    assert np.array_equal(seen, (dist <= 38.0) & ~np.isnan(dem))


def test_within_limits_the_answer_to_a_sector() -> None:
    n, res = 101, 2.0
    transform, dist, x, y = grid(n, res)
    dem = _terrain(n, 14)
    full = line_of_sight(dem, transform, x, y, 6.0, 90.0)
    for heading, fov in ((0.0, 60.0), (135.0, 90.0), (350.0, 40.0), (0.0, 360.0)):
        sector = sector_mask(dem.shape, transform, x, y, heading, fov, 90.0)
        cut = line_of_sight(dem, transform, x, y, 6.0, 90.0, within=sector)
        assert np.array_equal(cut, full & sector)


def test_sector_mask_follows_the_heading_clockwise_from_north() -> None:
    n, res = 41, 1.0
    transform, dist, x, y = grid(n, res)
    c = n // 2
    north = sector_mask((n, n), transform, x, y, 0.0, 90.0, 15.0)
    assert north[c - 10, c] and not north[c + 10, c] and not north[c, c + 10]
    east = sector_mask((n, n), transform, x, y, 90.0, 90.0, 15.0)
    assert east[c, c + 10] and not east[c, c - 10] and not east[c - 10, c]
    # wrapping through north: 350 +- 20 holds 5 degrees east of north
    wrap = sector_mask((n, n), transform, x, y, 350.0, 40.0, 15.0)
    assert wrap[c - 10, c + 1] and wrap[c - 10, c - 3] and not wrap[c - 10, c + 6]
    disc = sector_mask((n, n), transform, x, y, 123.0, 360.0, 15.0)
    assert np.array_equal(disc, dist <= 15.0)
    # a 90 degree sector is a quarter of the disc, give or take its edges
    assert abs(north.sum() / disc.sum() - 0.25) < 0.03
    assert north[c, c] and east[c, c]
    with pytest.raises(ViewshedParameterError):
        sector_mask((n, n), transform, x, y, 0.0, 0.0, 15.0)
