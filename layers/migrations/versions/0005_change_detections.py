"""Orthophoto change detection results: runs and the changed objects with their parcel,
verdict and the event filed for them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

DDL = """
CREATE TABLE change_runs (
    id serial CONSTRAINT pk_change_runs PRIMARY KEY,
    pair_key text NOT NULL,
    before_name text NOT NULL,
    after_name text NOT NULL,
    with_dsm boolean NOT NULL,
    method text NOT NULL,
    objects integer NOT NULL,
    params jsonb NOT NULL DEFAULT '{}',
    mask_path text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_change_runs_pair_key ON change_runs (pair_key);

CREATE TABLE change_detections (
    id serial CONSTRAINT pk_change_detections PRIMARY KEY,
    run_id integer NOT NULL CONSTRAINT fk_change_detections_run_id REFERENCES change_runs (id),
    object_key text NOT NULL,
    kind text NOT NULL,
    area_m2 double precision NOT NULL,
    score double precision NOT NULL,
    cue text NOT NULL,
    verdict text NOT NULL,
    reason text NOT NULL,
    parcel_code text,
    land_use text,
    approved_use text,
    permit_status text,
    permit_no text,
    micro_grid_code varchar(15),
    event_id bigint CONSTRAINT fk_change_detections_event_id REFERENCES events (id),
    review text,
    detected_at timestamptz NOT NULL DEFAULT now(),
    geom geometry(MultiPolygon, 4490) NOT NULL,
    CONSTRAINT uq_change_detections_object_key UNIQUE (object_key),
    CONSTRAINT ck_change_detections_kind
        CHECK (kind IN ('new_structure', 'removed_structure', 'other')),
    CONSTRAINT ck_change_detections_verdict
        CHECK (verdict IN ('illegal_suspected', 'permitted', 'removed', 'other')),
    CONSTRAINT ck_change_detections_review CHECK (review IN ('confirmed', 'dismissed'))
);
CREATE INDEX ix_change_detections_geom ON change_detections USING gist (geom);
CREATE INDEX ix_change_detections_run_id ON change_detections (run_id);
CREATE INDEX ix_change_detections_event_id ON change_detections (event_id);
"""


def upgrade() -> None:
    op.execute(DDL)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS change_detections, change_runs")
