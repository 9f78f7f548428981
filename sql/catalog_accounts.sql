-- Plans, rates, accounts, subscriptions and billing periods: what the catalog
-- accepts, what it refuses (with an SQLSTATE and a message naming the culprit).
-- a fresh, empty catalog for this file (pg_regress runs every file in one database)
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS convbill CASCADE;
CREATE EXTENSION convbill;
RESET client_min_messages;
SET search_path = convbill, public;
SET TimeZone = 'UTC';
\set VERBOSITY terse
\set SHOW_CONTEXT never

INSERT INTO service VALUES ('voice', 'second', 'mobile voice'), ('data', 'byte', 'mobile data');
INSERT INTO plan VALUES ('M10', 'Mobile 10', 'EUR', 10, 'month', 'arrears', '{"voice": 3600, "data": 1073741824}');
INSERT INTO plan (code, name, currency, recurring_fee) VALUES ('US5', 'US plan', 'USD', 5);

-- plans: allowances must name services and be non-negative; currency must be ISO 4217
INSERT INTO plan VALUES ('bad1', 'x', 'EUR', 10, 'month', 'arrears', '{"fax": 3}');
INSERT INTO plan VALUES ('bad2', 'x', 'EUR', 10, 'month', 'arrears', '{"voice": -1}');
INSERT INTO plan VALUES ('bad3', 'x', 'EUR', 10, 'month', 'arrears', '[1]');
INSERT INTO plan (code, name, currency) VALUES ('bad4', 'x', 'EURO');
INSERT INTO plan (code, name, currency, fee_interval) VALUES ('bad5', 'x', 'EUR', 'week');

-- plan rates: the tariff must use the plan's currency and the service's unit;
-- validity of one (plan, service, zone) must not overlap
INSERT INTO plan_rate (plan_code, service, zone, tariff) VALUES ('M10', 'voice', 'IRSF', '{"price": "1.5"}');
INSERT INTO destination VALUES ('882', 'IRSF');
INSERT INTO plan_rate (plan_code, service, zone, tariff) VALUES
    ('M10', 'voice', NULL, '{"price": "0.002", "currency": "EUR", "unit": "second"}'),
    ('M10', 'voice', 'IRSF', '{"price": "1.5"}');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES ('M10', 'data', '{"price": "0.01", "currency": "USD"}');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES ('M10', 'data', '{"price": "0.01", "unit": "MB"}');
INSERT INTO plan_rate (plan_code, service, tariff, valid_from) VALUES ('M10', 'voice', '{"price": "0.003"}', '2026-06-01');
-- a new price from a date is a new row once the old one is closed
UPDATE plan_rate SET valid_until = '2026-06-01' WHERE plan_code = 'M10' AND service = 'voice' AND zone IS NULL;
INSERT INTO plan_rate (plan_code, service, tariff, valid_from) VALUES ('M10', 'voice', '{"price": "0.003"}', '2026-06-01');
SELECT plan_code, service, zone, tariff, valid_from, valid_until FROM plan_rate ORDER BY zone NULLS FIRST, valid_from;

-- accounts: IANA zones, billing day 1..28, no parent cycles, children billed to
-- a parent in its currency
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day) VALUES
    (1, 'CORP-1', 'Acme Corp', 'EUR', 'Europe/Berlin', 1),
    (2, 'KIRI-1', 'Kiritimati Shop', 'EUR', 'Pacific/Kiritimati', 28),
    (3, 'PAGO-1', 'Pago Pago Dive', 'USD', 'Pacific/Pago_Pago', 15);
INSERT INTO account (account_id, external_ref, name, currency, timezone, parent_id, bill_to_parent)
    VALUES (4, 'CORP-1-SIM1', 'Acme SIM 1', 'EUR', 'Europe/Berlin', 1, true);
-- a child billed to its parent shares the parent's periods (zone and billing day)
INSERT INTO account (account_id, external_ref, name, currency, parent_id, bill_to_parent)
    VALUES (17, 'CORP-1-SIM2', 'Acme SIM 2', 'EUR', 1, true);
