"""OGC API – Processes of gridgov: what a processor is, and the ``locate`` process.

A processor here is a :class:`GridgovProcessor`.  The job manager (:mod:`api.ogc.jobs`)
calls it in two steps:

``parse(inputs)``
    checks the inputs and turns them into whatever ``run`` needs.  It runs before any
    job exists, on the request's thread, so a bad input is a 400 answer and never a
    failed job.  Raise the project's own faults (``InvalidInput``, ``GisError``...): the
    manager maps them through ``api.problems.STATUS``.
``run(ctx, parsed, progress)``
    does the work, blocking, in a worker thread.  ``ctx`` says where the database and
    the files are; ``progress(done, total, message)`` reports how far it got.  Under an
    asynchronous job each call becomes the job's ``progress`` (percent) and ``message``
    at ``GET /ogc/jobs/{id}``; it raises :class:`JobCancelled` once the job is dismissed
    or the server stops, so a long loop that reports progress also stops when asked.
    A synchronous execution passes :data:`NO_PROGRESS`.

The coverage process (issue #4) plugs in like this, ``layers.coverage.compute`` taking
the same ``progress`` callable::

    class CoverageProcessor(GridgovProcessor):
        METADATA = {"id": "coverage", ..., "jobControlOptions": ASYNC_AND_SYNC}

        def parse(self, inputs):
            ...  # which high points / cameras, checked here

        def run(self, ctx, parsed, progress):
            from layers.coverage import compute, store
            with db.transaction(ctx.database_url) as conn:  # a stopped job stores nothing
                coverage = compute(conn, ctx.settings.dsm_path, progress=progress)
                stored = store(conn, coverage)
            return "application/json", {"micro_grids": stored, ...}

and one line in :data:`PROCESSES`.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt
import psycopg
from pygeoapi.process.base import BaseProcessor, ProcessorExecuteError

from api.locate_io import MAX_POINTS, TooMany
from api.settings import Settings
from gis.crs import INPUT_CRS, to_storage_many
from layers import db
from layers.errors import InvalidInput
from layers.locate import BATCH_COLUMNS, CHUNK, locate_many_sync

ASYNC_AND_SYNC = ["sync-execute", "async-execute"]


@dataclass(frozen=True)
class ProcessContext:
    """What a running process may use: the database and the server's settings (files)."""

    database_url: str
    settings: Settings


class Progress(Protocol):
    def __call__(self, done: int, total: int, message: str = "") -> None: ...


class JobCancelled(Exception):  # noqa: N818 - it is a signal, not a fault
    """Raised by ``progress`` when the job was dismissed or the server is stopping."""


def _no_progress(done: int, total: int, message: str = "") -> None:
    return None


NO_PROGRESS: Progress = _no_progress


class GridgovProcessor(BaseProcessor, ABC):  # type: ignore[misc]
    """A pygeoapi processor run by gridgov's job manager: ``parse`` first, then ``run``."""

    METADATA: ClassVar[dict[str, Any]]

    def __init__(self, processor_def: dict[str, Any]) -> None:
        # a private copy: pygeoapi edits process metadata in place (it pops the output
        # schema's contentMediaType while writing the OpenAPI document)
        super().__init__(processor_def, copy.deepcopy(self.METADATA))

    @abstractmethod
    def parse(self, inputs: Any) -> Any:
        """The checked inputs; raise ``InvalidInput``/``GisError`` for bad ones."""

    def parse_request(self, inputs: Any, ctx: ProcessContext | None,
                      base_url: str | None) -> Any:
        """``parse``, for processes that need the server's settings (files) or the OGC
        API's base URL (``http://host/ogc``, for results that link to the server)."""
        return self.parse(inputs)

    @abstractmethod
    def run(self, ctx: ProcessContext, parsed: Any, progress: Progress) -> tuple[str, Any]:
        """(media type, value): bytes or text are sent as they are, any other value as
        JSON; ``response: document`` wraps it as ``{output id: value}``."""

    def execute(self, data: dict[str, Any], outputs: dict[str, Any] | None = None) -> Any:
        raise ProcessorExecuteError(
            user_msg=f"process {self.name!r} runs only under gridgov's job manager")

    @property
    def output_id(self) -> str:
        return next(iter(self.metadata["outputs"]))


