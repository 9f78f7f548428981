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

-------------------------------------------------------------------------------
-- Part 2: a small operator end to end.  A catalog, a few hundred accounts in
-- three currencies and time zones, a month of generated usage (fixed seed),
-- bulk rating, rejects and their repair, idempotent one-time charges and late
-- usage.  Every figure below is computed by convbill.
-------------------------------------------------------------------------------
SET client_min_messages = warning;

\echo
\echo '################################################################################'
\echo '#  Part 2: a small operator, November 2026 - catalog, usage, rating, repairs   #'
\echo '################################################################################'

\echo
\echo '=== 7. Catalog: five services, destination prefixes and their zones ==='
INSERT INTO service (code, unit, description) VALUES
    ('voice', 'second',  'mobile voice calls'),
    ('sms',   'message', 'text messages'),
    ('data',  'MB',      'mobile data'),
    ('iot',   'message', 'IoT device messages (M2M)'),
    ('api',   'call',    'SaaS platform API calls');
INSERT INTO destination (prefix, zone) VALUES
    ('49', 'national'), ('4915', 'mobile'), ('4916', 'mobile'), ('4917', 'mobile'),
    ('1', 'international'), ('33', 'international'), ('44', 'international'), ('81', 'international'),
    ('882', 'premium'), ('883', 'premium'), ('239', 'premium');   -- satellite / IRSF-prone ranges
SELECT code AS service, unit, description FROM service ORDER BY code;
SELECT zone, string_agg('+' || prefix, ' ' ORDER BY prefix) AS prefixes
FROM destination GROUP BY zone ORDER BY array_position(ARRAY['national', 'mobile', 'international', 'premium'], zone);
SELECT number, zone_of(number) AS zone
FROM unnest(ARRAY['+49 30 901820', '+49 151 5550101', '+1 212 555 0100', '+882 16 5550123', '+999 123']) AS number;

\echo
\echo '=== 8. Plans (one per currency: a plan''s currency is its subscribers'' currency) and their rates ==='
INSERT INTO plan (code, name, currency, recurring_fee, allowances) VALUES
    ('MOBILE-S',  'Mobile S',               'EUR',    9.99, '{"voice": 3600, "sms": 50, "data": 2048}'),
    ('MOBILE-L',  'Mobile L',               'EUR',   29.99, '{"voice": 18000, "sms": 1000, "data": 20480}'),
    ('DATA-10',   'Data only 10 GB',        'EUR',   14.99, '{"data": 10240}'),
    ('IOT-EU',    'IoT fleet, per SIM',     'EUR',    1.00, '{"iot": 1000}'),
    ('IOT-US',    'IoT fleet, per SIM',     'USD',    1.25, '{"iot": 1000}'),
    ('API-US',    'SaaS API platform',      'USD',   49.00, '{}'),
    ('API-JP',    'SaaS API platform',      'JPY', 5000,    '{}'),
    ('MOBILE-JP', 'Mobile Japan',           'JPY', 2980,    '{"data": 3072}');

