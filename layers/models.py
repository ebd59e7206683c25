"""The schema: GeoAlchemy2 models of every stored table.

The Alembic migrations in ``layers/migrations`` create exactly these tables (a test
compares them).  Tables are named after the layers they publish.  Geometry is stored
in EPSG:4490; every geometry column has a GiST index and every foreign key an index.

The three-level grid is versioned by *generation*: streets, communities and
micro-grids belong to one ``grid_generations`` row, and a child names its parent by
(generation, code).  Codes follow GB/T 30428.1: 6-digit division + 3-digit street +
3-digit community + 3-digit grid, so a child's code starts with its parent's (checked
by the database).
"""

from __future__ import annotations

import datetime as dt

from geoalchemy2 import Geometry
from sqlalchemy import (
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SRID = 4490

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def geom(kind: str) -> Geometry:
    # Spatial indexes are declared explicitly (Index(..., postgresql_using="gist")) so that
    # the migration and the models name them the same way.
    return Geometry(kind, srid=SRID, spatial_index=False)


def gist(table: str, column: str = "geom") -> Index:
    return Index(f"ix_{table}_{column}", column, postgresql_using="gist")


# -- grid generations ---------------------------------------------------------------


class GridGeneration(Base):
    """One version of the grid boundaries, valid over [valid_from, valid_to)."""

    __tablename__ = "grid_generations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_to: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    source: Mapped[str] = mapped_column(Text, server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    __table_args__ = (
        CheckConstraint("valid_to IS NULL OR valid_to > valid_from", name="period"),
        # at most one open (current) generation
        Index(
            "uq_grid_generations_current",
            text("(valid_to IS NULL)"),
            unique=True,
            postgresql_where=text("valid_to IS NULL"),
        ),
    )


# -- the three-level grid -------------------------------------------------------------


class Street(Base):
    """街道 / 镇: a street office or town."""

    __tablename__ = "streets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation_id: Mapped[int] = mapped_column(ForeignKey("grid_generations.id"), index=True)
    code: Mapped[str] = mapped_column(String(9))
    name: Mapped[str] = mapped_column(Text)
    population: Mapped[int] = mapped_column(Integer)
    households: Mapped[int] = mapped_column(Integer)
    geom = mapped_column(geom("MULTIPOLYGON"), nullable=False)
    __table_args__ = (
        UniqueConstraint("generation_id", "code"),
        CheckConstraint("code ~ '^[0-9]{9}$'", name="code_format"),
        CheckConstraint("population >= 0 AND households >= 0", name="counts"),
        gist("streets"),
    )


class Community(Base):
    """社区 / 村居: a community or village committee."""

    __tablename__ = "communities"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation_id: Mapped[int] = mapped_column(ForeignKey("grid_generations.id"), index=True)
    street_code: Mapped[str] = mapped_column(String(9))
    code: Mapped[str] = mapped_column(String(12))
    name: Mapped[str] = mapped_column(Text)
    population: Mapped[int] = mapped_column(Integer)
    households: Mapped[int] = mapped_column(Integer)
    geom = mapped_column(geom("MULTIPOLYGON"), nullable=False)
    __table_args__ = (
        UniqueConstraint("generation_id", "code"),
        ForeignKeyConstraint(
            ["generation_id", "street_code"], ["streets.generation_id", "streets.code"]
        ),
        Index("ix_communities_generation_id_street_code", "generation_id", "street_code"),
        CheckConstraint("code ~ '^[0-9]{12}$'", name="code_format"),
        CheckConstraint("left(code, 9) = street_code", name="code_prefix"),
        CheckConstraint("population >= 0 AND households >= 0", name="counts"),
        gist("communities"),
    )