# -- locate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LocateInput:
    lons: npt.NDArray[np.float64]  # EPSG:4490
    lats: npt.NDArray[np.float64]
    features: list[dict[str, Any]] | None  # the input features, when a FeatureCollection
    crs: str
    at: dt.date


def _value(v: Any) -> Any:
    """An input given inline or as an OGC qualified value ``{"value": ..., "mediaType": ...}``."""
    if isinstance(v, Mapping) and "value" in v and "type" not in v:
        return v["value"]
    if isinstance(v, Mapping) and "href" in v:
        raise InvalidInput("inputs by reference (href) are not accepted; send the value")
    return v


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InvalidInput(f"{where}: {v!r} is not a number")
    if not math.isfinite(v):
        raise InvalidInput(f"{where}: {v!r} is not a finite number")
    return float(v)


def _xy(coords: Any, where: str, index: int) -> tuple[float, float]:
    if not isinstance(coords, Sequence) or isinstance(coords, str) or len(coords) not in (2, 3):
        raise InvalidInput(f"{where}: a point needs [x, y] coordinates", index=index)
    return _number(coords[0], f"{where} x"), _number(coords[1], f"{where} y")


def read_points(points: Any) -> tuple[list[float], list[float], list[dict[str, Any]] | None]:
    """x, y and (for a FeatureCollection) the features of the ``points`` input."""
    if isinstance(points, Mapping):
        if points.get("type") != "FeatureCollection":
            raise InvalidInput("'points' must be a GeoJSON FeatureCollection of Points "
                               "or a list of [x, y]")
        features = points.get("features")
        if not isinstance(features, list):
            raise InvalidInput("the FeatureCollection has no 'features' array")
        _count(len(features))
        xs, ys = [], []
        for i, f in enumerate(features):
            geom = f.get("geometry") if isinstance(f, Mapping) else None
            if not isinstance(geom, Mapping) or geom.get("type") != "Point":
                raise InvalidInput(f"feature {i}: the geometry must be a Point", index=i)
            x, y = _xy(geom.get("coordinates"), f"feature {i}", i)
            xs.append(x)
            ys.append(y)
        return xs, ys, features
    if isinstance(points, list):
        _count(len(points))
        pairs = [_xy(p, f"point {i}", i) for i, p in enumerate(points)]
        return [p[0] for p in pairs], [p[1] for p in pairs], None
    raise InvalidInput("'points' must be a GeoJSON FeatureCollection of Points or a list "
                       "of [x, y]")


def _count(n: int) -> None:
    if n > MAX_POINTS:
        raise TooMany(f"more than {MAX_POINTS} points; split the input", limit=MAX_POINTS)


