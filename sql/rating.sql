-- Usage ingestion and bulk rating: a small multi-service scenario whose every
-- charge is computed by hand in the comments.
-- a fresh, empty catalog for this file (pg_regress runs every file in one database)
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS convbill CASCADE;
CREATE EXTENSION convbill;
RESET client_min_messages;
SET search_path = convbill, public;
SET TimeZone = 'UTC';
\set VERBOSITY terse

INSERT INTO service VALUES ('voice', 'second'), ('sms', 'message'), ('data', 'MB'), ('iot', 'message');
INSERT INTO destination VALUES ('49', 'DE'), ('4915', 'DE-mobile'), ('882', 'IRSF');
INSERT INTO plan (code, name, currency, recurring_fee, allowances)
    VALUES ('M10', 'Mobile 10', 'EUR', 10, '{"voice": 120, "sms": 2}'),
           ('IOT', 'IoT', 'EUR', 0, '{}');
INSERT INTO plan_rate (plan_code, service, zone, tariff) VALUES
    -- voice: per second after the first minute (60/1), 0.002/s, peak Mon-Fri 08-18 0.004/s
    ('M10', 'voice', NULL,
     '{"price": "0.002", "increment": {"first": 60, "next": 1},
       "time_bands": [{"name": "peak", "days": ["mon","tue","wed","thu","fri"], "from": "08:00", "to": "18:00",
                       "tariff": {"price": "0.004"}}]}'),
    -- the premium zone: 0.025/s in whole minutes (60/60); more specific than "any zone"
    ('M10', 'voice', 'IRSF', '{"price": "0.025", "increment": {"first": 60, "next": 60}}'),
    ('M10', 'sms', NULL, '{"price": "0.09"}'),
    -- data: graduated on the period's running total
    ('M10', 'data', NULL, '{"model": "graduated", "scope": "cycle",
                            "tiers": [{"up_to": 1000, "price": "0.01"}, {"up_to": null, "price": "0.005"}]}'),
    ('IOT', 'iot', NULL, '{"model": "package", "package": {"size": 100, "price": "1"}}');

INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day) VALUES
    (1, 'ALICE', 'Alice', 'EUR', 'Europe/Berlin', 1),
    (2, 'BOB', 'Bob', 'EUR', 'UTC', 15),
    (3, 'GONE', 'Closed account', 'EUR', 'UTC', 1),
    (4, 'SWITCHED', 'Changed currency', 'EUR', 'UTC', 1);
SELECT subscribe(a, 'M10', '2026-01-01') FROM unnest(ARRAY[1, 2, 3, 4]) a;
-- closed from November 1 (its usage from before then would still be rated)
UPDATE account SET status = 'closed', closed_at = '2026-11-01 00:00+00' WHERE account_id = 3;
UPDATE account SET currency = 'USD' WHERE account_id = 4;

-- Events arrive in any order (d2 before d1); no partition exists yet, so they
-- wait in the default partition.
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs) VALUES
    -- Alice, Berlin (UTC+1 in November), allowance voice 120 s, sms 2
    (1, 'msc', 'c1', 'voice',  90, '2026-11-02 06:59:59+00', '{"destination": "+49 30 1234"}'),   -- Mon 07:59:59 local, off-peak: bq 90, all covered -> 0
    (1, 'msc', 'c2', 'voice', 100, '2026-11-02 07:00:00+00', '{"destination": "+49 151 1234"}'),  -- Mon 08:00:00, peak: bq 100, 30 covered, 70 x 0.004 = 0.28
    (1, 'msc', 'c3', 'voice',  61, '2026-11-02 17:00:00+00', '{"destination": "+49 151 1234"}'),  -- Mon 18:00:00, off-peak: bq 61 x 0.002 = 0.122
    (1, 'msc', 'c4', 'voice',  61, '2026-11-02 17:10:00+00', '{"destination": "+882 16 1234"}'),  -- IRSF: bq 120 x 0.025 = 3.00
    (1, 'msc', 'c4', 'voice',  61, '2026-11-02 17:10:00+00', '{"destination": "+882 16 1234"}'),  -- re-sent: duplicate
    (1, 'smsc', 's1', 'sms', 1, '2026-11-03 10:00+00', '{}'),                                    -- covered
    (1, 'smsc', 's2', 'sms', 1, '2026-11-03 10:01+00', '{}'),                                    -- covered
    (1, 'smsc', 's3', 'sms', 1, '2026-11-03 10:02+00', '{}'),                                    -- 0.09
    (1, 'ggsn', 'd2', 'data', 500, '2026-11-20 12:00+00', '{}'),   -- P(1200) - P(700) = 11.00 - 7.00 = 4.00
    (1, 'ggsn', 'd1', 'data', 700, '2026-11-05 12:00+00', '{}'),   -- P(700) = 7.00 (rated first: earlier)
    (1, 'm2m', 'i1', 'iot', 250, '2026-11-06 12:00+00', '{}'),     -- no IoT plan yet: no_tariff
    -- Bob, UTC, billing day 15: a new period (and allowance) at 2026-11-15 00:00
    (2, 'msc', 'b1', 'voice',  30, '2026-11-14 23:59:59+00', '{}'), -- bq 60, covered (period Oct 15 - Nov 15)
    (2, 'msc', 'b2', 'voice', 200, '2026-11-15 00:00:00+00', '{}'), -- Sun: 120 covered, 80 x 0.002 = 0.16
    -- one of each reject
    (99, 'msc', 'r1', 'voice', 10, '2026-11-02 10:00+00', '{}'),   -- unknown_account
    (3, 'msc', 'r2', 'voice', 10, '2026-11-02 10:00+00', '{}'),    -- account_closed
    (2, 'msc', 'r3', 'voice', -5, '2026-11-16 10:00+00', '{}'),    -- invalid_quantity
    (2, 'msc', 'r4', 'fax', 1, '2026-11-16 10:00+00', '{}'),       -- unknown_service
    (2, 'msc', 'r5', 'voice', 10, NULL, '{}'),                     -- invalid_time
    (4, 'msc', 'r6', 'voice', 10, '2026-11-16 10:00+00', '{}'),    -- currency_mismatch
    (2, 'msc', NULL, 'voice', 10, '2026-11-16 10:00+00', '{}'),    -- missing_event_key (no external_id: cannot be deduplicated)
    (NULL, NULL, NULL, NULL, NULL, NULL, NULL);                    -- an empty row is kept, and rejected

