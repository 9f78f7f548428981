-------------------------------------------------------------------------------
-- tariff_roundtrip.sql — text I/O and equality of convbill.tariff (SPEC §1:
-- "Text I/O is a JSON object; output is canonical JSON").
--
-- For random tariffs of every model and both scopes (some with time bands,
-- currency, unit, rounding), input with random number spellings (JSON numbers
-- or strings, trailing zeros, exponents) and jsonb's key order:
--   * t::text::convbill.tariff = t                      (and <> is false)
--   * t::text = t::text::convbill.tariff::text          (canonical output is a fixed point)
--   * the canonical text means what the input meant: both normalised by an
--     independent SQL function (defaults filled, numbers compared as numbers,
--     days as sets) are equal jsonb — so the type drops or alters no field
--   * the jsonb casts round-trip
--   * a tariff differing in exactly one field (each price, tier, package,
--     percentage, increment, fee, bound, scope, rounding, currency, unit and
--     time band field, by the smallest representable step) is not equal:
--     = is false, <> is true, and the canonical texts differ.
--
-- Reproducible: the seed is fixed; change it with  pg_prove --set seed=0.123 ...
-------------------------------------------------------------------------------
BEGIN;
\ir setup/reference.sql
\if :{?seed}
\else
\set seed 0.57721
\endif
\set tariffs_per_model 200

SELECT setseed(:seed) \gset
SELECT plan(20);

SET LOCAL client_min_messages = warning;
-- convbill's = and <> for tariffs live in schema convbill
SET LOCAL search_path = public, convbill;

