-------------------------------------------------------------------------------
-- property_cycle.sql — SPEC §1 scope "cycle": the charges of a period always sum
-- to P(total), whatever order its events arrive in.
--
-- For random cycle tariffs of every model (random tiers with random flat fees,
-- increments or none, setup fee, minimum/maximum sometimes, every rounding mode
-- with 0..12 decimals) and random event sequences (zero, whole and fractional
-- quantities, quantities on tier/package/increment edges), each sequence is
-- rated in three orders (as generated, reversed, shuffled), every event with
--     rate(t, q_k, at, 'UTC', used_before_k)
-- where used_before_k is the sum of billed_quantity(t, q_j) of the events rated
-- before it in that order.  Property, exactly (numeric equality):
--     Σ_k rate(...) = ref.period_price(t, total billed)
--                     + setup_fee × #(events with billed quantity > 0)
-- for each of the three orders (so the three sums are equal too); and each
-- increment equals the reference P(used_before + bq) − P(used_before) + setup_fee.
--
-- The setup fee of a generated cycle tariff has at most the tariff's rounding
-- decimals: SPEC §1 says it "is added per event" but not whether a fee finer
-- than the rounding is rounded on its own (the C rounds it per event), so this
-- test stays on ground the SPEC fixes.
--
-- Reproducible: the seed is fixed; change it with  pg_prove --set seed=0.123 ...
-------------------------------------------------------------------------------
BEGIN;
\ir setup/reference.sql
\if :{?seed}
\else
\set seed 0.161803
\endif
\set tariffs_per_model 200
\set sequences_per_tariff 4
\set max_events 12

SELECT setseed(:seed) \gset
SELECT plan(13);

CREATE TEMP TABLE pc_tariff (
    id      int PRIMARY KEY,
    model   text NOT NULL,
    input   jsonb NOT NULL,
    t       convbill.tariff,
    c       jsonb					-- canonical: t::text::jsonb
) ON COMMIT DROP;

INSERT INTO pc_tariff (id, model, input)
SELECT row_number() OVER (ORDER BY i, mi), m, ref.gen_tariff(m, 'cycle')
  FROM generate_series(1, :tariffs_per_model) i,
       unnest(ARRAY['flat', 'graduated', 'volume', 'package', 'percentage']) WITH ORDINALITY AS u(m, mi)
 ORDER BY i, mi;
UPDATE pc_tariff SET t = input::text::convbill.tariff;
UPDATE pc_tariff SET c = t::text::jsonb;

-- sequences: 0..max_events events each (an empty period sums to 0 = P(0));
-- rnd is the shuffled order, at a random instant of the period
CREATE TEMP TABLE pc_seq ON COMMIT DROP AS
SELECT id, seq, ref.rand_int(0, :max_events) AS n
  FROM pc_tariff, generate_series(1, :sequences_per_tariff) seq
 ORDER BY id, seq;

CREATE TEMP TABLE pc_event ON COMMIT DROP AS
SELECT s.id, s.seq, pos, ref.gen_qty(x.c) AS q, random() AS rnd,
       timestamptz '2024-03-01 00:00:00+00' + random() * interval '31 days' AS at
  FROM pc_seq s JOIN pc_tariff x USING (id), generate_series(1, s.n) pos
 ORDER BY s.id, s.seq, pos;

-- billed quantities, from C (what a caller adds to used_before) and the reference
ALTER TABLE pc_event ADD c_bq numeric, ADD r_bq numeric;
UPDATE pc_event e
   SET c_bq = (ref.c_billed_quantity(x.t, e.q)).v, r_bq = ref.billed_quantity(x.c, e.q)
  FROM pc_tariff x WHERE x.id = e.id;

