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
    ARRAY,
    BigInteger,
    Boolean,
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
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SRID = 4490

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


# Personal data (and secrets standing for a person): a column marked ``info=PERSONAL``
# is in no view of schema ``published`` (migration 0007; tests/ops/test_least_privilege.py
# checks every view against these marks, so a new personal column must be marked here).
PERSONAL = {"personal": True}


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
    phone: Mapped[str] = mapped_column(Text, info=PERSONAL)


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


ROLES = ("resident", "grid_worker", "department", "dispatcher", "officer", "admin")
EVENT_STATES = ("reported", "registered", "dispatched", "accepted", "handled", "closed",
                "rejected", "rework", "suspended", "escalated", "merged")
EVENT_SOURCES = ("resident", "grid_worker", "hotline", "transfer", "ai_camera", "drone",
                 "sensor", "change_detection")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# -- who may write -----------------------------------------------------------------------


class ApiToken(Base):
    """A bearer token (only its SHA-256 is kept) with a role: officer or admin."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, info=PERSONAL)
    role: Mapped[str] = mapped_column(Text)
    token_sha256: Mapped[bytes] = mapped_column(LargeBinary, unique=True, info=PERSONAL)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True,
                                                index=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(  # a session's token: its end
        DateTime(timezone=True), nullable=True)
    __table_args__ = (
        CheckConstraint(_in("role", ROLES), name="role"),
        CheckConstraint("length(token_sha256) = 32", name="sha256"),
        Index("uq_api_tokens_name_active", "name", unique=True,
              postgresql_where=text("revoked_at IS NULL AND user_id IS NULL")),
    )


# -- events and the closed loop ------------------------------------------------------------

class Department(Base):
    """职能部门: handles the categories a grid worker cannot."""

    __tablename__ = "departments"
    code: Mapped[str] = mapped_column(Text, primary_key=True)
    name_zh: Mapped[str] = mapped_column(Text)
    name_en: Mapped[str] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text, nullable=True)


class EventCategory(Base):
    """An event category (GB/T 30428.2 major + minor code; 90–99 is the local range)."""

    __tablename__ = "event_categories"
    code: Mapped[str] = mapped_column(String(5), primary_key=True)
    name_zh: Mapped[str] = mapped_column(Text)
    name_en: Mapped[str] = mapped_column(Text)
    department_code: Mapped[str | None] = mapped_column(
        ForeignKey("departments.code"), nullable=True, index=True)
    registration: Mapped[str] = mapped_column(Text, server_default="review")
    time_limit: Mapped[int] = mapped_column(Integer)
    time_unit: Mapped[str] = mapped_column(Text)
    dispatch_limit_hours: Mapped[int] = mapped_column(Integer, server_default="2")
    dedup_radius_m: Mapped[float] = mapped_column(Float, server_default="50")
    dedup_window_hours: Mapped[int] = mapped_column(Integer, server_default="24")
    local: Mapped[bool] = mapped_column(Boolean, server_default="false")
    __table_args__ = (
        CheckConstraint("code ~ '^[0-9]{5}$'", name="code"),
        CheckConstraint("local = (left(code, 2) >= '90')", name="local"),
        CheckConstraint("registration IN ('auto', 'review')", name="registration"),
        CheckConstraint("time_unit IN ('working_hours', 'working_days')", name="time_unit"),
        CheckConstraint("time_limit > 0 AND dispatch_limit_hours > 0 AND dedup_radius_m >= 0 "
                        "AND dedup_window_hours >= 0", name="limits"),
    )


class User(Base):
    """An account. ``phone`` is personal data; a grid worker is linked to ``workers``."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True, info=PERSONAL)
    role: Mapped[str] = mapped_column(Text)
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True, info=PERSONAL)
    phone: Mapped[str | None] = mapped_column(Text, nullable=True, info=PERSONAL)
    department_code: Mapped[str | None] = mapped_column(
        ForeignKey("departments.code"), nullable=True, index=True)
    worker_id: Mapped[int | None] = mapped_column(
        ForeignKey("workers.id"), nullable=True, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now())
    disabled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True),
                                                             nullable=True)
    __table_args__ = (
        CheckConstraint(_in("role", ROLES), name="role"),
        CheckConstraint("role <> 'grid_worker' OR worker_id IS NOT NULL", name="grid_worker"),
        CheckConstraint("role <> 'department' OR department_code IS NOT NULL",
                        name="department"),
    )


