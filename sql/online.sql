-- Online charging (SPEC section 3): buckets, the ledger, top_up, reserve /
-- reserve_update / commit / release, expiry, charge_event(s), credit limits,
-- bill_to_parent, low-balance notifications.  Every expected number is
-- computed by hand in the comment next to it.  Times are relative to now():
-- no timestamp is printed, only comparisons with now().
-- a fresh, empty catalog for this file (pg_regress runs every file in one database)
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS convbill CASCADE;
CREATE EXTENSION convbill;
RESET client_min_messages;
SET search_path = convbill, public;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, MDY';          -- the same in pg_regress as in psql
SET IntervalStyle = 'postgres';
\set VERBOSITY terse
\set SHOW_CONTEXT never

-- errors as "SQLSTATE: message" (timestamps masked), so each refusal shows its code
CREATE FUNCTION pg_temp.fails(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '\d{4}-\d\d-\d\d [0-9:.+-]+', '<time>', 'g');
END $$;
-- an answer without its timestamp: expires_at as 'later' (after now()) or '-' (NULL)
CREATE FUNCTION pg_temp.a(g convbill.grant)
RETURNS TABLE (result text, reason text, granted numeric, held numeric, charged numeric, expires text)
LANGUAGE sql AS $$
    SELECT g.result, g.reason, g.granted, g.held, g.charged,
           CASE WHEN g.expires_at IS NULL THEN '-' WHEN g.expires_at > now() THEN 'later' ELSE 'past' END
$$;
-- answers kept for comparing retransmissions with
CREATE TEMP TABLE answer (k text PRIMARY KEY, g convbill.grant NOT NULL);
CREATE FUNCTION pg_temp.kept(k text, g convbill.grant)
RETURNS TABLE (result text, reason text, granted numeric, held numeric, charged numeric, expires text)
LANGUAGE sql AS $$
    INSERT INTO answer VALUES (k, g);
    SELECT * FROM pg_temp.a(g);
$$;
-- an account's ledger in a few columns
CREATE FUNCTION pg_temp.ledger(acc bigint)
RETURNS TABLE (kind text, unit text, amount numeric, held numeric, session_id text)
LANGUAGE sql AS $$
    SELECT l.kind, l.unit, l.amount, l.held, l.session_id FROM convbill.ledger l
    WHERE l.account_id = acc ORDER BY l.entry_id
$$;

INSERT INTO service VALUES ('voice', 'second'), ('sms', 'message'), ('data', 'MB');
INSERT INTO plan (code, name, currency, allowances) VALUES
    ('PRE', 'Prepaid with 120 s of voice', 'EUR', '{"voice": 120}'),
    ('BARE', 'No allowances', 'EUR', '{}');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES
    -- voice in whole minutes (60/60) at 0.01/s: 0.60 a minute
    ('PRE', 'voice', '{"price": "0.01", "increment": {"first": 60, "next": 60}}'),
    ('PRE', 'sms', '{"price": "0.10"}'),
    -- data on the period's running total: 0.02/MB up to 100 MB, then 0.01/MB
    ('PRE', 'data', '{"model": "graduated", "scope": "cycle",
                      "tiers": [{"up_to": 100, "price": "0.02"}, {"up_to": null, "price": "0.01"}]}'),
    ('BARE', 'voice', '{"price": "0.01", "increment": {"first": 60, "next": 60}}'),
    ('BARE', 'sms', '{"price": "0.10"}');

-- subscriptions start long before this period: plan allowances are not prorated
INSERT INTO account (account_id, external_ref, name, currency, credit_limit, parent_id, bill_to_parent) VALUES
    (10, 'TOPUP', 'top-ups', 'EUR', 0, NULL, false),
    (19, 'CLOSED-TOPUP', 'closed', 'EUR', 0, NULL, false),
    (20, 'PREPAID', 'prepaid sessions', 'EUR', 0, NULL, false),
    (21, 'RELEASE', 'release and expiry', 'EUR', 0, NULL, false),
    (22, 'EVENTS', 'one-shot events', 'EUR', 0, NULL, false),
    (23, 'POSTPAID', 'credit limit 50', 'EUR', 50, NULL, false),
    (30, 'PARENT', 'pays for 31', 'EUR', 10, NULL, false),
    (31, 'CHILD', 'billed to 30', 'EUR', 0, 30, true),
    (40, 'SUSPENDED', 'suspended', 'EUR', 100, NULL, false),
    (41, 'CLOSED', 'closed', 'EUR', 100, NULL, false),
    (42, 'NOPLAN', 'no subscription', 'EUR', 100, NULL, false),
    (43, 'DOLLAR', 'currency changed after subscribing', 'EUR', 100, NULL, false),
    (50, 'BUCKETS', 'allowance and money buckets', 'EUR', 0, NULL, false),
    (60, 'LOW', 'low-balance notifications', 'EUR', 0, NULL, false),
    (70, 'DATA', 'cycle tariff in sessions', 'EUR', 0, NULL, false);
SELECT count(subscribe(a, p, '2020-01-01')) AS subscriptions
FROM (VALUES (10, 'BARE'), (19, 'BARE'), (20, 'PRE'), (21, 'BARE'), (22, 'BARE'), (23, 'BARE'), (30, 'BARE'),
             (31, 'PRE'), (40, 'BARE'), (41, 'BARE'), (43, 'BARE'), (50, 'BARE'), (60, 'BARE'), (70, 'PRE')) s(a, p);
UPDATE account SET status = 'closed' WHERE account_id IN (19, 41);
UPDATE account SET status = 'suspended' WHERE account_id = 40;
UPDATE account SET currency = 'USD' WHERE account_id = 43;   -- it has no money yet: allowed

-------------------------------------------------------------------------------
-- 1. top_up
-------------------------------------------------------------------------------
-- a retry with the same reference returns the first entry and adds nothing
SELECT top_up(10, 5.00, 'pay-1') AS first_entry \gset
SELECT top_up(10, 5.00, 'pay-1') = :first_entry AS same_entry;
SELECT count(*) AS top_up_entries FROM ledger WHERE account_id = 10 AND kind = 'top_up';
-- 5.00 once: balance 5.00, nothing held, available 5.00 + credit 0 = 5.00
SELECT * FROM balance(10);
-- another reference is another top-up: 5.00 + 2.50 = 7.50
SELECT top_up(10, 2.50, 'pay-2') <> :first_entry AS new_entry;
SELECT * FROM balance(10);
-- a used reference with another amount is not a retry but another payment: refused
SELECT pg_temp.fails($$SELECT convbill.top_up(10, 3.00, 'pay-1')$$);
-- bad amounts and accounts
SELECT pg_temp.fails($$SELECT convbill.top_up(10, 0, 'bad-1')$$);
SELECT pg_temp.fails($$SELECT convbill.top_up(10, -1, 'bad-2')$$);
SELECT pg_temp.fails($$SELECT convbill.top_up(10, NULL, 'bad-3')$$);
SELECT pg_temp.fails($$SELECT convbill.top_up(10, 1.001, 'bad-4')$$);     -- EUR has 2 decimals
SELECT pg_temp.fails($$SELECT convbill.top_up(10, 'NaN', 'bad-5')$$);
SELECT pg_temp.fails($$SELECT convbill.top_up(10, 1, NULL)$$);
SELECT pg_temp.fails($$SELECT convbill.top_up(10, 1, 'bad-6', now() - interval '1 day')$$);
SELECT pg_temp.fails($$SELECT convbill.top_up(19, 1, 'closed-1')$$);
SELECT pg_temp.fails($$SELECT convbill.top_up(99, 1, 'nobody-1')$$);
-- nothing of that reached the ledger: still 7.50
SELECT * FROM balance(10);
SELECT count(*) AS entries FROM ledger WHERE account_id IN (10, 19, 99);