SELECT count(*) AS in_default_partition FROM usage_event_default;
SELECT ensure_usage_partitions('2026-10-01', 3) AS partitions_created;
SELECT count(*) AS left_in_default FROM usage_event_default;
SELECT count(*) AS in_november FROM usage_event_202611;
SELECT ensure_usage_partitions('2026-10-01', 3) AS created_again;

SELECT rate_pending() AS processed;
SELECT rate_pending() AS nothing_left;

SELECT account_id, source, external_id, service, status, reject_reason
FROM usage_event ORDER BY account_id NULLS LAST, external_id COLLATE "C", status;

SELECT account_id, external_id, service, zone, quantity, billed_quantity AS billed,
       covered_quantity AS covered, amount, period_start
FROM charge ORDER BY account_id, occurred_at, external_id COLLATE "C";

-- the counters: running totals of cycle tariffs (Alice's data: 700 + 500)
SELECT account_id, period_start, counter, used FROM usage_counter ORDER BY account_id, period_start, counter COLLATE "C";

-- allowances are buckets, shared with online charging: rating granted the plan
-- allowances of each (account, open period) it billed in, and debited what it
-- covered, one ledger entry per bucket and batch (charges = events covered).
-- Alice: voice 120 = c1 90 + c2 30, sms 2 = s1 + s2; Bob: 60 of October's
-- voice (b1), all 120 of November's (b2), no sms yet.  The ledger sums to
-- every balance.
CREATE VIEW allowance_buckets AS
SELECT b.account_id, b.unit, b.origin, b.priority, b.period_start, b.valid_from, b.valid_until, b.balance,
       (SELECT -sum(l.amount) FROM ledger l
        WHERE l.account_id = b.account_id AND l.bucket_id = b.bucket_id AND l.kind = 'debit') AS debited,
       (SELECT sum(l.charges) FROM ledger l
        WHERE l.account_id = b.account_id AND l.bucket_id = b.bucket_id AND l.kind = 'debit') AS events,
       b.balance = (SELECT sum(l.amount) FROM ledger l
                    WHERE l.account_id = b.account_id AND l.bucket_id = b.bucket_id) AS ledger_ok
FROM bucket b WHERE b.kind = 'allowance';
SELECT account_id, unit, origin, period_start, valid_until, balance, debited, events, ledger_ok
FROM allowance_buckets ORDER BY account_id, period_start, unit COLLATE "C";

-- a re-send after rating is a duplicate too, and charges nothing
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs)
VALUES (1, 'msc', 'c2', 'voice', 100, '2026-11-02 07:00:00+00', '{"destination": "+49 151 1234"}');
SELECT rate_pending() AS processed;
SELECT status, count(*) FROM usage_event WHERE external_id = 'c2' GROUP BY status ORDER BY status;
SELECT count(*) AS charges_for_c2 FROM charge WHERE external_id = 'c2';

-- fix the catalog, then rerate the no_tariff rejects: 250 messages = 3 started blocks of 100 = 3.00
SELECT subscribe(1, 'IOT', '2026-01-01');
SELECT rerate('no_tariff') AS requeued;
SELECT external_id, status, reject_reason FROM usage_event WHERE external_id = 'i1';
SELECT external_id, amount FROM charge WHERE external_id = 'i1';
-- other rejects keep their reason
SELECT reject_reason, count(*) FROM usage_event WHERE status = 'rejected' GROUP BY reject_reason ORDER BY reject_reason COLLATE "C";

