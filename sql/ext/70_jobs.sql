-------------------------------------------------------------------------------
-- Jobs: the periodic work of a charging and billing system, run by pg_cron.
--
--   job            what runs when: a cron schedule and one step of SQL that
--                  returns how many rows it handled; with `repeat` the step
--                  runs again (each time in its own transaction under
--                  run_job_proc) while it returns > 0 and time_budget lasts;
--                  the step may use $1, the run's start time (timestamptz,
--                  the same in every step of a run)
--   job_run        one row per run: started/finished, rows, status
--                  (running | succeeded | failed | skipped | interrupted),
--                  error and its SQLSTATE
--   run_job_proc   PROCEDURE, what pg_cron calls: commits after every step, so
--                  a long rating backlog never holds account locks for longer
--                  than one batch (nor the bill run: its steps are batches);
--                  the run's row is visible while it runs; a failed step is
--                  rolled back, the failure is committed to job_run and then
--                  raised (pg_cron records it as failed too)
--   run_job        FUNCTION, the same in the caller's transaction (usable in a
--                  transaction block): a failed step is rolled back (a
--                  subtransaction), logged, and reported by a WARNING and a
--                  NULL result instead of an error, so the log row survives
--   schedule_jobs / unschedule_jobs
--                  register / remove the enabled jobs in pg_cron as
--                  'convbill-<job>' running `CALL convbill.run_job_proc('<job>')`
--                  as the calling role; re-running schedule_jobs() updates
--                  schedules in place and removes jobs no longer enabled
--
-- One run of a job at a time: a run takes an advisory lock on the job's name
-- and a run that finds it taken does nothing and is logged as 'skipped' (the
-- run in progress is already working through the backlog).
--
-- pg_cron manages jobs only from its own database (cron.database_name), so
-- schedule_jobs() works where both pg_cron and convbill are installed; from
-- any other database it raises 55000 with a hint: schedule_jobs_sql() returns
-- the statements to run in pg_cron's database instead (cron.schedule_in_database,
-- jobs named 'convbill-<job>@<database>').  Without pg_cron at all, 55000 and
-- a hint on shared_preload_libraries.
--
-- The built-in jobs (all times UTC, pg_cron's clock):
--   rate       every minute  rate_pending() in batches of 10000 until none
--                            is left or 50 s have passed
--   expire     every minute  expire_reservations() + expire_buckets()
--   bill       hourly at :05 the bill run as of the run's start, in steps
--                            of run_billing_step($1, 2000): each step bills
--                            2000 accounts and commits (under run_job_proc),
--                            so no account stays locked for the whole run;
--                            rows = the (account, period)s gone through.  A
--                            period ends at local midnight in each account's
--                            own time zone, so an hourly run invoices every
--                            zone within the hour; 50 minutes at most, the
--                            next run goes on from there
--   analytics  every 15 min  refresh_analytics()
--   anomaly    every 5 min   detect_anomalies(now())
-- The steps call their functions by name at run time; a job whose function
-- does not exist fails with 42883 in job_run rather than at install time.
-------------------------------------------------------------------------------

CREATE TABLE @extschema@.job (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,39}$'),
    schedule    text NOT NULL,                  -- pg_cron syntax, e.g. '*/5 * * * *'
    command     text NOT NULL,                  -- SQL of one step, returning a row count ($1: the run's start)
    repeat      boolean NOT NULL DEFAULT false, -- run the step again while it returns > 0
    time_budget interval NOT NULL DEFAULT '50 seconds' CHECK (time_budget > interval '0'),
    enabled     boolean NOT NULL DEFAULT true,  -- schedule_jobs() registers only enabled jobs
    description text,
    builtin     boolean NOT NULL DEFAULT false  -- created by the extension (not dumped)
);
COMMENT ON TABLE @extschema@.job IS
    'periodic jobs: schedule (pg_cron syntax), the SQL of one step (returns a row count; $1 is the run''s start time), repeat it while > 0 within time_budget';

INSERT INTO @extschema@.job (name, schedule, command, repeat, time_budget, description, builtin) VALUES
    ('rate', '* * * * *', 'SELECT @extschema@.rate_pending(10000)', true, '50 seconds',
     'rate pending usage events, 10000 per transaction, until none is left or 50 s have passed', true),
    ('expire', '* * * * *',
     'SELECT @extschema@.expire_reservations()::bigint + @extschema@.expire_buckets()', true, '50 seconds',
     'end sessions whose grant lapsed and zero expired buckets', true),
    ('bill', '5 * * * *', 'SELECT @extschema@.run_billing_step($1, 2000)', true, '50 minutes',
     'invoice every billing period ended by the run''s start, 2000 accounts per transaction (hourly: periods end at local midnight in each account''s zone)', true),
    ('analytics', '*/15 * * * *', 'SELECT @extschema@.refresh_analytics()', false, '50 seconds',
     'refresh the analytics views', true),
    ('anomaly', '*/5 * * * *', 'SELECT @extschema@.detect_anomalies(now())', false, '50 seconds',
     'detect usage anomalies (spikes, high-risk destination bursts, event velocity)', true);

-- Jobs a user adds survive pg_dump; built-in ones come back with CREATE EXTENSION.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.job', 'WHERE NOT builtin');

CREATE TABLE @extschema@.job_run (
    job         text NOT NULL,
    run_id      bigint GENERATED ALWAYS AS IDENTITY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,                    -- NULL while running
    status      text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'skipped', 'interrupted')),
    steps       integer NOT NULL DEFAULT 0,     -- steps that completed (committed, or kept)
    rows        bigint NOT NULL DEFAULT 0,      -- what the completed steps returned, summed
    error       text,                           -- message of the step that failed
    sqlstate    text,
    warning     text,                           -- what the steps reported besides their rows
                                                -- (job_warn: e.g. accounts a bill run left busy)
    PRIMARY KEY (job, run_id),
    CHECK ((status IN ('failed', 'interrupted')) = (error IS NOT NULL)),
    CHECK ((status IN ('running', 'interrupted')) = (finished_at IS NULL))
);
CREATE INDEX job_run_started ON @extschema@.job_run (started_at);
COMMENT ON TABLE @extschema@.job_run IS
    'one row per job run: when, how many rows, status, the error of a failed run and what its steps reported (warning)';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.job_run', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.job_run_run_id_seq', '');

