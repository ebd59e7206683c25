"""Imagery the server serves as tiles and Cloud-Optimised GeoTIFFs: drone orthophotos
(the phone pages' and the screen's background) and the change masks of change runs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

DDL = """
CREATE TABLE imagery (
    id serial CONSTRAINT pk_imagery PRIMARY KEY,
    name text NOT NULL,
    kind text NOT NULL,
    path text NOT NULL,
    captured_on date,
    run_id integer CONSTRAINT fk_imagery_run_id REFERENCES change_runs (id),
    crs text NOT NULL,
    resolution_m double precision NOT NULL,
    width integer NOT NULL,
    height integer NOT NULL,
    bands integer NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now(),
    footprint geometry(Polygon, 4490) NOT NULL,
    CONSTRAINT uq_imagery_name UNIQUE (name),
    CONSTRAINT ck_imagery_kind CHECK (kind IN ('orthophoto', 'change_mask')),
    CONSTRAINT ck_imagery_resolution_m CHECK (resolution_m > 0)
);
CREATE INDEX ix_imagery_footprint ON imagery USING gist (footprint);
CREATE INDEX ix_imagery_run_id ON imagery (run_id);
"""


def upgrade() -> None:
    op.execute(DDL)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS imagery")
