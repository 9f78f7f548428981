-- test/bench/07_anomaly.sql — detection quality of detect_anomalies().
--
-- Run by `test/run.sh bench` (BENCH=07 for this one alone), i.e.
-- psql -X -v ON_ERROR_STOP=1 -d convbill_bench -f test/bench/07_anomaly.sql.
--
-- Synthetic traffic, seeded (setseed): 10,000 accounts over 60 days
-- from Monday 2026-01-05 (UTC), about 7 million usage events straight into
-- convbill.usage_event (rating is bypassed: detection reads usage_event).
--   segments   75 % consumers (voice, sms, data), 16 % businesses (voice,
--              sms, data; weekends at a quarter), 9 % IoT (a data record
--              every 30 minutes, now and then a day of outage)
--   volumes    heavy-tailed: each account's level is lognormal (sigma 0.9),
--              each day's is lognormal around it (sigma 0.3), and the day's
--              count is Poisson; call durations lognormal (median 90 s,
--              sigma 1, up to 4 h), data sessions lognormal
--   seasons    consumers call more at weekends, businesses much less; three
--              holidays (days 20, 38, 52): consumers x1.6 voice, x2.5 sms,
--              businesses at a fifth
--   growth     8 % of accounts grow 1-3 % a day (up to x5 over 60 days),
--              4 % shrink 1 % a day; 5 % are new accounts starting on day 5-50
--   diaspora   3 % of consumers legitimately call a high-risk zone (Cuba) now
--              and then, 5-60 minute calls
-- Incidents (ground truth in bench07_incident), days 30-59, one per account,
-- 150 of each kind on distinct accounts:
--   spike      4-12x the account's usual daily count of one service (at
--              least 25 events) within 1-4 hours; on an IoT SIM, 25-40
--              phone-sized data sessions (the SIM taken out of the device)
--   irsf       6-25 calls of about 25 minutes to a high-risk zone (Sao Tome,
--              Tokelau, satellite, Guinea) started within 5-40 minutes; or,
--              one in three, 2-4 calls of 40-90 minutes
--   velocity   40-200 events (sms; IoT: data; some businesses: short calls of
--              a hacked PBX) within 1-8 minutes
-- Detection: detect_anomalies(T) every 12 hours of days 30-59 (60 runs) with
-- the default settings: the 24-hour window it examines slides by half its
-- length, so every incident lies wholly inside some run's window, as with the
-- 'anomaly' job's 5 minutes.  Reported per kind:
-- recall (incidents with an alert of their kind, account and service whose
-- window overlaps them), false-alert rate (clean accounts — no incident —
-- with an alert of the kind, over all clean accounts), alerts on incident
-- accounts that no incident explains, repeat alerts (more than one alert for
-- one incident), and the time to detection.  Targets: recall >= 0.95, false
-- alerts <= 1 % of clean accounts; a missed target is reported, not raised.
-- Then: a re-run of the last detection raises nothing (once per incident),
-- and the baseline aggregate gives the same result in parallel as serially.
-- Two runs give the same traffic but for a handful of draws (the results
-- table has been the same).  Measured (make bench, 2 cores): spike, irsf and
-- velocity recall 1.000, false alerts 0.45 %, 0.21 % and 0 % of clean accounts.
-- Runtime: about 3 minutes on 2 cores.  Everything it creates is dropped at
-- the end (including the extension) unless psql -v keep=1.

\set ON_ERROR_STOP 1
\timing off
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS convbill CASCADE;
DROP TABLE IF EXISTS bench07_account, bench07_rate, bench07_poisson, bench07_daycount,
    bench07_incident, bench07_extra, bench07_run;
CREATE EXTENSION convbill;
SET client_min_messages = notice;
-- deterministic data: random() in one process
SET max_parallel_workers_per_gather = 0;
SET jit = off;
SET work_mem = '128MB';
SELECT setseed(0.0707);

CREATE TEMP TABLE bench07_clock (step text PRIMARY KEY, t timestamptz);
INSERT INTO bench07_clock VALUES ('start', clock_timestamp());

