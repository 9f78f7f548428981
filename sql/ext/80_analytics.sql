-------------------------------------------------------------------------------
-- Analytics and revenue assurance (SPEC section 6).
--
-- Days and months are those of the session's TimeZone (SET TimeZone = ...).
-- Revenue is what was charged: the amounts of convbill.charge (rated usage,
-- recurring fees, one-time charges, charge-level discounts and adjustments)
-- by the time they occurred (occurred_at), before the invoice's own discounts,
-- taxes and minor-unit rounding (those live on the invoice lines).
--
-- The revenue rollup.  revenue_daily and revenue_monthly never scan charges:
--   revenue_delta   append-only: a statement-level AFTER INSERT trigger on
--                   charge (REFERENCING NEW TABLE) folds each statement's rows
--                   into a few rows keyed by (15-minute UTC bucket of
--                   occurred_at, currency, kind, service).  No row is ever
--                   updated by the trigger, so raters in parallel never wait
--                   on each other here.
--   revenue_rollup  the same totals, one row per key, compacted from the
--                   deltas by refresh_analytics() (the 'analytics' job, every
--                   15 minutes).
--   revenue_bucket  the view: rollup + deltas not yet compacted.
-- Freshness: the views are exact and current as of the reader's snapshot —
-- every committed charge is in the rollup or in a delta; compaction only keeps
-- the number of delta rows the views read small.  15-minute buckets make days
-- in any session time zone exact: every offset and DST change in use since
-- 1972 is a multiple of 15 minutes (+05:30, +05:45, +12:45, Lord Howe's
-- 30-minute DST).  (Under an older local mean time such as Liberia's -00:44:30,
-- a bucket counts on the local day it starts.)
-- Charges are not supposed to change after they are made (the bill run only
-- sets invoice_id); if one does change (UPDATE of an amount, time, kind,
-- service, currency or quantity) or goes (DELETE, TRUNCATE), a trigger
-- records the difference as deltas, so the rollup stays exact.
-- rebuild_analytics() recomputes the rollup from the charges (a database
-- whose charges were loaded with triggers disabled).  The rollup tables are
-- dumped with the charges (pg_extension_config_dump), so a restore, which
-- loads them with triggers off (README, Backup and restore), is consistent.
--
-- Views over the rollup, one local day or month at a time (a filter on day or
-- month limits the work):  revenue_bucket, revenue_daily, revenue_monthly,
-- usage_daily.  Views over charges, one month at a time through a BRIN index
-- on charge.occurred_at (filter them by month):  arpu, top_accounts,
-- revenue_by_plan, revenue_by_zone.  Others:  mrr (subscriptions), unbilled
-- (charges on no invoice), leakage (revenue-assurance checks; thresholds in
-- the settings convbill.leakage_pending_age and convbill.leakage_billing_grace).
-- Indexes added to other tables: charge (BRIN on occurred_at), ledger
-- (expiry entries) — each small or nearly free to maintain (and rejected
-- usage events: usage_partition_indexes, 40_rating.sql).
-------------------------------------------------------------------------------

CREATE TABLE @extschema@.revenue_rollup (
    bucket           timestamptz NOT NULL,  -- start of a 15-minute UTC bucket of occurred_at
    currency         text NOT NULL,
    kind             text NOT NULL,
    service          text,                  -- NULL for charges of no service
    amount           numeric NOT NULL,
    quantity         numeric,
    billed_quantity  numeric,
    covered_quantity numeric,
    charges          bigint NOT NULL,
    CONSTRAINT revenue_rollup_key UNIQUE NULLS NOT DISTINCT (bucket, currency, kind, service)
);
COMMENT ON TABLE @extschema@.revenue_rollup IS
    'charges summed per 15-minute UTC bucket of occurred_at, currency, kind and service (compacted by refresh_analytics; not account-owned); read it through revenue_bucket';

CREATE TABLE @extschema@.revenue_delta (
    bucket           timestamptz NOT NULL,
    currency         text NOT NULL,
    kind             text NOT NULL,
    service          text,
    amount           numeric NOT NULL,
    quantity         numeric,
    billed_quantity  numeric,
    covered_quantity numeric,
    charges          bigint NOT NULL
);
CREATE INDEX revenue_delta_bucket ON @extschema@.revenue_delta (bucket);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.revenue_rollup', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.revenue_delta', '');
COMMENT ON TABLE @extschema@.revenue_delta IS
    'append-only: what each statement added to (or, negative, took from) the charges, per revenue_rollup key; refresh_analytics merges it into revenue_rollup';

-- Months of charges are read a month at a time (arpu, top_accounts, ...):
-- charges arrive roughly in time order, so a BRIN index finds a month's pages
-- at next to no cost for inserts.
CREATE INDEX charge_occurred_brin ON @extschema@.charge USING brin (occurred_at) WITH (autosummarize = on);
-- (Rejected events are few; the leakage view counts them through an index
-- of every usage_event partition: usage_partition_indexes, 40_rating.sql.)
-- Sessions and buckets that expired: the leakage view reads what sessions held.
CREATE INDEX ledger_expiry ON @extschema@.ledger (account_id, session_id) WHERE kind = 'expiry';