INSERT INTO account (account_id, external_ref, name, currency, timezone) VALUES (10, 'X1', 'x', 'EUR', 'Mars/Olympus_Mons');
INSERT INTO account (account_id, external_ref, name, currency, billing_day) VALUES (11, 'X2', 'x', 'EUR', 29);
-- a POSIX spec is not a place: "UTC+14" means UTC-14
INSERT INTO account (account_id, external_ref, name, currency, timezone) VALUES (16, 'X6', 'x', 'EUR', 'UTC+14');
INSERT INTO account (account_id, external_ref, name, currency) VALUES (12, 'X3', 'x', 'eur');
INSERT INTO account (account_id, external_ref, name, currency, parent_id, bill_to_parent) VALUES (13, 'X4', 'x', 'USD', 1, true);
INSERT INTO account (account_id, external_ref, name, currency, bill_to_parent) VALUES (14, 'X5', 'x', 'EUR', true);
INSERT INTO account (account_id, external_ref, name, currency) VALUES (15, 'CORP-1', 'duplicate ref', 'EUR');
UPDATE account SET parent_id = 4 WHERE account_id = 1;
UPDATE account SET parent_id = 1 WHERE account_id = 1;

-- subscriptions: same currency, no overlap with the same plan, change_plan
-- ends one and continues on another from the same instant
SELECT subscribe(1, 'M10', '2026-01-10 09:00+00') AS first_sub \gset
SELECT subscribe(1, 'M10', '2026-02-10');
SELECT subscribe(1, 'US5', '2026-02-10');
SELECT subscribe(3, 'US5', '2026-02-10', 3) AS us_sub \gset
SELECT change_plan(:first_sub, 'M10', '2026-01-01');
SELECT change_plan(:first_sub, 'M10', '2026-03-15') AS second_sub \gset
SELECT unsubscribe(:second_sub, '2026-05-01');
SELECT unsubscribe(:second_sub, '2026-06-01');
SELECT unsubscribe(999999);
SELECT account_id, plan_code, quantity, started_at, ended_at, replaces_id IS NOT NULL AS is_change
FROM subscription ORDER BY account_id, started_at;

-- billing periods: [local midnight of billing_day, same day next month) in the account's zone
SELECT billing_period('2026-03-29 12:00+00', 'Europe/Berlin', 1) AS berlin_dst_march,
       billing_period('2026-10-25 12:00+00', 'Europe/Berlin', 1) AS berlin_dst_october;
-- UTC+14: 2026-02-27 23:30 UTC is already the 28th in Kiritimati
SELECT account_period(2, '2026-02-27 23:30+00') AS kiritimati_day28,
       account_period(2, '2026-02-27 09:59+00') AS kiritimati_day27;
-- UTC-11: 2026-03-15 10:59 UTC is still the 14th in Pago Pago
SELECT account_period(3, '2026-03-15 10:59+00') AS pago_before, account_period(3, '2026-03-15 11:00+00') AS pago_after;
-- billing day 28 through February
SELECT billing_period(d, 'UTC', 28) FROM unnest(ARRAY['2026-02-27 23:59:59+00', '2026-02-28 00:00+00', '2026-03-27 12:00+00']::timestamptz[]) d;
SELECT account_period(999, now()) IS NULL AS unknown_account;
-- where clocks go back at midnight, local midnight happens twice; every
-- instant still falls in exactly one period, contiguous with the next
SELECT d, billing_period(d, 'America/Havana', 1) @> d AS contains_it, billing_period(d, 'America/Havana', 1)
FROM unnest(ARRAY['2026-11-01 03:59+00', '2026-11-01 04:30+00', '2026-11-01 05:00+00']::timestamptz[]) d;
SELECT is_time_zone(z) AS ok, z FROM unnest(ARRAY['Europe/Berlin', 'europe/berlin', 'Etc/GMT+5', 'UTC+14', 'XYZ+5']) z;

