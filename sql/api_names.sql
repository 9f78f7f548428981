-- The user-facing functions take SPEC's parameter names: each is called here
-- with named notation (mixed with positional arguments where that is
-- natural), in one small prepaid scenario.  Every expected number is computed
-- by hand in the comment next to it; times relative to now() are compared,
-- not printed.
-- a fresh, empty catalog for this file (pg_regress runs every file in one database)
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS convbill CASCADE;
CREATE EXTENSION convbill;
RESET client_min_messages;
SET search_path = convbill, public;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, MDY';
SET IntervalStyle = 'postgres';
\set VERBOSITY terse
\set SHOW_CONTEXT never

-- an answer without its timestamp: expires_at as 'later' (after now()) or '-' (NULL)
CREATE FUNCTION pg_temp.a(g convbill.grant)
RETURNS TABLE (result text, reason text, granted numeric, held numeric, charged numeric, expires text)
LANGUAGE sql AS $$
    SELECT g.result, g.reason, g.granted, g.held, g.charged,
           CASE WHEN g.expires_at IS NULL THEN '-' WHEN g.expires_at > now() THEN 'later' ELSE 'past' END
$$;

-- No parameter of a user-facing function keeps an internal p_ name (the
-- helpers that callers never call directly are listed: their names may stay).
SELECT p.proname, pg_get_function_arguments(p.oid) AS arguments
FROM pg_proc p
WHERE p.pronamespace = 'convbill'::regnamespace
  AND EXISTS (SELECT 1 FROM unnest(p.proargnames) n WHERE n LIKE 'p\_%')
  AND coalesce(obj_description(p.oid, 'pg_proc'), '') NOT LIKE 'internal%'
  AND p.proname NOT IN ('subscription_for_update', 'job_add_warning', 'customer_account_ids')
ORDER BY 1;

-------------------------------------------------------------------------------
-- Catalog: voice in whole minutes at 0.01/s (0.60 a minute), SMS 0.10, data
-- 0.02/MB.  BASIC and PLUS price the same; the account moves from one to the other.
-------------------------------------------------------------------------------
INSERT INTO service VALUES ('voice', 'second'), ('sms', 'message'), ('data', 'MB');
INSERT INTO plan (code, name, currency) VALUES ('BASIC', 'Basic', 'EUR'), ('PLUS', 'Plus', 'EUR');
INSERT INTO plan_rate (plan_code, service, tariff)
SELECT p, s, t::tariff
FROM (VALUES ('BASIC'), ('PLUS')) p(p),
     (VALUES ('voice', '{"price": "0.01", "increment": {"first": 60, "next": 60}}'),
             ('sms', '{"price": "0.10"}'),
             ('data', '{"price": "0.02"}')) r(s, t);
INSERT INTO account (account_id, external_ref, name, currency) VALUES (1, 'C-1', 'Prepaid customer', 'EUR');

-------------------------------------------------------------------------------
-- subscribe(account_id, plan_code, start, quantity), change_plan(subscription_id,
-- plan_code, at), unsubscribe(subscription_id, at)
-------------------------------------------------------------------------------
SELECT subscribe(account_id => 1, plan_code => 'BASIC', start => '2025-01-01', quantity => 2) AS s1 \gset
SELECT change_plan(subscription_id => :s1, plan_code => 'PLUS', at => '2025-06-01') AS s2 \gset
-- BASIC from 2025-01-01 to 2025-06-01, then PLUS from then on, both for 2
SELECT subscription_id = :s1 AS first, plan_code, quantity, started_at, ended_at,
       replaces_id = :s1 AS replaces_first
FROM subscription WHERE account_id = 1 ORDER BY started_at;
SELECT unsubscribe(:s2, at => '2099-01-01');
SELECT plan_code, ended_at FROM subscription WHERE subscription_id = :s2;

-------------------------------------------------------------------------------
-- top_up(account_id, amount, reference, valid_until), grant_allowance(account_id,
-- service, units, valid_from, valid_until, priority, reference)
-------------------------------------------------------------------------------
SELECT top_up(account_id => 1, amount => 20.00, reference => 'shop-1') AS t1 \gset
SELECT top_up(account_id => 1, amount => 20.00, reference => 'shop-1') = :t1 AS retry_same_entry;
SELECT top_up(1, 5.00, 'promo-1', valid_until => now() + interval '30 days') <> :t1 AS own_entry;
SELECT grant_allowance(account_id => 1, service => 'sms', units => 3, reference => 'bonus-1') AS g1 \gset
SELECT grant_allowance(1, 'sms', 3, reference => 'bonus-1') = :g1 AS retry_same_bucket;
-- already expired (for expire_buckets below): 2 SMS that never count
SELECT grant_allowance(1, 'sms', 2, valid_from => now() - interval '2 days', valid_until => now() - interval '1 day',
                       priority => 5) <> :g1 AS expired_bucket;