-- Voice: 60/1 with a peak band (Mon-Fri 08-18 in the subscriber's zone) for
-- national and mobile calls, 60/60 abroad, premium numbers with a set-up fee
-- and a minimum.  Mobile L has one rate for any zone, premium excepted: the
-- most specific zone wins.  Data, IoT and API are priced on the month's
-- running total (scope cycle); the units a plan's allowance covers come first.
INSERT INTO plan_rate (plan_code, service, zone, tariff) VALUES
 ('MOBILE-S', 'voice', 'national',
  '{"price": "0.0005", "increment": {"first": 60, "next": 1}, "rounding": {"decimals": 4},
    "time_bands": [{"name": "peak", "days": ["mon","tue","wed","thu","fri"], "from": "08:00", "to": "18:00", "tariff": {"price": "0.0015"}}],
    "currency": "EUR", "unit": "second"}'),
 ('MOBILE-S', 'voice', 'mobile',
  '{"price": "0.001", "increment": {"first": 60, "next": 1}, "rounding": {"decimals": 4},
    "time_bands": [{"name": "peak", "days": ["mon","tue","wed","thu","fri"], "from": "08:00", "to": "18:00", "tariff": {"price": "0.002", "setup_fee": "0.05"}}],
    "currency": "EUR", "unit": "second"}'),
 ('MOBILE-S', 'voice', 'international',
  '{"price": "0.005", "increment": {"first": 60, "next": 60}, "rounding": {"decimals": 4}, "currency": "EUR", "unit": "second"}'),
 ('MOBILE-S', 'voice', 'premium',
  '{"price": "0.03", "increment": {"first": 60, "next": 60}, "setup_fee": "0.50", "minimum": "1.00", "rounding": {"decimals": 4}, "currency": "EUR", "unit": "second"}'),
 ('MOBILE-S', 'sms', NULL, '{"price": "0.09", "currency": "EUR", "unit": "message"}'),
 ('MOBILE-S', 'data', NULL,
  '{"model": "graduated", "increment": {"first": 1, "next": 1}, "scope": "cycle",
    "tiers": [{"up_to": 1024, "price": "0.01"}, {"up_to": 10240, "price": "0.005"}, {"up_to": null, "price": "0.002"}],
    "currency": "EUR", "unit": "MB"}'),
 ('MOBILE-L', 'voice', NULL,
  '{"price": "0.0004", "increment": {"first": 60, "next": 1}, "rounding": {"decimals": 4},
    "time_bands": [{"name": "peak", "days": ["mon","tue","wed","thu","fri"], "from": "08:00", "to": "18:00", "tariff": {"price": "0.001"}}],
    "currency": "EUR", "unit": "second"}'),
 ('MOBILE-L', 'voice', 'premium',
  '{"price": "0.03", "increment": {"first": 60, "next": 60}, "setup_fee": "0.50", "minimum": "1.00", "rounding": {"decimals": 4}, "currency": "EUR", "unit": "second"}'),
 ('MOBILE-L', 'sms', NULL, '{"price": "0.05", "currency": "EUR", "unit": "message"}'),
 ('MOBILE-L', 'data', NULL,
  '{"model": "graduated", "increment": {"first": 1, "next": 1}, "scope": "cycle",
    "tiers": [{"up_to": 10240, "price": "0.004"}, {"up_to": null, "price": "0.002"}],
    "currency": "EUR", "unit": "MB"}'),
 ('DATA-10', 'data', NULL,
  '{"model": "graduated", "increment": {"first": 1, "next": 1}, "scope": "cycle",
    "tiers": [{"up_to": 1024, "price": "0.01"}, {"up_to": 10240, "price": "0.005"}, {"up_to": null, "price": "0.002"}],
    "currency": "EUR", "unit": "MB"}'),
 ('IOT-EU', 'iot', NULL,
  '{"model": "package", "package": {"size": 10000, "price": "2.00"}, "scope": "cycle", "currency": "EUR", "unit": "message"}'),
 ('IOT-US', 'iot', NULL,
  '{"model": "package", "package": {"size": 10000, "price": "2.50"}, "scope": "cycle", "currency": "USD", "unit": "message"}'),
 ('API-US', 'api', NULL,
  '{"model": "volume", "scope": "cycle",
    "tiers": [{"up_to": 10000, "price": "0.001"}, {"up_to": 50000, "price": "0.0008", "flat": "5"}, {"up_to": null, "price": "0.0006", "flat": "10"}],
    "currency": "USD", "unit": "call"}'),
 ('API-JP', 'api', NULL,
  '{"model": "volume", "scope": "cycle", "rounding": {"decimals": 0},
    "tiers": [{"up_to": 10000, "price": "0.15"}, {"up_to": 50000, "price": "0.12", "flat": "500"}, {"up_to": null, "price": "0.09", "flat": "1000"}],
    "currency": "JPY", "unit": "call"}'),
 ('MOBILE-JP', 'voice', NULL,
  '{"model": "package", "package": {"size": 30, "price": "22"}, "currency": "JPY", "unit": "second"}'),
 ('MOBILE-JP', 'voice', 'premium',
  '{"model": "package", "package": {"size": 30, "price": "150"}, "setup_fee": "100", "currency": "JPY", "unit": "second"}'),
 ('MOBILE-JP', 'sms', NULL, '{"price": "3.3", "rounding": {"decimals": 1}, "currency": "JPY", "unit": "message"}'),
 ('MOBILE-JP', 'data', NULL,
  '{"model": "package", "package": {"size": 1024, "price": "1100"}, "scope": "cycle", "currency": "JPY", "unit": "MB"}');
-- (Data only 10 GB has no SMS rate yet: section 12 finds out.)

-- A one-line reading of a tariff, from its canonical JSON.
CREATE FUNCTION pg_temp.tariff_brief(t convbill.tariff) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT concat_ws(' ',
        CASE j->>'model'
            WHEN 'flat' THEN (j->>'price') || '/' || (j->>'unit')
            WHEN 'package' THEN (j#>>'{package,price}') || ' per started ' || (j#>>'{package,size}')
            ELSE (j->>'model') || ' ' ||
                 (SELECT string_agg(coalesce('<=' || (x->>'up_to'), 'above') || ' ' || (x->>'price')
                                    || coalesce(' +' || (x->>'flat'), ''), ', ')
                  FROM jsonb_array_elements(j->'tiers') x)
        END,
        '+' || (j->>'setup_fee') || ' set-up',
        'min ' || (j->>'minimum'),
        (SELECT string_agg(b->>'name' || ' ' || (b#>>'{tariff,price}') || coalesce(' +' || (b#>>'{tariff,setup_fee}') || ' set-up', ''), ', ')
         FROM jsonb_array_elements(j->'time_bands') b),
        CASE WHEN j ? 'increment' THEN 'incr ' || (j#>>'{increment,first}') || '/' || (j#>>'{increment,next}') END,
        CASE WHEN j->>'scope' = 'cycle' THEN 'cycle' END)
    FROM (SELECT t::jsonb AS j) s
$$;

SELECT p.code AS plan, p.currency AS cur, p.recurring_fee AS fee, p.allowances
FROM plan p ORDER BY array_position(ARRAY['MOBILE-S', 'MOBILE-L', 'DATA-10', 'IOT-EU', 'IOT-US', 'API-US', 'MOBILE-JP', 'API-JP'], p.code);
SELECT r.plan_code AS plan, r.service, coalesce(r.zone, '(any)') AS zone, pg_temp.tariff_brief(r.tariff) AS tariff
FROM plan_rate r JOIN plan p ON p.code = r.plan_code
ORDER BY array_position(ARRAY['MOBILE-S', 'MOBILE-L', 'DATA-10', 'IOT-EU', 'IOT-US', 'API-US', 'MOBILE-JP', 'API-JP'], r.plan_code), r.service,
         array_position(ARRAY['national', 'mobile', 'international', 'premium'], r.zone) NULLS FIRST;

\echo
\echo '=== 9. 300 accounts in three currencies and time zones, subscribed since 1 October (local) ==='
CREATE TEMP TABLE demo_segment (seg_no int, segment text, plan text, currency text, tz text,
                                accounts int, ref text, max_sims int);
INSERT INTO demo_segment VALUES
    (1, 'mobile', 'MOBILE-S',  'EUR', 'Europe/Berlin',    110, 'MS', 1),
    (2, 'mobile', 'MOBILE-L',  'EUR', 'Europe/Berlin',     50, 'ML', 1),
    (3, 'data',   'DATA-10',   'EUR', 'Europe/Berlin',     40, 'DA', 1),
    (4, 'iot',    'IOT-EU',    'EUR', 'Europe/Berlin',     30, 'IE', 200),
    (5, 'iot',    'IOT-US',    'USD', 'America/New_York',  20, 'IU', 200),
    (6, 'saas',   'API-US',    'USD', 'America/New_York',  25, 'AU', 1),
    (7, 'saas',   'API-JP',    'JPY', 'Asia/Tokyo',        15, 'AJ', 1),
    (8, 'mobile', 'MOBILE-JP', 'JPY', 'Asia/Tokyo',        10, 'MJ', 1);

INSERT INTO account (external_ref, name, currency, timezone)
SELECT s.ref || '-' || lpad(i::text, 3, '0'),
       CASE WHEN s.segment IN ('mobile', 'data')
            THEN (ARRAY['Anna', 'Ben', 'Clara', 'Deniz', 'Emil', 'Fatma', 'Greta', 'Hiro', 'Ines', 'Jonas'])[1 + i % 10]
                 || ' ' || (ARRAY['Becker', 'Sato', 'Wagner', 'Yilmaz', 'Novak', 'Schulz', 'Tanaka'])[1 + i % 7]
            ELSE (ARRAY['Nordlicht', 'Acme', 'Kirin', 'Blue Ridge', 'Hafen', 'Sakura', 'Pioneer'])[1 + i % 7]
                 || ' ' || (ARRAY['Logistics', 'Metering', 'Cloud', 'Robotics', 'Energy'])[1 + i % 5] || ' ' || i
       END,
       s.currency, s.tz
FROM demo_segment s, generate_series(1, s.accounts) i
ORDER BY s.seg_no, i;

-- Each account's appetite: usage intensity (exponential, mean 1) and SIMs per IoT fleet.
SELECT setseed(0.2026) \g /dev/null
CREATE TEMP TABLE demo_profile AS
SELECT a.account_id, a.external_ref, a.timezone AS tz, s.segment, s.plan,
       round((-ln(1 - random()))::numeric, 3) AS u,
       CASE WHEN s.max_sims > 1 THEN 5 + floor(random() * s.max_sims)::int ELSE 1 END AS sims,
       random() AS r_sms
FROM account a JOIN demo_segment s ON a.external_ref LIKE s.ref || '-%'
ORDER BY a.account_id;

SELECT count(subscribe(p.account_id, p.plan, timestamp '2026-10-01' AT TIME ZONE p.tz, p.sims)) AS subscriptions
FROM demo_profile p;

SELECT s.plan, a.currency AS cur, a.timezone, count(*) AS accounts, sum(sub.quantity) AS sims,
       min(a.external_ref) || ' .. ' || max(a.external_ref) AS refs
FROM account a
JOIN subscription sub USING (account_id)
JOIN demo_segment s ON s.plan = sub.plan_code
GROUP BY s.seg_no, s.plan, a.currency, a.timezone ORDER BY s.seg_no;

\echo
\echo '=== 10. A month of usage from five platforms, a re-sent file and a few bad rows ==='
-- Monthly (UTC) partitions for October to December: local November starts on
-- 31 October in Tokyo and ends on 1 December (UTC) in New York.
SELECT ensure_usage_partitions('2026-10-01', 3) AS partitions_created;

-- How much each plan's customers use: events = base + per_u * u (u = the
-- account's intensity), and a mean quantity per event.
CREATE TEMP TABLE demo_mix (plan text, service text, base int, per_u numeric, mean_qty numeric);
INSERT INTO demo_mix VALUES
    ('MOBILE-S',  'voice', 0,  8,  150),  ('MOBILE-S', 'sms', 0, 12, 1), ('MOBILE-S', 'data', 0,  6, 250),
    ('MOBILE-L',  'voice', 0, 20,  200),  ('MOBILE-L', 'sms', 0, 12, 1), ('MOBILE-L', 'data', 0, 12, 600),
    ('DATA-10',   'data',  0, 12,  800),  ('DATA-10',  'sms', 0, 0.3, 1),   -- data SIMs that text: no SMS rate
    ('IOT-EU',    'iot',  15,  0,   60),  ('IOT-US',   'iot', 15, 0, 60),   -- a report every other day, per SIM
    ('API-US',    'api',   8, 20, 1500),  ('API-JP',   'api', 8, 20, 1500),
    ('MOBILE-JP', 'voice', 0, 12,  120),  ('MOBILE-JP', 'sms', 0, 8, 1), ('MOBILE-JP', 'data', 0, 12, 300);

SELECT setseed(0.1126) \g /dev/null
CREATE TEMP TABLE demo_draw AS
SELECT p.account_id, p.tz, p.plan, p.u, p.sims, m.service, m.mean_qty, g,
       random() AS r1, random() AS r2, random() AS r3, random() AS r4, random() AS r5, random() AS r6
FROM demo_profile p
JOIN demo_mix m ON m.plan = p.plan
CROSS JOIN LATERAL generate_series(1, m.base + round(m.per_u * p.u)::int) g
ORDER BY p.account_id, m.service, g;

INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs)
SELECT d.account_id,
       CASE d.service WHEN 'voice' THEN CASE WHEN d.plan = 'MOBILE-JP' THEN 'msc-tyo1' ELSE 'msc-fra1' END
                      WHEN 'sms' THEN 'smsc-1' WHEN 'data' THEN 'pgw-1'
                      WHEN 'iot' THEN 'iot-core' ELSE 'api-gw' END,
       d.service || '-' || lpad(d.account_id::text, 4, '0') || '-' || lpad(d.g::text, 4, '0'),
       d.service,
       CASE d.service
           WHEN 'voice' THEN CASE WHEN d.r3 < 0.05 THEN 0                      -- unanswered
                                  ELSE ceil(-ln(1 - d.r1) * d.mean_qty) END
           WHEN 'sms'   THEN CASE WHEN d.r1 < 0.9 THEN 1 WHEN d.r1 < 0.98 THEN 2 ELSE 3 END
           WHEN 'data'  THEN round((-ln(1 - d.r1) * d.mean_qty)::numeric, 3)
           WHEN 'iot'   THEN round(d.sims * d.mean_qty * d.u * (0.7 + 0.6 * d.r1))
           ELSE              round(d.mean_qty * d.u * (0.5 + d.r1))
       END,
       date_trunc('second', (timestamp '2026-11-01'
           + CASE WHEN d.service = 'iot' THEN (2 * d.g - 2) * interval '1 day' + interval '2 hours' + d.r4 * interval '1 hour'
                  ELSE floor(d.r2 * 30) * interval '1 day'
                       + CASE WHEN d.service IN ('voice', 'sms') AND d.r6 < 0.65
                              THEN interval '8 hours' + d.r4 * interval '10 hours'     -- mostly office hours
                              ELSE d.r4 * interval '24 hours' END
             END) AT TIME ZONE d.tz),
       CASE WHEN d.service IN ('voice', 'sms') THEN jsonb_build_object('destination',
                CASE WHEN d.r5 >= 0.995 THEN '+882 16 '
                     WHEN d.plan = 'MOBILE-JP' THEN '+81 90 '
                     WHEN d.r5 < 0.50 THEN '+49 1' || (ARRAY['51', '52', '60', '62', '70', '76'])[1 + floor(d.r2 * 6)] || ' '
                     WHEN d.r5 < 0.82 THEN '+49 ' || (ARRAY['30', '40', '89', '221', '69'])[1 + floor(d.r2 * 5)] || ' '
                     ELSE (ARRAY['+1 212 ', '+44 20 ', '+33 1 ', '+81 3 '])[1 + floor(d.r2 * 4)]
                END || lpad(floor(d.r6 * 1e7)::text, 7, '0'))
            WHEN d.service = 'data' THEN '{"apn": "internet"}'
            WHEN d.service = 'api' THEN jsonb_build_object('endpoint', (ARRAY['/v1/orders', '/v1/search', '/v1/quotes'])[1 + floor(d.r5 * 3)])
            ELSE jsonb_build_object('sims', d.sims)
       END
FROM demo_draw d
ORDER BY d.account_id, d.service, d.g;

-- MS-007's SIM was cloned: Saturday night, long calls to a premium satellite range (IRSF).
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs)
SELECT a.account_id, 'msc-fra1', 'voice-irsf-' || g, 'voice', 1500 + 60 * g,
       (timestamp '2026-11-21 01:00' + g * interval '17 minutes') AT TIME ZONE a.timezone,
       jsonb_build_object('destination', '+882 16 55501' || lpad(g::text, 2, '0'))
FROM account a, generate_series(1, 12) g WHERE a.external_ref = 'MS-007';

-- The switch re-sent its CDR file of 17 Nov 08:00-11:00 UTC.
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs)
SELECT account_id, source, external_id, service, quantity, started_at, attrs
FROM usage_event
WHERE source = 'msc-fra1' AND started_at >= '2026-11-17 08:00+00' AND started_at < '2026-11-17 11:00+00';

-- Bad rows: a SIM unknown to the CRM, a negative duration, an MMS (no such service).
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs) VALUES
    (990001, 'msc-fra1', 'voice-990001-1', 'voice',  95, '2026-11-12 10:15+01', '{"destination": "+49 30 1234567"}'),
    (990001, 'msc-fra1', 'voice-990001-2', 'voice', 310, '2026-11-12 11:02+01', '{"destination": "+49 151 2345678"}'),
    (990001, 'smsc-1',   'sms-990001-1',   'sms',     1, '2026-11-12 11:05+01', '{"destination": "+49 151 2345678"}'),
    ((SELECT account_id FROM account WHERE external_ref = 'MS-002'), 'msc-fra1', 'voice-bad-1', 'voice', -42,
     '2026-11-14 16:20+01', '{"destination": "+49 40 7654321"}'),
    ((SELECT account_id FROM account WHERE external_ref = 'ML-003'), 'mmsc-1', 'mms-1', 'mms', 1,
     '2026-11-15 19:00+01', '{"destination": "+49 170 1112223"}'),
    ((SELECT account_id FROM account WHERE external_ref = 'ML-003'), 'mmsc-1', 'mms-2', 'mms', 1,
     '2026-11-16 08:30+01', '{"destination": "+49 170 1112223"}');

SELECT tableoid::regclass AS partition, count(*) AS events,
       min(started_at) AS first_utc, max(started_at) AS last_utc
FROM usage_event GROUP BY 1 ORDER BY 1;
SELECT e.source, e.service, coalesce(s.unit, '?') AS unit, count(*) AS events,
       count(DISTINCT e.account_id) AS accounts, sum(e.quantity) AS quantity
FROM usage_event e LEFT JOIN service s ON s.code = e.service
GROUP BY 1, 2, 3 ORDER BY 2, 1;

\echo
\echo '=== 11. Bulk rating: SELECT rate_pending(2000) until it returns 0 ==='
CREATE TEMP TABLE demo_batch (call_no int, processed int);
DO $$
DECLARE
    n integer;
    k integer := 0;
BEGIN
    LOOP
        n := convbill.rate_pending(2000);
        k := k + 1;
        INSERT INTO demo_batch VALUES (k, n);
        EXIT WHEN n = 0;
    END LOOP;
END $$;
SELECT call_no, processed FROM demo_batch ORDER BY call_no;

\echo
\echo '=== 12. Every event is accounted for: status and reject reason ==='
SELECT status, coalesce(reject_reason, '') AS reject_reason, count(*) AS events,
       string_agg(DISTINCT service, ', ') AS services, count(DISTINCT account_id) AS accounts
FROM usage_event GROUP BY 1, 2 ORDER BY 1 DESC, 2;
SELECT coalesce(a.external_ref, '(' || e.account_id || ')') AS account, e.source, e.external_id, e.service,
       e.quantity, e.reject_reason
FROM usage_event e LEFT JOIN account a USING (account_id)
WHERE e.status = 'rejected' AND e.reject_reason <> 'no_tariff'
ORDER BY e.reject_reason, e.external_id;
SELECT (SELECT count(*) FROM usage_event WHERE status = 'rated') AS rated_events,
       (SELECT count(*) FROM charge WHERE kind = 'usage') AS usage_charges,
       (SELECT count(*) FROM usage_event e WHERE status = 'rated'
           AND NOT EXISTS (SELECT 1 FROM charge c WHERE c.account_id = e.account_id AND c.charge_id = e.charge_id)) AS rated_without_charge;

\echo
\echo '=== 13. The largest usage bill of each plan, per service (covered = units paid by the allowance) ==='
WITH per_account AS (
    SELECT c.account_id, sum(c.amount) AS amount
    FROM charge c WHERE c.kind = 'usage' GROUP BY 1),
top AS (
    SELECT DISTINCT ON (s.plan_code) s.plan_code, pa.account_id
    FROM per_account pa JOIN subscription s USING (account_id)
    ORDER BY s.plan_code, pa.amount DESC, pa.account_id)
SELECT a.external_ref AS account, t.plan_code AS plan, c.service,
       count(*) AS events, sum(c.billed_quantity) AS billed, sum(c.covered_quantity) AS covered,
       sum(c.amount) AS amount, c.currency AS cur
FROM top t
JOIN account a USING (account_id)
JOIN charge c ON c.account_id = t.account_id AND c.kind = 'usage'
GROUP BY a.external_ref, t.plan_code, c.service, c.currency
ORDER BY array_position(ARRAY['MOBILE-S', 'MOBILE-L', 'DATA-10', 'IOT-EU', 'IOT-US', 'API-US', 'MOBILE-JP', 'API-JP'], t.plan_code),
         c.service;

\echo
\echo '=== 14. Voice on the Berlin plans by zone: the premium (IRSF) range is where the money goes ==='
SELECT c.currency AS cur, coalesce(c.zone, '') AS zone, count(*) AS calls,
       round(sum(c.billed_quantity) / 60, 1) AS billed_min, round(sum(c.covered_quantity) / 60, 1) AS covered_min,
       sum(c.amount) AS amount, count(DISTINCT c.account_id) AS accounts
FROM charge c WHERE c.kind = 'usage' AND c.service = 'voice' AND c.currency = 'EUR'
GROUP BY c.currency, c.zone
ORDER BY array_position(ARRAY['national', 'mobile', 'international', 'premium'], c.zone);
SELECT a.external_ref AS account, count(*) AS premium_calls, round(sum(c.billed_quantity) / 60, 1) AS billed_min,
       round(sum(c.covered_quantity) / 60, 1) AS covered_min, sum(c.amount) AS amount, c.currency AS cur
FROM charge c JOIN account a USING (account_id)
WHERE c.service = 'voice' AND c.zone = 'premium'
GROUP BY a.external_ref, c.currency ORDER BY sum(c.amount) DESC, a.external_ref LIMIT 4;

\echo
\echo '=== 15. Usage revenue per currency and service (rounded to cents or yen only on the invoice) ==='
SELECT coalesce(c.currency, 'all') AS cur, coalesce(c.service, '(total)') AS service,
       count(*) AS charges, count(DISTINCT c.account_id) AS accounts,
       CASE WHEN c.service IS NOT NULL THEN sum(c.billed_quantity) END AS billed,
       CASE WHEN c.service IS NOT NULL THEN sum(c.covered_quantity) END AS covered,
       sum(c.amount) AS amount
FROM charge c WHERE c.kind = 'usage'
GROUP BY GROUPING SETS ((c.currency, c.service), (c.currency))
ORDER BY array_position(ARRAY['EUR', 'USD', 'JPY'], c.currency), c.service NULLS LAST;

\echo
\echo '=== 16. Cycle scope: a month of API charges sums to the price of the month''s total, P(total) ==='
\echo '    (volume tiers: crossing 50,000 calls re-prices every call, so that event''s charge is negative)'
SELECT a.external_ref AS account, c.currency AS cur, count(*) AS events, sum(c.billed_quantity) AS calls,
       sum(c.amount) AS sum_of_charges, rate(r.tariff, sum(c.billed_quantity)) AS p_total,
       min(c.amount) AS lowest_charge
FROM charge c JOIN account a USING (account_id) JOIN plan_rate r USING (rate_id)
WHERE c.service = 'api'
GROUP BY a.external_ref, c.currency, r.tariff
HAVING sum(c.billed_quantity) > 50000 OR a.external_ref IN ('AU-001', 'AJ-001')
ORDER BY a.external_ref
LIMIT 8;
SELECT count(*) AS api_accounts,
       count(*) FILTER (WHERE s = p) AS sum_equals_p_total,
       sum(negatives) AS negative_charges
FROM (SELECT sum(c.amount) AS s, rate(r.tariff, sum(c.billed_quantity)) AS p,
             count(*) FILTER (WHERE c.amount < 0) AS negatives
      FROM charge c JOIN plan_rate r USING (rate_id) WHERE c.service = 'api'
      GROUP BY c.account_id, r.tariff) x;

\echo
\echo '=== 17. Repair a reject reason: Data only 10 GB gets an SMS rate, then rerate(''no_tariff'') ==='
CREATE TEMP TABLE demo_fixed AS
SELECT account_id, source, external_id FROM usage_event WHERE reject_reason = 'no_tariff';
SELECT s.plan_code AS plan, e.service, e.reject_reason, count(*) AS events, count(DISTINCT e.account_id) AS accounts
FROM usage_event e JOIN demo_fixed f USING (account_id, source, external_id)
JOIN subscription s USING (account_id)
GROUP BY 1, 2, 3;
INSERT INTO plan_rate (plan_code, service, zone, tariff)
VALUES ('DATA-10', 'sms', NULL, '{"price": "0.19", "currency": "EUR", "unit": "message"}');
SELECT rerate('no_tariff') AS requeued;
SELECT e.status, coalesce(e.reject_reason, '') AS reject_reason, count(*) AS events,
       sum(c.billed_quantity) AS messages, sum(c.amount) AS amount, min(c.currency) AS cur
FROM usage_event e JOIN demo_fixed f USING (account_id, source, external_id)
LEFT JOIN charge c ON c.account_id = e.account_id AND c.charge_id = e.charge_id
GROUP BY 1, 2;
SELECT status, coalesce(reject_reason, '') AS reject_reason, count(*) AS events
FROM usage_event GROUP BY 1, 2 ORDER BY 1 DESC, 2;

\echo
\echo '=== 18. The switch re-sends the same CDR file once more, after rating: nothing is charged twice ==='
SELECT count(*) AS charges_before FROM charge \gset
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs)
SELECT DISTINCT ON (account_id, external_id) account_id, source, external_id, service, quantity, started_at, attrs
FROM usage_event
WHERE source = 'msc-fra1' AND started_at >= '2026-11-17 08:00+00' AND started_at < '2026-11-17 11:00+00'
ORDER BY account_id, external_id;
SELECT rate_pending() AS processed;
SELECT count(DISTINCT (e.account_id, e.external_id)) AS cdrs_in_file, count(*) AS copies_received,
       count(*) FILTER (WHERE e.status = 'rated') AS rated,
       count(*) FILTER (WHERE e.status = 'duplicate') AS duplicate,
       (SELECT count(*) FROM charge) - :charges_before AS new_charges