-- each event rated in three orders: 1 as generated, 2 reversed, 3 shuffled
CREATE TEMP TABLE pc_rated ON COMMIT DROP AS
WITH ordered AS (
    SELECT e.id, e.seq, o.ord, e.pos, e.q, e.at, e.c_bq, e.r_bq,
           coalesce(sum(e.c_bq) OVER (PARTITION BY e.id, e.seq, o.ord ORDER BY o.key
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS used_before
      FROM pc_event e,
           LATERAL (VALUES (1, e.pos::float8), (2, -e.pos::float8), (3, e.rnd)) o(ord, key)
)
SELECT o.*, r.v AS inc, r.err,
       ref.cycle_rate(x.c, o.q, o.used_before) AS r_inc
  FROM ordered o JOIN pc_tariff x USING (id),
       LATERAL ref.c_rate_at(x.t, o.q, o.at, 'UTC', o.used_before) r;

-- per sequence: the three sums and the expected P(total) + setup fees
CREATE TEMP TABLE pc_check ON COMMIT DROP AS
SELECT s.id, s.seq, x.model,
       sum(r.inc) FILTER (WHERE r.ord = 1) AS sum1,
       sum(r.inc) FILTER (WHERE r.ord = 2) AS sum2,
       sum(r.inc) FILTER (WHERE r.ord = 3) AS sum3,
       count(*) FILTER (WHERE r.id IS NOT NULL AND (r.err IS NOT NULL OR r.inc IS NULL)) AS errors,
       count(r.id) AS rate_calls,
       (SELECT ref.period_price(x.c, coalesce(sum(e.r_bq), 0))
               + coalesce(ref.num(x.c -> 'setup_fee'), 0) * count(*) FILTER (WHERE e.r_bq > 0)
          FROM pc_event e WHERE e.id = s.id AND e.seq = s.seq) AS expected
  FROM pc_seq s JOIN pc_tariff x USING (id)
  LEFT JOIN pc_rated r ON r.id = s.id AND r.seq = s.seq
 GROUP BY s.id, s.seq, x.model, x.c;
UPDATE pc_check SET sum1 = coalesce(sum1, 0), sum2 = coalesce(sum2, 0), sum3 = coalesce(sum3, 0)
 WHERE rate_calls = 0;

-- the generator covers what it claims, for every model
SELECT is(
    (SELECT array_agg(model || ': ' || missing ORDER BY model, missing) FROM (
        SELECT m.model, f.missing
          FROM (SELECT DISTINCT model FROM pc_tariff) m,
               unnest(ARRAY['increment', 'no increment', 'setup_fee', 'minimum', 'maximum',
                            'half_up', 'half_even', 'up', 'down', 'decimals 0', 'decimals 12',
                            'negative increment', 'zero quantity']) f(missing)
         WHERE NOT EXISTS (
             SELECT FROM pc_tariff x WHERE x.model = m.model AND CASE f.missing
                 WHEN 'increment'          THEN x.c ? 'increment'
                 WHEN 'no increment'       THEN NOT x.c ? 'increment'
                 WHEN 'setup_fee'          THEN x.c ? 'setup_fee'
                 WHEN 'minimum'            THEN x.c ? 'minimum'
                 WHEN 'maximum'            THEN x.c ? 'maximum'
                 WHEN 'decimals 0'         THEN ref.decimals(x.c) = 0
                 WHEN 'decimals 12'        THEN ref.decimals(x.c) = 12
                 WHEN 'negative increment' THEN x.model <> 'volume'
                                                OR EXISTS (SELECT FROM pc_rated r WHERE r.id = x.id AND r.inc < 0)
                 WHEN 'zero quantity'      THEN EXISTS (SELECT FROM pc_event e WHERE e.id = x.id AND e.q = 0)
                 ELSE ref.mode(x.c) = f.missing END)) s),
    NULL,
    'the random cycle tariffs cover increments, fees, bounds, every rounding mode, zero events and volume tier crossings for every model');

-- the property, one assertion per model
SELECT is(count(*) FILTER (WHERE errors > 0 OR sum1 IS DISTINCT FROM expected
                                 OR sum2 IS DISTINCT FROM expected OR sum3 IS DISTINCT FROM expected),
          0::bigint,
          format('%s: cycle increments sum to P(total) + setup fees in any order (%s tariffs, %s sequences, %s rate calls)',
                 m, count(DISTINCT id), count(*), sum(rate_calls)))
  FROM pc_check c,
       unnest(ARRAY['flat', 'graduated', 'volume', 'package', 'percentage']) WITH ORDINALITY u(m, mi)
 WHERE c.model = u.m
 GROUP BY m, mi ORDER BY mi;

-- each increment on its own
SELECT is(count(*) FILTER (WHERE r.inc IS DISTINCT FROM r.r_inc), 0::bigint,
          format('%s: each increment equals P(used_before + bq) - P(used_before) + setup_fee (%s events)',
                 m, count(*)))
  FROM pc_rated r JOIN pc_tariff x USING (id),
       unnest(ARRAY['flat', 'graduated', 'volume', 'package', 'percentage']) WITH ORDINALITY u(m, mi)
 WHERE x.model = u.m
 GROUP BY m, mi ORDER BY mi;

-- known answers from the SPEC text
SELECT is(ARRAY[convbill.rate(t, 10, now(), 'UTC', 0), convbill.rate(t, 2, now(), 'UTC', 10)],
          ARRAY[10, -4]::numeric[],
          'volume cycle: crossing into a cheaper tier yields a negative increment (P(10) = 10, P(12) = 6)')
  FROM (SELECT '{"model": "volume", "tiers": [{"up_to": 10, "price": "1"}, {"up_to": null, "price": "0.5"}], "scope": "cycle"}'::convbill.tariff AS t) s;

SELECT is(ARRAY[convbill.rate(t, 1, now(), 'UTC', 0), convbill.rate(t, 1, now(), 'UTC', 1),
                convbill.rate(t, 0, now(), 'UTC', 2), convbill.rate(t, 7, now(), 'UTC', 2)],
          ARRAY[5.25, 0.25, 0, 4.25]::numeric[],
          'cycle minimum is a period commitment: P(1) = P(2) = 5, P(9) = 9; setup fee 0.25 per event with units, none for a zero event')
  FROM (SELECT '{"price": "1", "minimum": "5", "setup_fee": "0.25", "scope": "cycle"}'::convbill.tariff AS t) s;

-- the first failing sequence of each model, to reproduce by hand
SELECT diag(format(E'%s: sequence mismatch (seed %s, tariff id %s, sequence %s)\n  tariff %s\n  quantities in generated order %s\n  increments (order 1) %s\n  sums: as generated %s, reversed %s, shuffled %s; expected %s; errors %s %s',
                   c.model, :'seed', c.id, c.seq, x.c::text,
                   (SELECT array_agg(e.q ORDER BY e.pos) FROM pc_event e WHERE e.id = c.id AND e.seq = c.seq),
                   (SELECT array_agg(r.inc ORDER BY r.pos) FROM pc_rated r WHERE r.id = c.id AND r.seq = c.seq AND r.ord = 1),
                   c.sum1, c.sum2, c.sum3, c.expected, c.errors,
                   coalesce((SELECT min(r.err) FROM pc_rated r WHERE r.id = c.id AND r.seq = c.seq), '')))
  FROM (SELECT DISTINCT ON (model) * FROM pc_check
         WHERE errors > 0 OR sum1 IS DISTINCT FROM expected
               OR sum2 IS DISTINCT FROM expected OR sum3 IS DISTINCT FROM expected
         ORDER BY model, id, seq) c
  JOIN pc_tariff x USING (id);

SELECT diag(format(E'%s: increment mismatch (seed %s): tariff %s\n  quantity %s after used_before %s (order %s): C %s%s, reference %s',
                   x.model, :'seed', x.c::text, r.q, r.used_before, r.ord,
                   coalesce(r.inc::text, 'NULL'), coalesce(' (' || r.err || ')', ''), r.r_inc))
  FROM (SELECT DISTINCT ON (x.model) r.*
          FROM pc_rated r JOIN pc_tariff x USING (id)
         WHERE r.inc IS DISTINCT FROM r.r_inc
         ORDER BY x.model, r.id, r.seq, r.ord, r.pos) r
  JOIN pc_tariff x USING (id);

SELECT * FROM finish();
ROLLBACK;
