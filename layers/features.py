"""OGC API – Features pages from PostGIS: one statement per request, the page made there.

The engine behind ``/ogc/collections/{id}/items`` (our route and pygeoapi's provider
alike).  :func:`parse_items` turns the request's query parameters into a frozen
:class:`ItemsQuery` (every fault an :class:`~layers.errors.InvalidInput` naming the
parameter); :func:`items_statement` turns it into ONE parameterised statement whose
single value is the whole GeoJSON FeatureCollection as text (features, counts, links);
:func:`items_page` / :func:`items_page_sync` run it.  Python never parses the page.

Limits and rules (the API documents the same):

- ``limit``: 1 to :data:`MAX_LIMIT` (10,000; QGIS asks for big pages), default 10; more is
  read as the maximum, as OGC API Features asks.
  Anything else is refused, not clamped.
- Paging: ``next`` links carry ``offset`` (the position of the next page) and an opaque
  ``cursor`` (the sort values and id of the last feature, base64url JSON made by the
  statement).  A cursor makes the page a keyset read (``(sort values, id) > cursor`` on
  the index), so latency stays flat at any depth.  A cursor is used only when it
  belongs to the request's ``sortby`` and its position equals ``offset`` (or no
  ``offset`` is given); otherwise ``offset`` alone decides (``OFFSET n``, for clients
  that count, and for ``prev`` links, which are offset links).
- ``numberMatched`` is exact (a ``count(*)`` over the same conditions, in the same
  statement): QGIS 3.22 trusts it.
- ``sortby``: ``+col``/``-col`` over registry columns, at most :data:`MAX_SORT_KEYS`;
  ``id`` always breaks ties (and is the order when no ``sortby`` is given).  Nulls sort
  last either way (``-installed_on`` is newest first, undated last).
- ``properties``: registry columns, in the order asked.
- Output CRS (``crs``) and ``bbox-crs``: :data:`CRSES`.  Coordinates follow the axis
  order the CRS defines (OGC API – Features Part 2): CRS84 is lon/lat; EPSG:4490 and
  EPSG:4326 are lat/lon; EPSG:4548 (CGCS2000 Gauss-Krüger, CM 117°E) is
  northing/easting; EPSG:3857 is easting/northing.  Swaps are ``ST_FlipCoordinates``,
  transforms ``ST_Transform`` with integer SRIDs.  CGCS2000 and WGS 84 agree to the
  centimetre and PROJ uses a null transformation between them, so CRS84 and
  EPSG:4326 are the stored numbers (no transform).  GeoJSON keeps 7 decimals for
  degrees (1 cm) and 3 for metres (1 mm).
- ``bbox``: 4 numbers (or 6, heights ignored) in ``bbox-crs`` (CRS84 by default),
  features whose geometry intersects it (``ST_Intersects``, on the GiST index).  Lower
  corner first, inside the CRS's area of use; its ground area is at most the server's
  ``GRIDGOV_MAX_BBOX_KM2`` (:func:`check_bbox_area`, called by the route).
- ``datetime`` (RFC 3339 instant or interval, ``..``/empty for open ends): sensors on
  ``installed_on`` (a date: dates compare as calendar dates, as written), grid levels
  on their generation's validity (``valid_from <= end`` and ``valid_to > start`` or
  current).  A collection with no time answers 400.
- Grid levels (streets, communities, micro-grids; any layer with ``generation_id``)
  show the current generation unless the request names one: ``generation_id=N`` (a
  property filter) or ``datetime``.
- Other query parameters named like a registry column are equality filters (OGC API –
  Features Part 3, queryables as query parameters); any other parameter is refused.
- ``filter`` (CQL2 text or JSON, ``filter-lang``, ``filter-crs``): parsed, checked and
  translated by :mod:`layers.cql2` once, when the request is parsed (:class:`Filter`),
  joined in one place (:func:`_where_sql`) as a fragment with its own bound parameters.

Statements: every value is a bound parameter with a fixed name, so the SQL text depends
only on the request's shape (:class:`_Shape`: collection, CRS, properties, sort keys,
which conditions, the filter's fragment); each shape is composed with ``psycopg.sql``
once and kept as bytes (:func:`_items_sql`, :func:`_item_sql`).  Composing and rendering
the statement on every request cost about 0.9 ms of the server's CPU.

Identifiers come from the registry only (``psycopg.sql.Identifier``); every value is a
bound parameter.  Only registry columns are ever selected: no personal data.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import psycopg
from psycopg import sql
from psycopg.adapt import Buffer, Loader

from layers import cql2
from layers.errors import DatabaseNotReady, InvalidInput, NotFound
from layers.registry import LAYERS, Layer

DEFAULT_LIMIT = 10
MAX_LIMIT = 10_000
MAX_OFFSET = 1_000_000_000  # a bound for OFFSET and cursor positions (bigint-safe)
MAX_SORT_KEYS = 4
STORAGE_SRID = 4490
ID = "id"  # the usual key column; a table's own single-column primary key is used

CRS84_URI = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG_URI = "http://www.opengis.net/def/crs/EPSG/0/{}"
STORAGE_CRS_URI = EPSG_URI.format(STORAGE_SRID)

# query parameters with a meaning of their own (the rest must be queryables)
RESERVED = frozenset({
    "f", "lang", "limit", "offset", "cursor", "bbox", "bbox-crs", "crs", "datetime",
    "properties", "sortby", "skipGeometry", "filter", "filter-lang", "filter-crs",
})
FILTER_LANGS = ("cql2-text", "cql2-json")


@dataclass(frozen=True)
class Crs:
    """A CRS the API answers in (and reads ``bbox`` in)."""

    uri: str
    srid: int  # PostGIS SRID of the numbers
    flip: bool  # the CRS's first axis points north: swap x and y
    digits: int  # GeoJSON decimals: 7 for degrees (1 cm), 3 for metres (1 mm)
    # the numbers a bbox may hold (x0, y0, x1, y1 in east/north order): the Earth, or a
    # window PROJ transforms without failing
    bounds: tuple[float, float, float, float] = (-180.0, -90.0, 180.0, 90.0)

    @property
    def geographic(self) -> bool:
        return self.srid == STORAGE_SRID

    @property
    def transform(self) -> bool:
        return self.srid != STORAGE_SRID


CRS84 = Crs(CRS84_URI, STORAGE_SRID, flip=False, digits=7)
CRSES: tuple[Crs, ...] = (
    CRS84,
    Crs(EPSG_URI.format(4490), STORAGE_SRID, flip=True, digits=7),  # CGCS2000, lat/lon
    Crs(EPSG_URI.format(4326), STORAGE_SRID, flip=True, digits=7),  # WGS 84, lat/lon
    Crs(EPSG_URI.format(3857), 3857, flip=False, digits=3,  # Web Mercator, E/N
        bounds=(-20037508.35, -20048966.11, 20037508.35, 20048966.11)),
    Crs(EPSG_URI.format(4548), 4548, flip=True, digits=3,  # CGCS2000 GK CM 117E, N/E
        bounds=(-1.0e6, -1.0e7, 2.0e6, 1.0e7))
)
CRS_BY_URI: Mapping[str, Crs] = {c.uri: c for c in CRSES}


def crs_of(uri: str, parameter: str = "crs") -> Crs:
    try:
        return CRS_BY_URI[uri.strip()]
    except KeyError:
        raise InvalidInput(
            f"{parameter}: {uri!r} is not supported; use one of {', '.join(CRS_BY_URI)}",
            parameter=parameter) from None


# -- what the database says about each published layer -----------------------------------

JSON_TYPES = {
    "int2": "integer", "int4": "integer", "int8": "integer",
    "float4": "number", "float8": "number", "numeric": "number",
    "text": "string", "varchar": "string", "bpchar": "string",
    "date": "date", "timestamptz": "datetime", "timestamp": "datetime",
    "bool": "boolean",
}


@dataclass(frozen=True)
class Collection:
    """A published layer with its column types, time and extents, read from the database."""

    layer: Layer
    key: str  # the primary key column: the features' ids
    types: Mapping[str, str]  # registry column (and key) -> integer/number/string/date/...
    nullable: frozenset[str]
    # the column ``datetime`` reads: the layer's one date or timestamp column (grid
    # levels read their generation's validity instead)
    time: str | None
    bbox: tuple[float, float, float, float] | None  # CRS84; current generation for grids
    interval: tuple[date | None, date | None] | None  # temporal extent, None ends are open

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def generational(self) -> bool:
        """Rows belong to grid generations (grid levels, and what is derived from them):
        the current one by default, ``datetime`` picks by generation validity."""
        return "generation_id" in self.layer.columns

    @property
    def temporal(self) -> bool:
        return self.generational or self.time is not None

    @property
    def queryables(self) -> tuple[str, ...]:
        """What ``sortby``, property parameters and ``filter`` may name: the registry
        columns (``filter`` also ``geometry``)."""
        return self.layer.columns


# The tables' keys, columns and types: the first ordinary table of each name on the
# search path (a reader's search path starts with schema `published`, whose views of the
# same names have neither indexes nor NOT NULL marks, and publish these tables' columns).
_TABLES = """
c.relname = ANY(%s) AND c.relkind IN ('r', 'p')
  AND c.relnamespace IN (SELECT s::text::regnamespace FROM unnest(current_schemas(false)) s)
