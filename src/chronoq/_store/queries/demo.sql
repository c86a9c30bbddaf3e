-- name: demo_setup
-- The demo application's own table: one row per effect of a handler, with no unique constraint,
-- so that a duplicate effect is counted rather than refused.
CREATE SCHEMA IF NOT EXISTS chronoq_demo;
CREATE TABLE IF NOT EXISTS chronoq_demo.effects (
    run_id text NOT NULL, job_id bigint NOT NULL, occurrence_key text NOT NULL,
    attempt integer NOT NULL, at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS effects_run ON chronoq_demo.effects (run_id);

-- name: demo_effect
INSERT INTO chronoq_demo.effects (run_id, job_id, occurrence_key, attempt) VALUES ($1, $2, $3, $4);

-- name: demo_duplicates
-- Effects of a run beyond the first of each occurrence.
SELECT coalesce(sum(n - 1), 0) FROM (
    SELECT count(*) AS n FROM chronoq_demo.effects WHERE run_id = $1 GROUP BY occurrence_key HAVING count(*) > 1
) AS d;
