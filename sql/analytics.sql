-- Analytics and revenue assurance (SPEC section 6): the revenue views over the
-- incrementally maintained rollup, MRR, ARPU, unbilled, the analysts' views,
-- and the leakage checks.  Every figure printed is worked out in the comment
-- next to it; the views are also compared row by row with plain GROUP BYs
-- over the charges in eleven time zones (0 mismatches), before and after the
-- rollup is compacted, and after charges are updated, deleted or truncated.
-- Part 1 uses fixed times in 2024; part 2 (leakage) uses times relative to
-- now(), printing only what does not depend on the date.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS convbill CASCADE;
CREATE EXTENSION convbill;
RESET client_min_messages;
SET search_path = convbill, public;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
\set VERBOSITY terse
\set SHOW_CONTEXT never

-- revenue_daily / revenue_monthly against plain GROUP BYs over the charges in
-- the session's time zone: rows on either side without an equal row on the other
CREATE FUNCTION pg_temp.daily_mismatches() RETURNS bigint LANGUAGE sql AS $$
    WITH raw AS (
        SELECT c.occurred_at::date AS day, c.currency, c.service, c.kind, sum(c.amount) AS amount,
               sum(c.quantity) AS quantity, count(*) AS charges, sum(c.billed_quantity) AS billed_quantity,
               sum(c.covered_quantity) AS covered_quantity
        FROM convbill.charge c GROUP BY 1, 2, 3, 4)
    SELECT count(*) FROM raw FULL JOIN convbill.revenue_daily v
        ON v.day = raw.day AND v.currency = raw.currency AND v.service IS NOT DISTINCT FROM raw.service
       AND v.kind = raw.kind
    WHERE raw.day IS NULL OR v.day IS NULL OR v.amount <> raw.amount OR v.charges <> raw.charges
       OR v.quantity IS DISTINCT FROM raw.quantity OR v.billed_quantity IS DISTINCT FROM raw.billed_quantity
       OR v.covered_quantity IS DISTINCT FROM raw.covered_quantity
$$;
CREATE FUNCTION pg_temp.monthly_mismatches() RETURNS bigint LANGUAGE sql AS $$
    WITH raw AS (
        SELECT date_trunc('month', c.occurred_at)::date AS month, c.currency, c.service, c.kind,
               sum(c.amount) AS amount, sum(c.quantity) AS quantity, count(*) AS charges
        FROM convbill.charge c GROUP BY 1, 2, 3, 4)
    SELECT count(*) FROM raw FULL JOIN convbill.revenue_monthly v
        ON v.month = raw.month AND v.currency = raw.currency AND v.service IS NOT DISTINCT FROM raw.service
       AND v.kind = raw.kind
    WHERE raw.month IS NULL OR v.month IS NULL OR v.amount <> raw.amount OR v.charges <> raw.charges
       OR v.quantity IS DISTINCT FROM raw.quantity
$$;
-- the same for the views over charges (arpu, revenue_by_plan, revenue_by_zone,
-- top_accounts): their sums per month and currency against revenue_monthly's
CREATE FUNCTION pg_temp.charge_view_mismatches() RETURNS bigint LANGUAGE sql AS $$
    WITH m AS (SELECT month, currency, sum(amount) AS amount, sum(charges) AS charges
               FROM convbill.revenue_monthly GROUP BY 1, 2),
         u AS (SELECT month, currency, sum(amount) AS amount, sum(charges) AS charges
               FROM convbill.revenue_monthly WHERE kind = 'usage' GROUP BY 1, 2),
         a AS (SELECT month, currency, revenue AS amount FROM convbill.arpu),
         p AS (SELECT month, currency, sum(amount) AS amount, sum(charges) AS charges
               FROM convbill.revenue_by_plan GROUP BY 1, 2),
         z AS (SELECT month, currency, sum(amount) AS amount, sum(charges) AS charges
               FROM convbill.revenue_by_zone GROUP BY 1, 2),
         t AS (SELECT month, currency, sum(amount) AS amount, sum(charges) AS charges
               FROM convbill.top_accounts GROUP BY 1, 2)
    SELECT (SELECT count(*) FROM m FULL JOIN a USING (month, currency) WHERE m.amount IS DISTINCT FROM a.amount)
         + (SELECT count(*) FROM m FULL JOIN p USING (month, currency)
            WHERE m.amount IS DISTINCT FROM p.amount OR m.charges IS DISTINCT FROM p.charges)
         + (SELECT count(*) FROM m FULL JOIN t USING (month, currency)
            WHERE m.amount IS DISTINCT FROM t.amount OR m.charges IS DISTINCT FROM t.charges)
         + (SELECT count(*) FROM u FULL JOIN z USING (month, currency)
            WHERE u.amount IS DISTINCT FROM z.amount OR u.charges IS DISTINCT FROM z.charges)