-- money 20.00 + 5.00 = 25.00; SMS 3 (the expired 2 do not count)
SELECT * FROM balance(account_id => 1);

-------------------------------------------------------------------------------
-- reserve(account_id, service, session_id, units, attrs, validity),
-- reserve_update(session_id, request_no, used, units), commit(session_id,
-- request_no, used), release(session_id), expire_reservations()
-------------------------------------------------------------------------------
-- 120 s: 2 minutes x 0.60 = 1.20 <= 25.00: granted, 1.20 held
SELECT * FROM pg_temp.a(reserve(account_id => 1, service => 'voice', session_id => 'call-1', units => 120,
                                attrs => '{}', validity => interval '10 minutes'));
-- used 90 s: billed 120 s = 1.20 charged; 60 s more: 150 s, billed 180 s =
-- 1.80, so 0.60 more held
SELECT * FROM pg_temp.a(reserve_update(session_id => 'call-1', request_no => 1, used => 90, units => 60));
-- 20 s more: 110 s, billed 120 s = 1.20 in all: nothing more; the hold goes
SELECT * FROM pg_temp.a(commit('call-1', request_no => 2, used => 20));
SELECT status, granted, used, charged, held_money FROM reservation WHERE session_id = 'call-1';
-- a call that is released: nothing charged
SELECT * FROM pg_temp.a(reserve(1, 'voice', 'call-2', units => 60));
SELECT * FROM pg_temp.a(release(session_id => 'call-2'));
-- a call whose grant lapses (10 ms): one session expired
SELECT (reserve(1, 'voice', 'call-3', 60, validity => interval '10 milliseconds')).result;
SELECT pg_sleep(0.05);
SELECT expire_reservations() AS expired;
SELECT session_id, status, charged FROM reservation WHERE account_id = 1 ORDER BY session_id;
-- 25.00 - 1.20 = 23.80, nothing held
SELECT * FROM balance(1);

-------------------------------------------------------------------------------
-- charge_event(account_id, service, event_id, units, attrs), charge_events(events)
-------------------------------------------------------------------------------
-- 1 SMS: covered by the allowance (3 -> 2), nothing charged
SELECT * FROM pg_temp.a(charge_event(account_id => 1, service => 'sms', event_id => 'sms-1', units => 1));
-- 3 SMS: 2 covered (2 -> 0), 1 x 0.10 = 0.10
SELECT account_id, event_id, result, granted, charged
FROM charge_events(events => ARRAY[ROW(1, 'sms', 'sms-2', 3, '{}')::event_request]);
-- 10 MB x 0.02 = 0.20
SELECT * FROM pg_temp.a(charge_event(1, 'data', 'dl-1', 10, attrs => '{"apn": "internet"}'));
-- 23.80 - 0.10 - 0.20 = 23.50; SMS 0
SELECT * FROM balance(1);

-------------------------------------------------------------------------------
-- add_charge(account_id, amount, description, kind, at, reference)
-------------------------------------------------------------------------------
SELECT add_charge(1, 2.50, 'SIM card', reference => 'sim-1') AS c1 \gset
SELECT add_charge(1, 2.50, 'SIM card', reference => 'sim-1') = :c1 AS retry_same_charge;
SELECT add_charge(account_id => 1, amount => 1.00, description => 'paper bill', kind => 'one_time', at => now())
       <> :c1 AS another_charge;
SELECT kind, amount, description, reference FROM charge WHERE account_id = 1 AND source IS NULL ORDER BY charge_id;
-- 23.50 - 2.50 - 1.00 = 20.00
SELECT balance, available FROM balance(1) WHERE unit = 'EUR';

-------------------------------------------------------------------------------
-- rate_pending(max_events), rerate(reason, account_id)
-------------------------------------------------------------------------------
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (1, 'ggsn', 'u-1', 'data', 5, now() - interval '1 hour'),        -- 5 x 0.02 = 0.10
    (1, 'fax', 'f-1', 'fax', 2, now() - interval '1 hour');          -- no such service yet
