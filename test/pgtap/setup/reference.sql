-------------------------------------------------------------------------------
-- test/pgtap/setup/reference.sql — shared helpers for the tariff pgTAP tests.
--
-- Included with \ir from inside each test's transaction (BEGIN ... ROLLBACK), so
-- schema `ref` never outlives a test.  Not a test itself: pg_prove only runs
-- test/pgtap/*.sql, not this subdirectory.
--
-- 1. An INDEPENDENT implementation of SPEC §1 tariff evaluation in PL/pgSQL,
--    written from the SPEC text (not from src/tariff_eval.c).  It works on the
--    tariff's canonical JSON (t::text::jsonb) with exact numeric arithmetic:
--    no numeric division anywhere (numeric `/` rounds to a chosen scale); block
--    and increment counts use div()/mod(), which are exact.
--      ref.billed_quantity(t jsonb, q numeric)
--      ref.model_price(pricing jsonb, bq numeric)       model price + tier flats
--      ref.round(x numeric, decimals int, mode text)    half_up|half_even|up|down
--      ref.rate(t jsonb, q numeric)                     scope event, top level
--      ref.period_price(t jsonb, x numeric)             P(x) for scope cycle
--      ref.cycle_rate(t jsonb, q, used_before)          P(ub+bq) - P(ub) + setup
--      ref.pricing_at(t jsonb, at, tz) / ref.rate_at(t, q, at, tz, used_before)
--                                                       time bands, both scopes
-- 2. Random generators (they call random(), so a test's setseed() fixes them):
--      ref.gen_tariff(model, scope, with_bands) -> input JSON (numbers spelt as
--      JSON numbers or strings at random), ref.gen_pricing(model),
--      ref.gen_qty(t jsonb), ref.gen_at(), ref.gen_tz(), ref.rand_int/rand_dec.
-- 3. ref.c_rate / ref.c_rate_at / ref.c_billed_quantity: the C functions with
--    errors caught, returning ref.outcome (v, err), so a C error on valid input
--    shows up as a counted mismatch with its message rather than aborting a file.
-------------------------------------------------------------------------------

SET LOCAL client_min_messages = warning;
SET LOCAL max_parallel_workers_per_gather = 0;	-- keep random() draws in one order
CREATE SCHEMA ref;

-- A JSON number or numeric string as numeric; NULL for a missing key or JSON null.
CREATE FUNCTION ref.num(v jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN v IS NULL OR jsonb_typeof(v) = 'null' THEN NULL
                ELSE (v #>> '{}')::numeric END
$$;

-- ⌈a / b⌉ for a >= 0, b > 0, exactly (div/mod on numeric are exact).
CREATE FUNCTION ref.ceil_div(a numeric, b numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT div(a, b) + CASE WHEN mod(a, b) <> 0 THEN 1 ELSE 0 END
$$;

-- SPEC §1 increment: q=0 -> 0; q <= A -> A; else A + ⌈(q−A)/B⌉·B.  Negative q is an error.
CREATE FUNCTION ref.billed_quantity(t jsonb, q numeric) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    a numeric := ref.num(t #> '{increment,first}');
    b numeric := ref.num(t #> '{increment,next}');
BEGIN
    IF q IS NULL THEN RETURN NULL; END IF;
    IF q < 0 THEN
        RAISE EXCEPTION 'ref.billed_quantity: negative quantity %', q;
    END IF;
    IF q = 0 OR a IS NULL THEN
        RETURN q;
    END IF;
    IF q <= a THEN
        RETURN a;
    END IF;
    RETURN a + ref.ceil_div(q - a, b) * b;
END;
$$;

-- Model price of bq billed units under one pricing object (the top level of a
-- tariff, or a time band's nested tariff): tier flat fees included; no setup
-- fee, no clamping, no rounding.  bq = 0 costs 0 in every model.
CREATE FUNCTION ref.model_price(p jsonb, bq numeric) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    model text := coalesce(p ->> 'model', 'flat');
    tier jsonb;
    lower_q numeric := 0;
    upper_q numeric;
    units numeric;
    cost numeric := 0;
    free_q numeric;
BEGIN
    IF bq = 0 THEN
        RETURN 0;
    END IF;
    CASE model
    WHEN 'flat' THEN
        RETURN bq * coalesce(ref.num(p -> 'price'), 0);

    WHEN 'graduated' THEN
        -- tier i holds the units in (up_to(i-1), up_to(i)]; each tier with
        -- units > 0 is "reached" and adds its flat fee once.
        FOR tier IN SELECT e.value FROM jsonb_array_elements(p -> 'tiers') WITH ORDINALITY e
                    ORDER BY e.ordinality LOOP
            upper_q := ref.num(tier -> 'up_to');		-- NULL: unbounded
            units := greatest(0, coalesce(least(bq, upper_q), bq) - lower_q);
            IF units > 0 THEN
                cost := cost + units * coalesce(ref.num(tier -> 'price'), 0)
                             + coalesce(ref.num(tier -> 'flat'), 0);
            END IF;
            lower_q := upper_q;
            EXIT WHEN upper_q IS NULL;
        END LOOP;
        RETURN cost;

    WHEN 'volume' THEN
        -- the first tier with bq <= up_to (or the unbounded one) prices every unit
        FOR tier IN SELECT e.value FROM jsonb_array_elements(p -> 'tiers') WITH ORDINALITY e
                    ORDER BY e.ordinality LOOP
            upper_q := ref.num(tier -> 'up_to');
            IF upper_q IS NULL OR bq <= upper_q THEN
                RETURN bq * coalesce(ref.num(tier -> 'price'), 0)
                       + coalesce(ref.num(tier -> 'flat'), 0);
            END IF;
        END LOOP;
        RAISE EXCEPTION 'ref.model_price: volume tiers without an unbounded tier: %', p;

    WHEN 'package' THEN
        -- after F free units, P per started block of N units
        free_q := coalesce(ref.num(p #> '{package,free}'), 0);
        IF bq <= free_q THEN
            RETURN 0;
        END IF;
        RETURN ref.ceil_div(bq - free_q, ref.num(p #> '{package,size}'))
               * ref.num(p #> '{package,price}');

    WHEN 'percentage' THEN
        -- quantity x R/100 + F; x 0.01 rather than / 100 to stay exact
        RETURN bq * ref.num(p #> '{percentage,rate}') * 0.01
               + coalesce(ref.num(p #> '{percentage,fixed}'), 0);
    ELSE
        RAISE EXCEPTION 'ref.model_price: unknown model %', model;
    END CASE;
END;
$$;

-- Clamp an amount to a pricing's [minimum, maximum] (each optional).
CREATE FUNCTION ref.clamp(p jsonb, x numeric) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    lo numeric := ref.num(p -> 'minimum');
    hi numeric := ref.num(p -> 'maximum');
BEGIN
    IF lo IS NOT NULL AND x < lo THEN
        x := lo;
    END IF;
    IF hi IS NOT NULL AND x > hi THEN
        x := hi;
    END IF;
    RETURN x;
END;
$$;

-- Round x to d decimals: half_up (halves away from zero), half_even (banker's),
-- up (away from zero), down (toward zero).  Built from trunc() and the
-- remainder, not from round(), so it does not share numeric round()'s code path.
CREATE FUNCTION ref.round(x numeric, d int, mode text) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    ulp numeric := ('1e-' || d)::numeric;		-- one unit in the last place
    t numeric := trunc(x, d);
    r2 numeric := 2 * abs(x - t);				-- twice the discarded part
    odd boolean := mod(abs(t) * ('1e' || d)::numeric, 2) = 1;
    bump boolean;
BEGIN
    bump := CASE mode
        WHEN 'down'      THEN false
        WHEN 'up'        THEN r2 > 0
        WHEN 'half_up'   THEN r2 >= ulp
        WHEN 'half_even' THEN r2 > ulp OR (r2 = ulp AND odd)
    END;
    IF bump IS NULL THEN
        RAISE EXCEPTION 'ref.round: unknown mode %', mode;
    END IF;
    IF bump THEN
        t := t + sign(x) * ulp;
    END IF;
    RETURN trunc(t, d);		-- value unchanged; display scale d like the C result
END;
$$;

CREATE FUNCTION ref.decimals(t jsonb) RETURNS int
LANGUAGE sql IMMUTABLE AS $$ SELECT coalesce((t #>> '{rounding,decimals}')::int, 6) $$;

CREATE FUNCTION ref.mode(t jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT coalesce(t #>> '{rounding,mode}', 'half_up') $$;

-- One event priced alone with pricing p (increments and rounding from t):
-- bq = 0 -> 0; else (model price + setup_fee) clamped to [min, max], rounded once.
CREATE FUNCTION ref.event_rate(t jsonb, p jsonb, q numeric) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    bq numeric := ref.billed_quantity(t, q);
BEGIN
    IF bq = 0 THEN
        RETURN 0;
    END IF;
    RETURN ref.round(ref.clamp(p, ref.model_price(p, bq) + coalesce(ref.num(p -> 'setup_fee'), 0)),
                     ref.decimals(t), ref.mode(t));
END;
$$;

-- convbill.rate(t, q): scope event semantics with the top-level pricing.
CREATE FUNCTION ref.rate(t jsonb, q numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$ SELECT ref.event_rate(t, t, q) $$;

-- P(x) for scope cycle: 0 for x = 0; otherwise the model price of the period
-- total x clamped to [minimum, maximum] (a commitment), rounded once.  No setup fee.
CREATE FUNCTION ref.period_price(t jsonb, x numeric) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF x = 0 THEN
        RETURN 0;
    END IF;
    RETURN ref.round(ref.clamp(t, ref.model_price(t, x)), ref.decimals(t), ref.mode(t));
END;
$$;

-- One cycle-scope event after used_before billed units:
-- P(used_before + bq) − P(used_before) + setup_fee, and 0 when bq = 0.
CREATE FUNCTION ref.cycle_rate(t jsonb, q numeric, used_before numeric) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    bq numeric := ref.billed_quantity(t, q);
BEGIN
    IF bq = 0 THEN
        RETURN 0;
    END IF;
    RETURN ref.period_price(t, used_before + bq) - ref.period_price(t, used_before)
           + coalesce(ref.num(t -> 'setup_fee'), 0);
END;
$$;

-- The pricing that applies at `at` in zone tz: the first time band whose days
-- hold the local weekday and with from <= local time < to, else the top level.
CREATE FUNCTION ref.pricing_at(t jsonb, at timestamptz, tz text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    local_ts timestamp := at AT TIME ZONE tz;
    dow text := lower(to_char(local_ts, 'Dy'));		-- 'mon' .. 'sun' (not TM: English)
    secs numeric := extract(epoch FROM local_ts::time);
    band jsonb;
BEGIN
    FOR band IN SELECT e.value FROM jsonb_array_elements(coalesce(t -> 'time_bands', '[]'))
                WITH ORDINALITY e ORDER BY e.ordinality LOOP
        IF (band -> 'days' IS NULL OR band -> 'days' ? dow)
           AND secs >= extract(epoch FROM coalesce(band ->> 'from', '00:00')::time)
           AND secs <  extract(epoch FROM coalesce(band ->> 'to', '24:00')::time) THEN
            RETURN band -> 'tariff';
        END IF;
    END LOOP;
    RETURN t;
END;
$$;

-- convbill.rate(t, q, at, tz, used_before).
CREATE FUNCTION ref.rate_at(t jsonb, q numeric, at timestamptz, tz text,
                            used_before numeric DEFAULT 0) RETURNS numeric
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN t ->> 'scope' = 'cycle' THEN ref.cycle_rate(t, q, used_before)
                ELSE ref.event_rate(t, ref.pricing_at(t, at, tz), q) END
$$;

-------------------------------------------------------------------------------
-- Random generators
-------------------------------------------------------------------------------

-- Uniform integer in [lo, hi].
CREATE FUNCTION ref.rand_int(lo int, hi int) RETURNS int
LANGUAGE sql VOLATILE AS $$ SELECT lo + floor(random() * (hi - lo + 1))::int $$;

-- A random decimal in [lo, hi] with a random number of decimal places (0 .. maxdp).
CREATE FUNCTION ref.rand_dec(lo numeric, hi numeric, maxdp int) RETURNS numeric
LANGUAGE sql VOLATILE AS $$
    SELECT least(hi, greatest(lo, round(lo + (hi - lo) * random()::numeric, ref.rand_int(0, maxdp))))
$$;

-- A value spelt as a JSON number or as a numeric string (both are valid input);
-- sometimes with trailing zeros or in exponent form, which the canonical output drops.
CREATE FUNCTION ref.spell(x numeric, maxdp int) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    s text := x::text;
    r float8 := random();
BEGIN
    IF r < 0.10 AND scale(x) < maxdp THEN
        s := trunc(x, scale(x) + 1)::text;			-- one trailing zero: "1.50"
    ELSIF r < 0.15 AND x = trunc(x) AND x > 0 AND mod(x, 10) = 0 THEN
        s := (x / 10)::bigint::text || 'e1';		-- "12e1"
    END IF;
    IF random() < 0.5 THEN
        RETURN to_jsonb(s);
    END IF;
    RETURN s::jsonb;
END;
$$;

-- A random pricing object of a model: price/tiers/package/percentage, and
-- sometimes setup_fee, minimum, maximum.  fee_dp bounds setup_fee's decimals.
CREATE FUNCTION ref.gen_pricing(model text, fee_dp int DEFAULT 6) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    p jsonb := '{}';
    tiers jsonb := '[]';
    ntiers int;
    up numeric := 0;
    tier jsonb;
    mn numeric;
BEGIN
    IF model <> 'flat' OR random() < 0.7 THEN
        p := jsonb_build_object('model', model);		-- flat is the default model
    END IF;
    CASE model
    WHEN 'flat' THEN
        p := p || jsonb_build_object('price', ref.spell(ref.rand_dec(0, 5, 12), 12));
    WHEN 'graduated', 'volume' THEN
        ntiers := ref.rand_int(1, 6);
        FOR i IN 1 .. ntiers LOOP
            IF i < ntiers THEN
                up := up + greatest(ref.rand_dec(0, 150, CASE WHEN random() < 0.2 THEN 9 ELSE 2 END),
                                    0.000000001);
                tier := jsonb_build_object('up_to', ref.spell(up, 9));
            ELSE
                tier := jsonb_build_object('up_to', NULL::jsonb);	-- JSON null: unbounded
            END IF;
            IF random() < 0.95 THEN		-- a tier's price may be left out (0)
                tier := tier || jsonb_build_object('price', ref.spell(ref.rand_dec(0, 3, 12), 12));
            END IF;
            IF random() < 0.5 THEN
                tier := tier || jsonb_build_object('flat', ref.spell(ref.rand_dec(0, 20, 6), 12));
            END IF;
            tiers := tiers || jsonb_build_array(tier);
        END LOOP;
        p := p || jsonb_build_object('tiers', tiers);
    WHEN 'package' THEN
        tier := jsonb_build_object('size', ref.spell(greatest(ref.rand_dec(0, 100, CASE WHEN random() < 0.2 THEN 9 ELSE 2 END), 0.001), 9),
                                   'price', ref.spell(ref.rand_dec(0, 10, 6), 12));
        IF random() < 0.5 THEN
            tier := tier || jsonb_build_object('free', ref.spell(ref.rand_dec(0, 200, 3), 9));
        END IF;
        p := p || jsonb_build_object('package', tier);
    WHEN 'percentage' THEN
        tier := jsonb_build_object('rate', ref.spell(ref.rand_dec(0, 30, 10), 10));
        IF random() < 0.5 THEN
            tier := tier || jsonb_build_object('fixed', ref.spell(ref.rand_dec(0, 2, 6), 12));
        END IF;
        p := p || jsonb_build_object('percentage', tier);
    END CASE;
    IF random() < 0.4 THEN
        p := p || jsonb_build_object('setup_fee', ref.spell(ref.rand_dec(0, 2, fee_dp), 12));
    END IF;
    IF random() < 0.3 THEN
        mn := ref.rand_dec(0, 60, 4);
        p := p || jsonb_build_object('minimum', ref.spell(mn, 12));
    END IF;
    IF random() < 0.3 THEN
        p := p || jsonb_build_object('maximum',
                     ref.spell(coalesce(mn, 0) + ref.rand_dec(0, 600, 4), 12));
    END IF;
    RETURN p;
END;
$$;

-- A random tariff (input JSON) of a model and scope: the pricing above plus,
-- at random, increment, rounding (every mode, 0..12 decimals), currency, unit,
-- and for scope event with with_bands, 1..3 time bands with their own pricing.
-- For scope cycle the setup fee has at most the tariff's decimals (see
-- property_cycle.sql for why).
CREATE FUNCTION ref.gen_tariff(model text, scope text DEFAULT 'event',
                               with_bands boolean DEFAULT false) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    t jsonb;
    decimals int := NULL;
    mode text := NULL;
    r float8;
    bands jsonb := '[]';
    band jsonb;
    days text[];
    f int;
    tt int;
    all_days constant text[] := ARRAY['mon','tue','wed','thu','fri','sat','sun'];
BEGIN
    -- rounding first: a cycle tariff's setup fee is generated at its decimals
    r := random();
    IF r < 0.6 THEN
        decimals := ref.rand_int(0, 12);
        mode := (ARRAY['half_up','half_even','up','down'])[ref.rand_int(1, 4)];
    ELSIF r < 0.7 THEN
        mode := (ARRAY['half_up','half_even','up','down'])[ref.rand_int(1, 4)];
    ELSIF r < 0.8 THEN
        decimals := ref.rand_int(0, 12);
    END IF;
    t := ref.gen_pricing(model, CASE WHEN scope = 'cycle' THEN least(coalesce(decimals, 6), 6) ELSE 6 END);
    IF decimals IS NOT NULL OR mode IS NOT NULL THEN
        t := t || jsonb_build_object('rounding', jsonb_strip_nulls(jsonb_build_object(
                    'decimals', decimals, 'mode', mode)));
    END IF;
    r := random();
    IF r < 0.25 THEN			-- telecom / data presets
        t := t || jsonb_build_object('increment', (ARRAY[
                 '{"first": 60, "next": 60}', '{"first": 60, "next": 1}', '{"first": 30, "next": 6}',
                 '{"first": 1024, "next": 1024}', '{"first": 1, "next": 1}'])[ref.rand_int(1, 5)]::jsonb);
    ELSIF r < 0.5 THEN			-- random, down to 10^-9
        t := t || jsonb_build_object('increment', jsonb_build_object(
                 'first', ref.spell(greatest(ref.rand_dec(0, 100, CASE WHEN random() < 0.3 THEN 9 ELSE 1 END), 0.000000001), 9),
                 'next',  ref.spell(greatest(ref.rand_dec(0, 40, CASE WHEN random() < 0.3 THEN 9 ELSE 1 END), 0.000000001), 9)));
    END IF;
    IF scope = 'cycle' THEN
        t := t || '{"scope": "cycle"}';
    ELSIF random() < 0.1 THEN
        t := t || '{"scope": "event"}';
    END IF;
    IF random() < 0.3 THEN
        t := t || jsonb_build_object('currency', (ARRAY['EUR','USD','JPY','KWD','GBP','CHF'])[ref.rand_int(1, 6)]);
    END IF;
    IF random() < 0.3 THEN
        t := t || jsonb_build_object('unit', (ARRAY['second','byte','sms','unit','kWh','call "x"'])[ref.rand_int(1, 6)]);
    END IF;
    IF with_bands AND scope = 'event' THEN
        FOR i IN 1 .. ref.rand_int(1, 3) LOOP
            SELECT array_agg(d ORDER BY random()) INTO days
              FROM unnest(all_days) d WHERE random() < 0.5;
            f := ref.rand_int(0, 23) * 3600 + (ARRAY[0, 0, 1800, 900])[ref.rand_int(1, 4)]
                 + CASE WHEN random() < 0.1 THEN ref.rand_int(1, 59) ELSE 0 END;
            tt := least(86400, f + ref.rand_int(1, 12) * 3600 + CASE WHEN random() < 0.1 THEN ref.rand_int(1, 59) ELSE 0 END);
            band := jsonb_build_object(
                'from', CASE WHEN f % 60 = 0 THEN to_char(make_interval(secs => f), 'HH24:MI')
                             ELSE to_char(make_interval(secs => f), 'HH24:MI:SS') END,
                'to',   CASE WHEN tt = 86400 THEN '24:00'
                             WHEN tt % 60 = 0 THEN to_char(make_interval(secs => tt), 'HH24:MI')
                             ELSE to_char(make_interval(secs => tt), 'HH24:MI:SS') END,
                'tariff', ref.gen_pricing((ARRAY['flat','graduated','volume','package','percentage'])[ref.rand_int(1, 5)]));
            IF days IS NOT NULL THEN
                band := band || jsonb_build_object('days', to_jsonb(days));
            END IF;
            IF random() < 0.7 THEN
                band := band || jsonb_build_object('name', 'band ' || i);
            END IF;
            IF f = 0 AND random() < 0.5 THEN band := band - 'from'; END IF;
            IF tt = 86400 AND random() < 0.5 THEN band := band - 'to'; END IF;
            bands := bands || jsonb_build_array(band);
        END LOOP;
        t := t || jsonb_build_object('time_bands', bands);
    END IF;
    RETURN t;
END;
$$;

-- A random event quantity for tariff t (canonical or input JSON): zero, whole
-- units, fractions down to 10^-9, and quantities on or next to the tariff's
-- edges (tier up_to, package free/size multiples, increment first).
CREATE FUNCTION ref.gen_qty(t jsonb) RETURNS numeric
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r float8 := random();
    edges numeric[];
    e numeric;
BEGIN
    IF r < 0.08 THEN
        RETURN 0;
    ELSIF r < 0.35 THEN
        RETURN ref.rand_int(1, 300);
    ELSIF r < 0.50 THEN
        RETURN ref.rand_dec(0, 3, 9);
    ELSIF r < 0.76 THEN
        RETURN ref.rand_dec(0, 400, 9);
    ELSIF r < 0.80 THEN
        RETURN ref.rand_dec(0, 10000000, 9);		-- large: scaling, long digit strings
    END IF;
    SELECT array_agg(x) INTO edges FROM (
        SELECT ref.num(e.value -> 'up_to') AS x FROM jsonb_array_elements(coalesce(t -> 'tiers', '[]')) e
        UNION ALL SELECT ref.num(t #> '{package,free}')
        UNION ALL SELECT coalesce(ref.num(t #> '{package,free}'), 0)
                         + ref.rand_int(1, 3) * ref.num(t #> '{package,size}')
        UNION ALL SELECT ref.num(t #> '{increment,first}')
        UNION ALL SELECT ref.num(t #> '{increment,first}') + ref.num(t #> '{increment,next}')
    ) s WHERE x IS NOT NULL;
    IF edges IS NULL THEN
        RETURN ref.rand_int(1, 300);
    END IF;
    e := edges[ref.rand_int(1, array_length(edges, 1))];
    RETURN greatest(0, e + (ARRAY[0, 0, 0.000000001, -0.000000001, 1, -1])[ref.rand_int(1, 6)]);
END;
$$;

-------------------------------------------------------------------------------
-- The C functions, with any error caught: (v, err) so that a failing call is
-- reported as a mismatch with its message instead of aborting the test file.
-------------------------------------------------------------------------------
CREATE TYPE ref.outcome AS (v numeric, err text);

CREATE FUNCTION ref.c_rate(t convbill.tariff, q numeric) RETURNS ref.outcome
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN ROW(convbill.rate(t, q), NULL)::ref.outcome;
EXCEPTION WHEN others THEN
    RETURN ROW(NULL, SQLSTATE || ': ' || SQLERRM)::ref.outcome;
END;
$$;

CREATE FUNCTION ref.c_rate_at(t convbill.tariff, q numeric, at timestamptz, tz text,
                              used_before numeric) RETURNS ref.outcome
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN ROW(convbill.rate(t, q, at, tz, used_before), NULL)::ref.outcome;
EXCEPTION WHEN others THEN
    RETURN ROW(NULL, SQLSTATE || ': ' || SQLERRM)::ref.outcome;
END;
$$;

CREATE FUNCTION ref.c_billed_quantity(t convbill.tariff, q numeric) RETURNS ref.outcome
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN ROW(convbill.billed_quantity(t, q), NULL)::ref.outcome;
EXCEPTION WHEN others THEN
    RETURN ROW(NULL, SQLSTATE || ': ' || SQLERRM)::ref.outcome;
END;
$$;

-- A random instant between 1850 and 2150 (microseconds included: local mean
-- time offsets before ~1900 have seconds; dates past 2038 use the zone's rule)
-- and a zone.
CREATE FUNCTION ref.gen_at() RETURNS timestamptz
LANGUAGE sql VOLATILE AS $$
    SELECT timestamptz '1850-01-01 00:00:00+00' + random() * interval '300 years'
$$;

CREATE FUNCTION ref.gen_tz() RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT (ARRAY['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata', 'Australia/Lord_Howe',
                  'Pacific/Chatham', 'America/St_Johns', 'Asia/Kathmandu', 'Pacific/Kiritimati',
                  'America/Sao_Paulo'])[ref.rand_int(1, 10)]
$$;

RESET client_min_messages;