FROM usage_event e
WHERE e.source = 'msc-fra1' AND e.started_at >= '2026-11-17 08:00+00' AND e.started_at < '2026-11-17 11:00+00';

\echo
\echo '=== 19. A one-time charge with an idempotency key, sent twice (the client retried) ==='
SELECT add_charge(account_id, 25.00, 'One-time setup fee', at => '2026-11-20 10:00+01', reference => 'setup-fee-123') AS first_call
FROM account WHERE external_ref = 'ML-010' \gset
SELECT add_charge(account_id, 25.00, 'One-time setup fee', at => '2026-11-20 10:00+01', reference => 'setup-fee-123') AS second_call
FROM account WHERE external_ref = 'ML-010' \gset
SELECT :first_call AS first_call, :second_call AS second_call,
       (SELECT count(*) FROM charge WHERE reference = 'setup-fee-123') AS charges_with_reference;
SELECT c.charge_id, a.external_ref AS account, c.kind, c.amount, c.currency AS cur, c.description,
       to_char(c.period_start AT TIME ZONE a.timezone, 'YYYY-MM-DD') AS period
FROM charge c JOIN account a USING (account_id)
WHERE c.reference = 'setup-fee-123';

\echo
\echo '=== 20. Late usage: AU-007''s November is closed, then a November event arrives ==='
\echo '    (periods are local: New York midnight is 04:00 UTC on 1 Nov (EDT) and 05:00 UTC on 1 Dec (EST))'
SELECT account_id AS late_account FROM account WHERE external_ref = 'AU-007' \gset
SELECT to_char(lower(p) AT TIME ZONE 'America/New_York', 'YYYY-MM-DD HH24:MI') AS closed_from_local,
       to_char(upper(p) AT TIME ZONE 'America/New_York', 'YYYY-MM-DD HH24:MI') AS closed_until_local,
       lower(p) AS from_utc, upper(p) AS until_utc
