"""OGC CQL2 filters (``cql2-text`` and ``cql2-json``) as one SQL ``WHERE`` fragment.

A filter is parsed whole, checked against the layer's queryables and typed before any
SQL exists; what comes out is a ``psycopg.sql.Composable`` whose every value is a bound
parameter (``%(cql0)s`` ...) and whose only identifiers are registry columns.  Anything
this module does not know is refused with :class:`FilterError` naming it: an unknown or
misspelled property (never read as a string, so a typo cannot match every row), any
function other than ``CASEI`` and the S_/T_ operators (``pg_sleep``, ``query_to_xml``,
``version``), arithmetic, comments, ``;``, filters deeper than :data:`MAX_DEPTH` or longer
than :data:`MAX_FILTER_CHARS`.

Grammar (OGC 21-065r2, keywords and function names case-insensitive)::

    filter     = term {OR term};  term = factor {AND factor};  factor = [NOT] primary
    primary    = "(" filter ")" | TRUE | FALSE | predicate
    predicate  = value ("=" | "<>" | "<" | "<=" | ">" | ">=") value
               | value [NOT] LIKE value | value [NOT] BETWEEN value AND value
               | value [NOT] IN "(" value {"," value} ")" | value IS [NOT] NULL
               | S_INTERSECTS | S_DISJOINT | S_CONTAINS | S_WITHIN | S_EQUALS | S_TOUCHES
                 | S_CROSSES | S_OVERLAPS "(" value "," value ")"
               | S_DWITHIN "(" value "," value "," distance "," units ")"   (extension)
               | T_AFTER | T_BEFORE | T_CONTAINS | T_DISJOINT | T_DURING | T_EQUALS
                 | T_FINISHEDBY | T_FINISHES | T_INTERSECTS | T_MEETS | T_METBY
                 | T_OVERLAPPEDBY | T_OVERLAPS | T_STARTEDBY | T_STARTS "(" value "," value ")"
    value      = property | "double-quoted property" | 'text' ('' or \\' escape a quote)
               | number | TRUE | FALSE | CASEI(value) | DATE('2022-01-01')
               | TIMESTAMP('2022-01-01T08:00:00Z') | INTERVAL(instant, instant)
               | WKT (POINT ... MULTIPOLYGON, optional Z/M, EMPTY) | BBOX(x1, y1, x2, y2)

cql2-json is the same tree as ``{"op": ..., "args": [...]}`` with ``{"property": ...}``,
``{"date": ...}``, ``{"timestamp": ...}``, ``{"interval": [...]}``, ``{"bbox": [...]}``
and GeoJSON geometries.

Decisions:

* Types: text compares with text, numbers with numbers, dates and timestamps with each
  other; nothing is cast to make a comparison work.  A date meets a timestamp as midnight
  UTC.  ``BETWEEN`` takes numbers; dates use the T_ operators.
* Temporal operators follow CQL2's (Allen's) definitions on [begin, end]; a date or
  timestamp is the interval [t, t], ``'..'`` is unbounded (bound as ``±infinity`` so a
  NULL property still matches nothing).  So ``T_DURING`` is strict: a date equal to an
  interval's first or last day is not *during* it (``T_INTERSECTS`` includes both ends).
* Geometry literals are read in the filter CRS in *that CRS's own axis order*, as OGC
  API Features Part 2/3 require: CRS84 (the default) and EPSG:3857 are x/y, EPSG:4326,
  EPSG:4490 (latitude first) and the CGCS2000 Gauss-Krüger zones EPSG:4534-4554 (northing
  first) are y/x.  Every vertex is checked in Python (finite, inside the CRS's domain,
  polygon rings closed, geometry valid by GEOS) and the geometry is transformed in SQL
  with integer SRIDs, once per statement (an uncorrelated sub-select, so a generic plan
  does not transform it per row).  GEOMETRYCOLLECTION literals are refused: GEOS 3.11
  raises TopologyExceptions relating them.
* ``S_DWITHIN(a, b, d, units)``: d in metres (or km) on the CGCS2000 ellipsoid
  (``geography``), at most :data:`MAX_DWITHIN_M`; with a literal, a box prefilter lets the
  GiST index work.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

import pyproj
import shapely
import shapely.errors
import shapely.geometry
from psycopg import sql
from sqlalchemy import Date, DateTime, Float, Integer, Numeric, String

from gis.crs import STORAGE_EPSG, to_storage_many
from gis.errors import GisError
from layers.errors import InvalidInput
from layers.models import Base
from layers.registry import Layer

MAX_FILTER_CHARS = 10_000
MAX_DEPTH = 20
MAX_DWITHIN_M = 100_000.0
GEOMETRY = "geometry"  # the queryable name of every layer's geometry (column ``geom``)
SQL_TYPES = ("text", "number", "integer", "date", "timestamp", "geometry")
FUNCTIONS = ("CASEI",)  # the only plain functions a filter may call

Lang = Literal["cql2-text", "cql2-json"]


class FilterError(InvalidInput):
    """A filter that cannot be run as given; the message names the offending part."""


# -- queryables -------------------------------------------------------------------------


@dataclass(frozen=True)
class Queryable:
    name: str
    sql_type: str  # one of SQL_TYPES
    column: str

    def json_schema(self) -> dict[str, Any]:
        """This queryable as a JSON Schema property (for the /queryables document)."""
        schemas: dict[str, dict[str, Any]] = {
            "text": {"type": "string"},
            "number": {"type": "number"},
            "integer": {"type": "integer"},
            "date": {"type": "string", "format": "date"},
            "timestamp": {"type": "string", "format": "date-time"},
            "geometry": {"format": "geometry-any"},
        }
        return {"title": self.name, **schemas[self.sql_type]}


def column_types(table: str) -> dict[str, str]:
    """Queryable types of ``table``'s columns, read from the SQLAlchemy models."""
    kinds: tuple[tuple[type, str], ...] = (
        (Integer, "integer"), (Float, "number"), (Numeric, "number"), (DateTime, "timestamp"),
        (Date, "date"), (String, "text"),
    )
    out = {}
    for col in Base.metadata.tables[table].columns:
        for cls, kind in kinds:
            if isinstance(col.type, cls):
                out[col.name] = kind
                break
    return out


def queryables(
    layer: Layer, types: Mapping[str, str] | None = None
) -> MappingProxyType[str, Queryable]:
    """The properties a filter on ``layer`` may name: its registry columns and ``geometry``.

    ``types`` maps column names to one of :data:`SQL_TYPES`; by default they are read from
    the models.  A registry column without a known type is a programming error.  Build
    these once per layer at start-up.
    """
    known = column_types(layer.table) if types is None else types
    out: dict[str, Queryable] = {}
    for col in layer.columns:
        kind = known.get(col)
        if kind not in SQL_TYPES or kind == "geometry":
            raise ValueError(f"{layer.name}.{col} has no queryable type (got {kind!r})")
        out[col] = Queryable(col, kind, col)
    out[GEOMETRY] = Queryable(GEOMETRY, "geometry", "geom")
    return MappingProxyType(out)


