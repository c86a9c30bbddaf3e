-- chronoq 002: recurring jobs, missed-run and overlap policies, pause, the tick ledger.
--
-- A job's next nominal tick is its "head" row in the wheel. Whichever timer claims the head
-- judges it (missed-run policy, overlap, pause), publishes what should run, records what is
-- skipped, and inserts the next head — all in the claim's transaction, so no tick is decided
-- twice or never. Skipped ticks get a `results` row (state 'skipped', with a reason), which
-- makes wheel + results together the ledger of every nominal tick.

ALTER TABLE chronoq.jobs
    ADD COLUMN cron             text,
    ADD COLUMN timezone         text,
    ADD COLUMN misfire          text    NOT NULL DEFAULT 'run_once' CHECK (misfire IN ('skip', 'run_once', 'backfill')),
    ADD COLUMN misfire_grace_ms bigint  NOT NULL DEFAULT 300000 CHECK (misfire_grace_ms >= 0),
    ADD COLUMN max_backfill     integer NOT NULL DEFAULT 100 CHECK (max_backfill >= 0),
    ADD COLUMN overlap          text    NOT NULL DEFAULT 'allow' CHECK (overlap IN ('allow', 'skip')),
    ADD CONSTRAINT jobs_cron_fields CHECK ((kind = 'cron') = (cron IS NOT NULL AND timezone IS NOT NULL));

ALTER TABLE chronoq.wheel
    -- The job's next nominal tick, not yet judged. False once a timer has decided to run it.
    ADD COLUMN head       boolean NOT NULL DEFAULT false,
    -- Missed ticks already run by `backfill` in the current outage, carried from head to head.
    ADD COLUMN backfilled integer NOT NULL DEFAULT 0,
    -- Deliveries of the current attempt that a worker actually started. Past the delivery
    -- limit the occurrence is poison (it kills or hangs its workers) and ends dead. Publishes
    -- are not counted: a message waiting in a long backlog is not poison.
    ADD COLUMN starts     integer NOT NULL DEFAULT 0;
-- One head per job: a second timer can never start a second chain of ticks.
CREATE UNIQUE INDEX wheel_one_head ON chronoq.wheel (job_id) WHERE head;

-- Existing one-shot occurrences that were never dispatched are undecided heads too.
UPDATE chronoq.wheel SET head = true WHERE dispatches = 0 AND attempt = 1;

ALTER TABLE chronoq.results ADD COLUMN detail text;  -- e.g. the policy and counts of a skip
CREATE INDEX results_job_fire ON chronoq.results (job_id, fire_at);
DROP INDEX chronoq.results_job;