class Event(Base):
    """An urban-management event, from report to closure. Personal data (the reporter's
    contact) lives in ``event_contacts``; every column here may be published."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    category_code: Mapped[str] = mapped_column(ForeignKey("event_categories.code"), index=True)
    category_name: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    source_ref: Mapped[str | None] = mapped_column(Text, nullable=True)
    state: Mapped[str] = mapped_column(Text, index=True)
    description: Mapped[str] = mapped_column(Text, server_default="")
    address: Mapped[str | None] = mapped_column(Text, nullable=True)
    micro_grid_id: Mapped[int] = mapped_column(ForeignKey("micro_grids.id"), index=True)
    micro_grid_code: Mapped[str] = mapped_column(String(15))
    department_code: Mapped[str | None] = mapped_column(
        ForeignKey("departments.code"), nullable=True, index=True)
    assignee_worker_id: Mapped[int | None] = mapped_column(
        ForeignKey("workers.id"), nullable=True, index=True)
    level: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    duplicate_of: Mapped[int | None] = mapped_column(
        ForeignKey("events.id"), nullable=True, index=True)
    duplicates: Mapped[int] = mapped_column(Integer, server_default="0")
    reporter_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id"), nullable=True, index=True)
    reported_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    registered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True),
                                                               nullable=True)
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True),
                                                               nullable=True)
    handled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True),
                                                            nullable=True)
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True),
                                                           nullable=True)
    dispatch_due: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    deadline: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    warn_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    paused_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True),
                                                           nullable=True)
    resume_state: Mapped[str | None] = mapped_column(Text, nullable=True)
    pending = mapped_column(JSONB, nullable=True)
    supervised: Mapped[bool] = mapped_column(Boolean, server_default="false")
    rework_count: Mapped[int] = mapped_column(Integer, server_default="0")
    reopen_count: Mapped[int] = mapped_column(Integer, server_default="0")
    satisfaction: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now())
    geom = mapped_column(geom("POINT"), nullable=False)
    __table_args__ = (
        CheckConstraint(_in("state", EVENT_STATES), name="state"),
        CheckConstraint(_in("source", EVENT_SOURCES), name="source"),
        CheckConstraint("satisfaction BETWEEN 1 AND 5", name="satisfaction"),
        CheckConstraint("(state = 'merged') = (duplicate_of IS NOT NULL)", name="merged"),
        CheckConstraint("warn_at <= deadline", name="deadline"),
        Index("ix_events_micro_grid_code", "micro_grid_code",
              postgresql_ops={"micro_grid_code": "text_pattern_ops"}),
        Index("ix_events_source_ref", "source", "source_ref"),
        gist("events"),
    )


class EventContact(Base):
    """The reporter's contact: personal data, in no published layer; reads are logged."""

    __tablename__ = "event_contacts"
    event_id: Mapped[int] = mapped_column(
        ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str | None] = mapped_column(Text, nullable=True, info=PERSONAL)
    phone: Mapped[str | None] = mapped_column(Text, nullable=True, info=PERSONAL)
    email: Mapped[str | None] = mapped_column(Text, nullable=True, info=PERSONAL)


class EventPhoto(Base):
    """A photo's metadata; the files live under data_dir/photos (the public copy has its
    location metadata stripped)."""

    __tablename__ = "event_photos"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"),
                                          index=True)
    stage: Mapped[str] = mapped_column(Text)
    media_type: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[bytes] = mapped_column(LargeBinary)
    private_path: Mapped[str] = mapped_column(Text, info=PERSONAL)
    public_path: Mapped[str] = mapped_column(Text)
    uploaded_by: Mapped[str] = mapped_column(Text, info=PERSONAL)  # a name or an address
    uploaded_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now())
    __table_args__ = (
        CheckConstraint("stage IN ('report', 'after', 'verify')", name="stage"),
        CheckConstraint("media_type IN ('image/jpeg', 'image/png', 'image/webp')",
                        name="media_type"),
    )


