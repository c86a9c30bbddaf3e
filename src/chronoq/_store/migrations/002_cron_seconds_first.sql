-- Cron as users read it, cron jitter and manual runs.
--
-- A 6-field cron expression takes its seconds FIRST (Quartz, Spring, node-cron), where chronoq
-- took them last. Stored 6-field expressions are rewritten to the new order, so every existing
-- schedule keeps its ticks: "30 9 * * * 15" (09:30:15 in the old order) becomes
-- "15 30 9 * * *" (09:30:15 in the new one). Expressions of 5 fields and aliases
-- have one reading and stay as they are. Fields are split on any run of blanks, as the parser
-- does; the rewritten expression has single spaces.
UPDATE chronoq.jobs j
SET cron = f.parts[6] || ' ' || array_to_string(f.parts[1:5], ' '), updated_at = now()
FROM (
    SELECT id, regexp_split_to_array(btrim(cron, E' \t'), E'[ \t]+') AS parts
    FROM chronoq.jobs
    WHERE kind = 'cron'
) AS f
WHERE j.id = f.id AND cardinality(f.parts) = 6;

-- Cron jitter: each tick of a recurring job is due at its nominal time plus a deterministic
-- offset in [0, cron_jitter_ms) milliseconds, derived from the job id and the nominal tick
-- (schemas/schedule.py). The wheel and the ledger keep the nominal tick. Distinct from `jitter`,
-- the random share (0..1) of a retry's backoff.
ALTER TABLE chronoq.jobs
    ADD COLUMN cron_jitter_ms bigint NOT NULL DEFAULT 0
        CONSTRAINT jobs_cron_jitter CHECK (cron_jitter_ms >= 0 AND (cron_jitter_ms = 0 OR kind = 'cron'));

-- The idempotency key of a manual run of a job (`trigger`): its own key, which no nominal tick
-- has, e.g. "42@manual:2026-12-08T09:00:00.123456Z" for a run asked for at that instant.
-- The ledger tells manual runs from ticks by it.
CREATE FUNCTION chronoq.manual_key(job_id bigint, at timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN job_id::text || '@manual:' || to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
