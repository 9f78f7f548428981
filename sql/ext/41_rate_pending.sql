-------------------------------------------------------------------------------
-- Bulk rating: rate_pending(), rerate() and real-time rating on insert.
--
-- One batch, set-based, in a handful of statements:
--   1. claim pending events by account and time (FOR UPDATE SKIP LOCKED, so
--      several sessions rate at once without taking the same event);
--   2. lock the batch's accounts and their payers (FOR NO KEY UPDATE, in
--      account order, as online requests do): the allowance buckets and cycle
--      counters of an account are read and written by one rater (or online
--      charging request) at a time, and duplicates are judged after that lock;
--   3. every event's fate in one pass in C (rate_batch(),
--      src/rating_batch.c): rejects with their reason, duplicates, tariff
--      resolution (plan -> service -> most specific zone -> latest
--      valid_from), billed quantity, the open period (late usage to the next
--      open one);
--   4. (in that pass) the plan allowances of the batch's (account, open
--      period) pairs granted as buckets (ensure_plan_allowances: the same
--      buckets online charging draws on, so an allowance is never given
--      twice);
--   5. (in that pass) one walk over the batch in event-time order: each
--      event takes units from the allowance buckets valid at its time, gets
--      its cycle running total and its price; an event priced out of range
--      gives its units back and counts for no running total;
--   6. in one statement the charges, the events, the bucket debits with
--      their ledger entries and the cycle counters.
-- Within a batch, an account's events are rated in started_at order.
-------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.rate_batch(n bigint)
RETURNS TABLE (idx bigint, part oid, tid tid, account_id bigint, source text, external_id text, service text,
               zone text, quantity numeric, started_at timestamptz, currency text, timezone text,
               rate_id bigint, bq numeric, cycle boolean, period_start timestamptz, period_end timestamptz,
               status text, reject_reason text, covered numeric, amount numeric,
               debit_bucket bigint[], debit_unit text[], debit_taken numeric[], debit_events integer[],
               counter_period timestamptz[], counter_rate bigint[], counter_used numeric[])
    AS 'MODULE_PATHNAME', 'rate_batch' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.rate_batch(bigint) IS
    'internal: rating''s pass over the n claimed events of pg_temp.convbill_claim (rate_events): each event with its reject reason or duplicate status, rate, billed quantity, open period (plan allowances granted), allowance covered (buckets taken in event-time order, cycle running total) and price (NULL: out of range); on one row per account, what its charged events take from each bucket and add to each cycle counter (C)';

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

