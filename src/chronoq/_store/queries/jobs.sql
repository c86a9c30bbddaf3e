-- name: enqueue
-- The payload arrives as JSON text, so the statement works on any asyncpg connection, including
-- a caller's own that has no jsonb codec set up.
-- One statement: the job row and its first occurrence commit together or not at all.
-- With a key, ON CONFLICT DO NOTHING waits for a concurrent enqueue of the same key, then the
-- second branch returns the existing job (in the statement's snapshot it may still be
-- invisible; the caller retries once in that case).
WITH new_job AS (
    INSERT INTO chronoq.jobs (queue, kind, key, payload, max_attempts, backoff_base_ms, backoff_cap_ms, jitter, timeout_ms,
                              misfire, misfire_grace_ms, trace)
    VALUES ($1, 'once', $2, $3::text::jsonb, $4, $5, $6, $7, $8, $11, $12, $13::text::jsonb)
    ON CONFLICT (queue, key) WHERE key IS NOT NULL DO NOTHING
    RETURNING id
), first_occurrence AS (
    INSERT INTO chronoq.wheel (occurrence_key, job_id, queue, fire_at, run_at, due_at, head)
    SELECT chronoq.occurrence_key(new_job.id, t.at), new_job.id, $1, t.at, t.at, t.at, true
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
                         $13::bigint[])
        AS i(id, queue, key, payload, max_attempts, backoff_base_ms, backoff_cap_ms, jitter, timeout_ms, run_at, delay,
             misfire, misfire_grace_ms)
), new_jobs AS (
    INSERT INTO chronoq.jobs (id, queue, kind, key, payload, max_attempts, backoff_base_ms, backoff_cap_ms, jitter, timeout_ms,
                              misfire, misfire_grace_ms, trace)
    SELECT id, queue, 'once', key, payload::jsonb, max_attempts, backoff_base_ms, backoff_cap_ms, jitter, timeout_ms,
           misfire, misfire_grace_ms, $14::text::jsonb
    -- Keyed rows in key order: two bulk enqueues sharing keys then lock them in the same order
    -- and cannot deadlock. (Ids were allocated beforehand, so the order changes none of them.)
    FROM input ORDER BY queue, key, id
    ON CONFLICT (queue, key) WHERE key IS NOT NULL DO NOTHING
    RETURNING id
), occurrences AS (
    INSERT INTO chronoq.wheel (occurrence_key, job_id, queue, fire_at, run_at, due_at, head)
    SELECT chronoq.occurrence_key(id, at), id, queue, at, at, at, true
    FROM (SELECT input.id, input.queue, coalesce(input.run_at, now() + chronoq.elapsed(input.delay)) AS at
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
