-- The bill run (SPEC section 5): run_billing(as_of) over hand-computed
-- invoices.  Every line amount, subtotal, discount, tax, total, prepaid_applied
-- and amount_due printed below is worked out in the comment next to it.  The
-- file walks forward in time (as_of from October 2025 to November 2026); each
-- run bills every account whose period has ended, so each section's accounts
-- end their subscriptions and later runs leave them alone (an empty period
-- gives no invoice).  Times are fixed; now() only stamps issued_at.
-- Section 10: the committing procedure run_billing_batches() (several
-- batches, a catch-up, a parent's section) against one run_billing().
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS convbill CASCADE;
CREATE EXTENSION convbill;
RESET client_min_messages;
SET search_path = convbill, public;
SET TimeZone = 'UTC';
\set VERBOSITY terse
\set SHOW_CONTEXT never

-- an account's invoices: local period, hours, totals
CREATE FUNCTION pg_temp.invoices(acc bigint)
RETURNS TABLE (period text, hours numeric, status text, subtotal numeric, discount numeric, tax numeric,
               total numeric, prepaid numeric, due numeric)
LANGUAGE sql AS $$
    SELECT to_char(i.period_start AT TIME ZONE a.timezone, 'YYYY-MM-DD') || ' - '
           || to_char(i.period_end AT TIME ZONE a.timezone, 'YYYY-MM-DD'),
           round(extract(epoch FROM i.period_end - i.period_start) / 3600),
           i.status, i.subtotal, i.discount, i.tax, i.total, i.prepaid_applied, i.amount_due
    FROM convbill.invoice i JOIN convbill.account a ON a.account_id = i.account_id
    WHERE i.account_id = acc AND i.kind = 'invoice'
    ORDER BY i.period_start
$$;
-- an account's invoice lines (src: the section's account)
CREATE FUNCTION pg_temp.lines(acc bigint)
RETURNS TABLE (period text, no integer, kind text, src bigint, description text, quantity numeric, amount numeric)
LANGUAGE sql AS $$
    SELECT to_char(i.period_start AT TIME ZONE a.timezone, 'YYYY-MM-DD'), l.line_no, l.kind,
           l.source_account_id, l.description, l.quantity, l.amount
    FROM convbill.invoice i JOIN convbill.account a ON a.account_id = i.account_id
    JOIN convbill.invoice_line l ON l.account_id = i.account_id AND l.invoice_id = i.invoice_id
    WHERE i.account_id = acc AND i.kind = 'invoice'
    ORDER BY i.period_start, l.line_no
$$;
-- the main money bucket, and whether the ledger adds up to it
CREATE FUNCTION pg_temp.money(acc bigint)
RETURNS TABLE (balance numeric, ledger_sum numeric)
LANGUAGE sql AS $$
    SELECT b.balance, (SELECT sum(l.amount) FROM convbill.ledger l
                       WHERE l.account_id = b.account_id AND l.bucket_id = b.bucket_id)
    FROM convbill.bucket b WHERE b.account_id = acc AND b.origin = 'main'
$$;
-- an account's charges: when, which local period, on which invoice (by its period)
CREATE FUNCTION pg_temp.charges(acc bigint)
RETURNS TABLE (kind text, service text, occurred text, period text, amount numeric, invoiced_in text)
LANGUAGE sql AS $$
    SELECT c.kind, c.service, to_char(c.occurred_at AT TIME ZONE a.timezone, 'YYYY-MM-DD HH24:MI:SS'),
           to_char(c.period_start AT TIME ZONE a.timezone, 'YYYY-MM-DD'), c.amount,
           to_char(i.period_start AT TIME ZONE a.timezone, 'YYYY-MM-DD')
    FROM convbill.charge c JOIN convbill.account a ON a.account_id = c.account_id
    LEFT JOIN convbill.invoice i ON i.invoice_id = c.invoice_id     -- (a section's: its payer's)
    WHERE c.account_id = acc
    ORDER BY c.occurred_at, c.kind, c.amount
$$;

INSERT INTO service (code, unit, description) VALUES
    ('voice', 'second', 'Calls'), ('sms', 'message', 'Text messages'), ('data', 'MB', 'Mobile data');
INSERT INTO destination VALUES ('49', 'DE'), ('44', 'UK');
-- M31: 31.00 a month, so that a fee of d days out of a 31-day period is d.00
INSERT INTO plan (code, name, currency, recurring_fee, billing) VALUES
    ('M31', 'Mobile 31', 'EUR', 31.00, 'arrears'),
    ('BIG', 'Mobile Big', 'EUR', 62.00, 'arrears'),
    ('ADV', 'Office (advance)', 'EUR', 30.00, 'advance'),
    ('JP', 'Keitai', 'JPY', 980, 'arrears'),
    ('KW', 'Gulf data', 'KWD', 3.500, 'arrears');
INSERT INTO plan_rate (plan_code, service, zone, tariff) VALUES
    ('M31', 'sms', NULL, '{"price": "0.10"}'),
    ('M31', 'voice', NULL, '{"price": "0.01"}'),          -- 0.01 a second
    ('M31', 'voice', 'UK', '{"price": "0.05"}'),          -- calls to the UK priced apart: a line of their own
    ('M31', 'data', NULL, '{"price": "0.0125"}'),         -- 1.25 cents a MB: sums rounded once
    ('BIG', 'sms', NULL, '{"price": "0.05"}'),
    ('ADV', 'sms', NULL, '{"price": "0.10"}'),
    ('JP', 'data', NULL, '{"price": "0.3"}'),             -- 0.3 yen a MB
    ('KW', 'data', NULL, '{"price": "0.0015"}');          -- 1.5 fils a MB
INSERT INTO tax_rate (code, rate, valid_from) VALUES
    ('DE-VAT', 19, '-infinity'), ('DE-RED', 7, '-infinity'), ('JP-CT', 10, '-infinity'),
    ('XX', 10, '-infinity'), ('XX', 12, '2026-06-15 00:00+00');


-- Every account of the file, with its subscriptions (each ends, so later runs
-- find nothing more to bill for it).
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day, parent_id, bill_to_parent, tax_code) VALUES
    (10, 'KIRI',     'Kiritimati (UTC+14)',     'EUR', 'Pacific/Kiritimati', 1, NULL, false, NULL),
    (11, 'PAGO',     'Pago Pago (UTC-11)',      'EUR', 'Pacific/Pago_Pago',  1, NULL, false, NULL),
    (20, 'BER-OCT',  'Berlin, October',         'EUR', 'Europe/Berlin',      1, NULL, false, NULL),
    (21, 'BER-MAR',  'Berlin, March',           'EUR', 'Europe/Berlin',      1, NULL, false, NULL),
    (30, 'DAY28',    'New York, billing day 28','EUR', 'America/New_York',  28, NULL, false, NULL),
    (40, 'CHANGE',   'Plan change',             'EUR', 'UTC',                1, NULL, false, NULL),
    (41, 'ADVANCE',  'Advance, cancelled',      'EUR', 'UTC',                1, NULL, false, NULL),
    (50, 'CORP',     'Corp AG',                 'EUR', 'UTC',                1, NULL, false, 'DE-VAT'),
    (51, 'CORP-A',   'Corp AG, field team',     'EUR', 'UTC',                1, 50,   true,  'DE-RED'),
    (52, 'CORP-B',   'Corp AG, office',         'EUR', 'UTC',                1, 50,   true,  NULL),
    (60, 'DISC-A',   'Discounts A',             'EUR', 'UTC',                1, NULL, false, NULL),
    (61, 'DISC-B',   'Discounts B',             'EUR', 'UTC',                1, NULL, false, 'DE-VAT'),
    (65, 'TAXCHG',   'Tax rate change',         'EUR', 'UTC',               15, NULL, false, 'XX'),
    (70, 'PRE-BIG',  'Prepaid, more than total','EUR', 'UTC',                1, NULL, false, 'DE-VAT'),
    (71, 'PRE-SMALL','Prepaid, less than total','EUR', 'UTC',                1, NULL, false, 'DE-VAT'),
    (80, 'LATE',     'Late event',              'EUR', 'UTC',                1, NULL, false, NULL),
    (85, 'GROUP',    'Group',                   'EUR', 'UTC',                1, NULL, false, 'DE-VAT'),
    (90, 'CATCHUP',  'Catch-up',                'EUR', 'UTC',                1, NULL, false, 'DE-VAT'),
    (95, 'JPY',      'Yen',                     'JPY', 'Asia/Tokyo',         1, NULL, false, 'JP-CT'),
    (96, 'KWD',      'Dinar',                   'KWD', 'Asia/Kuwait',        1, NULL, false, NULL),
    (97, 'NORATE',   'Tax code without a rate', 'EUR', 'UTC',                1, NULL, false, 'FR-VAT');
-- subscribe(account, plan, start) and, where given, unsubscribe at end
SELECT count(*) AS subscriptions FROM (
    SELECT x.acc, x.plan, CASE WHEN x.until IS NOT NULL THEN unsubscribe(s, x.until) END
    FROM (VALUES
        (10, 'M31', '2026-01-10 00:00 Pacific/Kiritimati'::timestamptz, '2026-02-15 00:00 Pacific/Kiritimati'::timestamptz),
        (11, 'M31', '2026-01-20 12:00 Pacific/Pago_Pago', '2026-02-08 00:00 Pacific/Pago_Pago'),
        (20, 'M31', '2025-10-15 00:00 Europe/Berlin', '2025-11-16 00:00 Europe/Berlin'),
        (21, 'M31', '2026-03-10 00:00 Europe/Berlin', '2026-04-02 00:00 Europe/Berlin'),
        (30, 'M31', '2026-02-10 00:00 America/New_York', '2026-03-14 00:00 America/New_York'),
        (41, 'ADV', '2026-04-01 00:00+00', NULL),
        (50, 'M31', '2026-05-01 00:00+00', '2026-06-01 00:00+00'),
        (51, 'M31', '2026-05-01 00:00+00', '2026-06-01 00:00+00'),
        (60, 'M31', '2026-05-01 00:00+00', '2026-08-01 00:00+00'),
        (61, 'M31', '2026-05-01 00:00+00', '2026-06-01 00:00+00'),
        (65, 'M31', '2026-05-15 00:00+00', '2026-07-15 00:00+00'),
        (70, 'M31', '2026-05-01 00:00+00', '2026-06-01 00:00+00'),
        (71, 'M31', '2026-05-01 00:00+00', '2026-06-01 00:00+00'),
        (80, 'M31', '2026-05-01 00:00+00', '2026-07-01 00:00+00'),
        (85, 'M31', '2026-11-01 00:00+00', '2027-01-01 00:00+00'),
        (90, 'M31', '2026-08-01 00:00+00', '2026-11-01 00:00+00'),
        (95, 'JP',  '2026-04-11 00:00 Asia/Tokyo', '2026-05-01 00:00 Asia/Tokyo'),
        (96, 'KW',  '2026-04-01 00:00 Asia/Kuwait', '2026-04-16 00:00 Asia/Kuwait'),
        (97, 'M31', '2026-04-01 00:00+00', '2026-05-01 00:00+00')) x(acc, plan, start, until)
    CROSS JOIN LATERAL subscribe(x.acc, x.plan, x.start) s) y;
-- 40: Mobile 31 from 1 April, changed to Mobile Big on 11 April 10:00 UTC,
-- which ends on 1 May
SELECT subscribe(40, 'M31', '2026-04-01 00:00+00') AS sub40 \gset
SELECT change_plan(:sub40, 'BIG', '2026-04-11 10:00+00') AS sub40big \gset
SELECT unsubscribe(:sub40big, '2026-05-01 00:00+00');
SELECT subscription_id AS sub41 FROM subscription WHERE account_id = 41 \gset

-------------------------------------------------------------------------------
-- 1. A DST month: Europe/Berlin, October 2025 (31 local days, 745 hours)
-------------------------------------------------------------------------------
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (20, 'net', 'b1', 'sms', 1, '2025-10-26 00:30+00'),   -- 02:30 CEST, before the clocks go back: October
    (20, 'net', 'b2', 'sms', 1, '2025-10-31 22:59:59+00'),-- 23:59:59 CET on 31 October: October
    (20, 'net', 'b3', 'sms', 1, '2025-10-31 23:00+00');   -- 00:00 on 1 November: November