class LocateProcessor(GridgovProcessor):
    """``POST /locate`` as a process: the grid owning each point, in input order."""

    METADATA: ClassVar[dict[str, Any]] = {
        "version": "1.0.0",
        "id": "locate",
        "title": {"en": "Which grid owns each point", "zh": "点位所属网格"},
        "description": {
            "en": "The micro-grid, community, street and worker on duty for each point, in "
                  "input order (the answers of POST /locate). A point on a boundary shared "
                  "by several micro-grids belongs to the one with the lowest code; a point "
                  "outside the territory has no micro-grid and names the nearest one and "
                  "the distance to it in metres.",
            "zh": "逐点查询所属微网格、社区、街道及当班网格员，按输入顺序返回。",
        },
        "keywords": ["grid", "micro-grid", "locate", "GCJ-02", "网格"],
        "jobControlOptions": ASYNC_AND_SYNC,
        "outputTransmission": ["value"],
        "links": [],
        "inputs": {
            "points": {
                "title": "Points",
                "description": f"Up to {MAX_POINTS:,} points: a GeoJSON FeatureCollection "
                               "of Points (each feature keeps its id and properties) or a "
                               "list of [x, y].",
                "schema": {"oneOf": [
                    {"type": "object", "contentMediaType": "application/geo+json"},
                    {"type": "array", "maxItems": MAX_POINTS,
                     "items": {"type": "array", "items": {"type": "number"},
                               "minItems": 2, "maxItems": 3}},
                ]},
                "minOccurs": 1,
                "maxOccurs": 1,
            },
            "crs": {
                "title": "CRS of the points",
                "description": "gcj02: WeChat / Amap; bd09: Baidu; with a projected CRS x/y "
                               "are easting/northing.",
                "schema": {"type": "string", "enum": list(INPUT_CRS), "default": "EPSG:4490"},
                "minOccurs": 0,
                "maxOccurs": 1,
            },
            "at": {
                "title": "Date",
                "description": "Answer with the grid generation valid on this day "
                               "(default: today).",
                "schema": {"type": "string", "format": "date"},
                "minOccurs": 0,
                "maxOccurs": 1,
            },
        },
        "outputs": {
            "result": {
                "title": "The points and their grids",
                "description": "FeatureCollection in input order, points in EPSG:4490, "
                               "properties: " + ", ".join(BATCH_COLUMNS) + ".",
                "schema": {"type": "object", "contentMediaType": "application/geo+json"},
            }
        },
        "example": {"inputs": {"points": [[118.05, 36.78]], "crs": "EPSG:4490"}},
    }

    def parse(self, inputs: Any) -> LocateInput:
        if not isinstance(inputs, Mapping):
            raise InvalidInput("'inputs' must be an object")
        unknown = sorted(set(inputs) - set(self.metadata["inputs"]))
        if unknown:
            raise InvalidInput(f"unknown input(s) {', '.join(map(repr, unknown))}; this "
                               f"process takes {', '.join(self.metadata['inputs'])}")
        if inputs.get("points") is None:
            raise InvalidInput("the input 'points' is required")
        xs, ys, features = read_points(_value(inputs["points"]))
        crs = _value(inputs.get("crs", "EPSG:4490"))
        if not isinstance(crs, str):
            raise InvalidInput(f"'crs' must be a string, one of {', '.join(INPUT_CRS)}")
        at = _value(inputs.get("at"))
        try:
            day = dt.date.today() if at is None else dt.date.fromisoformat(at)
        except (TypeError, ValueError):
            raise InvalidInput(f"'at' must be a date (YYYY-MM-DD), not {at!r}") from None
        lons, lats = to_storage_many(xs, ys, crs)
        return LocateInput(lons, lats, features, crs, day)

    def run(self, ctx: ProcessContext, parsed: LocateInput, progress: Progress
            ) -> tuple[str, Any]:
        total = len(parsed.lons)
        rows: list[tuple[Any, ...]] = []
        generation: dict[str, Any] = {}
        with db.connect(ctx.database_url) as conn:
            # one snapshot for every chunk: a generation committed meanwhile changes nothing
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.transaction():
                for start in range(0, total, CHUNK) if total else [0]:
                    end = start + CHUNK
                    generation, part = locate_many_sync(
                        conn, parsed.lons[start:end], parsed.lats[start:end], parsed.at)
                    rows += part
                    progress(len(rows), total, f"{len(rows):,} of {total:,} points located")
        return "application/geo+json", self._collection(parsed, generation, rows)

    @staticmethod
    def _collection(parsed: LocateInput, generation: dict[str, Any],
                    rows: list[tuple[Any, ...]]) -> dict[str, Any]:
        lons, lats = parsed.lons.tolist(), parsed.lats.tolist()
        features = []
        for i, answer in enumerate(rows):
            src = parsed.features[i] if parsed.features is not None else {}
            props = src.get("properties")
            features.append({
                "type": "Feature",
                **({"id": src["id"]} if "id" in src else {}),
                "geometry": {"type": "Point", "coordinates": [lons[i], lats[i]]},
                "properties": {**(props if isinstance(props, dict) else {}),
                               **dict(zip(BATCH_COLUMNS, answer, strict=True))},
            })
        return {"type": "FeatureCollection", "generation": generation,
                "input_crs": parsed.crs, "numberReturned": len(features),
                "features": features}


@dataclass(frozen=True)
class CoverageInput:
    line_of_sight: bool
    generation_id: int | None