-------------------------------------------------------------------------------
-- 2. reserve on a prepaid account: allowance first, then money, whole increments
-------------------------------------------------------------------------------
SELECT top_up(20, 1.00, 'pay-1') IS NOT NULL AS topped_up;   -- 'pay-1' of account 10 is another key
-- the plan allowance is granted when first needed: no voice bucket yet
SELECT * FROM balance(20);
-- 300 s: bq 300 = 120 s allowance + 180 s x 0.01 = 1.80 > 1.00.  Whole minutes:
-- 240 s -> 120 x 0.01 = 1.20 > 1.00; 180 s -> 60 x 0.01 = 0.60 <= 1.00: partial 180,
-- holding the 120 s of allowance and 0.60
SELECT * FROM pg_temp.kept('s20a-0', reserve(20, 'voice', 's20a', 300));
-- money 1.00 - 0.60 held = 0.40 available; voice 120 - 120 held = 0
SELECT * FROM balance(20);
-- no allowance left and one minute costs 0.60 > 0.40: denied
SELECT * FROM pg_temp.a(reserve(20, 'voice', 's20b', 120));
SELECT top_up(20, 2.00, 'pay-2') IS NOT NULL AS topped_up;
-- 3.00 - 0.60 = 2.40 available; one minute 0.60: granted in full
SELECT * FROM pg_temp.a(reserve(20, 'voice', 's20c', 60));
-- held 0.60 + 0.60 = 1.20, counted once: available 3.00 - 1.20 = 1.80
SELECT * FROM balance(20);
SELECT session_id, status, granted, held_units, held_money FROM reservation WHERE account_id = 20 ORDER BY session_id;
SELECT sum(held) AS ledger_money_held, money_available(20) AS money_available FROM ledger WHERE account_id = 20 AND unit = 'EUR';
-- a retransmitted reserve gets the first answer and holds nothing more
SELECT reserve(20, 'voice', 's20a', 300) = (SELECT g FROM answer WHERE k = 's20a-0') AS same_answer;
SELECT * FROM balance(20);

-------------------------------------------------------------------------------
-- 3. reserve_update
-------------------------------------------------------------------------------
-- used 150 s: bq 180 = 120 allowance (its own hold) + 60 x 0.01 = 0.60 charged.
-- 150 + 120 = 270 s: bq 300 = 120 + 180 x 0.01 = 1.80, i.e. 1.20 more than the
-- 0.60 charged; available (3.00 - 0.60) - 0.60 (s20c) = 1.80 >= 1.20: granted 120, held 1.20
SELECT * FROM pg_temp.kept('s20a-1', reserve_update('s20a', 1, 150, 120));
-- money 3.00 - 0.60 = 2.40, held 1.20 + 0.60 = 1.80, available 0.60; the
-- allowance bucket is used up: voice 0
SELECT * FROM balance(20);
-- a retransmission: the same answer, nothing changes
SELECT count(*) AS n, sum(amount) AS amount, sum(held) AS held FROM ledger WHERE account_id = 20 \gset before_
SELECT reserve_update('s20a', 1, 150, 120) = (SELECT g FROM answer WHERE k = 's20a-1') AS same_answer;
SELECT count(*) = :before_n AS same_count, sum(amount) = :before_amount AS same_amount,
       sum(held) = :before_held AS same_held
FROM ledger WHERE account_id = 20;
SELECT * FROM balance(20);
-- request 3 (numbers may skip, never go back): used 60 more, total 210 s: bq 240 =
-- 120 + 120 x 0.01 = 1.20, charged 1.20 - 0.60 = 0.60.  270 s in all: 1.80, 0.60
-- more; available (2.40 - 0.60) - 0.60 (s20c) = 1.20 >= 0.60: granted 60, held 0.60
SELECT * FROM pg_temp.kept('s20a-3', reserve_update('s20a', 3, 60, 60));
SELECT pg_temp.fails($$SELECT convbill.reserve_update('s20a', 2, 0, 0)$$);     -- 2 <= 3, never answered
SELECT pg_temp.fails($$SELECT convbill.reserve_update('s20a', 0, 0, 0)$$);
SELECT pg_temp.fails($$SELECT convbill.reserve_update('no-such-session', 1, 0, 0)$$);
SELECT pg_temp.fails($$SELECT convbill.reserve_update('s20a', 4, -1, 0)$$);
SELECT pg_temp.fails($$SELECT convbill.reserve_update('s20a', 4, NULL, 0)$$);
SELECT pg_temp.fails($$SELECT convbill.reserve_update('s20a', 4, 0, 'NaN')$$);
SELECT pg_temp.fails($$SELECT convbill.reserve_update(NULL, 4, 0, 0)$$);
-- money 2.40 - 0.60 = 1.80, held 0.60 + 0.60 = 1.20, available 0.60
SELECT * FROM balance(20);
-- grants end on increment boundaries: account 10 has 7.50; 750 s: 12 minutes
-- (7.20) of the 12.5 asked: partial 720, held 7.20
SELECT * FROM pg_temp.a(reserve(10, 'voice', 's10', 750));
-- used 690 s: bq 720 -> 7.20 charged; 690 + 120 = 810 -> bq 840 = 8.40, 1.20 more
-- > 0.30 available; 780 -> 7.80, 0.60 > 0.30; 720 -> 7.20, nothing more: the
-- 30 s left of the paid minute, partial, nothing held
SELECT * FROM pg_temp.a(reserve_update('s10', 1, 690, 120));
SELECT * FROM pg_temp.a(commit('s10', 2, 30));                               -- 720 s = 7.20: nothing more
SELECT * FROM balance(10);                                                   -- 7.50 - 7.20 = 0.30

-------------------------------------------------------------------------------
-- 4. commit
-------------------------------------------------------------------------------
-- used 120 more, 330 s in all, 60 s beyond the 270 granted (overuse, still
-- charged): bq 360 = 120 + 240 x 0.01 = 2.40, charged 2.40 - 1.20 = 1.20
SELECT * FROM pg_temp.kept('s20a-4', commit('s20a', 4, 120));
-- money 1.80 - 1.20 = 0.60, held 0.60 (s20c), available 0
SELECT * FROM balance(20);
SELECT status, used, granted, covered, charged, held_units, held_money, overuse, charge_id IS NOT NULL AS has_charge
FROM reservation WHERE session_id = 's20a';
-- exactly one charge: 330 s, billed 360, 120 covered, 2.40 = the session's debits
SELECT account_id, kind, service, quantity, billed_quantity, covered_quantity, amount, currency, description
FROM charge WHERE source = 'session' AND external_id = 's20a';
SELECT unit, count(*) AS debits, sum(amount) AS debited FROM ledger
WHERE session_id = 's20a' AND kind = 'debit' GROUP BY unit ORDER BY unit;
SELECT (SELECT -sum(amount) FROM ledger WHERE session_id = 's20a' AND kind = 'debit' AND unit = 'EUR')
       = (SELECT amount FROM charge WHERE source = 'session' AND external_id = 's20a') AS charge_is_debits;
-- a retransmitted commit gets the first answer and changes nothing
SELECT count(*) AS n FROM ledger \gset before_
SELECT commit('s20a', 4, 120) = (SELECT g FROM answer WHERE k = 's20a-4') AS same_answer;
SELECT count(*) = :before_n AS ledger_unchanged FROM ledger;
-- so does an older request of the session
SELECT reserve_update('s20a', 1, 150, 120) = (SELECT g FROM answer WHERE k = 's20a-1') AS same_answer;
-- anything else is refused: the session is closed
SELECT * FROM pg_temp.a(reserve_update('s20a', 5, 0, 60));
SELECT * FROM pg_temp.a(commit('s20a', 5, 0));
SELECT * FROM pg_temp.a(release('s20a'));
SELECT count(*) = :before_n AS ledger_unchanged FROM ledger;
SELECT count(*) AS charges FROM charge WHERE external_id = 's20a';

