-- The checks can fail: each sabotage below breaks one invariant of the data
-- left by the stress run, and stress.check() must name exactly that
-- invariant.  Every sabotage is rolled back.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
BEGIN;
DO $$
DECLARE
    t record;
    got text;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        (1, 'a bucket balance changed without a ledger entry',
         $s$UPDATE convbill.bucket SET balance = balance + 0.01 WHERE account_id = 1 AND origin = 'main'$s$),
        (2, 'a hold in the ledger that no session holds',
         $s$INSERT INTO convbill.ledger (account_id, kind, unit, held, session_id)
            SELECT payer_id, 'hold', 'EUR', 1, session_id FROM convbill.reservation ORDER BY session_id LIMIT 1$s$),
        (3, 'a prepaid account debited 1000 EUR (ledger and bucket agree)',
         $s$SELECT convbill.adjust_balance(2, -1000, 'sabotage')$s$),
        (4, 'a session charge that is not what the session debited',
         $s$UPDATE convbill.charge SET amount = amount + 1
            WHERE charge_id = (SELECT min(charge_id) FROM convbill.charge WHERE source = 'session')$s$),
        (5, 'a stored answer that is not the one the client got',
         $s$UPDATE convbill.reservation_answer SET answer = ROW('granted', NULL, 1, 0, 0, NULL)::convbill.grant
            WHERE (account_id, session_id, request_no) =
                  (SELECT account_id, session_id, request_no FROM convbill.reservation_answer
                   WHERE request_no = 1 ORDER BY session_id LIMIT 1)$s$),
        (6, 'a granted event that lost its charge',
         $s$DELETE FROM convbill.charge
            WHERE charge_id = (SELECT min(charge_id) FROM convbill.charge WHERE source = 'event')$s$)
        ) AS s(inv, what, sql) LOOP
        got := NULL;
        BEGIN
            EXECUTE t.sql;
            PERFORM stress.check(false);
            got := 'the check passed';
            RAISE EXCEPTION 'roll the sabotage back';
        EXCEPTION WHEN OTHERS THEN
            got := coalesce(got, SQLERRM);
        END;
        IF got NOT LIKE 'invariant ' || t.inv || ':%' THEN
            RAISE EXCEPTION 'self-test: "%" should break invariant %, but the check said: %', t.what, t.inv, got;
        END IF;
    END LOOP;
END $$;
ROLLBACK;
