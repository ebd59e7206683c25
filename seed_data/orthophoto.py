"""A two-epoch drone orthophoto pair of the demo town, with its DSMs and the truth.

:func:`write_pair` renders a rectangle of the demo town (picked by ``seed`` among its
village and farmland micro-grids) twice, months apart, as a drone team would deliver
it, and writes what was changed on purpose as truth polygons:

* epoch 1 (``before.tif``): RGB, uint8, the town's Gauss-Krüger zone, 0.4 m cells,
  spring (green wheat), sun from the south-south-east;
* epoch 2 (``after.tif``): another CRS (UTM 50N, EPSG:32650) and resolution (0.5 m),
  an extent moved by ~7 % (partial overlap) with an irregular flight footprint
  (nodata 0, or an alpha band with ``alpha=True``), uint8 or 12-bit uint16,
  a sub-metre georeferencing error (``shift_m``), an exposure and white-balance
  shift, early summer: about half the wheat ripened golden, a fifth ploughed, the sun
  from the south-south-west and higher (shadows move);
* what changed on purpose: new steel sheds with blue or white roofs on farmland
  parcels without permit (the illegal ones), permitted construction on parcels with
  an approved permit, demolished buildings (rubble), and the crop changes;
* ``before_dsm.tif`` / ``after_dsm.tif``: surface models at 1 m on each epoch's grid
  (ground of :func:`seed_data.surface.ground_m`, buildings, crops, photogrammetric
  noise; the later one carries the same shift and a vertical bias of 1.3 m);
* ``truth.geojson``: CRS84 polygons with ``kind`` (``new_structure``,
  ``removed_structure``, ``other``), ``detail`` (shed, permitted_construction,
  demolished, crop_ripened, ploughed) and the parcel's code, approved use and permit.

Everything is drawn tile by tile (memory does not grow with the size) from random
numbers keyed by (seed, epoch, tile): the same town, seed and options give the same
files, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.features import rasterize
from rasterio.transform import from_origin
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from shapely import affinity

from gis.crs import STORAGE_EPSG, transformer
from seed_data.surface import ground_m
from seed_data.town import Progress, Town

TILE = 512
AFTER_EPSG = 32650  # WGS 84 / UTM 50N: what drone software often delivers here
FARMLAND = ("0101", "0102", "0103")
_STREAM = 2_000_003  # keeps this generator's random numbers apart from the town's

# colours, ~0..1
FIELD_GREEN = (0.32, 0.46, 0.20)
FIELD_RIPE = (0.74, 0.64, 0.33)
FIELD_PLOUGHED = (0.44, 0.35, 0.26)
LAND_COLOUR = {
    "0201": (0.22, 0.36, 0.17),  # orchard
    "0301": (0.16, 0.28, 0.14),  # forest
    "1104": (0.14, 0.22, 0.24),  # pond
    "0809": (0.30, 0.45, 0.22),  # park
}
YARD = (0.52, 0.49, 0.44)
ROAD = {"main": (0.36, 0.36, 0.37), "secondary": (0.38, 0.38, 0.39), "local": (0.55, 0.54, 0.50)}
ROOF = {
    "red": (0.62, 0.30, 0.24),
    "dark": (0.38, 0.38, 0.40),
    "blue": (0.20, 0.36, 0.68),
    "white": (0.86, 0.86, 0.86),
    "concrete": (0.70, 0.70, 0.68),
}
ROOF_CHOICE = {
    "rural_residential": (("red", "dark"), (0.55, 0.45)),
    "agricultural": (("blue", "white"), (0.5, 0.5)),
    "industrial": (("blue", "white", "concrete"), (0.4, 0.3, 0.3)),
    "residential": (("concrete", "dark"), (0.6, 0.4)),
    "commercial": (("concrete", "dark"), (0.6, 0.4)),
    "public": (("concrete", "dark"), (0.6, 0.4)),
}
RUBBLE = (0.50, 0.44, 0.37)
SUN = {1: (160.0, 50.0), 2: (200.0, 62.0)}  # azimuth (deg from north), elevation
EXPOSURE = ((1.10, 1.06, 0.97), (0.02, 0.015, 0.03))  # epoch 2: gain, offset per band


@dataclass(frozen=True)
class PairInfo:
    """Where the pair was written and what it holds."""

    before: Path
    after: Path
    before_dsm: Path
    after_dsm: Path
    truth: Path
    before_epsg: int
    after_epsg: int
    bounds: tuple[float, float, float, float]  # the scene, in before_epsg
    counts: dict[str, int]


@dataclass
class _Thing:
    """Something drawn: a metric polygon, its material (colour) and height."""

    geom: shapely.Geometry
    colour: tuple[float, float, float]
    height: float
    texture: float = 0.0  # extra per-pixel noise
    stripes: tuple[float, float, float] = (0.0, 0.0, 0.0)  # amplitude, angle, period (m)


@dataclass
class _Scene:
    epsg: int
    box: shapely.Geometry
    box2: shapely.Geometry  # the second flight's rectangle...
    footprint: shapely.Geometry  # ...and the part of it with data
    ground: dict[int, list[_Thing]]  # per epoch: land cover and roads, drawn first
    roofs: dict[int, list[_Thing]]  # per epoch: buildings (cast shadows, have height)
    crop_height: dict[int, list[tuple[shapely.Geometry, float]]]
    truth: list[dict[str, Any]]


def _metric(town: Town, table: str) -> tuple[list[dict[str, Any]], np.ndarray]:
    rows = town.tables.get(table, [])
    to_metric = transformer(STORAGE_EPSG, town.metric_epsg)
    geoms = np.array([r["geom"] for r in rows], dtype=object)
    if len(geoms):
        geoms = shapely.transform(
            geoms, lambda xy: np.column_stack(to_metric.transform(xy[:, 0], xy[:, 1]))
        )
    return rows, geoms


def _rect(cx: float, cy: float, w: float, d: float, angle: float) -> shapely.Geometry:
    r = shapely.box(cx - w / 2, cy - d / 2, cx + w / 2, cy + d / 2)
    return affinity.rotate(r, angle, origin=(cx, cy), use_radians=True)


def _pick(rng: np.random.Generator, options: tuple[tuple[str, ...], tuple[float, ...]]) -> str:
    names, weights = options
    return str(rng.choice(list(names), p=list(weights)))


def _jitter(rng: np.random.Generator, c: tuple[float, float, float], s: float = 0.025
            ) -> tuple[float, float, float]:
    j = rng.normal(0, s, 3)
    return tuple(float(np.clip(v + d, 0.02, 0.98)) for v, d in zip(c, j, strict=True))  # type: ignore[return-value]


def build_scene(town: Town, seed: int, size_m: tuple[float, float]) -> _Scene:
    """Choose the rectangle and decide what is where in both epochs (metric geometries)."""
    rng = np.random.default_rng([seed, _STREAM])
    grids, ggeoms = _metric(town, "micro_grids")
    cand = [i for i, g in enumerate(grids) if g["kind"] in ("village", "farmland")]
    if not cand:
        raise ValueError("the town has no village or farmland micro-grid to fly over")
    c = ggeoms[int(rng.choice(cand))].centroid
    w, h = size_m
    x0 = math.floor((c.x - w / 2) / 10) * 10
    y0 = math.floor((c.y - h / 2) / 10) * 10
    box = shapely.box(x0, y0, x0 + w, y0 + h)
    box2 = affinity.translate(box, 0.07 * w, -0.05 * h)  # the second flight's extent
    footprint = _footprint(box2, seed)
    seen = box.intersection(footprint)  # what both flights saw
    work = box.buffer(60)
    shapely.prepare(work)

    parcels, pgeoms = _metric(town, "parcels")
    roads, rgeoms = _metric(town, "roads")
    buildings, bgeoms = _metric(town, "buildings")
    p_in = [i for i in range(len(parcels)) if work.intersects(pgeoms[i])]
    r_in = [i for i in range(len(roads)) if work.intersects(rgeoms[i])]
    b_in = [i for i in range(len(buildings)) if work.intersects(bgeoms[i])]

    ground: dict[int, list[_Thing]] = {1: [], 2: []}
    crop_h: dict[int, list[tuple[shapely.Geometry, float]]] = {1: [], 2: []}
    truth: list[dict[str, Any]] = []
    free_farmland: list[int] = []
    for i in p_in:
        p = parcels[i]
        geom = pgeoms[i]
        lu = p["land_use"]
        if lu in FARMLAND:
            base = _jitter(rng, FIELD_GREEN, 0.02)
            stripes = (0.035, float(rng.uniform(0, math.pi)), float(rng.uniform(1.2, 2.5)))
            u = rng.uniform()
            if u < 0.45:
                later, detail, h2 = _jitter(rng, FIELD_RIPE, 0.02), "crop_ripened", 1.0
            elif u < 0.65:
                later, detail, h2 = _jitter(rng, FIELD_PLOUGHED, 0.02), "ploughed", 0.0
            else:
                later, detail, h2 = _jitter(rng, tuple(v * 1.03 for v in base), 0.01), "", 0.8
            ground[1].append(_Thing(geom, base, 0.0, 0.0, stripes))
            ground[2].append(_Thing(geom, later, 0.0, 0.0, stripes if h2 else
                                    (0.05, stripes[1] + 0.5, 0.9)))
            crop_h[1].append((geom, 0.5))
            crop_h[2].append((geom, h2))
            if detail and geom.intersection(seen).area > 200:
                truth.append(_truth(geom.intersection(seen), "other", detail, p))
            if p["approved_use"] in FARMLAND and p["permit_status"] == "none":
                free_farmland.append(i)
        else:
            colour = _jitter(rng, LAND_COLOUR.get(lu, YARD), 0.02)
            ground[1].append(_Thing(geom, colour, 0.0, 0.01))
            ground[2].append(_Thing(geom, colour, 0.0, 0.01))
    for i in r_in:
        r = roads[i]
        g = rgeoms[i].buffer(r["width_m"] / 2, cap_style="flat")
        ground[1].append(_Thing(g, ROAD[r["road_class"]], 0.0, 0.005))
        ground[2].append(_Thing(g, ROAD[r["road_class"]], 0.0, 0.005))

    roofs: dict[int, list[_Thing]] = {1: [], 2: []}
    occupied = [rgeoms[i].buffer(roads[i]["width_m"] / 2 + 4) for i in r_in]
    existing: list[tuple[int, _Thing]] = []
    for i in b_in:
        b = buildings[i]
        colour = _jitter(rng, ROOF[_pick(rng, ROOF_CHOICE[b["use"]])], 0.02)
        thing = _Thing(bgeoms[i], colour, float(b["height_m"]), 0.012)
        existing.append((i, thing))
        occupied.append(bgeoms[i].buffer(6))
    # demolished: a few village houses or sheds inside the scene
    inner = seen.buffer(-25)
    shapely.prepare(inner)
    demolish_pool = [k for k, (i, _t) in enumerate(existing)
                     if inner.contains(bgeoms[i]) and 110 <= bgeoms[i].area < 1500]
    n_demolish = min(len(demolish_pool), max(2, round(box.area / 1e6 * 3)))
    demolished = set(int(k) for k in rng.choice(demolish_pool, n_demolish, replace=False)) \
        if demolish_pool else set()
    for k, (_i, thing) in enumerate(existing):
        roofs[1].append(thing)
        if k in demolished:
            ground[2].append(_Thing(thing.geom, _jitter(rng, RUBBLE, 0.02), 0.0, 0.06))
            truth.append(_truth(thing.geom, "removed_structure", "demolished",
                                _parcel_at(thing.geom, parcels, pgeoms, p_in),
                                height_m=thing.height))
        else:
            roofs[2].append(thing)

    occ = shapely.union_all(occupied) if occupied else shapely.Point()
    # new sheds on farmland without permit
    n_sheds = max(3, round(box.area / 1e6 * 9))
    placed = 0
    tries = 0
    farm = sorted(free_farmland)
    while placed < n_sheds and farm and tries < 400:
        tries += 1
        i = int(rng.choice(farm))
        area_ok = pgeoms[i].buffer(-6).intersection(inner)
        if area_ok.is_empty or area_ok.area < 800:
            continue
        pt = _random_point(area_ok, rng)
        if pt is None:
            continue
        wdt, dep = float(rng.uniform(11, 32)), float(rng.uniform(9, 18))
        shed = _rect(pt.x, pt.y, wdt, dep, float(rng.uniform(-0.6, 0.6)))
        if not area_ok.contains(shed) or occ.intersects(shed):
            continue
        roof = str(rng.choice(["blue", "white"], p=[0.55, 0.45]))
        height = float(rng.uniform(4.0, 7.5))
        roofs[2].append(_Thing(shed, _jitter(rng, ROOF[roof], 0.02), height, 0.012))
        truth.append(_truth(shed, "new_structure", "shed", parcels[i], roof=roof,
                            height_m=round(height, 1), permitted=False))
        occ = occ.union(shed.buffer(8))
        placed += 1
    # permitted construction: parcels with an approved permit (farmland approved for
    # building first), in free space
    approved = sorted(
        (i for i in p_in if parcels[i]["permit_status"] == "approved"),
        key=lambda i: (parcels[i]["land_use"] not in FARMLAND, parcels[i]["code"]),
    )
    n_permitted = max(1, round(box.area / 1e6 * 2))
    done = 0
    for i in approved:
        if done >= n_permitted:
            break
        area_ok = pgeoms[i].buffer(-6).intersection(inner)
        if area_ok.is_empty or area_ok.area < 1500:
            continue
        for _ in range(20):
            pt = _random_point(area_ok, rng)
            if pt is None:
                break
            wdt, dep = float(rng.uniform(18, 40)), float(rng.uniform(12, 22))
            bld = _rect(pt.x, pt.y, wdt, dep, float(rng.uniform(-0.4, 0.4)))
            if area_ok.contains(bld) and not occ.intersects(bld):
                roof = str(rng.choice(["concrete", "blue"], p=[0.7, 0.3]))
                height = float(rng.uniform(6.0, 12.0))
                roofs[2].append(_Thing(bld, _jitter(rng, ROOF[roof], 0.02), height, 0.012))
                truth.append(_truth(bld, "new_structure", "permitted_construction",
                                    parcels[i], roof=roof, height_m=round(height, 1),
                                    permitted=True))
                occ = occ.union(bld.buffer(8))
                done += 1
                break
    return _Scene(town.metric_epsg, box, box2, footprint, ground, roofs, crop_h, truth)


def _random_point(area: shapely.Geometry, rng: np.random.Generator) -> shapely.Point | None:
    minx, miny, maxx, maxy = area.bounds
    for _ in range(50):
        p = shapely.Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
        if area.contains(p):
            return p
    return None


def _parcel_at(geom: shapely.Geometry, parcels: list[dict[str, Any]], pgeoms: np.ndarray,
               idx: list[int]) -> dict[str, Any] | None:
    c = geom.centroid
    for i in idx:
        if pgeoms[i].contains(c):
            return parcels[i]
    return None


def _truth(geom: shapely.Geometry, kind: str, detail: str, parcel: dict[str, Any] | None,
           **extra: Any) -> dict[str, Any]:
    return {
        "geom": geom,
        "kind": kind,
        "detail": detail,
        "parcel": parcel["code"] if parcel else None,
        "land_use": parcel["land_use"] if parcel else None,
        "approved_use": parcel["approved_use"] if parcel else None,
        "permit_status": parcel["permit_status"] if parcel else None,
        **extra,
    }


# ---- rendering -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    epsg: int
    transform: rasterio.Affine
    width: int
    height: int


def _grid(bounds: tuple[float, float, float, float], epsg: int, res: float) -> _Grid:
    minx, miny, maxx, maxy = bounds
    x0 = math.floor(minx / res) * res
    y1 = math.ceil(maxy / res) * res
    return _Grid(epsg, from_origin(x0, y1, res, res), math.ceil((maxx - x0) / res),
                 math.ceil((y1 - miny) / res))


def _to(geoms: list[shapely.Geometry], src: int, dst: int, shift: tuple[float, float]
        ) -> list[shapely.Geometry]:
    tr = transformer(src, dst) if src != dst else None

    def fn(xy: np.ndarray) -> np.ndarray:
        x, y = (xy[:, 0], xy[:, 1]) if tr is None else tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([np.asarray(x) + shift[0], np.asarray(y) + shift[1]])

    return list(shapely.transform(np.array(geoms, dtype=object), fn)) if geoms else []


def _shadow(geom: shapely.Geometry, height: float, epoch: int) -> shapely.Geometry:
    az, el = SUN[epoch]
    length = height / math.tan(math.radians(el))
    dx = -length * math.sin(math.radians(az))
    dy = -length * math.cos(math.radians(az))
    moved = affinity.translate(geom, dx, dy)
    return shapely.convex_hull(shapely.union(geom, moved)).difference(geom)


@dataclass
class _Layers:
    """One epoch's drawable things on the output grid's CRS."""

    ground: list[_Thing]
    roofs: list[_Thing]
    shadows: list[shapely.Geometry]
    crop: list[tuple[shapely.Geometry, float]]
    tree_g: shapely.STRtree
    tree_r: shapely.STRtree
    tree_s: shapely.STRtree
    tree_c: shapely.STRtree
    luts: tuple[Any, Any]


def _layers(scene: _Scene, epoch: int, epsg: int, shift: tuple[float, float]) -> _Layers:
    ground = scene.ground[epoch]
    roofs = scene.roofs[epoch]
    shadows_m = [_shadow(t.geom, t.height, epoch) for t in roofs]
    g = _to([t.geom for t in ground], scene.epsg, epsg, shift)
    r = _to([t.geom for t in roofs], scene.epsg, epsg, shift)
    s = _to(shadows_m, scene.epsg, epsg, shift)
    c = _to([cg for cg, _h in scene.crop_height[epoch]], scene.epsg, epsg, shift)
    ground_t = [_Thing(gg, t.colour, t.height, t.texture, t.stripes)
                for gg, t in zip(g, ground, strict=True)]
    roofs_t = [_Thing(gg, t.colour, t.height, t.texture, t.stripes)
               for gg, t in zip(r, roofs, strict=True)]
    crop = [(cg, h) for cg, (_g, h) in zip(c, scene.crop_height[epoch], strict=True)]
    return _Layers(ground_t, roofs_t, s, crop, shapely.STRtree(g), shapely.STRtree(r),
                   shapely.STRtree(s), shapely.STRtree(c), (_lut(ground_t), _lut(roofs_t)))


def _ids(things: list[shapely.Geometry], tree: shapely.STRtree, extent: shapely.Geometry,
         shape: tuple[int, int], transform: rasterio.Affine, fill: int = 0) -> np.ndarray:
    """Raster of 1-based indices into ``things`` (later ones on top), ``fill`` elsewhere."""
    hits = np.sort(tree.query(extent, predicate="intersects"))
    if not hits.size:
        return np.full(shape, fill, dtype=np.int32)
    return rasterize(((things[int(i)], int(i) + 1) for i in hits), out_shape=shape,
                     transform=transform, fill=fill, dtype="int32")


def _lut(things: list[_Thing]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-index colour (n+1, 3), texture (n+1) and stripes (n+1, 3); row 0 empty."""
    n = len(things)
    colour = np.zeros((n + 1, 3), np.float32)
    texture = np.zeros(n + 1, np.float32)
    stripes = np.zeros((n + 1, 3), np.float64)
    stripes[:, 2] = 1.0
    for k, t in enumerate(things, start=1):
        colour[k] = t.colour
        texture[k] = t.texture
        if t.stripes[0] > 0:
            stripes[k] = t.stripes
    return colour, texture, stripes