SELECT rate_pending(max_events => 10) AS processed;                   -- both: one rated, one rejected
SELECT external_id, status, reject_reason FROM usage_event WHERE account_id = 1 ORDER BY external_id;
-- f-1 was rejected for another reason, and account 2 has no rejects: nothing re-queued
SELECT rerate(reason => 'no_tariff', account_id => 1) AS requeued;
SELECT rerate('unknown_service', account_id => 2) AS requeued;
SELECT status FROM usage_event WHERE external_id = 'f-1';
-- the catalog fixed: 2 pages x 0.50 = 1.00
INSERT INTO service VALUES ('fax', 'page');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES ('PLUS', 'fax', '{"price": "0.50"}');
SELECT rerate(account_id => 1) AS requeued;                           -- the fax event
SELECT e.external_id, e.status, c.amount FROM usage_event e JOIN charge c USING (account_id, charge_id)
WHERE e.account_id = 1 ORDER BY e.external_id;

-------------------------------------------------------------------------------
-- adjust_balance(account_id, amount, reason), balance(account_id),
-- money_available(account_id, at, until), allowance_available(account_id,
-- service, at, until), payer_of(account_id), expire_buckets(at)
-------------------------------------------------------------------------------
SELECT adjust_balance(account_id => 1, amount => 0.40, reason => 'goodwill') IS NOT NULL AS adjusted;
-- 20.00 - 0.10 - 1.00 + 0.40 = 19.30
SELECT * FROM balance(account_id => 1);
-- the first promo bucket is spent: it expires first, so it went first (5.00 -
-- 1.20 - 0.10 - 0.20 - 2.50 - 1.00 < 0: 0 left, the rest from the main bucket)
SELECT origin, unit, balance FROM bucket WHERE account_id = 1 ORDER BY bucket_id;
-- another promo, 3.00 valid 30 days: 19.30 + 3.00 = 22.30 now, and for a
-- grant lasting 29 days; for one lasting 31 days only the 19.30 that stays valid
SELECT top_up(account_id => 1, amount => 3.00, reference => 'promo-2',
              valid_until => now() + interval '30 days') IS NOT NULL AS topped_up;
SELECT money_available(account_id => 1) AS money,
       money_available(1, until => now() + interval '29 days') AS money_29_days,
       money_available(1, at => now(), until => now() + interval '31 days') AS money_31_days,
       payer_of(account_id => 1) AS payer;
-- SMS: the bonus is used up (0); 36 hours ago only the grant that has expired
-- since (2) was valid
SELECT allowance_available(account_id => 1, service => 'sms') AS sms,
       allowance_available(1, 'sms', at => now() - interval '36 hours') AS sms_36_hours_ago;
-- the expired grant still holds 2 SMS: written off, once
SELECT expire_buckets(at => now()) AS expired_buckets;
SELECT expire_buckets(now()) AS expired_again;
-- (the EUR entry is call-3's lapsed hold of 0.60, let go by expire_reservations)
SELECT kind, unit, amount, held, session_id FROM ledger WHERE account_id = 1 AND kind = 'expiry' ORDER BY entry_id;

-------------------------------------------------------------------------------
-- account_period(account_id, at), open_period(account_id, at),
-- close_period(account_id, at), resolve_rate(account_id, service, zone, at),
-- ensure_usage_partitions(start, months)
-------------------------------------------------------------------------------
SELECT open_period(account_id => 1, at => now()) = account_period(account_id => 1) AS current_period_open;
-- closing a period 3 months ago sends a charge at that time to the next period
SELECT close_period(account_id => 1, at => now() - interval '3 months')
       = account_period(1, at => now() - interval '3 months') AS closed_that_period;
SELECT open_period(1, at => now() - interval '3 months') = account_period(1, now() - interval '2 months') AS late_goes_to_next;
SELECT (r).rate_id = (SELECT rate_id FROM plan_rate WHERE plan_code = 'PLUS' AND service = 'voice') AS plus_voice,
       (r).plan_currency
FROM (SELECT resolve_rate(account_id => 1, service => 'voice', zone => NULL, at => now()) AS r) x;
-- BASIC ended 2025-06-01: on 2025-03-01 its rate applies
SELECT (resolve_rate(1, 'voice', NULL, at => '2025-03-01')).rate_id
       = (SELECT rate_id FROM plan_rate WHERE plan_code = 'BASIC' AND service = 'voice') AS basic_voice;
SELECT ensure_usage_partitions(start => '2030-01-15', months => 2) AS created;      -- 2030-01 and 2030-02
SELECT ensure_usage_partitions(months => 2, start => '2030-01-01') AS created_again;
SELECT to_regclass('convbill.usage_event_203001') IS NOT NULL AS jan,
       to_regclass('convbill.usage_event_203002') IS NOT NULL AS feb;

-------------------------------------------------------------------------------
-- rate(t, quantity [, at, tz, used_before]), billed_quantity(t, quantity),
-- detect_anomalies(as_of), job_warn(message)
-------------------------------------------------------------------------------
-- 90 s in whole minutes: 120 s x 0.01 = 1.20
SELECT rate(t => '{"price": "0.01", "increment": {"first": 60, "next": 60}}', quantity => 90) AS cost,
       billed_quantity(t => '{"price": "0.01", "increment": {"first": 60, "next": 60}}', quantity => 90) AS billed;
-- a volume tariff on the period total: 100 before, 50 now: P(150) - P(100) =
-- 150 x 0.01 - 100 x 0.02 = 1.50 - 2.00 = -0.50
SELECT rate(t => '{"model": "volume", "scope": "cycle",
                  "tiers": [{"up_to": 100, "price": "0.02"}, {"up_to": null, "price": "0.01"}]}',
            quantity => 50, at => '2026-01-15 12:00+00', tz => 'Europe/Berlin', used_before => 100) AS increment;