$$;
-- all of the above in one time zone
CREATE FUNCTION pg_temp.compare(zone text)
RETURNS TABLE (timezone text, days bigint, daily_rows bigint, daily_mismatches bigint, monthly_rows bigint,
               monthly_mismatches bigint, other_view_mismatches bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('TimeZone', zone, true);
    RETURN QUERY SELECT zone, (SELECT count(DISTINCT day) FROM convbill.revenue_daily),
                        (SELECT count(*) FROM convbill.revenue_daily), pg_temp.daily_mismatches(),
                        (SELECT count(*) FROM convbill.revenue_monthly), pg_temp.monthly_mismatches(),
                        pg_temp.charge_view_mismatches();
END $$;
CREATE TEMP TABLE zones (zone text);
INSERT INTO zones VALUES ('UTC'), ('Europe/Berlin'), ('America/New_York'), ('Asia/Kolkata'), ('Asia/Kathmandu'),
    ('Pacific/Chatham'), ('Australia/Lord_Howe'), ('America/Santiago'), ('Pacific/Kiritimati'),
    ('Pacific/Pago_Pago'), ('America/St_Johns');

-------------------------------------------------------------------------------
-- Part 1.  Catalog: voice by the second and sms; two zones; plans S (10 EUR a
-- month), Y (120 EUR a year) and U (20 USD a month), all billed in arrears.
-------------------------------------------------------------------------------
INSERT INTO service VALUES ('voice', 'second', 'calls'), ('sms', 'message', 'text messages');
INSERT INTO destination VALUES ('49', 'national'), ('1', 'nam');
INSERT INTO plan (code, name, currency, recurring_fee, fee_interval) VALUES
    ('S', 'Small', 'EUR', 10, 'month'), ('Y', 'Yearly', 'EUR', 120, 'year'), ('U', 'US', 'USD', 20, 'month');
INSERT INTO plan_rate (plan_code, service, zone, tariff) VALUES
    ('S', 'voice', 'national', '{"price": "0.01"}'),
    ('S', 'voice', 'nam', '{"price": "0.05"}'),
    ('S', 'sms', NULL, '{"price": "0.10"}'),
    ('Y', 'voice', NULL, '{"price": "0.02"}'),
    ('U', 'voice', NULL, '{"price": "0.0301"}');
-- 1 Berlin, 2 UTC, 3 New York (USD), 4 a Berlin sub-account billed to 1
INSERT INTO account (account_id, external_ref, name, currency, timezone, credit_limit) VALUES
    (1, 'A1', 'Anna', 'EUR', 'Europe/Berlin', 1000), (2, 'A2', 'Bert', 'EUR', 'UTC', 1000),
    (3, 'A3', 'Cleo', 'USD', 'America/New_York', 1000);
INSERT INTO account (account_id, external_ref, name, currency, timezone, parent_id, bill_to_parent, credit_limit)
VALUES (4, 'A4', 'Dora', 'EUR', 'Europe/Berlin', 1, true, 1000);
SELECT subscribe(1, 'S', '2024-01-01 00:00+01') AS s1, subscribe(2, 'Y', '2024-01-01 00:00+00') AS s2,
       subscribe(3, 'U', '2024-01-01 00:00-05') AS s3, subscribe(4, 'S', '2024-01-01 00:00+01') AS s4;

-- usage (UTC times; local days differ near midnight)
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs) VALUES
    (1, 'msc', 'e1', 'voice', 60, '2024-01-15 12:00+00', '{"destination": "+49 301234"}'),   -- national 0.60
    (1, 'msc', 'e2', 'voice', 30, '2024-01-31 23:30+00', '{"destination": "+1 2125550"}'),   -- nam 1.50; Berlin: Feb 1
    (1, 'smsc', 'e3', 'sms', 2, '2024-02-10 08:00+00', '{}'),                                 -- 0.20
    (4, 'msc', 'e4', 'voice', 100, '2024-02-29 23:10+00', '{"destination": "+49 301234"}'),  -- 1.00; Berlin: Mar 1
    (2, 'msc', 'e5', 'voice', 45, '2024-02-05 18:29+00', '{"destination": "+1 2125550"}'),   -- 0.90; Kolkata 23:59
    (2, 'msc', 'e6', 'voice', 15, '2024-02-05 18:30+00', '{}'),                              -- 0.30; Kolkata Feb 6 00:00
    (3, 'msc', 'e7', 'voice', 100, '2024-03-10 06:59+00', '{"destination": "+1 2125550"}'),  -- 3.01 USD
    (3, 'msc', 'e8', 'voice', 10, '2024-02-20 18:15+00', '{}'),                              -- 0.301; Kathmandu Feb 21 00:00
    (3, 'msc', 'e8b', 'voice', 10, '2024-02-20 18:14:59+00', '{}'),                          -- 0.301; Kathmandu Feb 20
    (2, 'msc', 'e9', 'voice', 10, '2024-03-15 10:00+00', '{"destination": "+49 301234"}');   -- 0.20
