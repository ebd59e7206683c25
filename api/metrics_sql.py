"""Gauges the database computes on each ``/metrics`` scrape.

One :class:`DatabaseGauge` per metric: a name, its help text, the label names and one
read-only statement whose rows are ``(label values..., value)``.  To add one (events by
state, say), append to :data:`GAUGES`::

    DatabaseGauge("gridgov_events", "Events by state", ("state",),
                  sql.SQL("SELECT state, count(*) FROM events GROUP BY state")),

Keep each statement cheap (an index or a small table): every scrape runs all of them, on
the read pool, under the server's statement timeout.  A gauge whose statement fails (its
table not there yet, say) is left out of that scrape and counted in
``gridgov_metrics_query_errors_total``.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql


@dataclass(frozen=True)
class DatabaseGauge:
    name: str
    help: str
    labels: tuple[str, ...]
    query: sql.Composable


GAUGES: tuple[DatabaseGauge, ...] = (
    DatabaseGauge(
        "gridgov_grid_generation_current", "Id of the grid generation in force", (),
        sql.SQL("SELECT coalesce(max(id), 0) FROM grid_generations WHERE valid_to IS NULL")),
    DatabaseGauge(
        "gridgov_api_tokens_active", "Bearer tokens not revoked, by role", ("role",),
        sql.SQL("SELECT role, count(*) FROM api_tokens WHERE revoked_at IS NULL "
                "GROUP BY role")),
    DatabaseGauge(
        "gridgov_database_size_bytes", "Size of the database on disk", (),
        sql.SQL("SELECT pg_database_size(current_database())")),
)
