-- How the handlers of a group write inside its transaction (consumer/writes.py): optimistically,
-- straight into it, or each in a savepoint of its own, so that one failing handler undoes only
-- its own writes.

-- name: plan_for_handlers
-- Handlers' statements are planned as Postgres does by default, until chronoq's next own
-- statement: a prepared statement keeps a generic plan after five runs when it is no dearer,
-- and any scan may serve. The worker's session plans chronoq's own statements once and never
-- scans a table whole (_store/connection.py, PLANNER_SETTINGS); a handler's statements, and the
-- foreign-key checks and trigger statements they cause, need the planner's own choice. JIT
-- stays off in this session: a handler's statements in a job's transaction are short.
-- LOCAL: a rollback of the transaction undoes it too.
SET LOCAL plan_cache_mode = auto; SET LOCAL enable_seqscan = on; SET LOCAL enable_bitmapscan = on;

-- name: plan_for_chronoq
-- Back to the session's settings, before chronoq's own statements.
SET LOCAL plan_cache_mode TO DEFAULT; SET LOCAL enable_seqscan TO DEFAULT; SET LOCAL enable_bitmapscan TO DEFAULT;

-- name: open_job_savepoint
SAVEPOINT chronoq_job;

-- name: keep_job_savepoint
-- Keeps the handler's writes. Fails if the handler swallowed a database error and left the
-- transaction aborted.
RELEASE SAVEPOINT chronoq_job;

-- name: undo_job_savepoint
ROLLBACK TO SAVEPOINT chronoq_job; RELEASE SAVEPOINT chronoq_job;

-- name: transaction_usable
-- Fails if the transaction is aborted: a handler swallowed a database error it did not undo
-- with a savepoint (`ctx.db.transaction()`) of its own.
SELECT 1;