-- rules that held when a row was written hold when the other side changes:
-- a parent's currency, zone or billing day with a sub-account billed to it
-- (22023), a plan's currency with rates or subscribers, a service's unit
-- with rates pricing it
INSERT INTO account (account_id, external_ref, name, currency) VALUES (700, 'P-700', 'Parent', 'EUR');
INSERT INTO account (account_id, external_ref, name, currency, parent_id, bill_to_parent)
VALUES (701, 'C-701', 'Child', 'EUR', 700, true);
UPDATE account SET billing_day = 15 WHERE account_id = 700;
\echo :LAST_ERROR_SQLSTATE
UPDATE account SET currency = 'USD' WHERE account_id = 700;
\echo :LAST_ERROR_SQLSTATE
SELECT subscribe(700, 'M10', '2026-01-01') > 0 AS subscribed;
UPDATE plan SET currency = 'USD' WHERE code = 'M10';
\echo :LAST_ERROR_SQLSTATE
INSERT INTO plan_rate (plan_code, service, tariff) VALUES ('US5', 'data', '{"price": "0.000001", "unit": "byte"}');
UPDATE service SET unit = 'MB' WHERE code = 'data';
\echo :LAST_ERROR_SQLSTATE
-- a change of parents takes locks (all parents; the family) that make two concurrent changes see
-- each other (each could otherwise close a cycle the other's check missed)
BEGIN;
UPDATE account SET parent_id = NULL, bill_to_parent = false WHERE account_id = 701;
UPDATE account SET parent_id = 700 WHERE account_id = 701;
SELECT count(*) AS parent_locks FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
ROLLBACK;
-- an account's zone is a place's: not the server's (localtime) nor a template
SELECT is_time_zone('localtime') AS localtime, is_time_zone('posixrules') AS posixrules, is_time_zone('Factory') AS factory,
       is_time_zone('posix/Factory') AS posix_factory, is_time_zone('posix/Europe/Berlin') AS posix_berlin;
-- A bulk load of sub-accounts under many parents in one transaction: each
-- family's check takes one of 128 locks (by parent_id modulo 128), so 5,000
-- parents and their 5,000 children go in one statement (one lock per parent
-- ran out of the lock table: 53200, out of shared memory); the transaction
-- holds at most 128 family locks and the parents' one
BEGIN;
INSERT INTO account (account_id, external_ref, name, currency)
SELECT 100000 + g, 'bulk-parent-' || g, 'Bulk parent', 'EUR' FROM generate_series(1, 5000) g;
INSERT INTO account (account_id, external_ref, name, currency, parent_id, bill_to_parent)
SELECT 200000 + g, 'bulk-child-' || g, 'Bulk child', 'EUR', 100000 + g, true FROM generate_series(1, 5000) g;
SELECT count(*) AS children FROM account WHERE parent_id > 100000 AND bill_to_parent;
SELECT count(*) <= 129 AS bounded_advisory_locks FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
ROLLBACK;

-- Money columns refuse 'NaN' and 'Infinity' (in PostgreSQL both are >= 0,
-- and scale() of either is NULL, so a bare ">= 0" let them in): a plan fee of
-- NaN stopped the whole bill run for every account; a fixed discount of NaN
-- or Infinity silently took whole sections.  23514 (check_violation), and
-- the amounts convbill keeps are below 1e15.
INSERT INTO plan (code, name, currency, recurring_fee) VALUES ('NANFEE', 'nan', 'EUR', 'NaN');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO plan (code, name, currency, recurring_fee) VALUES ('INFFEE', 'inf', 'EUR', 'Infinity');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO plan (code, name, currency, recurring_fee) VALUES ('BIGFEE', 'big', 'EUR', 1e15);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO discount (account_id, amount) VALUES (1, 'NaN');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO discount (account_id, amount) VALUES (1, 'Infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS accepted FROM plan WHERE code IN ('NANFEE', 'INFFEE', 'BIGFEE');