def _render(layers: _Layers, grid: _Grid, window: Window, epoch: int, seed: int) -> np.ndarray:
    """RGB float32 (3, h, w) of one window."""
    wt = window_transform(window, grid.transform)
    h, w = int(window.height), int(window.width)
    extent = shapely.box(wt.c, wt.f + h * wt.e, wt.c + w * wt.a, wt.f)
    rng = np.random.default_rng([seed, _STREAM, epoch, window.row_off, window.col_off])
    gid = _ids([t.geom for t in layers.ground], layers.tree_g, extent, (h, w), wt)
    rid = _ids([t.geom for t in layers.roofs], layers.tree_r, extent, (h, w), wt)
    gcol, gtex, gstr = layers.luts[0]
    rcol, rtex, _ = layers.luts[1]
    yard = np.asarray(YARD, np.float32)
    gcol = gcol.copy()
    gcol[0] = yard
    rgb = np.moveaxis(gcol[gid], -1, 0).copy()
    tex = gtex[gid]
    # crop rows: stripes along each field's direction, on metric-ish grid positions
    amp = gstr[gid, 0]
    rows, cols = np.nonzero(amp > 0)
    if rows.size:
        xs = wt.c + (cols + 0.5) * wt.a
        ys = wt.f + (rows + 0.5) * wt.e
        ang = gstr[gid[rows, cols], 1]
        period = gstr[gid[rows, cols], 2]
        u = xs * np.cos(ang) + ys * np.sin(ang)
        wave = (amp[rows, cols] * np.sin(2 * math.pi * u / period)).astype(np.float32)
        rgb[:, rows, cols] += wave[None, :]
    roof = rid > 0
    if roof.any():
        rgb[:, roof] = rcol[rid[roof]].T
        tex[roof] = rtex[rid[roof]]
    sid = _ids(layers.shadows, layers.tree_s, extent, (h, w), wt)
    shade = (sid > 0) & ~roof
    rgb[:, shade] *= np.float32(0.5)
    noise = rng.normal(0.0, 1.0, (3, h, w)).astype(np.float32)
    rgb += noise * (np.float32(0.012) + tex[None])
    if epoch == 2:
        gain, off = EXPOSURE
        rgb = rgb * np.asarray(gain, np.float32)[:, None, None] + np.asarray(
            off, np.float32)[:, None, None]
    return np.clip(rgb, 0.0, 1.0)


