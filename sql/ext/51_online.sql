-------------------------------------------------------------------------------
-- Online charging (RFC 8506 credit-control semantics).
--
--   reserve         CCR-INITIAL (request 0): hold allowance units, then money,
--                   for as many whole increments as the payer can afford
--   reserve_update  CCR-UPDATE: debit what was used since the last report,
--                   hold `units` more
--   commit          CCR-TERMINATION: debit the last units, release the rest,
--                   record the session as one rated charge
--   release         end a session without charging its open hold
--   charge_event    one-shot direct debit, idempotent on (account_id, event_id)
--   charge_events   the same for an array of events, in one call
--   expire_reservations  end the sessions whose grant lapsed
--
-- Every request locks the using and the paying account (FOR NO KEY UPDATE, in
-- account order), so the availability it reads cannot change under it.  The
-- decision itself is C: session_cost() and grant_quantity() (src/reservation.c).
-- Requests run with plan_cache_mode = force_generic_plan: their statements
-- are the same on every call, and the custom plans the planner otherwise
-- makes per call (array arguments look expensive to a generic plan) cost
-- more than the rest of a request.
-- Business outcomes are result codes in the answer; programming errors (NULL
-- or negative units, unknown session or account) raise an ERROR.
-------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.session_cost(t @extschema@.tariff, at timestamptz, tz text, used_before numeric,
                                         covered numeric, allowance numeric, used numeric,
                                         OUT billed numeric, OUT covered numeric, OUT amount numeric)
    AS 'MODULE_PATHNAME', 'session_cost' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.session_cost(@extschema@.tariff, timestamptz, text, numeric, numeric, numeric, numeric) IS
    'what a session of `used` units costs: billed quantity, units covered by allowances (covered so far + `allowance`, which the caller bounds to the billed units of this report), money (C)';

CREATE FUNCTION @extschema@.grant_quantity(t @extschema@.tariff, at timestamptz, tz text, used_before numeric,
                                           covered numeric, allowance numeric, used numeric, charged numeric,
                                           units numeric, money numeric,
                                           OUT granted numeric, OUT covered numeric, OUT amount numeric)
    AS 'MODULE_PATHNAME', 'grant_quantity' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.grant_quantity(@extschema@.tariff, timestamptz, text, numeric, numeric, numeric, numeric, numeric, numeric, numeric) IS
    'the largest quantity up to `units` (all, or whole increments) a session can add with `money` left; with the session''s covered units (the allowance covering only units beyond `used`) and money at used + granted (C)';

