-------------------------------------------------------------------------------
-- Bulk rating: rate_pending(), rerate() and real-time rating on insert.
--
-- One batch, set-based, in a handful of statements:
--   1. claim pending events by account and time (FOR UPDATE SKIP LOCKED, so
--      several sessions rate at once without taking the same event);
--   2. lock the batch's accounts (FOR NO KEY UPDATE, in account order): the
--      allowance buckets and cycle counters of an account are read and written
--      by one rater (or online charging request) at a time, and duplicates are
--      judged after that lock;
--   3. every event's fate in one query: rejects with their reason, duplicates,
--      tariff resolution (plan -> service -> most specific zone -> latest
--      valid_from), billed quantity, the open period (late usage to the next
--      open one);
--   4. grant the plan allowances of the batch's (account, open period) pairs
--      as buckets (ensure_plan_allowances: the same buckets online charging
--      draws on, so an allowance is never given twice);
--   5. allowances first: allowance_take() in C walks the batch in event-time
--      order and takes units from the buckets valid at each event;
--   6. cycle running totals, rate_billed() in C, then in one statement the
--      charges, the events, the bucket debits with their ledger entries and
--      the cycle counters.
-- Within a batch, an account's events are rated in started_at order.
-------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.allowance_take(ev_account bigint[], ev_service text[], ev_idx bigint[],
                                           ev_at timestamptz[], ev_bq numeric[],
                                           b_account bigint[], b_unit text[], b_id bigint[], b_priority integer[],
                                           b_from timestamptz[], b_until timestamptz[], b_units numeric[])
RETURNS TABLE (idx bigint, bucket_id bigint, taken numeric)
    AS 'MODULE_PATHNAME', 'allowance_take' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.allowance_take(bigint[], text[], bigint[], timestamptz[], numeric[], bigint[], text[], bigint[], integer[], timestamptz[], timestamptz[], numeric[]) IS
    'internal: which allowance buckets cover which events of a batch — per (account, service), events in (at, idx) order take from the buckets valid at `at` in (priority, valid_until, bucket_id) order; one row per event and bucket (C)';