SELECT rate_pending() AS rated;
SELECT external_id, status, reject_reason FROM usage_event WHERE status <> 'rated';
SELECT add_charge(1, 5.00, 'Set-up', 'one_time', '2024-01-02 10:00+00') IS NOT NULL AS setup,
       add_charge(2, -1.00, 'Goodwill', 'adjustment', '2024-02-14 12:00+00') IS NOT NULL AS goodwill,
       add_charge(3, -2.00, 'Promotion', 'discount', '2024-01-20 12:00+00') IS NOT NULL AS promotion;
-- January and February are invoiced (fees in arrears: 10 EUR, 120/12 EUR, 20 USD a month)
SELECT run_billing('2024-03-01 12:00+00') AS invoices;

-- The charges, in UTC.  Fees occur at their period's start: a local midnight.
SELECT account_id, kind, service, zone, occurred_at, amount, invoice_id IS NOT NULL AS billed
FROM charge ORDER BY occurred_at, account_id, kind;

-------------------------------------------------------------------------------
-- revenue_monthly and revenue_daily, read while every charge is still a delta
-------------------------------------------------------------------------------
SELECT (SELECT count(*) FROM revenue_rollup) AS rollup_rows, (SELECT count(*) > 0 FROM revenue_delta) AS deltas;
-- UTC.  EUR 2023-12: fees of 1 and 4 for January (Berlin midnight = Dec 31 23:00 UTC) 20.
-- EUR 2024-01: fees 10 + 10 (1, 4 for February, Jan 31 23:00) + 10 (2 for January) = 30;
--   voice e1 0.60 + e2 1.50 = 2.10; one-time 5.00.
-- EUR 2024-02: fee of 2 for February 10; voice e5 0.90 + e6 0.30 + e4 1.00 = 2.20; sms 0.20; adjustment -1.00.
-- EUR 2024-03: voice e9 0.20.  USD: January fee 20 and discount -2.00; February fee 20 and
--   voice e8 + e8b 0.301 + 0.301 = 0.602; March voice e7 3.01.
SELECT * FROM revenue_monthly ORDER BY month, currency, service, kind;
-- Europe/Berlin: every fee falls on the 1st of its month; e2 moves to February and
-- e4 to March.  EUR 2024-01: fees 30, voice 0.60, one-time 5.00.  2024-02: fees 30,
-- voice e2 1.50 + e5 0.90 + e6 0.30 = 2.70, sms 0.20, adjustment -1.00.  2024-03: voice
-- e4 1.00 + e9 0.20 = 1.20.  USD as in UTC.
SET TimeZone = 'Europe/Berlin';
SELECT * FROM revenue_monthly ORDER BY month, currency, service, kind;
-- Asia/Kolkata (+05:30): e5 18:29 UTC is Feb 5 23:59, e6 18:30 UTC is Feb 6 00:00
SET TimeZone = 'Asia/Kolkata';
SELECT day, currency, service, kind, amount, quantity, charges
FROM revenue_daily WHERE day BETWEEN '2024-02-05' AND '2024-02-06' ORDER BY day, currency, service, kind;
SELECT * FROM usage_daily WHERE day BETWEEN '2024-02-05' AND '2024-02-06' ORDER BY day, service;
-- Asia/Kathmandu (+05:45): e8b 18:14:59 UTC is Feb 20 23:59:59, e8 18:15 UTC is Feb 21 00:00
SET TimeZone = 'Asia/Kathmandu';
SELECT day, currency, service, kind, amount, quantity, charges
FROM revenue_daily WHERE day BETWEEN '2024-02-20' AND '2024-02-21' AND currency = 'USD' ORDER BY day;
-- the same days in UTC: one row each (Feb 5: e5 + e6 = 1.20, 60 s; Feb 20: 0.602, 20 s)
SET TimeZone = 'UTC';
SELECT day, currency, service, kind, amount, quantity, charges
FROM revenue_daily WHERE day IN ('2024-02-05', '2024-02-20') ORDER BY day, currency;
SELECT * FROM usage_daily WHERE day = '2024-02-05';

