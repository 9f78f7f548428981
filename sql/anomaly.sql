-- Anomaly and fraud detection (SPEC section 6): the usage_baseline aggregate
-- (by hand, bad input, parallel = serial = percentile_cont), the settings,
-- and detect_anomalies() on planted incidents: each kind is detected, clean
-- traffic, duplicates, unknown accounts and short histories raise nothing, a
-- second run raises nothing, a new incident raises a new alert, NOTIFY
-- convbill_alert carries each new alert (the sender's PID is masked), and a
-- holiday that moves every account is nobody's spike.  Every expected number
-- is computed by hand in the comment next to it.
-- a fresh, empty catalog for this file (pg_regress runs every file in one database)
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS convbill CASCADE;
CREATE EXTENSION convbill;
RESET client_min_messages;
SET search_path = convbill, public;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, MDY';
SET IntervalStyle = 'postgres';
SET extra_float_digits = 0;
\set VERBOSITY terse
\set SHOW_CONTEXT never

-- errors as "SQLSTATE: message", so each refusal shows its code
CREATE FUNCTION pg_temp.fails(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-------------------------------------------------------------------------------
-- 1. usage_baseline(value [, periods]) -> (samples, median, mad)
-------------------------------------------------------------------------------
-- 1 2 3 10: median (2 + 3) / 2 = 2.5; deviations 1.5 0.5 0.5 7.5: MAD 1
SELECT usage_baseline(v) FROM (VALUES (1.0::float8), (2), (3), (10)) t(v);
-- the same in a series of 7 (three zeros): 0 0 0 1 2 3 10: median 1;
-- deviations 1 1 1 0 1 2 9 -> 0 1 1 1 1 2 9: MAD 1
SELECT usage_baseline(v, 7) FROM (VALUES (1.0::float8), (2), (3), (10)) t(v);
-- NULLs are ignored: 4 8 0 0 -> median 2; deviations 2 6 2 2: MAD 2
SELECT usage_baseline(v, 4) FROM (VALUES (4.0::float8), (NULL), (8)) t(v);
-- one value; no value at all (NULL); only NULLs (NULL)
SELECT usage_baseline(v) FROM (VALUES (5.5::float8)) t(v);
SELECT usage_baseline(v) IS NULL AS empty FROM (SELECT 1.0::float8 WHERE false) t(v);
SELECT usage_baseline(v, 3) IS NULL AS only_nulls FROM (VALUES (NULL::float8)) t(v);
-- per group, with the fields
SELECT g, (b).samples, (b).median, (b).mad
FROM (SELECT g, usage_baseline(v, 5) AS b
      FROM (VALUES ('a', 10.0::float8), ('a', 20), ('b', 7), ('b', 7), ('b', 7), ('b', 7), ('b', 100)) t(g, v)
      GROUP BY g) x ORDER BY g;
-- a: 10 20 0 0 0 -> median 0; deviations 10 20 0 0 0: MAD 0
-- b: 7 7 7 7 100 -> median 7; deviations 0 0 0 0 93: MAD 0
-- bad input, one at a time
SELECT pg_temp.fails($$SELECT convbill.usage_baseline(v) FROM (VALUES ('NaN'::float8)) t(v)$$);
SELECT pg_temp.fails($$SELECT convbill.usage_baseline(v) FROM (VALUES (1.0::float8), ('Infinity')) t(v)$$);
SELECT pg_temp.fails($$SELECT convbill.usage_baseline(v) FROM (VALUES ('-Infinity'::float8)) t(v)$$);
SELECT pg_temp.fails($$SELECT convbill.usage_baseline(v, 0) FROM (VALUES (1.0::float8)) t(v)$$);
SELECT pg_temp.fails($$SELECT convbill.usage_baseline(v, NULL) FROM (VALUES (1.0::float8)) t(v)$$);
SELECT pg_temp.fails($$SELECT convbill.usage_baseline(v, 2) FROM (VALUES (1.0::float8), (2), (3)) t(v)$$);
SELECT pg_temp.fails($$SELECT convbill.usage_baseline(v, p) FROM (VALUES (1.0::float8, 3), (2, 4)) t(v, p)$$);

-- Parallel aggregation: workers serialize their values, the leader combines
-- them; the result equals the serial one, and both equal percentile_cont.
CREATE TABLE baseline_input AS
SELECT i % 1000 AS g, ((i::bigint * 7919) % 10007) / 7.0::float8 AS v
FROM generate_series(1, 200000) i;
ANALYZE baseline_input;
SET max_parallel_workers_per_gather = 0;
CREATE TEMP TABLE baseline_serial AS
SELECT g, usage_baseline(v) AS b, usage_baseline(v, 250) AS bp FROM baseline_input GROUP BY g;
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
EXPLAIN (COSTS OFF)
SELECT g, usage_baseline(v) AS b, usage_baseline(v, 250) AS bp FROM baseline_input GROUP BY g;
CREATE TEMP TABLE baseline_parallel AS
SELECT g, usage_baseline(v) AS b, usage_baseline(v, 250) AS bp FROM baseline_input GROUP BY g;
RESET max_parallel_workers_per_gather;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
SELECT (SELECT count(*) FROM baseline_serial) AS groups,
       (SELECT count(*) FROM (SELECT * FROM baseline_serial EXCEPT SELECT * FROM baseline_parallel) d)
     + (SELECT count(*) FROM (SELECT * FROM baseline_parallel EXCEPT SELECT * FROM baseline_serial) d) AS differences;
-- 200 values a group: the median and MAD of percentile_cont, within 1e-9
WITH m AS (SELECT g, percentile_cont(0.5) WITHIN GROUP (ORDER BY v) AS median
           FROM baseline_input GROUP BY g),
     d AS (SELECT i.g, m.median, percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(i.v - m.median)) AS mad
           FROM baseline_input i JOIN m USING (g) GROUP BY i.g, m.median)
SELECT count(*) AS groups,
       count(*) FILTER (WHERE (s.b).samples = 200 AND abs((s.b).median - d.median) < 1e-9
                          AND abs((s.b).mad - d.mad) < 1e-9) AS equal_to_percentile_cont
FROM baseline_serial s JOIN d USING (g);
DROP TABLE baseline_input;

-------------------------------------------------------------------------------
-- 2. Settings
-------------------------------------------------------------------------------
SELECT * FROM anomaly_settings();
SHOW convbill.irsf_min_seconds;
SET convbill.irsf_window = '2h';
SET convbill.irsf_min_seconds = '90min';
SET convbill.velocity_factor = 4.5;
SELECT irsf_window, irsf_min_seconds, velocity_factor FROM anomaly_settings();
RESET convbill.irsf_window;
RESET convbill.irsf_min_seconds;
RESET convbill.velocity_factor;
SELECT pg_temp.fails($$SET convbill.velocity_window = 0$$);
SELECT pg_temp.fails($$SET convbill.anomaly_spike_score = 0.5$$);
SELECT pg_temp.fails($$SET convbill.anomaly_baseline_days = 3$$);
SELECT pg_temp.fails($$SET convbill.anomaly_spike_threshold = 5$$);   -- no such setting (reserved prefix)
SELECT pg_temp.fails($$SELECT convbill.detect_anomalies(NULL)$$);
SELECT pg_temp.fails($$SELECT convbill.detect_anomalies('infinity')$$);
SELECT pg_temp.fails($$SELECT convbill.refresh_anomaly_baseline('-infinity')$$);

-------------------------------------------------------------------------------
-- 3. Planted incidents.  History: March 2026 from the 1st (day d = 0), UTC.
-- detect_anomalies('2026-03-30') examines [03-29, 03-30) against the 28 days
-- [03-01, 03-29).
-------------------------------------------------------------------------------
INSERT INTO service VALUES ('voice', 'second', 'Calls'), ('sms', 'message', 'Text messages');
INSERT INTO destination VALUES ('49', 'DE'), ('882', 'INTL-NET'), ('239', 'ST');
INSERT INTO risk_zone (zone, reason) VALUES ('INTL-NET', 'international networks'), ('ST', 'IRSF hot destination');
INSERT INTO account (account_id, external_ref, name, currency)
SELECT i, 'A' || i, 'account ' || i, 'EUR' FROM generate_series(1, 6) i;
-- every account calls 4 + d % 3 times a day, 100 s each, hourly from 10:00
-- (4 5 6 4 5 6 ...); account 6 only from 03-26 (3 days of history on 03-29)
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs, status)
SELECT a, 'msc', format('v%s-%s-%s', a, d, k), 'voice', 100,
       timestamptz '2026-03-01 09:00+00' + d * interval '1 day' + k * interval '1 hour',
       '{"destination": "+49 30 1234"}', CASE WHEN d < 28 THEN 'rated' ELSE 'pending' END
