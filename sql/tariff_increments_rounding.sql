-- tariff_increments_rounding: billed_quantity() (increments) and the one
-- rounding of a charge (SPEC §0 "Rounding", §1 increment and rounding).
-- increment {first A, next B}: q = 0 -> 0; q <= A -> A; else A + ceil((q-A)/B)*B.
SET search_path = convbill, public;

-------------------------------------------------------------------------------
-- 1. billed_quantity for the telecom and data increments.  "expect" is the
--    hand-computed value; the result is shown at the smallest exact scale.
-------------------------------------------------------------------------------
CREATE TEMP TABLE inc (name text PRIMARY KEY, t tariff);
INSERT INTO inc VALUES
  ('60/60',     '{"price": 1, "increment": {"first": 60, "next": 60}}'),
  ('60/1',      '{"price": 1, "increment": {"first": 60, "next": 1}}'),
  ('30/6',      '{"price": 1, "increment": {"first": 30, "next": 6}}'),
  ('1024/1024', '{"price": 1, "increment": {"first": 1024, "next": 1024}}'),
  ('none',      '{"price": 1}');

SELECT name, q, billed_quantity(t, q) AS billed, expect, billed_quantity(t, q) = expect AS ok
  FROM inc JOIN (VALUES
    -- 60/60: whole minutes
    ('60/60', 0::numeric, 0::numeric),  -- q = 0 -> 0
    ('60/60', 1,    60),                -- <= 60 -> 60
    ('60/60', 29,   60),
    ('60/60', 30,   60),
    ('60/60', 31,   60),
    ('60/60', 60,   60),                -- = first
    ('60/60', 61,   120),               -- 60 + ceil(1/60)*60
    ('60/60', 119,  120),               -- 60 + ceil(59/60)*60
    ('60/60', 120,  120),               -- 60 + ceil(60/60)*60
    ('60/60', 121,  180),               -- 60 + ceil(61/60)*60 = 60 + 120
    ('60/60', 0.5,  60),                -- fractional, <= first
    ('60/60', 60.000000001, 120),       -- 60 + ceil(1e-9/60)*60
    -- 60/1: first minute, then per second
    ('60/1', 0,    0),
    ('60/1', 1,    60),
    ('60/1', 29,   60),
    ('60/1', 30,   60),
    ('60/1', 31,   60),
    ('60/1', 60,   60),
    ('60/1', 61,   61),                 -- 60 + ceil(1/1)*1
    ('60/1', 119,  119),
    ('60/1', 120,  120),
    ('60/1', 121,  121),
    ('60/1', 60.5, 61),                 -- 60 + ceil(0.5)*1
    ('60/1', 60.000000001, 61),         -- 60 + ceil(1e-9)*1
    -- 30/6: first 30 seconds, then 6-second blocks
    ('30/6', 0,    0),
    ('30/6', 1,    30),
    ('30/6', 29,   30),
    ('30/6', 30,   30),
    ('30/6', 31,   36),                 -- 30 + ceil(1/6)*6
    ('30/6', 60,   60),                 -- 30 + ceil(30/6)*6 = 30 + 30
    ('30/6', 61,   66),                 -- 30 + ceil(31/6)*6 = 30 + 36
    ('30/6', 119,  120),                -- 30 + ceil(89/6)*6 = 30 + 15*6
    ('30/6', 120,  120),                -- 30 + ceil(90/6)*6 = 30 + 90
    ('30/6', 121,  126),                -- 30 + ceil(91/6)*6 = 30 + 16*6
    ('30/6', 30.5, 36),                 -- 30 + ceil(0.5/6)*6
    ('30/6', 0.001, 30),
    -- 1024/1024: data in KiB blocks
    ('1024/1024', 0,    0),
    ('1024/1024', 1,    1024),
    ('1024/1024', 29,   1024),
    ('1024/1024', 30,   1024),
    ('1024/1024', 31,   1024),
    ('1024/1024', 60,   1024),
    ('1024/1024', 61,   1024),
    ('1024/1024', 119,  1024),
    ('1024/1024', 120,  1024),
    ('1024/1024', 121,  1024),
    ('1024/1024', 1024, 1024),
    ('1024/1024', 1025, 2048),          -- 1024 + ceil(1/1024)*1024
    ('1024/1024', 2048, 2048),
    ('1024/1024', 2049, 3072),
    ('1024/1024', 0.5,  1024),
    -- no increment: the quantity itself
    ('none', 0,    0),
    ('none', 61,   61),
    ('none', 29.5, 29.5),
    ('none', 0.000000001, 0.000000001)
  ) v(name, q, expect) USING (name)
 ORDER BY name COLLATE "C", q;

-- Display scale: the smallest that shows the value exactly (trailing zeros of
-- the input are not kept).
SELECT billed_quantity('{"price": 1}', 29.500) AS "29.500",
       billed_quantity('{"price": 1}', 7.000) AS "7.000",
       billed_quantity('{"price": 1}', 0.000) AS "0.000";