-------------------------------------------------------------------------------
-- Maintenance triggers on charge
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.charge_rollup_insert() RETURNS trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO @extschema@.revenue_delta (bucket, currency, kind, service, amount, quantity, billed_quantity,
                                           covered_quantity, charges)
    SELECT date_bin('15 minutes'::interval, n.occurred_at, '2000-01-01 00:00:00+00'::timestamptz),
           n.currency, n.kind, n.service, sum(n.amount), sum(n.quantity), sum(n.billed_quantity),
           sum(n.covered_quantity), count(*)
    FROM new_charges n
    GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION @extschema@.charge_rollup_insert() IS
    'internal: fold the charges an INSERT statement made into revenue_delta rows (one per bucket, currency, kind, service)';
CREATE TRIGGER charge_rollup_insert AFTER INSERT ON @extschema@.charge
    REFERENCING NEW TABLE AS new_charges
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.charge_rollup_insert();

CREATE FUNCTION @extschema@.charge_rollup_delete() RETURNS trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO @extschema@.revenue_delta (bucket, currency, kind, service, amount, quantity, billed_quantity,
                                           covered_quantity, charges)
    SELECT date_bin('15 minutes'::interval, o.occurred_at, '2000-01-01 00:00:00+00'::timestamptz),
           o.currency, o.kind, o.service, -sum(o.amount), -sum(o.quantity), -sum(o.billed_quantity),
           -sum(o.covered_quantity), -count(*)
    FROM old_charges o
    GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION @extschema@.charge_rollup_delete() IS
    'internal: deleted charges leave the revenue rollup (negative revenue_delta rows)';
CREATE TRIGGER charge_rollup_delete AFTER DELETE ON @extschema@.charge
    REFERENCING OLD TABLE AS old_charges
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.charge_rollup_delete();

-- Row level, and only for the columns the rollup sums: the bill run's
-- UPDATE ... SET invoice_id never fires it.
CREATE FUNCTION @extschema@.charge_rollup_update() RETURNS trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO @extschema@.revenue_delta (bucket, currency, kind, service, amount, quantity, billed_quantity,
                                           covered_quantity, charges)
    VALUES (date_bin('15 minutes'::interval, OLD.occurred_at, '2000-01-01 00:00:00+00'::timestamptz),
            OLD.currency, OLD.kind, OLD.service, -OLD.amount, -OLD.quantity, -OLD.billed_quantity,
            -OLD.covered_quantity, -1),
           (date_bin('15 minutes'::interval, NEW.occurred_at, '2000-01-01 00:00:00+00'::timestamptz),
            NEW.currency, NEW.kind, NEW.service, NEW.amount, NEW.quantity, NEW.billed_quantity,
            NEW.covered_quantity, 1);
    RETURN NULL;
END $$;
COMMENT ON FUNCTION @extschema@.charge_rollup_update() IS
    'internal: a charge whose amount, time, kind, service, currency or quantities changed moves in the revenue rollup';
CREATE TRIGGER charge_rollup_update
    AFTER UPDATE OF occurred_at, currency, kind, service, amount, quantity, billed_quantity, covered_quantity
    ON @extschema@.charge
    FOR EACH ROW
    WHEN (OLD.occurred_at IS DISTINCT FROM NEW.occurred_at OR OLD.currency IS DISTINCT FROM NEW.currency
          OR OLD.kind IS DISTINCT FROM NEW.kind OR OLD.service IS DISTINCT FROM NEW.service
          OR OLD.amount IS DISTINCT FROM NEW.amount OR OLD.quantity IS DISTINCT FROM NEW.quantity
          OR OLD.billed_quantity IS DISTINCT FROM NEW.billed_quantity
          OR OLD.covered_quantity IS DISTINCT FROM NEW.covered_quantity)
    EXECUTE FUNCTION @extschema@.charge_rollup_update();

CREATE FUNCTION @extschema@.charge_rollup_truncate() RETURNS trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    TRUNCATE @extschema@.revenue_rollup, @extschema@.revenue_delta;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION @extschema@.charge_rollup_truncate() IS
    'internal: TRUNCATE of charge empties the revenue rollup too';
CREATE TRIGGER charge_rollup_truncate AFTER TRUNCATE ON @extschema@.charge
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.charge_rollup_truncate();

-------------------------------------------------------------------------------
-- refresh_analytics, rebuild_analytics
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.refresh_analytics()
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    merged bigint;
    zb timestamptz[];
    zc text[];
    zk text[];
    zs text[];