-------------------------------------------------------------------------------
-- Catalog
-------------------------------------------------------------------------------
INSERT INTO convbill.service (code, unit, description) VALUES
    ('voice', 'second', 'Calls'), ('sms', 'message', 'Text messages'), ('data', 'byte', 'Mobile data');
INSERT INTO convbill.destination (prefix, zone) VALUES
    ('49', 'DE'), ('33', 'FR'), ('44', 'UK'), ('48', 'PL'), ('90', 'TR'), ('1', 'NANP'),
    ('53', 'CU'), ('239', 'ST'), ('690', 'TK'), ('881', 'SAT'), ('882', 'INTL-NET'), ('224', 'GN');
INSERT INTO convbill.risk_zone (zone, reason) VALUES
    ('CU', 'high termination rates'), ('ST', 'IRSF hot destination'), ('TK', 'IRSF hot destination'),
    ('SAT', 'satellite ranges'), ('INTL-NET', 'international networks'), ('GN', 'IRSF hot destination');
SELECT convbill.ensure_usage_partitions('2026-01-01', 4) AS partitions;

-------------------------------------------------------------------------------
-- Accounts
-------------------------------------------------------------------------------
-- a standard normal deviate
CREATE FUNCTION pg_temp.gauss() RETURNS double precision LANGUAGE sql VOLATILE AS
$$ SELECT sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) $$;

CREATE TABLE bench07_account AS
SELECT i AS account_id,
       CASE WHEN u < 0.75 THEN 'consumer' WHEN u < 0.91 THEN 'business' ELSE 'iot' END AS segment,
       exp(0.9 * pg_temp.gauss()) AS level,
       CASE WHEN random() < 0.05 THEN 5 + floor(random() * 46)::int ELSE 0 END AS start_day,
       CASE WHEN g < 0.08 THEN 0.01 + 0.02 * random() WHEN g < 0.12 THEN -0.01 ELSE 0 END AS growth,
       random() < 0.04 AS diaspora     -- of consumers: 3 % of them overall
FROM (SELECT i, random() AS u, random() AS g FROM generate_series(1, 10000) i) x;
UPDATE bench07_account SET diaspora = false WHERE segment <> 'consumer';
UPDATE bench07_account SET level = 1 WHERE segment = 'iot';
-- the same plans (so the same random() draws) in every run: no autovacuum
-- analyzing the tables at some moment of one run and not of another
ALTER TABLE bench07_account SET (autovacuum_enabled = off);
ANALYZE bench07_account;
INSERT INTO convbill.account (account_id, external_ref, name, currency)
SELECT account_id, 'B07-' || account_id, segment || ' ' || account_id, 'EUR' FROM bench07_account;
SELECT segment, count(*) AS accounts, round(avg(level)::numeric, 2) AS mean_level,
       count(*) FILTER (WHERE start_day > 0) AS new, count(*) FILTER (WHERE growth > 0) AS growing,
       count(*) FILTER (WHERE diaspora) AS diaspora
FROM bench07_account GROUP BY 1 ORDER BY 1;

-- events a day at level 1 by segment and service
CREATE TABLE bench07_rate (segment text, service text, per_day float8, PRIMARY KEY (segment, service))
    WITH (autovacuum_enabled = off);
INSERT INTO bench07_rate VALUES
    ('consumer', 'voice', 2), ('consumer', 'sms', 1.5), ('consumer', 'data', 3),
    ('business', 'voice', 10), ('business', 'sms', 3), ('business', 'data', 5),
    ('iot', 'data', 48);

-- Poisson quantiles for means 0.1 .. 60.0 (step 0.1): cdf[k + 1] = P(N <= k)
CREATE TABLE bench07_poisson AS
SELECT l10, array_agg(cdf ORDER BY k) AS cdf
FROM (SELECT l.l10, f.k,
             sum(exp(-l.lam + f.k * ln(l.lam) - f.lnfact)) OVER (PARTITION BY l.l10 ORDER BY f.k) AS cdf
      FROM (SELECT l10, l10 / 10.0::float8 AS lam FROM generate_series(1, 600) l10) l
      CROSS JOIN LATERAL (SELECT k, sum(ln(greatest(k, 1)::float8)) OVER (ORDER BY k) AS lnfact
                          FROM generate_series(0, (l.lam + 10 * sqrt(l.lam) + 10)::int) k) f) x