class MicroGrid(Base):
    """微网格: the smallest unit, owned by one grid worker."""

    __tablename__ = "micro_grids"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation_id: Mapped[int] = mapped_column(ForeignKey("grid_generations.id"), index=True)
    community_code: Mapped[str] = mapped_column(String(12))
    code: Mapped[str] = mapped_column(String(15))
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    population: Mapped[int] = mapped_column(Integer)
    households: Mapped[int] = mapped_column(Integer)
    geom = mapped_column(geom("MULTIPOLYGON"), nullable=False)
    __table_args__ = (
        UniqueConstraint("generation_id", "code"),
        ForeignKeyConstraint(
            ["generation_id", "community_code"],
            ["communities.generation_id", "communities.code"],
        ),
        Index("ix_micro_grids_generation_id_community_code", "generation_id", "community_code"),
        CheckConstraint("code ~ '^[0-9]{15}$'", name="code_format"),
        CheckConstraint("left(code, 12) = community_code", name="code_prefix"),
        CheckConstraint("population >= 0 AND households >= 0", name="counts"),
        gist("micro_grids"),
    )


class MicroGridPart(Base):
    """``ST_Subdivide``d pieces of the micro-grids, for fast point lookups."""

    __tablename__ = "micro_grid_parts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    micro_grid_id: Mapped[int] = mapped_column(
        ForeignKey("micro_grids.id", ondelete="CASCADE"), index=True
    )
    generation_id: Mapped[int] = mapped_column(ForeignKey("grid_generations.id"), index=True)
    geom = mapped_column(geom("POLYGON"), nullable=False)
    __table_args__ = (gist("micro_grid_parts"),)


# -- what lives on the map ------------------------------------------------------------


class Road(Base):
    __tablename__ = "roads"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    road_class: Mapped[str] = mapped_column(Text)
    width_m: Mapped[float] = mapped_column(Float)
    geom = mapped_column(geom("LINESTRING"), nullable=False)
    __table_args__ = (
        CheckConstraint("road_class IN ('main', 'secondary', 'local')", name="road_class"),
        gist("roads"),
    )


class Building(Base):
    __tablename__ = "buildings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str | None] = mapped_column(Text, nullable=True)
    use: Mapped[str] = mapped_column(Text)
    height_m: Mapped[float] = mapped_column(Float)
    floors: Mapped[int] = mapped_column(Integer)
    built_year: Mapped[int | None] = mapped_column(Integer, nullable=True)
    geom = mapped_column(geom("MULTIPOLYGON"), nullable=False)
    __table_args__ = (
        CheckConstraint("height_m > 0 AND floors > 0", name="height"),
        CheckConstraint(
            "use IN ('residential', 'rural_residential', 'commercial', 'industrial', "
            "'public', 'agricultural')",
            name="use",
        ),
        gist("buildings"),
    )


class Parcel(Base):
    """地块: land-use class (GB/T 21010), approved use and construction permit."""

    __tablename__ = "parcels"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(Text, unique=True)
    land_use: Mapped[str] = mapped_column(String(4))
    land_use_name: Mapped[str] = mapped_column(Text)
    approved_use: Mapped[str] = mapped_column(String(4))
    permit_status: Mapped[str] = mapped_column(Text)
    permit_no: Mapped[str | None] = mapped_column(Text, nullable=True)
    area_m2: Mapped[float] = mapped_column(Float)
    geom = mapped_column(geom("MULTIPOLYGON"), nullable=False)
    __table_args__ = (
        CheckConstraint("land_use ~ '^[0-9]{4}$' AND approved_use ~ '^[0-9]{4}$'", name="codes"),
        CheckConstraint(
            "permit_status IN ('approved', 'pending', 'none', 'expired', 'revoked')",
            name="permit_status",
        ),
        CheckConstraint(
            "(permit_status IN ('approved', 'expired', 'revoked')) = (permit_no IS NOT NULL)",
            name="permit_no",
        ),
        gist("parcels"),
    )


class HighPoint(Base):
    """高空之眼: a high-mounted camera site watching a radius."""

    __tablename__ = "high_points"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str] = mapped_column(Text)
    mount_height_m: Mapped[float] = mapped_column(Float)
    radius_m: Mapped[float] = mapped_column(Float, server_default="3000")
    geom = mapped_column(geom("POINT"), nullable=False)
    __table_args__ = (
        CheckConstraint("mount_height_m > 0 AND radius_m > 0", name="dims"),
        gist("high_points"),
    )