"""
_KEYS = """
SELECT c.relname, min(a.attname), count(*)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
WHERE i.indisprimary AND """ + _TABLES + """
GROUP BY c.relname
"""
_COLUMNS = """
SELECT c.relname, a.attname, t.typname, NOT a.attnotnull
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_type t ON t.oid = a.atttypid
WHERE """ + _TABLES + """
  AND a.attnum > 0 AND NOT a.attisdropped
"""


def _extents_stmt(layers: Sequence[Layer], times: Mapping[str, str | None]) -> sql.Composed:
    parts = []
    for layer in layers:
        where = sql.SQL("")
        column = times.get(layer.name)
        if "generation_id" in layer.columns:
            where = sql.SQL(
                "WHERE generation_id = (SELECT id FROM grid_generations WHERE valid_to IS NULL)")
            period = sql.SQL(
                "(SELECT min(valid_from) FROM grid_generations), "
                "(SELECT CASE WHEN bool_or(valid_to IS NULL) THEN NULL ELSE max(valid_to) END "
                "FROM grid_generations)")
        elif column:
            period = sql.SQL("min({c})::date, max({c})::date").format(c=sql.Identifier(column))
        else:
            period = sql.SQL("NULL::date, NULL::date")
        parts.append(sql.SQL(
            "(SELECT {name}::text, ST_Extent(geom), {period} FROM {table} {where})"
        ).format(name=sql.Literal(layer.name), period=period,
                 table=sql.Identifier(layer.table), where=where))
    return sql.SQL(
        "SELECT layer, ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e), t0, t1 "
        "FROM ({}) s (layer, e, t0, t1)"
    ).format(sql.SQL(" UNION ALL ").join(parts))


def load_catalog(conn: psycopg.Connection[Any]) -> dict[str, Collection]:
    """Every registry layer with its column types and extents (two statements).

    Refuses (``DatabaseNotReady``) a registry column the database does not have: the
    registry and the schema must agree before anything is published.
    """
    names = [layer.table for layer in LAYERS.values()]
    types: dict[str, dict[str, tuple[str, bool]]] = {n: {} for n in names}
    for table, column, typname, nullable in conn.execute(_COLUMNS, (names,)).fetchall():
        types[table][column] = (typname, nullable)
    keys = {table: key for table, key, n in conn.execute(_KEYS, (names,)).fetchall() if n == 1}
    times: dict[str, str | None] = {}
    for layer in LAYERS.values():
        columns = types[layer.table]
        missing = [c for c in ("geom", *layer.columns) if c not in columns]
        if missing:
            raise DatabaseNotReady(
                f"table {layer.table} lacks published column(s) {', '.join(missing)}")
        key = keys.get(layer.table)
        if key is None or JSON_TYPES.get(columns[key][0]) != "integer":
            raise DatabaseNotReady(f"table {layer.table} has no integer primary key to serve "
                                   "as feature id")
        dated = [c for c in layer.columns
                 if JSON_TYPES.get(columns[c][0]) in ("date", "datetime")]
        times[layer.name] = dated[0] if len(dated) == 1 else None
    catalog = {}
    rows = conn.execute(_extents_stmt(list(LAYERS.values()), times)).fetchall()
    for name, x0, y0, x1, y1, start, end in rows:
        layer = LAYERS[name]
        columns = types[layer.table]
        temporal = "generation_id" in layer.columns or times[name] is not None
        key = keys[layer.table]
        catalog[name] = Collection(
            layer=layer,
            key=key,
            types={c: JSON_TYPES.get(columns[c][0], "string") for c in (key, *layer.columns)},
            nullable=frozenset(c for c in layer.columns if columns[c][1]),
            time=times[name],
            bbox=None if x0 is None else (x0, y0, x1, y1),
            interval=(start, end) if temporal and (start or end) else None,
        )
    return {name: catalog[name] for name in LAYERS}  # registry order


# -- the request --------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """A CQL2 filter, parsed, checked and translated by :mod:`layers.cql2` once, when
    the request was parsed: ``sql`` is the ``WHERE`` fragment over ``t``'s columns (its
    shape: a statement is composed once per fragment) and ``values`` its bound values
    (``cql0``, ``cql1`` ...)."""

    text: str
    lang: str  # cql2-text or cql2-json
    crs: str | None  # filter-crs as given (layers.cql2 reads it)
    sql: str = "TRUE"
    values: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ItemsQuery:
    """One items request, checked against the collection (see the module notes)."""

    key: str = ID  # the collection's key column (ids; breaks ties)
    limit: int = DEFAULT_LIMIT
    offset: int = 0  # position of the page's first feature
    after: tuple[Any, ...] | None = None  # keyset: sort values, then id, of the one before
    bbox: tuple[float, float, float, float] | None = None  # as given, in bbox_crs
    bbox_crs: Crs = CRS84
    crs: Crs = CRS84
    interval: tuple[date | datetime | None, date | datetime | None] | None = None
    properties: tuple[str, ...] | None = None  # None: all registry columns
    sortby: tuple[tuple[str, bool], ...] = ()  # (column, descending)
    equals: tuple[tuple[str, Any], ...] = ()
    skip_geometry: bool = False
    filter: Filter | None = None

    @property
    def sort_spec(self) -> str:
        """Canonical ``sortby`` (what a cursor is bound to)."""
        return ",".join(("-" if desc else "+") + col for col, desc in self.sortby)

    @property
    def keys(self) -> tuple[tuple[str, bool], ...]:
        """The full order: ``sortby`` then the key (unless sorted by it already)."""
        if any(col == self.key for col, _ in self.sortby):
            return self.sortby
        return (*self.sortby, (self.key, False))


def _bad(parameter: str, message: str) -> InvalidInput:
    return InvalidInput(f"{parameter}: {message}", parameter=parameter)


def _integer(parameter: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise _bad(parameter, f"{text!r} is not an integer") from None


def _number(parameter: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad(parameter, f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise _bad(parameter, f"{text!r} is not a finite number")
    return value


def _bbox(text: str, crs: Crs) -> tuple[float, float, float, float]:
    parts = text.split(",")
    if len(parts) not in (4, 6):
        raise _bad("bbox", f"expected 4 numbers (or 6 with heights), got {len(parts)}")
    nums = [_number("bbox", p) for p in parts]
    if len(nums) == 6:
        nums = [nums[0], nums[1], nums[3], nums[4]]
    a0, a1, b0, b1 = nums
    if a0 > b0 or a1 > b1:
        raise _bad("bbox", "the lower corner comes first (and boxes across the antimeridian "
                           "are not supported)")
    x0, y0, x1, y1 = (a1, a0, b1, b0) if crs.flip else (a0, a1, b0, b1)
    e0, n0, e1, n1 = crs.bounds
    if not (e0 <= x0 and x1 <= e1 and n0 <= y0 and y1 <= n1):
        if crs.geographic:
            order = "lat,lon" if crs.flip else "lon,lat"
        else:
            order = "northing,easting" if crs.flip else "easting,northing"
        raise _bad("bbox", f"outside the area {crs.uri} covers ({order} order)")
    return a0, a1, b0, b1


EARTH_RADIUS_KM = 6371.0088  # mean radius: areas of a bbox to 0.5 %, enough for a limit
MERCATOR_R_M = 6378137.0


def bbox_area_km2(q: ItemsQuery) -> float:
    """The area a query's ``bbox`` covers on the ground (km²; 0 without a bbox).  Degrees:
    the spherical zone between the two parallels; EPSG:3857: its corners in degrees
    first; other projected CRSes (Gauss-Krüger): width × height in metres."""
    if q.bbox is None:
        return 0.0
    a0, a1, b0, b1 = q.bbox
    x0, y0, x1, y1 = (a1, a0, b1, b0) if q.bbox_crs.flip else (a0, a1, b0, b1)
    if q.bbox_crs.srid == 3857:
        x0, x1 = (math.degrees(v / MERCATOR_R_M) for v in (x0, x1))
        y0, y1 = (math.degrees(math.atan(math.sinh(v / MERCATOR_R_M))) for v in (y0, y1))
    elif not q.bbox_crs.geographic:
        return (x1 - x0) * (y1 - y0) / 1e6
    return (EARTH_RADIUS_KM ** 2 * math.radians(x1 - x0)
            * abs(math.sin(math.radians(y1)) - math.sin(math.radians(y0))))


def check_bbox_area(q: ItemsQuery, max_km2: float) -> None:
    """Refuse a ``bbox`` covering more than ``max_km2`` (400 naming the limit)."""
    area = bbox_area_km2(q)
    if area > max_km2:
        raise _bad("bbox", f"covers {area:,.0f} km², more than the {max_km2:,.0f} km² this "
                           "server answers in one request; ask for a smaller area (or none: "
                           "without a bbox the whole collection is paged)")


def _instant(text: str) -> date | datetime | None:
    text = text.strip()
    if text in ("", ".."):
        return None
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _bad("datetime", f"{text!r} is not an RFC 3339 date or date-time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _day(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value


def _interval(text: str) -> tuple[date | datetime | None, date | datetime | None]:
    if "/" in text:
        first, _, second = text.partition("/")
        if "/" in second:
            raise _bad("datetime", "an interval has one '/'")
        start, end = _instant(first), _instant(second)
        if start is None and end is None:
            raise _bad("datetime", "an interval needs at least one end")
        if start is not None and end is not None and _day(start) > _day(end):
            raise _bad("datetime", "the interval ends before it starts")
        return start, end
    value = _instant(text)
    if value is None:
        raise _bad("datetime", "give an instant or an interval")
    return value, value


def _value(coll: Collection, column: str, text: str, parameter: str) -> Any:
    kind = coll.types[column]
    if kind == "integer":
        return _integer(parameter, text)
    if kind == "number":
        return _number(parameter, text)
    if kind == "date":
        try:
            return date.fromisoformat(text.strip())
        except ValueError:
            raise _bad(parameter, f"{text!r} is not a date (YYYY-MM-DD)") from None
    if kind == "datetime":
        try:
            instant = datetime.fromisoformat(text.strip())
        except ValueError:
            raise _bad(parameter, f"{text!r} is not an RFC 3339 date-time") from None
        if instant.tzinfo is None:
            raise _bad(parameter, f"{text!r} needs a timezone offset (RFC 3339)")
        return instant
    if kind == "boolean":
        if text.lower() not in ("true", "false"):
            raise _bad(parameter, f"{text!r} is not true or false")
        return text.lower() == "true"
    return text


def _columns(coll: Collection, text: str, parameter: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    allowed = coll.queryables
    for name in names:
        if name not in allowed:
            raise _bad(parameter, f"unknown property {name!r}; {coll.name} has "
                                  f"{', '.join(allowed)}")
    return names


def _sortby(coll: Collection, text: str) -> tuple[tuple[str, bool], ...]:
    keys: list[tuple[str, bool]] = []
    for item in text.split(","):
        # a '+' sent unencoded arrives as a space
        desc = item.strip().startswith("-")
        name = item.strip().lstrip("+-").strip()
        if name.upper().endswith((" ASC", " DESC")):
            name, _, way = name.rpartition(" ")
            desc = way.upper() == "DESC"
        _columns(coll, name, "sortby")
        if name in (k for k, _ in keys):
            raise _bad("sortby", f"{name!r} is given twice")
        keys.append((name, desc))
    if len(keys) > MAX_SORT_KEYS:
        raise _bad("sortby", f"at most {MAX_SORT_KEYS} keys")
    return tuple(keys)


def encode_cursor(position: int, sort_spec: str, values: Sequence[Any]) -> str:
    """What the statement makes for ``next`` links (also made here for tests and tools)."""
    text = json.dumps([position, sort_spec, *values], default=str, separators=(", ", ": "))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _cursor(coll: Collection, text: str, q: ItemsQuery) -> tuple[int, tuple[Any, ...]]:
    bad = _bad("cursor", "not a cursor from this server's next link (or it belongs to "
                         "another sortby)")
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
        decoded = json.loads(raw)
    except (ValueError, binascii.Error):
        raise bad from None
    keys = q.keys
    if (not isinstance(decoded, list) or len(decoded) != 2 + len(keys)
            or decoded[1] != q.sort_spec or not _is_int(decoded[0])
            or not 0 <= decoded[0] <= MAX_OFFSET):
        raise bad
    values = []
    for (column, _), value in zip(keys, decoded[2:], strict=True):
        kind = coll.types[column]
        if value is None and column in coll.nullable:
            values.append(None)
        elif kind == "integer" and _is_int(value):
            values.append(value)
        elif kind == "number" and (_is_int(value) or isinstance(value, float)):
            values.append(value)
        elif kind == "boolean" and isinstance(value, bool):
            values.append(value)
        elif kind in ("date", "datetime") and isinstance(value, str):
            try:
                values.append(date.fromisoformat(value) if kind == "date"
                              else datetime.fromisoformat(value))
            except ValueError:
                raise bad from None
        elif kind == "string" and isinstance(value, str):
            values.append(value)
        else:
            raise bad
    return decoded[0], tuple(values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _flag(parameter: str, text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise _bad(parameter, f"{text!r} is not true or false")
    return text.lower() == "true"


_CQL_TYPES = {"string": "text", "number": "number", "integer": "integer", "date": "date",
              "datetime": "timestamp"}


def _filter(coll: Collection, params: Mapping[str, str]) -> Filter:
    lang = params.get("filter-lang", "cql2-text")
    if lang not in FILTER_LANGS:
        raise _bad("filter-lang", f"{lang!r} is not supported; use {' or '.join(FILTER_LANGS)}")
    crs = params.get("filter-crs")
    try:
        cql2.filter_crs(crs)
    except cql2.FilterError as exc:
        raise _bad("filter-crs", str(exc)) from None
    try:
        return _translated(coll.layer, tuple(coll.types.items()), params["filter"], lang, crs)
    except cql2.FilterError as exc:
        raise _bad("filter", str(exc)) from None


FILTERS_KEPT = 256  # translated filters kept (QGIS sends the same one with every page)


@lru_cache(maxsize=FILTERS_KEPT)
def _translated(layer: Layer, types: tuple[tuple[str, str], ...], text: str, lang: str,
                crs: str | None) -> Filter:
    """``text`` parsed, checked and translated once (about 0.4 ms of CPU for a short
    filter); the same filter on the same collection again is not parsed again."""
    queryables = cql2.queryables(layer, {c: _CQL_TYPES.get(kind, "text")
                                         for c, kind in types if c in layer.columns})
    fragment, values = cql2.to_sql(text, lang, queryables, crs, prefix="cql", alias="t")
    return Filter(text, lang, crs, fragment.as_string(None), MappingProxyType(values))


def parse_items(coll: Collection, params: Mapping[str, str]) -> ItemsQuery:
    """Check a request's query parameters (one value each) against ``coll``."""
    got: dict[str, Any] = {"key": coll.key}
    limit = params.get("limit")
    if limit is not None:
        got["limit"] = _integer("limit", limit)
        if got["limit"] < 1:
            raise _bad("limit", f"must be from 1 to {MAX_LIMIT:,}")
        # more than the maximum is no error (OGC API Features 1, /req/core/fc-limit-
        # response-1): the page holds at most MAX_LIMIT and its next link goes on
        got["limit"] = min(got["limit"], MAX_LIMIT)
    offset = params.get("offset")
    if offset is not None:
        got["offset"] = _integer("offset", offset)
        if not 0 <= got["offset"] <= MAX_OFFSET:
            raise _bad("offset", f"must be from 0 to {MAX_OFFSET:,}")
    if "crs" in params:
        got["crs"] = crs_of(params["crs"], "crs")
    if "bbox-crs" in params:
        if "bbox" not in params:
            raise _bad("bbox-crs", "given without bbox")
        got["bbox_crs"] = crs_of(params["bbox-crs"], "bbox-crs")
    if "bbox" in params:
        got["bbox"] = _bbox(params["bbox"], got.get("bbox_crs", CRS84))
    if "datetime" in params:
        if not coll.temporal:
            raise _bad("datetime", f"{coll.name} has no time to filter on")
        got["interval"] = _interval(params["datetime"])
    if "properties" in params:
        names = _columns(coll, params["properties"], "properties")
        got["properties"] = tuple(dict.fromkeys(names))
    if "sortby" in params:
        got["sortby"] = _sortby(coll, params["sortby"])
    if "skipGeometry" in params:
        got["skip_geometry"] = _flag("skipGeometry", params["skipGeometry"])
    if "filter-lang" in params or "filter-crs" in params:
        if "filter" not in params:
            name = "filter-lang" if "filter-lang" in params else "filter-crs"
            raise _bad(name, "given without filter")
    if "filter" in params:
        got["filter"] = _filter(coll, params)
    equals = []
    for name, text in params.items():
        if name in RESERVED:
            continue
        if name not in coll.queryables:
            raise _bad(name, f"unknown parameter; {coll.name} takes "
                             f"{', '.join(sorted(RESERVED))} and its queryables "
                             f"{', '.join(coll.queryables)}")
        equals.append((name, _value(coll, name, text, name)))
    got["equals"] = tuple(equals)
    q = ItemsQuery(**got)
    if "cursor" in params:
        position, after = _cursor(coll, params["cursor"], q)
        if offset is None or got["offset"] == position:
            q = ItemsQuery(**{**got, "offset": position, "after": after})
    return q


