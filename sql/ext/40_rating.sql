-------------------------------------------------------------------------------
-- Usage ingestion and bulk rating.
--
--   usage_event   raw usage from every service, partitioned by started_at;
--                 applications INSERT or COPY into it, and no row can make that
--                 fail: checks happen at rating time, and a bad event stays
--                 here as 'rejected' with its reason.
--   charge        one row per rated event (and per fee, one-time charge, ...),
--                 unique per (account_id, source, external_id): an event is
--                 never charged twice.
--   usage_counter per account and period: the running totals of cycle-scoped
--                 tariffs.  Allowances (plan and granted) are buckets
--                 (50_balance.sql), shared with online charging.
--   closed_period periods already invoiced; a late event goes to the next
--                 open period.
-------------------------------------------------------------------------------

CREATE TABLE @extschema@.usage_event (
    account_id    bigint,
    source        text,
    external_id   text,
    service       text,
    quantity      numeric,
    started_at    timestamptz,
    attrs         jsonb DEFAULT '{}',
    status        text DEFAULT 'pending',     -- pending | rated | rejected | duplicate
    reject_reason text,
    received_at   timestamptz DEFAULT now(),
    rated_at      timestamptz,
    charge_id     bigint,
    queued_by     bigint DEFAULT txid_current()   -- the transaction that queued it for rating
) PARTITION BY RANGE (started_at);
COMMENT ON TABLE @extschema@.usage_event IS
    'usage from every service; INSERT or COPY (account_id, source, external_id, service, quantity, started_at, attrs) and leave the rest to convbill';
COMMENT ON COLUMN @extschema@.usage_event.status IS
    'pending until rated; rated (see charge_id), rejected (see reject_reason; rerate() retries) or duplicate (a re-sent event, ignored)';
COMMENT ON COLUMN @extschema@.usage_event.queued_by IS
    'convbill''s: the (64-bit) id of the transaction that inserted the event or last set it pending; the rating queue is found by it (usage_queue.low_water)';

-- Events outside every monthly partition (and NULL times) land here: an insert
-- never fails for want of a partition.
CREATE TABLE @extschema@.usage_event_default PARTITION OF @extschema@.usage_event DEFAULT;

