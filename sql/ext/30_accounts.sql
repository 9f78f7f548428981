-------------------------------------------------------------------------------
-- Plans, accounts, subscriptions, taxes and discounts; billing periods.
-------------------------------------------------------------------------------

CREATE TABLE @extschema@.plan (
    code          text PRIMARY KEY CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    name          text NOT NULL,
    currency      text NOT NULL
                  CHECK (@extschema@.currency_exponent(currency) IS NOT NULL),
    recurring_fee numeric NOT NULL DEFAULT 0 CHECK (recurring_fee >= 0),
    fee_interval  text NOT NULL DEFAULT 'month' CHECK (fee_interval IN ('month', 'year')),
    billing       text NOT NULL DEFAULT 'arrears' CHECK (billing IN ('arrears', 'advance')),
    allowances    jsonb NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE @extschema@.plan IS
    'what a subscription buys: a recurring fee, allowances per period {"voice": 3600, ...}, and its rates (plan_rate)';
COMMENT ON COLUMN @extschema@.plan.currency IS 'ISO 4217 code; must match the currency of the accounts subscribing';

-- Allowances: an object of service code -> non-negative units per period.
CREATE FUNCTION @extschema@.plan_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
    v jsonb;
BEGIN
    IF pg_catalog.jsonb_typeof(NEW.allowances) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'plan %: allowances must be a JSON object of service -> units', NEW.code
            USING ERRCODE = '22023';
    END IF;
    FOR k, v IN SELECT * FROM pg_catalog.jsonb_each(NEW.allowances) LOOP
        IF NOT EXISTS (SELECT 1 FROM @extschema@.service s WHERE s.code OPERATOR(pg_catalog.=) k) THEN
            RAISE EXCEPTION 'plan %: allowance for unknown service "%"', NEW.code, k
                USING ERRCODE = '23503';
        END IF;
        IF pg_catalog.jsonb_typeof(v) IS DISTINCT FROM 'number' OR v::text::numeric < 0 THEN
            RAISE EXCEPTION 'plan %: allowance "%" must be a non-negative number of units', NEW.code, k
                USING ERRCODE = '22023';
        END IF;
    END LOOP;
    RETURN NEW;
END $$;
CREATE TRIGGER plan_guard BEFORE INSERT OR UPDATE ON @extschema@.plan
    FOR EACH ROW EXECUTE FUNCTION @extschema@.plan_guard();

CREATE TABLE @extschema@.plan_rate (
    plan_code   text NOT NULL REFERENCES @extschema@.plan ON UPDATE CASCADE,
    service     text NOT NULL REFERENCES @extschema@.service ON UPDATE CASCADE,
    zone        text,                       -- NULL: any zone
    tariff      @extschema@.tariff NOT NULL,
    valid_from  timestamptz NOT NULL DEFAULT '-infinity',
    valid_until timestamptz NOT NULL DEFAULT 'infinity',
    CHECK (valid_from < valid_until)
);
CREATE UNIQUE INDEX plan_rate_key ON @extschema@.plan_rate
    (plan_code, service, coalesce(zone, ''), valid_from);
COMMENT ON TABLE @extschema@.plan_rate IS
    'a plan''s tariff per service and zone (NULL = any zone); for an event the most specific zone wins, then the latest valid_from';

-- A rate's tariff must speak the plan's currency and the service's unit, and
-- validity ranges of one (plan, service, zone) must not overlap.
CREATE FUNCTION @extschema@.plan_rate_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    plan_currency text;
    service_unit text;
BEGIN
    SELECT p.currency INTO plan_currency FROM @extschema@.plan p WHERE p.code OPERATOR(pg_catalog.=) NEW.plan_code;
    SELECT s.unit INTO service_unit FROM @extschema@.service s WHERE s.code OPERATOR(pg_catalog.=) NEW.service;
    IF @extschema@.tariff_currency(NEW.tariff) IS DISTINCT FROM plan_currency
       AND @extschema@.tariff_currency(NEW.tariff) IS NOT NULL THEN
        RAISE EXCEPTION 'plan_rate %/%: tariff currency % differs from the plan''s currency %',
            NEW.plan_code, NEW.service, @extschema@.tariff_currency(NEW.tariff), plan_currency
            USING ERRCODE = '22023';
    END IF;
    IF @extschema@.tariff_unit(NEW.tariff) IS DISTINCT FROM service_unit
       AND @extschema@.tariff_unit(NEW.tariff) IS NOT NULL THEN
        RAISE EXCEPTION 'plan_rate %/%: tariff unit "%" differs from the service''s unit "%"',
            NEW.plan_code, NEW.service, @extschema@.tariff_unit(NEW.tariff), service_unit
            USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.plan_rate r
               WHERE r.plan_code OPERATOR(pg_catalog.=) NEW.plan_code
                 AND r.service OPERATOR(pg_catalog.=) NEW.service
                 AND r.zone IS NOT DISTINCT FROM NEW.zone
                 AND r.ctid OPERATOR(pg_catalog.<>) NEW.ctid
                 AND r.valid_from OPERATOR(pg_catalog.<) NEW.valid_until
                 AND NEW.valid_from OPERATOR(pg_catalog.<) r.valid_until) THEN
        RAISE EXCEPTION 'plan_rate %/%/%: validity [%, %) overlaps another rate of the same plan, service and zone',
            NEW.plan_code, NEW.service, coalesce(NEW.zone, '(any zone)'), NEW.valid_from, NEW.valid_until
            USING ERRCODE = '23P01';
    END IF;
    RETURN NEW;
