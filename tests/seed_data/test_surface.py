"""The demo town's DSM: deterministic, on the metric grid, and ground + building heights."""

from __future__ import annotations

import doctest
import hashlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely

import seed_data.surface
from gis.crs import STORAGE_EPSG, transformer
from seed_data.surface import SurfaceInfo, dsm_grid, ground_m, write_dsm
from seed_data.town import Town

TOL = 1e-3  # m; the file holds float32


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def footprints(demo_town: Town) -> tuple[np.ndarray, np.ndarray, shapely.STRtree]:
    """Metric building footprints, their heights, and a tree over them."""
    to_metric = transformer(STORAGE_EPSG, demo_town.metric_epsg)
    geoms = np.array([b["geom"] for b in demo_town.tables["buildings"]], dtype=object)
    metric = shapely.transform(
        geoms, lambda xy: np.column_stack(to_metric.transform(xy[:, 0], xy[:, 1]))
    )
    heights = np.array([b["height_m"] for b in demo_town.tables["buildings"]])
    return metric, heights, shapely.STRtree(metric)


def _cell_centres(ds: rasterio.DatasetReader, xs: np.ndarray, ys: np.ndarray) -> tuple:
    rows, cols = rasterio.transform.rowcol(ds.transform, xs, ys)
    rows, cols = np.asarray(rows), np.asarray(cols)
    cx, cy = rasterio.transform.xy(ds.transform, rows, cols)
    return rows, cols, np.asarray(cx), np.asarray(cy)


