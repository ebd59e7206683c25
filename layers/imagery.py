"""The imagery registry: drone orthophotos and change masks the server serves as raster
tiles and as Cloud-Optimised GeoTIFFs (table ``imagery``, migration 0006).

:func:`inspect` reads a GeoTIFF with rasterio and refuses, with an
:class:`ImageryRefused` naming the fault, what cannot be served: an unreadable file, no
georeference (no CRS, an identity transform, ground control points only), a CRS that does
not transform to EPSG:4490, an image that does not overlap China, a band layout or data
type that is not 8-bit grey/RGB(A) (orthophotos) or one uint8 band (change masks).
:func:`to_cog` writes a COG (``gdal_translate -of COG`` with its progress, or rasterio's
COG driver when the GDAL programs are absent) unless the file is one already.
:func:`footprint` is the valid data's outline in EPSG:4490, traced on an overview.
:func:`add` runs the three into ``root`` (the data directory's ``imagery/``) and inserts
the row; a refusal leaves no file behind. :func:`register_mask` does the same inside the
caller's transaction for a change run's mask.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from layers.errors import Conflict, InvalidInput, NotFound

KINDS = ("orthophoto", "change_mask")
CHINA = (73.0, 3.0, 136.0, 54.0)  # lon/lat box of CGCS2000's domain (as layers.edits)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
FOOTPRINT_PX = 1024  # the valid-data outline is traced on an overview at most this wide

Progress = Callable[[float], None]  # fraction done, 0..1


class ImageryRefused(InvalidInput):
    """A GeoTIFF that cannot be served as imagery; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`inspect` reads of a GeoTIFF."""

    path: Path
    crs: str  # "EPSG:32650", or the WKT when it has no EPSG code
    resolution_m: float
    width: int
    height: int
    bands: int
    dtype: str
    is_cog: bool
    bounds_lonlat: tuple[float, float, float, float]


@dataclass(frozen=True)
class Image:
    """A registered image (a row of ``imagery``)."""

    id: int
    name: str
    kind: str
    path: Path
    captured_on: dt.date | None
    run_id: int | None
    crs: str
    resolution_m: float
    width: int
    height: int
    bands: int
    added_at: dt.datetime
    bounds: tuple[float, float, float, float]  # the footprint's lon/lat box (EPSG:4490)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "captured_on": self.captured_on and
                self.captured_on.isoformat(), "run_id": self.run_id, "crs": self.crs,
                "resolution_m": self.resolution_m, "width": self.width,
                "height": self.height, "bands": self.bands,
                "added_at": self.added_at.isoformat(), "bbox": list(self.bounds)}


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise InvalidInput(f"imagery name {name!r}: 1-64 letters, digits, '_', '-' or '.', "
                           "starting with a letter or digit", parameter="name")
    return name


# -- reading a GeoTIFF ----------------------------------------------------------------------


def inspect(path: str | Path, kind: str = "orthophoto") -> ImageInfo:
    """Read ``path``'s georeference and layout, or refuse it (:class:`ImageryRefused`)."""
    import rasterio
    from rasterio.errors import RasterioIOError
    from rasterio.warp import transform_bounds

    if kind not in KINDS:
        raise InvalidInput(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    path = Path(path)
    try:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                if ds.gcps[0]:
                    raise ImageryRefused(
                        f"{path.name}: georeferenced by ground control points only; warp it "
                        "first (gdalwarp -t_srs EPSG:4490 ...)")
                raise ImageryRefused(f"{path.name}: no georeference (no CRS)")
            if ds.transform.is_identity:
                raise ImageryRefused(f"{path.name}: no georeference (identity geotransform)")
            try:
                bounds = transform_bounds(ds.crs, "EPSG:4490", *ds.bounds, densify_pts=21)
            except Exception as exc:  # noqa: BLE001 - GDAL/PROJ raise several kinds
                raise ImageryRefused(f"{path.name}: unknown CRS, it does not transform to "
                                     f"EPSG:4490 ({_crs_name(ds.crs)})") from exc
            if not all(math.isfinite(v) for v in bounds):
                raise ImageryRefused(f"{path.name}: unknown CRS, it does not transform to "
                                     f"EPSG:4490 ({_crs_name(ds.crs)})")
            _check_layout(path.name, kind, ds)
            res = _resolution_m(ds, bounds)
            layout = ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT", "")
            info = ImageInfo(path, _crs_name(ds.crs), res, ds.width, ds.height, ds.count,
                             ds.dtypes[0], layout.upper() == "COG", tuple(bounds))  # type: ignore[arg-type]
    except RasterioIOError as exc:
        raise ImageryRefused(f"{path.name}: unreadable as a raster ({exc})") from exc
    lx, ly, hx, hy = CHINA
    w, s, e, n = info.bounds_lonlat
    if e < lx or w > hx or n < ly or s > hy:
        raise ImageryRefused(
            f"{path.name}: does not overlap China (lon {w:.4f}..{e:.4f}, lat {s:.4f}..{n:.4f} "
            "in EPSG:4490); check its CRS and axis order")
    return info


def _crs_name(crs: Any) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else str(crs.to_wkt())


def _check_layout(name: str, kind: str, ds: Any) -> None:
    from rasterio.enums import ColorInterp

    if kind == "change_mask":
        if ds.count != 1 or ds.dtypes[0] != "uint8":
            raise ImageryRefused(f"{name}: a change mask is one uint8 band (0 none, 1 new, "
                                 f"2 removed, 3 other), not {ds.count} band(s) of {ds.dtypes[0]}")
        return
    if ds.dtypes[0] != "uint8":
        raise ImageryRefused(
            f"{name}: {ds.dtypes[0]} data; tiles are drawn from 8-bit imagery: scale it first "
            "(gdal_translate -ot Byte -scale 0 4095 0 255 for 12-bit)")
    alpha = ColorInterp.alpha in ds.colorinterp
    if ds.count - alpha not in (1, 3):
        raise ImageryRefused(f"{name}: {ds.count} bands; an orthophoto is grey or RGB, "
                             "with an optional alpha band")


def _resolution_m(ds: Any, bounds: Sequence[float]) -> float:
    rx, ry = abs(ds.transform.a), abs(ds.transform.e)
    if ds.crs.is_geographic:
        lat = math.radians((bounds[1] + bounds[3]) / 2)
        return min(rx * math.cos(lat), ry) * 111_320.0
    return min(rx, ry) * float(ds.crs.linear_units_factor[1])


def to_cog(src: Path, dst: Path, kind: str, progress: Progress | None = None) -> None:
    """Write ``src`` as a Cloud-Optimised GeoTIFF at ``dst`` (512-pixel tiles, DEFLATE,
    overviews averaged for orthophotos, nearest for masks)."""
    resampling = "NEAREST" if kind == "change_mask" else "AVERAGE"
    options = {"COMPRESS": "DEFLATE", "PREDICTOR": "YES", "BLOCKSIZE": "512",
               "RESAMPLING": resampling, "OVERVIEWS": "IGNORE_EXISTING"}
    exe = shutil.which("gdal_translate")
    tmp = dst.with_name(dst.name + ".part")
    try:
        if exe is None:
            import rasterio.shutil

            rasterio.shutil.copy(src, tmp, driver="COG", **options)
        else:
            _gdal_translate(exe, src, tmp, options, progress)
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    if progress is not None:
        progress(1.0)


def _gdal_translate(exe: str, src: Path, dst: Path, options: dict[str, str],
                    progress: Progress | None) -> None:
    args = [exe, "-of", "COG"]
    for k, v in options.items():
        args += ["-co", f"{k}={v}"]
    proc = subprocess.Popen([*args, str(src), str(dst)], stdout=subprocess.PIPE,  # noqa: S603
                            stderr=subprocess.PIPE, text=True, bufsize=0)
    assert proc.stdout is not None and proc.stderr is not None  # noqa: S101 - PIPEs above
    digits = ""
    while True:  # "0...10...20...": GDAL's terminal progress, one character at a time
        ch = proc.stdout.read(1)
        if not ch:
            break
        if ch.isdigit():
            digits += ch
        else:  # a number counts only when dots follow it ("Input file size is 3999, ..." not)
            if ch == "." and digits and int(digits) <= 100 and progress is not None:
                progress(min(int(digits), 99) / 100)
            digits = ""
    err = proc.stderr.read()
    if proc.wait() != 0:
        raise ImageryRefused(f"{src.name}: could not be written as a COG: {err.strip()}")


def footprint(path: Path) -> Any:
    """The outline of ``path``'s valid data as a shapely Polygon in EPSG:4490 (lon/lat),
    traced on an overview of at most :data:`FOOTPRINT_PX` pixels; a valid area in several
    pieces is given as their convex hull."""
    import rasterio
    import shapely
    from rasterio.features import shapes
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape

    with rasterio.open(path) as ds:
        f = max(1.0, max(ds.width, ds.height) / FOOTPRINT_PX)
        h, w = max(1, round(ds.height / f)), max(1, round(ds.width / f))
        mask = ds.dataset_mask(out_shape=(h, w))
        t = ds.transform @ ds.transform.scale(ds.width / w, ds.height / h)
        pieces = [shape(g) for g, v in shapes(mask, mask=mask > 0, transform=t) if v]
        if not pieces:
            raise ImageryRefused(f"{path.name}: holds no valid pixel (all nodata)")
        geom = shapely.union_all(pieces).simplify(abs(t.a) * 0.5)
        if geom.geom_type != "Polygon":
            geom = geom.convex_hull
        geom = shapely.Polygon(geom.exterior)  # holes of missing data do not matter here
        step = max(geom.length / 400, abs(t.a))
        out = transform_geom(ds.crs, "EPSG:4490", mapping(shapely.segmentize(geom, step)))
    return shape(out)


# -- the registry ---------------------------------------------------------------------------

_SELECT = ("SELECT id, name, kind, path, captured_on, run_id, crs, resolution_m, width, "
           "height, bands, added_at, ST_XMin(footprint), ST_YMin(footprint), "
           "ST_XMax(footprint), ST_YMax(footprint) FROM imagery ")
_INSERT = (
    "INSERT INTO imagery (name, kind, path, captured_on, run_id, crs, resolution_m, width, "
    "height, bands, footprint) VALUES (%(name)s, %(kind)s, %(path)s, %(captured_on)s, "
    "%(run_id)s, %(crs)s, %(resolution_m)s, %(width)s, %(height)s, %(bands)s, "
    "ST_SetSRID(ST_GeomFromText(%(wkt)s), 4490)) RETURNING id")


def _image(row: Sequence[Any]) -> Image:
    return Image(row[0], row[1], row[2], Path(row[3]), row[4], row[5], row[6], row[7],
                 row[8], row[9], row[10], row[11], (row[12], row[13], row[14], row[15]))


def _row(name: str, kind: str, path: Path, info: ImageInfo, outline: Any,
         captured_on: dt.date | None, run_id: int | None) -> dict[str, Any]:
    return {"name": name, "kind": kind, "path": str(path), "captured_on": captured_on,
            "run_id": run_id, "crs": info.crs, "resolution_m": info.resolution_m,
            "width": info.width, "height": info.height, "bands": info.bands,
            "wkt": outline.wkt}


def prepare(src: Path, root: Path, kind: str, progress: Progress | None = None
            ) -> tuple[Path, ImageInfo, Any]:
    """Inspect ``src``, write its COG into ``root`` (a new file, even when ``src`` is a COG
    already: the registry owns what it serves) and trace its footprint. Returns the COG's
    path, its info and footprint; on a refusal nothing is left in ``root``."""
    first = inspect(src, kind)
    root.mkdir(parents=True, exist_ok=True)
    dst = root / f"{kind}-{uuid.uuid4().hex[:12]}.tif"
    try:
        if first.is_cog:
            shutil.copyfile(src, dst)
            if progress is not None:
                progress(1.0)
        else:
            to_cog(src, dst, kind, progress)
        info = inspect(dst, kind)
        outline = footprint(dst)
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    lx, ly, hx, hy = CHINA
    w, s, e, n = outline.bounds
    if e < lx or w > hx or n < ly or s > hy:
        dst.unlink(missing_ok=True)
        raise ImageryRefused(f"{src.name}: its valid data does not overlap China")
    return dst, info, outline


def add(conn: psycopg.Connection[Any], root: Path, src: str | Path, name: str,
        kind: str = "orthophoto", captured_on: dt.date | None = None,
        progress: Progress | None = None) -> Image:
    """Register ``src`` under ``name`` in the caller's transaction (the caller commits);
    its COG goes into ``root``. A refused or duplicate image leaves no file."""
    check_name(name)
    src = Path(src)
    if not src.is_file():
        raise ImageryRefused(f"{src}: no such file")
    if conn.execute("SELECT 1 FROM imagery WHERE name = %s", (name,)).fetchone():
        raise Conflict(f"imagery {name!r} exists already; remove it first", name=name)
    dst, info, outline = prepare(src, root, kind, progress)
    try:
        conn.execute(_INSERT, _row(name, kind, dst, info, outline, captured_on, None))
        return lookup(conn, name)
    except BaseException:
        dst.unlink(missing_ok=True)
        raise


async def register_mask(conn: psycopg.AsyncConnection[Any], run_id: int, cog: Path,
                        info: ImageInfo, outline: Any) -> str:
    """Register a change run's mask (prepared by :func:`prepare`) in the caller's
    transaction, named ``run-<id>-mask``."""
    name = f"run-{run_id}-mask"
    await conn.execute(_INSERT, _row(name, "change_mask", cog, info, outline, None, run_id))
    return name


def list_images(conn: psycopg.Connection[Any], kind: str | None = None) -> list[Image]:
    rows = conn.execute(_SELECT + "WHERE %(kind)s::text IS NULL "
                        "OR kind = %(kind)s ORDER BY name", {"kind": kind}).fetchall()
    return [_image(r) for r in rows]


def lookup(conn: psycopg.Connection[Any], name: str) -> Image:
    row = conn.execute(_SELECT + "WHERE name = %s",
                       (name,)).fetchone()
    if row is None:
        raise NotFound(f"no imagery named {name!r}", name=name)
    return _image(row)


def remove(conn: psycopg.Connection[Any], name: str) -> Image:
    """Delete ``name``'s row (the caller commits) and, once committed, call
    :func:`delete_file` with the returned image."""
    image = lookup(conn, name)
    conn.execute("DELETE FROM imagery WHERE id = %s", (image.id,))
    return image


def delete_file(root: Path, image: Image) -> bool:
    """Remove the image's COG when it lives in ``root`` (files elsewhere are not ours)."""
    path = image.path.resolve()
    if path.parent != root.resolve():
        return False
    path.unlink(missing_ok=True)
    return True


# -- what the tile routes read (async, the server's pool) -----------------------------------


async def alist_images(conn: psycopg.AsyncConnection[Any]) -> list[Image]:
    cur = await conn.execute(_SELECT + "ORDER BY name")
    return [_image(r) for r in await cur.fetchall()]


async def alookup(conn: psycopg.AsyncConnection[Any], name: str) -> Image:
    cur = await conn.execute(_SELECT + "WHERE name = %s",
                             (name,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no imagery named {name!r}", name=name)
    return _image(row)


async def arun_mask(conn: psycopg.AsyncConnection[Any], run_id: int) -> Image:
    cur = await conn.execute(
        _SELECT + "WHERE run_id = %s AND kind = 'change_mask' "
        "ORDER BY id DESC LIMIT 1", (run_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"change run {run_id} has no mask registered", run_id=run_id)
    return _image(row)


async def aorthophotos(conn: psycopg.AsyncConnection[Any],
                       bbox: tuple[float, float, float, float] | None = None) -> list[Image]:
    """Orthophotos newest first (capture date, then registration), those whose footprint
    meets ``bbox`` (lon/lat, EPSG:4490) when given."""
    cur = await conn.execute(
        _SELECT + "WHERE kind = 'orthophoto' AND ("
        "%(w)s::float8 IS NULL OR footprint && ST_MakeEnvelope(%(w)s, %(s)s, %(e)s, %(n)s, "
        "4490)) ORDER BY captured_on DESC NULLS LAST, added_at DESC, id DESC",
        dict(zip("wsen", bbox or (None,) * 4, strict=True)))
    return [_image(r) for r in await cur.fetchall()]