FROM generate_series(1, 6) a, generate_series(0, 30) d, LATERAL generate_series(1, 4 + d % 3) k
WHERE a <> 6 OR d >= 25;
-- account 5 also texts 40 times a day, every 30 minutes from 00:15
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs)
SELECT 5, 'smsc', format('s5-%s-%s', d, h), 'sms', 1,
       timestamptz '2026-03-01 00:15+00' + d * interval '1 day' + h * interval '30 minutes',
       '{"destination": "+49 151 1234"}'
FROM generate_series(0, 30) d, generate_series(0, 39) h;
-- the incidents of 03-29
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs, status)
-- account 2, spike: 40 calls of 600 s every 5 minutes from 12:05
SELECT 2, 'msc', 'spike-' || k, 'voice', 600, timestamptz '2026-03-29 12:00+00' + k * interval '5 minutes',
       '{"destination": "+49 30 1234"}'::jsonb, 'pending'
FROM generate_series(1, 40) k
UNION ALL
-- account 3, IRSF: 6 calls of 300 s to +882 (INTL-NET), 10:05 to 10:30
SELECT 3, 'msc', 'irsf-' || k, 'voice', 300, timestamptz '2026-03-29 10:05+00' + k * interval '5 minutes',
       '{"destination": "+882 16 1234"}', 'pending'