FROM close_period(:late_account, '2026-11-15 12:00-05') AS p;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs)
VALUES (:late_account, 'api-gw', 'api-late-0001', 'api', 1200, '2026-11-28 14:00-05', '{"endpoint": "/v1/orders"}');
SELECT rate_pending() AS processed;
SELECT to_char(c.occurred_at AT TIME ZONE a.timezone, 'Dy DD Mon HH24:MI') AS occurred_local,
       c.billed_quantity AS calls, c.amount, c.currency AS cur,
       to_char(c.period_start AT TIME ZONE a.timezone, 'YYYY-MM-DD') AS billed_in_period
FROM charge c JOIN account a USING (account_id)
WHERE c.account_id = :late_account AND c.external_id = 'api-late-0001';
SELECT to_char(c.period_start AT TIME ZONE a.timezone, 'YYYY-MM-DD') AS period, count(*) AS charges,
       sum(c.billed_quantity) AS calls, sum(c.amount) AS amount, c.currency AS cur
FROM charge c JOIN account a USING (account_id)
WHERE c.account_id = :late_account
GROUP BY c.period_start, a.timezone, c.currency ORDER BY c.period_start;

\echo
\echo '################################################################################'
\echo '#  Part 3: online charging - authorise, extend, cut off and commit a call      #'
\echo '################################################################################'