END $$;
CREATE CONSTRAINT TRIGGER plan_rate_guard AFTER INSERT OR UPDATE ON @extschema@.plan_rate
    FOR EACH ROW EXECUTE FUNCTION @extschema@.plan_rate_guard();

CREATE TABLE @extschema@.account (
    account_id     bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    external_ref   text NOT NULL UNIQUE,
    name           text NOT NULL,
    currency       text NOT NULL CHECK (@extschema@.currency_exponent(currency) IS NOT NULL),
    timezone       text NOT NULL DEFAULT 'UTC' CHECK (@extschema@.is_time_zone(timezone)),
    billing_day    integer NOT NULL DEFAULT 1 CHECK (billing_day BETWEEN 1 AND 28),
    parent_id      bigint REFERENCES @extschema@.account,
    bill_to_parent boolean NOT NULL DEFAULT false,
    credit_limit   numeric NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    tax_code       text,
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'closed')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT bill_to_parent_needs_parent CHECK (parent_id IS NOT NULL OR NOT bill_to_parent),
    CONSTRAINT not_own_parent CHECK (parent_id IS DISTINCT FROM account_id)
);
COMMENT ON TABLE @extschema@.account IS
    'a customer: currency, IANA time zone and billing day define its periods; bill_to_parent puts it on its parent''s invoice';
COMMENT ON COLUMN @extschema@.account.external_ref IS
    'the CRM''s key; unique across the installation (a lookup table when sharded by account_id)';

-- No account may be its own ancestor; a child billed to its parent shares its currency.
CREATE FUNCTION @extschema@.account_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parent_currency text;
BEGIN
    IF NEW.parent_id IS NULL THEN
        RETURN NEW;
    END IF;
    IF EXISTS (WITH RECURSIVE up(id, depth) AS (
                   SELECT a.parent_id, 1 FROM @extschema@.account a
                   WHERE a.account_id OPERATOR(pg_catalog.=) NEW.parent_id
                   UNION ALL
                   SELECT a.parent_id, up.depth + 1 FROM @extschema@.account a JOIN up
                       ON a.account_id OPERATOR(pg_catalog.=) up.id
                   WHERE up.depth < 1000)
               SELECT 1 FROM up WHERE up.id OPERATOR(pg_catalog.=) NEW.account_id)
       OR NEW.parent_id OPERATOR(pg_catalog.=) NEW.account_id THEN
        RAISE EXCEPTION 'account %: parent % would make a cycle of parents', NEW.account_id, NEW.parent_id
            USING ERRCODE = '23514';
    END IF;
    SELECT a.currency INTO parent_currency FROM @extschema@.account a
    WHERE a.account_id OPERATOR(pg_catalog.=) NEW.parent_id;
    IF NEW.bill_to_parent AND parent_currency IS DISTINCT FROM NEW.currency THEN
        RAISE EXCEPTION 'account %: billed to parent % but its currency % differs from the parent''s %',
            NEW.account_id, NEW.parent_id, NEW.currency, parent_currency
            USING ERRCODE = '22023';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER account_guard BEFORE INSERT OR UPDATE OF parent_id, bill_to_parent, currency
    ON @extschema@.account FOR EACH ROW EXECUTE FUNCTION @extschema@.account_guard();

CREATE TABLE @extschema@.subscription (
    account_id      bigint NOT NULL REFERENCES @extschema@.account,
    subscription_id bigint GENERATED BY DEFAULT AS IDENTITY,
    plan_code       text NOT NULL REFERENCES @extschema@.plan ON UPDATE CASCADE,
    quantity        integer NOT NULL DEFAULT 1 CHECK (quantity > 0),
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    replaces_id     bigint,                   -- the subscription a change_plan() ended
    PRIMARY KEY (account_id, subscription_id),
    CHECK (ended_at IS NULL OR ended_at > started_at)
);
COMMENT ON TABLE @extschema@.subscription IS
    'an account''s plan over [started_at, ended_at); change_plan ends one and starts its successor';