-- late usage: Alice's November is closed (invoiced); a November event goes to
-- the next open period (December, from 2026-11-30 23:00 UTC = Dec 1 00:00
-- Berlin) with December's counters: P(100) = 1.00
SELECT close_period(1, '2026-11-10');
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
VALUES (1, 'ggsn', 'late1', 'data', 100, '2026-11-25 12:00+00');
SELECT rate_pending() AS processed;
SELECT external_id, amount, period_start, period_end FROM charge WHERE external_id = 'late1';

-- one-time charges: in the account's currency, to the open period, idempotent on reference
SELECT add_charge(1, 25.00, 'SIM replacement', at => '2026-11-20', reference => 'sim-1') AS first_call \gset
SELECT add_charge(1, 25.00, 'SIM replacement', at => '2026-11-20', reference => 'sim-1') = :first_call AS same_charge;
SELECT kind, amount, currency, period_start, description FROM charge WHERE reference = 'sim-1';
SELECT add_charge(1, 5, 'no such kind', 'usage');
SELECT add_charge(99, 5, 'no such account');
SELECT add_charge(3, 5, 'closed account');

-- real-time rating: with the setting on, an insert is rated at once
SET convbill.realtime_rating = on;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
VALUES (2, 'smsc', 'rt1', 'sms', 1, '2026-11-20 09:00+00'),
       (2, 'smsc', 'rt2', 'sms', 1, '2026-11-20 09:01+00'),
       (2, 'smsc', 'rt3', 'sms', 1, '2026-11-20 09:02+00');
RESET convbill.realtime_rating;
SELECT u.external_id, u.status, c.covered_quantity AS covered, c.amount
FROM usage_event u JOIN charge c USING (account_id, charge_id)
WHERE u.external_id LIKE 'rt%' ORDER BY 1;

-- every rated event has exactly one charge, and no charge lacks its event
SELECT count(*) FILTER (WHERE c.charge_id IS NULL) AS rated_without_charge,
       count(*) FILTER (WHERE u.status = 'rated') AS rated
FROM usage_event u LEFT JOIN charge c ON c.account_id = u.account_id AND c.charge_id = u.charge_id
WHERE u.status = 'rated';
SELECT count(*) AS usage_charges_without_event
FROM charge c WHERE c.kind = 'usage'
  AND NOT EXISTS (SELECT 1 FROM usage_event u WHERE u.account_id = c.account_id AND u.charge_id = c.charge_id);

-- bad arguments are errors, not silent no-ops
SELECT rate_pending(0);
SELECT rate_pending(NULL);

-- allowances are prorated by the local days from a subscription's start to the
-- period's end, and a later end takes nothing back: Carol (UTC, 30-day
-- November) moves from S (600 s, since October) to L (6000 s) on Nov 15:
-- 600 + 16/30 x 6000 = 600 + 3200 = 3800 s for November, as two buckets: S's
-- 600 s valid all November, L's 3200 s from Nov 15 (an event uses the buckets
-- valid at its time)
INSERT INTO plan (code, name, currency, allowances) VALUES ('S', 'Small', 'EUR', '{"voice": 600}'),
                                                          ('L', 'Large', 'EUR', '{"voice": 6000}');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES ('S', 'voice', '{"price": "0.01"}'),
                                                          ('L', 'voice', '{"price": "0.005"}');
INSERT INTO account (account_id, external_ref, name, currency) VALUES (5, 'CAROL', 'Carol', 'EUR');
SELECT change_plan(subscribe(5, 'S', '2026-10-01'), 'L', '2026-11-15') IS NOT NULL AS changed;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (5, 'msc', 'k1', 'voice', 3000, '2026-11-02 10:00+00'),   -- plan S's rate: S's 600 covered, 2400 x 0.01 = 24.00
    (5, 'msc', 'k2', 'voice', 5000, '2026-11-20 10:00+00');   -- plan L's rate: L's 3200 covered, 1800 x 0.005 = 9.00
SELECT rate_pending() AS processed;
SELECT external_id, billed_quantity AS billed, covered_quantity AS covered, amount
FROM charge WHERE account_id = 5 ORDER BY occurred_at;
SELECT unit, origin, valid_from, valid_until, balance, debited, events, ledger_ok
FROM allowance_buckets WHERE account_id = 5 ORDER BY valid_from;

-- one oversized event is rejected on its own; the others in the batch are rated
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (2, 'msc', 'huge', 'voice', 9e19, '2026-11-21 10:00+00'),        -- 9e19 x 0.002 = 1.8e17: beyond range
    (2, 'msc', 'far', 'voice', 10, '5000-01-01 10:00+00'),             -- invalid_time
    (2, 'msc', 'fine', 'voice', 10, '2026-11-21 11:00+00');            -- rated (allowance)
SELECT rate_pending() AS processed;
SELECT external_id, status, reject_reason FROM usage_event WHERE external_id IN ('huge', 'far', 'fine') ORDER BY 1;