-------------------------------------------------------------------------------
-- arpu, top_accounts, revenue_by_plan, revenue_by_zone, unbilled (UTC)
-------------------------------------------------------------------------------
-- 2023-12 EUR: accounts 1 and 4, 20 -> 10.00.  2024-01 EUR: 1 (10 + 0.60 + 1.50 + 5 = 17.10),
-- 4 (10), 2 (10): 37.10 / 3 = 12.366.. -> 12.37.  2024-02 EUR: 2 (10 + 0.90 + 0.30 - 1 = 10.20),
-- 1 (0.20), 4 (1.00): 11.40 / 3 = 3.80.  2024-03 EUR: 2, 0.20.  USD: 18.00; 20.602 -> 20.60; 3.01.
SELECT * FROM arpu ORDER BY month, currency;
-- January EUR: 1 first (17.10), 2 and 4 share rank 2 (10 each)
SELECT month, currency, rank, account_id, external_ref, amount, charges
FROM top_accounts WHERE month = '2024-01-01' ORDER BY currency, rank, account_id;
-- February: S usage = sms 0.20 (1) + voice 1.00 (4); Y = fee 10 and voice 0.90 + 0.30 of 2;
-- the adjustment has no plan; USD: U fee 20, voice 0.602
SELECT * FROM revenue_by_plan WHERE month = '2024-02-01' ORDER BY currency, plan_code, kind;
-- February usage by the event's zone: e4 national 1.00, e5 nam 0.90, e6 none 0.30, sms none 0.20
SELECT * FROM revenue_by_zone WHERE month = '2024-02-01' ORDER BY currency, service, zone;
-- not invoiced: e9 of 2 (0.20), e7 of 3 (3.01), e4 of 4 (1.00): all in March periods
SELECT account_id, currency, amount, charges FROM unbilled ORDER BY account_id;

-------------------------------------------------------------------------------
-- Reconciliation: revenue (the views) = charges = invoiced + unbilled, per
-- currency; each invoice's charged amount = the charges marked with it, its
-- lines sum to its total, and the total differs from the charges only by the
-- rounding of its lines (0.602 USD of voice is a 0.60 line).
-- EUR: 20 + 37.10 + 11.40 + 0.20 = 68.70 = invoices 25.60 + 21.70 + 10.00 + 10.20
-- (67.50) + unbilled 1.20.  USD: 18 + 20.602 + 3.01 = 41.612 = 38.602 + 3.01.
-------------------------------------------------------------------------------
SELECT d.currency, d.revenue, m.revenue AS monthly, a.revenue AS arpu_revenue, c.charged, i.invoiced, u.unbilled,
       d.revenue = c.charged AND m.revenue = c.charged AND a.revenue = c.charged
       AND c.charged = i.invoiced + u.unbilled AS reconciles
FROM (SELECT currency, sum(amount) AS revenue FROM revenue_daily GROUP BY 1) d
JOIN (SELECT currency, sum(amount) AS revenue FROM revenue_monthly GROUP BY 1) m USING (currency)
JOIN (SELECT currency, sum(revenue) AS revenue FROM arpu GROUP BY 1) a USING (currency)
JOIN (SELECT currency, sum(amount) AS charged FROM charge GROUP BY 1) c USING (currency)
JOIN (SELECT currency, sum(charged) AS invoiced FROM invoice GROUP BY 1) i USING (currency)
JOIN (SELECT currency, sum(amount) AS unbilled FROM unbilled GROUP BY 1) u USING (currency)
ORDER BY 1;
-- Anna's January: fees 10 + 10 (Dora), voice 0.60, set-up 5 = 25.60; February: fees 20,
-- voice 1.50, sms 0.20 = 21.70.  Bert: 10; 10 + 1.20 - 1 = 10.20.  Cleo: 20 - 2 = 18; 20 + 0.602.
SELECT i.account_id, i.period_start, i.total, i.charged,
       i.charged = (SELECT sum(c.amount) FROM charge c WHERE c.invoice_id = i.invoice_id) AS charged_is_charges,
       i.total = (SELECT sum(l.amount) FROM invoice_line l
                  WHERE l.account_id = i.account_id AND l.invoice_id = i.invoice_id) AS lines_make_total,
       i.total - i.charged AS rounding
FROM invoice i ORDER BY i.account_id, i.period_start;

