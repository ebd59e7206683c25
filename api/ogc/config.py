"""pygeoapi's configuration, generated from the settings and the process table.

No YAML file: the dict is built at start-up, one per base URL the server answers on,
and validated against pygeoapi's schema by the tests.  Secrets (the database URL) are
never part of it: pygeoapi hands its configuration to every HTML template.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from api.ogc.processes import GridgovProcessor

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"  # overrides of pygeoapi's templates (see DESIGN.md)
STATIC = HERE / "static"
MANAGER = "api.ogc.jobs.GridgovManager"
LANGUAGES = ["en-US", "zh-CN"]  # the first is the default


def dotted(cls: type) -> str:
    """How pygeoapi's plugin loader names a class (it must be a module-level class)."""
    if "." in cls.__qualname__:
        raise ValueError(f"{cls.__qualname__} is not a module-level class")
    return f"{cls.__module__}.{cls.__qualname__}"


def pygeoapi_config(
    root_url: str,
    jobs_dir: Path,
    processes: Mapping[str, type[GridgovProcessor]],
) -> dict[str, Any]:
    """The configuration of the OGC API answering at ``root_url`` + ``/ogc``.

    ``root_url`` is the server's public base (no trailing slash): links, the OpenAPI
    ``servers`` entry and the HTML pages' assets are built from it.
    """
    root = root_url.rstrip("/")
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
        "resources": {
            pid: {"type": "process", "processor": {"name": dotted(cls)}}
            for pid, cls in processes.items()
        },
    }
