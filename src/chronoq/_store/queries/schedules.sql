-- name: lock_job
-- The job row, locked: schedule changes, pause and resume of one job happen one at a time.
SELECT id, queue, kind, state, key, cron, timezone, cron_jitter_ms FROM chronoq.jobs WHERE id = $1 FOR UPDATE;

-- name: lock_keyed_job
SELECT id, queue, kind, state, key, cron, timezone, cron_jitter_ms FROM chronoq.jobs
WHERE queue = $1 AND key = $2 FOR UPDATE;

-- name: insert_cron_job
INSERT INTO chronoq.jobs (queue, kind, key, payload, max_attempts, backoff_base_ms, backoff_cap_ms, jitter, timeout_ms,
                          cron, timezone, misfire, misfire_grace_ms, max_backfill, overlap, cron_jitter_ms)
VALUES ($1, 'cron', $2, $3::text::jsonb, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (queue, key) WHERE key IS NOT NULL DO NOTHING
RETURNING id;

-- name: update_cron_job
-- Re-declaring a schedule under the same key: the new definition applies from the next tick.
UPDATE chronoq.jobs
SET payload = $2::text::jsonb, max_attempts = $3, backoff_base_ms = $4, backoff_cap_ms = $5, jitter = $6,
    timeout_ms = $7, cron = $8, timezone = $9, misfire = $10, misfire_grace_ms = $11, max_backfill = $12,
    overlap = $13, cron_jitter_ms = $14, updated_at = now()
WHERE id = $1;

-- name: head
SELECT occurrence_key, fire_at, run_at, due_at FROM chronoq.wheel WHERE job_id = $1 AND head;

-- name: drop_head
DELETE FROM chronoq.wheel WHERE job_id = $1 AND head;

-- name: insert_head
-- $3: the nominal tick; $4: when it is due (the tick, plus its jitter offset for a recurring
-- job); $5: when a timer should judge it (when it is due, or 'infinity' while the job is paused).
INSERT INTO chronoq.wheel (occurrence_key, job_id, queue, fire_at, run_at, due_at, head)
VALUES (chronoq.occurrence_key($1, $3), $1, $2, $3, $4, $5, true);

-- name: insert_manual_run
-- A manual run of a job (`trigger`): an ordinary live occurrence, due now, under its own key.
-- Not a head: the job's next nominal tick stays as it is. Returns the key.
INSERT INTO chronoq.wheel (occurrence_key, job_id, queue, fire_at, run_at, due_at)
VALUES (chronoq.manual_key($1, now()), $1, $2, now(), now(), now())
RETURNING occurrence_key;

-- name: set_job_state
UPDATE chronoq.jobs SET state = $2, updated_at = now() WHERE id = $1;

-- name: set_cron
UPDATE chronoq.jobs SET cron = $2, timezone = $3, updated_at = now() WHERE id = $1;

-- name: park_head
UPDATE chronoq.wheel SET due_at = 'infinity' WHERE job_id = $1 AND head;

-- name: unpark_head
-- Due again when its tick is due (run_at: the tick plus its jitter offset).
UPDATE chronoq.wheel SET due_at = run_at WHERE job_id = $1 AND head;

-- name: record_paused_ticks
INSERT INTO chronoq.results (occurrence_key, job_id, queue, fire_at, state, attempt, reason, detail)
SELECT chronoq.occurrence_key($1, t), $1, $2, t, 'skipped', 0, 'paused', 'job paused'
FROM unnest($3::timestamptz[]) AS t
ON CONFLICT (occurrence_key) DO NOTHING;

-- name: ticks
-- The tick ledger of a job: every nominal tick from `since`, with what happened to it — the
-- live ones from the wheel, the ended ones (run, skipped with a reason, cancelled) from results —
-- and its manual runs (`trigger`), told apart by their key, at the time they were asked for.
SELECT fire_at, state, reason, detail, attempt, finished_at, occurrence_key,
       occurrence_key = chronoq.manual_key($1, fire_at) AS manual FROM (
    SELECT fire_at, state, reason, coalesce(detail, error) AS detail, attempt, finished_at, occurrence_key
    FROM chronoq.results WHERE job_id = $1 AND fire_at >= $2
    UNION ALL
    SELECT fire_at,
           CASE WHEN head AND due_at = 'infinity' THEN 'paused'
                WHEN head THEN 'scheduled'
                WHEN dispatched_at IS NOT NULL AND due_at > now() THEN 'dispatched'
                WHEN attempt > 1 THEN 'retrying'
                ELSE 'due' END,
           NULL, last_error, attempt, NULL, occurrence_key
    FROM chronoq.wheel WHERE job_id = $1 AND fire_at >= $2
) AS ledger
ORDER BY fire_at
LIMIT $3;

-- name: list_jobs
SELECT j.id, j.queue, j.kind, j.state, j.key, j.cron, j.timezone, j.created_at,
       (SELECT min(fire_at) FROM chronoq.wheel w WHERE w.job_id = j.id) AS next_fire_at
FROM chronoq.jobs j
WHERE ($1::text IS NULL OR j.queue = $1) AND ($2::text IS NULL OR j.state = $2)
ORDER BY j.id DESC
LIMIT $3;