class EventHistory(Base):
    """Every transition with actor, time, reason and photos; append-only (a trigger
    refuses UPDATE, DELETE and TRUNCATE)."""

    __tablename__ = "event_history"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(Text)
    from_state: Mapped[str | None] = mapped_column(Text, nullable=True)
    to_state: Mapped[str] = mapped_column(Text)
    # published as 'resident' for a resident (migration 0009): staff act by name
    actor: Mapped[str] = mapped_column(Text)
    actor_role: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    photo_ids = mapped_column(ARRAY(BigInteger), server_default="{}", nullable=False)
    data = mapped_column(JSONB, server_default="{}", nullable=False)
    __table_args__ = (UniqueConstraint("event_id", "seq"),)


class IdempotencyKey(Base):
    """A POST's ``Idempotency-Key`` with the answer given, so a retry gets the same one."""

    __tablename__ = "idempotency_keys"
    actor: Mapped[str] = mapped_column(Text, primary_key=True, info=PERSONAL)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    route: Mapped[str] = mapped_column(Text)
    request_sha256: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    body = mapped_column(JSONB, nullable=True, info=PERSONAL)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now())


class PersonalDataRead(Base):
    """Who read personal data (a reporter's contact, a worker's phone), when, where."""

    __tablename__ = "personal_data_reads"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor: Mapped[str] = mapped_column(Text, info=PERSONAL)
    actor_role: Mapped[str] = mapped_column(Text)
    what: Mapped[str] = mapped_column(Text)
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("events.id", ondelete="SET NULL"), nullable=True, index=True)
    route: Mapped[str] = mapped_column(Text)


class Outbox(Base):
    """Notifications (SMS, WeChat) waiting to be sent, with retries; never lost."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    channel: Mapped[str] = mapped_column(Text)
    recipient: Mapped[str] = mapped_column(Text, info=PERSONAL)
    body: Mapped[str] = mapped_column(Text, info=PERSONAL)
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("events.id", ondelete="SET NULL"), nullable=True, index=True)
    dedup_key: Mapped[str | None] = mapped_column(Text, nullable=True, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now())
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    __table_args__ = (
        CheckConstraint("channel IN ('sms', 'wechat')", name="channel"),
        Index("ix_outbox_due", "next_attempt_at", postgresql_where=text("sent_at IS NULL")),
    )


class SensorReading(Base):
    """A sensor's reading (PM2.5 in µg/m³ for air-quality stations)."""

    __tablename__ = "sensor_readings"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sensor_id: Mapped[int] = mapped_column(ForeignKey("sensors.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    pm25: Mapped[float] = mapped_column(Float)
    __table_args__ = (
        UniqueConstraint("sensor_id", "at"),
        CheckConstraint("pm25 >= 0 AND pm25 < 10000", name="pm25"),
    )


class MicroGridScore(Base):
    """Each micro-grid's event figures over a period, with its geometry, for QGIS to colour
    (refreshed by ``gridgov events score``)."""

    __tablename__ = "micro_grid_scores"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    micro_grid_id: Mapped[int] = mapped_column(
        ForeignKey("micro_grids.id", ondelete="CASCADE"), unique=True)
    generation_id: Mapped[int] = mapped_column(ForeignKey("grid_generations.id"), index=True)
    code: Mapped[str] = mapped_column(String(15))
    name: Mapped[str] = mapped_column(Text)
    period_start: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    received: Mapped[int] = mapped_column(Integer)
    registered: Mapped[int] = mapped_column(Integer)
    due: Mapped[int] = mapped_column(Integer)
    closed: Mapped[int] = mapped_column(Integer)
    closed_on_time: Mapped[int] = mapped_column(Integer)
    closure_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    on_time_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    dispatched_on_time_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    rework_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    avg_transfer_h: Mapped[float | None] = mapped_column(Float, nullable=True)
    avg_handling_h: Mapped[float | None] = mapped_column(Float, nullable=True)
    satisfaction: Mapped[float | None] = mapped_column(Float, nullable=True)
    open_events: Mapped[int] = mapped_column(Integer)
    overdue_events: Mapped[int] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    grade: Mapped[str | None] = mapped_column(String(1), nullable=True)
    computed_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now())
    geom = mapped_column(geom("MULTIPOLYGON"), nullable=False)
    __table_args__ = (
        CheckConstraint("grade IN ('A', 'B', 'C', 'D')", name="grade"),
        gist("micro_grid_scores"),
    )


class ChangeRun(Base):
    """One comparison of two orthophotos (``pair_key`` identifies the pair and method)."""

    __tablename__ = "change_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pair_key: Mapped[str] = mapped_column(Text, index=True)
    before_name: Mapped[str] = mapped_column(Text)
    after_name: Mapped[str] = mapped_column(Text)
    with_dsm: Mapped[bool] = mapped_column(Boolean)
    method: Mapped[str] = mapped_column(Text)
    objects: Mapped[int] = mapped_column(Integer)
    params = mapped_column(JSONB, server_default="{}", nullable=False)
    mask_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now())


