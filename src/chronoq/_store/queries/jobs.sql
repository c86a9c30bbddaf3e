-- name: enqueue
-- The payload arrives as JSON text, so the statement works on any asyncpg connection, including
-- a caller's own that has no jsonb codec set up.
-- One statement: the job row and its first occurrence commit together or not at all.
-- With a key, ON CONFLICT DO NOTHING waits for a concurrent enqueue of the same key, then the
-- second branch returns the existing job (in the statement's snapshot it may still be
-- invisible; the caller retries once in that case). $13 is a debounced job's max_wait (the
-- latest its first run may be pushed to, wheel.due_by), NULL for any other job; $14 its overlap
-- ('skip' for a job enqueued to be replaced: its runs take turns, see replace_occurrence).
WITH new_job AS (
    INSERT INTO chronoq.jobs (queue, kind, key, payload, max_attempts, backoff_base_ms, backoff_cap_ms, jitter, timeout_ms,
                              misfire, misfire_grace_ms, overlap, trace)
    VALUES ($1, 'once', $2, $3::text::jsonb, $4, $5, $6, $7, $8, $11, $12, $14, $15::text::jsonb)
    ON CONFLICT (queue, key) WHERE key IS NOT NULL DO NOTHING
    RETURNING id
), first_occurrence AS (
    INSERT INTO chronoq.wheel (occurrence_key, job_id, queue, fire_at, run_at, due_at, head, due_by)
    SELECT chronoq.occurrence_key(new_job.id, t.at), new_job.id, $1, t.at, t.at, t.at, true,
           now() + chronoq.elapsed($13::interval)
    FROM new_job, (SELECT coalesce($9::timestamptz, now() + chronoq.elapsed($10::interval)) AS at) AS t
    RETURNING job_id
)
SELECT job_id AS id, true AS created FROM first_occurrence
UNION ALL
SELECT id, false AS created FROM chronoq.jobs
WHERE queue = $1 AND key = $2 AND NOT EXISTS (SELECT FROM new_job);

-- name: allocate_job_ids
-- One array, not a row per id: a bulk enqueue of 100k jobs reads 100k ids.
SELECT array(SELECT nextval('chronoq.jobs_id_seq') FROM generate_series(1, $1));

-- name: now_plus
-- Due times of delayed jobs, by the database's clock and its interval arithmetic, exactly as
-- the single enqueue computes them (now() is the transaction's start).
SELECT array(SELECT now() + chronoq.elapsed(d) FROM unnest($1::interval[]) WITH ORDINALITY AS u(d, n) ORDER BY n);

-- name: enqueue_keyed
-- The jobs of a bulk enqueue that have a key (the keyless ones are COPYed), with ids allocated
-- beforehand (allocate_job_ids), so every input row knows its id without relying on insert
-- order. Rows whose (queue, key) already exists are not inserted; the caller looks their ids up
-- with existing_ids.
WITH input AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[], $6::bigint[],
                         $7::bigint[], $8::real[], $9::bigint[], $10::timestamptz[], $11::interval[], $12::text[],
                         $13::bigint[], $14::interval[], $15::text[])
        AS i(id, queue, key, payload, max_attempts, backoff_base_ms, backoff_cap_ms, jitter, timeout_ms, run_at, delay,
             misfire, misfire_grace_ms, max_wait, overlap)
), new_jobs AS (
    INSERT INTO chronoq.jobs (id, queue, kind, key, payload, max_attempts, backoff_base_ms, backoff_cap_ms, jitter, timeout_ms,
                              misfire, misfire_grace_ms, overlap, trace)
    SELECT id, queue, 'once', key, payload::jsonb, max_attempts, backoff_base_ms, backoff_cap_ms, jitter, timeout_ms,
           misfire, misfire_grace_ms, overlap, $16::text::jsonb
    -- Keyed rows in key order: two bulk enqueues sharing keys then lock them in the same order
    -- and cannot deadlock. (Ids were allocated beforehand, so the order changes none of them.)
    FROM input ORDER BY queue, key, id
    ON CONFLICT (queue, key) WHERE key IS NOT NULL DO NOTHING
    RETURNING id
), occurrences AS (
    INSERT INTO chronoq.wheel (occurrence_key, job_id, queue, fire_at, run_at, due_at, head, due_by)
    SELECT chronoq.occurrence_key(id, at), id, queue, at, at, at, true, due_by
    FROM (SELECT input.id, input.queue, coalesce(input.run_at, now() + chronoq.elapsed(input.delay)) AS at,
                 now() + chronoq.elapsed(input.max_wait) AS due_by
          FROM input JOIN new_jobs USING (id)) AS m
    RETURNING job_id
)
SELECT id FROM new_jobs;

