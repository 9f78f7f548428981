-- convbill demo: realistic tariffs priced by the C engine.
-- Run by `make demo` on a private throwaway cluster.
\set ON_ERROR_STOP on
\pset footer off
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS convbill;
SET search_path = convbill, public;
SET TimeZone = 'UTC';

\echo
\echo '=== 1. The tariffs (canonical JSON, validated at input) ==='
CREATE TEMP TABLE demo_tariff (code text PRIMARY KEY, description text, t tariff NOT NULL);
INSERT INTO demo_tariff VALUES
 ('voice', 'Mobile voice: per-second billing after the first minute (60/1); peak Mon-Fri 08-18 (Berlin) 0.002/s with a 0.05 call set-up fee, off-peak 0.0007/s',
  '{"model": "flat", "price": "0.0007",
    "increment": {"first": 60, "next": 1},
    "time_bands": [
      {"name": "peak", "days": ["mon","tue","wed","thu","fri"], "from": "08:00", "to": "18:00",
       "tariff": {"price": "0.002", "setup_fee": "0.05"}}
    ],
    "rounding": {"decimals": 4, "mode": "half_up"},
    "currency": "EUR", "unit": "second"}'),
 ('data', 'Mobile data by the MB, graduated: first 1 GB 0.01/MB, next 9 GB 0.005/MB, beyond 0.002/MB; cycle scope (tiers count the month''s total)',
  '{"model": "graduated",
    "tiers": [{"up_to": 1024, "price": "0.01"},
              {"up_to": 10240, "price": "0.005"},
              {"up_to": null, "price": "0.002"}],
    "scope": "cycle", "currency": "EUR", "unit": "MB"}'),
 ('api', 'API calls, volume tiers: all calls at the tier the total falls in, plus a platform fee',
  '{"model": "volume",
    "tiers": [{"up_to": 10000, "price": "0.001"},
              {"up_to": 50000, "price": "0.0008", "flat": "5"},
              {"up_to": null, "price": "0.0006", "flat": "10"}],
    "currency": "USD", "unit": "call"}'),
 ('sms', 'SMS bundles: 100 free, then 2.00 per started block of 50',
  '{"model": "package", "package": {"size": 50, "price": "2", "free": 100}, "currency": "EUR", "unit": "sms"}'),
 ('cards', 'Card payments: 1.4 % + 0.25, at least 0.30, rounded half-even to cents',
  '{"model": "percentage", "percentage": {"rate": "1.4", "fixed": "0.25"}, "minimum": "0.30",
    "rounding": {"decimals": 2, "mode": "half_even"}, "currency": "EUR"}');
SELECT code, description FROM demo_tariff ORDER BY code;
SELECT code, t AS canonical_tariff FROM demo_tariff ORDER BY code;

\echo
\echo '=== 2. Mobile voice calls (Europe/Berlin): increments 60/1 and peak/off-peak bands ==='
WITH calls(caller, started_at, seconds) AS (VALUES
    ('+49 151 555 0101', timestamptz '2026-11-23 07:59:30+00',  42),   -- Mon 08:59 Berlin: peak
    ('+49 151 555 0101', timestamptz '2026-11-23 16:59:59+00', 125),   -- Mon 17:59:59 Berlin: peak
    ('+49 151 555 0101', timestamptz '2026-11-23 17:00:00+00', 125),   -- Mon 18:00:00 Berlin: off-peak
    ('+49 151 555 0199', timestamptz '2026-11-28 10:00:00+00', 600),   -- Saturday: off-peak
    ('+49 151 555 0199', timestamptz '2026-11-24 06:30:00+00',   0))   -- unanswered: nothing billed
SELECT c.caller,
       to_char(c.started_at AT TIME ZONE 'Europe/Berlin', 'Dy DD Mon HH24:MI:SS') AS local_start,
       c.seconds,
       billed_quantity(d.t, c.seconds) AS billed_seconds,
       rate(d.t, c.seconds, c.started_at, 'Europe/Berlin') AS charge_eur
FROM calls c, demo_tariff d WHERE d.code = 'voice' ORDER BY c.started_at;

\echo
\echo '=== 3. Mobile data, cycle scope: each session pays P(month total) - P(before); the month sums to P(total) ==='
WITH sessions(n, started_at, mb) AS (VALUES
    (1, timestamptz '2026-11-02 09:00+00',  700.5),
    (2, timestamptz '2026-11-09 21:10+00',  900),
    (3, timestamptz '2026-11-15 12:00+00', 4000),
    (4, timestamptz '2026-11-22 18:45+00', 6000)),
running AS (
    SELECT s.*, coalesce(sum(mb) OVER (ORDER BY n ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS used_before
    FROM sessions s)
SELECT n, to_char(started_at, 'DD Mon') AS day, mb, used_before AS mb_before,
       rate(d.t, mb, started_at, 'Europe/Berlin', used_before) AS charge_eur
FROM running, demo_tariff d WHERE d.code = 'data'
UNION ALL
SELECT NULL, 'month', sum(mb), NULL,
       sum(rate(d.t, mb, started_at, 'Europe/Berlin', used_before))
FROM running, demo_tariff d WHERE d.code = 'data'
ORDER BY n NULLS LAST;

\echo
\echo '=== 4. API product, volume tiers (Lago''s example: 65,000 calls at 0.0006 + 10.00 = 49.00) ==='
SELECT calls, rate(t, calls) AS charge_usd
FROM demo_tariff, unnest(ARRAY[0, 2500, 10000, 10001, 50000, 50001, 65000, 250000]) AS calls
WHERE code = 'api';

\echo
\echo '=== 5. SMS bundles and card payments ==='
SELECT 'sms' AS tariff, q AS quantity, rate(t, q) AS charge FROM demo_tariff, unnest(ARRAY[80, 100, 101, 150, 151, 201]) q WHERE code = 'sms'
UNION ALL
SELECT 'cards', q, rate(t, q) FROM demo_tariff, unnest(ARRAY[1.00, 12.50, 99.99, 1500.00]) q WHERE code = 'cards';

\echo
\echo '=== 6. Bad input is refused with an SQLSTATE and a message naming the field ==='
SET client_min_messages = notice;
DO $$
DECLARE
    bad text;
BEGIN
    FOREACH bad IN ARRAY ARRAY[
        '{"model": "graduated", "tiers": [{"up_to": 100, "price": 1}, {"up_to": 50, "price": 1}, {"up_to": null, "price": 1}]}',
        '{"price": "-0.01"}',
        '{"price": 1, "increment": {"first": 60, "next": 0}}',
        '{"price": 1, "time_bands": [{"days": ["mon"], "from": "8:00", "to": "18:00", "tariff": {"price": 2}}]}',
        '{"price": 1, "currency": "EURO"}']
    LOOP
        BEGIN
            PERFORM bad::convbill.tariff;
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE '% -> [%] %', bad, SQLSTATE, SQLERRM;
        END;
    END LOOP;
END $$;