class ChangeDetection(Base):
    """A changed object found between two orthophotos, with the parcel it stands on, that
    parcel's approved use and permit, a verdict and the event filed for it."""

    __tablename__ = "change_detections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("change_runs.id"), index=True)
    object_key: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(Text)
    area_m2: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    cue: Mapped[str] = mapped_column(Text)
    verdict: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    parcel_code: Mapped[str | None] = mapped_column(Text, nullable=True)
    land_use: Mapped[str | None] = mapped_column(Text, nullable=True)
    approved_use: Mapped[str | None] = mapped_column(Text, nullable=True)
    permit_status: Mapped[str | None] = mapped_column(Text, nullable=True)
    permit_no: Mapped[str | None] = mapped_column(Text, nullable=True)
    micro_grid_code: Mapped[str | None] = mapped_column(String(15), nullable=True)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"), nullable=True,
                                                 index=True)
    review: Mapped[str | None] = mapped_column(Text, nullable=True)
    detected_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now())
    geom = mapped_column(geom("MULTIPOLYGON"), nullable=False)
    __table_args__ = (
        CheckConstraint("review IN ('confirmed', 'dismissed')", name="review"),
        CheckConstraint("kind IN ('new_structure', 'removed_structure', 'other')",
                        name="kind"),
        CheckConstraint("verdict IN ('illegal_suspected', 'permitted', 'removed', 'other')",
                        name="verdict"),
        gist("change_detections"),
    )


class RateLimit(Base):
    """Requests counted per client and window (public intake), shared by every worker."""

    __tablename__ = "rate_limits"
    key: Mapped[str] = mapped_column(Text, primary_key=True, info=PERSONAL)
    window_start: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True),
                                                      primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


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


class Imagery(Base):
    """An orthophoto or change mask (a GeoTIFF on the server's disk) served as tiles and
    as a Cloud-Optimised GeoTIFF; ``footprint`` is its valid extent."""

    __tablename__ = "imagery"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    captured_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("change_runs.id"), nullable=True,
                                               index=True)
    crs: Mapped[str] = mapped_column(Text)
    resolution_m: Mapped[float] = mapped_column(Float)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    bands: Mapped[int] = mapped_column(Integer)
    added_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now())
    footprint = mapped_column(geom("POLYGON"), nullable=False)
    __table_args__ = (
        CheckConstraint("kind IN ('orthophoto', 'change_mask')", name="kind"),
        CheckConstraint("resolution_m > 0", name="resolution_m"),
        gist("imagery", "footprint"),
    )


def personal_columns() -> dict[str, set[str]]:
    """Table name -> its columns marked ``info=PERSONAL``."""
    found: dict[str, set[str]] = {}
    for table in Base.metadata.sorted_tables:
        cols = {c.name for c in table.columns if c.info.get("personal")}
        if cols:
            found[table.name] = cols
    return found