-- The rate that prices an account's usage of a service in a zone at a time:
-- the most specific zone, then the latest valid_from, then the newest subscription.
CREATE FUNCTION @extschema@.resolve_rate(account_id bigint, service text, zone text, at timestamptz,
                                         OUT rate_id bigint, OUT tariff @extschema@.tariff, OUT plan_currency text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_account_id ALIAS FOR $1;
    p_service ALIAS FOR $2;
    p_zone ALIAS FOR $3;
    p_at ALIAS FOR $4;
BEGIN
    SELECT r.rate_id, r.tariff, p.currency INTO rate_id, tariff, plan_currency
    FROM @extschema@.subscription s
    JOIN @extschema@.plan p ON p.code OPERATOR(pg_catalog.=) s.plan_code
    JOIN @extschema@.plan_rate r ON r.plan_code OPERATOR(pg_catalog.=) s.plan_code
                                AND r.service OPERATOR(pg_catalog.=) p_service
                                AND (r.zone IS NULL OR r.zone OPERATOR(pg_catalog.=) p_zone)
    WHERE s.account_id OPERATOR(pg_catalog.=) p_account_id
      AND s.started_at OPERATOR(pg_catalog.<=) p_at
      AND coalesce(s.ended_at, 'infinity') OPERATOR(pg_catalog.>) p_at
      AND r.valid_from OPERATOR(pg_catalog.<=) p_at AND r.valid_until OPERATOR(pg_catalog.>) p_at
    ORDER BY r.zone IS NOT NULL DESC, r.valid_from DESC, s.started_at DESC, r.rate_id
    LIMIT 1;
END $$;
COMMENT ON FUNCTION @extschema@.resolve_rate(bigint, text, text, timestamptz) IS
    'the plan_rate pricing an account''s use of a service in a zone at a time (as rating resolves it)';

-- Lock the using and the paying account, in account order.
CREATE FUNCTION @extschema@.lock_accounts(p_account_id bigint, p_payer_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM 1 FROM @extschema@.account a
    WHERE a.account_id OPERATOR(pg_catalog.=) p_account_id OR a.account_id OPERATOR(pg_catalog.=) p_payer_id
    ORDER BY a.account_id FOR NO KEY UPDATE OF a;
END $$;
COMMENT ON FUNCTION @extschema@.lock_accounts(bigint, bigint) IS
    'internal: lock an account and its payer (FOR NO KEY UPDATE, in account order)';

-- The running total of a cycle-scoped rate in an account's period (billed
-- units it priced), and adding to it: the counters bulk rating keeps too.
CREATE FUNCTION @extschema@.cycle_used(p_account_id bigint, p_period_start timestamptz, p_rate_id bigint)
RETURNS numeric
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN coalesce((SELECT u.used FROM @extschema@.usage_counter u
                     WHERE u.account_id = p_account_id AND u.period_start = p_period_start
                       AND u.counter = 'rate:' || p_rate_id), 0);
END $$;
COMMENT ON FUNCTION @extschema@.cycle_used(bigint, timestamptz, bigint) IS
    'internal: billed units a cycle-scoped rate priced for an account in a period so far';

CREATE FUNCTION @extschema@.add_cycle_used(p_account_id bigint, p_period_start timestamptz, p_rate_id bigint,
                                           p_units numeric)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_units > 0 THEN
        INSERT INTO @extschema@.usage_counter AS uc (account_id, period_start, counter, used)
        VALUES (p_account_id, p_period_start, 'rate:' || p_rate_id, p_units)
        ON CONFLICT (account_id, period_start, counter) DO UPDATE SET used = uc.used + excluded.used;
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@.add_cycle_used(bigint, timestamptz, bigint, numeric) IS
    'internal: add billed units to a cycle-scoped rate''s running total of an account''s period';

CREATE FUNCTION @extschema@.check_units(p_what text, p_units numeric)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_units IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', p_what USING ERRCODE = '22004';
    END IF;
    IF p_units < 0 OR p_units = 'NaN' OR p_units = 'Infinity' OR p_units >= 1e20 OR p_units <> round(p_units, 9) THEN
        RAISE EXCEPTION '% must be a number from 0 up to 1e20 with at most 9 decimals, not %', p_what, p_units
            USING ERRCODE = '22023';
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@.check_units(text, numeric) IS 'internal: units a request may carry (p_what names the argument: ''reserve: units'')';

-- Why an account may not be served now, or NULL, from the statuses of the
-- using and the paying account (SQL: inlined where it is used).
CREATE FUNCTION @extschema@.account_refusal(p_status text, p_payer_status text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_status OPERATOR(pg_catalog.=) 'closed' OR p_payer_status OPERATOR(pg_catalog.=) 'closed'
                THEN 'account_closed'
                WHEN p_status OPERATOR(pg_catalog.=) 'suspended' OR p_payer_status OPERATOR(pg_catalog.=) 'suspended'
                THEN 'account_suspended' END
$$;
COMMENT ON FUNCTION @extschema@.account_refusal(text, text) IS
    'internal: account_closed or account_suspended when the using or the paying account is, else NULL';

-- The using account of a request and the account that pays for it (itself,
-- usually), both locked: one statement for an account paying for itself; an
-- account billed to its parent locks both in account order (as rating does).
CREATE FUNCTION @extschema@.request_accounts(p_account_id bigint,
                                             OUT a @extschema@.account, OUT p @extschema@.account)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    payer bigint;
BEGIN
    SELECT * INTO a FROM @extschema@.account x
    WHERE x.account_id = p_account_id AND NOT x.bill_to_parent
    FOR NO KEY UPDATE;
    IF FOUND THEN
        p := a;
        RETURN;
    END IF;
    payer := @extschema@.payer_of(p_account_id);
    IF payer IS NULL THEN
        RAISE EXCEPTION 'account % does not exist', p_account_id USING ERRCODE = '23503';
    END IF;
    PERFORM @extschema@.lock_accounts(p_account_id, payer);
    SELECT * INTO a FROM @extschema@.account x WHERE x.account_id = p_account_id;
    SELECT * INTO p FROM @extschema@.account x WHERE x.account_id = payer;
END $$;
COMMENT ON FUNCTION @extschema@.request_accounts(bigint) IS
    'internal: lock a request''s account and its payer (in account order) and return both rows';

-- The open period a request at p_at charges (as open_period(): the period
-- containing it, or the next open one), its plan allowances granted when the
-- first request or rating of the period needs them.  Two index probes in the
-- usual case: no closed period, the allowances granted already.
CREATE FUNCTION @extschema@.request_period(p_account_id bigint, p_timezone text, p_billing_day integer,
                                           p_at timestamptz, OUT ps timestamptz, OUT pe timestamptz)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    per tstzrange;
BEGIN
    ps := @extschema@.billing_period_start(p_at, p_timezone, p_billing_day);
    pe := @extschema@.billing_period_end(p_at, p_timezone, p_billing_day);
    IF EXISTS (SELECT 1 FROM @extschema@.closed_period c
               WHERE c.account_id = p_account_id AND c.period_start < pe AND c.period_end > ps) THEN
        per := @extschema@.open_period(p_account_id, p_at);
        ps := lower(per);
        pe := upper(per);
    END IF;
    -- a (subscription, service) of the period with units but no bucket yet
    -- (one that prorates to nothing never gets one: ensure_plan_allowances
    -- then finds nothing to do)
    IF EXISTS (SELECT 1 FROM @extschema@.subscription s
               JOIN @extschema@.plan pl ON pl.code = s.plan_code AND pl.allowances <> '{}'
               CROSS JOIN LATERAL jsonb_each_text(pl.allowances) k(unit, units)
               WHERE s.account_id = p_account_id AND s.started_at < pe
                 AND coalesce(s.ended_at, 'infinity') > ps AND k.units::numeric > 0
                 AND NOT EXISTS (SELECT 1 FROM @extschema@.bucket b
                                 WHERE b.account_id = p_account_id AND b.origin = 'plan'
                                   AND b.period_start = ps AND b.subscription_id = s.subscription_id
                                   AND b.unit = k.unit)) THEN
        PERFORM @extschema@.ensure_plan_allowances(ARRAY[p_account_id], ARRAY[ps]);
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@.request_period(bigint, text, integer, timestamptz) IS
    'internal: the open period a request at p_at charges, with its plan allowances granted; the caller locks the account';

-------------------------------------------------------------------------------
-- reserve (CCR-INITIAL)
--
-- The request path is kept to a few index probes and inserts (each statement
-- costs its executor start more than its work): the account locked and read
-- in one statement, one probe for a retransmission, the rate, the period,
-- one statement for what the payer can spend, then the session, its holds
-- and its answer.  Rare cases (a sub-account billed to its parent, a closed
-- period, plan allowances not granted yet) take the general helpers.
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.reserve(account_id bigint, service text, session_id text, units numeric,
                                    attrs jsonb DEFAULT '{}', validity interval DEFAULT '5 minutes')
RETURNS @extschema@.grant
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    p_account_id ALIAS FOR $1;
    p_service ALIAS FOR $2;
    p_session_id ALIAS FOR $3;
    p_units ALIAS FOR $4;
    p_attrs ALIAS FOR $5;
    p_validity ALIAS FOR $6;
    a @extschema@.account;              -- the using account
    accs record;
    p @extschema@.account;              -- the paying account (a itself, usually)
    ans @extschema@.grant;
    other bigint;
    reason text;
    dest_zone text;
    rt record;
    ps timestamptz;
    pe timestamptz;
    ub numeric := 0;
    money numeric;
    allowance numeric;
    g record;
    granted numeric := 0;
    hold_u numeric := 0;
    hold_m numeric := 0;
    res text;
    t0 timestamptz := now();
    exp timestamptz := now() + p_validity;
BEGIN
    IF p_account_id IS NULL OR p_service IS NULL OR p_session_id IS NULL OR p_validity IS NULL THEN
        RAISE EXCEPTION 'reserve: account_id, service, session_id and validity must not be NULL' USING ERRCODE = '22004';
    END IF;
    PERFORM @extschema@.check_units('reserve: units', p_units);
    IF p_validity <= interval '0' THEN
        RAISE EXCEPTION 'reserve: validity must be positive, not %', p_validity USING ERRCODE = '22023';
    END IF;
    IF length(p_session_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'reserve: session_id must have 1 to 255 characters' USING ERRCODE = '22023';
    END IF;

    -- one reserve() of a session id at a time, whichever account it names:
    -- the keys of reservation include account_id (sharding), so nothing else
    -- stops two concurrent first requests of one id for two accounts from
    -- both opening a session (whose later requests would then all go to one
    -- of them).  Taken before the accounts, by every reserve() alike.
    PERFORM pg_advisory_xact_lock(hashtextextended('convbill.session ' || p_session_id, 0));

    -- the account and its payer, locked
    accs := @extschema@.request_accounts(p_account_id);
    a := accs.a;
    p := accs.p;

    -- a retransmission: the first answer, nothing changed
    SELECT r.account_id INTO other FROM @extschema@.reservation r WHERE r.session_id = p_session_id
    ORDER BY r.account_id = p_account_id DESC LIMIT 1;
    IF FOUND THEN
        IF other <> p_account_id THEN
            RAISE EXCEPTION 'session "%" already exists for another account', p_session_id USING ERRCODE = '23505';
        END IF;
        SELECT (r.answer).* INTO ans FROM @extschema@.reservation_answer r
        WHERE r.account_id = p_account_id AND r.session_id = p_session_id AND r.request_no = 0;
        RETURN ans;
    END IF;

    dest_zone := @extschema@.event_zone(p_attrs);
    -- SELECT INTO, not :=, so that "no rate" is a row of NULLs, not an unassigned record
    SELECT * INTO rt FROM @extschema@.resolve_rate(p_account_id, p_service, dest_zone, t0);
    IF rt.rate_id IS NULL AND NOT EXISTS (SELECT 1 FROM @extschema@.service s WHERE s.code = p_service) THEN
        RAISE EXCEPTION 'reserve: unknown service "%"', p_service USING ERRCODE = '23503';
    END IF;

    reason := coalesce(@extschema@.account_refusal(@extschema@.account_status_at(a.status, a.closed_at, t0),
                                                   @extschema@.account_status_at(p.status, p.closed_at, t0)),
                       CASE WHEN rt.rate_id IS NULL THEN 'no_tariff'
                            WHEN rt.plan_currency IS DISTINCT FROM a.currency THEN 'currency_mismatch' END);

    IF reason IS NULL THEN
        SELECT x.ps, x.pe INTO ps, pe FROM @extschema@.request_period(p_account_id, a.timezone, a.billing_day, t0) x;
        IF @extschema@.tariff_scope(rt.tariff) = 'cycle' THEN
            ub := @extschema@.cycle_used(p_account_id, ps, rt.rate_id);
        END IF;
        -- only money and allowances still valid when the grant lapses back it
        money := @extschema@.money_available(p.account_id, t0, exp);
        allowance := @extschema@.allowance_available(p_account_id, p_service, t0, exp);
        g := @extschema@.grant_quantity(rt.tariff, t0, a.timezone, ub, 0, allowance, 0, 0, p_units, money);
        IF g.granted = p_units THEN
            res := 'granted';
        ELSIF g.granted > 0 THEN
            res := 'partial';
        ELSE
            res := 'denied';
            reason := 'insufficient_funds';
        END IF;
        granted := g.granted;
        IF g.granted > 0 THEN
            hold_u := g.covered;
            hold_m := greatest(g.amount, 0);
        END IF;
    ELSE
        res := 'denied';
    END IF;

    INSERT INTO @extschema@.reservation
        (account_id, session_id, payer_id, service, rate_id, zone, attrs, status, started_at,
         period_start, period_end, validity, expires_at, granted, held_units, held_money, finished_at, tariff)
    VALUES (p_account_id, p_session_id, p.account_id, p_service, rt.rate_id, dest_zone, coalesce(p_attrs, '{}'),
            CASE WHEN res = 'denied' THEN 'denied' ELSE 'open' END, t0, ps, pe,
            p_validity, exp, granted, hold_u, hold_m,
            CASE WHEN res = 'denied' THEN t0 END,
            -- the session is priced by this tariff to its end (see reservation.tariff)
            CASE WHEN res <> 'denied' THEN rt.tariff END);
    IF hold_m <> 0 OR hold_u <> 0 THEN
        INSERT INTO @extschema@.ledger (account_id, kind, unit, held, session_id)
        SELECT h.account_id, 'hold', h.unit, h.held, p_session_id
        FROM (VALUES (p.account_id, a.currency, hold_m), (p_account_id, p_service, hold_u)) h(account_id, unit, held)
        WHERE h.held <> 0;
    END IF;
    ans := ROW(res, reason, granted, hold_m, 0, CASE WHEN res <> 'denied' THEN exp END)::@extschema@.grant;
    INSERT INTO @extschema@.reservation_answer (account_id, session_id, request_no, answer)
    VALUES (p_account_id, p_session_id, 0, ans);
    IF hold_m > 0 AND p.low_balance_threshold IS NOT NULL THEN
        -- before and after at now(), as every other request compares them
        -- (`money` above leaves out buckets that expire before the grant):
        -- after = now, with this session's hold; before = after + the hold
        PERFORM @extschema@.notify_low_balance(p.account_id, m.after + hold_m, m.after)
        FROM (SELECT @extschema@.money_available(p.account_id) AS after) m;
    END IF;
    RETURN ans;
END $$;
COMMENT ON FUNCTION @extschema@.reserve(bigint, text, text, numeric, jsonb, interval) IS
    'CCR-INITIAL (request 0): open a session and hold allowance units, then money, for as many whole increments of `units` as can be paid; a retransmission returns the first answer';

-------------------------------------------------------------------------------
-- One step of an open session, under the accounts' locks: debit what was used
-- since the last report, release the hold, then either hold `units` more
-- (an update) or finish the session with its charge (commit, release, expiry).
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.session_step(r @extschema@.reservation, p_request_no integer, p_used numeric,
                                         p_units numeric, p_finish text)
RETURNS @extschema@.grant
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tz text;
    cur text;
    t @extschema@.tariff;
    ub numeric := 0;
    cycle boolean;
    total numeric := r.used + p_used;
    c record;
    g record;
    d_money numeric;
    watch boolean;
    refusal text;
    money_before numeric;
    money numeric;
    hold_u numeric := 0;
    hold_m numeric := 0;
    res text;
    reason text;
    per tstzrange := tstzrange(r.period_start, r.period_end, '[)');
    closed boolean;
    cid bigint;
    exp timestamptz;
    ans @extschema@.grant;
BEGIN
    -- the session's own tariff (reservation.tariff: the catalog may have
    -- changed since it started)
    t := r.tariff;
    cycle := @extschema@.tariff_scope(t) = 'cycle';
    -- the account's zone and currency, the payer's watch and refusal, and
    -- whether a bill run closed the session's period under it (asked only
    -- when it matters: the end, or a cycle-scoped tariff), in one statement
    -- (both accounts are locked)
    SELECT a.timezone, a.currency, py.low_balance_threshold IS NOT NULL,
           @extschema@.account_refusal(@extschema@.account_status_at(a.status, a.closed_at, now()),
                                       @extschema@.account_status_at(py.status, py.closed_at, now())),
           CASE WHEN p_finish IS NOT NULL OR cycle
                THEN EXISTS (SELECT 1 FROM @extschema@.closed_period cp
                             WHERE cp.account_id = r.account_id AND cp.period_start < r.period_end
                               AND cp.period_end > r.period_start) END
    INTO tz, cur, watch, refusal, closed
    FROM @extschema@.account a
    JOIN @extschema@.account py ON py.account_id = r.payer_id
    WHERE a.account_id = r.account_id;
    -- the period the session charges: its own, or the next open one when its
    -- own was closed (late usage, as open_period() and bulk rating)
    IF closed THEN
        per := @extschema@.open_period(r.account_id, r.started_at);
    END IF;
    -- a cycle-scoped tariff prices the session after that period's running
    -- total: its charge and counter go there too, so the period's charges
    -- sum to the price of its total (SPEC 1, cycle scope)
    IF cycle THEN
        ub := @extschema@.cycle_used(r.account_id, lower(per), r.rate_id);
    END IF;
    -- the money before, for the low-balance notice only (the payer is locked:
    -- its threshold cannot change under us)
    IF watch THEN
        money_before := @extschema@.money_available(r.payer_id);
    END IF;

    -- what the session has cost so far; its own hold is available to it.
    -- Allowances cover only the billed units reported now (while they are
    -- valid): what was reported before keeps r.covered and stays charged.
    c := @extschema@.session_cost(t, r.started_at, tz, ub, r.covered,
                                  least(@extschema@.allowance_available(r.account_id, r.service) + r.held_units,
                                        @extschema@.billed_quantity(t, total) - @extschema@.billed_quantity(t, r.used)),
                                  total);
    IF c.covered <> r.covered THEN
        PERFORM @extschema@.debit_account('allowance', r.account_id, r.service, c.covered - r.covered,
                                          NULL, NULL, r.session_id, now());
    END IF;
    d_money := c.amount - r.charged;
    IF d_money <> 0 THEN
        PERFORM @extschema@.debit_account('money', r.payer_id, cur, d_money, NULL, NULL, r.session_id, now());
    END IF;
    IF r.held_money <> 0 OR r.held_units <> 0 THEN
        INSERT INTO @extschema@.ledger (account_id, kind, unit, held, session_id)
        SELECT h.account_id, CASE WHEN p_finish = 'expired' THEN 'expiry' ELSE 'release' END, h.unit, h.held,
               r.session_id
        FROM (VALUES (r.payer_id, cur, -r.held_money), (r.account_id, r.service, -r.held_units))
             h(account_id, unit, held)
        WHERE h.held <> 0;
    END IF;

    IF p_finish IS NULL THEN
        -- CCR-UPDATE: hold `units` more on what is left (its own hold released)
        -- (only money and allowances still valid when the new grant lapses)
        money := @extschema@.money_available(r.payer_id, now(), now() + r.validity) + r.held_money;
        g := @extschema@.grant_quantity(t, r.started_at, tz, ub, c.covered,
                                        @extschema@.allowance_available(r.account_id, r.service, now(), now() + r.validity)
                                        + r.held_units,
                                        total, c.amount, p_units, money);
        IF refusal IS NOT NULL AND p_units > 0 THEN
            g.granted := 0;
            reason := refusal;
        END IF;
        IF g.granted = p_units THEN
            res := 'granted';
        ELSIF g.granted > 0 THEN
            res := 'partial';
        ELSE
            res := 'denied';
            reason := coalesce(reason, 'insufficient_funds');
        END IF;
        IF g.granted > 0 THEN
            hold_u := g.covered - c.covered;
            hold_m := greatest(g.amount - c.amount, 0);
        END IF;
        exp := now() + r.validity;
        UPDATE @extschema@.reservation
        SET used = total, covered = c.covered, charged = c.amount, held_units = hold_u, held_money = hold_m,
            granted = total + g.granted, overuse = greatest(total - r.granted, 0) + r.overuse,
            last_request = p_request_no, expires_at = exp,
            period_start = lower(per), period_end = upper(per)
        WHERE account_id = r.account_id AND session_id = r.session_id;
        IF hold_m <> 0 OR hold_u <> 0 THEN
            INSERT INTO @extschema@.ledger (account_id, kind, unit, held, session_id)
            SELECT h.account_id, 'hold', h.unit, h.held, r.session_id
            FROM (VALUES (r.payer_id, cur, hold_m), (r.account_id, r.service, hold_u)) h(account_id, unit, held)
            WHERE h.held <> 0;
        END IF;
        ans := ROW(res, reason, g.granted, hold_m, d_money, exp)::@extschema@.grant;
    ELSE
        -- the end: the session becomes one rated charge (when anything was used)
        IF total > 0 THEN
            INSERT INTO @extschema@.charge
                (account_id, kind, service, zone, quantity, billed_quantity, covered_quantity, amount, currency,
                 occurred_at, period_start, period_end, source, external_id, rate_id, description)
            VALUES (r.account_id, 'usage', r.service, r.zone, total, c.billed, c.covered, c.amount, cur,
                    r.started_at, lower(per), upper(per), 'session', r.session_id, r.rate_id,
                    CASE WHEN greatest(total - r.granted, 0) + r.overuse > 0
                         THEN format('overuse: %s units beyond the grant', greatest(total - r.granted, 0) + r.overuse) END)
            RETURNING charge_id INTO cid;
            IF cycle AND c.billed - c.covered > 0 THEN
                PERFORM @extschema@.add_cycle_used(r.account_id, lower(per), r.rate_id, c.billed - c.covered);
            END IF;
        END IF;
        UPDATE @extschema@.reservation
        SET status = p_finish, used = total, covered = c.covered, charged = c.amount, held_units = 0,
            held_money = 0, overuse = greatest(total - r.granted, 0) + r.overuse,
            period_start = lower(per), period_end = upper(per),
            last_request = coalesce(p_request_no, r.last_request), charge_id = cid, finished_at = now()
        WHERE account_id = r.account_id AND session_id = r.session_id;
        ans := ROW(CASE WHEN p_finish = 'committed' THEN 'granted' ELSE p_finish END,
                   CASE WHEN greatest(total - r.granted, 0) + r.overuse > 0 THEN 'overuse' END,
                   0, 0, d_money, NULL)::@extschema@.grant;
    END IF;
    IF p_request_no IS NOT NULL THEN
        INSERT INTO @extschema@.reservation_answer (account_id, session_id, request_no, answer)
        VALUES (r.account_id, r.session_id, p_request_no, ans);
    END IF;
    IF watch THEN
        PERFORM @extschema@.notify_low_balance(r.payer_id, money_before, @extschema@.money_available(r.payer_id));
    END IF;
    RETURN ans;
END $$;
COMMENT ON FUNCTION @extschema@.session_step(@extschema@.reservation, integer, numeric, numeric, text) IS
    'internal: debit a session''s usage since its last report, then hold more or finish it (committed, released, expired)';

-- The open session with this id, its accounts locked; NULL when it is over.
-- A session whose grant lapsed is expired on the spot.
CREATE FUNCTION @extschema@.session_for_request(p_session_id text, p_request_no integer, p_what text,
                                                OUT r @extschema@.reservation, OUT answer @extschema@.grant)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    acc bigint;
    payer bigint;
BEGIN
    IF p_session_id IS NULL THEN
        RAISE EXCEPTION '%: session_id must not be NULL', p_what USING ERRCODE = '22004';
    END IF;
    SELECT x.account_id, x.payer_id INTO acc, payer
    FROM @extschema@.reservation x WHERE x.session_id = p_session_id ORDER BY x.account_id LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: unknown session "%"', p_what, p_session_id USING ERRCODE = 'P0002';
    END IF;
    -- as lock_accounts()
    PERFORM 1 FROM @extschema@.account a
    WHERE a.account_id = acc OR a.account_id = payer
    ORDER BY a.account_id FOR NO KEY UPDATE OF a;
    SELECT * INTO r FROM @extschema@.reservation x WHERE x.account_id = acc AND x.session_id = p_session_id;
    -- a retransmission (every answered request is at or before last_request)
    IF p_request_no IS NOT NULL AND p_request_no <= r.last_request THEN
        SELECT (x.answer).* INTO answer FROM @extschema@.reservation_answer x
        WHERE x.account_id = acc AND x.session_id = p_session_id AND x.request_no = p_request_no;
        IF FOUND THEN
            r := NULL;
            RETURN;
        END IF;
    END IF;
    IF r.status = 'open' AND r.expires_at <= now() THEN
        PERFORM @extschema@.session_step(r, NULL, 0, 0, 'expired');
        r.status := 'expired';
    END IF;
    IF r.status <> 'open' THEN
        answer := ROW('denied', 'session_closed', 0, 0, 0, NULL)::@extschema@.grant;
        r := NULL;
        RETURN;
    END IF;
    IF p_request_no IS NOT NULL AND p_request_no <= r.last_request THEN
        RAISE EXCEPTION '%: request_no % of session "%" is not after its last request %',
            p_what, p_request_no, p_session_id, r.last_request USING ERRCODE = '22023';
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@.session_for_request(text, integer, text) IS
    'internal: find and lock an open session for a request, or the answer to give (retransmission, session_closed)';

CREATE FUNCTION @extschema@.reserve_update(session_id text, request_no integer, used numeric, units numeric)
RETURNS @extschema@.grant
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    p_session_id ALIAS FOR $1;
    p_request_no ALIAS FOR $2;
    p_used ALIAS FOR $3;
    p_units ALIAS FOR $4;
    s record;
BEGIN
    IF p_request_no IS NULL OR p_request_no < 1 THEN
        RAISE EXCEPTION 'reserve_update: request_no must be 1 or more, not %', p_request_no USING ERRCODE = '22023';
    END IF;
    PERFORM @extschema@.check_units('reserve_update: used', p_used);
    PERFORM @extschema@.check_units('reserve_update: units', p_units);
    s := @extschema@.session_for_request(p_session_id, p_request_no, 'reserve_update');
    IF s.r IS NULL THEN                 -- a retransmission, or the session is over
        RETURN s.answer;
    END IF;
    RETURN @extschema@.session_step(s.r, p_request_no, p_used, p_units, NULL);
END $$;
COMMENT ON FUNCTION @extschema@.reserve_update(text, integer, numeric, numeric) IS
    'CCR-UPDATE: charge the units used since the last report and hold `units` more; a retransmission returns the first answer';

CREATE FUNCTION @extschema@.commit(session_id text, request_no integer, used numeric)
RETURNS @extschema@.grant
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    p_session_id ALIAS FOR $1;
    p_request_no ALIAS FOR $2;
    p_used ALIAS FOR $3;
    s record;
BEGIN
    IF p_request_no IS NULL OR p_request_no < 1 THEN
        RAISE EXCEPTION 'commit: request_no must be 1 or more, not %', p_request_no USING ERRCODE = '22023';
    END IF;
    PERFORM @extschema@.check_units('commit: used', p_used);
    s := @extschema@.session_for_request(p_session_id, p_request_no, 'commit');
    IF s.r IS NULL THEN                 -- a retransmission, or the session is over
        RETURN s.answer;
    END IF;
    RETURN @extschema@.session_step(s.r, p_request_no, p_used, 0, 'committed');
END $$;
COMMENT ON FUNCTION @extschema@.commit(text, integer, numeric) IS
    'CCR-TERMINATION: charge the last used units (beyond the grant too, as overuse), release the rest and record the session as one rated charge';

CREATE FUNCTION @extschema@.release(session_id text)
RETURNS @extschema@.grant
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    p_session_id ALIAS FOR $1;
    s record;
BEGIN
    s := @extschema@.session_for_request(p_session_id, NULL, 'release');
    IF s.r IS NULL THEN                 -- a retransmission, or the session is over
        RETURN s.answer;
    END IF;
    RETURN @extschema@.session_step(s.r, NULL, 0, 0, 'released');
END $$;
COMMENT ON FUNCTION @extschema@.release(text) IS
    'end a session without charging its open hold (usage already reported stays charged, as the session''s charge)';

-------------------------------------------------------------------------------
-- The sweep: end every open session whose grant lapsed (at most 100,000 a
-- call, the oldest first).  A session whose using or paying account is busy
-- with a request is left to the next sweep.  A session that cannot be ended
-- (an error) is rolled back alone and reported (a WARNING, and job_warn() for
-- the job's log); it never stops the sweep for every other account.
--
-- Without one subtransaction per session: the locked sessions are ended in
-- chunks of 2,000, each in ONE subtransaction (expire_sessions).  Every
-- subtransaction that writes takes its own transaction id, and past 64 of
-- them in one transaction every snapshot in the cluster overflows to
-- pg_subtrans: one per session would slow every online request while a
-- sweep of a few thousand lapsed sessions (an outage) runs.  A full sweep
-- of 100,000 uses 50 subtransactions when nothing fails; each failing
-- session adds at most two (its chunk's first attempt, rolled back, and the
-- sessions of the chunk before it, ended again in a block of their own), of
-- which only the second stays among the transaction's subtransaction ids.
-------------------------------------------------------------------------------

-- Expire the sessions (account_id, session_id pairwise, their accounts
-- locked by the caller) in order, in as few subtransactions as it can: all
-- of them in one block.  When one fails, the block is rolled back; the
-- sessions before it (which did not fail) are ended again in a block of
-- their own (recursively: should one of them fail now, it is isolated the
-- same way), the failing one is reported and skipped, and the rest go on in
-- the next block.  Each session thus meets the state it would meet had every
-- session been ended on its own, in order: the one that fails is the same
-- and so is its error.  expired, failed and failures carry the sweep's
-- counts (failures: the first 5 failures, for job_warn).
CREATE FUNCTION @extschema@.expire_sessions(p_account_ids bigint[], p_session_ids text[],
                                            INOUT expired integer, INOUT failed integer, INOUT failures text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    r @extschema@.reservation;
    lo integer := 1;                    -- the first session of the block
    hi integer := cardinality(p_session_ids);
    k integer;                          -- the session being ended
    done integer;
    st text;
    msg text;
BEGIN
    WHILE lo <= hi LOOP
        k := lo;
        done := 0;
        BEGIN
            WHILE k <= hi LOOP
                -- re-read under the locks: a request may have ended it
                SELECT * INTO r FROM @extschema@.reservation x
                WHERE x.account_id = p_account_ids[k] AND x.session_id = p_session_ids[k]
                  AND x.status = 'open' AND x.expires_at <= now();
                IF FOUND THEN
                    PERFORM @extschema@.session_step(r, NULL, 0, 0, 'expired');
                    done := done + 1;
                END IF;
                k := k + 1;
            END LOOP;
            expired := expired + done;
            lo := k;                    -- (hi + 1: all done)
        EXCEPTION WHEN OTHERS THEN
            -- (variables keep their values: k is the session that failed)
            GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
            IF k > lo THEN
                SELECT * INTO expired, failed, failures
                FROM @extschema@.expire_sessions(p_account_ids[lo:k - 1], p_session_ids[lo:k - 1],
                                                 expired, failed, failures);
            END IF;
            -- it stays open and expired: its hold counts nowhere, and the
            -- next sweep tries again
            failed := failed + 1;
            RAISE WARNING 'expire_reservations: session "%" of account % not expired: %: %',
                p_session_ids[k], p_account_ids[k], st, msg;
            IF failed <= 5 THEN
                failures := failures || CASE WHEN failed > 1 THEN '; ' ELSE '' END
                            || format('"%s" of account %s: %s: %s', p_session_ids[k], p_account_ids[k], st, msg);
            END IF;
            lo := k + 1;
        END;
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@.expire_sessions(bigint[], text[], integer, integer, text) IS
    'internal: expire_reservations'' chunk of locked sessions, in one subtransaction; a failing session is rolled back alone and reported, the others ended';

CREATE FUNCTION @extschema@.expire_reservations()
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    chunk CONSTANT integer := 2000;
    r record;
    accs bigint[] := '{}';
    sids text[] := '{}';
    n integer := 0;
    locked integer;
    failed integer := 0;
    failures text := '';
BEGIN
    FOR r IN SELECT x.account_id, x.payer_id, x.session_id FROM @extschema@.reservation x
             WHERE x.status = 'open' AND x.expires_at <= now()
             ORDER BY x.expires_at LIMIT 100000 LOOP
        -- skip accounts busy with a request: the next sweep gets them (both
        -- the using and the paying account must be locked, not just one).
        -- The locks are the sweep's own (not a chunk's): a chunk rolled
        -- back keeps them
        PERFORM 1 FROM @extschema@.account a
        WHERE a.account_id IN (r.account_id, r.payer_id)
        ORDER BY a.account_id FOR NO KEY UPDATE OF a SKIP LOCKED;
        GET DIAGNOSTICS locked = ROW_COUNT;
        CONTINUE WHEN locked < CASE WHEN r.account_id = r.payer_id THEN 1 ELSE 2 END;
        accs := accs || r.account_id;
        sids := sids || r.session_id;
        CONTINUE WHEN cardinality(sids) < chunk;
        SELECT * INTO n, failed, failures FROM @extschema@.expire_sessions(accs, sids, n, failed, failures);
        accs := '{}';
        sids := '{}';
    END LOOP;
    IF cardinality(sids) > 0 THEN
        SELECT * INTO n, failed, failures FROM @extschema@.expire_sessions(accs, sids, n, failed, failures);
    END IF;
    IF failed > 0 THEN
        -- for the job's log (job_run.warning): a WARNING alone reaches only
        -- the server log under pg_cron
        PERFORM @extschema@.job_warn(format('expire_reservations: %s session(s) not expired (%s%s)', failed,
                                            failures, CASE WHEN failed > 5 THEN '; ...' ELSE '' END));
    END IF;
    RETURN n;
END $$;
COMMENT ON FUNCTION @extschema@.expire_reservations() IS
    'end the open sessions whose grant lapsed: release their holds (usage already reported stays charged); returns how many (a session that fails is skipped with a WARNING and job_warn(), the others are ended; one subtransaction per chunk of 2,000 sessions, not per session)';

-------------------------------------------------------------------------------
-- One-shot events
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.charge_event(account_id bigint, service text, event_id text, units numeric,
                                         attrs jsonb DEFAULT '{}')
RETURNS @extschema@.grant
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    p_account_id ALIAS FOR $1;
    p_service ALIAS FOR $2;
    p_event_id ALIAS FOR $3;
    p_units ALIAS FOR $4;
    p_attrs ALIAS FOR $5;
    a @extschema@.account;              -- the using account
    accs record;
    p @extschema@.account;              -- the paying account (a itself, usually)
    ans @extschema@.grant;
    reason text;
    dest_zone text;
    rt record;
    ps timestamptz;
    pe timestamptz;
    ub numeric := 0;
    c record;
    cid bigint;
    t0 timestamptz := now();
BEGIN
    IF p_account_id IS NULL OR p_service IS NULL OR p_event_id IS NULL THEN
        RAISE EXCEPTION 'charge_event: account_id, service and event_id must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF length(p_event_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'charge_event: event_id must have 1 to 255 characters' USING ERRCODE = '22023';
    END IF;
    PERFORM @extschema@.check_units('charge_event: units', p_units);
    -- the account and its payer, locked
    accs := @extschema@.request_accounts(p_account_id);
    a := accs.a;
    p := accs.p;
    SELECT (e.answer).* INTO ans FROM @extschema@.event_answer e
    WHERE e.account_id = p_account_id AND e.event_id = p_event_id;
    IF FOUND THEN
        RETURN ans;                     -- a retried event
    END IF;

    dest_zone := @extschema@.event_zone(p_attrs);
    reason := @extschema@.account_refusal(@extschema@.account_status_at(a.status, a.closed_at, t0),
                                          @extschema@.account_status_at(p.status, p.closed_at, t0));
    IF reason IS NULL THEN
        SELECT * INTO rt FROM @extschema@.resolve_rate(p_account_id, p_service, dest_zone, t0);
        reason := CASE WHEN rt.rate_id IS NULL THEN 'no_tariff'
                       WHEN rt.plan_currency IS DISTINCT FROM a.currency THEN 'currency_mismatch' END;
    END IF;
    -- (a rate found means a known service)
    IF reason IN ('no_tariff', 'account_closed', 'account_suspended')
       AND NOT EXISTS (SELECT 1 FROM @extschema@.service s WHERE s.code = p_service) THEN
        RAISE EXCEPTION 'charge_event: unknown service "%"', p_service USING ERRCODE = '23503';
    END IF;
    IF reason IS NULL THEN
        SELECT x.ps, x.pe INTO ps, pe FROM @extschema@.request_period(p_account_id, a.timezone, a.billing_day, t0) x;
        IF @extschema@.tariff_scope(rt.tariff) = 'cycle' THEN
            ub := @extschema@.cycle_used(p_account_id, ps, rt.rate_id);
        END IF;
        c := @extschema@.session_cost(rt.tariff, t0, a.timezone, ub, 0,
                                      @extschema@.allowance_available(p_account_id, p_service), p_units);
        IF c.amount > @extschema@.money_available(p.account_id) THEN
            reason := 'insufficient_funds';
        END IF;
    END IF;
    IF reason IS NOT NULL THEN
        ans := ROW('denied', reason, 0, 0, 0, NULL)::@extschema@.grant;
    ELSE
        IF c.covered <> 0 THEN
            PERFORM @extschema@.debit_account('allowance', p_account_id, p_service, c.covered, NULL, NULL, NULL, t0);
        END IF;
        -- the charge debits the money (trigger charge_debit)
        INSERT INTO @extschema@.charge
            (account_id, kind, service, zone, quantity, billed_quantity, covered_quantity, amount, currency,
             occurred_at, period_start, period_end, source, external_id, rate_id)
        VALUES (p_account_id, 'usage', p_service, dest_zone, p_units, c.billed, c.covered, c.amount, a.currency,
                t0, ps, pe, 'event', p_event_id, rt.rate_id)
        RETURNING charge_id INTO cid;
        IF @extschema@.tariff_scope(rt.tariff) = 'cycle' AND c.billed - c.covered > 0 THEN
            PERFORM @extschema@.add_cycle_used(p_account_id, ps, rt.rate_id, c.billed - c.covered);
        END IF;
        ans := ROW('granted', NULL, p_units, 0, c.amount, NULL)::@extschema@.grant;
    END IF;
    INSERT INTO @extschema@.event_answer (account_id, event_id, answer, charge_id)
    VALUES (p_account_id, p_event_id, ans, cid);
    RETURN ans;
END $$;
COMMENT ON FUNCTION @extschema@.charge_event(bigint, text, text, numeric, jsonb) IS
    'one-shot direct debit (SMS, API call): allowance first, then money, all or nothing; idempotent on (account_id, event_id)';