-- a few events and no history: nothing to raise
SELECT detect_anomalies(as_of => now()) AS alerts;
SELECT job_warn(message => 'two accounts busy');
SELECT job_take_warning() AS warning;

-------------------------------------------------------------------------------
-- run_billing(as_of, max_accounts), run_billing_step(as_of, max_accounts),
-- discard_draft(invoice_id), finalize_invoice(invoice_id),
-- invoice_json(invoice_id), invoice_html(invoice_id),
-- record_payment(account_id, amount, reference, received_at),
-- credit_note(invoice_id, amount, reason), invoice_number(series, n),
-- staged_reconciliation(batch)
-------------------------------------------------------------------------------
-- account 2: a 10.00 monthly plan from 2025-01-01 (UTC, billing day 1), no
-- usage: each period's invoice is the fee, 10.00
INSERT INTO plan (code, name, currency, recurring_fee) VALUES ('FEE10', 'Ten a month', 'EUR', 10.00);
INSERT INTO account (account_id, external_ref, name, currency) VALUES (2, 'C-2', 'Postpaid customer', 'EUR');
SELECT subscribe(2, 'FEE10', start => '2025-01-01') > 0 AS subscribed;
-- January and February have ended by March 1: two invoices; max_accounts
-- bounds the (account, period)s one call takes up
SELECT run_billing(as_of => '2025-02-01 00:00+00', max_accounts => 5) AS january;
SELECT run_billing(max_accounts => 5, as_of => '2025-03-01 00:00+00') AS february;
SELECT run_billing_step(as_of => '2025-03-01 00:00+00', max_accounts => 10) AS nothing_left;
SELECT invoice_id AS feb_id FROM invoice WHERE account_id = 2 AND period_start = '2025-02-01 00:00+00' \gset
SELECT invoice_id AS jan_id FROM invoice WHERE account_id = 2 AND period_start = '2025-01-01 00:00+00' \gset
-- February's draft thrown away and billed again: the same 10.00
SELECT discard_draft(invoice_id => :feb_id) AS lines_deleted;
SELECT run_billing(as_of => '2025-03-01 00:00+00') AS rebilled;
SELECT invoice_id AS feb_id FROM invoice WHERE account_id = 2 AND period_start = '2025-02-01 00:00+00' \gset
SELECT finalize_invoice(invoice_id => :jan_id) AS jan_number, finalize_invoice(invoice_id => :feb_id) AS feb_number;
SELECT invoice_number(series => 'INV', n => 42) AS number;
SELECT (invoice_json(invoice_id => :jan_id))->'totals'->>'total' AS jan_total,
       position('10.00' IN invoice_html(invoice_id => :jan_id)) > 0 AS html_shows_total;
-- 15.00 paid: January 10.00 (oldest), February 5.00
SELECT record_payment(account_id => 2, amount => 15, reference => 'bank-1',
                      received_at => '2025-03-05 00:00+00') > 0 AS paid;
SELECT to_char(i.period_start, 'YYYY-MM') AS period, s.paid, s.open
FROM invoice_settlement s JOIN invoice i USING (account_id, invoice_id)
WHERE s.account_id = 2 ORDER BY i.period_start;
-- 5.00 credited on February: nothing open any more
SELECT credit_note(invoice_id => :feb_id, amount => 5, reason => 'goodwill') > 0 AS credited;
SELECT to_char(i.period_start, 'YYYY-MM') AS period, s.paid, s.credited, s.open
FROM invoice_settlement s JOIN invoice i USING (account_id, invoice_id)
WHERE s.account_id = 2 ORDER BY i.period_start;
-- an empty batch: every entity received 0
SELECT entity, received, loaded, rejected FROM staged_reconciliation(batch => 'none') ORDER BY entity, currency;