SELECT rate_pending() AS rated;
-- nothing has ended yet one second before local midnight
SELECT run_billing('2025-10-31 22:59:59+00') AS invoices;
-- local midnight of 1 November: October has ended
SELECT run_billing('2025-11-01 00:00 Europe/Berlin') AS invoices;
-- October: 745 hours but 31 local days; 15..31 Oct = 17 days: 31.00 x 17/31
-- = 17.00 (by hours it would be 31.00 x 409/745 = 17.02); sms 2 x 0.10 =
-- 0.20; subtotal = total = due 17.20 (no tax code, nothing prepaid)
SELECT * FROM pg_temp.invoices(20);
SELECT * FROM pg_temp.lines(20);
-- November (30 days): 1..15 Nov = 15 days: 31.00 x 15/30 = 15.50; sms 0.10;
-- total 15.60.  (December and January are empty: no invoice.)
SELECT run_billing('2025-12-01 00:00 Europe/Berlin') AS invoices;
SELECT * FROM pg_temp.invoices(20) OFFSET 1;
SELECT * FROM pg_temp.lines(20) OFFSET 2;

-------------------------------------------------------------------------------
-- 2. UTC+14 and UTC-11: events near midnight UTC on the period boundaries
--    fall in the local period; billing day 28 through February
-------------------------------------------------------------------------------
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    -- Kiritimati, UTC+14: local midnight of 1 Feb is 2026-01-31 10:00 UTC
    (10, 'net', 'k1', 'sms', 1, '2026-01-31 09:59:59+00'),  -- 31 Jan 23:59:59 local: January
    (10, 'net', 'k2', 'sms', 1, '2026-01-31 10:00:00+00'),  -- 1 Feb 00:00 local: February
    (10, 'net', 'k3', 'sms', 1, '2026-01-31 23:59:59+00'),  -- 1 Feb 13:59:59 local: February
    (10, 'net', 'k4', 'sms', 1, '2026-02-01 00:00:00+00'),  -- 1 Feb 14:00 local: February
    -- Pago Pago, UTC-11: local midnight of 1 Feb is 2026-02-01 11:00 UTC
    (11, 'net', 'p1', 'sms', 1, '2026-01-31 23:59:59+00'),  -- 31 Jan 12:59:59 local: January
    (11, 'net', 'p2', 'sms', 1, '2026-02-01 00:00:00+00'),  -- 31 Jan 13:00 local: January
    (11, 'net', 'p3', 'sms', 1, '2026-02-01 10:59:59+00'),  -- 31 Jan 23:59:59 local: January
    (11, 'net', 'p4', 'sms', 1, '2026-02-01 11:00:00+00'),  -- 1 Feb 00:00 local: February
    -- New York, billing day 28: 28 Feb 00:00 EST is 05:00 UTC
    (30, 'net', 'n1', 'sms', 1, '2026-02-28 04:59:59+00'),  -- 27 Feb 23:59:59 local: 28 Jan - 28 Feb
    (30, 'net', 'n2', 'sms', 1, '2026-02-28 05:00:00+00');  -- 28 Feb 00:00 local: 28 Feb - 28 Mar
SELECT rate_pending() AS rated;
SELECT * FROM pg_temp.charges(10);
SELECT * FROM pg_temp.charges(11);
-- 2026-02-01 00:00 UTC: Kiritimati's January has ended (at 31 Jan 10:00 UTC),
-- Pago Pago's has not (it ends at 1 Feb 11:00 UTC)
SELECT run_billing('2026-02-01 00:00+00') AS invoices;                  -- 1
SELECT run_billing('2026-02-01 10:59:59+00') AS invoices;               -- 0
SELECT run_billing('2026-02-01 11:00+00') AS invoices;                  -- 1
-- 28 Feb 00:00 in New York: the period 28 Jan - 28 Feb has ended
SELECT run_billing('2026-02-28 05:00+00') AS invoices;                  -- 1
-- Kiritimati's and Pago Pago's Februaries
SELECT run_billing('2026-03-01 11:00+00') AS invoices;                  -- 2
-- 28 Mar 00:00 EDT (04:00 UTC): the period 28 Feb - 28 Mar has ended
SELECT run_billing('2026-03-28 04:00+00') AS invoices;                  -- 1
-- Kiritimati: January (31 days), subscribed from 10 Jan: 22 days: 31.00 x
-- 22/31 = 22.00; sms k1 0.10; total 22.10.  February (28 days), ended 15 Feb:
-- 1..14 Feb = 14 days: 31.00 x 14/28 = 15.50; sms k2, k3, k4 0.30; total 15.80.
SELECT * FROM pg_temp.invoices(10);
SELECT * FROM pg_temp.lines(10);
-- Pago Pago: January from 20 Jan 12:00 (the start day counts): 20..31 Jan =
-- 12 days: 31.00 x 12/31 = 12.00; sms p1, p2, p3 0.30; total 12.30.
-- February, ended 8 Feb: 7 days: 31.00 x 7/28 = 7.75; sms p4 0.10; total 7.85.
SELECT * FROM pg_temp.invoices(11);
SELECT * FROM pg_temp.lines(11);
-- Billing day 28: 28 Jan - 28 Feb has 31 days, subscribed from 10 Feb: 10..27
-- Feb = 18 days: 31.00 x 18/31 = 18.00; sms n1 0.10; total 18.10.
-- 28 Feb - 28 Mar has 28 days (671 hours: DST began on 8 March), ended 14
-- Mar: 28 Feb..13 Mar = 14 days: 31.00 x 14/28 = 15.50; sms n2 0.10; total 15.60.
SELECT * FROM pg_temp.invoices(30);
SELECT * FROM pg_temp.lines(30);

-------------------------------------------------------------------------------
-- 3. The other DST month: Europe/Berlin, March 2026 (31 local days, 743 hours)
-------------------------------------------------------------------------------
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (21, 'net', 'm1', 'sms', 1, '2026-03-29 00:30+00'),     -- 01:30 CET, before the clocks go forward: March
    (21, 'net', 'm2', 'sms', 1, '2026-03-31 21:59:59+00'),  -- 31 Mar 23:59:59 CEST: March
    (21, 'net', 'm3', 'sms', 1, '2026-03-31 22:00+00');     -- 1 Apr 00:00 CEST: April
SELECT rate_pending() AS rated;
SELECT run_billing('2026-04-01 00:00 Europe/Berlin') AS invoices;       -- 1
-- March: 10..31 Mar = 22 days of 31: 31.00 x 22/31 = 22.00 (by hours 31.00 x
-- 527/743 = 21.99); sms m1, m2 0.20; total 22.20
SELECT * FROM pg_temp.invoices(21);
SELECT * FROM pg_temp.lines(21);

-------------------------------------------------------------------------------
-- 4. April 2026: a plan change, an advance plan, yen and dinars, and a tax
--    code without a rate
-------------------------------------------------------------------------------
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (40, 'net', 'c1', 'sms', 1, '2026-04-05 12:00+00'),     -- on Mobile 31: 0.10
    (40, 'net', 'c2', 'sms', 1, '2026-04-20 12:00+00'),     -- on Mobile Big: 0.05
    (41, 'net', 'a1', 'sms', 1, '2026-04-10 12:00+00'),     -- 0.10
    (41, 'net', 'a2', 'sms', 1, '2026-05-05 12:00+00'),     -- 0.10 (May)
    (41, 'net', 'a3', 'sms', 1, '2026-05-06 12:00+00'),     -- 0.10 (May)
    (95, 'net', 'j1', 'data', 5, '2026-04-20 12:00+00'),    -- 5 x 0.3 = 1.5 yen
    (95, 'net', 'j2', 'data', 7, '2026-04-21 12:00+00'),    -- 7 x 0.3 = 2.1 yen
    (96, 'net', 'w1', 'data', 333, '2026-04-10 12:00+00'),  -- 333 x 0.0015 = 0.4995 KWD
    (97, 'net', 'f1', 'sms', 1, '2026-04-10 12:00+00');     -- 0.10
SELECT rate_pending() AS rated;
-- 97's tax code FR-VAT has no rate: 97 is not billed (a warning says so);
-- the other five are: 21 (April), 40, 41, 95, 96
SELECT run_billing('2026-05-01 00:00+00') AS invoices;                  -- 5
SELECT count(*) AS norate_invoices FROM invoice WHERE account_id = 97;  -- 0
INSERT INTO tax_rate (code, rate, valid_from) VALUES ('FR-VAT', 20, '-infinity');
SELECT run_billing('2026-05-01 00:00+00') AS invoices;                  -- 1: now 97
-- 97: April (30 days) 31.00 + sms 0.10 = 31.10; FR-VAT 20 %: 6.22; total 37.32
SELECT * FROM pg_temp.invoices(97);
-- 21, April: ended 2 Apr: 1 day of 30: 31.00 x 1/30 = 1.033333 -> 1.03; sms
-- m3 0.10; total 1.13
SELECT * FROM pg_temp.invoices(21) OFFSET 1;
SELECT * FROM pg_temp.lines(21) OFFSET 2;
-- 40, the plan change on 11 April (30 days): Mobile 31 for 1..10 Apr = 10
-- days: 31.00 x 10/30 = 10.333333 -> 10.33; Mobile Big from 11 Apr: 20 days:
-- 62.00 x 20/30 = 41.333333 -> 41.33; sms on each plan's rate: 0.10 and 0.05
-- (one line per plan); subtotal = total 51.81
SELECT * FROM pg_temp.invoices(40);
SELECT * FROM pg_temp.lines(40);
-- 41, advance billing: April's invoice has April's fee (30.00) and May's
-- (30.00, in advance), sms a1 0.10: total 60.10
SELECT * FROM pg_temp.invoices(41);
SELECT * FROM pg_temp.lines(41);
-- 95, JPY (0 decimals), Tokyo: 11..30 Apr = 20 days: 980 x 20/30 = 653.333333
-- -> 653; data 1.5 + 2.1 = 3.6 -> 4 (rounded once); subtotal 657; JP-CT 10 %
-- of 657 = 65.7 -> 66; total 723
SELECT * FROM pg_temp.invoices(95);
SELECT * FROM pg_temp.lines(95);
-- 96, KWD (3 decimals), Kuwait: 1..15 Apr = 15 days: 3.500 x 15/30 = 1.750;
-- data 0.4995 -> 0.500 (half up); total 2.250
SELECT * FROM pg_temp.invoices(96);
SELECT * FROM pg_temp.lines(96);
-- 41 cancels its advance plan on 21 May, after May's fee was invoiced
SELECT unsubscribe(:sub41, '2026-05-21 00:00+00');

-------------------------------------------------------------------------------
-- 5. May - July 2026: a corporate parent with a sub-account, discounts, two
--    tax rates and a rate change, prepaid money, a late event
-------------------------------------------------------------------------------
INSERT INTO discount (discount_id, account_id, plan_code, service, percent, amount, max_periods) VALUES
    (1, 50, 'M31', NULL,   10,   NULL, NULL),  -- Corp: 10 % off its Mobile 31 lines
    (2, 51, NULL,  NULL,   NULL, 5.00, NULL),  -- the field team: 5.00 off its section
    (3, 60, 'M31', NULL,   15,   NULL, 2),     -- 15 % off Mobile 31, for the first 2 periods
    (4, 60, NULL,  'data', NULL, 0.02, NULL),  -- 0.02 off data
    (5, 61, NULL,  NULL,   NULL, 50.00, NULL), -- more than the whole section
    (6, 61, NULL,  NULL,   10,   NULL, NULL),  -- nothing left for it
    (7, 61, NULL,  'sms',  NULL, 1.00, NULL);  -- nor for this one
-- 0.015 off 80's June: discounts are in the currency's minor unit, 0.02
INSERT INTO discount (discount_id, account_id, amount, valid_from, valid_until)
VALUES (8, 80, 0.015, '2026-06-01 00:00+00', '2026-07-01 00:00+00');
-- one-time charges: a headset for Corp's office (no tax code of its own: its
-- payer's, DE-VAT); a SIM card and a goodwill credit for 80 in June
SELECT add_charge(52, 10.00, 'Headset', 'one_time', '2026-05-20 12:00+00', 'hs-52') > 0 AS charged;
SELECT add_charge(80, 4.99, 'SIM card', 'one_time', '2026-06-10 12:00+00', 'sim-80') > 0 AS charged,
       add_charge(80, -1.50, 'Goodwill', 'adjustment', '2026-06-11 12:00+00', 'gw-80') > 0 AS charged;