class CoverageProcessor(GridgovProcessor):
    """``gridgov coverage`` as a process: recompute and store ``micro_grid_coverage``."""

    METADATA: ClassVar[dict[str, Any]] = {
        "version": "1.0.0",
        "id": "coverage",
        "title": {"en": "Coverage of the micro-grids by high points and cameras",
                  "zh": "网格视频覆盖计算"},
        "description": {
            "en": "Recomputes, for every micro-grid of a grid generation, the share of its "
                  "area within a high point's range ring, seen by a high point over the "
                  "surface model (GDAL viewshed), seen by a street camera (sector cut by "
                  "line of sight) and seen by either, and the part nobody sees as geometry; "
                  "stores them in the collection micro_grid_coverage (replacing the "
                  "generation's rows in one transaction). Takes about a minute on the demo "
                  "town: run it asynchronously and follow the job's progress.",
            "zh": "重新计算各微网格的高空瞭望与视频覆盖率及盲区，写入 micro_grid_coverage。",
        },
        "keywords": ["coverage", "viewshed", "high point", "camera", "高空之眼", "盲区"],
        "jobControlOptions": ASYNC_AND_SYNC,
        "outputTransmission": ["value"],
        "links": [],
        "inputs": {
            "line_of_sight": {
                "title": "Line of sight",
                "description": "Cut by line of sight over the server's surface model (DSM); "
                               "false: range rings and camera sectors only.",
                "schema": {"type": "boolean", "default": True},
                "minOccurs": 0,
                "maxOccurs": 1,
            },
            "generation": {
                "title": "Grid generation id",
                "description": "Default: the current generation.",
                "schema": {"type": "integer", "minimum": 1},
                "minOccurs": 0,
                "maxOccurs": 1,
            },
        },
        "outputs": {
            "result": {
                "title": "Summary",
                "description": "Number of micro-grids stored and the mean fractions.",
                "schema": {"type": "object", "contentMediaType": "application/json"},
            }
        },
        "example": {"inputs": {"line_of_sight": False}},
    }

    def parse(self, inputs: Any) -> CoverageInput:
        if inputs is None:
            inputs = {}
        if not isinstance(inputs, Mapping):
            raise InvalidInput("'inputs' must be an object")
        unknown = sorted(set(inputs) - set(self.metadata["inputs"]))
        if unknown:
            raise InvalidInput(f"unknown input(s) {', '.join(map(repr, unknown))}; this "
                               f"process takes {', '.join(self.metadata['inputs'])}")
        los = _value(inputs.get("line_of_sight", True))
        if not isinstance(los, bool):
            raise InvalidInput(f"'line_of_sight' must be true or false, not {los!r}")
        gen = _value(inputs.get("generation"))
        if gen is not None and (isinstance(gen, bool) or not isinstance(gen, int) or gen < 1):
            raise InvalidInput(f"'generation' must be a positive integer, not {gen!r}")
        return CoverageInput(los, gen)

    def run(self, ctx: ProcessContext, parsed: CoverageInput, progress: Progress
            ) -> tuple[str, Any]:
        from layers.coverage import compute, store

        dsm = ctx.settings.dsm_path if parsed.line_of_sight else None
        if dsm is not None and not dsm.exists():
            raise InvalidInput(f"the server has no surface model at {dsm}; set "
                               "GRIDGOV_SURFACE_MODEL or run with line_of_sight false")
        with db.transaction(ctx.database_url) as conn:  # a stopped job stores nothing
            coverage = compute(conn, dsm, generation_id=parsed.generation_id,
                               progress=progress)
            stored = store(conn, coverage)

        def mean(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return round(sum(known) / len(known), 4) if known else None

        g = coverage.grids
        return "application/json", {
            "generation": coverage.generation_id,
            "micro_grids": stored,
            "surface_model": coverage.surface_model is not None,
            "mean_high_point_ring_fraction": mean([x.high_point_ring_fraction for x in g]),
            "mean_high_point_visible_fraction": mean(
                [x.high_point_visible_fraction for x in g]),
            "mean_camera_fraction": mean([x.camera_fraction for x in g]),
            "mean_covered_fraction": mean([x.covered_fraction for x in g]),
        }


class _Processes(Mapping[str, type[GridgovProcessor]]):
    """id -> processor class. ``detect-changes`` lives in its own module, which imports
    this one, so the table is completed on first use rather than at import."""

    def _all(self) -> dict[str, type[GridgovProcessor]]:
        from api.ogc.detect_changes import DetectChangesProcessor

        return {"locate": LocateProcessor, "coverage": CoverageProcessor,
                "detect-changes": DetectChangesProcessor}

    def __getitem__(self, key: str) -> type[GridgovProcessor]:
        return self._all()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


PROCESSES: Mapping[str, type[GridgovProcessor]] = _Processes()
"""The processes published at /ogc/processes, by id."""