-------------------------------------------------------------------------------
-- MRR.  More subscriptions (after the bill run: they make no charges):
--   5: S from Feb 10, ended Apr 1 00:00 (active at the end of March, churned in April)
--   6: S from Jan 15, changed to Y on Mar 5 (a plan change: neither churned nor new)
--   7: S x 2 from Mar 3 to Mar 20 (new and churned in March, never active at a month's end)
-------------------------------------------------------------------------------
INSERT INTO account (account_id, external_ref, name, currency) VALUES
    (5, 'A5', 'Emil', 'EUR'), (6, 'A6', 'Fynn', 'EUR'), (7, 'A7', 'Gita', 'EUR');
SELECT subscribe(5, 'S', '2024-02-10') IS NOT NULL AS s5, subscribe(6, 'S', '2024-01-15') IS NOT NULL AS s6,
       subscribe(7, 'S', '2024-03-03', 2) IS NOT NULL AS s7;
SELECT unsubscribe(subscription_id, '2024-04-01 00:00+00') FROM subscription WHERE account_id = 5;
SELECT unsubscribe(subscription_id, '2024-03-20') FROM subscription WHERE account_id = 7;
SELECT change_plan(subscription_id, 'Y', '2024-03-05') IS NOT NULL AS changed FROM subscription WHERE account_id = 6;
-- UTC, EUR.  2023-12: 1 and 4 (Berlin midnight is Dec 31 23:00 UTC): 2 subscriptions, 20, 2 new.
-- 2024-01: + 2 (Y: 120/12 = 10) and 6: 4, 40, 2 new.  2024-02: + 5: 5, 50, 1 new.
-- 2024-03: 6 continues on Y (10 a month as well), 5 still active at the end (ends Apr 1 00:00),
-- 7 new and churned: 5, 50, 1 new, 1 churned.  2024-04: 5 churned: 4, 40.  2024-05: 4, 40.
-- USD: 3 from January: 1, 20.
SELECT * FROM mrr WHERE month <= '2024-05-01' ORDER BY currency, month;
-- Europe/Berlin: 1 and 4 start on January 1 there; no December
SET TimeZone = 'Europe/Berlin';
SELECT * FROM mrr WHERE month <= '2024-04-01' AND currency = 'EUR' ORDER BY month;
-- subscriptions(month) = subscriptions(previous month) + new - churned, every month, both zones
SELECT count(*) FILTER (WHERE m.subscriptions <> coalesce(p.subscriptions, 0) + m.new_subscriptions - m.churned_subscriptions)
       AS broken, count(*) AS months
FROM mrr m LEFT JOIN mrr p ON p.currency = m.currency AND p.month = (m.month - interval '1 month')::date;
SET TimeZone = 'UTC';
SELECT count(*) FILTER (WHERE m.subscriptions <> coalesce(p.subscriptions, 0) + m.new_subscriptions - m.churned_subscriptions)
       AS broken, count(*) > 24 AS through_now
FROM mrr m LEFT JOIN mrr p ON p.currency = m.currency AND p.month = (m.month - interval '1 month')::date;
-- A closed account's subscriptions end with it (its fee stops there in the
-- bill run): 8 has S (10) from Feb 10 and is closed on Mar 10 — active at
-- February's end, churned in March, no longer counted from March on (before,
-- it counted for ever and never churned).  2024-02: 6, 60; 2024-03: 5, 50,
-- 2 churned (7 and 8); 2024-04: 4, 40.
INSERT INTO account (account_id, external_ref, name, currency) VALUES (8, 'A8', 'Hugo', 'EUR');
SELECT subscribe(8, 'S', '2024-02-10') IS NOT NULL AS s8;
UPDATE account SET status = 'closed', closed_at = '2024-03-10 00:00+00' WHERE account_id = 8;
SELECT * FROM mrr WHERE month BETWEEN '2024-02-01' AND '2024-04-01' AND currency = 'EUR' ORDER BY month;
SELECT count(*) FILTER (WHERE m.subscriptions <> coalesce(p.subscriptions, 0) + m.new_subscriptions - m.churned_subscriptions)
       AS broken
FROM mrr m LEFT JOIN mrr p ON p.currency = m.currency AND p.month = (m.month - interval '1 month')::date;

-------------------------------------------------------------------------------
-- The rollup
-------------------------------------------------------------------------------
-- compaction: every delta row merged, none left; the views read the same
SELECT count(*) AS delta_rows FROM revenue_delta \gset
SELECT refresh_analytics() = :delta_rows AS merged_all, (SELECT count(*) FROM revenue_delta) AS left,
       refresh_analytics() AS again;
SELECT count(*) AS rollup_rows, sum(charges) AS charges, sum(amount) AS amount FROM revenue_rollup;
SELECT * FROM pg_temp.compare('UTC');

