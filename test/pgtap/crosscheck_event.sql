-------------------------------------------------------------------------------
-- crosscheck_event.sql — the C evaluator against an independent SQL one.
--
-- Random event-scope tariffs of every model (with and without increments,
-- setup fee, minimum/maximum, every rounding mode and 0..12 decimals, some with
-- time bands) and random quantities (zero, whole, fractional down to 10^-9, on
-- and next to tier/package/increment edges):
--   convbill.rate(t, q)            = ref.rate(t::text::jsonb, q)
--   convbill.billed_quantity(t, q) = ref.billed_quantity(t::text::jsonb, q)
--   convbill.rate(t, q, at, tz)    = ref.rate_at(...)   (time bands, random zones)
-- The reference (setup/reference.sql) is written from SPEC §1, not from the C.
--
-- Reproducible: the seed is fixed; change it with  pg_prove --set seed=0.123 ...
-------------------------------------------------------------------------------
BEGIN;
\ir setup/reference.sql
\if :{?seed}
\else
\set seed 0.271828
\endif
\set tariffs_per_model 300
\set qty_per_tariff 8

SELECT setseed(:seed) \gset
SELECT plan(26);

-- tariffs: id order is generation order, so a seed always gives the same set
CREATE TEMP TABLE ce_tariff (
    id      int PRIMARY KEY,
    model   text NOT NULL,
    input   jsonb NOT NULL,			-- as generated (mixed spellings)
    t       convbill.tariff,
    c       jsonb					-- canonical: t::text::jsonb
) ON COMMIT DROP;

INSERT INTO ce_tariff (id, model, input)
SELECT row_number() OVER (ORDER BY i, mi), m,
       ref.gen_tariff(m, 'event', random() < 0.3)
  FROM generate_series(1, :tariffs_per_model) i,
       unnest(ARRAY['flat', 'graduated', 'volume', 'package', 'percentage']) WITH ORDINALITY AS u(m, mi)
 ORDER BY i, mi;
UPDATE ce_tariff SET t = input::text::convbill.tariff;
UPDATE ce_tariff SET c = t::text::jsonb;

-- evaluations: per tariff, qty_per_tariff random quantities at random instants and zones
CREATE TEMP TABLE ce_input ON COMMIT DROP AS
SELECT id, k, ref.gen_qty(c) AS q, ref.gen_at() AS at, ref.gen_tz() AS tz
  FROM ce_tariff, generate_series(1, :qty_per_tariff) k
 ORDER BY id, k;

CREATE TEMP TABLE ce_eval ON COMMIT DROP AS
SELECT i.id, i.k, i.q, i.at, i.tz,
       cr.v AS c_rate, cr.err AS c_rate_err, ref.rate(x.c, i.q) AS r_rate,
       cb.v AS c_bq,   cb.err AS c_bq_err,   ref.billed_quantity(x.c, i.q) AS r_bq,
       ca.v AS c_at,   ca.err AS c_at_err,   ref.rate_at(x.c, i.q, i.at, i.tz) AS r_at
  FROM ce_input i
  JOIN ce_tariff x USING (id),
       LATERAL ref.c_rate(x.t, i.q) cr,
       LATERAL ref.c_billed_quantity(x.t, i.q) cb,
       LATERAL ref.c_rate_at(x.t, i.q, i.at, i.tz, 0) ca;

-- the generator really covers the features it claims to, for every model
SELECT is(
    (SELECT array_agg(model || ': ' || missing ORDER BY model, missing) FROM (
        SELECT m.model, f.missing
          FROM (SELECT DISTINCT model FROM ce_tariff) m,
               unnest(ARRAY['increment', 'no increment', 'setup_fee', 'minimum', 'maximum',
                            'half_up (default)', 'half_even', 'up', 'down', 'decimals 0',
                            'decimals 12', 'time_bands']) f(missing)
         WHERE NOT EXISTS (
             SELECT FROM ce_tariff x WHERE x.model = m.model AND CASE f.missing
                 WHEN 'increment'         THEN x.c ? 'increment'
                 WHEN 'no increment'      THEN NOT x.c ? 'increment'
                 WHEN 'setup_fee'         THEN x.c ? 'setup_fee'
                 WHEN 'minimum'           THEN x.c ? 'minimum'
                 WHEN 'maximum'           THEN x.c ? 'maximum'
                 WHEN 'half_up (default)' THEN ref.mode(x.c) = 'half_up'
                 WHEN 'decimals 0'        THEN ref.decimals(x.c) = 0
                 WHEN 'decimals 12'       THEN ref.decimals(x.c) = 12
                 WHEN 'time_bands'        THEN x.c ? 'time_bands'
                 ELSE ref.mode(x.c) = f.missing END)) s),
    NULL,
    'the random event tariffs cover increments, fees, bounds, every rounding mode and time bands for every model');

