-- tariff_cycle: "scope": "cycle" tariffs priced on the account's running total
-- for the billing period (SPEC §1 scope and rate()):
--   rate(t, q, at, tz, used_before) = P(used_before + bq) - P(used_before) + setup_fee
-- where P(x) is the rounded price of a period total of x billed units, clamped
-- to [minimum, maximum] (a minimum commitment).  The charges of a period sum to
-- P(total) whatever order the events arrive in.
SET search_path = convbill, public;
SET TimeZone = 'UTC';

CREATE TEMP TABLE cyc (name text PRIMARY KEY, t tariff);
INSERT INTO cyc VALUES
  -- P(x) = x for x <= 100; 100 + 0.5 (x - 100) up to 200; 150 + 0.25 (x - 200) beyond
  ('graduated', '{"scope": "cycle", "model": "graduated",
                  "tiers": [{"up_to": 100, "price": 1}, {"up_to": 200, "price": "0.5"}, {"up_to": null, "price": "0.25"}]}'),
  -- P(x) = x for x <= 100; 0.5 x beyond
  ('volume',    '{"scope": "cycle", "model": "volume",
                  "tiers": [{"up_to": 100, "price": 1}, {"up_to": null, "price": "0.5"}]}'),
  -- P(x) = min(max(x, 10), 50) for x > 0
  ('commit',    '{"scope": "cycle", "price": 1, "minimum": 10, "maximum": 50}'),
  -- the same with a setup fee of 0.50 per event (outside the period bounds)
  ('commit_fee', '{"scope": "cycle", "price": 1, "minimum": 10, "maximum": 50, "setup_fee": "0.50"}'),
  -- P(x) = 0.004 x rounded to 2 decimals (half_up)
  ('cents',     '{"scope": "cycle", "price": "0.004", "rounding": {"decimals": 2}}'),
  -- graduated with tier flat fees: P(x) = x + 5 for x <= 10; 10 + 5 + 0.5 (x - 10) + 3 beyond
  ('tier_flat', '{"scope": "cycle", "model": "graduated",
                  "tiers": [{"up_to": 10, "price": 1, "flat": 5}, {"up_to": null, "price": "0.5", "flat": 3}]}'),
  -- 60/60 increments: used_before counts billed units
  ('minutes',   '{"scope": "cycle", "model": "graduated", "increment": {"first": 60, "next": 60},
                  "tiers": [{"up_to": 600, "price": "0.01"}, {"up_to": null, "price": "0.005"}]}'),
  -- package per period: P(x) = 5 x ceil(x / 100)
  ('package',   '{"scope": "cycle", "model": "package", "package": {"size": 100, "price": 5}}'),
  -- percentage per period: P(x) = 0.02 x + 1 (the fixed part once per period)
  ('percent',   '{"scope": "cycle", "model": "percentage", "percentage": {"rate": 2, "fixed": 1}}');

SELECT name, tariff_scope(t) FROM cyc ORDER BY name COLLATE "C";

-------------------------------------------------------------------------------
-- 1. Single events: P(used_before + bq) - P(used_before) (+ setup fee).
-------------------------------------------------------------------------------
SELECT name, used_before, q, rate(t, q, '2026-01-05 12:00+00', 'UTC', used_before) AS rate, expect,
       rate(t, q, '2026-01-05 12:00+00', 'UTC', used_before) = expect AS ok
  FROM cyc JOIN (VALUES
    ('graduated', 0::numeric, 80::numeric, 80::numeric),  -- P(80) - P(0) = 80
    ('graduated', 80,  50,  35),      -- tier crossing: P(130) - P(80) = 115 - 80
    ('graduated', 130, 100, 42.5),    -- P(230) - P(130) = 157.5 - 115
    ('graduated', 200, 0,   0),       -- q = 0 costs 0
    ('volume',    0,   80,  80),      -- P(80) = 80
    ('volume',    80,  40,  -20),     -- tier crossing: P(120) - P(80) = 60 - 80: NEGATIVE
    ('volume',    100, 1,   -49.5),   -- P(101) - P(100) = 50.5 - 100
    ('volume',    120, 30,  15),      -- P(150) - P(120) = 75 - 60
    ('commit',    0,   3,   10),      -- P(3) = minimum 10
    ('commit',    3,   4,   0),       -- P(7) - P(3) = 10 - 10
    ('commit',    7,   5,   2),       -- P(12) - P(7) = 12 - 10
    ('commit',    12,  40,  38),      -- P(52) - P(12) = 50 - 12 (maximum reached)
    ('commit',    52,  10,  0),       -- P(62) - P(52) = 50 - 50
    ('commit_fee', 3,  4,   0.5),     -- 0 + 0.50 setup fee: the fee is per event
    ('commit_fee', 52, 10,  0.5),     -- above the maximum: still the per-event fee
    ('commit_fee', 10, 0,   0),       -- q = 0: no event, no fee
    ('tier_flat', 0,   8,   13),      -- P(8) = 8 + 5
    ('tier_flat', 8,   4,   6),       -- P(12) - P(8) = (10 + 5 + 1 + 3) - 13
    ('package',   50,  60,  5),       -- P(110) - P(50) = 10 - 5
    ('package',   110, 90,  0),       -- P(200) - P(110) = 10 - 10
    ('percent',   0,   100, 3),       -- P(100) = 2 + 1
    ('percent',   100, 100, 2)        -- P(200) - P(100) = 5 - 3
  ) v(name, used_before, q, expect) USING (name)
 ORDER BY name COLLATE "C", used_before, q;