-- The queue of pending events.  A B-tree of pending rows cost COPY an index
-- insert (with its WAL record) per row, about as much as the row itself; a
-- BRIN of the pending rows' queued_by costs next to nothing (a new page range
-- is unsummarised; autosummarize keeps that unsummarised tail short).  It is
-- complete by construction: every pending row is in an unsummarised range or
-- in one whose [min, max] covers its queued_by.  It is lossy the other way
-- (a range keeps its summary when its events are rated), which the low-water
-- mark below fixes: raters look only at queued_by >= usage_queue.low_water.
--
-- The indexes of usage_event are made per partition (usage_partition_indexes,
-- called by ensure_usage_partitions), not on the partitioned table: a dumped
-- partition is re-attached at restore to a usage_event the extension script
-- already made, and partitioned indexes there would create the partition's
-- indexes a second time ("already exists").  The three of them:
--   * the rating queue above (BRIN of the pending events' queued_by);
--   * rejected events, few, which the leakage view counts without a scan;
--   * started_at (BRIN): detect_anomalies() reads a day of events and the
--     baseline a month, by time.
CREATE FUNCTION @extschema@.usage_partition_indexes(p_partition regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel name := (SELECT c.relname FROM pg_class c WHERE c.oid = p_partition);
BEGIN
    EXECUTE format('CREATE INDEX %I ON %s USING brin (queued_by) WITH (pages_per_range = 32, autosummarize = on)
                    WHERE status = ''pending''', rel || '_pending', p_partition);
    EXECUTE format('CREATE INDEX %I ON %s (reject_reason) WHERE status = ''rejected''', rel || '_rejected', p_partition);
    EXECUTE format('CREATE INDEX %I ON %s USING brin (started_at) WITH (autosummarize = on)',
                   rel || '_started', p_partition);
END $$;
COMMENT ON FUNCTION @extschema@.usage_partition_indexes(regclass) IS
    'internal: the indexes of one usage_event partition (rating queue, rejected events, started_at)';
SELECT @extschema@.usage_partition_indexes('@extschema@.usage_event_default');

-- The low-water mark: no pending event has, or will ever have, a queued_by
-- below it.  Why that holds (41_rate_pending.sql advances it):
--   * queued_by is the inserting (or re-queueing) transaction's id, given by
--     the column default and by usage_event_requeue below, never taken from
--     received_at or any other time an application may send;
--   * a rater sets low_water to the least of the queued_by of the pending
--     events its statement snapshot sees (its own batch already marked) and
--     that snapshot's xmin: an event it cannot see belongs to a transaction
--     still running at the snapshot or started after it, whose id is >= xmin;
--   * it only moves up (each raise is a valid bound, so the greatest is too),
--     commits or aborts with the rating it comes from, and is not dumped (a
--     restored database starts again from 0 with fresh transaction ids).
-- An event moved between partitions (ensure_usage_partitions, an UPDATE of
-- started_at) keeps its queued_by: some snapshot sees it pending all along.
CREATE TABLE @extschema@.usage_queue (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    low_water bigint NOT NULL DEFAULT 0
);
INSERT INTO @extschema@.usage_queue DEFAULT VALUES;
COMMENT ON TABLE @extschema@.usage_queue IS
    'internal: the rating queue''s low-water mark; every pending usage_event has queued_by >= low_water (raised by rate_pending)';

-- An event set (back) to pending by an UPDATE (rerate(), or by hand) is queued
-- anew, by the updating transaction: its old queued_by may be below the mark.
-- The WHEN keeps it off the rater's UPDATE (rated, rejected, duplicate) and
-- off COPY (no BEFORE INSERT trigger: COPY keeps its multi-row inserts).
CREATE FUNCTION @extschema@.usage_event_requeue() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.queued_by := txid_current();
    RETURN NEW;
END $$;
CREATE TRIGGER usage_event_requeue BEFORE UPDATE ON @extschema@.usage_event
    FOR EACH ROW
    WHEN (NEW.status = 'pending')
    EXECUTE FUNCTION @extschema@.usage_event_requeue();

CREATE TABLE @extschema@.closed_period (
    account_id   bigint NOT NULL REFERENCES @extschema@.account,
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    closed_at    timestamptz NOT NULL DEFAULT now(),
    invoiced_by  bigint,                 -- the paying account whose invoice closed it (NULL: close_period)
    by_hand      boolean NOT NULL DEFAULT false,  -- closed by close_period (stays closed when its draft is discarded)
    PRIMARY KEY (account_id, period_start)
);
-- the accounts a payer's invoice of a period billed (discard_draft reopens them)
CREATE INDEX closed_period_invoiced_by ON @extschema@.closed_period (invoiced_by, period_start)
    WHERE invoiced_by IS NOT NULL;
COMMENT ON TABLE @extschema@.closed_period IS
    'billing periods that were invoiced (or closed by close_period); new charges for them go to the next open period';

CREATE TABLE @extschema@.usage_counter (
    account_id   bigint NOT NULL REFERENCES @extschema@.account,
    period_start timestamptz NOT NULL,
    counter      text NOT NULL,          -- 'rate:<rate_id>'
    used         numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, period_start, counter)
)
-- every rating batch and session adds to the totals in place: room in each
-- page keeps those updates HOT
WITH (fillfactor = 50);
COMMENT ON TABLE @extschema@.usage_counter IS
    'running totals of cycle-scoped tariffs per account and period (billed units they priced); allowances are buckets';

-- No foreign key to account: every writer (rating under the account's row
-- lock, add_charge) checks the account, and account_delete_guard refuses to
-- delete an account that has charges.  (The key check cost a third of bulk
-- rating's insert time.)
CREATE TABLE @extschema@.charge (
    account_id       bigint NOT NULL,
    charge_id        bigint GENERATED BY DEFAULT AS IDENTITY,
    kind             text NOT NULL
                     CHECK (kind IN ('usage', 'recurring', 'one_time', 'discount', 'adjustment')),
    service          text,
    zone             text,
    quantity         numeric,               -- as measured
    billed_quantity  numeric,               -- after increments
    covered_quantity numeric,               -- billed units covered by allowances
    amount           numeric NOT NULL,      -- rounded once, by the tariff
    currency         text NOT NULL,
    occurred_at      timestamptz NOT NULL,
    period_start     timestamptz NOT NULL,  -- the open period it is billed in
    period_end       timestamptz NOT NULL,
    invoice_id       bigint,
    source           text,
    external_id      text,
    rate_id          bigint,
    description      text,
    reference        text,                  -- idempotency key of add_charge
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, charge_id)
);
CREATE UNIQUE INDEX charge_event_key ON @extschema@.charge (account_id, source, external_id)
    WHERE external_id IS NOT NULL;
CREATE UNIQUE INDEX charge_reference_key ON @extschema@.charge (account_id, reference)
    WHERE reference IS NOT NULL;
-- (No index on (account_id, period_start) for all charges: what is looked up
-- by period is what is not billed yet, charge_unbilled in 60_invoice.sql; the
-- rest goes by the primary key.  One index fewer to write for every charge
-- rated and every charge the bill run marks: that UPDATE took 40 % less.)
COMMENT ON TABLE @extschema@.charge IS
    'everything an account owes: rated usage (one per event), recurring fees, one-time charges, discounts, adjustments';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_event_default', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.closed_period', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_counter', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.charge', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.charge_charge_id_seq', '');

-------------------------------------------------------------------------------
-- Partitions: monthly (UTC) ranges created ahead; rows that arrived in the
-- default partition for a month are moved into its new partition.
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.ensure_usage_partitions(start timestamptz DEFAULT now() - interval '1 month',
                                                    months integer DEFAULT 3)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_from ALIAS FOR $1;
    p_months ALIAS FOR $2;
    m timestamptz;
    hi timestamptz;
    name text;
    created integer := 0;
BEGIN
    IF p_from IS NULL OR p_months IS NULL OR NOT isfinite(p_from) OR p_months < 0 OR p_months > 1200 THEN
        RAISE EXCEPTION 'ensure_usage_partitions: start must be a finite time and months between 0 and 1200'
            USING ERRCODE = '22023';
    END IF;
    -- one partition maker at a time (raters call this too)
    PERFORM pg_advisory_xact_lock(pg_catalog.hashtext('convbill.ensure_usage_partitions'));
    FOR i IN 0 .. p_months - 1 LOOP
        m := date_trunc('month', p_from AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + make_interval(months => i);
        hi := m + interval '1 month';
        name := 'usage_event_' || to_char(m AT TIME ZONE 'UTC', 'YYYYMM');
        CONTINUE WHEN to_regclass('@extschema@.' || name) IS NOT NULL;
        LOCK TABLE @extschema@.usage_event_default IN ACCESS EXCLUSIVE MODE;
        EXECUTE format('CREATE TABLE @extschema@.%I (LIKE @extschema@.usage_event INCLUDING DEFAULTS)', name);
        EXECUTE format('WITH moved AS (DELETE FROM @extschema@.usage_event_default
                                       WHERE started_at >= $1 AND started_at < $2 RETURNING *)
                        INSERT INTO @extschema@.%I SELECT * FROM moved', name) USING m, hi;
        PERFORM @extschema@.usage_partition_indexes(format('@extschema@.%I', name)::regclass);
        EXECUTE format('ALTER TABLE @extschema@.usage_event ATTACH PARTITION @extschema@.%I
                        FOR VALUES FROM (%L) TO (%L)', name, m, hi);
        created := created + 1;
    END LOOP;
    RETURN created;
END $$;
COMMENT ON FUNCTION @extschema@.ensure_usage_partitions(timestamptz, integer) IS
    'create monthly usage_event partitions from the month of start for months months (moving rows already in the default partition); returns how many were created';

-------------------------------------------------------------------------------
-- Periods
-------------------------------------------------------------------------------

-- The open period a charge at `at` belongs to: its own period, or the next one
-- that is not closed (late usage).
--
-- Closed periods overlapping the own period push the charge to the end of the
-- latest of them, and the period runs from there to the next boundary: the
-- next period when the closed one is the own period (the usual late event),
-- the bill run's first period after a change of time zone or billing day when
-- the closed one was cut under the old settings (it ends inside the own
-- period, or after it).  That first period is what the bill run invoices next
-- (61_bill_run.sql starts it at the end of the last invoiced period): pushing
-- to the own period's end instead put its usage, late or not, on the invoice
-- after it.  The result depends only on the own period: bulk rating
-- (rating_batch.c) asks once per (account, own period start).
CREATE FUNCTION @extschema@.open_period(account_id bigint, at timestamptz)
RETURNS tstzrange
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_account_id ALIAS FOR $1;
    p_at ALIAS FOR $2;
    a record;
    s timestamptz;
    e timestamptz;
    closed_until timestamptz;
BEGIN
    SELECT timezone, billing_day INTO a FROM @extschema@.account WHERE account_id = p_account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', p_account_id USING ERRCODE = '23503';
    END IF;
    s := @extschema@.billing_period_start(p_at, a.timezone, a.billing_day);
    e := @extschema@.billing_period_end(p_at, a.timezone, a.billing_day);
    LOOP
        SELECT max(c.period_end) INTO closed_until FROM @extschema@.closed_period c
        WHERE c.account_id = p_account_id AND c.period_start < e AND c.period_end > s;
        EXIT WHEN closed_until IS NULL;
        -- (closed_until > s: the loop moves on every time)
        s := closed_until;
        e := @extschema@.billing_period_end(s, a.timezone, a.billing_day);
    END LOOP;
    RETURN tstzrange(s, e, '[)');
END $$;
COMMENT ON FUNCTION @extschema@.open_period(bigint, timestamptz) IS
    'the account''s period a charge at `at` is billed in: the period containing it or, when closed periods overlap that one, the one from the end of the latest of them to the next boundary (the next period; after a change of time zone or billing day, the first period of the new settings)';

CREATE FUNCTION @extschema@.close_period(account_id bigint, at timestamptz)
RETURNS tstzrange
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_account_id ALIAS FOR $1;
    p_at ALIAS FOR $2;
    p tstzrange;
BEGIN
    IF p_account_id IS NULL OR p_at IS NULL THEN
        RAISE EXCEPTION 'close_period: account_id and at must not be NULL' USING ERRCODE = '22004';
    END IF;
    -- waits for raters and add_charge of this account, and makes them wait
    PERFORM 1 FROM @extschema@.account WHERE account_id = p_account_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', p_account_id USING ERRCODE = '23503';
    END IF;
    p := @extschema@.account_period(p_account_id, p_at);
    INSERT INTO @extschema@.closed_period (account_id, period_start, period_end, by_hand)
    VALUES (p_account_id, lower(p), upper(p), true) ON CONFLICT DO NOTHING;
    RETURN p;
END $$;
COMMENT ON FUNCTION @extschema@.close_period(bigint, timestamptz) IS
    'mark the account''s period containing at as closed (the bill run does this when it invoices); idempotent';

-------------------------------------------------------------------------------
-- One-time charges
-------------------------------------------------------------------------------
-- Whether the session's login is an operator: a superuser, or a role that
-- inherits convbill_admin (95_security.sql).  SECURITY DEFINER API functions
-- (they run as the owner) ask it where the application role may do less.
-- (A NOINHERIT authenticator login that only may SET ROLE to admin is not.)
CREATE FUNCTION @extschema@.caller_is_admin() RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user), false)
        OR (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = 'convbill_admin')
            AND pg_catalog.pg_has_role(session_user, 'convbill_admin', 'USAGE'));
