-- tariff_models: the pricing models (flat, graduated, volume, package,
-- percentage), setup fee, minimum and maximum (SPEC §1 "Evaluation").
-- Every expected value is computed by hand (arithmetic in the comments) and
-- written next to the query as "expect"; "ok" compares it with rate().
-- Rounding is the default (6 decimals, half_up), so charges show 6 decimals.
SET search_path = convbill, public;

-------------------------------------------------------------------------------
-- Flat: bq x price.
-------------------------------------------------------------------------------
SELECT q, rate('{"price": "0.05"}', q) AS rate, expect, rate('{"price": "0.05"}', q) = expect AS ok
  FROM (VALUES
    (0::numeric,     0::numeric),   -- bq = 0 costs 0
    (1,              0.05),         -- 1 x 0.05
    (100,            5),            -- 100 x 0.05
    (2.5,            0.125),        -- 2.5 x 0.05
    (0.000000001,    0),            -- 1e-9 x 0.05 = 5e-11 -> 0.000000 at 6 decimals
    (1234567.891,    61728.39455)   -- 1234567.891 x 0.05
  ) v(q, expect);

-------------------------------------------------------------------------------
-- Stripe's example tiers (stripe.com/docs/products-prices/pricing-models):
-- units 1-5 at 7.00, 6-10 at 6.50, 11+ at 6.00.  up_to is inclusive.
-- Graduated: each unit at the price of its tier.
-------------------------------------------------------------------------------
CREATE TEMP TABLE stripe (model text PRIMARY KEY, t tariff);
INSERT INTO stripe VALUES
  ('graduated', '{"model": "graduated", "tiers": [{"up_to": 5, "price": 7}, {"up_to": 10, "price": "6.50"}, {"up_to": null, "price": 6}]}'),
  ('volume',    '{"model": "volume",    "tiers": [{"up_to": 5, "price": 7}, {"up_to": 10, "price": "6.50"}, {"up_to": null, "price": 6}]}'),
  -- the same tiers with a flat fee per tier: 10.00, 5.00, 2.00
  ('graduated_flat', '{"model": "graduated", "tiers": [{"up_to": 5, "price": 7, "flat": 10}, {"up_to": 10, "price": "6.50", "flat": 5}, {"up_to": null, "price": 6, "flat": 2}]}'),
  ('volume_flat',    '{"model": "volume",    "tiers": [{"up_to": 5, "price": 7, "flat": 10}, {"up_to": 10, "price": "6.50", "flat": 5}, {"up_to": null, "price": 6, "flat": 2}]}');

SELECT q, rate(t, q) AS rate, expect, rate(t, q) = expect AS ok
  FROM stripe, (VALUES
    (0::numeric, 0::numeric),  -- nothing
    (2.25,  15.75),            -- 2.25 x 7
    (5,     35),               -- 5 x 7 (5 is inside tier 1: up_to is inclusive)
    (5.5,   38.25),            -- 35 + 0.5 x 6.5
    (6,     41.5),             -- 35 + 1 x 6.5
    (10,    67.5),             -- 35 + 5 x 6.5
    (11,    73.5),             -- 35 + 32.5 + 1 x 6
    (15,    97.5)              -- Stripe: 5 x 7 + 5 x 6.5 + 5 x 6 = 35 + 32.5 + 30
  ) v(q, expect)
 WHERE model = 'graduated' ORDER BY q;

-- Volume: all units at the tier the total falls in.
SELECT q, rate(t, q) AS rate, expect, rate(t, q) = expect AS ok
  FROM stripe, (VALUES
    (0::numeric, 0::numeric),  -- nothing
    (2.25,  15.75),            -- 2.25 x 7
    (5,     35),               -- 5 x 7 (inclusive bound)
    (5.5,   35.75),            -- 5.5 x 6.5
    (6,     39),               -- 6 x 6.5
    (10,    65),               -- 10 x 6.5
    (11,    66),               -- 11 x 6
    (15,    90)                -- Stripe: 15 x 6
  ) v(q, expect)
 WHERE model = 'volume' ORDER BY q;