SELECT top_up(70, 100.00, 'pre-70') > 0 AS topped_up, top_up(71, 20.00, 'pre-71') > 0 AS topped_up;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs) VALUES
    (50, 'net', 'v1', 'voice', 120, '2026-05-04 09:00+00', '{"destination": "+49 30 123"}'),  -- 1.20
    (50, 'net', 'v2', 'voice', 60, '2026-05-04 10:00+00', '{"destination": "+44 20 123"}'),   -- UK: 3.00
    (51, 'net', 'd1', 'data', 100, '2026-05-05 09:00+00', '{}'),                              -- 1.25
    (51, 'net', 's1', 'sms', 3, '2026-05-05 10:00+00', '{}'),                                 -- 0.30
    (60, 'net', 'v1', 'voice', 103, '2026-05-06 09:00+00', '{}'),                             -- 1.03
    (60, 'net', 'd1', 'data', 1, '2026-05-06 10:00+00', '{}'),                                -- 0.0125
    (60, 'net', 'd2', 'data', 1, '2026-05-06 11:00+00', '{}'),                                -- 0.0125
    (60, 'net', 'v2', 'voice', 100, '2026-06-06 09:00+00', '{}'),                             -- June: 1.00
    (60, 'net', 'd3', 'data', 4, '2026-07-06 09:00+00', '{}'),                                -- July: 0.05
    (61, 'net', 's1', 'sms', 1, '2026-05-07 09:00+00', '{}'),                                 -- 0.10
    (70, 'net', 'd1', 'data', 1, '2026-05-08 09:00+00', '{}'),
    (70, 'net', 'd2', 'data', 1, '2026-05-08 10:00+00', '{}'),
    (70, 'net', 'd3', 'data', 1, '2026-05-08 11:00+00', '{}'),                                -- 3 x 0.0125
    (71, 'net', 'd1', 'data', 1, '2026-05-08 09:00+00', '{}'),
    (71, 'net', 'd2', 'data', 1, '2026-05-08 10:00+00', '{}'),
    (71, 'net', 'd3', 'data', 1, '2026-05-08 11:00+00', '{}'),                                -- 3 x 0.0125
    (80, 'net', 'l1', 'sms', 1, '2026-05-10 09:00+00', '{}');                                 -- 0.10
SELECT rate_pending() AS rated;
-- 41, 50 (with 51), 60, 61, 70, 71, 80; not 65 (its period ends 15 June)
SELECT run_billing('2026-06-01 00:00+00') AS invoices;                  -- 7
-- 41, cancelled on 21 May: May's fee was 30.00 in advance, 1..20 May = 20
-- days of 31 are used: 30.00 x 20/31 = 19.354839, so 30.00 - 19.354839 =
-- 10.645161 is credited: -10.65; sms a2, a3 0.20; total -10.45, a credit
-- (nothing prepaid: amount_due -10.45).  June: nothing.
SELECT * FROM pg_temp.invoices(41);
SELECT * FROM pg_temp.lines(41);

-- The corporate invoice, May (31 days): one invoice for Corp with the
-- sections of the field team (src 51) and the office (52); neither has an
-- invoice of its own.
--   Corp: Mobile 31 31.00, calls 1.20, calls to the UK 3.00 (its own line:
--         the UK rate) = 35.20; 10 % off Mobile 31 lines: 3.52
--   field team: Mobile 31 31.00, data 1.25, sms 0.30 = 32.55; 5.00 off
--   office: headset 10.00
--   DE-RED 7 % of the field team's 32.55 - 5.00 = 27.55: 1.9285 -> 1.93
--   DE-VAT 19 % of Corp's 35.20 - 3.52 = 31.68 and the office's 10.00 =
--         41.68: 7.9192 -> 7.92 (rounded once for the rate)
--   subtotal 35.20 + 32.55 + 10.00 = 77.75, discount -8.52, tax 9.85,
--   total 79.08
SELECT * FROM pg_temp.invoices(50);
SELECT * FROM pg_temp.lines(50);
SELECT count(*) AS section_invoices FROM invoice WHERE account_id IN (51, 52);
SELECT c.account_id, count(*) AS charges, count(*) FILTER (WHERE i.account_id = 50) AS on_corp_invoice
FROM charge c LEFT JOIN invoice i ON i.invoice_id = c.invoice_id WHERE c.account_id IN (51, 52)
GROUP BY 1 ORDER BY 1;

-- 61: 31.00 + sms 0.10 = 31.10; the 50.00 discount takes all of it (never
-- below zero), the 10 % and the sms discount find nothing left; tax 0.00;
-- total 0.00
SELECT * FROM pg_temp.invoices(61);
SELECT * FROM pg_temp.lines(61);

-- Prepaid (DE-VAT): 31.00 + data 3 x 0.0125 = 0.0375 -> 0.04 (one rounding:
-- per charge it would be 0.03) = 31.04; tax 19 %: 5.8976 -> 5.90; total 36.94.
--   70 had 100.00: prepaid 36.94, due 0.00; 100.00 - 36.94 = 63.06 stays
--   71 had 20.00: prepaid 20.00, due 16.94; the balance is -16.94
SELECT * FROM pg_temp.invoices(70);
SELECT * FROM pg_temp.lines(70);
SELECT * FROM pg_temp.money(70);
SELECT * FROM pg_temp.invoices(71);
SELECT * FROM pg_temp.money(71);

-- A late event: 80's call of 20 May arrives after May was invoiced; it goes
-- to June, the next open period
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
VALUES (80, 'net', 'l2', 'sms', 1, '2026-05-20 09:00+00');
SELECT rate_pending() AS rated;
SELECT * FROM pg_temp.charges(80);
-- 65, billing day 15: 15 May - 15 Jun (31 days): 31.00; the XX rate of
-- 12 % is valid from 15 Jun 00:00, the period's end, so 10 % applies: 3.10;
-- total 34.10
SELECT run_billing('2026-06-15 00:00+00') AS invoices;                  -- 1
-- 60's and 80's Junes
SELECT run_billing('2026-07-01 00:00+00') AS invoices;                  -- 2
-- 65: 15 Jun - 15 Jul (30 days): 31.00; 12 % now: 3.72; total 34.72
SELECT run_billing('2026-07-15 00:00+00') AS invoices;                  -- 1
-- 60's July
SELECT run_billing('2026-08-01 00:00+00') AS invoices;                  -- 1
SELECT * FROM pg_temp.invoices(65);
SELECT * FROM pg_temp.lines(65);
-- 80: May 31.00 + sms l1 0.10 = 31.10.  June (30 days): 31.00 + the late
-- sms l2 0.10 + SIM card 4.99 + goodwill -1.50 = 34.59; discount 0.015 ->
-- 0.02; total 34.57
SELECT * FROM pg_temp.invoices(80);
SELECT * FROM pg_temp.lines(80);
SELECT * FROM pg_temp.charges(80);
-- its lines are in whole cents: it can be finalized
SELECT finalize_invoice(invoice_id) AS number FROM invoice WHERE account_id = 80 ORDER BY period_start;
-- 60, discounts 3 (15 % of Mobile 31, 2 periods) and 4 (0.02 off data):
--   May: 31.00 + calls 1.03 + data 2 x 0.0125 = 0.025 -> 0.03 = 32.06;
--        15 % of 32.06 = 4.809 -> 4.81 (rounded once; line by line it would
--        be 4.65 + 0.15 + 0.00 = 4.80); data 0.02; discount -4.83; total 27.23
--   June: 31.00 + calls 1.00 = 32.00; 15 %: 4.80; no data; total 27.20
--   July: 31.00 + data 4 x 0.0125 = 0.05 = 31.05; the 15 % had its 2
--        periods; data 0.02; total 31.03
SELECT * FROM pg_temp.invoices(60);
SELECT * FROM pg_temp.lines(60);

-------------------------------------------------------------------------------
-- 6. Catch-up: three periods missed, invoiced in one run, in order; prepaid
--    money spread over them; re-runs; empty periods
-------------------------------------------------------------------------------
SELECT top_up(90, 100.00, 'pre-90') > 0 AS topped_up;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (90, 'net', 'x1', 'sms', 1, '2026-08-10 09:00+00'),
    (90, 'net', 'x2', 'sms', 2, '2026-09-10 09:00+00'),
    (90, 'net', 'x3', 'sms', 3, '2026-10-10 09:00+00');
SELECT rate_pending() AS rated;
SET convbill.finalize_invoices = on;
SELECT run_billing('2026-11-01 00:00+00') AS invoices;                  -- 3
RESET convbill.finalize_invoices;
-- Aug: 31.00 + 0.10 = 31.10, VAT 5.909 -> 5.91, total 37.01
-- Sep: 31.00 + 0.20 = 31.20, VAT 5.928 -> 5.93, total 37.13
-- Oct: 31.00 + 0.30 = 31.30, VAT 5.947 -> 5.95, total 37.25
-- prepaid 100.00 pays Aug (37.01) and Sep (37.13), and 100.00 - 74.14 =
-- 25.86 of Oct: due 37.25 - 25.86 = 11.39; the balance is -11.39
SELECT * FROM pg_temp.invoices(90);
SELECT i.number, to_char(i.period_start AT TIME ZONE 'UTC', 'YYYY-MM') AS period
FROM invoice i WHERE i.account_id = 90 ORDER BY i.number;
SELECT * FROM pg_temp.money(90);
-- a re-run creates nothing
SELECT run_billing('2026-11-01 00:00+00') AS invoices;                  -- 0

-------------------------------------------------------------------------------
-- 7. A charge written straight into a period already invoiced (an INSERT
--    that did not ask open_period): it goes on the next invoice, and the
--    account's billing goes on
-------------------------------------------------------------------------------
-- 85's November: 31.00, VAT 5.89, total 36.89; 90's November is empty: no
-- invoice
SELECT run_billing('2026-12-01 00:00+00') AS invoices;                  -- 1
SELECT count(*) AS catch_up_invoices FROM invoice WHERE account_id = 90;   -- still 3
INSERT INTO charge (account_id, kind, amount, currency, occurred_at, period_start, period_end, description)
VALUES (85, 'one_time', 7.50, 'EUR', '2026-11-20 12:00+00', '2026-11-01 00:00+00', '2026-12-01 00:00+00', 'Installation');
SELECT add_charge(85, 2.50, 'Cable', 'one_time', '2026-12-05 12:00+00', 'cable-85') > 0 AS charged;
SELECT run_billing('2027-01-01 00:00+00') AS invoices;                  -- 1
-- 85's December: 31.00 + installation 7.50 (November's) + cable 2.50 =
-- 41.00; VAT 7.79; total 48.79
SELECT * FROM pg_temp.invoices(85);
SELECT * FROM pg_temp.lines(85);
SELECT * FROM pg_temp.charges(85);

-------------------------------------------------------------------------------
-- 8. convbill.invoice_empty_periods = on: an empty period gets an invoice
-------------------------------------------------------------------------------
-- every paying account (all but 51 and 52) has an ended, empty period by
-- 1 February 2027: 19 invoices of 0.00 without lines
SET convbill.invoice_empty_periods = on;
SELECT run_billing('2027-02-01 00:00+00') AS invoices;                  -- 19
RESET convbill.invoice_empty_periods;
SELECT count(*) AS empty_invoices, count(DISTINCT account_id) AS accounts,
       bool_and(i.total = 0 AND i.subtotal = 0 AND i.amount_due = 0) AS all_zero,
       bool_and(NOT EXISTS (SELECT 1 FROM invoice_line l WHERE l.account_id = i.account_id
                                                           AND l.invoice_id = i.invoice_id)) AS no_lines
FROM invoice i WHERE i.period_end > '2026-12-31 00:00+00' AND i.account_id <> 85
   OR i.account_id = 85 AND i.period_start >= '2027-01-01 00:00+00';
SELECT * FROM pg_temp.invoices(90) OFFSET 3;

-------------------------------------------------------------------------------
-- 9. Invariants over everything billed above (every period has ended)
-------------------------------------------------------------------------------
-- each invoice: total = the exact sum of its lines, subtotal, discount and tax
-- = their lines, lines in the currency's minor unit, amount_due = total -
-- prepaid_applied, prepaid between 0 and the total; one per account and period
SELECT count(*) AS invoices,
       count(*) FILTER (WHERE i.total = l.total AND i.subtotal = l.subtotal AND i.discount = l.discount
                          AND i.tax = l.tax) AS lines_add_up,
       count(*) FILTER (WHERE l.unrounded = 0) AS lines_rounded,
       count(*) FILTER (WHERE i.amount_due = i.total - i.prepaid_applied AND i.prepaid_applied >= 0
                          AND i.prepaid_applied <= greatest(i.total, 0)) AS due_ok,
       count(DISTINCT (i.account_id, i.period_start)) AS periods
FROM invoice i
CROSS JOIN LATERAL (
    SELECT coalesce(sum(x.amount), 0) AS total,
           coalesce(sum(x.amount) FILTER (WHERE x.kind NOT IN ('discount', 'tax')), 0) AS subtotal,
           coalesce(sum(x.amount) FILTER (WHERE x.kind = 'discount'), 0) AS discount,
           coalesce(sum(x.amount) FILTER (WHERE x.kind = 'tax'), 0) AS tax,
           count(*) FILTER (WHERE x.amount <> round(x.amount, currency_exponent(i.currency))) AS unrounded
    FROM invoice_line x WHERE x.account_id = i.account_id AND x.invoice_id = i.invoice_id) l;
