-- chronoq 003: pruning history older than the retention period, in batches, by index.

-- Finished one-shot jobs are found by age without scanning the table.
CREATE INDEX jobs_once_created ON chronoq.jobs (created_at) WHERE kind = 'once';

-- Dead occurrences per queue, for `chronoq dlq` (listing and replay) without scanning results.
CREATE INDEX results_dead ON chronoq.results (queue, finished_at) WHERE state = 'dead';
