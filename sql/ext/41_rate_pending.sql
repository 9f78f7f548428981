-------------------------------------------------------------------------------
-- Bulk rating: rate_pending(), rerate() and real-time rating on insert.
--
-- One batch, set-based, in a handful of statements:
--   1. claim pending events by account and time (FOR UPDATE SKIP LOCKED, so
--      several sessions rate at once without taking the same event);
--   2. lock the batch's accounts (FOR NO KEY UPDATE, in account order): the
--      allowance and cycle counters of an account are read and written by one
--      rater at a time, and duplicates are judged after that lock;
--   3. compute every event's fate and charge in one query: rejects with their
--      reason, duplicates, tariff resolution (plan -> service -> most specific
--      zone -> latest valid_from), the open period (late usage to the next open
--      one), allowances first, cycle running totals, rate_billed() in C;
--   4. insert the charges, mark the events, add to the counters.
-- Within a batch, an account's events are rated in started_at order.
-------------------------------------------------------------------------------

-- enable_nestloop = off: the batch query joins CTEs of a whole batch on idx;
-- estimates of those are poor, and a nested loop there is quadratic.  The
-- index probes (LATERAL ... LIMIT 1) still run as nested loops.  jit = off:
-- the disabled-nestloop penalty inflates plan costs past the JIT thresholds,
-- and compiling the batch query costs seconds per call.
CREATE FUNCTION @extschema@.rate_events(p_max_events integer, p_account_id bigint,
                                        p_source text, p_external_id text)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
SET enable_nestloop = off
SET jit = off AS $$
DECLARE
    n integer;
