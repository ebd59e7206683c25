"""The published layers: one immutable registry, the single source of truth.

The landing page, the OGC API configuration and every data path take table and column
names from here (and quote them with ``psycopg.sql.Identifier``), never from a request.
Personal data (workers' phones, reporters' contacts) is never a published column.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Layer:
    name: str
    title: str
    title_zh: str
    description: str
    geometry: str
    columns: tuple[str, ...]
    grid_level: bool = False
    derived: bool = False  # computed by gridgov from the other layers (read-only)
    # OGC API Features Part 4: columns an officer may set, and whether features may be
    # created, replaced (geometry included) and deleted, or only those columns updated
    editable: tuple[str, ...] = ()
    creatable: bool = False

    @property
    def table(self) -> str:
        return self.name


_GRID = ("code", "name", "population", "households", "generation_id")
_LAYERS = (
    Layer("streets", "Streets and towns", "街道/镇", "Top level of the grid: street offices "
          "and towns.", "MultiPolygon", _GRID, grid_level=True),
    Layer("communities", "Communities", "社区/村居", "Second level: communities and villages, "
          "each inside one street.", "MultiPolygon", ("street_code", *_GRID), grid_level=True),
    Layer("micro_grids", "Micro-grids", "微网格", "Third level: micro-grids of a few hundred "
          "households, each owned by one grid worker.", "MultiPolygon",
          ("community_code", "kind", *_GRID), grid_level=True),
    Layer("roads", "Roads", "道路", "Road centre lines.", "LineString",
          ("name", "road_class", "width_m")),
    Layer("buildings", "Buildings", "建筑", "Building footprints with height, floors and use.",
          "MultiPolygon", ("code", "name", "use", "height_m", "floors", "built_year"),
          editable=("code", "name", "use", "height_m", "floors", "built_year"), creatable=True),
    Layer("parcels", "Parcels", "地块", "Land parcels: GB/T 21010 land-use class, approved use "
          "and construction permit.", "MultiPolygon",
          ("code", "land_use", "land_use_name", "approved_use", "permit_status", "permit_no",
           "area_m2"), editable=("approved_use", "permit_status", "permit_no")),
    Layer("cameras", "Cameras", "视频监控", "Video cameras: kind, heading, field of view, range.",
          "Point", ("code", "name", "kind", "heading_deg", "fov_deg", "range_m",
                    "mount_height_m", "high_point_id"),
          editable=("code", "name", "kind", "heading_deg", "fov_deg", "range_m",
                    "mount_height_m", "high_point_id"), creatable=True),
    Layer("high_points", "High points", "高空之眼", "High-mounted cameras watching a radius.",
          "Point", ("code", "name", "mount_height_m", "radius_m")),
    Layer("sensors", "Sensors", "感知设备", "Air-quality stations, smart manhole covers, water "
          "level gauges.", "Point", ("code", "name", "kind", "installed_on")),
    Layer("micro_grid_coverage", "Micro-grid coverage", "网格视频覆盖", "What the high points "
          "and street cameras see of each micro-grid (shares of its area: within a high "
          "point's range ring, seen by a high point over the surface model, seen by a street "
          "camera, seen by either); the geometry is the part nobody sees.", "MultiPolygon",
          ("code", "high_point_ring_fraction", "high_point_visible_fraction", "camera_fraction",
           "covered_fraction", "surface_model", "computed_at", "generation_id"), derived=True),
    Layer("events", "Events", "事件", "Urban-management events from report to closure "
          "(public fields only: nothing personal about reporters or workers is "
          "published). `state` follows GB/T 30428: reported, registered, dispatched, "
          "accepted, handled, closed, rejected, rework, suspended, escalated, merged "
          "(a linked duplicate report).", "Point",
          ("category_code", "category_name", "state", "source", "micro_grid_code",
           "department_code", "level", "duplicate_of", "duplicates", "rework_count",
           "satisfaction", "reported_at")),
    Layer("micro_grid_scores", "Micro-grid event scores", "网格事件考核", "Each "
          "micro-grid's events over a period (refreshed by `gridgov events score`): received, "
          "due (应结案数), closed, closure and on-time rates, rework rate, transfer and "
          "handling hours, satisfaction, open and overdue now, a 0-100 score and an A-D grade "
          "to colour by.", "MultiPolygon",
          ("code", "name", "period_start", "period_end", "received", "registered", "due",
           "closed", "closed_on_time", "closure_rate", "on_time_rate",
           "dispatched_on_time_rate", "rework_rate", "avg_transfer_h", "avg_handling_h",
           "satisfaction", "open_events", "overdue_events", "score", "grade", "computed_at",
           "generation_id"), derived=True),
)

LAYERS: MappingProxyType[str, Layer] = MappingProxyType({layer.name: layer for layer in _LAYERS})