-- The job row, or a clear error.
CREATE FUNCTION @extschema@.job_get(p_name text)
RETURNS @extschema@.job
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j @extschema@.job;
BEGIN
    SELECT * INTO j FROM @extschema@.job WHERE name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job "%" does not exist', p_name USING ERRCODE = '42704',
            HINT = 'The jobs are the rows of convbill.job.';
    END IF;
    RETURN j;
END $$;
COMMENT ON FUNCTION @extschema@.job_get(text) IS 'internal: the job of that name, or error 42704';

-- The advisory lock key of a job.
CREATE FUNCTION @extschema@.job_lock_key(p_name text)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.hashtextextended('convbill.job ' OPERATOR(pg_catalog.||) p_name, 0);
COMMENT ON FUNCTION @extschema@.job_lock_key(text) IS
    'internal: advisory lock key of a job (one run of a job at a time)';

-- One step of a job in a subtransaction: its row count, or its error (the
-- step's work rolled back).  Query cancels are caught too, so the run is logged.
-- The command sees the run's start time as $1.
CREATE FUNCTION @extschema@.job_step(p_command text, p_run_start timestamptz,
                                     OUT rows bigint, OUT error text, OUT error_sqlstate text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    BEGIN
        EXECUTE p_command INTO rows USING p_run_start;
        rows := coalesce(rows, 0);
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        GET STACKED DIAGNOSTICS error = MESSAGE_TEXT, error_sqlstate = RETURNED_SQLSTATE;
        rows := NULL;
    END;
END $$;
COMMENT ON FUNCTION @extschema@.job_step(text, timestamptz) IS
    'internal: run one step of a job ($1 = the run''s start) in a subtransaction; its row count, or its error with the work rolled back';

-- A job's runs older than convbill.job_run_retention (default 30 days; 0: for
-- ever) go when the job runs again: the log stays as long as it is useful,
-- not for ever (a minutely job logs half a million runs a year).
CREATE FUNCTION @extschema@.job_run_prune(p_job text, p_now timestamptz)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    keep interval;
    n bigint;
BEGIN
    -- the setting is defined by convbill's library: load it (a job's session,
    -- pg_cron's, may not have called any C function yet)
    PERFORM @extschema@.realtime_rating_enabled();
    keep := current_setting('convbill.job_run_retention')::interval;
    IF keep <= interval '0' THEN
        RETURN 0;
    END IF;
    DELETE FROM @extschema@.job_run r
    WHERE r.job = p_job AND r.started_at < p_now - keep AND r.status <> 'running';
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
COMMENT ON FUNCTION @extschema@.job_run_prune(text, timestamptz) IS
    'internal: delete a job''s runs older than convbill.job_run_retention; returns how many';

-- A step's report for its run's job_run.warning (a step that WARNs only to
-- the server log would be silent under pg_cron): kept in the session until
-- the job's runner takes it after the step; a step rolled back takes it back.
-- Several reports of one step are joined; outside a job they are kept (at
-- most 10,000 characters) until a job starts in the session, which empties
-- them first.
CREATE FUNCTION @extschema@.job_warn(message text)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_message ALIAS FOR $1;
BEGIN
    PERFORM @extschema@.realtime_rating_enabled();      -- the library defines the slot
    -- added to what the step reported before (job_take_warning empties it)
    PERFORM set_config('convbill.job_warning',
                       coalesce(@extschema@.job_add_warning(nullif(current_setting('convbill.job_warning', true), ''),
                                                            p_message), ''),
                       false);
END $$;
COMMENT ON FUNCTION @extschema@.job_warn(text) IS
    'report something for the running job''s job_run.warning (what a step did not do, e.g. accounts left busy); several reports of one step are joined';

-- The report of the step just run ('' when none), and the slot emptied.
CREATE FUNCTION @extschema@.job_take_warning()
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w text;
BEGIN
    PERFORM @extschema@.realtime_rating_enabled();      -- the library defines the slot
    w := coalesce(current_setting('convbill.job_warning', true), '');
    IF w <> '' THEN
        PERFORM set_config('convbill.job_warning', '', false);
    END IF;
    RETURN w;
END $$;
COMMENT ON FUNCTION @extschema@.job_take_warning() IS
    'internal: the last job_warn() message of the session (empty: none), then forgotten';

-- a run's warnings so far and the step's, joined
CREATE FUNCTION @extschema@.job_add_warning(p_so_far text, p_step text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
RETURN CASE WHEN p_step IS NULL OR p_step = '' THEN p_so_far
            WHEN p_so_far IS NULL THEN left(p_step, 10000)
            -- a run of many warning steps keeps its first 10,000 characters
            WHEN length(p_so_far) >= 10000 THEN p_so_far
            ELSE left(p_so_far || '; ' || p_step, 10000) END;

CREATE FUNCTION @extschema@.run_job(job_name text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j @extschema@.job := @extschema@.job_get(job_name);
    k bigint := @extschema@.job_lock_key(j.name);
    t0 timestamptz := clock_timestamp();
    s record;
    total bigint := 0;
    steps integer := 0;
    warned text;
BEGIN
    IF NOT pg_try_advisory_xact_lock(k) THEN
        INSERT INTO @extschema@.job_run (job, started_at, finished_at, status)
        VALUES (j.name, t0, clock_timestamp(), 'skipped');
        RETURN 0;
    END IF;
    PERFORM @extschema@.job_run_prune(j.name, t0);
    PERFORM @extschema@.job_take_warning();      -- nothing from before the run
    LOOP
        s := @extschema@.job_step(j.command, t0);
        warned := @extschema@.job_add_warning(warned, @extschema@.job_take_warning());
        EXIT WHEN s.error IS NOT NULL;
        steps := steps + 1;
        total := total + s.rows;
        EXIT WHEN NOT j.repeat OR s.rows <= 0 OR clock_timestamp() >= t0 + j.time_budget;
    END LOOP;
    INSERT INTO @extschema@.job_run (job, started_at, finished_at, status, steps, rows, error, sqlstate, warning)
    VALUES (j.name, t0, clock_timestamp(), CASE WHEN s.error IS NULL THEN 'succeeded' ELSE 'failed' END,
            steps, total, s.error, s.error_sqlstate, warned);
    IF s.error IS NOT NULL THEN
        RAISE WARNING 'job "%" failed: %', j.name, s.error
            USING DETAIL = format('SQLSTATE %s; the failed step was rolled back, the run is logged in convbill.job_run', s.error_sqlstate);
        RETURN NULL;
    END IF;
    RETURN total;
END $$;
COMMENT ON FUNCTION @extschema@.run_job(text) IS
    'run a job in the caller''s transaction and log it in job_run; returns the rows handled, 0 when skipped (already running), NULL when a step failed (rolled back, logged, WARNING)';

-- No SET clause: a procedure that commits may not have one.  search_path is
-- pinned instead with set_config(..., true) at the start of every transaction.
CREATE PROCEDURE @extschema@.run_job_proc(job_name text, INOUT rows bigint DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    j @extschema@.job;
    k bigint;
    t0 timestamptz;
    rid bigint;
    s record;
    n_steps integer := 0;
    warned text;
BEGIN
    -- fails with "invalid transaction termination" inside a transaction block,
    -- before anything was locked or logged (run_job() works there)
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    j := @extschema@.job_get(job_name);
    k := @extschema@.job_lock_key(j.name);
    t0 := clock_timestamp();
    rows := 0;
    IF NOT pg_try_advisory_lock(k) THEN
        INSERT INTO @extschema@.job_run (job, started_at, finished_at, status)
        VALUES (j.name, t0, clock_timestamp(), 'skipped');
        RETURN;
    END IF;
    -- holding the lock, any run still 'running' belongs to a session that died
    UPDATE @extschema@.job_run r SET status = 'interrupted', error = 'the session ended before the run finished'
    WHERE r.job = j.name AND r.status = 'running';
    PERFORM @extschema@.job_run_prune(j.name, t0);
    INSERT INTO @extschema@.job_run (job, started_at, status)
    VALUES (j.name, t0, 'running') RETURNING run_id INTO rid;
    PERFORM @extschema@.job_take_warning();      -- nothing from before the run
    COMMIT;
    LOOP
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        s := @extschema@.job_step(j.command, t0);
        warned := @extschema@.job_add_warning(warned, @extschema@.job_take_warning());
        IF s.error IS NOT NULL THEN
            UPDATE @extschema@.job_run r
            SET finished_at = clock_timestamp(), status = 'failed', error = s.error, sqlstate = s.error_sqlstate,
                warning = warned
            WHERE r.job = j.name AND r.run_id = rid;
            COMMIT;
            PERFORM pg_catalog.pg_advisory_unlock(k);
            RAISE EXCEPTION 'job "%" failed: %', j.name, s.error USING ERRCODE = s.error_sqlstate,
                DETAIL = pg_catalog.format('Run %s is logged in convbill.job_run. The failed step was rolled back; the %s step(s) before it (%s rows) stay committed.',
                                           rid, n_steps, rows);
        END IF;
        n_steps := n_steps + 1;
        rows := rows + s.rows;
        -- the progress commits together with the step's work
        UPDATE @extschema@.job_run r SET steps = n_steps, rows = run_job_proc.rows, warning = warned
        WHERE r.job = j.name AND r.run_id = rid;
        EXIT WHEN NOT j.repeat OR s.rows <= 0 OR clock_timestamp() >= t0 + j.time_budget;
        COMMIT;
    END LOOP;
    UPDATE @extschema@.job_run r SET finished_at = clock_timestamp(), status = 'succeeded'
    WHERE r.job = j.name AND r.run_id = rid;
    COMMIT;
    PERFORM pg_catalog.pg_advisory_unlock(k);
END $$;
COMMENT ON PROCEDURE @extschema@.run_job_proc(text, bigint) IS
    'run a job, committing after every step (CALL it outside a transaction block; pg_cron does); logged in job_run; a failed step is rolled back, logged, then raised';

-------------------------------------------------------------------------------
-- pg_cron registration
-------------------------------------------------------------------------------

-- pg_cron must be installed in this database (the one it runs in), 1.3 or later.
CREATE FUNCTION @extschema@.require_pg_cron()
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cron_db text := current_setting('cron.database_name', true);
    db text := current_database();
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        IF to_regprocedure('cron.schedule(text,text,text)') IS NULL
           AND to_regprocedure('cron.schedule(name,text,text)') IS NULL THEN
            RAISE EXCEPTION 'pg_cron % is too old for convbill''s jobs',
                (SELECT extversion FROM pg_extension WHERE extname = 'pg_cron')
                USING ERRCODE = '55000', HINT = 'Named jobs need pg_cron 1.3 or later: ALTER EXTENSION pg_cron UPDATE;';
        END IF;
        RETURN;
    END IF;
    IF cron_db IS NULL OR cron_db = '' THEN
        RAISE EXCEPTION 'pg_cron is not available: convbill''s jobs are scheduled with it'
            USING ERRCODE = '55000',
                  HINT = format('Add pg_cron to shared_preload_libraries, set cron.database_name = ''%s'', restart the server, then run CREATE EXTENSION pg_cron in database "%s".',
                                db, db);
    ELSIF cron_db <> db THEN
        RAISE EXCEPTION 'pg_cron is not installed in database "%": it runs from database "%" (cron.database_name)', db, cron_db
            USING ERRCODE = '55000',
                  HINT = format('Run the statements of convbill.schedule_jobs_sql() from database "%s" (psql -d %s -Atc ''SELECT convbill.schedule_jobs_sql()'' | psql -d %s), or set cron.database_name = ''%s'' and run CREATE EXTENSION pg_cron here.',
                                cron_db, db, cron_db, db);
    ELSE
        RAISE EXCEPTION 'pg_cron is not installed in database "%"', db
            USING ERRCODE = '55000', HINT = 'Run CREATE EXTENSION pg_cron in this database.';
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@.require_pg_cron() IS
    'internal: error 55000 with a hint unless pg_cron (1.3+) is installed in this database';

CREATE FUNCTION @extschema@.schedule_jobs(OUT job text, OUT jobid bigint, OUT schedule text)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j @extschema@.job;
BEGIN
    PERFORM @extschema@.require_pg_cron();
    -- jobs no longer enabled (or no longer in the catalog) go
    PERFORM cron.unschedule(c.jobid)
    FROM cron.job c
    WHERE c.jobname LIKE 'convbill-%' AND c.database = current_database() AND c.username = current_user
      AND NOT EXISTS (SELECT 1 FROM @extschema@.job x
                      WHERE x.enabled AND 'convbill-' || x.name = c.jobname);
    -- cron.schedule replaces a job of the same name and user in place
    FOR j IN SELECT * FROM @extschema@.job x WHERE x.enabled ORDER BY x.name LOOP
        job := j.name;
        schedule := j.schedule;
        jobid := cron.schedule('convbill-' || j.name, j.schedule,
                               format('CALL @extschema@.run_job_proc(%L)', j.name));
        RETURN NEXT;
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@.schedule_jobs() IS
    'register the enabled jobs of convbill.job in pg_cron as convbill-<job> (run as the calling role); idempotent: updates schedules, removes jobs no longer enabled';

CREATE FUNCTION @extschema@.unschedule_jobs()
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    PERFORM @extschema@.require_pg_cron();
    PERFORM cron.unschedule(c.jobid)
    FROM cron.job c
    WHERE c.jobname LIKE 'convbill-%' AND c.database = current_database() AND c.username = current_user;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
COMMENT ON FUNCTION @extschema@.unschedule_jobs() IS
    'remove convbill''s jobs (convbill-*) of this database and role from pg_cron; returns how many';

-- pg_cron in another database (cron.database_name): it can run jobs here, but
-- only statements run there can register them.
CREATE FUNCTION @extschema@.schedule_jobs_sql()
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT format(E'-- convbill jobs of database %s: run in pg_cron''s database (cron.database_name)\n', current_database())
        || format(E'SELECT cron.unschedule(jobid) FROM cron.job WHERE database = %L AND jobname LIKE ''convbill-%%'' AND jobname <> ALL (%L);\n',
                  current_database(),
                  (SELECT coalesce(array_agg('convbill-' || j.name || '@' || current_database()), '{}')
                   FROM @extschema@.job j WHERE j.enabled))
        || coalesce(string_agg(format(E'SELECT cron.schedule_in_database(%L, %L, %L, %L);\n',
                                      'convbill-' || j.name || '@' || current_database(), j.schedule,
                                      format('CALL @extschema@.run_job_proc(%L)', j.name), current_database()),
                               '' ORDER BY j.name), '')
    FROM @extschema@.job j WHERE j.enabled;
END;
COMMENT ON FUNCTION @extschema@.schedule_jobs_sql() IS
    'the SQL that registers this database''s enabled jobs in pg_cron when pg_cron lives in another database: run it there (jobs named convbill-<job>@<database>; idempotent)';