-- Graduated with flat fees: each tier reached adds its flat fee once.
SELECT q, rate(t, q) AS rate, expect, rate(t, q) = expect AS ok
  FROM stripe, (VALUES
    (0::numeric, 0::numeric),  -- no tier reached, no flat fee
    (1,     17),               -- 1 x 7 + 10
    (5,     45),               -- 35 + 10 (tier 2 not reached at exactly 5)
    (6,     56.5),             -- 35 + 6.5 + 10 + 5
    (10,    82.5),             -- 67.5 + 10 + 5
    (15,    114.5)             -- 97.5 + 10 + 5 + 2
  ) v(q, expect)
 WHERE model = 'graduated_flat' ORDER BY q;

-- Volume with flat fees: the flat fee of the one tier used.
SELECT q, rate(t, q) AS rate, expect, rate(t, q) = expect AS ok
  FROM stripe, (VALUES
    (0::numeric, 0::numeric),  -- nothing, not even a flat fee
    (1,     17),               -- 1 x 7 + 10
    (5,     45),               -- 5 x 7 + 10
    (6,     44),               -- 6 x 6.5 + 5
    (10,    70),               -- 10 x 6.5 + 5
    (15,    92)                -- 15 x 6 + 2
  ) v(q, expect)
 WHERE model = 'volume_flat' ORDER BY q;

-------------------------------------------------------------------------------
-- Lago's volume example: the tier holding 65,000 units prices every unit at
-- 0.0006 and adds a 10.00 flat fee: 65,000 x 0.0006 + 10 = 39 + 10 = 49.00.
-- The same tiers graduated, for contrast:
-- 10,000 x 0.0008 + 55,000 x 0.0006 + 10 = 8 + 33 + 10 = 51.00.
-------------------------------------------------------------------------------
WITH lago(tiers) AS (
  SELECT '[{"up_to": 10000, "price": "0.0008"},
           {"up_to": 100000, "price": "0.0006", "flat": "10.00"},
           {"up_to": null, "price": "0.0004", "flat": "15.00"}]'::text)
SELECT model, rate(t, 65000) AS rate, expect, rate(t, 65000) = expect AS ok
  FROM lago, LATERAL (VALUES
    ('volume',    format('{"model": "volume", "tiers": %s}', tiers)::tariff,    49::numeric),
    ('graduated', format('{"model": "graduated", "tiers": %s}', tiers)::tariff, 51)
  ) v(model, t, expect);

-- Volume boundaries around 10,000 and 100,000 (inclusive):
SELECT q, rate(t, q) AS rate, expect, rate(t, q) = expect AS ok
  FROM (SELECT '{"model": "volume", "tiers": [{"up_to": 10000, "price": "0.0008"},
            {"up_to": 100000, "price": "0.0006", "flat": "10.00"},
            {"up_to": null, "price": "0.0004", "flat": "15.00"}]}'::tariff AS t) s,
       (VALUES
    (10000::numeric, 8::numeric),   -- 10,000 x 0.0008
    (10000.5,   16.0003),           -- 10,000.5 x 0.0006 + 10 = 6.0003 + 10
    (100000,    70),                -- 100,000 x 0.0006 + 10
    (100001,    55.0004)            -- 100,001 x 0.0004 + 15 = 40.0004 + 15
  ) v(q, expect) ORDER BY q;

