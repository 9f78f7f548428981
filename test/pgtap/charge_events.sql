-------------------------------------------------------------------------------
-- charge_events.sql — charge_events(batch) = charge_event() for each event in turn.
--
-- Two universes of 13 accounts are set up identically (A: ids 9100001.., B:
-- 9200001..): prepaid and postpaid accounts, a parent paying for two children
-- (one money pool and credit limit for three accounts), a top-up bucket with
-- an expiry, granted allowances of two priorities, plan allowances, an open
-- session holding money and units, a low-balance threshold, a suspended, a
-- closed and a subscription-less account, a child whose payer is suspended,
-- and an account whose currency no longer matches its plan.
-- One random stream of events (sms, voice with and without a destination zone,
-- data on a cycle-scoped tariff, api calls, a service without a rate; zero,
-- whole and fractional units; event ids from a small pool per account, so
-- events repeat inside a batch and across batches) is cut into random batches:
-- universe A gets each batch through charge_events(), universe B gets every
-- event through charge_event(), in the same order.  Then, exactly:
--   answers (as text: same numbers, same scales), event_answer, charges,
--   bucket balances, usage counters, balance() of every account
-- are the same in A and B, and in both the ledger sums to every bucket.  The
-- ledger itself differs on purpose: a batch debits each bucket once.
-- Errors: a batch with a bad event raises the error of the first bad event
-- (as charge_event() would, event by event) and changes nothing.
--
-- Reproducible: the seed is fixed; change it with  pg_prove --set seed=0.123 ...
-------------------------------------------------------------------------------
BEGIN;
SET LOCAL client_min_messages = warning;
\if :{?seed}
\else
\set seed 0.314159
\endif
SELECT setseed(:seed) \gset
SELECT plan(26);

INSERT INTO convbill.service (code, unit) VALUES
    ('ce_sms', 'message'), ('ce_voice', 'second'), ('ce_data', 'MB'), ('ce_api', 'call'), ('ce_fax', 'page');
INSERT INTO convbill.destination (prefix, zone) VALUES ('4930', 'ce_berlin'), ('49', 'ce_germany');
INSERT INTO convbill.plan (code, name, currency, allowances) VALUES
    ('CE-EUR', 'charge_events EUR', 'EUR', '{"ce_sms": 4, "ce_voice": 120, "ce_data": 2.5}'),
    ('CE-USD', 'charge_events USD', 'USD', '{}');
INSERT INTO convbill.plan_rate (plan_code, service, zone, tariff) VALUES
    ('CE-EUR', 'ce_sms', NULL, '{"price": "0.05", "rounding": {"decimals": 2}}'),
    ('CE-EUR', 'ce_voice', NULL, '{"price": "0.002", "increment": {"first": 60, "next": 30}, "rounding": {"decimals": 4}}'),
    ('CE-EUR', 'ce_voice', 'ce_berlin', '{"price": "0.001", "increment": {"first": 60, "next": 1}, "setup_fee": "0.01", "rounding": {"decimals": 4}}'),
    ('CE-EUR', 'ce_data', NULL, '{"model": "graduated", "scope": "cycle", "tiers": [{"up_to": 4, "price": "0.10"}, {"up_to": null, "price": "0.03"}], "rounding": {"decimals": 2}}'),
    ('CE-EUR', 'ce_api', NULL, '{"price": "0.0004", "minimum": "0.001", "rounding": {"decimals": 6}}'),
    ('CE-USD', 'ce_sms', NULL, '{"price": "0.07"}');

