-- name: claim_due
-- Claim up to $1 due free occurrences by the database's clock. The LIMIT sits inside the CTE so the
-- planner cannot lock more rows than it returns; SKIP LOCKED lets any number of timers claim
-- disjoint batches without a leader. Rows stay locked until the caller's transaction ends.
-- The payload comes back as text: the timer splices it into the message without decoding it.
-- For a head row (a job's next, undecided tick) it also returns what judging it needs:
-- the job's schedule and policies, and whether an earlier occurrence is still live.
-- Free rows are read through wheel_free; a row of a paused or limited queue comes back with its
-- control ('paused' or 'limited'): the timer marks it controlled (mark_controlled) instead of
-- publishing it, and from then on only claim_limited dispatches it.
WITH due AS (
    SELECT occurrence_key, job_id, queue, fire_at, run_at, attempt, dispatches, head, backfilled,
           dispatched_at, dispatch_id
    FROM chronoq.wheel
    WHERE due_at <= now() AND NOT controlled
    ORDER BY due_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), controlled AS (
    -- FOR KEY SHARE: a control row cannot be removed (resume_queue) while a batch that found it
    -- marks rows controlled, so the removal frees them all; it does not wait for a batch that
    -- is dispatching the queue (lock_controlled_queues).
    SELECT c.queue, c.paused FROM chronoq.queue_controls c WHERE c.queue IN (SELECT queue FROM due) FOR KEY SHARE
), claimed AS (
    SELECT due.*, (SELECT CASE WHEN c.paused THEN 'paused' ELSE 'limited' END FROM controlled c
                   WHERE c.queue = due.queue) AS control
    FROM due
)
-- The columns of each row are claim_limited's too (tests/test_flow_control.py holds them equal).
SELECT claimed.*, j.payload::text AS payload, j.max_attempts, j.timeout_ms, j.trace::text AS trace,
       j.kind, j.state AS job_state, j.cron, j.timezone, j.misfire, j.misfire_grace_ms,
       j.max_backfill, j.overlap, j.cron_jitter_ms, now() AS db_now,
       -- A scalar subquery, not EXISTS: the planner may turn an EXISTS into one hash of every
       -- non-head row of the wheel, built by a sequential scan for each claim (it did, with
       -- 200,000 rows in the wheel); this is one wheel_job lookup per due head.
       CASE WHEN claimed.head AND j.overlap = 'skip' THEN
           coalesce((SELECT true FROM chronoq.wheel o WHERE o.job_id = claimed.job_id AND NOT o.head LIMIT 1), false)
       END AS previous_running,
       -- What the timer needs to sleep after this batch without asking next_due (the same in
       -- every row; each computed once per statement): the database's clock, seconds until the
       -- first free row due later (paused jobs' rows, parked at 'infinity', are never due), how
       -- many free rows are due now, this claim's included, counted up to one more than the
       -- limit: more than it claimed means rows it did not get (locked by another timer's
       -- batch, or beyond the limit), and when a limited queue may have work.
       extract(epoch FROM now())::float8 AS db_epoch,
       (SELECT extract(epoch FROM l.due_at - now())::float8 FROM chronoq.wheel l
        WHERE l.due_at > now() AND l.due_at < 'infinity' AND NOT l.controlled ORDER BY l.due_at LIMIT 1) AS next_due_in,
       (SELECT count(*) FROM (SELECT FROM chronoq.wheel n WHERE n.due_at <= now() AND NOT n.controlled LIMIT $1 + 1) AS n)
           AS due_now,
       (SELECT CASE WHEN EXISTS (SELECT FROM chronoq.queue_controls) THEN chronoq.controls_due_in() END)
           AS controls_due_in
FROM claimed
-- One jobs_pkey lookup per claimed row, whatever the planner believes about how many are due:
-- with statistics older than the wheel's contents (autovacuum off, or not yet run) it expected
-- hundreds of due rows where there were three, and hashed the whole jobs table for every claim,
-- a third of Postgres's CPU at 200 jobs/s. OFFSET 0 keeps
-- the planner from merging this back into a join it may plan that way.
-- A LEFT join: a row whose job is gone (the wheel has no foreign key; a job deleted by
-- hand while its next tick was being written) comes back with j.kind NULL, and the timer drops
-- it, instead of claiming it again in every batch.
LEFT JOIN LATERAL (SELECT * FROM chronoq.jobs WHERE id = claimed.job_id OFFSET 0) AS j ON true;

-- name: claim_limited
-- Claim the due controlled rows of the limited queues in $1, whose control rows this
-- transaction has locked (lock_controlled_queues, an earlier statement, so that this one sees
-- every dispatch committed before the lock): as many as each queue's limits leave room for, at
-- most $2 per queue, earliest first. The dispatches of a rate-limited queue are recorded for its
-- window, and those that have left it are deleted. Each row comes with claim_due's columns; the
-- look at the wheel is only when a limited queue may have work again.
WITH limits AS (
    SELECT c.queue, c.rate_count, c.rate_period_ms * interval '1 millisecond' AS period,
           least($2,
                 c.max_running - (SELECT count(*) FROM chronoq.wheel r
                                  WHERE r.controlled AND r.queue = c.queue AND r.due_at > now() AND r.dispatched_at IS NOT NULL),
                 c.rate_count - (SELECT count(*) FROM chronoq.queue_dispatches d
                                 WHERE d.queue = c.queue AND d.at > now() - c.rate_period_ms * interval '1 millisecond'))
               AS room
    FROM chronoq.queue_controls c
    WHERE c.queue = ANY($1::text[]) AND NOT c.paused
), claimed AS (
    SELECT h.*, NULL::text AS control FROM limits CROSS JOIN LATERAL (
        SELECT occurrence_key, job_id, queue, fire_at, run_at, attempt, dispatches, head, backfilled,
               dispatched_at, dispatch_id
        FROM chronoq.wheel
        WHERE controlled AND queue = limits.queue AND due_at <= now()
        ORDER BY due_at
        LIMIT greatest(limits.room, 0)
        FOR UPDATE SKIP LOCKED
    ) AS h
), counted AS (
    INSERT INTO chronoq.queue_dispatches (queue, at)
    SELECT claimed.queue, now() FROM claimed JOIN limits USING (queue) WHERE limits.rate_count IS NOT NULL
), forgotten AS (
    -- Dispatches that have left their queue's window.
    DELETE FROM chronoq.queue_dispatches d
    WHERE d.queue = ANY($1::text[])
      AND d.at <= now() - (SELECT limits.period FROM limits WHERE limits.queue = d.queue)
)
SELECT claimed.*, j.payload::text AS payload, j.max_attempts, j.timeout_ms, j.trace::text AS trace,
       j.kind, j.state AS job_state, j.cron, j.timezone, j.misfire, j.misfire_grace_ms,
       j.max_backfill, j.overlap, j.cron_jitter_ms, now() AS db_now,
       CASE WHEN claimed.head AND j.overlap = 'skip' THEN
           coalesce((SELECT true FROM chronoq.wheel o WHERE o.job_id = claimed.job_id AND NOT o.head LIMIT 1), false)
       END AS previous_running,
       extract(epoch FROM now())::float8 AS db_epoch,
       (SELECT chronoq.controls_due_in()) AS controls_due_in
FROM claimed
LEFT JOIN LATERAL (SELECT * FROM chronoq.jobs WHERE id = claimed.job_id OFFSET 0) AS j ON true;

-- name: lock_controlled_queues
-- The limited queues with controlled rows due that no other timer's batch has locked, locked
-- for this transaction: its claim_limited dispatches their rows within their limits, and a
-- timer that finds a queue locked leaves it to the batch that has it. At most $1 (NULL: all).
SELECT c.queue FROM chronoq.queue_controls c
WHERE NOT c.paused
  AND EXISTS (SELECT FROM chronoq.wheel h WHERE h.controlled AND h.queue = c.queue AND h.due_at <= now())
ORDER BY c.queue
LIMIT $1
FOR NO KEY UPDATE OF c SKIP LOCKED;

-- name: mark_controlled
-- Rows of a paused or limited queue, met by the claim of free rows: from now on only a claim
-- that has locked their queue's control row dispatches them.
UPDATE chronoq.wheel SET controlled = true WHERE occurrence_key = ANY($1::text[]);

-- name: mark_dispatched
-- Push each row's due_at to its redelivery deadline: if no outcome removes the row by then, a
-- timer publishes the occurrence again. $3 is the batch's dispatch id, which its messages carry
-- (wheel.dispatch_id). The timer sends this while the broker's confirms are on their way, in the
-- batch's transaction: it commits after the confirms, and a refused row is put back first
-- (postpone_unpublished), so no other session ever sees a row marked that was not confirmed.
UPDATE chronoq.wheel w
SET due_at = now() + chronoq.elapsed(d.lease), dispatches = w.dispatches + 1, dispatched_at = now(), last_error = NULL,
    head = false, dispatch_id = $3
FROM unnest($1::text[], $2::interval[]) AS d(occurrence_key, lease)
WHERE w.occurrence_key = d.occurrence_key
  AND w.occurrence_key = ANY($1::text[]);  -- the index condition of a plan kept for every run

-- name: postpone_unpublished
-- The broker nacked or returned these: they stay due, after a short pause so an unroutable
-- queue cannot spin a timer, with the dispatch state the claim read ($2-$4) put back, as if
-- mark_dispatched had never touched them.
-- A head's tick has been judged all the same: it stays due as an ordinary occurrence.
UPDATE chronoq.wheel w
SET due_at = now() + chronoq.elapsed($5::interval), last_error = $6, head = false,
    dispatches = p.dispatches, dispatched_at = p.dispatched_at, dispatch_id = p.dispatch_id
FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::bigint[])
    AS p(occurrence_key, dispatches, dispatched_at, dispatch_id)
WHERE w.occurrence_key = p.occurrence_key AND w.occurrence_key = ANY($1::text[]);

-- name: hold_occurrence
-- A row whose one-row batch failed for a reason that is not an outage: due again after a pause,
-- the error kept for `jobs show`. Nothing else about it changes. Only while it is still due: if
-- another timer dispatched it meanwhile, its lease stands.
UPDATE chronoq.wheel SET due_at = now() + chronoq.elapsed($2::interval), last_error = $3
WHERE occurrence_key = $1 AND due_at <= now();

-- name: next_due
-- The database's clock now, and seconds until the earliest row is due (NULL: the wheel is
-- empty, or holds only the rows of paused jobs, parked at 'infinity', from which no interval can
-- be taken). The timer sleeps that long; the clock reading maps NOTIFY payloads to its own clock.
-- The earliest due_at is the first entry of the due_at index, asked for as such (ORDER BY, LIMIT
-- 1 and a condition the index serves), so that even a plan made for an empty wheel reads one
-- entry, not the whole index. The backlog (rows due, not yet claimed)
-- is for the metrics, counted only when $1 asks (at most once a second, timer/wakeups.py). The
-- CASE keeps the count's subplan from running otherwise. After a batch that claimed rows the
-- timer reads the same from the claim (claim_due) and asks this only when the claim got nothing,
-- left due rows to other timers, or the backlog is to be counted.
SELECT extract(epoch FROM now())::float8 AS db_now,
       (SELECT extract(epoch FROM due_at - now())::float8 FROM chronoq.wheel
        WHERE due_at < 'infinity' AND NOT controlled ORDER BY due_at LIMIT 1) AS due_in,
       CASE WHEN $1::boolean THEN (SELECT count(*) FROM chronoq.wheel WHERE due_at <= now() AND NOT controlled) END AS backlog,
       CASE WHEN EXISTS (SELECT FROM chronoq.queue_controls) THEN chronoq.controls_due_in() END AS controls_due_in;