-- a statement's charges become one delta row per (15-minute bucket, currency, kind,
-- service): 300 charges of 0.001 EUR over 45 minutes of voice and sms -> 6 rows
INSERT INTO charge (account_id, kind, service, quantity, amount, currency, occurred_at, period_start, period_end)
SELECT 2, 'usage', CASE WHEN n % 2 = 0 THEN 'voice' ELSE 'sms' END, 1, 0.001, 'EUR',
       timestamptz '2024-03-20 10:00+00' + n * interval '9 seconds', '2024-03-01', '2024-04-01'
FROM generate_series(0, 299) n;
SELECT bucket, currency, kind, service, amount, quantity, charges FROM revenue_delta ORDER BY bucket, service;
SELECT day, service, amount, charges FROM revenue_daily WHERE day = '2024-03-20' ORDER BY service;

-- the bill run's UPDATE ... SET invoice_id, and any update of other columns,
-- leave the rollup alone
SELECT count(*) AS deltas_before FROM revenue_delta \gset
BEGIN;
UPDATE charge SET invoice_id = NULL, description = 'touched';
SELECT count(*) - :deltas_before AS new_deltas FROM revenue_delta;
ROLLBACK;

-- an amount or a time that changes moves in the rollup (a -old and a +new delta)
UPDATE charge SET amount = amount + 1 WHERE external_id = 'e1';
UPDATE charge SET occurred_at = '2024-03-21 10:00+00' WHERE account_id = 2 AND amount = 0.001 AND occurred_at = '2024-03-20 10:00+00';
SELECT bucket, kind, service, amount, charges FROM revenue_delta WHERE charges < 0 OR bucket >= '2024-03-21' OR service = 'voice' AND amount > 1 ORDER BY bucket, charges;
SELECT day, service, amount, charges FROM revenue_daily WHERE day IN ('2024-01-15', '2024-03-20', '2024-03-21') AND service = 'voice' ORDER BY day;
-- and a charge that goes leaves it
DELETE FROM charge WHERE account_id = 2 AND amount = 0.001 AND service = 'sms';
SELECT day, service, amount, charges FROM revenue_daily WHERE day = '2024-03-20' ORDER BY service;
SELECT * FROM pg_temp.compare('UTC');
-- compaction drops the keys whose charges all went (the sms of Mar 20, the voice moved to Mar 21 10:00)
SELECT refresh_analytics() > 0 AS merged, (SELECT count(*) FROM revenue_rollup WHERE charges = 0) AS empty_keys,
       (SELECT count(*) FROM revenue_rollup WHERE bucket >= '2024-03-20 10:00' AND bucket < '2024-03-20 11:00' AND service = 'sms') AS sms_keys;
UPDATE charge SET amount = amount - 1 WHERE external_id = 'e1';

-- TRUNCATE empties it (rolled back here)
BEGIN;
TRUNCATE charge;
SELECT (SELECT count(*) FROM revenue_rollup) AS rollup_rows, (SELECT count(*) FROM revenue_delta) AS delta_rows,
       (SELECT count(*) FROM revenue_daily) AS daily_rows;
ROLLBACK;

-- 7,000 charges every 7 min 13 s from March 8 to April 12, 2024: every local
-- midnight of these zones, and their DST changes (New York Mar 10, Europe and
-- Chatham Mar 31, Santiago Apr 6 at local midnight, Lord Howe Apr 7 by 30
-- minutes), in one statement; then compared in each zone: first as deltas,
-- then compacted, then with a second batch on top of the compacted rollup
INSERT INTO charge (account_id, kind, service, quantity, billed_quantity, covered_quantity, amount, currency,
                    occurred_at, period_start, period_end)
SELECT 2, 'usage', CASE WHEN n % 3 = 0 THEN 'sms' ELSE 'voice' END, n % 7, n % 7 + 1, n % 2, (n % 97) * 0.013, 'EUR',
       timestamptz '2024-03-08 00:00+00' + n * interval '7 min 13 s', '2024-03-01', '2024-04-01'
FROM generate_series(0, 6999) n;
SELECT z.* FROM zones, pg_temp.compare(zones.zone) z;
SELECT refresh_analytics() > 0 AS merged;
SELECT z.* FROM zones, pg_temp.compare(zones.zone) z;
INSERT INTO charge (account_id, kind, quantity, amount, currency, occurred_at, period_start, period_end, description)
SELECT 3, CASE WHEN n % 2 = 0 THEN 'one_time' ELSE 'adjustment' END, NULL, n * 0.5, 'USD',
       timestamptz '2024-03-30 20:00+00' + n * interval '17 min', '2024-03-01 05:00+00', '2024-04-01 04:00+00', 'late'
FROM generate_series(1, 400) n;
SELECT z.* FROM zones, pg_temp.compare(zones.zone) z;

