"""Grid generations in the database: read one, check its topology, import a new one.

Boundaries are stored in EPSG:4490 and checked in the CGCS2000 Gauss-Krüger zone of
the data (``gis.crs.gk3_epsg`` of the centre longitude): the database transforms what it
stores, and files are reprojected with PROJ, so every area is in square metres.

An import is a dry run unless told to commit: it reads the file (any format and CRS
GDAL reads, through ``ogr2ogr``), refuses boundaries that fail the topology check, and
says what would change against the current generation.  Committing closes the current
generation and adds the new one in one transaction; old rows are never touched again.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import psycopg
import shapely
from psycopg import sql
from shapely.geometry import Point, shape
from shapely.geometry.base import BaseGeometry

from gis.crs import STORAGE_EPSG, gk3_epsg, reproject
from gis.errors import GisError
from gis.topology import (
    CODE_LENGTH,
    LEVELS,
    PARENT,
    Kind,
    Level,
    Problem,
    TopologyReport,
    Unit,
    check_topology,
    level_of_code,
)
from layers.errors import ImportRefused, InvalidInput, LayersError, NotFound
from layers.loader import refresh_micro_grid_parts
from layers.models import SRID

Conn = psycopg.Connection[Any]

TABLE: dict[Level, str] = {
    Level.STREET: "streets",
    Level.COMMUNITY: "communities",
    Level.MICRO_GRID: "micro_grids",
}
PARENT_COLUMN: dict[Level, str] = {
    Level.COMMUNITY: "street_code",
    Level.MICRO_GRID: "community_code",
}
CHANGE_M2 = 1.0
"""A boundary whose symmetric difference with its previous self exceeds this has changed."""
DEFAULT_KIND = "unknown"
"""``micro_grids.kind`` of a new micro-grid whose file gives none."""
OGR_TIMEOUT_S = 600
MAX_COUNT = 2**31 - 1  # population and households are PostgreSQL integers


# -- value types ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    """One ``grid_generations`` row."""

    id: int
    name: str
    valid_from: dt.date
    valid_to: dt.date | None

    def label(self) -> str:
        until = f" to {self.valid_to}" if self.valid_to else ""
        return f"generation {self.id} ({self.name}, from {self.valid_from}{until})"


@dataclass(frozen=True)
class GridFeature:
    """One unit of the grid with its attributes; ``geom`` in the CRS its reader says."""

    level: Level
    code: str
    name: str
    geom: BaseGeometry | None
    population: int | None = None
    households: int | None = None
    kind: str | None = None
    parent: str | None = None  # the parent code the data names, if it names one

    def unit(self) -> Unit:
        return Unit(self.code, self.geom, self.parent)


class Levels(NamedTuple):
    """The three levels of a grid as topology units (metric CRS)."""

    streets: tuple[Unit, ...]
    communities: tuple[Unit, ...]
    micro_grids: tuple[Unit, ...]


@dataclass(frozen=True)
class LevelChanges:
    """What an import changes in one level, by code."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[tuple[str, float], ...] = ()  # (code, symmetric-difference m²)
    renamed: tuple[tuple[str, str, str], ...] = ()  # (code, old name, new name)

    @property
    def none(self) -> bool:
        return not (self.added or self.removed or self.changed or self.renamed)


@dataclass(frozen=True)
class ImportResult:
    """What an import read, what it would change and, when committed, what it wrote."""

    source: str
    counts: tuple[tuple[Level, int], ...]
    built: tuple[Level, ...]  # levels made as unions of their children
    report: TopologyReport
    previous: Generation | None  # the current generation before the import
    changes: tuple[tuple[Level, LevelChanges], ...]
    generation: Generation | None  # the new generation, when committed

    @property
    def committed(self) -> bool:
        return self.generation is not None

    def changes_of(self, level: Level) -> LevelChanges:
        return dict(self.changes).get(level, LevelChanges())


# -- reading a generation ----------------------------------------------------------------