-- name: record_unrun_ticks
-- The tick ledger: a nominal tick that will not run gets its terminal row — 'skipped' with the
-- policy's reason, or 'cancelled' for a tick of a job cancelled while it was being judged.
INSERT INTO chronoq.results (occurrence_key, job_id, queue, fire_at, state, attempt, reason, detail)
SELECT chronoq.occurrence_key(t.job_id, t.fire_at), t.job_id, t.queue, t.fire_at, t.state, 0, t.reason, t.detail
FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[])
    AS t(job_id, queue, fire_at, state, reason, detail)
ON CONFLICT (occurrence_key) DO NOTHING;

-- name: record_set_aside
-- Occurrences a timer set aside because they can never be dispatched: dead, with the reason
-- and the error that `jobs show` and `status` show.
INSERT INTO chronoq.results (occurrence_key, job_id, queue, fire_at, state, attempt, reason, error, run_at)
SELECT t.occurrence_key, t.job_id, t.queue, t.fire_at, 'dead', t.attempt, t.reason, t.error, t.run_at
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[], $5::int[], $6::text[], $7::text[],
            $8::timestamptz[])
    AS t(occurrence_key, job_id, queue, fire_at, attempt, reason, error, run_at)
ON CONFLICT (occurrence_key) DO NOTHING;

