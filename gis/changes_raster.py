"""Orthophoto change detection over raster files, window by window.

:func:`detect_changes` takes two orthophoto paths (and optionally their DSMs) and
returns the changed objects as polygons in the earlier image's CRS:

1. :func:`plan_detection` checks the inputs (3 or 4 bands, uint8 or uint16, a
   projected CRS, a north-up earlier image; nodata, alpha bands and internal masks
   all honoured) and finds their overlap on the earlier image's grid (refused with
   :class:`~gis.errors.NoOverlapError` when there is none). The later image is read
   through a ``WarpedVRT`` on that grid (any CRS, resolution, extent), after a
   sub-pixel shift found by phase correlation on a few windows (a second flight is
   never pixel-aligned; the later DSM gets the same shift). Sample windows spread over
   the overlap give the global parameters: the radiometric fit, the colour-change
   threshold (Otsu, floored by the noise) and the DSMs' vertical offset on stable
   ground. Memory for this is fixed (at most ``SAMPLE_WINDOWS`` small windows).
2. :func:`detect_tile` is the one per-tile function: it reads its window plus a
   margin (so morphology is exact at the seams), computes the pixel classes, labels
   connected pixels of each class in its core, and returns per-label sums of the
   cues, the labels' outlines (``rasterio.features.shapes``, in pixel coordinates of
   the earlier grid, so seams match exactly) and the labels along its four edges.
   A thread pool runs it over the tiles (rasterio and numpy release the GIL), or a
   Dask cluster does (``scheduler=``), with the same results.
3. :class:`Merger` joins labels that touch across tile edges (union-find) as the
   tiles come in, adds up their sums, unions their outlines and classifies each
   object (:func:`gis.changes.classify`; objects under the minimum mapping unit go)
   as soon as no piece of it waits for a neighbouring tile, and writes it to an
   :class:`~gis.changes_spool.ObjectSpool` on disk. The mask (:func:`write_mask`)
   and the GeoJSON (:func:`write_geojson`) are written from the spool, block by
   block and feature by feature.

Peak memory depends on the tile size, the number of workers and the image's width
(one row of tiles' edges), not on the image's size or its number of objects.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, overload

import numpy as np
import rasterio
import rasterio.shutil
import shapely
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.features import rasterize, shapes
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from scipy import ndimage

from gis.changes import (
    CLOSE_M,
    IDENTITY,
    KINDS,
    MMU_M2,
    OPEN_M,
    Cues,
    PixelClass,
    Radiometry,
    Verdict,
    change_magnitude,
    change_threshold,
    classify,
    clean,
    dsm_offset,
    fit_radiometry,
    margin_px,
    object_stats,
    otsu_threshold,
    pixel_classes,
    pixel_cues,
)
from gis.changes_spool import ObjectSpool, Parking
from gis.errors import NoOverlapError, RasterInputError

BLOCK = 256  # tile core, pixels: 512 peaked 6-8 MB higher and 2 MB higher at 4 GB than at
# 1 GB (the threads' mid-tile transients meeting), for ~4 % less CPU; 1024 ~40 MB higher
STRIP_ROWS = 64  # a tile's per-pixel cues are worked this many rows at a time (128:
# ~2 MB more a tile at its peak)
SAMPLE_WINDOWS = 36  # for the global parameters: at most 6 x 6 windows...
SAMPLE_SIZE = 256  # ...of this size
COREG_WINDOWS = 9
COREG_SIZE = 512
MAX_SHIFT_M = 5.0  # a larger apparent shift is not believed: no shift is applied
METHODS = ("cva", "difference")
SCHEDULER_TIMEOUT_S = 20  # to reach a Dask scheduler
OTHER_SIMPLIFY_PX = 0.75  # outlines of "other" objects are simplified by this much

Progress = Callable[[int, int], None]  # (tiles done, tiles in all)

HEAP_MMAP_BYTES = 128 * 1024  # see bound_heap


def bound_heap(threshold: int = HEAP_MMAP_BYTES) -> bool:
    """For a process that runs a detection (the CLI, the process's worker, the bench):
    glibc's malloc gives every allocation of ``threshold`` bytes or more a mapping of
    its own, unmapped when freed. Without it, GDAL's blocks (768 kB for a 512 x 512 RGB
    tile) and numpy's medium arrays are carved out of per-thread heaps that fragment:
    the same 1 GB run peaked at 443 MB instead of 369 MB, and a longer run a little
    higher again.

    Not 64 kB, though that keeps the later image's warped blocks (512 x 128 px of one
    band, churning through GDAL's block cache) out of the heap: the heap then stayed at
    ~30 MB (4 MB of it free) over a whole run where with 128 kB it grew to 71 MB at
    1 GB and 76 MB at 4 GB, but the runs took 30-40 % longer (pages mapped, zeroed and
    unmapped for every block) and the peaks, 152 and 157 MB, were no closer together.

    Returns whether it took effect (False off glibc: nothing changes).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_mmap_threshold = -3  # glibc's M_MMAP_THRESHOLD
    return bool(mallopt(m_mmap_threshold, threshold))


STRIPE = 4  # tiles: the width of the stripes the tiles are handed out in (see Tiles)
GDAL_CACHE_MB = 24  # GDAL's block cache while detecting; see bound_memory


def bound_memory(cache_mb: int = GDAL_CACHE_MB) -> int:
    """For a process that runs a detection: :func:`bound_heap`, and GDAL's block cache
    held to ``cache_mb`` (unless the operator set ``GDAL_CACHEMAX``; GDAL's own default
    is 5 % of the machine's memory), and each band's index of its cached blocks kept to
    the blocks it holds (``GDAL_BAND_BLOCK_CACHE=HASHSET``, unless the operator set it).
    Returns the cache's size in bytes.

    The index made the resident size grow with the image. GDAL's default for a band of
    fewer than a million blocks is an array of a pointer per block, allocated 64 x 64
    blocks (32 kB) at a time as blocks are first cached, and freed only when the
    dataset closes: each thread's open datasets (the earlier image, the later one and
    its warped view of 512 x 128 px blocks, four bands) gathered 1.7 MB of it over the
    bench's 1 GB input and 3.8 MB over the 4 GB one. With a hash set of the cached
    blocks, the same reads hold the same memory on both (6.0 and 5.9 MB, cache
    included).

    The cache is a trade of memory for decoding blocks again (see :class:`Tiles`).
    Measured with the bench's children (2 threads): at 64 MB the 1 GB input peaked at
    203-205 MB and the 4 GB input at 210 MB, the cache's 64 kB warped blocks living in
    the heap among the tiles' allocations, where the resident size crept up with the
    number of tiles. At 24 MB: 166 and 168 MB, for ~25 % more CPU a tile (the 1 GB
    run's wall time the same, the 4 GB run's 26 % longer). At 12 MB: 151 MB and
    another 24 % slower. (With the tiles' memory made independent of what they hold:
    158 and 160 MB; with the block index a hash set and the spool's smaller batches,
    159 and 159 MB in one bench run, 155 and 157 MB in the next pair of runs.)
    """
    bound_heap()
    from rasterio.env import get_gdal_config, set_gdal_config

    if "GDAL_CACHEMAX" not in os.environ:
        set_gdal_config("GDAL_CACHEMAX", cache_mb << 20)  # an int: GDALSetCacheMax64
    if "GDAL_BAND_BLOCK_CACHE" not in os.environ:  # read as each band first caches a block
        set_gdal_config("GDAL_BAND_BLOCK_CACHE", "HASHSET")
    return int(get_gdal_config("GDAL_CACHEMAX"))