def parse_crs(params: Mapping[str, str]) -> Crs:
    """The output CRS of a single-item request."""
    return crs_of(params["crs"], "crs") if "crs" in params else CRS84


# -- the statement -------------------------------------------------------------------------


@dataclass(frozen=True)
class PageLinks:
    """The links a page carries, which the caller (the API) shapes.

    ``next`` is the next link without its href's end; the statement completes
    ``next_href`` with the cursor when more features follow, and then the page's links
    are ``[next, *with_next]``; on the last page they are ``without_next``.
    """

    next: Mapping[str, Any] = field(default_factory=dict)
    next_href: str = ""
    with_next: Sequence[Mapping[str, Any]] = ()
    without_next: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class _Shape:
    """What the SQL text of an items statement depends on, and nothing else: the values
    are bound parameters with fixed names, so the statement is composed once per shape
    (:func:`_items_sql`) and every request of that shape sends the same bytes (psycopg
    converts them once and PostgreSQL prepares them after five runs)."""

    table: str
    key: str
    properties: tuple[str, ...]
    keys: tuple[tuple[str, bool], ...]  # ItemsQuery.keys: sortby, then the key
    crs: Crs
    skip_geometry: bool
    current: bool  # the current grid generation only
    # (generation | date | timestamp, column, has a start, end: None | date | datetime)
    time: tuple[str, str | None, bool, str | None] | None
    equals: tuple[str, ...]  # columns compared with %(eq<i>)s
    bbox: Crs | None  # the bbox-crs, when a bbox is given
    filter: str | None  # the CQL2 fragment, as rendered when the request was parsed
    after: tuple[bool, ...] | None  # keyset: per key, whether the cursor's value is NULL


