-- test/bench/02_ingest_rate.sql — ingestion and bulk rating at 1,000,000 events.
--
-- Run by `test/run.sh bench` (psql -X -v ON_ERROR_STOP=1 -d convbill_bench -f ...).
-- One data set: 10,000 accounts (12 IANA zones, billing days 1..28, EUR and USD
-- plans), 5,000 destination prefixes in 9 zones, 4 services (voice by the second
-- with a destination, sms, data in MB, iot messages), voice rates per plan and
-- zone with peak/off-peak bands and 60/1 increments, a graduated cycle-scope
-- data tariff, voice and sms allowances; 1,000,000 events in October 2026,
-- 697 of them deliberately unratable (unknown account, no zone for the number).
--
--   (a) COPY FROM a file into convbill.usage_event vs into a plain table with the
--       same columns and defaults and no index; 5 rounds each, median.
--       Target: <= 1.5x.
--   (b) convbill.rate_pending(1000000), all events in one call, vs a baseline
--       INSERT ... SELECT of as many charge rows at a constant price into a copy
--       of convbill.charge (LIKE ... INCLUDING ALL: same indexes and defaults);
--       3 rounds, median, state reset between rounds; plus 10 calls of 100,000.
--       Every round is checked first: every event rated exactly once (or
--       rejected for its deliberate reason), the same totals every round.
--       Target: <= 2.5x.
--       Context: five calls of rate_pending(10000), the rate job's batch, out
--       of the 1,000,000 pending (b8, per call); the bare UPDATE of the rated
--       events' status (b4), and the
--       floor b1 + b4 (b5): the rows SPEC §4 requires rating to write, with
--       no pricing, claiming or allowance work at all; the bare claim (b6:
--       every pending event locked FOR UPDATE SKIP LOCKED in (account,
--       started_at) order, as SPEC §4's parallel raters and event-time order
--       require) and b1 + b4 + b6 (b7).
--   (c) memory of the backend that rates: VmHWM before and after, peak RssAnon
--       (sampled every 20 ms) and RssShmem, for a 1,000,000 batch and for
--       100,000 batches.
--
-- Each rating call runs in a fresh backend opened with dblink (contrib; part of
-- Debian's postgresql-15), timed inside that backend with clock_timestamp(),
-- while this session samples its /proc/<pid>/status.  Without dblink the calls
-- run in this session and (c) reports VmHWM only.  Reading /proc needs a
-- superuser (pg_read_file) and Linux.
--
-- A missed target is reported, not raised: correctness is the only hard failure.
-- Runtime: about 5 minutes on 2 cores.  Everything the script creates is dropped
-- at the end (including the extension, and the event file in /tmp).

\set ON_ERROR_STOP 1
\timing off
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS convbill CASCADE;
DROP TABLE IF EXISTS bench02_plain, bench02_charge_baseline, bench02_run, bench02_mem;
DROP PROCEDURE IF EXISTS bench02_rate(text, int, int, int);
DROP FUNCTION IF EXISTS bench02_proc_kb(int, text);
CREATE EXTENSION IF NOT EXISTS convbill;
SET client_min_messages = notice;
-- fair single-core numbers: no parallel workers, no JIT compilation
\set settings 'SET max_parallel_workers_per_gather = 0; SET jit = off; SET work_mem = ''64MB''; SET TimeZone = ''UTC'';'
:settings

-- dblink for the rating backends and the memory sampler, when available
SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'dblink') AS have_dblink,
       NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'dblink') AS own_dblink \gset
\if :have_dblink
CREATE EXTENSION IF NOT EXISTS dblink;
\endif

-- the event file, written by the server (COPY TO) and read back by it (COPY FROM)
SELECT '/tmp/convbill_bench_02_' || pg_backend_pid() || '.tsv' AS evfile \gset
\setenv BENCH02_EVFILE :evfile

