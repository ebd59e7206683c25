"""API tokens: who may write through the OGC API (Part 4) and act on events.

Only the SHA-256 of a token is stored; the token itself is shown once, at creation.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DDL = """
CREATE TABLE api_tokens (
    id serial CONSTRAINT pk_api_tokens PRIMARY KEY,
    name text NOT NULL,
    role text NOT NULL,
    token_sha256 bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CONSTRAINT uq_api_tokens_token_sha256 UNIQUE (token_sha256),
    CONSTRAINT ck_api_tokens_role CHECK (role IN ('officer', 'admin')),
    CONSTRAINT ck_api_tokens_sha256 CHECK (length(token_sha256) = 32)
);
CREATE UNIQUE INDEX uq_api_tokens_name_active ON api_tokens (name) WHERE revoked_at IS NULL;
"""


def upgrade() -> None:
    op.execute(DDL)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS api_tokens")
