"""Change detection over files: generated pairs of the demo town, scored against truth.

Every pair's later epoch is in another CRS (UTM 50N vs the town's Gauss-Krüger zone),
another resolution (0.5 m vs 0.4 m), a moved extent with an irregular footprint, a
sub-metre shift, another exposure and another season (ripened and ploughed fields).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import CRS, Transformer

from gis.changes_eval import Scores, evaluate
from gis.changes_raster import Detection, detect_changes, to_geojson
from gis.errors import GisError, NoOverlapError, RasterInputError
from seed_data.orthophoto import PairInfo, write_pair
from seed_data.town import Town

SMALL = (700.0, 700.0)
RECALL, PRECISION = 0.9, 0.8


@pytest.fixture(scope="module")
def pairs(demo_town: Town, tmp_path_factory: pytest.TempPathFactory) -> dict[int, PairInfo]:
    """The demo pair (seed 1, 2 km x 1.5 km at 0.4 m) and two smaller scenes."""
    out = {}
    for seed, size in ((1, (2000.0, 1500.0)), (2, (800.0, 800.0)), (3, (800.0, 800.0))):
        out[seed] = write_pair(demo_town, tmp_path_factory.mktemp(f"pair{seed}"), seed=seed,
                               size_m=size)
    return out


@pytest.fixture(scope="module")
def small(demo_town: Town, tmp_path_factory: pytest.TempPathFactory) -> PairInfo:
    return write_pair(demo_town, tmp_path_factory.mktemp("small"), seed=4, size_m=SMALL)


def _truth(info: PairInfo, crs_wkt: str, kind: str) -> list[shapely.Geometry]:
    doc = json.loads(info.truth.read_text())
    tr = Transformer.from_crs(CRS.from_epsg(4326), CRS.from_wkt(crs_wkt), always_xy=True)
    return [
        shapely.transform(shapely.geometry.shape(f["geometry"]),
                          lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        for f in doc["features"] if f["properties"]["kind"] == kind
    ]


def _score(det: Detection, info: PairInfo, kind: str = "new_structure") -> Scores:
    return evaluate([o.geometry for o in det.objects if o.kind == kind],
                    _truth(info, det.crs, kind), kind)


def _run(info: PairInfo, dsm: bool, **kw: object) -> Detection:
    extra = (info.before_dsm, info.after_dsm) if dsm else ()
    return detect_changes(info.before, info.after, *extra, **kw)  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("dsm", [True, False], ids=["with-dsm", "colour-only"])
def test_new_structures_are_found_and_crops_are_not(pairs: dict[int, PairInfo], seed: int,
                                                    dsm: bool) -> None:
    info = pairs[seed]
    assert info.counts.get("crop_ripened", 0) + info.counts.get("ploughed", 0) >= 1
    det = _run(info, dsm)
    s = _score(det, info)
    assert s.truth >= 4
    assert s.recall >= RECALL, s.row()
    assert s.precision >= PRECISION, s.row()
    cues = {o.cue for o in det.objects if o.kind == "new_structure"}
    assert cues <= ({"height", "height+colour", "colour"} if dsm else {"colour"})
    if dsm:
        assert det.plan.dsm_shift == pytest.approx(1.3, abs=0.2)  # the later DSM's bias
        assert {"height", "height+colour"} & cues
    # crops changed over far more ground than the structures: all "other"
    crop = _truth(info, det.crs, "other")
    flagged = shapely.union_all([o.geometry for o in det.objects if o.kind == "new_structure"])
    assert flagged.intersection(shapely.union_all(crop)).area < 0.05 * shapely.union_all(
        crop).area


@pytest.mark.slow
def test_plain_differencing_baseline_scores_worse(pairs: dict[int, PairInfo]) -> None:
    info = pairs[2]
    ours = _score(_run(info, False), info)
    base = _score(_run(info, False, method="difference"), info)
    assert base.precision < ours.precision
    assert base.f1 < ours.f1


def test_dask_threads_and_one_thread_give_the_same_answer(small: PairInfo) -> None:
    from distributed import Client, LocalCluster
    from rasterio.env import get_gdal_config

    from gis.changes_raster import GDAL_CACHE_MB

    threads = to_geojson(_run(small, True, workers=2, block=256))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        dask = to_geojson(_run(small, True, scheduler=cluster.scheduler_address, block=256))
        with Client(cluster.scheduler_address) as client:  # workers bounded as the CLI is
            index = client.run(get_gdal_config, "GDAL_BAND_BLOCK_CACHE")
            cache = client.run(get_gdal_config, "GDAL_CACHEMAX")
    assert list(index.values()) == ["HASHSET", "HASHSET"]
    assert {int(v) >> 20 for v in cache.values()} == {GDAL_CACHE_MB}
    assert dask == threads
    assert to_geojson(_run(small, True, workers=1, block=256)) == threads  # one thread too
    assert any(f["properties"]["kind"] == "new_structure" for f in dask["features"])


def test_objects_crossing_block_edges_are_merged(small: PairInfo) -> None:
    whole = _run(small, True, block=4096)  # one tile
    tiled = _run(small, True, block=128)  # seams every 51 m
    assert len(whole.plan.tiles()) == 1 and len(tiled.plan.tiles()) > 16

    def key(det: Detection) -> list[tuple[str, float]]:
        return sorted((o.kind, round(o.area_m2)) for o in det.objects if o.kind != "other")

    assert key(tiled) == key(whole)
    c0, r0 = tiled.plan.work[:2]
    crossing = [
        o for o in tiled.objects if o.kind == "new_structure"
        and (int((o.pixel_geometry.bounds[0] - c0) // 128)
             != int((o.pixel_geometry.bounds[2] - c0 - 1e-9) // 128)
             or int((o.pixel_geometry.bounds[1] - r0) // 128)
             != int((o.pixel_geometry.bounds[3] - r0 - 1e-9) // 128))
    ]
    assert crossing, "no structure crosses a seam: the test proves nothing"
    for o in crossing:
        assert o.geometry.geom_type == "Polygon"  # one piece, not one per tile
    # same outlines, to the pixel
    a = shapely.union_all([o.geometry for o in whole.objects if o.kind == "new_structure"])
    b = shapely.union_all([o.geometry for o in tiled.objects if o.kind == "new_structure"])
    assert a.symmetric_difference(b).area < 0.01 * a.area


def test_striped_and_tiled_files_give_the_same_result(demo_town: Town, small: PairInfo,
                                                      tmp_path: Path) -> None:
    striped = write_pair(demo_town, tmp_path, seed=4, size_m=SMALL, striped=True)
    with rasterio.open(striped.before) as s, rasterio.open(small.before) as t:
        assert not s.profile.get("tiled") and t.profile["tiled"]
    assert to_geojson(_run(striped, False, block=512)) == to_geojson(
        _run(small, False, block=512))


def test_uint16_with_alpha(demo_town: Town, small: PairInfo, tmp_path: Path) -> None:
    info = write_pair(demo_town, tmp_path, seed=4, size_m=SMALL, dtype="uint16", alpha=True)
    with rasterio.open(info.after) as src:
        assert src.count == 4 and src.dtypes[0] == "uint16" and src.nodata is None
        assert src.read(4).min() == 0  # outside the flight
    det = _run(info, False)
    s = _score(det, info)
    assert s.recall >= RECALL and s.precision >= PRECISION, s.row()
    ref = _run(small, False)
    assert len([o for o in det.objects if o.kind == "new_structure"]) == len(
        [o for o in ref.objects if o.kind == "new_structure"])
    # nothing detected outside the later image's footprint (alpha 0 there)
    with rasterio.open(info.after) as src:
        t = Transformer.from_crs(src.crs, CRS.from_wkt(det.crs), always_xy=True)
        b = src.bounds
        xs, ys = t.transform([b.left, b.right, b.right, b.left], [b.bottom, b.bottom, b.top,
                                                                   b.top])
    extent = shapely.Polygon(zip(xs, ys, strict=True))
    assert all(extent.contains(o.geometry.centroid) for o in det.objects)


def test_mask_is_a_cloud_optimised_geotiff(small: PairInfo, tmp_path: Path) -> None:
    det = _run(small, True, mask_out=tmp_path / "mask.tif")
    with rasterio.open(tmp_path / "mask.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.overviews(1)
        mask = src.read(1)
        assert set(np.unique(mask)) <= {0, 1, 2, 3}
        new_px = int((mask == 1).sum())
    area = sum(o.area_m2 for o in det.objects if o.kind == "new_structure")
    assert new_px * det.plan.pixel_area_m2 == pytest.approx(area, rel=0.02)


def test_geojson_is_crs84(small: PairInfo) -> None:
    doc = to_geojson(_run(small, False))
    lon, lat = shapely.geometry.shape(doc["features"][0]["geometry"]).centroid.coords[0]
    assert 117 < lon < 119 and 36 < lat < 38
    props = doc["features"][0]["properties"]
    assert {"kind", "area_m2", "score", "cue"} <= props.keys()
    assert "colour change only" in doc["properties"]["accuracy_note"]


def _moved(src_path: Path, dst: Path, dx: float) -> Path:
    shutil.copy(src_path, dst)
    with rasterio.open(dst, "r+") as ds:
        ds.transform = Affine.translation(dx, 0) @ ds.transform
    return dst


def test_pairs_that_do_not_overlap_are_refused(small: PairInfo, tmp_path: Path) -> None:
    far = _moved(small.after, tmp_path / "far.tif", 50_000.0)
    with pytest.raises(NoOverlapError, match="does not overlap"):
        detect_changes(small.before, far)
    far_dsm = _moved(small.after_dsm, tmp_path / "far_dsm.tif", 50_000.0)
    with pytest.raises(NoOverlapError, match="after DSM"):
        detect_changes(small.before, small.after, small.before_dsm, far_dsm)


def test_unusable_inputs_are_refused(small: PairInfo, tmp_path: Path) -> None:
    with pytest.raises(RasterInputError, match="1 band"):
        detect_changes(small.before, small.before_dsm)
    with pytest.raises(RasterInputError, match="not a readable raster"):
        (tmp_path / "notes.txt").write_text("not an image")
        detect_changes(small.before, tmp_path / "notes.txt")
    with pytest.raises(RasterInputError, match="both DSMs"):
        detect_changes(small.before, small.after, small.before_dsm)
    geo = tmp_path / "geographic.tif"
    with rasterio.open(small.before) as src:
        profile = src.profile
        profile.update(crs="EPSG:4490", transform=Affine(4e-6, 0, 118.0, 0, -4e-6, 36.8))
        with rasterio.open(geo, "w", **profile) as dst:
            dst.write(src.read())
    with pytest.raises(RasterInputError, match="geographic"):
        detect_changes(geo, small.after)
    floaty = tmp_path / "float.tif"
    with rasterio.open(small.before) as src:
        profile = src.profile
        profile.update(dtype="float32")
        with rasterio.open(floaty, "w", **profile) as dst:
            dst.write(src.read().astype("float32"))
    with pytest.raises(RasterInputError, match="uint8 or uint16"):
        detect_changes(floaty, small.after)
    assert issubclass(RasterInputError, GisError)


def test_another_crs_resolution_and_a_shift_still_outline_the_right_ground(
        small: PairInfo) -> None:
    with rasterio.open(small.before) as b, rasterio.open(small.after) as a:
        assert b.crs != a.crs and b.res != a.res  # UTM 0.5 m onto Gauss-Krüger 0.4 m
    det = _run(small, True)
    truth = _truth(small, det.crs, "new_structure")
    found = [o.geometry for o in det.objects if o.kind == "new_structure"]
    assert len(found) == len(truth)
    for t in truth:
        best = max(found, key=lambda g: g.intersection(t).area)
        iou = best.intersection(t).area / best.union(t).area
        assert iou > 0.6, iou  # the 0.65 m georeferencing error and resampling blur edges
