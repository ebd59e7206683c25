"""bench/raster.py on a small scene: it covers the image with tiles of z15-18, every tile
it times is drawn, and the ratio is the bare rate over the rendered one."""

from __future__ import annotations

from pathlib import Path

from bench import raster


def test_a_small_run_times_every_tile_over_the_image(tmp_path: Path) -> None:
    image = raster.demo_image(tmp_path, 300.0)
    tiles = raster.tiles_over(image.bounds, range(15, 19))
    assert {t.z for t in tiles} == {15, 16, 17, 18}
    r = raster.run(image, tiles, rounds=1)
    assert r.tiles == len(tiles) and r.drawn >= len([t for t in tiles if t.z == 15])
    assert r.bare_per_s > 0 and r.render_per_s > 0
    assert r.ratio == r.bare_per_s / r.render_per_s