BEGIN
    -- one compaction at a time (a second one waits, then finds little to do);
    -- raters never wait: they only append deltas, and the DELETE below takes
    -- only the deltas committed before it started
    PERFORM pg_advisory_xact_lock(pg_catalog.hashtextextended('convbill.refresh_analytics', 0));
    WITH d AS (
        DELETE FROM @extschema@.revenue_delta RETURNING *
    ),
    g AS (
        SELECT d.bucket, d.currency, d.kind, d.service, sum(d.amount) AS amount, sum(d.quantity) AS quantity,
               sum(d.billed_quantity) AS billed_quantity, sum(d.covered_quantity) AS covered_quantity,
               sum(d.charges)::bigint AS charges, count(*) AS rows
        FROM d GROUP BY d.bucket, d.currency, d.kind, d.service
    ),
    up AS (
        INSERT INTO @extschema@.revenue_rollup AS r (bucket, currency, kind, service, amount, quantity,
                                                     billed_quantity, covered_quantity, charges)
        SELECT g.bucket, g.currency, g.kind, g.service, g.amount, g.quantity, g.billed_quantity,
               g.covered_quantity, g.charges
        FROM g
        ON CONFLICT ON CONSTRAINT revenue_rollup_key DO UPDATE
        SET amount = r.amount + excluded.amount,
            quantity = CASE WHEN r.quantity IS NULL THEN excluded.quantity
                            WHEN excluded.quantity IS NULL THEN r.quantity
                            ELSE r.quantity + excluded.quantity END,
            billed_quantity = CASE WHEN r.billed_quantity IS NULL THEN excluded.billed_quantity
                                   WHEN excluded.billed_quantity IS NULL THEN r.billed_quantity
                                   ELSE r.billed_quantity + excluded.billed_quantity END,
            covered_quantity = CASE WHEN r.covered_quantity IS NULL THEN excluded.covered_quantity
                                    WHEN excluded.covered_quantity IS NULL THEN r.covered_quantity
                                    ELSE r.covered_quantity + excluded.covered_quantity END,
            charges = r.charges + excluded.charges
        RETURNING r.bucket, r.currency, r.kind, r.service, r.charges
    )
    SELECT (SELECT coalesce(sum(g.rows), 0) FROM g),
           array_agg(up.bucket) FILTER (WHERE up.charges = 0), array_agg(up.currency) FILTER (WHERE up.charges = 0),
           array_agg(up.kind) FILTER (WHERE up.charges = 0), array_agg(up.service) FILTER (WHERE up.charges = 0)
    INTO merged, zb, zc, zk, zs
    FROM up;
    -- keys whose charges all went (deleted, or moved by an update)
    IF zb IS NOT NULL THEN
        DELETE FROM @extschema@.revenue_rollup r
        USING unnest(zb, zc, zk, zs) AS z(bucket, currency, kind, service)
        WHERE r.bucket = z.bucket AND r.currency = z.currency AND r.kind = z.kind
          AND r.service IS NOT DISTINCT FROM z.service AND r.charges = 0;
    END IF;
    RETURN merged;
END $$;
COMMENT ON FUNCTION @extschema@.refresh_analytics() IS
    'the analytics job: merge the revenue deltas committed so far into revenue_rollup; returns how many delta rows it merged (the views are exact either way, this keeps them fast)';

CREATE FUNCTION @extschema@.rebuild_analytics()
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    -- no charge may come or go while the totals are recomputed: writers of
    -- charges wait for this transaction (and it for theirs)
    LOCK TABLE @extschema@.charge IN SHARE MODE;
    PERFORM pg_advisory_xact_lock(pg_catalog.hashtextextended('convbill.refresh_analytics', 0));
    -- (DELETE, not TRUNCATE: a reader whose snapshot is older than this
    -- rebuild must still see the old rows — TRUNCATE is not MVCC-safe, and
    -- its views would be empty for it until it ends)
    DELETE FROM @extschema@.revenue_rollup;
    DELETE FROM @extschema@.revenue_delta;
    INSERT INTO @extschema@.revenue_rollup (bucket, currency, kind, service, amount, quantity, billed_quantity,
                                            covered_quantity, charges)
    SELECT date_bin('15 minutes'::interval, c.occurred_at, '2000-01-01 00:00:00+00'::timestamptz),
           c.currency, c.kind, c.service, sum(c.amount), sum(c.quantity), sum(c.billed_quantity),
           sum(c.covered_quantity), count(*)
    FROM @extschema@.charge c
    GROUP BY 1, 2, 3, 4;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
COMMENT ON FUNCTION @extschema@.rebuild_analytics() IS
    'recompute revenue_rollup from all charges (locks charge against writes while it runs); for a database restored with triggers disabled; returns the rollup rows written';

-------------------------------------------------------------------------------
-- Revenue views over the rollup
-------------------------------------------------------------------------------
CREATE VIEW @extschema@.revenue_bucket AS
SELECT u.bucket, u.currency, u.kind, u.service,
       sum(u.amount) AS amount, sum(u.quantity) AS quantity, sum(u.billed_quantity) AS billed_quantity,
       sum(u.covered_quantity) AS covered_quantity, sum(u.charges)::bigint AS charges
FROM (SELECT r.bucket, r.currency, r.kind, r.service, r.amount, r.quantity, r.billed_quantity,
             r.covered_quantity, r.charges
      FROM @extschema@.revenue_rollup r
      UNION ALL
      SELECT d.bucket, d.currency, d.kind, d.service, d.amount, d.quantity, d.billed_quantity,
             d.covered_quantity, d.charges
      FROM @extschema@.revenue_delta d) u
GROUP BY u.bucket, u.currency, u.kind, u.service
HAVING sum(u.charges) <> 0;
COMMENT ON VIEW @extschema@.revenue_bucket IS
    'charges per 15-minute UTC bucket of occurred_at, currency, kind and service: the rollup plus the deltas not compacted yet (exact and current)';

