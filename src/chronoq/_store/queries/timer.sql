-- name: claim_due
-- Claim up to $1 due occurrences by the database's clock. The LIMIT sits inside the CTE so the
-- planner cannot lock more rows than it returns; SKIP LOCKED lets any number of timers claim
-- disjoint batches without a leader. Rows stay locked until the caller's transaction ends.
-- The payload comes back as text: the timer splices it into the message without decoding it.
WITH due AS (
    SELECT occurrence_key, job_id, queue, fire_at, run_at, attempt, dispatches
    FROM chronoq.wheel
    WHERE due_at <= now()
    ORDER BY due_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
SELECT due.*, j.payload::text AS payload, j.max_attempts, j.timeout_ms
FROM due JOIN chronoq.jobs j ON j.id = due.job_id;

-- name: mark_dispatched
-- After the broker confirmed them: push each row's due_at to its redelivery deadline. If no
-- outcome removes the row by then, a timer publishes the occurrence again.
UPDATE chronoq.wheel w
SET due_at = now() + d.lease, dispatches = w.dispatches + 1, dispatched_at = now(), last_error = NULL
FROM unnest($1::text[], $2::interval[]) AS d(occurrence_key, lease)
WHERE w.occurrence_key = d.occurrence_key;

-- name: postpone_unpublished
-- The broker nacked or returned these: they stay due, after a short pause so an unroutable
-- queue cannot spin a timer.
UPDATE chronoq.wheel
SET due_at = now() + $2::interval, last_error = $3
WHERE occurrence_key = ANY($1::text[]);

-- name: mark_poison
-- Occurrences dispatched more times than the delivery limit without an outcome: the message
-- kills or hangs its workers, or keeps vanishing. Record them dead instead of publishing again.
WITH gone AS (
    DELETE FROM chronoq.wheel WHERE occurrence_key = ANY($1::text[])
    RETURNING *
), recorded AS (
    INSERT INTO chronoq.results (occurrence_key, job_id, queue, fire_at, state, attempt, reason, error, run_at)
    SELECT occurrence_key, job_id, queue, fire_at, 'dead', attempt, 'delivery_limit',
           format('dispatched %s times without an outcome', dispatches), run_at
    FROM gone
    ON CONFLICT (occurrence_key) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM recorded;

-- name: next_due
-- The database's clock now, and seconds until the earliest row is due (NULL: the wheel is
-- empty). The timer sleeps that long; the clock reading maps NOTIFY payloads to its own clock.
SELECT extract(epoch FROM now())::float8 AS db_now,
       extract(epoch FROM min(due_at) - now())::float8 AS due_in
FROM chronoq.wheel;
