"""Reading the points of ``POST /locate`` and writing its answers, GeoJSON or CSV.

Everything is checked before the first answer is sent: a bad point anywhere in the
input is a 400 naming it, never a half-written stream.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from layers.errors import InvalidInput
from layers.locate import BATCH_COLUMNS

MAX_POINTS = 100_000
MAX_BODY = 64 * 1024 * 1024

GEOJSON_TYPES = ("application/geo+json", "application/json")
CSV_TYPES = ("text/csv",)


class TooMany(InvalidInput):
    """More points (or bytes) than one request may carry."""


@dataclass(frozen=True)
class Points:
    """The parsed input: coordinates in the client's CRS and what to echo back."""

    kind: str  # "geojson" | "csv"
    xs: list[float]
    ys: list[float]
    features: list[dict[str, Any]]  # geojson: the input features
    header: list[str]  # csv: the input columns
    rows: list[list[str]]  # csv: the input rows


def media_type(content_type: str) -> tuple[str, str]:
    """(media type, charset) of a Content-Type header."""
    parts = [p.strip() for p in content_type.split(";")]
    charset = "utf-8-sig"
    for p in parts[1:]:
        key, _, value = p.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    return parts[0].lower(), charset


def parse(body: bytes, content_type: str) -> Points:
    if len(body) > MAX_BODY:
        raise TooMany(f"the body is {len(body)} bytes; at most {MAX_BODY} are accepted",
                      limit_bytes=MAX_BODY)
    kind, charset = media_type(content_type)
    if kind in GEOJSON_TYPES:
        return _geojson(body)
    if kind in CSV_TYPES:
        return _csv(body, charset)
    raise InvalidInput(
        f"Content-Type {kind or '(none)'!r} is not accepted; send a GeoJSON FeatureCollection "
        "(application/geo+json) or CSV with lon,lat columns (text/csv)"
    )


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{where}: {value!r} is not a number")
    out = float(value)
    if not math.isfinite(out):
        raise InvalidInput(f"{where}: {value!r} is not a finite number")
    return out


def _geojson(body: bytes) -> Points:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise InvalidInput("the body must be a GeoJSON FeatureCollection")
    features = doc.get("features")
    if not isinstance(features, list):
        raise InvalidInput("the FeatureCollection has no 'features' array")
    _count(len(features))
    xs: list[float] = []
    ys: list[float] = []
    for i, f in enumerate(features):
        geom = f.get("geometry") if isinstance(f, dict) else None
        if not isinstance(geom, dict) or geom.get("type") != "Point":
            raise InvalidInput(f"feature {i}: the geometry must be a Point", index=i)
        coords = geom.get("coordinates")
        if not isinstance(coords, list) or len(coords) not in (2, 3):
            raise InvalidInput(f"feature {i}: a Point needs [x, y] coordinates", index=i)
        xs.append(_number(coords[0], f"feature {i} x"))
        ys.append(_number(coords[1], f"feature {i} y"))
    return Points("geojson", xs, ys, features, [], [])


def _csv(body: bytes, charset: str) -> Points:
    try:
        text = body.decode(charset)
    except LookupError:
        raise InvalidInput(f"unknown charset {charset!r}") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"the CSV is not {charset} ({exc.reason} at byte {exc.start}); "
            "say the encoding in Content-Type, e.g. text/csv; charset=gbk"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise InvalidInput("the CSV is empty; the first line must name the columns (lon,lat)")
    names = [h.strip().lower() for h in header]
    if "lon" not in names or "lat" not in names:
        raise InvalidInput(f"the CSV header {header!r} needs columns named lon and lat")
    ix, iy = names.index("lon"), names.index("lat")
    rows: list[list[str]] = []
    xs: list[float] = []
    ys: list[float] = []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise InvalidInput(
                f"CSV line {line}: {len(row)} fields where the header has {len(header)}",
                line=line)
        _count(len(rows) + 1)
        try:
            x, y = float(row[ix]), float(row[iy])
        except ValueError:
            raise InvalidInput(f"CSV line {line}: lon/lat {row[ix]!r}, {row[iy]!r} are not "
                               "numbers", line=line) from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise InvalidInput(f"CSV line {line}: lon/lat must be finite numbers", line=line)
        xs.append(x)
        ys.append(y)
        rows.append(row)
    return Points("csv", xs, ys, [], header, rows)


def _count(n: int) -> None:
    if n > MAX_POINTS:
        raise TooMany(f"more than {MAX_POINTS} points; split the input", limit=MAX_POINTS)


# -- answers ------------------------------------------------------------------------------


def _props(answer: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(BATCH_COLUMNS, answer, strict=True))


async def geojson_stream(
    points: Points,
    lons: Sequence[float],
    lats: Sequence[float],
    head: dict[str, Any],
    chunks: AsyncIterator[list[tuple[Any, ...]]],
) -> AsyncIterator[bytes]:
    """A FeatureCollection: each input feature, its point in EPSG:4490 and its answer."""
    yield (json.dumps({"type": "FeatureCollection", **head}, ensure_ascii=False)[:-1]
           + ', "features": [\n').encode()
    i = 0
    async for answers in chunks:
        out = []
        for answer in answers:
            src = points.features[i]
            props = src.get("properties") if isinstance(src.get("properties"), dict) else {}
            feature = {
                "type": "Feature",
                **({"id": src["id"]} if "id" in src else {}),
                "geometry": {"type": "Point", "coordinates": [lons[i], lats[i]]},
                "properties": {**props, **_props(answer)},
            }
            out.append(("" if i == 0 else ",\n") + json.dumps(feature, ensure_ascii=False))
            i += 1
        yield "".join(out).encode()
    yield b"\n]}\n"


async def csv_stream(
    points: Points, chunks: AsyncIterator[list[tuple[Any, ...]]]
) -> AsyncIterator[bytes]:
    """The input rows, each followed by its answer's columns."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*points.header, *BATCH_COLUMNS])
    i = 0
    async for answers in chunks:
        for answer in answers:
            writer.writerow([*points.rows[i], *_cells(answer)])
            i += 1
        yield buf.getvalue().encode()
        buf.seek(0)
        buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode()


def _cells(answer: Iterable[Any]) -> list[str]:
    return ["" if v is None else str(v) for v in answer]