-------------------------------------------------------------------------------
-- 5. release
-------------------------------------------------------------------------------
-- nothing used: the 0.60 hold goes back, no charge
SELECT * FROM pg_temp.a(release('s20c'));
SELECT * FROM balance(20);
SELECT count(*) AS charges FROM charge WHERE external_id = 's20c';
-- usage reported before the release stays charged
SELECT top_up(21, 5.00, 'rel-1') IS NOT NULL AS topped_up;
SELECT * FROM pg_temp.a(reserve(21, 'voice', 's21a', 120));                  -- 2 minutes: held 1.20
-- used 70 s: bq 120 -> 1.20 charged; 130 s: bq 180 -> 1.80, 0.60 more; available
-- 5.00 - 1.20 = 3.80 (its own hold released): granted 60, held 0.60
SELECT * FROM pg_temp.a(reserve_update('s21a', 1, 70, 60));
-- release: nothing new charged, the 0.60 hold goes back: 3.80 available
SELECT * FROM pg_temp.a(release('s21a'));
SELECT * FROM balance(21);
SELECT quantity, billed_quantity, covered_quantity, amount, description FROM charge WHERE external_id = 's21a';
SELECT status, used, charged, held_money FROM reservation WHERE session_id = 's21a';

-------------------------------------------------------------------------------
-- 6. Expiry
-------------------------------------------------------------------------------
-- s21b holds 0.60 for a millisecond
SELECT * FROM pg_temp.a(reserve(21, 'voice', 's21b', 60, '{}', '1 millisecond'));
-- s21e reports usage before it lapses (now() stands still in a transaction):
-- 60 s charged 0.60, one more minute held 0.60
BEGIN;
SELECT * FROM pg_temp.a(reserve(21, 'voice', 's21e', 120, '{}', '1 millisecond'));
SELECT * FROM pg_temp.a(reserve_update('s21e', 1, 60, 60));
COMMIT;
SELECT pg_sleep(0.01);
-- not swept yet, but expired holds never count: 3.80 - 0.60 = 3.20, nothing held
SELECT status, held_money FROM reservation WHERE session_id IN ('s21b', 's21e') ORDER BY session_id;
SELECT * FROM balance(21);
-- 380 s: bq 420 -> 4.20, 360 -> 3.60 > 3.20, 300 -> 3.00: partial 300 (with the
-- lapsed holds counted it would be 3.20 - 1.20 = 2.00: 180)
SELECT * FROM pg_temp.a(reserve(21, 'voice', 's21c', 380));
SELECT * FROM pg_temp.a(release('s21c'));
SELECT expire_reservations() AS expired;
SELECT session_id, status, used, charged, held_money, overuse FROM reservation
WHERE session_id IN ('s21b', 's21e') ORDER BY session_id;
SELECT session_id, kind, unit, amount, held FROM ledger WHERE session_id IN ('s21b', 's21e') ORDER BY entry_id;
SELECT quantity, billed_quantity, amount FROM charge WHERE external_id = 's21e';
SELECT * FROM pg_temp.a(reserve_update('s21b', 1, 0, 60));
-- a request for a session that lapsed finds it expired even before a sweep
SELECT * FROM pg_temp.a(reserve(21, 'voice', 's21d', 60, '{}', '1 millisecond'));
SELECT pg_sleep(0.01);
SELECT * FROM pg_temp.a(commit('s21d', 1, 30));
SELECT status, held_money FROM reservation WHERE session_id = 's21d';
SELECT kind, held FROM ledger WHERE session_id = 's21d' ORDER BY entry_id;
SELECT count(*) AS charges FROM charge WHERE external_id = 's21d';
SELECT expire_reservations() AS expired;
-- 3.20 left
SELECT * FROM balance(21);

-------------------------------------------------------------------------------
-- 7. charge_event: allowance then money, all or nothing, idempotent
-------------------------------------------------------------------------------
SELECT grant_allowance(22, 'sms', 2) IS NOT NULL AS granted;
-- units past what rating and online charging sum exactly are refused where
-- they enter (22003), not accepted to fail every later batch of the account
SELECT grant_allowance(22, 'sms', 1e18);
\echo :LAST_ERROR_SQLSTATE
SELECT top_up(22, 0.25, 'ev-1') IS NOT NULL AS topped_up;
-- 1 SMS from the allowance (2 -> 1): nothing charged
SELECT * FROM pg_temp.a(charge_event(22, 'sms', 'e1', 1));
-- 4 SMS: 1 from the allowance + 3 x 0.10 = 0.30 > 0.25: denied, and the
-- allowance is not touched either (all or nothing)
SELECT * FROM pg_temp.a(charge_event(22, 'sms', 'e2', 4));
SELECT * FROM balance(22);
-- 3 SMS: 1 from the allowance + 2 x 0.10 = 0.20 <= 0.25: granted, 0.05 left
SELECT * FROM pg_temp.kept('e3', charge_event(22, 'sms', 'e3', 3));
-- 0.10 > 0.05: denied
SELECT * FROM pg_temp.a(charge_event(22, 'sms', 'e4', 1));
-- a retried event gets its first answer: one charge, one money debit
SELECT charge_event(22, 'sms', 'e3', 3) = (SELECT g FROM answer WHERE k = 'e3') AS same_answer;
SELECT count(*) AS charges, sum(amount) AS amount FROM charge WHERE account_id = 22 AND external_id = 'e3';
SELECT count(*) AS money_debits FROM ledger l JOIN charge c USING (account_id, charge_id)
WHERE c.external_id = 'e3' AND l.kind = 'debit';
-- a retried denial stays a denial (the first answer)
SELECT * FROM pg_temp.a(charge_event(22, 'sms', 'e2', 4));
SELECT * FROM balance(22);
-- an array: 0.25 - 0.20 = 0.05, +0.10 = 0.15; e5 takes 0.10 (0.05 left), e3 and
-- the second e5 are retries (their first answers), e6 is denied (0.10 > 0.05)
SELECT top_up(22, 0.10, 'ev-2') IS NOT NULL AS topped_up;
SELECT account_id, event_id, result, reason, granted, held, charged, expires_at
FROM charge_events(ARRAY[(22, 'sms', 'e5', 1, NULL), (22, 'sms', 'e3', 3, '{}'),
                         (22, 'sms', 'e6', 1, NULL), (22, 'sms', 'e5', 1, NULL)]::event_request[]);
SELECT external_id, quantity, billed_quantity, covered_quantity, amount FROM charge
WHERE account_id = 22 ORDER BY charge_id;
SELECT * FROM balance(22);
SELECT pg_temp.fails($$SELECT convbill.charge_event(22, 'sms', 'bad-1', -1)$$);
SELECT pg_temp.fails($$SELECT convbill.charge_event(22, 'sms', NULL, 1)$$);
SELECT pg_temp.fails($$SELECT convbill.charge_event(22, 'fax', 'bad-2', 1)$$);
SELECT pg_temp.fails($$SELECT convbill.charge_event(99, 'sms', 'bad-3', 1)$$);

-------------------------------------------------------------------------------
-- 8. Postpaid: credit limit 50
-------------------------------------------------------------------------------
-- 6000 s = 60.00 > 0 + 50: whole minutes, 83 x 0.60 = 49.80 <= 50 < 84 x 0.60 = 50.40
SELECT * FROM pg_temp.a(reserve(23, 'voice', 's23a', 6000));
-- available = 0 + 50 - 49.80 = 0.20
SELECT * FROM balance(23);
SELECT * FROM pg_temp.a(charge_event(23, 'sms', 'p1', 1));                   -- 0.10: -0.10, 0.10 left
SELECT * FROM pg_temp.a(commit('s23a', 1, 4980));                            -- 49.80, within the grant
-- -0.10 - 49.80 = -49.90; available -49.90 + 50 = 0.10
SELECT * FROM balance(23);
SELECT * FROM pg_temp.a(charge_event(23, 'sms', 'p2', 2));                   -- 0.20 > 0.10: denied
SELECT * FROM pg_temp.a(charge_event(23, 'sms', 'p3', 1));                   -- 0.10: exactly -50.00
SELECT * FROM balance(23);
SELECT * FROM pg_temp.a(reserve(23, 'voice', 's23b', 60));                   -- nothing left
SELECT * FROM pg_temp.a(charge_event(23, 'sms', 'p4', 1));

