-- name: record_retry
-- A failed attempt with attempts left: move the occurrence to its next attempt. Fenced on the
-- attempt number so a stale or duplicate delivery of an older attempt changes nothing.
WITH moved AS (
    UPDATE chronoq.wheel
    -- clock_timestamp(): the backoff counts from the failure, not from the group's start.
    SET attempt = attempt + 1, run_at = clock_timestamp() + chronoq.elapsed($3::interval), due_at = clock_timestamp() + chronoq.elapsed($3::interval),
        dispatches = 0, starts = 0, dispatched_at = NULL, last_error = $4
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

-- name: start_deliveries
-- A redelivery's first step, committed on its own before it runs: has each occurrence already
-- ended, is this its live attempt, and how many times has a worker started it (this start
-- included)? Starting also moves the redelivery deadline to cover this run, so a slow but
-- healthy handler is not published again meanwhile.
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::interval[]) AS i(occurrence_key, attempt, lease)
), locked AS (
    -- Rows locked in key order, as every writer of many wheel rows does: no deadlocks.
    SELECT w.occurrence_key, input.lease FROM chronoq.wheel w JOIN input USING (occurrence_key)
    WHERE w.attempt = input.attempt AND w.occurrence_key = ANY($1::text[])
    ORDER BY w.occurrence_key
    FOR UPDATE OF w
), started AS (
    UPDATE chronoq.wheel w
    -- due_at (indexed) changes only when less than half the lease is left: otherwise this is
    -- a HOT update, which adds nothing to the wheel's indexes.
    SET starts = w.starts + 1,
        due_at = CASE WHEN w.due_at < now() + chronoq.elapsed(locked.lease) / 2 THEN now() + chronoq.elapsed(locked.lease) ELSE w.due_at END
    FROM locked
    WHERE w.occurrence_key = locked.occurrence_key AND w.occurrence_key = ANY($1::text[])
    RETURNING w.occurrence_key, w.starts
)
SELECT input.occurrence_key,
       -- Subqueries, not joins: one primary-key lookup per delivery whatever the statistics say
       -- (see lock_first_deliveries).
       (SELECT r.state FROM chronoq.results r WHERE r.occurrence_key = input.occurrence_key) AS terminal_state,
       (SELECT w.attempt FROM chronoq.wheel w WHERE w.occurrence_key = input.occurrence_key) AS live_attempt,
       started.starts,
       false AS only_copy,
       clock_timestamp() AS db_now
FROM input
LEFT JOIN started USING (occurrence_key);

-- name: lock_first_deliveries
-- First statement of a group of first deliveries: the same verdict as start_deliveries, but it
-- only locks the live rows (the fence) and writes nothing. A start counted here could only be
-- seen if the group committed, and then the successes have left the wheel and a retry resets
-- the count; the deliveries that are handed back (below) are counted when they come back as
-- redeliveries, so counting them here too would spend two starts on one run. `starts` is what
-- this start makes it. `only_copy`: never started, and the first and only copy of this attempt
-- a committed timer batch published (wheel.dispatch_id): the one copy that may run before its
-- start is counted; every other live one is handed back.
-- One row per delivery, in the group's order: a group can hold two copies of one occurrence
-- (a rolled-back batch's and the next batch's), and only the first may run, judged by its own
-- dispatch id (_store/outcomes.py keeps the first row of each occurrence).
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[]) WITH ORDINALITY
        AS i(occurrence_key, attempt, dispatch_id, position)
), locked AS (
    -- Key order, as every writer of many wheel rows does: no deadlocks. FOR UPDATE re-reads a
    -- row a timer was still dispatching once its commit lets go, so these are committed values.
    SELECT w.occurrence_key, w.starts, w.dispatches, w.dispatch_id FROM chronoq.wheel w JOIN input USING (occurrence_key)
    WHERE w.attempt = input.attempt AND w.occurrence_key = ANY($1::text[])
    ORDER BY w.occurrence_key
    FOR UPDATE OF w
)
SELECT input.occurrence_key,
       -- Subqueries, not joins: one primary-key lookup per delivery. As joins, with statistics
       -- that had not seen the results table grow (autovacuum off), the planner scanned all of
       -- it for every group.
       (SELECT r.state FROM chronoq.results r WHERE r.occurrence_key = input.occurrence_key) AS terminal_state,
       (SELECT w.attempt FROM chronoq.wheel w WHERE w.occurrence_key = input.occurrence_key) AS live_attempt,
       locked.starts + 1 AS starts,
       coalesce(locked.starts = 0 AND locked.dispatches = 1 AND locked.dispatch_id = input.dispatch_id, false)
           AS only_copy,
       clock_timestamp() AS db_now  -- after any wait for the locks: when the handlers start
FROM input
LEFT JOIN locked USING (occurrence_key)
ORDER BY input.position;

-- name: lock_live
-- First statement of a group's transaction: lock the live occurrences about to run, in key
-- order (so that two groups never deadlock), and read the database clock the group started at.
-- Holding these locks is the fence: no other delivery, cancel or timer can end them meanwhile.
-- One row, whether anything was locked or not: the clock is read after the locks either way.
SELECT coalesce(array_agg(occurrence_key), '{}') AS locked, clock_timestamp() AS db_now FROM (
    SELECT w.occurrence_key FROM chronoq.wheel w
    JOIN unnest($1::text[], $2::int[]) AS i(occurrence_key, attempt)
      ON w.occurrence_key = i.occurrence_key AND w.attempt = i.attempt
    WHERE w.occurrence_key = ANY($1::text[])
    ORDER BY w.occurrence_key
    FOR UPDATE OF w
) AS live;

-- name: record_successes
-- The group's successes, in its transaction, with the handlers' own writes: remove each
-- occurrence from the wheel and record its result. The rest of the transaction is the commit.
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::jsonb[], $4::timestamptz[])
        AS i(occurrence_key, attempt, result, started_at)
), gone AS (
    DELETE FROM chronoq.wheel w USING input
    WHERE w.occurrence_key = input.occurrence_key AND w.attempt = input.attempt AND w.occurrence_key = ANY($1::text[])
    RETURNING w.occurrence_key, w.job_id, w.queue, w.fire_at, w.attempt, w.run_at
), recorded AS (
    INSERT INTO chronoq.results (occurrence_key, job_id, queue, fire_at, state, attempt, result, run_at, started_at, worker)
    SELECT gone.occurrence_key, gone.job_id, gone.queue, gone.fire_at, 'succeeded', gone.attempt, input.result,
           gone.run_at, input.started_at, $5
    FROM gone JOIN input USING (occurrence_key)
    ON CONFLICT (occurrence_key) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM recorded;

-- name: unstart_deliveries
-- A redelivery's start that ended in an error of chronoq's own, with the worker alive: not a
-- crash and not the job's fault, so it does not count toward the delivery limit.
UPDATE chronoq.wheel w SET starts = w.starts - 1
FROM unnest($1::text[], $2::int[]) AS i(occurrence_key, attempt)
WHERE w.occurrence_key = i.occurrence_key AND w.attempt = i.attempt AND w.starts > 0
  AND w.occurrence_key = ANY($1::text[]);