def _dsm_tile(layers: _Layers, grid: _Grid, window: Window, epoch: int, seed: int,
              town_seed: int, from_grid: Any, bias: float) -> np.ndarray:
    wt = window_transform(window, grid.transform)
    h, w = int(window.height), int(window.width)
    extent = shapely.box(wt.c, wt.f + h * wt.e, wt.c + w * wt.a, wt.f)
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    gx = wt.c + cols * wt.a
    gy = wt.f + rows * wt.e
    mx, my = (gx, gy) if from_grid is None else from_grid.transform(gx, gy)
    z = ground_m(np.asarray(mx), np.asarray(my), town_seed).astype(np.float32)
    hits = np.sort(layers.tree_c.query(extent, predicate="intersects"))
    if hits.size:
        z += rasterize(((layers.crop[int(i)][0], layers.crop[int(i)][1]) for i in hits),
                       out_shape=(h, w), transform=wt, fill=0.0, dtype="float32")
    hits = np.sort(layers.tree_r.query(extent, predicate="intersects"))
    if hits.size:
        order = sorted((layers.roofs[int(i)].height, int(i)) for i in hits)
        z += rasterize(((layers.roofs[i].geom, hgt) for hgt, i in order), out_shape=(h, w),
                       transform=wt, fill=0.0, dtype="float32")
    rng = np.random.default_rng([seed, _STREAM, 10 + epoch, window.row_off, window.col_off])
    z += rng.normal(0.0, 0.15, (h, w)).astype(np.float32) + np.float32(bias)
    return z