GROUP BY l10;
ALTER TABLE bench07_poisson ADD PRIMARY KEY (l10), SET (autovacuum_enabled = off);
ANALYZE bench07_rate, bench07_poisson;

-- Events per account, service and day (day 0 = Monday 2026-01-05)
CREATE TABLE bench07_daycount AS
WITH lam AS (
    SELECT a.account_id, a.segment, a.diaspora, r.service, d.day,
           r.per_day * a.level * power(1 + a.growth, d.day - a.start_day)
           * CASE WHEN d.day IN (20, 38, 52) THEN
                  CASE a.segment WHEN 'business' THEN 0.2
                                 WHEN 'consumer' THEN CASE r.service WHEN 'voice' THEN 1.6 WHEN 'sms' THEN 2.5 ELSE 1.1 END
                                 ELSE 1 END
                  WHEN d.day % 7 IN (5, 6) THEN
                  CASE a.segment WHEN 'business' THEN 0.25 WHEN 'consumer' THEN 1.3 ELSE 1 END
                  ELSE 1 END
           * CASE WHEN a.segment = 'iot' THEN 1 ELSE exp(0.3 * pg_temp.gauss() - 0.045) END AS lam
    FROM bench07_account a
    JOIN bench07_rate r USING (segment)
    CROSS JOIN generate_series(0, 59) d(day)
    WHERE d.day >= a.start_day)
SELECT l.account_id, l.segment, l.diaspora, l.service, l.day,
       CASE WHEN l.segment = 'iot' THEN CASE WHEN random() < 0.03 THEN floor(48 * random())::int ELSE 48 END
            WHEN l.lam < 0.05 THEN 0
            WHEN l.lam <= 60 THEN width_bucket(random(), p.cdf)
            ELSE greatest(0, round(l.lam + sqrt(l.lam) * pg_temp.gauss()))::int END AS n
FROM lam l LEFT JOIN bench07_poisson p ON p.l10 = round(l.lam * 10)::int;
ALTER TABLE bench07_daycount SET (autovacuum_enabled = off);
DELETE FROM bench07_daycount WHERE n = 0;
ANALYZE bench07_daycount;
SELECT service, round(avg(n), 2) AS mean_per_active_day, sum(n) AS events FROM bench07_daycount GROUP BY 1 ORDER BY 1;

-------------------------------------------------------------------------------
-- Incidents: 150 of each kind, distinct accounts, days 30-59
-------------------------------------------------------------------------------
CREATE TABLE bench07_incident (
    incident_id serial PRIMARY KEY,
    account_id  bigint NOT NULL UNIQUE,
    kind        text NOT NULL,
    service     text NOT NULL,
    started     timestamptz NOT NULL,
    ended       timestamptz NOT NULL,
    events      integer NOT NULL,
    note        text
) WITH (autovacuum_enabled = off);
CREATE TABLE bench07_extra (account_id bigint, service text, quantity numeric, started_at timestamptz,
                            destination text, k int) WITH (autovacuum_enabled = off);
DO $$
DECLARE
    t0 constant timestamptz := '2026-01-05 00:00+00';
    r record;
    kinds text[] := '{}';
    day int;
    start timestamptz;
    span interval;
    n int;
    svc text;
    base float8;