CREATE TABLE @extschema@.tax_rate (
    code       text NOT NULL,
    rate       numeric NOT NULL CHECK (rate >= 0 AND rate <= 100),
    valid_from timestamptz NOT NULL DEFAULT '-infinity',
    PRIMARY KEY (code, valid_from)
);
COMMENT ON TABLE @extschema@.tax_rate IS 'tax rates in percent by tax code; the rate valid at a period''s end applies';

CREATE TABLE @extschema@.discount (
    discount_id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    account_id  bigint REFERENCES @extschema@.account,   -- NULL: every account
    plan_code   text REFERENCES @extschema@.plan ON UPDATE CASCADE,
    service     text REFERENCES @extschema@.service ON UPDATE CASCADE,
    percent     numeric CHECK (percent > 0 AND percent <= 100),
    amount      numeric CHECK (amount > 0),
    valid_from  timestamptz NOT NULL DEFAULT '-infinity',
    valid_until timestamptz NOT NULL DEFAULT 'infinity',
    max_periods integer CHECK (max_periods > 0),
    CHECK ((percent IS NULL) <> (amount IS NULL)),
    CHECK (valid_from < valid_until)
);
COMMENT ON TABLE @extschema@.discount IS
    'a percent or fixed discount, before tax and never below zero, for an account and/or plan and/or service (NULL = any)';

-------------------------------------------------------------------------------
-- Billing periods: [local midnight of billing_day, the same day next month)
-- in the account's zone.  Months are calendar months; billing_day <= 28 exists
-- in every month; DST is handled by converting local midnights.
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.billing_period_start(at timestamptz, tz text, billing_day integer)
RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'billing_period_start' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.billing_period_end(at timestamptz, tz text, billing_day integer)
RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'billing_period_end' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.billing_period_start(timestamptz, text, integer) IS
    'start of the billing period containing at: local midnight of billing_day in IANA zone tz';
COMMENT ON FUNCTION @extschema@.billing_period_end(timestamptz, text, integer) IS
    'end (exclusive) of the billing period containing at: the same day of the next month, local midnight';

CREATE FUNCTION @extschema@.billing_period(at timestamptz, tz text, billing_day integer)
RETURNS tstzrange
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.tstzrange(@extschema@.billing_period_start(at, tz, billing_day),
                            @extschema@.billing_period_end(at, tz, billing_day), '[)');
COMMENT ON FUNCTION @extschema@.billing_period(timestamptz, text, integer) IS
    'the billing period containing at: [local midnight of billing_day, the same day next month) in IANA zone tz';

CREATE FUNCTION @extschema@.account_period(p_account_id bigint, at timestamptz DEFAULT now())
RETURNS tstzrange
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN (
    SELECT @extschema@.billing_period(at, a.timezone, a.billing_day)
    FROM @extschema@.account a WHERE a.account_id OPERATOR(pg_catalog.=) p_account_id
);
COMMENT ON FUNCTION @extschema@.account_period(bigint, timestamptz) IS
    'the account''s billing period containing at, in the account''s time zone (NULL for an unknown account)';

-------------------------------------------------------------------------------
-- Subscriptions
-------------------------------------------------------------------------------

-- Refuse a subscription the account cannot hold: unknown or closed account, a
-- plan in another currency, or an overlap with the same plan.
CREATE FUNCTION @extschema@.subscription_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    acc record;
    plan_currency text;
BEGIN
    SELECT a.currency, a.status INTO acc FROM @extschema@.account a
    WHERE a.account_id OPERATOR(pg_catalog.=) NEW.account_id;
    SELECT p.currency INTO plan_currency FROM @extschema@.plan p WHERE p.code OPERATOR(pg_catalog.=) NEW.plan_code;
    IF acc.status OPERATOR(pg_catalog.=) 'closed' AND TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        RAISE EXCEPTION 'account % is closed', NEW.account_id USING ERRCODE = '22023';
    END IF;
    IF plan_currency IS DISTINCT FROM acc.currency THEN
        RAISE EXCEPTION 'plan % is priced in % but account % pays in %',
            NEW.plan_code, plan_currency, NEW.account_id, acc.currency USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.subscription s
               WHERE s.account_id OPERATOR(pg_catalog.=) NEW.account_id
                 AND s.plan_code OPERATOR(pg_catalog.=) NEW.plan_code
                 AND s.subscription_id OPERATOR(pg_catalog.<>) NEW.subscription_id
                 AND s.started_at OPERATOR(pg_catalog.<) coalesce(NEW.ended_at, 'infinity')
                 AND NEW.started_at OPERATOR(pg_catalog.<) coalesce(s.ended_at, 'infinity')) THEN
        RAISE EXCEPTION 'account % already subscribes to plan % during [%, %)',
            NEW.account_id, NEW.plan_code, NEW.started_at, coalesce(NEW.ended_at, 'infinity')
            USING ERRCODE = '23P01', HINT = 'Raise the quantity of the existing subscription, or end it first.';
    END IF;
    RETURN NEW;
