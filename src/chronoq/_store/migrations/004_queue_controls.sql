-- Queue controls: a queue may be paused, or limited in how many of its occurrences run at once
-- and how many are dispatched in a sliding window. docs/flow-control.md describes the model.

-- One row per paused or limited queue; a queue without a row runs freely.
CREATE TABLE chronoq.queue_controls (
    queue          text        PRIMARY KEY,
    paused         boolean     NOT NULL DEFAULT false,
    max_running    integer     CHECK (max_running > 0),
    rate_count     integer     CHECK (rate_count > 0),
    rate_period_ms bigint      CHECK (rate_period_ms > 0),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((rate_count IS NULL) = (rate_period_ms IS NULL))
);

-- When each dispatch of a rate-limited queue happened, by the database's clock: the sliding
-- window counts these. Entries older than the queue's period are deleted as it dispatches.
CREATE TABLE chronoq.queue_dispatches (
    queue text        NOT NULL,
    at    timestamptz NOT NULL
);
CREATE INDEX queue_dispatches_queue_at ON chronoq.queue_dispatches (queue, at);

-- A controlled row belongs to a paused or limited queue: only a claim that has locked the
-- queue's control row dispatches it, within the queue's limits. A row becomes controlled when
-- it first comes due (the claim of free rows that meets it sets the flag) and free again when
-- its queue's control row goes. The claim of free rows reads wheel_free, which controlled rows
-- leave: however many rows a paused queue keeps waiting, no claim for other queues walks past
-- them.
ALTER TABLE chronoq.wheel ADD COLUMN controlled boolean NOT NULL DEFAULT false;
CREATE INDEX wheel_free ON chronoq.wheel (due_at) WHERE NOT controlled;
CREATE INDEX wheel_controlled ON chronoq.wheel (queue, due_at) WHERE controlled;
DROP INDEX chronoq.wheel_due;

-- Controlled rows wake nobody by their due time (a limit, not the clock, decides when they run)...
CREATE OR REPLACE FUNCTION chronoq.notify_due() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    soonest timestamptz;
BEGIN
    SELECT min(due_at) INTO soonest FROM changed WHERE NOT controlled;
    IF soonest IS NOT NULL AND soonest < now() + interval '60 seconds' THEN
        PERFORM pg_notify('chronoq_due', (extract(epoch FROM soonest) * 1000)::bigint::text);
    END IF;
    RETURN NULL;
END
$$;

-- ...but a controlled row that stops running (its outcome recorded, or moved to a retry), or
-- that has just become controlled, makes room or work in its queue: the timers look now. One NOTIFY per
-- transaction (Postgres folds equal payloads, and now() is the transaction's start).
CREATE FUNCTION chronoq.notify_room() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chronoq_due', (extract(epoch FROM now()) * 1000)::bigint::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER wheel_controlled_gone AFTER DELETE ON chronoq.wheel
    FOR EACH ROW WHEN (OLD.controlled) EXECUTE FUNCTION chronoq.notify_room();
CREATE TRIGGER wheel_controlled_waiting AFTER UPDATE ON chronoq.wheel
    FOR EACH ROW WHEN (NEW.controlled AND NEW.dispatched_at IS NULL) EXECUTE FUNCTION chronoq.notify_room();

-- Seconds until a limited queue may have work to dispatch: 0 if one has due controlled rows
-- and room for them now; else the time until its first controlled row comes due, or until its
-- rate window makes room; NULL if none has (no controlled rows, paused, or every running slot
-- taken: a finished run notifies). A hint for the timer's sleep: the claim that holds the queue decides exactly.
CREATE FUNCTION chronoq.controls_due_in() RETURNS float8 LANGUAGE plpgsql STABLE AS $$
DECLARE
    soonest float8;
BEGIN
    SELECT min(wait) INTO soonest FROM (
        SELECT CASE
                   WHEN f.first_due > now() THEN extract(epoch FROM f.first_due - now())::float8
                   WHEN c.max_running IS NOT NULL
                        AND (SELECT count(*) FROM chronoq.wheel r
                             WHERE r.controlled AND r.queue = c.queue AND r.due_at > now()
                               AND r.dispatched_at IS NOT NULL) >= c.max_running THEN NULL
                   WHEN c.rate_count IS NOT NULL THEN
                       (SELECT CASE WHEN count(*) < c.rate_count THEN 0
                                    ELSE greatest(extract(epoch FROM min(d.at) + c.rate_period_ms * interval '1 millisecond'
                                                          - now())::float8, 0) END
                        FROM (SELECT d.at FROM chronoq.queue_dispatches d
                              WHERE d.queue = c.queue AND d.at > now() - c.rate_period_ms * interval '1 millisecond'
                              ORDER BY d.at DESC LIMIT c.rate_count) AS d)
                   ELSE 0
               END AS wait
        FROM chronoq.queue_controls c
        CROSS JOIN LATERAL (SELECT h.due_at AS first_due FROM chronoq.wheel h
                            WHERE h.controlled AND h.queue = c.queue AND h.due_at < 'infinity'
                            ORDER BY h.due_at LIMIT 1) AS f
        WHERE NOT c.paused
    ) AS waits;
    RETURN soonest;
END
$$;