-- every charge is on an invoice of its payer, for its period or (left over)
-- a later one; each invoice's charged is the exact sum of the charges on it,
-- so no charge counts twice
SELECT count(*) AS charges, count(*) FILTER (WHERE c.invoice_id IS NULL) AS unbilled,
       count(*) FILTER (WHERE i.account_id = payer_of(c.account_id) AND i.period_start >= c.period_start) AS on_payers_invoice
FROM charge c LEFT JOIN invoice i ON i.invoice_id = c.invoice_id;
SELECT count(*) AS invoices, count(*) FILTER (WHERE i.charged = coalesce(c.sum, 0)) AS charged_matches,
       sum(i.charged) = (SELECT sum(amount) FROM charge) AS all_charges_once
FROM invoice i LEFT JOIN (SELECT invoice_id, sum(amount) FROM charge GROUP BY 1) c ON c.invoice_id = i.invoice_id;
-- every invoiced period is closed for the payer and its sections
SELECT count(*) AS invoiced_periods,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM closed_period cp WHERE cp.account_id = i.account_id
                                                                   AND cp.period_start = i.period_start)) AS closed
FROM invoice i;
-- the ledger adds up to every bucket; a payer's money = its top-ups - the
-- totals of its invoices (every charge is billed, so the invoices carry all)
SELECT count(*) AS buckets, count(*) FILTER (WHERE b.balance = coalesce(l.sum, 0)) AS ledger_matches
FROM bucket b LEFT JOIN (SELECT account_id, bucket_id, sum(amount) FROM ledger GROUP BY 1, 2) l
    ON l.account_id = b.account_id AND l.bucket_id = b.bucket_id;
SELECT count(*) AS payers,
       count(*) FILTER (WHERE m.balance = coalesce(t.sum, 0) - coalesce(v.sum, 0)) AS money_matches
FROM account a
JOIN bucket m ON m.account_id = a.account_id AND m.origin = 'main'
LEFT JOIN (SELECT account_id, sum(amount) FROM ledger WHERE kind = 'top_up' GROUP BY 1) t ON t.account_id = a.account_id
LEFT JOIN (SELECT account_id, sum(total) FROM invoice GROUP BY 1) v ON v.account_id = a.account_id
WHERE NOT a.bill_to_parent;
-- and each of the 46 drafts passes finalize_invoice's checks (numbers 6 to 51)
SELECT count(*) AS finalized, min(n) AS first, max(n) AS last
FROM (SELECT finalize_invoice(invoice_id) AS n FROM invoice WHERE status = 'draft'
      ORDER BY account_id, period_start) f;

-------------------------------------------------------------------------------
-- 10. The committing bill run: run_billing_batches(as_of, batch_accounts)
--     commits after every batch; it bills what one run_billing(as_of) bills.
--     run_billing(as_of, max_accounts) and run_billing_step(as_of, n) bound
--     the work of one call.
-------------------------------------------------------------------------------
-- everything a bill run writes, ids and clock times aside
CREATE FUNCTION pg_temp.bill_state()
RETURNS text
LANGUAGE sql AS $$
    SELECT concat_ws(E'\n',
        (SELECT string_agg(concat_ws(' ', i.account_id, i.kind, i.period_start, i.period_end, i.status, i.currency,
                                     i.subtotal, i.discount, i.tax, i.total, i.prepaid_applied, i.amount_due,
                                     i.charged), E'\n' ORDER BY i.account_id, i.period_start)
         FROM convbill.invoice i),
        (SELECT string_agg(concat_ws(' ', i.account_id, i.period_start, l.line_no, l.kind, l.service, l.zone,
                                     l.description, l.quantity, l.amount, l.source_account_id, l.plan_code,
                                     l.discount_id, l.tax_code, l.tax_rate), E'\n'
                           ORDER BY i.account_id, i.period_start, l.line_no)
         FROM convbill.invoice i JOIN convbill.invoice_line l USING (account_id, invoice_id)),
        (SELECT string_agg(concat_ws(' ', c.account_id, c.kind, c.service, c.amount, c.period_start,
                                     c.fee_period_start, c.description, i.account_id, i.period_start), E'\n'
                           ORDER BY c.account_id, c.period_start, c.kind, c.amount, c.description)
         FROM convbill.charge c LEFT JOIN convbill.invoice i ON i.invoice_id = c.invoice_id),
        (SELECT string_agg(concat_ws(' ', b.account_id, b.origin, b.balance), E'\n' ORDER BY b.account_id, b.bucket_id)
         FROM convbill.bucket b WHERE b.kind = 'money'),
        (SELECT string_agg(concat_ws(' ', cp.account_id, cp.period_start, cp.period_end), E'\n'
                           ORDER BY cp.account_id, cp.period_start)
         FROM convbill.closed_period cp))
$$;
-- the (paying account, period)s closed so far
CREATE FUNCTION pg_temp.paying_periods()
RETURNS bigint
LANGUAGE sql AS $$
    SELECT count(*) FROM convbill.closed_period cp JOIN convbill.account a USING (account_id) WHERE NOT a.bill_to_parent
$$;

INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day, parent_id, bill_to_parent, tax_code) VALUES
    (300, 'BATCH-CATCHUP', 'Two missed periods', 'EUR', 'UTC', 1, NULL, false, 'DE-VAT'),
    (301, 'BATCH-PARENT',  'Parent',             'EUR', 'UTC', 1, NULL, false, NULL),
    (302, 'BATCH-CHILD',   'Child of 301',       'EUR', 'UTC', 1, 301,  true,  NULL),
    (303, 'BATCH-PREPAID', 'Prepaid',            'EUR', 'UTC', 1, NULL, false, 'DE-VAT');
SELECT count(unsubscribe(subscribe(x.acc, 'M31', x.start), x.until)) AS subscriptions
FROM (VALUES (300, '2027-03-01 00:00+00'::timestamptz, '2027-05-01 00:00+00'::timestamptz),
             (301, '2027-04-01 00:00+00', '2027-05-01 00:00+00'),
             (302, '2027-04-11 00:00+00', '2027-05-01 00:00+00'),
             (303, '2027-04-01 00:00+00', '2027-05-01 00:00+00')) x(acc, start, until);
SELECT top_up(303, 20.00, 'pre-303') > 0 AS topped_up;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (300, 'net', 'q1', 'sms', 1, '2027-03-10 09:00+00'),    -- March: 0.10
    (300, 'net', 'q2', 'sms', 2, '2027-04-10 09:00+00'),    -- April: 0.20
    (302, 'net', 'q3', 'sms', 3, '2027-04-20 09:00+00');    -- the child, April: 0.30
SELECT rate_pending() AS rated;

-- The reference: one run_billing('2027-05-01'), rolled back, its result kept.
-- 4 invoices: 300's March and April (missed, caught up), 301's April with
-- its child's section, 303's April.  The 19 earlier paying accounts have
-- ended, empty periods (no invoice) that are closed all the same: 3 each
-- (Pago Pago: January to March; its April ends 1 May 11:00 UTC; the others
-- February to April in their zones and billing days), 57, plus 300's 2,
-- 301's and 303's: 61 (paying account, period)s.
BEGIN;
SELECT pg_temp.paying_periods() AS periods_before \gset
SELECT run_billing('2027-05-01 00:00+00') AS invoices;                  -- 4
SELECT pg_temp.paying_periods() - :periods_before AS periods;           -- 61
SELECT pg_temp.bill_state() AS one_call \gset
ROLLBACK;

-- max_accounts bounds one call: 5 (paying account, period)s, those of the
-- lowest ids (10, 11, 20, 21, 30: empty periods, no invoice)
BEGIN;
SELECT run_billing('2027-05-01 00:00+00', 5) AS invoices;               -- 0
SELECT pg_temp.paying_periods() - :periods_before AS periods;           -- 5
SELECT array_agg(cp.account_id ORDER BY cp.account_id) AS accounts
FROM closed_period cp WHERE cp.closed_at = now();
ROLLBACK;

-- The procedure, 2 per batch: 61 (paying account, period)s in 31 batches
-- (the 31st takes the last one and finds the run complete), each committed;
-- the same invoices, lines, charges, balances and closed periods as the one
-- call
CALL run_billing_batches('2027-05-01 00:00+00', 2) \gset b_
SELECT :b_invoices AS invoices, :b_batches AS batches, :'b_longest_batch'::interval > interval '0' AS timed,
       pg_temp.paying_periods() - :periods_before AS periods;
SELECT pg_temp.bill_state() = :'one_call' AS same_as_one_run_billing;
-- 300, two missed periods, in two batches (March's, then the next batch
-- takes April first: the lowest account id):
--   March (31 days): 31.00 + sms 0.10 = 31.10; DE-VAT 19 %: 5.909 -> 5.91; 37.01
--   April (30 days): 31.00 + sms 0.20 = 31.20; DE-VAT 19 %: 5.928 -> 5.93; 37.13
--   nothing prepaid (the balance was below zero): due = total; the balance
--   is -(37.01 + 37.13) = -74.14
SELECT * FROM pg_temp.invoices(300);
SELECT * FROM pg_temp.lines(300);
SELECT * FROM pg_temp.money(300);
-- 301 with its child 302's section (no tax codes): its own Mobile 31 31.00;
-- 302 from 11 April: 20 days of 30: 31.00 x 20/30 = 20.666667 -> 20.67, sms
-- 0.30; total 51.97; 302 has no invoice of its own
SELECT * FROM pg_temp.invoices(301);
SELECT * FROM pg_temp.lines(301);
SELECT count(*) AS child_invoices FROM invoice WHERE account_id = 302;
-- 303: 31.00; DE-VAT 5.89; total 36.89; 20.00 prepaid, due 16.89; the
-- balance is 20.00 - 36.89 = -16.89
SELECT * FROM pg_temp.invoices(303);
SELECT * FROM pg_temp.money(303);
-- again: nothing is due, one batch
CALL run_billing_batches('2027-05-01 00:00+00', 2) \gset b_
SELECT :b_invoices AS invoices, :b_batches AS batches;

-- run_billing_step(as_of, n), for a caller that commits between calls (the
-- bill job): each call here is its own transaction.  As of 1 June, each of
-- the 22 paying accounts has one period due (Pago Pago its April, ending
-- 1 May 11:00 UTC; 30 and 65 the periods ending 28 and 15 May; the others
-- May): 10, 10, 2, then 0 (the run is complete) and 0 again.  Only 303 has
-- something: a one-time charge of 5 May, 0.10; DE-VAT 0.019 -> 0.02; total
-- 0.12, nothing prepaid (the balance is below zero)
SELECT add_charge(303, 0.10, 'Paper bill', 'one_time', '2027-05-05 09:00+00', 'paper-303') > 0 AS charged;
SELECT run_billing_step('2027-06-01 00:00+00', 10) AS step1;
SELECT run_billing_step('2027-06-01 00:00+00', 10) AS step2;
SELECT run_billing_step('2027-06-01 00:00+00', 10) AS step3;
SELECT run_billing_step('2027-06-01 00:00+00', 10) AS step4;
SELECT run_billing_step('2027-06-01 00:00+00', 10) AS step5;
SELECT * FROM pg_temp.invoices(303) OFFSET 1;

-- Bad calls
BEGIN;
CALL run_billing_batches('2027-06-01 00:00+00', 2);                     -- commits: not in a transaction block
ROLLBACK;
\echo :LAST_ERROR_SQLSTATE
CALL run_billing_batches('2027-06-01 00:00+00', 0);
\echo :LAST_ERROR_SQLSTATE
CALL run_billing_batches('infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT run_billing('2027-06-01 00:00+00', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT run_billing_step(NULL, 10);
\echo :LAST_ERROR_SQLSTATE

-------------------------------------------------------------------------------
-- 11. A draft discarded and billed again.  310 (DE-VAT) pays for 311: July
-- 2027, M31 for the whole month 31.00, a one-time 4.00 (310) and 2.50 (311,
-- a section): subtotal 37.50, DE-VAT 19 % = 7.125 -> 7.13, total 44.63.  The
-- money: -4.00 - 2.50 when charged, -31.00 for the fee the run charges,
-- -7.13 the run takes beyond the charges: -44.63.
-------------------------------------------------------------------------------
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day, parent_id, bill_to_parent, tax_code) VALUES
    (310, 'REDO', 'Re-billed', 'EUR', 'UTC', 1, NULL, false, 'DE-VAT'),
    (311, 'REDO-A', 'Re-billed, team', 'EUR', 'UTC', 1, 310, true, NULL);
SELECT unsubscribe(subscribe(310, 'M31', '2027-07-01 00:00+00'), '2027-08-01 00:00+00') IS NOT NULL AS subscribed;
SELECT add_charge(310, 4.00, 'Setup', 'one_time', '2027-07-10 09:00+00') > 0 AS charged_310,
       add_charge(311, 2.50, 'SIM card', 'one_time', '2027-07-12 09:00+00') > 0 AS charged_311;
