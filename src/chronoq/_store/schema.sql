-- chronoq's schema as `chronoq migrate` leaves an empty database: pg_dump --schema-only
-- --schema=chronoq --no-owner --no-privileges, without its version-dependent lines.
-- Generated: never edit it by hand. A change to the schema is a new migration; then run
-- `python -m tests.schema_snapshot` and review this file's diff with the migration.

--
-- PostgreSQL database dump
--

--
-- Name: chronoq; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA chronoq;

--
-- Name: controls_due_in(); Type: FUNCTION; Schema: chronoq; Owner: -
--

CREATE FUNCTION chronoq.controls_due_in() RETURNS double precision
    LANGUAGE plpgsql STABLE
    AS $$
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

--
-- Name: delete_occurrences_of_deleted_jobs(); Type: FUNCTION; Schema: chronoq; Owner: -
--

CREATE FUNCTION chronoq.delete_occurrences_of_deleted_jobs() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    DELETE FROM chronoq.wheel w USING deleted WHERE w.job_id = deleted.id;
    RETURN NULL;
END
$$;

--
-- Name: elapsed(interval); Type: FUNCTION; Schema: chronoq; Owner: -
--

CREATE FUNCTION chronoq.elapsed(d interval) RETURNS interval
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ((d - date_trunc('day'::text, d)) + (((EXTRACT(day FROM d))::bigint)::double precision * '24:00:00'::interval));

--
-- Name: manual_key(bigint, timestamp with time zone); Type: FUNCTION; Schema: chronoq; Owner: -
--