BEGIN
    -- candidate accounts in random order; each kind takes 150 that fit it
    FOR r IN SELECT a.* FROM bench07_account a ORDER BY random() LOOP
        day := 30 + floor(random() * 30)::int;
        IF (SELECT count(*) FROM bench07_incident WHERE kind = 'spike') < 150
           AND r.start_day <= day - 10 THEN
            svc := CASE r.segment WHEN 'iot' THEN 'data'
                                  ELSE (ARRAY['voice', 'sms', 'data'])[1 + floor(random() * 3)::int] END;
            start := t0 + day * interval '1 day' + floor(random() * 20 * 60) * interval '1 minute';
            span := (60 + floor(random() * 180)) * interval '1 minute';
            IF r.segment = 'iot' THEN
                n := 25 + floor(random() * 16)::int;
            ELSE
                SELECT per_day * r.level * power(1 + r.growth, day - r.start_day) INTO base
                FROM bench07_rate WHERE segment = r.segment AND service = svc;
                n := greatest(25, ceil((4 + 8 * random()) * base))::int;
            END IF;
            INSERT INTO bench07_incident (account_id, kind, service, started, ended, events, note)
            VALUES (r.account_id, 'spike', svc, start, start + span, n, r.segment);
            INSERT INTO bench07_extra
            SELECT r.account_id, svc,
                   CASE svc WHEN 'voice' THEN least(14400, greatest(1, round(exp(ln(90) + pg_temp.gauss()))))
                            WHEN 'sms' THEN 1
                            ELSE round(exp(ln(2e6) + 1.2 * pg_temp.gauss())) END,
                   start + random() * span,
                   CASE WHEN svc <> 'data' THEN '+49 ' || (150000000 + floor(random() * 1e8)::bigint) END, k
            FROM generate_series(1, n) k;
        ELSIF (SELECT count(*) FROM bench07_incident WHERE kind = 'irsf') < 150
              AND r.segment <> 'iot' AND NOT r.diaspora THEN
            start := t0 + day * interval '1 day' + floor(random() * 23 * 60) * interval '1 minute';
            IF random() < 1.0 / 3 THEN
                n := 2 + floor(random() * 3)::int;
                span := (5 + floor(random() * 20)) * interval '1 minute';
            ELSE
                n := 6 + floor(random() * 20)::int;
                span := (5 + floor(random() * 36)) * interval '1 minute';
            END IF;
            INSERT INTO bench07_incident (account_id, kind, service, started, ended, events, note)
            VALUES (r.account_id, 'irsf', 'voice', start, start + span, n,
                    CASE WHEN n <= 4 THEN 'few long calls' ELSE 'many calls' END);
            INSERT INTO bench07_extra
            SELECT r.account_id, 'voice',
                   CASE WHEN n <= 4 THEN 2400 + floor(random() * 3000)
                        ELSE least(10800, round(exp(ln(1500) + 0.5 * pg_temp.gauss()))) END,
                   CASE WHEN k = 1 THEN start ELSE start + random() * span END,
                   (ARRAY['+239 99', '+690 77', '+882 16', '+881 63', '+224 62'])[1 + floor(random() * 5)::int]
                       || ' ' || (100000 + floor(random() * 900000)::int), k
            FROM generate_series(1, n) k;
        ELSIF (SELECT count(*) FROM bench07_incident WHERE kind = 'velocity') < 150 THEN
            svc := CASE WHEN r.segment = 'iot' THEN 'data'
                        WHEN r.segment = 'business' AND random() < 0.5 THEN 'voice' ELSE 'sms' END;
            start := t0 + day * interval '1 day' + floor(random() * 23 * 60) * interval '1 minute';
            span := (60 + floor(random() * 420)) * interval '1 second';
            n := 40 + floor(random() * 161)::int;
            INSERT INTO bench07_incident (account_id, kind, service, started, ended, events, note)
            VALUES (r.account_id, 'velocity', svc, start, start + span, n, r.segment);
            INSERT INTO bench07_extra
            SELECT r.account_id, svc,
                   CASE svc WHEN 'voice' THEN 5 + floor(random() * 40) WHEN 'sms' THEN 1
                            ELSE round(exp(ln(5e4) + 0.5 * pg_temp.gauss())) END,
                   CASE WHEN k = 1 THEN start ELSE start + random() * span END,
                   CASE WHEN svc <> 'data' THEN '+49 ' || (150000000 + floor(random() * 1e8)::bigint) END, k
            FROM generate_series(1, n) k;
        ELSE
            EXIT WHEN (SELECT count(*) FROM bench07_incident) >= 450;
        END IF;
    END LOOP;
END $$;
SELECT kind, count(*) AS incidents, sum(events) AS events, min(started)::date AS first, max(started)::date AS last
FROM bench07_incident GROUP BY 1 ORDER BY 1;

