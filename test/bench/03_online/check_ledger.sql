-- test/bench/03_online/check_ledger.sql — at the end of test/bench/03_online.sh:
-- the append-only ledger sums to every bucket's balance.
\set ON_ERROR_STOP 1
CREATE FUNCTION pg_temp.bench03_check(ok boolean, msg text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION 'check failed: %', msg;
    END IF;
END $$;
SELECT pg_temp.bench03_check(count(*) = 0, format('%s buckets differ from their ledger', count(*)))
FROM convbill.bucket b
LEFT JOIN (SELECT l.account_id, l.bucket_id, sum(l.amount) AS total FROM convbill.ledger l
           WHERE l.bucket_id IS NOT NULL GROUP BY 1, 2) l USING (account_id, bucket_id)
WHERE b.balance <> coalesce(l.total, 0);