# -- filter CRS -------------------------------------------------------------------------


@dataclass(frozen=True)
class FilterCrs:
    """The CRS geometry literals are written in; ``yx``: the CRS's first axis is north."""

    uri: str
    srid: int
    yx: bool

    @property
    def gis_name(self) -> str:
        return "CRS84" if self.uri == CRS84_URI else f"EPSG:{self.srid}"

    @property
    def axes(self) -> str:
        geographic = self.uri == CRS84_URI or self.srid in (4326, 4490)
        order = ("latitude", "longitude") if geographic else ("northing", "easting")
        return ", ".join(order if self.yx else order[::-1])


CRS84_URI = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
_EPSG_URI = "http://www.opengis.net/def/crs/EPSG/0/"
CRS84 = FilterCrs(CRS84_URI, 4326, False)
# axis order as the EPSG registry defines it (a test checks this against PROJ)
_YX = {4326: True, 4490: True, 3857: False, **{code: True for code in range(4534, 4555)}}
FILTER_CRS: MappingProxyType[str, FilterCrs] = MappingProxyType({
    CRS84_URI: CRS84,
    **{_EPSG_URI + str(code): FilterCrs(_EPSG_URI + str(code), code, yx)
       for code, yx in _YX.items()},
})


def filter_crs(value: str | None) -> FilterCrs:
    """The ``filter-crs`` parameter (URI, ``EPSG:n``, ``[EPSG:n]``, CRS84) as a FilterCrs."""
    if value is None or not value.strip():
        return CRS84
    key = value.strip().strip("[]").strip()
    low = key.lower().replace("https://", "http://")
    if low in ("crs84", "ogc:crs84", CRS84_URI.lower()):
        return CRS84
    for prefix in ("epsg:", _EPSG_URI.lower(), "urn:ogc:def:crs:epsg::"):
        if low.startswith(prefix) and low[len(prefix):].isdigit():
            found = FILTER_CRS.get(_EPSG_URI + str(int(low[len(prefix):])))
            if found is not None:
                return found
    names = ", ".join(["CRS84"] + [f"EPSG:{code}" for code in (4490, 4326, 3857)]
                      + ["EPSG:4534-4554"])
    raise FilterError(f"unsupported filter-crs {value[:80]!r}; supported: {names}")


# -- the filter tree ----------------------------------------------------------------------


@dataclass(frozen=True)
class Prop:
    q: Queryable


@dataclass(frozen=True)
class Lit:
    value: str | int | float | bool | dt.date | dt.datetime
    kind: str  # text | number | boolean | date | timestamp


@dataclass(frozen=True)
class GeomLit:
    wkt: str
    srid: int
    max_abs_lat: float  # of the vertices in storage lon/lat, for the S_DWITHIN prefilter


@dataclass(frozen=True)
class IntervalLit:
    start: Lit | None  # None: unbounded ('..')
    end: Lit | None


@dataclass(frozen=True)
class CaseI:
    arg: Value


@dataclass(frozen=True)
class Const:
    value: bool


@dataclass(frozen=True)
class BoolOp:
    op: str  # AND | OR
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class Compare:
    op: str
    a: Value
    b: Value


@dataclass(frozen=True)
class Like:
    a: Value
    pattern: Value
    negate: bool


@dataclass(frozen=True)
class In:
    a: Value
    items: tuple[Value, ...]
    negate: bool


@dataclass(frozen=True)
class Between:
    a: Value
    lo: Value
    hi: Value
    negate: bool


@dataclass(frozen=True)
class IsNull:
    a: Value
    negate: bool


@dataclass(frozen=True)
class Spatial:
    op: str  # S_INTERSECTS ...
    a: Value
    b: Value


@dataclass(frozen=True)
class DWithin:
    a: Value
    b: Value
    metres: float


@dataclass(frozen=True)
class Temporal:
    op: str  # T_AFTER ...
    a: Value
    b: Value


Value: TypeAlias = Prop | Lit | GeomLit | IntervalLit | CaseI
Node: TypeAlias = (
    Const | BoolOp | Not | Compare | Like | In | Between | IsNull | Spatial | DWithin | Temporal
)

COMPARISONS = ("=", "<>", "<", "<=", ">", ">=")
SPATIAL = {
    "S_INTERSECTS": "ST_Intersects", "S_DISJOINT": "ST_Disjoint", "S_CONTAINS": "ST_Contains",
    "S_WITHIN": "ST_Within", "S_EQUALS": "ST_Equals", "S_TOUCHES": "ST_Touches",
    "S_CROSSES": "ST_Crosses", "S_OVERLAPS": "ST_Overlaps",
}
# Allen's relations on [begin, end] as CQL2 defines them: (joiner, clauses) where a clause
# (x, op, y) compares bound x ("b" begin, "e" end) of the first argument with y of the second
TEMPORAL: dict[str, tuple[str, tuple[tuple[str, str, str], ...]]] = {
    "T_AFTER": ("AND", (("b", ">", "e"),)),
    "T_BEFORE": ("AND", (("e", "<", "b"),)),
    "T_CONTAINS": ("AND", (("b", "<", "b"), ("e", ">", "e"))),
    "T_DISJOINT": ("OR", (("e", "<", "b"), ("b", ">", "e"))),
    "T_DURING": ("AND", (("b", ">", "b"), ("e", "<", "e"))),
    "T_EQUALS": ("AND", (("b", "=", "b"), ("e", "=", "e"))),
    "T_FINISHEDBY": ("AND", (("b", "<", "b"), ("e", "=", "e"))),
    "T_FINISHES": ("AND", (("b", ">", "b"), ("e", "=", "e"))),
    "T_INTERSECTS": ("AND", (("b", "<=", "e"), ("e", ">=", "b"))),
    "T_MEETS": ("AND", (("e", "=", "b"),)),
    "T_METBY": ("AND", (("b", "=", "e"),)),
    "T_OVERLAPPEDBY": ("AND", (("b", ">", "b"), ("b", "<", "e"), ("e", ">", "e"))),
    "T_OVERLAPS": ("AND", (("b", "<", "b"), ("e", ">", "b"), ("e", "<", "e"))),
    "T_STARTEDBY": ("AND", (("b", "=", "b"), ("e", ">", "e"))),
    "T_STARTS": ("AND", (("b", "=", "b"), ("e", "<", "e"))),
}
UNITS = {"meters": 1.0, "metres": 1.0, "meter": 1.0, "metre": 1.0, "m": 1.0,
         "kilometers": 1000.0, "kilometres": 1000.0, "km": 1000.0}
