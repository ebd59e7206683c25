"""Imagery over HTTP and on the command line, against a real PostGIS and a real uvicorn:
``gridgov imagery add`` refuses what cannot be served and leaves nothing, converts to a
COG; the tile routes give the source's pixels at a ground point, 204 outside, 400 for a
bad address, 304 for a known ETag; the COG is served with HTTP Range and GDAL reads it
through /vsicurl/; a change run's mask committed through changes_store is registered and
tiled in colour."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
import rasterio
from PIL import Image as PILImage
from pyproj import Transformer
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from typer.testing import CliRunner

from api.cli import app as cli
from layers import db, imagery
from tiles.tms import HALF_WORLD, TileId

runner = CliRunner()
LON, LAT = 118.055, 36.812
GK = 4548


def write(path: Path, *, crs: str | None = f"EPSG:{GK}", origin: tuple[float, float] | None = None,
          count: int = 3, dtype: str = "uint8", size: int = 512, values: np.ndarray | None = None,
          res: float = 0.5) -> Path:
    """A GeoTIFF of 16-px blocks of random colours (striped, not a COG)."""
    x0, y0 = origin or Transformer.from_crs(4490, GK, always_xy=True).transform(LON, LAT)
    if values is None:
        rng = np.random.default_rng(7)
        c = rng.integers(1, 256, (count, size // 16, size // 16)).astype(dtype)
        values = np.repeat(np.repeat(c, 16, axis=1), 16, axis=2)
    profile: dict[str, Any] = {"driver": "GTiff", "width": size, "height": size, "count": count,
                               "dtype": dtype}
    if crs is not None:
        profile.update(crs=crs, transform=from_origin(x0, y0, res, res))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values)
    return path


def tile_at(lon: float, lat: float, z: int) -> tuple[TileId, int, int]:
    x, y = Transformer.from_crs(4490, 3857, always_xy=True).transform(lon, lat)
    size = 2 * HALF_WORLD / 2**z
    fx, fy = (x + HALF_WORLD) / size, (HALF_WORLD - y) / size
    return TileId(z, int(fx), int(fy)), int((fx % 1) * 256), int((fy % 1) * 256)


def ground(col: int, row: int) -> tuple[float, float, float, float]:
    """GK (x, y) and lon/lat of the source pixel centre (col, row)."""
    x0, y0 = Transformer.from_crs(4490, GK, always_xy=True).transform(LON, LAT)
    gx, gy = x0 + (col + 0.5) * 0.5, y0 - (row + 0.5) * 0.5
    return (gx, gy, *Transformer.from_crs(GK, 4490, always_xy=True).transform(gx, gy))


def rgba(data: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(data)).convert("RGBA"))


def env(url: str, tmp: Path) -> dict[str, str]:
    return {"GRIDGOV_DATABASE_URL": url, "GRIDGOV_DATA_DIR": str(tmp / "data")}


def test_cli_add_refuses_what_cannot_be_served_and_leaves_nothing(
        fresh_db_url: str, tmp_path: Path) -> None:
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    cases = {
        "unreadable as a raster": text,
        "no georeference": write(tmp_path / "plain.tif", crs=None),
        "unknown CRS": write(tmp_path / "local.tif",
                             crs='LOCAL_CS["site grid",UNIT["metre",1]]', origin=(0, 0)),
        "does not overlap China": write(tmp_path / "paris.tif", crs="EPSG:4326",
                                        origin=(2.35, 48.85), res=0.00001),
        "uint16 data": write(tmp_path / "deep.tif", dtype="uint16"),
        "no such file": tmp_path / "missing.tif",
    }
    for why, path in cases.items():
        r = runner.invoke(cli, ["imagery", "add", str(path), "--name", "x"],
                          env=env(fresh_db_url, tmp_path))
        assert r.exit_code == 2, (why, r.output)
        assert why in r.output, (why, r.output)
    r = runner.invoke(cli, ["imagery", "add", str(cases["no georeference"]), "--name", "a/b"],
                      env=env(fresh_db_url, tmp_path))
    assert r.exit_code == 2 and "imagery name" in r.output
    leftovers = list((tmp_path / "data" / "imagery").glob("*")) if (
        tmp_path / "data" / "imagery").exists() else []
    assert leftovers == []
    with psycopg.connect(fresh_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM imagery").fetchone()[0] == 0


def test_cli_add_converts_to_a_cog_lists_and_removes(fresh_db_url: str, tmp_path: Path) -> None:
    src = write(tmp_path / "flight.tif", size=1024)
    e = env(fresh_db_url, tmp_path)
    r = runner.invoke(cli, ["imagery", "add", str(src), "--name", "flight-1",
                            "--captured-on", "2026-06-01"], env=e)
    assert r.exit_code == 0, r.output
    assert ("registered flight-1: orthophoto, 1024 x 1024 px, 3 band(s), 0.5 m, EPSG:4548"
            in r.output)
    with psycopg.connect(fresh_db_url) as conn:
        path, captured, (w, s, east, n) = conn.execute(
            "SELECT path, captured_on::text, ARRAY[ST_XMin(footprint), ST_YMin(footprint), "
            "ST_XMax(footprint), ST_YMax(footprint)] FROM imagery WHERE name = 'flight-1'"
        ).fetchone()
    assert Path(path).parent == tmp_path / "data" / "imagery" and captured == "2026-06-01"
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.overviews(1) and ds.block_shapes[0] == (512, 512)
    with rasterio.open(src) as ds:  # the same pixels as the source
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG"
        assert np.array_equal(ds.read(), rasterio.open(path).read())
    with rasterio.open(src) as ds:  # the footprint is the image's outline in lon/lat
        box = transform_bounds(ds.crs, "EPSG:4490", *ds.bounds, densify_pts=21)
    assert np.allclose((w, s, east, n), box, atol=1e-6, rtol=0)
    r = runner.invoke(cli, ["imagery", "add", str(src), "--name", "flight-1"], env=e)
    assert r.exit_code == 2 and "exists already" in r.output
    assert len(list((tmp_path / "data" / "imagery").glob("*"))) == 1
    r = runner.invoke(cli, ["imagery", "list"], env=e)
    assert r.exit_code == 0 and r.output.startswith("flight-1\torthophoto\t2026-06-01\t0.5 m")
    r = runner.invoke(cli, ["imagery", "remove", "flight-1"], env=e)
    assert r.exit_code == 0 and not Path(path).exists()
    r = runner.invoke(cli, ["imagery", "remove", "flight-1"], env=e)
    assert r.exit_code == 2 and "no imagery named 'flight-1'" in r.output


def test_cli_prunes_old_uploads_only(tmp_path: Path) -> None:
    import os
    import time

    e = {"GRIDGOV_DATA_DIR": str(tmp_path / "data")}
    inbox = tmp_path / "data" / "inbox"
    r = runner.invoke(cli, ["imagery", "prune-uploads"], env=e)  # no uploads yet: fine
    assert r.exit_code == 0 and "0 upload(s) deleted" in r.output
    uploads = inbox / "uploads"
    uploads.mkdir(parents=True)
    old, new, part = uploads / "a1.tif", uploads / "b2.tif", uploads / ".part-c3"
    flight = inbox / "flights" / "before.tif"  # put in the inbox by hand: not an upload
    flight.parent.mkdir()
    outside = tmp_path / "keep.tif"
    for f in (old, new, part, flight, outside):
        f.write_bytes(b"x" * 1000)
    (uploads / "link.tif").symlink_to(outside)
    long_ago = time.time() - 40 * 86400
    for f in (old, part, flight, outside):
        os.utime(f, (long_ago, long_ago))
    r = runner.invoke(cli, ["imagery", "prune-uploads", "--dry-run"], env=e)
    assert r.exit_code == 0, r.output
    assert "would delete a1.tif" in r.output and "2 upload(s) to delete" in r.output
    assert old.exists() and part.exists()
    r = runner.invoke(cli, ["imagery", "prune-uploads", "--older-than", "30"], env=e)
    assert r.exit_code == 0 and "2 upload(s) deleted" in r.output and "1 kept" in r.output
    assert not old.exists() and not part.exists()
    assert new.exists() and flight.exists() and outside.exists()
    assert (uploads / "link.tif").is_symlink()
    r = runner.invoke(cli, ["imagery", "prune-uploads", "--older-than", "-1"], env=e)
    assert r.exit_code == 2  # a clear refusal, nothing deleted
    assert new.exists()


@pytest.fixture
def site(fresh_db_url: str, tmp_path: Path, served: Any) -> Any:
    from api.app import create_app
    from api.settings import Settings

    s = Settings(env="test", data_dir=tmp_path / "data", log_json=False,
                 GRIDGOV_PHOTOS_DIR=tmp_path / "photos")
    src = write(tmp_path / "ortho.tif", size=1024)
    with db.connect(fresh_db_url) as conn:
        imagery.add(conn, s.imagery_dir, src, "ortho")
        conn.commit()
    with served(create_app(s, fresh_db_url)) as base:
        yield base, src, s, fresh_db_url


def test_tiles_give_the_source_pixels_204_outside_400_for_bad_addresses(site: Any) -> None:
    base, src, _s, _url = site
    with httpx.Client(base_url=base, timeout=30) as c, rasterio.open(src) as ds:
        for (col, row), z in [((40, 72), 18), ((300, 200), 19), ((470, 30), 17)]:
            gx, gy, lon, lat = ground(col, row)
            want = tuple(next(ds.sample([(gx, gy)])))
            t, px, py = tile_at(lon, lat, z)
            for path in (f"/tiles/imagery/{t.z}/{t.x}/{t.y}.png",
                         f"/tiles/imagery/ortho/{t.z}/{t.x}/{t.y}.png"):
                r = c.get(path)
                assert r.status_code == 200 and r.headers["content-type"] == "image/png"
                assert tuple(rgba(r.content)[py, px][:3]) == want, (path, col, row)
        t, _, _ = tile_at(*ground(100, 100)[2:], 18)
        r = c.get(f"/tiles/imagery/{t.z}/{t.x}/{t.y}.jpg")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        r = c.get(f"/tiles/imagery/{t.z}/{t.x}/{t.y}.png")
        etag = r.headers["etag"]
        assert r.headers["cache-control"].startswith("public")
        assert c.get(r.url.path, headers={"If-None-Match": etag}).status_code == 304
        assert c.get("/tiles/imagery/18/0/0.png").status_code == 204
        assert c.get("/tiles/imagery/ortho/10/0/0.png").status_code == 204
        for bad, word in [("/tiles/imagery/abc/0/0.png", "z"), ("/tiles/imagery/1/5/0.png",
                                                                 "column 5"),
                          ("/tiles/imagery/23/0/0.png", "zoom 23"),
                          ("/tiles/imagery/1/0/0.gif", "png, jpg or webp"),
                          ("/tiles/imagery/1/0/0", "format"),
                          ("/tiles/imagery/ortho/-1/0/0.png", "z"),
                          ("/tiles/changes/x/1/0/0.png", "run_id")]:
            r = c.get(bad)
            assert r.status_code == 400, bad
            assert r.headers["content-type"] == "application/problem+json"
            assert word in r.json()["detail"], (bad, r.json())
        r = c.get("/tiles/imagery/nope/1/0/0.png")
        assert r.status_code == 404 and "nope" in r.json()["detail"]
        assert c.get("/tiles/changes/999/1/0/0.png").status_code == 404
        # names and run ids that PostgreSQL would choke on never reach it
        for path in ("/tiles/imagery/a%20b%27;/1/0/0.png", "/tiles/imagery/" + "n" * 300 + ".tif",
                     "/tiles/changes/4294967296/mask.tif"):
            r = c.get(path)
            assert r.status_code == 404 and r.headers["content-type"] == (
                "application/problem+json"), path


def test_tilejson_the_registry_list_and_a_missing_file(site: Any) -> None:
    base, _src, _s, _url = site
    with httpx.Client(base_url=base, timeout=30) as c:
        tj = c.get("/tiles/imagery/tilejson.json").json()
        assert tj["tilejson"] == "3.0.0" and tj["maxzoom"] == 18
        assert tj["tiles"] == [f"{base}/tiles/imagery/{{z}}/{{x}}/{{y}}.png"]
        with rasterio.open(_src) as ds:
            box = transform_bounds(ds.crs, "EPSG:4490", *ds.bounds, densify_pts=21)
        assert np.allclose(tj["bounds"], box, atol=1e-6, rtol=0)
        one = c.get("/tiles/imagery/ortho/tilejson.json").json()
        assert one["tiles"] == [f"{base}/tiles/imagery/ortho/{{z}}/{{x}}/{{y}}.png"]
        listed = c.get("/tiles/imagery").json()["imagery"]
        assert [i["name"] for i in listed] == ["ortho"]
        assert listed[0]["cog"] == f"{base}/tiles/imagery/ortho.tif"
        # a file removed behind the registry's back: a 404 naming it, not a 500
        with db.connect(_url) as conn:
            imagery.lookup(conn, "ortho").path.unlink()
        t = tile_at(*ground(100, 100)[2:], 18)[0]
        for path in (f"/tiles/imagery/ortho/{t.z}/{t.x}/{t.y}.png", "/tiles/imagery/ortho.tif"):
            r = c.get(path)
            assert r.status_code == 404 and "'ortho' is missing" in r.json()["detail"], path


def test_the_cog_is_served_with_ranges_and_gdal_reads_it_remotely(site: Any) -> None:
    base, _src, s, url = site
    with db.connect(url) as conn:
        path = imagery.lookup(conn, "ortho").path
    size = path.stat().st_size
    with httpx.Client(base_url=base, timeout=30) as c:
        whole = c.get("/tiles/imagery/ortho.tif")
        assert whole.status_code == 200 and whole.content == path.read_bytes()
        assert whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["content-type"] == "image/tiff"
        part = c.get("/tiles/imagery/ortho.tif", headers={"Range": "bytes=100-1123"})
        assert part.status_code == 206 and part.content == path.read_bytes()[100:1124]
        assert part.headers["content-range"] == f"bytes 100-1123/{size}"
        head = c.head("/tiles/imagery/ortho.tif")
        assert head.status_code == 200 and int(head.headers["content-length"]) == size
        assert c.get("/tiles/imagery/ortho.tif",
                     headers={"Range": f"bytes={size + 10}-{size + 20}"}).status_code == 416
        assert c.get("/tiles/imagery/nope.tif").status_code == 404
    gdal_env = {**os.environ, "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
                "CPL_VSIL_CURL_USE_HEAD": "NO", "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}
    out = subprocess.run(["gdalinfo", "-json", f"/vsicurl/{base}/tiles/imagery/ortho.tif"],
                         capture_output=True, text=True, env=gdal_env, timeout=60, check=True)
    info = json.loads(out.stdout)
    assert info["size"] == [1024, 1024] and len(info["bands"]) == 3
    assert info["bands"][0]["overviews"] and "4548" in info["coordinateSystem"]["wkt"]
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"


def test_a_mask_committed_through_changes_store_is_registered_and_tiled(
        fresh_db_url: str, tmp_path: Path, served: Any) -> None:
    from api.app import create_app
    from api.changes_store import commit
    from api.settings import Settings
    from layers.errors import LayersError

    s = Settings(env="test", data_dir=tmp_path / "data", log_json=False,
                 GRIDGOV_PHOTOS_DIR=tmp_path / "photos")
    before, after = write(tmp_path / "before.tif"), write(tmp_path / "after.tif")
    values = np.zeros((1, 256, 256), np.uint8)
    values[0, :128, 128:], values[0, 128:, :128], values[0, 128:, 128:] = 1, 2, 3
    mask = write(tmp_path / "mask.tif", count=1, size=256, values=values)
    doc = {"type": "FeatureCollection", "features": [],
           "properties": {"method": "cva", "with_dsm": False}}
    bad = write(tmp_path / "rgb_mask.tif")
    with pytest.raises(LayersError, match="a change mask is one uint8 band"):
        commit(s, fresh_db_url, before, after, doc, mask=bad)
    with psycopg.connect(fresh_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM change_runs").fetchone()[0] == 0
    assert not list(s.imagery_dir.glob("*"))
    result = commit(s, fresh_db_url, before, after, doc, mask=mask)
    run = result["run"]
    assert result["mask"] == f"run-{run}-mask"
    with psycopg.connect(fresh_db_url) as conn:
        kind, run_id, path = conn.execute("SELECT kind, run_id, path FROM imagery").fetchone()
    assert (kind, run_id) == ("change_mask", run) and Path(path).parent == s.imagery_dir
    with served(create_app(s, fresh_db_url)) as base, httpx.Client(base_url=base,
                                                                   timeout=30) as c:
        for (col, row), colour in [((200, 60), (230, 25, 25)), ((60, 200), (30, 100, 240)),
                                   ((200, 200), (250, 210, 0))]:
            t, px, py = tile_at(*ground(col, row)[2:], 18)
            r = c.get(f"/tiles/changes/{run}/{t.z}/{t.x}/{t.y}.png")
            assert r.status_code == 200
            assert tuple(rgba(r.content)[py, px][:3]) == colour
        t, px, py = tile_at(*ground(40, 40)[2:], 20)
        r = c.get(f"/tiles/changes/{run}/{t.z}/{t.x}/{t.y}.png")
        assert r.status_code == 204  # no change there
        tj = c.get(f"/tiles/changes/{run}/tilejson.json").json()
        assert tj["tiles"] == [f"{base}/tiles/changes/{run}/{{z}}/{{x}}/{{y}}.png"]
        part = c.get(f"/tiles/changes/{run}/mask.tif", headers={"Range": "bytes=0-15"})
        assert part.status_code == 206 and part.content == Path(path).read_bytes()[:16]
        # the mask is no orthophoto: the mosaic does not draw it
        t, _, _ = tile_at(*ground(200, 60)[2:], 18)
        assert c.get(f"/tiles/imagery/{t.z}/{t.x}/{t.y}.png").status_code == 204
