"""Raster tiles drawn by tiles.raster from small GeoTIFFs written here with rasterio: a
tile's pixel at a ground point equals the source pixel there (georeferencing, not just
"an image"), low zooms read overviews, outside the data is transparent or no tile, masks
are coloured, the mosaic puts the newest image on top."""

from __future__ import annotations

import datetime as dt
import doctest
import io
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image as PILImage
from pyproj import Transformer
from rasterio.transform import from_origin

import tiles.raster
from layers.imagery import Image, footprint, inspect
from tiles.raster import MASK_COLOURS, Renderer, native_zoom
from tiles.tms import HALF_WORLD, TileId

LON, LAT = 118.055, 36.812  # in the demo town
GK = 4548
BLOCK = 16  # pixels per colour block of the test image


def gk_origin(lon: float = LON, lat: float = LAT) -> tuple[float, float]:
    return Transformer.from_crs(4490, GK, always_xy=True).transform(lon, lat)


def blocks(path: Path, size: int = 512, res: float = 0.5, nodata: int | None = None,
           seed: int = 1, hole: bool = False) -> Path:
    """An RGB GeoTIFF in EPSG:4548 at ``res`` m of 16 x 16 px blocks of random colours
    (1..255), its top-left corner at (LON, LAT); with ``hole`` the right half is nodata."""
    rng = np.random.default_rng(seed)
    n = size // BLOCK
    colours = rng.integers(1, 256, (3, n, n), dtype=np.uint8)
    data = np.repeat(np.repeat(colours, BLOCK, axis=1), BLOCK, axis=2)
    if hole:
        data[:, :, size // 2:] = 0
    x0, y0 = gk_origin()
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3,
                       dtype="uint8", crs=f"EPSG:{GK}", transform=from_origin(x0, y0, res, res),
                       nodata=nodata, tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(data)
    return path


def image(path: Path, kind: str = "orthophoto", name: str = "t",
          captured_on: dt.date | None = None) -> Image:
    info = inspect(path, kind)
    fp = footprint(path)
    return Image(1, name, kind, path, captured_on, None, info.crs, info.resolution_m,
                 info.width, info.height, info.bands, dt.datetime.now(dt.UTC), fp.bounds)


def tile_at(lon: float, lat: float, z: int) -> tuple[TileId, int, int]:
    """The tile holding (lon, lat) at ``z`` and the point's pixel (column, row) in it."""
    x, y = Transformer.from_crs(4490, 3857, always_xy=True).transform(lon, lat)
    size = 2 * HALF_WORLD / 2**z
    fx, fy = (x + HALF_WORLD) / size, (HALF_WORLD - y) / size
    return TileId(z, int(fx), int(fy)), int((fx % 1) * 256), int((fy % 1) * 256)


def decode(data: bytes) -> np.ndarray:
    img = PILImage.open(io.BytesIO(data))
    return np.asarray(img.convert("RGBA"))


def block_centre(i: int, j: int, res: float = 0.5) -> tuple[float, float, float, float]:
    """Ground point (GK x, y) and (lon, lat) of block (row i, column j)'s centre."""
    x0, y0 = gk_origin()
    gx, gy = x0 + (j + 0.5) * BLOCK * res, y0 - (i + 0.5) * BLOCK * res
    lon, lat = Transformer.from_crs(GK, 4490, always_xy=True).transform(gx, gy)
    return gx, gy, lon, lat


def test_doctests() -> None:
    assert doctest.testmod(tiles.raster).failed == 0


def test_a_tile_pixel_equals_the_source_pixel_at_the_same_ground_point(tmp_path: Path) -> None:
    path = blocks(tmp_path / "b.tif")
    img, r = image(path), Renderer()
    with rasterio.open(path) as src:
        for (i, j), z in [((3, 5), 19), ((20, 11), 18), ((30, 2), 17)]:
            gx, gy, lon, lat = block_centre(i, j)
            want = next(src.sample([(gx, gy)]))
            tile, col, row = tile_at(lon, lat, z)
            got = decode(r.render([img], tile, "png"))[row, col]
            assert tuple(got[:3]) == tuple(want) and got[3] == 255, (z, i, j)
    r.close()


def test_jpeg_and_webp_tiles_carry_the_same_picture(tmp_path: Path) -> None:
    img, r = image(blocks(tmp_path / "b.tif")), Renderer()
    gx, gy, lon, lat = block_centre(10, 10)
    tile, col, row = tile_at(lon, lat, 18)
    png = decode(r.render([img], tile, "png"))
    jpg = decode(r.render([img], tile, "jpg"))
    assert PILImage.open(io.BytesIO(r.render([img], tile, "webp"))).format == "WEBP"
    assert np.abs(png[row, col, :3].astype(int) - jpg[row, col, :3]).max() < 20


def test_outside_the_data_is_transparent_and_far_away_there_is_no_tile(tmp_path: Path) -> None:
    img, r = image(blocks(tmp_path / "h.tif", nodata=0, hole=True)), Renderer()
    _, _, lon, lat = block_centre(4, 4)
    tile, col, row = tile_at(lon, lat, 16)
    px = decode(r.render([img], tile, "png"))
    assert px[row, col, 3] == 255
    _, _, lon2, lat2 = block_centre(4, 28)  # right half: nodata
    tile2, col2, row2 = tile_at(lon2, lat2, 16)
    assert tile2 == tile and px[row2, col2, 3] == 0
    _, _, lon3, lat3 = block_centre(28, 28)
    t3, _, _ = tile_at(lon3, lat3, 20)  # the image covers this tile, the data does not
    assert r.render([img], t3, "png") is None
    assert r.render([img], TileId(14, 0, 0), "png") is None  # the other side of the world


def test_low_zooms_read_the_overviews_not_the_full_image(tmp_path: Path) -> None:
    """The file's overview (an external .ovr) is painted a colour the image does not hold:
    a low-zoom tile shows that colour, a high-zoom tile the image's own pixels."""
    path = blocks(tmp_path / "o.tif", size=1024, res=0.5)
    with rasterio.open(tmp_path / "o.tif.ovr", "w", driver="GTiff", width=512, height=512,
                       count=3, dtype="uint8") as ovr:
        ovr.write(np.stack([np.full((512, 512), v, np.uint8) for v in (0, 0, 255)]))
    img, r = image(path), Renderer()
    with rasterio.open(path) as src:
        assert src.overviews(1) == [2]
    _, _, lon, lat = block_centre(20, 20)
    low, col, row = tile_at(lon, lat, 16)  # 1.9 m pixels: the 1 m overview serves
    assert r.level(img, low) == 0
    assert tuple(decode(r.render([img], low, "png"))[row, col]) == (0, 0, 255, 255)
    high, col, row = tile_at(lon, lat, 17)  # 0.96 m pixels: finer than 1 m, full resolution
    assert r.level(img, high) == -1
    assert tuple(decode(r.render([img], high, "png"))[row, col][:3]) != (0, 0, 255)


def test_mask_values_are_drawn_in_their_colours(tmp_path: Path) -> None:
    path = tmp_path / "mask.tif"
    data = np.zeros((256, 256), np.uint8)
    data[:128, 128:], data[128:, :128], data[128:, 128:] = 1, 2, 3
    x0, y0 = gk_origin()
    with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=1,
                       dtype="uint8", crs=f"EPSG:{GK}",
                       transform=from_origin(x0, y0, 0.5, 0.5)) as dst:
        dst.write(data, 1)
    img, r = image(path, "change_mask"), Renderer()
    seen = {}
    for value, (i, j) in {0: (2, 2), 1: (2, 13), 2: (13, 2), 3: (13, 13)}.items():
        _, _, lon, lat = block_centre(i, j)
        tile, col, row = tile_at(lon, lat, 18)
        seen[value] = tuple(decode(r.render([img], tile, "png"))[row, col])
    assert seen[0][3] == 0  # no change: transparent
    assert seen[1] == tuple(MASK_COLOURS[1]) and seen[1][0] > 200 > seen[1][2]  # red
    assert seen[2] == tuple(MASK_COLOURS[2]) and seen[2][2] > 200 > seen[2][0]  # blue
    assert seen[3] == tuple(MASK_COLOURS[3]) and min(seen[3][:2]) > 200 > seen[3][2]  # yellow
    _, _, lon, lat = block_centre(40, 40)  # beyond the mask: no tile
    assert r.render([img], tile_at(lon, lat, 19)[0], "png") is None


