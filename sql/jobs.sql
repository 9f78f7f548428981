-- Jobs (SPEC section 7): the job catalog, run_job() and run_job_proc() with
-- their log in job_run, and schedule_jobs() where pg_cron is not installed
-- (this database: pg_cron runs from database "postgres").  Registration in
-- pg_cron, jobs fired by it and overlapping runs: test/jobs/jobs.sh.
-- a fresh, empty catalog for this file (pg_regress runs every file in one database)
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS convbill CASCADE;
CREATE EXTENSION convbill;
SET search_path = convbill, public;
SET TimeZone = 'UTC';
SET IntervalStyle = 'postgres';
\set SHOW_CONTEXT never

-- a run in a few columns, without timestamps
CREATE FUNCTION pg_temp.runs(p_job text)
RETURNS TABLE (job text, status text, steps integer, rows bigint, error text, sqlstate text, timed boolean)
LANGUAGE sql AS $$
    SELECT r.job, r.status, r.steps, r.rows, r.error, r.sqlstate,
           r.started_at <= r.finished_at AND r.finished_at <= clock_timestamp()
    FROM convbill.job_run r WHERE r.job = p_job ORDER BY r.run_id
$$;

-------------------------------------------------------------------------------
-- 1. The built-in jobs
-------------------------------------------------------------------------------
SELECT name, schedule, command, repeat, time_budget, enabled, builtin FROM job ORDER BY name;

-------------------------------------------------------------------------------
-- 2. Without pg_cron in this database: 55000 and what to do
-------------------------------------------------------------------------------
SELECT * FROM schedule_jobs();
\echo :LAST_ERROR_SQLSTATE
SELECT unschedule_jobs();
\echo :LAST_ERROR_SQLSTATE
-- the statements to run in pg_cron's database instead: enabled jobs only,
-- each named after this database too
UPDATE job SET enabled = false WHERE name = 'analytics';
SELECT schedule_jobs_sql();
UPDATE job SET enabled = true WHERE name = 'analytics';

-------------------------------------------------------------------------------
-- 3. Each built-in job's work
-------------------------------------------------------------------------------
INSERT INTO service VALUES ('voice', 'second');
INSERT INTO plan (code, name, currency, allowances) VALUES ('BARE', 'No allowances', 'EUR', '{}');
-- whole minutes at 0.01/s: 0.60 a minute
INSERT INTO plan_rate (plan_code, service, tariff) VALUES
    ('BARE', 'voice', '{"price": "0.01", "increment": {"first": 60, "next": 60}}');
INSERT INTO account (account_id, external_ref, name, currency, credit_limit) VALUES (1, 'JOBS', 'jobs', 'EUR', 100);
SELECT count(subscribe(1, 'BARE', now() - interval '70 days')) AS subscriptions;

-- rate: 3 calls of last month and one event of an unknown account are
-- pending; the first step handles all 4 (3 rated, 1 rejected), the second
-- finds none: 2 steps, 4 rows
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
SELECT a, 'sw', 'e' || g, 'voice', 30 * g, now() - interval '40 days' + g * interval '1 minute'
FROM generate_series(1, 4) g, LATERAL (SELECT CASE WHEN g = 4 THEN 99 ELSE 1 END AS a) x;
SELECT run_job('rate');
SELECT * FROM pg_temp.runs('rate');
SELECT external_id, status, reject_reason FROM usage_event ORDER BY external_id;
-- 30 s, 60 s, 90 s in whole minutes: 0.60 + 0.60 + 1.20
SELECT sum(amount) AS charged FROM charge WHERE account_id = 1;
-- nothing pending: one step, 0 rows
SELECT run_job('rate');
SELECT * FROM pg_temp.runs('rate');

-- expire: a session and a top-up that lapse after a millisecond: the first
-- step ends 1 session + zeroes 1 bucket = 2, the second finds none
SELECT top_up(1, 5.00, 'pay-1') IS NOT NULL AS topped_up;
SELECT (reserve(1, 'voice', 's1', 60, '{}', '1 millisecond')).result;
SELECT top_up(1, 2.00, 'short', now() + interval '1 millisecond') IS NOT NULL AS topped_up;
SELECT pg_sleep(0.01);
SELECT run_job('expire');
SELECT * FROM pg_temp.runs('expire');
SELECT status FROM reservation WHERE session_id = 's1';
SELECT origin, reference, balance FROM bucket WHERE account_id = 1 AND reference = 'short';

