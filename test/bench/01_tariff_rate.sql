-- test/bench/01_tariff_rate.sql — throughput of the C tariff engine.
--
-- Run by `test/run.sh bench` (psql -X -v ON_ERROR_STOP=1 -d convbill_bench -f ...).
-- Over one table of 2,000,000 numeric quantities it times, on a single core:
--   (1) baseline   sum(quantity * 0.0125)                    -- scan + numeric sum floor
--   (2) flat       sum(convbill.rate(<flat tariff>, quantity))
--   (3) graduated  sum(convbill.rate(<5-tier graduated tariff>, quantity))
--   (4) plpgsql    sum(plpgsql_graduated(quantity))          -- the same tiers, hand-written
-- after checking that the answers are right (an exception stops the run if not).
-- Each query runs 5 times, the order alternating between rounds; the median counts.
-- Targets reported against: flat <= 1.5x baseline, graduated <= 2x baseline.
-- A missed target is reported, not raised: correctness is the only hard failure.

\set ON_ERROR_STOP 1
\timing off
SET client_min_messages = notice;
-- fair single-core numbers: no parallel workers, no JIT compilation
SET max_parallel_workers_per_gather = 0;
SET jit = off;
SET work_mem = '64MB';

CREATE EXTENSION IF NOT EXISTS convbill;

-------------------------------------------------------------------------------
-- Data: 2,000,000 realistic quantities, deterministic (setseed).
--   60 %  call seconds, exponential around 3 minutes, 1..3600
--   20 %  call seconds, uniform 1..3600 (long calls reach every tier)
--   20 %  data volumes in MB with 3 decimals, 0.001..2048.000
-------------------------------------------------------------------------------
DROP TABLE IF EXISTS bench_tariff_rate;
CREATE TABLE bench_tariff_rate (quantity numeric NOT NULL);

SELECT setseed(0.42);
INSERT INTO bench_tariff_rate (quantity)
SELECT CASE
         WHEN r < 0.6 THEN least(3600, 1 + floor(-ln(1 - random()) * 180))::numeric
         WHEN r < 0.8 THEN (1 + floor(random() * 3600))::numeric
         ELSE round((0.001 + random() * 2047.999)::numeric, 3)
       END
FROM (SELECT random() AS r FROM generate_series(1, 2000000)) s;

VACUUM (FREEZE, ANALYZE) bench_tariff_rate;

-- warm the table into shared buffers (it is ~70 MB, below the 1/4 of
-- shared_buffers beyond which a sequential scan would use a small ring buffer)
SELECT count(*) AS rows, pg_size_pretty(pg_relation_size('bench_tariff_rate')) AS size,
       min(quantity), max(quantity), round(avg(quantity), 3) AS avg
FROM bench_tariff_rate;
SELECT count(*) FROM bench_tariff_rate;

-------------------------------------------------------------------------------
-- What a user would write without convbill: the same 5 tiers in PL/pgSQL,
-- rounded once to 6 decimals half-up (round() on a non-negative numeric).
-------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION plpgsql_graduated(quantity numeric) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    bounds numeric[] := '{60,300,900,1800,NULL}';   -- up_to, inclusive; NULL = unbounded
    prices numeric[] := '{0.02,0.015,0.0125,0.01,0.0075}';
    cost   numeric := 0;
    lower  numeric := 0;
    upper  numeric;
BEGIN
    IF quantity < 0 THEN
        RAISE EXCEPTION 'quantity must not be negative';
    END IF;
    FOR i IN 1 .. array_length(bounds, 1) LOOP
        EXIT WHEN quantity <= lower;
        upper := coalesce(bounds[i], quantity);
        cost := cost + (least(quantity, upper) - lower) * prices[i];
        lower := upper;
    END LOOP;
    RETURN round(cost, 6);
END
$$;

-- The queries, in one place: name, SQL.  The tariffs are constants.
CREATE TEMP TABLE bench_query (ord int PRIMARY KEY, name text NOT NULL, sql text NOT NULL);
INSERT INTO bench_query VALUES
 (1, 'baseline  sum(quantity * 0.0125)',
     $q$SELECT sum(quantity * 0.0125) FROM bench_tariff_rate$q$),
 (2, 'flat      sum(convbill.rate(flat, q))',
     $q$SELECT sum(convbill.rate('{"price":"0.0125"}'::convbill.tariff, quantity)) FROM bench_tariff_rate$q$),
 (3, 'graduated sum(convbill.rate(5 tiers, q))',
     $q$SELECT sum(convbill.rate('{"model":"graduated","tiers":[{"up_to":60,"price":"0.02"},{"up_to":300,"price":"0.015"},{"up_to":900,"price":"0.0125"},{"up_to":1800,"price":"0.01"},{"up_to":null,"price":"0.0075"}]}'::convbill.tariff, quantity)) FROM bench_tariff_rate$q$),
 (4, 'plpgsql   sum(plpgsql_graduated(q))',
     $q$SELECT sum(plpgsql_graduated(quantity)) FROM bench_tariff_rate$q$);

-------------------------------------------------------------------------------
-- Correctness first (also warms every code path): one scan compares, row by
-- row and in total, C graduated with PL/pgSQL and C flat with round(q*0.0125, 6).
-------------------------------------------------------------------------------
DO $$
DECLARE
    c_grad numeric; pl_grad numeric; grad_diff bigint;
    c_flat numeric; ref_flat numeric; flat_diff bigint;
