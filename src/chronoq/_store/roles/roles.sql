-- chronoq least-privilege roles: one per component, none of which can run DDL or touch anything
-- outside what its component does. Idempotent; roles are cluster-wide, grants per database.
-- Give them passwords (ALTER ROLE ... PASSWORD) or map them in pg_hba.conf as you deploy.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'chronoq_producer') THEN CREATE ROLE chronoq_producer LOGIN; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'chronoq_timer') THEN CREATE ROLE chronoq_timer LOGIN; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'chronoq_worker') THEN CREATE ROLE chronoq_worker LOGIN; END IF;
END
$$;

GRANT USAGE ON SCHEMA chronoq TO chronoq_producer, chronoq_timer, chronoq_worker;

-- Producer: enqueue, schedule, pause/resume/reschedule/cancel, read status and history.
GRANT SELECT, INSERT, UPDATE ON chronoq.jobs TO chronoq_producer;
GRANT SELECT, INSERT, UPDATE, DELETE ON chronoq.wheel TO chronoq_producer;
GRANT SELECT, INSERT ON chronoq.results TO chronoq_producer;
GRANT SELECT ON chronoq.attempts TO chronoq_producer;
GRANT USAGE ON SEQUENCE chronoq.jobs_id_seq TO chronoq_producer;
-- Pause, resume and limit queues.
GRANT SELECT, INSERT, UPDATE, DELETE ON chronoq.queue_controls TO chronoq_producer;
GRANT DELETE ON chronoq.queue_dispatches TO chronoq_producer;

-- Timer: claim and dispatch, judge ticks, ingest submissions, prune history.
GRANT SELECT, INSERT, UPDATE, DELETE ON chronoq.jobs, chronoq.wheel, chronoq.results, chronoq.attempts TO chronoq_timer;
GRANT USAGE ON SEQUENCE chronoq.jobs_id_seq TO chronoq_timer;
-- Dispatch within queues' limits: lock their control rows, count and record dispatches.
GRANT SELECT, UPDATE ON chronoq.queue_controls TO chronoq_timer;
GRANT SELECT, INSERT, DELETE ON chronoq.queue_dispatches TO chronoq_timer;

-- Worker: count starts, lock live occurrences, record outcomes. No DELETE on results or jobs.
GRANT SELECT ON chronoq.jobs TO chronoq_worker;
GRANT SELECT, UPDATE, DELETE ON chronoq.wheel TO chronoq_worker;
GRANT SELECT, INSERT ON chronoq.results, chronoq.attempts TO chronoq_worker;