END $$;
COMMENT ON FUNCTION @extschema@.caller_is_admin() IS
    'internal: whether the session''s login is a superuser or inherits convbill_admin';

CREATE FUNCTION @extschema@.add_charge(account_id bigint, amount numeric, description text,
                                       kind text DEFAULT 'one_time', at timestamptz DEFAULT now(),
                                       reference text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_account_id ALIAS FOR $1;
    p_amount ALIAS FOR $2;
    p_description ALIAS FOR $3;
    p_kind ALIAS FOR $4;
    p_at ALIAS FOR $5;
    p_reference ALIAS FOR $6;
    a @extschema@.account;
    payer bigint;
    p tstzrange;
    id bigint;
    prev @extschema@.charge;
BEGIN
    IF p_account_id IS NULL OR p_amount IS NULL OR p_kind IS NULL OR p_at IS NULL THEN
        RAISE EXCEPTION 'add_charge: account_id, amount, kind and at must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF p_kind NOT IN ('one_time', 'adjustment', 'recurring', 'discount') THEN
        RAISE EXCEPTION 'add_charge: kind must be one_time, adjustment, recurring or discount, not "%"', p_kind
            USING ERRCODE = '22023', HINT = 'Usage charges come from rating usage events.';
    END IF;
    IF p_amount = 'NaN' OR p_amount IN ('Infinity', '-Infinity') THEN
        RAISE EXCEPTION 'add_charge: amount must be a finite number' USING ERRCODE = '22023';
    END IF;
    -- the bill run sums charges exactly at 12 decimals (invoice_line_total,
    -- PRICE_DECIMALS): a finer amount would make it fail, so it is refused
    -- here (trailing zeros are no decimals)
    IF p_amount <> round(p_amount, 12) THEN
        RAISE EXCEPTION 'add_charge: amount % has more than 12 decimal places', p_amount USING ERRCODE = '22023';
    END IF;
    IF abs(p_amount) >= 1e15 THEN
        RAISE EXCEPTION 'add_charge: amount % is out of range (below 1e15 either way)', p_amount USING ERRCODE = '22003';
    END IF;
    IF p_kind = 'discount' AND p_amount > 0 THEN
        RAISE EXCEPTION 'add_charge: a discount is a negative amount, not %', p_amount USING ERRCODE = '22023';
    END IF;
    -- the application role (it calls this as the owner) charges; crediting
    -- money (a negative amount) and adjustments, fees and discounts are the
    -- operator's, as adjust_balance and credit_note are
    IF (p_amount < 0 OR p_kind <> 'one_time') AND NOT @extschema@.caller_is_admin() THEN
        RAISE EXCEPTION 'add_charge: only convbill_admin may add a charge of kind % and amount %', p_kind, p_amount
            USING ERRCODE = '42501', HINT = 'The application adds one-time charges (kind one_time, amount >= 0).';
    END IF;
    IF NOT isfinite(p_at) THEN
        RAISE EXCEPTION 'add_charge: at must be a finite time' USING ERRCODE = '22008';
    END IF;
    -- serialised with rating and close_period of this account: the account
    -- and its payer (the charge's debit trigger debits the payer) locked in
    -- account order, as rating and online requests lock them; locking the
    -- account alone and the payer in the trigger could deadlock with a
    -- request that holds the payer and waits for the account.  The usual
    -- account pays for itself: one lock.
    SELECT * INTO a FROM @extschema@.account WHERE account_id = p_account_id AND NOT bill_to_parent
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        payer := @extschema@.payer_of(p_account_id);
        PERFORM 1 FROM @extschema@.account x
        WHERE x.account_id = p_account_id OR x.account_id = payer
        ORDER BY x.account_id FOR NO KEY UPDATE;
        SELECT * INTO a FROM @extschema@.account WHERE account_id = p_account_id;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', p_account_id USING ERRCODE = '23503';
    END IF;
    -- (a charge from before its closing is still its: billed on a last
    -- invoice; a sub-account's payer's closing counts as its own)
    IF @extschema@.account_closed_for(p_account_id, p_at) THEN
        RAISE EXCEPTION 'account % is closed', p_account_id
            USING ERRCODE = '22023', HINT = 'A charge from before the closing (at) is still added.';
    END IF;
    IF p_reference IS NOT NULL THEN
        SELECT * INTO prev FROM @extschema@.charge
        WHERE account_id = p_account_id AND reference = p_reference;
    END IF;
    IF prev.charge_id IS NULL THEN
        p := @extschema@.open_period(p_account_id, p_at);
        INSERT INTO @extschema@.charge (account_id, kind, amount, currency, occurred_at, period_start,
                                        period_end, description, reference)
        VALUES (p_account_id, p_kind, p_amount, a.currency, p_at, lower(p), upper(p), p_description, p_reference)
        ON CONFLICT (account_id, reference) WHERE reference IS NOT NULL DO NOTHING
        RETURNING charge_id INTO id;
        IF id IS NOT NULL THEN
            RETURN id;
        END IF;
        -- a concurrent call with the same reference won the race
        SELECT * INTO prev FROM @extschema@.charge
        WHERE account_id = p_account_id AND reference = p_reference;
    END IF;
    -- a retried call returns the original charge; the same reference for
    -- another charge is not a retry: refused (as top_up and grant_allowance
    -- refuse theirs), never answered with the first charge's id while the
    -- second is dropped.  (at is not compared: a retry leaving it at its
    -- default, now(), sends another time.)
    IF prev.amount IS DISTINCT FROM p_amount OR prev.kind IS DISTINCT FROM p_kind
       OR prev.description IS DISTINCT FROM p_description THEN
        RAISE EXCEPTION 'add_charge: reference "%" of account % is charge % (%, % %), not this charge (%, % %)',
            p_reference, p_account_id, prev.charge_id, prev.kind, prev.amount, prev.currency,
            p_kind, p_amount, a.currency
            USING ERRCODE = '23505', HINT = 'A retry must repeat the original call; another charge needs its own reference.';
    END IF;
    RETURN prev.charge_id;
END $$;
COMMENT ON FUNCTION @extschema@.add_charge(bigint, numeric, text, text, timestamptz, text) IS
    'add a one-time charge (or adjustment) in the account''s currency to its open period; with a reference, a retry returns the original charge_id';

-- An account's time zone and billing day define its periods; changing them
-- while it has charges, cycle counters or plan allowance buckets in periods
-- that are not closed would split or overlap those periods (plan allowances
-- granted again for the new period boundaries, closed periods bypassed).
CREATE FUNCTION @extschema@.account_period_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF (NEW.timezone IS DISTINCT FROM OLD.timezone OR NEW.billing_day IS DISTINCT FROM OLD.billing_day)
       AND (EXISTS (SELECT 1 FROM @extschema@.charge c
                    WHERE c.account_id = NEW.account_id
                      AND NOT EXISTS (SELECT 1 FROM @extschema@.closed_period p
                                      WHERE p.account_id = c.account_id AND p.period_start = c.period_start))
            OR EXISTS (SELECT 1 FROM @extschema@.usage_counter u
                       WHERE u.account_id = NEW.account_id
                         AND NOT EXISTS (SELECT 1 FROM @extschema@.closed_period p
                                         WHERE p.account_id = u.account_id AND p.period_start = u.period_start))
            OR EXISTS (SELECT 1 FROM @extschema@.bucket b
                       WHERE b.account_id = NEW.account_id AND b.origin = 'plan'
                         AND NOT EXISTS (SELECT 1 FROM @extschema@.closed_period p
                                         WHERE p.account_id = b.account_id AND p.period_start = b.period_start))) THEN
        RAISE EXCEPTION 'account %: time zone and billing day cannot change while it has charges in an open period',
            NEW.account_id
            USING ERRCODE = '55000',
                  HINT = 'Invoice (close) its open periods first; the new settings then apply from the next period.';
    END IF;
    -- fee periods a legacy system billed ahead (legacy_fee, 90_migration.sql)
    -- are the account's periods as they were cut when loaded: the bill run
    -- finds each by its start, which new settings would move (those months
    -- billed again).  Not before the bill run has reached the last of them.
    IF (NEW.timezone IS DISTINCT FROM OLD.timezone OR NEW.billing_day IS DISTINCT FROM OLD.billing_day)
       AND EXISTS (SELECT 1 FROM @extschema@.legacy_fee lf
                   WHERE lf.account_id = NEW.account_id
                     AND lf.fee_period_start >= coalesce(@extschema@.billed_until(NEW.account_id), '-infinity')) THEN
        RAISE EXCEPTION 'account %: time zone and billing day cannot change while fees a legacy system billed ahead are still to come',
            NEW.account_id
            USING ERRCODE = '55000',
                  HINT = 'They are in legacy_fee; change the settings once the bill run has invoiced those periods.';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER account_period_guard BEFORE UPDATE OF timezone, billing_day ON @extschema@.account
    FOR EACH ROW EXECUTE FUNCTION @extschema@.account_period_guard();

-- Accounts are closed, not deleted, once they have been charged.
CREATE FUNCTION @extschema@.account_delete_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM @extschema@.charge c WHERE c.account_id = OLD.account_id) THEN
        RAISE EXCEPTION 'account % has charges and cannot be deleted', OLD.account_id
            USING ERRCODE = '23503', HINT = 'Set its status to closed instead.';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER account_delete_guard BEFORE DELETE ON @extschema@.account
    FOR EACH ROW EXECUTE FUNCTION @extschema@.account_delete_guard();