-- Raise usage_queue.low_water to the least queued_by of the pending events
-- this statement's snapshot sees (those the caller rated this transaction are
-- no longer pending to it) and that snapshot's xmin: every transaction that
-- can still add or re-queue an event has an id >= xmin.  One statement, one
-- snapshot.  Only ever raises it: concurrent raters each compute a valid
-- bound, and the greater of two valid bounds is valid.  Takes effect (or not)
-- with the caller's transaction, i.e. with the rating it follows.  Never
-- waits: when another rater holds the mark, this raise is skipped (the next
-- one catches up), so a rater holding account locks cannot deadlock on it.
CREATE FUNCTION @extschema@.raise_low_water(p_from bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- a rater in REPEATABLE READ or SERIALIZABLE whose snapshot predates
    -- another raise gets a serialization failure here: it leaves the raise
    -- to the next rater rather than lose its batch
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN;
    END IF;
    PERFORM 1 FROM @extschema@.usage_queue FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE @extschema@.usage_queue q SET low_water = b.low_water
    FROM (SELECT least(min(e.queued_by), txid_snapshot_xmin(txid_current_snapshot())) AS low_water
          FROM @extschema@.usage_event e
          WHERE e.status = 'pending' AND e.queued_by >= p_from) b
    WHERE q.low_water < b.low_water;
END $$;
COMMENT ON FUNCTION @extschema@.raise_low_water(bigint) IS
    'internal: raise the rating queue''s low-water mark (usage_queue) after a rating batch that reached the end of the queue';

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
    low_water bigint;
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
    IF to_regclass('pg_temp.convbill_take') IS NOT NULL THEN
        DROP TABLE pg_temp.convbill_take;
    END IF;
    -- narrow rows: what rating needs, the zone already resolved
    CREATE TEMP TABLE convbill_claim (
        part oid, tid tid, idx bigint, account_id bigint, source text, external_id text,
        service text, quantity numeric, started_at timestamptz, zone text) ON COMMIT DROP;

    -- 1. claim by account and event time, so that across batches too an
    -- account's allowances and cycle totals are consumed in event-time order
    -- (real-time rating claims just the event it was called for).  The queue
    -- is the pending events with queued_by >= the low-water mark (see
    -- usage_queue, 40_rating.sql); real-time rating looks only at events
    -- queued by its own transaction, which is the one that inserted the event.
    IF p_account_id IS NULL THEN
        SELECT q.low_water INTO low_water FROM @extschema@.usage_queue q;
    ELSE
        low_water := txid_current();
    END IF;
    INSERT INTO convbill_claim
    SELECT e.tableoid, e.ctid, row_number() OVER (), e.account_id, e.source, e.external_id,
           e.service, e.quantity, e.started_at,
           CASE WHEN jsonb_typeof(e.attrs -> 'destination') = 'string'
                THEN @extschema@.zone_of(e.attrs ->> 'destination') END
    FROM (SELECT e.tableoid, e.ctid, e.account_id, e.source, e.external_id, e.service,
                 e.quantity, e.started_at, e.attrs
          FROM @extschema@.usage_event e
          -- (an event inserted with a NULL queued_by, e.g. INSERT ... SELECT *
          -- from a copy of the table, is queued too)
          WHERE e.status = 'pending' AND (e.queued_by >= low_water OR e.queued_by IS NULL)
            AND (p_account_id IS NULL
                 OR (e.account_id = p_account_id AND e.source IS NOT DISTINCT FROM p_source
                     AND e.external_id IS NOT DISTINCT FROM p_external_id))
          ORDER BY e.account_id, e.started_at
          LIMIT p_max_events
          FOR UPDATE SKIP LOCKED) e;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        DROP TABLE pg_temp.convbill_claim;
        IF p_account_id IS NULL THEN
            PERFORM @extschema@.raise_low_water(low_water);
        END IF;
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

    -- 3. every event's fate, up to its billed quantity and open period
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
    judged AS MATERIALIZED (
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
    -- acceptable copy in this batch (a rejected copy does not count): the few
    -- keys that occur twice, found by grouping narrow rows, not by sorting
    -- the batch
    repeated AS (
        SELECT j.account_id, j.source, j.external_id, min(j.idx) AS first_idx
        FROM judged j WHERE j.reject_reason IS NULL
        GROUP BY 1, 2, 3 HAVING count(*) > 1
    ),
    classified AS (
        SELECT j.*,
               j.reject_reason IS NULL
               AND (j.already_charged OR coalesce(j.idx <> rp.first_idx, false)) AS duplicate,
               CASE WHEN j.reject_reason IS NULL
                    THEN @extschema@.billing_period_start(j.started_at, j.timezone, j.billing_day) END AS own_start
        FROM judged j
        LEFT JOIN repeated rp ON rp.account_id = j.account_id AND rp.source = j.source
                             AND rp.external_id = j.external_id
    ),
    -- the open period of each (account, own period): itself, or the next one
    -- after closed periods (late usage); checked once per pair, not per event
    open_periods AS MATERIALIZED (
        SELECT k.account_id, k.own_start,
               CASE WHEN EXISTS (SELECT 1 FROM @extschema@.closed_period cp
                                 WHERE cp.account_id = k.account_id
                                   AND cp.period_start < k.own_end AND cp.period_end > k.own_start)
                    THEN @extschema@.open_period(k.account_id, k.own_start)
                    ELSE tstzrange(k.own_start, k.own_end, '[)') END AS period
        FROM (SELECT k.account_id, k.own_start,
                     @extschema@.billing_period_end(k.own_start, k.timezone, k.billing_day) AS own_end
              FROM (SELECT DISTINCT account_id, own_start, timezone, billing_day
                    FROM classified WHERE own_start IS NOT NULL AND NOT duplicate) k) k
    )
    SELECT cl.idx, cl.part, cl.tid, cl.account_id, cl.source, cl.external_id, cl.service, cl.zone,
           cl.quantity, cl.started_at, cl.acc_currency AS currency, cl.timezone,
           cl.rate_id, cl.bq, cl.cycle,
           lower(op.period) AS period_start, upper(op.period) AS period_end,
           CASE WHEN cl.reject_reason IS NOT NULL THEN 'rejected'
                WHEN cl.duplicate THEN 'duplicate'
                ELSE 'billable' END AS status,
           cl.reject_reason
    FROM classified cl
    LEFT JOIN open_periods op ON NOT cl.duplicate AND op.account_id = cl.account_id AND op.own_start = cl.own_start;
    IF n > 1000 THEN
        ANALYZE convbill_work;
    END IF;

    -- 4. the plan allowances of every (account, open period) the batch bills
    -- in, granted as buckets if they are not yet (under the account locks)
    PERFORM @extschema@.ensure_plan_allowances(array_agg(k.account_id), array_agg(k.period_start))
    FROM (SELECT DISTINCT w.account_id, w.period_start FROM convbill_work w WHERE w.status = 'billable') k;

    -- 5. allowances first: each event takes from its account's allowance
    -- buckets of its service valid at its time (a late event: at the start of
    -- the open period it is billed in), in event-time order, each in
    -- (priority, valid_until, bucket_id) order (allowance_take, C).  Units held
    -- by open sessions are set aside first, from the buckets valid now in that
    -- same order (where the sessions' debits will take them), so rating never
    -- takes units a session was granted.
    CREATE TEMP TABLE convbill_take ON COMMIT DROP AS
    WITH keys AS (
        SELECT DISTINCT w.account_id, w.service FROM convbill_work w WHERE w.status = 'billable' AND w.bq > 0
    ),
    held AS (
        SELECT r.account_id, r.service, sum(r.held_units) AS units
        FROM keys k
        JOIN @extschema@.reservation r ON r.account_id = k.account_id AND r.service = k.service
        WHERE r.status = 'open' AND r.expires_at > now() AND r.held_units > 0
        GROUP BY 1, 2
    ),
    buckets AS (
        SELECT b.account_id, b.unit, b.bucket_id, b.priority, b.valid_from, b.valid_until, b.balance,
               b.valid_from <= now() AND b.valid_until > now() AS valid_now,
               coalesce(h.units, 0) AS held,
               coalesce(sum(CASE WHEN b.valid_from <= now() AND b.valid_until > now() THEN b.balance END)
                        OVER (PARTITION BY b.account_id, b.unit ORDER BY b.priority, b.valid_until, b.bucket_id
                              ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before_now
        FROM keys k
        JOIN @extschema@.bucket b ON b.account_id = k.account_id AND b.kind = 'allowance' AND b.unit = k.service
                                 AND b.balance > 0
        LEFT JOIN held h ON h.account_id = k.account_id AND h.service = k.service
    ),
    avail AS MATERIALIZED (
        SELECT x.account_id, x.unit, x.bucket_id, x.priority, x.valid_from, x.valid_until,
               trunc(x.balance - CASE WHEN x.valid_now THEN least(x.balance, greatest(x.held - x.before_now, 0))
                                      ELSE 0 END, 9) AS units
        FROM buckets x
    ),
    b AS (
        SELECT array_agg(a.account_id) AS account_id, array_agg(a.unit) AS unit, array_agg(a.bucket_id) AS id,
               array_agg(a.priority) AS priority, array_agg(a.valid_from) AS valid_from,
               array_agg(a.valid_until) AS valid_until, array_agg(a.units) AS units
        FROM avail a WHERE a.units > 0
    ),
    e AS (
        SELECT array_agg(w.account_id) AS account_id, array_agg(w.service) AS service, array_agg(w.idx) AS idx,
               array_agg(greatest(w.started_at, w.period_start)) AS at, array_agg(w.bq) AS bq
        FROM convbill_work w
        WHERE w.status = 'billable' AND w.bq > 0
          AND (w.account_id, w.service) IN (SELECT a.account_id, a.unit FROM avail a WHERE a.units > 0)
    )
    SELECT t.idx, t.bucket_id, t.taken
    FROM e, b, @extschema@.allowance_take(e.account_id, e.service, e.idx, e.at, e.bq,
                                          b.account_id, b.unit, b.id, b.priority, b.valid_from,
                                          b.valid_until, b.units) t;

    -- 6. cycle running totals, the price (rate_billed() in C), and then the
    -- charges, the events, the buckets and ledger, the counters in one
    -- statement.  The account locks and the duplicate check above mean no
    -- charge of this batch can exist yet; the unique index on
    -- (account_id, source, external_id) is the safety net.  An event whose
    -- charge is out of range is rejected and takes no allowance.
    WITH covered AS (
        SELECT t.idx, sum(t.taken) AS covered FROM convbill_take t GROUP BY t.idx
    ),
    cycle_used AS (
        SELECT c.idx,
               coalesce(rc.used, 0)
               + coalesce(sum(c.rest) OVER (PARTITION BY c.account_id, c.period_start, c.rate_id
                                            ORDER BY c.started_at, c.idx
                                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS used_before
        FROM (SELECT w.idx, w.account_id, w.period_start, w.rate_id, w.started_at,
                     w.bq - coalesce(cv.covered, 0) AS rest
              FROM convbill_work w LEFT JOIN covered cv USING (idx)
              WHERE w.status = 'billable' AND w.cycle) c
        LEFT JOIN @extschema@.usage_counter rc
               ON rc.account_id = c.account_id AND rc.period_start = c.period_start
              AND rc.counter = 'rate:' || c.rate_id
    ),
    -- every event of the batch in claim order (account, time): charges and
    -- event updates written in that order keep the indexes' inserts local
    priced AS MATERIALIZED (
        SELECT p.*, CASE WHEN p.amount IS NOT NULL THEN nextval('@extschema@.charge_charge_id_seq') END AS charge_id
        FROM (SELECT w.*, coalesce(cv.covered, 0) AS covered, w.bq - coalesce(cv.covered, 0) AS rest,
                     CASE WHEN w.status = 'billable'
                          THEN @extschema@.rate_billed_or_null(t.tariff, w.bq - coalesce(cv.covered, 0), w.started_at,
                                                               w.timezone, coalesce(cu.used_before, 0)) END AS amount
              FROM convbill_work w
              LEFT JOIN @extschema@.plan_rate t ON t.rate_id = w.rate_id AND w.status = 'billable'
              LEFT JOIN covered cv USING (idx)
              LEFT JOIN cycle_used cu USING (idx)
              ORDER BY w.idx) p
    ),
    charges AS (
        INSERT INTO @extschema@.charge
            (account_id, charge_id, kind, service, zone, quantity, billed_quantity, covered_quantity, amount,
             currency, occurred_at, period_start, period_end, source, external_id, rate_id)
        SELECT p.account_id, p.charge_id, 'usage', p.service, p.zone, p.quantity, p.bq, p.covered, p.amount,
               p.currency, p.started_at, p.period_start, p.period_end, p.source, p.external_id, p.rate_id
        FROM priced p
        WHERE p.charge_id IS NOT NULL
    ),
    debits AS (
        SELECT p.account_id, t.bucket_id, p.service AS unit, sum(t.taken) AS taken, count(*)::integer AS events
        FROM convbill_take t
        JOIN priced p ON p.idx = t.idx AND p.charge_id IS NOT NULL
        GROUP BY 1, 2, 3
    ),
    bucket_update AS (
        UPDATE @extschema@.bucket b SET balance = b.balance - d.taken
        FROM debits d
        WHERE b.account_id = d.account_id AND b.bucket_id = d.bucket_id
    ),
    ledger_entries AS (
        INSERT INTO @extschema@.ledger (account_id, kind, bucket_id, unit, amount, charges)
        SELECT d.account_id, 'debit', d.bucket_id, d.unit, -d.taken, d.events FROM debits d
    ),
    counters AS (
        INSERT INTO @extschema@.usage_counter AS uc (account_id, period_start, counter, used)
        SELECT p.account_id, p.period_start, 'rate:' || p.rate_id, sum(p.rest)
        FROM priced p WHERE p.charge_id IS NOT NULL AND p.cycle
        GROUP BY 1, 2, 3
        ON CONFLICT (account_id, period_start, counter) DO UPDATE SET used = uc.used + excluded.used
    )
    UPDATE @extschema@.usage_event e
    SET status = CASE WHEN p.status <> 'billable' THEN p.status
                      WHEN p.charge_id IS NULL THEN 'rejected' ELSE 'rated' END,
        reject_reason = CASE WHEN p.status = 'billable' AND p.charge_id IS NULL THEN 'out_of_range'
                             ELSE p.reject_reason END,
        rated_at = now(), charge_id = p.charge_id
    FROM priced p
    WHERE e.tableoid = p.part AND e.ctid = p.tid;

    DROP TABLE pg_temp.convbill_claim, pg_temp.convbill_work, pg_temp.convbill_take;
    -- 7. a batch that drained the queue (as far as this rater can claim)
    -- raises the low-water mark past what is rated; a full batch leaves that
    -- to the call that finds the queue's end
    IF p_account_id IS NULL AND n < p_max_events THEN
        PERFORM @extschema@.raise_low_water(low_water);
    END IF;
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
    -- pending events below the queue's low-water mark (inserted with a
    -- queued_by of their own, e.g. copied from another database): queued
    -- anew by this transaction (usage_event_requeue)
    IF p_reason IS NULL THEN
        UPDATE @extschema@.usage_event
        SET status = 'pending'
        WHERE status = 'pending' AND queued_by < (SELECT q.low_water FROM @extschema@.usage_queue q)
          AND (p_account_id IS NULL OR account_id = p_account_id);
    END IF;
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
