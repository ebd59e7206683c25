"""What is published names no resident: a resident's account name in an event's history
is published as ``resident``, and who uploaded a photo (an account name, or the
address of an anonymous reporter) is not published at all.

The base tables keep both, for an audit by the owner; the read paths (the history of
an event, its photos) never showed ``uploaded_by`` and show staff by name as before.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

HISTORY = ("id, event_id, seq, action, from_state, to_state, {actor}, actor_role, at, "
           "reason, photo_ids, data")
RESIDENT = "CASE WHEN actor_role = 'resident' THEN 'resident' ELSE actor END AS actor"
PHOTOS = "id, event_id, stage, media_type, bytes, sha256, public_path{by}, uploaded_at"

# the reader, when it exists (named after the owner running the migration, as in 0007)
GRANT = """
DO $grant$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user || '_reader') THEN
        EXECUTE format('GRANT SELECT ON published.event_photos TO %I',
                       current_user || '_reader');
    END IF;
END
$grant$;
"""


def upgrade() -> None:
    # the same columns, of the same types: replaced in place, grants kept
    op.execute("CREATE OR REPLACE VIEW published.event_history AS SELECT "
               + HISTORY.format(actor=RESIDENT) + " FROM public.event_history")
    # a column fewer: made anew, and granted again
    op.execute("DROP VIEW published.event_photos")
    op.execute("CREATE VIEW published.event_photos AS SELECT " + PHOTOS.format(by="")
               + " FROM public.event_photos")
    op.execute(GRANT)


def downgrade() -> None:
    op.execute("CREATE OR REPLACE VIEW published.event_history AS SELECT "
               + HISTORY.format(actor="actor") + " FROM public.event_history")
    op.execute("DROP VIEW published.event_photos")
    op.execute("CREATE VIEW published.event_photos AS SELECT "
               + PHOTOS.format(by=", uploaded_by") + " FROM public.event_photos")
    op.execute(GRANT)