def _shape(coll: Collection, q: ItemsQuery) -> _Shape:
    named = {name for name, _ in q.equals}
    time_shape = None
    if q.interval is not None:
        start, end = q.interval
        kind, column = "generation", None
        if not coll.generational:
            column = coll.time
            kind = "date" if column is not None and coll.types[column] == "date" else "timestamp"
        end_kind = None if end is None else ("datetime" if isinstance(end, datetime) else "date")
        time_shape = (kind, column, start is not None, end_kind)
    return _Shape(
        table=coll.layer.table,
        key=coll.key,
        properties=tuple(q.properties if q.properties is not None else coll.layer.columns),
        keys=q.keys,
        crs=q.crs,
        skip_geometry=q.skip_geometry,
        current=coll.generational and "generation_id" not in named and q.interval is None,
        time=time_shape,
        equals=tuple(name for name, _ in q.equals),
        bbox=q.bbox_crs if q.bbox is not None else None,
        filter=q.filter.sql if q.filter is not None else None,
        after=None if q.after is None else tuple(v is None for v in q.after),
    )


def _col(name: str, alias: str = "t") -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(name))


def _envelope_sql(crs: Crs) -> sql.Composable:
    box = sql.SQL("ST_MakeEnvelope(%(bbox_x0)s, %(bbox_y0)s, %(bbox_x1)s, %(bbox_y1)s, {})"
                  ).format(sql.Literal(crs.srid))
    if not crs.transform:
        return box
    # densify before projecting: a projected box's edges are curves in degrees
    return sql.SQL("ST_Transform(ST_Segmentize({}, %(bbox_step)s), {})").format(
        box, sql.Literal(STORAGE_SRID))