TRIM_EVERY = 1  # tiles (every 16: the peak ~7 MB higher; a trim takes ~4 ms, in the
# merging thread while the tiles run)


def _trimmer() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)``: the free pages inside every thread's heap go back to
    the system (what the tiles' threads freed would otherwise stay resident, a little
    more the longer the run). A no-op off glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return lambda: None

    def run() -> None:
        trim(0)

    return run


@dataclass(frozen=True)
class RasterInfo:
    """What the detector needs to know about one input raster."""

    path: str
    crs: str  # WKT
    transform: tuple[float, ...]  # affine, 6 numbers
    width: int
    height: int
    bands: tuple[int, ...]  # R, G, B (or the one DSM band), 1-based
    scale: float  # divide by this to get ~0..1 (orthophotos) or metres (DSMs: 1)
    has_mask: bool  # alpha, nodata or an internal mask

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.affine
        xs = (t.c, t.c + self.width * t.a)
        ys = (t.f, t.f + self.height * t.e)
        return min(xs), min(ys), max(xs), max(ys)


def _open(path: str | Path, what: str) -> rasterio.DatasetReader:
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise RasterInputError(f"{what} {path}: not a readable raster ({exc})",
                               input=what) from exc


def inspect_orthophoto(path: str | Path, what: str = "orthophoto") -> RasterInfo:
    """Check an orthophoto (3 or 4 bands, uint8/uint16, georeferenced) and describe it."""
    with _open(path, what) as src:
        if src.crs is None:
            raise RasterInputError(f"{what} {path} has no CRS", input=what)
        if src.count < 3:
            raise RasterInputError(
                f"{what} {path} has {src.count} band(s); an RGB orthophoto needs 3 or 4",
                input=what,
            )
        dtype = src.dtypes[0]
        if dtype not in ("uint8", "uint16"):
            raise RasterInputError(
                f"{what} {path} is {dtype}; orthophotos must be uint8 or uint16", input=what
            )
        interp = list(src.colorinterp)
        bands: list[int] = []
        for ci in (ColorInterp.red, ColorInterp.green, ColorInterp.blue):
            if ci in interp:
                bands.append(interp.index(ci) + 1)
        if len(bands) != 3:
            bands = [1, 2, 3]
        has_alpha = ColorInterp.alpha in interp
        has_mask = has_alpha or src.nodata is not None or any(
            flags & rasterio.enums.MaskFlags.per_dataset for flags in src.mask_flag_enums[0]
        )
        scale = 255.0
        if dtype == "uint16":
            scale = _bit_depth_max(src, bands)
        return RasterInfo(
            path=str(path),
            crs=src.crs.to_wkt(),
            transform=tuple(src.transform)[:6],
            width=src.width,
            height=src.height,
            bands=tuple(bands),
            scale=scale,
            has_mask=bool(has_mask),
        )


def _bit_depth_max(src: rasterio.DatasetReader, bands: list[int]) -> float:
    """Full scale of uint16 data: 2**bits - 1 for the smallest of 10/12/14/16 bits that
    holds the largest value in a few windows spread over the image (not a whole read)."""
    top = 0
    for c, r, w, h in _sample_windows((0, 0, src.width, src.height), 9, 256):
        top = max(top, int(src.read(bands, window=Window(c, r, w, h)).max()))
    for bits in (10, 12, 14, 16):
        if top <= 2**bits - 1:
            return float(2**bits - 1)
    return 65535.0


def inspect_dsm(path: str | Path, what: str = "DSM") -> RasterInfo:
    """Check a surface model (one band of heights, georeferenced) and describe it."""
    with _open(path, what) as src:
        if src.crs is None:
            raise RasterInputError(f"{what} {path} has no CRS", input=what)
        if src.dtypes[0] not in ("float32", "float64", "int16", "int32", "uint16"):
            raise RasterInputError(f"{what} {path} is {src.dtypes[0]}: not heights",
                                   input=what)
        return RasterInfo(
            path=str(path),
            crs=src.crs.to_wkt(),
            transform=tuple(src.transform)[:6],
            width=src.width,
            height=src.height,
            bands=(1,),
            scale=1.0,
            has_mask=src.nodata is not None,
        )