-- rebuild_analytics recomputes the rollup from the charges: the same views
CREATE TEMP TABLE before_rebuild AS SELECT * FROM revenue_bucket;
SELECT rebuild_analytics() AS rebuilt_rows \gset
SELECT :rebuilt_rows = (SELECT count(*) FROM before_rebuild) AS one_row_a_key, (SELECT count(*) FROM revenue_delta) AS deltas;
SELECT count(*) AS differences
FROM before_rebuild b FULL JOIN revenue_bucket r
  ON r.bucket = b.bucket AND r.currency = b.currency AND r.kind = b.kind AND r.service IS NOT DISTINCT FROM b.service
WHERE r.bucket IS NULL OR b.bucket IS NULL OR r.amount <> b.amount OR r.charges <> b.charges
   OR r.quantity IS DISTINCT FROM b.quantity;

-- the analytics job runs refresh_analytics(): its rows are the deltas merged (two
-- one-time charges two hours apart: 2 delta rows)
INSERT INTO charge (account_id, kind, amount, currency, occurred_at, period_start, period_end)
VALUES (2, 'one_time', 1, 'EUR', '2024-03-25 10:00+00', '2024-03-01', '2024-04-01'),
       (2, 'one_time', 2, 'EUR', '2024-03-25 12:00+00', '2024-03-01', '2024-04-01');
SELECT run_job('analytics') AS rows;
SELECT job, status, rows FROM job_run WHERE job = 'analytics';

-------------------------------------------------------------------------------
-- Part 2.  Leakage, on a fresh database: one account on plan P (no fee), a
-- charge 40 days ago (invoiced by the bill run), and today a rated call
-- (120 s, 1.20), a session (30 s, 0.30) and a one-shot sms (0.10).
-------------------------------------------------------------------------------
SET client_min_messages = warning;
DROP EXTENSION convbill CASCADE;
CREATE EXTENSION convbill;
RESET client_min_messages;
SET TimeZone = 'UTC';
-- what the leakage view found (checks with nothing are left out)
CREATE FUNCTION pg_temp.leaks()
RETURNS TABLE (check_name text, items bigint, amount numeric, currency text)
LANGUAGE sql AS $$
    SELECT l.check_name, l.items, l.amount, l.currency FROM convbill.leakage l WHERE l.items <> 0 OR l.amount <> 0
$$;
INSERT INTO service VALUES ('voice', 'second', 'calls'), ('sms', 'message', 'text messages');
INSERT INTO plan (code, name, currency) VALUES ('P', 'Pay as you go', 'EUR');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES ('P', 'voice', '{"price": "0.01"}'), ('P', 'sms', '{"price": "0.10"}');
INSERT INTO account (account_id, external_ref, name, currency, credit_limit) VALUES (1, 'L1', 'Lena', 'EUR', 1000);
SELECT subscribe(1, 'P', now() - interval '70 days') IS NOT NULL AS subscribed;
SELECT add_charge(1, 5.00, 'Set-up', 'one_time', now() - interval '40 days') IS NOT NULL AS setup;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
VALUES (1, 'cdr', 'c1', 'voice', 120, now());
SELECT rate_pending() AS rated;
SELECT result, held FROM reserve(1, 'voice', 's1', 60);
SELECT result, charged FROM commit('s1', 1, 30);
SELECT result, charged FROM charge_event(1, 'sms', 'ev1', 1);
SELECT run_billing(now()) AS invoices;
SELECT kind, source, amount, invoice_id IS NOT NULL AS billed FROM charge ORDER BY amount DESC;

-- a clean database: every check reports zero
SELECT check_name, items, amount, currency FROM leakage;
SELECT count(*) AS checks, count(*) FILTER (WHERE detail IS NOT NULL) AS described FROM leakage;

-- 1. pending events: one received 2 hours ago counts, one received 10 minutes ago
-- does not, until the threshold is 5 minutes
BEGIN;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, received_at) VALUES
    (1, 'cdr', 'p1', 'voice', 10, now() - interval '3 hours', now() - interval '2 hours'),
    (1, 'cdr', 'p2', 'voice', 10, now() - interval '1 hour', now() - interval '10 minutes');
SELECT * FROM pg_temp.leaks();
SET LOCAL convbill.leakage_pending_age = '5min';
SELECT * FROM pg_temp.leaks();
SELECT split_part(detail, ';', 1) AS detail FROM leakage WHERE check_name = 'pending_events';
ROLLBACK;

-- 2. rejected events, with their reasons
BEGIN;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (99, 'cdr', 'r1', 'voice', 10, now()), (1, 'cdr', 'r2', 'fax', 1, now()), (1, 'cdr', 'r3', 'voice', -5, now());
SELECT rate_pending() AS rated;
SELECT * FROM pg_temp.leaks();
SELECT detail FROM leakage WHERE check_name = 'rejected_events';
ROLLBACK;