-- a corrected re-send in the same batch as its rejected original is rated
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (2, 'msc', 'fix1', 'voice', -5, '2026-11-22 10:00+00'),
    (2, 'msc', 'fix1', 'voice', 500, '2026-11-22 10:00+00');
SELECT rate_pending() AS processed;
SELECT quantity, status, reject_reason FROM usage_event WHERE external_id = 'fix1' ORDER BY quantity;

-- time zone and billing day cannot change under open charges
UPDATE account SET timezone = 'Asia/Tokyo' WHERE account_id = 2;
UPDATE account SET billing_day = 3 WHERE account_id = 2;
UPDATE account SET timezone = 'Asia/Tokyo' WHERE account_id = 4;   -- no charges: allowed
SELECT timezone FROM account WHERE account_id = 4;

-- granted allowance buckets: Dave (UTC, plan S: 600 s, 0.01/s) also has a
-- promotion of 100 s at priority -1 (used before the plan's, priority 0) until
-- Nov 10, and 50 s at priority 5 that expire on Nov 3.
INSERT INTO account (account_id, external_ref, name, currency) VALUES (6, 'DAVE', 'Dave', 'EUR');
SELECT subscribe(6, 'S', '2026-10-01') IS NOT NULL AS subscribed;
SELECT grant_allowance(6, 'voice', 100, '2026-11-01', '2026-11-10', -1, 'promo') IS NOT NULL AS promo,
       grant_allowance(6, 'voice', 50, '2026-11-01', '2026-11-03', 5, 'short') IS NOT NULL AS short;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (6, 'msc', 'v2', 'voice', 700, '2026-11-05 10:00+00'),   -- plan's 580 left (short expired): 120 x 0.01 = 1.20
    (6, 'msc', 'v1', 'voice', 120, '2026-11-02 10:00+00');   -- rated first: promo 100 + plan 20, 0.00
SELECT rate_pending() AS processed;
SELECT external_id, billed_quantity AS billed, covered_quantity AS covered, amount
FROM charge WHERE account_id = 6 ORDER BY occurred_at;
SELECT origin, priority, valid_from, valid_until, balance, debited, events, ledger_ok
FROM allowance_buckets WHERE account_id = 6 ORDER BY priority;

-- units held by an open session are not rated away: Erin (flat 0.01/s, no
-- plan allowance) has 100 s valid today; a session holds 60 of them, so a
-- bulk-rated call of 100 s gets the other 40 (60 x 0.01 = 0.60), and the
-- session's commit still finds its 60.
INSERT INTO plan (code, name, currency, allowances) VALUES ('F', 'Flat', 'EUR', '{}');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES ('F', 'voice', '{"price": "0.01"}');
INSERT INTO account (account_id, external_ref, name, currency) VALUES (7, 'ERIN', 'Erin', 'EUR');
SELECT subscribe(7, 'F', now() - interval '30 days') IS NOT NULL AS subscribed;
SELECT grant_allowance(7, 'voice', 100, now() - interval '1 day', now() + interval '1 day', 0, 'today') IS NOT NULL AS granted;
SELECT (g).result, (g).granted, (g).held FROM (SELECT reserve(7, 'voice', 'erin-1', 60) AS g) r;
SELECT held_units FROM reservation WHERE session_id = 'erin-1';
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
VALUES (7, 'msc', 'w1', 'voice', 100, now() - interval '1 hour');
SELECT rate_pending() AS processed;
SELECT external_id, billed_quantity AS billed, covered_quantity AS covered, amount FROM charge WHERE external_id = 'w1';
SELECT (g).result, (g).charged FROM (SELECT commit('erin-1', 1, 60) AS g) r;
SELECT source, billed_quantity AS billed, covered_quantity AS covered, amount
FROM charge WHERE account_id = 7 ORDER BY source;
SELECT origin, balance, debited, ledger_ok FROM allowance_buckets WHERE account_id = 7;

-- every allowance bucket's ledger still sums to its balance, and none is overdrawn
SELECT count(*) FILTER (WHERE NOT ledger_ok) AS ledger_mismatches, count(*) FILTER (WHERE balance < 0) AS overdrawn
FROM allowance_buckets;

-- the rating queue: pending events are found by queued_by (the transaction
-- that queued them) above usage_queue.low_water, which rating raises; an event
-- can never be pending below it, whatever received_at it was sent with or
-- however it became pending again
SELECT rate_pending() AS nothing_left;
SELECT low_water > 0 AS mark_raised,
       (SELECT count(*) FROM usage_event WHERE status = 'pending' AND queued_by < q.low_water) AS pending_below_mark
FROM usage_queue q;
SELECT low_water AS mark FROM usage_queue \gset
-- sent with an arrival time long before anything here
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, received_at)
VALUES (7, 'msc', 'q1', 'voice', 10, now() - interval '2 hours', '2001-01-01 00:00+00');
SELECT queued_by >= :mark AS queued_above_mark FROM usage_event WHERE external_id = 'q1';
SELECT rate_pending() AS processed;
SELECT status, received_at FROM usage_event WHERE external_id = 'q1';
-- rejected (no SMS tariff on plan F), the catalog fixed, and the event set
-- back to pending by hand instead of rerate(): queued anew, then rated
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
VALUES (7, 'smsc', 'q2', 'sms', 1, now() - interval '2 hours');
SELECT rate_pending() AS processed;
SELECT status, reject_reason, queued_by AS old_queued_by FROM usage_event WHERE external_id = 'q2' \gset
SELECT :'status' AS status, :'reject_reason' AS reject_reason;
INSERT INTO plan_rate (plan_code, service, tariff) VALUES ('F', 'sms', '{"price": "0.05"}');
UPDATE usage_event SET status = 'pending', reject_reason = NULL WHERE external_id = 'q2';
SELECT queued_by > :old_queued_by AS queued_anew,
       queued_by >= (SELECT low_water FROM usage_queue) AS requeued_above_mark