-- Fractional increments: first 0.5, next 0.25.
SELECT q, billed_quantity(t, q) AS billed, expect, billed_quantity(t, q) = expect AS ok
  FROM (SELECT '{"price": 1, "increment": {"first": 0.5, "next": 0.25}}'::tariff AS t) s,
       (VALUES
    (0.1::numeric, 0.5::numeric),  -- <= first
    (0.5,  0.5),
    (0.6,  0.75),                  -- 0.5 + ceil(0.1/0.25)*0.25
    (1,    1),                     -- 0.5 + ceil(0.5/0.25)*0.25 = 0.5 + 0.5
    (1.01, 1.25)                   -- 0.5 + ceil(0.51/0.25)*0.25 = 0.5 + 3*0.25
  ) v(q, expect) ORDER BY q;

-- Increments apply before pricing: 60/60 at 0.01 per second.
SELECT q, rate(t, q) AS rate, expect, rate(t, q) = expect AS ok
  FROM (SELECT '{"price": "0.01", "increment": {"first": 60, "next": 60}}'::tariff AS t) s,
       (VALUES
    (0::numeric, 0::numeric),  -- no call, no charge
    (1,    0.6),               -- 60 x 0.01
    (61,   1.2),               -- 120 x 0.01
    (121,  1.8)                -- 180 x 0.01
  ) v(q, expect) ORDER BY q;

-------------------------------------------------------------------------------
-- 2. Rounding modes.  A flat price times quantity 1 gives the unrounded value;
--    it is rounded once, at the tariff's decimals, with its mode:
--    half_up (halves away from zero), half_even (halves to the even digit),
--    up (away from zero), down (toward zero).
-------------------------------------------------------------------------------
CREATE TEMP TABLE rnd (price text, decimals int, mode text,
                       expect numeric, expect_text text);
INSERT INTO rnd VALUES
  -- decimals 2
  ('0.125', 2, 'half_up',   0.13, '0.13'),   -- exact half: away from zero
  ('0.125', 2, 'half_even', 0.12, '0.12'),   -- exact half: 2 is even
  ('0.125', 2, 'up',        0.13, '0.13'),
  ('0.125', 2, 'down',      0.12, '0.12'),
  ('0.135', 2, 'half_up',   0.14, '0.14'),
  ('0.135', 2, 'half_even', 0.14, '0.14'),   -- exact half: 3 is odd -> 4
  ('0.135', 2, 'up',        0.14, '0.14'),
  ('0.135', 2, 'down',      0.13, '0.13'),
  ('0.121', 2, 'half_up',   0.12, '0.12'),   -- below half
  ('0.121', 2, 'half_even', 0.12, '0.12'),
  ('0.121', 2, 'up',        0.13, '0.13'),   -- any remainder goes up
  ('0.121', 2, 'down',      0.12, '0.12'),
  ('0.129', 2, 'half_up',   0.13, '0.13'),   -- above half
  ('0.129', 2, 'half_even', 0.13, '0.13'),
  ('0.129', 2, 'up',        0.13, '0.13'),
  ('0.129', 2, 'down',      0.12, '0.12'),
  ('0.125000000001', 2, 'half_even', 0.13, '0.13'),  -- just above half (12th decimal): up
  ('0.125000000001', 2, 'down',      0.12, '0.12'),
  ('0.12',  2, 'up',        0.12, '0.12'),   -- exact: no change in any mode
  ('0.12',  2, 'down',      0.12, '0.12'),
  -- decimals 0
  ('2.5',   0, 'half_up',   3, '3'),
  ('2.5',   0, 'half_even', 2, '2'),
  ('2.5',   0, 'up',        3, '3'),
  ('2.5',   0, 'down',      2, '2'),
  ('3.5',   0, 'half_up',   4, '4'),
  ('3.5',   0, 'half_even', 4, '4'),
  ('3.5',   0, 'up',        4, '4'),
  ('3.5',   0, 'down',      3, '3'),
  ('2.4',   0, 'half_up',   2, '2'),
  ('2.4',   0, 'half_even', 2, '2'),
  ('2.4',   0, 'up',        3, '3'),
  ('2.4',   0, 'down',      2, '2'),
  ('0.5',   0, 'half_even', 0, '0'),         -- 0 is even
  ('0.5',   0, 'half_up',   1, '1'),
  -- decimals 6 (the default)
  ('0.0000125', 6, 'half_up',   0.000013, '0.000013'),
  ('0.0000125', 6, 'half_even', 0.000012, '0.000012'),
  ('0.0000125', 6, 'up',        0.000013, '0.000013'),
  ('0.0000125', 6, 'down',      0.000012, '0.000012'),
  ('0.0000135', 6, 'half_up',   0.000014, '0.000014'),
  ('0.0000135', 6, 'half_even', 0.000014, '0.000014'),
  ('0.0000135', 6, 'up',        0.000014, '0.000014'),
  ('0.0000135', 6, 'down',      0.000013, '0.000013'),
  ('0.0000120001', 6, 'half_up', 0.000012, '0.000012'),
  ('0.0000120001', 6, 'up',      0.000013, '0.000013'),
  ('0.0000004',    6, 'half_up', 0,        '0.000000'),  -- rounds to zero, shown with 6 decimals
  ('0.0000005',    6, 'half_up', 0.000001, '0.000001');

