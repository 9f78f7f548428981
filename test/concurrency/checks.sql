-- Invariants after parallel rating: each event once, no double charge.
\set ON_ERROR_STOP on
SET search_path = convbill, public;
DO $$
DECLARE
    bad bigint;
BEGIN
    SELECT count(*) INTO bad FROM usage_event WHERE status = 'pending';
    IF bad <> 0 THEN RAISE EXCEPTION '% events left pending', bad; END IF;
    SELECT count(*) INTO bad FROM (SELECT account_id, source, external_id FROM charge
                                   WHERE external_id IS NOT NULL GROUP BY 1, 2, 3 HAVING count(*) > 1) d;
    IF bad <> 0 THEN RAISE EXCEPTION '% events charged twice', bad; END IF;
    SELECT count(*) INTO bad FROM usage_event u
    WHERE u.status = 'rated' AND NOT EXISTS (SELECT 1 FROM charge c WHERE c.account_id = u.account_id AND c.charge_id = u.charge_id);
    IF bad <> 0 THEN RAISE EXCEPTION '% rated events without their charge', bad; END IF;
    SELECT count(*) INTO bad FROM charge c WHERE c.kind = 'usage'
      AND (SELECT count(*) FROM usage_event u WHERE u.account_id = c.account_id AND u.charge_id = c.charge_id) <> 1;
    IF bad <> 0 THEN RAISE EXCEPTION '% charges not referenced by exactly one event', bad; END IF;
    SELECT count(*) INTO bad FROM (SELECT account_id, period_start, sum(covered_quantity) AS cov
                                   FROM charge WHERE service = 'voice' GROUP BY 1, 2) s WHERE cov > 3000;
    IF bad <> 0 THEN RAISE EXCEPTION '% periods used more voice allowance than granted', bad; END IF;
    RAISE NOTICE 'parallel rating invariants hold';
END $$;
