-- A handler's writes run inside a savepoint of its group's transaction, so that one failing
-- handler undoes only its own writes.

-- name: open_job_savepoint
-- Opening the savepoint also plans the handler's statements as Postgres does by default, for
-- this savepoint only: a prepared statement keeps a generic plan after five runs when it is no
-- dearer, and any scan may serve. The worker's session plans chronoq's own statements once and
-- never scans a table whole (_store/connection.py, PLANNER_SETTINGS); a handler's statements,
-- and the foreign-key checks and trigger statements they cause, need the planner's own choice.
SAVEPOINT chronoq_job;
SET LOCAL plan_cache_mode = auto; SET LOCAL enable_seqscan = on; SET LOCAL enable_bitmapscan = on;

-- name: keep_job_savepoint
-- Keeps the handler's writes, and sets the session's planning back. Fails if the handler
-- swallowed a database error and left the transaction aborted.
RELEASE SAVEPOINT chronoq_job;
SET LOCAL plan_cache_mode TO DEFAULT; SET LOCAL enable_seqscan TO DEFAULT; SET LOCAL enable_bitmapscan TO DEFAULT;

-- name: undo_job_savepoint
-- Undoes the handler's writes (and the planning settings with them).
ROLLBACK TO SAVEPOINT chronoq_job; RELEASE SAVEPOINT chronoq_job;