@dataclass(frozen=True)
class Plan:
    """Everything a tile needs: inputs, the work window, and the global parameters.

    ``work`` is (column, row, width, height) on the earlier image's grid; ``shift``
    the later image's offset on that grid in pixels (x, y).
    """

    before: RasterInfo
    after: RasterInfo
    before_dsm: RasterInfo | None
    after_dsm: RasterInfo | None
    work: tuple[int, int, int, int]
    shift: tuple[float, float]
    radiometry: Radiometry
    threshold: float
    dsm_shift: float
    open_px: int
    close_px: int
    block: int
    method: str

    @property
    def has_dsm(self) -> bool:
        return self.before_dsm is not None

    @property
    def margin(self) -> int:
        return margin_px(self.open_px, self.close_px)

    @property
    def pixel_area_m2(self) -> float:
        t = self.before.affine
        return abs(t.a * t.e - t.b * t.d)

    @property
    def tile_grid(self) -> tuple[int, int]:
        """Rows and columns of tiles over ``work``."""
        _c0, _r0, w, h = self.work
        return -(-h // self.block), -(-w // self.block)

    def tiles(self) -> Tiles:
        """The tiles in stripes :data:`STRIPE` tiles wide, row by row down each stripe,
        made as they are asked for (a list of them all would grow with the image:
        ~0.4 kB a tile)."""
        return Tiles(self)


class Tiles(Sequence["TileSpec"]):
    """A plan's tiles down stripes of :data:`STRIPE` tile columns, each
    :class:`TileSpec` made when it is asked for.

    The order is for GDAL's block cache. A 512 px tile with its margin reads 3 x 3 of
    the file's 512 px blocks (and the warped image's blocks around it); the next tile
    down a stripe reads two of those rows again, the next one along it two of the
    columns (a 256 px tile reads 1 to 2 x 2 of them, each shared with its neighbours).
    Row by row, a row of blocks fits no bounded cache once the image is wide
    enough. Measured with 512 px tiles on the bench's 1 GB input, one thread, the first
    240 tiles: with
    a 48 MB cache the reads take 35 ms a tile down stripes, 47 ms row by row; with the
    24 MB of :func:`bound_memory` neither order keeps the blocks (70-78 ms), and whole
    runs take the same time either way. The objects do not depend on the order (see
    :class:`Merger`).
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.rows, self.cols = plan.tile_grid

    def __len__(self) -> int:
        return self.rows * self.cols

    @overload
    def __getitem__(self, k: int) -> TileSpec: ...

    @overload
    def __getitem__(self, k: slice) -> list[TileSpec]: ...

    def __getitem__(self, k: int | slice) -> TileSpec | list[TileSpec]:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        n = len(self)
        if not -n <= k < n:
            raise IndexError(f"tile {k} of {n}")
        # the k-th tile: down the stripes of STRIPE columns, row by row in each
        width = min(self.cols, STRIPE)
        stripe, rest = divmod(k % n, self.rows * width)
        i, j = divmod(rest, min(width, self.cols - stripe * width))
        j += stripe * width
        p = self.plan
        c0, r0, w, h = p.work
        col, row = c0 + j * p.block, r0 + i * p.block
        core = (col, row, min(p.block, c0 + w - col), min(p.block, r0 + h - row))
        return TileSpec(p, (i, j), core)

    def __iter__(self) -> Iterator[TileSpec]:
        for k in range(len(self)):
            yield self[k]


@dataclass(frozen=True)
class TileSpec:
    plan: Plan
    index: tuple[int, int]
    core: tuple[int, int, int, int]  # column, row, width, height on the earlier grid


@dataclass
class Piece:
    """One labelled region of one tile."""

    cls: int
    label: int
    stats: np.ndarray
    # pixel coordinates (column, row) on the earlier grid; None while the merge has it
    # parked on disk (see Merger)
    geom: shapely.Geometry | None


@dataclass
class TileResult:
    index: tuple[int, int]
    core: tuple[int, int, int, int]
    pieces: list[Piece]
    edges: dict[str, np.ndarray]  # top, bottom, left, right: labels along the core's edges


@dataclass(frozen=True)
class ChangeObject:
    """One changed object: its verdict, area and outline (in the earlier image's CRS)."""

    kind: str
    score: float
    cue: str
    area_m2: float
    geometry: shapely.Geometry
    pixel_geometry: shapely.Geometry = field(repr=False)
    measures: dict[str, float] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Detection:
    """The objects found (a :class:`~gis.changes_spool.ObjectSpool` on disk, or any
    sequence) and the plan that found them. Close it (or use it as a context manager)
    to remove the spool's scratch file at once."""

    objects: Sequence[ChangeObject]
    plan: Plan

    @property
    def crs(self) -> str:
        return self.plan.before.crs

    def counts(self) -> dict[str, int]:
        """Objects by kind."""
        if isinstance(self.objects, ObjectSpool):
            return self.objects.counts()
        out: dict[str, int] = {}
        for o in self.objects:
            out[o.kind] = out.get(o.kind, 0) + 1
        return out

    def close(self) -> None:
        if isinstance(self.objects, ObjectSpool):
            self.objects.close()

    def __enter__(self) -> Detection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- reading ---------------------------------------------------------------------------


def _vrt(src: rasterio.DatasetReader, plan: Plan, shifted: bool,
         resampling: Resampling = Resampling.bilinear) -> WarpedVRT:
    t = plan.before.affine
    if shifted:
        t = t @ Affine.translation(*plan.shift)
    has_alpha = ColorInterp.alpha in src.colorinterp
    return WarpedVRT(
        src,
        crs=plan.before.crs,
        transform=t,
        width=plan.before.width,
        height=plan.before.height,
        resampling=resampling,
        tolerance=0.01,  # pixels: 4 mm at 0.4 m, and values all but independent of the window
        add_alpha=not has_alpha,
    )


def _window(c: int, r: int, w: int, h: int) -> Window:
    return Window(c, r, w, h)


@dataclass
class _Read:
    before: np.ndarray
    after: np.ndarray
    valid: np.ndarray
    before_dsm: np.ndarray | None
    after_dsm: np.ndarray | None


_local = threading.local()


def _dataset(path: str, plan: Plan | None = None, shifted: bool = False) -> Any:
    """An open dataset (or WarpedVRT onto the earlier grid), kept per thread.

    Opening a warped view costs ~0.1 s (PROJ set-up); each thread keeps a few open.
    """
    cache: dict[Any, Any] = getattr(_local, "cache", None) or {}
    _local.cache = cache
    key = (path, None if plan is None else (plan.before.crs, plan.before.transform,
                                            plan.shift if shifted else (0.0, 0.0)))
    ds = cache.get(key)
    if ds is None:
        if len(cache) >= 12:
            close_datasets()
            cache = _local.cache = {}
        src = rasterio.open(path)
        ds = src if plan is None else _vrt(src, plan, shifted)
        cache[key] = ds
        if plan is not None:
            cache[(path, "src", key[1])] = src
    return ds


def close_datasets() -> None:
    """Close the datasets this thread keeps open."""
    cache = getattr(_local, "cache", None) or {}
    for ds in cache.values():
        ds.close()
    _local.cache = {}


def _scaled(pixels: np.ndarray, scale: float) -> np.ndarray:
    """Orthophoto pixels as float32 scaled to ~0..1."""
    out = pixels.astype(np.float32)
    out /= np.float32(scale)
    return out


def _read(plan: Plan, win: tuple[int, int, int, int], shifted: bool = True,
          dsm: bool = True, scaled: bool = True) -> _Read:
    """Both images (scaled to ~0..1, or as stored when not ``scaled``) and DSMs (metres,
    NaN where unknown) on ``win``."""
    w = _window(*win)
    src = _dataset(plan.before.path)
    b = src.read(list(plan.before.bands), window=w)
    valid = src.dataset_mask(window=w) > 0
    vrt = _dataset(plan.after.path, plan, shifted)
    a = vrt.read(list(plan.after.bands), window=w)
    valid &= vrt.dataset_mask(window=w) > 0
    if scaled:
        b, a = _scaled(b, plan.before.scale), _scaled(a, plan.after.scale)
    bd = ad = None
    if dsm and plan.before_dsm is not None and plan.after_dsm is not None:
        bd = _read_dsm(plan.before_dsm, plan, w, shifted=False)
        ad = _read_dsm(plan.after_dsm, plan, w, shifted=shifted)
    return _Read(b, a, valid, bd, ad)


def _read_dsm(info: RasterInfo, plan: Plan, w: Window, shifted: bool) -> np.ndarray:
    vrt = _dataset(info.path, plan, shifted)
    z = vrt.read(1, window=w).astype(np.float32)
    ok = vrt.dataset_mask(window=w) > 0
    z[~ok] = np.nan
    return z


# ---- planning --------------------------------------------------------------------------


def _overlap(before: RasterInfo, other: RasterInfo, what: str) -> tuple[int, int, int, int]:
    """The part of ``before``'s grid that ``other`` covers: (col, row, width, height)."""
    try:
        ob = transform_bounds(other.crs, before.crs, *other.bounds, densify_pts=21)
    except Exception as exc:  # noqa: BLE001 - pyproj/GDAL say many things
        raise NoOverlapError(f"{what} cannot be placed in the earlier image's CRS: {exc}",
                             input=what) from exc
    inv = ~before.affine
    xs, ys = (ob[0], ob[2], ob[0], ob[2]), (ob[1], ob[1], ob[3], ob[3])
    cols, rows = zip(*(inv @ (x, y) for x, y in zip(xs, ys, strict=True)), strict=True)
    c0 = max(0, math.floor(min(cols)))
    r0 = max(0, math.floor(min(rows)))
    c1 = min(before.width, math.ceil(max(cols)))
    r1 = min(before.height, math.ceil(max(rows)))
    if c1 - c0 < 8 or r1 - r0 < 8:
        raise NoOverlapError(
            f"{what} ({other.path}) does not overlap the earlier orthophoto "
            f"({before.path}): nothing to compare",
            input=what,
        )
    return c0, r0, c1 - c0, r1 - r0


def _intersect(a: tuple[int, int, int, int], b: tuple[int, int, int, int]
               ) -> tuple[int, int, int, int]:
    c0, r0 = max(a[0], b[0]), max(a[1], b[1])
    c1, r1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return c0, r0, max(0, c1 - c0), max(0, r1 - r0)


def _release() -> None:
    """After the planning reads: close this thread's datasets (GDAL drops their cached
    blocks, ~70 MB of scattered windows no tile will ask for again) and trim the heap,
    so the planning's arithmetic and then the tiles start from the libraries alone."""
    close_datasets()
    _trimmer()()


def _sample_windows(work: tuple[int, int, int, int], n: int, size: int
                    ) -> list[tuple[int, int, int, int]]:
    """Up to ``n`` windows of ``size`` spread evenly over ``work`` (fewer if it is small)."""
    c0, r0, w, h = work
    size_w, size_h = min(size, w), min(size, h)
    k = max(1, int(math.sqrt(n)))
    kx = max(1, min(k, w // size_w))
    ky = max(1, min(k, h // size_h))
    out = []
    for i in range(ky):
        for j in range(kx):
            col = c0 + (0 if kx == 1 else round(j * (w - size_w) / (kx - 1)))
            row = r0 + (0 if ky == 1 else round(i * (h - size_h) / (ky - 1)))
            out.append((col, row, size_w, size_h))
    return out


def phase_shift(ref: np.ndarray, moving: np.ndarray) -> tuple[float, float, float]:
    """Sub-pixel translation (x, y) such that ``moving[r + y, c + x] ≈ ref[r, c]``, and
    the height of the correlation peak (near 1: sure; near 0: no match).

    >>> rng = np.random.default_rng(1); a = rng.normal(size=(64, 64))
    >>> dx, dy, peak = phase_shift(a, np.roll(a, (3, -2), axis=(0, 1)))
    >>> round(dx, 2), round(dy, 2), peak > 0.5
    (-2.0, 3.0, True)
    """
    h, w = ref.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    fa = np.fft.fft2((ref - ref.mean()) * win)
    fb = np.fft.fft2((moving - moving.mean()) * win)
    cross = fb * np.conj(fa)
    cross /= np.maximum(np.abs(cross), 1e-12)
    corr = np.fft.ifft2(cross).real
    py, px = np.unravel_index(int(np.argmax(corr)), corr.shape)
    peak = float(corr[py, px])

    def sub(c_m: float, c_0: float, c_p: float) -> float:
        d = c_m - 2 * c_0 + c_p
        return 0.0 if d == 0 else 0.5 * (c_m - c_p) / d

    dy = py + sub(corr[(py - 1) % h, px], corr[py, px], corr[(py + 1) % h, px])
    dx = px + sub(corr[py, (px - 1) % w], corr[py, px], corr[py, (px + 1) % w])
    if dy > h / 2:
        dy -= h
    if dx > w / 2:
        dx -= w
    return float(dx), float(dy), peak


def _coregister(plan: Plan) -> tuple[float, float]:
    """The later image's shift on the earlier grid, by phase correlation on a few
    windows (median); (0, 0) when the windows disagree or the shift is implausible."""
    found = []
    for win in _sample_windows(plan.work, COREG_WINDOWS, COREG_SIZE):
        if win[2] < 64 or win[3] < 64:
            continue
        rd = _read(plan, win, shifted=False, dsm=False)
        if rd.valid.mean() < 0.9:
            continue
        lb = rd.before.mean(axis=0)
        la = rd.after.mean(axis=0)
        # gradients: robust to the radiometric change between dates
        gb = np.hypot(*np.gradient(lb))
        ga = np.hypot(*np.gradient(la))
        dx, dy, peak = phase_shift(gb, ga)
        if peak > 0.05:
            found.append((dx, dy))
    _release()
    if len(found) < max(1, (COREG_WINDOWS + 1) // 3) and len(found) < 1:
        return 0.0, 0.0
    if not found:
        return 0.0, 0.0
    arr = np.asarray(found)
    med = np.median(arr, axis=0)
    spread = np.median(np.abs(arr - med), axis=0)
    res = math.sqrt(plan.pixel_area_m2)
    if np.any(spread > 0.5) or math.hypot(*med) * res > MAX_SHIFT_M:
        return 0.0, 0.0
    return round(float(med[0]), 3), round(float(med[1]), 3)


def plan_detection(
    before: str | Path,
    after: str | Path,
    before_dsm: str | Path | None = None,
    after_dsm: str | Path | None = None,
    *,
    block: int = BLOCK,
    method: str = "cva",
    coregister: bool = False,
) -> Plan:
    """Check the inputs, find their overlap, co-register, and fix the global parameters."""
    if method not in METHODS:
        raise RasterInputError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    if (before_dsm is None) != (after_dsm is None):
        raise RasterInputError("give both DSMs (before and after) or neither", input="dsm")
    if block < 64:
        raise RasterInputError("block must be at least 64 pixels")
    bi, ai, bd, ad, work = check_inputs(before, after, before_dsm, after_dsm)
    t = bi.affine
    res = math.sqrt(abs(t.a * t.e))
    plan = Plan(
        before=bi, after=ai, before_dsm=bd, after_dsm=ad, work=work, shift=(0.0, 0.0),
        radiometry=IDENTITY, threshold=0.0, dsm_shift=0.0,
        open_px=max(1, round(OPEN_M / res)), close_px=max(1, round(CLOSE_M / res)),
        block=int(block), method=method,
    )
    if coregister and method == "cva":
        plan = _replace(plan, shift=_coregister(plan))
    return _fit(plan)


def check_inputs(
    before: str | Path,
    after: str | Path,
    before_dsm: str | Path | None = None,
    after_dsm: str | Path | None = None,
) -> tuple[RasterInfo, RasterInfo, RasterInfo | None, RasterInfo | None,
           tuple[int, int, int, int]]:
    """The cheap half of :func:`plan_detection`: each input readable and usable, the
    earlier image projected and north-up, the overlap of them all on its grid (no pixel
    is read but the headers). Returns the inputs' descriptions and that overlap."""
    if (before_dsm is None) != (after_dsm is None):
        raise RasterInputError("give both DSMs (before and after) or neither", input="dsm")
    bi = inspect_orthophoto(before, "before")
    ai = inspect_orthophoto(after, "after")
    crs = rasterio.crs.CRS.from_wkt(bi.crs)
    if not crs.is_projected:
        raise RasterInputError(
            f"before {before} is in a geographic CRS; areas need a projected (metric) one: "
            "reproject it first (e.g. to the Gauss-Krüger zone of the area)",
            input="before",
        )
    t = bi.affine
    if t.b != 0 or t.d != 0 or t.e >= 0:
        raise RasterInputError(f"before {before} is rotated or south-up; it must be north-up",
                               input="before")
    work = _overlap(bi, ai, "after")
    bd = ad = None
    if before_dsm is not None and after_dsm is not None:
        bd = inspect_dsm(before_dsm, "before DSM")
        ad = inspect_dsm(after_dsm, "after DSM")
        work = _intersect(work, _overlap(bi, bd, "before DSM"))
        work = _intersect(work, _overlap(bi, ad, "after DSM"))
        if work[2] < 8 or work[3] < 8:
            raise NoOverlapError("the orthophotos and the DSMs have no common ground",
                                 input="dsm")
    return bi, ai, bd, ad, work


def _replace(plan: Plan, **kw: Any) -> Plan:
    from dataclasses import replace

    return replace(plan, **kw)


def _fit(plan: Plan) -> Plan:
    """Radiometric fit, change threshold and DSM offset from the sample windows."""
    bs, as_, bz, az = [], [], [], []
    for win in _sample_windows(plan.work, SAMPLE_WINDOWS, SAMPLE_SIZE):
        rd = _read(plan, win)
        sub = (slice(None, None, 2), slice(None, None, 2))
        v = rd.valid[sub]
        bs.append(rd.before[:, sub[0], sub[1]][:, v])
        as_.append(rd.after[:, sub[0], sub[1]][:, v])
        if rd.before_dsm is not None and rd.after_dsm is not None:
            bz.append(rd.before_dsm[sub][v])
            az.append(rd.after_dsm[sub][v])
    _release()
    b = np.concatenate(bs, axis=1) if bs else np.zeros((3, 0), np.float32)
    a = np.concatenate(as_, axis=1) if as_ else np.zeros((3, 0), np.float32)
    if b.shape[1] < 100:
        raise NoOverlapError("the two orthophotos share almost no valid pixels "
                             "(masks, alpha or nodata cover the overlap)")
    if plan.method == "difference":
        radiometry = IDENTITY
        mag = change_magnitude(b[:, :, None], a[:, :, None])[:, 0]
        threshold = otsu_threshold(mag)
    else:
        radiometry = fit_radiometry(b, a)
        mag = change_magnitude(b[:, :, None], radiometry.apply(a[:, :, None]))[:, 0]
        threshold = change_threshold(mag)
    shift = 0.0
    if bz:
        zb, za = np.concatenate(bz), np.concatenate(az)
        shift = dsm_offset(zb, za, (mag <= threshold) & np.isfinite(zb) & np.isfinite(za))
    return _replace(plan, radiometry=radiometry, threshold=round(float(threshold), 6),
                    dsm_shift=round(shift, 4))


# ---- one tile --------------------------------------------------------------------------


def window_cues(plan: Plan, rd: _Read, rows: int = STRIP_ROWS) -> tuple[Cues, np.ndarray]:
    """:func:`~gis.changes.pixel_cues` and the raw class map of one window read as
    stored, worked ``rows`` rows at a time.

    Every cue is a function of its pixel alone, so the answer is the one for the whole
    window at once; but the float32 images and their temporaries (a dozen arrays the
    size of the window, most of a tile's memory) exist for one strip at a time, and
    what stays is the 1-byte cues, the magnitude and the height change.
    """
    h, w = rd.valid.shape
    dsm = (plan.method != "difference" and rd.before_dsm is not None
           and rd.after_dsm is not None)
    colour, roof_new, roof_gone = (np.zeros((h, w), bool) for _ in range(3))
    no = np.zeros_like(rd.valid)
    gain, loss = (np.zeros((h, w), bool), np.zeros((h, w), bool)) if dsm else (no, no)
    magnitude = np.zeros((h, w), np.float32)
    dz = np.zeros((h, w), np.float32) if dsm else None
    raw = np.zeros((h, w), np.uint8)
    for r0 in range(0, h, max(1, rows)):
        s = slice(r0, min(h, r0 + rows))
        before = _scaled(rd.before[:, s], plan.before.scale)
        after = plan.radiometry.apply(_scaled(rd.after[:, s], plan.after.scale))
        if dsm:
            assert rd.before_dsm is not None and rd.after_dsm is not None and dz is not None
            c = pixel_cues(before, after, rd.valid[s], plan.threshold,
                           rd.before_dsm[s], rd.after_dsm[s], plan.dsm_shift)
            gain[s], loss[s], dz[s] = c.gain, c.loss, c.dz
        else:
            c = pixel_cues(before, after, rd.valid[s], plan.threshold)
        del before, after
        colour[s], roof_new[s], roof_gone[s], magnitude[s] = (
            c.colour, c.roof_new, c.roof_gone, c.magnitude)
        # difference: every changed pixel is a candidate (colour is magnitude over the
        # threshold, on valid pixels)
        raw[s] = (np.where(c.colour, PixelClass.NEW, 0).astype(np.uint8)
                  if plan.method == "difference" else pixel_classes(c))
    return Cues(rd.valid, colour, roof_new, roof_gone, gain, loss, magnitude, dz), raw


def detect_tile(spec: TileSpec) -> TileResult:
    """Classes, labels, per-label sums and outlines for one tile's core.

    Pure in its inputs (the files and the plan): the same spec gives the same result
    in any thread, process or Dask worker.

    Its memory hardly depends on what the tile holds: every array is the window's size
    or one strip's (the labels joined in place, the sums taken strip by strip), the
    outlines only of what changed. A tile of one large object needed 3-5 MB more than
    a quiet one; a longer run meets more such tiles, and two of them at once on the
    two threads set a higher peak.
    """
    plan = spec.plan
    c, r, w, h = spec.core
    m = plan.margin
    wc0, wr0, ww, wh = plan.work
    rc0, rr0 = max(wc0, c - m), max(wr0, r - m)
    rc1, rr1 = min(wc0 + ww, c + w + m), min(wr0 + wh, r + h + m)
    rd = _read(plan, (rc0, rr0, rc1 - rc0, rr1 - rr0), scaled=False)
    cues, raw = window_cues(plan, rd)
    del rd  # the images: only the cues are needed from here on
    classes = clean(raw, plan.open_px, plan.close_px)
    del raw
    core = (slice(r - rr0, r - rr0 + h), slice(c - rc0, c - rc0 + w))
    classes = classes[core]
    core_cues = type(cues)(*(None if f is None else f[core] for f in (
        cues.valid, cues.colour, cues.roof_new, cues.roof_gone, cues.gain, cues.loss,
        cues.magnitude, cues.dz)))
    labels = np.zeros(classes.shape, dtype=np.int32)
    label_cls: list[int] = [0]
    for cls in (PixelClass.NEW, PixelClass.REMOVED, PixelClass.OTHER):
        lab, n = ndimage.label(classes == cls)
        if n:  # in place: no temporaries the size of the labelled pixels
            sel = lab > 0
            np.add(lab, len(label_cls) - 1, out=lab, where=sel)
            np.copyto(labels, lab, where=sel)
            label_cls += [int(cls)] * n
        del lab
    count = len(label_cls) - 1
    geoms: dict[int, list[shapely.Geometry]] = {}
    if count:
        stats = object_stats(labels, count, core_cues)
        with warnings.catch_warnings():  # the tile at (0, 0) has an identity transform
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            for geojson, value in shapes(labels, mask=labels > 0, connectivity=4,
                                         transform=Affine.translation(c, r)):
                geoms.setdefault(int(value), []).append(shapely.geometry.shape(geojson))
    pieces: list[Piece] = []
    edges = {
        "top": labels[0, :].copy(),
        "bottom": labels[-1, :].copy(),
        "left": labels[:, 0].copy(),
        "right": labels[:, -1].copy(),
    }
    if count:
        on_edge = np.zeros(count + 1, bool)
        for strip in edges.values():
            on_edge[strip] = True
        mmu_px = MMU_M2 / plan.pixel_area_m2
        for lab_id in range(1, count + 1):
            if not on_edge[lab_id] and stats[lab_id][0] < mmu_px:
                continue  # whole, and too small: it cannot grow in another tile
            parts = geoms.get(lab_id, [])
            geom = parts[0] if len(parts) == 1 else shapely.union_all(parts)
            if not on_edge[lab_id] and label_cls[lab_id] == PixelClass.OTHER:
                # whole: drop the pixel staircase (memory grows with objects, not pixels)
                geom = shapely.simplify(geom, OTHER_SIMPLIFY_PX, preserve_topology=True)
            pieces.append(Piece(label_cls[lab_id], lab_id, stats[lab_id], geom))
    return TileResult(spec.index, spec.core, pieces, edges)


# ---- merging ---------------------------------------------------------------------------

SIDES = {  # a tile's side: the neighbour's offset and the neighbour's side facing it
    "top": (-1, 0, "bottom"),
    "bottom": (1, 0, "top"),
    "left": (0, -1, "right"),
    "right": (0, 1, "left"),
}

Key = tuple[int, int, int]  # tile row, tile column, label


class Merger:
    """Joins pieces across tile edges as tiles arrive (in any order), and writes each
    object to ``spool`` as soon as it is complete: when none of its pieces touches a
    tile edge whose neighbour has not arrived yet. What is held is the pieces still
    open and the label strips along edges still waiting for their neighbour: with the
    tiles arriving down stripes (:class:`Tiles`), about one stripe's right-hand edge
    and one stripe row's bottom edge: it grows with the image's height in tiles, not
    with its area or its number of objects.

    The outlines of the pieces it holds wait on disk (:class:`~gis.changes_spool.Parking`,
    in the spool's directory), so what grows with the image's height is a few dozen bytes
    a waiting piece, not its outline.

    The objects are ranked by their first piece (tile row, tile column, label), so the
    spool reads in the same order whatever order the tiles came in.
    """

    def __init__(self, plan: Plan, spool: ObjectSpool) -> None:
        self.plan, self.spool = plan, spool
        self.parking = Parking(spool.path)
        self.rows, self.cols = plan.tile_grid
        self.arrived = bytearray(self.rows * self.cols)  # 1 byte a tile, not a set of them
        self.n_arrived = 0
        self.strips: dict[tuple[tuple[int, int], str], np.ndarray] = {}
        self.pieces: dict[Key, Piece] = {}
        self.parent: dict[Key, Key] = {}
        self.members: dict[Key, list[Key]] = {}
        self.open: dict[Key, int] = {}  # per group: (piece, side) pairs still waiting

    @property
    def pending(self) -> int:
        """Pieces held, waiting for a neighbouring tile."""
        return len(self.pieces)

    def _find(self, key: Key) -> Key:
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[key] != root:
            self.parent[key], key = root, self.parent[key]
        return root

    def _union(self, a: Key, b: Key) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.members[ra] += self.members.pop(rb)
        self.open[ra] += self.open.pop(rb)

    def add(self, res: TileResult) -> None:
        i, j = res.index
        if self._arrived(res.index):
            raise ValueError(f"tile {res.index} merged twice")
        self.arrived[i * self.cols + j] = 1
        self.n_arrived += 1
        touched: set[Key] = set()
        came: list[Key] = []
        for p in res.pieces:
            key = (i, j, p.label)
            came.append(key)
            self.pieces[key] = p
            self.parent[key] = key
            self.members[key] = [key]
            self.open[key] = 0
            touched.add(key)
        for side, (di, dj, facing) in SIDES.items():
            n = (i + di, j + dj)
            if not (0 <= n[0] < self.rows and 0 <= n[1] < self.cols):
                continue
            mine = res.edges[side]
            if not self._arrived(n):  # open on this side until the neighbour comes
                for la in np.unique(mine[mine > 0]).tolist():
                    self.open[self._find((i, j, la))] += 1
                self.strips[(res.index, side)] = mine
                continue
            theirs = self.strips.pop((n, facing))
            both = (mine > 0) & (theirs > 0)
            for la, lb in sorted(set(zip(mine[both].tolist(), theirs[both].tolist(),
                                         strict=True))):
                ka, kb = (i, j, la), (n[0], n[1], lb)
                if self.pieces[ka].cls == self.pieces[kb].cls:
                    self._union(ka, kb)
            for lb in np.unique(theirs[theirs > 0]).tolist():  # the neighbour's side closes
                kb = (n[0], n[1], lb)
                self.open[self._find(kb)] -= 1
                touched.add(kb)
        for root in {self._find(k) for k in touched}:
            if self.open[root] == 0:
                self._finish(root)
        for key in came:  # still waiting for a neighbour: the outline goes to disk
            p = self.pieces.get(key)
            if p is not None and p.geom is not None:
                self.parking.put(key, p.geom)
                p.geom = None

    def _arrived(self, index: tuple[int, int]) -> bool:
        return bool(self.arrived[index[0] * self.cols + index[1]])

    def _finish(self, root: Key) -> None:
        keys = sorted(self.members.pop(root))
        del self.open[root]
        parts = [self.pieces.pop(k) for k in keys]
        for k, p in zip(keys, parts, strict=True):
            del self.parent[k]
            if p.geom is None:
                p.geom = self.parking.take(k)
        obj = build_object(self.plan, parts)
        if obj is not None:
            i, j, label = keys[0]
            self.spool.add(((i * self.cols + j) << 32) | label, obj)

    def close(self) -> ObjectSpool:
        """Every tile has arrived: the spool, complete."""
        missing = self.rows * self.cols - self.n_arrived
        if missing or self.pieces:
            raise RuntimeError(f"merge incomplete: {missing} tiles missing, "
                               f"{len(self.pieces)} pieces open")
        self.parking.close()
        self.spool.flush()
        return self.spool


def build_object(plan: Plan, parts: list[Piece]) -> ChangeObject | None:
    """One object from its pieces (in rank order): sums added up, outlines joined,
    classified; ``None`` when it is no object (under the minimum mapping unit)."""
    first = parts[0]
    stats = parts[0].stats if len(parts) == 1 else np.sum([p.stats for p in parts], axis=0)
    geom_px = first.geom if len(parts) == 1 else shapely.union_all([p.geom for p in parts])
    if len(parts) > 1 and first.cls == PixelClass.OTHER:
        geom_px = shapely.simplify(geom_px, OTHER_SIMPLIFY_PX, preserve_topology=True)
    t = plan.before.affine
    geom = shapely.transform(
        geom_px, lambda xy: np.column_stack(
            (t.a * xy[:, 0] + t.b * xy[:, 1] + t.c, t.d * xy[:, 0] + t.e * xy[:, 1] + t.f)
        )
    )
    if plan.method == "difference":
        area = float(stats[0] * plan.pixel_area_m2)
        verdict: Verdict | None = (
            Verdict("new_structure", round(min(1.0, stats[6] / stats[0]
                                               / (2 * plan.threshold)), 4), "difference")
            if area >= 40.0 else None
        )
    else:
        verdict = classify(PixelClass(first.cls), stats, geom, plan.pixel_area_m2,
                           plan.has_dsm, plan.threshold)
    if verdict is None:
        return None
    n = stats[0]
    return ChangeObject(
        kind=verdict.kind,
        score=verdict.score,
        cue=verdict.cue,
        area_m2=round(float(n * plan.pixel_area_m2), 2),
        geometry=geom,
        pixel_geometry=geom_px,
        measures={
            "height_gain_share": round(float(stats[4] / n), 4),
            "roof_share": round(float(stats[2] / n), 4),
            "mean_dz_m": round(float(stats[7] / n), 3) if plan.has_dsm else 0.0,
        },
    )


# ---- the whole run ---------------------------------------------------------------------


def iter_tiles(
    plan: Plan,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: Progress | None = None,
) -> Iterator[TileResult]:
    """:func:`detect_tile` over every tile, results as they come: a thread pool of
    ``workers`` (default: the CPU count), or the Dask cluster at ``scheduler`` (an
    address such as ``tcp://10.0.0.5:8786``; the files must be readable by its workers
    at the same paths; each worker is bounded by :func:`bound_memory`, see
    :mod:`gis.changes_dask`). Tiles are handed out in :meth:`Plan.tiles`'s order, at
    most two per worker thread ahead of the results taken, so results never pile up."""
    specs = plan.tiles()
    total = len(specs)
    todo = iter(specs)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    if scheduler is not None:
        from distributed import Client
        from distributed import as_completed as dask_completed

        from gis.changes_dask import BoundMemory

        with Client(scheduler, timeout=SCHEDULER_TIMEOUT_S) as client:
            client.register_plugin(BoundMemory())  # each worker bounded as the CLI is
            ahead = 2 * max(1, sum(client.nthreads().values()))
            running = dask_completed(
                [client.submit(detect_tile, s, pure=False) for s in islice(todo, ahead)])
            for fut in running:
                res = fut.result()
                fut.release()
                nxt = next(todo, None)
                if nxt is not None:
                    running.add(client.submit(detect_tile, nxt, pure=False))
                tick()
                yield res
        return
    n = workers or os.cpu_count() or 1
    if n <= 1:
        for spec in todo:
            res = detect_tile(spec)
            tick()
            yield res
        return
    with ThreadPoolExecutor(max_workers=n) as pool:
        pending = {pool.submit(detect_tile, s) for s in islice(todo, 2 * n)}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for nxt in islice(todo, len(finished)):
                pending.add(pool.submit(detect_tile, nxt))
            while finished:
                res = finished.pop().result()
                tick()
                yield res
                del res


def run_detection(
    plan: Plan,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: Progress | None = None,
    spool_dir: str | Path | None = None,
) -> Detection:
    """Every tile of ``plan``, merged as it comes into a spool on disk (in
    ``spool_dir``, default the system's temporary directory)."""
    spool = ObjectSpool(spool_dir)
    try:
        merger = Merger(plan, spool)
        trim = _trimmer()
        for k, res in enumerate(iter_tiles(plan, workers=workers, scheduler=scheduler,
                                           progress=progress), start=1):
            merger.add(res)
            del res
            if k % TRIM_EVERY == 0:
                trim()
        detection = Detection(merger.close(), plan)
        trim()  # what the last tiles left, before the mask and the GeoJSON
        return detection
    except BaseException:
        spool.close()
        raise


def detect_changes(
    before: str | Path,
    after: str | Path,
    before_dsm: str | Path | None = None,
    after_dsm: str | Path | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    block: int = BLOCK,
    method: str = "cva",
    coregister: bool = False,
    mask_out: str | Path | None = None,
    progress: Progress | None = None,
    spool_dir: str | Path | None = None,
) -> Detection:
    """Changed objects between two orthophotos (see the module docstring). The objects
    are kept on disk (``spool_dir``) until the detection is closed."""
    try:
        plan = plan_detection(before, after, before_dsm, after_dsm, block=block,
                              method=method, coregister=coregister)
        detection = run_detection(plan, workers=workers, scheduler=scheduler,
                                  progress=progress, spool_dir=spool_dir)
    finally:
        close_datasets()
    if mask_out is not None:
        try:
            write_mask(plan, detection.objects, mask_out)
        except BaseException:
            detection.close()
            raise
    return detection


MASK_VALUES = {kind: int(cls) for cls, kind in KINDS.items()}


MASK_BLOCK = 512  # the mask COG's tiles, pixels
# overviews keep the most telling class of the pixels they cover: new over removed over
# other over none (a 10 m shed must still show at 1:50 000, which sampling would lose)
_MASK_RANK = np.array([0, 3, 2, 1], np.uint8)  # class -> rank
_RANK_MASK = np.array([0, 3, 2, 1], np.uint8)  # rank -> class (the same swap)


def mask_overview_factors(width: int, height: int, block: int = MASK_BLOCK) -> list[int]:
    """The overview factors a COG of this size gets (2, 4, ... until the last one fits
    in one block), as GDAL's COG driver would choose them.

    >>> mask_overview_factors(20000, 18750)
    [2, 4, 8, 16, 32, 64]
    >>> mask_overview_factors(500, 400)
    []
    """
    out, f = [], 2
    while -(-width // (f // 2)) > block or -(-height // (f // 2)) > block:
        out.append(f)
        f *= 2
    return out


def mask_pool(classes: np.ndarray, factor: int) -> np.ndarray:
    """A class map reduced by ``factor`` (2) keeping the most telling class of each cell:
    new, then removed, then other. Edges that do not fill a cell count as no change.

    >>> m = np.array([[0, 3, 0], [1, 0, 2]], np.uint8)
    >>> mask_pool(m, 2).tolist()
    [[1, 2]]
    """
    h, w = classes.shape
    oh, ow = -(-h // factor), -(-w // factor)
    rank = np.zeros((oh * factor, ow * factor), np.uint8)
    rank[:h, :w] = _MASK_RANK[classes]
    pooled = rank.reshape(oh, factor, ow, factor).max(axis=(1, 3))
    return _RANK_MASK[pooled]


def pool_block(block: np.ndarray, col: int, row: int, factors: list[int], size: int,
               small: dict[int, np.ndarray]) -> Iterator[tuple[int, tuple[int, int, np.ndarray]]]:
    """The overview cells of one block of the mask at (``col``, ``row``), blocks being
    ``size`` (a power of 2) square: (level number from 1, (column, row, cells)) for the
    levels whose cells lie within the block; the cells of coarser levels (``factors``
    over ``size``) are pooled into ``small[factor]``, the whole level in memory."""
    level = block
    for k, f in enumerate(factors, start=1):
        level = mask_pool(level, 2)
        if f <= size:
            yield k, (col // f, row // f, level)
        else:  # one cell, shared with other blocks
            cells = small[f]
            cell = (row // f, col // f)
            if _MASK_RANK[level[0, 0]] > _MASK_RANK[cells[cell]]:
                cells[cell] = level[0, 0]


def write_mask(plan: Plan, objects: ObjectSpool, path: str | Path) -> Path:
    """The change mask over the overlap as a Cloud-Optimised GeoTIFF (uint8: 0 no change,
    1 new structure, 2 removed structure, 3 other), written block by block, each block
    from the objects the spool's index finds over it.

    The overviews are made here too, from each block as it is written (:func:`mask_pool`),
    and handed to the COG driver as they are: GDAL would otherwise compute them by
    reading the full image back in strips as wide as the image (memory that grows with
    the image's width) and would sample them (losing small objects at low zooms).
    """
    path = Path(path)
    c0, r0, w, h = plan.work
    transform = plan.before.affine @ Affine.translation(c0, r0)
    B = MASK_BLOCK
    profile = {
        "driver": "GTiff", "count": 1, "dtype": "uint8", "crs": plan.before.crs,
        "tiled": True, "blockxsize": B, "blockysize": B, "compress": "deflate",
        "nodata": None,
    }
    factors = mask_overview_factors(w, h, B)
    # levels whose pixels span blocks are pooled in memory: they are tiny (a level is
    # made only while the one before is over one block, so these are under w/B by h/B)
    small = {f: np.zeros((-(-h // f), -(-w // f)), np.uint8) for f in factors if f > B}
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        names = ["mask.tif"] + [f"overview-{f}.tif" for f in factors]
        outs = [rasterio.open(Path(tmp) / names[0], "w", width=w, height=h,
                              transform=transform, **profile)]
        try:
            for f, name in zip(factors, names[1:], strict=True):
                outs.append(rasterio.open(Path(tmp) / name, "w", width=-(-w // f),
                                          height=-(-h // f),
                                          transform=transform @ Affine.scale(f), **profile))
            for row in range(0, h, B):
                for col in range(0, w, B):
                    bw, bh = min(B, w - col), min(B, h - row)
                    hits = objects.within((c0 + col, r0 + row, c0 + col + bw, r0 + row + bh))
                    block = np.zeros((bh, bw), np.uint8)
                    if hits:
                        block = rasterize(
                            [(g, MASK_VALUES[kind]) for g, kind in hits], out_shape=(bh, bw),
                            transform=Affine.translation(c0 + col, r0 + row), fill=0,
                            dtype="uint8",
                        )
                    outs[0].write(block, 1, window=Window(col, row, bw, bh))
                    for k, (c, r, cells) in pool_block(block, col, row, factors, B, small):
                        outs[k].write(cells, 1, window=Window(c, r, cells.shape[1],
                                                              cells.shape[0]))
            for f, out in zip(factors, outs[1:], strict=True):
                if f > B:
                    out.write(small[f], 1)
        finally:
            for out in outs:
                out.close()
        vrt = Path(tmp) / "mask.vrt"
        vrt.write_text(_mask_vrt(w, h, transform, plan.before.crs, names))
        rasterio.shutil.copy(vrt, path, driver="COG", compress="DEFLATE", blocksize=B,
                             overviews="FORCE_USE_EXISTING")
    _trimmer()()  # GDAL's freed write buffers, before the GeoJSON
    return path


def _mask_vrt(width: int, height: int, transform: Affine, crs: str,
              names: list[str]) -> str:
    """A VRT of the mask whose overviews are the given files (the COG driver copies
    them as they are)."""
    from xml.sax.saxutils import escape

    def source(name: str) -> str:
        return (f'<SourceFilename relativeToVRT="1">{escape(name)}</SourceFilename>'
                "<SourceBand>1</SourceBand>")

    overviews = "".join(f"<Overview>{source(n)}</Overview>" for n in names[1:])
    return (
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
        f"<SRS>{escape(crs)}</SRS>"
        f"<GeoTransform>{', '.join(repr(v) for v in transform.to_gdal())}</GeoTransform>"
        '<VRTRasterBand dataType="Byte" band="1"><ColorInterp>Gray</ColorInterp>'
        f"<SimpleSource>{source(names[0])}"
        f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
        f'<DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/></SimpleSource>'
        f"{overviews}</VRTRasterBand></VRTDataset>"
    )


def _features(detection: Detection, precision: int) -> Iterator[dict[str, Any]]:
    from pyproj import CRS, Transformer

    tr = Transformer.from_crs(CRS.from_wkt(detection.crs), CRS.from_epsg(4326), always_xy=True)
    for k, o in enumerate(detection.objects, start=1):
        g = shapely.transform(o.geometry, lambda xy: np.column_stack(tr.transform(
            xy[:, 0], xy[:, 1])))
        g = shapely.set_precision(g, 10.0**-precision)
        yield {
            "type": "Feature",
            "id": k,
            "properties": {"kind": o.kind, "area_m2": o.area_m2, "score": o.score,
                           "cue": o.cue, **o.measures},
            "geometry": shapely.geometry.mapping(g),
        }


CRS84 = {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}


def _properties(plan: Plan) -> dict[str, Any]:
    return {
        "method": plan.method,
        "with_dsm": plan.has_dsm,
        "shift_px": list(plan.shift),
        "colour_threshold": plan.threshold,
        "radiometry": {"gain": list(plan.radiometry.gain),
                       "offset": list(plan.radiometry.offset)},
        "dsm_offset_m": plan.dsm_shift,
        "accuracy_note": ACCURACY_NOTE[plan.has_dsm],
    }


def to_geojson(detection: Detection, precision: int = 7) -> dict[str, Any]:
    """The objects as a CRS84 GeoJSON FeatureCollection (lon/lat), in memory."""
    return {
        "type": "FeatureCollection",
        "features": list(_features(detection, precision)),
        "crs": CRS84,
        "properties": _properties(detection.plan),
    }


def write_geojson(detection: Detection, path: str | Path, precision: int = 7) -> Path:
    """The same document as :func:`to_geojson`, byte for byte what ``json.dumps`` makes
    of it (plus a newline), written feature by feature: never all in memory."""
    import json

    path = Path(path)
    with path.open("w", encoding="utf-8") as out:
        out.write('{"type": "FeatureCollection", "features": [')
        for k, feature in enumerate(_features(detection, precision)):
            out.write((", " if k else "") + json.dumps(feature, ensure_ascii=False))
        out.write('], "crs": ' + json.dumps(CRS84) + ', "properties": '
                  + json.dumps(_properties(detection.plan), ensure_ascii=False) + "}\n")
    return path


ACCURACY_NOTE = {
    True: "height gain from the DSMs is the primary cue; colour change the second",
    False: "colour change only (no DSMs): less reliable. Roof-coloured yards, tarpaulins "
    "and greenhouse film can be flagged and unusual roof colours missed; classic "
    "colour-only methods reach F1 around 0.25 on real benchmarks (SZTAKI AirChange, OSCD)",
}
