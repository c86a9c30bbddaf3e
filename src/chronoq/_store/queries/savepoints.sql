-- A handler's writes run inside a savepoint of its group's transaction, so that one failing
-- handler undoes only its own writes.

-- name: open_job_savepoint
-- Opening the savepoint also plans the handler's statements as Postgres does by default (`auto`:
-- a prepared statement keeps a generic plan after five runs), for this savepoint only. The
-- worker's session asks for custom plans for chronoq's own statements (_store/connection.py);
-- under that, every statement of a handler, and every foreign-key check and trigger statement
-- it causes, would be planned again on every run.
SAVEPOINT chronoq_job; SET LOCAL plan_cache_mode = auto;

-- name: keep_job_savepoint
-- Keeps the handler's writes, and sets the session's planning back. Fails if the handler
-- swallowed a database error and left the transaction aborted.
RELEASE SAVEPOINT chronoq_job; SET LOCAL plan_cache_mode TO DEFAULT;

-- name: undo_job_savepoint
-- Undoes the handler's writes (and the planning setting with them).
ROLLBACK TO SAVEPOINT chronoq_job; RELEASE SAVEPOINT chronoq_job;