FROM generate_series(0, 5) k
UNION ALL
-- account 4, IRSF with few long calls: 2 x 2000 s to +239 (ST), 20:00 and 20:30
SELECT 4, 'msc', 'long-' || k, 'voice', 2000, timestamptz '2026-03-29 20:00+00' + k * interval '30 minutes',
       '{"destination": "+239 99 1234"}', 'rejected'
FROM generate_series(0, 1) k
UNION ALL
-- account 5, velocity: 35 texts 5 s apart from 11:00:00, and again from 18:00:00
SELECT 5, 'smsc', 'burst-' || h || '-' || k, 'sms', 1, timestamptz '2026-03-29 00:00+00' + h * interval '1 hour' + k * interval '5 seconds',
       '{"destination": "+49 151 1234"}', 'pending'
FROM generate_series(0, 34) k, (VALUES (11), (18)) b(h)
UNION ALL
-- account 6, a spike without the history to judge it: 40 calls of 600 s, one a minute
SELECT 6, 'msc', 'new-' || k, 'voice', 600, timestamptz '2026-03-29 12:00+00' + k * interval '1 minute',
       '{"destination": "+49 30 1234"}', 'pending'
FROM generate_series(1, 40) k
UNION ALL
-- account 1: a burst that rating found to be re-sent duplicates (ignored)
SELECT 1, 'msc', 'dup-' || k, 'voice', 600, timestamptz '2026-03-29 13:00+00' + k * interval '10 seconds',
       '{"destination": "+882 16 1234"}', 'duplicate'
FROM generate_series(1, 40) k
UNION ALL
-- account 99 does not exist (ignored)
SELECT 99, 'smsc', 'ghost-' || k, 'sms', 1, timestamptz '2026-03-29 09:00+00' + k * interval '1 second',
       '{"destination": "+882 16 1234"}', 'pending'
FROM generate_series(1, 50) k;

-- the thresholds are settings: raised just above these incidents, nothing
BEGIN;
SET LOCAL convbill.anomaly_spike_score = 18;       -- account 2 scores 17.89
SET LOCAL convbill.irsf_min_events = 7;             -- account 3 made 6 calls
SET LOCAL convbill.irsf_min_seconds = '4001s';      -- account 4 talked 4000 s
SET LOCAL convbill.velocity_min_events = 36;        -- account 5 sent 35 texts
SELECT detect_anomalies('2026-03-30 00:00+00') AS raised_with_higher_thresholds;
ROLLBACK;

