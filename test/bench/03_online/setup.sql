-- test/bench/03_online/setup.sql — the data of test/bench/03_online.sh.
--
-- 10,000 prepaid accounts (1..10000) and one hot account (10001), all EUR,
-- UTC, on one plan: voice by the second (60/1 increments, 0.002/s), sms
-- (0.09) and api calls (0.0004), with 120 voice seconds and 10 sms a month
-- as plan allowances, so sessions and events use allowances first and then
-- money; 1,000,000 EUR topped up each (nobody runs out).  The allowance
-- buckets of the current period are granted up front and the tables
-- analyzed, as on a system that has been running.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS convbill CASCADE;
DROP TABLE IF EXISTS bench03_result, bench03_charge_baseline, bench03_floor_charge, bench03_floor_answer, bench03_floor_ledger, bench03_floor_bucket;
DROP PROCEDURE IF EXISTS bench03_events(int, int, int, double precision), bench03_baseline(int, int, int, double precision), bench03_floor(int, int, int, double precision);
CREATE EXTENSION convbill;

INSERT INTO convbill.service (code, unit, description) VALUES
    ('voice', 'second', 'calls'), ('sms', 'message', 'text messages'), ('api', 'call', 'API calls');
INSERT INTO convbill.plan (code, name, currency, allowances)
VALUES ('B03', 'bench 03', 'EUR', '{"voice": 120, "sms": 10}');
INSERT INTO convbill.plan_rate (plan_code, service, tariff) VALUES
    ('B03', 'voice', '{"price": "0.002", "increment": {"first": 60, "next": 1}, "rounding": {"decimals": 4}}'),
    ('B03', 'sms', '{"price": "0.09", "rounding": {"decimals": 2}}'),
    ('B03', 'api', '{"price": "0.0004", "rounding": {"decimals": 6}}');

INSERT INTO convbill.account (account_id, external_ref, name, currency)
SELECT i, 'B03-' || i, 'bench 03 #' || i, 'EUR' FROM generate_series(1, 10001) i;
INSERT INTO convbill.subscription (account_id, plan_code, started_at)
SELECT i, 'B03', now() - interval '1 year' FROM generate_series(1, 10001) i;
SELECT count(convbill.top_up(i, 1000000, 'bench03')) AS topped_up FROM generate_series(1, 10001) i;
SELECT convbill.ensure_plan_allowances(array_agg(a.account_id),
                                       array_agg(lower(convbill.open_period(a.account_id, now()))))
       AS plan_buckets
FROM convbill.account a;

CREATE TABLE bench03_result (
    section text NOT NULL,
    what    text NOT NULL,
    round   int NOT NULL,
    value   double precision NOT NULL
);
VACUUM ANALYZE;