-------------------------------------------------------------------------------
-- Machine and settings
-------------------------------------------------------------------------------
CREATE FUNCTION pg_temp.proc_text(path text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    RETURN pg_read_file(path);
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END $$;

SELECT current_setting('server_version') AS server,
       (SELECT count(*) FROM regexp_matches(pg_temp.proc_text('/proc/cpuinfo'), '^processor', 'gn')) AS cpus,
       (regexp_match(pg_temp.proc_text('/proc/cpuinfo'), 'model name\s*:\s*([^\n]*)'))[1] AS cpu_model,
       pg_size_pretty(1024 * (regexp_match(pg_temp.proc_text('/proc/meminfo'), 'MemTotal:\s+(\d+) kB'))[1]::bigint) AS memory,
       :'have_dblink' AS dblink;
SELECT current_setting('shared_buffers') AS shared_buffers, current_setting('work_mem') AS work_mem,
       current_setting('temp_buffers') AS temp_buffers,
       current_setting('maintenance_work_mem') AS maintenance_work_mem,
       current_setting('max_wal_size') AS max_wal_size, current_setting('fsync') AS fsync,
       current_setting('synchronous_commit') AS synchronous_commit,
       current_setting('full_page_writes') AS full_page_writes,
       current_setting('max_parallel_workers_per_gather') AS parallel_workers, current_setting('jit') AS jit;

-------------------------------------------------------------------------------
-- Catalog: 4 services, 5,000 prefixes, 3 plans, 36 rates, 10,000 accounts.
-------------------------------------------------------------------------------
SELECT setseed(0.2026);

INSERT INTO convbill.service VALUES
    ('voice', 'second', 'calls'), ('sms', 'message', 'text messages'),
    ('data', 'MB', 'mobile data'), ('iot', 'message', 'IoT messages');

-- 90 country codes 10..99, each with 54 or 55 longer prefixes cc||0 .. cc||54
-- (cc||1 and cc||10 both exist: the longest match decides)
INSERT INTO convbill.destination (prefix, zone)
SELECT cc::text,
       CASE WHEN cc < 30 THEN 'national' WHEN cc < 50 THEN 'eu' WHEN cc < 60 THEN 'nam'
            WHEN cc < 80 THEN 'asia' ELSE 'world' END
FROM generate_series(10, 99) cc
UNION ALL
SELECT (10 + n % 90)::text || (n / 90)::text,
       CASE WHEN (n / 90) % 17 = 5 THEN 'premium'
            WHEN (n / 90) % 4 = 1 THEN CASE WHEN 10 + n % 90 < 30 THEN 'national_mobile'
                                            WHEN 10 + n % 90 < 50 THEN 'eu_mobile'
                                            ELSE 'world_mobile' END
            WHEN 10 + n % 90 < 30 THEN 'national' WHEN 10 + n % 90 < 50 THEN 'eu'
            WHEN 10 + n % 90 < 60 THEN 'nam' WHEN 10 + n % 90 < 80 THEN 'asia' ELSE 'world' END
FROM generate_series(0, 4909) n;

INSERT INTO convbill.plan (code, name, currency, recurring_fee, allowances) VALUES
    ('EU-S', 'Europe S', 'EUR', 10, '{"voice": 3600, "sms": 100}'),
    ('EU-L', 'Europe L', 'EUR', 25, '{"voice": 18000, "sms": 1000}'),
    ('US-M', 'US M', 'USD', 20, '{"voice": 6000, "sms": 300}');

-- voice, per plan and zone: off-peak per second, peak Mon-Fri 08-18 local at
-- 2.5x with a 0.05 set-up fee; 60/1 increments; no rate for "any zone", so a
-- number without a zone is rejected (no_tariff)
INSERT INTO convbill.plan_rate (plan_code, service, zone, tariff)
SELECT p.code, 'voice', z.zone,
       format('{"price": "%s", "increment": {"first": 60, "next": 1},
                "time_bands": [{"name": "peak", "days": ["mon","tue","wed","thu","fri"],
                                "from": "08:00", "to": "18:00",
                                "tariff": {"price": "%s", "setup_fee": "0.05"}}],
                "rounding": {"decimals": 4}, "currency": "%s", "unit": "second"}',
              round(z.base * p.f, 5), round(z.base * p.f * 2.5, 5), p.currency)::convbill.tariff
FROM (VALUES ('EU-S', 'EUR', 1.0), ('EU-L', 'EUR', 0.8), ('US-M', 'USD', 1.1)) p(code, currency, f)
CROSS JOIN (VALUES ('national', 0.0007), ('national_mobile', 0.0012), ('eu', 0.0015),
                   ('eu_mobile', 0.002), ('nam', 0.002), ('asia', 0.004), ('world', 0.006),
                   ('world_mobile', 0.008), ('premium', 0.03)) z(zone, base);
-- sms flat; data graduated over the period's running total (cycle scope); iot flat
INSERT INTO convbill.plan_rate (plan_code, service, zone, tariff)
SELECT code, 'sms', NULL,
       format('{"price": "%s", "currency": "%s"}',
              CASE currency WHEN 'USD' THEN '0.07' ELSE '0.09' END, currency)::convbill.tariff
FROM convbill.plan
UNION ALL
SELECT code, 'data', NULL,
       format('{"model": "graduated", "scope": "cycle",
                "tiers": [{"up_to": 1024, "price": "0.01"}, {"up_to": 10240, "price": "0.005"},
                          {"up_to": null, "price": "0.002"}],
                "currency": "%s", "unit": "MB"}', currency)::convbill.tariff
FROM convbill.plan
UNION ALL
SELECT code, 'iot', NULL,
       format('{"price": "0.0004", "rounding": {"decimals": 6}, "currency": "%s"}', currency)::convbill.tariff
FROM convbill.plan;

-- 12 zones (UTC-11 .. UTC+14, DST north and south, UTC+5:30), billing days
-- 1..28 (so most accounts change period inside October), 1 in 5 pays USD
INSERT INTO convbill.account (account_id, external_ref, name, currency, timezone, billing_day)
SELECT i, 'ACC' || i, 'Customer ' || i, CASE WHEN i % 5 = 0 THEN 'USD' ELSE 'EUR' END,
       (ARRAY['UTC', 'Europe/Berlin', 'Europe/London', 'America/New_York', 'America/Los_Angeles',
              'Asia/Tokyo', 'Asia/Kolkata', 'Australia/Sydney', 'Pacific/Kiritimati',
              'Pacific/Pago_Pago', 'America/Sao_Paulo', 'Africa/Johannesburg'])[1 + (i * 7) % 12],
       1 + (i * 13) % 28