-- one universe: accounts base+1 .. base+13
CREATE FUNCTION pg_temp.universe(base bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO convbill.account (account_id, external_ref, name, currency, credit_limit, low_balance_threshold)
    SELECT base + i, 'CE-' || (base + i), 'charge_events ' || i, CASE WHEN i = 9 THEN 'USD' ELSE 'EUR' END,
           CASE i WHEN 3 THEN 0.50 WHEN 4 THEN 0.30 ELSE 0 END, CASE WHEN i IN (2, 4) THEN 0.20 END
    FROM generate_series(1, 13) i;
    UPDATE convbill.account SET parent_id = base + 4, bill_to_parent = true WHERE account_id IN (base + 5, base + 6);
    UPDATE convbill.account SET parent_id = base + 7, bill_to_parent = true WHERE account_id = base + 13;
    PERFORM convbill.subscribe(base + i, CASE WHEN i = 9 THEN 'CE-USD' ELSE 'CE-EUR' END, '2020-01-01')
    FROM generate_series(1, 13) i WHERE i <> 8;
    PERFORM convbill.top_up(base + 1, 1.00, 'ce');
    PERFORM convbill.top_up(base + 2, 0.30, 'ce');
    PERFORM convbill.top_up(base + 4, 0.80, 'ce');
    PERFORM convbill.top_up(base + 4, 0.40, 'ce-expiring', now() + interval '1 day');
    PERFORM convbill.top_up(base + 7, 5, 'ce');
    PERFORM convbill.top_up(base + 8, 5, 'ce');
    PERFORM convbill.top_up(base + 10, 2.00, 'ce');
    PERFORM convbill.top_up(base + 11, 5, 'ce');
    PERFORM convbill.top_up(base + 12, 0.40, 'ce');
    PERFORM convbill.grant_allowance(base + 10, 'ce_sms', 3, now() - interval '1 day', 'infinity', -1, 'ce-first');
    PERFORM convbill.grant_allowance(base + 10, 'ce_voice', 100, now() - interval '1 day', now() + interval '1 hour', 1, 'ce-later');
    PERFORM convbill.grant_allowance(base + 1, 'ce_data', 1.25, now() - interval '1 day', 'infinity', 5, 'ce-data');
    -- an open session of account 12 holds its voice allowance and money
    PERFORM convbill.reserve(base + 12, 'ce_voice', 'ce-hold-' || base, 400);
    UPDATE convbill.account SET status = 'suspended' WHERE account_id = base + 7;
    UPDATE convbill.account SET status = 'closed' WHERE account_id = base + 11;
    UPDATE convbill.account SET currency = 'EUR' WHERE account_id = base + 9;     -- its plan stays USD
END $$;
SELECT pg_temp.universe(9100000);
SELECT pg_temp.universe(9200000);

-- the events: account index, service, units, attrs, an event id from a pool
-- of 40 per account, and batch numbers (a new batch starts with p = 1/20)
CREATE TEMP TABLE ce_ev AS
SELECT seq, acct, svc AS service, event_id, attrs,
       CASE svc WHEN 'ce_sms' THEN (ARRAY[0, 1, 1, 1, 2, 3])[1 + floor(random() * 6)::int]::numeric
                WHEN 'ce_voice' THEN CASE WHEN random() < 0.1 THEN round((random() * 100)::numeric, 3)
                                          ELSE floor(random() * 240)::numeric END
                WHEN 'ce_data' THEN round((random() * 3)::numeric, (ARRAY[0, 1, 4, 9])[1 + floor(random() * 4)::int])
                WHEN 'ce_api' THEN floor(random() * 3000)::numeric
                ELSE 1 END AS units,
       1 + sum(CASE WHEN random() < 0.05 THEN 1 ELSE 0 END) OVER (ORDER BY seq) AS batch
FROM (SELECT seq, acct,
             CASE WHEN r < 0.40 THEN 'ce_sms' WHEN r < 0.65 THEN 'ce_voice' WHEN r < 0.80 THEN 'ce_data'
                  WHEN r < 0.96 THEN 'ce_api' ELSE 'ce_fax' END AS svc,
             'ev-' || floor(random() * 40)::int AS event_id,
             CASE WHEN random() < 0.3 THEN '{"destination": "+49 30 1234567"}'::jsonb
                  WHEN random() < 0.2 THEN '{"destination": "4411"}'::jsonb
                  WHEN random() < 0.5 THEN NULL ELSE '{}'::jsonb END AS attrs
      FROM (SELECT seq, (ARRAY[1, 1, 2, 2, 3, 3, 4, 5, 5, 6, 6, 7, 8, 9, 10, 10, 11, 12, 12, 13])[1 + floor(random() * 20)::int] AS acct,
                   random() AS r
            FROM generate_series(1, 700) seq) s) s;

-- A: batch by batch; B: event by event
CREATE TEMP TABLE ce_ans (universe text, seq int, account_id bigint, event_id text, answer convbill.grant);
DO $$
DECLARE
    b int;
    e record;
BEGIN
    FOR b IN SELECT DISTINCT batch FROM ce_ev ORDER BY batch LOOP
        INSERT INTO ce_ans
        SELECT 'A', ev.seq, r.account_id, r.event_id,
               ROW(r.result, r.reason, r.granted, r.held, r.charged, r.expires_at)::convbill.grant
        FROM convbill.charge_events(ARRAY(SELECT ROW(9100000 + x.acct, x.service, x.event_id, x.units, x.attrs)::convbill.event_request
                                          FROM ce_ev x WHERE x.batch = b ORDER BY x.seq))
             WITH ORDINALITY AS r(account_id, event_id, result, reason, granted, held, charged, expires_at, n)
        JOIN (SELECT x.seq, row_number() OVER (ORDER BY x.seq) AS n FROM ce_ev x WHERE x.batch = b) ev USING (n);
    END LOOP;
    FOR e IN SELECT * FROM ce_ev ORDER BY seq LOOP
        INSERT INTO ce_ans
        VALUES ('B', e.seq, 9200000 + e.acct, e.event_id,
                convbill.charge_event(9200000 + e.acct, e.service, e.event_id, e.units, e.attrs));
    END LOOP;
END $$;

-------------------------------------------------------------------------------
-- the stream covers what it claims to (in B, the reference)
-------------------------------------------------------------------------------
SELECT is((SELECT count(DISTINCT batch) > 20 AND max(n) > 40 FROM (SELECT batch, count(*) n FROM ce_ev GROUP BY batch) x),
          true, 'more than 20 batches, some with over 40 events');
SELECT is((SELECT count(*) FROM ce_ans a JOIN ce_ev e ON e.seq = a.seq
           WHERE a.universe = 'B' AND e.acct = 13 AND (a.answer).reason IS DISTINCT FROM 'account_suspended'),
          0::bigint, 'a child of a suspended payer is refused');
SELECT is(
    (SELECT array_agg(w ORDER BY w) FROM unnest(ARRAY['granted', 'insufficient_funds', 'no_tariff', 'account_suspended',
                                                      'account_closed', 'currency_mismatch']) w
     WHERE NOT EXISTS (SELECT FROM ce_ans a WHERE a.universe = 'B'
                        AND coalesce((a.answer).reason, (a.answer).result) = w)),
    NULL, 'every outcome occurs: granted, insufficient_funds, no_tariff, account_suspended, account_closed, currency_mismatch');
SELECT cmp_ok((SELECT count(*) FROM (SELECT batch, acct, event_id FROM ce_ev GROUP BY 1, 2, 3 HAVING count(*) > 1) d),
              '>=', 5::bigint, 'events repeated inside a batch');
SELECT cmp_ok((SELECT count(*) FROM ce_ev e WHERE EXISTS (SELECT FROM ce_ev f WHERE f.acct = e.acct
                                                            AND f.event_id = e.event_id AND f.batch < e.batch)),
              '>=', 50::bigint, 'events retried in a later batch');
SELECT cmp_ok((SELECT count(*) FROM convbill.charge WHERE account_id BETWEEN 9200001 AND 9200013
                 AND covered_quantity > 0 AND amount > 0),
              '>=', 3::bigint, 'events partly covered by allowances, partly paid');
SELECT cmp_ok((SELECT count(*) FROM (SELECT e.batch FROM ce_ev e JOIN ce_ans a ON a.universe = 'B' AND a.seq = e.seq
                                     WHERE e.acct IN (4, 5, 6) AND (a.answer).result = 'granted'
                                     GROUP BY e.batch HAVING count(DISTINCT e.acct) > 1) x),
              '>=', 1::bigint, 'a parent and its children charged in the same batch (one money pool)');
SELECT cmp_ok((SELECT count(*) FROM convbill.usage_counter WHERE account_id BETWEEN 9200001 AND 9200013),
              '>=', 3::bigint, 'cycle-scoped charges');
SELECT cmp_ok((SELECT count(*) FROM ce_ans a JOIN ce_ev e ON e.seq = a.seq
               WHERE a.universe = 'B' AND e.service = 'ce_voice' AND e.attrs ->> 'destination' LIKE '+49 30%'
                 AND (a.answer).result = 'granted'),
              '>=', 3::bigint, 'calls priced by their destination zone');

-------------------------------------------------------------------------------
-- A = B
-------------------------------------------------------------------------------
SELECT is((SELECT count(*) FROM ce_ans WHERE universe = 'A'), (SELECT count(*) FROM ce_ev),
          'charge_events returned one answer per event');
SELECT is_empty($$
    SELECT e.seq, e.acct, e.event_id, a.answer::text AS batch, b.answer::text AS one_by_one
    FROM ce_ev e
    JOIN ce_ans a ON a.universe = 'A' AND a.seq = e.seq
    JOIN ce_ans b ON b.universe = 'B' AND b.seq = e.seq
    WHERE a.answer::text IS DISTINCT FROM b.answer::text
       OR a.account_id <> 9100000 + e.acct OR a.event_id <> e.event_id
    ORDER BY e.seq LIMIT 10 $$,
    'every answer is the same (values and scales)');
SELECT results_eq($$
    SELECT account_id - 9100000, event_id, answer::text, charge_id IS NOT NULL FROM convbill.event_answer
    WHERE account_id BETWEEN 9100001 AND 9100013 ORDER BY 1, 2 $$, $$
    SELECT account_id - 9200000, event_id, answer::text, charge_id IS NOT NULL FROM convbill.event_answer
    WHERE account_id BETWEEN 9200001 AND 9200013 ORDER BY 1, 2 $$,
    'the stored answers are the same');
SELECT results_eq($$
    SELECT account_id - 9100000, external_id, kind, service, zone, quantity::text, billed_quantity::text,
           covered_quantity::text, amount::text, currency, occurred_at, period_start, period_end, source, rate_id
    FROM convbill.charge WHERE account_id BETWEEN 9100001 AND 9100013 ORDER BY 1, charge_id $$, $$
    SELECT account_id - 9200000, external_id, kind, service, zone, quantity::text, billed_quantity::text,
           covered_quantity::text, amount::text, currency, occurred_at, period_start, period_end, source, rate_id
    FROM convbill.charge WHERE account_id BETWEEN 9200001 AND 9200013 ORDER BY 1, charge_id $$,
    'the same charges, in the same order per account');
SELECT results_eq($$
    SELECT e.account_id - 9100000, e.event_id, c.amount::text FROM convbill.event_answer e
    JOIN convbill.charge c USING (account_id, charge_id)
    WHERE e.account_id BETWEEN 9100001 AND 9100013 ORDER BY 1, 2 $$, $$
    SELECT e.account_id - 9200000, e.event_id, c.amount::text FROM convbill.event_answer e
    JOIN convbill.charge c USING (account_id, charge_id)
    WHERE e.account_id BETWEEN 9200001 AND 9200013 ORDER BY 1, 2 $$,
    'each answer points to its own charge');
SELECT results_eq($$
    SELECT account_id - 9100000, kind, unit, origin, coalesce(reference, ''), valid_from, valid_until, priority,
           period_start, balance
    FROM convbill.bucket WHERE account_id BETWEEN 9100001 AND 9100013 ORDER BY 1, 2, 3, 4, 5, 7 $$, $$
    SELECT account_id - 9200000, kind, unit, origin, coalesce(reference, ''), valid_from, valid_until, priority,
           period_start, balance
    FROM convbill.bucket WHERE account_id BETWEEN 9200001 AND 9200013 ORDER BY 1, 2, 3, 4, 5, 7 $$,
    'every bucket has the same balance');
SELECT results_eq($$
    SELECT account_id - 9100000, period_start, counter, used FROM convbill.usage_counter
    WHERE account_id BETWEEN 9100001 AND 9100013 ORDER BY 1, 2, 3 $$, $$
    SELECT account_id - 9200000, period_start, counter, used FROM convbill.usage_counter
    WHERE account_id BETWEEN 9200001 AND 9200013 ORDER BY 1, 2, 3 $$,
    'the same cycle totals');
SELECT results_eq($$
    SELECT i, b.* FROM generate_series(1, 13) i, convbill.balance(9100000 + i) b ORDER BY 1, 2 $$, $$
    SELECT i, b.* FROM generate_series(1, 13) i, convbill.balance(9200000 + i) b ORDER BY 1, 2 $$,
    'balance() of every account is the same');
SELECT is_empty($$
    SELECT b.account_id, b.bucket_id, b.balance, sum(l.amount)
    FROM convbill.bucket b LEFT JOIN convbill.ledger l USING (account_id, bucket_id)
    WHERE b.account_id BETWEEN 9100001 AND 9100013 OR b.account_id BETWEEN 9200001 AND 9200013
    GROUP BY 1, 2, 3 HAVING b.balance <> coalesce(sum(l.amount), 0) $$,
    'in both, the ledger sums to every bucket''s balance');
SELECT cmp_ok((SELECT count(*) FROM convbill.ledger WHERE kind = 'debit' AND account_id BETWEEN 9100001 AND 9100013),
              '<', (SELECT count(*) FROM convbill.ledger WHERE kind = 'debit' AND account_id BETWEEN 9200001 AND 9200013),
              'a batch debits a bucket once, not once per event');

-------------------------------------------------------------------------------
-- errors: the first bad event's, and nothing changes
-------------------------------------------------------------------------------
CREATE TEMP TABLE ce_before AS
SELECT (SELECT count(*) FROM convbill.charge) AS charges, (SELECT count(*) FROM convbill.event_answer) AS answers,
       (SELECT count(*) FROM convbill.ledger) AS ledger, (SELECT sum(balance) FROM convbill.bucket) AS balances;
SELECT throws_ok($$SELECT * FROM convbill.charge_events(ARRAY[
        (9100001, 'ce_sms', 'err-1', 1, NULL), (9100001, 'ce_telex', 'err-2', 1, NULL),
        (9100002, 'ce_sms', 'err-3', NULL, NULL)]::convbill.event_request[])$$,
    '23503', 'charge_events: event 2: unknown service "ce_telex"',
    'an unknown service before a NULL quantity: the unknown service');
SELECT throws_ok($$SELECT * FROM convbill.charge_events(ARRAY[
        (9100001, 'ce_sms', 'err-1', 1, NULL), (9100002, 'ce_sms', 'err-3', NULL, NULL),
        (9100001, 'ce_telex', 'err-2', 1, NULL)]::convbill.event_request[])$$,
    '22004', 'charge_events: event 2: units must not be NULL',
    'a NULL quantity before an unknown service: the NULL quantity');
SELECT throws_ok($$SELECT * FROM convbill.charge_events(ARRAY[
        (9100001, 'ce_sms', 'err-1', 1, NULL), (9100099, 'ce_sms', 'err-4', 1, NULL),
        (9100001, 'ce_sms', NULL, 1, NULL)]::convbill.event_request[])$$,
    '23503', 'charge_events: event 2: account 9100099 does not exist',
    'an unknown account');
SELECT throws_ok($$SELECT * FROM convbill.charge_events(ARRAY[
        (9100001, 'ce_sms', 'err-1', 1, NULL), (9100001, 'ce_sms', 'err-5', 1.0000000001, NULL)]::convbill.event_request[])$$,
    '22023', NULL, 'too many decimals');
SELECT results_eq($$SELECT (SELECT count(*) FROM convbill.charge), (SELECT count(*) FROM convbill.event_answer),
                           (SELECT count(*) FROM convbill.ledger), (SELECT sum(balance) FROM convbill.bucket) $$,
                  $$SELECT * FROM ce_before$$,
                  'a failed batch changes nothing');
-- a retried event is answered before its service is checked (as charge_event does)
SELECT results_eq($$
    SELECT r.result, r.reason, r.granted, r.charged
    FROM (SELECT account_id, event_id FROM convbill.event_answer WHERE account_id = 9100001 ORDER BY event_id LIMIT 1) e,
         LATERAL convbill.charge_events(ARRAY[(e.account_id, 'ce_telex', e.event_id, 7, NULL)]::convbill.event_request[]) r $$, $$
    SELECT (answer).result, (answer).reason, (answer).granted, (answer).charged FROM convbill.event_answer
    WHERE account_id = 9100001 ORDER BY event_id LIMIT 1 $$,
    'a retried event gets its stored answer, whatever it carries now');
SELECT is((SELECT count(*) FROM convbill.charge_events('{}')) + (SELECT count(*) FROM convbill.charge_events(NULL)),
          0::bigint, 'an empty or NULL array: no answers');

SELECT * FROM finish();
ROLLBACK;