END $$;
CREATE CONSTRAINT TRIGGER subscription_guard AFTER INSERT OR UPDATE ON @extschema@.subscription
    FOR EACH ROW EXECUTE FUNCTION @extschema@.subscription_guard();

CREATE FUNCTION @extschema@.subscribe(p_account_id bigint, p_plan_code text,
                                      p_start timestamptz DEFAULT now(), p_quantity integer DEFAULT 1)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id bigint;
BEGIN
    IF p_account_id IS NULL OR p_plan_code IS NULL OR p_start IS NULL OR p_quantity IS NULL THEN
        RAISE EXCEPTION 'subscribe: account_id, plan_code, start and quantity must not be NULL'
            USING ERRCODE = '22004';
    END IF;
    INSERT INTO @extschema@.subscription (account_id, plan_code, quantity, started_at)
    VALUES (p_account_id, p_plan_code, p_quantity, p_start)
    RETURNING subscription_id INTO id;
    RETURN id;
END $$;
COMMENT ON FUNCTION @extschema@.subscribe(bigint, text, timestamptz, integer) IS
    'subscribe an account to a plan from start; returns the subscription_id';

-- The open subscription with this id, locked; a clear error otherwise.
CREATE FUNCTION @extschema@.subscription_for_update(p_subscription_id bigint, p_at timestamptz)
RETURNS @extschema@.subscription
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s @extschema@.subscription;
BEGIN
    SELECT * INTO s FROM @extschema@.subscription
    WHERE subscription_id OPERATOR(pg_catalog.=) p_subscription_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % does not exist', p_subscription_id USING ERRCODE = '02000';
    END IF;
    IF s.ended_at IS NOT NULL AND s.ended_at OPERATOR(pg_catalog.<=) p_at THEN
        RAISE EXCEPTION 'subscription % already ended at %', p_subscription_id, s.ended_at
            USING ERRCODE = '22023';
    END IF;
    IF p_at OPERATOR(pg_catalog.<=) s.started_at THEN
        RAISE EXCEPTION 'subscription % starts at %, it cannot end at %', p_subscription_id, s.started_at, p_at
            USING ERRCODE = '22023';
    END IF;
    RETURN s;
END $$;

CREATE FUNCTION @extschema@.unsubscribe(p_subscription_id bigint, p_at timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s @extschema@.subscription := @extschema@.subscription_for_update(p_subscription_id, p_at);
BEGIN
    UPDATE @extschema@.subscription SET ended_at = p_at
    WHERE account_id OPERATOR(pg_catalog.=) s.account_id
      AND subscription_id OPERATOR(pg_catalog.=) s.subscription_id;
END $$;
COMMENT ON FUNCTION @extschema@.unsubscribe(bigint, timestamptz) IS
    'end a subscription at a time (fees are prorated to it by the bill run)';

CREATE FUNCTION @extschema@.change_plan(p_subscription_id bigint, p_plan_code text,
                                        p_at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s @extschema@.subscription := @extschema@.subscription_for_update(p_subscription_id, p_at);
    id bigint;
BEGIN
    UPDATE @extschema@.subscription SET ended_at = p_at
    WHERE account_id OPERATOR(pg_catalog.=) s.account_id
      AND subscription_id OPERATOR(pg_catalog.=) s.subscription_id;
    INSERT INTO @extschema@.subscription (account_id, plan_code, quantity, started_at, ended_at, replaces_id)
    VALUES (s.account_id, p_plan_code, s.quantity, p_at, s.ended_at, s.subscription_id)
    RETURNING subscription_id INTO id;
    RETURN id;
END $$;
COMMENT ON FUNCTION @extschema@.change_plan(bigint, text, timestamptz) IS
    'end a subscription at a time and continue it on another plan from then; returns the new subscription_id';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.plan', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.plan_rate', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.account', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.subscription', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tax_rate', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.discount', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.account_account_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.subscription_subscription_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.discount_discount_id_seq', '');