\echo
\echo '=== 21. A prepaid customer: 1.00 EUR topped up (the shop retried: once), 120 s welcome bonus ==='
INSERT INTO plan (code, name, currency, recurring_fee, allowances) VALUES ('PREPAID', 'Prepaid Europe', 'EUR', 0, '{}');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES
 ('PREPAID', 'voice', '{"price": "0.002", "increment": {"first": 60, "next": 60}, "currency": "EUR", "unit": "second"}'),
 ('PREPAID', 'sms',   '{"price": "0.09", "currency": "EUR", "unit": "message"}');
INSERT INTO account (external_ref, name, currency, timezone, credit_limit, low_balance_threshold)
VALUES ('PP-001', 'Lena Prepaid', 'EUR', 'Europe/Berlin', 0, 0.50),
       ('PO-001', 'Hafen Logistics (postpaid)', 'EUR', 'Europe/Berlin', 5.00, NULL);
SELECT account_id AS pp FROM account WHERE external_ref = 'PP-001' \gset
SELECT account_id AS po FROM account WHERE external_ref = 'PO-001' \gset
SELECT subscribe(:pp, 'PREPAID') IS NOT NULL AS subscribed, subscribe(:po, 'PREPAID') IS NOT NULL AS subscribed_postpaid;
SELECT top_up(:pp, 1.00, 'shop-4711') AS first_call, top_up(:pp, 1.00, 'shop-4711') AS retried_call;
SELECT grant_allowance(:pp, 'voice', 120, now(), now() + interval '30 days', 0, 'welcome-bonus') IS NOT NULL AS bonus_granted;
SELECT * FROM balance(:pp);