-------------------------------------------------------------------------------
-- Events, day by day in time order (the BRIN index on started_at stays tight)
-------------------------------------------------------------------------------
DO $$
DECLARE
    t0 constant timestamptz := '2026-01-05 00:00+00';
BEGIN
    FOR d IN 0 .. 59 LOOP
        INSERT INTO convbill.usage_event (account_id, source, external_id, service, quantity, started_at,
                                          attrs, status, received_at)
        SELECT account_id, 'bench', external_id, service, quantity, started_at,
               CASE WHEN destination IS NULL THEN '{}'::jsonb
                    ELSE jsonb_build_object('destination', destination) END,
               CASE WHEN d = 59 OR extra THEN 'pending' WHEN random() < 0.01 THEN 'rejected' ELSE 'rated' END,
               started_at
        FROM (
            SELECT c.account_id, c.service, c.account_id || '-' || c.service || '-' || d || '-' || k AS external_id,
                   false AS extra,
                   CASE c.service
                       WHEN 'voice' THEN CASE WHEN risky THEN least(3600, round(exp(ln(600) + 0.7 * pg_temp.gauss())))
                                              ELSE least(14400, greatest(1, round(exp(ln(90) + pg_temp.gauss())))) END
                       WHEN 'sms' THEN 1
                       ELSE CASE WHEN c.segment = 'iot' THEN round(exp(ln(5e4) + 0.5 * pg_temp.gauss()))
                                 ELSE round(exp(ln(2e6) + 1.2 * pg_temp.gauss())) END
                   END::numeric AS quantity,
                   t0 + d * interval '1 day' +
                   CASE WHEN c.segment = 'iot' THEN (k - 1) * interval '30 minutes' + random() * interval '60 seconds'
                        WHEN random() < 0.05 THEN random() * interval '24 hours'
                        WHEN c.segment = 'business' THEN interval '8 hours' + (random() + random()) * interval '5 hours'
                        ELSE interval '7 hours' + (random() + random()) * interval '8 hours' END AS started_at,
                   CASE WHEN c.service = 'data' THEN NULL
                        WHEN risky THEN '+53 7 ' || (100000 + floor(random() * 900000)::int)
                        WHEN random() < 0.06 THEN (ARRAY['+33 1 ', '+44 20 ', '+48 22 ', '+90 212 ', '+1 212 '])[1 + floor(random() * 5)::int]
                                                  || (1000000 + floor(random() * 9000000)::int)
                        ELSE '+49 ' || (150000000 + floor(random() * 1e8)::bigint) END AS destination
            FROM bench07_daycount c
            CROSS JOIN LATERAL generate_series(1, c.n) k
            CROSS JOIN LATERAL (SELECT c.diaspora AND c.service = 'voice' AND random() < 0.08 AS risky) x
            WHERE c.day = d
            UNION ALL
            SELECT e.account_id, e.service, e.account_id || '-x-' || e.service || '-' || k, true,
                   e.quantity, e.started_at, e.destination
            FROM bench07_extra e
            WHERE e.started_at >= t0 + d * interval '1 day' AND e.started_at < t0 + (d + 1) * interval '1 day'
        ) ev
        ORDER BY started_at;
    END LOOP;
END $$;
VACUUM ANALYZE convbill.usage_event;
SELECT count(*) AS events, count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'rejected') AS rejected,
       pg_size_pretty(pg_total_relation_size('convbill.usage_event_202601') + pg_total_relation_size('convbill.usage_event_202602')
                      + pg_total_relation_size('convbill.usage_event_202603')) AS size
FROM convbill.usage_event;
INSERT INTO bench07_clock VALUES ('generated', clock_timestamp());

-------------------------------------------------------------------------------
-- Detection: every 6 hours of days 30-59, default settings
-------------------------------------------------------------------------------
RESET max_parallel_workers_per_gather;
CREATE TABLE bench07_run (as_of timestamptz PRIMARY KEY, alerts int, baseline_ms float8, detect_ms float8);
DO $$
DECLARE
    t0 constant timestamptz := '2026-01-05 00:00+00';
    t timestamptz;
    c0 timestamptz;
    c1 timestamptz;
    b int;
    n int;
