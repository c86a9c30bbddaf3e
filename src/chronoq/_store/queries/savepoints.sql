-- How the handlers of a group write inside its transaction (consumer/writes.py): optimistically,
-- straight into it, or each in a savepoint of its own, so that one failing handler undoes only
-- its own writes.

-- name: plan_for_handlers
-- Handlers' statements are planned as Postgres does by default (`auto`: a prepared statement
-- keeps a generic plan after five runs), until chronoq's next own statement. The worker's
-- session asks for custom plans for chronoq's own statements (_store/connection.py); under that,
-- every statement of a handler, and every foreign-key check and trigger statement it causes,
-- would be planned again on every run. LOCAL: a rollback of the transaction undoes it too.
SET LOCAL plan_cache_mode = auto;

-- name: plan_for_chronoq
-- Back to the session's setting, before chronoq's own statements.
SET LOCAL plan_cache_mode TO DEFAULT;

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