def _envelope_values(q: ItemsQuery, out: dict[str, Any]) -> None:
    assert q.bbox is not None  # noqa: S101 - callers check
    a0, a1, b0, b1 = q.bbox
    x0, y0, x1, y1 = (a1, a0, b1, b0) if q.bbox_crs.flip else (a0, a1, b0, b1)
    out.update(bbox_x0=x0, bbox_y0=y0, bbox_x1=x1, bbox_y1=y1)
    if q.bbox_crs.transform:
        out["bbox_step"] = max(x1 - x0, y1 - y0, 1.0) / 16


def _time_sql(shape: tuple[str, str | None, bool, str | None]) -> sql.Composable:
    kind, column, has_start, end = shape
    if kind == "generation":
        conds = [sql.SQL("TRUE")]
        if end is not None:
            conds.append(sql.SQL("g.valid_from <= %(t_end)s"))
        if has_start:
            conds.append(sql.SQL("(g.valid_to IS NULL OR g.valid_to > %(t_start)s)"))
        return sql.SQL("t.generation_id IN (SELECT g.id FROM grid_generations g WHERE {})"
                       ).format(sql.SQL(" AND ").join(conds))
    assert column is not None  # noqa: S101 - _shape sets it
    col = _col(column)
    conds = [sql.SQL("{} IS NOT NULL").format(col)]
    if has_start:
        conds.append(sql.SQL("{} >= %(t_start)s").format(col))
    if end is not None:
        # a timestamp column read up to a date reads the whole day (UTC): < the next day
        before = "<" if kind == "timestamp" and end == "date" else "<="
        conds.append(sql.SQL("{} {} %(t_end)s").format(col, sql.SQL(before)))
    return sql.SQL(" AND ").join(conds)