SELECT run_billing('2027-08-01 00:00+00') >= 1 AS billed;
SELECT invoice_id AS redo_id, charged, debited FROM invoice WHERE account_id = 310 \gset
\echo :charged :debited
SELECT * FROM pg_temp.invoices(310);
SELECT * FROM pg_temp.lines(310);
SELECT * FROM pg_temp.money(310);
-- discarded (311 was detached from 310 meanwhile: the draft still billed it):
-- its 3 charges (fee, 4.00, 2.50) are unbilled again, July is open again for
-- 310 and 311, and the 7.13 comes back: -37.50
UPDATE account SET bill_to_parent = false WHERE account_id = 311;
SELECT discard_draft(:redo_id) AS charges_given_back;
UPDATE account SET bill_to_parent = true WHERE account_id = 311;
SELECT count(*) AS invoices, (SELECT count(*) FROM invoice_line WHERE account_id = 310) AS lines FROM invoice WHERE account_id = 310;
SELECT account_id, count(*) FILTER (WHERE invoice_id IS NULL) AS unbilled, count(*) AS charges
FROM charge WHERE account_id IN (310, 311) GROUP BY account_id ORDER BY account_id;
SELECT count(*) AS closed_july FROM closed_period WHERE account_id IN (310, 311) AND period_start = '2027-07-01 00:00+00';
SELECT * FROM pg_temp.money(310);
SELECT kind, amount, reference LIKE 'draft invoice % discarded: %' AS says_why
FROM ledger WHERE account_id = 310 AND kind = 'adjustment';
-- billed again: the same invoice (no second fee: the fee is charged), the
-- same money as after the first run
SELECT run_billing('2027-08-01 00:00+00') AS rebilled;
SELECT * FROM pg_temp.invoices(310);
SELECT * FROM pg_temp.lines(310);
SELECT * FROM pg_temp.money(310);
SELECT count(*) AS fee_charges FROM charge WHERE account_id = 310 AND kind = 'recurring';
-- a final invoice is not discarded, an unknown one is not found
SELECT invoice_id AS redo_id FROM invoice WHERE account_id = 310 \gset
SELECT finalize_invoice(:redo_id) IS NOT NULL AS finalized;
SELECT discard_draft(:redo_id);
\echo :LAST_ERROR_SQLSTATE
SELECT discard_draft(-1);
\echo :LAST_ERROR_SQLSTATE

-- A period reopened while a run is under way: the run listed what is due
-- when it started (9002 and 9003: October, their September drafts existed),
-- then the September drafts are discarded before the run reaches them.  The
-- run bills September first and then October, each on its own invoice (it
-- does not fold September's charges into October's): 9002 still has an
-- August invoice (its last closed period before the discarded one), 9003's
-- discarded draft was its only one.  Fee 10.00 a month; 9002's September
-- also 5.00, 9003's 7.00.  9001 is billed first and stays as it was.
INSERT INTO plan (code, name, currency, recurring_fee) VALUES ('REOPEN', 'Reopen', 'EUR', 10);
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day) VALUES
    (9001, 'reopen-1', 'Reopen 1', 'EUR', 'UTC', 1), (9002, 'reopen-2', 'Reopen 2', 'EUR', 'UTC', 1),
    (9003, 'reopen-3', 'Reopen 3', 'EUR', 'UTC', 1);
INSERT INTO subscription (account_id, plan_code, started_at, ended_at) VALUES
    (9001, 'REOPEN', '2027-08-01 00:00+00', '2027-11-01 00:00+00'),
    (9002, 'REOPEN', '2027-08-01 00:00+00', '2027-11-01 00:00+00'),
    (9003, 'REOPEN', '2027-09-01 00:00+00', '2027-11-01 00:00+00');
SELECT add_charge(9002, 5, 'September item', 'one_time', '2027-09-10 00:00+00') > 0 AS charged,
       add_charge(9003, 7, 'September item', 'one_time', '2027-09-10 00:00+00') > 0 AS charged;
SELECT run_billing('2027-10-01 00:00+00') >= 5 AS billed;
DO $$
BEGIN
    -- a run in steps, until it has billed 9001's October (lowest ids first)
    LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM convbill.invoice WHERE account_id = 9001
                          AND period_start = '2027-10-01 00:00+00');
        IF convbill.run_billing_step('2027-11-01 00:00+00', 1) = 0 THEN
            RAISE EXCEPTION 'the run ended before billing 9001';
        END IF;
    END LOOP;
    -- meanwhile, September's drafts of 9002 and 9003 are discarded
    PERFORM convbill.discard_draft(i.invoice_id) FROM convbill.invoice i
    WHERE i.account_id IN (9002, 9003) AND i.period_start = '2027-09-01 00:00+00';
    -- the run goes on to its end
    WHILE convbill.run_billing_step('2027-11-01 00:00+00', 1) > 0 LOOP
    END LOOP;
END $$;
-- 9001: August 10.00, September 10.00, October 10.00
-- 9002: August 10.00, September 15.00 (fee + 5.00), October 10.00
-- 9003: September 17.00 (fee + 7.00), October 10.00
SELECT i.account_id, to_char(i.period_start, 'YYYY-MM') AS period, i.total, count(l.line_no) AS lines
FROM invoice i JOIN invoice_line l ON l.account_id = i.account_id AND l.invoice_id = i.invoice_id
WHERE i.account_id BETWEEN 9001 AND 9003
GROUP BY i.account_id, i.period_start, i.total ORDER BY i.account_id, i.period_start;
-- nothing left: a run as of the same time bills nothing more for them
SELECT run_billing('2027-11-01 00:00+00') AS again,
       (SELECT count(*) FROM charge WHERE account_id BETWEEN 9001 AND 9003 AND invoice_id IS NULL) AS unbilled;

-- Changes behind an invoiced period are refused (55000), never silently
-- left unbilled: 9002's periods are closed until 2027-11-01.
SELECT subscribe(9002, 'REOPEN', '2027-10-15 00:00+00');
\echo :LAST_ERROR_SQLSTATE
SELECT unsubscribe(s.subscription_id, '2027-10-20 00:00+00') FROM subscription s WHERE s.account_id = 9002;
\echo :LAST_ERROR_SQLSTATE
SELECT change_plan(s.subscription_id, 'REOPEN', '2027-10-20 00:00+00') FROM subscription s WHERE s.account_id = 9002;
\echo :LAST_ERROR_SQLSTATE
-- from the open period on it is fine
SELECT subscribe(9002, 'REOPEN', '2027-11-01 00:00+00') > 0 AS subscribed;
-- a draft with a later invoice after it is not discarded: the later one
-- took the balance as it was (prepaid); newest first works
SELECT discard_draft(i.invoice_id) FROM invoice i WHERE i.account_id = 9002 AND i.period_start = '2027-09-01 00:00+00';
\echo :LAST_ERROR_SQLSTATE
-- payments go to the oldest period first, whatever order the invoices were
-- finalized in: October (10.00) finalized before September (15.00); 15.00
-- paid: August's draft (10.00, still open) is the oldest, so 10.00 is kept
-- for it (allocated when it is final), September gets 5.00, October nothing
SELECT finalize_invoice(i.invoice_id) IS NOT NULL AS finalized FROM invoice i
WHERE i.account_id = 9002 AND i.period_start = '2027-10-01 00:00+00';
SELECT finalize_invoice(i.invoice_id) IS NOT NULL AS finalized FROM invoice i
WHERE i.account_id = 9002 AND i.period_start = '2027-09-01 00:00+00';
SELECT record_payment(9002, 15, 'reopen-pay-1', '2027-11-20 00:00+00') > 0 AS paid;
SELECT to_char(i.period_start, 'YYYY-MM') AS period, s.amount_due, s.paid, s.open
FROM invoice_settlement s JOIN invoice i USING (account_id, invoice_id)
WHERE s.account_id = 9002 ORDER BY i.period_start;

-- A fixed discount is in a currency: one for every account must name it
-- (23514), and it applies only to accounts paying in it.  9004 (EUR, fee
-- 10.00 in November 2027): 2.00 EUR off, not the 3.00 USD: total 8.00.
INSERT INTO discount (amount, valid_from) VALUES (3, '2027-11-01 00:00+00');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO discount (discount_id, amount, currency, valid_from, valid_until) VALUES
    (9001, 3, 'USD', '2027-11-01 00:00+00', '2027-12-01 00:00+00'),
    (9002, 2, 'EUR', '2027-11-01 00:00+00', '2027-12-01 00:00+00');
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day) VALUES
    (9004, 'reopen-4', 'Reopen 4', 'EUR', 'UTC', 1);
SELECT subscribe(9004, 'REOPEN', '2027-11-01 00:00+00') > 0 AS subscribed;
SELECT run_billing('2027-12-01 00:00+00') >= 1 AS billed;
SELECT l.kind, l.description, l.amount FROM invoice i
JOIN invoice_line l ON l.account_id = i.account_id AND l.invoice_id = i.invoice_id
WHERE i.account_id = 9004 ORDER BY l.line_no;
SELECT total FROM invoice WHERE account_id = 9004;

-- a plan fee with more decimals than the bill run's exact arithmetic (12)
-- is refused when the plan is written, not when a bill run meets it
INSERT INTO plan (code, name, currency, recurring_fee) VALUES ('FINE', 'Fine', 'EUR', 9.9999999999999);
\echo :LAST_ERROR_SQLSTATE

-- A payment recorded while the invoice is still a draft settles it when it
-- is finalized (record_payment allocates only to final invoices); one
-- recorded before the bill run is in the invoice's prepaid already and is
-- not allocated to it again.  9005: fee 10.00 a month from December 2027.
--   December: billed (draft, due 10.00), paid 10.00 while a draft, then
--   finalized: paid 10.00, open 0.00.
--   January: 4.00 paid before the run (prepaid 4.00 applied, due 6.00),
--   finalized: that payment is not allocated to it: paid 0, open 6.00; a
--   6.00 payment after it settles it.
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day) VALUES
    (9005, 'reopen-5', 'Reopen 5', 'EUR', 'UTC', 1);
SELECT subscribe(9005, 'REOPEN', '2027-12-01 00:00+00') > 0 AS subscribed;
SELECT run_billing('2028-01-01 00:00+00') >= 1 AS billed;
SELECT record_payment(9005, 10, 'r5-dec', '2028-01-03 00:00+00') > 0 AS paid_while_draft;
SELECT count(*) AS allocated_to_drafts FROM payment_allocation WHERE account_id = 9005;
SELECT finalize_invoice(i.invoice_id) IS NOT NULL AS finalized FROM invoice i WHERE i.account_id = 9005;
SELECT record_payment(9005, 4, 'r5-jan-early', '2028-01-20 00:00+00') > 0 AS paid_early;
SELECT run_billing('2028-02-01 00:00+00') >= 1 AS billed;
SELECT finalize_invoice(i.invoice_id) IS NOT NULL AS finalized FROM invoice i
WHERE i.account_id = 9005 AND i.status = 'draft';
SELECT to_char(i.period_start, 'YYYY-MM') AS period, i.prepaid_applied, s.amount_due, s.paid, s.open
FROM invoice_settlement s JOIN invoice i USING (account_id, invoice_id)
WHERE s.account_id = 9005 ORDER BY i.period_start;
SELECT record_payment(9005, 6, 'r5-jan', '2028-02-03 00:00+00') > 0 AS paid;
SELECT to_char(i.period_start, 'YYYY-MM') AS period, s.paid, s.open
FROM invoice_settlement s JOIN invoice i USING (account_id, invoice_id)
WHERE s.account_id = 9005 ORDER BY i.period_start;
SELECT balance FROM bucket WHERE account_id = 9005 AND origin = 'main';

-- account_statement from real money: 9006 (fee 50.00 from February 2028,
-- invoices final) pays 100.00 for February; March applies the 50.00 left as
-- prepaid.  Statement: +50 (February) -100 (payment) = -50, +50 (March) = 0:
-- nothing owed, as its money balance says (0).  9007 tops up 40.00, then
-- February and March 10.00 each (prepaid): -40 +10 +10 = -20: in credit
-- 20.00, its balance.  (Before, the prepaid applied was a credit line too:
-- 9006 ended at -50, its overpayment counted twice.)
SET convbill.finalize_invoices = on;
INSERT INTO plan (code, name, currency, recurring_fee) VALUES ('STMT', 'Statement', 'EUR', 50);
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day) VALUES
    (9006, 'stmt-6', 'Statement 6', 'EUR', 'UTC', 1), (9007, 'stmt-7', 'Statement 7', 'EUR', 'UTC', 1);