-- A decimal in canonical JSON as a JSON number (so 1.50 and "1.5" compare equal).
CREATE FUNCTION ref.n(v jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT to_jsonb(ref.num(v)) $$;

-- Seconds of "HH:MM[:SS]" ("24:00" = 86400), and back in canonical form.
CREATE FUNCTION ref.secs(s text) RETURNS int
LANGUAGE sql IMMUTABLE AS $$ SELECT extract(epoch FROM s::time)::int $$;

CREATE FUNCTION ref.hhmm(secs int) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT lpad((secs / 3600)::text, 2, '0') || ':' || lpad((secs / 60 % 60)::text, 2, '0')
           || CASE WHEN secs % 60 <> 0 THEN ':' || lpad((secs % 60)::text, 2, '0') ELSE '' END
$$;

-- The meaning of a pricing object, with SPEC defaults made explicit.
CREATE FUNCTION ref.norm_pricing(p jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    o jsonb := jsonb_build_object('model', coalesce(p ->> 'model', 'flat'),
                                  'setup_fee', ref.n(coalesce(p -> 'setup_fee', '0')));
BEGIN
    IF p ? 'price' THEN o := o || jsonb_build_object('price', ref.n(p -> 'price')); END IF;
    IF p ? 'minimum' THEN o := o || jsonb_build_object('minimum', ref.n(p -> 'minimum')); END IF;
    IF p ? 'maximum' THEN o := o || jsonb_build_object('maximum', ref.n(p -> 'maximum')); END IF;
    IF p ? 'tiers' THEN
        o := o || jsonb_build_object('tiers', (
            SELECT jsonb_agg(jsonb_build_object(
                       'up_to', ref.n(e.value -> 'up_to'),	-- JSON null stays null
                       'price', ref.n(coalesce(e.value -> 'price', '0')),
                       'flat', ref.n(coalesce(e.value -> 'flat', '0'))) ORDER BY e.i)
              FROM jsonb_array_elements(p -> 'tiers') WITH ORDINALITY e(value, i)));
    END IF;
    IF p ? 'package' THEN
        o := o || jsonb_build_object('package', jsonb_build_object(
                      'size', ref.n(p #> '{package,size}'), 'price', ref.n(p #> '{package,price}'),
                      'free', ref.n(coalesce(p #> '{package,free}', '0'))));
    END IF;
    IF p ? 'percentage' THEN
        o := o || jsonb_build_object('percentage', jsonb_build_object(
                      'rate', ref.n(p #> '{percentage,rate}'),
                      'fixed', ref.n(coalesce(p #> '{percentage,fixed}', '0'))));
    END IF;
    RETURN o;
END;
$$;

-- The meaning of a tariff, with SPEC defaults made explicit.
CREATE FUNCTION ref.normalize(t jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    o jsonb := ref.norm_pricing(t) || jsonb_build_object(
        'scope', coalesce(t ->> 'scope', 'event'),
        'rounding', jsonb_build_object('decimals', coalesce((t #>> '{rounding,decimals}')::int, 6),
                                       'mode', coalesce(t #>> '{rounding,mode}', 'half_up')),
        'increment', CASE WHEN t ? 'increment' THEN jsonb_build_object(
                         'first', ref.n(t #> '{increment,first}'), 'next', ref.n(t #> '{increment,next}')) END,
        'currency', t -> 'currency',
        'unit', t -> 'unit',
        'time_bands', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'name', b.value -> 'name',
                       'days', coalesce((SELECT jsonb_agg(d ORDER BY array_position(
                                                  ARRAY['mon','tue','wed','thu','fri','sat','sun'], d))
                                           FROM jsonb_array_elements_text(b.value -> 'days') d),
                                        '["mon","tue","wed","thu","fri","sat","sun"]'),
                       'from', ref.secs(coalesce(b.value ->> 'from', '00:00')),
                       'to', ref.secs(coalesce(b.value ->> 'to', '24:00')),
                       'tariff', ref.norm_pricing(b.value -> 'tariff')) ORDER BY b.i)
              FROM jsonb_array_elements(t -> 'time_bands') WITH ORDINALITY b(value, i)), '[]'));
BEGIN
    RETURN o;
END;
$$;

-- Every applicable one-field change of a canonical tariff c, each still valid
-- and meaning a different tariff.  e12/e9/e10: the smallest step of a price,
-- a quantity, a percentage rate.
CREATE FUNCTION ref.mutations(c jsonb) RETURNS TABLE (kind text, m jsonb)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    e12 constant numeric := 0.000000000001;
    e9  constant numeric := 0.000000001;
    ntiers int := jsonb_array_length(coalesce(c -> 'tiers', '[]'));
    nbands int := jsonb_array_length(coalesce(c -> 'time_bands', '[]'));
    modes constant text[] := ARRAY['half_up', 'half_even', 'up', 'down'];
    d int := ref.decimals(c);
    mo text := ref.mode(c);
    b0 jsonb := c #> '{time_bands,0}';
    days jsonb;
    f int;
    t int;
BEGIN
    IF c ? 'price' THEN
        RETURN QUERY SELECT 'price', jsonb_set(c, '{price}', to_jsonb((ref.num(c -> 'price') + e12)::text));
    END IF;
    IF ntiers >= 2 THEN	-- the last bounded tier's up_to may grow: the next tier is unbounded
        RETURN QUERY SELECT 'tier up_to', jsonb_set(c, ARRAY['tiers', (ntiers - 2)::text, 'up_to'],
                                                    to_jsonb(ref.num(c #> ARRAY['tiers', (ntiers - 2)::text, 'up_to']) + e9));
    END IF;
    IF ntiers >= 1 THEN
        RETURN QUERY SELECT 'tier price', jsonb_set(c, '{tiers,0,price}',
                                                    to_jsonb((ref.num(c #> '{tiers,0,price}') + e12)::text));
        RETURN QUERY SELECT 'tier flat', jsonb_set(c, ARRAY['tiers', (ntiers - 1)::text, 'flat'],
                                                   to_jsonb((coalesce(ref.num(c #> ARRAY['tiers', (ntiers - 1)::text, 'flat']), 0) + e12)::text));
    END IF;
    IF c ? 'package' THEN
        RETURN QUERY SELECT 'package size', jsonb_set(c, '{package,size}', to_jsonb(ref.num(c #> '{package,size}') + e9));
        RETURN QUERY SELECT 'package price', jsonb_set(c, '{package,price}', to_jsonb((ref.num(c #> '{package,price}') + e12)::text));
        RETURN QUERY SELECT 'package free', jsonb_set(c, '{package,free}', to_jsonb(coalesce(ref.num(c #> '{package,free}'), 0) + e9));
    END IF;
    IF c ? 'percentage' THEN
        RETURN QUERY SELECT 'percentage rate', jsonb_set(c, '{percentage,rate}', to_jsonb((ref.num(c #> '{percentage,rate}') + 0.0000000001)::text));
        RETURN QUERY SELECT 'percentage fixed', jsonb_set(c, '{percentage,fixed}', to_jsonb((coalesce(ref.num(c #> '{percentage,fixed}'), 0) + e12)::text));
    END IF;
    IF c ? 'increment' THEN
        RETURN QUERY SELECT 'increment first', jsonb_set(c, '{increment,first}', to_jsonb(ref.num(c #> '{increment,first}') + e9));
        RETURN QUERY SELECT 'increment next', jsonb_set(c, '{increment,next}', to_jsonb(ref.num(c #> '{increment,next}') + e9));
        RETURN QUERY SELECT 'increment removed', c - 'increment';
    ELSE
        RETURN QUERY SELECT 'increment added', c || '{"increment": {"first": 1, "next": 1}}';
    END IF;
    RETURN QUERY SELECT 'setup_fee', jsonb_set(c, '{setup_fee}', to_jsonb((coalesce(ref.num(c -> 'setup_fee'), 0) + e12)::text));
    IF c ? 'minimum' AND ref.num(c -> 'minimum') > 0 THEN
        RETURN QUERY SELECT 'minimum', jsonb_set(c, '{minimum}', to_jsonb((ref.num(c -> 'minimum') - e12)::text));
    END IF;
    IF c ? 'maximum' THEN
        RETURN QUERY SELECT 'maximum', jsonb_set(c, '{maximum}', to_jsonb((ref.num(c -> 'maximum') + e12)::text));
    ELSE
        RETURN QUERY SELECT 'maximum added', c || '{"maximum": "1000000"}';
    END IF;
    IF nbands = 0 THEN
        RETURN QUERY SELECT 'scope', c || jsonb_build_object('scope',
                                 CASE WHEN c ->> 'scope' = 'cycle' THEN 'event' ELSE 'cycle' END);
    END IF;
    RETURN QUERY SELECT 'rounding decimals', c || jsonb_build_object('rounding',
                             jsonb_build_object('decimals', (d + 1) % 13, 'mode', mo));
    RETURN QUERY SELECT 'rounding mode', c || jsonb_build_object('rounding',
                             jsonb_build_object('decimals', d, 'mode', modes[array_position(modes, mo) % 4 + 1]));
    RETURN QUERY SELECT 'currency', c || jsonb_build_object('currency',
                             CASE WHEN c ->> 'currency' = 'USD' THEN 'EUR' ELSE 'USD' END);
    RETURN QUERY SELECT 'unit', c || jsonb_build_object('unit', coalesce(c ->> 'unit', '') || 'x');
    IF nbands >= 1 THEN
        -- toggle one weekday of band 0, keeping at least one
        SELECT CASE WHEN (b0 -> 'days') ? 'sun' AND jsonb_array_length(b0 -> 'days') > 1
                    THEN (b0 -> 'days') - 'sun'
                    WHEN (b0 -> 'days') ? 'sun' THEN '["mon"]'
                    ELSE (b0 -> 'days') || '["sun"]' END INTO days;
        RETURN QUERY SELECT 'band days', jsonb_set(c, '{time_bands,0,days}', days);
        f := ref.secs(b0 ->> 'from');
        t := ref.secs(b0 ->> 'to');
        IF t - f > 1 THEN
            RETURN QUERY SELECT 'band from', jsonb_set(c, '{time_bands,0,from}', to_jsonb(ref.hhmm(f + 1)));
            RETURN QUERY SELECT 'band to', jsonb_set(c, '{time_bands,0,to}', to_jsonb(ref.hhmm(t - 1)));
        END IF;
        RETURN QUERY SELECT 'band name', jsonb_set(c, '{time_bands,0,name}', to_jsonb(coalesce(b0 ->> 'name', '') || 'x'));
        RETURN QUERY SELECT 'band setup_fee', jsonb_set(c, '{time_bands,0,tariff,setup_fee}',
                                 to_jsonb((coalesce(ref.num(b0 #> '{tariff,setup_fee}'), 0) + e12)::text));
        RETURN QUERY SELECT 'band removed', CASE WHEN nbands = 1 THEN c - 'time_bands'
                                                 ELSE c #- ARRAY['time_bands', (nbands - 1)::text] END;
    END IF;
    IF nbands >= 2 AND c #> '{time_bands,0}' <> c #> '{time_bands,1}' THEN
        RETURN QUERY SELECT 'band order', jsonb_set(jsonb_set(c, '{time_bands,0}', c #> '{time_bands,1}'),
                                                    '{time_bands,1}', b0);
    END IF;
END;
$$;

CREATE FUNCTION ref.try_tariff(s text) RETURNS convbill.tariff
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN s::convbill.tariff;
EXCEPTION WHEN others THEN
    RETURN NULL;
END;
$$;

-- Why a text is rejected (SQLSTATE and message), NULL when it is a valid tariff.
CREATE FUNCTION ref.tariff_error(s text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM s::convbill.tariff;
    RETURN NULL;
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END;
$$;

RESET client_min_messages;

CREATE TEMP TABLE rt_tariff (
    id      int PRIMARY KEY,
    model   text NOT NULL,
    input   jsonb NOT NULL,			-- as generated
    t       convbill.tariff,		-- parsed from the input's text
    c       jsonb					-- canonical: t::text::jsonb
) ON COMMIT DROP;

-- a third each: scope cycle, scope event, scope event with time bands
INSERT INTO rt_tariff (id, model, input)
SELECT row_number() OVER (ORDER BY i, mi), m,
       ref.gen_tariff(m, CASE WHEN i % 3 = 0 THEN 'cycle' ELSE 'event' END, i % 3 = 1)
  FROM generate_series(1, :tariffs_per_model) i,
       unnest(ARRAY['flat', 'graduated', 'volume', 'package', 'percentage']) WITH ORDINALITY AS u(m, mi)
 ORDER BY i, mi;
UPDATE rt_tariff SET t = input::text::convbill.tariff;
UPDATE rt_tariff SET c = t::text::jsonb;

-- 1..5: parsing the canonical text gives an equal tariff
SELECT is(count(*) FILTER (WHERE NOT (t::text::convbill.tariff = t) OR (t::text::convbill.tariff <> t)),
          0::bigint, format('%s: t::text::tariff = t (%s tariffs)', m, count(*)))
  FROM rt_tariff, unnest(ARRAY['flat', 'graduated', 'volume', 'package', 'percentage']) WITH ORDINALITY u(m, mi)
 WHERE model = m GROUP BY m, mi ORDER BY mi;

-- 6..10: the canonical text is a fixed point
SELECT is(count(*) FILTER (WHERE t::text IS DISTINCT FROM t::text::convbill.tariff::text),
          0::bigint, format('%s: t::text = t::text::tariff::text (%s tariffs)', m, count(*)))
  FROM rt_tariff, unnest(ARRAY['flat', 'graduated', 'volume', 'package', 'percentage']) WITH ORDINALITY u(m, mi)
 WHERE model = m GROUP BY m, mi ORDER BY mi;

-- 11..15: the canonical text means what the input meant
SELECT is(count(*) FILTER (WHERE ref.normalize(input) IS DISTINCT FROM ref.normalize(c)),
          0::bigint, format('%s: canonical text keeps every field of the input (%s tariffs)', m, count(*)))
  FROM rt_tariff, unnest(ARRAY['flat', 'graduated', 'volume', 'package', 'percentage']) WITH ORDINALITY u(m, mi)
 WHERE model = m GROUP BY m, mi ORDER BY mi;

-- 16: the jsonb casts
SELECT is(count(*) FILTER (WHERE NOT (t::jsonb::convbill.tariff = t) OR t::jsonb IS DISTINCT FROM c),
          0::bigint, format('tariff -> jsonb -> tariff round-trips (%s tariffs)', count(*)))
  FROM rt_tariff;

-- one-field changes
CREATE TEMP TABLE rt_mutation ON COMMIT DROP AS
SELECT x.id, x.model, mu.kind, mu.m, ref.try_tariff(mu.m::text) AS mt
  FROM rt_tariff x, LATERAL ref.mutations(x.c) mu;

-- 17: every kind of change was exercised
SELECT is(
    (SELECT array_agg(k ORDER BY k) FROM unnest(ARRAY[
        'price', 'tier up_to', 'tier price', 'tier flat', 'package size', 'package price',
        'package free', 'percentage rate', 'percentage fixed', 'increment first', 'increment next',
        'increment removed', 'increment added', 'setup_fee', 'minimum', 'maximum', 'maximum added',
        'scope', 'rounding decimals', 'rounding mode', 'currency', 'unit', 'band days', 'band from',
        'band to', 'band name', 'band setup_fee', 'band removed', 'band order']) k
      WHERE NOT EXISTS (SELECT FROM rt_mutation WHERE kind = k)),
    NULL, format('one-field changes of %s kinds exercised (%s changed tariffs)',
                 (SELECT count(DISTINCT kind) FROM rt_mutation), (SELECT count(*) FROM rt_mutation)));

-- 18: each change is a valid tariff
SELECT is((SELECT count(*) FROM rt_mutation WHERE mt IS NULL), 0::bigint,
          'every one-field change is still a valid tariff');

-- 19: ... and not equal to the original
SELECT is((SELECT count(*) FROM rt_mutation m JOIN rt_tariff x USING (id)
            WHERE m.mt IS NOT NULL AND ((m.mt = x.t) OR NOT (m.mt <> x.t))), 0::bigint,
          'a tariff differing in one field is not equal (= false, <> true)');

-- 20: ... with a different canonical text
SELECT is((SELECT count(*) FROM rt_mutation m JOIN rt_tariff x USING (id)
            WHERE m.mt IS NOT NULL AND m.mt::text = x.t::text), 0::bigint,
          'a tariff differing in one field has a different canonical text');

-- diagnostics: the first failure of each kind
SELECT diag(format(E'round trip failure (seed %s, %s, id %s)\n  input     %s\n  canonical %s\n  reparsed  %s',
                   :'seed', model, id, input::text, t::text, t::text::convbill.tariff::text))
  FROM (SELECT DISTINCT ON (model) * FROM rt_tariff
         WHERE NOT (t::text::convbill.tariff = t) OR t::text <> t::text::convbill.tariff::text
            OR NOT (t::jsonb::convbill.tariff = t)
         ORDER BY model, id) f;
SELECT diag(format(E'canonical text changes the meaning (seed %s, %s, id %s)\n  input     %s\n  canonical %s\n  normalised input     %s\n  normalised canonical %s',
                   :'seed', model, id, input::text, t::text, ref.normalize(input)::text, ref.normalize(c)::text))
  FROM (SELECT DISTINCT ON (model) * FROM rt_tariff
         WHERE ref.normalize(input) IS DISTINCT FROM ref.normalize(c) ORDER BY model, id) f;
SELECT diag(format(E'one-field change "%s" (seed %s, id %s): %s\n  original %s\n  changed  %s',
                   kind, :'seed', id,
                   CASE WHEN mt IS NULL THEN 'rejected: ' || ref.tariff_error(m::text)
                        WHEN mt::text = t::text THEN 'same canonical text'
                        ELSE 'compares equal' END,
                   t::text, m::text))
  FROM (SELECT DISTINCT ON (kind) m.*, x.t FROM rt_mutation m JOIN rt_tariff x USING (id)
         WHERE m.mt IS NULL OR m.mt = x.t OR NOT (m.mt <> x.t) OR m.mt::text = x.t::text
         ORDER BY kind, id) f;

SELECT * FROM finish();
ROLLBACK;