BEGIN
    SELECT sum(g), sum(p), count(*) FILTER (WHERE g IS DISTINCT FROM p),
           sum(f), sum(r), count(*) FILTER (WHERE f IS DISTINCT FROM r)
      INTO c_grad, pl_grad, grad_diff, c_flat, ref_flat, flat_diff
      FROM (SELECT convbill.rate('{"model":"graduated","tiers":[{"up_to":60,"price":"0.02"},{"up_to":300,"price":"0.015"},{"up_to":900,"price":"0.0125"},{"up_to":1800,"price":"0.01"},{"up_to":null,"price":"0.0075"}]}'::convbill.tariff, quantity) AS g,
                   plpgsql_graduated(quantity) AS p,
                   convbill.rate('{"price":"0.0125"}'::convbill.tariff, quantity) AS f,
                   round(quantity * 0.0125, 6) AS r
              FROM bench_tariff_rate) s;
    RAISE NOTICE 'check graduated: C % = PL/pgSQL % (% rows differ)', c_grad, pl_grad, grad_diff;
    RAISE NOTICE 'check flat:      C % = round(q*0.0125,6) % (% rows differ)', c_flat, ref_flat, flat_diff;
    IF c_grad IS DISTINCT FROM pl_grad OR grad_diff <> 0 THEN
        RAISE EXCEPTION 'graduated mismatch: C sum %, PL/pgSQL sum %, % rows differ',
            c_grad, pl_grad, grad_diff;
    END IF;
    IF c_flat IS DISTINCT FROM ref_flat OR flat_diff <> 0 THEN
        RAISE EXCEPTION 'flat mismatch: C sum %, round(q*0.0125,6) sum %, % rows differ',
            c_flat, ref_flat, flat_diff;
    END IF;
END
$$;

-------------------------------------------------------------------------------
-- Timing: wall-clock of each whole query (clock_timestamp), 5 rounds,
-- order 1-2-3-4 on odd rounds and 4-3-2-1 on even ones.
-------------------------------------------------------------------------------
CREATE TEMP TABLE bench_run (ord int, round int, ms double precision);

CREATE FUNCTION pg_temp.time_query(sql text) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    t1 timestamptz;
    result numeric;
BEGIN
    t0 := clock_timestamp();
    EXECUTE sql INTO result;
    t1 := clock_timestamp();
    RETURN extract(epoch FROM t1 - t0) * 1000;
END
$$;

DO $$
DECLARE
    rounds CONSTANT int := 5;
    q record;
    ms double precision;
BEGIN
    FOR r IN 1 .. rounds LOOP
        FOR q IN SELECT * FROM bench_query
                 ORDER BY CASE WHEN r % 2 = 1 THEN ord ELSE -ord END LOOP
            ms := pg_temp.time_query(q.sql);
            INSERT INTO bench_run VALUES (q.ord, r, ms);
            RAISE NOTICE 'round % query % %: % ms', r, q.ord, q.name, round(ms::numeric, 1);
        END LOOP;
    END LOOP;
END
$$;

-------------------------------------------------------------------------------
-- Results
-------------------------------------------------------------------------------
SELECT current_setting('server_version') AS server,
       current_setting('max_parallel_workers_per_gather') AS max_parallel_workers_per_gather,
       current_setting('jit') AS jit,
       current_setting('shared_buffers') AS shared_buffers;

WITH med AS (
    SELECT ord, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS ms,
           min(ms) AS min_ms, max(ms) AS max_ms
      FROM bench_run GROUP BY ord
), base AS (SELECT ms FROM med WHERE ord = 1)
SELECT q.ord AS "#", q.name AS query,
       round(m.ms::numeric, 1) AS median_ms,
       round(m.min_ms::numeric, 1) AS min_ms,
       round(m.max_ms::numeric, 1) AS max_ms,
       round((m.ms * 1e6 / 2000000)::numeric, 1) AS ns_per_row,
       round((m.ms / b.ms)::numeric, 2) AS x_baseline,
       CASE q.ord WHEN 2 THEN '<= 1.5' WHEN 3 THEN '<= 2.0' ELSE '' END AS target,
       CASE q.ord WHEN 2 THEN CASE WHEN m.ms / b.ms <= 1.5 THEN 'met' ELSE 'MISSED' END
                  WHEN 3 THEN CASE WHEN m.ms / b.ms <= 2.0 THEN 'met' ELSE 'MISSED' END
                  ELSE '' END AS status
  FROM bench_query q JOIN med m USING (ord) CROSS JOIN base b
 ORDER BY q.ord;

WITH med AS (
    SELECT ord, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS ms
      FROM bench_run GROUP BY ord
)
SELECT round(((SELECT ms FROM med WHERE ord = 4) / (SELECT ms FROM med WHERE ord = 3))::numeric, 1)
           AS graduated_speedup_plpgsql_over_c,
       round((((SELECT ms FROM med WHERE ord = 3) - (SELECT ms FROM med WHERE ord = 1)) * 1e6 / 2000000)::numeric, 1)
           AS c_graduated_ns_per_row_over_baseline,
       round((((SELECT ms FROM med WHERE ord = 2) - (SELECT ms FROM med WHERE ord = 1)) * 1e6 / 2000000)::numeric, 1)
           AS c_flat_ns_per_row_over_baseline;

DROP TABLE bench_tariff_rate;
DROP FUNCTION plpgsql_graduated(numeric);