-- name: drop_occurrences
DELETE FROM chronoq.wheel WHERE occurrence_key = ANY($1::text[]);

-- name: add_occurrences
-- New wheel rows: a job's next head tick (due at its time, or parked at 'infinity' while the job
-- is paused), or missed ticks a policy decided to run now.
INSERT INTO chronoq.wheel (occurrence_key, job_id, queue, fire_at, run_at, due_at, head, backfilled)
SELECT chronoq.occurrence_key(o.job_id, o.fire_at), o.job_id, o.queue, o.fire_at, o.run_at, o.due_at, o.head, o.backfilled
FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[], $6::boolean[], $7::int[])
    AS o(job_id, queue, fire_at, run_at, due_at, head, backfilled)
ON CONFLICT DO NOTHING;

-- name: park_occurrences
-- A paused job's one-shot occurrence waits, undecided, until the job is resumed.
UPDATE chronoq.wheel SET due_at = 'infinity' WHERE occurrence_key = ANY($1::text[]);

-- name: defer_occurrences
-- Trailing runs of replaced one-shot jobs whose earlier run is still live: due again after a
-- tenth of how long they have been due, between $2 and $3, still undecided (head).
UPDATE chronoq.wheel
SET due_at = now() + least(greatest((now() - run_at) / 10, chronoq.elapsed($2::interval)), chronoq.elapsed($3::interval))
WHERE occurrence_key = ANY($1::text[]);

