"""Events and the closed loop: categories, departments, users, events, their append-only
history and photos, personal contacts apart, idempotency keys, the notification outbox,
sensor readings, the log of personal-data reads and the public-intake rate counter.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ROLES = "('resident', 'grid_worker', 'department', 'dispatcher', 'officer', 'admin')"
STATES = ("('reported', 'registered', 'dispatched', 'accepted', 'handled', 'closed', "
          "'rejected', 'rework', 'suspended', 'escalated', 'merged')")
SOURCES = ("('resident', 'grid_worker', 'hotline', 'transfer', 'ai_camera', 'drone', 'sensor', "
           "'change_detection')")

DDL = f"""
CREATE TABLE departments (
    code text CONSTRAINT pk_departments PRIMARY KEY,
    name_zh text NOT NULL,
    name_en text NOT NULL,
    phone text
);

CREATE TABLE event_categories (
    code varchar(5) CONSTRAINT pk_event_categories PRIMARY KEY,
    name_zh text NOT NULL,
    name_en text NOT NULL,
    department_code text
        CONSTRAINT fk_event_categories_department_code REFERENCES departments (code),
    registration text NOT NULL DEFAULT 'review',
    time_limit integer NOT NULL,
    time_unit text NOT NULL,
    dispatch_limit_hours integer NOT NULL DEFAULT 2,
    dedup_radius_m double precision NOT NULL DEFAULT 50,
    dedup_window_hours integer NOT NULL DEFAULT 24,
    local boolean NOT NULL DEFAULT false,
    CONSTRAINT ck_event_categories_code CHECK (code ~ '^[0-9]{{5}}$'),
    CONSTRAINT ck_event_categories_local CHECK (local = (left(code, 2) >= '90')),
    CONSTRAINT ck_event_categories_registration CHECK (registration IN ('auto', 'review')),
    CONSTRAINT ck_event_categories_time_unit
        CHECK (time_unit IN ('working_hours', 'working_days')),
    CONSTRAINT ck_event_categories_limits CHECK (time_limit > 0 AND dispatch_limit_hours > 0
        AND dedup_radius_m >= 0 AND dedup_window_hours >= 0)
);
CREATE INDEX ix_event_categories_department_code ON event_categories (department_code);