SELECT subscribe(9006, 'STMT', '2028-02-01 00:00+00') > 0 AS subscribed,
       subscribe(9007, 'REOPEN', '2028-02-01 00:00+00') > 0 AS subscribed;
SELECT top_up(9007, 40, 'stmt-7-top-up') > 0 AS topped_up;
SELECT run_billing('2028-03-01 00:00+00') >= 2 AS billed;
SELECT record_payment(9006, 100, 'stmt-6-pay', '2028-03-05 00:00+00') > 0 AS paid;
SELECT run_billing('2028-04-01 00:00+00') >= 2 AS billed;
RESET convbill.finalize_invoices;
SELECT account_id, kind, debit, credit, balance FROM account_statement
WHERE account_id IN (9006, 9007) ORDER BY account_id, at, kind;
SELECT b.account_id, b.balance FROM bucket b WHERE b.account_id IN (9006, 9007) AND b.kind = 'money' ORDER BY 1;

-- A change of time zone or billing day takes effect from the end of the last
-- invoiced period, never before it (the period containing that end under the
-- new settings starts earlier: those days were billed once already).  The
-- first period then runs to the next boundary of the new settings, its fee
-- prorated over the full new period.  Fee 31.00 a month.
--   9008, Berlin -> New York after January: January 31.00; then from
--   Feb 1 00:00 Berlin (Jan 31 18:00 in New York) to Feb 1 00:00 New York,
--   the 6 hours of Jan 31 after 18:00 (the rest of that day was billed in
--   Berlin's January) of 31 days: 31.00 x 0.25/31 = 0.25 (the whole day,
--   1.00, billed 18 hours twice); then February in New York 31.00.
--   9009, billing day 1 -> 15 after January: January 31.00; then Feb 1 to
--   Feb 15, 14 days of the 31 of Jan 15 - Feb 15: 14.00; then Feb 15 - Mar 15
--   31.00.
INSERT INTO plan (code, name, currency, recurring_fee) VALUES ('MOVE', 'Move', 'EUR', 31);
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day) VALUES
    (9008, 'move-8', 'Move 8', 'EUR', 'Europe/Berlin', 1), (9009, 'move-9', 'Move 9', 'EUR', 'UTC', 1);
SELECT subscribe(9008, 'MOVE', '2028-01-01 00:00+01') > 0 AS subscribed,
       subscribe(9009, 'MOVE', '2028-01-01 00:00+00') > 0 AS subscribed;
SELECT run_billing('2028-02-01 00:00+00') >= 2 AS billed;
UPDATE account SET timezone = 'America/New_York' WHERE account_id = 9008;
UPDATE account SET billing_day = 15 WHERE account_id = 9009;
SELECT run_billing('2028-03-16 00:00+00') >= 4 AS billed;
SELECT i.account_id, i.period_start, i.period_end, i.total, l.description
FROM invoice i JOIN invoice_line l ON l.account_id = i.account_id AND l.invoice_id = i.invoice_id
WHERE i.account_id IN (9008, 9009) ORDER BY i.account_id, i.period_start;

-- A closed account's fees stop when it is closed (closed_at, set from
-- status; a time can be given): 9010, 30.00 a month from April 2028, closed
-- on April 16: April 15 of 30 days, 15.00; May nothing.  Closing it inside
-- an invoiced period is refused (55000); reopening clears closed_at.
INSERT INTO plan (code, name, currency, recurring_fee) VALUES ('CLOSE', 'Close', 'EUR', 30);
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day) VALUES
    (9010, 'close-10', 'Close 10', 'EUR', 'UTC', 1);
SELECT subscribe(9010, 'CLOSE', '2028-04-01 00:00+00') > 0 AS subscribed;
UPDATE account SET status = 'closed', closed_at = '2028-04-16 00:00+00' WHERE account_id = 9010;
SELECT run_billing('2028-06-01 00:00+00') >= 1 AS billed;
SELECT i.period_start, i.total, l.description
FROM invoice i JOIN invoice_line l ON l.account_id = i.account_id AND l.invoice_id = i.invoice_id
WHERE i.account_id = 9010 ORDER BY i.period_start;
UPDATE account SET closed_at = '2028-04-20 00:00+00' WHERE account_id = 9010;
\echo :LAST_ERROR_SQLSTATE
UPDATE account SET status = 'active' WHERE account_id = 9010;
SELECT status, closed_at FROM account WHERE account_id = 9010;
UPDATE account SET status = 'closed', closed_at = '2028-06-01 00:00+00' WHERE account_id = 9010;
SELECT status, closed_at FROM account WHERE account_id = 9010;

-- A period closed by hand (close_period: usage frozen before a run) is still
-- billed, with its fees, even with no usage at all: 9011, 10.00 a month from
-- June 2028; June billed; July closed by hand, then the run: July 10.00, and
-- the run marks the period as its own (invoiced_by).
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day) VALUES
    (9011, 'hand-11', 'Hand 11', 'EUR', 'UTC', 1);
SELECT subscribe(9011, 'REOPEN', '2028-06-01 00:00+00') > 0 AS subscribed;
SELECT run_billing('2028-07-01 00:00+00') >= 1 AS billed;
SELECT lower(close_period(9011, '2028-07-15 00:00+00')) AS closed_by_hand;
SELECT run_billing('2028-08-01 00:00+00') >= 1 AS billed;
SELECT to_char(i.period_start, 'YYYY-MM') AS period, i.total FROM invoice i WHERE i.account_id = 9011 ORDER BY 1;
SELECT to_char(period_start, 'YYYY-MM') AS period, invoiced_by FROM closed_period WHERE account_id = 9011 ORDER BY 1;

-- A sub-account is bound by its payer's invoiced periods: 9013, billed to
-- 9012 (August invoiced: until 2028-09-01), cannot start a subscription
-- in a period its payer has invoiced (55000) though it has no closed period
-- of its own.  A closed payer's sections stop with it: 9012 closed on
-- 2028-09-16, its child's fee from September 1 ends there too: 10.00 x 15/30
-- = 5.00, 9012's own 10.00 x 15/30 = 5.00: total 10.00.
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day) VALUES
    (9012, 'payer-12', 'Payer 12', 'EUR', 'UTC', 1);
SELECT subscribe(9012, 'REOPEN', '2028-08-01 00:00+00') > 0 AS subscribed;
SELECT run_billing('2028-09-01 00:00+00') >= 1 AS billed;
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day, parent_id, bill_to_parent) VALUES
    (9013, 'child-13', 'Child 13', 'EUR', 'UTC', 1, 9012, true);
SELECT subscribe(9013, 'REOPEN', '2028-08-20 00:00+00');
\echo :LAST_ERROR_SQLSTATE
SELECT subscribe(9013, 'REOPEN', '2028-09-01 00:00+00') > 0 AS subscribed;
UPDATE account SET status = 'closed', closed_at = '2028-09-16 00:00+00' WHERE account_id = 9012;
SELECT run_billing('2028-10-01 00:00+00') >= 1 AS billed;
SELECT to_char(i.period_start, 'YYYY-MM') AS period, l.source_account_id AS section, l.description, l.amount
FROM invoice i JOIN invoice_line l ON l.account_id = i.account_id AND l.invoice_id = i.invoice_id
WHERE i.account_id = 9012 AND i.period_start = '2028-09-01 00:00+00' ORDER BY l.line_no;
SELECT total FROM invoice WHERE account_id = 9012 AND period_start = '2028-09-01 00:00+00';

-- A closed account leaves the runs once a period begun after its closing is
-- billed: 9010 (closed again on 2028-06-01) got June's (empty) period closed
-- by the run to September, and no period after it by the runs since.
SELECT to_char(max(period_start), 'YYYY-MM') AS last_closed FROM closed_period WHERE account_id = 9010;

-- A period closed by hand stays closed when its draft is discarded (to be
-- billed again), as a period the run closed is reopened: 9014, 10.00 a
-- month from October 2028; October billed; November closed by hand, billed,
-- its draft discarded: November stays closed (by hand, no longer billed) and
-- the next run bills it again.
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day) VALUES
    (9014, 'hand-14', 'Hand 14', 'EUR', 'UTC', 1);
SELECT subscribe(9014, 'REOPEN', '2028-10-01 00:00+00') > 0 AS subscribed;
SELECT run_billing('2028-11-01 00:00+00') >= 1 AS billed;
SELECT lower(close_period(9014, '2028-11-15 00:00+00')) AS closed_by_hand;
SELECT run_billing('2028-12-01 00:00+00') >= 1 AS billed;
SELECT discard_draft(i.invoice_id) >= 0 AS discarded FROM invoice i
WHERE i.account_id = 9014 AND i.period_start = '2028-11-01 00:00+00';
SELECT to_char(period_start, 'YYYY-MM') AS period, invoiced_by, by_hand
FROM closed_period WHERE account_id = 9014 ORDER BY 1;
SELECT run_billing('2028-12-01 00:00+00') >= 1 AS billed_again;
SELECT to_char(i.period_start, 'YYYY-MM') AS period, i.total FROM invoice i WHERE i.account_id = 9014 ORDER BY 1;

-- The first period after a change of time zone or billing day (2029): it
-- runs from the end of the last invoiced period to the next boundary of the
-- new settings.  Its fee counts local days of the new zone over the full new
-- period, but the local day it starts in (after a time-zone change, a local
-- time other than midnight) counts only for the part of it in the period
-- (the rest was billed in the old zone): over the old periods and it, no
-- time is billed twice and none is skipped.  Usage goes on the invoice of the
-- period it happened in; late usage (of an invoiced period) on the next one
-- not invoiced: usage of the first period rated after the change used to be
-- pushed past it, a period late, as if the new settings' period containing
-- it were closed.  Fee 31.00 a month (M31, sms 0.10; ADV 30.00 in advance).
--   9015, Kiritimati (UTC+14) -> Pago Pago (UTC-11) after January: January
--   [Dec 31 10:00, Jan 31 10:00 UTC) 31.00; then to Feb 1 00:00 Pago Pago
--   (Feb 1 11:00 UTC), 25 hours: from Jan 30 23:00 local, 1 hour of Jan 30
--   and all of Jan 31 of the 31 days of Jan 1 - Feb 1: 31.00 x (1/24 + 1)/31
--   = 1.041667 -> 1.04 (the start day counted whole: 2 days, 2.00), and sms
--   k1 (20 Jan: late) and k2 (Jan 30 23:30 local) 0.20: 1.24; then February
--   in Pago Pago 31.00 + k3 0.10 = 31.10.
--   9016, Pago Pago -> Kiritimati after January [Jan 1 11:00, Feb 1 11:00
--   UTC) 31.00: then from Feb 2 01:00 local to Mar 1 00:00 local (647 of the
--   672 hours of February): 23 hours of Feb 2 and 26 days of the 28:
--   31.00 x (23/24 + 26)/28 = 31.00 x 647/672 = 29.846726 -> 29.85 (27
--   days: 29.89), and sms m1 (Feb 2 02:00 local) 0.10: 29.95; no March
--   invoice (the subscription ended on Mar 1 local).
--   9017, advance, Berlin -> New York after January: January 30.00 and
--   February (Berlin) 30.00 ahead: 60.00; then Jan 31 18:00 to Feb 1 00:00
--   New York, 6 hours of Jan 31 of 31 days: 30.00 x 0.25/31 = 0.241935, of
--   which 30.00 was charged ahead: correction -29.758065 -> -29.76 (a whole
--   day: -29.03), and February in New York ahead 30.00: 0.24.  The February
--   period after it has nothing left to bill: no invoice.
--   9018, billing day 1 -> 15 after January (UTC): January 31.00; then Feb 1
--   - Feb 15, 14 of the 31 days of Jan 15 - Feb 15: 14.00, with sms d1 (Jan
--   10) and d1b (Jan 20), late, and d2 (Feb 5): 0.30: 14.30; then Feb 15 -
--   Mar 15 31.00 + d3 (Feb 20) 0.10 = 31.10.  d4 (Feb 10), rated after both
--   were invoiced, goes on the next one: Mar 15 - Apr 15, 0.10.
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day) VALUES
    (9015, 'move-15', 'Move 15', 'EUR', 'Pacific/Kiritimati', 1),
    (9016, 'move-16', 'Move 16', 'EUR', 'Pacific/Pago_Pago', 1),
    (9017, 'move-17', 'Move 17', 'EUR', 'Europe/Berlin', 1),
    (9018, 'move-18', 'Move 18', 'EUR', 'UTC', 1);
