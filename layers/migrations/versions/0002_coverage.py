"""Coverage of each micro-grid by high points and cameras (range ring and line of sight).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DDL = """
CREATE TABLE micro_grid_coverage (
    id serial CONSTRAINT pk_micro_grid_coverage PRIMARY KEY,
    micro_grid_id integer NOT NULL
        CONSTRAINT fk_micro_grid_coverage_micro_grid_id REFERENCES micro_grids (id)
        ON DELETE CASCADE
        CONSTRAINT uq_micro_grid_coverage_micro_grid_id UNIQUE,
    generation_id integer NOT NULL
        CONSTRAINT fk_micro_grid_coverage_generation_id REFERENCES grid_generations (id),
    code varchar(15) NOT NULL,
    high_point_ring_fraction double precision NOT NULL,
    high_point_visible_fraction double precision,
    camera_fraction double precision NOT NULL,
    covered_fraction double precision NOT NULL,
    surface_model text,
    computed_at timestamptz NOT NULL DEFAULT now(),
    geom geometry(MULTIPOLYGON, 4490),
    CONSTRAINT ck_micro_grid_coverage_fractions CHECK (
        high_point_ring_fraction BETWEEN 0 AND 1
        AND (high_point_visible_fraction IS NULL OR high_point_visible_fraction BETWEEN 0 AND 1)
        AND camera_fraction BETWEEN 0 AND 1 AND covered_fraction BETWEEN 0 AND 1)
);
CREATE INDEX ix_micro_grid_coverage_generation_id ON micro_grid_coverage (generation_id);
CREATE INDEX ix_micro_grid_coverage_geom ON micro_grid_coverage USING gist (geom);
"""


def upgrade() -> None:
    op.execute(DDL)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS micro_grid_coverage")
