"""Change detection keeps what it finds on disk, not in memory (#5: peak memory must not
grow with the image). Objects are merged and written to the spool as the tiles come;
tile results are let go as soon as they are merged; the GeoJSON and the mask are
written from the spool."""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import rasterio

import gis.changes_raster as cr
from gis.changes_raster import (
    GDAL_CACHE_MB,
    Merger,
    close_datasets,
    detect_changes,
    iter_tiles,
    plan_detection,
    to_geojson,
    write_geojson,
    write_mask,
)
from gis.changes_spool import ObjectSpool
from seed_data.orthophoto import PairInfo, write_pair
from seed_data.town import Town


@pytest.fixture(scope="module")
def pair(demo_town: Town, tmp_path_factory: pytest.TempPathFactory) -> PairInfo:
    return write_pair(demo_town, tmp_path_factory.mktemp("stream"), seed=5,
                      size_m=(900.0, 700.0))


@pytest.fixture(scope="module")
def plan(pair: PairInfo) -> cr.Plan:
    try:
        return plan_detection(pair.before, pair.after, pair.before_dsm, pair.after_dsm,
                              block=128)
    finally:
        close_datasets()


def test_objects_leave_memory_as_soon_as_they_are_complete(plan: cr.Plan,
                                                           tmp_path: Path) -> None:
    """Tiles in row order: the merger holds only pieces still waiting for a neighbour,
    the objects of finished rows are already in the spool, and at the end nothing is
    held. The old merge held every piece of every tile until the last one came."""
    merger = Merger(plan, ObjectSpool(tmp_path))
    held, came, written = [], [], []  # after each tile: pieces held, pieces come, objects out
    try:
        for spec in plan.tiles():
            res = cr.detect_tile(spec)
            came.append((came[-1] if came else 0) + len(res.pieces))
            merger.add(res)
            held.append(merger.pending)
            written.append(len(merger.spool))
            # what waits holds no outline in memory: each is parked on disk
            assert len(merger.parking) == merger.pending
            assert all(p.geom is None for p in merger.pieces.values())
    finally:
        close_datasets()
    parked = merger.parking.path
    assert merger.parking.written > 0 and parked.exists()
    spool = merger.close()
    assert len(merger.parking) == 0 and not parked.exists()
    assert merger.rows >= 6 and merger.cols >= 6 and came[-1] > 60
    # the old merge held everything that came (held == came); this one a fraction of it
    assert sum(held) < 0.4 * sum(came)
    assert max(held) < 0.6 * came[-1]
    # most objects were written before the last row of tiles came in
    assert written[-merger.cols - 1] > len(spool) / 2
    assert merger.pending == 0 and not merger.strips  # nothing left behind
    assert len(spool) > 0


def test_parked_outlines_come_back_exactly_once(tmp_path: Path) -> None:
    """The merge's waiting outlines wait on disk, and come back as they were (WKB)."""
    import shapely

    from gis.changes_spool import Parking

    parking = Parking(tmp_path)
    field = shapely.Point(0.0, 0.0).buffer(300.0, quad_segs=2_000)  # 8,000 vertices
    shed = shapely.box(10.25, 20.5, 30.125, 40.0625)
    parking.put((0, 1, 7), field)
    parking.put((3, 2, 1), shed)
    with pytest.raises(KeyError, match="already parked"):
        parking.put((0, 1, 7), shed)
    assert len(parking) == 2 and (0, 1, 7) in parking
    assert parking.written == len(shapely.to_wkb(field)) + len(shapely.to_wkb(shed))
    assert shapely.equals_exact(parking.take((3, 2, 1)), shed, tolerance=0)
    back = parking.take((0, 1, 7))
    assert np.array_equal(shapely.get_coordinates(back), shapely.get_coordinates(field))
    assert len(parking) == 0
    with pytest.raises(KeyError):
        parking.take((0, 1, 7))
    parking.close()
    assert not parking.path.exists()