-- one assertion per model and function
SELECT is(count(*) FILTER (WHERE c_rate IS DISTINCT FROM r_rate), 0::bigint,
          format('%s: rate(t, q) equals the reference (%s evaluations)', m, count(*)))
  FROM ce_eval e JOIN ce_tariff x USING (id),
       unnest(ARRAY['flat', 'graduated', 'volume', 'package', 'percentage']) WITH ORDINALITY u(m, mi)
 WHERE x.model = u.m
 GROUP BY m, mi ORDER BY mi;

SELECT is(count(*) FILTER (WHERE c_bq IS DISTINCT FROM r_bq), 0::bigint,
          format('%s: billed_quantity(t, q) equals the reference (%s evaluations)', m, count(*)))
  FROM ce_eval e JOIN ce_tariff x USING (id),
       unnest(ARRAY['flat', 'graduated', 'volume', 'package', 'percentage']) WITH ORDINALITY u(m, mi)
 WHERE x.model = u.m
 GROUP BY m, mi ORDER BY mi;

SELECT is(count(*) FILTER (WHERE c_at IS DISTINCT FROM r_at), 0::bigint,
          format('%s: rate(t, q, at, tz) with time bands equals the reference (%s evaluations, %s in a band)',
                 m, count(*), count(*) FILTER (WHERE ref.pricing_at(x.c, e.at, e.tz) <> x.c)))
  FROM ce_eval e JOIN ce_tariff x USING (id),
       unnest(ARRAY['flat', 'graduated', 'volume', 'package', 'percentage']) WITH ORDINALITY u(m, mi)
 WHERE x.model = u.m
 GROUP BY m, mi ORDER BY mi;

-- the same evaluations in one statement per function, without the error-catching
-- wrapper: one call site (fn_extra cache) sees a different tariff on every row,
-- inline, compressed, and (second table) stored out of line
-- (the plain 2 kB pad makes every row long enough for the toaster to run; it
-- then moves t, of storage external, out of line)
CREATE TEMP TABLE ce_ext (id int PRIMARY KEY, t convbill.tariff, pad text) ON COMMIT DROP;
ALTER TABLE ce_ext ALTER COLUMN t SET STORAGE EXTERNAL, ALTER COLUMN pad SET STORAGE PLAIN,
                   SET (toast_tuple_target = 128);
INSERT INTO ce_ext SELECT id, t::text::convbill.tariff, repeat('x', 2000) FROM ce_tariff;

-- how many values a table keeps in its TOAST table
CREATE FUNCTION ref.toasted_values(rel regclass) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('SELECT count(DISTINCT chunk_id) FROM %s',
                   (SELECT reltoastrelid::regclass FROM pg_class WHERE oid = rel)) INTO n;
    RETURN n;
END;
$$;

SELECT is(count(*) FILTER (WHERE convbill.rate(x.t, e.q) IS DISTINCT FROM e.r_rate
                              OR convbill.billed_quantity(x.t, e.q) IS DISTINCT FROM e.r_bq
                              OR convbill.rate(x.t, e.q, e.at, e.tz) IS DISTINCT FROM e.r_at),
          0::bigint,
          format('one statement over %s tariffs (%s stored compressed): rate, billed_quantity and rate at equal the reference',
                 count(DISTINCT x.id),
                 count(DISTINCT x.id) FILTER (WHERE pg_column_compression(x.t) IS NOT NULL)))
  FROM ce_eval e JOIN ce_tariff x USING (id);

SELECT is(count(*) FILTER (WHERE convbill.rate(x.t, e.q) IS DISTINCT FROM e.r_rate
                              OR convbill.billed_quantity(x.t, e.q) IS DISTINCT FROM e.r_bq
                              OR convbill.rate(x.t, e.q, e.at, e.tz) IS DISTINCT FROM e.r_at),
          0::bigint,
          format('one statement over %s tariffs (%s stored out of line): rate, billed_quantity and rate at equal the reference',
                 count(DISTINCT x.id),
                 ref.toasted_values('ce_ext')))
  FROM ce_eval e JOIN ce_ext x USING (id);