def write_pair(
    town: Town,
    outdir: str | Path,
    seed: int = 1,
    size_m: tuple[float, float] = (2000.0, 1500.0),
    resolution: float = 0.4,
    after_resolution: float = 0.5,
    after_epsg: int = AFTER_EPSG,
    shift_m: tuple[float, float] = (0.55, -0.35),
    dtype: str = "uint8",
    alpha: bool = False,
    striped: bool = False,
    dsm_resolution: float = 1.0,
    progress: Progress | None = None,
) -> PairInfo:
    """Write ``before.tif``, ``after.tif``, their DSMs and ``truth.geojson`` to ``outdir``.

    ``dtype`` and ``alpha`` apply to the later image (``uint16`` is 12-bit data);
    ``striped`` writes both orthophotos in strips instead of 512x512 tiles.
    """
    if dtype not in ("uint8", "uint16"):
        raise ValueError("dtype must be uint8 or uint16")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    scene = build_scene(town, seed, size_m)
    box = scene.box
    # the second flight: moved by ~7 % of the scene, in another CRS
    b2 = _to([scene.box2], scene.epsg, after_epsg, (0.0, 0.0))[0].bounds
    g1 = _grid(box.bounds, scene.epsg, resolution)
    g2 = _grid(b2, after_epsg, after_resolution)
    footprint = _to([scene.footprint], scene.epsg, after_epsg, shift_m)[0]
    l1 = _layers(scene, 1, scene.epsg, (0.0, 0.0))
    l2 = _layers(scene, 2, after_epsg, shift_m)
    paths = {k: outdir / f"{k}.tif" for k in ("before", "after", "before_dsm", "after_dsm")}
    _write_rgb(paths["before"], l1, g1, 1, seed, "uint8", None, False, striped, progress)
    _write_rgb(paths["after"], l2, g2, 2, seed, dtype, footprint, alpha, striped, progress)
    d1 = _grid(box.bounds, scene.epsg, dsm_resolution)
    d2 = _grid(b2, after_epsg, dsm_resolution)
    _write_dsm(paths["before_dsm"], l1, d1, 1, seed, town.seed, None, 0.0)
    _write_dsm(paths["after_dsm"], l2, d2, 2, seed, town.seed,
               transformer(after_epsg, scene.epsg), 1.3, shift_m)
    truth = outdir / "truth.geojson"
    _write_truth(truth, scene)
    counts: dict[str, int] = {}
    for t in scene.truth:
        counts[t["detail"]] = counts.get(t["detail"], 0) + 1
    return PairInfo(paths["before"], paths["after"], paths["before_dsm"], paths["after_dsm"],
                    truth, scene.epsg, after_epsg, box.bounds, counts)


