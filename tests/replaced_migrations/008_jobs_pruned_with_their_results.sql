-- chronoq 008: finished one-shot jobs are pruned with their results instead of being found by
-- age through an index of their own.
--
-- Why: jobs_once_created (created_at) WHERE kind = 'once' gave every bulk-enqueued job one more
-- index entry, all with the same key (a transaction's rows share now()): about a tenth of what
-- Postgres spends per job of a bulk enqueue. It also led the pruner, every round, back over each old one-shot job still scheduled.
--
-- How they are found instead: a one-shot job leaves the wheel only in the transaction that
-- writes its terminal result (a worker's outcome, a cancel, a skipped misfire), or when the job
-- itself is deleted. So a one-shot job with neither an occurrence nor a result is one whose
-- result retention has pruned. The pruner deletes such jobs in the transaction that prunes
-- their results, by the job ids that delete returns (timer.sql: prune_results, prune_jobs).
DROP INDEX IF EXISTS chronoq.jobs_once_created;

-- One-shot jobs whose results were pruned before this migration, but not yet the jobs
-- themselves: no result is left to lead the pruner to them. One scan of jobs, once.
DELETE FROM chronoq.jobs j
WHERE j.kind = 'once'
  AND NOT EXISTS (SELECT FROM chronoq.wheel w WHERE w.job_id = j.id)
  AND NOT EXISTS (SELECT FROM chronoq.results r WHERE r.job_id = j.id);