-- with the defaults: 5 alerts, in (account, service, kind, window) order
--  1 account 2 voice spike: 5 + 40 = 45 events against a median of 5 (MAD 1):
--    z = 40 / max(1.4826 x 1, sqrt(5) = 2.236, 0.5, 1) = 17.89 (45 >= 4 x 5,
--    40 more >= 20); quantity 500 + 24000 = 24500 against 500: log z =
--    ln(24501/501) / (1.4826 x log MAD 0.18199, below) = 3.88986 / 0.26982 = 14.42
--  2 account 3 voice irsf: 6 calls within an hour (>= 5), 1800 s: score 6 / 5 = 1.20
--  3 account 4 voice irsf: 2 calls, 4000 s >= 3600: score 4000 / 3600 = 1.11
--  4, 5 account 5 sms velocity: 35 texts within 10 minutes (>= 30, and >= 10 x
--    its usual busiest slot of 1): score 35; twice, 7 hours apart
-- not: account 1 (duplicates), 3 and 4 as spikes (6 and 1 events more than
-- the median 5, not 20), 5 as a spike (110 texts < 4 x 40), 6 (3 days of
-- history < 7), 99 (no such account)
LISTEN convbill_alert;
\o | sed -e 's/PID [0-9]*/PID (pid)/'
SELECT detect_anomalies('2026-03-30 00:00+00') AS raised;
\o
SELECT account_id, alert_id, service, kind, detected_at, observed, expected, score, window_start, window_end
FROM usage_alert ORDER BY alert_id;
SELECT alert_id, detail FROM usage_alert ORDER BY alert_id;

-- the baseline: every account's 28 days, zeros for the days without usage
--   accounts 1-5 voice: 4 x 10 days, 5 x 9, 6 x 9: median 5, MAD 1; 400 500
--   600 s: median 500, log median ln(501) = 6.2166, log MAD ln(601/501) =
--   0.18199; one call per 10-minute slot: peak 1
--   the last 7 days (03-22 to 03-28): 4 5 6 4 5 6 4: median 5 (500 s)
--   account 5 sms: 40 a day, MAD 0, peak 1
--   account 6 voice: 3 days (03-26 to 03-28): 6 4 5: median 5, MAD 1
SELECT account_id, service, days, quantity_median, round(log_quantity_median::numeric, 4) AS log_median,
       round(log_quantity_mad::numeric, 5) AS log_mad, events_median, events_mad, peak_median,
       quantity_recent_median AS q_recent, events_recent_median AS n_recent
FROM anomaly_baseline ORDER BY 1, 2;
SELECT upto, days, slot, baselines FROM anomaly_baseline_run;
-- the same medians from the events with percentile_cont (zeros included)
WITH first AS (SELECT e.account_id, min((e.started_at AT TIME ZONE 'UTC')::date) AS first_day
               FROM usage_event e
               WHERE e.started_at >= '2026-03-01' AND e.started_at < '2026-03-29' AND e.status <> 'duplicate'
               GROUP BY 1),
     daily AS (SELECT f.account_id, s.service, d::date AS day,
                      (SELECT count(*) FROM usage_event e
                       WHERE e.account_id = f.account_id AND e.service = s.service AND e.status <> 'duplicate'
                         AND (e.started_at AT TIME ZONE 'UTC')::date = d::date) AS n,
                      (SELECT coalesce(sum(e.quantity), 0) FROM usage_event e
                       WHERE e.account_id = f.account_id AND e.service = s.service AND e.status <> 'duplicate'
                         AND (e.started_at AT TIME ZONE 'UTC')::date = d::date) AS q
               FROM first f
               CROSS JOIN (VALUES ('voice'), ('sms')) s(service)
               CROSS JOIN generate_series(f.first_day, date '2026-03-28', interval '1 day') d),
     m AS (SELECT account_id, service, count(*) AS days,
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY n) AS n_median,
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY ln(1 + q::float8)) AS lq_median
           FROM daily GROUP BY 1, 2 HAVING sum(n) > 0)
SELECT count(*) AS baselines,
       count(*) FILTER (WHERE b.days = m.days AND b.events_median = m.n_median
                          AND abs(b.log_quantity_median - m.lq_median) < 1e-9) AS equal_to_percentile_cont
FROM m JOIN anomaly_baseline b USING (account_id, service);