def _time_values(coll: Collection, q: ItemsQuery, out: dict[str, Any]) -> None:
    assert q.interval is not None  # noqa: S101 - callers check
    start, end = q.interval
    if coll.generational or (coll.time is not None and coll.types[coll.time] == "date"):
        if start is not None:
            out["t_start"] = _day(start)
        if end is not None:
            out["t_end"] = _day(end)
        return
    # timestamps: a date is the whole day (UTC)
    if start is not None:
        out["t_start"] = (start if isinstance(start, datetime)
                          else datetime.combine(start, time(), UTC))
    if end is not None:
        out["t_end"] = (end if isinstance(end, datetime)
                        else datetime.combine(end + timedelta(days=1), time(), UTC))


def _where_sql(shape: _Shape) -> sql.Composable:
    conds: list[sql.Composable] = []
    if shape.current:
        conds.append(sql.SQL(
            "t.generation_id = (SELECT id FROM grid_generations WHERE valid_to IS NULL)"))
    if shape.time is not None:
        conds.append(_time_sql(shape.time))
    for i, name in enumerate(shape.equals):
        conds.append(sql.SQL("{} = {}").format(_col(name), sql.Placeholder(f"eq{i}")))
    if shape.bbox is not None:
        conds.append(sql.SQL("ST_Intersects(t.geom, {})").format(_envelope_sql(shape.bbox)))
    if shape.filter is not None:
        # THE place where a CQL2 filter joins the statement: layers.cql2's fragment over
        # t's columns, its values bound as %(cql0)s ... (rendered when it was parsed)
        conds.append(sql.SQL("({})").format(sql.SQL(shape.filter)))  # type: ignore[arg-type]
    return sql.SQL(" AND ").join(conds) if conds else sql.SQL("TRUE")


