"""Evidence chips read only the window around a place and show what is there."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from pyproj import Transformer
from rasterio.transform import from_origin

from gis.chips import chip
from gis.errors import GisError


def write(path: Path, dtype: str = "uint8") -> tuple[float, float]:
    """A 2,000 x 2,000 px grey image at 0.5 m in EPSG:4548 with a red 20 m square at its
    centre; returns the square's centre as lon/lat."""
    x0, y0 = 500_000.0, 4_075_000.0
    top = 255 if dtype == "uint8" else 4095
    img = np.full((3, 2000, 2000), top // 3, dtype=dtype)
    img[:, 980:1020, 980:1020] = 0
    img[0, 980:1020, 980:1020] = top
    with rasterio.open(path, "w", driver="GTiff", width=2000, height=2000, count=3,
                       dtype=dtype, crs="EPSG:4548", transform=from_origin(x0, y0, 0.5, 0.5),
                       tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(img)
    lon, lat = Transformer.from_crs(4548, 4326, always_xy=True).transform(x0 + 500, y0 - 500)
    return lon, lat


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_a_chip_shows_the_red_roof_in_its_middle(tmp_path: Path, dtype: str) -> None:
    lon, lat = write(tmp_path / "o.tif", dtype)
    d = 0.00005  # ~5 m
    png = chip(tmp_path / "o.tif", (lon - d, lat - d, lon + d, lat + d), size=128)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert max(img.shape[:2]) <= 128
    r, g, b = img[img.shape[0] // 2, img.shape[1] // 2]
    assert r > 200 and g < 40 and b < 40
    corner = img[0, 0]
    assert abs(int(corner[0]) - int(corner[1])) < 10  # grey around it


def test_a_place_off_the_image_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "o.tif")
    with pytest.raises(GisError, match="outside"):
        chip(tmp_path / "o.tif", (100.0, 30.0, 100.001, 30.001))
