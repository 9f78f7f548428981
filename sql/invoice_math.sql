-- invoice_math: the arithmetic of the bill run (src/invoice_math.c).
--   invoice_line_total(amount, currency)  exact sum, rounded once half-up to
--                                         the ISO 4217 minor unit (SPEC §0)
--   invoice_sum(amount)                   exact sum, not rounded
--   local_days(from, to, tz)              local calendar days (SPEC §5)
--   prorate(amount, part, whole, decimals)
-- Every expected value is worked out by hand in the comments; the big
-- parallel run is checked against serial execution and against PostgreSQL's
-- own round(sum(amount), exponent).
SET search_path = convbill, public;
SET TimeZone = 'UTC';

-- try_sql(query): 'ok: <first column>' or 'SQLSTATE: message'.
CREATE FUNCTION pg_temp.try_sql(q text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
    EXECUTE q INTO r;
    RETURN 'ok: ' || coalesce(r, 'NULL');
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-------------------------------------------------------------------------------
-- 1. Rounding to the minor unit, half away from zero, once per line.
-------------------------------------------------------------------------------
-- EUR (2): 0.005 -> 0.01, -0.005 -> -0.01, 0.004999 -> 0.00, 10 -> 10.00
-- (always two decimals), 3 x 0.005 = 0.015 -> 0.02 (rounding each first would
-- give 0.03), 3 x 0.004 = 0.012 -> 0.01 (each first: 0.00), 2.675 -> 2.68
-- (a binary double holds 2.67499999...: exact decimals matter).
SELECT line, invoice_line_total(amount, 'EUR') AS total
FROM (VALUES ('tie +', 0.005), ('tie -', -0.005), ('below tie', 0.004999), ('below tie -', -0.004999),
             ('integer', 10), ('3 x 0.005', 0.005), ('3 x 0.005', 0.005), ('3 x 0.005', 0.005),
             ('3 x 0.004', 0.004), ('3 x 0.004', 0.004), ('3 x 0.004', 0.004),
             ('2.675', 2.675), ('-2.675', -2.675)) v(line, amount)
GROUP BY line ORDER BY line;

-- JPY (0): 0.5 -> 1, -0.5 -> -1, 1.49 + 1 = 2.49 -> 2, 100.5 -> 101,
-- 0.25 + 0.25 = 0.5 -> 1 (each first: 0 + 0).
SELECT line, invoice_line_total(amount, 'JPY') AS total
FROM (VALUES ('tie +', 0.5), ('tie -', -0.5), ('2.49', 1.49), ('2.49', 1), ('100.5', 100.5),
             ('0.25 x 2', 0.25), ('0.25 x 2', 0.25)) v(line, amount)
GROUP BY line ORDER BY line;

-- KWD (3): 0.0005 -> 0.001, -0.0005 -> -0.001, 1.2344 + 0.0001 = 1.2345 -> 1.235,
-- 1.0005 - 2 = -0.9995 -> -1.000, 0.00049 -> 0.000.
-- UYW (4): 0.00005 -> 0.0001.
SELECT line, currency, invoice_line_total(amount, currency) AS total
FROM (VALUES ('tie +', 'KWD', 0.0005), ('tie -', 'KWD', -0.0005), ('1.2345', 'KWD', 1.2344),
             ('1.2345', 'KWD', 0.0001), ('-0.9995', 'KWD', 1.0005), ('-0.9995', 'KWD', -2),
             ('below tie', 'KWD', 0.00049), ('tie +', 'UYW', 0.00005)) v(line, currency, amount)
GROUP BY line, currency ORDER BY currency, line;

-- One line per (service, zone, sub-account) and currency, as the bill run groups:
-- voice/DE/1: 0.123456 + 0.000004 = 0.123460 -> 0.12; voice/IRSF/1: 1.5 + 1.505 = 3.005 -> 3.01;
-- sms/-/2: 0.09 x 3 = 0.27; data/-/2 (JPY): 10.4 + 10.4 = 20.8 -> 21.
SELECT service, zone, account, currency, invoice_line_total(amount, currency) AS total,
       invoice_sum(amount) AS exact
FROM (VALUES ('voice', 'DE', 1, 'EUR', 0.123456), ('voice', 'DE', 1, 'EUR', 0.000004),
             ('voice', 'IRSF', 1, 'EUR', 1.5), ('voice', 'IRSF', 1, 'EUR', 1.505),
             ('sms', NULL, 2, 'EUR', 0.09), ('sms', NULL, 2, 'EUR', 0.09), ('sms', NULL, 2, 'EUR', 0.09),
             ('data', NULL, 2, 'JPY', 10.4), ('data', NULL, 2, 'JPY', 10.4)) v(service, zone, account, currency, amount)
GROUP BY service, zone, account, currency ORDER BY service, zone;

-- A million tiny amounts sum exactly (binary floating point would drift):
-- 10^6 x 0.000001 = 1.000000 -> 1.00; 10^6 x 0.000000005 = 0.005 -> 0.01 (a tie,
-- reached only if every addition is exact); (10^6 - 1) x 0.000000005 = 0.004999995 -> 0.00.
SELECT invoice_line_total(0.000001, 'EUR') AS one_euro,
       invoice_sum(0.000001) AS one_exact,
       invoice_line_total(0.000000005, 'EUR') AS tie_after_a_million,
       invoice_line_total(0.000000005, 'EUR') FILTER (WHERE i > 1) AS just_below,
       invoice_sum(0.000000005) FILTER (WHERE i > 1) AS just_below_exact
FROM generate_series(1, 1000000) i;

-- invoice_sum: the exact sum with the largest scale of its amounts, like sum():
-- 1.10 + 2.205 = 3.305; -1.5 + 1.50 = 0.00; 12 decimals: 0.000000000001 x 2 = 0.000000000002;
-- trailing zeros beyond 12 decimals are accepted, and the scale is capped at 12.
SELECT invoice_sum(a) AS s, sum(a) AS pg_sum, invoice_sum(a)::text = sum(a)::text AS same_text
FROM (VALUES (1, 1.10), (1, 2.205), (2, -1.5), (2, 1.50), (3, 0.000000000001), (3, 0.000000000001)) v(g, a)
GROUP BY g ORDER BY g;
SELECT invoice_sum(1.0000000000000000) AS capped_scale;

-- Amounts are decoded two ways: up to 16 significant digits straight from
-- their bytes, anything longer (or larger, or in numeric's long format) the
-- general way; and they arrive two ways, as constants or computed (4-byte
-- header) and as stored in a table (1-byte header).  All agree with sum():
-- 9999999999999999 + 0.000000000001 = 9999999999999999.000000000001;
-- 100000000 (a last digit above 10^6); 123456789012.123456 (5 base-10000 digits);
-- -99999999999999.999999999999 + 0.000000000001 = -99999999999999.999999999998;
-- 1 with 70 zero decimals (long format) + 0.5 = 1.5 (its scale capped at 12).
CREATE TEMP TABLE boundary (g int, a numeric);
INSERT INTO boundary VALUES (1, 9999999999999999), (1, 0.000000000001), (2, 100000000),
    (3, 123456789012.123456), (4, -99999999999999.999999999999), (4, 0.000000000001),
    (5, ('1.' || repeat('0', 70))::numeric), (5, 0.5);
SELECT g, invoice_sum(a) AS exact, sum(a) AS pg_sum, invoice_sum(a) = sum(a) AS same_value,
       invoice_sum(a + 0) = sum(a) AS same_computed
FROM boundary GROUP BY g ORDER BY g;

-- NULL amounts are ignored (whatever their currency); no amounts -> NULL.
SELECT invoice_line_total(amount, currency) AS total, invoice_sum(amount) AS exact
FROM (VALUES (NULL::numeric, 'USD'), (1.005, 'EUR'), (NULL, NULL)) v(amount, currency);
SELECT invoice_line_total(amount, currency) IS NULL AS all_null, invoice_sum(amount) IS NULL AS all_null_sum
FROM (VALUES (NULL::numeric, 'EUR'), (NULL, 'EUR')) v(amount, currency);
SELECT invoice_line_total(amount, 'EUR') IS NULL AS empty, invoice_sum(amount) IS NULL AS empty_sum
FROM (SELECT 1.0 AS amount WHERE false) v;

-------------------------------------------------------------------------------
-- 2. Bad input: one currency per line, at most 12 decimals, checked overflow.
-------------------------------------------------------------------------------
SELECT pg_temp.try_sql($$SELECT invoice_line_total(a, c) FROM (VALUES (1.0, 'USD'), (2.0, 'EUR')) v(a, c)$$) AS mixed;
SELECT pg_temp.try_sql($$SELECT invoice_line_total(a, c) FROM (VALUES (1.0, 'EUR'), (2.0, 'USD')) v(a, c)$$) AS mixed_other_order;
SELECT pg_temp.try_sql($$SELECT invoice_line_total(a, c) FROM (VALUES (1.0, 'EUR'), (2.0, 'XYZ')) v(a, c)$$) AS unknown_second;
SELECT pg_temp.try_sql($$SELECT invoice_line_total(1.0, 'eur')$$) AS lower_case;
SELECT pg_temp.try_sql($$SELECT invoice_line_total(1.0, '')$$) AS empty_code;
SELECT pg_temp.try_sql($$SELECT invoice_line_total(1.0, NULL)$$) AS null_currency;
-- 13 decimals, NaN, Infinity
SELECT pg_temp.try_sql($$SELECT invoice_line_total(0.0000000000001, 'EUR')$$) AS too_precise;
SELECT pg_temp.try_sql($$SELECT invoice_sum(0.0000000000001)$$) AS too_precise_sum;
SELECT pg_temp.try_sql($$SELECT invoice_sum('NaN')$$) AS nan;
SELECT pg_temp.try_sql($$SELECT invoice_line_total('Infinity', 'EUR')$$) AS infinity;
-- The sum is exact up to about 1.7e26 (2^127 / 10^12): 10^26 fits, 10^26 + 10^26
-- does not (22003), 2 x 10^26 is out of range as one amount already.
SELECT pg_temp.try_sql($$SELECT invoice_sum(a) FROM (VALUES (1e26), (-1e26), (1e26)) v(a)$$) AS fits;
SELECT pg_temp.try_sql($$SELECT invoice_sum(a) FROM (VALUES (1e26), (1e26)) v(a)$$) AS overflow;
SELECT pg_temp.try_sql($$SELECT invoice_line_total(a, 'EUR') FROM (VALUES (-1e26), (-1e26)) v(a)$$) AS overflow_negative;
SELECT pg_temp.try_sql($$SELECT invoice_line_total(2e26, 'EUR')$$) AS amount_out_of_range;

-------------------------------------------------------------------------------
-- 3. Parallel aggregation: 2,000,000 charges in 99,991 lines (three
--    currencies, amounts of 6 and 12 decimals, both signs), folded by two
--    workers and the leader, equal to the serial run and to PostgreSQL's
--    round(sum(amount), exponent) on every line, to the last digit.
-------------------------------------------------------------------------------
CREATE UNLOGGED TABLE inv_charge AS
SELECT i, i % 99991 AS k,
       (ARRAY['EUR', 'JPY', 'KWD'])[i % 99991 % 3 + 1] AS currency,
       CASE WHEN i % 10 = 0 THEN ((i::bigint * 104729) % 2000000001 - 1000000000) * 0.000000000001
            ELSE ((i::bigint * 7919) % 2000001 - 1000000) * 0.000001 END AS amount
FROM generate_series(1, 2000000) i;
ANALYZE inv_charge;

SET work_mem = '64MB';
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;

EXPLAIN (COSTS OFF)
SELECT invoice_line_total(amount, 'EUR'), invoice_sum(amount) FROM inv_charge;
EXPLAIN (COSTS OFF)
CREATE TABLE inv_par AS
SELECT k, currency, invoice_line_total(amount, currency) AS total, invoice_sum(amount) AS exact
FROM inv_charge GROUP BY k, currency;

-- Run it, and check that the parallel plan really ran in more than one
-- process (the lines a worker folded reached the leader as serialized states).
CREATE FUNCTION pg_temp.workers_launched(q text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE plan json;
BEGIN
    EXECUTE 'EXPLAIN (ANALYZE, FORMAT JSON, TIMING OFF) ' || q INTO plan;
    RETURN (plan -> 0 -> 'Plan' -> 'Plans' -> 0 ->> 'Workers Launched')::integer;
END $$;
SELECT pg_temp.workers_launched($$
    CREATE TABLE inv_par AS
    SELECT k, currency, invoice_line_total(amount, currency) AS total, invoice_sum(amount) AS exact
    FROM inv_charge GROUP BY k, currency$$) > 0 AS workers_ran;
CREATE TABLE inv_par_all AS
SELECT invoice_line_total(amount, 'EUR') AS total, invoice_sum(amount) AS exact FROM inv_charge;

-- A line of mixed currencies fails in parallel too (the USD rows fill the
-- table's last pages, which a worker may fold alone: then combine finds it).
\set VERBOSITY terse
SELECT invoice_line_total(amount, CASE WHEN i > 1990000 THEN 'USD' ELSE 'EUR' END) FROM inv_charge;
\set VERBOSITY default

SET max_parallel_workers_per_gather = 0;
EXPLAIN (COSTS OFF)
SELECT invoice_line_total(amount, 'EUR'), invoice_sum(amount) FROM inv_charge;
CREATE TABLE inv_ser AS
SELECT k, currency, invoice_line_total(amount, currency) AS total, invoice_sum(amount) AS exact,
       round(sum(amount), currency_exponent(currency)) AS pg_total, sum(amount) AS pg_exact,
       count(*) AS n
FROM inv_charge GROUP BY k, currency;

-- Every line: parallel = serial = PostgreSQL's numeric, in value and in
-- scale.  99,991 lines of 20 or 21 charges; 0 mismatches.
CREATE FUNCTION pg_temp.differ(a numeric, b numeric) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$ SELECT a IS DISTINCT FROM b OR scale(a) IS DISTINCT FROM scale(b) $$;
SELECT count(*) AS lines, sum(s.n) AS charges,
       count(*) FILTER (WHERE pg_temp.differ(p.total, s.total) OR pg_temp.differ(p.exact, s.exact))
           AS parallel_vs_serial,
       count(*) FILTER (WHERE pg_temp.differ(s.total, s.pg_total)) AS total_vs_round_sum,
       count(*) FILTER (WHERE pg_temp.differ(s.exact, s.pg_exact)) AS exact_vs_sum,
       count(*) FILTER (WHERE scale(s.total) <> currency_exponent(s.currency)) AS wrong_scale
FROM inv_ser s FULL JOIN inv_par p USING (k, currency);
-- All 2,000,000 rows in one parallel group = the serial lines' exact sums added up.
SELECT p.total = round(sum(s.pg_exact), 2) AND p.exact = sum(s.pg_exact) AS all_rows_parallel_ok
FROM inv_par_all p, inv_ser s GROUP BY p.total, p.exact;

-- A hash aggregate over too little memory spills its states to disk
-- (serialized) and reads them back: same lines.
SET work_mem = '64kB';
SET enable_sort = off;
CREATE TABLE inv_spill AS
SELECT k, currency, invoice_line_total(amount, currency) AS total, invoice_sum(amount) AS exact
FROM inv_charge WHERE k < 20000 GROUP BY k, currency;
SELECT count(*) AS lines,
       count(*) FILTER (WHERE pg_temp.differ(x.total, s.total) OR pg_temp.differ(x.exact, s.exact))
           AS spill_vs_serial
FROM inv_spill x JOIN inv_ser s USING (k, currency);
RESET enable_sort;
RESET work_mem;
RESET max_parallel_workers_per_gather;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
DROP TABLE inv_charge, inv_par, inv_par_all, inv_ser, inv_spill;

-------------------------------------------------------------------------------
-- 4. local_days: local calendar days, the start day counted, the end day not.
--    utc_days is what the UTC dates would say, for contrast.
-------------------------------------------------------------------------------
SELECT name, local_days(f, t, tz) AS local_days, t::date - f::date AS utc_days, t - f AS elapsed
FROM (VALUES
    -- Europe/Berlin, spring forward on 2024-03-31 (02:00 -> 03:00)
    ('Berlin March (743 h)',          '2024-03-01 00:00+01'::timestamptz, '2024-04-01 00:00+02'::timestamptz, 'Europe/Berlin'),
    ('Berlin 31 March (23 h)',        '2024-03-31 00:00+01', '2024-04-01 00:00+02', 'Europe/Berlin'),
    ('Berlin 23:30 -> 00:30 local',   '2024-03-31 23:30+02', '2024-04-01 00:30+02', 'Europe/Berlin'),
    ('Berlin start 10 March 15:00',   '2024-03-10 15:00+01', '2024-04-01 00:00+02', 'Europe/Berlin'),
    -- fall back on 2024-10-27 (03:00 -> 02:00)
    ('Berlin October (745 h)',        '2024-10-01 00:00+02', '2024-11-01 00:00+01', 'Europe/Berlin'),
    ('Berlin 27 October (25 h)',      '2024-10-27 00:00+02', '2024-10-28 00:00+01', 'Europe/Berlin'),
    ('Berlin 02:30 twice',            '2024-10-27 02:30+02', '2024-10-27 02:30+01', 'Europe/Berlin'),
    ('Berlin leap February',          '2024-02-01 00:00+01', '2024-03-01 00:00+01', 'Europe/Berlin'),
    -- Pacific/Kiritimati, UTC+14: local midnight is 10:00 UTC the day before
    ('Kiritimati 23:59:59 -> 00:00',  '2024-01-01 09:59:59+00', '2024-01-01 10:00:00+00', 'Pacific/Kiritimati'),
    ('Kiritimati all of 1 January',   '2023-12-31 10:00+00', '2024-01-01 09:59:59+00', 'Pacific/Kiritimati'),
    ('Kiritimati UTC midnight',       '2023-12-31 23:59:59+00', '2024-01-01 00:00+00', 'Pacific/Kiritimati'),
    -- on 1994-12-31 Kiritimati moved from UTC-10 to UTC+14 and skipped the date:
    -- 24 hours from local 30 December 00:00 to local 1 January 00:00 are 2 calendar days
    ('Kiritimati skipped 1994-12-31', '1994-12-30 10:00+00', '1994-12-31 10:00+00', 'Pacific/Kiritimati'),
    -- Pacific/Pago_Pago, UTC-11: local midnight is 11:00 UTC
    ('Pago Pago 23:59:59 -> 00:00',   '2024-01-01 10:59:59+00', '2024-01-01 11:00:00+00', 'Pacific/Pago_Pago'),
    ('Pago Pago all of 31 December',  '2023-12-31 11:00+00', '2024-01-01 10:59:59+00', 'Pacific/Pago_Pago'),
    ('Pago Pago across UTC midnight', '2023-12-31 23:00+00', '2024-01-01 01:00+00', 'Pacific/Pago_Pago'),
    ('Pago Pago 13:00 -> 12:00 next', '2024-01-01 00:00+00', '2024-01-01 23:00+00', 'Pacific/Pago_Pago'),
    -- same instant, and backwards
    ('same instant',                  '2024-05-05 12:00+00', '2024-05-05 12:00+00', 'Europe/Berlin'),
    ('from after to',                 '2024-05-06 12:00+00', '2024-05-05 12:00+00', 'Europe/Berlin'),
    ('lower-case zone name',          '2024-05-05 12:00+00', '2024-05-07 12:00+00', 'europe/berlin')
) v(name, f, t, tz);

-- Cross-check with the SQL formula the bill run would otherwise write, over
-- 4 zones x 600 instants around both DST changes x 7 lengths (-1 h .. 40 days).
SELECT count(*) AS pairs,
       count(*) FILTER (WHERE local_days(f, t, tz) <>
                        CASE WHEN f > t THEN 0
                             ELSE greatest(0, (t AT TIME ZONE tz)::date - (f AT TIME ZONE tz)::date) END) AS mismatches
FROM unnest(ARRAY['Europe/Berlin', 'Pacific/Kiritimati', 'Pacific/Pago_Pago', 'America/Havana']) tz,
     generate_series(0, 599) n,
     LATERAL (SELECT CASE WHEN n < 300 THEN '2024-03-29 00:00+00'::timestamptz
                          ELSE '2024-10-25 00:00+00'::timestamptz END
                     + ((n % 300) * 23) * interval '1 minute' AS f) a,
     unnest(ARRAY['-1 hour', '0', '1 minute', '59 minutes', '23 hours', '25 hours', '40 days']::interval[]) d,
     LATERAL (SELECT f + d AS t) b;

SELECT pg_temp.try_sql($$SELECT local_days('-infinity', '2024-01-01', 'UTC')$$) AS from_infinite;
SELECT pg_temp.try_sql($$SELECT local_days('2024-01-01', 'infinity', 'UTC')$$) AS to_infinite;
SELECT pg_temp.try_sql($$SELECT local_days('2024-01-01', '2024-01-02', 'Mars/Olympus_Mons')$$) AS unknown_zone;
SELECT local_days(NULL, '2024-01-02', 'UTC') IS NULL AS strict;

-------------------------------------------------------------------------------
-- 5. prorate: amount x part / whole, exact, rounded once half away from zero.
-------------------------------------------------------------------------------
-- 30.00 x 17/31 = 510/31 = 16.451612903225806...: 6 decimals 16.451613, 2: 16.45,
-- 0: 16, 12: 16.451612903226.  A subscription from 10 March 15:00 Berlin is
-- charged 22 of March's 31 days: 30.00 x 22/31 = 660/31 = 21.290322580... -> 21.290323.
SELECT prorate(30.00, 17, 31) AS d6, prorate(30.00, 17, 31, 2) AS d2,
       prorate(30.00, 17, 31, 0) AS d0, prorate(30.00, 17, 31, 12) AS d12,
       prorate(30.00, local_days('2024-03-10 15:00+01', '2024-04-01 00:00+02', 'Europe/Berlin'),
               local_days('2024-03-01 00:00+01', '2024-04-01 00:00+02', 'Europe/Berlin')) AS from_10_march;
-- ties: 0.05 x 1/2 = 0.025 -> 0.03, -> -0.03; 1 x 1/8 = 0.125 -> 0.13, -> -0.13;
-- 10 x 1/3 = 3.333333; whole period = the amount; no days = 0.
SELECT prorate(0.05, 1, 2, 2) AS tie_pos, prorate(-0.05, 1, 2, 2) AS tie_neg,
       prorate(1, 1, 8, 2) AS eighth, prorate(-1, 1, 8, 2) AS minus_eighth,
       prorate(10, 1, 3) AS third, prorate(30.00, 31, 31) AS whole, prorate(30.00, 0, 31) AS none;
-- the range: part = whole = 2^31 - 1 gives the amount back; 10^26 / 3 =
-- 33333333333333333333333333.33... -> 33333333333333333333333333 (beyond 64 bits).
SELECT prorate(99999999999999.999999, 2147483647, 2147483647) AS full_range,
       prorate(1e26, 1, 3, 0) AS third_of_1e26;

SELECT pg_temp.try_sql($$SELECT prorate(30, 1, 0)$$) AS whole_zero;
SELECT pg_temp.try_sql($$SELECT prorate(30, 1, -31)$$) AS whole_negative;
SELECT pg_temp.try_sql($$SELECT prorate(30, -1, 31)$$) AS part_negative;
SELECT pg_temp.try_sql($$SELECT prorate(30, 32, 31)$$) AS part_above_whole;
SELECT pg_temp.try_sql($$SELECT prorate(30, 1, 31, 13)$$) AS decimals_13;
SELECT pg_temp.try_sql($$SELECT prorate(30, 1, 31, -1)$$) AS decimals_negative;
SELECT pg_temp.try_sql($$SELECT prorate(0.0000000000001, 1, 1)$$) AS amount_too_precise;
SELECT pg_temp.try_sql($$SELECT prorate('NaN', 1, 1)$$) AS amount_nan;
SELECT pg_temp.try_sql($$SELECT prorate(1e26, 2, 3)$$) AS overflow;
SELECT prorate(NULL, 1, 2) IS NULL AS strict;

-- Declared truthfully: every function IMMUTABLE and PARALLEL SAFE, the
-- aggregates with combine, serialize and deserialize functions.
SELECT p.proname, p.provolatile, p.proparallel, p.proisstrict
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'convbill'
  AND p.proname IN ('invoice_line_total', 'invoice_sum', 'local_days', 'prorate',
                    'invoice_line_accum', 'invoice_sum_accum', 'invoice_sum_combine',
                    'invoice_sum_serialize', 'invoice_sum_deserialize', 'invoice_line_final', 'invoice_sum_final')
ORDER BY 1;
SELECT a.aggfnoid::regproc AS aggregate, a.aggcombinefn, a.aggserialfn, a.aggdeserialfn
FROM pg_aggregate a WHERE a.aggfnoid IN ('convbill.invoice_line_total'::regproc, 'convbill.invoice_sum'::regproc)
ORDER BY 1;