BEGIN
    FOR i IN 1 .. 60 LOOP
        t := t0 + 30 * interval '1 day' + i * interval '12 hours';
        c0 := clock_timestamp();
        b := convbill.refresh_anomaly_baseline(t);
        c1 := clock_timestamp();
        n := convbill.detect_anomalies(t);
        INSERT INTO bench07_run VALUES (t, n, extract(epoch FROM c1 - c0) * 1000,
                                        extract(epoch FROM clock_timestamp() - c1) * 1000);
    END LOOP;
END $$;
INSERT INTO bench07_clock VALUES ('detected', clock_timestamp());

\echo
\echo '== Detection runs (60, every 12 hours of days 30-59)'
SELECT count(*) AS runs, sum(alerts) AS alerts,
       round(sum(baseline_ms)::numeric / 1000, 1) AS baseline_s_total,
       round((max(baseline_ms))::numeric / 1000, 2) AS baseline_s_max,
       round(avg(detect_ms)::numeric) AS detect_ms_avg, round(max(detect_ms)::numeric) AS detect_ms_max
FROM bench07_run;

-------------------------------------------------------------------------------
-- Quality
-------------------------------------------------------------------------------
CREATE TEMP TABLE bench07_match AS
SELECT i.incident_id, i.account_id, i.kind, i.service, i.started, i.ended, i.note,
       (SELECT count(*) FROM convbill.usage_alert a
        WHERE a.account_id = i.account_id AND a.kind = i.kind AND a.service = i.service
          AND a.window_start <= i.ended AND a.window_end >= i.started) AS alerts,
       (SELECT min(a.detected_at) FROM convbill.usage_alert a
        WHERE a.account_id = i.account_id AND a.kind = i.kind AND a.service = i.service
          AND a.window_start <= i.ended AND a.window_end >= i.started) AS first_detected
FROM bench07_incident i;

-- an alert is explained by an incident of its account within a day of it
CREATE TEMP TABLE bench07_alert AS
SELECT a.*, i.incident_id IS NOT NULL AS incident_account,
       i.incident_id IS NOT NULL AND a.window_start <= i.ended + interval '1 day'
           AND a.window_end >= i.started AS explained
FROM convbill.usage_alert a LEFT JOIN bench07_incident i USING (account_id);

\echo
\echo '== Detection quality (targets: recall >= 0.95, false alerts <= 1 % of clean accounts)'
\echo '   minutes_to_alert: from the incident''s start to its alert, with runs every 12 hours here'
WITH clean AS (SELECT count(*) AS n FROM bench07_account a
               WHERE NOT EXISTS (SELECT 1 FROM bench07_incident i WHERE i.account_id = a.account_id)),
k(kind) AS (VALUES ('spike'), ('irsf'), ('velocity'))
SELECT k.kind,
       m.incidents, m.detected, round(m.detected::numeric / m.incidents, 3) AS recall,
       f.clean_accounts_alerted, clean.n AS clean_accounts,
       round(100.0 * f.clean_accounts_alerted / clean.n, 2) AS false_alert_pct,
       f.unexplained_on_incident_accounts, f.cross_kind_on_incident_accounts,
       m.repeat_alerts, m.median_minutes_to_alert,
       CASE WHEN m.detected::numeric / m.incidents >= 0.95 AND f.clean_accounts_alerted <= 0.01 * clean.n
            THEN 'met' ELSE 'MISSED' END AS target
FROM k CROSS JOIN clean
JOIN LATERAL (SELECT count(*) AS incidents, count(*) FILTER (WHERE alerts > 0) AS detected,
                     count(*) FILTER (WHERE alerts > 1) AS repeat_alerts,
                     round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM first_detected - started) / 60))::numeric)
                         AS median_minutes_to_alert
              FROM bench07_match WHERE kind = k.kind) m ON true