-- rounding: known answers (price 0.0001 per unit, 0 decimals; quantities give
-- 2.5, 3.5, 2.5001, 2.4999, 0.5, 0.0001)
SELECT is(ARRAY(SELECT convbill.rate(format('{"price": "0.0001", "rounding": {"decimals": 0, "mode": "%s"}}', mode)::convbill.tariff, q)
                  FROM unnest(ARRAY[25000, 35000, 25001, 24999, 5000, 1]) WITH ORDINALITY u(q, i) ORDER BY i),
          want, format('rounding %s: 2.5, 3.5, 2.5001, 2.4999, 0.5, 0.0001 -> %s', mode, want))
  FROM (VALUES (1, 'half_up',   ARRAY[3, 4, 3, 2, 1, 0]::numeric[]),
               (2, 'half_even', ARRAY[2, 4, 3, 2, 0, 0]::numeric[]),
               (3, 'up',        ARRAY[3, 4, 3, 3, 1, 1]::numeric[]),
               (4, 'down',      ARRAY[2, 3, 2, 2, 0, 0]::numeric[])) k(i, mode, want)
 ORDER BY i;

-- rounding: exact ties and near-ties (± 10^-13) at every decimals 0..12, every mode:
-- cost (n + 1/2)·10^-d from price 0.0001 and q = (n + 1/2)·10^(4-d)
CREATE TEMP TABLE ce_tie ON COMMIT DROP AS
SELECT d, mode, q, format('{"price": "0.0001", "rounding": {"decimals": %s, "mode": "%s"}}', d, mode)::jsonb AS j
  FROM generate_series(0, 12) d,
       unnest(ARRAY['half_up', 'half_even', 'up', 'down']) mode,
       LATERAL (SELECT (ref.rand_int(0, 99999) + 0.5) * ('1e' || (4 - d))::numeric + delta AS q
                  FROM generate_series(1, 8) n, unnest(ARRAY[0, 0, 0.000000001, -0.000000001]) delta) s;
SELECT is(count(*) FILTER (WHERE convbill.rate(j::text::convbill.tariff, q) IS DISTINCT FROM ref.rate(j, q)),
          0::bigint,
          format('rounding ties and near-ties at decimals 0..12 in every mode equal the reference (%s evaluations)', count(*)))
  FROM ce_tie;
SELECT diag(format('rounding mismatch: tariff %s, quantity %s: C %s, reference %s',
                   j::text, q, convbill.rate(j::text::convbill.tariff, q), ref.rate(j, q)))
  FROM ce_tie WHERE convbill.rate(j::text::convbill.tariff, q) IS DISTINCT FROM ref.rate(j, q)
 LIMIT 5;

-- SPEC §1: negative quantity is an error (22023)
SELECT throws_ok($$ SELECT convbill.rate('{"price": "1"}'::convbill.tariff, -0.000000001) $$,
                 '22023', NULL, 'rate() rejects a negative quantity');
SELECT throws_ok($$ SELECT convbill.billed_quantity('{"price": "1", "increment": {"first": 60, "next": 1}}'::convbill.tariff, -1) $$,
                 '22023', NULL, 'billed_quantity() rejects a negative quantity');
SELECT throws_ok($$ SELECT convbill.rate('{"price": "1"}'::convbill.tariff, -5, now(), 'UTC', 0) $$,
                 '22023', NULL, 'rate(t, q, at, tz) rejects a negative quantity');

-- the first mismatch of each kind and model, to reproduce by hand
SELECT diag(format(E'%s mismatch (seed %s): tariff %s\n  quantity %s at %s in %s: C %s%s, reference %s',
                   kind, :'seed', c::text, q, at, tz, coalesce(cv::text, 'NULL'),
                   coalesce(' (' || err || ')', ''), rv))
  FROM (
    SELECT DISTINCT ON (kind, x.model) kind, x.c, e.q, e.at, e.tz, cv, err, rv
      FROM ce_eval e JOIN ce_tariff x USING (id),
           LATERAL (VALUES (x.model || ' rate(t, q)', e.c_rate, e.c_rate_err, e.r_rate),
                           (x.model || ' billed_quantity', e.c_bq, e.c_bq_err, e.r_bq),
                           (x.model || ' rate(t, q, at, tz)', e.c_at, e.c_at_err, e.r_at)) v(kind, cv, err, rv)
     WHERE cv IS DISTINCT FROM rv
     ORDER BY kind, x.model, e.id, e.k
  ) first_mismatch;

SELECT * FROM finish();
ROLLBACK;
