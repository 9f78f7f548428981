-- Invariants after the online-charging stress run (test/online/stress.sh).
-- stress.check(coverage) raises "invariant N: ..." naming the first rows that
-- break invariant N, and otherwise returns a summary.  With coverage it also
-- fails when the traffic did not exercise what the invariants are about.
--
--  1  every bucket's balance is the sum of its ledger amounts
--  2  every session's holds in the ledger sum to what it holds now (nothing
--     for a finished session); every hold entry belongs to a session
--  3  money: a step of a session that debited more than the hold it released
--     reported overuse, and every payer's available money (balance +
--     credit_limit - open holds) is at least minus the money so debited
--     beyond holds ("overuse money").  Then no payer is below -credit_limit
--     by more than its overuse money.  See the comment at invariant 3.
--  4  a session is charged at most once: exactly one charge for a finished
--     session that used anything, none otherwise; the charge is the money
--     and allowance the session debited in the ledger
--  5  every retransmission got the first answer and changed nothing; every
--     logged answer is the stored one (both survive a crash or neither does)
--  6  a granted event has exactly one charge, a denied one none; the ledger
--     debits the event charges once (per charge where the ledger names it,
--     per payer in all); every copy of an event got the one stored answer;
--     top-ups: one ledger entry per reference, every retry returned it
\set ON_ERROR_STOP on
SET client_min_messages = warning;

