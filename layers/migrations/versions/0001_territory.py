"""The territory: versioned three-level grid, roads, buildings, parcels, cameras,
high points, sensors, workers.

A frozen snapshot of the schema at this revision (migrations never import the models;
tests/layers/test_schema.py checks that the models still match the migrated database).

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

DDL = """
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE grid_generations (
    id serial CONSTRAINT pk_grid_generations PRIMARY KEY,
    name text NOT NULL,
    valid_from date NOT NULL,
    valid_to date,
    source text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_grid_generations_period CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE UNIQUE INDEX uq_grid_generations_current ON grid_generations ((valid_to IS NULL))
    WHERE valid_to IS NULL;

CREATE TABLE streets (
    id serial CONSTRAINT pk_streets PRIMARY KEY,
    generation_id integer NOT NULL
        CONSTRAINT fk_streets_generation_id REFERENCES grid_generations (id),
    code varchar(9) NOT NULL,
    name text NOT NULL,
    population integer NOT NULL,
    households integer NOT NULL,
    geom geometry(MULTIPOLYGON, 4490) NOT NULL,
    CONSTRAINT uq_streets_generation_id_code UNIQUE (generation_id, code),
    CONSTRAINT ck_streets_code_format CHECK (code ~ '^[0-9]{9}$'),
    CONSTRAINT ck_streets_counts CHECK (population >= 0 AND households >= 0)
);
CREATE INDEX ix_streets_generation_id ON streets (generation_id);
CREATE INDEX ix_streets_geom ON streets USING gist (geom);

CREATE TABLE communities (
    id serial CONSTRAINT pk_communities PRIMARY KEY,
    generation_id integer NOT NULL
        CONSTRAINT fk_communities_generation_id REFERENCES grid_generations (id),
    street_code varchar(9) NOT NULL,
    code varchar(12) NOT NULL,
    name text NOT NULL,
    population integer NOT NULL,
    households integer NOT NULL,
    geom geometry(MULTIPOLYGON, 4490) NOT NULL,
    CONSTRAINT uq_communities_generation_id_code UNIQUE (generation_id, code),
    CONSTRAINT fk_communities_generation_id_street_code FOREIGN KEY (generation_id, street_code)
        REFERENCES streets (generation_id, code),
    CONSTRAINT ck_communities_code_format CHECK (code ~ '^[0-9]{12}$'),
    CONSTRAINT ck_communities_code_prefix CHECK (left(code, 9) = street_code),
    CONSTRAINT ck_communities_counts CHECK (population >= 0 AND households >= 0)
);
CREATE INDEX ix_communities_generation_id ON communities (generation_id);
CREATE INDEX ix_communities_generation_id_street_code ON communities (generation_id, street_code);
CREATE INDEX ix_communities_geom ON communities USING gist (geom);

CREATE TABLE micro_grids (
    id serial CONSTRAINT pk_micro_grids PRIMARY KEY,
    generation_id integer NOT NULL
        CONSTRAINT fk_micro_grids_generation_id REFERENCES grid_generations (id),
    community_code varchar(12) NOT NULL,
    code varchar(15) NOT NULL,
    name text NOT NULL,
    kind text NOT NULL,
    population integer NOT NULL,
    households integer NOT NULL,
    geom geometry(MULTIPOLYGON, 4490) NOT NULL,
    CONSTRAINT uq_micro_grids_generation_id_code UNIQUE (generation_id, code),
    CONSTRAINT fk_micro_grids_generation_id_community_code
        FOREIGN KEY (generation_id, community_code)
        REFERENCES communities (generation_id, code),
    CONSTRAINT ck_micro_grids_code_format CHECK (code ~ '^[0-9]{15}$'),
    CONSTRAINT ck_micro_grids_code_prefix CHECK (left(code, 12) = community_code),
    CONSTRAINT ck_micro_grids_counts CHECK (population >= 0 AND households >= 0)
);
CREATE INDEX ix_micro_grids_generation_id ON micro_grids (generation_id);
CREATE INDEX ix_micro_grids_generation_id_community_code
    ON micro_grids (generation_id, community_code);
CREATE INDEX ix_micro_grids_geom ON micro_grids USING gist (geom);

CREATE TABLE micro_grid_parts (
    id serial CONSTRAINT pk_micro_grid_parts PRIMARY KEY,
    micro_grid_id integer NOT NULL
        CONSTRAINT fk_micro_grid_parts_micro_grid_id REFERENCES micro_grids (id)
        ON DELETE CASCADE,
    generation_id integer NOT NULL
        CONSTRAINT fk_micro_grid_parts_generation_id REFERENCES grid_generations (id),
    geom geometry(POLYGON, 4490) NOT NULL
);
CREATE INDEX ix_micro_grid_parts_micro_grid_id ON micro_grid_parts (micro_grid_id);
CREATE INDEX ix_micro_grid_parts_generation_id ON micro_grid_parts (generation_id);
CREATE INDEX ix_micro_grid_parts_geom ON micro_grid_parts USING gist (geom);

CREATE TABLE roads (
    id serial CONSTRAINT pk_roads PRIMARY KEY,
    name text NOT NULL,
    road_class text NOT NULL,
    width_m double precision NOT NULL,
    geom geometry(LINESTRING, 4490) NOT NULL,
    CONSTRAINT ck_roads_road_class CHECK (road_class IN ('main', 'secondary', 'local'))
);
CREATE INDEX ix_roads_geom ON roads USING gist (geom);

CREATE TABLE buildings (
    id serial CONSTRAINT pk_buildings PRIMARY KEY,
    code text NOT NULL CONSTRAINT uq_buildings_code UNIQUE,
    name text,
    use text NOT NULL,
    height_m double precision NOT NULL,
    floors integer NOT NULL,
    built_year integer,
    geom geometry(MULTIPOLYGON, 4490) NOT NULL,
    CONSTRAINT ck_buildings_height CHECK (height_m > 0 AND floors > 0),
    CONSTRAINT ck_buildings_use CHECK (use IN ('residential', 'rural_residential',
        'commercial', 'industrial', 'public', 'agricultural'))
);
CREATE INDEX ix_buildings_geom ON buildings USING gist (geom);

CREATE TABLE parcels (
    id serial CONSTRAINT pk_parcels PRIMARY KEY,
    code text NOT NULL CONSTRAINT uq_parcels_code UNIQUE,
    land_use varchar(4) NOT NULL,
    land_use_name text NOT NULL,
    approved_use varchar(4) NOT NULL,
    permit_status text NOT NULL,
    permit_no text,
    area_m2 double precision NOT NULL,
    geom geometry(MULTIPOLYGON, 4490) NOT NULL,
    CONSTRAINT ck_parcels_codes CHECK (land_use ~ '^[0-9]{4}$' AND approved_use ~ '^[0-9]{4}$'),
    CONSTRAINT ck_parcels_permit_status CHECK (permit_status IN ('approved', 'pending', 'none',
        'expired', 'revoked')),
    CONSTRAINT ck_parcels_permit_no CHECK (
        (permit_status IN ('approved', 'expired', 'revoked')) = (permit_no IS NOT NULL))
);
CREATE INDEX ix_parcels_geom ON parcels USING gist (geom);

CREATE TABLE high_points (
    id serial CONSTRAINT pk_high_points PRIMARY KEY,
    code text NOT NULL CONSTRAINT uq_high_points_code UNIQUE,
    name text NOT NULL,
    mount_height_m double precision NOT NULL,
    radius_m double precision NOT NULL DEFAULT 3000,
    geom geometry(POINT, 4490) NOT NULL,
    CONSTRAINT ck_high_points_dims CHECK (mount_height_m > 0 AND radius_m > 0)
);
CREATE INDEX ix_high_points_geom ON high_points USING gist (geom);

CREATE TABLE cameras (
    id serial CONSTRAINT pk_cameras PRIMARY KEY,
    code text NOT NULL CONSTRAINT uq_cameras_code UNIQUE,
    name text NOT NULL,
    kind text NOT NULL,
    heading_deg double precision NOT NULL,
    fov_deg double precision NOT NULL,
    range_m double precision NOT NULL,
    mount_height_m double precision NOT NULL,
    high_point_id integer CONSTRAINT fk_cameras_high_point_id REFERENCES high_points (id),
    geom geometry(POINT, 4490) NOT NULL,
    CONSTRAINT ck_cameras_kind CHECK (kind IN ('fixed', 'dome', 'high_point')),
    CONSTRAINT ck_cameras_heading CHECK (heading_deg >= 0 AND heading_deg < 360),
    CONSTRAINT ck_cameras_fov CHECK (fov_deg > 0 AND fov_deg <= 360),
    CONSTRAINT ck_cameras_dims CHECK (range_m > 0 AND mount_height_m > 0),
    CONSTRAINT ck_cameras_high_point CHECK ((kind = 'high_point') = (high_point_id IS NOT NULL))
);
CREATE INDEX ix_cameras_high_point_id ON cameras (high_point_id);
CREATE INDEX ix_cameras_geom ON cameras USING gist (geom);

CREATE TABLE sensors (
    id serial CONSTRAINT pk_sensors PRIMARY KEY,
    code text NOT NULL CONSTRAINT uq_sensors_code UNIQUE,
    name text NOT NULL,
    kind text NOT NULL,
    installed_on date,
    geom geometry(POINT, 4490) NOT NULL,
    CONSTRAINT ck_sensors_kind CHECK (kind IN ('pm25_station', 'manhole_cover', 'water_level',
        'noise'))
);
CREATE INDEX ix_sensors_geom ON sensors USING gist (geom);

CREATE TABLE workers (
    id serial CONSTRAINT pk_workers PRIMARY KEY,
    employee_no text NOT NULL CONSTRAINT uq_workers_employee_no UNIQUE,
    name text NOT NULL,
    phone text NOT NULL
);

CREATE TABLE worker_assignments (
    id serial CONSTRAINT pk_worker_assignments PRIMARY KEY,
    worker_id integer NOT NULL
        CONSTRAINT fk_worker_assignments_worker_id REFERENCES workers (id),
    micro_grid_code varchar(15) NOT NULL,
    valid_from date NOT NULL,
    valid_to date,
    CONSTRAINT ck_worker_assignments_period CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE INDEX ix_worker_assignments_worker_id ON worker_assignments (worker_id);
CREATE INDEX ix_worker_assignments_micro_grid_code ON worker_assignments (micro_grid_code);
CREATE UNIQUE INDEX uq_worker_assignments_current ON worker_assignments (micro_grid_code)
    WHERE valid_to IS NULL;
"""

TABLES = (
    "worker_assignments workers sensors cameras high_points parcels buildings roads "
    "micro_grid_parts micro_grids communities streets grid_generations"
).split()


def upgrade() -> None:
    op.execute(DDL)


def downgrade() -> None:
    for table in TABLES:
        op.execute("DROP TABLE IF EXISTS " + table)