BEGIN
    IF p_max_events IS NULL OR p_max_events < 1 THEN
        RAISE EXCEPTION 'max_events must be a positive number, not %', p_max_events USING ERRCODE = '22023';
    END IF;
    IF to_regclass('pg_temp.convbill_claim') IS NOT NULL THEN
        DROP TABLE pg_temp.convbill_claim;
    END IF;
    IF to_regclass('pg_temp.convbill_work') IS NOT NULL THEN
        DROP TABLE pg_temp.convbill_work;
    END IF;
    -- narrow rows: what rating needs, the zone already resolved
    CREATE TEMP TABLE convbill_claim (
        part oid, tid tid, idx bigint, account_id bigint, source text, external_id text,
        service text, quantity numeric, started_at timestamptz, zone text) ON COMMIT DROP;

    -- 1. claim by account and event time, so that across batches too an
    -- account's allowances and cycle totals are consumed in event-time order
    -- (real-time rating claims just the event it was called for)
    INSERT INTO convbill_claim
    SELECT e.tableoid, e.ctid, row_number() OVER (), e.account_id, e.source, e.external_id,
           e.service, e.quantity, e.started_at,
           CASE WHEN jsonb_typeof(e.attrs -> 'destination') = 'string'
                THEN @extschema@.zone_of(e.attrs ->> 'destination') END
    FROM (SELECT e.tableoid, e.ctid, e.account_id, e.source, e.external_id, e.service,
                 e.quantity, e.started_at, e.attrs
          FROM @extschema@.usage_event e
          WHERE e.status = 'pending'
            AND (p_account_id IS NULL
                 OR (e.account_id = p_account_id AND e.source IS NOT DISTINCT FROM p_source
                     AND e.external_id IS NOT DISTINCT FROM p_external_id))
          ORDER BY e.account_id, e.started_at
          LIMIT p_max_events
          FOR UPDATE SKIP LOCKED) e;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        DROP TABLE pg_temp.convbill_claim;
        RETURN 0;
    END IF;
    IF n > 1000 THEN
        ANALYZE convbill_claim;         -- good join plans for big batches
    END IF;

    -- 2. one rater per account at a time
    PERFORM 1 FROM @extschema@.account a
    WHERE a.account_id IN (SELECT c.account_id FROM convbill_claim c)
    ORDER BY a.account_id
    FOR NO KEY UPDATE OF a;

    -- 3. every event's fate and charge
    CREATE TEMP TABLE convbill_work ON COMMIT DROP AS
    WITH ev AS (
        SELECT c.*,
               a.currency AS acc_currency, a.timezone, a.billing_day, a.status AS acc_status,
               a.account_id IS NOT NULL AS acc_found,
               s.code IS NOT NULL AS svc_found,
               CASE WHEN c.quantity IS NULL OR c.quantity = 'NaN' OR c.quantity IN ('Infinity', '-Infinity') THEN false
                    ELSE c.quantity >= 0 AND c.quantity < 1e20 AND c.quantity = round(c.quantity, 9) END AS qty_ok,
               coalesce(c.started_at >= '1900-01-01' AND c.started_at < '3000-01-01', false) AS time_ok,
               charged.found IS NOT NULL AS already_charged
        FROM convbill_claim c
        LEFT JOIN @extschema@.account a ON a.account_id = c.account_id
        LEFT JOIN @extschema@.service s ON s.code = c.service
        -- an index probe per event, never a scan of the whole charge history
        LEFT JOIN LATERAL (SELECT 1 AS found FROM @extschema@.charge x
                           WHERE x.account_id = c.account_id AND x.source = c.source
                             AND x.external_id = c.external_id
                           LIMIT 1) charged ON true
    ),
    rate_keys AS (
        SELECT DISTINCT account_id, service, coalesce(zone, '') AS zkey
        FROM ev WHERE acc_found AND svc_found AND time_ok
    ),
    candidates AS MATERIALIZED (
        SELECT k.account_id, k.service, k.zkey, r.rate_id, p.currency AS plan_currency,
               r.zone IS NOT NULL AS specific, r.valid_from, s.started_at AS sub_start,
               greatest(s.started_at, r.valid_from) AS vf,
               least(coalesce(s.ended_at, 'infinity'), r.valid_until) AS vu,
               count(*) OVER (PARTITION BY k.account_id, k.service, k.zkey) AS n_candidates
        FROM rate_keys k
        JOIN @extschema@.subscription s ON s.account_id = k.account_id
        JOIN @extschema@.plan p ON p.code = s.plan_code
        JOIN @extschema@.plan_rate r ON r.plan_code = s.plan_code AND r.service = k.service
                                    AND (r.zone IS NULL OR r.zone = k.zkey)
    ),
    -- most keys have one candidate rate: a plain hash join; the others pick
    -- the most specific zone, then the latest valid_from, then the newest
    -- subscription
    resolved AS (
        SELECT ev.idx, c.rate_id, c.plan_currency
        FROM ev JOIN candidates c
          ON c.n_candidates = 1 AND c.account_id = ev.account_id AND c.service = ev.service
         AND c.zkey = coalesce(ev.zone, '') AND ev.started_at >= c.vf AND ev.started_at < c.vu
        UNION ALL
        (SELECT DISTINCT ON (ev.idx) ev.idx, c.rate_id, c.plan_currency
         FROM ev JOIN candidates c
           ON c.n_candidates > 1 AND c.account_id = ev.account_id AND c.service = ev.service
          AND c.zkey = coalesce(ev.zone, '') AND ev.started_at >= c.vf AND ev.started_at < c.vu
         ORDER BY ev.idx, c.specific DESC, c.valid_from DESC, c.sub_start DESC)
    ),
    judged AS (
        SELECT ev.*, r.rate_id,
               CASE WHEN NOT ev.acc_found THEN 'unknown_account'
                    WHEN ev.acc_status = 'closed' THEN 'account_closed'
                    WHEN ev.source IS NULL OR ev.external_id IS NULL THEN 'missing_event_key'
                    WHEN NOT ev.time_ok THEN 'invalid_time'
                    WHEN NOT ev.qty_ok THEN 'invalid_quantity'
                    WHEN NOT ev.svc_found THEN 'unknown_service'
                    WHEN r.rate_id IS NULL THEN 'no_tariff'
                    WHEN coalesce(@extschema@.tariff_currency(pr.tariff), r.plan_currency) <> ev.acc_currency
                        THEN 'currency_mismatch'
               END AS reject_reason,
               @extschema@.billed_quantity(pr.tariff, CASE WHEN ev.qty_ok THEN ev.quantity END) AS bq,
               @extschema@.tariff_scope(pr.tariff) = 'cycle' AS cycle
        FROM ev
        LEFT JOIN resolved r USING (idx)
        LEFT JOIN @extschema@.plan_rate pr ON pr.rate_id = r.rate_id
    ),
    -- a re-send is a duplicate of an event already charged, or of an earlier
    -- acceptable copy in this batch (a rejected copy does not count)
    classified AS (
        SELECT j.*,
               j.reject_reason IS NULL
               AND (j.already_charged
                    OR row_number() OVER (PARTITION BY j.account_id, j.source, j.external_id
                                          ORDER BY j.reject_reason IS NOT NULL, j.idx) > 1) AS duplicate
        FROM judged j
    ),
    billable AS (
        SELECT cl.idx, cl.account_id, cl.service, cl.started_at, cl.timezone, cl.billing_day,
               cl.rate_id, cl.bq, cl.cycle,
               @extschema@.billing_period_start(cl.started_at, cl.timezone, cl.billing_day) AS own_start,
               @extschema@.billing_period_end(cl.started_at, cl.timezone, cl.billing_day) AS own_end
        FROM classified cl
        WHERE cl.reject_reason IS NULL AND NOT cl.duplicate
    ),
    -- the open period of each (account, own period): itself, or the next one
    -- after closed periods (late usage); checked once per pair, not per event
    open_periods AS (
        SELECT k.account_id, k.own_start,
               CASE WHEN EXISTS (SELECT 1 FROM @extschema@.closed_period cp
                                 WHERE cp.account_id = k.account_id
                                   AND cp.period_start < k.own_end AND cp.period_end > k.own_start)
                    THEN @extschema@.open_period(k.account_id, k.own_start)
                    ELSE tstzrange(k.own_start, k.own_end, '[)') END AS period
        FROM (SELECT DISTINCT account_id, own_start, own_end FROM billable) k
    ),
    periods AS (
        SELECT b.idx, b.account_id, b.service, b.started_at, b.timezone, b.rate_id, b.bq, b.cycle,
               lower(op.period) AS ps, upper(op.period) AS pe
        FROM billable b JOIN open_periods op USING (account_id, own_start)
    ),
    -- plan allowances of the period: each subscription active in it grants
    -- its allowance prorated by the local days from its start (the start day
    -- counts) to the period's end, truncated to the allowance's own decimals.
    -- A later end (unsubscribe, change_plan) does not take back what was
    -- granted, so the cover never depends on when rating ran.  One pool per
    -- service.
    allowance AS (
        SELECT k.account_id, k.ps, k.service,
               sum(trunc((p.allowances ->> k.service)::numeric * s.quantity
                         * ((k.pe AT TIME ZONE k.timezone)::date
                            - (greatest(s.started_at, k.ps) AT TIME ZONE k.timezone)::date)
                         / ((k.pe AT TIME ZONE k.timezone)::date - (k.ps AT TIME ZONE k.timezone)::date),
                         scale((p.allowances ->> k.service)::numeric))) AS units
        FROM (SELECT DISTINCT account_id, timezone, ps, pe, service FROM periods) k
        JOIN @extschema@.subscription s ON s.account_id = k.account_id
             AND s.started_at < k.pe AND coalesce(s.ended_at, 'infinity') > k.ps
        JOIN @extschema@.plan p ON p.code = s.plan_code AND p.allowances ? k.service
        GROUP BY 1, 2, 3
    ),
    pools AS (
        SELECT al.account_id, al.ps, al.service, al.units - coalesce(uc.used, 0) AS allow_left
        FROM allowance al
        LEFT JOIN @extschema@.usage_counter uc
               ON uc.account_id = al.account_id AND uc.period_start = al.ps
              AND uc.counter = 'allowance:' || al.service
        WHERE al.units - coalesce(uc.used, 0) > 0
    ),
    -- allowances first, in event time order, only where a pool has units left
    covered AS (
        SELECT q.idx,
               CASE WHEN q.allow_left > q.bq_before THEN least(q.bq, q.allow_left - q.bq_before) ELSE 0 END AS covered
        FROM (SELECT pr.idx, pr.bq, po.allow_left,
                     coalesce(sum(pr.bq) OVER (PARTITION BY pr.account_id, pr.ps, pr.service
                                               ORDER BY pr.started_at, pr.idx
                                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS bq_before
              FROM periods pr
              JOIN pools po ON po.account_id = pr.account_id AND po.ps = pr.ps AND po.service = pr.service) q
    ),
    -- running totals of cycle-scoped tariffs, only for their events
    cycle_used AS (
        SELECT c.idx,
               coalesce(rc.used, 0)
               + coalesce(sum(c.rest) OVER (PARTITION BY c.account_id, c.ps, c.rate_id
                                            ORDER BY c.started_at, c.idx
                                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS used_before
        FROM (SELECT pr.idx, pr.account_id, pr.ps, pr.rate_id, pr.started_at,
                     pr.bq - coalesce(cv.covered, 0) AS rest
              FROM periods pr LEFT JOIN covered cv USING (idx)
              WHERE pr.cycle) c
        LEFT JOIN @extschema@.usage_counter rc
               ON rc.account_id = c.account_id AND rc.period_start = c.ps AND rc.counter = 'rate:' || c.rate_id
    ),
    priced AS (
        SELECT pr.idx, pr.rate_id, pr.cycle, pr.bq, pr.ps, pr.pe,
               coalesce(cv.covered, 0) AS covered,
               pr.bq - coalesce(cv.covered, 0) AS rest,
               @extschema@.rate_billed_or_null(t.tariff, pr.bq - coalesce(cv.covered, 0), pr.started_at,
                                               pr.timezone, coalesce(cu.used_before, 0)) AS amount
        FROM periods pr
        JOIN @extschema@.plan_rate t ON t.rate_id = pr.rate_id
        LEFT JOIN covered cv USING (idx)
        LEFT JOIN cycle_used cu USING (idx)
    )
    SELECT x.*,
           CASE WHEN x.status = 'rated' THEN nextval('@extschema@.charge_charge_id_seq') END AS charge_id
    FROM (SELECT cl.part, cl.tid, cl.account_id, cl.source, cl.external_id, cl.service, cl.zone,
                 cl.quantity, cl.started_at, cl.acc_currency AS currency,
                 pc.rate_id, pc.cycle, pc.bq, pc.covered, pc.rest, pc.amount,
                 pc.ps AS period_start, pc.pe AS period_end,
                 CASE WHEN cl.reject_reason IS NOT NULL THEN 'rejected'
                      WHEN cl.duplicate THEN 'duplicate'
                      WHEN pc.amount IS NULL THEN 'rejected'
                      ELSE 'rated' END AS status,
                 coalesce(cl.reject_reason,
                          CASE WHEN NOT cl.duplicate AND pc.amount IS NULL THEN 'out_of_range' END) AS final_reason
          FROM classified cl LEFT JOIN priced pc USING (idx)) x;

    -- 4. charges, events, counters.  The account locks and the duplicate check
    -- above mean no charge of this batch can exist yet; the unique index on
    -- (account_id, source, external_id) is the safety net.
    INSERT INTO @extschema@.charge
        (account_id, charge_id, kind, service, zone, quantity, billed_quantity, covered_quantity, amount,
         currency, occurred_at, period_start, period_end, source, external_id, rate_id)
    SELECT w.account_id, w.charge_id, 'usage', w.service, w.zone, w.quantity, w.bq, w.covered, w.amount,
           w.currency, w.started_at, w.period_start, w.period_end, w.source, w.external_id, w.rate_id
    FROM convbill_work w WHERE w.status = 'rated';

    UPDATE @extschema@.usage_event e
    SET status = w.status, reject_reason = w.final_reason, rated_at = now(), charge_id = w.charge_id
    FROM convbill_work w
    WHERE e.tableoid = w.part AND e.ctid = w.tid;

    INSERT INTO @extschema@.usage_counter AS uc (account_id, period_start, counter, used)
    SELECT w.account_id, w.period_start, 'allowance:' || w.service, sum(w.covered)
    FROM convbill_work w WHERE w.status = 'rated' AND w.covered > 0
    GROUP BY 1, 2, 3
    UNION ALL
    SELECT w.account_id, w.period_start, 'rate:' || w.rate_id, sum(w.rest)
    FROM convbill_work w WHERE w.status = 'rated' AND w.cycle
    GROUP BY 1, 2, 3
    ON CONFLICT (account_id, period_start, counter) DO UPDATE SET used = uc.used + excluded.used;

    DROP TABLE pg_temp.convbill_claim, pg_temp.convbill_work;
    RETURN n;
END $$;
COMMENT ON FUNCTION @extschema@.rate_events(integer, bigint, text, text) IS
    'rating engine behind rate_pending(), rerate() and real-time rating; returns how many events it processed';

CREATE FUNCTION @extschema@.rate_pending(max_events integer DEFAULT 100000)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- partitions as needed: last month, this one and the next two (a no-op
    -- once they exist); events outside them wait in the default partition
    IF to_regclass('@extschema@.usage_event_' || to_char((now() + interval '2 months') AT TIME ZONE 'UTC', 'YYYYMM')) IS NULL THEN
        PERFORM @extschema@.ensure_usage_partitions(now() - interval '1 month', 4);
    END IF;
    RETURN @extschema@.rate_events(max_events, NULL, NULL, NULL);
END $$;
COMMENT ON FUNCTION @extschema@.rate_pending(integer) IS
    'rate up to max_events pending usage events (several sessions may run it at once); returns how many were processed (rated, rejected or found duplicate) — call until it returns 0';

CREATE FUNCTION @extschema@.rerate(p_reason text DEFAULT NULL, p_account_id bigint DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    requeued integer;
BEGIN
    UPDATE @extschema@.usage_event
    SET status = 'pending', reject_reason = NULL, rated_at = NULL
    WHERE status = 'rejected'
      AND (p_reason IS NULL OR reject_reason = p_reason)
      AND (p_account_id IS NULL OR account_id = p_account_id);
    GET DIAGNOSTICS requeued = ROW_COUNT;
    WHILE @extschema@.rate_pending() > 0 LOOP
    END LOOP;
    RETURN requeued;
END $$;
COMMENT ON FUNCTION @extschema@.rerate(text, bigint) IS
    'put rejected events (of one reason and/or account, or all) back to pending and rate everything pending; returns how many were re-queued';

-- convbill.realtime_rating = on: rate each event as it is inserted.
CREATE FUNCTION @extschema@.realtime_rating_enabled() RETURNS boolean
    AS 'MODULE_PATHNAME', 'realtime_rating_enabled' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.realtime_rating_enabled() IS 'the convbill.realtime_rating setting';

CREATE FUNCTION @extschema@.usage_event_rate_now() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.account_id IS NOT NULL THEN
        PERFORM @extschema@.rate_events(1, NEW.account_id, NEW.source, NEW.external_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER usage_event_rate_now AFTER INSERT ON @extschema@.usage_event
    FOR EACH ROW
    WHEN (@extschema@.realtime_rating_enabled())
    EXECUTE FUNCTION @extschema@.usage_event_rate_now();