CREATE FUNCTION chronoq.manual_key(job_id bigint, at timestamp with time zone) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (((job_id)::text || '@manual:'::text) || to_char((at AT TIME ZONE 'UTC'::text), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'::text));

--
-- Name: notify_due(); Type: FUNCTION; Schema: chronoq; Owner: -
--

CREATE FUNCTION chronoq.notify_due() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: notify_room(); Type: FUNCTION; Schema: chronoq; Owner: -
--

CREATE FUNCTION chronoq.notify_room() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('chronoq_due', (extract(epoch FROM now()) * 1000)::bigint::text);
    RETURN NULL;
END
$$;

--
-- Name: occurrence_key(bigint, timestamp with time zone); Type: FUNCTION; Schema: chronoq; Owner: -
--

CREATE FUNCTION chronoq.occurrence_key(job_id bigint, fire_at timestamp with time zone) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (((job_id)::text || '@'::text) || to_char((fire_at AT TIME ZONE 'UTC'::text), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'::text));

--
-- Name: attempts; Type: TABLE; Schema: chronoq; Owner: -
--

CREATE TABLE chronoq.attempts (
    id bigint NOT NULL,
    occurrence_key text NOT NULL,
    job_id bigint NOT NULL,
    queue text NOT NULL,
    attempt integer NOT NULL,
    outcome text NOT NULL,
    error text,
    started_at timestamp with time zone,
    finished_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    worker text
);

--
-- Name: attempts_id_seq; Type: SEQUENCE; Schema: chronoq; Owner: -
--

ALTER TABLE chronoq.attempts ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME chronoq.attempts_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: jobs; Type: TABLE; Schema: chronoq; Owner: -
--

CREATE TABLE chronoq.jobs (
    id bigint NOT NULL,
    queue text NOT NULL,
    kind text DEFAULT 'once'::text NOT NULL,
    state text DEFAULT 'active'::text NOT NULL,
    key text,
    payload jsonb,
    max_attempts integer NOT NULL,
    backoff_base_ms bigint NOT NULL,
    backoff_cap_ms bigint NOT NULL,
    jitter real NOT NULL,
    timeout_ms bigint NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    cron text,
    timezone text,
    misfire text DEFAULT 'run_once'::text NOT NULL,
    misfire_grace_ms bigint DEFAULT 300000 NOT NULL,
    max_backfill integer DEFAULT 100 NOT NULL,
    overlap text DEFAULT 'allow'::text NOT NULL,
    trace jsonb,
    cron_jitter_ms bigint DEFAULT 0 NOT NULL,
    CONSTRAINT jobs_backoff_base_ms_check CHECK ((backoff_base_ms >= 0)),
    CONSTRAINT jobs_backoff_cap_ms_check CHECK ((backoff_cap_ms >= 0)),
    CONSTRAINT jobs_cron_fields CHECK (((kind = 'cron'::text) = ((cron IS NOT NULL) AND (timezone IS NOT NULL)))),
    CONSTRAINT jobs_cron_jitter CHECK (((cron_jitter_ms >= 0) AND ((cron_jitter_ms = 0) OR (kind = 'cron'::text)))),
    CONSTRAINT jobs_jitter_check CHECK (((jitter >= (0)::double precision) AND (jitter <= (1)::double precision))),
    CONSTRAINT jobs_kind_check CHECK ((kind = ANY (ARRAY['once'::text, 'cron'::text]))),
    CONSTRAINT jobs_max_attempts_check CHECK ((max_attempts >= 1)),
    CONSTRAINT jobs_max_backfill_check CHECK ((max_backfill >= 0)),
    CONSTRAINT jobs_misfire_check CHECK ((misfire = ANY (ARRAY['skip'::text, 'run_once'::text, 'backfill'::text]))),
    CONSTRAINT jobs_misfire_grace_ms_check CHECK ((misfire_grace_ms >= 0)),
    CONSTRAINT jobs_overlap_check CHECK ((overlap = ANY (ARRAY['allow'::text, 'skip'::text]))),
    CONSTRAINT jobs_state_check CHECK ((state = ANY (ARRAY['active'::text, 'paused'::text, 'cancelled'::text]))),
    CONSTRAINT jobs_timeout_ms_check CHECK ((timeout_ms > 0))
);

--
-- Name: jobs_id_seq; Type: SEQUENCE; Schema: chronoq; Owner: -
--

ALTER TABLE chronoq.jobs ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (
    SEQUENCE NAME chronoq.jobs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: queue_controls; Type: TABLE; Schema: chronoq; Owner: -
--

CREATE TABLE chronoq.queue_controls (
    queue text NOT NULL,
    paused boolean DEFAULT false NOT NULL,
    max_running integer,
    rate_count integer,
    rate_period_ms bigint,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT queue_controls_check CHECK (((rate_count IS NULL) = (rate_period_ms IS NULL))),
    CONSTRAINT queue_controls_max_running_check CHECK ((max_running > 0)),
    CONSTRAINT queue_controls_rate_count_check CHECK ((rate_count > 0)),
    CONSTRAINT queue_controls_rate_period_ms_check CHECK ((rate_period_ms > 0))
);

--
-- Name: queue_dispatches; Type: TABLE; Schema: chronoq; Owner: -
--

CREATE TABLE chronoq.queue_dispatches (
    queue text NOT NULL,
    at timestamp with time zone NOT NULL
);

--
-- Name: results; Type: TABLE; Schema: chronoq; Owner: -
--

CREATE TABLE chronoq.results (
    occurrence_key text NOT NULL,
    job_id bigint NOT NULL,
    queue text NOT NULL,
    fire_at timestamp with time zone NOT NULL,
    state text NOT NULL,
    attempt integer NOT NULL,
    reason text,
    error text,
    result jsonb,
    run_at timestamp with time zone,
    started_at timestamp with time zone,
    finished_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    worker text,
    detail text,
    CONSTRAINT results_state_check CHECK ((state = ANY (ARRAY['succeeded'::text, 'dead'::text, 'skipped'::text, 'cancelled'::text])))
);

--
-- Name: schema_migrations; Type: TABLE; Schema: chronoq; Owner: -
--

CREATE TABLE chronoq.schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: wheel; Type: TABLE; Schema: chronoq; Owner: -
--

CREATE TABLE chronoq.wheel (
    occurrence_key text NOT NULL,
    job_id bigint NOT NULL,
    queue text NOT NULL,
    fire_at timestamp with time zone NOT NULL,
    run_at timestamp with time zone NOT NULL,
    due_at timestamp with time zone NOT NULL,
    attempt integer DEFAULT 1 NOT NULL,
    dispatches integer DEFAULT 0 NOT NULL,
    dispatched_at timestamp with time zone,
    last_error text,
    head boolean DEFAULT false NOT NULL,
    backfilled integer DEFAULT 0 NOT NULL,
    starts integer DEFAULT 0 NOT NULL,
    dispatch_id bigint,
    due_by timestamp with time zone,
    controlled boolean DEFAULT false NOT NULL
)
WITH (autovacuum_vacuum_scale_factor='0.0', autovacuum_vacuum_threshold='2000', autovacuum_vacuum_insert_scale_factor='0.0', autovacuum_vacuum_insert_threshold='10000', autovacuum_analyze_scale_factor='0.02', autovacuum_vacuum_cost_delay='0', fillfactor='70');

--
-- Name: attempts attempts_pkey; Type: CONSTRAINT; Schema: chronoq; Owner: -
--

ALTER TABLE ONLY chronoq.attempts
    ADD CONSTRAINT attempts_pkey PRIMARY KEY (id);

--
-- Name: jobs jobs_pkey; Type: CONSTRAINT; Schema: chronoq; Owner: -
--

ALTER TABLE ONLY chronoq.jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);

--
-- Name: queue_controls queue_controls_pkey; Type: CONSTRAINT; Schema: chronoq; Owner: -
--

ALTER TABLE ONLY chronoq.queue_controls
    ADD CONSTRAINT queue_controls_pkey PRIMARY KEY (queue);

--
-- Name: results results_pkey; Type: CONSTRAINT; Schema: chronoq; Owner: -
--

ALTER TABLE ONLY chronoq.results
    ADD CONSTRAINT results_pkey PRIMARY KEY (occurrence_key);

--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: chronoq; Owner: -
--

ALTER TABLE ONLY chronoq.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);

--
-- Name: wheel wheel_pkey; Type: CONSTRAINT; Schema: chronoq; Owner: -
--

ALTER TABLE ONLY chronoq.wheel
    ADD CONSTRAINT wheel_pkey PRIMARY KEY (occurrence_key);

--
-- Name: attempts_finished; Type: INDEX; Schema: chronoq; Owner: -
--

CREATE INDEX attempts_finished ON chronoq.attempts USING btree (finished_at);

--
-- Name: attempts_job; Type: INDEX; Schema: chronoq; Owner: -
--

CREATE INDEX attempts_job ON chronoq.attempts USING btree (job_id);

--
-- Name: jobs_queue_key; Type: INDEX; Schema: chronoq; Owner: -
--

CREATE UNIQUE INDEX jobs_queue_key ON chronoq.jobs USING btree (queue, key) WHERE (key IS NOT NULL);

--
-- Name: queue_dispatches_queue_at; Type: INDEX; Schema: chronoq; Owner: -
--

CREATE INDEX queue_dispatches_queue_at ON chronoq.queue_dispatches USING btree (queue, at);

--
-- Name: results_dead; Type: INDEX; Schema: chronoq; Owner: -
--

CREATE INDEX results_dead ON chronoq.results USING btree (queue, finished_at) WHERE (state = 'dead'::text);

--
-- Name: results_finished; Type: INDEX; Schema: chronoq; Owner: -
--

CREATE INDEX results_finished ON chronoq.results USING btree (finished_at);

--
-- Name: results_job_fire; Type: INDEX; Schema: chronoq; Owner: -
--

CREATE INDEX results_job_fire ON chronoq.results USING btree (job_id, fire_at);

--
-- Name: wheel_controlled; Type: INDEX; Schema: chronoq; Owner: -
--

CREATE INDEX wheel_controlled ON chronoq.wheel USING btree (queue, due_at) WHERE controlled;

--
-- Name: wheel_free; Type: INDEX; Schema: chronoq; Owner: -
--

CREATE INDEX wheel_free ON chronoq.wheel USING btree (due_at) WHERE (NOT controlled);

--
-- Name: wheel_job; Type: INDEX; Schema: chronoq; Owner: -
--

CREATE INDEX wheel_job ON chronoq.wheel USING btree (job_id);

--
-- Name: wheel_one_head; Type: INDEX; Schema: chronoq; Owner: -
--

CREATE UNIQUE INDEX wheel_one_head ON chronoq.wheel USING btree (job_id) WHERE head;

--
-- Name: jobs jobs_delete_occurrences; Type: TRIGGER; Schema: chronoq; Owner: -
--

CREATE TRIGGER jobs_delete_occurrences AFTER DELETE ON chronoq.jobs REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT EXECUTE FUNCTION chronoq.delete_occurrences_of_deleted_jobs();

--
-- Name: wheel wheel_controlled_gone; Type: TRIGGER; Schema: chronoq; Owner: -
--

CREATE TRIGGER wheel_controlled_gone AFTER DELETE ON chronoq.wheel FOR EACH ROW WHEN (old.controlled) EXECUTE FUNCTION chronoq.notify_room();

--
-- Name: wheel wheel_controlled_waiting; Type: TRIGGER; Schema: chronoq; Owner: -
--

CREATE TRIGGER wheel_controlled_waiting AFTER UPDATE ON chronoq.wheel FOR EACH ROW WHEN ((new.controlled AND (new.dispatched_at IS NULL))) EXECUTE FUNCTION chronoq.notify_room();

--
-- Name: wheel wheel_notify_insert; Type: TRIGGER; Schema: chronoq; Owner: -
--

CREATE TRIGGER wheel_notify_insert AFTER INSERT ON chronoq.wheel REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION chronoq.notify_due();

--
-- Name: wheel wheel_notify_update; Type: TRIGGER; Schema: chronoq; Owner: -
--

CREATE TRIGGER wheel_notify_update AFTER UPDATE ON chronoq.wheel REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION chronoq.notify_due();

--
-- Name: attempts attempts_job_id_fkey; Type: FK CONSTRAINT; Schema: chronoq; Owner: -
--

ALTER TABLE ONLY chronoq.attempts
    ADD CONSTRAINT attempts_job_id_fkey FOREIGN KEY (job_id) REFERENCES chronoq.jobs(id) ON DELETE CASCADE;

--
-- Name: results results_job_id_fkey; Type: FK CONSTRAINT; Schema: chronoq; Owner: -
--

ALTER TABLE ONLY chronoq.results
    ADD CONSTRAINT results_job_id_fkey FOREIGN KEY (job_id) REFERENCES chronoq.jobs(id) ON DELETE CASCADE;

--
-- PostgreSQL database dump complete
--