-- bill: run_billing_step($1, 2000), $1 the run's start: the periods of
-- account 1 that ended since it subscribed 70 days ago (2 or 3, by today's
-- date) are billed by the first step, which finds the run complete; the
-- second returns 0: 2 steps, rows = those periods; the calls of 40 days ago
-- make one invoice
SELECT run_job('bill') AS periods \gset
SELECT :periods = (SELECT count(*) FROM closed_period WHERE account_id = 1) AS rows_are_periods,
       :periods BETWEEN 2 AND 3 AS periods_since_subscribing,
       (SELECT count(*) FROM invoice) AS invoices;
SELECT job, status, steps, rows = :periods AS logged_rows, error, timed FROM pg_temp.runs('bill');
-- under run_job_proc a bill run commits after every step: a copy of the job
-- billing one account per step, over 2 more accounts with a monthly fee and
-- the same periods as account 1, makes one invoice per step, each in its own
-- transaction (its own xmin), and one step more that finds the run complete
INSERT INTO plan (code, name, currency, recurring_fee) VALUES ('FEE', 'Fee', 'EUR', 5.00);
INSERT INTO account (account_id, external_ref, name, currency) VALUES (2, 'JOBS-2', 'jobs 2', 'EUR'), (3, 'JOBS-3', 'jobs 3', 'EUR');
SELECT count(subscribe(a, 'FEE', now() - interval '70 days')) AS subscriptions FROM generate_series(2, 3) a;
INSERT INTO job (name, schedule, command, repeat) VALUES
    ('bill_one', '* * * * *', 'SELECT convbill.run_billing_step($1, 1)', true);
CALL run_job_proc('bill_one') \gset bill_one_
SELECT status, rows = 2 * :periods AND rows = :bill_one_rows AS every_period, steps = rows + 1 AS one_per_step, error
FROM job_run WHERE job = 'bill_one';
SELECT count(*) = 2 * :periods AS one_invoice_per_period,
       count(DISTINCT xmin::text) = count(*) AS each_committed_alone
FROM invoice WHERE account_id IN (2, 3);
DELETE FROM job WHERE name = 'bill_one';

-- analytics and anomaly call functions by name at run time: they succeed, or
-- fail with 42883 (logged, no exception) while their function does not exist
SET client_min_messages = error;     -- no WARNING while the functions are missing
SELECT run_job('analytics') IS NOT NULL AS analytics_ran, run_job('anomaly') IS NOT NULL AS anomaly_ran \gset
SET client_min_messages = warning;
SELECT j.name,
       CASE WHEN to_regproc('convbill.' || f) IS NULL
            THEN r.status = 'failed' AND r.sqlstate = '42883' AND r.error LIKE '%' || f || '% does not exist'
                 AND NOT ran
            ELSE r.status = 'succeeded' AND r.error IS NULL AND ran END AS as_expected
FROM (VALUES ('analytics', 'refresh_analytics', :'analytics_ran'::boolean),
             ('anomaly', 'detect_anomalies', :'anomaly_ran'::boolean)) j(name, f, ran),
     LATERAL (SELECT * FROM job_run r WHERE r.job = j.name) r
ORDER BY 1;

