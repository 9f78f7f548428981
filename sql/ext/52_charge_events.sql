-------------------------------------------------------------------------------
-- charge_events: many one-shot events in one call and one transaction, each
-- with charge_event()'s semantics and idempotency (a mediation platform's
-- batch of SMS, API calls or IoT messages).
--
-- Set-based, in a handful of statements whatever the batch size:
--   1. the events with their accounts and payers; the first event that
--      charge_event() would refuse with an ERROR (NULL key, bad units, unknown
--      account, unknown service of a new event) fails the whole call;
--   2. the accounts and payers are locked once, in account order;
--   3. duplicates: an event answered before (event_answer), or repeated in
--      the batch, gets that first answer and changes nothing;
--   4. every new event's refusal, zone, rate (as resolve_rate()) and open
--      period (as open_period()); plan allowances of those periods;
--   5. the decision, in array order, by the C aggregate charge_batch()
--      (src/charge_batch.c): allowance first, then money, all or nothing,
--      each event against what the events before it left of its account's
--      allowance, its payer's money and its cycle total;
--   6. one allowance debit, one INSERT of the charges (the charge_debit
--      trigger debits each payer once and sends the low-balance NOTIFY, with
--      the money left after the batch), the cycle counters and the answers.
-- The result is what charge_event() called for each element in turn would
-- give (test/pgtap/charge_events.sql checks it), except that the ledger has
-- one debit entry per bucket and batch instead of one per event.
-------------------------------------------------------------------------------

CREATE TYPE @extschema@.event_request AS (
    account_id bigint,
    service    text,
    event_id   text,
    units      numeric,
    attrs      jsonb
);
COMMENT ON TYPE @extschema@.event_request IS 'one event for charge_events()';

-- The decision of one event (see src/charge_batch.c).
CREATE TYPE @extschema@.charge_decision AS (
    granted boolean,
    billed  numeric,
    covered numeric,
    amount  numeric
);
COMMENT ON TYPE @extschema@.charge_decision IS 'internal: charge_batch()''s decision on one event';

CREATE FUNCTION @extschema@.charge_batch_step(internal, @extschema@.tariff, timestamptz, text, numeric,
                                              integer, numeric, integer, numeric, integer, numeric)
    RETURNS internal
    AS 'MODULE_PATHNAME', 'charge_batch_step' LANGUAGE C STABLE PARALLEL UNSAFE;
CREATE FUNCTION @extschema@.charge_batch_final(internal)
    RETURNS @extschema@.charge_decision
    AS 'MODULE_PATHNAME', 'charge_batch_final' LANGUAGE C STABLE PARALLEL UNSAFE;
-- charge_batch(tariff, at, tz, units, allowance key, allowance available,
--              cycle key (NULL: not cycle-scoped), cycle used, payer key, money available)
-- as a window function ordered by the events' order: each event's decision.
CREATE AGGREGATE @extschema@.charge_batch(@extschema@.tariff, timestamptz, text, numeric,
                                          integer, numeric, integer, numeric, integer, numeric) (
    SFUNC = @extschema@.charge_batch_step,
    STYPE = internal,
    FINALFUNC = @extschema@.charge_batch_final,
    FINALFUNC_MODIFY = READ_ONLY
);
COMMENT ON AGGREGATE @extschema@.charge_batch(@extschema@.tariff, timestamptz, text, numeric, integer, numeric,
                                              integer, numeric, integer, numeric) IS
    'internal: over events in order (a window function), each one''s all-or-nothing decision against the allowance, cycle total and money the events before it left (C)';

-- One event on its way through charge_events().
CREATE TYPE @extschema@.charge_events_work AS (
    ord          integer,       -- position in the array (1-based)
    account_id   bigint,
    payer_id     bigint,        -- NULL: no such account
    service      text,
    event_id     text,
    units        numeric,
    attrs        jsonb,
    problem      text,          -- why charge_event() would raise an ERROR
    is_first     boolean,       -- first of its (account_id, event_id) in the batch
    is_new       boolean,       -- first, and not answered before
    service_ok   boolean,
    answer       @extschema@.grant, -- new events: the answer; first ones: the stored answer
    reason       text,          -- a refusal found before pricing
    zone         text,
    rate_id      bigint,
    currency     text,
    timezone     text,
    period_start timestamptz,
    period_end   timestamptz,
    cycle        boolean,
    granted      boolean,
    billed       numeric,
    covered      numeric,
    amount       numeric,
    charge_id    bigint,
    credit_limit numeric        -- the payer's
);
COMMENT ON TYPE @extschema@.charge_events_work IS 'internal: an event being charged by charge_events()';