def _keyset_sql(shape: _Shape) -> sql.Composable:
    """``(sort values, id)`` after the cursor (%(after<i>)s), in the order of
    :meth:`ItemsQuery.keys` (nulls last, either way)."""
    assert shape.after is not None  # noqa: S101 - callers check
    ors: list[sql.Composable] = []
    equal: list[sql.Composable] = []
    for i, ((column, desc), null) in enumerate(zip(shape.keys, shape.after, strict=True)):
        col = _col(column)
        if null:  # only nulls follow a null
            beyond: sql.Composable | None = None
            same = sql.SQL("{} IS NULL").format(col)
        else:
            holder = sql.Placeholder(f"after{i}")
            beyond = sql.SQL("({} {} {} OR {} IS NULL)").format(
                col, sql.SQL("<" if desc else ">"), holder, col)
            same = sql.SQL("{} = {}").format(col, holder)
        if beyond is not None:
            ors.append(sql.SQL("({})").format(sql.SQL(" AND ").join([*equal, beyond])))
        equal.append(same)
    return sql.SQL("({})").format(sql.SQL(" OR ").join(ors)) if ors else sql.SQL("FALSE")


def _order(keys: Sequence[tuple[str, bool]], alias: str | None) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("{} {} NULLS LAST").format(_col(c, alias) if alias else sql.Identifier(c),
                                           sql.SQL("DESC" if desc else "ASC"))
        for c, desc in keys)


def _geometry(crs: Crs, alias: str) -> sql.Composable:
    geom: sql.Composable = _col("geom", alias)
    if crs.transform:
        geom = sql.SQL("ST_Transform({}, {})").format(geom, sql.Literal(crs.srid))
    if crs.flip:
        geom = sql.SQL("ST_FlipCoordinates({})").format(geom)
    # options 0: no "crs" member (GeoJSON has none; the Content-Crs header says it)
    return sql.SQL("coalesce(ST_AsGeoJSON({}, {}, 0), 'null')").format(
        geom, sql.Literal(crs.digits))


def _feature(key: str, crs: Crs, properties: Sequence[str], skip_geometry: bool,
             alias: str) -> sql.Composable:
    """One GeoJSON Feature as text (concatenation: no JSON parse in the database)."""
    props = sql.SQL(", ").join(
        sql.SQL("{}, {}").format(sql.Literal(c), _col(c, alias)) for c in properties)
    geometry = sql.Literal("null") if skip_geometry else _geometry(crs, alias)
    return sql.SQL(
        """'{{"type":"Feature","id":' || {id} || ',"geometry":' || {geometry} """
        """|| ',"properties":' || json_build_object({props})::text || '}}'"""
    ).format(id=_col(key, alias), geometry=geometry, props=props)


STATEMENTS_KEPT = 512  # composed statements kept (one per shape of request)


@lru_cache(maxsize=STATEMENTS_KEPT)
def _items_sql(shape: _Shape) -> bytes:
    """The items statement of ``shape``, composed and rendered once."""
    where = _where_sql(shape)
    keys = [c for c, _ in shape.keys]
    wanted = list(dict.fromkeys([shape.key, *shape.properties, *keys]))
    if not shape.skip_geometry:
        wanted.append("geom")
    page_where = where
    offset = sql.SQL("%(offset)s")
    if shape.after is not None:
        page_where = sql.SQL("{} AND {}").format(where, _keyset_sql(shape))
        offset = sql.SQL("0")
    token = sql.SQL(
        "translate(encode(convert_to(json_build_array(%(position)s::bigint, %(spec)s::text, "
        "{values})::text, 'UTF8'), 'base64'), E'+/=\\n', '-_')"
    ).format(values=sql.SQL(", ").join(_col(c, "n") for c in keys))
    statement = sql.SQL("""
WITH page AS (
  SELECT {wanted} FROM {table} t WHERE {page_where}
  ORDER BY {order_t} LIMIT %(limit_more)s OFFSET {offset}
), numbered AS (
  SELECT page.*, row_number() OVER (ORDER BY {order_page}) AS rn FROM page
)
SELECT {open} || (SELECT count(*) FROM {table} t WHERE {where})
  || ',"numberReturned":' || (SELECT count(*) FROM numbered WHERE rn <= %(limit)s)
  || ',"timeStamp":"'
  || to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
  || '","links":' || (CASE WHEN (SELECT count(*) FROM numbered) > %(limit)s
     THEN jsonb_build_array(%(next)s::jsonb || jsonb_build_object('href', %(next_href)s::text
          || (SELECT {token} FROM numbered n WHERE n.rn = %(limit)s))) || %(with_next)s::jsonb
     ELSE %(without_next)s::jsonb END)::text
  || ',"features":[' || coalesce((SELECT string_agg({feature}, ',' ORDER BY n.rn)
     FROM numbered n WHERE n.rn <= %(limit)s), '') || ']}}'
""").format(
        wanted=sql.SQL(", ").join(_col(c) for c in wanted),
        table=sql.Identifier(shape.table),
        page_where=page_where,
        where=where,
        order_t=_order(shape.keys, "t"),
        order_page=_order(shape.keys, None),
        offset=offset,
        open=sql.Literal('{"type":"FeatureCollection","numberMatched":'),
        token=token,
        feature=_feature(shape.key, shape.crs, shape.properties, shape.skip_geometry, "n"),
    )
    return statement.as_bytes(None)


