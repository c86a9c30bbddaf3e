-- name: dead_counts
SELECT queue, count(*) AS dead, max(finished_at) AS last_dead
FROM chronoq.results WHERE state = 'dead' AND ($1::text IS NULL OR queue = $1)
GROUP BY queue ORDER BY queue;

-- name: replay_dead
-- Put dead occurrences back into the wheel as a fresh attempt, due now, and record the replay
-- (with the reason and error it died of) in the attempts history. Jobs cancelled since are left.
WITH chosen AS (
    SELECT r.occurrence_key FROM chronoq.results r JOIN chronoq.jobs j ON j.id = r.job_id
    WHERE r.state = 'dead' AND r.queue = $1 AND ($2::text IS NULL OR r.occurrence_key = $2) AND j.state <> 'cancelled'
    ORDER BY r.finished_at
    LIMIT $3
    FOR UPDATE OF r
), gone AS (
    DELETE FROM chronoq.results r USING chosen WHERE r.occurrence_key = chosen.occurrence_key
    RETURNING r.*
), logged AS (
    INSERT INTO chronoq.attempts (occurrence_key, job_id, queue, attempt, outcome, error, started_at)
    SELECT occurrence_key, job_id, queue, attempt, 'replayed', concat_ws(': ', reason, error), now() FROM gone
)
INSERT INTO chronoq.wheel (occurrence_key, job_id, queue, fire_at, run_at, due_at, attempt)
SELECT occurrence_key, job_id, queue, fire_at, now(), now(), attempt + 1 FROM gone
RETURNING occurrence_key;