class Camera(Base):
    __tablename__ = "cameras"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    heading_deg: Mapped[float] = mapped_column(Float)
    fov_deg: Mapped[float] = mapped_column(Float)
    range_m: Mapped[float] = mapped_column(Float)
    mount_height_m: Mapped[float] = mapped_column(Float)
    high_point_id: Mapped[int | None] = mapped_column(
        ForeignKey("high_points.id"), nullable=True, index=True
    )
    geom = mapped_column(geom("POINT"), nullable=False)
    __table_args__ = (
        CheckConstraint("kind IN ('fixed', 'dome', 'high_point')", name="kind"),
        CheckConstraint("heading_deg >= 0 AND heading_deg < 360", name="heading"),
        CheckConstraint("fov_deg > 0 AND fov_deg <= 360", name="fov"),
        CheckConstraint("range_m > 0 AND mount_height_m > 0", name="dims"),
        CheckConstraint("(kind = 'high_point') = (high_point_id IS NOT NULL)", name="high_point"),
        gist("cameras"),
    )


class Sensor(Base):
    __tablename__ = "sensors"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    installed_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    geom = mapped_column(geom("POINT"), nullable=False)
    __table_args__ = (
        CheckConstraint(
            "kind IN ('pm25_station', 'manhole_cover', 'water_level', 'noise')", name="kind"
        ),
        gist("sensors"),
    )


# -- people ---------------------------------------------------------------------------


class Worker(Base):
    """网格员. ``phone`` is personal data: never published."""

    __tablename__ = "workers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    employee_no: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str] = mapped_column(Text)
    phone: Mapped[str] = mapped_column(Text)


class WorkerAssignment(Base):
    """Which micro-grid (by code, so it survives re-gridding) a worker owns, and when."""

    __tablename__ = "worker_assignments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"), index=True)
    micro_grid_code: Mapped[str] = mapped_column(String(15), index=True)
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_to: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    __table_args__ = (
        CheckConstraint("valid_to IS NULL OR valid_to > valid_from", name="period"),
        Index(
            "uq_worker_assignments_current",
            "micro_grid_code",
            unique=True,
            postgresql_where=text("valid_to IS NULL"),
        ),
    )


# -- derived results ---------------------------------------------------------------


class MicroGridCoverage(Base):
    """How much of each micro-grid the high points and cameras see; the rest as geometry."""

    __tablename__ = "micro_grid_coverage"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    micro_grid_id: Mapped[int] = mapped_column(
        ForeignKey("micro_grids.id", ondelete="CASCADE"), unique=True
    )
    generation_id: Mapped[int] = mapped_column(ForeignKey("grid_generations.id"), index=True)
    code: Mapped[str] = mapped_column(String(15))
    high_point_ring_fraction: Mapped[float] = mapped_column(Float)
    high_point_visible_fraction: Mapped[float | None] = mapped_column(Float, nullable=True)
    camera_fraction: Mapped[float] = mapped_column(Float)
    covered_fraction: Mapped[float] = mapped_column(Float)
    surface_model: Mapped[str | None] = mapped_column(Text, nullable=True)
    computed_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    geom = mapped_column(geom("MULTIPOLYGON"), nullable=True)
    __table_args__ = (
        CheckConstraint(
            "high_point_ring_fraction BETWEEN 0 AND 1 AND (high_point_visible_fraction IS NULL "
            "OR high_point_visible_fraction BETWEEN 0 AND 1) AND camera_fraction BETWEEN 0 AND 1 "
            "AND covered_fraction BETWEEN 0 AND 1",
            name="fractions",
        ),
        gist("micro_grid_coverage"),
    )


# -- who may write -----------------------------------------------------------------------


class ApiToken(Base):
    """A bearer token (only its SHA-256 is kept) with a role: officer or admin."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text)
    token_sha256: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    __table_args__ = (
        CheckConstraint("role IN ('officer', 'admin')", name="role"),
        CheckConstraint("length(token_sha256) = 32", name="sha256"),
        Index("uq_api_tokens_name_active", "name", unique=True,
              postgresql_where=text("revoked_at IS NULL")),
    )


GRID_TABLES = ("streets", "communities", "micro_grids")
LAYER_TABLES = (
    "streets",
    "communities",
    "micro_grids",
    "roads",
    "buildings",
    "parcels",
    "cameras",
    "high_points",
    "sensors",
)