SELECT price, decimals, mode, r AS rate, expect, r = expect AND r::text = expect_text AS ok
  FROM rnd, LATERAL (SELECT rate(format('{"price": "%s", "rounding": {"decimals": %s, "mode": "%s"}}',
                                        price, decimals, mode)::tariff, 1) AS r) x
 ORDER BY decimals, price COLLATE "C", mode COLLATE "C";

-- Decimals 12 (the most): a product with more than 12 decimals is rounded.
-- 0.000000000001 x 0.5 = 0.0000000000005 (an exact half at 12 decimals)
SELECT mode, r AS rate, expect, r = expect AS ok
  FROM (VALUES ('half_up', 0.000000000001), ('half_even', 0), ('up', 0.000000000001), ('down', 0)) v(mode, expect),
       LATERAL (SELECT rate(format('{"price": "0.000000000001", "rounding": {"decimals": 12, "mode": "%s"}}', mode)::tariff, 0.5) AS r) x;
-- 0.333333333333 x 3 = 0.999999999999 exactly
SELECT rate('{"price": "0.333333333333", "rounding": {"decimals": 12}}', 3) AS rate;

-------------------------------------------------------------------------------
-- 3. Display scale of a charge: always the tariff's decimals.
-------------------------------------------------------------------------------
SELECT d, rate(format('{"price": "1.5", "rounding": {"decimals": %s}}', d)::tariff, 2) AS rate,
       scale(rate(format('{"price": "1.5", "rounding": {"decimals": %s}}', d)::tariff, 2)) = d AS scale_ok
  FROM generate_series(0, 12) d;

-- Large charges keep their digits and scale, including where the scaled
-- integer no longer fits 64 bits (12,345,678.9 at 12 decimals = 1.23e19 units
-- of 10^-12) or needs the slow path of the numeric conversion (10, 11 decimals).
SELECT d, r AS rate, r = 12345678.9 AND scale(r) = d AS ok
  FROM (VALUES (9), (10), (11), (12)) v(d),
       LATERAL (SELECT rate(format('{"price": "12345678.9", "rounding": {"decimals": %s}}', d)::tariff, 1) AS r) x;
-- 987,654,321.123456789 x 1000 = 987,654,321,123.456789 at 12 decimals
SELECT rate('{"price": "987654321.123456789", "rounding": {"decimals": 12}}', 1000) AS rate,
       rate('{"price": "987654321.123456789", "rounding": {"decimals": 12}}', 1000) = 987654321123.456789 AS ok;

-------------------------------------------------------------------------------
-- 4. Rounded exactly once: on the whole charge, never per tier, fee or unit.
-------------------------------------------------------------------------------
-- graduated, two tiers at 0.005, 2 decimals: 0.005 + 0.005 = 0.01 -> 0.01
-- (rounding each tier first would give 0.01 + 0.01 = 0.02 with half_up)
SELECT rate('{"model": "graduated", "rounding": {"decimals": 2},
              "tiers": [{"up_to": 1, "price": "0.005"}, {"up_to": null, "price": "0.005"}]}', 2) AS rate,
       0.01 AS expect;
-- price + setup fee: 0.004 + 0.004 = 0.008 -> 0.01 (each alone would round to 0.00)
SELECT rate('{"price": "0.004", "setup_fee": "0.004", "rounding": {"decimals": 2}}', 1) AS rate,
       0.01 AS expect;
-- tier flat fees: 0.003 + 0.003 + 2 x 0.001 = 0.008 -> 0.01
SELECT rate('{"model": "graduated", "rounding": {"decimals": 2},
              "tiers": [{"up_to": 1, "price": "0.001", "flat": "0.003"}, {"up_to": null, "price": "0.001", "flat": "0.003"}]}', 2) AS rate,
       0.01 AS expect;
-- rounding comes after the clamp: a minimum of 0.125 with half_even at 2
-- decimals gives 0.12 (the unrounded charge 0.001 is raised to 0.125 first)
SELECT rate('{"price": "0.001", "minimum": "0.125", "rounding": {"decimals": 2, "mode": "half_even"}}', 1) AS rate,
       0.12 AS expect;
-- increments then rounding: 30/6 at 0.0125 per second, 2 decimals half_even:
-- 31 s -> 36 s x 0.0125 = 0.45 exactly; 37 s -> 42 s x 0.0125 = 0.525 -> 0.52
SELECT rate(t, 31) AS "31s", rate(t, 37) AS "37s", 0.45 AS expect_31s, 0.52 AS expect_37s
  FROM (SELECT '{"price": "0.0125", "increment": {"first": 30, "next": 6},
                 "rounding": {"decimals": 2, "mode": "half_even"}}'::tariff AS t) s;