def get_generation(conn: Conn, generation_id: int | None = None) -> Generation:
    """The generation ``generation_id``, or the current one (``valid_to IS NULL``)."""
    if generation_id is None:
        row = conn.execute(
            "SELECT id, name, valid_from, valid_to FROM grid_generations WHERE valid_to IS NULL"
        ).fetchone()
        if row is None:
            raise NotFound("there is no current grid generation")
    else:
        row = conn.execute(
            "SELECT id, name, valid_from, valid_to FROM grid_generations WHERE id = %s",
            (generation_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"there is no grid generation {generation_id}")
    return Generation(int(row[0]), str(row[1]), row[2], row[3])


def generation_epsg(conn: Conn, generation_id: int) -> int:
    """EPSG code of the Gauss-Krüger zone holding the centre of a generation's extent."""
    parts = [
        sql.SQL("SELECT geom FROM {} WHERE generation_id = %(g)s").format(sql.Identifier(t))
        for t in TABLE.values()
    ]
    stmt = sql.SQL(
        "SELECT (ST_XMin(e) + ST_XMax(e)) / 2 FROM (SELECT ST_Extent(geom) AS e FROM ({}) u) s"
    ).format(sql.SQL(" UNION ALL ").join(parts))
    row = conn.execute(stmt, {"g": generation_id}).fetchone()
    if row is None or row[0] is None:
        raise InvalidInput(f"grid generation {generation_id} holds no boundaries")
    try:
        return gk3_epsg(float(row[0]))
    except GisError as exc:
        raise InvalidInput(str(exc)) from exc


def read_features(
    conn: Conn, generation_id: int, epsg: int
) -> dict[Level, tuple[GridFeature, ...]]:
    """Every unit of a generation with its attributes, geometries transformed to ``epsg``."""
    out: dict[Level, tuple[GridFeature, ...]] = {}
    for level in LEVELS:
        parent = (sql.Identifier(PARENT_COLUMN[level]) if level in PARENT
                  else sql.SQL("NULL::text"))
        kind = sql.Identifier("kind") if level is Level.MICRO_GRID else sql.SQL("NULL::text")
        stmt = sql.SQL(
            "SELECT code, name, population, households, {kind}, {parent}, "
            "ST_AsBinary(ST_Transform(geom, %(srid)s::integer)) "
            "FROM {table} WHERE generation_id = %(g)s ORDER BY code"
        ).format(kind=kind, parent=parent, table=sql.Identifier(TABLE[level]))
        rows = conn.execute(stmt, {"srid": epsg, "g": generation_id}).fetchall()
        geoms = shapely.from_wkb([r[6] for r in rows]) if rows else []
        out[level] = tuple(
            GridFeature(level, r[0], r[1], g, r[2], r[3], r[4], r[5])
            for r, g in zip(rows, geoms, strict=True)
        )
    return out


def read_generation(
    conn: Conn, generation_id: int | None = None, epsg: int | None = None
) -> Levels:
    """Streets, communities and micro-grids of a generation (None: the current one) as
    ``(code, geometry, parent code)`` units in the generation's Gauss-Krüger zone
    (or in ``epsg`` when given)."""
    gen = get_generation(conn, generation_id)
    if epsg is None:
        epsg = generation_epsg(conn, gen.id)
    features = read_features(conn, gen.id, epsg)
    return Levels(*(tuple(f.unit() for f in features[lv]) for lv in LEVELS))


def check_generation(
    conn: Conn, generation_id: int | None = None, min_area_m2: float = 1.0
) -> TopologyReport:
    """The topology report of a generation (None: the current one), in metres."""
    gen = get_generation(conn, generation_id)
    epsg = generation_epsg(conn, gen.id)
    levels = read_generation(conn, gen.id, epsg)
    report = check_topology(*levels, min_area_m2=min_area_m2, epsg=epsg)
    return report.with_problems(_invalid_in_storage(conn, gen.id, epsg, levels, report))


def _invalid_in_storage(
    conn: Conn, generation_id: int, epsg: int, levels: Levels, report: TopologyReport
) -> list[Problem]:
    """Units invalid as stored (EPSG:4490) though valid in metres, which the metric
    check cannot see; PostGIS works on the stored form."""
    out = []
    for level, units in zip(LEVELS, levels, strict=True):
        stmt = sql.SQL(
            "SELECT code, (d).reason, ST_AsBinary(ST_Transform("
            "ST_SetSRID((d).location, %(storage)s::integer), %(srid)s::integer))"
            " FROM (SELECT code, ST_IsValidDetail(geom) AS d FROM {table}"
            " WHERE generation_id = %(g)s) s WHERE NOT (d).valid ORDER BY code"
        ).format(table=sql.Identifier(TABLE[level]))
        rows = conn.execute(stmt, {"srid": epsg, "storage": STORAGE_EPSG,
                                   "g": generation_id}).fetchall()
        metric = {u.code: u.geom for u in units}
        for code, reason, where in rows:
            spot = shapely.from_wkb(where) if where is not None else None
            out.extend(_storage_problem(level, code, str(reason), spot, metric.get(code),
                                        report))
    return out


def _storage_problem(
    level: Level, code: str, reason: str, spot: BaseGeometry | None,
    metric: BaseGeometry | None, report: TopologyReport,
) -> list[Problem]:
    if any(p.kind is Kind.INVALID and p.level is level and p.codes == (code,)
           for p in report.problems):
        return []  # already invalid in metres
    if not isinstance(spot, Point) or spot.is_empty:
        spot = metric.representative_point() if metric is not None else Point()
    area = float(metric.area) if metric is not None else 0.0
    return [Problem(Kind.INVALID, level, (code,), spot, area,
                    f"in EPSG:{STORAGE_EPSG}: {reason}")]


# -- reading a file ------------------------------------------------------------------------


_REASON_POINT = re.compile(r"\[(\S+) (\S+)\]")
_OGRINFO_LAYER = re.compile(r"^\d+: (.*?)(?: \([^()]*\))?$")
_LEVEL_NAMES = {lv.value: lv for lv in LEVELS}


def _run(argv: list[str], what: str) -> str:
    exe = shutil.which(argv[0])
    if exe is None:
        raise LayersError(f"{argv[0]} (GDAL) is not installed; install gdal-bin")
    try:
        res = subprocess.run([exe, *argv[1:]], capture_output=True, timeout=OGR_TIMEOUT_S,
                             check=False)
    except subprocess.TimeoutExpired as exc:
        raise InvalidInput(f"{what}: {argv[0]} took longer than {OGR_TIMEOUT_S} s") from exc
    if res.returncode != 0:
        message = res.stderr.decode("utf-8", "replace").strip() or f"exit {res.returncode}"
        raise InvalidInput(f"cannot read {what}: {message}")
    return res.stdout.decode("utf-8", "replace")


def _gdal_name(path: Path) -> str:
    """What GDAL is given: an absolute path (never taken for an option), zips opened."""
    name = str(path.absolute())
    return "/vsizip/" + name if path.suffix.lower() == ".zip" else name


def file_layers(path: Path) -> list[str]:
    """Names of the vector layers in a file GDAL can read (a ``.zip`` is looked into)."""
    out = _run(["ogrinfo", "-ro", "-q", _gdal_name(path)], str(path))
    return [m.group(1) for line in out.splitlines() if (m := _OGRINFO_LAYER.match(line.strip()))]


def read_grid_file(
    path: Path | str, layer: str | None = None
) -> dict[Level, tuple[GridFeature, ...]]:
    """Grid units of a GeoPackage, GeoJSON, Shapefile... in any CRS, in EPSG:4490.

    Each feature needs ``code`` and ``name``; ``population``, ``households``, ``kind``
    and ``level`` (street, community or micro_grid) are optional, as are the parent
    codes ``street_code`` / ``community_code``.  A feature's level is its ``level``
    when given, else the length of its code (9, 12 or 15).  Other columns are ignored.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"no such file: {path}")
    if layer is not None and (not layer.strip() or layer.startswith("-")):
        raise InvalidInput(f"not a layer name: {layer!r}")
    source = _gdal_name(path)
    if layer is None:
        names = file_layers(path)
        if len(names) > 1:
            raise InvalidInput(f"{path} holds several layers ({', '.join(names)}): name one")
    where = f"{path}" + (f" layer {layer}" if layer else "")
    argv = ["ogr2ogr", "-f", "GeoJSON", "-t_srs", f"EPSG:{STORAGE_EPSG}", "-dim", "XY",
            "/vsistdout/", source]
    if layer is not None:
        argv.append(layer)
    try:
        collection = json.loads(_run(argv, where))
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"cannot read {where}: GDAL wrote no GeoJSON ({exc})") from exc
    raw = collection.get("features") or []
    if not raw:
        raise InvalidInput(f"{where} holds no features")
    props = [{str(k).lower(): v for k, v in (f.get("properties") or {}).items()} for f in raw]
    columns = set().union(*props)
    missing = [c for c in ("code", "name") if c not in columns]
    if missing:
        raise InvalidInput(
            f"{where} has no column {' or '.join(missing)} "
            f"(columns: {', '.join(sorted(columns)) or 'none'})"
        )
    out: dict[Level, list[GridFeature]] = {lv: [] for lv in LEVELS}
    for n, (feature, p) in enumerate(zip(raw, props, strict=True), start=1):
        code = _code(p.get("code"), where, n)
        name = p.get("name")
        if name is None or str(name).strip() == "":
            raise InvalidInput(f"{where}: feature {n} ({code}) has no name")
        level = _level(p.get("level"), code, where, n)
        parent_col = PARENT_COLUMN.get(level)
        parent = p.get(parent_col) if parent_col else None
        geometry = feature.get("geometry")
        try:
            geom = shape(geometry) if geometry else None
        except (ValueError, TypeError, AttributeError, shapely.errors.ShapelyError) as exc:
            raise InvalidInput(f"{where}: feature {n} ({code}) has a broken geometry: {exc}")\
                from exc
        out[level].append(GridFeature(
            level=level,
            code=code,
            name=str(name).strip(),
            geom=geom,
            population=_count(p.get("population"), "population", where, n),
            households=_count(p.get("households"), "households", where, n),
            kind=None if p.get("kind") in (None, "") else str(p["kind"]),
            parent=None if parent in (None, "") else _code(parent, where, n),
        ))
    return {lv: tuple(fs) for lv, fs in out.items()}


def _code(value: object, where: str, n: int) -> str:
    if isinstance(value, bool) or value is None:
        raise InvalidInput(f"{where}: feature {n} has no code")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        raise InvalidInput(f"{where}: feature {n} has code {value!r}, not a grid code")
    code = str(value).strip()
    if not code:
        raise InvalidInput(f"{where}: feature {n} has no code")
    return code


def _level(value: object, code: str, where: str, n: int) -> Level:
    if value in (None, ""):
        level = level_of_code(code)
        if level is None:
            raise InvalidInput(
                f"{where}: feature {n} has code {code!r} of {len(code)} characters and no "
                "level; codes have 9 (street), 12 (community) or 15 (micro-grid) digits"
            )
        return level
    level = _LEVEL_NAMES.get(str(value).strip().lower().replace("-", "_"))
    if level is None:
        raise InvalidInput(
            f"{where}: feature {n} ({code}) has unknown level {value!r}; "
            "use street, community or micro_grid"
        )
    return level


def _count(value: object, column: str, where: str, n: int) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = float(str(value))
    except ValueError:
        number = math.nan
    if not number.is_integer() or not 0 <= number <= MAX_COUNT:
        raise InvalidInput(f"{where}: feature {n} has {column} {value!r}, not a count")
    return int(number)


# -- importing a generation ---------------------------------------------------------------


def import_generation(
    conn: Conn,
    path: Path | str,
    valid_from: dt.date,
    name: str,
    commit: bool,
    layer: str | None = None,
    min_area_m2: float = 1.0,
) -> ImportResult:
    """Import grid boundaries from a file as a new generation valid from ``valid_from``.

    Missing parent levels are the unions of their children (names from the current
    generation by code; counts summed from the children).  The boundaries must pass
    the topology check (else :class:`ImportRefused` carries the report).  Without
    ``commit`` nothing is written; with it the current generation is closed on
    ``valid_from``, the new one added with its units and its ``micro_grid_parts``, in
    one transaction (a savepoint inside the caller's transaction when there is one).
    """
    path = Path(path)
    if not name.strip():
        raise InvalidInput("a grid generation needs a name")
    source = path.name + (f" layer {layer}" if layer else "")
    features = read_grid_file(path, layer)
    if not features[Level.MICRO_GRID]:
        raise InvalidInput(f"{source} holds no micro-grids")
    previous = _current_or_none(conn)
    if previous is not None and valid_from <= previous.valid_from:
        raise InvalidInput(
            f"valid_from {valid_from} must come after {previous.valid_from}, when the "
            f"current {previous.label()} began"
        )
    epsg = _epsg_of(features)
    old = read_features(conn, previous.id, epsg) if previous is not None else {
        lv: () for lv in LEVELS}
    features, built = _complete(features, old)
    metric = {lv: tuple(_to_metric(f, epsg) for f in features[lv]) for lv in LEVELS}
    report = check_topology(*(tuple(f.unit() for f in metric[lv]) for lv in LEVELS),
                            min_area_m2=min_area_m2, epsg=epsg)
    counts = tuple((lv, len(features[lv])) for lv in LEVELS)
    report = report.with_problems(_file_invalid_in_storage(features, metric, epsg, report))
    if not report.ok:
        raise ImportRefused(f"{source} refused: {report.summary()}", report)
    changes = tuple((lv, _changes(metric[lv], old[lv])) for lv in LEVELS)
    generation = None
    if commit:
        generation = _write(conn, features, previous, valid_from, name.strip(), source)
    return ImportResult(source, counts, built, report, previous, changes, generation)


def _file_invalid_in_storage(
    features: Mapping[Level, Sequence[GridFeature]],
    metric: Mapping[Level, Sequence[GridFeature]],
    epsg: int,
    report: TopologyReport,
) -> list[Problem]:
    out = []
    for level in LEVELS:
        for f, m in zip(features[level], metric[level], strict=True):
            if f.geom is None or f.geom.is_empty or f.geom.is_valid:
                continue
            reason = str(shapely.is_valid_reason(f.geom))
            where = _REASON_POINT.search(reason)
            spot = None
            if where is not None:
                spot = reproject(Point(float(where.group(1)), float(where.group(2))),
                                 STORAGE_EPSG, epsg)
            out.extend(_storage_problem(level, f.code, reason, spot, m.geom, report))
    return out


def _current_or_none(conn: Conn) -> Generation | None:
    try:
        return get_generation(conn, None)
    except NotFound:
        return None


def _epsg_of(features: Mapping[Level, Sequence[GridFeature]]) -> int:
    geoms = [f.geom for fs in features.values() for f in fs if f.geom is not None]
    bounds = shapely.total_bounds(np.array(geoms, dtype=object))
    if not np.all(np.isfinite(bounds)):
        raise InvalidInput("the file holds no geometry")
    try:
        return gk3_epsg(float(bounds[0] + bounds[2]) / 2.0)
    except GisError as exc:
        raise InvalidInput(str(exc)) from exc


def _to_metric(f: GridFeature, epsg: int) -> GridFeature:
    if f.geom is None or f.geom.is_empty:
        return f
    return replace(f, geom=reproject(f.geom, STORAGE_EPSG, epsg))


def _complete(
    features: Mapping[Level, tuple[GridFeature, ...]],
    old: Mapping[Level, tuple[GridFeature, ...]],
) -> tuple[dict[Level, tuple[GridFeature, ...]], tuple[Level, ...]]:
    """Fill counts and kinds from the current generation, build missing parent levels."""
    before = {lv: {f.code: f for f in old[lv]} for lv in LEVELS}
    out: dict[Level, tuple[GridFeature, ...]] = {}
    for lv in LEVELS:
        filled = []
        for f in features[lv]:
            prev = before[lv].get(f.code)
            filled.append(replace(
                f,
                population=f.population if f.population is not None
                else (prev.population if prev else None),
                households=f.households if f.households is not None
                else (prev.households if prev else None),
                kind=f.kind or (prev.kind if prev else None),
            ))
        out[lv] = tuple(filled)
    built: list[Level] = []
    for child_level, parent_level in reversed(PARENT.items()):
        if out[parent_level] or not out[child_level]:
            continue
        out[parent_level] = _unions(out[child_level], parent_level, before[parent_level])
        built.append(parent_level)
    return out, tuple(built)


def _unions(
    children: Iterable[GridFeature], level: Level, before: Mapping[str, GridFeature]
) -> tuple[GridFeature, ...]:
    n = CODE_LENGTH[level]
    groups: dict[str, list[GridFeature]] = {}
    for c in children:
        if len(c.code) == CODE_LENGTH[c.level] and c.code.isascii() and c.code.isdigit():
            groups.setdefault(c.code[:n], []).append(c)
    out = []
    for code, kids in sorted(groups.items()):
        geoms = [shapely.make_valid(k.geom) for k in kids if k.geom is not None]
        geom = shapely.union_all(geoms) if geoms else None
        prev = before.get(code)
        out.append(GridFeature(
            level=level,
            code=code,
            name=prev.name if prev else code,
            geom=geom,
            population=sum(k.population or 0 for k in kids),
            households=sum(k.households or 0 for k in kids),
        ))
    return tuple(out)


def _changes(new: Sequence[GridFeature], old: Sequence[GridFeature]) -> LevelChanges:
    before = {f.code: f for f in old}
    after = {f.code: f for f in new}
    common = sorted(set(before) & set(after))
    a = np.array([shapely.make_valid(after[c].geom) for c in common], dtype=object)
    b = np.array([shapely.make_valid(before[c].geom) for c in common], dtype=object)
    moved = shapely.area(shapely.symmetric_difference(a, b)) if common else np.array([])
    return LevelChanges(
        added=tuple(sorted(set(after) - set(before))),
        removed=tuple(sorted(set(before) - set(after))),
        changed=tuple((c, float(m)) for c, m in zip(common, moved, strict=True)
                      if m > CHANGE_M2),
        renamed=tuple((c, before[c].name, after[c].name) for c in common
                      if before[c].name != after[c].name),
    )


def _write(
    conn: Conn,
    features: Mapping[Level, Sequence[GridFeature]],
    previous: Generation | None,
    valid_from: dt.date,
    name: str,
    source: str,
) -> Generation:
    with conn.transaction():
        row = conn.execute(
            "SELECT id FROM grid_generations WHERE valid_to IS NULL FOR UPDATE"
        ).fetchone()
        if (row[0] if row else None) != (previous.id if previous else None):
            raise InvalidInput("the current grid generation changed during the import; "
                               "run it again")
        if previous is not None:
            conn.execute("UPDATE grid_generations SET valid_to = %s WHERE id = %s",
                         (valid_from, previous.id))
        row = conn.execute(
            "INSERT INTO grid_generations (name, valid_from, source) VALUES (%s, %s, %s) "
            "RETURNING id",
            (name, valid_from, source),
        ).fetchone()
        if row is None:  # pragma: no cover - INSERT ... RETURNING returns a row
            raise LayersError("no id returned for the new grid generation")
        new_id = int(row[0])
        for level in LEVELS:
            _insert(conn, level, new_id, features[level])
        refresh_micro_grid_parts(conn, new_id)
    return Generation(new_id, name, valid_from, None)


def _insert(conn: Conn, level: Level, generation_id: int, rows: Sequence[GridFeature]) -> None:
    columns = ["generation_id", "code", "name", "population", "households"]
    if level in PARENT:
        columns.append(PARENT_COLUMN[level])
    if level is Level.MICRO_GRID:
        columns.append("kind")
    stmt = sql.SQL("INSERT INTO {table} ({columns}, geom) VALUES ({values}, "
                   "ST_Multi(ST_GeomFromWKB({wkb}, {srid})))").format(
        table=sql.Identifier(TABLE[level]),
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        values=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        wkb=sql.Placeholder(),
        srid=sql.Placeholder(),
    )
    params = []
    for f in rows:
        if f.geom is None:  # pragma: no cover - refused by the topology check
            raise InvalidInput(f"{level.value} {f.code} has no geometry")
        values: list[object] = [generation_id, f.code, f.name, f.population or 0,
                                f.households or 0]
        if level in PARENT:
            values.append(f.code[: CODE_LENGTH[PARENT[level]]])
        if level is Level.MICRO_GRID:
            values.append(f.kind or DEFAULT_KIND)
        params.append([*values, shapely.to_wkb(f.geom), SRID])
    with conn.cursor() as cur:
        cur.executemany(stmt, params)
