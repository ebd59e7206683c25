#!/bin/sh
# Container entrypoint: migrate the database at GRIDGOV_DATABASE_URL (and seed the
# demo town if it is empty), then hand over to the command, e.g. `gridgov serve`.
set -eu
gridgov db up
exec "$@"