\echo
\echo '=== 22. The call: 0.002 EUR/s in 60 s steps; the switch asks for 300 s at a time ==='
\echo '    (LISTEN convbill_balance: the notification below is the low-balance alert at 0.50 EUR)'
LISTEN convbill_balance;
CREATE TEMP TABLE demo_call (step text, result text, reason text, granted numeric, held numeric, charged numeric,
                             balance numeric, available numeric);
-- each answer next to the balance right after it
CREATE FUNCTION pg_temp.step(label text, g convbill.grant, acct bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO demo_call SELECT label, g.result, g.reason, g.granted, g.held, g.charged, b.balance, b.available
    FROM convbill.balance(acct) b WHERE b.unit = 'EUR';
END $$;
SELECT pg_temp.step('reserve 300 s', reserve(:pp, 'voice', 'call-0001', 300, '{"destination": "+49 30 1234567"}'), :pp) \g /dev/null
SELECT pg_temp.step('used 300, 300 more', reserve_update('call-0001', 1, 300, 300), :pp) \g /dev/null
SELECT pg_temp.step('used 300, 300 more', reserve_update('call-0001', 2, 300, 300), :pp) \g /dev/null
SELECT pg_temp.step('the same request again', reserve_update('call-0001', 2, 300, 300), :pp) \g /dev/null
SELECT pg_temp.step('cut off: commit 15 s', commit('call-0001', 3, 15), :pp) \g /dev/null
SELECT pg_temp.step('a late update', reserve_update('call-0001', 4, 10, 300), :pp) \g /dev/null
SELECT * FROM demo_call;
\echo '    The session is one rated charge (615 s billed as 660 s: 120 s from the bonus, 540 s at 0.002):'
SELECT c.kind, c.service, c.quantity, c.billed_quantity, c.covered_quantity, c.amount, c.currency AS cur,
       c.source, c.external_id, c.description
FROM charge c WHERE c.account_id = :pp;
SELECT r.status, r.granted, r.used, r.overuse, r.charged FROM reservation r WHERE r.session_id = 'call-0001';
\echo '    Its ledger: every hold, debit and release; sum(amount) per bucket = the bucket balance'
SELECT l.entry_id, l.kind, l.unit, l.amount, l.held, l.session_id
FROM ledger l WHERE l.account_id = :pp ORDER BY l.entry_id;
SELECT b.kind, b.unit, b.origin, b.balance,
       (SELECT sum(l.amount) FROM ledger l WHERE l.account_id = b.account_id AND l.bucket_id = b.bucket_id) AS ledger_sum
FROM bucket b WHERE b.account_id = :pp ORDER BY b.bucket_id;

\echo
\echo '=== 23. A postpaid business on a 5.00 EUR credit limit: 60 SMS in one charge_events call ==='
SELECT result, reason, count(*) AS events, sum(charged) AS charged
FROM charge_events(ARRAY(SELECT ROW(:po, 'sms', 'sms-batch-' || g, 1, '{}')::event_request
                         FROM generate_series(1, 60) g))
GROUP BY result, reason ORDER BY result;
\echo '    The mediation platform retries the whole batch: the same answers, nothing charged twice'
SELECT result, reason, count(*) AS events, sum(charged) AS charged
FROM charge_events(ARRAY(SELECT ROW(:po, 'sms', 'sms-batch-' || g, 1, '{}')::event_request
                         FROM generate_series(1, 60) g))
GROUP BY result, reason ORDER BY result;
SELECT * FROM balance(:po);
SELECT count(*) AS charges, sum(amount) AS charged FROM charge WHERE account_id = :po;

\echo
\echo '################################################################################'
\echo '#  Part 4: the bill run - one convergent invoice per customer                  #'
\echo '################################################################################'

\echo
\echo '=== 24. Taxes, and a corporate customer: Nordlicht Logistik GmbH (Hamburg) ==='
\echo '    two staff phones and a tablet SIM billed to the company, an IoT fleet and the API;'
\echo '    10% off the fleet for three months; 250.00 EUR paid in advance'
INSERT INTO seller (name, address, tax_id, email, payment_details) VALUES
    ('Nordwind Telecom GmbH', E'Am Sandtorkai 1\n20457 Hamburg\nGermany', 'DE123456789', 'billing@nordwind.example',
     'IBAN DE02 1001 0010 0123 4567 89 - BIC PBNKDEFF');
INSERT INTO tax_rate (code, rate, valid_from) VALUES
    ('DE-VAT', 19, '-infinity'), ('US-NY', 8.875, '-infinity'), ('JP-CT', 10, '-infinity');
UPDATE account SET tax_code = CASE currency WHEN 'EUR' THEN 'DE-VAT' WHEN 'USD' THEN 'US-NY' ELSE 'JP-CT' END;
INSERT INTO plan (code, name, currency, recurring_fee, allowances) VALUES ('API-EU', 'SaaS API platform', 'EUR', 39.00, '{}');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES
 ('API-EU', 'api', '{"model": "volume", "scope": "cycle",
    "tiers": [{"up_to": 10000, "price": "0.001"}, {"up_to": 50000, "price": "0.0008", "flat": "5"}, {"up_to": null, "price": "0.0006", "flat": "10"}],
    "currency": "EUR", "unit": "call"}');
INSERT INTO account (external_ref, name, currency, timezone, tax_code)
VALUES ('NL-001', 'Nordlicht Logistik GmbH', 'EUR', 'Europe/Berlin', 'DE-VAT');
SELECT account_id AS nl FROM account WHERE external_ref = 'NL-001' \gset
INSERT INTO account (external_ref, name, currency, timezone, tax_code, parent_id, bill_to_parent) VALUES
    ('NL-001-P1', 'Jana Peters (phone)', 'EUR', 'Europe/Berlin', 'DE-VAT', :nl, true),
    ('NL-001-P2', 'Tom Brandt (phone)',  'EUR', 'Europe/Berlin', 'DE-VAT', :nl, true),
    ('NL-001-T1', 'Tablet data SIM',     'EUR', 'Europe/Berlin', 'DE-VAT', :nl, true);
SELECT count(subscribe(a.account_id, x.plan, timestamp '2026-11-01' AT TIME ZONE 'Europe/Berlin', x.qty)) AS subscriptions
FROM (VALUES ('NL-001', 'IOT-EU', 40), ('NL-001', 'API-EU', 1), ('NL-001-P1', 'MOBILE-L', 1),
             ('NL-001-P2', 'MOBILE-S', 1), ('NL-001-T1', 'DATA-10', 1)) x(ref, plan, qty)
JOIN account a ON a.external_ref = x.ref;
INSERT INTO discount (account_id, plan_code, percent, valid_from, max_periods)
VALUES (:nl, 'IOT-EU', 10, '2026-11-01 00:00 Europe/Berlin', 3);
SELECT top_up(:nl, 250.00, 'wire-2026-11-03') IS NOT NULL AS prepaid;

-- Their November: calls and texts from the phones, data from the tablet,
-- reports from 40 trackers, API calls.
SELECT setseed(0.3) \g /dev/null
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs)
SELECT a.account_id, x.source, x.service || '-' || a.external_ref || '-' || g, x.service,
       CASE x.service WHEN 'voice' THEN ceil(30 + random() * 400) WHEN 'sms' THEN 1
                      WHEN 'data' THEN round((50 + random() * 900)::numeric, 3)
                      WHEN 'iot' THEN 40 * 60 WHEN 'api' THEN round(800 + random() * 1200) END,
       (timestamp '2026-11-01 07:00' + (g % 29) * interval '1 day' + random() * interval '12 hours') AT TIME ZONE 'Europe/Berlin',
       CASE WHEN x.service IN ('voice', 'sms')
            THEN jsonb_build_object('destination', (ARRAY['+49 40 ', '+49 151 ', '+44 20 '])[1 + g % 3] || lpad(g::text, 7, '0'))
            ELSE '{}' END
