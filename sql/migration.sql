-- Migration from a legacy BSS (SPEC section 7): a messy batch COPYed into the
-- all-text staging tables, load_staged's dry run (no trace), the load (what
-- it created, every reject with its reason, the reconciliation), a re-run
-- (nothing twice) and a fixed reject retried; the cutover (legacy
-- subscriptions billed from it, fees the legacy system billed ahead not
-- billed again).  Every expected number is worked out by hand in the comments.
-- a fresh, empty catalog for this file (pg_regress runs every file in one database)
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS convbill CASCADE;
CREATE EXTENSION convbill;
RESET client_min_messages;
SET search_path = convbill, public;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, MDY';
\set VERBOSITY terse
\set SHOW_CONTEXT never

CREATE FUNCTION pg_temp.fails(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
-- what the real tables hold, to prove a dry run or a re-run changed nothing
CREATE FUNCTION pg_temp.footprint() RETURNS text LANGUAGE sql AS $$
    SELECT format('accounts %s, subscriptions %s, buckets %s, ledger %s (sum %s), charges %s (sum %s), closed periods %s, legacy cutovers %s, legacy fees %s',
                  (SELECT count(*) FROM convbill.account), (SELECT count(*) FROM convbill.subscription),
                  (SELECT count(*) FROM convbill.bucket), (SELECT count(*) FROM convbill.ledger),
                  (SELECT sum(amount) FROM convbill.ledger), (SELECT count(*) FROM convbill.charge),
                  (SELECT sum(amount) FROM convbill.charge), (SELECT count(*) FROM convbill.closed_period),
                  (SELECT count(*) FROM convbill.legacy_cutover), (SELECT count(*) FROM convbill.legacy_fee))
$$;
CREATE FUNCTION pg_temp.stage_states() RETURNS TABLE (entity text, load_status text, rows bigint, with_reason bigint, with_id bigint)
LANGUAGE sql AS $$
    SELECT 'accounts', load_status, count(*), count(reject_reason), count(account_id) FROM convbill.stage_account GROUP BY 2
    UNION ALL SELECT 'subscriptions', load_status, count(*), count(reject_reason), count(subscription_id) FROM convbill.stage_subscription GROUP BY 2
    UNION ALL SELECT 'balances', load_status, count(*), count(reject_reason), count(entry_id) FROM convbill.stage_balance GROUP BY 2
    UNION ALL SELECT 'charges', load_status, count(*), count(reject_reason), count(charge_id) FROM convbill.stage_charge GROUP BY 2
    ORDER BY 1, 2
$$;

-- the new system's catalog, and two accounts created before the migration
INSERT INTO service VALUES ('voice', 'second', 'mobile voice');
INSERT INTO plan (code, name, currency, recurring_fee) VALUES
    ('MOB-EUR', 'Mobile', 'EUR', 10), ('MOB-USD', 'Mobile US', 'USD', 12);
INSERT INTO account (account_id, external_ref, name, currency, timezone) VALUES
    (1, 'EXIST-1', 'Existing One', 'EUR', 'Europe/Berlin'),
    (2, 'EXIST-2', 'Existing Two', 'EUR', 'Europe/Berlin');
SELECT setval('account_account_id_seq', 2);
SELECT top_up(2, 5, 'PP-OLD') > 0 AS native_top_up;
SELECT add_charge(2, 3.00, 'Late fee', 'one_time', '2026-11-22', 'REF-X') > 0 AS native_charge;

-- the legacy system billed up to the period containing the cutover (here
-- mid-November 2026: the loaded accounts are billed from their November
-- periods on; default: now())
SET convbill_migration.billed_until = '2026-11-15 12:00+00';

-- the batch name comes from the file or from convbill_migration.batch; without either, COPY stops at once
SELECT pg_temp.fails($$INSERT INTO stage_account (external_ref) VALUES ('X')$$);

-- accounts: a grandchild and a child before their parent, and every kind of bad row
-- (lines number the staged rows in arrival order; the refused INSERT above took line 1)
SET convbill_migration.batch = 'legacy-2026-11';
COPY stage_account (external_ref, name, currency, timezone, billing_day, parent_ref, bill_to_parent, credit_limit, tax_code, status) FROM stdin WITH (FORMAT csv);
C-121,Acme Ops team,EUR,Europe/Berlin,1,C-101,no,,DE19,
C-101,Acme Berlin SIM,EUR,Europe/Berlin,1,C-100,yes,,DE19,
C-100,Acme GmbH,EUR,Europe/Berlin,1,,,500.00,DE19,active
C-102,Kiri Shop,EUR,Pacific/Kiritimati,28,,,,,suspended
C-103,"  Tokyo Ramen  ",JPY,Asia/Tokyo, 15 ,,,,,
C-104,Euro Typo,EURO,Europe/Berlin,1,,,,,
C-105,Mars Base,EUR,Mars/Olympus_Mons,1,,,,,
C-106,Day 29,EUR,Europe/Berlin,29,,,,,
C-107,Day first,EUR,,first,,,,,
C-108,Dup A,EUR,,,,,,,
C-108,Dup B,EUR,,,,,,,
EXIST-1,Already here,EUR,,,,,,,
C-109,Loop A,EUR,,,C-110,,,,
C-110,Loop B,EUR,,,C-109,,,,
C-111,Orphan,EUR,,,C-999,,,,
C-112,Child of the typo,EUR,Europe/Berlin,1,C-104,true,,,
C-113,US SIM on a EUR bill,USD,Europe/Berlin,1,C-100,true,,,
C-114,,EUR,,,,,,,
C-115,Negative credit,EUR,,,,,-5,,
C-116,Comma credit,EUR,,,,,"1.000,00",,
C-117,NY Corp,USD,America/New_York,5,,,,,
C-118,Closed Ltd,EUR,Europe/Berlin,1,,,,,closed
C-119,Weird status,EUR,,,,,,,deleted
C-120,Child of an existing account,EUR,Europe/Berlin,1,EXIST-2,true,,,
C-122,Maybe billed,EUR,,,,maybe,,,
C-123,Billed to nobody,EUR,,,,true,,,
\.
RESET convbill_migration.batch;

-- the other files carry their batch in a column
COPY stage_subscription (batch, account_ref, plan_code, started_at, ended_at, quantity) FROM stdin WITH (FORMAT csv);
legacy-2026-11,C-100,MOB-EUR,2026-10-01 00:00+02,,3
legacy-2026-11,C-101,MOB-EUR,2026-10-15,,
legacy-2026-11,C-102,MOB-EUR,2026-11-01,2026-11-20,1
legacy-2026-11,C-117,MOB-EUR,2026-11-01,,
legacy-2026-11,C-104,MOB-EUR,2026-11-01,,
legacy-2026-11,C-999,MOB-EUR,2026-11-01,,
legacy-2026-11,C-103,GOLD,2026-11-01,,
legacy-2026-11,C-102,MOB-EUR,2026-11-10,,
legacy-2026-11,C-100,MOB-EUR,2026-02-30,,
legacy-2026-11,C-120,MOB-EUR,2026-11-01,2026-10-01,
legacy-2026-11,C-120,MOB-EUR,2026-11-01,,0
legacy-2026-11,C-120,MOB-EUR,2026-11-01,,two
legacy-2026-11,EXIST-1,MOB-EUR,2026-11-01,,
legacy-2026-11,C-118,MOB-EUR,2026-11-01,,
legacy-2026-11,C-117,MOB-USD,2026-11-01 08:00 America/New_York,,
legacy-2026-11,,MOB-EUR,2026-11-01,,
\.

COPY stage_balance (batch, account_ref, amount, currency, reference, valid_until) FROM stdin WITH (FORMAT csv);
legacy-2026-11,C-100,250.00,EUR,PP-1001,
legacy-2026-11,C-102,19.99,EUR,PP-1002,2099-12-31
legacy-2026-11,C-103,1500,JPY,PP-1003,
legacy-2026-11,C-104,30.00,EUR,PP-1004,
legacy-2026-11,C-117,"12,50",USD,PP-1005,
legacy-2026-11,C-117,40.00,EUR,PP-1006,
legacy-2026-11,C-101,5.00,EUR,PP-1007,
legacy-2026-11,C-103,10.5,JPY,PP-1008,
legacy-2026-11,C-100,-20.00,EUR,PP-1009,
legacy-2026-11,C-118,15.00,EUR,PP-1010,
legacy-2026-11,C-117,75.25,USD,PP-1011,
legacy-2026-11,C-102,5.00,EUR,PP-DUP,
legacy-2026-11,C-102,5.00,EUR,PP-DUP,
legacy-2026-11,EXIST-2,5.00,EUR,PP-OLD,
legacy-2026-11,EXIST-2,7.00,EUR,,
legacy-2026-11,C-102,,EUR,PP-1016,
legacy-2026-11,C-100,1.00,,PP-1017,
legacy-2026-11,C-103,2000,JPY,PP-1018,2020-01-01
\.

COPY stage_charge (batch, account_ref, amount, currency, description, kind, occurred_at, reference) FROM stdin WITH (FORMAT csv);
legacy-2026-11,C-100,49.90,EUR,Router (legacy invoice 77),one_time,2026-11-20 10:00+01,INV-77-1
legacy-2026-11,C-101,-5.00,EUR,Goodwill credit,adjustment,2026-11-21,INV-77-2
legacy-2026-11,C-103,300,JPY,Installation,,,L-3
legacy-2026-11,C-102,abc,EUR,Bad amount,one_time,2026-11-20,L-4
legacy-2026-11,C-102,10.00,EUR,Monthly fee,recurring,2026-11-20,L-5
legacy-2026-11,C-102,10.00,EUR,Bad date,one_time,2026-13-01,L-6
legacy-2026-11,C-117,10.00,EUR,Wrong currency,,2026-11-20,L-7
legacy-2026-11,C-118,10.00,EUR,Closed account,,2026-11-20,L-8
legacy-2026-11,C-112,10.00,EUR,Child of the typo,,2026-11-20,L-9
legacy-2026-11,EXIST-2,3.00,EUR,Late fee,,2026-11-22,REF-X
legacy-2026-11,C-117,20.00,USD,Support hours,,2026-11-23 12:00 America/New_York,L-11
legacy-2026-11,C-100,12.34,EUR,Cable,,2026-11-24,
\.

-- a second, later batch, staged now (loaded at the end)
COPY stage_account (batch, external_ref, name, currency, timezone, billing_day, parent_ref, bill_to_parent) FROM stdin WITH (FORMAT csv);
legacy-2026-11-late,C-130,Acme Hamburg SIM,EUR,Europe/Berlin,1,C-100,true
\.
COPY stage_balance (batch, account_ref, amount, currency, reference) FROM stdin WITH (FORMAT csv);
legacy-2026-11-late,C-117,4.75,USD,PP-2001
\.

-- programming errors: NULL arguments, a batch with no rows (a typo is not an empty success)
SELECT pg_temp.fails($$SELECT * FROM load_staged(NULL)$$);
SELECT pg_temp.fails($$SELECT * FROM load_staged('legacy-2026-11', NULL)$$);
SELECT pg_temp.fails($$SELECT * FROM load_staged('legacy-2026-12')$$);

-------------------------------------------------------------------------------
-- The dry run: the reconciliation the load would give, and no trace.
-------------------------------------------------------------------------------
CREATE TEMP TABLE before_dry AS SELECT pg_temp.footprint() AS f;
CREATE TEMP TABLE dry AS SELECT * FROM load_staged('legacy-2026-11', dry_run => true);
SELECT * FROM dry;
SELECT pg_temp.footprint() = (SELECT f FROM before_dry) AS dry_run_left_no_trace;
-- every staged row still pending, without a reason or an id (26 + 16 + 18 + 12 rows)
SELECT * FROM pg_temp.stage_states();

-------------------------------------------------------------------------------
-- The load.  Accounts (26 received): loaded 8 = C-100, C-102, C-103, C-117,
-- C-118, C-120 (child of EXIST-2), C-101 (child of C-100), C-121 (grandchild);
-- rejected 18.  Account ids: 1-2 existed; the dry run used 3-11 (gaps, as
-- any rolled-back insert leaves); the load goes depth 0 in line order
-- C-100 12, C-102 13, C-103 14, C-117 15, C-118 16, C-120 17, then depth 1
-- C-101 18 (C-113's refused insert takes 19), then depth 2 C-121 20.
-- Subscriptions (16): loaded 4 (lines 1, 2, 3, 15), rejected 12.
-- Balances (18), by staged currency:
--   (none) line 17: 1 received, rejected, in 1.00
--   EUR  lines 1 2 4 6 7 9 10 12 13 14 15 16 = 12; loaded 1, 2, 15 = 250.00 + 19.99 + 7.00 = 276.99;
--        rejected 9 = 30.00 + 40.00 + 5.00 - 20.00 + 15.00 + 5.00 + 5.00 + 5.00 = 85.00 and line 16
--        (empty amount: unparsed, in no sum); in 276.99 + 85.00 = 361.99
--   JPY  lines 3 8 18: loaded 1500, rejected 10.5 + 2000 = 2010.5; in 3510.5
--   USD  lines 5 11: loaded 75.25; line 5 "12,50" unparsed; in 75.25, rejected 0
-- Charges (12):
--   EUR  lines 1 2 4-10 12 = 10; loaded 1, 2, 12 = 49.90 - 5.00 + 12.34 = 57.24; rejected 7:
--        line 4 unparsed, 5-9 10.00 each, 10 3.00 = 53.00; in 110.24
--   JPY  line 3: 300 loaded;  USD line 11: 20.00 loaded
-- The dry run said exactly the same.
-------------------------------------------------------------------------------
CREATE TEMP TABLE run1 AS SELECT * FROM load_staged('legacy-2026-11');
SELECT * FROM run1;
SELECT count(*) AS rows_differing_from_dry_run
FROM ((TABLE dry EXCEPT TABLE run1) UNION ALL (TABLE run1 EXCEPT TABLE dry)) d;
SELECT bool_and(received = loaded + rejected) AS counts_reconcile,
       bool_and(amount_in IS NOT DISTINCT FROM amount_loaded + amount_rejected) AS amounts_reconcile
FROM run1;
-- the staged amounts reported loaded are the money in the ledger and the charges
SELECT b.currency, sum(l.amount) AS ledger_top_ups, r.amount_loaded
FROM stage_balance b JOIN ledger l ON l.account_id = b.account_id AND l.entry_id = b.entry_id
JOIN run1 r ON r.entity = 'balances' AND r.currency = b.currency
WHERE b.load_status = 'loaded' GROUP BY b.currency, r.amount_loaded ORDER BY 1;
SELECT s.currency, sum(c.amount) AS charged, r.amount_loaded
FROM stage_charge s JOIN charge c ON c.account_id = s.account_id AND c.charge_id = s.charge_id
JOIN run1 r ON r.entity = 'charges' AND r.currency = s.currency
WHERE s.load_status = 'loaded' GROUP BY s.currency, r.amount_loaded ORDER BY 1;

-- the accounts created: trimmed name, defaults (UTC, day 1, credit 0, active), parents by id
SELECT a.account_id, a.external_ref, a.name, a.currency, a.timezone, a.billing_day,
       p.external_ref AS parent, a.bill_to_parent, a.credit_limit, a.tax_code, a.status
FROM stage_account s JOIN account a ON a.account_id = s.account_id
LEFT JOIN account p ON p.account_id = a.parent_id
WHERE s.load_status = 'loaded' ORDER BY a.account_id;
-- every rejected account and why (C-112: its parent was rejected; C-113: the account table's guard)
SELECT line, external_ref, reject_reason FROM stage_account WHERE load_status = 'rejected' ORDER BY line;

-- subscriptions run from their account's cutover at the earliest (billed from there;
-- the staged started_at keeps the legacy start): C-100 (legacy 2026-10-01 00:00+02,
-- quantity 3) and C-101 (legacy 2026-10-15 in the session's zone, UTC) from
-- 2026-11-01 00:00 Berlin = 2026-10-31 23:00 UTC; C-102 (Kiritimati, day 28: cut
-- over at 2026-10-28 00:00+14 = 2026-10-27 10:00 UTC) from its legacy start, and
-- ended; C-117 (New York, day 5) from 2026-11-05 00:00 EST = 05:00 UTC, not its
-- legacy 08:00 EST on 1 November (13:00 UTC)
SELECT a.external_ref, u.plan_code, u.quantity, u.started_at, u.ended_at
FROM stage_subscription s JOIN subscription u ON u.account_id = s.account_id AND u.subscription_id = s.subscription_id
JOIN account a ON a.account_id = u.account_id
WHERE s.load_status = 'loaded' ORDER BY s.line;
SELECT line, account_ref, plan_code, reject_reason FROM stage_subscription WHERE load_status = 'rejected' ORDER BY line;

-- opening balances went through top_up: ledger top_up entries with their references;
-- C-102's expiring money is a bucket of its own, the rest is in the main bucket
SELECT s.line, a.external_ref, l.kind, l.amount, l.unit, l.reference, b.origin, b.valid_until
FROM stage_balance s JOIN ledger l ON l.account_id = s.account_id AND l.entry_id = s.entry_id
JOIN bucket b ON b.account_id = l.account_id AND b.bucket_id = l.bucket_id
JOIN account a ON a.account_id = s.account_id
WHERE s.load_status = 'loaded' ORDER BY s.line;
SELECT line, account_ref, amount, currency, reject_reason FROM stage_balance WHERE load_status = 'rejected' ORDER BY line;

-- open charges went through add_charge (C-103's, without a date, at the load's time;
-- 10:00+01 is 09:00 UTC, 12:00 in New York on 23 Nov is 17:00 UTC)
SELECT s.line, a.external_ref, c.kind, c.amount, c.currency, c.description, c.reference,
       CASE WHEN s.occurred_at IS NULL THEN (c.occurred_at = s.processed_at)::text ELSE c.occurred_at::text END AS occurred_at
FROM stage_charge s JOIN charge c ON c.account_id = s.account_id AND c.charge_id = s.charge_id
JOIN account a ON a.account_id = s.account_id
WHERE s.load_status = 'loaded' ORDER BY s.line;
SELECT line, account_ref, amount, currency, reject_reason FROM stage_charge WHERE load_status = 'rejected' ORDER BY line;

-- the money: C-100 250.00 - 49.90 - 12.34 + 5.00 (its child C-101's credit) = 192.76, available
-- + credit 500 = 692.76; C-101 shows its payer's; C-102 19.99; C-103 1500 - 300 = 1200 JPY;
-- C-117 75.25 - 20.00 = 55.25 USD; EXIST-2 5 + 7.00 - 3.00 = 9.00
SELECT a.external_ref, b.unit, b.balance, b.available
FROM account a CROSS JOIN LATERAL balance(a.account_id) b
WHERE a.external_ref IN ('C-100', 'C-101', 'C-102', 'C-103', 'C-117', 'EXIST-2') ORDER BY a.external_ref;
-- the ledger invariant holds for every bucket
SELECT count(*) AS buckets_off_their_ledger FROM bucket b
WHERE b.balance <> (SELECT coalesce(sum(l.amount), 0) FROM ledger l WHERE l.account_id = b.account_id AND l.bucket_id = b.bucket_id);

-------------------------------------------------------------------------------
-- A re-run loads nothing twice (loaded_now 0 everywhere, same footprint).
-------------------------------------------------------------------------------
CREATE TEMP TABLE after_run1 AS SELECT pg_temp.footprint() AS f;
SELECT entity, currency, received, loaded, rejected, loaded_now FROM load_staged('legacy-2026-11');
SELECT pg_temp.footprint() = (SELECT f FROM after_run1) AS rerun_changed_nothing;
-- Every loaded row sent back to pending (a DBA retrying the whole batch): each
-- stays loaded with the id it has; nothing is loaded twice or rejected as a
-- duplicate of itself (loaded_now 0 everywhere, same footprint, same ids)
CREATE TEMP TABLE ids_run1 AS
SELECT 'a' AS t, line, account_id AS id FROM stage_account WHERE batch = 'legacy-2026-11' AND load_status = 'loaded'
UNION ALL SELECT 's', line, subscription_id FROM stage_subscription WHERE batch = 'legacy-2026-11' AND load_status = 'loaded'
UNION ALL SELECT 'b', line, entry_id FROM stage_balance WHERE batch = 'legacy-2026-11' AND load_status = 'loaded'
UNION ALL SELECT 'c', line, charge_id FROM stage_charge WHERE batch = 'legacy-2026-11' AND load_status = 'loaded';
-- (one of the accounts renumbered meanwhile, as "change what it created"
-- allows: still the account its row created, not a new one to load)
UPDATE account SET external_ref = 'CUST-C-103' WHERE external_ref = 'C-103';
UPDATE stage_account SET load_status = 'pending' WHERE batch = 'legacy-2026-11' AND load_status = 'loaded';
UPDATE stage_subscription SET load_status = 'pending' WHERE batch = 'legacy-2026-11' AND load_status = 'loaded';
UPDATE stage_balance SET load_status = 'pending' WHERE batch = 'legacy-2026-11' AND load_status = 'loaded';
UPDATE stage_charge SET load_status = 'pending' WHERE batch = 'legacy-2026-11' AND load_status = 'loaded';
SELECT entity, currency, received, loaded, rejected, loaded_now FROM load_staged('legacy-2026-11');
SELECT count(*) AS accounts_named_c103 FROM account WHERE external_ref IN ('C-103', 'CUST-C-103');
UPDATE account SET external_ref = 'C-103' WHERE external_ref = 'CUST-C-103';
SELECT pg_temp.footprint() = (SELECT f FROM after_run1) AS repending_changed_nothing;
SELECT count(*) AS ids_changed FROM (
    (SELECT 'a' AS t, line, account_id AS id FROM stage_account WHERE batch = 'legacy-2026-11' AND load_status = 'loaded'
     UNION ALL SELECT 's', line, subscription_id FROM stage_subscription WHERE batch = 'legacy-2026-11' AND load_status = 'loaded'
     UNION ALL SELECT 'b', line, entry_id FROM stage_balance WHERE batch = 'legacy-2026-11' AND load_status = 'loaded'
     UNION ALL SELECT 'c', line, charge_id FROM stage_charge WHERE batch = 'legacy-2026-11' AND load_status = 'loaded')
    EXCEPT TABLE ids_run1) d;

-------------------------------------------------------------------------------
-- The DBA fixes C-104's currency and sends it, its child C-112 and the rows
-- that referred to them back to pending: they load (C-104 account 21, C-112
-- 22); the rest stays as it was.  Accounts loaded 8 + 2 = 10; subscriptions
-- 4 + 1; balances EUR 276.99 + 30.00 = 306.99; charges EUR 57.24 + 10.00 = 67.24.
-------------------------------------------------------------------------------
UPDATE stage_account SET currency = 'EUR', load_status = 'pending'
WHERE batch = 'legacy-2026-11' AND external_ref IN ('C-104', 'C-112');
UPDATE stage_subscription SET load_status = 'pending' WHERE batch = 'legacy-2026-11' AND account_ref = 'C-104';
UPDATE stage_balance SET load_status = 'pending' WHERE batch = 'legacy-2026-11' AND account_ref = 'C-104';
UPDATE stage_charge SET load_status = 'pending' WHERE batch = 'legacy-2026-11' AND account_ref = 'C-112';
SELECT * FROM load_staged('legacy-2026-11');
SELECT s.external_ref, s.load_status, s.account_id, p.external_ref AS parent, a.bill_to_parent
FROM stage_account s JOIN account a ON a.account_id = s.account_id LEFT JOIN account p ON p.account_id = a.parent_id
WHERE s.external_ref IN ('C-104', 'C-112') ORDER BY s.line;
-- C-104: top-up 30.00 less C-112's charge of 10.00 (C-112 is billed to it) = 20.00
SELECT b.unit, b.balance FROM account a CROSS JOIN LATERAL balance(a.account_id) b WHERE a.external_ref = 'C-104';
SELECT * FROM pg_temp.stage_states();

-------------------------------------------------------------------------------
-- Batches are independent: a later batch, staged before the load above ran,
-- was left pending by it; its rows refer to accounts loaded by the first
-- batch (C-100 as a parent, C-117 for a balance).
-------------------------------------------------------------------------------
SELECT batch, line, external_ref, load_status FROM stage_account WHERE batch = 'legacy-2026-11-late';
SELECT * FROM load_staged('legacy-2026-11-late');
SELECT a.external_ref, p.external_ref AS parent, a.bill_to_parent, s.load_status
FROM stage_account s JOIN account a ON a.account_id = s.account_id JOIN account p ON p.account_id = a.parent_id
WHERE s.batch = 'legacy-2026-11-late';
-- C-117: 55.25 + 4.75 = 60.00 USD
SELECT b.unit, b.balance FROM account a CROSS JOIN LATERAL balance(a.account_id) b WHERE a.external_ref = 'C-117';

-------------------------------------------------------------------------------
-- The cutover: each loaded account is billed from its period containing
-- convbill_migration.billed_until, never back to a legacy subscription's
-- start.  C-100 (Berlin, billing day 1, MOB-EUR x 3 since 2026-10-01 in the
-- legacy system): billed until 2026-11-01 00:00 Berlin; the run to the end
-- of November bills November only (its tax code's rate added first): 3 x
-- 10.00 = 30.00 for itself, not October too; a time that is not one is
-- refused.
-------------------------------------------------------------------------------
SELECT a.external_ref, billed_until(a.account_id) AT TIME ZONE 'Europe/Berlin' AS billed_until
FROM account a WHERE a.external_ref IN ('C-100', 'C-101') ORDER BY 1;
INSERT INTO tax_rate (code, rate) VALUES ('DE19', 19);
SELECT run_billing('2026-12-01 00:00 Europe/Berlin') > 0 AS billed;
SELECT to_char(i.period_start AT TIME ZONE 'Europe/Berlin', 'YYYY-MM-DD') AS period, l.description, l.amount
FROM invoice i JOIN account a ON a.account_id = i.account_id
JOIN invoice_line l ON l.account_id = i.account_id AND l.invoice_id = i.invoice_id
WHERE a.external_ref = 'C-100' AND l.source_account_id = a.account_id AND l.kind = 'recurring'
ORDER BY 1, l.line_no;
SET convbill_migration.billed_until = 'soon';
SELECT pg_temp.fails($$SELECT * FROM load_staged('legacy-2026-11')$$);
RESET convbill_migration.billed_until;

-- A sub-account migrated under a parent that exists already, never billed:
-- the parent is marked billed to the cutover too (the runs count from the
-- payer's periods), so the child's legacy subscription (June) is billed from
-- November; a legacy open charge of the parent dated in October, before the
-- cutover's period, goes on that first invoice, whose period is November's.
-- P-500: fee 10.00 for C-500's section + 7.00: 17.00, one invoice.
SET convbill_migration.billed_until = '2026-11-15 12:00+00';
INSERT INTO account (account_id, external_ref, name, currency, timezone) VALUES
    (500, 'P-500', 'Native parent', 'EUR', 'Europe/Berlin');
SET convbill_migration.batch = 'legacy-2026-11-sub';
COPY stage_account (external_ref, name, currency, timezone, parent_ref, bill_to_parent) FROM stdin WITH (FORMAT csv);
C-500,Legacy SIM of P-500,EUR,Europe/Berlin,P-500,yes
\.
COPY stage_subscription (account_ref, plan_code, started_at) FROM stdin WITH (FORMAT csv);
C-500,MOB-EUR,2026-06-01 00:00+02
\.
COPY stage_charge (account_ref, amount, currency, description, kind, occurred_at, reference) FROM stdin WITH (FORMAT csv);
P-500,7.00,EUR,Legacy router,one_time,2026-10-20 10:00+02,LEG-500-1
\.
RESET convbill_migration.batch;
SELECT entity, loaded, rejected FROM load_staged('legacy-2026-11-sub');
SELECT run_billing('2026-12-01 00:00 Europe/Berlin') >= 1 AS billed;
SELECT to_char(i.period_start AT TIME ZONE 'Europe/Berlin', 'YYYY-MM-DD') AS period_start,
       to_char(i.period_end AT TIME ZONE 'Europe/Berlin', 'YYYY-MM-DD') AS period_end, i.total
FROM invoice i WHERE i.account_id = 500 ORDER BY i.period_start;
RESET convbill_migration.billed_until;

-- Messy legacy values (an audit's findings): a byte-order mark before the
-- first ref and a lower-case currency are read; a charge with more decimals
-- than its currency has, or beyond any legacy amount, and a balance of
-- 1e400 are rejected with their reason (a charge of 1e27 loaded, then
-- stopped every bill run); an existing account that only a subscription row
-- names gets the cutover too (its legacy subscription from 2024 is billed
-- from November, not every month since).
SET convbill_migration.billed_until = '2026-11-15 12:00+00';
INSERT INTO account (account_id, external_ref, name, currency, timezone) VALUES
    (600, 'NATIVE-600', 'Native, legacy subscription', 'EUR', 'Europe/Berlin');
SET convbill_migration.batch = 'legacy-2026-11-messy';
INSERT INTO stage_account (external_ref, name, currency, timezone) VALUES
    (E'\uFEFFC-700', 'BOM first', 'eur', 'Europe/Berlin');
INSERT INTO stage_subscription (account_ref, plan_code, started_at) VALUES ('NATIVE-600', 'MOB-EUR', '2024-01-01 00:00+01');
INSERT INTO stage_charge (account_ref, amount, currency, description, reference, occurred_at) VALUES
    ('C-700', '0.004', 'EUR', 'sub-cent', 'M-1', '2026-11-20'),
    ('C-700', '1e27', 'EUR', 'overflow', 'M-2', '2026-11-20'),
    ('C-700', '2.50', 'eur', 'fine', 'M-3', '2026-11-20');
INSERT INTO stage_balance (account_ref, amount, currency, reference) VALUES ('C-700', '1e400', 'EUR', 'B-1');
RESET convbill_migration.batch;
SELECT entity, currency AS cur, received, loaded, rejected, amount_loaded,
       amount_in = amount_loaded + amount_rejected AS reconciles
FROM load_staged('legacy-2026-11-messy');
SELECT external_ref, length(external_ref) AS len, currency FROM account WHERE account_id = (
    SELECT account_id FROM stage_account WHERE batch = 'legacy-2026-11-messy');
SELECT 'charge' AS entity, line, reject_reason FROM stage_charge WHERE batch = 'legacy-2026-11-messy' AND load_status = 'rejected'
UNION ALL
SELECT 'balance', line, reject_reason FROM stage_balance WHERE batch = 'legacy-2026-11-messy' AND load_status = 'rejected'
ORDER BY 1, 2;
SELECT run_billing('2026-12-01 00:00 Europe/Berlin') >= 1 AS billed;
SELECT to_char(i.period_start AT TIME ZONE 'Europe/Berlin', 'YYYY-MM') AS period, i.total
FROM invoice i WHERE i.account_id = 600 ORDER BY i.period_start;
RESET convbill_migration.billed_until;

-------------------------------------------------------------------------------
-- The cutover and the legacy system's fees.  Plans billed in arrears and in
-- advance, subscriptions that began long before the cutover: each is billed
-- from its account's cutover on, and a fee period the legacy system billed
-- ahead is not billed again.
--
-- billed_until 2026-11-15 12:00 UTC: every G- account (Berlin, day 1) is cut
-- over at 2026-11-01 00:00 Berlin = 2026-10-31 23:00 UTC (October closed as
-- billed by the legacy system); the first bill run bills November.
--   G-ARR   MOB-EUR (arrears, 10.00) since 2026-03-01: November 10.00.
--   G-ADV   MOB-ADV (advance, 20.00) since 2025-06-01: the legacy system's
--           last invoice (October's) billed November ahead: November is
--           recorded as billed (legacy_fee 20.000000), the first invoice
--           bills December only: 20.00 (not 40.00).
--   G-NEW   MOB-ADV since 2026-11-10, after the legacy system's last invoice:
--           nothing billed ahead; November 10-30 = 21 of 30 days x 20.00
--           = 14.00, and December 20.00: 34.00.
--   G-END   MOB-ADV since 2026-01-01, ended 2026-11-21 (Berlin): November
--           was billed ahead (20.000000); it ran 20 of its 30 days (1-20):
--           20 x 20/30 = 13.333333 due, the rest credited like any advance
--           fee cut short: 13.333333 - 20 = -6.666667, line -6.67; nothing
--           for December.
--   G-YEAR  YEAR-ADV (advance, 120.00 a year, billed 1/12 a month) since
--           2026-03-01, staged as paid up to 2027-01-01: November and
--           December recorded (120/12 = 10.000000 each), no invoice for
--           November; the December run bills January: 10.00.
--   G-RETRY MOB-ADV since 2026-02-01, staged with a typo in its plan:
--           rejected, fixed and retried after the load recorded the cutover:
--           loaded running since the cutover, November recorded as billed
--           ahead, like G-ADV: 20.00.
-- Rejected: a subscription that ended before the cutover, and
-- fee_billed_until that is no time, before the cutover, no period boundary,
-- too far, or for a subscription started after the cutover (the part period
-- the legacy system billed is unknown).
-------------------------------------------------------------------------------
SET convbill_migration.billed_until = '2026-11-15 12:00+00';
INSERT INTO plan (code, name, currency, recurring_fee, billing, fee_interval) VALUES
    ('MOB-ADV', 'Mobile ahead', 'EUR', 20, 'advance', 'month'),
    ('YEAR-ADV', 'Yearly', 'EUR', 120, 'advance', 'year');
SET convbill_migration.batch = 'legacy-2026-11-fees';
COPY stage_account (external_ref, name, currency, timezone) FROM stdin WITH (FORMAT csv);
G-ARR,Arrears since March,EUR,Europe/Berlin
G-ADV,Advance since 2025,EUR,Europe/Berlin
G-NEW,Advance since 10 November,EUR,Europe/Berlin
G-END,Advance ending 21 November,EUR,Europe/Berlin
G-YEAR,Yearly paid ahead,EUR,Europe/Berlin
G-RETRY,Advance with a typo,EUR,Europe/Berlin
\.
COPY stage_subscription (account_ref, plan_code, started_at, ended_at, fee_billed_until) FROM stdin WITH (FORMAT csv);
G-ARR,MOB-EUR,2026-03-01 00:00 Europe/Berlin,,
G-ADV,MOB-ADV,2025-06-01 00:00 Europe/Berlin,,
G-NEW,MOB-ADV,2026-11-10 00:00 Europe/Berlin,,
G-END,MOB-ADV,2026-01-01 00:00 Europe/Berlin,2026-11-21 00:00 Europe/Berlin,
G-YEAR,YEAR-ADV,2026-03-01 00:00 Europe/Berlin,,2027-01-01 00:00 Europe/Berlin
G-RETRY,MOB-ADVX,2026-02-01 00:00 Europe/Berlin,,
G-ARR,MOB-ADV,2025-01-01 00:00 Europe/Berlin,2026-10-20 00:00 Europe/Berlin,
G-NEW,YEAR-ADV,2026-01-01 00:00 Europe/Berlin,,soon
G-END,YEAR-ADV,2026-01-01 00:00 Europe/Berlin,,2026-10-01 00:00 Europe/Berlin
G-ADV,YEAR-ADV,2026-01-01 00:00 Europe/Berlin,,2026-12-15 00:00 Europe/Berlin
G-RETRY,YEAR-ADV,2026-01-01 00:00 Europe/Berlin,,2037-01-01 00:00 Europe/Berlin
G-ARR,YEAR-ADV,2026-11-10 00:00 Europe/Berlin,,2026-12-01 00:00 Europe/Berlin
\.
RESET convbill_migration.batch;
-- accounts 6 loaded; subscriptions 5 loaded (lines 1-5), 7 rejected
SELECT entity, received, loaded, rejected, loaded_now FROM load_staged('legacy-2026-11-fees') WHERE entity IN ('accounts', 'subscriptions');
-- the starts: G-ARR, G-ADV, G-END and G-YEAR began before the cutover and run
-- since it (2026-10-31 23:00 UTC); G-NEW began after it (2026-11-09 23:00 UTC)
SELECT s.line, s.account_ref, u.plan_code, u.started_at, u.ended_at
FROM stage_subscription s JOIN subscription u ON u.account_id = s.account_id AND u.subscription_id = s.subscription_id
WHERE s.batch = 'legacy-2026-11-fees' ORDER BY s.line;
SELECT line, account_ref, reject_reason FROM stage_subscription
WHERE batch = 'legacy-2026-11-fees' AND load_status = 'rejected' ORDER BY line;
-- what the legacy system billed ahead: G-ADV and G-END November, G-YEAR November and December
SET TimeZone = 'Europe/Berlin';
SELECT a.external_ref, f.fee_period_start, f.fee_period_end, f.amount, f.line
FROM legacy_fee f JOIN account a ON a.account_id = f.account_id
WHERE f.batch = 'legacy-2026-11-fees' ORDER BY a.external_ref, f.fee_period_start;
SELECT a.external_ref, c.billed_until, c.batch
FROM legacy_cutover c JOIN account a ON a.account_id = c.account_id
WHERE a.external_ref LIKE 'G-%' ORDER BY a.external_ref;
SET TimeZone = 'UTC';
-- none of it is money: no charge, ledger entry or invoice for these accounts
SELECT (SELECT count(*) FROM charge c JOIN account a USING (account_id) WHERE a.external_ref LIKE 'G-%') AS charges,
       (SELECT count(*) FROM ledger l JOIN account a USING (account_id) WHERE a.external_ref LIKE 'G-%') AS ledger_entries,
       (SELECT count(*) FROM invoice i JOIN account a USING (account_id) WHERE a.external_ref LIKE 'G-%') AS invoices;

-- The typo fixed and the row retried: G-RETRY's cutover is recorded, its
-- subscription (since February) starts there, November recorded as billed
-- ahead.  (Refused before: a start behind the cutover's closed period.)
UPDATE stage_subscription SET plan_code = 'MOB-ADV', load_status = 'pending'
WHERE batch = 'legacy-2026-11-fees' AND account_ref = 'G-RETRY' AND plan_code = 'MOB-ADVX';
SELECT entity, received, loaded, rejected, loaded_now FROM load_staged('legacy-2026-11-fees') WHERE entity = 'subscriptions';
SELECT s.load_status, s.reject_reason, u.started_at, f.fee_period_start, f.amount
FROM stage_subscription s JOIN subscription u ON u.account_id = s.account_id AND u.subscription_id = s.subscription_id
LEFT JOIN legacy_fee f ON f.account_id = u.account_id AND f.subscription_id = u.subscription_id
WHERE s.batch = 'legacy-2026-11-fees' AND s.account_ref = 'G-RETRY' AND s.plan_code = 'MOB-ADV';

-- The whole batch sent back to pending, loaded rows too (a DBA retrying
-- "everything"): what was loaded stays loaded with its ids, not loaded
-- twice nor rejected as a duplicate of itself; the rejects are judged again.
CREATE TEMP TABLE fees_before AS
SELECT 'a' AS t, line, load_status, account_id AS id, reject_reason FROM stage_account WHERE batch = 'legacy-2026-11-fees'
UNION ALL SELECT 's', line, load_status, subscription_id, reject_reason FROM stage_subscription WHERE batch = 'legacy-2026-11-fees';
CREATE TEMP TABLE fees_footprint AS SELECT pg_temp.footprint() AS f;
UPDATE stage_account SET load_status = 'pending' WHERE batch = 'legacy-2026-11-fees';
UPDATE stage_subscription SET load_status = 'pending' WHERE batch = 'legacy-2026-11-fees';
SELECT entity, received, loaded, rejected, loaded_now FROM load_staged('legacy-2026-11-fees') WHERE entity IN ('accounts', 'subscriptions');
SELECT pg_temp.footprint() = (SELECT f FROM fees_footprint) AS reload_changed_nothing;
SELECT count(*) AS rows_changed FROM (
    (SELECT 'a' AS t, line, load_status, account_id AS id, reject_reason FROM stage_account WHERE batch = 'legacy-2026-11-fees'
     UNION ALL SELECT 's', line, load_status, subscription_id, reject_reason FROM stage_subscription WHERE batch = 'legacy-2026-11-fees')
    EXCEPT TABLE fees_before) d;

-- The first bill run: each account's first invoice, its fee lines
SELECT run_billing('2026-12-01 00:00 Europe/Berlin') >= 5 AS billed;
SELECT a.external_ref, i.total, l.description, l.amount
FROM invoice i JOIN account a ON a.account_id = i.account_id
JOIN invoice_line l ON l.account_id = i.account_id AND l.invoice_id = i.invoice_id
WHERE a.external_ref LIKE 'G-%' AND l.kind = 'recurring'
ORDER BY a.external_ref, i.period_start, l.line_no;
-- revenue is what convbill charged (by the local month the fee is for):
-- November's MOB-ADV fees 14.000000 (G-NEW) - 6.666667 (G-END) = 7.333333,
-- December's 20 x 3 (G-ADV, G-NEW, G-RETRY) = 60.000000; what the legacy
-- system billed is in neither
SET TimeZone = 'Europe/Berlin';
SELECT month, amount, charges FROM revenue_by_plan WHERE plan_code = 'MOB-ADV' ORDER BY month;
SET TimeZone = 'UTC';
-- G-ADV's invoice finalized: its statement has the 20.00 invoiced, nothing else
SELECT finalize_invoice(i.invoice_id) IS NOT NULL AS finalized
FROM invoice i JOIN account a ON a.account_id = i.account_id WHERE a.external_ref = 'G-ADV';
SELECT s.kind, s.debit, s.credit, s.balance
FROM account_statement s JOIN account a ON a.account_id = s.account_id WHERE a.external_ref = 'G-ADV';

-- A row retried after convbill billed the account past its cutover: its
-- start (clamped to the cutover) is inside an invoiced period: refused, not
-- moved later (November's fee would be lost)
UPDATE stage_subscription SET ended_at = NULL, load_status = 'pending'
WHERE batch = 'legacy-2026-11-fees' AND account_ref = 'G-ARR' AND plan_code = 'MOB-ADV';
SELECT entity, loaded, rejected, loaded_now FROM load_staged('legacy-2026-11-fees') WHERE entity = 'subscriptions';
SELECT line, reject_reason FROM stage_subscription
WHERE batch = 'legacy-2026-11-fees' AND account_ref = 'G-ARR' AND plan_code = 'MOB-ADV';

-- The next run bills December: G-ARR 10.00; G-ADV, G-NEW, G-RETRY January
-- ahead (December was on the first invoice); G-YEAR January 10.00
-- (November and December paid in the legacy system); G-END nothing.
SELECT run_billing('2027-01-01 00:00 Europe/Berlin') >= 5 AS billed;
SELECT a.external_ref, i.total, l.description, l.amount
FROM invoice i JOIN account a ON a.account_id = i.account_id
JOIN invoice_line l ON l.account_id = i.account_id AND l.invoice_id = i.invoice_id
WHERE a.external_ref LIKE 'G-%' AND l.kind = 'recurring'
  AND i.period_start = '2026-12-01 00:00 Europe/Berlin'
ORDER BY a.external_ref, l.line_no;
RESET convbill_migration.billed_until;

-- A fee period the legacy system billed is worth what it billed, whatever
-- the plan costs later.  G-FAR (Europe/Berlin, billing day 1) paid YEAR-ADV
-- (120.00 a year, 10.00 a month) in the legacy system up to 2027-06-01; the
-- cutover is January 2027 (billed_until in it: December recorded as billed),
-- so January to May are legacy fee periods of 10.00 each.  Then the plan goes
-- to 240.00 a year.  The runs through May bill nothing of G-FAR's fee (before,
-- each legacy month was charged the 10.00 difference); May's run bills June
-- ahead at the new price, 20.00.
SET convbill_migration.billed_until = '2027-01-15 12:00+00';
SET convbill_migration.batch = 'legacy-2027-01';
COPY stage_account (external_ref, name, currency, timezone) FROM stdin WITH (FORMAT csv);
G-FAR,Yearly paid far ahead,EUR,Europe/Berlin
\.
COPY stage_subscription (account_ref, plan_code, started_at, ended_at, fee_billed_until) FROM stdin WITH (FORMAT csv);
G-FAR,YEAR-ADV,2026-01-01 00:00 Europe/Berlin,,2027-06-01 00:00 Europe/Berlin
\.
RESET convbill_migration.batch;
SELECT entity, loaded, rejected FROM load_staged('legacy-2027-01') WHERE entity IN ('accounts', 'subscriptions');
RESET convbill_migration.billed_until;
SELECT count(*) AS legacy_months, min(f.amount) AS each_min, max(f.amount) AS each_max
FROM legacy_fee f JOIN account a ON a.account_id = f.account_id WHERE a.external_ref = 'G-FAR';
UPDATE plan SET recurring_fee = 240 WHERE code = 'YEAR-ADV';
SELECT run_billing('2027-02-01 00:00 Europe/Berlin') >= 1 AS billed;
-- its settings cannot change while legacy fee periods are still to come
-- (the run finds them by their start): 55000
UPDATE account SET billing_day = 15 WHERE external_ref = 'G-FAR';
\echo :LAST_ERROR_SQLSTATE
SELECT run_billing('2027-06-01 00:00 Europe/Berlin') >= 1 AS billed;
SELECT c.fee_period_start, c.amount, c.description
FROM charge c JOIN account a ON a.account_id = c.account_id
WHERE a.external_ref = 'G-FAR' AND c.kind = 'recurring' ORDER BY c.fee_period_start;