_RESERVED = {"AND", "OR", "NOT", "LIKE", "BETWEEN", "IN", "IS", "NULL", "TRUE", "FALSE"}
_WKT = {"POINT": "Point", "LINESTRING": "LineString", "POLYGON": "Polygon",
        "MULTIPOINT": "MultiPoint", "MULTILINESTRING": "MultiLineString",
        "MULTIPOLYGON": "MultiPolygon", "GEOMETRYCOLLECTION": "GeometryCollection"}
_NESTING = {"Point": 0, "LineString": 1, "MultiPoint": 1, "Polygon": 2, "MultiLineString": 2,
            "MultiPolygon": 3}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})"
)
_NO_COLLECTIONS = "GEOMETRYCOLLECTION literals are not supported; use a MULTI* geometry"


def _check_depth(depth: int) -> None:
    if depth > MAX_DEPTH:
        raise FilterError(f"filter is nested more than {MAX_DEPTH} levels deep")


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _resolver(queryables: Mapping[str, Queryable]) -> Callable[[str], Prop]:
    def resolve(name: str) -> Prop:
        q = queryables.get(name)
        if q is not None:
            return Prop(q)
        lowered = {k.lower(): k for k in queryables}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=1)
        hint = f"; did you mean '{lowered[close[0]]}'?" if close else ""
        raise FilterError(
            f"unknown property '{_short(name)}'{hint} (queryables: {', '.join(queryables)})"
        )

    return resolve


# -- literals shared by both encodings -------------------------------------------------------


def _checked(value: object, what: str) -> int | float:
    """``value`` if it is a finite number that fits a float8 or bigint parameter."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FilterError(f"{what} must be a number, not {_short(repr(value))}")
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError(f"{what} {value!r} is not a finite number")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise FilterError(f"{what} {_short(str(value))} is out of range")
    return value


def _number(value: object, what: str = "number") -> Lit:
    return Lit(_checked(value, what), "number")


def _date(text: str) -> Lit:
    if _DATE.fullmatch(text):
        try:
            return Lit(dt.date.fromisoformat(text), "date")
        except ValueError:
            pass
    raise FilterError(f"DATE('{_short(text)}') is not a date of the form YYYY-MM-DD")


def _timestamp(text: str) -> Lit:
    if _TIMESTAMP.fullmatch(text):
        try:
            return Lit(dt.datetime.fromisoformat(text.replace("z", "Z")), "timestamp")
        except ValueError:
            pass
    raise FilterError(
        f"TIMESTAMP('{_short(text)}') is not an RFC 3339 timestamp with a time zone, "
        "such as 2022-01-01T08:00:00Z"
    )


def _instant_text(text: str) -> Lit | None:
    """An INTERVAL bound written as a string: '..', a date or a timestamp."""
    if text == "..":
        return None
    return _date(text) if _DATE.fullmatch(text) else _timestamp(text)


def _position(value: object, crs: FilterCrs) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or not 2 <= len(value) <= 4:
        raise FilterError(f"a position must be 2 to 4 numbers, not {_short(repr(value))}")
    a, b, *_ = (float(_checked(v, "coordinate")) for v in value)
    return (b, a) if crs.yx else (a, b)


def _coords(value: object, level: int, crs: FilterCrs) -> Any:
    """Validated, x/y-ordered coordinates nested ``level`` lists deep (0: one position)."""
    if level == 0:
        return _position(value, crs)
    if not isinstance(value, list | tuple):
        raise FilterError(f"geometry coordinates are nested wrongly near {_short(repr(value))}")
    return [_coords(v, level - 1, crs) for v in value]


def _check_shape(kind: str, coords: Any) -> None:
    lines: list[Any] = []
    rings: list[Any] = []
    if kind == "LineString":
        lines = [coords]
    elif kind == "MultiLineString":
        lines = list(coords)
    elif kind == "Polygon":
        rings = list(coords)
    elif kind == "MultiPolygon":
        rings = [ring for poly in coords for ring in poly]
        if any(not poly for poly in coords):
            raise FilterError("a MULTIPOLYGON part has no rings")
    for line in lines:
        if len(line) < 2:
            raise FilterError(f"a {kind.upper()} line needs at least 2 positions")
    for ring in rings:
        if len(ring) < 4:
            raise FilterError("a polygon ring needs at least 4 positions")
        if ring[0] != ring[-1]:
            raise FilterError("a polygon ring is not closed (its first and last positions differ)")


def _geometry(kind: str, raw: object, crs: FilterCrs) -> GeomLit:
    """A geometry literal from GeoJSON-shaped ``raw`` coordinates in ``crs`` axis order."""
    if kind == "GeometryCollection":
        raise FilterError(_NO_COLLECTIONS)
    if kind not in _NESTING:
        raise FilterError(f"unknown geometry type '{_short(str(kind))}'")
    coords = _coords(raw, _NESTING[kind], crs) if raw != [] else []
    _check_shape(kind, coords)
    try:
        geom = shapely.geometry.shape({"type": kind, "coordinates": coords})
    except (ValueError, TypeError, shapely.errors.GEOSException) as exc:
        raise FilterError(f"invalid {kind.upper()} literal: {exc}") from exc
    if not shapely.is_valid(geom):
        raise FilterError(f"invalid {kind.upper()} literal: {shapely.is_valid_reason(geom)}")
    xy = shapely.get_coordinates(geom)
    where = f"{kind.upper()} literal in {crs.gis_name} (whose coordinates are {crs.axes})"
    try:
        lon, lat = to_storage_many(xy[:, 0], xy[:, 1], crs.gis_name)
    except GisError as exc:
        raise FilterError(f"{where}: {exc}") from exc
    w, s, e, n = _area(crs.srid)
    if len(lon) and not (
        w <= lon.min() and lon.max() <= e and s <= lat.min() and lat.max() <= n
    ):
        raise FilterError(f"{where}: outside the area where {crs.gis_name} can be used")
    max_lat = float(abs(lat).max()) if len(lat) else 0.0
    return GeomLit(shapely.to_wkt(geom, rounding_precision=-1), crs.srid, max_lat)


@lru_cache(maxsize=32)
def _area(srid: int) -> tuple[float, float, float, float]:
    """Where ``srid`` is used (lon/lat), widened by 3 degrees: literals outside are refused."""
    area = pyproj.CRS.from_epsg(srid).area_of_use
    if area is None:
        return (-180.0, -90.0, 180.0, 90.0)
    w, s, e, n = area.bounds
    return (max(w - 3.0, -180.0), max(s - 3.0, -90.0), min(e + 3.0, 180.0), min(n + 3.0, 90.0))


def _bbox(nums: Sequence[object], crs: FilterCrs) -> GeomLit:
    if len(nums) not in (4, 6):
        raise FilterError(f"a BBOX has 4 or 6 numbers, not {len(nums)}")
    vals = [float(_checked(v, "BBOX coordinate")) for v in nums]
    half = len(vals) // 2
    (a0, a1), (b0, b1) = vals[0:2], vals[half : half + 2]  # in the CRS's axis order
    if a0 > b0 or a1 > b1:
        raise FilterError("a BBOX's lower corner must come first (minimum x and y, then maximum)")
    ring = [[a0, a1], [b0, a1], [b0, b1], [a0, b1], [a0, a1]]
    return _geometry("Polygon", [ring], crs)


# -- cql2-text ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tok:
    kind: str  # name | qname | str | num | op | end
    text: str
    value: Any
    pos: int  # 1-based character position

    def show(self) -> str:
        return "the end of the filter" if self.kind == "end" else f"'{_short(self.text)}'"


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<name>[^\W\d]\w*(?:[.:]\w+)*)
    | (?P<str>'(?:[^'\\]|''|\\'|\\(?!'))*')
    | (?P<qname>"(?:[^"]|"")*")
    | (?P<comment>--|/\*)
    | (?P<op><>|<=|>=|[=<>(),+\-*/%])
    | (?P<bad>\S)
    )""",
    re.VERBOSE | re.DOTALL,
)
_QUOTE_ESCAPE = re.compile(r"''|\\'")


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos, n = 0, len(text)
    while (m := _TOKEN.match(text, pos)) is not None and m.lastgroup is not None:
        kind, raw, at = m.lastgroup, m.group(m.lastgroup), m.start(m.lastgroup) + 1
        pos = m.end()
        if kind == "bad":
            if raw in "'\"":
                what = "string" if raw == "'" else "quoted property name"
                raise FilterError(f"unterminated {what} starting at character {at}")
            raise FilterError(f"unexpected character {raw!r} at character {at}")
        if kind == "comment":
            raise FilterError(f"comments are not allowed in a filter (character {at})")
        value: Any = raw
        if kind == "num":
            value = float(raw) if any(ch in raw for ch in ".eE") else int(raw)
        elif kind == "str":
            value = _QUOTE_ESCAPE.sub("'", raw[1:-1])
        elif kind == "qname":
            value = raw[1:-1].replace('""', '"')
        out.append(_Tok(kind, raw, value, at))
    out.append(_Tok("end", "", None, n + 1))
    return out