-------------------------------------------------------------------------------
-- 9. A child billed to its parent
-------------------------------------------------------------------------------
SELECT top_up(30, 5.00, 'par-1') IS NOT NULL AS topped_up;
-- money for the child goes to the parent, which pays
SELECT pg_temp.fails($$SELECT convbill.top_up(31, 5.00, 'child-1')$$);
-- 180 s: the child's own 120 s allowance first, then 60 s = 0.60 held on the parent
SELECT * FROM pg_temp.a(reserve(31, 'voice', 's31a', 180));
-- parent: 5.00 + 10 credit - 0.60 = 14.40 available; the child sees the parent's money
SELECT * FROM balance(30);
SELECT * FROM balance(31);
-- 6000 s: 14.40 / 0.60 = 24 minutes = 1440 s exactly
SELECT * FROM pg_temp.a(reserve(31, 'voice', 's31b', 6000));
-- held 0.60 + 14.40 = 15.00: 5.00 + 10 - 15.00 = 0 available
SELECT * FROM balance(30);
-- the parent's own event finds nothing left
SELECT * FROM pg_temp.a(charge_event(30, 'sms', 'par-e1', 1));
SELECT * FROM pg_temp.a(commit('s31b', 1, 1440));                            -- 14.40
SELECT * FROM pg_temp.a(commit('s31a', 1, 180));                             -- 120 covered + 0.60
-- 5.00 - 14.40 - 0.60 = -10.00: the parent's credit limit, used up
SELECT * FROM balance(30);
SELECT * FROM balance(31);
SELECT account_id, external_id, covered_quantity, amount FROM charge WHERE account_id IN (30, 31) ORDER BY charge_id;
SELECT account_id, kind, unit, sum(amount) AS amount, sum(held) AS held FROM ledger
WHERE session_id IN ('s31a', 's31b') GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
SELECT payer_id, count(*) FROM reservation WHERE account_id = 31 GROUP BY 1;

-------------------------------------------------------------------------------
-- 10. Refusals: business outcomes are answers, programming errors are errors
-------------------------------------------------------------------------------
SELECT * FROM pg_temp.a(reserve(40, 'voice', 's40', 60));
SELECT * FROM pg_temp.a(charge_event(40, 'sms', 'e40', 1));
SELECT * FROM pg_temp.a(reserve(41, 'voice', 's41', 60));
SELECT * FROM pg_temp.a(charge_event(41, 'sms', 'e41', 1));
SELECT * FROM pg_temp.a(reserve(42, 'voice', 's42', 60));
SELECT * FROM pg_temp.a(charge_event(42, 'sms', 'e42', 1));
SELECT * FROM pg_temp.a(reserve(43, 'voice', 's43', 60));
SELECT * FROM pg_temp.a(charge_event(43, 'sms', 'e43', 1));
-- a denied session is over: its answer is kept, further requests are refused
SELECT * FROM pg_temp.a(reserve(40, 'voice', 's40', 60));
SELECT * FROM pg_temp.a(reserve_update('s40', 1, 0, 60));
SELECT count(*) AS ledger_entries FROM ledger WHERE account_id BETWEEN 40 AND 43;
-- a child is refused when its parent is suspended
UPDATE account SET status = 'suspended' WHERE account_id = 30;
SELECT * FROM pg_temp.a(reserve(31, 'voice', 's31c', 60));
UPDATE account SET status = 'active' WHERE account_id = 30;
-- suspended in mid-session: the usage is charged, no more units are granted
SELECT * FROM pg_temp.a(reserve(21, 'voice', 's21f', 60));                   -- 0.60 of 3.20
UPDATE account SET status = 'suspended' WHERE account_id = 21;
SELECT * FROM pg_temp.a(reserve_update('s21f', 1, 60, 60));                  -- 0.60 charged
SELECT * FROM pg_temp.a(commit('s21f', 2, 0));
UPDATE account SET status = 'active' WHERE account_id = 21;
SELECT * FROM balance(21);                                                   -- 3.20 - 0.60 = 2.60
SELECT pg_temp.fails($$SELECT convbill.reserve(20, 'fax', 'bad-1', 60)$$);
SELECT pg_temp.fails($$SELECT convbill.reserve(99, 'voice', 'bad-2', 60)$$);
SELECT pg_temp.fails($$SELECT convbill.reserve(20, 'voice', 'bad-3', NULL)$$);
SELECT pg_temp.fails($$SELECT convbill.reserve(20, 'voice', 'bad-4', -60)$$);
SELECT pg_temp.fails($$SELECT convbill.reserve(20, 'voice', 'bad-5', 0.0000000001)$$);
SELECT pg_temp.fails($$SELECT convbill.reserve(20, 'voice', 'bad-6', 60, '{}', '-1 minute')$$);
SELECT pg_temp.fails($$SELECT convbill.reserve(20, 'voice', '', 60)$$);
SELECT pg_temp.fails($$SELECT convbill.reserve(21, 'voice', 's20a', 60)$$);   -- another account's session
SELECT pg_temp.fails($$SELECT convbill.commit('s20a', NULL, 0)$$);
SELECT pg_temp.fails($$SELECT convbill.release('no-such-session')$$);
SELECT count(*) AS sessions FROM reservation WHERE session_id LIKE 'bad-%' OR session_id = '';

-------------------------------------------------------------------------------
-- 11. Buckets: consumption order, expiry
-------------------------------------------------------------------------------
-- three SMS allowances: priority 5; priority 1 expiring in 20 days; priority 1
-- expiring in 5 days.  Order: 'near' (1, 5 days), 'far' (1, 20 days), 'late' (5)
SELECT grant_allowance(50, 'sms', 3, now(), now() + interval '10 days', 5, 'late') AS late_bucket \gset
SELECT grant_allowance(50, 'sms', 2, now(), now() + interval '20 days', 1, 'far') IS NOT NULL AS granted;
SELECT grant_allowance(50, 'sms', 4, now(), now() + interval '5 days', 1, 'near') IS NOT NULL AS granted;
-- a retried grant returns its bucket and grants nothing more
SELECT grant_allowance(50, 'sms', 3, now(), now() + interval '10 days', 5, 'late') = :late_bucket AS same_bucket;
SELECT count(*) AS grants FROM ledger WHERE account_id = 50 AND kind = 'grant';
-- 5 SMS: near 4 -> 0, far 2 -> 1, late 3 stays
SELECT * FROM pg_temp.a(charge_event(50, 'sms', 'b1', 5));
SELECT reference, priority, balance FROM bucket WHERE account_id = 50 AND kind = 'allowance' ORDER BY bucket_id;
-- 2 SMS: far 1 -> 0, late 3 -> 2
SELECT * FROM pg_temp.a(charge_event(50, 'sms', 'b2', 2));
SELECT reference, priority, balance FROM bucket WHERE account_id = 50 AND kind = 'allowance' ORDER BY bucket_id;
SELECT * FROM balance(50);
SELECT pg_temp.fails($$SELECT convbill.grant_allowance(50, 'sms', 0)$$);
SELECT pg_temp.fails($$SELECT convbill.grant_allowance(50, 'fax', 1)$$);
SELECT pg_temp.fails($$SELECT convbill.grant_allowance(50, 'sms', 1, now(), now())$$);
SELECT pg_temp.fails($$SELECT convbill.grant_allowance(41, 'sms', 1)$$);      -- closed
SELECT pg_temp.fails($$SELECT convbill.grant_allowance(99, 'sms', 1)$$);
-- money: 1.00 in the main bucket and 2.00 valid for a millisecond; within the
-- transaction (now() stands still) both count: 3.00
SELECT top_up(50, 1.00, 'main-1') IS NOT NULL AS topped_up;
BEGIN;
SELECT top_up(50, 2.00, 'short', now() + interval '1 millisecond') IS NOT NULL AS topped_up;
SELECT * FROM balance(50) WHERE unit = 'EUR';
COMMIT;
SELECT pg_sleep(0.01);
-- lapsed, not swept: 1.00 left, though the bucket still says 2.00
SELECT * FROM balance(50) WHERE unit = 'EUR';
SELECT origin, balance, valid_until < now() AS lapsed FROM bucket WHERE account_id = 50 AND kind = 'money' ORDER BY bucket_id;
-- 3 SMS: 2 from the 'late' allowance, 1 x 0.10 from the main bucket, not the lapsed one
SELECT * FROM pg_temp.a(charge_event(50, 'sms', 'b3', 3));
SELECT origin, balance FROM bucket WHERE account_id = 50 AND kind = 'money' ORDER BY bucket_id;
SELECT expire_buckets() AS expired;
SELECT expire_buckets() AS expired_again;
SELECT kind, unit, amount FROM ledger WHERE account_id = 50 AND kind IN ('top_up', 'expiry') ORDER BY entry_id;
SELECT origin, balance FROM bucket WHERE account_id = 50 AND kind = 'money' ORDER BY bucket_id;
SELECT * FROM balance(50);                                                   -- 1.00 - 0.10 = 0.90
-- a top-up valid for 30 days is spent before the main bucket: 8 SMS = 0.80 =
-- 0.50 from it + 0.30 from the main bucket (0.90 -> 0.60)
SELECT top_up(50, 0.50, 'promo', now() + interval '30 days') IS NOT NULL AS topped_up;
SELECT * FROM pg_temp.a(charge_event(50, 'sms', 'b4', 8));
SELECT origin, reference, balance FROM bucket WHERE account_id = 50 AND kind = 'money' ORDER BY bucket_id;
SELECT * FROM balance(50) WHERE unit = 'EUR';