FROM usage_event WHERE external_id = 'q2';
SELECT rate_pending() AS processed;
SELECT u.status, c.amount FROM usage_event u JOIN charge c USING (account_id, charge_id) WHERE u.external_id = 'q2';
SELECT count(*) AS pending FROM usage_event WHERE status = 'pending';
-- queued_by belongs to convbill, but an event that comes with one anyway is
-- not lost: NULL (an INSERT ... SELECT * from a copy of the table) is queued
-- as it is; one below the mark (rows copied from another database) is
-- queued anew by rerate()
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, queued_by)
VALUES (7, 'msc', 'q3', 'voice', 30, now() - interval '2 hours', NULL),
       (7, 'msc', 'q4', 'voice', 30, now() - interval '2 hours', 1);
SELECT rate_pending() AS processed;
SELECT external_id, status FROM usage_event WHERE external_id IN ('q3', 'q4') ORDER BY 1;
SELECT rerate() AS requeued_rejects;
SELECT external_id, status, queued_by >= (SELECT low_water FROM usage_queue) AS above_mark
FROM usage_event WHERE external_id IN ('q3', 'q4') ORDER BY 1;

-- The rating pass's edge cases (src/rating_batch.c).  A service name too long
-- to be any service's is rejected as unknown_service, and the batch around it
-- is rated.
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
VALUES (7, 'x', 'long1', repeat('s', 300), 1, now() - interval '1 hour'),
       (7, 'msc', 'long2', 'voice', 30, now() - interval '1 hour');
SELECT rate_pending() AS processed;
SELECT external_id, status, reject_reason FROM usage_event WHERE external_id IN ('long1', 'long2') ORDER BY 1;
-- Two rates that tie exactly (both for any zone, the same valid_from, from
-- subscriptions that started together): the lowest rate_id prices the event,
-- in bulk rating and online charging alike.
INSERT INTO service VALUES ('fax', 'page');
INSERT INTO plan (code, name, currency) VALUES ('T1', 'Tie one', 'EUR'), ('T2', 'Tie two', 'EUR');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES ('T1', 'fax', '{"price": "0.10"}');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES ('T2', 'fax', '{"price": "0.20"}');
INSERT INTO account (account_id, external_ref, name, currency) VALUES (71, 'TIE', 'Tie', 'EUR');
SELECT count(subscribe(71, p, '2026-01-01')) AS subscriptions FROM unnest(ARRAY['T2', 'T1']) p;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
VALUES (71, 'fax', 'tie1', 'fax', 3, now() - interval '1 hour');
SELECT rate_pending() AS processed;
SELECT c.amount, c.rate_id = (SELECT min(rate_id) FROM plan_rate WHERE service = 'fax') AS lowest_rate
FROM usage_event u JOIN charge c USING (account_id, charge_id) WHERE u.external_id = 'tie1';
SELECT rate_id = (SELECT min(rate_id) FROM plan_rate WHERE service = 'fax') AS online_lowest_rate
FROM resolve_rate(71, 'fax', NULL, now());

-- Rating beside open sessions: a session's held allowance units stay backed
-- by the buckets that reserve() counted for it, those still valid when its
-- grant lapses (allowance_available(account, service, now, expires_at)).
-- Here the hold (2 hours) can only be backed by "long": "short" lapses in
-- an hour.  An event rated meanwhile takes "short", and "long" keeps the
-- session's 60 units (before: rating set the hold aside from "short", the
-- first valid now, and took "long"; once "short" lapsed the session's
-- granted units were charged as money, below the credit limit).
INSERT INTO plan (code, name, currency) VALUES ('FIX', 'Fixes', 'EUR');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES
    ('FIX', 'sms', '{"price": "0.10"}'),
    ('FIX', 'data', '{"model": "graduated", "scope": "cycle",
                      "tiers": [{"up_to": 100, "price": "0.02"}, {"up_to": null, "price": "0.10"}]}');