class _TextParser:
    def __init__(self, text: str, resolve: Callable[[str], Prop], crs: FilterCrs) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.resolve = resolve
        self.crs = crs

    # token helpers
    def peek(self, k: int = 0) -> _Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def take(self) -> _Tok:
        tok = self.peek()
        self.i += 1
        return tok

    def is_op(self, op: str, k: int = 0) -> bool:
        tok = self.peek(k)
        return tok.kind == "op" and tok.text == op

    def is_kw(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "name" and tok.text.upper() in words

    def accept_kw(self, word: str) -> bool:
        if self.is_kw(word):
            self.i += 1
            return True
        return False

    def expect_op(self, op: str, after: str) -> None:
        if not self.is_op(op):
            tok = self.peek()
            raise FilterError(f"expected '{op}' {after} at character {tok.pos}, found {tok.show()}")
        self.i += 1

    def expect_kw(self, word: str, after: str) -> None:
        if not self.accept_kw(word):
            tok = self.peek()
            raise FilterError(f"expected {word} {after} at character {tok.pos}, found {tok.show()}")

    # boolean structure
    def parse(self) -> Node:
        node = self.disjunction(1)
        tok = self.peek()
        if tok.kind != "end":
            if tok.kind == "op" and tok.text == ")":
                raise FilterError(f"unbalanced ')' at character {tok.pos}")
            raise FilterError(f"unexpected {tok.show()} at character {tok.pos}")
        return node

    def disjunction(self, depth: int) -> Node:
        items = [self.conjunction(depth)]
        while self.accept_kw("OR"):
            items.append(self.conjunction(depth))
        return items[0] if len(items) == 1 else BoolOp("OR", tuple(items))

    def conjunction(self, depth: int) -> Node:
        items = [self.factor(depth)]
        while self.accept_kw("AND"):
            items.append(self.factor(depth))
        return items[0] if len(items) == 1 else BoolOp("AND", tuple(items))

    def factor(self, depth: int) -> Node:
        _check_depth(depth)
        if self.accept_kw("NOT"):
            return Not(self.factor(depth + 1))
        return self.primary(depth)

    def primary(self, depth: int) -> Node:
        tok = self.peek()
        if self.is_op("("):
            self.take()
            node = self.disjunction(depth + 1)
            if not self.is_op(")"):
                found = self.peek()
                raise FilterError(
                    f"unbalanced '(' at character {tok.pos}: expected ')' at character "
                    f"{found.pos}, found {found.show()}"
                )
            self.take()
            return node
        if tok.kind == "name" and self.is_op("(", 1):
            name = tok.text.upper()
            if name in SPATIAL or name in TEMPORAL or name == "S_DWITHIN":
                return self.operator(name, depth + 1)
            if name.startswith(("S_", "T_", "A_")):
                kind = {"S": "spatial", "T": "temporal", "A": "array"}[name[0]]
                raise FilterError(f"unknown {kind} operator '{_short(tok.text)}'")
        left = self.value(depth)
        return self.predicate(left, depth)

    def operator(self, name: str, depth: int) -> Node:
        tok = self.take()
        self.take()  # (
        a = self.value(depth)
        self.expect_op(",", f"between the arguments of {tok.text}")
        b = self.value(depth)
        if name == "S_DWITHIN":
            self.expect_op(",", "before the distance of S_DWITHIN")
            distance = self.signed_number("S_DWITHIN distance")
            self.expect_op(",", "before the units of S_DWITHIN")
            unit = self.take()
            self.expect_op(")", "after the units of S_DWITHIN")
            if unit.kind not in ("name", "str"):
                raise FilterError(f"S_DWITHIN needs units such as meters, found {unit.show()}")
            return _dwithin(a, b, distance, unit.value)
        self.expect_op(")", f"after the arguments of {tok.text}")
        return Spatial(name, a, b) if name in SPATIAL else Temporal(name, a, b)

    def predicate(self, left: Value, depth: int) -> Node:
        tok = self.peek()
        if tok.kind == "op" and tok.text in COMPARISONS:
            self.take()
            return Compare(tok.text, left, self.value(depth + 1))
        negate = self.accept_kw("NOT")
        if self.accept_kw("LIKE"):
            return Like(left, self.value(depth + 1), negate)
        if self.accept_kw("BETWEEN"):
            lo = self.value(depth + 1)
            self.expect_kw("AND", "in BETWEEN")
            return Between(left, lo, self.value(depth + 1), negate)
        if self.accept_kw("IN"):
            self.expect_op("(", "after IN")
            items = [self.value(depth + 1)]
            while self.is_op(","):
                self.take()
                items.append(self.value(depth + 1))
            self.expect_op(")", "to close the IN list")
            return In(left, tuple(items), negate)
        if negate:
            nxt = self.peek()
            raise FilterError(f"expected LIKE, BETWEEN or IN after NOT, found {nxt.show()}")
        if self.accept_kw("IS"):
            negate = self.accept_kw("NOT")
            self.expect_kw("NULL", "after IS")
            return IsNull(left, negate)
        if tok.kind == "op" and tok.text in "+-*/%":
            raise FilterError(f"arithmetic ('{tok.text}') is not supported in filters")
        if tok.kind == "name" and tok.text.upper() == "DIV":
            raise FilterError("arithmetic ('DIV') is not supported in filters")
        if isinstance(left, Lit) and left.kind == "boolean":
            return Const(bool(left.value))
        raise FilterError(
            f"expected a comparison operator after {_describe(left)} at character {tok.pos}, "
            f"found {tok.show()}"
        )

    # values
    def value(self, depth: int) -> Value:
        _check_depth(depth)
        tok = self.take()
        if tok.kind == "str":
            return Lit(tok.value, "text")
        if tok.kind == "num":
            return _number(tok.value)
        if tok.kind == "op" and tok.text in "+-" and self.peek().kind == "num":
            num = self.take().value
            return _number(-num if tok.text == "-" else num)
        if tok.kind == "qname":
            return self.resolve(tok.value)
        if tok.kind == "name":
            name = tok.text.upper()
            if self.is_op("("):
                return self.call(tok, depth + 1)
            if name in _WKT and self.is_kw("Z", "M", "ZM", "EMPTY"):
                return self.wkt(tok, depth + 1)
            if name in ("TRUE", "FALSE"):
                return Lit(name == "TRUE", "boolean")
            if name == "NULL":
                raise FilterError("NULL is not a value; use IS NULL or IS NOT NULL")
            if name in _RESERVED:
                raise FilterError(f"unexpected keyword {tok.text} at character {tok.pos}")
            return self.resolve(tok.text)
        if tok.kind == "end":
            raise FilterError("the filter ends where a value was expected")
        raise FilterError(f"expected a value at character {tok.pos}, found {tok.show()}")

    def string_arg(self, fn: _Tok) -> str:
        self.expect_op("(", f"after {fn.text}")
        arg = self.take()
        if arg.kind != "str":
            raise FilterError(f"{fn.text.upper()} takes one quoted string, found {arg.show()}")
        self.expect_op(")", f"after the argument of {fn.text}")
        return str(arg.value)

    def call(self, fn: _Tok, depth: int) -> Value:
        name = fn.text.upper()
        if name == "DATE":
            return _date(self.string_arg(fn))
        if name == "TIMESTAMP":
            return _timestamp(self.string_arg(fn))
        if name in _WKT:
            return self.wkt(fn, depth)
        if name == "CASEI":
            self.take()
            arg = self.value(depth)
            self.expect_op(")", "after the argument of CASEI")
            return CaseI(arg)
        if name == "INTERVAL":
            self.take()
            start = self.interval_bound()
            self.expect_op(",", "between the bounds of INTERVAL")
            end = self.interval_bound()
            self.expect_op(")", "after the bounds of INTERVAL")
            return IntervalLit(start, end)
        if name == "BBOX":
            self.take()
            nums = [self.signed_number("BBOX")]
            while self.is_op(","):
                self.take()
                nums.append(self.signed_number("BBOX"))
            self.expect_op(")", "after the numbers of BBOX")
            return _bbox(nums, self.crs)
        if name in SPATIAL or name in TEMPORAL or name == "S_DWITHIN":
            raise FilterError(f"{fn.text} is a predicate and cannot be used as a value")
        if name == "ACCENTI":
            raise FilterError("function 'ACCENTI' is not supported (no accent folding here)")
        raise FilterError(
            f"unknown function '{_short(fn.text)}'; filters may call only "
            f"{', '.join(FUNCTIONS)} and the S_ and T_ operators"
        )

    def interval_bound(self) -> Lit | None:
        tok = self.take()
        if tok.kind == "str":
            return _instant_text(tok.value)
        if tok.kind == "name" and tok.text.upper() in ("DATE", "TIMESTAMP") and self.is_op("("):
            text = self.string_arg(tok)
            return _date(text) if tok.text.upper() == "DATE" else _timestamp(text)
        raise FilterError(
            f"INTERVAL bounds must be quoted dates, timestamps or '..', found {tok.show()}"
        )

    def signed_number(self, what: str) -> float:
        sign = 1.0
        if self.is_op("-") or self.is_op("+"):
            sign = -1.0 if self.take().text == "-" else 1.0
        tok = self.take()
        if tok.kind != "num":
            raise FilterError(f"{what} expects a number at character {tok.pos}, found {tok.show()}")
        return sign * float(_checked(tok.value, what))

    def wkt(self, tok: _Tok, depth: int) -> GeomLit:
        _check_depth(depth)
        kind = _WKT[tok.text.upper()]
        if self.is_kw("Z", "M", "ZM"):
            self.take()
        if self.accept_kw("EMPTY"):
            return _geometry(kind, [], self.crs)
        if kind == "GeometryCollection":
            raise FilterError(_NO_COLLECTIONS)
        if kind == "Point":
            raw = self.wkt_seq(1, kind)
            if len(raw) != 1:
                raise FilterError("a POINT has one position")
            return _geometry(kind, raw[0], self.crs)
        if kind == "MultiPoint" and self.is_op("(") and self.is_op("(", 1):
            # MULTIPOINT((1 2), (3 4)): each point in its own parentheses
            points = self.wkt_seq(2, kind)
            if any(len(p) != 1 for p in points):
                raise FilterError("each parenthesised MULTIPOINT member has one position")
            return _geometry(kind, [p[0] for p in points], self.crs)
        return _geometry(kind, self.wkt_seq(_NESTING[kind], kind), self.crs)

    def wkt_seq(self, level: int, kind: str) -> Any:
        """Positions (level 0: numbers) in ``level`` nested, comma-separated parentheses."""
        if level == 0:
            nums = [self.signed_number(kind.upper())]
            while self.peek().kind == "num" or self.is_op("-") or self.is_op("+"):
                nums.append(self.signed_number(kind.upper()))
            return nums
        self.expect_op("(", f"in the {kind.upper()} literal")
        items = [self.wkt_seq(level - 1, kind)]
        while self.is_op(","):
            self.take()
            items.append(self.wkt_seq(level - 1, kind))
        self.expect_op(")", f"in the {kind.upper()} literal")
        return items


def _dwithin(a: Value, b: Value, distance: object, units: object) -> DWithin:
    scale = UNITS.get(str(units).lower())
    if scale is None:
        raise FilterError(
            f"unknown distance units '{_short(str(units))}'; use meters or kilometers"
        )
    metres = float(_checked(distance, "S_DWITHIN distance")) * scale
    if not 0.0 <= metres <= MAX_DWITHIN_M:
        raise FilterError(f"S_DWITHIN distance must be between 0 and {MAX_DWITHIN_M:.0f} m")
    return DWithin(a, b, metres)


# -- cql2-json ------------------------------------------------------------------------------


class _JsonParser:
    def __init__(self, resolve: Callable[[str], Prop], crs: FilterCrs) -> None:
        self.resolve = resolve
        self.crs = crs

    @staticmethod
    def args(node: Mapping[str, Any], op: str, count: int | None = None) -> list[Any]:
        if "args" not in node:
            raise FilterError(f"'{op}' has no args")
        extra = sorted(set(node) - {"op", "args"})
        if extra:
            raise FilterError(f"'{op}' takes only members op and args, found {extra[0]!r}")
        args = node["args"]
        if not isinstance(args, list):
            raise FilterError(f"the args of '{op}' must be an array")
        if count is not None and len(args) != count:
            raise FilterError(f"'{op}' takes {count} arguments, not {len(args)}")
        return args

    def boolean(self, node: Any, depth: int) -> Node:
        _check_depth(depth)
        if isinstance(node, bool):
            return Const(node)
        if not isinstance(node, dict) or "op" not in node:
            raise FilterError(f"expected a predicate object with 'op', found {_jshort(node)}")
        op = node["op"]
        if not isinstance(op, str):
            raise FilterError(f"'op' must be a string, found {_jshort(op)}")
        low, up = op.lower(), op.upper()
        if low in ("and", "or"):
            args = self.args(node, op)
            if len(args) < 2:
                raise FilterError(f"'{op}' takes at least 2 arguments")
            return BoolOp(up, tuple(self.boolean(a, depth + 1) for a in args))
        if low == "not":
            return Not(self.boolean(self.args(node, op, 1)[0], depth + 1))
        if op in COMPARISONS:
            a, b = self.args(node, op, 2)
            return Compare(op, self.value(a, depth + 1), self.value(b, depth + 1))
        if low == "like":
            a, b = self.args(node, op, 2)
            return Like(self.value(a, depth + 1), self.value(b, depth + 1), False)
        if low == "between":
            a, lo, hi = self.args(node, op, 3)
            return Between(*(self.value(v, depth + 1) for v in (a, lo, hi)), False)
        if low == "in":
            a, items = self.args(node, op, 2)
            if not isinstance(items, list) or not items:
                raise FilterError("the second argument of 'in' must be a non-empty array")
            values = tuple(self.value(v, depth + 1) for v in items)
            return In(self.value(a, depth + 1), values, False)
        if low == "isnull":
            return IsNull(self.value(self.args(node, op, 1)[0], depth + 1), False)
        if up in SPATIAL or up in TEMPORAL:
            a, b = self.args(node, op, 2)
            a_v, b_v = self.value(a, depth + 1), self.value(b, depth + 1)
            return Spatial(up, a_v, b_v) if up in SPATIAL else Temporal(up, a_v, b_v)
        if up == "S_DWITHIN":
            a, b, distance, units = self.args(node, op, 4)
            return _dwithin(self.value(a, depth + 1), self.value(b, depth + 1), distance, units)
        raise self.unknown(op)

    def unknown(self, op: str) -> FilterError:
        up = op.upper()
        if op in ("+", "-", "*", "/", "%", "^") or up == "DIV":
            return FilterError(f"arithmetic ('{op}') is not supported in filters")
        if up.startswith(("S_", "T_", "A_")):
            kind = {"S": "spatial", "T": "temporal", "A": "array"}[up[0]]
            return FilterError(f"unknown {kind} operator '{_short(op)}'")
        if up == "ACCENTI":
            return FilterError("function 'ACCENTI' is not supported (no accent folding here)")
        if up in ("CASEI",):
            return FilterError("CASEI is a value, not a predicate")
        return FilterError(
            f"unknown function '{_short(op)}'; filters may call only "
            f"{', '.join(FUNCTIONS)} and the S_ and T_ operators"
        )

    def value(self, node: Any, depth: int) -> Value:
        _check_depth(depth)
        if isinstance(node, bool):
            return Lit(node, "boolean")
        if isinstance(node, str):
            return Lit(node, "text")
        if isinstance(node, int | float):
            return _number(node)
        if not isinstance(node, dict):
            raise FilterError(f"expected a value, found {_jshort(node)}")
        keys = set(node)
        if keys == {"property"} and isinstance(node["property"], str):
            return self.resolve(node["property"])
        if keys == {"date"} and isinstance(node["date"], str):
            return _date(node["date"])
        if keys == {"timestamp"} and isinstance(node["timestamp"], str):
            return _timestamp(node["timestamp"])
        if keys == {"interval"} and isinstance(node["interval"], list):
            if len(node["interval"]) != 2:
                raise FilterError("an interval has 2 bounds")
            start, end = (self.interval_bound(v) for v in node["interval"])
            return IntervalLit(start, end)
        if keys == {"bbox"} and isinstance(node["bbox"], list):
            return _bbox(node["bbox"], self.crs)
        if "type" in node and keys <= {"type", "coordinates", "geometries", "bbox"}:
            if "coordinates" not in node and node["type"] != "GeometryCollection":
                raise FilterError("a GeoJSON geometry needs coordinates")
            return _geometry(str(node["type"]), node.get("coordinates"), self.crs)
        if "op" in node and isinstance(node["op"], str):
            op = node["op"]
            if op.upper() == "CASEI":
                return CaseI(self.value(self.args(node, op, 1)[0], depth + 1))
            if op.upper() in SPATIAL or op.upper() in TEMPORAL or op in COMPARISONS:
                raise FilterError(f"'{op}' is a predicate and cannot be used as a value")
            raise self.unknown(op)
        if "function" in node:
            fn = node["function"]
            name = fn.get("name") if isinstance(fn, dict) else fn
            raise self.unknown(str(name))
        raise FilterError(f"expected a value, found {_jshort(node)}")

    def interval_bound(self, node: Any) -> Lit | None:
        if isinstance(node, str):
            return _instant_text(node)
        if isinstance(node, dict) and set(node) == {"date"} and isinstance(node["date"], str):
            return _date(node["date"])
        if isinstance(node, dict) and set(node) == {"timestamp"}:
            return _timestamp(str(node["timestamp"]))
        raise FilterError(
            f"interval bounds must be dates, timestamps or '..', found {_jshort(node)}"
        )


def _jshort(node: Any) -> str:
    try:
        return _short(json.dumps(node, ensure_ascii=False), 60)
    except (TypeError, ValueError, RecursionError):
        return type(node).__name__


def _reject_constant(name: str) -> Any:
    raise FilterError(f"{name} is not a number")


# -- typing and SQL -------------------------------------------------------------------------

_CLASS = {"text": "text", "number": "number", "integer": "number", "date": "instant",
          "timestamp": "instant", "boolean": "boolean", "geometry": "geometry",
          "interval": "interval"}


def _kind(v: Value) -> str:
    if isinstance(v, Prop):
        return v.q.sql_type
    if isinstance(v, Lit):
        return v.kind
    if isinstance(v, GeomLit):
        return "geometry"
    if isinstance(v, IntervalLit):
        return "interval"
    return "text"  # CASEI


def _describe(v: Value) -> str:
    if isinstance(v, Prop):
        return f"property '{v.q.name}' ({v.q.sql_type})"
    if isinstance(v, GeomLit):
        return "a geometry literal"
    if isinstance(v, IntervalLit):
        return "an INTERVAL"
    if isinstance(v, CaseI):
        return f"CASEI({_describe(v.arg)})"
    if v.kind == "text":
        return f"text '{_short(str(v.value))}'"
    if v.kind == "boolean":
        return "TRUE" if v.value else "FALSE"
    if v.kind == "date":
        return f"DATE('{v.value}')"
    if v.kind == "timestamp":
        return f"TIMESTAMP('{v.value}')"
    return f"number {v.value}"


def _hint(a: Value, b: Value) -> str:
    kinds = {_CLASS[_kind(a)], _CLASS[_kind(b)]}
    if kinds == {"instant", "text"}:
        return "; write dates as DATE('2022-01-01') or TIMESTAMP('2022-01-01T00:00:00Z')"
    if "geometry" in kinds:
        return "; relate geometries with S_INTERSECTS, S_EQUALS ..."
    if "interval" in kinds:
        return "; use an INTERVAL only in the T_ operators"
    return ""


_CAST = {
    "text": sql.SQL("{}::text"), "boolean": sql.SQL("{}::boolean"), "date": sql.SQL("{}::date"),
    "timestamp": sql.SQL("{}::timestamptz"), "timestamptz": sql.SQL("{}::timestamptz"),
    "bigint": sql.SQL("{}::bigint"), "float8": sql.SQL("{}::float8"),
    "integer": sql.SQL("{}::integer"),
}
_SQL_OP = {op: sql.SQL(op) for op in (*COMPARISONS, "AND", "OR")}
_JOIN = {"AND": sql.SQL(" AND "), "OR": sql.SQL(" OR ")}


class _Compiler:
    def __init__(self, prefix: str, alias: str | None) -> None:
        self.prefix = prefix
        self.alias = alias
        self.params: dict[str, Any] = {}

    def bind(self, value: Any, cast: str) -> sql.Composable:
        name = f"{self.prefix}{len(self.params)}"
        self.params[name] = value
        return _CAST[cast].format(sql.Placeholder(name))

    def column(self, q: Queryable) -> sql.Composable:
        return sql.Identifier(self.alias, q.column) if self.alias else sql.Identifier(q.column)

    def value(self, v: Value, timestamps: bool = False) -> sql.Composable:
        """SQL for a scalar; ``timestamps``: dates become timestamptz (midnight UTC)."""
        if isinstance(v, Prop):
            col = self.column(v.q)
            if timestamps and v.q.sql_type == "date":
                return sql.SQL("({}::timestamp AT TIME ZONE 'UTC')").format(col)
            return col
        if isinstance(v, CaseI):
            if _kind(v.arg) != "text":
                raise FilterError(f"CASEI takes text; {_describe(v.arg)} is not text")
            return sql.SQL("lower({})").format(self.value(v.arg))
        if isinstance(v, GeomLit):
            # a sub-select: transformed once per statement, even in a generic plan
            return sql.SQL("(SELECT {})").format(self.geometry(v))
        if isinstance(v, IntervalLit):
            raise FilterError("an INTERVAL can only be an argument of a T_ operator")
        if v.kind == "number":
            return self.bind(v.value, "bigint" if isinstance(v.value, int) else "float8")
        if timestamps and v.kind == "date" and isinstance(v.value, dt.date):
            midnight = dt.datetime.combine(v.value, dt.time(0), tzinfo=dt.UTC)
            return self.bind(midnight, "timestamptz")
        return self.bind(v.value, v.kind)

    def geometry(self, v: GeomLit) -> sql.Composable:
        return sql.SQL("ST_Transform(ST_GeomFromText({}, {}), {})").format(
            self.bind(v.wkt, "text"), self.bind(v.srid, "integer"), sql.Literal(STORAGE_EPSG))

    def node(self, n: Node) -> sql.Composable:
        if isinstance(n, Const):
            return sql.SQL("TRUE" if n.value else "FALSE")
        if isinstance(n, BoolOp):
            return sql.SQL("({})").format(_JOIN[n.op].join(self.node(i) for i in n.items))
        if isinstance(n, Not):
            return sql.SQL("(NOT {})").format(self.node(n.item))
        if isinstance(n, Compare):
            return self.compare(n)
        if isinstance(n, Like):
            for v in (n.a, n.pattern):
                if _kind(v) != "text":
                    raise FilterError(f"LIKE compares text; {_describe(v)} is not text")
            return sql.SQL("({} {} {})").format(
                self.value(n.a), sql.SQL("NOT LIKE" if n.negate else "LIKE"),
                self.value(n.pattern))
        if isinstance(n, In):
            ts = self.comparable("IN", n.a, *n.items)
            return sql.SQL("({} {} ({}))").format(
                self.value(n.a, ts), sql.SQL("NOT IN" if n.negate else "IN"),
                sql.SQL(", ").join(self.value(i, ts) for i in n.items))
        if isinstance(n, Between):
            for v in (n.a, n.lo, n.hi):
                if _CLASS[_kind(v)] != "number":
                    raise FilterError(
                        f"BETWEEN compares numbers; {_describe(v)} is not a number"
                        + ("; for dates use T_DURING or T_INTERSECTS with an INTERVAL"
                           if _CLASS[_kind(v)] == "instant" else ""))
            return sql.SQL("({} {} {} AND {})").format(
                self.value(n.a), sql.SQL("NOT BETWEEN" if n.negate else "BETWEEN"),
                self.value(n.lo), self.value(n.hi))
        if isinstance(n, IsNull):
            if isinstance(n.a, IntervalLit):
                raise FilterError("IS NULL takes a property or a value, not an INTERVAL")
            return sql.SQL("({} {})").format(
                self.value(n.a), sql.SQL("IS NOT NULL" if n.negate else "IS NULL"))
        if isinstance(n, Spatial):
            self.geometries(n.op, n.a, n.b)
            return sql.SQL("{}({}, {})").format(
                sql.SQL(SPATIAL[n.op]), self.value(n.a), self.value(n.b))
        if isinstance(n, DWithin):
            return self.dwithin(n)
        return self.temporal(n)

    def comparable(self, what: str, a: Value, *others: Value) -> bool:
        """Check ``a`` compares with ``others``; True when dates must meet timestamps."""
        ka = _CLASS[_kind(a)]
        for b in others:
            kb = _CLASS[_kind(b)]
            if ka != kb or ka in ("geometry", "interval"):
                raise FilterError(
                    f"cannot compare {_describe(a)} with {_describe(b)} in {what}{_hint(a, b)}"
                )
        return ka == "instant" and any(_kind(v) == "timestamp" for v in (a, *others))

    def compare(self, n: Compare) -> sql.Composable:
        ts = self.comparable(f"'{n.op}'", n.a, n.b)
        return sql.SQL("({} {} {})").format(self.value(n.a, ts), _SQL_OP[n.op], self.value(n.b, ts))

    @staticmethod
    def geometries(op: str, a: Value, b: Value) -> None:
        for v in (a, b):
            if _kind(v) != "geometry":
                raise FilterError(f"{op} relates geometries; {_describe(v)} is not one")

    def dwithin(self, n: DWithin) -> sql.Composable:
        """Ellipsoidal metres (geography); with a literal, a box prefilter for the index."""
        self.geometries("S_DWITHIN", n.a, n.b)
        lits = {id(v): self.geometry(v) for v in (n.a, n.b) if isinstance(v, GeomLit)}

        def geog(v: Value) -> sql.Composable:
            if isinstance(v, GeomLit):
                return sql.SQL("(SELECT {}::geography)").format(lits[id(v)])
            return sql.SQL("{}::geography").format(self.value(v))

        exact = sql.SQL("ST_DWithin({}, {}, {})").format(
            geog(n.a), geog(n.b), self.bind(n.metres, "float8"))
        for prop, lit in ((n.a, n.b), (n.b, n.a)):
            if isinstance(prop, Prop) and isinstance(lit, GeomLit):
                # a box a little larger than the distance, in degrees, for the GiST index
                lat = min(lit.max_abs_lat + n.metres / 110_574.0, 89.0)
                dlat = n.metres / 110_574.0 * 1.01
                dlon = n.metres / (111_320.0 * math.cos(math.radians(lat))) * 1.01
                return sql.SQL("({} && ST_Expand((SELECT {}), {}, {}) AND {})").format(
                    self.value(prop), lits[id(lit)], self.bind(dlon, "float8"),
                    self.bind(dlat, "float8"), exact)
        return exact

    def bounds(self, op: str, v: Value, ts: bool) -> tuple[sql.Composable, sql.Composable]:
        kind = _kind(v)
        if isinstance(v, IntervalLit):
            cast = "timestamptz" if ts else "date"
            start = self.value(v.start, ts) if v.start else self.bind("-infinity", cast)
            end = self.value(v.end, ts) if v.end else self.bind("infinity", cast)
            return start, end
        if _CLASS[kind] != "instant":
            raise FilterError(
                f"{op} relates dates, timestamps and intervals; {_describe(v)} is not one")
        one = self.value(v, ts)
        return one, one

    def temporal(self, n: Temporal) -> sql.Composable:
        def kinds(v: Value) -> list[str]:
            if isinstance(v, IntervalLit):
                return [b.kind for b in (v.start, v.end) if b is not None]
            return [_kind(v)]

        ts = "timestamp" in kinds(n.a) + kinds(n.b)
        a, b = self.bounds(n.op, n.a, ts), self.bounds(n.op, n.b, ts)
        joiner, clauses = TEMPORAL[n.op]
        parts = [
            sql.SQL("{} {} {}").format(a[x == "e"], _SQL_OP[cmp], b[y == "e"])
            for x, cmp, y in clauses
        ]
        return sql.SQL("({})").format(_JOIN[joiner].join(parts))


# -- entry point ------------------------------------------------------------------------------


def _parse(
    cql: str | Mapping[str, Any],
    lang: Lang | str,
    queryables: Mapping[str, Queryable],
    crs: FilterCrs | str | None = None,
) -> Node:
    """The filter as a tree: syntax, size, depth, properties and literals checked.

    Types are checked when the tree is compiled, still before any SQL exists.
    """
    fcrs = crs if isinstance(crs, FilterCrs) else filter_crs(crs)
    resolve = _resolver(queryables)
    if lang == "cql2-text":
        if not isinstance(cql, str):
            raise FilterError("a cql2-text filter must be a string")
        if len(cql) > MAX_FILTER_CHARS:
            raise FilterError(f"filter is longer than {MAX_FILTER_CHARS} characters")
        if not cql.strip():
            raise FilterError("the filter is empty")
        return _TextParser(cql, resolve, fcrs).parse()
    if lang == "cql2-json":
        if isinstance(cql, str):
            if len(cql) > MAX_FILTER_CHARS:
                raise FilterError(f"filter is longer than {MAX_FILTER_CHARS} characters")
            try:
                node = json.loads(cql, parse_constant=_reject_constant)
            except RecursionError as exc:
                raise FilterError(f"filter is nested more than {MAX_DEPTH} levels deep") from exc
            except ValueError as exc:
                raise FilterError(f"the filter is not JSON: {exc}") from exc
        else:
            try:
                size = len(json.dumps(cql, allow_nan=False))
            except RecursionError as exc:
                raise FilterError(f"filter is nested more than {MAX_DEPTH} levels deep") from exc
            except (TypeError, ValueError) as exc:
                raise FilterError(f"the filter is not JSON: {exc}") from exc
            if size > MAX_FILTER_CHARS:
                raise FilterError(f"filter is longer than {MAX_FILTER_CHARS} characters")
            node = cql
        return _JsonParser(resolve, fcrs).boolean(node, 1)
    raise FilterError(f"unsupported filter-lang '{_short(str(lang))}'; use cql2-text or cql2-json")


def parse(
    cql: str | Mapping[str, Any],
    lang: Lang | str,
    queryables: Mapping[str, Queryable],
    crs: FilterCrs | str | None = None,
) -> Node:
    """The filter as a tree, checked completely: whatever :func:`to_sql` would refuse,
    this refuses too (for checking a request before a connection is taken)."""
    tree = _parse(cql, lang, queryables, crs)
    _Compiler("cql", None).node(tree)  # types are checked while compiling
    return tree


def to_sql(
    cql: str | Mapping[str, Any],
    lang: Lang | str,
    queryables: Mapping[str, Queryable],
    crs: FilterCrs | str | None = None,
    *,
    prefix: str = "cql",
    alias: str | None = None,
) -> tuple[sql.Composable, dict[str, Any]]:
    """A CQL2 filter as a WHERE fragment over one layer's columns, and its parameters.

    ``crs`` is the ``filter-crs`` (default CRS84).  Placeholders are named ``prefix0``,
    ``prefix1`` ...; ``alias`` qualifies the columns (``t.kind``).  Raises
    :class:`FilterError` before any SQL exists for anything it does not support.

    >>> from layers.registry import LAYERS
    >>> where, params = to_sql("kind = 'dome'", "cql2-text", queryables(LAYERS["cameras"]))
    >>> params
    {'cql0': 'dome'}
    """
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", prefix):
        raise ValueError(f"bad parameter prefix {prefix!r}")
    tree = _parse(cql, lang, queryables, crs)
    compiler = _Compiler(prefix, alias)
    return compiler.node(tree), compiler.params
