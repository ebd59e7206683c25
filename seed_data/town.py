"""The demo town: a deterministic generator modelled on Fujia town (傅家镇), Zibo.

Same seed and scale -> the same data, byte for byte (see :func:`digest`).  The town
sits at its real place (about 118.0°E, 36.8°N) and is built in metres in the
CGCS2000 Gauss-Krüger zone of that place, then stored in EPSG:4490:

* three streets: Fujia in the middle (about 72 km², 158,000 people, 68,000 households,
  7 communities, about 230 micro-grids) and two neighbouring streets around it;
* the boundaries are wiggly road lines noded together once, so every micro-grid lies
  exactly inside its community and every community inside its street, with no gap
  and no overlap (levels are unions of the same faces);
* roads on the boundaries, about 20,000 buildings in Fujia (apartment slabs in the
  town seat, courtyard houses in villages, sheds and factories), parcels covering
  the land with GB/T 21010 land-use classes and permits, 4,955 cameras and 4 high
  points in Fujia, a dozen PM2.5 stations, manhole covers, one worker per micro-grid.

``scale=N`` lays N such towns side by side (distinct codes) for benchmarks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from gis.crs import STORAGE_EPSG, gk3_epsg, transformer

Row = dict[str, Any]
Progress = Callable[[str, int], None]

CENTRE_LON, CENTRE_LAT = 118.02, 36.80
DIVISION = "370303"  # 淄博市张店区
FUJIA_HOUSEHOLDS, FUJIA_POPULATION = 68_000, 158_000
FUJIA_CAMERAS = 4_955
GENERATION_START = dt.date(2023, 4, 1)
COORD_DECIMALS = 7  # ~1 cm in degrees

# (name, 3-digit street code, communities, micro-grids, households, people)
STREET_PLAN = [
    ("傅家镇", "106", 7, 230, FUJIA_HOUSEHOLDS, FUJIA_POPULATION),
    ("湖田街道", "005", 4, 48, 14_200, 33_100),
    ("南定镇", "108", 4, 44, 12_600, 29_300),
]
COMMUNITY_NAMES = {
    "106": ["傅家社区", "周家社区", "北岭社区", "东风社区", "西苑社区", "南坪社区", "杏园社区"],
    "005": ["湖田社区", "洪沟社区", "石桥社区", "东庄社区"],
    "108": ["南定社区", "马家社区", "河东社区", "沣水社区"],
}
SURNAMES = list("王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕")
GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰红梅建国志文海波宁晓东")
ROAD_WORDS = list("华光明新兴和平安康泰福寿民主人东西南北中青年建设胜利友谊")

LAND_USE = {
    "0101": "水田",
    "0102": "水浇地",
    "0103": "旱地",
    "0201": "果园",
    "0301": "乔木林地",
    "0501": "零售商业用地",
    "0601": "工业用地",
    "0701": "城镇住宅用地",
    "0702": "农村宅基地",
    "0801": "机关团体用地",
    "0803": "教育用地",
    "0809": "公园与绿地",
    "1104": "坑塘水面",
}
BUILT_USE = {
    "residential": "0701",
    "rural_residential": "0702",
    "commercial": "0501",
    "industrial": "0601",
    "public": "0801",
    "agricultural": "0103",
}


@dataclass
class Town:
    """Every table of the demo town as rows; geometries are shapely in EPSG:4490."""

    seed: int
    scale: int
    metric_epsg: int
    tables: dict[str, list[Row]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.tables.items()}


# -- small deterministic helpers --------------------------------------------------------


def _wiggle(line: LineString, rng: np.random.Generator, amp_frac: float = 0.025) -> LineString:
    """A line bent by a smooth perpendicular offset that vanishes at both ends."""
    length = line.length
    if length < 60:
        return line
    n = max(4, int(length // 40))
    t = np.linspace(0.0, 1.0, n + 1)
    (x0, y0), (x1, y1) = line.coords[0], line.coords[-1]
    dx, dy = (x1 - x0) / length, (y1 - y0) / length
    amp = min(amp_frac * length, 45.0)
    k1, k2 = rng.uniform(1, 2.5), rng.uniform(2.5, 5)
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    off = (
        amp
        * np.sin(np.pi * t)
        * (0.7 * np.sin(k1 * np.pi * t + p1) + 0.3 * np.sin(k2 * np.pi * t + p2))
    )
    xs = x0 + dx * length * t - dy * off
    ys = y0 + dy * length * t + dx * off
    return LineString(np.column_stack([xs, ys]))


def _blob(
    cx: float, cy: float, radius: float, rng: np.random.Generator, wobble: float = 0.12
) -> Polygon:
    """An irregular closed outline around (cx, cy) with mean radius ``radius``."""
    n = 180
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 7):
        r += wobble / k * rng.uniform(0.5, 1.0) * np.sin(k * a + rng.uniform(0, 2 * np.pi))
    return Polygon(np.column_stack([cx + radius * r * np.cos(a), cy + radius * r * np.sin(a)]))


def _flat(value: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A density or spacing function that is ``value`` everywhere."""

    def fn(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        return np.full_like(xs, value)

    return fn


def _sample(
    poly: BaseGeometry,
    n: int,
    rng: np.random.Generator,
    density: Callable[[np.ndarray, np.ndarray], np.ndarray],
    min_dist: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """``n`` points in ``poly`` drawn by ``density`` and kept apart by ``min_dist``."""
    shapely.prepare(poly)
    minx, miny, maxx, maxy = poly.bounds
    pts: list[tuple[float, float]] = []
    tries = 0
    while len(pts) < n and tries < 400:
        tries += 1
        xs = rng.uniform(minx, maxx, 4000)
        ys = rng.uniform(miny, maxy, 4000)
        keep = rng.uniform(0, 1, xs.size) < density(xs, ys)
        xs, ys = xs[keep], ys[keep]
        inside = shapely.contains_xy(poly, xs, ys)
        xs, ys = xs[inside], ys[inside]
        md = min_dist(xs, ys)
        for x, y, d in zip(xs, ys, md, strict=True):
            if pts:
                arr = np.asarray(pts)
                if np.min(np.hypot(arr[:, 0] - x, arr[:, 1] - y)) < d:
                    continue
            pts.append((float(x), float(y)))
            if len(pts) == n:
                break
    # if the spacing was too strict, relax it rather than loop forever
    while len(pts) < n:
        xs = rng.uniform(minx, maxx, 64)
        ys = rng.uniform(miny, maxy, 64)
        for x, y in zip(
            xs[shapely.contains_xy(poly, xs, ys)],
            ys[shapely.contains_xy(poly, xs, ys)],
            strict=True,
        ):
            pts.append((float(x), float(y)))
            if len(pts) == n:
                break
    return np.asarray(pts)


def _voronoi_edges(points: np.ndarray, clip: BaseGeometry) -> list[LineString]:
    """Voronoi edges of ``points`` inside ``clip`` (slightly extended past its edge)."""
    if len(points) < 2:
        return []
    mp = shapely.multipoints(points)
    env = clip.buffer(2000).envelope
    cells = shapely.voronoi_polygons(mp, extend_to=env)
    edges = shapely.union_all([shapely.boundary(c) for c in shapely.get_parts(cells)])
    edges = shapely.intersection(edges, clip.buffer(5.0))
    out: list[LineString] = []
    for part in shapely.get_parts(shapely.line_merge(edges)):
        if isinstance(part, LineString) and part.length > 1.0:
            # split merged polylines back into straight pieces, each wiggled on its own
            coords = list(part.coords)
            for a, b in zip(coords[:-1], coords[1:], strict=True):
                out.append(LineString([a, b]))
    return out


def _faces(lines: list[BaseGeometry]) -> list[Polygon]:
    noded = shapely.union_all(lines)
    polys = shapely.get_parts(shapely.polygonize(shapely.get_parts(noded)))
    return [p for p in polys if p.area > 0.0]


def _round(geom: BaseGeometry) -> BaseGeometry:
    return shapely.transform(geom, lambda xy: np.round(xy, COORD_DECIMALS))


def _multi(geom: BaseGeometry) -> MultiPolygon:
    if isinstance(geom, MultiPolygon):
        return geom
    if isinstance(geom, Polygon):
        return MultiPolygon([geom])
    polys = [g for g in shapely.get_parts(geom) if isinstance(g, Polygon)]
    return MultiPolygon(polys)


def _rects(
    cx: np.ndarray, cy: np.ndarray, w: np.ndarray, h: np.ndarray, ang: np.ndarray
) -> np.ndarray:
    """Rotated rectangles as a shapely array."""
    c, s = np.cos(ang), np.sin(ang)
    corners = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5]])
    xs = (
        cx[:, None]
        + corners[:, 0] * w[:, None] * c[:, None]
        - corners[:, 1] * h[:, None] * s[:, None]
    )
    ys = (
        cy[:, None]
        + corners[:, 0] * w[:, None] * s[:, None]
        + corners[:, 1] * h[:, None] * c[:, None]
    )
    return shapely.polygons(np.stack([xs, ys], axis=-1))


