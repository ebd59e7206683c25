"""What an observer above a surface model sees: GDAL's viewshed and a fast short-range one.

Two ways to the same answer, a boolean raster of the cells an observer ``observer_height_m``
above the surface at (x, y) can see within ``radius_m`` (a target ``target_height_m``
above a cell's surface counts as seen when nothing between rises above the line of
sight to it):

* :func:`gdal_viewshed` runs GDAL's ``gdal_viewshed`` on a DSM file: one long-range
  observer (a 3 km high point) at a time.
* :func:`line_of_sight` works on an array already in memory, for many short-range
  observers (street cameras, up to a few hundred metres): every target cell's sight
  line is traced cell by cell, with the tracing pattern computed once per range (for
  one octant; the other seven are its mirror images) and shared by every call.

:func:`sector_mask` cuts either to a camera's field of view.  All coordinates are in
the raster's CRS, which must be metric (the data's Gauss-Krüger zone); rasters must be
north-up with square cells.  The earth is taken as flat unless ``curvature_coef`` says
otherwise (at 3 km the drop is 0.6 m, at 200 m 3 mm).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from gis.errors import GisError

# the line_of_sight sampling pattern covers a square of (2 * n + 1) cells, n a multiple of
# this, at most MAX_LOS_CELLS: 256 cells is 512 m at 2 m, 256 m at 1 m
_PATTERN_QUANTUM = 32
MAX_LOS_CELLS = 256
# curvature and refraction coefficient GDAL uses by default (k = 1/7)
REFRACTION_CURVATURE_COEF = 0.85714


class ViewshedError(GisError):
    """A viewshed that cannot be computed."""


class ObserverOutsideError(ViewshedError):
    """The observer stands outside the surface model."""


class ViewshedParameterError(ViewshedError):
    """A height, radius, angle or raster that the viewshed cannot use."""


class GdalViewshedError(ViewshedError):
    """``gdal_viewshed`` is missing, cannot read the DSM, or failed."""


@dataclass(frozen=True)
class Viewshed:
    """Cells seen (``visible[row, col]``) on the grid ``transform`` in ``crs``."""

    visible: np.ndarray
    transform: Affine
    crs: str

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.visible.shape
        return int(rows), int(cols)


def _finite(name: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ViewshedParameterError(f"{name} must be a finite number, not {value!r}")
    return v


def _check_common(
    x: float, y: float, observer_height_m: float, radius_m: float, target_height_m: float
) -> tuple[float, float, float, float, float]:
    xs, ys = _finite("x", x), _finite("y", y)
    h = _finite("observer_height_m", observer_height_m)
    t = _finite("target_height_m", target_height_m)
    r = _finite("radius_m", radius_m)
    if r <= 0:
        raise ViewshedParameterError(f"radius_m must be positive, not {radius_m!r}")
    return xs, ys, h, r, t


def _cell_size(transform: Affine) -> float:
    a, b, _, d, e, _ = tuple(transform)[:6]
    if b != 0 or d != 0 or a <= 0 or not math.isclose(a, -e, rel_tol=1e-9):
        raise ViewshedParameterError(
            f"the raster must be north-up with square cells, not {tuple(transform)[:6]}"
        )
    return float(a)


# -- GDAL -------------------------------------------------------------------------------


def gdal_viewshed(
    dsm_path: str | os.PathLike[str],
    x: float,
    y: float,
    observer_height_m: float,
    radius_m: float,
    target_height_m: float = 0.0,
    *,
    curvature_coef: float = 0.0,
    band: int = 1,
) -> Viewshed:
    """The viewshed from (x, y) by GDAL's ``gdal_viewshed``, on the window of ``radius_m``.

    The observer stands ``observer_height_m`` above the surface of the cell holding
    (x, y); distances run from that cell's centre, and cells farther than ``radius_m``
    come back not visible.  The grid is the DSM's own, cut to the square of
    ``radius_m`` around the observer's cell (and to the DSM's edge).
    ``curvature_coef`` is GDAL's ``-cc``: 0 (the default here, unlike GDAL's) for a flat
    earth as :func:`line_of_sight` assumes, :data:`REFRACTION_CURVATURE_COEF` for
    GDAL's curvature with standard refraction.

    Raises :class:`ObserverOutsideError` when (x, y) is off the DSM and
    :class:`GdalViewshedError` when the tool is missing or fails.
    """
    x, y, h, r, t = _check_common(x, y, observer_height_m, radius_m, target_height_m)
    cc = _finite("curvature_coef", curvature_coef)
    exe = shutil.which("gdal_viewshed")
    if exe is None:
        raise GdalViewshedError("gdal_viewshed is not on PATH (install gdal-bin)")
    src = Path(dsm_path)
    try:
        with rasterio.open(src) as ds:
            left, bottom, right, top = ds.bounds
            crs = ds.crs
            _cell_size(ds.transform)
    except rasterio.errors.RasterioIOError as exc:
        raise GdalViewshedError(f"cannot open the DSM {src}: {exc}") from exc
    if crs is None or not crs.is_projected:
        raise ViewshedParameterError(f"the DSM {src} must be in a projected (metric) CRS")
    # gdal_viewshed 3.6 truncates the observer's cell position toward zero, so a point
    # less than a cell west or north of the raster is silently taken as on its edge
    if not (left <= x < right and bottom < y <= top):
        raise ObserverOutsideError(
            f"observer ({x}, {y}) lies outside the DSM {src.name} "
            f"({left}, {bottom}, {right}, {top})"
        )
    with tempfile.TemporaryDirectory(prefix="viewshed-") as tmp:
        out = Path(tmp) / "viewshed.tif"
        cmd = [
            exe, "-q", "-b", str(band), "-f", "GTiff",
            "-ox", repr(x), "-oy", repr(y), "-oz", repr(h), "-tz", repr(t),
            "-md", repr(r), "-cc", repr(cc),
            "-vv", "1", "-iv", "0", "-ov", "0",
            str(src), str(out),
        ]  # fmt: skip
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise GdalViewshedError(f"cannot run gdal_viewshed: {exc}") from exc
        if done.returncode != 0 or not out.exists():
            message = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
            if "outside" in message:
                raise ObserverOutsideError(f"observer ({x}, {y}): {message}")
            raise GdalViewshedError(f"gdal_viewshed failed: {message}")
        with rasterio.open(out) as res:
            visible = res.read(1) == 1
            transform = res.transform
            out_crs = res.crs
    return Viewshed(visible=visible, transform=transform, crs=_crs_name(out_crs or crs))


def _crs_name(crs: rasterio.crs.CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else str(crs.to_wkt())


# -- our own, for short ranges --------------------------------------------------------


@dataclass(frozen=True)
class _Pattern:
    """Sight lines from a cell to every cell of one octant (0 <= dc <= dr) within ``n``.

    Targets are sorted by distance, so those within any smaller radius are a prefix;
    ``start[i]:start[i + 1]`` are target i's intermediate cells ``(sr, sc)``: each cell
    nearest to a point of the line at quarter-cell steps, once, neither end, with
    ``sinv`` = 1 / distance (in cells) of the point of the line nearest its centre.
    """

    n: int
    dr: np.ndarray  # int32, per target
    dc: np.ndarray
    dist: np.ndarray  # float64, per target, cells
    tinv: np.ndarray  # float32, per target, 1 / dist
    start: np.ndarray  # int64, len targets + 1
    empty: np.ndarray  # bool, per target: no intermediate cell (a neighbour)
    sr: np.ndarray  # int32, per sample
    sc: np.ndarray
    sinv: np.ndarray  # float32, per sample


_STEP = 0.25  # cells between the points sampled along a sight line
_CHUNK = 1024  # targets whose sight lines are traced at once (bounds memory)


@lru_cache(maxsize=4)
def _pattern(n: int) -> _Pattern:
    dr, dc = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = (dc <= dr) & (dr >= 1) & (dr * dr + dc * dc <= n * n)
    dr, dc = dr[keep].astype(np.int64), dc[keep].astype(np.int64)
    order = np.lexsort((dc, dr, dr * dr + dc * dc))
    dr, dc = dr[order], dc[order]
    dist = np.sqrt((dr * dr + dc * dc).astype(np.float64))
    parts = [_trace(dr[i : i + _CHUNK], dc[i : i + _CHUNK]) for i in range(0, dr.size, _CHUNK)]
    counts = np.concatenate([p[0] for p in parts])
    return _Pattern(
        n=n,
        dr=dr.astype(np.int32),
        dc=dc.astype(np.int32),
        dist=dist,
        tinv=(1.0 / dist).astype(np.float32),
        start=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        empty=counts == 0,
        sr=np.concatenate([p[1] for p in parts]),
        sc=np.concatenate([p[2] for p in parts]),
        sinv=np.concatenate([p[3] for p in parts]),
    )


def _trace(dr: np.ndarray, dc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per target, the count of its intermediate cells; then their (row, col, 1 / dist)."""
    dist = np.sqrt((dr * dr + dc * dc).astype(np.float64))
    steps = np.ceil(dist / _STEP).astype(np.int64) - 1  # points strictly between the ends
    owner = np.repeat(np.arange(dr.size), steps)
    first = np.concatenate([[0], np.cumsum(steps)[:-1]])
    frac = (np.arange(owner.size) - first[owner] + 1) * _STEP / dist[owner]
    cr = np.rint(frac * dr[owner]).astype(np.int64)  # half to even: mirror-symmetric
    cc = np.rint(frac * dc[owner]).astype(np.int64)
    ok = ~((cr == 0) & (cc == 0)) & ~((cr == dr[owner]) & (cc == dc[owner]))
    ok[1:] &= ~((owner[1:] == owner[:-1]) & (cr[1:] == cr[:-1]) & (cc[1:] == cc[:-1]))
    owner, cr, cc = owner[ok], cr[ok], cc[ok]
    proj = (cr * dr[owner] + cc * dc[owner]) / dist[owner]
    return (
        np.bincount(owner, minlength=dr.size),
        cr.astype(np.int32),
        cc.astype(np.int32),
        (1.0 / np.maximum(proj, 0.5)).astype(np.float32),
    )