FROM generate_series(1, 10000) i;
INSERT INTO convbill.subscription (account_id, plan_code, started_at)
SELECT account_id,
       CASE WHEN currency = 'USD' THEN 'US-M' WHEN account_id % 3 = 0 THEN 'EU-L' ELSE 'EU-S' END,
       '2026-01-01'
FROM convbill.account;

SELECT convbill.ensure_usage_partitions('2026-10-01', 1) AS partitions_created;

-- the comparison table: the same columns and defaults, no index, not partitioned
CREATE TABLE bench02_plain (LIKE convbill.usage_event INCLUDING DEFAULTS);
-- the baseline's target: convbill.charge's columns, defaults, identity, checks, indexes
CREATE TABLE bench02_charge_baseline (LIKE convbill.charge INCLUDING ALL);

-- no autovacuum in the middle of a timing: the resets vacuum explicitly
ALTER TABLE convbill.usage_event_202610 SET (autovacuum_enabled = off);
ALTER TABLE convbill.usage_event_default SET (autovacuum_enabled = off);
ALTER TABLE convbill.charge SET (autovacuum_enabled = off);
ALTER TABLE convbill.usage_counter SET (autovacuum_enabled = off);
ALTER TABLE convbill.bucket SET (autovacuum_enabled = off);
ALTER TABLE convbill.ledger SET (autovacuum_enabled = off);
ALTER TABLE bench02_plain SET (autovacuum_enabled = off);
ALTER TABLE bench02_charge_baseline SET (autovacuum_enabled = off);

-------------------------------------------------------------------------------
-- Events: 1,000,000 rows, deterministic, written once to :evfile.
--   voice 40 % (0 s unanswered 5 %, else exponential around 150 s, <= 3600;
--               destination "+<prefix> <7 digits>")
--   sms 25 % (1..3 segments), data 20 % (MB, 3 decimals, exponential around
--   40 MB), iot 15 % (1 message); started_at uniform over October 2026 (UTC);
--   the file is in started_at order, as a mediation feed would deliver it.
--   Deliberate rejects: 1 event in 2000 has an unknown account (unknown_account);
--   1 in 2000 that is a call goes to "+00 ..." (no zone, no rate: no_tariff).
-------------------------------------------------------------------------------
COPY (
    WITH p AS (SELECT array_agg(prefix ORDER BY prefix) AS pfx FROM convbill.destination)
    SELECT account_id, source, external_id, service, quantity, started_at, attrs
    FROM (SELECT n,
                 CASE WHEN n % 2000 = 7 THEN 10000 + 1 + n % 97
                      ELSE 1 + (hashint4(n) & 2147483647) % 10000 END::bigint AS account_id,
                 CASE svc WHEN 'voice' THEN 'msc' WHEN 'sms' THEN 'smsc' WHEN 'data' THEN 'pgw'
                          ELSE 'iot-hub' END AS source,
                 'ev' || n AS external_id,
                 svc AS service,
                 CASE svc WHEN 'voice' THEN CASE WHEN r2 < 0.05 THEN 0
                                                 ELSE least(3600, 1 + floor(-ln(1 - r2) * 150)) END
                          WHEN 'sms' THEN 1 + floor(r2 * r2 * 3)
                          WHEN 'data' THEN round((0.001 + -ln(1 - r2) * 40)::numeric, 3)
                          ELSE 1 END::numeric AS quantity,
                 timestamptz '2026-10-01 00:00:00+00' + floor(r3 * 2678400) * interval '1 second' AS started_at,
                 CASE svc WHEN 'voice' THEN
                     jsonb_build_object('destination',
                         CASE WHEN n % 2000 = 1001 THEN '+00 ' || n
                              ELSE '+' || p.pfx[1 + floor(r4 * 5000)::int] || ' '
                                   || lpad((n % 10000000)::text, 7, '0') END)
                      ELSE '{}'::jsonb END AS attrs
          FROM (SELECT n, random() AS r2, random() AS r3, random() AS r4,
                       CASE WHEN r1 < 0.40 THEN 'voice' WHEN r1 < 0.65 THEN 'sms'
                            WHEN r1 < 0.85 THEN 'data' ELSE 'iot' END AS svc
                FROM (SELECT n, random() AS r1 FROM generate_series(1, 1000000) n) s) s, p) ev
    ORDER BY started_at, n
) TO :'evfile';

-------------------------------------------------------------------------------
-- (a) COPY FROM the file: usage_event vs the plain table, 5 rounds, order
-- alternating; each target truncated and a checkpoint taken before each COPY.
-- usage_event keeps the rows of its last round for (b).
-------------------------------------------------------------------------------
CREATE TEMP TABLE bench_copy (target text, round int, ms double precision, rows bigint);