-------------------------------------------------------------------------------
-- 4. A step that fails is rolled back, logged, and earlier steps stay
-------------------------------------------------------------------------------
-- a queue worked off 2 rows per step; row 4 is poison (division by zero)
CREATE TABLE public.q (id integer PRIMARY KEY, poison boolean NOT NULL DEFAULT false);
INSERT INTO job (name, schedule, command, repeat) VALUES
    ('queue', '* * * * *',
     'WITH d AS (DELETE FROM public.q WHERE id IN (SELECT id FROM public.q ORDER BY id LIMIT 2) RETURNING poison)
      SELECT count(*) / (1 - coalesce(max(poison::int), 0)) FROM d', true);
INSERT INTO public.q SELECT g, g = 4 FROM generate_series(1, 5) g;
-- run_job: step 1 deletes 1 and 2; step 2 (3 and 4) fails and is rolled back:
-- NULL with a WARNING, the failure logged with 1 step and 2 rows
SELECT run_job('queue');
SELECT * FROM pg_temp.runs('queue');
SELECT id FROM public.q ORDER BY id;
-- run_job_proc: the same, committed step by step, and the error is raised
-- after the log row is committed
DELETE FROM public.q;
INSERT INTO public.q SELECT g, g = 4 FROM generate_series(1, 5) g;
CALL run_job_proc('queue');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pg_temp.runs('queue');
SELECT id FROM public.q ORDER BY id;
-- without the poison: 3 and 4, then 5, then none: 3 steps, 3 rows
UPDATE public.q SET poison = false;
CALL run_job_proc('queue');
SELECT * FROM pg_temp.runs('queue');
SELECT count(*) AS left_in_queue FROM public.q;

-- a run still 'running' when the job's lock is free belongs to a session
-- that ended: the next run marks it interrupted
INSERT INTO job_run (job, started_at, status) VALUES ('queue', now() - interval '1 hour', 'running');
CALL run_job_proc('queue');
SELECT status, error, finished_at IS NULL AS unfinished FROM job_run WHERE job = 'queue' ORDER BY run_id;

-- $1 is the run's start time, the same in every step: a job that records it
-- and returns 3, 2, 1, 0 (the rows before its insert: 0, 1, 2, 3)
CREATE TABLE public.seen (run_start timestamptz NOT NULL);
INSERT INTO job (name, schedule, command, repeat) VALUES
    ('stamp', '* * * * *',
     'WITH i AS (INSERT INTO public.seen VALUES ($1) RETURNING 1) SELECT 3 - count(*) FROM public.seen', true);
CALL run_job_proc('stamp');
SELECT * FROM pg_temp.runs('stamp');
SELECT count(*) AS steps_seen, count(DISTINCT run_start) AS distinct_starts,
       min(run_start) = (SELECT started_at FROM job_run WHERE job = 'stamp') AS is_run_start
FROM public.seen;

-- what a step reports with job_warn() lands in its run's job_run.warning
-- (pg_cron keeps no WARNING): a job whose steps warn on steps 1 and 3 of 4;
-- a step rolled back by its error takes its report back; a report made
-- before the run (outside any job) is not the run's
CREATE TABLE public.w (n int NOT NULL);
INSERT INTO job (name, schedule, command, repeat) VALUES
    ('warny', '* * * * *',
     'WITH i AS (INSERT INTO public.w SELECT count(*) + 1 FROM public.w RETURNING n)
      SELECT CASE WHEN n = 4 THEN 0 ELSE 1 END
             + CASE WHEN n % 2 = 1 THEN 0 * length(convbill.job_warn(''step '' || n)::text) ELSE 0 END
      FROM i', true);
SELECT job_warn('left over from before');
CALL run_job_proc('warny');
SELECT status, steps, rows, warning FROM job_run WHERE job = 'warny';
TRUNCATE public.w;
SELECT run_job('warny');
SELECT status, steps, rows, warning FROM job_run WHERE job = 'warny' ORDER BY run_id;
-- an error after the report: the run fails, the failed step's report is gone
INSERT INTO job (name, schedule, command) VALUES
    ('warnfail', '* * * * *', 'SELECT 1 / (length(convbill.job_warn(''doomed'')::text) - length(convbill.job_warn(''doomed'')::text))');
SELECT run_job('warnfail');
SELECT status, error, warning FROM job_run WHERE job = 'warnfail';

-------------------------------------------------------------------------------
-- 5. repeat stops when the time budget is spent
-------------------------------------------------------------------------------
-- every step returns 1 after 20 ms or more; with a 100 ms budget the run
-- repeats (a step takes far less than 100 ms) and stops after at most 5
-- steps (the check after step k sees >= 20k ms)
INSERT INTO job (name, schedule, command, repeat, time_budget) VALUES
    ('tick', '* * * * *', 'SELECT 1 FROM pg_sleep(0.02)', true, '100 milliseconds');
CALL run_job_proc('tick');
SELECT status, steps BETWEEN 2 AND 5 AS steps_within_budget, rows = steps AS rows_counted,
       finished_at - started_at >= interval '100 milliseconds' AS spent_budget
FROM job_run WHERE job = 'tick';

-------------------------------------------------------------------------------
-- 6. Bad calls and bad jobs
-------------------------------------------------------------------------------
SELECT run_job('nope');
\echo :LAST_ERROR_SQLSTATE
CALL run_job_proc('nope');
\echo :LAST_ERROR_SQLSTATE
-- run_job_proc commits: not inside a transaction block (nothing is logged)
BEGIN;
CALL run_job_proc('tick');
ROLLBACK;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS tick_runs FROM job_run WHERE job = 'tick';
-- run_job works there, and its log goes with the transaction
BEGIN;
SELECT run_job('tick') > 0 AS ran;
SELECT count(*) AS tick_runs FROM job_run WHERE job = 'tick';
ROLLBACK;
INSERT INTO job (name, schedule, command) VALUES ('Bad Name', '* * * * *', 'SELECT 1');
INSERT INTO job (name, schedule, command, time_budget) VALUES ('zero', '* * * * *', 'SELECT 1', '0 s');
-- a command that returns no row counts 0; one that returns text fails
INSERT INTO job (name, schedule, command) VALUES
    ('empty', '* * * * *', 'SELECT 1 WHERE false'), ('texty', '* * * * *', 'SELECT ''many''');
SELECT run_job('empty'), run_job('texty');
SELECT * FROM pg_temp.runs('empty') UNION ALL SELECT * FROM pg_temp.runs('texty');
-- user-added jobs are dumped, built-in ones are created by CREATE EXTENSION
SELECT c.relname, d.cfg
FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS d(cfg_oid, cfg)
JOIN pg_class c ON c.oid = d.cfg_oid
WHERE e.extname = 'convbill' AND c.relname LIKE 'job%' ORDER BY 1;

-------------------------------------------------------------------------------
-- 6. Retention: a job's runs older than convbill.job_run_retention (30 days
-- by default) go when the job runs again; younger runs and other jobs' stay.
-------------------------------------------------------------------------------
SHOW convbill.job_run_retention;
INSERT INTO job_run (job, started_at, finished_at, status, error) VALUES
    ('empty', now() - interval '45 days', now() - interval '45 days', 'succeeded', NULL),
    ('empty', now() - interval '31 days', now() - interval '31 days', 'failed', 'boom'),
    ('empty', now() - interval '29 days', now() - interval '29 days', 'succeeded', NULL),
    ('texty', now() - interval '45 days', now() - interval '45 days', 'succeeded', NULL);
CREATE FUNCTION pg_temp.ages() RETURNS TABLE (job text, runs bigint, over_1d bigint, over_30d bigint)
LANGUAGE sql AS $$
    SELECT r.job, count(*), count(*) FILTER (WHERE r.started_at < now() - interval '1 day'),
           count(*) FILTER (WHERE r.started_at < now() - interval '30 days')
    FROM convbill.job_run r WHERE r.job IN ('empty', 'texty') GROUP BY r.job ORDER BY r.job
$$;
-- empty: 1 run of today + 3 inserted; texty: 1 of today + 1 inserted
SELECT * FROM pg_temp.ages();
-- empty runs: its 45- and 31-day-old runs go, the 29-day-old one stays (and
-- a new run of today); texty's old run stays (texty did not run)
SELECT run_job('empty');
SELECT * FROM pg_temp.ages();
-- 0 keeps every run
SET convbill.job_run_retention = 0;
INSERT INTO job_run (job, started_at, finished_at, status) VALUES
    ('empty', now() - interval '400 days', now() - interval '400 days', 'succeeded');
SELECT run_job('empty');
SELECT * FROM pg_temp.ages();
-- a duration: '1d' keeps one day (the 29- and 400-day-old runs go)
SET convbill.job_run_retention = '1d';
SHOW convbill.job_run_retention;
SELECT run_job('empty');
SELECT * FROM pg_temp.ages();
RESET convbill.job_run_retention;

-- a step's reports are joined, not replaced; the bill job reports accounts
-- it could not bill because their tax code has no rate (pg_cron keeps no
-- WARNING: before, the run said succeeded and nothing else, every hour)
INSERT INTO job (name, schedule, command) VALUES
    ('warntwice', '* * * * *', 'SELECT length(convbill.job_warn(''one'')::text) + length(convbill.job_warn(''two'')::text)');
SELECT run_job('warntwice');
SELECT status, warning FROM job_run WHERE job = 'warntwice';
INSERT INTO plan (code, name, currency, recurring_fee) VALUES ('NOTAX', 'No tax', 'EUR', 10);
INSERT INTO account (account_id, external_ref, name, currency, tax_code) VALUES (990, 'NOTAX-990', 'No tax', 'EUR', 'NOPE');
SELECT subscribe(990, 'NOTAX', '2026-09-01 00:00+00') > 0 AS subscribed;
SET client_min_messages = error;
SELECT run_job('bill') >= 0 AS ran;
RESET client_min_messages;
SELECT status, warning FROM job_run WHERE job = 'bill' ORDER BY run_id DESC LIMIT 1;
SELECT count(*) AS invoices_990 FROM invoice WHERE account_id = 990;

DROP TABLE public.q, public.seen;