SELECT count(unsubscribe(subscribe(x.acc, x.plan, x.start), x.until)) AS subscriptions
FROM (VALUES
    (9015, 'M31', '2029-01-01 00:00 Pacific/Kiritimati'::timestamptz, '2029-03-01 00:00 Pacific/Pago_Pago'::timestamptz),
    (9016, 'M31', '2029-01-01 00:00 Pacific/Pago_Pago', '2029-03-01 00:00 Pacific/Kiritimati'),
    (9017, 'ADV', '2029-01-01 00:00 Europe/Berlin', '2029-03-01 00:00 America/New_York'),
    (9018, 'M31', '2029-01-01 00:00+00', '2029-03-15 00:00+00')) x(acc, plan, start, until);
-- every January has ended (Pago Pago's last, at Feb 1 11:00 UTC)
SELECT run_billing('2029-02-01 11:00+00') >= 4 AS billed;
UPDATE account SET timezone = 'Pacific/Pago_Pago' WHERE account_id = 9015;
UPDATE account SET timezone = 'Pacific/Kiritimati' WHERE account_id = 9016;
UPDATE account SET timezone = 'America/New_York' WHERE account_id = 9017;
UPDATE account SET billing_day = 15 WHERE account_id = 9018;
-- where a charge goes now: the first period of the new settings (late usage
-- of January too), not the one after it
SELECT x.acc, x.at, open_period(x.acc, x.at)
FROM (VALUES (9015, '2029-01-20 12:00+00'::timestamptz), (9015, '2029-01-31 10:30+00'),
             (9016, '2029-02-01 12:00+00'), (9018, '2029-01-10 12:00+00'),
             (9018, '2029-02-05 12:00+00'), (9018, '2029-02-20 12:00+00')) x(acc, at);
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (9015, 'net', 'k1', 'sms', 1, '2029-01-20 12:00+00'),   -- late: in January (Kiritimati)
    (9015, 'net', 'k2', 'sms', 1, '2029-01-31 10:30+00'),   -- Jan 30 23:30 Pago Pago: the 25 hours
    (9015, 'net', 'k3', 'sms', 1, '2029-02-01 11:00+00'),   -- Feb 1 00:00 Pago Pago: February
    (9016, 'net', 'm1', 'sms', 1, '2029-02-01 12:00+00'),   -- Feb 2 02:00 Kiritimati: the first period
    (9018, 'net', 'd1', 'sms', 1, '2029-01-10 12:00+00'),   -- late: in January
    (9018, 'net', 'd1b', 'sms', 1, '2029-01-20 12:00+00'),  -- late: in January
    (9018, 'net', 'd2', 'sms', 1, '2029-02-05 12:00+00'),   -- Feb 1 - Feb 15
    (9018, 'net', 'd3', 'sms', 1, '2029-02-20 12:00+00');   -- Feb 15 - Mar 15
SELECT rate_pending() AS rated;
SELECT run_billing('2029-03-15 00:00+00') >= 7 AS billed;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (9018, 'net', 'd4', 'sms', 1, '2029-02-10 12:00+00');   -- late: Feb 1 - Feb 15 and the next are invoiced
SELECT rate_pending() AS rated;
SELECT run_billing('2029-04-15 00:00+00') >= 1 AS billed;
SELECT i.account_id, i.period_start, i.period_end,
       round(extract(epoch FROM i.period_end - i.period_start) / 3600) AS hours, i.total
FROM invoice i WHERE i.account_id BETWEEN 9015 AND 9018 AND i.kind = 'invoice'
ORDER BY i.account_id, i.period_start;
SELECT i.account_id, i.period_start, l.line_no, l.description, l.quantity, l.amount
FROM invoice i JOIN invoice_line l ON l.account_id = i.account_id AND l.invoice_id = i.invoice_id
WHERE i.account_id BETWEEN 9015 AND 9018 ORDER BY i.account_id, i.period_start, l.line_no;
-- each event on the invoice of its period (late ones: of the next open one)
SELECT c.account_id, c.external_id, c.occurred_at, c.period_start, i.period_start AS invoiced_in
FROM charge c JOIN invoice i ON i.account_id = c.account_id AND i.invoice_id = c.invoice_id
WHERE c.account_id BETWEEN 9015 AND 9018 AND c.kind = 'usage' ORDER BY c.account_id, c.external_id;

-- The first period after a change of billing day gets its share of the plan
-- allowances, as its fee is prorated: the period [Feb 1, Feb 15) of 9019
-- (billing day 1 -> 15, UTC) is 14 of the 31 days of the new settings'
-- period [Jan 15, Feb 15), so 31 SMS a month give trunc(31 * 14 / 31) = 14
-- there (it got all 31 before); the 20 SMS sent in it leave 6 to pay at
-- 0.10: 0.60, and the fee 14.00.  (January had no usage: its allowance was
-- never needed, so never granted.)
INSERT INTO plan (code, name, currency, recurring_fee, billing, allowances) VALUES
    ('A31', 'Mobile 31 with SMS', 'EUR', 31.00, 'arrears', '{"sms": 31}');
INSERT INTO plan_rate (plan_code, service, zone, tariff) VALUES ('A31', 'sms', NULL, '{"price": "0.10"}');
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day) VALUES
    (9019, 'move-19', 'Move 19', 'EUR', 'UTC', 1);
SELECT subscribe(9019, 'A31', '2029-01-01 00:00+00') > 0 AS subscribed;
SELECT run_billing('2029-02-01 00:00+00') >= 1 AS billed;
UPDATE account SET billing_day = 15 WHERE account_id = 9019;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
SELECT 9019, 'net', 'a' || g, 'sms', 1, '2029-02-05 12:00+00'::timestamptz + g * interval '1 minute'
FROM generate_series(1, 20) g;
SELECT rate_pending() AS rated;
SELECT b.valid_from, b.valid_until, b.balance + coalesce((SELECT -sum(l.amount) FROM ledger l
                                         WHERE l.account_id = b.account_id AND l.bucket_id = b.bucket_id
                                           AND l.kind = 'debit'), 0) AS granted, b.balance AS left_over
FROM bucket b WHERE b.account_id = 9019 AND b.origin = 'plan' ORDER BY b.valid_from;
SELECT count(*) AS charged_sms, sum(c.amount) AS amount
FROM charge c WHERE c.account_id = 9019 AND c.kind = 'usage' AND c.amount > 0;
SELECT run_billing('2029-02-15 00:00+00') AS invoices;
SELECT i.period_start, i.period_end, l.description, l.quantity, l.amount
FROM invoice i JOIN invoice_line l ON l.account_id = i.account_id AND l.invoice_id = i.invoice_id
WHERE i.account_id = 9019 AND i.period_start = '2029-02-01 00:00+00' ORDER BY l.line_no;

-- A fee billed ahead for a period that a change of billing day then cuts
-- short, before the subscription starts, is credited back: 9020 (UTC, day 1)
-- has M31 since January and ADV (30.00 ahead) from Feb 20.  The run for
-- January bills ADV ahead for February: 30.00 x 10/29 = 10.344828.
-- Billing day 15 from then on: the transition period [Feb 1, Feb 15) ends
-- before ADV starts: -10.344828 back; ahead for [Feb 15, Mar 15) (29 days in
-- 2024), from Feb 20: 30.00 x 24/29 = 24.827586.  ADV in all: 24.827586
-- (before the fix the 10.344828 stayed: Feb 20-29 billed twice).
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day) VALUES
    (9020, 'move-20', 'Move 20', 'EUR', 'UTC', 1);
SELECT subscribe(9020, 'M31', '2024-01-01 00:00+00') > 0 AS m31, subscribe(9020, 'ADV', '2024-02-20 00:00+00') > 0 AS adv;
SELECT run_billing('2024-02-01 00:00+00') >= 1 AS billed;
UPDATE account SET billing_day = 15 WHERE account_id = 9020;
SELECT run_billing('2024-02-15 00:00+00') >= 1 AS billed;
SELECT c.fee_period_start, c.amount, c.description
FROM charge c JOIN subscription s ON s.account_id = c.account_id AND s.subscription_id = c.subscription_id
WHERE c.account_id = 9020 AND s.plan_code = 'ADV' ORDER BY c.charge_id;
SELECT sum(c.amount) AS adv_total
FROM charge c JOIN subscription s ON s.account_id = c.account_id AND s.subscription_id = c.subscription_id
WHERE c.account_id = 9020 AND s.plan_code = 'ADV';

-- Discounts never take a section below zero, counting the discounts added as
-- charges (add_charge, kind discount) too: 9030 has a 30.00 fee, a manual
-- -20.00 discount and a 50 % discount.  50 % of 30.00 is 15.00, but only
-- 10.00 is left after the manual one: -10.00.  Subtotal 30.00, discount
-- -30.00, tax 19 % of 0.00 = 0.00, total 0.00 (before, -35.00, tax -0.95,
-- total -5.95).
INSERT INTO plan (code, name, currency, recurring_fee) VALUES ('P30', 'Thirty', 'EUR', 30.00);
INSERT INTO tax_rate (code, rate) VALUES ('TX19', 19);
INSERT INTO account (account_id, external_ref, name, currency, timezone, tax_code) VALUES
    (9030, 'disc-30', 'Disc 30', 'EUR', 'UTC', 'TX19');
INSERT INTO discount (discount_id, account_id, percent) VALUES (9030, 9030, 50);
SELECT subscribe(9030, 'P30', '2024-01-01 00:00+00') > 0 AS subscribed;
SELECT add_charge(9030, -20, 'goodwill discount', 'discount', '2024-01-05 00:00+00') > 0 AS discounted;
SELECT run_billing('2024-02-01 00:00+00') >= 1 AS billed;
SELECT i.subtotal, i.discount, i.tax, i.total FROM invoice i WHERE i.account_id = 9030;
SELECT l.kind, l.description, l.amount
FROM invoice_line l WHERE l.account_id = 9030 ORDER BY l.line_no;

-- A change of payer moves the charges not invoiced yet with the account:
-- they were debited from the old payer's money when made, so their sum goes
-- back to it and is debited from the new payer (ledger 'transfer').  9041
-- had a 50.00 one-off of its own, then joins 9040 (30.00 a month): 9040's
-- January invoice is 80.00 with nothing prepaid (before, 50.00 of it was
-- shown as "prepaid" that never existed, and the 50.00 stayed owed on
-- 9041's own balance, never collected).
INSERT INTO account (account_id, external_ref, name, currency, timezone) VALUES
    (9040, 'payer-40', 'Payer 40', 'EUR', 'UTC'), (9041, 'joins-41', 'Joins 41', 'EUR', 'UTC'),
    (9042, 'prepaid-42', 'Prepaid 42', 'EUR', 'UTC');
SELECT subscribe(9040, 'P30', '2024-01-01 00:00+00') > 0 AS subscribed;
SELECT add_charge(9041, 50, 'one-off before joining', 'one_time', '2024-01-05 00:00+00') > 0 AS charged;
UPDATE account SET parent_id = 9040, bill_to_parent = true WHERE account_id = 9041;
SELECT account_id, kind, amount, reference FROM ledger WHERE kind = 'transfer' AND account_id IN (9040, 9041) ORDER BY entry_id;
SELECT run_billing('2024-02-01 00:00+00') >= 1 AS billed;
SELECT account_id, total, prepaid_applied, amount_due FROM invoice WHERE account_id IN (9040, 9041);
SELECT account_id, sum(balance) AS money FROM bucket WHERE account_id IN (9040, 9041) AND kind = 'money'
GROUP BY account_id ORDER BY account_id;
-- an account with money of its own (prepaid credit here; unpaid invoices
-- alike) cannot join a parent: nothing there would spend or collect it (55000)
SELECT top_up(9042, 10.00, 'tu-42') IS NOT NULL AS topped_up;
UPDATE account SET parent_id = 9040, bill_to_parent = true WHERE account_id = 9042;
\echo :LAST_ERROR_SQLSTATE
-- leaving: 9041's February charge (7.00) leaves with it, to its own invoice
SELECT add_charge(9041, 7, 'February one-off', 'one_time', '2024-02-05 00:00+00') > 0 AS charged;
UPDATE account SET bill_to_parent = false WHERE account_id = 9041;
SELECT run_billing('2024-03-01 00:00+00') >= 1 AS billed;
SELECT account_id, period_start, total, prepaid_applied, amount_due FROM invoice
WHERE account_id IN (9040, 9041) ORDER BY account_id, period_start;

-- A charge on a final invoice is part of it: it can be neither changed nor
-- deleted, nor unbilled (55000) — before, setting its invoice_id back to
-- NULL billed it a second time on the next run
SELECT finalize_invoice(invoice_id) IS NOT NULL AS finalized
FROM invoice WHERE account_id = 9040 AND period_start = '2024-01-01 00:00+00';
UPDATE charge SET invoice_id = NULL WHERE account_id = 9040 AND period_start = '2024-01-01 00:00+00';
\echo :LAST_ERROR_SQLSTATE
UPDATE charge SET amount = 1 WHERE account_id = 9041 AND period_start = '2024-01-01 00:00+00';
\echo :LAST_ERROR_SQLSTATE
DELETE FROM charge WHERE account_id = 9040 AND period_start = '2024-01-01 00:00+00';
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS billed_charges, sum(amount) AS amount FROM charge
WHERE account_id IN (9040, 9041) AND period_start = '2024-01-01 00:00+00' AND invoice_id IS NOT NULL;

-- A fee period already charged keeps its price: a change of the plan's fee
-- or of the quantity applies from the next fee period.  9050 has ADV31
-- (31.00 a month, in advance) from 2025-01-01: the January run charges
-- January and February (31.00 each).  The fee rises to 40.00 during
-- February: the March run charges March ahead at 40.00 and nothing more
-- for February (before, a 9.00 "correction" re-billed the invoiced
-- February at the new price).  The quantity goes to 2 during March and the
-- subscription ends on March 15: March is credited at the 40.00 it was
-- charged at, 40.00 x 14/31 - 40.00 = -21.935484 (not at 80.00: -3.870968).
INSERT INTO plan (code, name, currency, recurring_fee, billing) VALUES ('ADV31', 'Adv 31', 'EUR', 31.00, 'advance');
INSERT INTO account (account_id, external_ref, name, currency, timezone) VALUES (9050, 'adv-50', 'Adv 50', 'EUR', 'UTC');
SELECT subscribe(9050, 'ADV31', '2025-01-01 00:00+00') AS sub50 \gset
SELECT run_billing('2025-02-01 00:00+00') >= 1 AS billed;
UPDATE plan SET recurring_fee = 40.00 WHERE code = 'ADV31';
SELECT run_billing('2025-03-01 00:00+00') >= 1 AS billed;
UPDATE subscription SET quantity = 2 WHERE account_id = 9050;
SELECT unsubscribe(:sub50, '2025-03-15 00:00+00') IS NOT NULL AS ended;
SELECT run_billing('2025-04-01 00:00+00') >= 1 AS billed;
SELECT fee_period_start, amount, fee_price, description FROM charge
WHERE account_id = 9050 AND kind = 'recurring' ORDER BY charge_id;
SELECT period_start, total FROM invoice WHERE account_id = 9050 ORDER BY period_start;

-- One statement changing the payer of several accounts of a family: each
-- account's old payer is the one before the statement.  9061 (billed to
-- 9060) and 9062 (billed to 9061, so to 9060) both stop being billed to
-- their parents: 9061's 3.00 and 9062's 5.00 go back to 9060 and each pays
-- its own: 9060 0, 9061 -3.00, 9062 -5.00.
INSERT INTO account (account_id, external_ref, name, currency, timezone) VALUES (9060, 'fam-60', 'Fam 60', 'EUR', 'UTC');
INSERT INTO account (account_id, external_ref, name, currency, timezone, parent_id, bill_to_parent) VALUES
    (9061, 'fam-61', 'Fam 61', 'EUR', 'UTC', 9060, true);