-- enable_nestloop = off: the statements join whole batches (temp tables,
-- the C passes' results) on idx; estimates of those are poor, and a nested
-- loop there is quadratic.  Index probes in subqueries (the charge of an
-- event) are unaffected.  jit = off: the disabled-nestloop penalty inflates
-- plan costs past the JIT thresholds, and compiling costs seconds per call.
CREATE FUNCTION @extschema@.rate_events(max_events integer, account_id bigint,
                                        source text, external_id text)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
SET enable_nestloop = off
SET jit = off AS $$
#variable_conflict use_column
DECLARE
    p_max_events ALIAS FOR $1;
    p_account_id ALIAS FOR $2;
    p_source ALIAS FOR $3;
    p_external_id ALIAS FOR $4;
    n integer;
    ncand integer;
    k integer;
    low_water bigint;
    payers bigint[];
BEGIN
    IF p_max_events IS NULL OR p_max_events < 1 THEN
        RAISE EXCEPTION 'max_events must be a positive number, not %', p_max_events USING ERRCODE = '22023';
    END IF;
    -- one batch holds at most 1,000,000 events (rate_batch's limit, ~200
    -- bytes of memory each); the caller calls again for the rest, as it does
    -- for any batch
    p_max_events := least(p_max_events, 1000000);
    IF to_regclass('pg_temp.convbill_claim') IS NOT NULL THEN
        DROP TABLE pg_temp.convbill_claim;
    END IF;
    IF to_regclass('pg_temp.convbill_work') IS NOT NULL THEN
        DROP TABLE pg_temp.convbill_work;
    END IF;
    IF to_regclass('pg_temp.convbill_acct') IS NOT NULL THEN
        DROP TABLE pg_temp.convbill_acct;
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
    -- A small batch (at most 20,000: the rate job's 10,000) out of a long
    -- queue is claimed in two steps: its candidates first, by a bounded sort
    -- (the first max_events in (account, time) order, no lock), then their
    -- locks.  One locking query cannot bound its sort (the row lock sits
    -- between the LIMIT and the sort): it sorts every pending event for each
    -- batch, the whole backlog for every 10,000 events (a backlog of
    -- 1,000,000: 1.4-1.6 s a batch of 10,000, against 0.7-1.0 s so).  A
    -- candidate another rater holds, or rated meanwhile, is skipped; the
    -- batch is then numbered anew and topped up from the next events by the
    -- one-step claim, which bigger batches (100,000: no faster in two steps)
    -- and real-time rating use alone.
    n := 0;
    IF p_account_id IS NULL AND p_max_events <= 20000 THEN
        IF to_regclass('pg_temp.convbill_cand') IS NOT NULL THEN
            DROP TABLE pg_temp.convbill_cand;
        END IF;
        CREATE TEMP TABLE convbill_cand ON COMMIT DROP AS
        SELECT x.part, x.tid, row_number() OVER () AS ord
        FROM (SELECT e.tableoid AS part, e.ctid AS tid
              FROM @extschema@.usage_event e
              WHERE e.status = 'pending' AND (e.queued_by >= low_water OR e.queued_by IS NULL)
              ORDER BY e.account_id, e.started_at
              LIMIT p_max_events) x;
        GET DIAGNOSTICS ncand = ROW_COUNT;
        INSERT INTO convbill_claim
        SELECT l.part, l.tid, c.ord, l.account_id, l.source, l.external_id, l.service, l.quantity, l.started_at,
               @extschema@.event_zone(l.attrs)
        FROM (SELECT e.tableoid AS part, e.ctid AS tid, e.account_id, e.source, e.external_id, e.service,
                     e.quantity, e.started_at, e.attrs
              FROM @extschema@.usage_event e
              WHERE e.status = 'pending'
                AND (e.tableoid, e.ctid) IN (SELECT c.part, c.tid FROM convbill_cand c)
              FOR UPDATE OF e SKIP LOCKED) l
        JOIN convbill_cand c ON c.part = l.part AND c.tid = l.tid
        ORDER BY c.ord;
        GET DIAGNOSTICS n = ROW_COUNT;
        DROP TABLE pg_temp.convbill_cand;
        IF n < ncand THEN
            -- numbered 1..n again, in the same order
            UPDATE convbill_claim c SET idx = r.rn
            FROM (SELECT c2.part, c2.tid, row_number() OVER (ORDER BY c2.idx) AS rn FROM convbill_claim c2) r
            WHERE c.part = r.part AND c.tid = r.tid AND c.idx <> r.rn;
        END IF;
    END IF;
    -- the one-step claim: the whole batch, or the rest of a small one whose
    -- candidates another rater held (the next events nobody holds; those
    -- this batch holds are its own already)
    IF ncand IS NULL OR n < ncand THEN
        INSERT INTO convbill_claim
        SELECT e.tableoid, e.ctid, n + row_number() OVER (), e.account_id, e.source, e.external_id,
               e.service, e.quantity, e.started_at,
               @extschema@.event_zone(e.attrs)
        FROM (SELECT e.tableoid, e.ctid, e.account_id, e.source, e.external_id, e.service,
                     e.quantity, e.started_at, e.attrs
              FROM @extschema@.usage_event e
              -- (an event inserted with a NULL queued_by, e.g. INSERT ... SELECT *
              -- from a copy of the table, is queued too)
              WHERE e.status = 'pending' AND (e.queued_by >= low_water OR e.queued_by IS NULL)
                AND (p_account_id IS NULL
                     OR (e.account_id = p_account_id AND e.source IS NOT DISTINCT FROM p_source
                         AND e.external_id IS NOT DISTINCT FROM p_external_id))
                AND (n = 0 OR NOT EXISTS (SELECT 1 FROM convbill_claim c WHERE c.part = e.tableoid AND c.tid = e.ctid))
              ORDER BY e.account_id, e.started_at
              LIMIT p_max_events - n
              FOR UPDATE SKIP LOCKED) e;
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
    END IF;
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

    -- 2. one rater per account at a time: the claimed accounts and their
    -- payers (payer_of(), for bill_to_parent children), all in account order
    -- in one statement, as online requests lock an account and its payer
    -- (lock_accounts).  Locking the children alone, the charges' debit
    -- trigger (charge_debit) would lock a parent only later: a rater holding
    -- child C and waiting for parent P, while a reserve() of C holds P and
    -- waits for C, is a deadlock that loses the whole batch.
    -- The payers are those this statement's snapshot sees: a change of payer
    -- that commits while the lock waits for one of the accounts leaves the
    -- batch holding the old payer, and the money debit would lock the new
    -- one later, out of order (a deadlock with a request or another batch
    -- that holds it).  So the payers are read again once the locks are held
    -- (a new statement: a new snapshot), and when one changed, the locks are
    -- given back (the subtransaction rolls back) and taken again, in order.
    LOOP
        BEGIN
            SELECT array_agg(DISTINCT @extschema@.payer_of(y.account_id)) INTO payers
            FROM @extschema@.account y
            WHERE y.account_id IN (SELECT c.account_id FROM convbill_claim c) AND y.bill_to_parent;
            PERFORM 1 FROM @extschema@.account a
            WHERE a.account_id IN (SELECT c.account_id FROM convbill_claim c)
               OR a.account_id = ANY (payers)
            ORDER BY a.account_id
            FOR NO KEY UPDATE OF a;
            IF EXISTS (SELECT 1 FROM @extschema@.account y
                       WHERE y.account_id IN (SELECT c.account_id FROM convbill_claim c) AND y.bill_to_parent
                         AND NOT (@extschema@.payer_of(y.account_id) = ANY (coalesce(payers, '{}')))) THEN
                RAISE EXCEPTION USING ERRCODE = 'CB001';
            END IF;
            EXIT;
        EXCEPTION WHEN SQLSTATE 'CB001' THEN
            NULL;                       -- a payer changed: lock again
        END;
    END LOOP;

    -- 3-5. every event's fate, in one pass in C (rate_batch(), see
    -- src/rating_batch.c): the reject reason (the first of unknown_account,
    -- account_closed, missing_event_key, invalid_event_key, invalid_time, invalid_quantity,
    -- unknown_service, no_tariff, currency_mismatch), the rate (plan ->
    -- service -> most specific zone -> latest valid_from -> newest
    -- subscription), the billed quantity, duplicates (of a charged event or of
    -- an earlier acceptable copy in the batch), the open period (late usage
    -- to the next open one) and its plan allowances (ensure_plan_allowances:
    -- the buckets online charging draws on too, so an allowance is never
    -- given twice); then allowances first: each event takes from its
    -- account's allowance buckets of its service valid at its time (a late
    -- event: at the start of the open period it is billed in), in event-time
    -- order, each in (priority, valid_until, bucket_id) order, units held by
    -- open sessions set aside first (each session's from the buckets valid
    -- now and still when its grant lapses, those reserve() counted for it,
    -- in that same order); then the cycle running totals and the price (an
    -- event out of range takes no units and counts for no running total).
    -- Each priced event gets its charge id here; the rows that carry an
    -- account's bucket debits and counter additions (one per account) are
    -- copied apart, so that those writes do not read the whole batch again.
    CREATE TEMP TABLE convbill_work ON COMMIT DROP AS
    SELECT w.*, CASE WHEN w.amount IS NOT NULL THEN nextval('@extschema@.charge_charge_id_seq') END AS charge_id
    FROM @extschema@.rate_batch(n) w;
    CREATE TEMP TABLE convbill_acct ON COMMIT DROP AS
    SELECT w.account_id, w.debit_bucket, w.debit_unit, w.debit_taken, w.debit_events,
           w.counter_period, w.counter_rate, w.counter_used
    FROM convbill_work w
    WHERE w.debit_bucket IS NOT NULL OR w.counter_period IS NOT NULL;

    -- 6. the charges, the events, the buckets and ledger, the counters in one
    -- statement.  The account locks and the duplicate check above mean no
    -- charge of this batch can exist yet; the unique index on
    -- (account_id, source, external_id) is the safety net.  An event whose
    -- charge is out of range is rejected and takes no allowance.
    -- Every event of the batch in claim order (account, time), as rate_batch()
    -- returned them: charges and event updates written in that order keep
    -- the indexes' inserts local.  Nested loops allowed here (until the
    -- function returns): a small batch finds its events by TID and its
    -- buckets by key, rather than hashing every event and bucket there is.
    PERFORM set_config('enable_nestloop', 'on', true);
    -- (convbill_work is read by the statement's parts directly: a
    -- materialized CTE of it was a second copy of the batch, spilled to disk
    -- and read four times; 1.0-1.5 s of 1,000,000 events)
    WITH charges AS (
        INSERT INTO @extschema@.charge
            (account_id, charge_id, kind, service, zone, quantity, billed_quantity, covered_quantity, amount,
             currency, occurred_at, period_start, period_end, source, external_id, rate_id)
        SELECT p.account_id, p.charge_id, 'usage', p.service, p.zone, p.quantity, p.bq, p.covered, p.amount,
               p.currency, p.started_at, p.period_start, p.period_end, p.source, p.external_id, p.rate_id
        FROM convbill_work p
        WHERE p.charge_id IS NOT NULL
    ),
    -- what the charged events took from each bucket (rate_batch() returns an
    -- account's on one of its rows)
    debits AS (
        SELECT p.account_id, t.bucket_id, t.unit, t.taken, t.events
        FROM convbill_acct p
        CROSS JOIN LATERAL unnest(p.debit_bucket, p.debit_unit, p.debit_taken, p.debit_events)
                           AS t(bucket_id, unit, taken, events)
        WHERE p.debit_bucket IS NOT NULL
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
        SELECT p.account_id, t.period_start, 'rate:' || t.rate_id, t.used
        FROM convbill_acct p
        CROSS JOIN LATERAL unnest(p.counter_period, p.counter_rate, p.counter_used) AS t(period_start, rate_id, used)
        WHERE p.counter_period IS NOT NULL
        ON CONFLICT (account_id, period_start, counter) DO UPDATE SET used = uc.used + excluded.used
    )
    UPDATE @extschema@.usage_event e
    SET status = CASE WHEN p.status <> 'billable' THEN p.status
                      WHEN p.charge_id IS NULL THEN 'rejected' ELSE 'rated' END,
        reject_reason = CASE WHEN p.status = 'billable' AND p.charge_id IS NULL THEN 'out_of_range'
                             ELSE p.reject_reason END,
        rated_at = now(), charge_id = p.charge_id
    FROM convbill_work p
    WHERE e.tableoid = p.part AND e.ctid = p.tid;

    DROP TABLE pg_temp.convbill_claim, pg_temp.convbill_work, pg_temp.convbill_acct;
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
DECLARE
    lt text;
BEGIN
    -- partitions as needed: last month, this one and the next two (a no-op
    -- once they exist); events outside them wait in the default partition.
    -- Making one locks the default partition exclusively: behind a
    -- transaction that holds usage_event (a long query, a session holding an
    -- event), every insert and COPY would queue behind that lock.  So never
    -- for more than 2 s: then the partitions wait for the next call, and the
    -- rating goes on
    IF to_regclass('@extschema@.usage_event_' || to_char((now() + interval '2 months') AT TIME ZONE 'UTC', 'YYYYMM')) IS NULL THEN
        lt := current_setting('lock_timeout');
        BEGIN
            PERFORM set_config('lock_timeout', '2s', true);
            PERFORM @extschema@.ensure_usage_partitions(now() - interval '1 month', 4);
            PERFORM set_config('lock_timeout', lt, true);
        EXCEPTION WHEN lock_not_available THEN
            -- (the block's rollback restored lock_timeout)
            RAISE WARNING 'rate_pending: usage_event partitions not created now: another session holds usage_event'
                USING HINT = 'The next call tries again; meanwhile events of months without a partition wait in usage_event_default.';
        END;
    END IF;
    RETURN @extschema@.rate_events(max_events, NULL, NULL, NULL);
END $$;
COMMENT ON FUNCTION @extschema@.rate_pending(integer) IS
    'rate up to max_events (at most 1,000,000 per call) pending usage events (several sessions may run it at once); returns how many were processed (rated, rejected or found duplicate) — call until it returns 0';

CREATE FUNCTION @extschema@.rerate(reason text DEFAULT NULL, account_id bigint DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_reason ALIAS FOR $1;
    p_account_id ALIAS FOR $2;
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
