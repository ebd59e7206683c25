"""Raster tile rendering next to the bare rasterio read of the same window.

The demo town's later orthophoto (seed_data.orthophoto, 0.5 m, UTM 50N) is written and
registered as a COG (layers.imagery.prepare) in a temporary directory; every tile of
zooms 15-18 over it is then

* read bare: the source window under the tile, from the overview the renderer picks,
  resampled to 256 x 256 by rasterio's ``read(out_shape=...)`` (no reprojection, no
  mask, no encoding): the least any tile server must do;
* rendered: :meth:`tiles.raster.Renderer.render` to PNG (WarpedVRT to EPSG:3857, the
  valid-data mask, the alpha band, PNG encoding), the work behind
  ``/tiles/imagery/{z}/{x}/{y}.png`` minus HTTP and one SQL lookup.

One thread, datasets kept open by both, each tile read once per round, rounds
alternated. Prints tiles per second of each and their ratio.

    python -m bench.raster [--size-m 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from layers.imagery import Image, prepare
from tiles.raster import Renderer, overview_level
from tiles.tms import TileId


@dataclass(frozen=True)
class Result:
    tiles: int
    bare_per_s: float
    render_per_s: float
    drawn: int  # tiles the renderer did not find empty

    @property
    def ratio(self) -> float:
        """How many times slower rendering is than the bare read."""
        return self.bare_per_s / self.render_per_s


def tiles_over(bounds: tuple[float, float, float, float], zooms: range) -> list[TileId]:
    w, s, e, n = bounds
    out = []
    for z in zooms:
        size = 360 / 2**z

        def row(lat: float, z: int = z) -> int:
            y = math.asinh(math.tan(math.radians(lat)))
            return int((1 - y / math.pi) / 2 * 2**z)

        for x in range(int((w + 180) / size), int((e + 180) / size) + 1):
            for y in range(row(n), row(s) + 1):
                out.append(TileId(z, x, y))
    return out


def run(image: Image, tiles: list[TileId], rounds: int = 3) -> Result:
    import rasterio
    from rasterio.warp import transform_bounds
    from rasterio.windows import from_bounds

    renderer = Renderer()
    datasets: dict[int, rasterio.DatasetReader] = {}
    with rasterio.open(image.path) as base:
        factors = base.overviews(1)
        crs = base.crs

    def bare(tile: TileId) -> None:
        level = overview_level(factors, image.resolution_m, tile)
        ds = datasets.get(level)
        if ds is None:
            ds = datasets[level] = (rasterio.open(image.path, overview_level=level)
                                    if level >= 0 else rasterio.open(image.path))
        box = transform_bounds("EPSG:3857", crs, *tile.bounds)
        ds.read([1, 2, 3], window=from_bounds(*box, ds.transform), out_shape=(3, 256, 256),
                boundless=True, fill_value=0)

    bare_s = render_s = 0.0
    drawn = 0
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            for t in tiles:
                bare(t)
            t1 = time.perf_counter()
            drawn = sum(renderer.render([image], t, "png") is not None for t in tiles)
            t2 = time.perf_counter()
            bare_s += t1 - t0
            render_s += t2 - t1
    finally:
        renderer.close()
        for ds in datasets.values():
            ds.close()
    n = len(tiles) * rounds
    return Result(len(tiles), n / bare_s, n / render_s, drawn)


def demo_image(workdir: Path, size_m: float) -> Image:
    from seed_data.orthophoto import write_pair
    from seed_data.town import generate

    pair = write_pair(generate(seed=2023), workdir / "pair", seed=1,
                      size_m=(size_m, size_m * 0.75))
    cog, info, outline = prepare(pair.after, workdir / "imagery", "orthophoto")
    return Image(1, "bench", "orthophoto", cog, None, None, info.crs, info.resolution_m,
                 info.width, info.height, info.bands, dt.datetime.now(dt.UTC), outline.bounds)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size-m", type=float, default=1000.0, help="scene width, metres")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        image = demo_image(Path(tmp), args.size_m)
        tiles = tiles_over(image.bounds, range(15, 19))
        r = run(image, tiles, args.rounds)
    print(f"{r.tiles} tiles (z15-18, {r.drawn} with data) x {args.rounds} rounds over a "
          f"{image.width} x {image.height} px 0.5 m orthophoto (COG)")
    print(f"  bare rasterio read of the window  {r.bare_per_s:8.1f} tiles/s")
    print(f"  Renderer.render to PNG            {r.render_per_s:8.1f} tiles/s")
    print(f"  ratio (bare / rendered)           {r.ratio:8.2f}")


if __name__ == "__main__":
    main()