-- The first and last local day (session TimeZone) with charges.
CREATE VIEW @extschema@.revenue_span AS
SELECT s.first_bucket::date AS first_day, s.last_bucket::date AS last_day, s.first_bucket, s.last_bucket
FROM (SELECT least((SELECT min(r.bucket) FROM @extschema@.revenue_rollup r WHERE r.bucket > '-infinity'),
                   (SELECT min(d.bucket) FROM @extschema@.revenue_delta d WHERE d.bucket > '-infinity')) AS first_bucket,
             greatest((SELECT max(r.bucket) FROM @extschema@.revenue_rollup r WHERE r.bucket < 'infinity'),
                      (SELECT max(d.bucket) FROM @extschema@.revenue_delta d WHERE d.bucket < 'infinity')) AS last_bucket) s;
COMMENT ON VIEW @extschema@.revenue_span IS
    'the first and last local day (session TimeZone) and 15-minute bucket with charges (charges at +-infinity are left out)';

-- The local days and months with charges, as functions whose ROWS tell the
-- planner what to expect (generate_series over timestamps is estimated at
-- 1,000 rows, which makes every view over them look costly enough to be
-- JIT-compiled: tens of milliseconds per query, more than the query takes).
CREATE FUNCTION @extschema@.analytics_days()
RETURNS SETOF date
LANGUAGE sql STABLE PARALLEL SAFE ROWS 31 SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT g::date
    FROM @extschema@.revenue_span s,
         generate_series(s.first_day::timestamp, s.last_day::timestamp, '1 day'::interval) g;
END;
COMMENT ON FUNCTION @extschema@.analytics_days() IS
    'the local days (session TimeZone) from the first to the last day with charges';

CREATE FUNCTION @extschema@.analytics_months(OUT month date, OUT next_month date)
RETURNS SETOF record
LANGUAGE sql STABLE PARALLEL SAFE ROWS 12 SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT g::date, (g OPERATOR(pg_catalog.+) '1 month'::interval)::date
    FROM @extschema@.revenue_span s,
         generate_series(date_trunc('month', s.first_day::timestamp), s.last_day::timestamp, '1 month'::interval) g;
END;
COMMENT ON FUNCTION @extschema@.analytics_months() IS
    'the local months (session TimeZone; first day, and first day of the next) from the first to the last month with charges';

-- One local day at a time (LATERAL): a filter on day restricts the days, and
-- each day reads its buckets by index.  A bucket belongs to the local day of
-- its start (bucket::date); the range on bucket, a few hours wider than the
-- day, only serves the index.
CREATE VIEW @extschema@.revenue_daily AS
SELECT d.day, x.currency, x.service, x.kind, x.amount, x.quantity, x.charges, x.billed_quantity, x.covered_quantity
FROM @extschema@.analytics_days() AS d(day)
CROSS JOIN LATERAL (
    SELECT u.currency, u.service, u.kind, sum(u.amount) AS amount, sum(u.quantity) AS quantity,
           sum(u.charges)::bigint AS charges, sum(u.billed_quantity) AS billed_quantity,
           sum(u.covered_quantity) AS covered_quantity
    FROM (SELECT r.bucket, r.currency, r.kind, r.service, r.amount, r.quantity, r.billed_quantity,
                 r.covered_quantity, r.charges
          FROM @extschema@.revenue_rollup r
          UNION ALL
          SELECT e.bucket, e.currency, e.kind, e.service, e.amount, e.quantity, e.billed_quantity,
                 e.covered_quantity, e.charges
          FROM @extschema@.revenue_delta e) u
    WHERE u.bucket >= d.day::timestamptz - interval '3 hours'
      AND u.bucket < (d.day + 1)::timestamptz + interval '3 hours'
      AND u.bucket::date = d.day
    GROUP BY u.currency, u.service, u.kind
    HAVING sum(u.charges) <> 0) x;
COMMENT ON VIEW @extschema@.revenue_daily IS
    'revenue per local day (session TimeZone), currency, service and kind: amount, quantity and number of charges (from the rollup: exact, current, and fast — filter by day)';
COMMENT ON COLUMN @extschema@.revenue_daily.day IS 'the local date (session TimeZone) of the charges'' occurred_at';
COMMENT ON COLUMN @extschema@.revenue_daily.service IS 'NULL for charges of no service (fees, one-time charges, adjustments)';
COMMENT ON COLUMN @extschema@.revenue_daily.kind IS 'usage, recurring, one_time, discount or adjustment';
COMMENT ON COLUMN @extschema@.revenue_daily.amount IS 'exact sum of the charges'' amounts (in currency)';
COMMENT ON COLUMN @extschema@.revenue_daily.quantity IS 'sum of the charges'' quantities as measured (units of the service; subscriptions for fees)';

CREATE VIEW @extschema@.revenue_monthly AS
SELECT m.month, x.currency, x.service, x.kind, x.amount, x.quantity, x.charges
FROM @extschema@.analytics_months() m
CROSS JOIN LATERAL (
    SELECT u.currency, u.service, u.kind, sum(u.amount) AS amount, sum(u.quantity) AS quantity,
           sum(u.charges)::bigint AS charges
    FROM (SELECT r.bucket, r.currency, r.kind, r.service, r.amount, r.quantity, r.charges
          FROM @extschema@.revenue_rollup r
          UNION ALL
          SELECT e.bucket, e.currency, e.kind, e.service, e.amount, e.quantity, e.charges
          FROM @extschema@.revenue_delta e) u
    WHERE u.bucket >= m.month::timestamptz - interval '3 hours'
      AND u.bucket < m.next_month::timestamptz + interval '3 hours'
      AND u.bucket::date >= m.month AND u.bucket::date < m.next_month
    GROUP BY u.currency, u.service, u.kind
    HAVING sum(u.charges) <> 0) x;