FROM (VALUES ('NL-001-P1', 'voice', 'msc-fra1', 90), ('NL-001-P1', 'sms', 'smsc-1', 40),
             ('NL-001-P2', 'voice', 'msc-fra1', 50), ('NL-001-P2', 'sms', 'smsc-1', 25), ('NL-001-P2', 'data', 'pgw-1', 30),
             ('NL-001-T1', 'data', 'pgw-1', 60), ('NL-001', 'iot', 'iot-core', 15), ('NL-001', 'api', 'api-gw', 28)) x(ref, service, source, n)
JOIN account a ON a.external_ref = x.ref
CROSS JOIN LATERAL generate_series(1, x.n) g;
SELECT sum(n) AS events_rated FROM (SELECT rate_pending() AS n FROM generate_series(1, 3)) r;

\echo
\echo '=== 25. The bill run at local midnight, 1 December: every ended period of every customer ==='
\echo '    (October''s fees included - the demo customers subscribed on 1 October; a re-run creates nothing)'
SET convbill.finalize_invoices = on;
SELECT run_billing('2026-12-01 00:00 Europe/Berlin') AS invoices_berlin;
\echo '    New York, as the hourly bill job runs it: committed batches (here of 10 accounts), so an account'
\echo '    is locked only while its batch is billed'
CALL run_billing_batches('2026-12-01 00:00 America/New_York', 10) \gset ny_
SELECT :ny_invoices AS invoices_new_york, :ny_batches AS batches;
SELECT run_billing('2026-12-01 00:00 America/New_York') AS invoices_rerun;
SELECT to_char(i.period_start AT TIME ZONE a.timezone, 'YYYY-MM') AS period, i.currency AS cur, count(*) AS invoices,
       sum(i.subtotal) AS subtotal, sum(i.discount) AS discount, sum(i.tax) AS tax, sum(i.total) AS total,
       sum(i.prepaid_applied) AS prepaid, sum(i.amount_due) AS due
FROM invoice i JOIN account a USING (account_id)
GROUP BY 1, 2 ORDER BY 1, 2;
\echo '    Nothing billed twice, nothing left out: every charge of an ended period is on exactly one invoice'
SELECT count(*) FILTER (WHERE c.invoice_id IS NOT NULL) AS billed_charges,
       count(*) FILTER (WHERE c.invoice_id IS NULL AND c.period_end <= '2026-12-01 00:00 America/New_York') AS ended_but_unbilled,
       count(*) FILTER (WHERE c.invoice_id IS NULL AND c.period_end > '2026-12-01 00:00 America/New_York') AS open_periods
FROM charge c;
SELECT count(*) AS invoices, count(*) FILTER (WHERE i.total = (SELECT sum(l.amount) FROM invoice_line l
                                                              WHERE l.account_id = i.account_id AND l.invoice_id = i.invoice_id)) AS total_equals_lines
FROM invoice i;

\echo
\echo '=== 26. Nordlicht''s November invoice: one bill for every service and every SIM ==='
SELECT invoice_id AS nl_invoice FROM invoice WHERE account_id = :nl AND kind = 'invoice' \gset
SELECT i.number, to_char(i.period_start AT TIME ZONE 'Europe/Berlin', 'DD Mon YYYY') || ' - '
       || to_char(i.period_end AT TIME ZONE 'Europe/Berlin' - interval '1 day', 'DD Mon YYYY') AS period,
       i.subtotal, i.discount, i.tax, i.total, i.prepaid_applied, i.amount_due, i.currency AS cur
FROM invoice i WHERE i.invoice_id = :nl_invoice;
SELECT l.line_no AS "#", sa.name AS section, l.kind, l.description, l.quantity, l.amount
FROM invoice_line l JOIN account sa ON sa.account_id = l.source_account_id
WHERE l.invoice_id = :nl_invoice ORDER BY l.line_no;
\echo '    The HTML invoice (self-contained, printable): demo/invoice-demo.html'
\pset tuples_only on
\pset format unaligned
\o demo/invoice-demo.html
SELECT invoice_html(:nl_invoice);
\o
\pset format aligned
\pset tuples_only off
SELECT length(invoice_html(:nl_invoice)) AS html_bytes,
       position(i.number IN invoice_html(:nl_invoice)) > 0 AS has_number
FROM invoice i WHERE i.invoice_id = :nl_invoice;

\echo
\echo '################################################################################'
\echo '#  Part 5: what analysts and revenue assurance see                              #'
\echo '################################################################################'

\echo
\echo '=== 27. Revenue by month, currency and kind (days and months in the session''s time zone) ==='
SET TimeZone = 'Europe/Berlin';
SELECT to_char(month, 'YYYY-MM') AS month, currency AS cur, kind, sum(amount) AS amount
FROM revenue_monthly GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
\echo '    November, day by day: the busiest days for EUR usage'
SELECT day, sum(amount) AS usage_eur, sum(charges) AS charges
FROM revenue_daily WHERE currency = 'EUR' AND kind = 'usage' AND day >= '2026-11-01' AND day < '2026-12-01'
GROUP BY day ORDER BY usage_eur DESC LIMIT 5;

\echo
\echo '=== 28. MRR and ARPU ==='
SELECT to_char(month, 'YYYY-MM') AS month, currency AS cur, mrr, subscriptions, new_subscriptions AS new,
       churned_subscriptions AS churned