-- 3. sessions that lapsed without a final report: s2 holds 0.60 for 60 s; s3
-- reported 20 s (charged 0.20) and holds 0.60 for 60 s more.  Counted while
-- lapsed and still open (what they hold), and after expire_reservations() (what
-- they held when they expired: 1.20); s3's 20 s are charged at expiry.
BEGIN;
SELECT result, held FROM reserve(1, 'voice', 's2', 60);
SELECT result, held FROM reserve(1, 'voice', 's3', 60);
SELECT result, held, charged FROM reserve_update('s3', 1, 20, 60);
SELECT * FROM pg_temp.leaks();
UPDATE reservation SET expires_at = now() - interval '1 second' WHERE session_id IN ('s2', 's3');
SELECT * FROM pg_temp.leaks();
SELECT expire_reservations() AS expired;
SELECT session_id, status, granted, used, charge_id IS NOT NULL AS charged FROM reservation ORDER BY session_id;
SELECT * FROM pg_temp.leaks();
ROLLBACK;

-- 4. a charge slipped into the period already invoiced (2.50)
BEGIN;
INSERT INTO charge (account_id, kind, amount, currency, occurred_at, period_start, period_end, description)
SELECT 1, 'one_time', 2.50, 'EUR', i.period_start + interval '1 day', i.period_start, i.period_end, 'slipped in'
FROM invoice i WHERE i.account_id = 1;
SELECT * FROM pg_temp.leaks();
ROLLBACK;

-- 5. a charge in a period that ended 2 days ago and was never invoiced (3.00);
-- not yet a leak with 3 days' grace
BEGIN;
INSERT INTO charge (account_id, kind, amount, currency, occurred_at, period_start, period_end, description)
VALUES (1, 'one_time', 3.00, 'EUR', now() - interval '10 days', now() - interval '32 days', now() - interval '2 days', 'stuck');
SELECT * FROM pg_temp.leaks();
SET LOCAL convbill.leakage_billing_grace = '3d';
SELECT * FROM pg_temp.leaks();
ROLLBACK;

-- 6. an invoice whose lines do not make its total (a stray 0.01 line on the draft)
BEGIN;
INSERT INTO invoice_line (account_id, invoice_id, line_no, kind, description, amount, source_account_id)
SELECT account_id, invoice_id, 99, 'one_time', 'stray', 0.01, account_id FROM invoice WHERE account_id = 1;
SELECT * FROM pg_temp.leaks();
ROLLBACK;

-- 7. an invoice whose charged amount is not its charges' (+1.00), then also a
-- charge marked with an invoice that does not exist (the call, 1.20)
BEGIN;
UPDATE invoice SET charged = charged + 1 WHERE account_id = 1;
SELECT * FROM pg_temp.leaks();
UPDATE charge SET invoice_id = 987654 WHERE external_id = 'c1';
SELECT * FROM pg_temp.leaks();
ROLLBACK;

-- 8. a rated event whose charge is gone
BEGIN;
DELETE FROM charge WHERE source = 'cdr' AND external_id = 'c1';
SELECT * FROM pg_temp.leaks();
ROLLBACK;

-- 9. the same call again under another id from another feed: rated twice (1.20 more)
BEGIN;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs)
SELECT account_id, 'cdr-b', 'x1', service, quantity, started_at, attrs FROM usage_event WHERE external_id = 'c1';
SELECT rate_pending() AS rated;
SELECT * FROM pg_temp.leaks();
ROLLBACK;
-- the same when neither copy has attributes (NULL, as a COPY with an empty
-- attrs field leaves them): before, a NULL never matched and the check said 0
BEGIN;
UPDATE usage_event SET attrs = NULL WHERE external_id = 'c1';
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs)
SELECT account_id, 'cdr-b', 'x1', service, quantity, started_at, NULL FROM usage_event WHERE external_id = 'c1';
SELECT rate_pending() AS rated;
SELECT * FROM pg_temp.leaks();
ROLLBACK;

-- 10. a finished session whose charge is gone (it debited 0.30)
BEGIN;
DELETE FROM charge WHERE source = 'session';
SELECT * FROM pg_temp.leaks();
ROLLBACK;

-- 11. a granted one-shot event whose charge is gone (it charged 0.10)
BEGIN;
DELETE FROM charge WHERE source = 'event';
SELECT * FROM pg_temp.leaks();
ROLLBACK;

-- clean again
SELECT count(*) AS leaks FROM pg_temp.leaks();