COMMENT ON VIEW @extschema@.revenue_monthly IS
    'revenue per local month (session TimeZone; month = its first day), currency, service and kind (from the rollup: exact, current, fast)';

CREATE VIEW @extschema@.usage_daily AS
SELECT r.day, r.service, s.unit, sum(r.charges)::bigint AS events, sum(r.quantity) AS quantity,
       sum(r.billed_quantity) AS billed_quantity, sum(r.covered_quantity) AS covered_quantity
FROM @extschema@.revenue_daily r
LEFT JOIN @extschema@.service s ON s.code = r.service
WHERE r.kind = 'usage'
GROUP BY r.day, r.service, s.unit;
COMMENT ON VIEW @extschema@.usage_daily IS
    'usage per local day (session TimeZone) and service, all currencies: rated events and sessions, units measured, billed (after increments) and covered by allowances';

-------------------------------------------------------------------------------
-- Views over charges, a month at a time
-------------------------------------------------------------------------------
CREATE VIEW @extschema@.arpu AS
SELECT m.month, x.currency, x.active_accounts, x.revenue,
       round(x.revenue / x.active_accounts, @extschema@.currency_exponent(x.currency)) AS arpu
FROM @extschema@.analytics_months() m
CROSS JOIN LATERAL (
    SELECT c.currency, count(DISTINCT c.account_id) AS active_accounts, sum(c.amount) AS revenue
    FROM @extschema@.charge c
    WHERE c.occurred_at >= m.month::timestamptz - interval '3 hours'
      AND c.occurred_at < m.next_month::timestamptz + interval '3 hours'
      AND c.occurred_at::date >= m.month AND c.occurred_at::date < m.next_month
    GROUP BY c.currency) x;
COMMENT ON VIEW @extschema@.arpu IS
    'average revenue per active account, per local month (session TimeZone) and currency: active_accounts = accounts with at least one charge occurring in the month (whatever its amount; each sub-account counts), revenue = all their charges (as revenue_monthly), arpu = revenue / active_accounts rounded to the currency''s minor unit';

CREATE VIEW @extschema@.top_accounts AS
SELECT m.month, x.currency, x.rank, x.account_id, a.external_ref, a.name, x.amount, x.charges
FROM @extschema@.analytics_months() m
CROSS JOIN LATERAL (
    SELECT s.currency, s.account_id, s.amount, s.charges,
           rank() OVER (PARTITION BY s.currency ORDER BY s.amount DESC) AS rank
    FROM (SELECT c.currency, c.account_id, sum(c.amount) AS amount, count(*) AS charges
          FROM @extschema@.charge c
          WHERE c.occurred_at >= m.month::timestamptz - interval '3 hours'
            AND c.occurred_at < m.next_month::timestamptz + interval '3 hours'
            AND c.occurred_at::date >= m.month AND c.occurred_at::date < m.next_month
          GROUP BY c.currency, c.account_id) s) x
LEFT JOIN @extschema@.account a ON a.account_id = x.account_id;
COMMENT ON VIEW @extschema@.top_accounts IS
    'accounts ranked by revenue per local month (session TimeZone) and currency (rank 1 = most; ties share a rank): WHERE month = ... AND rank <= 10';

CREATE VIEW @extschema@.revenue_by_plan AS
SELECT m.month, x.currency, x.plan_code, x.kind, x.amount, x.quantity, x.charges
FROM @extschema@.analytics_months() m
CROSS JOIN LATERAL (
    SELECT c.currency, coalesce(r.plan_code, s.plan_code) AS plan_code, c.kind,
           sum(c.amount) AS amount, sum(c.quantity) AS quantity, count(*) AS charges
    FROM @extschema@.charge c
    LEFT JOIN @extschema@.plan_rate r ON r.rate_id = c.rate_id
    LEFT JOIN @extschema@.subscription s ON s.account_id = c.account_id AND s.subscription_id = c.subscription_id
    WHERE c.occurred_at >= m.month::timestamptz - interval '3 hours'
      AND c.occurred_at < m.next_month::timestamptz + interval '3 hours'
      AND c.occurred_at::date >= m.month AND c.occurred_at::date < m.next_month
    GROUP BY 1, 2, 3) x;
COMMENT ON VIEW @extschema@.revenue_by_plan IS
    'revenue per local month (session TimeZone), currency, plan and kind: usage by the plan of the rate that priced it, fees by their subscription''s plan; plan_code NULL for charges of no plan (one-time charges, adjustments, discounts)';

CREATE VIEW @extschema@.revenue_by_zone AS
SELECT m.month, x.currency, x.service, x.zone, x.amount, x.quantity, x.charges
FROM @extschema@.analytics_months() m
CROSS JOIN LATERAL (
    SELECT c.currency, c.service, c.zone, sum(c.amount) AS amount, sum(c.quantity) AS quantity, count(*) AS charges
    FROM @extschema@.charge c
    WHERE c.kind = 'usage'
      AND c.occurred_at >= m.month::timestamptz - interval '3 hours'
      AND c.occurred_at < m.next_month::timestamptz + interval '3 hours'
      AND c.occurred_at::date >= m.month AND c.occurred_at::date < m.next_month
    GROUP BY 1, 2, 3) x;