FROM mrr WHERE month >= '2026-10-01' AND month < '2026-12-01' ORDER BY 1, 2;
SELECT to_char(month, 'YYYY-MM') AS month, currency AS cur, active_accounts, revenue, arpu
FROM arpu WHERE month >= '2026-10-01' AND month < '2026-12-01' ORDER BY 1, 2;
\echo '    The views reconcile with the charges and the invoices they come from:'
SELECT r.currency AS cur, r.revenue, c.charged, coalesce(i.invoiced, 0) AS invoiced, coalesce(u.unbilled, 0) AS unbilled,
       r.revenue = c.charged AND r.revenue = coalesce(i.invoiced, 0) + coalesce(u.unbilled, 0) AS reconciles
FROM (SELECT currency, sum(amount) AS revenue FROM revenue_monthly GROUP BY 1) r
JOIN (SELECT currency, sum(amount) AS charged FROM charge GROUP BY 1) c USING (currency)
LEFT JOIN (SELECT currency, sum(charged) AS invoiced FROM invoice WHERE kind = 'invoice' GROUP BY 1) i USING (currency)
LEFT JOIN (SELECT currency, sum(amount) AS unbilled FROM unbilled GROUP BY 1) u USING (currency)
ORDER BY 1;
RESET TimeZone;

\echo
\echo '=== 29. Revenue assurance: the leakage checks ==='
SELECT check_name, items, amount, currency AS cur FROM leakage ORDER BY check_name, currency;

\echo
\echo '=== 30. Fraud: MS-007''s cloned SIM (section 10) called premium satellite ranges all Saturday night ==='
\echo '    (premium is marked high-risk; detect_anomalies is what the anomaly job runs every 5 minutes)'
INSERT INTO risk_zone (zone, reason) VALUES ('premium', 'premium-rate and satellite ranges (IRSF)');
LISTEN convbill_alert;
SELECT detect_anomalies('2026-11-21 06:00 Europe/Berlin') AS new_alerts;
SELECT detect_anomalies('2026-11-21 06:05 Europe/Berlin') AS next_run_same_incident;
UNLISTEN convbill_alert;
SELECT a.external_ref AS account, u.service, u.kind, u.observed, u.expected, round(u.score, 1) AS score,
       to_char(u.window_start AT TIME ZONE a.timezone, 'Dy DD Mon HH24:MI') AS from_local,
       to_char(u.window_end AT TIME ZONE a.timezone, 'HH24:MI') AS until, u.detail
FROM usage_alert u JOIN account a USING (account_id) ORDER BY u.alert_id;

\echo
\echo '=== 31. Migration: a legacy BSS batch COPYed into the all-text staging tables and loaded ==='
SET TimeZone = 'Europe/Berlin';          -- the legacy extract's timestamps are Berlin local time
SET convbill_migration.batch = 'bss-2026-11';
COPY stage_account (external_ref, name, currency, timezone, parent_ref, bill_to_parent, credit_limit) FROM stdin WITH (FORMAT csv);
LEG-200-SIM,Hafen Logistik SIM 1,EUR,Europe/Berlin,LEG-200,yes,
LEG-200,Hafen Logistik GmbH,EUR,Europe/Berlin,,,250.00
LEG-201,Greta Novak,EUR,Europe/Berlin,,,
LEG-202,Old Typo Ltd,EURO,Europe/Berlin,,,
\.
COPY stage_subscription (account_ref, plan_code, started_at, quantity) FROM stdin WITH (FORMAT csv);
LEG-200,MOBILE-L,2026-11-01,2
LEG-201,MOBILE-S,2026-11-01,
LEG-202,MOBILE-S,2026-11-01,
\.
COPY stage_balance (account_ref, amount, currency, reference) FROM stdin WITH (FORMAT csv);
LEG-201,15.00,EUR,BSS-PP-88231
LEG-202,20.00,EUR,BSS-PP-88232
LEG-200-SIM,"12,00",EUR,BSS-PP-88233
\.
COPY stage_charge (account_ref, amount, currency, description, kind, occurred_at, reference) FROM stdin WITH (FORMAT csv);
LEG-200,89.00,EUR,Router (legacy order 4411),one_time,2026-11-24 10:00,BSS-CH-4411
LEG-200-SIM,-5.00,EUR,Goodwill credit,adjustment,2026-11-25 09:00,BSS-CH-4412
\.
RESET convbill_migration.batch;
\echo '    A dry run first: the reconciliation it would give, and nothing loaded'
SELECT entity, currency AS cur, received, loaded, rejected FROM load_staged('bss-2026-11', dry_run => true);
SELECT count(*) AS legacy_accounts_after_dry_run FROM account WHERE external_ref LIKE 'LEG-%';
\echo '    The load: received = loaded + rejected, amount_in = amount_loaded + amount_rejected'
SELECT * FROM load_staged('bss-2026-11');
\echo '    Every reject keeps its reason (the child after its parent, whatever the file order)'
SELECT 'account' AS entity, line, external_ref AS ref, reject_reason FROM stage_account WHERE batch = 'bss-2026-11' AND load_status = 'rejected'
UNION ALL SELECT 'subscription', line, account_ref, reject_reason FROM stage_subscription WHERE batch = 'bss-2026-11' AND load_status = 'rejected'
UNION ALL SELECT 'balance', line, account_ref, reject_reason FROM stage_balance WHERE batch = 'bss-2026-11' AND load_status = 'rejected' ORDER BY 1, 2;
\echo '    Hafen pays for its SIM: 89.00 - 5.00 charged; Greta carries 15.00 over. A re-run loads nothing twice:'
SELECT a.external_ref, b.unit AS cur, b.balance, b.available FROM account a, balance(a.account_id) b
WHERE a.external_ref IN ('LEG-200', 'LEG-201') ORDER BY 1;
SELECT sum(loaded_now) AS loaded_by_rerun FROM load_staged('bss-2026-11');
RESET TimeZone;

\echo
\echo '=== 32. Roles: Nordlicht''s self-service login sees its own invoices and statement, nobody else''s ==='
\echo '    (convbill_admin, convbill_app, convbill_analyst and convbill_customer come with the extension)'
CREATE ROLE demo_portal_nordlicht LOGIN IN ROLE convbill_customer;
INSERT INTO customer_login (account_id, role_name)
SELECT account_id, 'demo_portal_nordlicht' FROM account WHERE external_ref = 'NL-001';
SELECT count(*) AS invoices_in_database, count(DISTINCT account_id) AS accounts_invoiced FROM invoice;
SET ROLE demo_portal_nordlicht;
SELECT count(*) AS invoices_it_sees, count(DISTINCT account_id) AS accounts FROM invoice;
SELECT kind, document, debit, credit, balance FROM account_statement ORDER BY at, kind;
SELECT count(*) AS charges_it_sees, count(DISTINCT account_id) AS its_accounts_and_sims FROM charge;
RESET ROLE;
DELETE FROM customer_login WHERE role_name = 'demo_portal_nordlicht';
DROP ROLE demo_portal_nordlicht;