-- name: existing_ids
-- One lookup per key through the (queue, key) index, as a subquery per input row: a join here
-- gets a hash join over all of `jobs` once Postgres settles on a generic plan made while the
-- table was empty (the producer keeps Postgres's default plan cache mode). OFFSET 0 keeps the
-- lookup from being evaluated twice, once for the filter and once for the output.
SELECT ord, id FROM (
    SELECT i.ord::int AS ord, (SELECT j.id FROM chronoq.jobs j WHERE j.queue = i.queue AND j.key = i.key) AS id
    FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS i(queue, key, ord)
    OFFSET 0
) AS looked_up
WHERE id IS NOT NULL;

-- name: lock_replaced_job
-- An enqueue that replaces a keyed job locks its row first: the enqueues of one key take turns,
-- each deciding on what the one before committed. FOR NO KEY UPDATE, the lock its update of the
-- job takes anyway: a worker recording an outcome takes FOR KEY SHARE on the row (the results
-- foreign key), which this lock lets through, so a replace never waits for a running handler.
SELECT kind, state FROM chronoq.jobs WHERE id = $1 FOR NO KEY UPDATE;

-- name: replace_occurrence
-- The job (locked: lock_replaced_job) takes the enqueue's payload and options, and its pending
-- occurrence (never published by a committed dispatch: attempt 1, dispatches 0) moves to the
-- requested time, under the occurrence key of that time. If a timer is publishing that
-- occurrence, the update waits for its batch to end and reads the row again: published, it is
-- no longer pending. Without a pending occurrence (the last one was dispatched, is running or
-- retrying, or has ended) a new occurrence is added: the trailing run, with the new payload.
-- Either way the job has one pending occurrence, so any number of replaces while a run is in
-- flight add one trailing run, which carries the last payload. The job's overlap becomes 'skip':
-- a timer claiming the trailing run while an earlier one is live leaves it waiting (timer/ticks.py).
-- Debounced ($14, max_wait, not NULL): the occurrence is due at now() + debounce ($11), but
-- never after its due_by, fixed by the enqueue that created it. An occurrence's nominal time is
-- always later than every other occurrence's of the job, live or ended: each occurrence keeps
-- a key of its own (a time asked for in the past moves to just after the latest one).
WITH job AS (
    UPDATE chronoq.jobs
    SET payload = $4::text::jsonb, max_attempts = $5, backoff_base_ms = $6, backoff_cap_ms = $7, jitter = $8,
        timeout_ms = $9, misfire = $12, misfire_grace_ms = $13, overlap = $15, trace = $16::text::jsonb,
        updated_at = now()
    WHERE id = $1 AND queue = $2 AND key = $3
    RETURNING id, state
), asked AS (
    SELECT coalesce($10::timestamptz, now() + chronoq.elapsed($11::interval)) AS at,
           now() + chronoq.elapsed($14::interval) AS due_by,
           (SELECT max(fire_at) FROM chronoq.results WHERE job_id = $1) AS latest_ended
), pending AS (
    SELECT w.occurrence_key,
           least(asked.at, CASE WHEN $14::interval IS NOT NULL THEN coalesce(w.due_by, asked.due_by) END) AS at,
           CASE WHEN $14::interval IS NOT NULL THEN coalesce(w.due_by, asked.due_by) END AS due_by,
           greatest(asked.latest_ended, (SELECT max(o.fire_at) FROM chronoq.wheel o
                                         WHERE o.job_id = $1 AND o.occurrence_key <> w.occurrence_key)) AS latest
    FROM chronoq.wheel w, asked
    WHERE w.job_id = $1 AND w.attempt = 1 AND w.dispatches = 0
    ORDER BY w.fire_at DESC
    LIMIT 1
), moved AS (
    UPDATE chronoq.wheel w
    SET occurrence_key = chronoq.occurrence_key(w.job_id, t.at), fire_at = t.at, run_at = t.at,
        due_at = CASE WHEN job.state = 'paused' THEN 'infinity' ELSE t.at END, head = true, due_by = p.due_by,
        last_error = NULL, starts = 0
    FROM pending p, job,
         LATERAL (SELECT CASE WHEN p.at <= p.latest THEN p.latest + interval '1 microsecond' ELSE p.at END AS at) AS t
    WHERE w.occurrence_key = p.occurrence_key AND w.job_id = $1 AND w.attempt = 1 AND w.dispatches = 0
    RETURNING w.fire_at
), added AS (
    INSERT INTO chronoq.wheel (occurrence_key, job_id, queue, fire_at, run_at, due_at, head, due_by)
    SELECT chronoq.occurrence_key($1, t.at), $1, $2, t.at, t.at,
           CASE WHEN job.state = 'paused' THEN 'infinity' ELSE t.at END, true, asked.due_by
    FROM job, asked,
         LATERAL (SELECT greatest(asked.latest_ended, (SELECT max(fire_at) FROM chronoq.wheel WHERE job_id = $1))
                      AS latest) AS l,
         LATERAL (SELECT CASE WHEN asked.at <= l.latest THEN l.latest + interval '1 microsecond' ELSE asked.at END
                      AS at) AS t
    WHERE NOT EXISTS (SELECT FROM moved)
    RETURNING fire_at
)
SELECT fire_at, true AS moved FROM moved
UNION ALL
SELECT fire_at, false AS moved FROM added;

-- name: cancel
-- Cancels the job and records every live occurrence as cancelled. A worker already running one
-- of them loses the race for its result row and rolls back.
WITH job AS (
    UPDATE chronoq.jobs SET state = 'cancelled', updated_at = now()
    WHERE id = $1 AND state <> 'cancelled'
    RETURNING id
), locked AS (
    -- In key order, like every other writer of many wheel rows: no deadlock with worker groups.
    SELECT w.occurrence_key FROM chronoq.wheel w JOIN job ON w.job_id = job.id
    ORDER BY w.occurrence_key
    FOR UPDATE OF w
), gone AS (
    DELETE FROM chronoq.wheel w USING locked WHERE w.occurrence_key = locked.occurrence_key
    RETURNING w.*
), recorded AS (
    INSERT INTO chronoq.results (occurrence_key, job_id, queue, fire_at, state, attempt, reason, run_at)
    SELECT occurrence_key, job_id, queue, fire_at, 'cancelled', attempt, 'cancelled by request', run_at FROM gone
    ON CONFLICT (occurrence_key) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM job) AS cancelled, (SELECT count(*) FROM recorded) AS occurrences;

-- name: job_exists
SELECT EXISTS (SELECT FROM chronoq.jobs WHERE id = $1);