-- plan_cache_mode = force_generic_plan: the statements are the same for every
-- batch and their plans (index probes per event, no join between two arrays)
-- do not depend on its size; custom plans would be made per call.
CREATE FUNCTION @extschema@.charge_events(events @extschema@.event_request[])
RETURNS TABLE (account_id bigint, event_id text, result text, reason text, granted numeric, held numeric,
               charged numeric, expires_at timestamptz)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    p_events ALIAS FOR $1;
    w @extschema@.charge_events_work[];
    bad @extschema@.charge_events_work;
    first_bad @extschema@.charge_events_work;
    lim integer;
    debit record;
BEGIN
    IF coalesce(cardinality(p_events), 0) = 0 THEN
        RETURN;
    END IF;

    -- 1. the events, their accounts and payers, and what charge_event() would
    -- refuse with an ERROR before it looks at the account's data
    SELECT array_agg(ROW(e.ord, e.account_id,
                         CASE WHEN a.bill_to_parent THEN @extschema@.payer_of(a.account_id) ELSE a.account_id END,
                         e.service, e.event_id, e.units, coalesce(e.attrs, '{}'),
                         CASE WHEN e.account_id IS NULL OR e.service IS NULL OR e.event_id IS NULL THEN 'null'
                              WHEN length(e.event_id) NOT BETWEEN 1 AND 255 THEN 'event_id'
                              WHEN e.units IS NULL OR e.units < 0 OR e.units = 'NaN' OR e.units = 'Infinity'
                                   OR e.units >= 1e20 OR e.units <> round(e.units, 9) THEN 'units'
                              WHEN a.account_id IS NULL
                                   OR (a.bill_to_parent AND @extschema@.payer_of(a.account_id) IS NULL) THEN 'account'
                         END,
                         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                         NULL, NULL, NULL, NULL, NULL, NULL)::@extschema@.charge_events_work ORDER BY e.ord)
    INTO w
    FROM unnest(p_events) WITH ORDINALITY AS e(account_id, service, event_id, units, attrs, ord)
    LEFT JOIN @extschema@.account a ON a.account_id = e.account_id;

    SELECT x.* INTO first_bad FROM unnest(w) x WHERE x.problem IS NOT NULL ORDER BY x.ord LIMIT 1;
    lim := coalesce(first_bad.ord, 2147483647);

    -- 2. lock the accounts and payers of the events up to the first bad one
    PERFORM 1 FROM @extschema@.account a
    WHERE a.account_id IN (SELECT x.account_id FROM unnest(w) x WHERE x.ord < lim
                           UNION SELECT x.payer_id FROM unnest(w) x WHERE x.ord < lim)
    ORDER BY a.account_id FOR NO KEY UPDATE OF a;

    -- 3 and 4. duplicates and stored answers; for new events the refusal, the
    -- zone, the rate and the period
    SELECT array_agg(ROW(x.ord, x.account_id, x.payer_id, x.service, x.event_id, x.units, NULL, NULL,
                         x.is_first, x.is_new, x.service_ok, x.stored, x.reason, x.zone,
                         x.rate_id, x.currency, x.timezone, lower(x.period), upper(x.period),
                         @extschema@.tariff_scope(x.tariff) = 'cycle',
                         NULL, NULL, NULL, NULL, NULL, x.credit_limit)::@extschema@.charge_events_work ORDER BY x.ord)
    INTO w
    FROM (
        SELECT y.*, rt.rate_id, rt.tariff,
               coalesce(y.refusal,
                        CASE WHEN NOT y.is_new OR NOT y.service_ok THEN NULL
                             WHEN rt.rate_id IS NULL THEN 'no_tariff'
                             WHEN rt.plan_currency IS DISTINCT FROM y.currency THEN 'currency_mismatch' END) AS reason,
               -- as open_period(): the period containing now, or the next open one
               CASE WHEN rt.rate_id IS NULL OR y.refusal IS NOT NULL OR NOT y.is_new THEN NULL
                    WHEN EXISTS (SELECT 1 FROM @extschema@.closed_period c
                                 WHERE c.account_id = y.account_id
                                   AND c.period_start < @extschema@.billing_period_end(now(), y.timezone, y.billing_day)
                                   AND c.period_end > @extschema@.billing_period_start(now(), y.timezone, y.billing_day))
                         THEN @extschema@.open_period(y.account_id, now())
                    ELSE tstzrange(@extschema@.billing_period_start(now(), y.timezone, y.billing_day),
                                   @extschema@.billing_period_end(now(), y.timezone, y.billing_day), '[)') END AS period
        FROM (
            SELECT d.*, st.answer AS stored, d.is_first AND st.answer IS NULL AS is_new,
                   s.code IS NOT NULL AS service_ok,
                   a.currency, a.timezone, a.billing_day, d.payer_credit_limit AS credit_limit,
                   CASE WHEN d.is_first AND st.answer IS NULL AND s.code IS NOT NULL
                        THEN @extschema@.account_refusal(@extschema@.account_status_at(a.status, a.closed_at, now()),
                                                         d.payer_status) END AS refusal,
                   @extschema@.event_zone(d.attrs) AS zone
            FROM (SELECT x.ord, x.account_id, x.payer_id, x.service, x.event_id, x.units, x.attrs,
                         x.ord = min(x.ord) OVER (PARTITION BY x.account_id, x.event_id) AS is_first
                  FROM unnest(w) x WHERE x.ord < lim) d0
            JOIN @extschema@.account a ON a.account_id = d0.account_id
            -- the payer: the account itself, or (billed to its parent) another row
            CROSS JOIN LATERAL (
                SELECT d0.*,
                       CASE WHEN d0.payer_id = d0.account_id THEN @extschema@.account_status_at(a.status, a.closed_at, now())
                            ELSE (SELECT @extschema@.account_status_at(p.status, p.closed_at, now())
                                  FROM @extschema@.account p WHERE p.account_id = d0.payer_id) END
                           AS payer_status,
                       CASE WHEN d0.payer_id = d0.account_id THEN a.credit_limit
                            ELSE (SELECT p.credit_limit FROM @extschema@.account p WHERE p.account_id = d0.payer_id) END
                           AS payer_credit_limit) d
            LEFT JOIN @extschema@.service s ON s.code = d.service
            LEFT JOIN LATERAL (SELECT e.answer FROM @extschema@.event_answer e
                               WHERE e.account_id = d.account_id AND e.event_id = d.event_id AND d.is_first) st
                   ON true
            OFFSET 0
        ) y
        -- as resolve_rate(): the most specific zone, the latest valid_from, the newest subscription
        LEFT JOIN LATERAL (
            SELECT r.rate_id, r.tariff, pl.currency AS plan_currency
            FROM @extschema@.subscription s
            JOIN @extschema@.plan pl ON pl.code = s.plan_code
            JOIN @extschema@.plan_rate r ON r.plan_code = s.plan_code AND r.service = y.service
                                        AND (r.zone IS NULL OR r.zone = y.zone)
            WHERE y.is_new AND y.service_ok AND y.refusal IS NULL
              AND s.account_id = y.account_id
              AND s.started_at <= now() AND coalesce(s.ended_at, 'infinity') > now()
              AND r.valid_from <= now() AND r.valid_until > now()
            ORDER BY r.zone IS NOT NULL DESC, r.valid_from DESC, s.started_at DESC, r.rate_id
            LIMIT 1) rt ON true
        OFFSET 0                        -- each event's period and zone computed once
    ) x;

    -- an unknown service of a new event before the first bad event comes first
    SELECT x.* INTO bad FROM unnest(w) x WHERE x.is_new AND NOT x.service_ok ORDER BY x.ord LIMIT 1;
    IF bad.ord IS NOT NULL THEN
        RAISE EXCEPTION 'charge_events: event %: unknown service "%"', bad.ord, bad.service USING ERRCODE = '23503';
    END IF;
    IF first_bad.problem = 'null' THEN
        RAISE EXCEPTION 'charge_events: event %: account_id, service and event_id must not be NULL', lim
            USING ERRCODE = '22004';
    ELSIF first_bad.problem = 'event_id' THEN
        RAISE EXCEPTION 'charge_events: event %: event_id must have 1 to 255 characters', lim
            USING ERRCODE = '22023';
    ELSIF first_bad.problem = 'units' THEN
        PERFORM @extschema@.check_units(format('charge_events: event %s: units', lim), first_bad.units);
    ELSIF first_bad.problem = 'account' THEN
        RAISE EXCEPTION 'charge_events: event %: account % does not exist', lim, first_bad.account_id
            USING ERRCODE = '23503';
    END IF;

    -- plan allowances of the periods charged in (as charge_event() grants them)
    PERFORM @extschema@.ensure_plan_allowances(array_agg(k.account_id), array_agg(k.period_start))
    FROM (SELECT DISTINCT x.account_id, x.period_start FROM unnest(w) x
          WHERE x.is_new AND x.reason IS NULL) k
    HAVING count(*) > 0;

    -- 5. the decisions, in array order; each key's starting value is read by
    -- its first event: allowance_available(account, service), the cycle
    -- total, money_available(payer)
    SELECT array_agg(ROW(x.ord, x.account_id, x.payer_id, x.service, x.event_id, x.units, x.attrs, NULL,
                         x.is_first, x.is_new, x.service_ok,
                         CASE WHEN NOT x.is_new THEN x.answer
                              WHEN x.granted THEN ROW('granted', NULL, x.units, 0, x.amount, NULL)::@extschema@.grant
                              ELSE ROW('denied', coalesce(x.reason, 'insufficient_funds'), 0, 0, 0, NULL)::@extschema@.grant
                         END,
                         coalesce(x.reason, CASE WHEN x.is_new AND NOT x.granted THEN 'insufficient_funds' END),
                         x.zone, x.rate_id, x.currency, x.timezone, x.period_start, x.period_end, x.cycle,
                         x.granted, x.billed, x.covered, x.amount,
                         CASE WHEN x.granted THEN nextval('@extschema@.charge_charge_id_seq') END,
                         x.credit_limit)::@extschema@.charge_events_work ORDER BY x.ord)
    INTO w
    FROM (
        SELECT z.ord, z.account_id, z.payer_id, z.service, z.event_id, z.units, z.attrs, z.is_first, z.is_new,
               z.service_ok, z.answer, z.reason, z.zone, z.rate_id, z.currency, z.timezone, z.period_start,
               z.period_end, z.cycle, (z.d).granted, (z.d).billed, (z.d).covered, (z.d).amount, z.credit_limit
        FROM (
            SELECT k.*,
                   @extschema@.charge_batch(t.tariff, now(), k.timezone, k.units,
                                            k.ak, CASE WHEN k.ak_first THEN
                                                bk.allowance
                                                - (SELECT coalesce(sum(r.held_units), 0) FROM @extschema@.reservation r
                                                   WHERE r.account_id = k.account_id AND r.service = k.service
                                                     AND r.status = 'open' AND r.expires_at > now())
                                                ELSE 0 END,
                                            CASE WHEN k.cycle THEN k.ck END,
                                            CASE WHEN k.cycle AND k.ck_first THEN
                                                @extschema@.cycle_used(k.account_id, k.period_start, k.rate_id)
                                                ELSE 0 END,
                                            k.pk, CASE WHEN k.pk_first THEN
                                                CASE WHEN k.payer_id = k.account_id THEN bk.money
                                                     ELSE (SELECT coalesce(sum(b.balance), 0) FROM @extschema@.bucket b
                                                           WHERE b.account_id = k.payer_id AND b.kind = 'money'
                                                             AND b.valid_from <= now() AND b.valid_until > now()) END
                                                + k.credit_limit
                                                - (SELECT coalesce(sum(r.held_money), 0) FROM @extschema@.reservation r
                                                   WHERE r.payer_id = k.payer_id AND r.status = 'open'
                                                     AND r.expires_at > now())
                                                ELSE 0 END)
                       OVER (ORDER BY k.ord ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS d
            FROM (
                SELECT x.*,
                       dense_rank() OVER (ORDER BY x.account_id, x.service)::integer AS ak,
                       row_number() OVER (PARTITION BY x.account_id, x.service ORDER BY x.ord) = 1 AS ak_first,
                       dense_rank() OVER (ORDER BY x.account_id, x.period_start, x.rate_id)::integer AS ck,
                       row_number() OVER (PARTITION BY x.account_id, x.period_start, x.rate_id ORDER BY x.ord) = 1 AS ck_first,
                       dense_rank() OVER (ORDER BY x.payer_id)::integer AS pk,
                       row_number() OVER (PARTITION BY x.payer_id ORDER BY x.ord) = 1 AS pk_first
                FROM unnest(w) x
                WHERE x.is_new AND x.reason IS NULL
            ) k
            JOIN @extschema@.plan_rate t ON t.rate_id = k.rate_id
            -- the account's valid buckets, read once for its allowance and (when it
            -- pays for itself) its money
            LEFT JOIN LATERAL (
                SELECT coalesce(sum(b.balance) FILTER (WHERE b.kind = 'allowance' AND b.unit = k.service), 0) AS allowance,
                       coalesce(sum(b.balance) FILTER (WHERE b.kind = 'money'), 0) AS money
                FROM @extschema@.bucket b
                WHERE (k.ak_first OR (k.pk_first AND k.payer_id = k.account_id))
                  AND b.account_id = k.account_id AND b.valid_from <= now() AND b.valid_until > now()) bk ON true
        ) z
        UNION ALL
        SELECT x.ord, x.account_id, x.payer_id, x.service, x.event_id, x.units, x.attrs, x.is_first, x.is_new,
               x.service_ok, x.answer, x.reason, x.zone, x.rate_id, x.currency, x.timezone, x.period_start,
               x.period_end, x.cycle, false, NULL, NULL, NULL, x.credit_limit
        FROM unnest(w) x
        WHERE NOT (x.is_new AND x.reason IS NULL)
    ) x;

    -- 6. allowances, then the charges (their trigger debits the money, once
    -- per payer), the cycle counters and the answers
    SELECT array_agg(q.account_id ORDER BY q.account_id, q.service) AS accounts,
           array_agg(q.service ORDER BY q.account_id, q.service) AS services,
           array_agg(q.covered ORDER BY q.account_id, q.service) AS amounts
    INTO debit
    FROM (SELECT x.account_id, x.service, sum(x.covered) AS covered
          FROM unnest(w) x WHERE x.granted AND x.covered > 0
          GROUP BY x.account_id, x.service) q;
    IF debit.accounts IS NOT NULL THEN
        PERFORM @extschema@.debit_buckets('allowance', debit.accounts, debit.services, debit.amounts,
                                          array_fill(NULL::bigint, ARRAY[cardinality(debit.accounts)]),
                                          array_fill(NULL::integer, ARRAY[cardinality(debit.accounts)]),
                                          NULL, now());
    END IF;

    WITH ev AS MATERIALIZED (
        SELECT x.* FROM unnest(w) x WHERE x.is_new
    ),
    charges AS (
        INSERT INTO @extschema@.charge
            (account_id, charge_id, kind, service, zone, quantity, billed_quantity, covered_quantity, amount,
             currency, occurred_at, period_start, period_end, source, external_id, rate_id)
        SELECT ev.account_id, ev.charge_id, 'usage', ev.service, ev.zone, ev.units, ev.billed, ev.covered,
               ev.amount, ev.currency, now(), ev.period_start, ev.period_end, 'event', ev.event_id, ev.rate_id
        FROM ev WHERE ev.granted
        ORDER BY ev.ord
    ),
    counters AS (
        INSERT INTO @extschema@.usage_counter AS uc (account_id, period_start, counter, used)
        SELECT ev.account_id, ev.period_start, 'rate:' || ev.rate_id, sum(ev.billed - ev.covered)
        FROM ev WHERE ev.granted AND ev.cycle AND ev.billed - ev.covered > 0
        GROUP BY ev.account_id, ev.period_start, ev.rate_id
        ON CONFLICT (account_id, period_start, counter) DO UPDATE SET used = uc.used + excluded.used
    )
    INSERT INTO @extschema@.event_answer (account_id, event_id, answer, charge_id)
    SELECT ev.account_id, ev.event_id, ev.answer, ev.charge_id FROM ev ORDER BY ev.ord;

    -- one answer per element, in order: a repeated event gets its first answer
    RETURN QUERY
    SELECT x.account_id, x.event_id, (x.a).result, (x.a).reason, (x.a).granted, (x.a).held, (x.a).charged,
           (x.a).expires_at
    FROM (SELECT x.ord, x.account_id, x.event_id,
                 first_value(x.answer) OVER (PARTITION BY x.account_id, x.event_id ORDER BY x.ord) AS a
          FROM unnest(w) x) x
    ORDER BY x.ord;
END $$;
COMMENT ON FUNCTION @extschema@.charge_events(@extschema@.event_request[]) IS
    'charge_event for each element of an array, in one call and one transaction: the same answers, charges and balances as calling it for each element in turn (a repeated event gets its first answer); one answer per element, in order';
