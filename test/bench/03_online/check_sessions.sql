-- test/bench/03_online/check_sessions.sql — after the pgbench runs of
-- test/bench/03_online.sh: every session was committed, charged once, and
-- left no hold behind; nobody's money went below zero (prepaid, no credit).
\set ON_ERROR_STOP 1
CREATE FUNCTION pg_temp.bench03_check(ok boolean, msg text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION 'check failed: %', msg;
    END IF;
END $$;
SELECT count(*) AS sessions, count(*) FILTER (WHERE account_id = 10001) AS hot_sessions
FROM convbill.reservation \gset
\echo '  ' :sessions 'sessions, ' :hot_sessions 'on the hot account'
SELECT pg_temp.bench03_check(count(*) = 0, format('%s sessions not committed', count(*)))
FROM convbill.reservation WHERE status <> 'committed';
SELECT pg_temp.bench03_check(n_charges = n_sessions AND n_ids = n_sessions,
                             format('%s sessions, %s session charges (%s distinct)', n_sessions, n_charges, n_ids))
FROM (SELECT (SELECT count(*) FROM convbill.reservation WHERE used > 0) AS n_sessions,
             count(*) AS n_charges, count(DISTINCT (account_id, external_id)) AS n_ids
      FROM convbill.charge WHERE source = 'session') x;
SELECT pg_temp.bench03_check(count(*) = 0, format('%s sessions still hold something in the ledger', count(*)))
FROM (SELECT l.session_id FROM convbill.ledger l WHERE l.session_id IS NOT NULL
      GROUP BY l.session_id, l.unit HAVING sum(l.held) <> 0) x;
SELECT pg_temp.bench03_check(count(*) = 0, format('%s accounts below zero', count(*)))
FROM (SELECT b.account_id FROM convbill.bucket b WHERE b.kind = 'money'
      GROUP BY b.account_id HAVING sum(b.balance) < 0) x;