-------------------------------------------------------------------------------
-- 12. Low-balance notifications (the PID of the sender is masked)
-------------------------------------------------------------------------------
UPDATE account SET low_balance_threshold = 1.00 WHERE account_id = 60;
SELECT top_up(60, 2.00, 'low-1') IS NOT NULL AS topped_up;
LISTEN convbill_balance;
SELECT * FROM pg_temp.a(charge_event(60, 'sms', 'n1', 5));                   -- 2.00 - 0.50 = 1.50: above
-- 1.50 - 0.60 = 0.90 < 1.00: crossed, one notification
\o | sed -e 's/PID [0-9]*/PID (pid)/'
SELECT * FROM pg_temp.a(charge_event(60, 'sms', 'n2', 6));
\o
SELECT * FROM pg_temp.a(charge_event(60, 'sms', 'n3', 1));                   -- 0.80: already below, none
SELECT top_up(60, 1.00, 'low-2') IS NOT NULL AS topped_up;                   -- 1.80: up, none
SELECT * FROM pg_temp.a(reserve(60, 'voice', 's60', 60));                    -- holds 0.60: 1.20, none
-- used 60 s: 0.60 charged, 0.60 released, one more minute held: 1.80 - 0.60 - 0.60 =
-- 0.60 < 1.00, from 1.20: crossed again
\o | sed -e 's/PID [0-9]*/PID (pid)/'
SELECT * FROM pg_temp.a(reserve_update('s60', 1, 60, 60));
\o
-- 90 s in all: bq 120 = 1.20, 0.60 more, the 0.60 hold released: 0.60 -> 0.60, none
SELECT * FROM pg_temp.a(commit('s60', 2, 30));
SELECT * FROM balance(60);
UNLISTEN convbill_balance;

-------------------------------------------------------------------------------
-- 13. A cycle-scoped tariff in sessions: data 0.02/MB up to 100 MB of the
-- period, then 0.01/MB.  P(q) = 0.02 x min(q, 100) + 0.01 x max(q - 100, 0)
-------------------------------------------------------------------------------
SELECT top_up(70, 10.00, 'data-1') IS NOT NULL AS topped_up;
-- P(80) = 1.60
SELECT * FROM pg_temp.a(reserve(70, 'data', 's70a', 80));
-- used 80: 1.60 charged; 130 in all: P(130) = 2.00 + 0.30 = 2.30, 0.70 held
SELECT * FROM pg_temp.a(reserve_update('s70a', 1, 80, 50));
-- a second session while the first is open: the period total counts committed
-- sessions only (none yet): P(50) = 1.00
SELECT * FROM pg_temp.a(reserve(70, 'data', 's70b', 50));
SELECT * FROM pg_temp.a(commit('s70b', 1, 50));                              -- 1.00; the period: 50
-- 120 in all after the 50 committed: P(170) - P(50) = 2.70 - 1.00 = 1.70, of
-- which 1.60 was charged: 0.10 more
SELECT * FROM pg_temp.a(commit('s70a', 2, 40));
-- an event: P(200) - P(170) = 3.00 - 2.70 = 0.30
SELECT * FROM pg_temp.a(charge_event(70, 'data', 'd1', 30));
-- the charges sum to P(200) = 3.00, whatever the order
SELECT external_id, quantity, amount FROM charge WHERE account_id = 70 ORDER BY charge_id;
SELECT sum(amount) AS total FROM charge WHERE account_id = 70;
SELECT counter LIKE 'rate:%' AS rate_counter, used FROM usage_counter WHERE account_id = 70;
SELECT * FROM balance(70);                                                   -- 10.00 - 3.00 = 7.00
-- partial on a graduated tariff without increments: whole MB.  7.00 left at
-- 0.01/MB: 700 MB; 1000 asked: partial 700, held 7.00
SELECT * FROM pg_temp.a(reserve(70, 'data', 's70c', 1000));
-- and voice from the plan's 120 s: 60 s held, no money
SELECT * FROM pg_temp.a(reserve(70, 'voice', 's70v', 60));
SELECT * FROM balance(70);

-------------------------------------------------------------------------------
-- 14. The ledger's invariants, over everything above (two sessions still open)
-------------------------------------------------------------------------------
-- every bucket's balance is the sum of its ledger entries.  Buckets: 15 main,
-- 3 plan voice allowances (20, 31, 70: PRE accounts that asked for credit),
-- 4 granted (22: 1, 50: 3), 2 expiring top-ups (50) = 24
SELECT count(*) AS buckets, count(*) FILTER (WHERE b.balance <> coalesce(l.amount, 0)) AS mismatched
FROM bucket b
LEFT JOIN (SELECT account_id, bucket_id, sum(amount) AS amount FROM ledger GROUP BY 1, 2) l USING (account_id, bucket_id);
SELECT count(*) AS entries_without_bucket FROM ledger l
WHERE l.bucket_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM bucket b WHERE b.account_id = l.account_id AND b.bucket_id = l.bucket_id);
-- every session's holds sum to what it holds now (0 once finished).  committed:
-- s10 s20a s23a s31a s31b s21f s60 s70a s70b; denied: s20b s23b s31c s40 s41 s42 s43;
-- expired: s21b s21d s21e; released: s20c s21a s21c; open: s70c (7.00) s70v (60 s)
SELECT r.status, count(*) AS sessions,
       count(*) FILTER (WHERE coalesce(m.held, 0) <> r.held_money OR coalesce(u.held, 0) <> r.held_units) AS mismatched,
       sum(r.held_money) AS held_money, sum(r.held_units) AS held_units
FROM reservation r
LEFT JOIN (SELECT account_id, session_id, sum(held) AS held FROM ledger WHERE held <> 0 AND unit = 'EUR' GROUP BY 1, 2) m
       ON m.account_id = r.payer_id AND m.session_id = r.session_id
LEFT JOIN (SELECT account_id, session_id, sum(held) AS held FROM ledger WHERE held <> 0 AND unit <> 'EUR' GROUP BY 1, 2) u
       ON u.account_id = r.account_id AND u.session_id = r.session_id
GROUP BY r.status ORDER BY r.status;
-- every session with usage (the 9 committed, s21a released, s21e expired) has
-- one charge = what it charged = its money debits
SELECT count(*) AS sessions_with_usage,
       count(*) FILTER (WHERE c.amount IS DISTINCT FROM r.charged
                           OR c.amount IS DISTINCT FROM -d.debited) AS mismatched
