-- name: occurrence_status
-- Before running a delivery: has this occurrence already ended, and which attempt is live?
SELECT (SELECT state FROM chronoq.results WHERE occurrence_key = $1) AS terminal_state,
       (SELECT attempt FROM chronoq.wheel WHERE occurrence_key = $1) AS live_attempt;

-- name: record_success
-- Runs inside the handler's transaction. The insert is the fence: if any other delivery of
-- this occurrence committed a result first, nothing is inserted and the caller rolls back the
-- whole transaction, handler writes included. started_at is now(), the transaction's start,
-- which is when the handler began.
WITH result AS (
    INSERT INTO chronoq.results (occurrence_key, job_id, queue, fire_at, state, attempt, result, run_at, started_at, worker)
    VALUES ($1, $2, $3, $4, 'succeeded', $5, $6, $7, now(), $8)
    ON CONFLICT (occurrence_key) DO NOTHING
    RETURNING occurrence_key
), gone AS (
    DELETE FROM chronoq.wheel w USING result WHERE w.occurrence_key = result.occurrence_key
)
SELECT count(*) AS recorded FROM result;

-- name: record_retry
-- A failed attempt with attempts left: move the occurrence to its next attempt. Fenced on the
-- attempt number so a stale or duplicate delivery of an older attempt changes nothing.
WITH moved AS (
    UPDATE chronoq.wheel
    SET attempt = attempt + 1, run_at = now() + $3::interval, due_at = now() + $3::interval,
        dispatches = 0, dispatched_at = NULL, last_error = $4
    WHERE occurrence_key = $1 AND attempt = $2
    RETURNING occurrence_key, job_id, queue, run_at
), logged AS (
    INSERT INTO chronoq.attempts (occurrence_key, job_id, queue, attempt, outcome, error, started_at, worker)
    SELECT occurrence_key, job_id, queue, $2, $5, $4, $6, $7 FROM moved
)
SELECT run_at FROM moved;

-- name: record_dead
-- Retries exhausted, or no retry makes sense (invalid payload): the occurrence ends dead.
WITH gone AS (
    DELETE FROM chronoq.wheel WHERE occurrence_key = $1 AND attempt = $2
    RETURNING *
), logged AS (
    INSERT INTO chronoq.attempts (occurrence_key, job_id, queue, attempt, outcome, error, started_at, worker)
    SELECT occurrence_key, job_id, queue, attempt, $5, $4, $6, $7 FROM gone
), recorded AS (
    INSERT INTO chronoq.results (occurrence_key, job_id, queue, fire_at, state, attempt, reason, error, run_at, started_at, worker)
    SELECT occurrence_key, job_id, queue, fire_at, 'dead', attempt, $3, $4, run_at, $6, $7 FROM gone
    ON CONFLICT (occurrence_key) DO NOTHING
    RETURNING 1
)
SELECT count(*) AS recorded FROM recorded;

-- name: record_cancelled
-- The handler raised Cancel: the occurrence ends cancelled, no further attempts.
WITH gone AS (
    DELETE FROM chronoq.wheel WHERE occurrence_key = $1 AND attempt = $2
    RETURNING *
), recorded AS (
    INSERT INTO chronoq.results (occurrence_key, job_id, queue, fire_at, state, attempt, reason, run_at, started_at, worker)
    SELECT occurrence_key, job_id, queue, fire_at, 'cancelled', attempt, $3, run_at, $4, $5 FROM gone
    ON CONFLICT (occurrence_key) DO NOTHING
    RETURNING 1
)
SELECT count(*) AS recorded FROM recorded;

-- name: retry_policy
SELECT max_attempts, backoff_base_ms, backoff_cap_ms, jitter FROM chronoq.jobs WHERE id = $1;
