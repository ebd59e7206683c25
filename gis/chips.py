"""Image chips: a small PNG of an orthophoto around a place, for evidence.

``chip`` reads only the window around the bounds (plus a margin), whatever the size of
the file, reprojecting the bounds into the raster's CRS, and scales it to at most
``size`` pixels a side. Bands 1–3 are read as RGB and stretched from the raster's bit
depth to 8 bits; no-data and transparent pixels stay black.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds
from rasterio.windows import from_bounds

from gis.errors import GisError


def chip(path: str | Path, bounds_lonlat: tuple[float, float, float, float],
         size: int = 256, margin: float = 0.5) -> bytes:
    """PNG bytes of ``path`` around CRS84 ``bounds_lonlat`` (grown by ``margin`` of the
    larger side on every side)."""
    from PIL import Image

    with rasterio.open(path) as src:
        if src.crs is None:
            raise GisError(f"{path} has no CRS")
        x0, y0, x1, y1 = transform_bounds("OGC:CRS84", src.crs, *bounds_lonlat)
        pad = margin * max(x1 - x0, y1 - y0, 10 * abs(src.transform.a))
        win = from_bounds(x0 - pad, y0 - pad, x1 + pad, y1 + pad, src.transform)
        win = win.round_offsets().round_lengths()
        if (win.width <= 0 or win.height <= 0 or win.col_off >= src.width
                or win.row_off >= src.height or win.col_off + win.width <= 0
                or win.row_off + win.height <= 0):
            raise GisError("the place lies outside the image")
        scale = min(1.0, size / max(win.width, win.height))
        shape = (max(1, int(win.height * scale)), max(1, int(win.width * scale)))
        bands = [1, 2, 3] if src.count >= 3 else [1, 1, 1]
        data = src.read(bands, window=win, out_shape=(3, *shape), boundless=True, fill_value=0,
                        resampling=Resampling.average)
        top = 255.0 if data.dtype == np.uint8 else float(max(np.percentile(data, 99.5), 1))
    rgb = np.clip(data.astype("float32") * (255.0 / top), 0, 255).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(np.moveaxis(rgb, 0, -1), "RGB").save(out, "PNG", optimize=True)
    return out.getvalue()
