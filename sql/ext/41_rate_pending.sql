-------------------------------------------------------------------------------
-- Bulk rating: rate_pending(), rerate() and real-time rating on insert.
--
-- One batch, set-based, in a handful of statements:
--   1. claim pending events (ORDER BY account, time; FOR UPDATE SKIP LOCKED, so
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

CREATE FUNCTION @extschema@.rate_events(p_max_events integer, p_account_id bigint,
                                        p_source text, p_external_id text)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
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
    CREATE TEMP TABLE convbill_claim (
        part oid, tid tid, idx bigint, account_id bigint, source text, external_id text,
        service text, quantity numeric, started_at timestamptz, attrs jsonb) ON COMMIT DROP;

    -- 1. claim
    IF p_account_id IS NULL THEN
        INSERT INTO convbill_claim
        SELECT e.tableoid, e.ctid, row_number() OVER (), e.account_id, e.source, e.external_id,
               e.service, e.quantity, e.started_at, e.attrs
        FROM (SELECT e.tableoid, e.ctid, e.account_id, e.source, e.external_id, e.service,
                     e.quantity, e.started_at, e.attrs
              FROM @extschema@.usage_event e
              WHERE e.status = 'pending'
              ORDER BY e.account_id, e.started_at
              LIMIT p_max_events
              FOR UPDATE SKIP LOCKED) e;
    ELSE
        INSERT INTO convbill_claim
        SELECT e.tableoid, e.ctid, row_number() OVER (), e.account_id, e.source, e.external_id,
               e.service, e.quantity, e.started_at, e.attrs
        FROM (SELECT e.tableoid, e.ctid, e.account_id, e.source, e.external_id, e.service,
                     e.quantity, e.started_at, e.attrs
              FROM @extschema@.usage_event e
              WHERE e.status = 'pending' AND e.account_id = p_account_id
                AND e.source IS NOT DISTINCT FROM p_source AND e.external_id IS NOT DISTINCT FROM p_external_id
              LIMIT p_max_events
              FOR UPDATE SKIP LOCKED) e;
    END IF;
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
               CASE WHEN c.attrs ? 'destination' THEN @extschema@.zone_of(c.attrs ->> 'destination') END AS zone,
               CASE WHEN c.quantity IS NULL OR c.quantity = 'NaN' OR c.quantity IN ('Infinity', '-Infinity') THEN false
                    ELSE c.quantity >= 0 AND c.quantity < 1e20 AND c.quantity = round(c.quantity, 9) END AS qty_ok,
               coalesce(c.started_at >= '1900-01-01' AND c.started_at < '3000-01-01', false) AS time_ok,
               EXISTS (SELECT 1 FROM @extschema@.charge x
                       WHERE x.account_id = c.account_id AND x.source = c.source
                         AND x.external_id = c.external_id) AS already_charged
        FROM convbill_claim c
        LEFT JOIN @extschema@.account a ON a.account_id = c.account_id
        LEFT JOIN @extschema@.service s ON s.code = c.service
    ),
    rate_keys AS (
        SELECT DISTINCT account_id, service, coalesce(zone, '') AS zkey
        FROM ev WHERE acc_found AND svc_found AND time_ok
    ),
    candidates AS (
        SELECT k.account_id, k.service, k.zkey, r.rate_id, r.tariff, p.currency AS plan_currency,
               r.zone IS NOT NULL AS specific, r.valid_from, s.started_at AS sub_start,
               greatest(s.started_at, r.valid_from) AS vf,
               least(coalesce(s.ended_at, 'infinity'), r.valid_until) AS vu
        FROM rate_keys k
        JOIN @extschema@.subscription s ON s.account_id = k.account_id
        JOIN @extschema@.plan p ON p.code = s.plan_code
        JOIN @extschema@.plan_rate r ON r.plan_code = s.plan_code AND r.service = k.service
                                    AND (r.zone IS NULL OR r.zone = k.zkey)
    ),
    resolved AS (
        SELECT DISTINCT ON (ev.idx) ev.idx, c.rate_id, c.tariff, c.plan_currency
        FROM ev JOIN candidates c
          ON c.account_id = ev.account_id AND c.service = ev.service AND c.zkey = coalesce(ev.zone, '')
         AND ev.started_at >= c.vf AND ev.started_at < c.vu
        ORDER BY ev.idx, c.specific DESC, c.valid_from DESC, c.sub_start DESC
    ),
    judged AS (
        SELECT ev.*, r.rate_id, r.tariff,
               CASE WHEN NOT ev.acc_found THEN 'unknown_account'
                    WHEN ev.acc_status = 'closed' THEN 'account_closed'
                    WHEN ev.source IS NULL OR ev.external_id IS NULL THEN 'missing_event_key'
                    WHEN NOT ev.time_ok THEN 'invalid_time'
                    WHEN NOT ev.qty_ok THEN 'invalid_quantity'
                    WHEN NOT ev.svc_found THEN 'unknown_service'
                    WHEN r.rate_id IS NULL THEN 'no_tariff'
                    WHEN coalesce(@extschema@.tariff_currency(r.tariff), r.plan_currency) <> ev.acc_currency
                        THEN 'currency_mismatch'
               END AS reject_reason
        FROM ev LEFT JOIN resolved r USING (idx)
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
    periods AS (
        SELECT k.*,
               CASE WHEN EXISTS (SELECT 1 FROM @extschema@.closed_period cp
                                 WHERE cp.account_id = k.account_id
                                   AND cp.period_start < k.own_end AND cp.period_end > k.own_start)
                    THEN @extschema@.open_period(k.account_id, k.started_at)
                    ELSE tstzrange(k.own_start, k.own_end, '[)') END AS period
        FROM (SELECT cl.*,
                     @extschema@.billing_period_start(cl.started_at, cl.timezone, cl.billing_day) AS own_start,
                     @extschema@.billing_period_end(cl.started_at, cl.timezone, cl.billing_day) AS own_end,
                     @extschema@.billed_quantity(cl.tariff, cl.quantity) AS bq,
                     @extschema@.tariff_scope(cl.tariff) = 'cycle' AS cycle
              FROM classified cl
              WHERE cl.reject_reason IS NULL AND NOT cl.duplicate) k
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
        FROM (SELECT DISTINCT account_id, timezone, lower(period) AS ps, upper(period) AS pe, service
              FROM periods) k
        JOIN @extschema@.subscription s ON s.account_id = k.account_id
             AND s.started_at < k.pe AND coalesce(s.ended_at, 'infinity') > k.ps
        JOIN @extschema@.plan p ON p.code = s.plan_code AND p.allowances ? k.service
        GROUP BY 1, 2, 3
    ),
    covered AS (
        SELECT q.*,
               CASE WHEN q.allow_left > q.bq_before THEN least(q.bq, q.allow_left - q.bq_before) ELSE 0 END AS covered
        FROM (SELECT pr.*,
                     coalesce(al.units, 0) - coalesce(uc.used, 0) AS allow_left,
                     coalesce(sum(pr.bq) OVER (PARTITION BY pr.account_id, lower(pr.period), pr.service
                                               ORDER BY pr.started_at, pr.idx
                                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS bq_before
              FROM periods pr
              LEFT JOIN allowance al
                     ON al.account_id = pr.account_id AND al.ps = lower(pr.period) AND al.service = pr.service
              LEFT JOIN @extschema@.usage_counter uc
                     ON uc.account_id = pr.account_id AND uc.period_start = lower(pr.period)
                    AND uc.counter = 'allowance:' || pr.service) q
    ),
    priced AS (
        SELECT cv.*, cv.bq - cv.covered AS rest,
               CASE WHEN cv.cycle THEN
                   coalesce(rc.used, 0)
                   + coalesce(sum(cv.bq - cv.covered) OVER (PARTITION BY cv.account_id, lower(cv.period), cv.rate_id
                                                            ORDER BY cv.started_at, cv.idx
                                                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
                    ELSE 0 END AS used_before
        FROM covered cv
        LEFT JOIN @extschema@.usage_counter rc
               ON cv.cycle AND rc.account_id = cv.account_id AND rc.period_start = lower(cv.period)
              AND rc.counter = 'rate:' || cv.rate_id
    )
    SELECT x.*,
           CASE WHEN x.reject_reason IS NOT NULL THEN 'rejected'
                WHEN x.duplicate THEN 'duplicate'
                WHEN x.amount IS NULL THEN 'rejected'
                ELSE 'rated' END AS status,
           coalesce(x.reject_reason, CASE WHEN NOT x.duplicate AND x.amount IS NULL THEN 'out_of_range' END)
               AS final_reason
    FROM (SELECT cl.part, cl.tid, cl.idx, cl.account_id, cl.source, cl.external_id, cl.service, cl.zone,
                 cl.quantity, cl.started_at, cl.acc_currency AS currency, cl.reject_reason, cl.duplicate,
                 pr.rate_id, pr.cycle, pr.bq, pr.covered, pr.rest,
                 lower(pr.period) AS period_start, upper(pr.period) AS period_end,
                 @extschema@.rate_billed_or_null(pr.tariff, pr.rest, pr.started_at, pr.timezone,
                                                 pr.used_before) AS amount
          FROM classified cl LEFT JOIN priced pr USING (idx)) x;

    -- 4. charges, events, counters
    WITH inserted AS (
        INSERT INTO @extschema@.charge
            (account_id, kind, service, zone, quantity, billed_quantity, covered_quantity, amount,
             currency, occurred_at, period_start, period_end, source, external_id, rate_id)
        SELECT w.account_id, 'usage', w.service, w.zone, w.quantity, w.bq, w.covered, w.amount,
               w.currency, w.started_at, w.period_start, w.period_end, w.source, w.external_id, w.rate_id
        FROM convbill_work w WHERE w.status = 'rated'
        ON CONFLICT (account_id, source, external_id) WHERE external_id IS NOT NULL DO NOTHING
        RETURNING account_id, source, external_id, charge_id
    )
    UPDATE @extschema@.usage_event e
    SET status = CASE WHEN w.status = 'rated' AND i.charge_id IS NULL THEN 'duplicate' ELSE w.status END,
        reject_reason = w.final_reason,
        rated_at = now(),
        charge_id = i.charge_id
    FROM convbill_work w
    LEFT JOIN inserted i
           ON w.status = 'rated' AND i.account_id = w.account_id
          AND i.source = w.source AND i.external_id = w.external_id
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