def test_the_spool_keeps_few_objects_waiting(tmp_path: Path) -> None:
    """Objects wait in memory for at most BATCH objects or BATCH_BYTES of outlines: a
    batch of 500 held ~1 MB of outlines, writing it took ~1 MB more, and a write set
    the 1 GB bench run's peak. A field-sized outline is written as soon as it comes.
    All are read back in rank order, whole."""
    import shapely

    from gis.changes_spool import BATCH, BATCH_BYTES

    def obj(k: int, vertices: int) -> cr.ChangeObject:
        ring = shapely.Point(k * 100.0, 0.0).buffer(40.0, quad_segs=max(1, vertices // 4))
        return cr.ChangeObject(kind="other", score=0.5, cue="colour", area_m2=ring.area,
                               geometry=ring, pixel_geometry=ring,
                               measures={"roof_share": 0.0})

    spool = ObjectSpool(tmp_path)
    sizes = [16] * 300 + [20_000] + [16] * 10 + [4_000] * 20  # small, one field, large
    waiting = []
    for k, n in enumerate(sizes):
        spool.add(k, obj(k, n))
        waiting.append(spool.waiting)
    assert max(w[0] for w in waiting) == BATCH - 1  # it fills up to BATCH, then writes
    assert max(w[1] for w in waiting) < BATCH_BYTES
    assert waiting[300] == (0, 0)  # the field's outline (0.6 MB) went straight to disk
    back = list(spool)
    assert len(back) == len(sizes) == len(spool)
    assert [round(o.geometry.centroid.x) for o in back] == [k * 100 for k in range(len(sizes))]
    assert [len(o.geometry.exterior.coords) for o in back] == [
        len(obj(k, n).geometry.exterior.coords) for k, n in enumerate(sizes)]
    spool.close()


def test_the_merge_does_not_depend_on_the_order_tiles_come_in(plan: cr.Plan,
                                                              tmp_path: Path) -> None:
    """Threads and Dask workers finish tiles in any order; the objects and their order
    are the same."""
    try:
        results = [cr.detect_tile(s) for s in plan.tiles()]
    finally:
        close_datasets()

    def objects(order: list[cr.TileResult], name: str) -> list[tuple[object, ...]]:
        merger = Merger(plan, ObjectSpool(tmp_path / name))
        for res in order:
            merger.add(res)
        return [(o.kind, o.score, o.area_m2, o.geometry.wkb) for o in merger.close()]

    rng = np.random.default_rng(7)
    shuffled = [results[i] for i in rng.permutation(len(results))]
    assert objects(shuffled, "a") == objects(results[::-1], "b") == objects(results, "c")
    with pytest.raises(ValueError, match="merged twice"):
        merger = Merger(plan, ObjectSpool(tmp_path / "d"))
        merger.add(results[0])
        merger.add(results[0])
    with pytest.raises(RuntimeError, match="tiles missing"):
        merger = Merger(plan, ObjectSpool(tmp_path / "e"))
        merger.add(results[0])
        merger.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_tile_results_are_let_go_once_taken(plan: cr.Plan, workers: int) -> None:
    """The pool runs at most two tiles per thread ahead of the consumer, and keeps no
    result once it is handed over (the old code kept every future, and so every tile's
    outlines and edge strips, to the end)."""
    alive: list[weakref.ref[cr.TileResult]] = []
    most = 0
    try:
        for res in iter_tiles(plan, workers=workers):
            alive.append(weakref.ref(res))
            del res
            gc.collect()
            most = max(most, sum(r() is not None for r in alive))
    finally:
        close_datasets()
    assert len(alive) == len(plan.tiles()) > 20
    assert most <= 1  # only the one being merged; none piles up


def test_geojson_is_streamed_byte_for_byte_and_the_mask_comes_from_the_spool(
        pair: PairInfo, tmp_path: Path) -> None:
    with detect_changes(pair.before, pair.after, pair.before_dsm, pair.after_dsm,
                        block=256, spool_dir=tmp_path, mask_out=tmp_path / "mask.tif") as det:
        spool = det.objects
        assert isinstance(spool, ObjectSpool)
        assert spool.path.parent == tmp_path and (spool.path / "objects.sqlite").is_file()
        doc = to_geojson(det)
        out = write_geojson(det, tmp_path / "changes.geojson")
        assert out.read_text(encoding="utf-8") == json.dumps(doc, ensure_ascii=False) + "\n"
        assert len(doc["features"]) == len(spool) > 5
        assert det.counts() == {k: sum(f["properties"]["kind"] == k for f in doc["features"])
                                for k in det.counts()}
        assert sum(det.counts().values()) == len(spool)
        # sequence access reads the same objects, in the same order
        assert [o.area_m2 for o in spool[:3]] == [f["properties"]["area_m2"]
                                                  for f in doc["features"][:3]]
        assert spool[-1].area_m2 == doc["features"][-1]["properties"]["area_m2"]
        with pytest.raises(IndexError):
            spool[len(spool)]
        # the mask, block by block from the spool's index, matches the objects
        new = [o for o in spool if o.kind == "new_structure"]
        assert new
        with rasterio.open(tmp_path / "mask.tif") as src:
            mask = src.read(1)
        c0, r0 = plan_work_origin(det)
        for o in new:
            x, y = o.pixel_geometry.representative_point().coords[0]
            assert mask[int(y) - r0, int(x) - c0] == 1
        again = write_mask(det.plan, spool, tmp_path / "again.tif")
        with rasterio.open(again) as src:
            assert np.array_equal(src.read(1), mask)
    assert spool.closed and not spool.path.exists()  # the scratch file is gone
    assert list(tmp_path.glob("gridgov-changes-*")) == []


def plan_work_origin(det: cr.Detection) -> tuple[int, int]:
    c0, r0, _w, _h = det.plan.work
    return c0, r0


def test_a_failed_run_leaves_no_scratch_file(pair: PairInfo, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = cr.detect_tile

    def failing(spec: cr.TileSpec) -> cr.TileResult:
        calls["n"] += 1
        if calls["n"] == 5:
            raise rasterio.errors.RasterioIOError("read failed half way")
        return real(spec)

    monkeypatch.setattr(cr, "detect_tile", failing)
    with pytest.raises(rasterio.errors.RasterioIOError, match="half way"):
        detect_changes(pair.before, pair.after, block=128, workers=1, spool_dir=tmp_path)
    assert calls["n"] == 5
    assert list(tmp_path.iterdir()) == []


MALLINFO = r"""
import ctypes, ctypes.util, sys

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
"""  # glibc's heap statistics, for the probes below (each in a process of its own)

HEAP_PROBE = MALLINFO + r"""
from gis.changes_raster import bound_heap

libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
bounded = sys.argv[1] == "bounded" and bound_heap()
libc.free(libc.malloc(4 << 20))  # freeing a 4 MB mapping raises glibc's own threshold
before = libc.mallinfo2().hblks
p = libc.malloc(768 * 1024)  # a GDAL block of a 512 x 512 RGB tile
print(int(bounded), libc.mallinfo2().hblks - before)
libc.free(p)
"""


def test_the_heap_gives_freed_blocks_back() -> None:
    """After bound_heap, a 768 kB block is a mapping of its own (returned whole when
    freed) even after freeing a 4 MB block, which makes glibc's own malloc raise its
    threshold above it (the block would then come from the heap that fragments)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", HEAP_PROBE, "bounded"], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[2])
    bounded, mapped = map(int, out.stdout.split())
    assert (bounded, mapped) == (1, 1)


CACHE_PROBE = r"""
import ctypes, sys
from pathlib import Path
import rasterio
from gis.changes_raster import bound_memory

with rasterio.open(sys.argv[1]) as src:  # GDAL's cache is in use (its default size)
    src.read(1, window=((0, 64), (0, 64)))
said = bound_memory()
lib = next(line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
           if "/libgdal" in line)  # the GDAL rasterio reads with
gdal = ctypes.CDLL(lib)
gdal.GDALGetCacheMax64.restype = ctypes.c_int64
print(said >> 20, gdal.GDALGetCacheMax64() >> 20)
"""


@pytest.mark.parametrize("env, expected", [(None, GDAL_CACHE_MB), ("100", 100)])
def test_a_detecting_process_bounds_gdals_block_cache(
        pair: PairInfo, env: str | None, expected: int) -> None:
    """bound_memory (the CLI, the process's worker and the bench call it) holds GDAL's
    block cache to GDAL_CACHE_MB, even after GDAL has started with its default (5 % of
    the machine's memory, 1.2 GB here); an operator's GDAL_CACHEMAX is kept."""
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if k != "GDAL_CACHEMAX"}
    if env is not None:
        environ["GDAL_CACHEMAX"] = env
    out = subprocess.run([sys.executable, "-c", CACHE_PROBE, str(pair.before)],
                         capture_output=True, text=True, check=True, env=environ,
                         cwd=Path(__file__).resolve().parents[2])
    said, gdal = map(int, out.stdout.split())
    assert (said, gdal) == (expected, expected)


INDEX_PROBE = MALLINFO + r"""
import rasterio
from gis.changes_raster import bound_memory

if sys.argv[2] == "bounded":
    bound_memory()
with rasterio.open(sys.argv[1]) as src:
    by, bx = src.block_shapes[0]
    src.read(1, window=((0, by), (0, bx)))  # the band's index of cached blocks is set up
    before = libc.mallinfo2().uordblks
    n = 0
    for row in range(0, src.height, 64 * by):  # one block in every 64 x 64 of them
        for col in range(0, src.width, 64 * bx):
            src.read(1, window=((row, row + by), (col, col + bx)))
            n += 1
    print(n, libc.mallinfo2().uordblks - before)
"""


@pytest.mark.parametrize("mode, operator, grows", [
    ("bounded", None, False),  # what the CLI, the process's worker and the bench do
    ("default", None, True),  # GDAL's default: the probe sees the index grow
    ("bounded", "ARRAY", True),  # an operator's GDAL_BAND_BLOCK_CACHE is kept
])
def test_the_block_index_does_not_grow_with_the_image(
        tmp_path: Path, mode: str, operator: str | None, grows: bool) -> None:
    """After bound_memory, a band's index of its cached blocks holds only those blocks.
    GDAL's default (an array of a pointer per block, allocated 64 x 64 blocks at a time
    and freed only on close) grew with the area read: the resident size crept over a
    run, more over the 4 GB bench input than over the 1 GB one. The probe reads one
    16 px block in each 64 x 64 blocks of a sparse 15,360 px square (225 reads; the
    cached blocks themselves ~0.1 MB)."""
    import os
    import subprocess
    import sys

    from affine import Affine

    path = tmp_path / "wide.tif"
    with rasterio.open(path, "w", driver="GTiff", width=15360, height=15360, count=1,
                       dtype="uint8", tiled=True, blockxsize=16, blockysize=16,
                       sparse_ok=True, crs="EPSG:4547",
                       transform=Affine(0.4, 0, 500000, 0, -0.4, 3500000)) as dst:
        dst.write(np.ones((1, 16, 16), np.uint8), window=((0, 16), (0, 16)))
    environ = {k: v for k, v in os.environ.items() if k != "GDAL_BAND_BLOCK_CACHE"}
    if operator is not None:
        environ["GDAL_BAND_BLOCK_CACHE"] = operator
    out = subprocess.run([sys.executable, "-c", INDEX_PROBE, str(path), mode],
                         capture_output=True, text=True, check=True, env=environ,
                         cwd=Path(__file__).resolve().parents[2])
    reads, grown = map(int, out.stdout.split())
    assert reads == 225
    index = reads * 64 * 64 * 8  # bytes: a 32 kB piece of the array per read
    if grows:
        assert grown >= index
    else:
        assert grown < index / 20


CUE_FIELDS = ("valid", "colour", "roof_new", "roof_gone", "gain", "loss", "magnitude", "dz")


def _traced_peak(fn: Callable[[], object]) -> tuple[object, int]:
    """``fn()`` and the most memory Python's allocators held above the start while it ran."""
    import tracemalloc

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("with_dsm", [False, True])
def test_a_tile_works_its_pixels_strip_by_strip(pair: PairInfo, with_dsm: bool) -> None:
    """The per-pixel cues of a window are the same worked in strips of any height as in
    one go, and strips need well under what one go needs: the float32 images and their
    temporaries exist for one strip at a time."""
    dsm = (pair.before_dsm, pair.after_dsm) if with_dsm else (None, None)
    try:
        big = plan_detection(pair.before, pair.after, *dsm, block=1024)
        spec = big.tiles()[0]
        c, r, w, h = spec.core
        rd = cr._read(big, (c, r, w + big.margin, h + big.margin), scaled=False)
        assert rd.before.dtype == np.uint8  # read as stored: 1 byte a sample
        (whole, whole_raw), whole_peak = _traced_peak(
            lambda: cr.window_cues(big, rd, rows=rd.valid.shape[0]))
        (strips, strips_raw), strips_peak = _traced_peak(lambda: cr.window_cues(big, rd))
        for rows in (1, 7):
            odd, odd_raw = cr.window_cues(big, rd, rows=rows)
            np.testing.assert_array_equal(odd_raw, whole_raw)
            np.testing.assert_array_equal(odd.magnitude, whole.magnitude)
    finally:
        close_datasets()
    np.testing.assert_array_equal(strips_raw, whole_raw)
    assert (strips_raw > 0).any()
    for name in CUE_FIELDS:
        a, b = getattr(strips, name), getattr(whole, name)
        assert (a is None) == (b is None) == (name == "dz" and not with_dsm)
        if a is not None:
            np.testing.assert_array_equal(a, b, err_msg=name)
    pixels = rd.valid.size
    out = {id(a): a for a in (strips_raw, *(getattr(strips, f) for f in CUE_FIELDS))
           if a is not None and a is not rd.valid}  # gain and loss may be one array
    kept = sum(a.nbytes for a in out.values())
    # beyond what is kept: a dozen float32 temporaries of the window in one go, of one
    # strip (1/16 of the rows) in strips
    in_one_go, in_strips = whole_peak - kept, strips_peak - kept
    assert in_one_go > 40 * pixels
    assert in_strips < in_one_go / 4, (in_strips / pixels, in_one_go / pixels)


def test_a_tile_needs_a_few_bytes_per_pixel(pair: PairInfo) -> None:
    """A whole tile (read, cues, morphology, labels, outlines) stays within 38 bytes per
    pixel of its window (up to 36 here); the cues in one go needed 55 to 63, and with
    128-row strips and the labels and sums in one go it was up to 43."""
    try:
        big = plan_detection(pair.before, pair.after, pair.before_dsm, pair.after_dsm,
                             block=1024)
        for spec in big.tiles():
            c, r, w, h = spec.core
            pixels = (w + 2 * big.margin) * (h + 2 * big.margin)
            res, peak = _traced_peak(lambda spec=spec: cr.detect_tile(spec))
            assert peak < 38 * pixels, (spec.index, peak / pixels)
    finally:
        close_datasets()



def test_the_mask_overviews_are_made_block_by_block_and_keep_small_objects(
        plan: cr.Plan, tmp_path: Path) -> None:
    """The COG's overviews are the ones written with each block (GDAL would read the
    whole image back in strips as wide as it, and sample): every overview cell holds the
    most telling class it covers, so each new structure still shows at the coarsest
    level."""
    block = cr.MASK_BLOCK
    try:
        det = cr.run_detection(plan, workers=2, spool_dir=tmp_path / "spool")
    finally:
        close_datasets()
    with det:
        assert isinstance(det.objects, ObjectSpool)
        cr.write_mask(plan, det.objects, tmp_path / "mask.tif")
        new = [o for o in det.objects if o.kind == "new_structure"]
    c0, r0, w, h = plan.work
    factors = cr.mask_overview_factors(w, h, block)
    with rasterio.open(tmp_path / "mask.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.block_shapes[0] == (block, block)
        assert len(src.overviews(1)) == len(factors) >= 2
        full = src.read(1)
        levels = {f: src.read(1, out_shape=(-(-h // f), -(-w // f))) for f in factors}
    assert new and set(np.unique(full)) <= {0, 1, 2, 3}
    level = full
    for f in factors:
        level = cr.mask_pool(level, 2)
        np.testing.assert_array_equal(levels[f], level, err_msg=f"overview {f}")
    coarsest = factors[-1]
    for o in new:  # a pixel of each new structure: its coarsest cell says "new"
        x, y = o.pixel_geometry.representative_point().coords[0]
        col, row = int(x) - c0, int(y) - r0
        assert full[row, col] == 1
        assert levels[coarsest][row // coarsest, col // coarsest] == 1
    # sampling (GDAL's NEAREST) would have lost some of them
    sampled = full[coarsest // 2::coarsest, coarsest // 2::coarsest]
    assert (sampled == 1).sum() < (levels[coarsest][:sampled.shape[0], :sampled.shape[1]]
                                   == 1).sum()


def test_overview_cells_spanning_blocks_are_pooled_in_memory() -> None:
    """Levels coarser than a block: each block adds its most telling class to the one
    cell it shares with other blocks; the levels come out as pooling the whole map."""
    rng = np.random.default_rng(3)
    whole = rng.choice(np.arange(4, dtype=np.uint8), size=(100, 90), p=[0.97, 0.01, 0.01, 0.01])
    size, factors = 8, [2, 4, 8, 16, 32, 64, 128]
    levels = {f: np.full((-(-100 // f), -(-90 // f)), 9, np.uint8) for f in factors}
    small = {f: np.zeros_like(levels[f]) for f in factors if f > size}
    for row in range(0, 100, size):
        for col in range(0, 90, size):
            block = whole[row:row + size, col:col + size]
            for k, (c, r, cells) in cr.pool_block(block, col, row, factors, size, small):
                levels[factors[k - 1]][r:r + cells.shape[0], c:c + cells.shape[1]] = cells
    levels.update(small)
    level = whole
    for f in factors:
        level = cr.mask_pool(level, 2)
        np.testing.assert_array_equal(levels[f], level, err_msg=f"level {f}")
    assert levels[128].tolist() == [[1]]  # new wins over removed and other


def test_the_cli_and_the_process_default_to_the_library_tile_size() -> None:
    """One default tile size (it sets the peak memory): the CLI's --block, the OGC
    process's `block` input and the worker all use gis.changes_raster.BLOCK."""
    import inspect

    from api.cli_changes import detect
    from api.ogc.detect_changes import DetectChangesProcessor

    assert inspect.signature(detect).parameters["block"].default == cr.BLOCK == 256
    inputs = DetectChangesProcessor.METADATA["inputs"]
    assert inputs["block"]["schema"]["default"] == cr.BLOCK


def test_the_tiles_are_made_as_they_are_asked_for(plan: cr.Plan) -> None:
    """A plan's tiles are a sequence made on demand: the walk down stripes of STRIPE
    tile columns (the last one narrower), row by row in each, but nothing held per
    tile. A list of them all took ~0.4 kB a tile (2 MB at 4 GB): memory that grew with
    the image."""
    c0, r0, w, h = plan.work
    rows = list(enumerate(range(r0, r0 + h, plan.block)))
    cols = list(enumerate(range(c0, c0 + w, plan.block)))
    assert len(cols) % cr.STRIPE != 0  # a narrower last stripe
    walk = [((i, j), (col, row, min(plan.block, c0 + w - col), min(plan.block, r0 + h - row)))
            for s0 in range(0, len(cols), cr.STRIPE)
            for i, row in rows
            for j, col in cols[s0:s0 + cr.STRIPE]]
    tiles = plan.tiles()
    # every tile once; and down a stripe, the next row begins after STRIPE tiles
    assert sorted(t.index for t in tiles) == [(i, j) for i, _ in rows for j, _ in cols]
    assert [t.index for t in tiles[:cr.STRIPE + 1]] == [
        *((0, j) for j in range(cr.STRIPE)), (1, 0)]
    assert [(t.index, t.core) for t in tiles] == walk
    assert len(tiles) == len(walk) > 20
    assert (tiles[-1].index, tiles[-1].core) == walk[-1]
    assert [t.core for t in tiles[3:6]] == [c for _i, c in walk[3:6]]
    with pytest.raises(IndexError):
        tiles[len(walk)]
    # 100,000 x 100,000 px in 512 px tiles: 38,416 tiles, and no memory for them
    huge = cr._replace(plan, work=(0, 0, 100_000, 100_000), block=512)
    import tracemalloc

    tracemalloc.start()
    try:
        grid = huge.tiles()
        n = sum(1 for _ in grid)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert n == len(grid) == 196 * 196
    assert held < 64 * 1024, held


def test_the_merge_holds_no_record_per_tile(plan: cr.Plan, tmp_path: Path) -> None:
    """Which tiles have arrived is a byte per tile, fixed when the merge starts; as rows
    of empty tiles arrive the merge's memory does not grow (a set of the tiles' indices
    took ~0.15 kB a tile)."""
    import tracemalloc

    huge = cr._replace(plan, work=(0, 0, 100_000, 100_000), block=512)
    rows, cols = huge.tile_grid
    empty = np.zeros(512, np.int32)
    edges = {"top": empty, "bottom": empty, "left": empty, "right": empty}
    merger = Merger(huge, ObjectSpool(tmp_path))
    try:
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            for spec in islice(huge.tiles(), 20 * cols):  # 20 rows, 3,920 tiles
                merger.add(cr.TileResult(spec.index, spec.core, [], edges))
            grown = tracemalloc.get_traced_memory()[0] - start
        finally:
            tracemalloc.stop()
        assert merger.n_arrived == 20 * cols
        # one row's open bottom edges (dict entries pointing at the shared strip) remain
        assert grown < 64 * 1024, grown
        with pytest.raises(ValueError, match="merged twice"):
            merger.add(cr.TileResult((0, 0), huge.tiles()[0].core, [], edges))
    finally:
        merger.spool.close()


def test_planning_lets_its_sample_reads_go(pair: PairInfo) -> None:
    """The planning's reads (36 scattered windows, and the co-registration's) leave no
    dataset open: GDAL drops their cached blocks (~70 MB with the CLI's 64 MB cache)
    before the tiles start, which was the run's peak."""
    close_datasets()
    plan_detection(pair.before, pair.after, pair.before_dsm, pair.after_dsm,
                   coregister=True)
    assert not getattr(cr._local, "cache", {})
