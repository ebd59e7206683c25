#!/bin/sh
# First start of the database container only (/docker-entrypoint-initdb.d): gridgov's
# three roles (README "Database roles").  The image's superuser (postgres) keeps
# PostGIS and this; gridgov owns the database (migrations, seeding, the CLI); the server
# connects as gridgov_writer and gridgov_reader, neither an owner nor a superuser.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v db="$POSTGRES_DB" \
    -v owner_pw="$GRIDGOV_DB_PASSWORD" \
    -v writer_pw="$GRIDGOV_DB_WRITER_PASSWORD" \
    -v reader_pw="$GRIDGOV_DB_READER_PASSWORD" <<'SQL'
CREATE ROLE gridgov LOGIN PASSWORD :'owner_pw';
CREATE ROLE gridgov_writer LOGIN PASSWORD :'writer_pw';
CREATE ROLE gridgov_reader LOGIN PASSWORD :'reader_pw';
ALTER ROLE gridgov_reader SET search_path = published, public;
ALTER DATABASE :"db" OWNER TO gridgov;
CREATE EXTENSION IF NOT EXISTS postgis;
SQL