-- a second run raises nothing; neither does one 5 minutes later: the spike's
-- window moves on (window_end), the others are the same bursts (last_seen_at)
SELECT detect_anomalies('2026-03-30 00:00+00') AS raised_again;
SELECT detect_anomalies('2026-03-30 00:05+00') AS raised_5_minutes_later;
SELECT alert_id, kind, window_start, window_end, last_seen_at FROM usage_alert ORDER BY alert_id;

-- 03-30: account 3 calls INTL-NET again, 6 calls from 15:00 — a new incident
-- (more than an hour after the last one ended): alert 6.  Account 2's day is
-- normal again (6 calls), and its spike is over.
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs)
SELECT 3, 'msc', 'irsf2-' || k, 'voice', 300, timestamptz '2026-03-30 15:00+00' + k * interval '5 minutes',
       '{"destination": "+882 16 9999"}'
FROM generate_series(0, 5) k;
\o | sed -e 's/PID [0-9]*/PID (pid)/'
SELECT detect_anomalies('2026-03-31 00:00+00') AS raised;
\o
-- 03-31: account 2 spikes again — after its first spike ended, so a new
-- alert (7).  Its baseline now holds the first spike's day (45 calls) among
-- 27 normal days: median 5 and MAD 1 all the same (the point of medians).
-- The median of its last 7 days (03-24 to 03-30: 6 4 5 6 4 45 6) is 6, its
-- level 6 (quantity: 600): 4 + 40 = 44 events, z = (44 - 6) / sqrt(6) = 15.51
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs)
SELECT 2, 'msc', 'spike2-' || k, 'voice', 600, timestamptz '2026-03-31 12:00+00' + k * interval '5 minutes',
       '{"destination": "+49 30 1234"}'
FROM generate_series(1, 40) k;
\o | sed -e 's/PID [0-9]*/PID (pid)/'
SELECT detect_anomalies('2026-04-01 00:00+00') AS raised;
\o
SELECT account_id, alert_id, service, kind, detected_at, observed, expected, score, window_start, window_end, last_seen_at
FROM usage_alert ORDER BY alert_id;
SELECT account_id, service, events_median, events_mad, events_recent_median, quantity_recent_median
FROM anomaly_baseline WHERE account_id = 2;
-- the days summarized: 03-01 to 03-30, each once (and the last two again);
-- the days before the baseline's are kept for a year
SELECT min(day), max(day), count(*) FROM anomaly_daily_done;

-------------------------------------------------------------------------------
-- 4. A holiday: 40 accounts text 4 times as much as usual on the same day —
-- nobody's spike (the population factor is 4) — but one that texts 20 times
-- as much stands out even then.
-------------------------------------------------------------------------------
INSERT INTO account (account_id, external_ref, name, currency)
SELECT i, 'H' || i, 'holiday ' || i, 'EUR' FROM generate_series(100, 139) i;
-- 10 texts a day from 03-04 to 04-01, every 30 minutes from 08:00
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs)
SELECT a, 'smsc', format('h%s-%s-%s', a, d, k), 'sms', 1,
       timestamptz '2026-03-04 08:00+00' + d * interval '1 day' + k * interval '30 minutes',
       '{"destination": "+49 151 1234"}'
FROM generate_series(100, 139) a, generate_series(0, 28) d, generate_series(0, 9) k;
-- 04-01, the holiday: 30 more each (40 = 4 x 10); account 139: 190 more (200 = 20 x 10)
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs)
SELECT a, 'smsc', format('hh%s-%s', a, k), 'sms', 1,
       timestamptz '2026-04-01 08:00+00' + k * interval '5 minutes',
       '{"destination": "+49 151 1234"}'
