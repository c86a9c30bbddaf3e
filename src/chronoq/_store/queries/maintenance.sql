-- name: autovacuum_enabled
SELECT current_setting('autovacuum')::boolean;

-- name: vacuum_hot_tables
-- Reclaim dead rows left by earlier work (a benchmark run, or a server with autovacuum off):
-- dead index entries in front of wheel_free slow every claim and every min(due_at).
VACUUM chronoq.wheel, chronoq.jobs, chronoq.results, chronoq.attempts;
