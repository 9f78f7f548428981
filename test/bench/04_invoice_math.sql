-- test/bench/04_invoice_math.sql — the bill run's line aggregate against numeric.
--
-- Run by `test/run.sh bench` (BENCH=04 for this one alone), i.e.
-- psql -X -v ON_ERROR_STOP=1 -d convbill_bench -f test/bench/04_invoice_math.sql.
-- Over 2,000,000 charges (EUR, 6 decimals, 1 in 10 with 12 decimals, both
-- signs) grouped by 100,003 keys — the shape of a bill run's
-- GROUP BY account, service, zone — it times, on a single core:
--   (1) floor        count(*)                            -- scan + hash grouping alone
--   (2) numeric      round(sum(amount), 2)
--   (3) convbill     convbill.invoice_line_total(amount, currency)
--   (4) numeric      sum(amount)
--   (5) convbill     convbill.invoice_sum(amount)
-- and, as context, (6)/(7) the same line total over all rows in one group
-- (no hash table), and (8)/(9) (2)/(3) with 2 parallel workers.
-- Correctness first: every group's invoice_line_total must equal
-- round(sum(amount), 2) and invoice_sum must equal sum(amount) in value and
-- scale, serial and parallel (an exception stops the run if not).
-- Each query runs 5 times, the order reversed every other round; the median
-- counts.  Reported: wall-clock (median, best) and, for the serial queries,
-- the backend's CPU time from /proc (steadier on a busy machine), ns per
-- row, time over the grouping floor, and the ratios convbill / numeric.
-- Runtime: about a minute on 2 cores.

\set ON_ERROR_STOP 1
\timing off
SET client_min_messages = notice;
SET max_parallel_workers_per_gather = 0;
SET jit = off;
SET work_mem = '64MB';

CREATE EXTENSION IF NOT EXISTS convbill;

-------------------------------------------------------------------------------
-- Data: 2,000,000 charges in 100,003 groups, deterministic.
-------------------------------------------------------------------------------
DROP TABLE IF EXISTS bench04_charge;
CREATE TABLE bench04_charge AS
SELECT i % 100003 AS k,
       'EUR'::text AS currency,
       CASE WHEN i % 10 = 0 THEN ((i::bigint * 104729) % 2000000001 - 1000000000) * 0.000000000001
            ELSE ((i::bigint * 7919) % 2000001 - 1000000) * 0.000001 END AS amount
FROM generate_series(1, 2000000) i;
VACUUM (FREEZE, ANALYZE) bench04_charge;
SELECT count(*) AS rows, count(DISTINCT k) AS groups,
       pg_size_pretty(pg_relation_size('bench04_charge')) AS size
FROM bench04_charge;

-- The queries: name, SQL, parallel.  Each returns one row (no result transfer).
CREATE TEMP TABLE bench_query (ord int PRIMARY KEY, name text NOT NULL, sql text NOT NULL,
                               parallel boolean NOT NULL);
INSERT INTO bench_query VALUES
 (1, 'floor     count(*) GROUP BY k',
     $q$SELECT count(*), sum(x) FROM (SELECT k, count(*) AS x FROM bench04_charge GROUP BY k) s$q$, false),
 (2, 'numeric   round(sum(amount), 2) GROUP BY k',
     $q$SELECT count(*), sum(x) FROM (SELECT k, round(sum(amount), 2) AS x FROM bench04_charge GROUP BY k) s$q$, false),
 (3, 'convbill  invoice_line_total GROUP BY k',
     $q$SELECT count(*), sum(x) FROM (SELECT k, convbill.invoice_line_total(amount, currency) AS x FROM bench04_charge GROUP BY k) s$q$, false),
 (4, 'numeric   sum(amount) GROUP BY k',
     $q$SELECT count(*), sum(x) FROM (SELECT k, sum(amount) AS x FROM bench04_charge GROUP BY k) s$q$, false),
 (5, 'convbill  invoice_sum GROUP BY k',
     $q$SELECT count(*), sum(x) FROM (SELECT k, convbill.invoice_sum(amount) AS x FROM bench04_charge GROUP BY k) s$q$, false),
 (6, 'numeric   round(sum(amount), 2), one group',
     $q$SELECT round(sum(amount), 2) FROM bench04_charge$q$, false),
 (7, 'convbill  invoice_line_total, one group',
     $q$SELECT convbill.invoice_line_total(amount, currency) FROM bench04_charge$q$, false),
 (8, 'numeric   round(sum(amount), 2) GROUP BY k, 2 workers',
     $q$SELECT count(*), sum(x) FROM (SELECT k, round(sum(amount), 2) AS x FROM bench04_charge GROUP BY k) s$q$, true),
 (9, 'convbill  invoice_line_total GROUP BY k, 2 workers',
     $q$SELECT count(*), sum(x) FROM (SELECT k, convbill.invoice_line_total(amount, currency) AS x FROM bench04_charge GROUP BY k) s$q$, true);