INSERT INTO account (account_id, external_ref, name, currency) VALUES (81, 'HOLD', 'Hold', 'EUR'), (82, 'OOR', 'Out of range', 'EUR');
SELECT count(subscribe(a, 'FIX', '2026-01-01')) AS subscriptions FROM unnest(ARRAY[81, 82]) a;
SELECT grant_allowance(81, 'sms', 60, now() - interval '1 hour', now() + interval '1 hour', 0, 'short') AS short_bucket \gset
SELECT grant_allowance(81, 'sms', 60, now() - interval '1 hour', 'infinity', 0, 'long') AS long_bucket \gset
-- no money: the 60 units granted are the allowance of "long"
SELECT result, granted, held FROM reserve(81, 'sms', 'fix-s1', 60, '{}', '2 hours');
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
VALUES (81, 'fix', 'h1', 'sms', 60, now() - interval '1 minute');
SELECT rate_pending() AS processed;
-- 60 of 60 covered by "short": 0.00
SELECT covered_quantity, amount FROM charge WHERE account_id = 81 AND external_id = 'h1';
SELECT CASE bucket_id WHEN :short_bucket THEN 'short' WHEN :long_bucket THEN 'long' END AS bucket, balance
FROM bucket WHERE account_id = 81 AND kind = 'allowance' ORDER BY bucket_id;
-- the hold is still backed until the grant lapses: 60 valid then - 60 held
SELECT allowance_available(81, 'sms', now(), expires_at) AS backed_at_expiry
FROM reservation WHERE account_id = 81 AND session_id = 'fix-s1';
SELECT result, charged FROM commit('fix-s1', 1, 60);
SELECT balance FROM balance(81) ORDER BY unit;