-- Fails with "invariant N: what (count rows; e.g. the first five)" when the
-- query (one text column describing each offending row) returns rows.
CREATE OR REPLACE FUNCTION stress.expect_none(p_invariant integer, p_what text, p_query text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    s text;
BEGIN
    EXECUTE format('SELECT count(*), string_agg(o.x, ''; '') FILTER (WHERE o.rn <= 5)
                    FROM (SELECT q.x, row_number() OVER () AS rn FROM (%s) q(x)) o', p_query)
    INTO n, s;
    IF n > 0 THEN
        RAISE EXCEPTION 'invariant %: % (% rows; e.g. %)', p_invariant, p_what, n, s USING ERRCODE = 'P0001';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION stress.check(p_coverage boolean) RETURNS text
SET client_min_messages = warning
LANGUAGE plpgsql AS $$
DECLARE
    overuse_money numeric;
    below integer;
    cov record;
BEGIN
    -- 1. ledger sums = bucket balances; every entry on an existing bucket of its unit
    PERFORM stress.expect_none(1, 'bucket balance differs from the sum of its ledger amounts', $q$
        SELECT format('bucket %s/%s balance %s ledger %s', b.account_id, b.bucket_id, b.balance, coalesce(l.lsum, 0))
        FROM convbill.bucket b
        LEFT JOIN (SELECT account_id, bucket_id, sum(amount) AS lsum FROM convbill.ledger
                   WHERE bucket_id IS NOT NULL GROUP BY 1, 2) l USING (account_id, bucket_id)
        WHERE b.balance <> coalesce(l.lsum, 0) $q$);
    PERFORM stress.expect_none(1, 'ledger amount on a missing bucket or in another unit', $q$
        SELECT format('entry %s/%s', l.account_id, l.entry_id)
        FROM convbill.ledger l LEFT JOIN convbill.bucket b USING (account_id, bucket_id)
        WHERE (l.bucket_id IS NOT NULL AND (b.bucket_id IS NULL OR b.unit <> l.unit))
           OR (l.bucket_id IS NULL AND l.amount <> 0) $q$);

    -- 2. holds: per session, sum(held) = what the session holds now
    DROP TABLE IF EXISTS pg_temp.sess;
    CREATE TEMP TABLE sess AS
    SELECT r.*, p.currency,
           coalesce(h.money, 0) AS l_held_money, coalesce(h.units, 0) AS l_held_units,
           coalesce(h.other, 0) AS l_other, coalesce(h.debit_money, 0) AS l_debit_money,
           coalesce(h.debit_units, 0) AS l_debit_units
    FROM convbill.reservation r
    JOIN convbill.account p ON p.account_id = r.payer_id
    LEFT JOIN (SELECT l.session_id,
                      sum(l.held) FILTER (WHERE l.account_id = r2.payer_id AND l.unit = p2.currency) AS money,
                      sum(l.held) FILTER (WHERE l.account_id = r2.account_id AND l.unit = r2.service) AS units,
                      count(*) FILTER (WHERE NOT ((l.account_id = r2.payer_id AND l.unit = p2.currency)
                                                  OR (l.account_id = r2.account_id AND l.unit = r2.service))) AS other,
                      -sum(l.amount) FILTER (WHERE l.kind = 'debit' AND l.account_id = r2.payer_id
                                               AND l.unit = p2.currency) AS debit_money,
                      -sum(l.amount) FILTER (WHERE l.kind = 'debit' AND l.account_id = r2.account_id
                                               AND l.unit = r2.service) AS debit_units
               FROM convbill.ledger l
               JOIN convbill.reservation r2 ON r2.session_id = l.session_id
               JOIN convbill.account p2 ON p2.account_id = r2.payer_id
               WHERE l.session_id IS NOT NULL
               GROUP BY 1) h ON h.session_id = r.session_id;
    PERFORM stress.expect_none(2, 'a session''s ledger holds differ from what it holds', $q$
        SELECT format('%s %s holds %s money %s units; ledger %s / %s', session_id, status, held_money, held_units,
                      l_held_money, l_held_units)
        FROM pg_temp.sess
        WHERE l_held_money <> held_money OR l_held_units <> held_units
           OR (status <> 'open' AND (held_money <> 0 OR held_units <> 0)) $q$);
    PERFORM stress.expect_none(2, 'a hold without a session, or a session entry of an unknown session', $q$
        SELECT format('entry %s/%s (%s)', l.account_id, l.entry_id, l.session_id)
        FROM convbill.ledger l
        WHERE (l.held <> 0 AND l.session_id IS NULL)
           OR (l.session_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM convbill.reservation r WHERE r.session_id = l.session_id)) $q$);
    PERFORM stress.expect_none(2, 'a session''s entry on neither its payer''s money nor its own allowance', $q$
        SELECT session_id FROM pg_temp.sess WHERE l_other > 0 $q$);

    -- 3. Money and credit limits.  Every grant is of money available then
    -- (balance + credit_limit - open, unexpired holds), so available money
    -- only falls below zero through money debited beyond a hold: a step of a
    -- session (one transaction: its ledger entries with the same created_at)
    -- that debited more than the hold it released.  That happens only when
    -- the step reported more units than were granted (reservation.overuse
    -- > 0); the excess is the session's overuse money.  Hence for every payer
    --     available >= -(its overuse money)
    -- and so, holds being >= 0, balance >= -credit_limit - overuse money.
    -- (No money bucket expires during the run: see setup.sql.)
    DROP TABLE IF EXISTS pg_temp.excess;
    CREATE TEMP TABLE excess AS
    SELECT st.payer, st.session_id, st.created_at, st.debited - st.released AS money
    FROM (SELECT l.account_id AS payer, l.session_id, l.created_at,
                 coalesce(-sum(l.amount) FILTER (WHERE l.kind = 'debit'), 0) AS debited,
                 coalesce(-sum(l.held) FILTER (WHERE l.held < 0), 0) AS released
          FROM convbill.ledger l JOIN convbill.account a ON a.account_id = l.account_id AND a.currency = l.unit
          WHERE l.session_id IS NOT NULL
          GROUP BY 1, 2, 3) st
    WHERE st.debited > st.released;
    PERFORM stress.expect_none(3, 'a session debited money beyond its hold without reporting overuse', $q$
        SELECT format('%s at %s: %s beyond its hold', e.session_id, e.created_at, e.money)
        FROM pg_temp.excess e JOIN convbill.reservation r ON r.session_id = e.session_id
        WHERE r.overuse = 0 $q$);
    PERFORM stress.expect_none(3, 'available money below minus the overuse money', $q$
        SELECT format('payer %s available %s overuse money %s', account_id, avail, om)
        FROM (SELECT a.account_id, convbill.money_available(a.account_id) AS avail,
                     coalesce((SELECT sum(e.money) FROM pg_temp.excess e WHERE e.payer = a.account_id), 0) AS om
              FROM convbill.account a WHERE NOT a.bill_to_parent) x
        WHERE avail + om < 0 $q$);
    PERFORM stress.expect_none(3, 'money balance below -credit_limit by more than the overuse money', $q$
        SELECT format('payer %s balance %s credit_limit %s', a.account_id, b.bal, a.credit_limit)
        FROM convbill.account a
        JOIN (SELECT account_id, sum(balance) AS bal FROM convbill.bucket
              WHERE kind = 'money' AND valid_from <= now() AND valid_until > now() GROUP BY 1) b USING (account_id)
        WHERE NOT a.bill_to_parent
          AND b.bal < -a.credit_limit - coalesce((SELECT sum(e.money) FROM pg_temp.excess e
                                                  WHERE e.payer = a.account_id), 0) $q$);
    SELECT coalesce(sum(money), 0) INTO overuse_money FROM pg_temp.excess;
    SELECT count(*) INTO below
    FROM convbill.account a
    WHERE NOT a.bill_to_parent
      AND (SELECT sum(balance) FROM convbill.bucket b WHERE b.account_id = a.account_id AND b.kind = 'money')
          < -a.credit_limit;

    -- 4. one charge per finished session that used anything, equal to its ledger debits
    PERFORM stress.expect_none(4, 'a session charged more than once', $q$
        SELECT format('%s/%s', account_id, external_id) FROM convbill.charge WHERE source = 'session'
        GROUP BY account_id, external_id HAVING count(*) > 1 $q$);
    PERFORM stress.expect_none(4, 'a session charge without its session', $q$
        SELECT format('%s/%s', c.account_id, c.external_id) FROM convbill.charge c
        WHERE c.source = 'session'
          AND NOT EXISTS (SELECT 1 FROM convbill.reservation r
                          WHERE r.account_id = c.account_id AND r.session_id = c.external_id) $q$);
    PERFORM stress.expect_none(4, 'a session''s charge is not its ledger debits (or is missing, or there without usage)', $q$
        SELECT format('%s %s used %s charged %s covered %s; ledger %s / %s; charge %s: %s %s %s',
                      r.session_id, r.status, r.used, r.charged, r.covered, r.l_debit_money, r.l_debit_units,
                      c.charge_id, c.amount, c.covered_quantity, c.quantity)
        FROM pg_temp.sess r
        LEFT JOIN convbill.charge c ON c.account_id = r.account_id AND c.source = 'session'
                                   AND c.external_id = r.session_id
        WHERE r.l_debit_money <> r.charged OR r.l_debit_units <> r.covered
           OR (c.charge_id IS NOT NULL) <> (r.status IN ('committed', 'released', 'expired') AND r.used > 0)
           OR c.charge_id IS DISTINCT FROM r.charge_id
           OR c.amount <> r.charged OR c.covered_quantity <> r.covered OR c.quantity <> r.used $q$);

    -- 5. retransmissions
    PERFORM stress.expect_none(5, 'a retransmission got another answer or changed something', $q$
        SELECT format('%s %s #%s: expected %s got %s%s', kind, key, request_no, expected, got,
                      CASE WHEN changed THEN ' and changed the accounts' ELSE '' END)
        FROM stress.retx WHERE got IS DISTINCT FROM expected OR changed $q$);
    PERFORM stress.expect_none(5, 'a logged answer is not the stored answer', $q$
        SELECT format('%s #%s logged %s stored %s', q.session_id, q.request_no, q.answer, a.answer)
        FROM stress.req q
        LEFT JOIN convbill.reservation_answer a
          ON a.account_id = q.account_id AND a.session_id = q.session_id AND a.request_no = q.request_no
        WHERE q.kind <> 'release' AND (q.answer).reason IS DISTINCT FROM 'session_closed'
          AND a.answer IS DISTINCT FROM q.answer $q$);
    PERFORM stress.expect_none(5, 'a stored answer whose request is not logged (they were not atomic)', $q$
        SELECT format('%s #%s', a.session_id, a.request_no) FROM convbill.reservation_answer a
        WHERE NOT EXISTS (SELECT 1 FROM stress.req q
                          WHERE q.session_id = a.session_id AND q.request_no = a.request_no) $q$);
    PERFORM stress.expect_none(5, 'a release answered neither released nor session_closed', $q$
        SELECT format('%s %s', q.session_id, q.answer) FROM stress.req q
        WHERE q.kind = 'release' AND (q.answer).result <> 'released'
          AND (q.answer).reason IS DISTINCT FROM 'session_closed' $q$);

    -- 6. events and top-ups
    PERFORM stress.expect_none(6, 'an event answer without exactly its one charge', $q$
        SELECT format('%s/%s %s charge %s', e.account_id, e.event_id, e.answer, c.charge_id)
        FROM convbill.event_answer e
        LEFT JOIN convbill.charge c ON c.account_id = e.account_id AND c.source = 'event'
                                   AND c.external_id = e.event_id
        WHERE (c.charge_id IS NOT NULL) <> ((e.answer).result = 'granted')
           OR c.charge_id IS DISTINCT FROM e.charge_id
           OR c.amount <> (e.answer).charged OR c.quantity <> (e.answer).granted $q$);
    PERFORM stress.expect_none(6, 'an event charge without its granted answer', $q$
        SELECT format('%s/%s', c.account_id, c.external_id) FROM convbill.charge c
        WHERE c.source = 'event'
          AND NOT EXISTS (SELECT 1 FROM convbill.event_answer e WHERE e.account_id = c.account_id
                            AND e.event_id = c.external_id AND e.charge_id = c.charge_id) $q$);
    -- money: charge_debit writes one entry per bucket and statement, with
    -- the charge_id when the statement inserted one charge (charge_event) and
    -- without when it inserted several (charge_events); so per charge where
    -- the ledger names it, and per payer in all
    PERFORM stress.expect_none(6, 'an event charge not debited exactly once', $q$
        SELECT format('charge %s amount %s ledger %s', c.charge_id, c.amount, d.debited)
        FROM convbill.charge c
        JOIN (SELECT charge_id, -sum(amount) AS debited FROM convbill.ledger
              WHERE kind = 'debit' AND charge_id IS NOT NULL GROUP BY 1) d USING (charge_id)
        WHERE c.amount <> d.debited $q$);
    PERFORM stress.expect_none(6, 'a payer''s money debited for events differs from its event charges', $q$
        SELECT format('payer %s ledger %s charges %s', coalesce(l.payer, c.payer), coalesce(l.debited, 0),
                      coalesce(c.amount, 0))
        FROM (SELECT l.account_id AS payer, -sum(l.amount) AS debited FROM convbill.ledger l
              JOIN convbill.bucket b USING (account_id, bucket_id)
              WHERE l.kind = 'debit' AND l.session_id IS NULL AND b.kind = 'money' GROUP BY 1) l
        FULL JOIN (SELECT convbill.payer_of(account_id) AS payer, sum(amount) AS amount FROM convbill.charge
                   WHERE source = 'event' GROUP BY 1) c ON c.payer = l.payer
        WHERE coalesce(l.debited, 0) <> coalesce(c.amount, 0) $q$);
    PERFORM stress.expect_none(6, 'allowance debited for events differs from the events'' covered units', $q$
        SELECT format('%s %s ledger %s charges %s', coalesce(l.account_id, c.account_id), coalesce(l.unit, c.service),
                      coalesce(l.units, 0), coalesce(c.units, 0))
        FROM (SELECT l.account_id, l.unit, -sum(l.amount) AS units FROM convbill.ledger l
              JOIN convbill.bucket b USING (account_id, bucket_id)
              WHERE l.kind = 'debit' AND l.session_id IS NULL AND b.kind = 'allowance' GROUP BY 1, 2) l
        FULL JOIN (SELECT account_id, service, sum(covered_quantity) AS units FROM convbill.charge
                   WHERE source = 'event' GROUP BY 1, 2) c
          ON c.account_id = l.account_id AND c.service = l.unit
        WHERE coalesce(l.units, 0) <> coalesce(c.units, 0) $q$);
    PERFORM stress.expect_none(6, 'a copy of an event got another answer than the stored one', $q$
        SELECT format('%s/%s sent %s answered %s stored %s', v.account_id, v.event_id, v.units, v.answer, e.answer)
        FROM stress.ev v
        LEFT JOIN convbill.event_answer e ON e.account_id = v.account_id AND e.event_id = v.event_id
        WHERE e.answer IS DISTINCT FROM v.answer $q$);
    PERFORM stress.expect_none(6, 'a stored event answer whose event is not logged (they were not atomic)', $q$
        SELECT format('%s/%s', e.account_id, e.event_id) FROM convbill.event_answer e
        WHERE NOT EXISTS (SELECT 1 FROM stress.ev v WHERE v.account_id = e.account_id AND v.event_id = e.event_id) $q$);
    PERFORM stress.expect_none(6, 'a top-up reference without exactly one entry that every retry returned', $q$
        SELECT format('%s/%s', t.account_id, t.reference)
        FROM stress.tu t
        LEFT JOIN convbill.ledger l ON l.account_id = t.account_id AND l.kind = 'top_up' AND l.reference = t.reference
        GROUP BY t.account_id, t.reference
        HAVING count(DISTINCT l.entry_id) <> 1 OR count(DISTINCT t.entry_id) <> 1
            OR bool_or(l.entry_id IS DISTINCT FROM t.entry_id OR l.amount <> t.amount) $q$);

    SELECT (SELECT count(*) FROM convbill.reservation) AS sessions,
           (SELECT count(*) FROM convbill.reservation WHERE account_id = 1) AS hot,
           (SELECT string_agg(status || ' ' || c, ', ' ORDER BY status)
            FROM (SELECT status, count(*) AS c FROM convbill.reservation GROUP BY 1) x) AS statuses,
           (SELECT count(*) FROM stress.req q WHERE q.kind = 'reserve' AND (q.answer).result = 'partial') AS r_partial,
           (SELECT count(*) FROM stress.req q WHERE q.kind = 'reserve' AND (q.answer).reason = 'insufficient_funds') AS r_nofunds,
           (SELECT count(*) FROM stress.req q WHERE (q.answer).reason = 'account_suspended') AS suspended,
           (SELECT count(*) FROM stress.req q WHERE q.kind = 'update' AND (q.answer).result IN ('partial', 'denied')
                                               AND (q.answer).reason IS DISTINCT FROM 'session_closed') AS u_short,
           (SELECT count(*) FROM stress.req q WHERE (q.answer).reason = 'session_closed') AS closed,
           (SELECT count(*) FROM convbill.reservation WHERE overuse > 0) AS overuse,
           (SELECT count(*) FROM convbill.charge WHERE source = 'session') AS s_charges,
           (SELECT count(*) FROM stress.ev) AS events,
           (SELECT count(*) FROM convbill.event_answer) AS event_keys,
           (SELECT count(*) FROM stress.ev WHERE batch) AS batched,
           (SELECT count(*) FROM (SELECT 1 FROM stress.ev GROUP BY account_id, event_id
                                  HAVING count(DISTINCT client) > 1) d) AS ev_dup,
           (SELECT count(*) FROM stress.ev v WHERE (v.answer).reason = 'insufficient_funds') AS ev_nofunds,
           (SELECT count(*) FROM stress.tu) - (SELECT count(DISTINCT (account_id, reference)) FROM stress.tu) AS tu_retries,
           (SELECT string_agg(kind || ' ' || c, ', ' ORDER BY kind)
            FROM (SELECT kind, count(*) AS c FROM stress.retx GROUP BY 1) x) AS retx,
           (SELECT count(DISTINCT kind) FROM stress.retx) AS retx_kinds,
           (SELECT count(*) FROM convbill.ledger) AS ledger
    INTO cov;
    IF p_coverage THEN
        IF cov.hot < 100 OR cov.r_partial = 0 OR cov.r_nofunds = 0 OR cov.suspended = 0 OR cov.u_short = 0
           OR cov.closed = 0 OR cov.overuse = 0 OR overuse_money = 0 OR cov.statuses NOT LIKE '%expired%'
           OR cov.statuses NOT LIKE '%released%' OR cov.ev_dup = 0 OR cov.ev_nofunds = 0 OR cov.batched = 0
           OR cov.tu_retries = 0 OR cov.retx_kinds < 5 THEN
            RAISE EXCEPTION 'the traffic did not exercise every case: %', row_to_json(cov) USING ERRCODE = 'P0001';
        END IF;
    END IF;
    RETURN format('%s sessions (%s on the hot account): %s; reserve partial %s, insufficient_funds %s, '
                  'suspended %s; updates short %s; session_closed %s; overuse sessions %s, overuse money %s, '
                  'payers below -credit_limit %s; events %s sent, %s distinct (%s in batches, %s sent by several '
                  'clients, %s insufficient_funds); top-up retries %s; retransmissions checked: %s; ledger %s entries',
                  cov.sessions, cov.hot, cov.statuses, cov.r_partial, cov.r_nofunds, cov.suspended, cov.u_short,
                  cov.closed, cov.overuse, overuse_money, below, cov.events, cov.event_keys, cov.batched, cov.ev_dup,
                  cov.ev_nofunds, cov.tu_retries, cov.retx, cov.ledger);
END $$;