COMMENT ON VIEW @extschema@.revenue_by_zone IS
    'usage revenue per local month (session TimeZone), currency, service and destination zone (NULL: no destination, or no zone matched)';

-------------------------------------------------------------------------------
-- MRR
-------------------------------------------------------------------------------
CREATE VIEW @extschema@.mrr AS
WITH s AS (
    -- a subscription ends at its end, or when its account (or the payer of
    -- an account billed to its parent) is closed, if earlier: its fee stops
    -- there (as the bill run prorates it), and a closing is churn
    SELECT x.account_id, x.subscription_id, x.started_at,
           least(x.ended_at, a.closed_at, py.closed_at) AS ended_at, x.replaces_id, p.currency,
           p.recurring_fee * x.quantity AS fee, p.fee_interval, n.replaces_id IS NOT NULL AS replaced
    FROM @extschema@.subscription x
    JOIN @extschema@.plan p ON p.code = x.plan_code
    JOIN @extschema@.account a ON a.account_id = x.account_id
    LEFT JOIN @extschema@.account py
           ON py.account_id = CASE WHEN a.bill_to_parent THEN @extschema@.payer_of(a.account_id) END
    LEFT JOIN (SELECT DISTINCT y.account_id, y.replaces_id FROM @extschema@.subscription y
               WHERE y.replaces_id IS NOT NULL) n
           ON n.account_id = x.account_id AND n.replaces_id = x.subscription_id
),
months AS (
    SELECT b.currency, g::date AS month, g::date::timestamptz AS ms, (g + interval '1 month')::date::timestamptz AS me
    FROM (SELECT s.currency,
                 min(s.started_at) FILTER (WHERE isfinite(s.started_at)) AS lo,
                 greatest(now(), max(s.started_at) FILTER (WHERE isfinite(s.started_at)),
                          max(s.ended_at) FILTER (WHERE isfinite(s.ended_at))) AS hi
          FROM s GROUP BY s.currency) b,
         generate_series(date_trunc('month', b.lo::date::timestamp), b.hi::date::timestamp, interval '1 month') g
)
SELECT m.month, m.currency,
       round(coalesce(sum(s.fee) FILTER (WHERE s.fee_interval = 'month' AND s.started_at < m.me
                                                AND coalesce(s.ended_at, 'infinity') >= m.me), 0)
             + coalesce(sum(s.fee) FILTER (WHERE s.fee_interval = 'year' AND s.started_at < m.me
                                                  AND coalesce(s.ended_at, 'infinity') >= m.me), 0) / 12,
             @extschema@.currency_exponent(m.currency)) AS mrr,
       count(s.subscription_id) FILTER (WHERE s.started_at < m.me AND coalesce(s.ended_at, 'infinity') >= m.me)
           AS subscriptions,
       count(s.subscription_id) FILTER (WHERE s.started_at >= m.ms AND s.started_at < m.me AND s.replaces_id IS NULL)
           AS new_subscriptions,
       count(s.subscription_id) FILTER (WHERE s.ended_at >= m.ms AND s.ended_at < m.me AND NOT s.replaced)
           AS churned_subscriptions
FROM months m
LEFT JOIN s ON s.currency = m.currency AND s.started_at < m.me AND coalesce(s.ended_at, 'infinity') >= m.ms
GROUP BY m.month, m.currency;
COMMENT ON VIEW @extschema@.mrr IS
    'monthly recurring revenue per local month (session TimeZone) and plan currency, from the subscriptions and the current plan fees (list prices: no discounts, taxes or proration). A subscription is active in a month when it is active at the month''s end: started before the month ends and not ended before it ends (ended_at >= end); a subscription of a closed account (or of a child whose payer is closed) ends at the closing, if earlier, as its fee does. mrr = sum of active subscriptions'' recurring_fee x quantity, year fees / 12, rounded once to the currency''s minor unit. new = subscriptions started in the month, churned = subscriptions ended in the month; a plan change (change_plan: one ends, its successor starts at the same instant) is neither. So subscriptions(month) = subscriptions(previous month) + new - churned. From the first subscription''s month to the later of now and the last start or end.';

-------------------------------------------------------------------------------
-- Unbilled charges
-------------------------------------------------------------------------------
CREATE VIEW @extschema@.unbilled AS
SELECT c.account_id, c.currency, sum(c.amount) AS amount, count(*) AS charges,
       min(c.period_start) AS first_period_start
FROM @extschema@.charge c
WHERE c.invoice_id IS NULL
GROUP BY c.account_id, c.currency;
COMMENT ON VIEW @extschema@.unbilled IS
    'charges not on an invoice yet, per account (the account charged; a sub-account billed to its parent is invoiced on the parent''s invoice) and currency: amount, how many, the earliest period they are billed in';

-------------------------------------------------------------------------------
-- Leakage: revenue-assurance checks.  One row per check and currency where
-- it found something; a check that found nothing is one row with items 0,
-- amount 0 (NULL for the checks of unpriced things) and currency NULL.
-------------------------------------------------------------------------------