CREATE PROCEDURE pg_temp.time_copy(p_target text, p_round int, p_file text)
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    ms double precision;
    n bigint;
BEGIN
    EXECUTE format('TRUNCATE %s', p_target);
    CHECKPOINT;
    COMMIT;
    t0 := clock_timestamp();
    EXECUTE format('COPY %s (account_id, source, external_id, service, quantity, started_at, attrs) FROM %L',
                   p_target, p_file);
    GET DIAGNOSTICS n = ROW_COUNT;
    ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
    COMMIT;
    INSERT INTO bench_copy VALUES (p_target, p_round, ms, n);
    RAISE NOTICE 'copy round % %: % rows in % ms', p_round, p_target, n, round(ms::numeric, 1);
    COMMIT;
END $$;

SELECT set_config('bench02.evfile', :'evfile', false) IS NOT NULL AS evfile_set,
       set_config('bench02.settings', :'settings', false) IS NOT NULL AS settings_set;
DO $$
DECLARE
    f text := current_setting('bench02.evfile');
BEGIN
    FOR r IN 1 .. 5 LOOP
        IF r % 2 = 1 THEN
            CALL pg_temp.time_copy('bench02_plain', r, f);
            CALL pg_temp.time_copy('convbill.usage_event', r, f);
        ELSE
            CALL pg_temp.time_copy('convbill.usage_event', r, f);
            CALL pg_temp.time_copy('bench02_plain', r, f);
        END IF;
    END LOOP;
END $$;

SELECT pg_size_pretty(pg_total_relation_size('convbill.usage_event_202610')) AS usage_event_partition,
       pg_size_pretty(pg_relation_size('bench02_plain')) AS plain_table,
       (SELECT count(*) FROM convbill.usage_event_default) AS rows_in_default_partition;
TRUNCATE bench02_plain;

-- what the deliberate rejects must be
SELECT count(*) AS events,
       count(*) FILTER (WHERE account_id > 10000) AS expect_unknown_account,
       count(*) FILTER (WHERE account_id <= 10000 AND service = 'voice'
                          AND attrs ->> 'destination' LIKE '+00%') AS expect_no_tariff
FROM convbill.usage_event \gset
SELECT :events - :expect_unknown_account - :expect_no_tariff AS expect_rated \gset
SELECT :events AS events, :expect_rated AS expect_rated,
       :expect_unknown_account AS expect_unknown_account, :expect_no_tariff AS expect_no_tariff;

-------------------------------------------------------------------------------
-- (b) and (c): rating.
-------------------------------------------------------------------------------
CREATE TABLE bench02_run (label text, round int, call int, batch int, n int, ms double precision,
                          hwm_before_kb bigint, hwm_after_kb bigint,
                          rss_anon_after_kb bigint, rss_shmem_after_kb bigint);
CREATE TABLE bench02_mem (label text, round int, call int, pid int, samples int, peak_rss_anon_kb bigint);

CREATE FUNCTION bench02_proc_kb(p_pid int, p_field text) RETURNS bigint
LANGUAGE sql AS $$
    SELECT (regexp_match(pg_read_file('/proc/' || p_pid || '/status'), p_field || ':\s+(\d+) kB'))[1]::bigint
$$;

-- p_calls calls of rate_pending(p_batch), each in its own transaction, timed
-- inside this backend
CREATE PROCEDURE bench02_rate(p_label text, p_round int, p_batch int, p_calls int)
LANGUAGE plpgsql AS $$
DECLARE
    me int := pg_backend_pid();
    t0 timestamptz;
    ms double precision;
    n integer;
    hwm0 bigint;
BEGIN
    FOR i IN 1 .. p_calls LOOP
        hwm0 := bench02_proc_kb(me, 'VmHWM');
        t0 := clock_timestamp();
        n := convbill.rate_pending(p_batch);
        ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
        INSERT INTO bench02_run VALUES (p_label, p_round, i, p_batch, n, ms,
            hwm0, bench02_proc_kb(me, 'VmHWM'), bench02_proc_kb(me, 'RssAnon'),
            bench02_proc_kb(me, 'RssShmem'));
        COMMIT;
    END LOOP;
END $$;