JOIN LATERAL (SELECT count(DISTINCT account_id) FILTER (WHERE NOT incident_account) AS clean_accounts_alerted,
                     count(*) FILTER (WHERE incident_account AND NOT explained) AS unexplained_on_incident_accounts,
                     count(*) FILTER (WHERE incident_account AND explained
                                      AND NOT EXISTS (SELECT 1 FROM bench07_incident i
                                                      WHERE i.account_id = x.account_id AND i.kind = x.kind))
                         AS cross_kind_on_incident_accounts
              FROM bench07_alert x WHERE x.kind = k.kind) f ON true
ORDER BY array_position(ARRAY['spike', 'irsf', 'velocity'], k.kind);

\echo '== Missed incidents by kind and variant'
SELECT kind, note, count(*) AS incidents, count(*) FILTER (WHERE alerts = 0) AS missed
FROM bench07_match GROUP BY 1, 2 ORDER BY 1, 2;

\echo '== False alerts on clean accounts, by kind and segment'
SELECT x.kind, a.segment, count(DISTINCT x.account_id) AS accounts, count(*) AS alerts,
       count(*) FILTER (WHERE a.start_day > 0) AS on_new_accounts,
       count(*) FILTER (WHERE a.growth > 0) AS on_growing_accounts,
       count(*) FILTER (WHERE x.window_end::date - date '2026-01-05' IN (20, 21, 38, 39, 52, 53)
                           OR x.window_start::date - date '2026-01-05' IN (20, 38, 52)) AS around_holidays
FROM bench07_alert x JOIN bench07_account a USING (account_id)
WHERE NOT x.incident_account
GROUP BY 1, 2 ORDER BY 1, 2;

-------------------------------------------------------------------------------
-- Once per incident: the last run again raises nothing
-------------------------------------------------------------------------------
SELECT convbill.detect_anomalies('2026-01-05 00:00+00'::timestamptz + interval '60 days') AS rerun_new_alerts,
       (SELECT count(*) FROM convbill.usage_alert) AS alerts_total;

-------------------------------------------------------------------------------
-- The baseline aggregate: parallel = serial over 28 days of daily totals
-------------------------------------------------------------------------------
CREATE TEMP TABLE bench07_daily AS
SELECT account_id, service, (started_at AT TIME ZONE 'UTC')::date AS day, sum(quantity)::float8 AS q
FROM convbill.usage_event
WHERE started_at >= '2026-02-01' AND started_at < '2026-03-01'
GROUP BY 1, 2, 3;
ANALYZE bench07_daily;
SET max_parallel_workers_per_gather = 0;
CREATE TEMP TABLE bench07_serial AS
SELECT account_id, service, convbill.usage_baseline(q, 28) AS b FROM bench07_daily GROUP BY 1, 2;
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET enable_hashagg = off;   -- a sorted partial aggregate in each worker
CREATE TEMP TABLE bench07_parallel AS
SELECT account_id, service, convbill.usage_baseline(q, 28) AS b FROM bench07_daily GROUP BY 1, 2;
CREATE TEMP TABLE bench07_one_group AS SELECT convbill.usage_baseline(q) AS b FROM bench07_daily;
RESET enable_hashagg;
SET max_parallel_workers_per_gather = 0;
SELECT (SELECT count(*) FROM bench07_serial) AS groups,
       (SELECT count(*) FROM (SELECT * FROM bench07_serial EXCEPT SELECT * FROM bench07_parallel) d)
     + (SELECT count(*) FROM (SELECT * FROM bench07_parallel EXCEPT SELECT * FROM bench07_serial) d) AS differences,
       (SELECT b FROM bench07_one_group) = (SELECT convbill.usage_baseline(q) FROM bench07_daily) AS one_group_equal;

INSERT INTO bench07_clock VALUES ('end', clock_timestamp());
SELECT step, round(extract(epoch FROM t - lag(t) OVER (ORDER BY t))::numeric, 1) AS seconds
FROM bench07_clock ORDER BY t;

-- psql -v keep=1 keeps the data to look into
\if :{?keep}
\else
SET client_min_messages = warning;
DROP TABLE bench07_account, bench07_rate, bench07_poisson, bench07_daycount, bench07_incident,
    bench07_extra, bench07_run;
DROP EXTENSION convbill CASCADE;
\endif