# the eight images of the octant 0 <= dc <= dr: (row sign, col sign, swap)
_OCTANTS = tuple((sr, sc, sw) for sw in (False, True) for sr in (1, -1) for sc in (1, -1))


def line_of_sight(
    dem: np.ndarray,
    transform: Affine,
    x: float,
    y: float,
    observer_height_m: float,
    radius_m: float,
    target_height_m: float = 0.0,
    *,
    within: np.ndarray | None = None,
) -> np.ndarray:
    """Cells of ``dem`` seen from (x, y): a boolean array of ``dem``'s shape.

    The observer's eye is ``observer_height_m`` above the centre of the cell holding
    (x, y).  A cell whose centre is within ``radius_m`` of (x, y) is seen when the
    elevation angle to its surface plus ``target_height_m`` is at least that of every
    cell its sight line passes (the cells nearest points at quarter-cell steps, each at
    the distance of the line's point nearest its centre).  NaN cells never block and
    are never seen.  ``within`` (a boolean array of ``dem``'s shape, e.g.
    :func:`sector_mask`) limits the answer, and the work, to those cells.

    The range is at most :data:`MAX_LOS_CELLS` cells; use :func:`gdal_viewshed` beyond.

    >>> import numpy as np
    >>> from affine import Affine
    >>> dem = np.zeros((5, 9), dtype=np.float32)
    >>> dem[:, 5] = 10.0  # a wall east of the observer
    >>> seen = line_of_sight(dem, Affine(1, 0, 0, 0, -1, 5), 2.5, 2.5, 2.0, 10.0)
    >>> seen[2].astype(int).tolist()
    [1, 1, 1, 1, 1, 1, 0, 0, 0]
    """
    x, y, h, r, t = _check_common(x, y, observer_height_m, radius_m, target_height_m)
    if dem.ndim != 2:
        raise ViewshedParameterError(f"dem must be a 2-D array, not {dem.ndim}-D")
    res = _cell_size(transform)
    rows, cols = dem.shape
    fc, fr = ~transform @ (x, y)
    c0, r0 = math.floor(fc), math.floor(fr)
    if not (0 <= r0 < rows and 0 <= c0 < cols):
        raise ObserverOutsideError(
            f"observer ({x}, {y}) lies outside the {rows}x{cols} grid at {tuple(transform)[:6]}"
        )
    if within is not None and within.shape != dem.shape:
        raise ViewshedParameterError(f"within has shape {within.shape}, dem {dem.shape}")
    reach = r / res + 1.0  # cells from the observer's cell centre: covers (x, y) + radius
    if reach > MAX_LOS_CELLS:
        raise ViewshedParameterError(
            f"radius {r} m is {reach:.0f} cells; line_of_sight goes to {MAX_LOS_CELLS} "
            "(use gdal_viewshed for long ranges)"
        )
    pat = _pattern(_PATTERN_QUANTUM * math.ceil(reach / _PATTERN_QUANTUM))
    n_t = int(np.searchsorted(pat.dist, reach, side="right"))
    n_s = int(pat.start[n_t])
    tr, tc = pat.dr[:n_t], pat.dc[:n_t]
    sr, sc = pat.sr[:n_s], pat.sc[:n_s]
    sinv, tinv = pat.sinv[:n_s], pat.tinv[:n_t]
    starts, empty = pat.start[:n_t], pat.empty[:n_t]

    # the square of 2m+1 cells around the observer's cell, -inf off the dem
    m = math.ceil(reach)
    side = 2 * m + 1
    ra, rb = max(r0 - m, 0), min(r0 + m + 1, rows)
    ca, cb = max(c0 - m, 0), min(c0 + m + 1, cols)
    inner = (slice(ra - r0 + m, rb - r0 + m), slice(ca - c0 + m, cb - c0 + m))
    pad = np.full((side, side), -np.inf, dtype=np.float32)
    block = np.asarray(dem[ra:rb, ca:cb], dtype=np.float32)
    pad[inner] = np.where(np.isnan(block), -np.inf, block)
    if not np.isfinite(pad[m, m]):
        raise ObserverOutsideError(f"observer ({x}, {y}) stands on a cell with no surface")
    flat = pad.ravel()
    centre = m * side + m
    z0 = np.float32(float(pad[m, m]) + h)
    tz = np.float32(t)

    # the cells asked for: within radius_m of (x, y) itself, on the dem, and `within`
    xc = transform.c + (c0 - m + 0.5 + np.arange(side)) * res
    yc = transform.f - (r0 - m + 0.5 + np.arange(side)) * res
    asked = (xc[np.newaxis, :] - x) ** 2 + (yc[:, np.newaxis] - y) ** 2 <= r * r
    asked &= np.isfinite(pad)
    if within is not None:
        w = np.zeros((side, side), dtype=bool)
        w[inner] = within[ra:rb, ca:cb]
        asked &= w
    want = asked.ravel()
    seen = np.zeros(side * side, dtype=bool)
    seen[centre] = want[centre]

    idx = np.empty(n_s, dtype=np.int32)
    tan = np.empty(n_s, dtype=np.float32)
    for srow, scol, swap in _OCTANTS:
        a, b = (tc, tr) if swap else (tr, tc)
        targets = centre + srow * side * a + scol * b
        if not want[targets].any():
            continue
        horizon = np.full(n_t, -np.inf, dtype=np.float32)
        if n_s:
            # the sight lines' cells in this octant's image, as flat indices into `pad`
            u, v = (sc, sr) if swap else (sr, sc)
            np.multiply(u, srow * side, out=idx)
            idx += centre
            if scol > 0:
                idx += v
            else:
                idx -= v
            np.take(flat, idx, out=tan)
            tan -= z0
            tan *= sinv  # tangent of the elevation angle, metres per cell
            full = ~empty
            horizon[full] = np.maximum.reduceat(tan, starts)[full]
        target_tan = (flat[targets] + tz - z0) * tinv
        seen[targets] = target_tan >= horizon
    seen &= want

    out = np.zeros(dem.shape, dtype=bool)
    out[ra:rb, ca:cb] = seen.reshape(side, side)[inner]
    return out