def _footprint(box: shapely.Geometry, seed: int) -> shapely.Geometry:
    """An irregular flight footprint inside ``box`` (its corners cut, edges wavy)."""
    rng = np.random.default_rng([seed, _STREAM, 99])
    minx, miny, maxx, maxy = box.bounds
    w, h = maxx - minx, maxy - miny
    cut = min(w, h) * float(rng.uniform(0.08, 0.15))
    pts = [(minx + cut, miny), (maxx - cut * 0.5, miny), (maxx, miny + cut * 0.7),
           (maxx, maxy - cut), (maxx - cut, maxy), (minx + cut * 0.4, maxy),
           (minx, maxy - cut * 0.6), (minx, miny + cut)]
    return shapely.Polygon(pts).buffer(-0.01 * min(w, h))


def _write_rgb(path: Path, layers: _Layers, grid: _Grid, epoch: int, seed: int, dtype: str,
               footprint: shapely.Geometry | None, alpha: bool, striped: bool,
               progress: Progress | None) -> None:
    full = 255.0 if dtype == "uint8" else 4095.0
    count = 4 if alpha else 3
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": count,
        "dtype": dtype, "crs": f"EPSG:{grid.epsg}", "transform": grid.transform,
        "compress": "deflate", "interleave": "pixel",
    }
    if striped:
        profile.update(tiled=False, blockysize=16)
    else:
        profile.update(tiled=True, blockxsize=TILE, blockysize=TILE)
    if footprint is not None and not alpha:
        profile["nodata"] = 0
    if alpha:
        profile["photometric"] = "RGB"
        profile["alpha"] = "YES"
    with rasterio.open(path, "w", **profile) as dst:
        if alpha:
            from rasterio.enums import ColorInterp

            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                               ColorInterp.alpha]
        for row0 in range(0, grid.height, TILE):
            rows = min(TILE, grid.height - row0)
            for col0 in range(0, grid.width, TILE):
                win = Window(col0, row0, min(TILE, grid.width - col0), rows)
                rgb = _render(layers, grid, win, epoch, seed)
                q = np.clip(np.round(rgb * full), 1, full).astype(dtype)
                inside = np.ones(q.shape[1:], bool)
                if footprint is not None:
                    inside = rasterize([(footprint, 1)], out_shape=q.shape[1:],
                                       transform=window_transform(win, grid.transform),
                                       fill=0, dtype="uint8").astype(bool)
                    q[:, ~inside] = 0
                dst.write(q, [1, 2, 3], window=win)
                if alpha:
                    a = np.where(inside, 255 if dtype == "uint8" else full, 0).astype(dtype)
                    dst.write(a, 4, window=win)
            if progress is not None:
                progress(f"{path.stem} rows", rows)