-- A leakage threshold (convbill.leakage_* setting, minutes) as an interval.
-- Calling a C function first loads the module, so the setting is defined
-- (with its default) even in a session that has not used convbill's C code.
CREATE FUNCTION @extschema@.leakage_setting(p_name text)
RETURNS interval
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM @extschema@.realtime_rating_enabled();
    RETURN current_setting(p_name)::interval;
END $$;
COMMENT ON FUNCTION @extschema@.leakage_setting(text) IS
    'internal: a convbill.leakage_* setting (minutes) as an interval';

CREATE VIEW @extschema@.leakage AS
WITH RECURSIVE
settings AS (
    SELECT @extschema@.leakage_setting('convbill.leakage_pending_age') AS pending_age,
           @extschema@.leakage_setting('convbill.leakage_billing_grace') AS billing_grace
),
family(member, payer) AS (
    SELECT a.account_id, a.account_id FROM @extschema@.account a WHERE NOT a.bill_to_parent
    UNION ALL
    SELECT a.account_id, f.payer
    FROM @extschema@.account a JOIN family f ON a.parent_id = f.member
    WHERE a.bill_to_parent
),
-- charges on no invoice, per account and period (few rows, however many charges)
open_charges AS (
    SELECT g.account_id, g.currency, g.n, g.amount, g.period_end,
           EXISTS (SELECT 1 FROM @extschema@.invoice i
                   WHERE i.account_id = f.payer AND i.kind = 'invoice' AND i.period_start = g.period_start) AS invoiced
    FROM (SELECT c.account_id, c.currency, c.period_start, c.period_end, count(*) AS n, sum(c.amount) AS amount
          FROM @extschema@.charge c
          WHERE c.invoice_id IS NULL
          GROUP BY c.account_id, c.currency, c.period_start, c.period_end) g
    JOIN family f ON f.member = g.account_id
),
found(check_name, currency, items, amount, info) AS (
    SELECT 'pending_events', NULL::text, count(*), NULL::numeric, 'oldest received ' || min(e.received_at)
    FROM @extschema@.usage_event e, settings
    WHERE e.status = 'pending' AND e.received_at < now() - settings.pending_age
    HAVING count(*) > 0
    UNION ALL
    SELECT 'rejected_events', NULL, sum(r.n), NULL, string_agg(r.reason || ' ' || r.n, ', ' ORDER BY r.reason)
    FROM (SELECT coalesce(e.reject_reason, '(no reason)') AS reason, count(*) AS n
          FROM @extschema@.usage_event e WHERE e.status = 'rejected' GROUP BY 1) r
    HAVING sum(r.n) > 0
    UNION ALL
    SELECT 'expired_sessions', a.currency, count(*),
           sum(CASE WHEN r.status = 'expired'
                    THEN coalesce((SELECT -sum(l.held) FROM @extschema@.ledger l
                                   WHERE l.account_id = r.payer_id AND l.session_id = r.session_id
                                     AND l.kind = 'expiry' AND l.unit = a.currency), 0)
                    ELSE r.held_money END),
           NULL
    FROM @extschema@.reservation r
    JOIN @extschema@.account a ON a.account_id = r.payer_id
    WHERE r.granted > r.used AND (r.status = 'expired' OR (r.status = 'open' AND r.expires_at <= now()))
    GROUP BY a.currency
    UNION ALL
    SELECT 'unbilled_closed_periods', u.currency, sum(u.n), sum(u.amount), NULL
    FROM open_charges u WHERE u.invoiced
    GROUP BY u.currency
    UNION ALL
    SELECT 'unbilled_ended_periods', u.currency, sum(u.n), sum(u.amount), NULL
    FROM open_charges u, settings
    WHERE NOT u.invoiced AND u.period_end <= now() - settings.billing_grace
    GROUP BY u.currency
    UNION ALL
    SELECT 'invoice_total_mismatch', i.currency, count(*), sum(abs(i.total - coalesce(l.lines, 0))),
           'invoices ' || string_agg(i.invoice_id::text, ', ' ORDER BY i.invoice_id)
    FROM @extschema@.invoice i
    LEFT JOIN (SELECT l.account_id, l.invoice_id, sum(l.amount) AS lines
               FROM @extschema@.invoice_line l GROUP BY l.account_id, l.invoice_id) l
           ON l.account_id = i.account_id AND l.invoice_id = i.invoice_id
    WHERE i.total <> coalesce(l.lines, 0)
    GROUP BY i.currency
    UNION ALL
    SELECT 'invoice_charges_mismatch', coalesce(i.currency, b.currency), count(*),
           sum(abs(coalesce(i.charged, 0) - coalesce(b.amount, 0))),
           'invoices ' || string_agg(coalesce(i.invoice_id, b.invoice_id)::text, ', '
                                     ORDER BY coalesce(i.invoice_id, b.invoice_id))
    FROM (SELECT i.invoice_id, i.currency, i.charged FROM @extschema@.invoice i WHERE i.kind = 'invoice') i
    FULL JOIN (SELECT c.invoice_id, min(c.currency) AS currency, sum(c.amount) AS amount
               FROM @extschema@.charge c WHERE c.invoice_id IS NOT NULL GROUP BY c.invoice_id) b
           ON b.invoice_id = i.invoice_id
    WHERE coalesce(i.charged, 0) <> coalesce(b.amount, 0) OR i.invoice_id IS NULL
    GROUP BY coalesce(i.currency, b.currency)
    UNION ALL
    SELECT 'rated_without_charge', NULL, count(*), NULL, NULL
    FROM @extschema@.usage_event e
    WHERE e.status = 'rated'
      AND NOT EXISTS (SELECT 1 FROM @extschema@.charge c WHERE c.account_id = e.account_id AND c.charge_id = e.charge_id)
    HAVING count(*) > 0
    UNION ALL
    SELECT 'duplicate_usage', c.currency, count(*), sum(c.amount), NULL
    -- (no attributes, NULL or {}, are the same attributes)
    FROM (SELECT e.account_id, e.charge_id,
                 row_number() OVER (PARTITION BY e.account_id, e.service, e.started_at, e.quantity,
                                                 coalesce(e.attrs, '{}')
                                    ORDER BY e.received_at, e.charge_id) AS n
          FROM @extschema@.usage_event e
          JOIN (SELECT e.account_id, e.service, e.started_at, e.quantity, coalesce(e.attrs, '{}') AS attrs
                FROM @extschema@.usage_event e WHERE e.status = 'rated'
                GROUP BY 1, 2, 3, 4, 5 HAVING count(*) > 1) k
            ON k.account_id = e.account_id AND k.service = e.service AND k.started_at = e.started_at
           AND k.quantity = e.quantity AND k.attrs = coalesce(e.attrs, '{}')
          WHERE e.status = 'rated') x
    JOIN @extschema@.charge c ON c.account_id = x.account_id AND c.charge_id = x.charge_id
    WHERE x.n > 1
    GROUP BY c.currency
    UNION ALL
    SELECT 'sessions_without_charge', a.currency, count(*), sum(r.charged), NULL
    FROM @extschema@.reservation r
    JOIN @extschema@.account a ON a.account_id = r.account_id
    WHERE r.status IN ('committed', 'released', 'expired') AND r.used > 0
      AND NOT EXISTS (SELECT 1 FROM @extschema@.charge c WHERE c.account_id = r.account_id AND c.charge_id = r.charge_id)
    GROUP BY a.currency
    UNION ALL
    SELECT 'events_without_charge', a.currency, count(*), sum((e.answer).charged), NULL
    FROM @extschema@.event_answer e
    JOIN @extschema@.account a ON a.account_id = e.account_id
    WHERE (e.answer).result = 'granted'
      AND NOT EXISTS (SELECT 1 FROM @extschema@.charge c WHERE c.account_id = e.account_id AND c.charge_id = e.charge_id)
    GROUP BY a.currency
),
checks(ord, check_name, priced, detail) AS (
    SELECT k.ord, k.check_name, k.priced, k.detail
    FROM settings, LATERAL (VALUES
        (1, 'pending_events', false,
         format('usage events still pending %s minutes after they were received (convbill.leakage_pending_age); not priced yet',
                (extract(epoch FROM settings.pending_age) / 60)::bigint)),
        (2, 'rejected_events', false,
         'usage events rating rejected (fix the catalog or the account, then rerate()); not priced'),
        (3, 'expired_sessions', true,
         'sessions that lapsed without a final report while units were granted beyond those reported; amount = the money they held when they lapsed'),
        (4, 'unbilled_closed_periods', true,
         'charges on no invoice in a period that was already invoiced (closed) for their payer'),
        (5, 'unbilled_ended_periods', true,
         format('charges on no invoice in a period that ended more than %s minutes ago and has no invoice (convbill.leakage_billing_grace)',
                (extract(epoch FROM settings.billing_grace) / 60)::bigint)),
        (6, 'invoice_total_mismatch', true,
         'invoices whose lines do not sum to their total; amount = the differences'),
        (7, 'invoice_charges_mismatch', true,
         'invoices whose charged amount differs from the charges marked with them, or charges marked with an invoice that does not exist; amount = the differences'),
        (8, 'rated_without_charge', false,
         'usage events marked rated whose charge does not exist'),
        (9, 'duplicate_usage', true,
         'usage events rated more than once under different ids (same account, service, start, quantity and attributes); amount = the charges of all but the first'),
        (10, 'sessions_without_charge', true,
         'finished sessions that reported usage but have no charge (never invoiced); amount = the money they debited'),
        (11, 'events_without_charge', true,
         'one-shot events answered granted that have no charge (never invoiced); amount = what the answers charged')
    ) AS k(ord, check_name, priced, detail)
)
SELECT k.check_name, coalesce(f.items, 0)::bigint AS items,
       CASE WHEN k.priced THEN coalesce(f.amount, 0) END AS amount,
       k.detail || coalesce('; ' || f.info, '') AS detail,
       f.currency
FROM checks k
LEFT JOIN found f ON f.check_name = k.check_name
ORDER BY k.ord, f.currency;
COMMENT ON VIEW @extschema@.leakage IS
    'revenue-assurance checks: one row per check and currency with what it found (items, amount), or one row with items 0 when it found nothing; amount is NULL for checks of unpriced things (pending and rejected events)';