# -- camera sectors ---------------------------------------------------------------------


def sector_mask(
    shape: tuple[int, int],
    transform: Affine,
    x: float,
    y: float,
    heading_deg: float,
    fov_deg: float,
    range_m: float,
) -> np.ndarray:
    """Cells whose centres lie in the sector seen by a camera at (x, y).

    ``heading_deg`` is the view direction clockwise from grid north, ``fov_deg`` the
    horizontal field of view centred on it (360 or more: the full disc), ``range_m``
    the radius; edges are inside.  The camera's own position always counts.

    >>> from affine import Affine
    >>> m = sector_mask((3, 3), Affine(1, 0, 0, 0, -1, 3), 1.5, 1.5, 90.0, 90.0, 1.0)
    >>> m.astype(int).tolist()
    [[0, 0, 0], [0, 1, 1], [0, 0, 0]]
    """
    x, y = _finite("x", x), _finite("y", y)
    heading, fov = _finite("heading_deg", heading_deg), _finite("fov_deg", fov_deg)
    rng = _finite("range_m", range_m)
    if fov <= 0:
        raise ViewshedParameterError(f"fov_deg must be positive, not {fov_deg!r}")
    if rng < 0:
        raise ViewshedParameterError(f"range_m must not be negative, not {range_m!r}")
    rows, cols = shape
    cc = np.arange(cols) + 0.5
    rr = np.arange(rows) + 0.5
    dx = transform.a * cc[np.newaxis, :] + transform.b * rr[:, np.newaxis] + transform.c - x
    dy = transform.d * cc[np.newaxis, :] + transform.e * rr[:, np.newaxis] + transform.f - y
    d2 = dx * dx + dy * dy
    inside: np.ndarray = d2 <= rng * rng
    if fov >= 360.0:
        return inside
    # within fov/2 of the heading: the cosine of the angle off it is at least cos(fov/2)
    hx, hy = math.sin(math.radians(heading)), math.cos(math.radians(heading))
    along = dx * hx + dy * hy
    return inside & (along >= np.sqrt(d2) * (math.cos(math.radians(fov / 2.0)) - 1e-12))