CREATE TABLE users (
    id serial CONSTRAINT pk_users PRIMARY KEY,
    name text NOT NULL,
    role text NOT NULL,
    password_hash text,
    phone text,
    department_code text CONSTRAINT fk_users_department_code REFERENCES departments (code),
    worker_id integer CONSTRAINT fk_users_worker_id REFERENCES workers (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz,
    CONSTRAINT uq_users_name UNIQUE (name),
    CONSTRAINT ck_users_role CHECK (role IN {ROLES}),
    CONSTRAINT ck_users_grid_worker CHECK (role <> 'grid_worker' OR worker_id IS NOT NULL),
    CONSTRAINT ck_users_department CHECK (role <> 'department' OR department_code IS NOT NULL)
);
CREATE INDEX ix_users_department_code ON users (department_code);
CREATE INDEX ix_users_worker_id ON users (worker_id);

ALTER TABLE api_tokens DROP CONSTRAINT ck_api_tokens_role;
ALTER TABLE api_tokens ADD CONSTRAINT ck_api_tokens_role CHECK (role IN {ROLES});
ALTER TABLE api_tokens ADD COLUMN user_id integer
    CONSTRAINT fk_api_tokens_user_id REFERENCES users (id);
CREATE INDEX ix_api_tokens_user_id ON api_tokens (user_id);
DROP INDEX uq_api_tokens_name_active;
CREATE UNIQUE INDEX uq_api_tokens_name_active ON api_tokens (name)
    WHERE revoked_at IS NULL AND user_id IS NULL;

CREATE TABLE events (
    id bigserial CONSTRAINT pk_events PRIMARY KEY,
    category_code varchar(5) NOT NULL
        CONSTRAINT fk_events_category_code REFERENCES event_categories (code),
    category_name text NOT NULL,
    source text NOT NULL,
    source_ref text,
    state text NOT NULL,
    description text NOT NULL DEFAULT '',
    address text,
    micro_grid_id integer NOT NULL CONSTRAINT fk_events_micro_grid_id REFERENCES micro_grids (id),
    micro_grid_code varchar(15) NOT NULL,
    department_code text CONSTRAINT fk_events_department_code REFERENCES departments (code),
    assignee_worker_id integer CONSTRAINT fk_events_assignee_worker_id REFERENCES workers (id),
    level smallint NOT NULL DEFAULT 0,
    duplicate_of bigint CONSTRAINT fk_events_duplicate_of REFERENCES events (id),
    duplicates integer NOT NULL DEFAULT 0,
    reporter_user_id integer CONSTRAINT fk_events_reporter_user_id REFERENCES users (id),
    reported_at timestamptz NOT NULL,
    registered_at timestamptz,
    dispatched_at timestamptz,
    handled_at timestamptz,
    closed_at timestamptz,
    dispatch_due timestamptz NOT NULL,
    deadline timestamptz NOT NULL,
    warn_at timestamptz NOT NULL,
    paused_at timestamptz,
    resume_state text,
    pending jsonb,
    supervised boolean NOT NULL DEFAULT false,
    rework_count integer NOT NULL DEFAULT 0,
    reopen_count integer NOT NULL DEFAULT 0,
    satisfaction smallint,
    version integer NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now(),
    geom geometry(Point, 4490) NOT NULL,
    CONSTRAINT ck_events_state CHECK (state IN {STATES}),
    CONSTRAINT ck_events_source CHECK (source IN {SOURCES}),
    CONSTRAINT ck_events_satisfaction CHECK (satisfaction BETWEEN 1 AND 5),
    CONSTRAINT ck_events_merged CHECK ((state = 'merged') = (duplicate_of IS NOT NULL)),
    CONSTRAINT ck_events_deadline CHECK (warn_at <= deadline)
);
CREATE INDEX ix_events_geom ON events USING gist (geom);
CREATE INDEX ix_events_category_code ON events (category_code);
CREATE INDEX ix_events_micro_grid_id ON events (micro_grid_id);
CREATE INDEX ix_events_micro_grid_code ON events (micro_grid_code text_pattern_ops);
CREATE INDEX ix_events_department_code ON events (department_code);
CREATE INDEX ix_events_assignee_worker_id ON events (assignee_worker_id);
CREATE INDEX ix_events_duplicate_of ON events (duplicate_of);
CREATE INDEX ix_events_reporter_user_id ON events (reporter_user_id);
CREATE INDEX ix_events_state ON events (state);
CREATE INDEX ix_events_reported_at ON events (reported_at);
CREATE INDEX ix_events_source_ref ON events (source, source_ref);

CREATE TABLE event_contacts (
    event_id bigint CONSTRAINT pk_event_contacts PRIMARY KEY
        CONSTRAINT fk_event_contacts_event_id REFERENCES events (id) ON DELETE CASCADE,
    name text,
    phone text,
    email text
);

CREATE TABLE event_photos (
    id bigserial CONSTRAINT pk_event_photos PRIMARY KEY,
    event_id bigint NOT NULL
        CONSTRAINT fk_event_photos_event_id REFERENCES events (id) ON DELETE CASCADE,
    stage text NOT NULL,
    media_type text NOT NULL,
    bytes integer NOT NULL,
    sha256 bytea NOT NULL,
    private_path text NOT NULL,
    public_path text NOT NULL,
    uploaded_by text NOT NULL,
    uploaded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_event_photos_stage CHECK (stage IN ('report', 'after', 'verify')),
    CONSTRAINT ck_event_photos_media_type
        CHECK (media_type IN ('image/jpeg', 'image/png', 'image/webp'))
);
CREATE INDEX ix_event_photos_event_id ON event_photos (event_id);

CREATE TABLE event_history (
    id bigserial CONSTRAINT pk_event_history PRIMARY KEY,
    event_id bigint NOT NULL CONSTRAINT fk_event_history_event_id REFERENCES events (id),
    seq integer NOT NULL,
    action text NOT NULL,
    from_state text,
    to_state text NOT NULL,
    actor text NOT NULL,
    actor_role text NOT NULL,
    at timestamptz NOT NULL,
    reason text,
    photo_ids bigint[] NOT NULL DEFAULT '{{}}',
    data jsonb NOT NULL DEFAULT '{{}}',
    CONSTRAINT uq_event_history_event_id_seq UNIQUE (event_id, seq)
);
CREATE INDEX ix_event_history_event_id ON event_history (event_id);
CREATE FUNCTION event_history_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'event_history is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER tr_event_history_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
    ON event_history FOR EACH STATEMENT EXECUTE FUNCTION event_history_append_only();

CREATE TABLE idempotency_keys (
    actor text NOT NULL,
    key text NOT NULL,
    route text NOT NULL,
    request_sha256 bytea NOT NULL,
    status integer,
    body jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_idempotency_keys PRIMARY KEY (actor, key)
);

CREATE TABLE personal_data_reads (
    id bigserial CONSTRAINT pk_personal_data_reads PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    actor_role text NOT NULL,
    what text NOT NULL,
    event_id bigint
        CONSTRAINT fk_personal_data_reads_event_id REFERENCES events (id) ON DELETE SET NULL,
    route text NOT NULL
);
CREATE INDEX ix_personal_data_reads_event_id ON personal_data_reads (event_id);

CREATE TABLE outbox (
    id bigserial CONSTRAINT pk_outbox PRIMARY KEY,
    channel text NOT NULL,
    recipient text NOT NULL,
    body text NOT NULL,
    event_id bigint CONSTRAINT fk_outbox_event_id REFERENCES events (id) ON DELETE SET NULL,
    dedup_key text,
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    last_error text,
    CONSTRAINT uq_outbox_dedup_key UNIQUE (dedup_key),
    CONSTRAINT ck_outbox_channel CHECK (channel IN ('sms', 'wechat'))
);
CREATE INDEX ix_outbox_event_id ON outbox (event_id);
CREATE INDEX ix_outbox_due ON outbox (next_attempt_at) WHERE sent_at IS NULL;

CREATE TABLE sensor_readings (
    id bigserial CONSTRAINT pk_sensor_readings PRIMARY KEY,
    sensor_id integer NOT NULL CONSTRAINT fk_sensor_readings_sensor_id REFERENCES sensors (id),
    at timestamptz NOT NULL,
    pm25 double precision NOT NULL,
    CONSTRAINT uq_sensor_readings_sensor_id_at UNIQUE (sensor_id, at),
    CONSTRAINT ck_sensor_readings_pm25 CHECK (pm25 >= 0 AND pm25 < 10000)
);
CREATE INDEX ix_sensor_readings_sensor_id ON sensor_readings (sensor_id);
CREATE INDEX ix_sensor_readings_at ON sensor_readings (at);

CREATE TABLE micro_grid_scores (
    id serial CONSTRAINT pk_micro_grid_scores PRIMARY KEY,
    micro_grid_id integer NOT NULL
        CONSTRAINT fk_micro_grid_scores_micro_grid_id REFERENCES micro_grids (id)
        ON DELETE CASCADE,
    generation_id integer NOT NULL
        CONSTRAINT fk_micro_grid_scores_generation_id REFERENCES grid_generations (id),
    code varchar(15) NOT NULL,
    name text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    received integer NOT NULL,
    registered integer NOT NULL,
    due integer NOT NULL,
    closed integer NOT NULL,
    closed_on_time integer NOT NULL,
    closure_rate double precision,
    on_time_rate double precision,
    dispatched_on_time_rate double precision,
    rework_rate double precision,
    avg_transfer_h double precision,
    avg_handling_h double precision,
    satisfaction double precision,
    open_events integer NOT NULL,
    overdue_events integer NOT NULL,
    score double precision,
    grade varchar(1),
    computed_at timestamptz NOT NULL DEFAULT now(),
    geom geometry(MultiPolygon, 4490) NOT NULL,
    CONSTRAINT uq_micro_grid_scores_micro_grid_id UNIQUE (micro_grid_id),
    CONSTRAINT ck_micro_grid_scores_grade CHECK (grade IN ('A', 'B', 'C', 'D'))
);
CREATE INDEX ix_micro_grid_scores_geom ON micro_grid_scores USING gist (geom);
CREATE INDEX ix_micro_grid_scores_generation_id ON micro_grid_scores (generation_id);

CREATE TABLE rate_limits (
    key text NOT NULL,
    window_start timestamptz NOT NULL,
    count integer NOT NULL,
    CONSTRAINT pk_rate_limits PRIMARY KEY (key, window_start)
);

INSERT INTO departments (code, name_zh, name_en) VALUES
    ('urban_mgmt', '城市管理综合执法队', 'Urban management enforcement'),
    ('sanitation', '环境卫生所', 'Sanitation'),
    ('traffic', '交警中队', 'Traffic police'),
    ('environment', '生态环境分局', 'Ecology and environment'),
    ('municipal', '市政设施所', 'Municipal facilities'),
    ('natural_resources', '自然资源和规划所', 'Natural resources and planning');

INSERT INTO event_categories (code, name_zh, name_en, department_code, registration,
                              time_limit, time_unit, dispatch_limit_hours,
                              dedup_radius_m, dedup_window_hours, local) VALUES
    ('06010', '暴露垃圾', 'Exposed garbage', NULL, 'auto', 2, 'working_hours', 1,
     30, 24, false),
    ('06002', '乱堆物料', 'Materials piled in public space', NULL, 'auto', 1, 'working_days',
     2, 30, 48, false),
    ('06005', '道路不洁', 'Dirty road surface', 'sanitation', 'auto', 4, 'working_hours', 1,
     50, 24, false),
    ('06019', '露天焚烧', 'Open burning', 'environment', 'auto', 2, 'working_hours', 1,
     200, 12, false),
    ('06001', '违法建设', 'Illegal construction', 'urban_mgmt', 'review', 3, 'working_days',
     4, 50, 720, false),
    ('09001', '店外经营', 'Business spilling onto the street', NULL, 'auto', 4,
     'working_hours', 2, 30, 24, false),
    ('09006', '无照经营游商', 'Unlicensed street vending', NULL, 'auto', 2,
     'working_hours', 1,
     50, 4, false),
    ('09009', '违章停车', 'Illegal parking', 'traffic', 'auto', 2, 'working_hours', 1,
     20, 2, false),
    ('01005', '井盖破损', 'Damaged manhole cover', 'municipal', 'auto', 1, 'working_days', 2,
     10, 72, false),
    ('90001', 'PM2.5浓度异常', 'PM2.5 alert (air-quality rule)', 'environment', 'auto', 1,
     'working_days', 2, 500, 24, true),
    ('90002', '群众诉求', 'Resident request (hotline 12345)', NULL, 'review', 5,
     'working_days', 8, 0, 0, true);
"""

DROP = """
DROP TABLE IF EXISTS micro_grid_scores, rate_limits, sensor_readings, outbox, personal_data_reads,
    idempotency_keys, event_history, event_photos, event_contacts, events CASCADE;
DROP FUNCTION IF EXISTS event_history_append_only();
DROP INDEX IF EXISTS uq_api_tokens_name_active;
ALTER TABLE api_tokens DROP COLUMN IF EXISTS user_id;
DELETE FROM api_tokens WHERE role NOT IN ('officer', 'admin');
ALTER TABLE api_tokens DROP CONSTRAINT ck_api_tokens_role;
ALTER TABLE api_tokens ADD CONSTRAINT ck_api_tokens_role CHECK (role IN ('officer', 'admin'));
CREATE UNIQUE INDEX uq_api_tokens_name_active ON api_tokens (name) WHERE revoked_at IS NULL;
DROP TABLE IF EXISTS users, event_categories, departments CASCADE;
"""


def upgrade() -> None:
    op.execute(DDL)


def downgrade() -> None:
    op.execute(DROP)
