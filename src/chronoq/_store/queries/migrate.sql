-- name: lock_migrations
-- Held until the migrating transaction ends: concurrent `chronoq migrate` runs take turns, and
-- each finds what the one before it recorded.
SELECT pg_advisory_xact_lock($1);

-- name: create_bookkeeping
-- Which migrations ran: one row per migrations/NNN_name.sql file.
CREATE SCHEMA IF NOT EXISTS chronoq;
CREATE TABLE IF NOT EXISTS chronoq.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: recorded_migrations
SELECT version, name FROM chronoq.schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO chronoq.schema_migrations (version, name) VALUES ($1, $2);

-- name: rebase_on_baseline
-- Replace the records of the series the baseline replaced by one record of the baseline, dated
-- when the last of them ran (when the database reached the baseline's schema).
WITH replaced AS (
    DELETE FROM chronoq.schema_migrations RETURNING applied_at
)
INSERT INTO chronoq.schema_migrations (version, name, applied_at)
SELECT $1, $2, max(applied_at) FROM replaced;

-- name: create_database_statement
-- CREATE DATABASE takes no parameters: Postgres quotes the name (%I) into the statement.
SELECT format('CREATE DATABASE %I', $1::text);
