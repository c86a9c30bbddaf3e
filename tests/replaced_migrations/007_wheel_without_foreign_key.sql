-- chronoq 007: the wheel's reference to its job is kept by chronoq's statements and a
-- statement-level trigger instead of a foreign key.
--
-- Why: a foreign key checks every inserted wheel row on its own (one lookup of the job, which
-- it also locks FOR KEY SHARE, writing to the job's tuple), and a bulk enqueue inserts one
-- wheel row per job: the check costs bulk enqueue about a quarter of its rate.
--
-- What keeps the reference: every statement that inserts a wheel row takes its job id from a
-- job row it reads or writes in the same statement (producer.sql, dead.sql), or from a row its
-- transaction holds (timer.sql: the claimed head; schedules.sql: the job just written); and jobs are
-- deleted only by retention, which deletes one-shot jobs with no occurrence left, or by hand.
-- For the latter, the trigger below does what ON DELETE CASCADE did: deleting jobs deletes
-- their occurrences, in the same statement. A row left behind all the same (a job deleted by
-- hand while its next tick was being written) is dropped by the timer that claims it.
ALTER TABLE chronoq.wheel DROP CONSTRAINT wheel_job_id_fkey;

CREATE FUNCTION chronoq.delete_occurrences_of_deleted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM chronoq.wheel w USING deleted WHERE w.job_id = deleted.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_delete_occurrences AFTER DELETE ON chronoq.jobs
    REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT EXECUTE FUNCTION chronoq.delete_occurrences_of_deleted_jobs();