INSERT INTO account (account_id, external_ref, name, currency, timezone, parent_id, bill_to_parent) VALUES
    (9062, 'fam-62', 'Fam 62', 'EUR', 'UTC', 9061, true);
SELECT add_charge(9062, 5, 'five', 'one_time', '2025-05-05 00:00+00') > 0 AS c62,
       add_charge(9061, 3, 'three', 'one_time', '2025-05-05 00:00+00') > 0 AS c61;
UPDATE account SET bill_to_parent = false WHERE account_id IN (9061, 9062);
SELECT account_id, sum(balance) AS money FROM bucket WHERE account_id IN (9060, 9061, 9062) AND kind = 'money'
GROUP BY account_id ORDER BY account_id;

-- Reopening a closed account does not bill the time it was closed: its
-- subscriptions, and those of the sub-accounts billed to it, that ran at the
-- closing end there and go on from the reopening (now, or the end of the
-- last period invoiced if later) as new ones.  9070 has P30 from 2025-06-01
-- and is closed on 2025-07-10 (July: 30.00 x 9/31 = 8.71); its sub-account
-- 9071 has P30 too (July 8.71 as well: a closed payer's sections end with
-- it; 9070's invoices: June 60.00, July 17.42).  July is invoiced after the closing, so the subscriptions end at
-- 2025-08-01, the end of what is invoiced (nothing was billed for them
-- after the closing either), and new ones run from the reopening, now.
-- Before, the reopening cleared closed_at and the old subscriptions ran on:
-- every day it was closed billed in full, the sub-account's too.  P40, to
-- start on 2025-07-20 while it was closed, ends there too and goes on from now.
INSERT INTO plan (code, name, currency, recurring_fee) VALUES ('P40', 'Forty', 'EUR', 40.00);
INSERT INTO account (account_id, external_ref, name, currency, timezone) VALUES (9070, 'reopen-70', 'Reopen 70', 'EUR', 'UTC');
INSERT INTO account (account_id, external_ref, name, currency, timezone, parent_id, bill_to_parent) VALUES
    (9071, 'reopen-71', 'Reopen 71', 'EUR', 'UTC', 9070, true);
SELECT subscribe(9070, 'P30', '2025-06-01 00:00+00') > 0 AS p30, subscribe(9070, 'P40', '2025-07-20 00:00+00') > 0 AS p40,
       subscribe(9071, 'P30', '2025-06-01 00:00+00') > 0 AS p30_71;
SELECT run_billing('2025-07-01 00:00+00') >= 1 AS billed;
UPDATE account SET status = 'closed', closed_at = '2025-07-10 00:00+00' WHERE account_id = 9070;
SELECT run_billing('2025-08-01 00:00+00') >= 1 AS billed;
SELECT period_start, total FROM invoice WHERE account_id = 9070 ORDER BY period_start;
BEGIN;
UPDATE account SET status = 'active' WHERE account_id = 9070;
SELECT account_id, plan_code, started_at = now() AS from_now, CASE WHEN started_at <> now() THEN started_at END AS started_at,
       ended_at FROM subscription WHERE account_id IN (9070, 9071) ORDER BY account_id, subscription_id;
COMMIT;
-- a change of payer sums unbilled charges from its snapshot: READ COMMITTED
-- only (0A000), not to miss a charge committed meanwhile
BEGIN ISOLATION LEVEL REPEATABLE READ;
UPDATE account SET bill_to_parent = false WHERE account_id = 9071;
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- A closed payer takes no new sub-account (55000): its sections end with its
-- closing, so the joining account's fees from before it joined would be cut
-- there and nothing after billed.  9070 is open again above; 9072 closes.
INSERT INTO account (account_id, external_ref, name, currency, timezone) VALUES
    (9072, 'closed-72', 'Closed 72', 'EUR', 'UTC'), (9073, 'joins-73', 'Joins 73', 'EUR', 'UTC');
UPDATE account SET status = 'closed' WHERE account_id = 9072;
UPDATE account SET parent_id = 9072, bill_to_parent = true WHERE account_id = 9073;
\echo :LAST_ERROR_SQLSTATE
-- a draft of an account that has joined a parent since is not discarded
-- (55000): its charges would go to the parent's invoice while the prepaid
-- money that paid them stayed with it.  9073 pays for itself: a fee and
-- a 30.00 top-up, the draft applies it; then it joins 9070.
SELECT subscribe(9073, 'P30', '2025-06-01 00:00+00') > 0 AS subscribed, top_up(9073, 30.00, 'tu-73') IS NOT NULL AS topped_up;
SELECT run_billing('2025-07-01 00:00+00') >= 1 AS billed;
SELECT total, prepaid_applied, amount_due FROM invoice WHERE account_id = 9073;
UPDATE account SET parent_id = 9070, bill_to_parent = true WHERE account_id = 9073;
SELECT discard_draft(invoice_id) FROM invoice WHERE account_id = 9073;
\echo :LAST_ERROR_SQLSTATE
-- Reopening a payer cuts a sub-account that closed itself meanwhile at the
-- payer's closing too (its fees stopped there), with nothing after: 9075
-- (P30 from 2025-06-01) is billed to 9074, which closes on 2025-09-10; 9075
-- closes on 2025-09-20; 9074 reopens: 9075's P30 ends at 2025-09-10.
INSERT INTO account (account_id, external_ref, name, currency, timezone) VALUES (9074, 'payer-74', 'Payer 74', 'EUR', 'UTC');
INSERT INTO account (account_id, external_ref, name, currency, timezone, parent_id, bill_to_parent) VALUES
    (9075, 'child-75', 'Child 75', 'EUR', 'UTC', 9074, true);
SELECT subscribe(9075, 'P30', '2025-06-01 00:00+00') > 0 AS subscribed;
UPDATE account SET status = 'closed', closed_at = '2025-09-10 00:00+00' WHERE account_id = 9074;
UPDATE account SET status = 'closed', closed_at = '2025-09-20 00:00+00' WHERE account_id = 9075;
UPDATE account SET status = 'active' WHERE account_id = 9074;
SELECT plan_code, started_at, ended_at FROM subscription WHERE account_id = 9075 ORDER BY subscription_id;

-- The bill run's own debit (tax, discounts, rounding beyond the charges)
-- notifies a payer whose money it takes below its low_balance_threshold,
-- as any other debit does (the PID of the sender is masked): 9076 has 10.00,
-- threshold 5, a 4.00 one-off (6.00 left: above) and tax at 50 %: the
-- invoice is 6.00 and takes 2.00 more, to 4.00: one notification.
INSERT INTO tax_rate (code, rate) VALUES ('TX50', 50);
INSERT INTO account (account_id, external_ref, name, currency, timezone, tax_code, low_balance_threshold) VALUES
    (9076, 'low-76', 'Low 76', 'EUR', 'UTC', 'TX50', 5);
SELECT top_up(9076, 10.00, 'tu-76') IS NOT NULL AS topped_up;
SELECT add_charge(9076, 4.00, 'fee', 'one_time', '2025-10-05 00:00+00') > 0 AS charged;
LISTEN convbill_balance;
\o | sed -e 's/PID [0-9]*/PID (pid)/'
SELECT run_billing('2025-11-01 00:00+00') >= 1 AS billed;
\o
UNLISTEN convbill_balance;
SELECT total, charged, debited FROM invoice WHERE account_id = 9076;
-- nor by INSERT (55000), and a sub-account of a closed payer takes no
-- subscription and no charge from the closing on (22023, as the closed
-- account itself): its fees would never be billed, its charges would land on
-- an invoice nobody pays
INSERT INTO account (account_id, external_ref, name, currency, timezone, parent_id, bill_to_parent) VALUES
    (9077, 'new-77', 'New 77', 'EUR', 'UTC', 9072, true);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO account (account_id, external_ref, name, currency, timezone) VALUES (9078, 'payer-78', 'Payer 78', 'EUR', 'UTC');
INSERT INTO account (account_id, external_ref, name, currency, timezone, parent_id, bill_to_parent) VALUES
    (9079, 'child-79', 'Child 79', 'EUR', 'UTC', 9078, true);
UPDATE account SET status = 'closed' WHERE account_id = 9078;
SELECT subscribe(9079, 'P30', now());
\echo :LAST_ERROR_SQLSTATE
SELECT add_charge(9079, 1.00, 'after the payer closed');
\echo :LAST_ERROR_SQLSTATE
-- A draft discarded after a sub-account moved to another payer leaves that
-- sub-account's period closed (its new payer's periods are its own now):
-- 9081 (billed to 9080) moves to 9082 after 9080's and 9082's September are
-- invoiced; 9080's draft is discarded: 9081's September stays closed, so its
-- late usage goes to October, not into a period 9082 has invoiced.
INSERT INTO account (account_id, external_ref, name, currency, timezone) VALUES
    (9080, 'payer-80', 'Payer 80', 'EUR', 'UTC'), (9082, 'payer-82', 'Payer 82', 'EUR', 'UTC');
INSERT INTO account (account_id, external_ref, name, currency, timezone, parent_id, bill_to_parent) VALUES
    (9081, 'child-81', 'Child 81', 'EUR', 'UTC', 9080, true);
SELECT add_charge(9081, 2.00, 'one-off', 'one_time', '2025-09-05 00:00+00') > 0 AS c81,
       add_charge(9082, 3.00, 'one-off', 'one_time', '2025-09-05 00:00+00') > 0 AS c82;
SELECT run_billing('2025-10-01 00:00+00') >= 2 AS billed;
UPDATE account SET parent_id = 9082 WHERE account_id = 9081;
SELECT discard_draft(invoice_id) FROM invoice WHERE account_id = 9080 AND period_start = '2025-09-01 00:00+00';
SELECT account_id, period_start FROM closed_period WHERE account_id IN (9080, 9081) ORDER BY 1, 2;
SELECT lower(open_period(9081, '2025-09-20 00:00+00')) AS late_usage_goes_to;