-- name: try_prune_lock
-- One pruner at a time across all timers; the others skip this round.
SELECT pg_try_advisory_xact_lock(7236784365301);

-- name: prune_results
-- Terminal rows (and skipped ticks) older than the retention period, oldest first, a batch at
-- a time through the finished_at index. Returns their jobs' ids, for prune_jobs.
WITH doomed AS (
    SELECT occurrence_key FROM chronoq.results
    WHERE finished_at < now() - chronoq.elapsed($1::interval)
    ORDER BY finished_at
    LIMIT $2
)
DELETE FROM chronoq.results r USING doomed WHERE r.occurrence_key = doomed.occurrence_key
RETURNING r.job_id;

-- name: prune_attempts
WITH doomed AS (
    SELECT id FROM chronoq.attempts
    WHERE finished_at < now() - chronoq.elapsed($1::interval)
    ORDER BY finished_at
    LIMIT $2
)
DELETE FROM chronoq.attempts a USING doomed WHERE a.id = doomed.id;

-- name: prune_jobs
-- The one-shot jobs among those whose results were just pruned ($1), once nothing of theirs is
-- left: no live occurrence (a replayed one), no other result. A one-shot job leaves the wheel
-- only with its result written, so this finds every finished one. Recurring
-- jobs stay until cancelled and deleted by their owner.
DELETE FROM chronoq.jobs j
WHERE j.id = ANY($1::bigint[]) AND j.kind = 'once'
  AND NOT EXISTS (SELECT FROM chronoq.wheel w WHERE w.job_id = j.id)
  AND NOT EXISTS (SELECT FROM chronoq.results r WHERE r.job_id = j.id);