-- the same in a fresh backend over dblink, sampling its RssAnon meanwhile (the
-- peak per call: a call's row in bench02_run is committed when it ends)
CREATE FUNCTION pg_temp.remote_rate(p_label text, p_round int, p_batch int, p_calls int)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    conn CONSTANT text := 'bench02';
    rpid int;
    peak bigint[] := array_fill(0::bigint, ARRAY[p_calls]);
    samples int[] := array_fill(0, ARRAY[p_calls]);
    k int;
    r record;
BEGIN
    PERFORM dblink_connect(conn, format('dbname=''%s'' user=''%s'' port=%s host=''%s''',
        replace(replace(current_database(), '\', '\\'), '''', '\'''),
        replace(replace(current_user, '\', '\\'), '''', '\'''),
        current_setting('port'),
        coalesce(host(inet_server_addr()),
                 btrim(split_part(current_setting('unix_socket_directories'), ',', 1)))));
    SELECT t.pid INTO rpid FROM dblink(conn, 'SELECT pg_backend_pid()') AS t(pid int);
    PERFORM dblink_exec(conn, current_setting('bench02.settings'));
    PERFORM dblink_send_query(conn, format('CALL bench02_rate(%L, %s, %s, %s)',
                                           p_label, p_round, p_batch, p_calls));
    LOOP
        SELECT least(p_calls, 1 + count(*)) INTO k
          FROM bench02_run WHERE label = p_label AND round = p_round;
        peak[k] := greatest(peak[k], bench02_proc_kb(rpid, 'RssAnon'));
        samples[k] := samples[k] + 1;
        EXIT WHEN dblink_is_busy(conn) = 0;
        PERFORM pg_sleep(0.02);
    END LOOP;
    PERFORM * FROM dblink_get_result(conn) AS t(status text);   -- raises a remote error
    INSERT INTO bench02_mem SELECT p_label, p_round, i, rpid, samples[i], peak[i]
                            FROM generate_series(1, p_calls) i;
    PERFORM dblink_disconnect(conn);
    FOR r IN SELECT * FROM bench02_run WHERE label = p_label AND round = p_round ORDER BY call LOOP
        RAISE NOTICE '% round % call %: % events in % ms, peak RssAnon % MB', p_label, p_round, r.call, r.n,
            round(r.ms::numeric, 1), round(peak[r.call] / 1024.0);
    END LOOP;
END $$;

\if :have_dblink
\set rate_cmd 'SELECT pg_temp.remote_rate'
\else
\echo 'dblink is not available: the rating calls run in this session, and (c) shows its cumulative VmHWM only'
\set rate_cmd 'CALL bench02_rate'
\endif

-- Every event rated exactly once or rejected for its deliberate reason, nothing
-- left pending, every charge the one of its event; totals recorded per round.
CREATE TEMP TABLE bench_check (label text, round int, charges bigint, amount numeric,
                               billed numeric, covered numeric, counters bigint, counter_used numeric);
CREATE FUNCTION pg_temp.check_rating(p_label text, p_round int, p_expect_rated bigint,
                                     p_expect_unknown bigint, p_expect_no_tariff bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    ev record;
    ch record;
    matched bigint;
    c bigint;
    cu numeric;
    first record;
BEGIN
    SELECT count(*) FILTER (WHERE status = 'rated') AS rated,
           count(DISTINCT charge_id) FILTER (WHERE status = 'rated') AS rated_distinct_charges,
           count(*) FILTER (WHERE status = 'rejected' AND reject_reason = 'unknown_account') AS unknown,
           count(*) FILTER (WHERE status = 'rejected' AND reject_reason = 'no_tariff') AS no_tariff,
           count(*) FILTER (WHERE status IS DISTINCT FROM 'rated' AND status IS DISTINCT FROM 'rejected') AS other
      INTO ev FROM convbill.usage_event;
    SELECT count(*) AS n, sum(amount) AS amount, sum(billed_quantity) AS billed,
           sum(covered_quantity) AS covered
      INTO ch FROM convbill.charge;
    SELECT count(*) INTO matched
      FROM convbill.usage_event e
      JOIN convbill.charge x ON x.account_id = e.account_id AND x.charge_id = e.charge_id
                            AND x.source = e.source AND x.external_id = e.external_id
                            AND x.quantity = e.quantity AND x.occurred_at = e.started_at
     WHERE e.status = 'rated';
    SELECT count(*), sum(used) INTO c, cu FROM convbill.usage_counter;
    RAISE NOTICE 'check % round %: % charges, % rated, % rejected (unknown_account %, no_tariff %), amount %',
        p_label, p_round, ch.n, ev.rated, ev.unknown + ev.no_tariff, ev.unknown, ev.no_tariff, ch.amount;
    IF ev.rated <> p_expect_rated OR ch.n <> p_expect_rated OR ev.rated_distinct_charges <> p_expect_rated
       OR matched <> p_expect_rated OR ev.unknown <> p_expect_unknown OR ev.no_tariff <> p_expect_no_tariff
       OR ev.other <> 0 THEN
        RAISE EXCEPTION '% round %: expected % rated events each with its own charge, % unknown_account, % no_tariff; got % rated, % charges, % distinct charge ids, % matching, % unknown_account, % no_tariff, % pending/duplicate/other',
            p_label, p_round, p_expect_rated, p_expect_unknown, p_expect_no_tariff, ev.rated, ch.n,
            ev.rated_distinct_charges, matched, ev.unknown, ev.no_tariff, ev.other;
    END IF;
    -- the allowance covered is what the buckets' ledger debited
    IF ch.covered IS DISTINCT FROM (SELECT -sum(l.amount) FROM convbill.ledger l
                                    JOIN convbill.bucket b ON b.account_id = l.account_id AND b.bucket_id = l.bucket_id
                                    WHERE l.kind = 'debit' AND b.kind = 'allowance') THEN
        RAISE EXCEPTION '% round %: % units covered, but the allowance buckets were debited %', p_label, p_round,
            ch.covered, (SELECT -sum(l.amount) FROM convbill.ledger l
                         JOIN convbill.bucket b ON b.account_id = l.account_id AND b.bucket_id = l.bucket_id
                         WHERE l.kind = 'debit' AND b.kind = 'allowance');
    END IF;
    IF ch.amount IS NULL OR ch.amount <= 0 THEN
        RAISE EXCEPTION '% round %: the charges add up to %', p_label, p_round, ch.amount;
    END IF;
    INSERT INTO bench_check VALUES (p_label, p_round, ch.n, ch.amount, ch.billed, ch.covered, c, cu);
    SELECT * INTO first FROM bench_check ORDER BY ctid LIMIT 1;
    IF (first.charges, first.amount, first.billed, first.covered, first.counters, first.counter_used)
       IS DISTINCT FROM (ch.n, ch.amount, ch.billed, ch.covered, c, cu) THEN
        RAISE EXCEPTION '% round %: totals differ from %/%: charges % vs %, amount % vs %, billed % vs %, covered % vs %, counters % (% used) vs % (% used)',
            p_label, p_round, first.label, first.round, ch.n, first.charges, ch.amount, first.amount,
            ch.billed, first.billed, ch.covered, first.covered, c, cu, first.counters, first.counter_used;
    END IF;
END $$;

-- The baseline: as many charge rows, constant price and period, same indexes.
CREATE TEMP TABLE bench_baseline (round int, ms double precision, rows bigint);
CREATE FUNCTION pg_temp.time_baseline(p_round int, p_expect bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    ms double precision;
    n bigint;
BEGIN
    t0 := clock_timestamp();
    INSERT INTO bench02_charge_baseline
        (account_id, kind, service, quantity, billed_quantity, covered_quantity, amount, currency,
         occurred_at, period_start, period_end, source, external_id)
    SELECT e.account_id, 'usage', e.service, e.quantity, e.quantity, 0, 0.0100, 'EUR',
           e.started_at, '2026-10-01 00:00+00', '2026-11-01 00:00+00', e.source, e.external_id
    FROM convbill.usage_event e
    WHERE e.status = 'rated';
    GET DIAGNOSTICS n = ROW_COUNT;
    ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
    IF n <> p_expect THEN
        RAISE EXCEPTION 'baseline round %: % rows, expected %', p_round, n, p_expect;
    END IF;
    INSERT INTO bench_baseline VALUES (p_round, ms, n);
    RAISE NOTICE 'baseline round %: % rows in % ms', p_round, n, round(ms::numeric, 1);
END $$;

-- back to "nothing rated yet", the events as freshly ingested
-- (allowances are buckets: the plan allowance buckets go, the money buckets
-- return to zero, and the append-only ledger is emptied with its guard off).
-- The events are ingested again from the file rather than put back to
-- pending by an UPDATE: every round then rates the same compact table that a
-- COPY of a mediation file leaves (vacuumed, as autovacuum leaves it), not one
-- the previous rounds' two updates per event left at three times its size
-- with its live rows scattered (~2 s more per 1,000,000 events).
\set reset 'TRUNCATE convbill.charge, convbill.usage_counter; ALTER TABLE convbill.ledger DISABLE TRIGGER ledger_no_truncate; TRUNCATE convbill.ledger; ALTER TABLE convbill.ledger ENABLE TRIGGER ledger_no_truncate; DELETE FROM convbill.bucket WHERE origin <> ''main''; UPDATE convbill.bucket SET balance = 0 WHERE balance <> 0; TRUNCATE convbill.usage_event; COPY convbill.usage_event (account_id, source, external_id, service, quantity, started_at, attrs) FROM ' :'evfile' '; VACUUM ANALYZE convbill.usage_event; CHECKPOINT;'
\set base_reset 'TRUNCATE bench02_charge_baseline; CHECKPOINT;'

-- round 1
:reset
:rate_cmd('1M', 1, 1000000, 1);
SELECT pg_temp.check_rating('1M', 1, :expect_rated, :expect_unknown_account, :expect_no_tariff);
:base_reset
SELECT pg_temp.time_baseline(1, :expect_rated);
-- round 2
:reset
:rate_cmd('1M', 2, 1000000, 1);
SELECT pg_temp.check_rating('1M', 2, :expect_rated, :expect_unknown_account, :expect_no_tariff);
:base_reset
SELECT pg_temp.time_baseline(2, :expect_rated);
-- round 3
:reset
:rate_cmd('1M', 3, 1000000, 1);
SELECT pg_temp.check_rating('1M', 3, :expect_rated, :expect_unknown_account, :expect_no_tariff);
:base_reset
SELECT pg_temp.time_baseline(3, :expect_rated);
-- (b) context, the floor: the per-event write SPEC §4 adds to the charge
-- rows, the UPDATE of each rated event's status, bare (one statement, no
-- join: what marking the 999,303 events costs by itself), rolled back
CREATE FUNCTION pg_temp.time_mark(OUT n bigint, OUT ms double precision)
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
BEGIN
    t0 := clock_timestamp();
    UPDATE convbill.usage_event SET status = 'rated', rated_at = now() WHERE status = 'rated';
    GET DIAGNOSTICS n = ROW_COUNT;
    ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
    RAISE NOTICE 'UPDATE of usage_event.status: % rows in % ms', n, round(ms::numeric, 1);
END $$;
CHECKPOINT;
BEGIN;
SELECT * FROM pg_temp.time_mark() \gset mark_
ROLLBACK;
VACUUM convbill.usage_event;
-- 10 calls of 100,000 (each in its own transaction), the same totals expected
:reset
-- (b) context, the floor's third part: the claim SPEC §4 requires (several
-- raters at once, SKIP LOCKED; an account's events in started_at order),
-- as a lock on each event (locking accounts instead would be cheaper, and
-- leave the events open to a concurrent rerate or partition move):
-- every pending event locked in (account, time) order, bare (no column
-- read for rating, no zone lookup, nothing kept), rolled back
CREATE FUNCTION pg_temp.time_claim(OUT n bigint, OUT ms double precision)
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
BEGIN
    t0 := clock_timestamp();
    SELECT count(*) INTO n
    FROM (SELECT 1 FROM convbill.usage_event e WHERE e.status = 'pending'
          ORDER BY e.account_id, e.started_at FOR UPDATE SKIP LOCKED) x;
    ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
    RAISE NOTICE 'claim of the pending events: % rows in % ms', n, round(ms::numeric, 1);
END $$;
CHECKPOINT;
BEGIN;
SELECT * FROM pg_temp.time_claim() \gset claim_
ROLLBACK;
-- (the rolled-back locks marked every event: cleared before the 10 calls)
VACUUM convbill.usage_event;
CHECKPOINT;
-- (b) context: the rate job's batch, rate_pending(10000), five calls (each
-- committed) out of the 1,000,000 pending: what a backlog costs per batch
:rate_cmd('10k of 1M', 1, 10000, 5);
SELECT count(*) FILTER (WHERE status <> 'pending') = 50000 AS job_batches_ok FROM convbill.usage_event \gset
\if :job_batches_ok
\else
DO $$ BEGIN RAISE EXCEPTION 'five batches of 10,000 did not take 50,000 events'; END $$;
\endif
:reset
:rate_cmd('10x100k', 1, 100000, 10);
SELECT pg_temp.check_rating('10x100k', 1, :expect_rated, :expect_unknown_account, :expect_no_tariff);

-------------------------------------------------------------------------------
-- Results
-------------------------------------------------------------------------------
\echo
\echo '=== (a) ingestion: COPY FROM a file of 1,000,000 rows (5 rounds) and (b) rating (3 rounds; 10x100k once) ==='
WITH copy_med AS (
    SELECT target, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS ms, min(ms) AS min_ms,
           max(ms) AS max_ms, count(*) AS runs, max(rows) AS rows
      FROM bench_copy GROUP BY target
), base_med AS (
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS ms, min(ms) AS min_ms,
           max(ms) AS max_ms, count(*) AS runs, max(rows) AS rows
      FROM bench_baseline
), rate_med AS (
    SELECT label, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS ms, min(ms) AS min_ms,
           max(ms) AS max_ms, count(*) AS runs, (sum(n) / count(*))::bigint AS rows
      FROM (SELECT label, round, sum(ms) AS ms, sum(n) AS n FROM bench02_run GROUP BY 1, 2) t
     GROUP BY label
), res AS (
    SELECT 1 AS ord, 'a1 COPY -> plain table (same columns, no index)' AS measurement,
           c.ms, c.min_ms, c.max_ms, c.runs, c.rows, NULL::double precision AS ratio, '' AS target
      FROM copy_med c WHERE c.target = 'bench02_plain'
    UNION ALL
    SELECT 2, 'a2 COPY -> convbill.usage_event', c.ms, c.min_ms, c.max_ms, c.runs, c.rows,
           c.ms / p.ms, '<= 1.5'
      FROM copy_med c, copy_med p WHERE c.target = 'convbill.usage_event' AND p.target = 'bench02_plain'
    UNION ALL
    SELECT 3, 'b1 baseline INSERT ... SELECT of the charge rows', b.ms, b.min_ms, b.max_ms, b.runs, b.rows,
           NULL, ''
      FROM base_med b
    UNION ALL
    SELECT 4, 'b2 rate_pending(1000000), one call', r.ms, r.min_ms, r.max_ms, r.runs, r.rows,
           r.ms / b.ms, '<= 2.5'
      FROM rate_med r, base_med b WHERE r.label = '1M'
    UNION ALL
    SELECT 5, 'b3 rate_pending(100000) x 10, total', r.ms, r.min_ms, r.max_ms, r.runs, r.rows,
           r.ms / b.ms, ''
      FROM rate_med r, base_med b WHERE r.label = '10x100k'
    UNION ALL
    SELECT 6, 'b4 (context) UPDATE of the rated events'' status alone, bare', :mark_ms, :mark_ms, :mark_ms, 1,
           :mark_n, :mark_ms / b.ms, ''
      FROM base_med b
    UNION ALL
    SELECT 7, 'b5 (floor) b1 + b4: the charge rows and the status updates, bare', b.ms + :mark_ms, NULL, NULL, 1,
           b.rows, (b.ms + :mark_ms) / b.ms, ''
      FROM base_med b
    UNION ALL
    SELECT 8, 'b6 (context) the claim alone: every pending event locked in order (SKIP LOCKED), bare',
           :claim_ms, :claim_ms, :claim_ms, 1, :claim_n, :claim_ms / b.ms, ''
      FROM base_med b
    UNION ALL
    SELECT 9, 'b7 (floor) b1 + b4 + b6: charge rows, status updates and the claim, bare, nothing priced',
           b.ms + :mark_ms + :claim_ms, NULL, NULL, 1, b.rows, (b.ms + :mark_ms + :claim_ms) / b.ms, ''
      FROM base_med b
    UNION ALL
    SELECT 10, 'b8 (context) rate_pending(10000), the rate job''s batch: one of 5 calls out of 1,000,000 pending',
           r.ms / 5, NULL, NULL, r.runs, r.rows / 5, r.ms / 5 / b.ms, ''
      FROM rate_med r, base_med b WHERE r.label = '10k of 1M'
)
SELECT measurement, round(ms::numeric, 1) AS median_ms, round(min_ms::numeric, 1) AS min_ms,
       round(max_ms::numeric, 1) AS max_ms, runs, rows,
       round((rows / (ms / 1000))::numeric) AS rows_per_s,
       round((ms * 1000 / rows)::numeric, 2) AS us_per_row,
       round(ratio::numeric, 2) AS x_baseline, target,
       CASE WHEN target = '' THEN ''
            WHEN ratio <= substr(target, 4)::double precision THEN 'met' ELSE 'MISSED' END AS status
  FROM res ORDER BY ord;

\echo '=== (b) the 10 calls of 100,000 ==='
SELECT call, n AS events, round(ms::numeric, 1) AS ms,
       round((ms * 1000 / n)::numeric, 2) AS us_per_event
  FROM bench02_run WHERE label = '10x100k' ORDER BY call;

\echo '=== (b) totals (identical in every round, checked) ==='
SELECT label, round, charges, amount, billed, covered, counters, counter_used FROM bench_check ORDER BY ctid;

\echo '=== (c) memory of the rating backend, kB: VmHWM (peak RSS) counts the shared buffers it touched; RssAnon is its private memory, peak sampled every 20 ms ==='
SELECT r.label, r.round, r.call, r.batch, r.hwm_before_kb, r.hwm_after_kb,
       m.peak_rss_anon_kb, r.rss_anon_after_kb, r.rss_shmem_after_kb, m.samples
  FROM bench02_run r LEFT JOIN bench02_mem m USING (label, round, call)
 ORDER BY r.label DESC, r.round, r.call;

WITH k AS (
    SELECT (SELECT max(peak_rss_anon_kb) FROM bench02_mem WHERE label = '10x100k' AND call = 1) AS anon_100k,
           (SELECT max(peak_rss_anon_kb) FROM bench02_mem WHERE label = '10x100k') AS anon_100k_all,
           (SELECT max(peak_rss_anon_kb) FROM bench02_mem WHERE label = '1M') AS anon_1m,
           (SELECT hwm_after_kb FROM bench02_run WHERE label = '10x100k' AND call = 1) AS hwm_100k,
           (SELECT max(hwm_after_kb) FROM bench02_run WHERE label = '1M') AS hwm_1m
)
SELECT pg_size_pretty(anon_100k * 1024) AS private_peak_100k_first_call,
       pg_size_pretty(anon_100k_all * 1024) AS private_peak_100k_any_call,
       pg_size_pretty(anon_1m * 1024) AS private_peak_1m,
       round(anon_1m::numeric / nullif(anon_100k, 0), 2) AS private_1m_over_100k,
       pg_size_pretty(hwm_100k * 1024) AS vmhwm_100k_first_call, pg_size_pretty(hwm_1m * 1024) AS vmhwm_1m,
       round(hwm_1m::numeric / nullif(hwm_100k, 0), 2) AS vmhwm_1m_over_100k
  FROM k;

-------------------------------------------------------------------------------
-- Clean up
-------------------------------------------------------------------------------
COPY (SELECT WHERE false) TO :'evfile';
\! rm -f "$BENCH02_EVFILE"
DROP TABLE bench02_plain, bench02_charge_baseline, bench02_run, bench02_mem;
DROP PROCEDURE bench02_rate(text, int, int, int);
DROP FUNCTION bench02_proc_kb(int, text);
\if :own_dblink
\if :have_dblink
DROP EXTENSION dblink;
\endif
\endif
SET client_min_messages = warning;
DROP EXTENSION convbill CASCADE;