-- Run sql with or without 2 parallel workers (the settings revert at the end
-- of the calling statement's transaction).
CREATE FUNCTION pg_temp.set_parallel(on_ boolean) RETURNS void LANGUAGE sql AS $$
    SELECT set_config('max_parallel_workers_per_gather', CASE WHEN on_ THEN '2' ELSE '0' END, true);
    SELECT set_config('parallel_setup_cost', CASE WHEN on_ THEN '0' ELSE '1000' END, true);
    SELECT set_config('parallel_tuple_cost', CASE WHEN on_ THEN '0' ELSE '0.1' END, true);
$$;

-------------------------------------------------------------------------------
-- Correctness first (also warms every code path): per group, serial and
-- parallel, against PostgreSQL's numeric.
-------------------------------------------------------------------------------
CREATE FUNCTION pg_temp.check_lines(parallel boolean) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    groups bigint; bad_total bigint; bad_sum bigint; workers int; plan json;
BEGIN
    PERFORM pg_temp.set_parallel(parallel);
    EXECUTE $q$EXPLAIN (FORMAT JSON, COSTS OFF)
               SELECT k, convbill.invoice_line_total(amount, currency) FROM bench04_charge GROUP BY k$q$ INTO plan;
    workers := coalesce((plan::jsonb #>> '{0,Plan,Plans,0,Workers Planned}')::int, 0);
    CREATE TEMP TABLE bench04_lines AS
    SELECT k, convbill.invoice_line_total(amount, currency) AS total, round(sum(amount), 2) AS pg_total,
           convbill.invoice_sum(amount) AS exact, sum(amount) AS pg_exact
    FROM bench04_charge GROUP BY k;
    SELECT count(*),
           count(*) FILTER (WHERE total IS DISTINCT FROM pg_total OR scale(total) <> scale(pg_total)),
           count(*) FILTER (WHERE exact IS DISTINCT FROM pg_exact OR scale(exact) <> scale(pg_exact))
      INTO groups, bad_total, bad_sum FROM bench04_lines;
    DROP TABLE bench04_lines;
    RAISE NOTICE 'check (% workers planned): % groups, % line totals and % sums differ from numeric',
        workers, groups, bad_total, bad_sum;
    IF groups <> 100003 OR bad_total <> 0 OR bad_sum <> 0 OR (parallel AND workers = 0) THEN
        RAISE EXCEPTION 'invoice math mismatch: % groups, % totals, % sums differ, % workers',
            groups, bad_total, bad_sum, workers;
    END IF;
END $$;
SELECT pg_temp.check_lines(false);
SELECT pg_temp.check_lines(true);

-------------------------------------------------------------------------------
-- Timing: wall-clock of each whole query (clock_timestamp), 5 rounds.
-------------------------------------------------------------------------------
CREATE TEMP TABLE bench_run (ord int, round int, ms double precision, cpu_ms double precision);

-- CPU time of this backend so far (user + system, /proc, 10 ms ticks), or NULL
-- where /proc cannot be read: robust to other load on the machine, which
-- wall-clock time is not.  Parallel workers' CPU is not counted.
CREATE FUNCTION pg_temp.cpu_ms() RETURNS double precision LANGUAGE plpgsql AS $$
DECLARE f text[];
BEGIN
    f := regexp_split_to_array(split_part(pg_read_file('/proc/' || pg_backend_pid() || '/stat'), ') ', 2), ' ');
    RETURN (f[12]::bigint + f[13]::bigint) * 10.0;   -- fields 14 and 15 (utime, stime)
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;

CREATE FUNCTION pg_temp.time_query(sql text, parallel boolean, OUT ms double precision,
                                   OUT cpu_ms double precision)
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    t1 timestamptz;
    c0 double precision;
    result record;
BEGIN
    PERFORM pg_temp.set_parallel(parallel);
    c0 := pg_temp.cpu_ms();
    t0 := clock_timestamp();
    EXECUTE sql INTO result;
    t1 := clock_timestamp();
    cpu_ms := CASE WHEN NOT parallel THEN pg_temp.cpu_ms() - c0 END;
    ms := extract(epoch FROM t1 - t0) * 1000;
    PERFORM pg_temp.set_parallel(false);
END
$$;

DO $$
DECLARE
    rounds CONSTANT int := 5;
    q record;
    t record;
BEGIN
    FOR r IN 1 .. rounds LOOP
        FOR q IN SELECT * FROM bench_query
                 ORDER BY CASE WHEN r % 2 = 1 THEN ord ELSE -ord END LOOP
            t := pg_temp.time_query(q.sql, q.parallel);
            INSERT INTO bench_run VALUES (q.ord, r, t.ms, t.cpu_ms);
            RAISE NOTICE 'round % query % %: % ms (cpu % ms)', r, q.ord, q.name, round(t.ms::numeric, 1),
                round(t.cpu_ms::numeric);
        END LOOP;
    END LOOP;
END
$$;

-------------------------------------------------------------------------------
-- Results
-------------------------------------------------------------------------------
SELECT current_setting('server_version') AS server, current_setting('jit') AS jit,
       current_setting('work_mem') AS work_mem, current_setting('shared_buffers') AS shared_buffers;

CREATE TEMP TABLE bench_med AS
SELECT ord, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS ms, min(ms) AS min_ms, max(ms) AS max_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY cpu_ms) AS cpu_ms
FROM bench_run GROUP BY ord;

SELECT q.ord AS "#", q.name AS query,
       round(m.ms::numeric, 1) AS median_ms,
       round(m.min_ms::numeric, 1) AS min_ms,
       round(m.max_ms::numeric, 1) AS max_ms,
       round(m.cpu_ms::numeric) AS cpu_ms,
       round((m.ms * 1e6 / 2000000)::numeric, 1) AS ns_per_row,
       CASE WHEN q.ord BETWEEN 2 AND 5 THEN round((m.ms - f.ms)::numeric, 1) END AS ms_over_floor,
       CASE WHEN q.ord BETWEEN 2 AND 5 THEN round((m.cpu_ms - f.cpu_ms)::numeric) END AS cpu_ms_over_floor
FROM bench_query q JOIN bench_med m USING (ord) CROSS JOIN (SELECT ms, cpu_ms FROM bench_med WHERE ord = 1) f
ORDER BY q.ord;

-- convbill / numeric: whole query (median and best wall-clock, median CPU),
-- and the aggregate's own share, over the grouping floor.
WITH m AS (SELECT * FROM bench_med), f AS (SELECT * FROM bench_med WHERE ord = 1)
SELECT c.what,
       round(n.ms::numeric, 1) AS numeric_ms, round(v.ms::numeric, 1) AS convbill_ms,
       round((v.ms / n.ms)::numeric, 2) AS ratio,
       round((v.min_ms / n.min_ms)::numeric, 2) AS ratio_best,
       round((v.cpu_ms / nullif(n.cpu_ms, 0))::numeric, 2) AS ratio_cpu,
       CASE WHEN c.floor THEN round(((v.ms - f.ms) / nullif(n.ms - f.ms, 0))::numeric, 2) END AS ratio_over_floor,
       CASE WHEN c.floor THEN round(((v.cpu_ms - f.cpu_ms) / nullif(n.cpu_ms - f.cpu_ms, 0))::numeric, 2) END
           AS ratio_cpu_over_floor
FROM (VALUES ('line total: invoice_line_total / round(sum, 2), 100,003 groups', 2, 3, true),
             ('exact sum:  invoice_sum / sum, 100,003 groups', 4, 5, true),
             ('line total, one group', 6, 7, false),
             ('line total, 100,003 groups, 2 workers', 8, 9, false)) c(what, num, cb, floor)
JOIN m n ON n.ord = c.num JOIN m v ON v.ord = c.cb CROSS JOIN f
ORDER BY c.num;

DROP TABLE bench04_charge;
