-- name: reserve_job_ids
-- A block of $1 consecutive job ids for a bulk preload (COPY with explicit ids): returns the
-- first. setval moves the sequence past the block in one statement instead of $1 nextval calls.
-- Another writer calling nextval between the two reads could take an id inside the block; the
-- benchmarks preload while no producer runs.
SELECT setval('chronoq.jobs_id_seq', nextval('chronoq.jobs_id_seq') + $1 - 1) - $1 + 1 AS first;

-- name: server_environment
-- What a benchmark's results record of the server it ran against.
SELECT current_setting('server_version') AS server_version,
       current_setting('synchronous_commit') AS synchronous_commit,
       current_setting('autovacuum') AS autovacuum;

-- name: bench_effects_setup
-- The table the benchmark's `db` handler writes one row per job into, emptied before a run.
CREATE SCHEMA IF NOT EXISTS chronoq_bench;
CREATE TABLE IF NOT EXISTS chronoq_bench.effects (occurrence_key text NOT NULL, at timestamptz NOT NULL DEFAULT now());
TRUNCATE chronoq_bench.effects;

-- name: bench_effect
INSERT INTO chronoq_bench.effects (occurrence_key) VALUES ($1);

-- name: delete_block_occurrences
-- Removing a preloaded block of ids of one queue: its occurrences first (a range of the
-- wheel_job index), so that the jobs' ON DELETE CASCADE then finds nothing left to do.
DELETE FROM chronoq.wheel WHERE job_id BETWEEN $1 AND $2 AND queue = $3;

-- name: delete_job_block
DELETE FROM chronoq.jobs WHERE id BETWEEN $1 AND $2 AND queue = $3;

-- name: queue_block
-- The id range and number of a queue's live occurrences: where a preload interrupted by a lost
-- connection resumes (a scan of the wheel: only after such a failure).
SELECT coalesce(min(job_id), 0) AS first, coalesce(max(job_id), -1) AS last, count(*) AS n
FROM chronoq.wheel WHERE queue = $1;

-- name: vacuum_analyze_wheel
-- After a bulk preload: a fresh visibility map and planner statistics, as autovacuum would
-- leave them on a server where it runs.
VACUUM ANALYZE chronoq.wheel, chronoq.jobs;

-- name: checkpoint
-- After a bulk preload, before anything is timed: the preload's WAL starts checkpoints that
-- write its pages back for minutes, through the measurements. Needs superuser or the
-- pg_checkpoint role.
CHECKPOINT;

-- name: wheel_stats
-- Live and dead tuples of the wheel (pg_stat_user_tables), its vacuums, and the size of its heap
-- and due_at index. Counters are flushed by each backend at most once a second, so they lag.
SELECT s.n_live_tup, s.n_dead_tup, s.n_tup_upd, s.n_tup_hot_upd, s.n_tup_del,
       s.vacuum_count, s.autovacuum_count, s.last_autovacuum,
       pg_relation_size('chronoq.wheel') AS heap_bytes,
       pg_relation_size('chronoq.wheel_free') AS due_index_bytes
FROM pg_stat_user_tables s
WHERE s.relid = 'chronoq.wheel'::regclass;

-- name: flush_stats
-- Makes this backend publish its table counters at the end of this statement, so the next read
-- of wheel_stats includes its own writes.
SELECT pg_stat_force_next_flush();

-- name: autovacuum_on
-- The churn benchmark's opt-in on a server where autovacuum is off (needs a superuser).
ALTER SYSTEM SET autovacuum = on;

-- name: autovacuum_naptime_statement
-- ALTER SYSTEM takes no parameters, and runs in no function or transaction block: Postgres
-- writes the statement for $1 milliseconds (quoted by %L) and the caller runs what it returns.
SELECT format('ALTER SYSTEM SET autovacuum_naptime = %L', $1::bigint || 'ms');

-- name: autovacuum_settings
-- What this session runs with: whether autovacuum is on, the naptime in whole seconds (the
-- setting's unit) and as Postgres shows it.
SELECT current_setting('autovacuum')::boolean AS enabled,
       (SELECT setting::int FROM pg_settings WHERE name = 'autovacuum_naptime') AS naptime_s,
       current_setting('autovacuum_naptime') AS naptime;

-- name: autovacuum_reset
-- (ALTER SYSTEM runs in no transaction block, an implicit one of several statements included.)
ALTER SYSTEM RESET autovacuum;

-- name: autovacuum_naptime_reset
ALTER SYSTEM RESET autovacuum_naptime;

-- name: reload_conf
SELECT pg_reload_conf();

-- name: database_transactions
-- Transactions committed and rolled back in this database so far, by every session in it. Each
-- backend publishes its counters when it goes idle, at most once a second; one idle sooner than
-- that publishes them within 10 s. The caller runs flush_stats first, for its own.
SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database();

-- name: client_sessions
-- The other sessions in this database: their backends' pids and the names their applications
-- gave them.
SELECT pid, application_name FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid();

-- name: statements_reset
-- Empties pg_stat_statements for this database only: $1 (user) and $2 (query id) are 0, all.
-- Fails where the extension is missing, its library is not loaded, or the role may not reset.
SELECT pg_stat_statements_reset($1::oid, (SELECT oid FROM pg_database WHERE datname = current_database()), $2::bigint);

-- name: statements_since_reset
-- This database's statements since the reset, the most planning and execution time first.
-- The extension keeps each statement's text with its constants replaced by $n, and chronoq
-- passes values as parameters: the texts carry no data. (No constant here either: the extension
-- records this statement's planning before it runs, and the bench finds its text to leave out.)
SELECT queryid, query, calls, plans, total_plan_time, total_exec_time
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_plan_time + total_exec_time DESC;

-- name: statements_track_planning
-- Whether the extension counts planning (pg_stat_statements.track_planning, off by default).
SELECT coalesce(current_setting('pg_stat_statements.track_planning', true), 'off')::boolean;