-- The 2-argument rate() of a cycle tariff prices from an empty period:
-- P(bq) + setup fee.
SELECT rate(t, 40) AS rate, 40.5 AS expect FROM cyc WHERE name = 'commit_fee';  -- max(40, 10) + 0.50
SELECT rate(t, 1) AS rate, 10.5 AS expect FROM cyc WHERE name = 'commit_fee';   -- 10 (minimum) + 0.50

-------------------------------------------------------------------------------
-- 2. Order independence: a period's charges sum to P(total), whatever order the
--    events arrive in.  Each event's used_before is the sum of the billed
--    quantities of the events before it.
-------------------------------------------------------------------------------
CREATE TEMP TABLE cyc_events (seq int, q numeric);
INSERT INTO cyc_events VALUES (1, 80), (2, 40), (3, 30), (4, 0.5), (5, 99.5);  -- total 250

CREATE FUNCTION pg_temp.period(tname text, descending bool)
RETURNS TABLE (pos bigint, q numeric, used_before numeric, charge numeric)
LANGUAGE sql AS $$
  SELECT pos, q, used_before,
         convbill.rate(c.t, q, '2026-01-05 12:00+00', 'UTC', used_before)
    FROM (SELECT row_number() OVER w AS pos, e.q,
                 coalesce(sum(convbill.billed_quantity(c.t, e.q)) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS used_before
            FROM pg_temp.cyc_events e, pg_temp.cyc c
           WHERE c.name = tname
          WINDOW w AS (ORDER BY CASE WHEN descending THEN -e.seq ELSE e.seq END)) s,
         pg_temp.cyc c
   WHERE c.name = tname
   ORDER BY pos
$$;

-- Volume, in arrival order: 80 | P(120)-P(80) = 60-80 = -20 | P(150)-P(120) = 75-60 = 15
--   | P(150.5)-P(150) = 75.25-75 = 0.25 | P(250)-P(150.5) = 125-75.25 = 49.75
SELECT * FROM pg_temp.period('volume', false);
-- ... in reverse order: P(99.5) = 99.5 | P(100) - P(99.5) = 0.5 | P(130)-P(100) = 65-100 = -35
--   | P(170)-P(130) = 85-65 = 20 | P(250)-P(170) = 125-85 = 40
SELECT * FROM pg_temp.period('volume', true);
-- Graduated, arrival order: 80 | P(120)-P(80) = 110-80 = 30 | P(150)-P(120) = 125-110 = 15
--   | P(150.5)-P(150) = 0.25 | P(250)-P(150.5) = 162.5-125.25 = 37.25
SELECT * FROM pg_temp.period('graduated', false);
-- ... reverse: 99.5 | 0.5 | P(130)-P(100) = 115-100 = 15 | P(170)-P(130) = 135-115 = 20
--   | P(250)-P(170) = 162.5-135 = 27.5
SELECT * FROM pg_temp.period('graduated', true);

-- Sums in both orders, against P(250) computed by hand:
--   volume 250 x 0.5 = 125; graduated 100 + 50 + 0.25 x 50 = 162.5;
--   commit min(max(250, 10), 50) = 50; cents 0.004 x 250 = 1.00;
--   tier_flat 10 + 5 + 0.5 x 240 + 3 = 138; package 5 x ceil(250/100) = 15;
--   percent 0.02 x 250 + 1 = 6.
SELECT name,
       (SELECT sum(charge) FROM pg_temp.period(name, false)) AS sum_arrival_order,
       (SELECT sum(charge) FROM pg_temp.period(name, true)) AS sum_reverse_order,
       rate(t, 250) AS p_total, expect,
       (SELECT sum(charge) FROM pg_temp.period(name, false)) = expect
         AND (SELECT sum(charge) FROM pg_temp.period(name, true)) = expect
         AND rate(t, 250) = expect AS ok
  FROM cyc JOIN (VALUES ('volume', 125::numeric), ('graduated', 162.5), ('commit', 50), ('cents', 1),
                        ('tier_flat', 138), ('package', 15), ('percent', 6)) v(name, expect) USING (name)
 ORDER BY name COLLATE "C";

-- Rounding: P is rounded, so each charge is a difference of rounded totals and
-- the rounding never accumulates.  'cents', four events of 1 unit:
-- P(1) = 0.004 -> 0.00; P(2) = 0.008 -> 0.01; P(3) = 0.012 -> 0.01; P(4) = 0.016 -> 0.02
-- charges 0.00, 0.01, 0.00, 0.01; sum 0.02 = P(4).
SELECT u AS used_before, rate(t, 1, '2026-01-05 12:00+00', 'UTC', u) AS charge
  FROM cyc, generate_series(0, 3) u WHERE name = 'cents' ORDER BY u;
SELECT sum(rate(t, 1, '2026-01-05 12:00+00', 'UTC', u)) AS total,
       (SELECT rate(t, 4) FROM cyc WHERE name = 'cents') AS p_4, 0.02 AS expect
  FROM cyc, generate_series(0, 3) u WHERE name = 'cents';

-- The setup fee is per event, on top of P: 'commit_fee' with the five events
-- (all with q > 0) sums to P(250) + 5 x 0.50 = 50 + 2.50 = 52.50 in either order.
SELECT (SELECT sum(charge) FROM pg_temp.period('commit_fee', false)) AS arrival_order,
       (SELECT sum(charge) FROM pg_temp.period('commit_fee', true)) AS reverse_order,
       52.5 AS expect;

-- Increments: used_before is in billed units.  'minutes' (60/60; 0.01 per
-- second up to 600 s, 0.005 beyond): calls of 61 s, 30 s, 600 s, 1 s are billed
-- 120, 60, 600, 60 s, so used_before runs 0, 120, 180, 780 (total 840 s).
--   P(120) = 1.20
--   P(180) - P(120) = 1.80 - 1.20 = 0.60
--   P(780) - P(180) = (600 x 0.01 + 180 x 0.005) - 1.80 = 6.90 - 1.80 = 5.10
--   P(840) - P(780) = (6 + 240 x 0.005) - 6.90 = 7.20 - 6.90 = 0.30
-- sum 1.20 + 0.60 + 5.10 + 0.30 = 7.20 = P(840).
SELECT q, billed_quantity(t, q) AS billed, used_before, rate(t, q, '2026-01-05 12:00+00', 'UTC', used_before) AS charge, expect
  FROM cyc, (VALUES (61::numeric, 0::numeric, 1.2::numeric), (30, 120, 0.6), (600, 180, 5.1), (1, 780, 0.3)) v(q, used_before, expect)
 WHERE name = 'minutes' ORDER BY used_before;
SELECT rate(t, 840) AS p_840, 7.2 AS expect FROM cyc WHERE name = 'minutes';

-------------------------------------------------------------------------------
-- 3. used_before is ignored for scope "event": the same volume tiers as an
--    event tariff price 40 units at 40 x 1 = 40 whatever came before.
-------------------------------------------------------------------------------
SELECT used_before, rate(t, 40, '2026-01-05 12:00+00', 'UTC', used_before) AS rate, 40 AS expect
  FROM (SELECT '{"model": "volume", "tiers": [{"up_to": 100, "price": 1}, {"up_to": null, "price": "0.5"}]}'::tariff AS t) s,
       (VALUES (0::numeric), (80), (1000000)) v(used_before);

-------------------------------------------------------------------------------
-- 4. Errors: a negative used_before is rejected (for either scope); a cycle
--    tariff cannot have time bands (see also tariff_errors).
-------------------------------------------------------------------------------
SELECT rate(t, 1, '2026-01-05 12:00+00', 'UTC', -1) FROM cyc WHERE name = 'volume';
SELECT rate('{"price": 1}', 1, '2026-01-05 12:00+00', 'UTC', -0.5);
SELECT '{"scope": "cycle", "price": 1, "time_bands": [{"tariff": {"price": 2}}]}'::tariff;