FROM reservation r
LEFT JOIN charge c ON c.account_id = r.account_id AND c.charge_id = r.charge_id
LEFT JOIN (SELECT session_id, sum(amount) AS debited FROM ledger
           WHERE kind = 'debit' AND unit = 'EUR' GROUP BY 1) d ON d.session_id = r.session_id
WHERE r.used > 0;
-- every event charge (22: e1 e3 e5; 23: p1 p3; 50: b1-b4; 60: n1-n3; 70: d1 = 13)
-- with an amount debited its payer
SELECT count(*) AS event_charges,
       count(*) FILTER (WHERE c.amount <> 0 AND NOT EXISTS (SELECT 1 FROM ledger l WHERE l.charge_id = c.charge_id
                                                                        AND l.kind = 'debit' AND l.unit = c.currency)) AS undebited
FROM charge c WHERE c.source = 'event';
-- the ledger is append-only
SELECT pg_temp.fails($$UPDATE convbill.ledger SET amount = 0 WHERE account_id = 10$$);
SELECT pg_temp.fails($$DELETE FROM convbill.ledger WHERE account_id = 10$$);
SELECT pg_temp.fails($$TRUNCATE convbill.ledger$$);
SELECT count(*) AS top_ups_of_10 FROM ledger WHERE account_id = 10;
-- the open sessions end: nothing used, nothing charged, all released
SELECT * FROM pg_temp.a(release('s70c'));
SELECT * FROM pg_temp.a(release('s70v'));
SELECT * FROM balance(70);
SELECT count(*) AS open_sessions, coalesce(sum(held), 0) AS ledger_held FROM reservation r
LEFT JOIN ledger l ON l.session_id = r.session_id WHERE r.status = 'open';
SELECT sum(held) AS all_holds_released FROM ledger;

-- 15. A hold is never backed by money or allowances that expire before it:
-- a top-up valid for 30 s and 600 granted units valid for 30 s do not back a
-- 5-minute grant (else the commit after they lapsed would push a prepaid
-- account below zero without any overuse); the main bucket's 3.00 does.
INSERT INTO account (account_id, external_ref, name, currency) VALUES (90, 'EXP', 'Short-lived credit', 'EUR');
SELECT subscribe(90, 'BARE', '2020-01-01') IS NOT NULL AS subscribed;
SELECT top_up(90, 10.00, 'short', now() + interval '30 seconds') IS NOT NULL AS short_top_up;
SELECT grant_allowance(90, 'voice', 600, now(), now() + interval '30 seconds') IS NOT NULL AS short_allowance;
-- 10.00 and 600 s are available now, but none of it for 5 minutes
SELECT * FROM balance(90);
SELECT * FROM pg_temp.a(reserve(90, 'voice', 's90a', 600));
-- 3.00 that does not expire backs 300 s (300 × 0.01), in whole minutes
SELECT top_up(90, 3.00, 'lasting') IS NOT NULL AS lasting_top_up;
SELECT * FROM pg_temp.a(reserve(90, 'voice', 's90b', 600));
-- with a validity within the short buckets' life, they count again: 600 s from
-- the allowance (the 3.00 stays held by s90b)
SELECT * FROM pg_temp.a(reserve(90, 'voice', 's90c', 600, '{}', '10 seconds'));
SELECT * FROM pg_temp.a(release('s90b'));
SELECT * FROM pg_temp.a(release('s90c'));

-- 16. debit_buckets() (internal: the charge trigger, charge_events and the
-- bill run call it) takes one request per account and unit: two would each
-- be netted against what the other took (22023); the balance is untouched
SELECT balance FROM balance(90) WHERE unit = 'EUR' \gset
SELECT debit_buckets('money', ARRAY[90, 90]::bigint[], ARRAY['EUR', 'EUR'], ARRAY[5, 3]::numeric[],
                     ARRAY[NULL, NULL]::bigint[], ARRAY[NULL, NULL]::integer[], NULL, now());
\echo :LAST_ERROR_SQLSTATE
SELECT balance = :balance AS balance_unchanged FROM balance(90) WHERE unit = 'EUR';

-------------------------------------------------------------------------------
-- 17. Audit fixes
-------------------------------------------------------------------------------
INSERT INTO plan (code, name, currency, allowances) VALUES ('CAT', 'catalog edits', 'EUR', '{}');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES ('CAT', 'sms', '{"price": "0.10"}');
INSERT INTO account (account_id, external_ref, name, currency, low_balance_threshold) VALUES
    (91, 'LATE-ALLOW', 'allowance granted mid-session', 'EUR', NULL),
    (92, 'LATE-ALLOW-2', 'allowance granted before an update', 'EUR', NULL),
    (93, 'CLOSED-MID', 'cycle session over a period close', 'EUR', NULL),
    (94, 'CATALOG', 'plan_rate replaced under open sessions', 'EUR', NULL),
    (95, 'LOW-SHORT', 'low balance, short-lived top-up', 'EUR', 5),
    (96, 'LOW-RESERVE', 'low balance crossed by a reserve', 'EUR', 5),
    (97, 'GRANT-REF', 'grant_allowance references', 'EUR', NULL);
SELECT count(subscribe(a, p, '2020-01-01')) AS subscriptions
FROM (VALUES (91, 'BARE'), (92, 'BARE'), (93, 'PRE'), (94, 'CAT'), (95, 'BARE'), (96, 'BARE'), (97, 'BARE')) s(a, p);
SELECT count(top_up(a, 10.00, 'audit')) AS top_ups FROM unnest(ARRAY[91, 92, 93, 94]) a;

