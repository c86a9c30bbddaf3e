-- name: job
SELECT id, queue, kind, state, key, payload, max_attempts, timeout_ms, created_at,
       cron, timezone, misfire, overlap, cron_jitter_ms
FROM chronoq.jobs WHERE id = $1;

-- name: job_live_occurrences
-- control: why a due occurrence waits (its queue is paused, or at its limits), if it does.
SELECT occurrence_key, fire_at, run_at, due_at, attempt, dispatches, dispatched_at, last_error,
       (due_at <= now()) AS is_due, occurrence_key = chronoq.manual_key(job_id, fire_at) AS manual,
       CASE WHEN controlled AND due_at <= now() THEN
           (SELECT CASE WHEN c.paused THEN 'queue paused' ELSE 'queue at its limits' END
            FROM chronoq.queue_controls c WHERE c.queue = w.queue)
       END AS control
FROM chronoq.wheel w WHERE job_id = $1 ORDER BY fire_at;

-- name: job_results
SELECT occurrence_key, fire_at, state, attempt, reason, error, result, run_at, started_at, finished_at, worker,
       occurrence_key = chronoq.manual_key(job_id, fire_at) AS manual
FROM chronoq.results WHERE job_id = $1 ORDER BY fire_at;

-- name: job_attempts
SELECT occurrence_key, attempt, outcome, error, started_at, finished_at, worker
FROM chronoq.attempts WHERE job_id = $1 ORDER BY occurrence_key, attempt;

-- name: queue_status
-- Per queue: the wheel's live rows by phase, outcomes and failed attempts over the window,
-- the start lateness (handler start minus the attempt's due time) of successes, and the
-- queue's controls: paused, limits, and the due rows they hold back (deferred).
WITH live AS (
    SELECT queue,
           count(*) FILTER (WHERE dispatched_at IS NULL AND due_at > now()) AS scheduled,
           count(*) FILTER (WHERE due_at <= now()) AS due,
           count(*) FILTER (WHERE dispatched_at IS NOT NULL AND due_at > now()) AS in_flight,
           count(*) FILTER (WHERE last_error IS NOT NULL) AS held,
           count(*) FILTER (WHERE controlled AND due_at <= now()) AS deferred
    FROM chronoq.wheel GROUP BY queue
), done AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE state = 'dead') AS dead,
           count(*) FILTER (WHERE state = 'skipped') AS skipped,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - run_at))
               FILTER (WHERE state = 'succeeded') AS lateness_p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - run_at))
               FILTER (WHERE state = 'succeeded') AS lateness_p99
    FROM chronoq.results WHERE finished_at > now() - chronoq.elapsed($1::interval) GROUP BY queue
), failed AS (
    SELECT queue, count(*) AS failed
    FROM chronoq.attempts WHERE finished_at > now() - chronoq.elapsed($1::interval) GROUP BY queue
)
SELECT queue,
       coalesce(live.scheduled, 0) AS scheduled, coalesce(live.due, 0) AS due,
       coalesce(live.in_flight, 0) AS in_flight, coalesce(live.held, 0) AS held,
       coalesce(done.succeeded, 0) AS succeeded, coalesce(failed.failed, 0) AS failed,
       coalesce(done.dead, 0) AS dead, coalesce(done.skipped, 0) AS skipped,
       coalesce(done.cancelled, 0) AS cancelled,
       done.lateness_p50, done.lateness_p99,
       coalesce(live.deferred, 0) AS deferred, coalesce(c.paused, false) AS paused, c.max_running,
       c.rate_count, (c.rate_period_ms / 1000.0)::float8 AS rate_period_s
FROM live FULL JOIN done USING (queue) FULL JOIN failed USING (queue)
    FULL JOIN chronoq.queue_controls c USING (queue)
ORDER BY queue;

-- name: outcome_summary
-- Outcomes of a set of jobs (used by `chronoq demo` and the benchmarks): how many ended in each
-- state, how many succeeded only after a retry, and the start lateness of first
-- attempts (handler start minus due time), in seconds.
WITH chosen AS (SELECT unnest($1::bigint[]) AS job_id),
finished AS (SELECT r.* FROM chronoq.results r JOIN chosen USING (job_id))
SELECT
    (SELECT count(*) FROM finished WHERE state = 'succeeded') AS succeeded,
    (SELECT count(*) FROM finished WHERE state = 'dead') AS dead,
    (SELECT count(*) FROM finished WHERE state = 'cancelled') AS cancelled,
    (SELECT count(*) FROM finished WHERE state = 'skipped') AS skipped,
    (SELECT count(*) FROM finished WHERE state = 'succeeded' AND attempt > 1) AS retried,
    (SELECT count(*) FROM chronoq.wheel w JOIN chosen USING (job_id)) AS pending,
    (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - run_at))
       FROM finished WHERE state = 'succeeded' AND attempt = 1) AS lateness_p50,
    (SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - run_at))
       FROM finished WHERE state = 'succeeded' AND attempt = 1) AS lateness_p99,
    (SELECT max(extract(epoch FROM started_at - run_at))
       FROM finished WHERE state = 'succeeded' AND attempt = 1) AS lateness_max;

-- name: run_timing
-- Timing of the successes of jobs in an id range (a benchmark run): how many, from the first
-- due time to the last commit, and start lateness (handler start minus due time) percentiles.
SELECT count(*) AS n,
       min(run_at) AS first_due,
       max(finished_at) AS last_done,
       max(started_at) AS last_start,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - run_at)) AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - run_at)) AS p99,
       max(extract(epoch FROM started_at - run_at)) AS max
FROM chronoq.results
WHERE job_id BETWEEN $1 AND $2 AND state = 'succeeded';

-- name: pending_in_range
SELECT count(*) FROM chronoq.wheel WHERE job_id BETWEEN $1 AND $2;

-- name: delete_jobs_of_queue
DELETE FROM chronoq.jobs WHERE queue = $1;

-- name: last_outcomes
-- The outcome of the latest finished occurrence of each of the jobs $1 (a one-shot job stays
-- `active` after it ran: this is what happened to it). One index probe per job (results_job_fire).
SELECT chosen.job_id, last.state, last.reason, last.finished_at
FROM unnest($1::bigint[]) AS chosen (job_id)
CROSS JOIN LATERAL (
    SELECT state, reason, finished_at FROM chronoq.results r
    WHERE r.job_id = chosen.job_id ORDER BY r.fire_at DESC LIMIT 1
) AS last;