FROM generate_series(100, 139) a, LATERAL generate_series(1, CASE WHEN a = 139 THEN 190 ELSE 30 END) k;
-- their history arrived after its days were summarized: the baseline has
-- only the two days summarized again (03-30, 03-31) until a forced refresh
SELECT refresh_anomaly_baseline('2026-04-02 00:00+00') AS baselines;
SELECT days, count(*) AS accounts FROM anomaly_baseline WHERE account_id >= 100 GROUP BY 1;
SELECT refresh_anomaly_baseline('2026-04-02 00:00+00', force => true) AS baselines;
SELECT days, count(*) AS accounts FROM anomaly_baseline WHERE account_id >= 100 GROUP BY 1;
-- population factor: the median of 40/10 (39 accounts) and 200/10: 4.  Account
-- 139: expected 10 x 4 = 40, 160 more; z = 160 / max(0, sqrt(40) = 6.325, 4, 1)
-- = 25.30; 200 >= 4 x 40; log z = ln(201 / 11 / 4) / 0.1 = 15.19.  The
-- others: 40 - 40 = 0 more.
-- (Velocity: 190 texts 5 minutes apart is 3 in any 10 minutes.)
\o | sed -e 's/PID [0-9]*/PID (pid)/'
SELECT detect_anomalies('2026-04-02 00:00+00') AS raised;
\o
UNLISTEN convbill_alert;
SELECT account_id, alert_id, service, kind, observed, expected, score, detail
FROM usage_alert WHERE account_id >= 100 ORDER BY alert_id;
-- without the 30 accounts the factor needs, it would be 1: all 40 would spike
SELECT count(*) AS would_spike_without_factor
FROM (SELECT e.account_id, count(*) AS n FROM usage_event e
      WHERE e.account_id >= 100 AND e.started_at >= '2026-04-01' AND e.started_at < '2026-04-02'
      GROUP BY 1) w
JOIN anomaly_baseline b ON b.account_id = w.account_id AND b.service = 'sms'
WHERE w.n - b.events_median >= 20 AND w.n >= 4 * b.events_median
  AND (w.n - b.events_median) / greatest(1.4826 * b.events_mad, sqrt(b.events_median), 1) >= 6;

-- the job runs it by name: a run logged with its row count
SELECT run_job('anomaly') IS NOT NULL AS ran;
SELECT job, status, error FROM job_run WHERE job = 'anomaly';

-- a usage event with a quantity beyond float range (rejected by rating as
-- invalid_quantity, still read here) is left out, not a failure of every
-- run whose baseline covers its day (it stopped fraud detection for 28 days)
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at, attrs)
VALUES (100, 'x', 'huge-1', 'sms', 1e400, '2026-04-01 12:00+00', '{}');
SELECT detect_anomalies('2026-04-02 00:10+00') >= 0 AS detected;
SELECT refresh_anomaly_baseline('2026-04-03 00:00+00', force => true) >= 0 AS baseline_refreshed;

-- one incident is one alert whether the job ran during it or only after:
-- 901 and 902 send the same two bursts of texts (35, 5 s apart, from 10:00;
-- then 10 from 10:12 and 25 from 10:13, 1 s apart); the job runs at 10:05
-- and 10:20 for 901, only at 10:20 for 902 (its 10:05 alert removed).  The
-- second burst's window starts within a window (10 minutes) of the first's
-- last event, so it continues the first incident in both cases (it was two
-- alerts for 902).
SET convbill.anomaly_min_history = 1;
INSERT INTO account (account_id, external_ref, name, currency) VALUES
    (901, 'VEL-901', 'Velocity 901', 'EUR'), (902, 'VEL-902', 'Velocity 902', 'EUR');
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
SELECT a, 's', 'b1-' || i, 'sms', 1, '2026-11-25 10:00:00+00'::timestamptz + i * interval '5 seconds'
FROM generate_series(0, 34) i, (VALUES (901), (902)) v(a);
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
SELECT a, 's', 'b2-' || i, 'sms', 1,
       CASE WHEN i < 10 THEN '2026-11-25 10:12:00+00'::timestamptz + i * interval '1 second'
            ELSE '2026-11-25 10:13:00+00'::timestamptz + (i - 10) * interval '1 second' END
FROM generate_series(0, 34) i, (VALUES (901), (902)) v(a);
\o /dev/null
SELECT detect_anomalies('2026-11-25 10:05:00+00');
DELETE FROM usage_alert WHERE account_id = 902;
SELECT detect_anomalies('2026-11-25 10:20:00+00');
\o
SELECT account_id, kind, count(*) AS alerts, min(window_start) AS window_start, max(window_end) AS window_end
FROM usage_alert WHERE account_id IN (901, 902) GROUP BY 1, 2 ORDER BY 1, 2;
RESET convbill.anomaly_min_history;