-- Two sessions, each held on its own buckets: A (2 hours) can only be
-- backed by "long" (50 held); B (10 minutes) by "short" or "long", and
-- "long" is A's, so B's 30 come from "short".  What rating may use is the
-- other 10 of "short": the event of 40 SMS is covered 10, the other 30 cost
-- 30 x 0.10 = 3.00; "short" keeps B's 30, "long" A's 50 (before: the 80
-- held were set aside from "short" and then "long", rating took 10 of
-- "long" and A's units were no longer all there after "short" lapsed).
INSERT INTO account (account_id, external_ref, name, currency) VALUES (85, 'TWO', 'Two sessions', 'EUR');
SELECT count(subscribe(85, 'FIX', '2026-01-01')) AS subscriptions;
SELECT grant_allowance(85, 'sms', 40, now() - interval '1 hour', now() + interval '1 hour', 0, 'short') AS short_bucket \gset
SELECT grant_allowance(85, 'sms', 50, now() - interval '1 hour', 'infinity', 0, 'long') AS long_bucket \gset
SELECT result, granted FROM reserve(85, 'sms', 'fix-a', 50, '{}', '2 hours');
SELECT result, granted FROM reserve(85, 'sms', 'fix-b', 30, '{}', '10 minutes');
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
VALUES (85, 'fix', 'h2', 'sms', 40, now() - interval '1 minute');
SELECT rate_pending() AS processed;
SELECT covered_quantity, amount FROM charge WHERE account_id = 85 AND external_id = 'h2';
SELECT CASE bucket_id WHEN :short_bucket THEN 'short' WHEN :long_bucket THEN 'long' END AS bucket, balance
FROM bucket WHERE account_id = 85 AND kind = 'allowance' ORDER BY bucket_id;
SELECT count(release(s)) AS released FROM unnest(ARRAY['fix-a', 'fix-b']) s;

-- An event whose charge is out of range (rejected out_of_range) takes no
-- allowance and adds nothing to the cycle total of the events after it in
-- the batch: o2's 5 SMS are covered by the 10-unit allowance (0.00, 5 left),
-- o4's 150 MB are priced from a running total of 0: 100 x 0.02 + 50 x 0.10
-- = 7.00 (before: o1 took all 10 units, o2 cost 5 x 0.10 = 0.50; o4 was
-- priced as if o3's 1e19 MB came before it, 150 x 0.10 = 15.00).  Only o4's
-- 150 MB are counted.
SELECT grant_allowance(82, 'sms', 10, '2026-01-01', 'infinity') > 0 AS granted;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (82, 'fix', 'o1', 'sms', 1e19, now() - interval '2 hours'),
    (82, 'fix', 'o2', 'sms', 5, now() - interval '1 hour'),
    (82, 'fix', 'o3', 'data', 1e19, now() - interval '2 hours'),
    (82, 'fix', 'o4', 'data', 150, now() - interval '1 hour');
SELECT rate_pending() AS processed;
SELECT u.external_id, u.status, u.reject_reason, c.covered_quantity, c.amount
FROM usage_event u LEFT JOIN charge c USING (account_id, charge_id)
WHERE u.account_id = 82 ORDER BY u.external_id;
SELECT unit, balance FROM bucket WHERE account_id = 82 ORDER BY unit;
SELECT used FROM usage_counter WHERE account_id = 82;

-- Lock order: a bill_to_parent child's rating and add_charge lock the child
-- and its payer together, in account order, as online requests do
-- (lock_accounts).  Before, they locked the child only and the charge's
-- debit trigger locked the parent later: a rater holding child 84 waiting
-- for parent 83, held by a reserve() of 84 that had locked 83 and waited for
-- 84, was a deadlock (40P01) that lost the whole batch.  Shown here by the
-- payer's row lock (its xmax is this transaction or one of its subtransactions,
-- which are newer) when no charge is written
-- (the debit trigger locks nothing then): the child's only event has no
-- tariff; add_charge is a retry that returns the original charge.
INSERT INTO account (account_id, external_ref, name, currency, credit_limit) VALUES (83, 'PAYER', 'Payer', 'EUR', 100);
INSERT INTO account (account_id, external_ref, name, currency, parent_id, bill_to_parent)
VALUES (84, 'CHILD', 'Child', 'EUR', 83, true);
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
VALUES (84, 'fix', 'k1', 'sms', 1, now() - interval '1 hour');
SELECT add_charge(84, 1.00, 'Fee', 'one_time', now(), 'fee-84') > 0 AS charged;
BEGIN;
SELECT rate_pending() AS processed;
SELECT account_id, xmax::text::bigint >= pg_current_xact_id()::xid::text::bigint AS locked FROM account WHERE account_id IN (83, 84) ORDER BY 1;
ROLLBACK;
BEGIN;
SELECT add_charge(84, 1.00, 'Fee', 'one_time', now(), 'fee-84') = charge_id AS same_charge
FROM charge WHERE account_id = 84 AND reference = 'fee-84';
SELECT account_id, xmax::text::bigint >= pg_current_xact_id()::xid::text::bigint AS locked FROM account WHERE account_id IN (83, 84) ORDER BY 1;
ROLLBACK;

-- add_charge refuses an amount the bill run cannot sum (more than 12
-- decimal places, invoice_line_total's scale): 22023, naming the amount;
-- trailing zeros are no decimals
SELECT add_charge(83, 0.0000000000001, 'Too fine');
\echo :LAST_ERROR_SQLSTATE
SELECT add_charge(83, 0.100000000000000, 'Trailing zeros') > 0 AS charged;
SELECT count(*) AS charges FROM charge WHERE account_id = 83;

-- An event whose source or external_id is longer than 255 characters is
-- rejected (invalid_event_key): the charge's unique key could not hold it,
-- and before, one such event failed every batch that claimed it (every
-- other account's events stuck behind it) and, with real-time rating, the
-- INSERT itself.  255 characters is accepted.
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (2, 'long', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 100) g), 'sms', 1, now() - interval '1 hour'),
    (2, repeat('s', 256), 'k-long-source', 'sms', 1, now() - interval '1 hour'),
    (2, 'long', repeat('x', 255), 'sms', 1, now() - interval '1 hour'),
    (1, 'long', 'k-ok', 'sms', 1, now() - interval '1 hour');
SELECT rate_pending() AS processed;
SELECT account_id, left(source, 8) AS source, length(external_id) AS id_length, status, reject_reason
FROM usage_event WHERE source LIKE 'long%' OR source LIKE 'ssss%' ORDER BY account_id, length(external_id);
SET convbill.realtime_rating = on;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
VALUES (2, 'long', repeat('y', 3000), 'sms', 1, now() - interval '1 hour');
RESET convbill.realtime_rating;
SELECT status, reject_reason FROM usage_event WHERE external_id = repeat('y', 3000);
-- online one-shot events: the same bound on event_id, an error (22023)
SELECT charge_event(2, 'sms', repeat('z', 256), 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM charge_events(ARRAY[ROW(2, 'sms', 'ok-1', 1, '{}'), ROW(2, 'sms', '', 1, '{}')]::event_request[]);
\echo :LAST_ERROR_SQLSTATE

-- A destination given as a JSON number is matched as its digits (attrs ->>
-- 'destination' is those digits), not ignored: before, the call was priced
-- at the any-zone rate (2 x 60 x 0.002 = 0.24 instead of the IRSF zone's
-- 2 x 0.025 x 60 = 3.00) without a word.
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs) VALUES
    (2, 'num', 'n-str', 'voice', 120, '2026-11-22 03:00+00', '{"destination": "88216123"}'),
    (2, 'num', 'n-num', 'voice', 120, '2026-11-22 03:00+00', '{"destination": 88216123}'),
    (2, 'num', 'n-bool', 'voice', 120, '2026-11-22 03:00+00', '{"destination": true}');
SELECT rate_pending() AS processed;
SELECT e.external_id, c.zone, c.amount FROM usage_event e JOIN charge c USING (account_id, charge_id)
WHERE e.source = 'num' ORDER BY e.external_id;
SELECT event_zone('{"destination": "+882 16"}') AS str, event_zone('{"destination": 4915}') AS num,
       event_zone('{"destination": null}') AS json_null, event_zone('[1]') AS array, event_zone('{}') AS none;

-- add_charge: the same reference is a retry only with the same charge; a
-- different amount, kind or description under it is refused (23505), not
-- answered with the first charge's id while the second charge is dropped
SELECT add_charge(2, 5, 'SIM card', reference => 'order-17') AS first_charge \gset
SELECT add_charge(2, 5.00, 'SIM card', reference => 'order-17') = :first_charge AS retry_returns_it;
SELECT add_charge(2, 99, 'Router', reference => 'order-17');
\echo :LAST_ERROR_SQLSTATE
SELECT add_charge(2, 5, 'SIM card', 'adjustment', reference => 'order-17');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS charges, sum(amount) AS amount FROM charge WHERE account_id = 2 AND reference = 'order-17';

-- The sources online charging writes its charges under, 'event'
-- (charge_event) and 'session' (a session's final charge, which its session
-- already debited), are its own: a usage event under one is the same event
-- as the charge of that id (a record of it delivered again: duplicate), else
-- it is rejected (reserved_source) — before, it was charged without lowering
-- the balance ('session'), or taken for a copy of an unrelated event.
SELECT top_up(2, 50.00, 'tu-online') IS NOT NULL AS topped_up;
SELECT result, charged FROM charge_event(2, 'sms', 'msg-1', 1);
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (2, 'event', 'msg-1', 'sms', 1, now() - interval '1 hour'),
    (2, 'event', 'msg-2', 'sms', 1, now() - interval '1 hour'),
    (2, 'session', 'cdr-1', 'sms', 1, now() - interval '1 hour'),
    (2, 'sessions', 'cdr-1', 'sms', 1, now() - interval '1 hour');
SELECT (SELECT balance FROM balance(2) WHERE unit = 'EUR') AS money_before \gset
SELECT rate_pending() AS processed;
SELECT source, external_id, status, reject_reason, charge_id IS NOT NULL AS charged
FROM usage_event WHERE source IN ('event', 'session', 'sessions') ORDER BY source, external_id;
-- the one charged event (0.09) lowered the money
SELECT :money_before - (SELECT balance FROM balance(2) WHERE unit = 'EUR') AS debited;

-- Closing takes effect at closed_at: usage from before it is still rated
-- (a late event of a closed account, billed on its last invoice), and a
-- closing set ahead leaves the account in use until then (before, both were
-- refused as account_closed: the usage never billed, the fee still charged)
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
VALUES (3, 'msc', 'before-close', 'voice', 10, '2026-10-30 10:00+00'),
       (3, 'msc', 'after-close', 'voice', 10, '2026-11-03 10:00+00');
SELECT rate_pending() AS processed;
SELECT external_id, status, reject_reason FROM usage_event WHERE external_id IN ('before-close', 'after-close')
ORDER BY external_id;
UPDATE account SET status = 'closed', closed_at = now() + interval '1 day' WHERE account_id = 2;
SELECT result FROM charge_event(2, 'sms', 'before-closing', 1);
SELECT add_charge(2, 1.00, 'before closing') > 0 AS charged;
SELECT add_charge(2, 1.00, 'after closing', at => now() + interval '2 days');
\echo :LAST_ERROR_SQLSTATE
-- a subscription may still start before a closing set ahead
SELECT subscribe(2, 'IOT', now()) > 0 AS subscribed_before_closing;
-- no plan allowance for a period after an account's closing (a late event of
-- a closed account rated there takes none): account 3, closed on November 1,
-- has October's and gets none for November
SELECT ensure_plan_allowances(ARRAY[3, 3]::bigint[],
                              ARRAY['2026-10-01 00:00+00', '2026-11-01 00:00+00']::timestamptz[]) AS granted;
SELECT period_start, count(*) AS plan_buckets FROM bucket WHERE account_id = 3 AND origin = 'plan'
GROUP BY period_start ORDER BY period_start;
-- the payer's closing refuses a sub-account's usage from then on too, as
-- online charging does: 86 is billed to 85, closed on November 10
INSERT INTO account (account_id, external_ref, name, currency, credit_limit) VALUES (85, 'PAYER-85', 'Payer 85', 'EUR', 100);
INSERT INTO account (account_id, external_ref, name, currency, parent_id, bill_to_parent)
VALUES (86, 'CHILD-86', 'Child 86', 'EUR', 85, true);
SELECT subscribe(86, 'M10', '2026-11-01') > 0 AS subscribed;
UPDATE account SET status = 'closed', closed_at = '2026-11-10 00:00+00' WHERE account_id = 85;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (86, 'smsc', 'k86-before', 'sms', 1, '2026-11-05 10:00+00'),
    (86, 'smsc', 'k86-after', 'sms', 1, '2026-11-20 10:00+00');
SELECT rate_pending() AS processed;
SELECT external_id, status, reject_reason FROM usage_event WHERE account_id = 86 ORDER BY external_id;
