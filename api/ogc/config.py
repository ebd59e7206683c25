"""pygeoapi's configuration, generated from the settings, the layer registry (with the
catalog read from the database) and the process table.

No YAML file: the dict is built at start-up, one per base URL the server answers on,
and validated against pygeoapi's schema by the tests.  Secrets (the database URL) are
never part of it: pygeoapi hands its configuration to every HTML template, so the
collections' provider names its database by an opaque token (:mod:`api.ogc.provider`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layers import features

if TYPE_CHECKING:
    from api.ogc.processes import GridgovProcessor
    from layers.features import Collection

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"  # overrides of pygeoapi's templates (see DESIGN.md)
STATIC = HERE / "static"
MANAGER = "api.ogc.jobs.GridgovManager"
# The first is the default.  Chinese without a territory: pygeoapi 0.21 builds
# ``Locale("zh", territory="CN")`` for a request in Chinese when the configured locale
# has one, which babel does not know (only zh_Hans_CN): every page answered 500 for
# ``lang=zh`` or ``Accept-Language: zh``.
LANGUAGES = ["en-US", "zh"]
PROVIDER = "api.ogc.provider.GridgovProvider"
WORLD = [-180.0, -90.0, 180.0, 90.0]  # the extent of a collection with no features yet
# per collection (pygeoapi checks limit again on the pages it renders: more than the
# maximum is read as the maximum there too, as on the JSON route)
LIMITS = {"default_items": features.DEFAULT_LIMIT, "max_items": features.MAX_LIMIT,
          "on_exceed": "throttle"}


def dotted(cls: type) -> str:
    """How pygeoapi's plugin loader names a class (it must be a module-level class)."""
    if "." in cls.__qualname__:
        raise ValueError(f"{cls.__qualname__} is not a module-level class")
    return f"{cls.__module__}.{cls.__qualname__}"


def pygeoapi_config(
    root_url: str,
    jobs_dir: Path,
    processes: Mapping[str, type[GridgovProcessor]],
    collections: Mapping[str, Collection] | None = None,
    source: str = "",
) -> dict[str, Any]:
    """The configuration of the OGC API answering at ``root_url`` + ``/ogc``.

    ``root_url`` is the server's public base (no trailing slash): links, the OpenAPI
    ``servers`` entry and the HTML pages' assets are built from it.  ``collections``
    (the catalog) are published with their provider reading the database registered
    under ``source``; without them (database down) there are no collections.
    """
    root = root_url.rstrip("/")
    resources: dict[str, Any] = {
        name: collection_resource(coll, source, root)
        for name, coll in (collections or {}).items()
    }
    resources.update({
        pid: {"type": "process", "processor": {"name": dotted(cls)}}
        for pid, cls in processes.items()
    })
    return {
        "server": {
            "bind": {"host": "127.0.0.1", "port": 0},  # unused: uvicorn binds
            "url": f"{root}/ogc",
            "mimetype": "application/json; charset=UTF-8",
            "encoding": "utf-8",
            "gzip": False,  # pygeoapi would add gzip to a module-level table
            "languages": LANGUAGES,
            "cors": False,
            "pretty_print": False,
            "admin": False,
            "limits": {"default_items": 100, "max_items": 1000},
            # HTML pages carry no map (see DESIGN.md); the schema requires the key
            "map": {"url": "", "attribution": ""},
            "templates": {"path": str(TEMPLATES), "static": str(STATIC)},
            "manager": {
                "name": MANAGER,
                "connection": str(jobs_dir / "jobs.json"),
                "output_dir": str(jobs_dir / "results"),
            },
        },
        "logging": {"level": "WARNING"},
        "metadata": {
            "identification": {
                "title": {"en": "gridgov OGC API", "zh": "网格化治理 OGC API"},
                "description": {
                    "en": "The territory of the three-level grid (streets, communities, "
                          "micro-grids) and its layers, as OGC API: processes now, "
                          "collections and tiles as they are published.",
                    "zh": "三级网格（街道、社区、微网格）及其图层的 OGC API 服务。",
                },
                "keywords": {"en": ["grid governance", "micro-grid", "OGC API"],
                             "zh": ["网格化治理", "微网格", "OGC API"]},
                "keywords_type": "theme",
                "terms_of_service": "",
                "url": f"{root}/",
            },
            "license": {"name": "Apache-2.0", "url": ""},
            "provider": {"name": "gridgov", "url": f"{root}/"},
            "contact": {"name": "gridgov", "role": "pointOfContact"},
        },
        "resources": resources,
    }


TILESETS_VECTOR = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"


def collection_resource(coll: Collection, source: str, root: str = "") -> dict[str, Any]:
    """One registry layer as a pygeoapi collection with our provider (and our tiles)."""
    layer = coll.layer
    columns = layer.columns
    title_field = ("name" if "name" in columns and "name" not in coll.nullable
                   else "code" if "code" in columns else None)
    extents: dict[str, Any] = {"spatial": {"bbox": list(coll.bbox or WORLD),
                                           "crs": features.CRS84_URI}}
    if coll.interval is not None:
        # pygeoapi compares datetime objects (as its YAML loader makes them)
        extents["temporal"] = {"begin": _moment(coll.interval[0]),
                               "end": _moment(coll.interval[1])}
    provider: dict[str, Any] = {
        "type": "feature",
        "name": PROVIDER,
        "data": source,
        "table": layer.table,
        "id_field": coll.key,
        "editable": False,
        "crs": [crs.uri for crs in features.CRSES],
        "storage_crs": features.STORAGE_CRS_URI,
    }
    if title_field:
        provider["title_field"] = title_field
    if coll.time:
        provider["time_field"] = coll.time
    keywords_en = [layer.name.replace("_", " "), layer.geometry, "grid governance"]
    if layer.grid_level:
        keywords_en.append("grid level")
    return {
        "type": "collection",
        "title": {"en": layer.title, "zh": layer.title_zh},
        "description": {"en": layer.description,
                        "zh": f"{layer.title_zh}（{layer.title}）：{layer.description}"},
        "keywords": {"en": keywords_en, "zh": [layer.title_zh, "网格化治理"]},
        "extents": extents,
        "limits": dict(LIMITS),
        "links": [{"type": "application/json", "rel": TILESETS_VECTOR,
                   "title": "Vector tiles (MVT, WebMercatorQuad)",
                   "href": f"{root}/ogc/collections/{layer.name}/tiles"}] if root else [],
        "providers": [provider],
    }


def _moment(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time(), UTC)