def _values(ds: rasterio.DatasetReader, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    out = np.empty(rows.size, dtype=np.float32)
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        out[i] = ds.read(1, window=((int(r), int(r) + 1), (int(c), int(c) + 1)))[0, 0]
    return out


def test_docstring_examples() -> None:
    assert doctest.testmod(seed_data.surface).failed == 0


def test_the_dsm_is_a_tiled_float32_geotiff_on_the_metric_grid(
    demo_dsm: SurfaceInfo, demo_town: Town
) -> None:
    assert demo_dsm.epsg == demo_town.metric_epsg == 4548
    assert demo_dsm.resolution == 2.0
    with rasterio.open(demo_dsm.path) as ds:
        assert ds.crs.to_epsg() == 4548
        assert ds.res == (2.0, 2.0)
        assert ds.dtypes == ("float32",) and ds.count == 1
        assert ds.nodata is None
        assert ds.block_shapes == [(512, 512)]
        assert ds.profile["tiled"] is True
        assert ds.compression is not None and ds.compression.name.lower() == "deflate"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "3"
        assert (ds.width, ds.height) == (demo_dsm.width, demo_dsm.height)
        assert tuple(ds.bounds) == pytest.approx(demo_dsm.bounds)
    # it covers every street with a margin, on whole cells
    to_metric = transformer(STORAGE_EPSG, demo_town.metric_epsg)
    minx, miny, maxx, maxy = demo_dsm.bounds
    for street in demo_town.tables["streets"]:
        xs, ys = to_metric.transform(*shapely.get_coordinates(street["geom"]).T)
        assert minx + 100 < min(xs) and max(xs) < maxx - 100
        assert miny + 100 < min(ys) and max(ys) < maxy - 100
    assert minx % 2.0 == 0 and maxy % 2.0 == 0
    # the ~14 km town at 2 m
    assert 5000 < demo_dsm.width < 9000 and 5000 < demo_dsm.height < 9000


@pytest.mark.slow
def test_the_same_town_gives_the_same_file_byte_for_byte(
    demo_dsm: SurfaceInfo, demo_town: Town, tmp_path: Path
) -> None:
    again = write_dsm(demo_town, tmp_path / "again.tif")
    assert again == SurfaceInfo(
        path=tmp_path / "again.tif",
        epsg=demo_dsm.epsg,
        resolution=demo_dsm.resolution,
        bounds=demo_dsm.bounds,
        width=demo_dsm.width,
        height=demo_dsm.height,
    )
    assert _sha256(again.path) == _sha256(demo_dsm.path)


def test_progress_reports_every_row(demo_town: Town, tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []
    info = write_dsm(
        demo_town,
        tmp_path / "coarse.tif",
        resolution=25.0,
        progress=lambda what, n: seen.append((what, n)),
    )
    assert {what for what, _ in seen} == {"dsm rows"}
    assert sum(n for _, n in seen) == info.height
    assert (info.bounds, info.width, info.height) == dsm_grid(demo_town, 25.0)


def test_buildings_stand_on_the_ground_at_their_height(
    demo_dsm: SurfaceInfo, demo_town: Town, footprints: tuple
) -> None:
    metric, heights, tree = footprints
    rng = np.random.default_rng(4)
    picked = rng.choice(len(metric), 400, replace=False)
    # a point well inside each footprint (two cells from every edge)
    inner = shapely.buffer(metric[picked], -2 * demo_dsm.resolution)
    ok = ~shapely.is_empty(inner)
    assert ok.sum() > 200
    pts = shapely.point_on_surface(inner[ok])
    px, py = shapely.get_x(pts), shapely.get_y(pts)
    with rasterio.open(demo_dsm.path) as ds:
        rows, cols, cx, cy = _cell_centres(ds, px, py)
        got = _values(ds, rows, cols)
    # the tallest footprint holding the cell centre (footprints may overlap)
    centres = shapely.points(cx, cy)
    pairs = tree.query(centres, predicate="within")
    top = np.zeros(centres.size)
    np.maximum.at(top, pairs[0], heights[pairs[1]])
    assert np.all(top > 0)
    expected = ground_m(cx, cy, demo_town.seed) + top
    np.testing.assert_allclose(got, expected, atol=TOL)


def test_open_ground_is_the_ground_function(
    demo_dsm: SurfaceInfo, demo_town: Town, footprints: tuple
) -> None:
    _, _, tree = footprints
    minx, miny, maxx, maxy = demo_dsm.bounds
    rng = np.random.default_rng(5)
    px, py = rng.uniform(minx, maxx, 3000), rng.uniform(miny, maxy, 3000)
    with rasterio.open(demo_dsm.path) as ds:
        rows, cols, cx, cy = _cell_centres(ds, px, py)
        cells = shapely.buffer(shapely.points(cx, cy), demo_dsm.resolution, cap_style="square")
        clear = ~np.isin(np.arange(cells.size), tree.query(cells, predicate="intersects")[0])
        assert clear.sum() > 1000
        got = _values(ds, rows[clear], cols[clear])
    np.testing.assert_allclose(got, ground_m(cx[clear], cy[clear], demo_town.seed), atol=TOL)


def test_the_ground_is_gentle_hills_drawn_from_the_seed(demo_dsm: SurfaceInfo) -> None:
    minx, miny, maxx, maxy = demo_dsm.bounds
    xs = np.arange(minx, maxx, 10.0)
    ys = np.arange(miny, maxy, 10.0)
    z = ground_m(xs[np.newaxis, :], ys[:, np.newaxis], 2023)
    assert 30 < z.min() and z.max() < 80
    assert z.max() - z.min() > 15  # hills, not a plane
    slope = max(np.abs(np.diff(z, axis=0)).max(), np.abs(np.diff(z, axis=1)).max()) / 10.0
    assert slope < 0.05
    again = ground_m(xs[np.newaxis, :], ys[:, np.newaxis], 2023)
    assert np.array_equal(z, again)
    other = ground_m(xs[np.newaxis, :], ys[:, np.newaxis], 7)
    assert np.abs(other - z).max() > 5
    # the DSM's separable form is the same function
    np.testing.assert_allclose(seed_data.surface._ground_grid(xs, ys, 2023), z, atol=1e-9)