-------------------------------------------------------------------------------
-- Package.  Lago's example: 5.00 per started block of 100 units, the first 100
-- units free: 201 units -> 101 chargeable -> 2 blocks -> 10.00.
-------------------------------------------------------------------------------
SELECT q, rate(t, q) AS rate, expect, rate(t, q) = expect AS ok
  FROM (SELECT '{"model": "package", "package": {"size": 100, "price": "5.00", "free": 100}}'::tariff AS t) s,
       (VALUES
    (0::numeric, 0::numeric),  -- nothing
    (1,     0),                -- within the free units
    (100,   0),                -- all 100 free
    (100.5, 5),                -- 0.5 chargeable -> 1 started block
    (101,   5),                -- 1 chargeable -> 1 block
    (200,   5),                -- 100 chargeable -> exactly 1 block
    (201,   10),               -- Lago: 101 chargeable -> 2 blocks
    (300,   10),               -- 200 -> 2 blocks
    (301,   15)                -- 201 -> 3 blocks
  ) v(q, expect) ORDER BY q;

-- Without free units: 0.01 per started 1024.
SELECT q, rate(t, q) AS rate, expect, rate(t, q) = expect AS ok
  FROM (SELECT '{"model": "package", "package": {"size": 1024, "price": "0.01"}}'::tariff AS t) s,
       (VALUES
    (0::numeric, 0::numeric),  -- nothing
    (0.5,   0.01),             -- 1 started block
    (1024,  0.01),             -- exactly 1 block
    (1025,  0.02),             -- 2 blocks
    (10240, 0.1)               -- 10 blocks
  ) v(q, expect) ORDER BY q;

-------------------------------------------------------------------------------
-- Percentage: quantity (an amount) x rate / 100 + fixed; 2.9% + 0.30.
-------------------------------------------------------------------------------
SELECT q, rate(t, q) AS rate, expect, rate(t, q) = expect AS ok
  FROM (SELECT '{"model": "percentage", "percentage": {"rate": "2.9", "fixed": "0.30"}}'::tariff AS t) s,
       (VALUES
    (0::numeric, 0::numeric),  -- nothing: the fixed part needs a quantity > 0
    (100,   3.2),              -- 2.9 + 0.30
    (19.99, 0.87971),          -- 19.99 x 0.029 = 0.57971, + 0.30
    (12.34, 0.65786),          -- 12.34 x 0.029 = 0.35786, + 0.30
    (0.01,  0.30029)           -- 0.01 x 0.029 = 0.00029, + 0.30
  ) v(q, expect) ORDER BY q;

-- A rate with 10 decimals (the most allowed) and no fixed part:
-- 10,000,000,000 x 0.0000000001 / 100 = 1 / 100 = 0.01.
SELECT rate(t, 10000000000) AS rate, 0.01 AS expect, rate(t, 10000000000) = 0.01 AS ok
  FROM (SELECT '{"model": "percentage", "percentage": {"rate": "0.0000000001"}}'::tariff AS t) s;

-------------------------------------------------------------------------------
-- Setup fee: added once per event with billed quantity > 0, in every model.
-------------------------------------------------------------------------------
SELECT name, q, rate(t::tariff, q) AS rate, expect, rate(t::tariff, q) = expect AS ok
  FROM (VALUES
    ('flat',       '{"price": "0.10", "setup_fee": "0.50"}', 10::numeric, 1.5::numeric),  -- 1.00 + 0.50
    ('flat',       '{"price": "0.10", "setup_fee": "0.50"}', 0, 0),                       -- no event, no fee
    ('flat',       '{"price": "0.10", "setup_fee": "0.50"}', 0.000001, 0.5),              -- 0.0000001 + 0.5 -> 0.500000
    ('graduated',  '{"model": "graduated", "setup_fee": 1, "tiers": [{"up_to": 5, "price": 7}, {"up_to": 10, "price": "6.50"}, {"up_to": null, "price": 6}]}', 15, 98.5),  -- 97.5 + 1
    ('volume',     '{"model": "volume", "setup_fee": 1, "tiers": [{"up_to": 5, "price": 7}, {"up_to": 10, "price": "6.50"}, {"up_to": null, "price": 6}]}', 15, 91),        -- 90 + 1
    ('package',    '{"model": "package", "setup_fee": 2, "package": {"size": 100, "price": 5, "free": 100}}', 50, 2),    -- free units, fee still due
    ('percentage', '{"model": "percentage", "setup_fee": "0.05", "percentage": {"rate": 10}}', 3, 0.35)                  -- 0.30 + 0.05
  ) v(name, t, q, expect);