def _write_dsm(path: Path, layers: _Layers, grid: _Grid, epoch: int, seed: int,
               town_seed: int, to_metric: Any, bias: float,
               shift: tuple[float, float] = (0.0, 0.0)) -> None:
    profile = {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": 1,
        "dtype": "float32", "crs": f"EPSG:{grid.epsg}", "transform": grid.transform,
        "tiled": True, "blockxsize": TILE, "blockysize": TILE, "compress": "deflate",
        "predictor": 3, "nodata": None,
    }

    class _Shifted:  # grid coordinates -> metric ground coordinates (undo the shift)
        def transform(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            xx, yy = np.asarray(x) - shift[0], np.asarray(y) - shift[1]
            if to_metric is None:
                return xx, yy
            mx, my = to_metric.transform(xx.ravel(), yy.ravel())
            return np.asarray(mx).reshape(xx.shape), np.asarray(my).reshape(xx.shape)

    with rasterio.open(path, "w", **profile) as dst:
        for row0 in range(0, grid.height, TILE):
            for col0 in range(0, grid.width, TILE):
                win = Window(col0, row0, min(TILE, grid.width - col0),
                             min(TILE, grid.height - row0))
                dst.write(_dsm_tile(layers, grid, win, epoch, seed, town_seed, _Shifted(),
                                    bias), 1, window=win)


def _write_truth(path: Path, scene: _Scene) -> None:
    to_lonlat = transformer(scene.epsg, 4326)
    feats = []
    for k, t in enumerate(scene.truth, start=1):
        g = shapely.transform(t["geom"], lambda xy: np.column_stack(
            to_lonlat.transform(xy[:, 0], xy[:, 1])))
        g = shapely.set_precision(g, 1e-8)
        props = {key: v for key, v in t.items() if key != "geom"}
        props["area_m2"] = round(float(t["geom"].area), 1)
        feats.append({"type": "Feature", "id": k, "properties": props,
                      "geometry": shapely.geometry.mapping(g)})
    doc = {"type": "FeatureCollection", "name": "truth",
           "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
           "features": feats}
    path.write_text(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n")


def digest(info: PairInfo) -> str:
    """SHA-256 over the five files: equal digests mean byte-identical pairs."""
    h = hashlib.sha256()
    for p in (info.before, info.after, info.before_dsm, info.after_dsm, info.truth):
        h.update(p.read_bytes())
    return h.hexdigest()
