-- Work for the jobs that pg_cron fires in test/jobs/jobs.sh: 4 pending usage
-- events (3 to rate at 0.60 + 0.60 + 1.20, one of an unknown account), a
-- session and a top-up that lapse after a millisecond (2 for 'expire'), and
-- the time the jobs were scheduled (runs after it were fired by pg_cron).
\set ON_ERROR_STOP on
SET client_min_messages = warning;
SET search_path = convbill, public;
INSERT INTO service VALUES ('voice', 'second');
INSERT INTO plan (code, name, currency, allowances) VALUES ('BARE', 'No allowances', 'EUR', '{}');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES
    ('BARE', 'voice', '{"price": "0.01", "increment": {"first": 60, "next": 60}}');
INSERT INTO account (account_id, external_ref, name, currency, credit_limit) VALUES (1, 'JOBS', 'jobs', 'EUR', 100);
SELECT count(subscribe(1, 'BARE', now() - interval '1 day'));
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
SELECT CASE WHEN g = 4 THEN 99 ELSE 1 END, 'sw', 'e' || g, 'voice', 30 * g, now() - g * interval '1 minute'
FROM generate_series(1, 4) g;
SELECT top_up(1, 5.00, 'pay-1') IS NOT NULL;
SELECT (reserve(1, 'voice', 's1', 60, '{}', '1 millisecond')).result;
SELECT top_up(1, 2.00, 'short', now() + interval '1 millisecond') IS NOT NULL;
DROP TABLE IF EXISTS public.jobs_probe;
CREATE TABLE public.jobs_probe AS SELECT clock_timestamp() AS scheduled_at;