def test_the_mosaic_draws_the_newest_image_on_top(tmp_path: Path) -> None:
    new = image(blocks(tmp_path / "new.tif", nodata=0, hole=True, seed=2), name="new",
                captured_on=dt.date(2026, 6, 1))
    old = image(blocks(tmp_path / "old.tif", seed=3), name="old",
                captured_on=dt.date(2026, 3, 1))
    r = Renderer()
    with rasterio.open(new.path) as n_src, rasterio.open(old.path) as o_src:
        for (i, j), src in [((5, 5), n_src), ((5, 25), o_src)]:  # right half: only the old
            gx, gy, lon, lat = block_centre(i, j)
            tile, col, row = tile_at(lon, lat, 18)
            got = decode(r.render([new, old], tile, "png"))[row, col]
            assert tuple(got[:3]) == tuple(next(src.sample([(gx, gy)])))


def test_threads_render_the_same_tiles_each_with_its_own_datasets(tmp_path: Path) -> None:
    img, r = image(blocks(tmp_path / "b.tif")), Renderer()
    _, _, lon, lat = block_centre(16, 16)
    tiles_ = [tile_at(lon, lat, z)[0] for z in (15, 16, 17, 18, 19)]
    want = [r.render([img], t, "png") for t in tiles_]
    got: dict[int, list[bytes | None]] = {}

    def work(k: int) -> None:
        got[k] = [r.render([img], t, "png") for t in tiles_ * 4][:5]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(v == want for v in got.values())
    assert r.opened >= 5  # every thread opened its own
    r.close()


def test_native_zoom_follows_the_resolution() -> None:
    assert native_zoom(0.5, LAT) == 18
    assert native_zoom(0.06, LAT) == 21 and native_zoom(0.05, LAT) == 22
    assert native_zoom(1000.0, LAT) == 7
    ground = 2 * HALF_WORLD * math.cos(math.radians(LAT)) / 256 / 2**18
    assert ground <= 0.5 < 2 * ground


@pytest.mark.parametrize("fmt", ["gif", "tif"])
def test_unknown_format_is_refused(tmp_path: Path, fmt: str) -> None:
    from tiles.errors import InvalidTile

    with pytest.raises(InvalidTile, match="png, jpg or webp"):
        Renderer().render([], TileId(0, 0, 0), fmt)