def _items_values(coll: Collection, q: ItemsQuery, links: PageLinks) -> dict[str, Any]:
    """The bound values of the items statement (names as :func:`_items_sql` writes them)."""
    out: dict[str, Any] = {
        "limit_more": q.limit + 1,
        "offset": q.offset,
        "limit": q.limit,
        "position": q.offset + q.limit,
        "spec": q.sort_spec,
        "next": json.dumps(links.next),
        "next_href": links.next_href,
        "with_next": json.dumps(list(links.with_next)),
        "without_next": json.dumps(list(links.without_next)),
    }
    if q.interval is not None:
        _time_values(coll, q, out)
    for i, (_, value) in enumerate(q.equals):
        out[f"eq{i}"] = value
    if q.bbox is not None:
        _envelope_values(q, out)
    if q.filter is not None:
        out.update(q.filter.values)  # cql0, cql1 ...: no clash with the names above
    if q.after is not None:
        for i, value in enumerate(q.after):
            if value is not None:
                out[f"after{i}"] = value
    return out


def items_statement(coll: Collection, q: ItemsQuery, links: PageLinks | None = None
                    ) -> tuple[bytes, dict[str, Any]]:
    """The statement whose one value is the page (a FeatureCollection, as text), and its
    values.  The statement's bytes are the same for every request of the same shape."""
    return _items_sql(_shape(coll, q)), _items_values(coll, q, links or PageLinks())


@lru_cache(maxsize=STATEMENTS_KEPT)
def _item_sql(table: str, key: str, columns: tuple[str, ...], crs: Crs, links: bool) -> bytes:
    feature = _feature(key, crs, columns, False, "t")
    if links:
        feature = sql.SQL("""left({}, -1) || ',"links":' || %(links)s::text || '}}'""").format(
            feature)
    return sql.SQL("SELECT {} FROM {} t WHERE {} = %(fid)s").format(
        feature, sql.Identifier(table), _col(key)).as_bytes(None)


def item_statement(coll: Collection, fid: int, crs: Crs,
                   links: Sequence[Mapping[str, Any]] | None = None
                   ) -> tuple[bytes, dict[str, Any]]:
    """The statement whose one value is the feature (with ``links`` when given)."""
    statement = _item_sql(coll.layer.table, coll.key, coll.layer.columns, crs,
                          links is not None)
    values: dict[str, Any] = {"fid": fid}
    if links is not None:
        values["links"] = json.dumps(list(links))
    return statement, values


def feature_id(text: str) -> int:
    """An item id from a URL (ids are integers; anything else names no feature)."""
    try:
        fid = int(text)
    except ValueError:
        raise NotFound(f"no feature {text!r}") from None
    if not -(2**63) <= fid < 2**63:
        raise NotFound(f"no feature {text!r}")
    return fid


class _Raw(Loader):
    """``text`` as the bytes that came over the wire: the page goes out as it came in."""

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


def _one(row: tuple[Any, ...] | None, coll: Collection, fid: int | None = None) -> bytes:
    if row is None:
        raise NotFound(f"{coll.name} has no feature {fid}")
    value: bytes = row[0]
    return value


async def items_page(conn: psycopg.AsyncConnection[Any], coll: Collection, q: ItemsQuery,
                     links: PageLinks | None = None) -> bytes:
    """The page as UTF-8 GeoJSON text."""
    statement, params = items_statement(coll, q, links)
    cur = conn.cursor()
    cur.adapters.register_loader("text", _Raw)
    await cur.execute(statement, params)
    return _one(await cur.fetchone(), coll)


def items_page_sync(conn: psycopg.Connection[Any], coll: Collection, q: ItemsQuery,
                    links: PageLinks | None = None) -> bytes:
    statement, params = items_statement(coll, q, links)
    cur = conn.cursor()
    cur.adapters.register_loader("text", _Raw)
    cur.execute(statement, params)
    return _one(cur.fetchone(), coll)


async def item(conn: psycopg.AsyncConnection[Any], coll: Collection, fid: int, crs: Crs,
               links: Sequence[Mapping[str, Any]] | None = None) -> bytes:
    """One feature as UTF-8 GeoJSON text; ``NotFound`` when ``fid`` is not there."""
    statement, params = item_statement(coll, fid, crs, links)
    cur = conn.cursor()
    cur.adapters.register_loader("text", _Raw)
    await cur.execute(statement, params)
    return _one(await cur.fetchone(), coll, fid)


def item_sync(conn: psycopg.Connection[Any], coll: Collection, fid: int, crs: Crs,
              links: Sequence[Mapping[str, Any]] | None = None) -> bytes:
    statement, params = item_statement(coll, fid, crs, links)
    cur = conn.cursor()
    cur.adapters.register_loader("text", _Raw)
    cur.execute(statement, params)
    return _one(cur.fetchone(), coll, fid)