-- 17a. An allowance covers only usage reported while it is valid: units
-- already reported and charged stay charged (as bulk rating covers an event
-- only by the allowances valid at its time).
-- 120 s held 1.20; used 120 s: 1.20 charged, one more minute held 0.60
SELECT * FROM pg_temp.a(reserve(91, 'voice', 's91', 120));
SELECT * FROM pg_temp.a(reserve_update('s91', 1, 120, 60));
SELECT grant_allowance(91, 'voice', 600) IS NOT NULL AS granted_after_the_usage;
-- 60 s more, reported after the grant: bq 180, of which the 60 new s come
-- from the allowance; the 120 s charged before stay charged: 1.20, nothing
-- more (not -1.20: the allowance did not exist when they were used)
SELECT * FROM pg_temp.a(commit('s91', 2, 60));
SELECT quantity, billed_quantity, covered_quantity, amount FROM charge WHERE external_id = 's91';
-- 10.00 - 1.20 = 8.80; voice 600 - 60 = 540
SELECT * FROM balance(91);
SELECT * FROM pg_temp.ledger(91) WHERE session_id = 's91';
-- the same for a grant: 120 s used and charged 1.20, then 600 s granted
SELECT * FROM pg_temp.a(reserve(92, 'voice', 's92', 120));
SELECT * FROM pg_temp.a(reserve_update('s92', 1, 120, 60));
SELECT grant_allowance(92, 'voice', 600) IS NOT NULL AS granted_after_the_usage;
-- nothing more used: nothing credited back (charged 0); 120 s more asked: bq
-- 240 - 120 = 120 new units, all from the allowance: 120 s held, no money
-- (the 0.60 money hold released)
SELECT * FROM pg_temp.a(reserve_update('s92', 2, 0, 120));
SELECT used, covered, charged, held_units, held_money FROM reservation WHERE session_id = 's92';
-- 90 s more: 210 s, bq 240: 120 covered (the session's own hold), 120 charged 1.20
SELECT * FROM pg_temp.a(commit('s92', 3, 90));
SELECT quantity, billed_quantity, covered_quantity, amount FROM charge WHERE external_id = 's92';
-- 10.00 - 1.20 = 8.80; voice 600 - 120 = 480
SELECT * FROM balance(92);

-- 17b. A cycle-scoped session whose period a bill run closes mid-session is
-- charged to the next open period, priced after that period's running total
-- (as bulk rating prices late usage): P(q) = 0.02 x min(q, 100) + 0.01 x max(q - 100, 0)
-- this period: 150 MB, P(150) = 2.50
SELECT * FROM pg_temp.a(charge_event(93, 'data', 'd93', 150));
-- 50 MB after the 150: P(200) - P(150) = 0.50 held
SELECT * FROM pg_temp.a(reserve(93, 'data', 's93', 50));
SELECT close_period(93, now()) IS NOT NULL AS closed;
-- 30 MB used: the next period is at 0: P(30) = 0.60 charged; 50 in all:
-- P(50) = 1.00, 0.40 held
SELECT * FROM pg_temp.a(reserve_update('s93', 1, 30, 20));
-- 50 MB: P(50) = 1.00, 0.40 more
SELECT * FROM pg_temp.a(commit('s93', 2, 20));
-- each period's charges sum to the price of its total: 2.50 = P(150) in the
-- closed one, 1.00 = P(50) in the next
SELECT period_start > now() AS next_period, external_id, quantity, amount
FROM charge WHERE account_id = 93 ORDER BY charge_id;
SELECT period_start > now() AS next_period, used FROM usage_counter WHERE account_id = 93 ORDER BY period_start;
SELECT period_start > now() AS next_period, charged FROM reservation WHERE session_id = 's93';
-- 10.00 - 2.50 - 1.00 = 6.50
SELECT * FROM balance(93) WHERE unit = 'EUR';

-- 17c. A session is priced by the tariff it started with: replacing the
-- plan_rate (a catalog fix) changes new requests only; open sessions still
-- end, swept or committed.  s94a holds 2 x 0.10, s94b (lapsing) 0.10
SELECT * FROM pg_temp.a(reserve(94, 'sms', 's94a', 2));
SELECT * FROM pg_temp.a(reserve(94, 'sms', 's94b', 1, '{}', '1 millisecond'));
DELETE FROM plan_rate WHERE plan_code = 'CAT' AND service = 'sms';
INSERT INTO plan_rate (plan_code, service, tariff) VALUES ('CAT', 'sms', '{"price": "0.05"}');
SELECT pg_sleep(0.01);
SELECT expire_reservations() AS expired;                                     -- s94b
-- 2 sms at the session's 0.10: 0.20; a new event at the new 0.05
SELECT * FROM pg_temp.a(commit('s94a', 1, 2));
SELECT * FROM pg_temp.a(charge_event(94, 'sms', 'e94', 2));
SELECT session_id, status, charged FROM reservation WHERE account_id = 94 ORDER BY session_id;
-- 10.00 - 0.20 - 0.10 = 9.70
SELECT * FROM balance(94);
-- a session that cannot be ended (here: its tariff made unreadable) is
-- skipped with a WARNING and a job warning; the sweep ends the others
SELECT * FROM pg_temp.a(reserve(94, 'sms', 's94c', 1, '{}', '1 millisecond'));
SELECT * FROM pg_temp.a(reserve(94, 'sms', 's94d', 1, '{}', '1 millisecond'));
UPDATE reservation SET tariff = NULL WHERE session_id = 's94c';
SELECT pg_sleep(0.01);
SELECT expire_reservations() AS expired;                                     -- s94d only
SELECT current_setting('convbill.job_warning') AS job_warning;
SELECT session_id, status, held_money FROM reservation WHERE session_id IN ('s94c', 's94d') ORDER BY session_id;
-- repaired, the next sweep ends it
UPDATE reservation SET tariff = '{"price": "0.05"}' WHERE session_id = 's94c';
SELECT expire_reservations() AS expired;
SELECT session_id, status, held_money FROM reservation WHERE session_id IN ('s94c', 's94d') ORDER BY session_id;
-- nothing held: 9.70
SELECT * FROM balance(94);

-- 17d. A reserve notifies a low balance only when the money available now
-- crosses the threshold (5): 6.00 + 20.00 valid for a minute = 26.00.  The
-- 5-minute grant is backed by the 6.00 only (1.20 held), but available now
-- goes 26.00 -> 24.80: no notification
LISTEN convbill_balance;
SELECT top_up(95, 6.00, 'main6') IS NOT NULL AS topped_up;
SELECT top_up(95, 20.00, 'short20', now() + interval '1 minute') IS NOT NULL AS topped_up;
SELECT * FROM pg_temp.a(reserve(95, 'voice', 's95', 120));
SELECT * FROM balance(95);
-- 6.00 -> 4.80 < 5: crossed, one notification
SELECT top_up(96, 6.00, 'main6') IS NOT NULL AS topped_up;
\o | sed -e 's/PID [0-9]*/PID (pid)/'
SELECT * FROM pg_temp.a(reserve(96, 'voice', 's96', 120));
\o
UNLISTEN convbill_balance;
SELECT * FROM pg_temp.a(release('s95'));
SELECT * FROM pg_temp.a(release('s96'));

-- 17e. grant_allowance with a used reference: an identical retry returns the
-- first bucket (a validity relative to the request, valid_from left at its
-- default now(), too: section 11 retries now() + 10 days); anything else
-- under that reference is refused (23505), as top_up refuses it
SELECT grant_allowance(97, 'voice', 10, '2026-01-01', 'infinity', 0, 'ref1') AS b1 \gset
SELECT grant_allowance(97, 'voice', 10, now(), 'infinity', 0, 'g2') AS g2 \gset
SELECT grant_allowance(97, 'voice', 10, '2026-01-01', 'infinity', 0, 'ref1') = :b1 AS same_bucket;
SELECT grant_allowance(97, 'voice', 10, reference => 'g2') = :g2 AS same_bucket_default_from;
SELECT pg_temp.fails($$SELECT convbill.grant_allowance(97, 'sms', 10, '2026-01-01', 'infinity', 0, 'ref1')$$);
SELECT pg_temp.fails($$SELECT convbill.grant_allowance(97, 'voice', 500, '2026-01-01', 'infinity', 0, 'ref1')$$);
SELECT pg_temp.fails($$SELECT convbill.grant_allowance(97, 'voice', 10, '2026-02-01', 'infinity', 0, 'ref1')$$);
SELECT pg_temp.fails($$SELECT convbill.grant_allowance(97, 'voice', 10, '2026-01-01', '2027-01-01', 0, 'ref1')$$);
SELECT pg_temp.fails($$SELECT convbill.grant_allowance(97, 'voice', 10, '2026-01-01', 'infinity', 1, 'ref1')$$);
-- a bucket used up is still retried by the units it was granted: 5 s bill
-- 60 s = 10 (ref1) + 10 (g2) + 40 x 0.01 = 0.40
SELECT top_up(97, 1.00, 'audit') IS NOT NULL AS topped_up;
SELECT * FROM pg_temp.a(charge_event(97, 'voice', 'v97', 5));
SELECT grant_allowance(97, 'voice', 10, '2026-01-01', 'infinity', 0, 'ref1') = :b1 AS same_bucket_after_use;
SELECT unit, balance, reference FROM bucket WHERE account_id = 97 ORDER BY bucket_id;

-- 17f. Allowance units an open session holds stay in the buckets that back its
-- hold (valid when its grant lapses): a one-shot event, a batch of them or
-- another session's debit takes what nobody holds first, even from a bucket
-- later in consumption order, and a session's own debit takes what backs its
-- own hold.  Each account: no money, no credit; 10 sms valid for good
-- (priority 0, consumed first) and 10 valid for 5 or 10 ms (priority 1).
INSERT INTO account (account_id, external_ref, name, currency) VALUES
    (110, 'HOLD-EVENT', 'a hold and a one-shot event', 'EUR'),
    (111, 'HOLD-EVENTS', 'a hold and charge_events', 'EUR'),
    (112, 'HOLD-SESSIONS', 'two sessions holding', 'EUR');
SELECT count(subscribe(a, 'BARE', '2020-01-01')) AS subscriptions FROM unnest(ARRAY[110, 111, 112]) a;
-- the allowance buckets of an account: which one, balance, whether lapsed
CREATE FUNCTION pg_temp.sms(acc bigint)
RETURNS TABLE (bucket text, balance numeric, lapsed boolean)
LANGUAGE sql AS $$
    SELECT CASE WHEN b.valid_until = 'infinity' THEN 'long' ELSE 'short' END, b.balance, b.valid_until <= now()
    FROM convbill.bucket b WHERE b.account_id = acc AND b.kind = 'allowance' ORDER BY b.bucket_id
$$;
BEGIN;
SELECT count(grant_allowance(a, 'sms', 10, now(), 'infinity', 0)) AS long_granted FROM unnest(ARRAY[110, 111, 112]) a;
SELECT count(grant_allowance(a, 'sms', 10, now(), now() + interval '5 milliseconds', 1)) AS short_granted
FROM unnest(ARRAY[110, 111]) a;
SELECT grant_allowance(112, 'sms', 10, now(), now() + interval '10 milliseconds', 1) IS NOT NULL AS short_granted;
-- s110, s111: 10 sms for 5 minutes, backed by the long bucket alone (the short
-- one lapses before): granted, nothing held in money
SELECT * FROM pg_temp.a(reserve(110, 'sms', 's110', 10));
SELECT * FROM pg_temp.a(reserve(111, 'sms', 's111', 10));
-- 10 sms now: 20 - 10 held = 10 from the allowance, charged 0, taken from the
-- short bucket (nobody holds it), not the long one (priority 0) that backs s110
SELECT * FROM pg_temp.a(charge_event(110, 'sms', 'e110', 10));
SELECT account_id, event_id, result, reason, granted, held, charged
FROM charge_events(ARRAY[ROW(111, 'sms', 'e111', 10, NULL)]::event_request[]);
SELECT * FROM pg_temp.sms(110);
SELECT * FROM pg_temp.sms(111);
-- s112a: 10 sms for 5 minutes (the long bucket backs it); s112b: 10 for 5 ms
-- (20 valid then - 10 held = 10: the short bucket backs it, valid for 10 ms)
SELECT * FROM pg_temp.a(reserve(112, 'sms', 's112a', 10));
SELECT * FROM pg_temp.a(reserve(112, 'sms', 's112b', 10, '{}', '5 milliseconds'));
-- s112b uses its 10: from the short bucket that backs its hold, not the long one
SELECT * FROM pg_temp.a(commit('s112b', 1, 10));
SELECT * FROM pg_temp.sms(112);
COMMIT;
SELECT pg_sleep(0.02);
-- the short buckets lapsed; each session's 10 sms are still covered by the
-- long bucket: charged 0 (had the event or s112b taken the long bucket, the
-- 10 sms would be charged 1.00 on an account with no money and no credit,
-- without overuse)
SELECT * FROM pg_temp.a(commit('s110', 1, 10));
SELECT * FROM pg_temp.a(commit('s111', 1, 10));
SELECT * FROM pg_temp.a(commit('s112a', 1, 10));
SELECT session_id, status, used, covered, charged, overuse FROM reservation
WHERE account_id IN (110, 111, 112) ORDER BY session_id;
SELECT account_id, (SELECT b.balance FROM balance(a.account_id) b WHERE b.unit = 'EUR') AS money, credit_limit
FROM account a WHERE account_id IN (110, 111, 112) ORDER BY account_id;
SELECT * FROM pg_temp.sms(112);
-- the ledger still sums to every bucket
SELECT count(*) AS buckets_off FROM bucket b
WHERE b.account_id IN (110, 111, 112)
  AND b.balance <> (SELECT coalesce(sum(l.amount), 0) FROM ledger l
                    WHERE l.account_id = b.account_id AND l.bucket_id = b.bucket_id);

-- 17g. An outage: many sessions lapse at once.  The sweep ends them in chunks,
-- one subtransaction each, not one per session (each subtransaction that
-- writes takes a transaction id, and past 64 in one transaction every
-- snapshot in the cluster overflows to pg_subtrans).  300 sessions of 1 sms
-- (0.10 held each) on 3 accounts, session oI lapsing I microseconds after it
-- started (the sweep takes them in that order); o10, o150 and o151 cannot be
-- ended (their tariff made unreadable, as s94c's)
INSERT INTO account (account_id, external_ref, name, currency) VALUES
    (113, 'OUTAGE-1', 'sessions lapsing in an outage', 'EUR'),
    (114, 'OUTAGE-2', 'sessions lapsing in an outage', 'EUR'),
    (115, 'OUTAGE-3', 'sessions lapsing in an outage', 'EUR');
SELECT count(subscribe(a, 'BARE', '2020-01-01')) AS subscriptions FROM unnest(ARRAY[113, 114, 115]) a;
SELECT count(top_up(a, 20.00, 'outage')) AS top_ups FROM unnest(ARRAY[113, 114, 115]) a;
-- 100 sessions an account (113 + I mod 3), 100 x 0.10 = 10.00 held of 20.00: all granted
SELECT g.result, count(*) AS sessions
FROM generate_series(1, 300) i, reserve(113 + i % 3, 'sms', 'o' || i, 1, '{}', i * interval '1 microsecond') g
GROUP BY g.result;
UPDATE reservation SET tariff = NULL WHERE session_id IN ('o10', 'o150', 'o151');
SELECT pg_sleep(0.01);
SET convbill.job_warning = '';          -- (17c's report)
-- the transaction ids one sweep takes (subtransactions' ids come from the same
-- counter): the sweep's own, one for each block that writes: o1..o300 (rolled
-- back at o10), o1..o9, o11..o300 (rolled back at o150), o11..o149 and
-- o152..o300 (o151..o300 fails at o151, before it writes), and the second
-- txid_current()'s: 7 (with one subtransaction per ended session: 299)
SELECT txid_current() AS x0 \gset
SELECT expire_reservations() AS expired;                                     -- 297
SELECT txid_current() - :x0 < 64 AS fewer_than_64_xids;
SELECT current_setting('convbill.job_warning') AS job_warning;
-- 297 ended, their holds released once each (300 x 0.10 held, 297 x 0.10 let
-- go); the 3 stay open, still holding 0.10 each
SELECT status, count(*) AS sessions, sum(held_money) AS held FROM reservation
WHERE account_id IN (113, 114, 115) GROUP BY status ORDER BY status;
SELECT kind, count(*) AS entries, sum(held) AS held FROM ledger
WHERE account_id IN (113, 114, 115) AND session_id IS NOT NULL GROUP BY kind ORDER BY kind;
SELECT session_id FROM reservation WHERE account_id IN (113, 114, 115) AND status = 'open' ORDER BY session_id;
-- nothing charged, lapsed holds never count: 20.00 available on each account
SELECT count(*) AS charges FROM charge WHERE account_id IN (113, 114, 115);
SELECT a, b.* FROM unnest(ARRAY[113, 114, 115]) a, balance(a) b ORDER BY a;
-- repaired, the next sweep ends them
UPDATE reservation SET tariff = '{"price": "0.10"}' WHERE session_id IN ('o10', 'o150', 'o151');
SELECT expire_reservations() AS expired;
SELECT status, count(*) AS sessions, sum(held_money) AS held FROM reservation
WHERE account_id IN (113, 114, 115) GROUP BY status ORDER BY status;

-- grant_quantity (callable by anyone: it is pure) bounds its arguments as
-- requests do: units at or beyond 1e20 are 22003 and a negative charged
-- 22023 — before, a wrapped 128-bit sum sent its search into a loop that no
-- cancel stopped, or granted units with no money
SELECT * FROM grant_quantity('{"price": "0"}', now(), 'UTC', 0, 0, 0, 170141183460469231731687303715.884105727, 0, 1, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM grant_quantity('{"price": "1"}', now(), 'UTC', 0, 0, 0, 0, -170141183460469231731687303.715884105727, 10, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM grant_quantity('{"price": "1"}', now(), 'UTC', 0, 0, 0, 0, 0, 10, 4);