-------------------------------------------------------------------------------
-- Minimum and maximum: the per-event charge (model price + setup fee) is
-- clamped to [minimum, maximum]; an event with billed quantity 0 costs 0.
-------------------------------------------------------------------------------
SELECT q, rate(t, q) AS rate, expect, rate(t, q) = expect AS ok
  FROM (SELECT '{"price": "0.10", "minimum": 1, "maximum": 3}'::tariff AS t) s,
       (VALUES
    (0::numeric, 0::numeric),  -- no event: no minimum
    (0.5,  1),                 -- 0.05 -> raised to the minimum 1
    (5,    1),                 -- 0.50 -> 1
    (10,   1),                 -- exactly 1.00
    (15,   1.5),               -- 1.50, within bounds
    (30,   3),                 -- exactly 3.00
    (50,   3)                  -- 5.00 -> capped at 3
  ) v(q, expect) ORDER BY q;

-- The setup fee counts towards the bounds.
SELECT q, rate(t, q) AS rate, expect, rate(t, q) = expect AS ok
  FROM (SELECT '{"price": "0.10", "setup_fee": "0.50", "minimum": 1, "maximum": 2}'::tariff AS t) s,
       (VALUES
    (3::numeric, 1::numeric),  -- 0.30 + 0.50 = 0.80 -> 1
    (6,    1.1),               -- 0.60 + 0.50
    (20,   2)                  -- 2.00 + 0.50 = 2.50 -> 2
  ) v(q, expect) ORDER BY q;

-- A minimum applies to an event whose model price is 0 (free package units),
-- and bounds work with tiered models too.
SELECT name, q, rate(t::tariff, q) AS rate, expect, rate(t::tariff, q) = expect AS ok
  FROM (VALUES
    ('package free units', '{"model": "package", "minimum": "0.25", "package": {"size": 100, "price": 5, "free": 100}}', 50::numeric, 0.25::numeric),
    ('package free units', '{"model": "package", "minimum": "0.25", "package": {"size": 100, "price": 5, "free": 100}}', 0, 0),
    ('graduated capped',   '{"model": "graduated", "maximum": 80, "tiers": [{"up_to": 5, "price": 7}, {"up_to": 10, "price": "6.50"}, {"up_to": null, "price": 6}]}', 15, 80),      -- 97.5 -> 80
    ('volume floored',     '{"model": "volume", "minimum": 40, "tiers": [{"up_to": 5, "price": 7}, {"up_to": 10, "price": "6.50"}, {"up_to": null, "price": 6}]}', 5, 40),          -- 35 -> 40
    ('percentage capped',  '{"model": "percentage", "maximum": 5, "percentage": {"rate": "2.9", "fixed": "0.30"}}', 1000, 5),                                                      -- 29.30 -> 5
    ('min = max',          '{"price": 1, "minimum": 2, "maximum": 2}', 7, 2)                                                                                                     -- 7 -> 2
  ) v(name, t, q, expect);

-------------------------------------------------------------------------------
-- Exactness: no binary floating point; large and tiny values are exact.
-------------------------------------------------------------------------------
SELECT rate('{"price": "0.1"}', 3) AS rate, 0.3 AS expect,                          -- 3 x 0.1 = 0.3 exactly
       rate('{"price": "0.1"}', 3) = 0.3 AS ok;
-- 999999999999.999999999 x 0.000001 = 999999.999999999999999 -> 1000000.000000 (half_up)
SELECT rate('{"price": "0.000001"}', 999999999999.999999999) AS rate,
       rate('{"price": "0.000001"}', 999999999999.999999999) = 1000000 AS ok;
SELECT rate('{"price": "123456.789"}', 1000000) AS rate,                              -- 123456789000
       rate('{"price": "123456.789"}', 1000000) = 123456789000 AS ok;