def _split_counts(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to ``weights`` that add up to ``total`` exactly."""
    raw = weights / weights.sum() * total
    base = np.floor(raw).astype(int)
    rest = total - int(base.sum())
    order = np.argsort(-(raw - base), kind="stable")
    base[order[:rest]] += 1
    return base


def _person(rng: np.random.Generator) -> str:
    given = "".join(rng.choice(GIVEN, size=int(rng.integers(1, 3))))
    return str(rng.choice(SURNAMES)) + given


def _phone(rng: np.random.Generator) -> str:
    prefix = str(rng.choice(["135", "138", "139", "150", "151", "158", "177", "186", "187", "199"]))
    return prefix + "".join(str(d) for d in rng.integers(0, 10, 8))


# -- the generator --------------------------------------------------------------------


def generate(seed: int = 2023, scale: int = 1, progress: Progress | None = None) -> Town:
    """Build the demo town (``scale`` copies side by side)."""
    if scale < 1:
        raise ValueError("scale must be at least 1")
    epsg = gk3_epsg(CENTRE_LON)
    cx0, cy0 = transformer(STORAGE_EPSG, epsg).transform(CENTRE_LON, CENTRE_LAT)
    town = Town(seed=seed, scale=scale, metric_epsg=epsg)
    tables: defaultdict[str, list[Row]] = defaultdict(list)
    tables["grid_generations"] = [
        {
            "id": 1,
            "name": "2023年网格划分",
            "valid_from": GENERATION_START,
            "valid_to": None,
            "source": f"seed_data demo town, seed {seed}, scale {scale}",
        }
    ]
    for copy in range(scale):
        rng = np.random.default_rng([seed, copy])
        offset_x = copy * 19_000.0
        _one_town(tables, rng, cx0 + offset_x, cy0, copy, progress)
    # ids, deterministic
    for key, rows in tables.items():
        if key == "grid_generations":
            continue
        for i, row in enumerate(rows, start=1):
            row.setdefault("id", i)
    to_storage = transformer(epsg, STORAGE_EPSG)

    def project(g: BaseGeometry) -> BaseGeometry:
        return _round(
            shapely.transform(
                g, lambda xy: np.column_stack(to_storage.transform(xy[:, 0], xy[:, 1]))
            )
        )

    for rows in tables.values():
        for row in rows:
            if "geom" in row:
                row["geom"] = project(row["geom"])
    town.tables = dict(tables)
    return town


def _one_town(
    tables: dict[str, list[Row]],
    rng: np.random.Generator,
    cx: float,
    cy: float,
    copy: int,
    progress: Progress | None,
) -> None:
    def step(what: str, n: int = 1) -> None:
        if progress is not None:
            progress(what, n)

    suffix = "" if copy == 0 else f"{copy + 1}"
    # ---- streets: Fujia a blob in the middle, two neighbours around it ----------------
    fujia_r = math.sqrt(72e6 / math.pi)
    outer_r = math.sqrt(72e6 * 1.78 / math.pi)
    inner = _blob(cx, cy, fujia_r, rng, 0.10)
    inner = _scale_to(inner, 72e6)
    outer = _scale_to(_blob(cx + 600, cy - 300, outer_r, rng, 0.08), 72e6 * 1.78)
    outer = shapely.union(outer, inner.buffer(900))  # neighbours always wrap Fujia
    ang1, ang2 = rng.uniform(0.6, 1.0) * np.pi, rng.uniform(1.6, 2.0) * np.pi
    cuts = [
        _wiggle(
            LineString(
                [
                    (cx + fujia_r * 0.5 * np.cos(a), cy + fujia_r * 0.5 * np.sin(a)),
                    (cx + outer_r * 1.6 * np.cos(a), cy + outer_r * 1.6 * np.sin(a)),
                ]
            ),
            rng,
        )
        for a in (ang1, ang2)
    ]
    street_lines: list[BaseGeometry] = [outer.exterior, inner.exterior]
    street_lines += [shapely.intersection(c, outer.buffer(1.0)) for c in cuts]
    street_faces = _faces(street_lines)
    street_faces = [f for f in street_faces if outer.contains(f.representative_point())]
    in_fujia = [inner.contains(f.representative_point()) for f in street_faces]
    fujia_poly = shapely.union_all([f for f, k in zip(street_faces, in_fujia, strict=True) if k])
    others = sorted(
        [f for f, k in zip(street_faces, in_fujia, strict=True) if not k],
        key=lambda f: (-f.area, f.centroid.x),
    )
    street_polys = [fujia_poly, others[0], shapely.union_all(others[1:])]
    step("streets", 3)

    # town seat of Fujia (dense core), a secondary centre in each neighbour
    seat = np.array([cx - 700.0, cy + 400.0])

    def density(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        d = np.hypot(xs - seat[0], ys - seat[1])
        return 0.18 + 0.82 * np.exp(-((d / 1800.0) ** 2))

    def spacing(scale_m: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        def md(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
            d = np.hypot(xs - seat[0], ys - seat[1])
            return scale_m * (0.45 + 0.55 * (1 - np.exp(-((d / 2200.0) ** 2))))

        return md

    # ---- communities ---------------------------------------------------------------
    comm_lines: list[BaseGeometry] = list(street_lines)
    comm_seeds: list[tuple[int, np.ndarray]] = []
    for si, poly in enumerate(street_polys):
        n_comm = STREET_PLAN[si][2]
        pts = _sample(
            poly,
            n_comm,
            rng,
            _flat(1.0),
            _flat(math.sqrt(poly.area / n_comm) * 0.6),
        )
        comm_seeds.append((si, pts))
        comm_lines += [_wiggle(e, rng) for e in _voronoi_edges(pts, poly)]
    comm_faces = _faces(comm_lines)
    comm_of_face: list[tuple[int, int]] = []
    region = shapely.union_all(street_polys)
    shapely.prepare(region)
    kept_faces: list[Polygon] = []
    for f in comm_faces:
        rp = f.representative_point()
        if not region.contains(rp):
            continue
        si = next(i for i, p in enumerate(street_polys) if p.contains(rp))
        pts = comm_seeds[si][1]
        ci = int(np.argmin(np.hypot(pts[:, 0] - rp.x, pts[:, 1] - rp.y)))
        comm_of_face.append((si, ci))
        kept_faces.append(f)
    comm_polys: dict[tuple[int, int], BaseGeometry] = {}
    for key in sorted(set(comm_of_face)):
        comm_polys[key] = shapely.union_all(
            [f for f, k in zip(kept_faces, comm_of_face, strict=True) if k == key]
        )
    step("communities", len(comm_polys))

    # ---- micro-grids ---------------------------------------------------------------
    grid_lines: list[BaseGeometry] = list(comm_lines)
    grid_seeds: dict[tuple[int, int], np.ndarray] = {}
    for si in range(len(street_polys)):
        keys = [k for k in comm_polys if k[0] == si]
        weights = np.array(
            [
                comm_polys[k].area
                * (
                    0.4
                    + float(
                        np.mean(density(*np.asarray(comm_polys[k].centroid.coords[0])[:, None]))
                    )
                )
                for k in keys
            ]
        )
        counts = _split_counts(STREET_PLAN[si][3], weights)
        for k, n in zip(keys, counts, strict=True):
            poly = comm_polys[k]
            typical = math.sqrt(poly.area / max(n, 1))
            pts = _sample(poly, int(max(n, 1)), rng, density, spacing(typical * 0.75))
            grid_seeds[k] = pts
            grid_lines += [_wiggle(e, rng, 0.02) for e in _voronoi_edges(pts, poly)]
    grid_faces = [f for f in _faces(grid_lines) if region.contains(f.representative_point())]
    face_key: list[tuple[int, int, int]] = []
    for f in grid_faces:
        rp = f.representative_point()
        ck = next(k for k, p in comm_polys.items() if p.contains(rp))
        pts = grid_seeds[ck]
        gi = int(np.argmin(np.hypot(pts[:, 0] - rp.x, pts[:, 1] - rp.y)))
        face_key.append((ck[0], ck[1], gi))
    grid_geoms: dict[tuple[int, int, int], BaseGeometry] = {}
    for key in sorted(set(face_key)):
        grid_geoms[key] = shapely.union_all(
            [f for f, k in zip(grid_faces, face_key, strict=True) if k == key]
        )
    step("micro-grids", len(grid_geoms))

    # ---- codes, names, counts; nested by construction (unions of the same faces) ------
    gen_id = 1
    street_rows: list[Row] = []
    comm_rows: list[Row] = []
    grid_rows: list[Row] = []
    grid_kind: dict[str, str] = {}
    for si, (sname, scode3, _nc, _ng, hh, pop) in enumerate(STREET_PLAN):
        scode = DIVISION + f"{(int(scode3) + 10 * copy) % 1000:03d}"
        # communities ordered west to east, north to south for readable codes
        ckeys = sorted(
            [k for k in comm_polys if k[0] == si],
            key=lambda k: (-round(comm_polys[k].centroid.y, -2), comm_polys[k].centroid.x),
        )
        gkeys_by_c = {
            ck: sorted(
                [g for g in grid_geoms if g[:2] == ck],
                key=lambda g: (-round(grid_geoms[g].centroid.y, -2), grid_geoms[g].centroid.x),
            )
            for ck in ckeys
        }
        all_g = [g for ck in ckeys for g in gkeys_by_c[ck]]
        gweights = np.array(
            [
                0.5
                + rng.uniform(0, 1)
                + 2.0
                * float(
                    density(
                        np.array([grid_geoms[g].centroid.x]), np.array([grid_geoms[g].centroid.y])
                    )[0]
                )
                for g in all_g
            ]
        )
        g_hh = _split_counts(hh, gweights)
        g_pop = _split_counts(pop, g_hh.astype(float) * rng.uniform(0.9, 1.1, len(all_g)))
        hh_of = dict(zip(all_g, g_hh, strict=True))
        pop_of = dict(zip(all_g, g_pop, strict=True))
        # each level is the union of the same stage-3 faces, so nesting is exact
        comm_geom = {ck: shapely.union_all([grid_geoms[g] for g in gkeys_by_c[ck]]) for ck in ckeys}
        street_geom = shapely.union_all(list(comm_geom.values()))
        street_rows.append(
            {
                "generation_id": gen_id,
                "code": scode,
                "name": sname + suffix,
                "population": int(g_pop.sum()),
                "households": int(g_hh.sum()),
                "geom": _multi(street_geom),
            }
        )
        for cj, ck in enumerate(ckeys, start=1):
            ccode = scode + f"{cj:03d}"
            cname = (
                COMMUNITY_NAMES[scode3][cj - 1]
                if cj <= len(COMMUNITY_NAMES[scode3])
                else f"第{cj}社区"
            )
            gkeys = gkeys_by_c[ck]
            comm_rows.append(
                {
                    "generation_id": gen_id,
                    "street_code": scode,
                    "code": ccode,
                    "name": cname + suffix,
                    "population": int(sum(pop_of[g] for g in gkeys)),
                    "households": int(sum(hh_of[g] for g in gkeys)),
                    "geom": _multi(comm_geom[ck]),
                }
            )
            for gj, gk in enumerate(gkeys, start=1):
                gcode = ccode + f"{gj:03d}"
                gg = grid_geoms[gk]
                c = gg.centroid
                dens = float(density(np.array([c.x]), np.array([c.y]))[0])
                u = rng.uniform()
                if dens > 0.55:
                    kind = "urban"
                elif u < 0.16:
                    kind = "industrial"
                elif u < 0.88:
                    kind = "village"
                else:
                    kind = "farmland"
                grid_kind[gcode] = kind
                grid_rows.append(
                    {
                        "generation_id": gen_id,
                        "community_code": ccode,
                        "code": gcode,
                        "name": f"{cname}{suffix}第{gj:02d}网格",
                        "kind": kind,
                        "population": int(pop_of[gk]),
                        "households": int(hh_of[gk]),
                        "geom": _multi(gg),
                    }
                )
    tables["streets"] += street_rows
    tables["communities"] += comm_rows
    tables["micro_grids"] += grid_rows

    # ---- roads: the noded boundary network, classified by the level it bounds ---------
    street_bounds = shapely.union_all([shapely.boundary(r["geom"]) for r in street_rows])
    comm_bounds = shapely.union_all([shapely.boundary(r["geom"]) for r in comm_rows])
    grid_bounds = shapely.line_merge(
        shapely.union_all([shapely.boundary(r["geom"]) for r in grid_rows])
    )
    sb, cb = street_bounds.buffer(0.5), comm_bounds.buffer(0.5)
    shapely.prepare(sb)
    shapely.prepare(cb)
    road_rows: list[Row] = []
    for part in shapely.get_parts(grid_bounds):
        if part.length < 30:
            continue
        if sb.covers(part) or cb.covers(part):
            cls, width = "main", 24.0
        elif rng.uniform() < 0.45:
            cls, width = "secondary", 14.0
        else:
            cls, width = "local", 8.0
        name = "".join(rng.choice(ROAD_WORDS, 2)) + (
            "大道" if cls == "main" else "路" if cls == "secondary" else "街"
        )
        road_rows.append({"name": name, "road_class": cls, "width_m": width, "geom": part})
    tables["roads"] += road_rows
    step("roads", len(road_rows))

    # ---- buildings, per micro-grid ------------------------------------------------------
    b_rows: list[Row] = []
    grid_buildings: dict[str, list[int]] = {}
    for g in grid_rows:
        poly = g["geom"]
        kind = grid_kind[g["code"]]
        usable = poly.buffer(-10.0)
        if usable.is_empty:
            continue
        start = len(b_rows)
        b_rows += _buildings_for(usable, kind, rng, g["code"])
        grid_buildings[g["code"]] = list(range(start, len(b_rows)))
    tables["buildings"] += b_rows
    step("buildings", len(b_rows))

    # ---- parcels covering the land ------------------------------------------------------
    p_rows = _parcels(grid_rows, grid_kind, b_rows, rng, copy)
    tables["parcels"] += p_rows
    step("parcels", len(p_rows))

    # ---- high points and cameras --------------------------------------------------------
    hp_rows: list[Row] = []
    cam_rows: list[Row] = []
    hp_base = len(tables["high_points"])
    for si, srow in enumerate(street_rows):
        n_hp = 4 if si == 0 else 1
        poly = srow["geom"]
        cands = _sample(
            poly,
            n_hp,
            rng,
            _flat(1.0),
            _flat(2800.0 if n_hp > 1 else 0.0),
        )
        for k, (x, y) in enumerate(cands, start=1):
            hp_id = hp_base + len(hp_rows) + 1
            code = f"HP{srow['code']}{k:02d}"
            hp_rows.append(
                {
                    "id": hp_id,
                    "code": code,
                    "name": f"{srow['name']}高空之眼{k}号",
                    "mount_height_m": float(round(rng.uniform(60, 120), 1)),
                    "radius_m": 3000.0,
                    "geom": Point(x, y),
                }
            )
            cam_rows.append(
                {
                    "code": f"CAM{code}",
                    "name": f"{srow['name']}高空之眼{k}号全景",
                    "kind": "high_point",
                    "heading_deg": 0.0,
                    "fov_deg": 360.0,
                    "range_m": 3000.0,
                    "mount_height_m": hp_rows[-1]["mount_height_m"],
                    "high_point_id": hp_id,
                    "geom": Point(x, y),
                }
            )
    # street cameras along roads, by grid density
    for si, srow in enumerate(street_rows):
        n_total = (
            FUJIA_CAMERAS
            if si == 0
            else int(FUJIA_CAMERAS * srow["households"] / FUJIA_HOUSEHOLDS * 0.8)
        )
        n_street = n_total - sum(
            1 for c in cam_rows if c["code"].startswith(f"CAMHP{srow['code']}")
        )
        poly = srow["geom"]
        shapely.prepare(poly)
        lines = [r for r in road_rows if poly.intersects(r["geom"])]
        lengths = np.array(
            [
                r["geom"].length
                * (
                    3.0
                    if r["road_class"] == "main"
                    else 1.5
                    if r["road_class"] == "secondary"
                    else 1.0
                )
                * (
                    0.3
                    + float(
                        density(np.array([r["geom"].centroid.x]), np.array([r["geom"].centroid.y]))[
                            0
                        ]
                    )
                )
                for r in lines
            ]
        )
        per_line = _split_counts(n_street, lengths)
        seq = 0
        for r, n in zip(lines, per_line, strict=True):
            if n == 0:
                continue
            line = r["geom"]
            ts = np.sort(rng.uniform(0.02, 0.98, n))
            pts = shapely.line_interpolate_point(line, ts, normalized=True)
            ahead = shapely.line_interpolate_point(
                line, np.minimum(ts + 0.01, 1.0), normalized=True
            )
            for p, q in zip(pts, ahead, strict=True):
                side = rng.choice([-1.0, 1.0])
                dx, dy = q.x - p.x, q.y - p.y
                norm = math.hypot(dx, dy) or 1.0
                off = r["width_m"] / 2 + rng.uniform(2, 6)
                x, y = p.x - side * dy / norm * off, p.y + side * dx / norm * off
                if not poly.contains(Point(x, y)):
                    x, y = p.x, p.y
                    if not poly.covers(Point(x, y)):
                        continue
                seq += 1
                dome = rng.uniform() < 0.25
                heading = (
                    math.degrees(math.atan2(dx, dy))
                    + (0 if rng.uniform() < 0.5 else 180)
                    + rng.normal(0, 15)
                ) % 360
                cam_rows.append(
                    {
                        "code": f"CAM{srow['code']}{seq:05d}",
                        "name": f"{r['name']}{'球机' if dome else '枪机'}{seq}",
                        "kind": "dome" if dome else "fixed",
                        "heading_deg": float(round(heading, 1) % 360),
                        "fov_deg": 360.0 if dome else float(round(rng.uniform(50, 95), 1)),
                        "range_m": float(
                            round(rng.uniform(100, 220) if dome else rng.uniform(50, 160), 1)
                        ),
                        "mount_height_m": float(round(rng.uniform(4, 9), 1)),
                        "high_point_id": None,
                        "geom": Point(x, y),
                    }
                )
        # top up (points that fell outside) so the count is exact
        while (
            sum(
                1
                for c in cam_rows
                if c["code"].startswith(f"CAM{srow['code']}")
                or c["code"].startswith(f"CAMHP{srow['code']}")
            )
            < n_total
        ):
            seq += 1
            ((x, y),) = _sample(poly, 1, rng, _flat(1.0), _flat(0.0))
            cam_rows.append(
                {
                    "code": f"CAM{srow['code']}{seq:05d}",
                    "name": f"{srow['name']}枪机{seq}",
                    "kind": "fixed",
                    "heading_deg": float(round(rng.uniform(0, 359.9), 1)),
                    "fov_deg": 70.0,
                    "range_m": 100.0,
                    "mount_height_m": 6.0,
                    "high_point_id": None,
                    "geom": Point(x, y),
                }
            )
    tables["high_points"] += hp_rows
    tables["cameras"] += cam_rows
    step("cameras", len(cam_rows))

    # ---- sensors ------------------------------------------------------------------------
    s_rows: list[Row] = []
    for si, srow in enumerate(street_rows):
        poly, fujia = srow["geom"], si == 0

        _place(
            s_rows,
            rng,
            srow,
            "AQ",
            2,
            "{street}空气质量监测站{k}号",
            "pm25_station",
            _sample(poly, 12 if fujia else 3, rng, _flat(1.0), _flat(1200.0)),
            (dt.date(2022, 6, 1), 400),
        )
        _place(
            s_rows,
            rng,
            srow,
            "MH",
            4,
            "智能井盖{k}",
            "manhole_cover",
            _sample(poly, 300 if fujia else 60, rng, density, _flat(60.0)),
            (dt.date(2023, 1, 1), 300),
        )
        _place(
            s_rows,
            rng,
            srow,
            "WL",
            2,
            "水位监测点{k}",
            "water_level",
            _sample(poly, 3, rng, _flat(1.0), _flat(800.0)),
            None,
        )
    tables["sensors"] += s_rows
    step("sensors", len(s_rows))

    # ---- workers: one per micro-grid ----------------------------------------------------
    w_base = len(tables["workers"])
    for k, g in enumerate(grid_rows, start=1):
        wid = w_base + k
        tables["workers"].append(
            {"id": wid, "employee_no": f"WG{g['code']}", "name": _person(rng), "phone": _phone(rng)}
        )
        tables["worker_assignments"].append(
            {
                "worker_id": wid,
                "micro_grid_code": g["code"],
                "valid_from": GENERATION_START,
                "valid_to": None,
            }
        )
    step("workers", len(grid_rows))


def _place(
    rows: list[Row],
    rng: np.random.Generator,
    street: Row,
    prefix: str,
    digits: int,
    name: str,
    kind: str,
    pts: np.ndarray,
    installed: tuple[dt.date, int] | None,
) -> None:
    """Append sensors at ``pts``, installed on a random day of ``installed`` (start, days)."""
    for k, (x, y) in enumerate(pts, start=1):
        day = None
        if installed is not None:
            day = installed[0] + dt.timedelta(days=int(rng.integers(0, installed[1])))
        rows.append(
            {
                "code": f"{prefix}{street['code']}{k:0{digits}d}",
                "name": name.format(street=street["name"], k=k),
                "kind": kind,
                "installed_on": day,
                "geom": Point(x, y),
            }
        )


def _scale_to(poly: Polygon, area: float) -> Polygon:
    from shapely import affinity

    f = math.sqrt(area / poly.area)
    return affinity.scale(poly, f, f, origin="centroid")


# building footprints by micro-grid kind: (spacing x, spacing y, width range, depth range)
_BUILD = {
    "urban": (72.0, 38.0, (45, 70), (11, 14)),
    "village": (18.0, 20.0, (10, 15), (8, 11)),
    "industrial": (115.0, 80.0, (50, 95), (25, 50)),
    "farmland": (260.0, 260.0, (15, 30), (8, 14)),
}


def _buildings_for(
    usable: BaseGeometry, kind: str, rng: np.random.Generator, grid_code: str
) -> list[Row]:
    sx, sy, (w0, w1), (h0, h1) = _BUILD[kind]
    minx, miny, maxx, maxy = usable.bounds
    ang = rng.uniform(-0.35, 0.35)
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    half = math.hypot(maxx - minx, maxy - miny) / 2
    us = np.arange(-half, half, sx)
    vs = np.arange(-half, half, sy)
    uu, vv = np.meshgrid(us, vs)
    uu = uu.ravel() + rng.uniform(-0.08, 0.08, uu.size) * sx
    vv = vv.ravel() + rng.uniform(-0.08, 0.08, vv.size) * sy
    c, s = math.cos(ang), math.sin(ang)
    xs, ys = cx + uu * c - vv * s, cy + uu * s + vv * c
    region = usable
    if kind == "village":
        # houses cluster in one or two hamlets; the rest is farmland
        shapely.prepare(usable)
        n_h = 1 + int(rng.uniform() < 0.4)
        cores = _sample(usable, n_h, rng, _flat(1.0), _flat(0.0))
        r_h = math.sqrt(usable.area) * rng.uniform(0.19, 0.27)
        region = shapely.intersection(
            usable, shapely.union_all([_blob(x, y, r_h, rng, 0.2) for x, y in cores])
        )
    n = xs.size
    w = rng.uniform(w0, w1, n)
    h = rng.uniform(h0, h1, n)
    rects = _rects(xs, ys, w, h, np.full(n, ang))
    shapely.prepare(region)
    keep = shapely.contains(region, rects)
    if kind == "farmland" or kind == "village":
        keep &= rng.uniform(0, 1, n) < (0.35 if kind == "farmland" else 0.9)
    rows: list[Row] = []
    for k, (rect, ok) in enumerate(zip(rects, keep, strict=True)):
        if not ok:
            continue
        if kind == "urban":
            u = rng.uniform()
            if u < 0.12:
                use, floors = "commercial", int(rng.integers(2, 6))
            elif u < 0.18:
                use, floors = "public", int(rng.integers(2, 5))
            else:
                use, floors = "residential", int(rng.choice([6, 6, 6, 7, 11, 18, 26]))
            fh = 3.0
        elif kind == "village":
            use, floors, fh = "rural_residential", int(rng.choice([1, 1, 2])), 3.3
        elif kind == "industrial":
            use, floors, fh = "industrial", 1, rng.uniform(8, 14)
        else:
            use, floors, fh = "agricultural", 1, rng.uniform(3.5, 6)
        rows.append(
            {
                "code": f"B{grid_code}{k:05d}",
                "name": None,
                "use": use,
                "floors": floors,
                "height_m": float(
                    round(floors * fh if floors > 1 or use != "industrial" else fh, 1)
                ),
                "built_year": int(rng.integers(1985, 2023)),
                "geom": MultiPolygon([rect]),
            }
        )
    return rows


def _parcels(
    grid_rows: list[Row],
    grid_kind: dict[str, str],
    b_rows: list[Row],
    rng: np.random.Generator,
    copy: int,
) -> list[Row]:
    """Split each micro-grid into parcels; land use follows what stands on them."""
    tree = shapely.STRtree([b["geom"] for b in b_rows]) if b_rows else None
    rows: list[Row] = []
    for g in grid_rows:
        poly = g["geom"]
        kind = grid_kind[g["code"]]
        n = max(
            2,
            int(
                poly.area
                / {"urban": 45_000, "village": 60_000, "industrial": 50_000, "farmland": 90_000}[
                    kind
                ]
            ),
        )
        n = min(n, 14)
        pts = _sample(
            poly,
            n,
            rng,
            _flat(1.0),
            _flat(math.sqrt(poly.area / n) * 0.5),
        )
        cells = shapely.get_parts(
            shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=poly.envelope.buffer(100))
        )
        pieces = [shapely.intersection(c, poly) for c in cells]
        pieces = sorted(
            [p for p in pieces if not p.is_empty and p.area > 1.0],
            key=lambda p: (-round(p.centroid.y), p.centroid.x),
        )
        for k, piece in enumerate(pieces, start=1):
            uses: list[str] = []
            if tree is not None:
                for i in tree.query(piece, predicate="intersects"):
                    uses.append(b_rows[int(i)]["use"])
            if uses:
                main = max(set(uses), key=lambda u: (uses.count(u), u))
                land_use = BUILT_USE[main]
                if main == "agricultural":
                    land_use = "0103"
            else:
                land_use = str(
                    rng.choice(
                        ["0103", "0103", "0103", "0102", "0101", "0201", "0301", "0809", "1104"]
                        if kind != "urban"
                        else ["0809", "0803", "0501", "0701"]
                    )
                )
            approved = land_use
            built = bool(uses) and land_use not in ("0103",)
            u = rng.uniform()
            if built:
                status = "approved" if u < 0.88 else "expired" if u < 0.93 else "none"
            elif land_use in ("0701", "0501", "0803"):
                status = "approved"
            else:
                status = "none"
                # farmland already approved for building (construction to come)
                if land_use in ("0101", "0102", "0103") and u < 0.05:
                    approved, status = str(rng.choice(["0601", "0701"])), "approved"
                elif land_use in ("0101", "0102", "0103") and u < 0.07:
                    approved, status = str(rng.choice(["0601", "0701"])), "pending"
            permit_no = None
            if status in ("approved", "expired"):
                year, serial = int(rng.integers(2005, 2024)), int(rng.integers(1, 99999))
                permit_no = f"建字第{g['code'][:6]}{year}{serial:05d}号"
            rows.append(
                {
                    "code": f"{g['code']}GB{k:03d}",
                    "land_use": land_use,
                    "land_use_name": LAND_USE[land_use],
                    "approved_use": approved,
                    "permit_status": status,
                    "permit_no": permit_no,
                    "area_m2": float(round(piece.area, 1)),
                    "geom": _multi(piece),
                }
            )
    return rows


# -- determinism ------------------------------------------------------------------------


def _canonical(value: Any) -> Any:
    if isinstance(value, BaseGeometry):
        return shapely.to_wkt(value, rounding_precision=COORD_DECIMALS, trim=True)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def records(town: Town) -> Iterator[str]:
    """Every row of the town as canonical JSON lines (tables and columns sorted)."""
    for name in sorted(town.tables):
        for row in town.tables[name]:
            yield json.dumps(
                {"table": name, **{k: _canonical(v) for k, v in sorted(row.items())}},
                ensure_ascii=False,
                sort_keys=True,
            )


def digest(town: Town) -> str:
    """SHA-256 of the canonical form: equal digests mean byte-identical data."""
    h = hashlib.sha256()
    for line in records(town):
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()
