-- test/bench/03_online/events.sql — charge_events() in batches of 1,000 vs
-- INSERT ... SELECT of as many charge rows (part of test/bench/03_online.sh).
--
-- Per round: :batches batches of 1,000 one-shot events (half sms, half api
-- calls) on random accounts among 10,000, each batch one charge_events() call
-- in its own transaction; then the baseline: as many rows, 1,000 per
-- INSERT ... SELECT and transaction, into a plain copy of convbill.charge
-- (same columns, defaults and indexes; no triggers).  Both generate their rows
-- the same way in the timed loop.  Every round is checked: one answer and one
-- charge per event, each charge's amount off its payer's money.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE TABLE bench03_charge_baseline (LIKE convbill.charge INCLUDING ALL);
CREATE FUNCTION pg_temp.bench03_check(ok boolean, msg text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION 'check failed: %', msg;
    END IF;
END $$;

CREATE PROCEDURE bench03_events(p_round int, p_batches int, p_size int, INOUT ms double precision)
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    n bigint;
BEGIN
    FOR b IN 1 .. p_batches LOOP
        SELECT count(*) INTO n
        FROM convbill.charge_events(ARRAY(
            SELECT ROW(1 + floor(random() * 10000)::int, CASE WHEN i % 2 = 0 THEN 'sms' ELSE 'api' END,
                       'r' || p_round || '-' || b || '-' || i, CASE WHEN i % 2 = 0 THEN 1 ELSE 1 + i % 7 END,
                       NULL)::convbill.event_request
            FROM generate_series(1, p_size) i));
        COMMIT;
    END LOOP;
    ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
END $$;

CREATE PROCEDURE bench03_baseline(p_round int, p_batches int, p_size int, INOUT ms double precision)
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    FOR b IN 1 .. p_batches LOOP
        INSERT INTO bench03_charge_baseline
            (account_id, kind, service, quantity, billed_quantity, covered_quantity, amount, currency,
             occurred_at, period_start, period_end, source, external_id, rate_id)
        SELECT 1 + floor(random() * 10000)::int, 'usage', CASE WHEN i % 2 = 0 THEN 'sms' ELSE 'api' END,
               CASE WHEN i % 2 = 0 THEN 1 ELSE 1 + i % 7 END, 1, 0, 0.090000, 'EUR', now(),
               date_trunc('month', now()), date_trunc('month', now()) + interval '1 month', 'event',
               'r' || p_round || '-' || b || '-' || i, 2
        FROM generate_series(1, p_size) i;
        COMMIT;
    END LOOP;
    ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
END $$;

-- (context) the floor SPEC §3 sets for charge_events: per event a charge and
-- a stored answer, per account of the batch one debit of its money (the
-- bucket and a ledger entry), written bare: one INSERT ... SELECT statement
-- per batch and transaction into copies of the tables (LIKE ... INCLUDING
-- ALL, no triggers; the bucket copy holds every account's main bucket, with
-- the real table's fillfactor), no rate lookup, no balance check, no
-- allowance.  Its time over the baseline's is what any charge_events must
-- at least cost.
CREATE TABLE bench03_floor_charge (LIKE convbill.charge INCLUDING ALL);
CREATE TABLE bench03_floor_answer (LIKE convbill.event_answer INCLUDING ALL);
CREATE TABLE bench03_floor_ledger (LIKE convbill.ledger INCLUDING ALL);
CREATE TABLE bench03_floor_bucket (LIKE convbill.bucket INCLUDING ALL) WITH (fillfactor = 50);
INSERT INTO bench03_floor_bucket SELECT * FROM convbill.bucket WHERE origin = 'main';
CREATE PROCEDURE bench03_floor(p_round int, p_batches int, p_size int, INOUT ms double precision)
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    FOR b IN 1 .. p_batches LOOP
        WITH ev AS MATERIALIZED (
            SELECT 1 + floor(random() * 10000)::int AS account_id, CASE WHEN i % 2 = 0 THEN 'sms' ELSE 'api' END AS service,
                   CASE WHEN i % 2 = 0 THEN 1 ELSE 1 + i % 7 END AS units, 'r' || p_round || '-' || b || '-' || i AS event_id
            FROM generate_series(1, p_size) i
        ),
        c AS (
            INSERT INTO bench03_floor_charge
                (account_id, kind, service, quantity, billed_quantity, covered_quantity, amount, currency,
                 occurred_at, period_start, period_end, source, external_id, rate_id)
            SELECT ev.account_id, 'usage', ev.service, ev.units, ev.units, 0,
                   CASE WHEN ev.service = 'sms' THEN 0.09 ELSE 0.0004 * ev.units END, 'EUR', now(),
                   date_trunc('month', now()), date_trunc('month', now()) + interval '1 month', 'event', ev.event_id, 2
            FROM ev
            RETURNING account_id, charge_id, external_id, quantity, amount
        ),
        answers AS (
            INSERT INTO bench03_floor_answer (account_id, event_id, answer, charge_id)
            SELECT c.account_id, c.external_id, ROW('granted', NULL, c.quantity, 0, c.amount, NULL)::convbill.grant,
                   c.charge_id
            FROM c
        ),
        per AS (SELECT c.account_id, sum(c.amount) AS amount, count(*)::int AS n FROM c GROUP BY c.account_id),
        debit AS (
            UPDATE bench03_floor_bucket k SET balance = k.balance - per.amount
            FROM per WHERE k.account_id = per.account_id AND k.origin = 'main'
            RETURNING k.account_id, k.bucket_id, per.amount, per.n
        )
        INSERT INTO bench03_floor_ledger (account_id, kind, bucket_id, unit, amount, charges)
        SELECT d.account_id, 'debit', d.bucket_id, 'EUR', -d.amount, d.n FROM debit d;
        COMMIT;
    END LOOP;
    ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
END $$;

SELECT :batches * 1000 AS events \gset
SELECT sum(balance) AS money_before FROM convbill.bucket WHERE kind = 'money' \gset
-- warm-up, then statistics that know the event tables are not empty (plans
-- made while they were would probe them with sequential scans)
CALL bench03_events(0, 5, 1000, NULL);
CALL bench03_baseline(0, 5, 1000, NULL);
CALL bench03_floor(0, 5, 1000, NULL);
ANALYZE;

SELECT 1 AS r \gset
\ir events_round.sql
SELECT 2 AS r \gset
\ir events_round.sql
SELECT 3 AS r \gset
\ir events_round.sql

-- money: every granted event's charge came off its payer's money, once
SELECT sum(balance) AS money_after FROM convbill.bucket WHERE kind = 'money' \gset
SELECT pg_temp.bench03_check(sum(amount) = :money_before - :money_after,
                             format('charge_events: the charges add up to %s, the money went down by %s',
                                    sum(amount), :money_before - :money_after))
FROM convbill.charge WHERE source = 'event';
