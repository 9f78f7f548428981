-- tariff_io: text and binary I/O of convbill.tariff, its canonical form,
-- equality, jsonb casts and the accessor functions (SPEC §1).
SET search_path = convbill, public;

-------------------------------------------------------------------------------
-- 1. Canonical output: fixed key order (model, price, tiers, package,
--    percentage, increment, setup_fee, minimum, maximum, time_bands, scope,
--    rounding, currency, unit), amounts and prices as strings without trailing
--    zeros, quantities as JSON numbers, defaults left out.  One tariff per model,
--    written with keys out of order and with redundant zeros.
-------------------------------------------------------------------------------
CREATE TEMP TABLE io_samples (id int PRIMARY KEY, src text);
INSERT INTO io_samples VALUES
  -- flat with everything top-level a tariff can have
  (1, '{"unit": "second", "currency": "EUR", "rounding": {"mode": "half_even", "decimals": 4},
        "maximum": "5.00", "minimum": 0.20, "setup_fee": "0.10", "increment": {"next": 1, "first": 60},
        "price": "0.0500", "model": "flat"}'),
  -- graduated with tier flat fees (a zero flat fee is a default and is left out)
  (2, '{"model": "graduated", "currency": "USD",
        "tiers": [{"price": 7, "up_to": 5}, {"up_to": 10, "price": "6.50", "flat": "0"},
                  {"up_to": null, "price": 6, "flat": 2}]}'),
  -- volume with fractional tier bounds
  (3, '{"model": "volume", "tiers": [{"up_to": 0.5, "price": "0.0006000"}, {"up_to": null, "price": "1E-4"}]}'),
  -- package with free units
  (4, '{"model": "package", "package": {"free": 100, "price": "5.00", "size": 1e2}}'),
  -- package without free units (free 0 is the default)
  (5, '{"model": "package", "package": {"size": 1024, "price": 0.01, "free": 0}}'),
  -- percentage with a fixed part
  (6, '{"model": "percentage", "percentage": {"fixed": "0.30", "rate": "2.90"}}'),
  -- cycle scope; an empty time_bands array is the same as none
  (7, '{"scope": "cycle", "time_bands": [], "model": "volume", "minimum": 10,
        "tiers": [{"up_to": 100, "price": 1}, {"up_to": null, "price": "0.5"}]}'),
  -- time bands: days in canonical order mon..sun, seconds shown only when not 0,
  -- a band with no name/days/from/to covers the whole week, band pricing with fees
  (8, '{"price": "0.10", "increment": {"first": 30, "next": 6}, "rounding": {"decimals": 2, "mode": "up"},
        "time_bands": [
          {"name": "peak", "days": ["fri", "mon", "wed", "thu", "tue"], "from": "08:00:00", "to": "18:00:30",
           "tariff": {"price": "0.2", "setup_fee": 1, "maximum": 3}},
          {"tariff": {"model": "volume", "tiers": [{"up_to": null, "price": 1}]}}]}'),
  -- rounding that differs from the default only in decimals, or only in mode
  (9, '{"price": 1, "rounding": {"decimals": 12}}'),
  (10, '{"price": 1, "rounding": {"mode": "down"}}'),
  -- strings are escaped in the output; \u00e9 is stored as UTF-8 and shown as é
  (11, '{"price": 1, "unit": "m\u00b3 \"cubic\" \\ metre\n",
         "time_bands": [{"name": "caf\u00e9", "days": ["sun"], "tariff": {"price": 0}}]}'),
  -- the smallest amount (12 decimals) and quantity (9 decimals)
  (12, '{"model": "graduated", "tiers": [{"up_to": 0.000000001, "price": "0.000000000001"},
                                         {"up_to": null, "price": "123456789012.5"}]}');

SELECT id, src::tariff AS canonical FROM io_samples ORDER BY id;

-------------------------------------------------------------------------------
-- 2. Round trip: text -> tariff -> text -> tariff gives an equal tariff, and the
--    canonical text is a fixed point of input+output, for every sample.
-------------------------------------------------------------------------------
SELECT id,
       src::tariff = src::tariff::text::tariff AS round_trip_equal,
       src::tariff::text = src::tariff::text::tariff::text AS canonical_is_fixed_point
  FROM io_samples ORDER BY id;

-------------------------------------------------------------------------------
-- 3. Equal and unequal tariffs.  Spellings of the same tariff are equal; any
--    change of meaning makes them unequal.  = and <> are negators.
-------------------------------------------------------------------------------
SELECT a, b, a::tariff = b::tariff AS eq, a::tariff <> b::tariff AS ne
  FROM (VALUES
    -- defaults omitted: scope event, model flat, number vs string, trailing zeros
    ('{"scope":"event","price":1}', '{"price":"1.000"}'),
    ('{"model":"flat","price":"1e0"}', '{"price":1}'),
    ('{"price":1,"rounding":{"decimals":6,"mode":"half_up"}}', '{"price":1}'),
    ('{"price":1,"rounding":{}}', '{"price":1}'),
    ('{"price":1,"setup_fee":0}', '{"price":1}'),
    ('{"model":"package","package":{"size":10,"price":1,"free":0}}', '{"model":"package","package":{"size":10,"price":1}}'),
    ('{"model":"volume","tiers":[{"up_to":null,"price":1,"flat":0}]}', '{"model":"volume","tiers":[{"up_to":null,"price":1}]}'),
    ('{"price":1,"time_bands":[{"days":["tue","mon"],"from":"08:00:00","tariff":{"price":2}}]}',
     '{"price":1,"time_bands":[{"days":["mon","tue"],"from":"08:00","to":"24:00","tariff":{"price":2}}]}'),
    ('{"price":1,"time_bands":[{"tariff":{"price":2}}]}',
     '{"price":1,"time_bands":[{"days":["mon","tue","wed","thu","fri","sat","sun"],"from":"00:00","to":"24:00","tariff":{"model":"flat","price":2}}]}'),
    ('{"price":1,"unit":"caf\u00e9"}', '{"price":1,"unit":"café"}'),
    -- changes of meaning
    ('{"price":1}', '{"price":"1.000000000001"}'),
    ('{"price":1}', '{"price":1,"scope":"cycle"}'),
    ('{"price":1}', '{"price":1,"currency":"EUR"}'),
    ('{"price":1}', '{"price":1,"unit":"sms"}'),
    ('{"price":1}', '{"price":1,"rounding":{"decimals":2}}'),
    ('{"price":1}', '{"price":1,"rounding":{"mode":"half_even"}}'),
    ('{"price":1}', '{"price":1,"increment":{"first":1,"next":1}}'),
    -- an explicit minimum of 0 is kept (it is shown in the output), so it differs
    ('{"price":1}', '{"price":1,"minimum":0}'),
    ('{"model":"graduated","tiers":[{"up_to":null,"price":1}]}', '{"model":"volume","tiers":[{"up_to":null,"price":1}]}'),
    ('{"price":1,"time_bands":[{"name":"a","tariff":{"price":2}}]}', '{"price":1,"time_bands":[{"name":"b","tariff":{"price":2}}]}'),
    ('{"price":1,"time_bands":[{"to":"18:00","tariff":{"price":2}}]}', '{"price":1,"time_bands":[{"to":"18:00:01","tariff":{"price":2}}]}')
  ) v(a, b);

-- Number spellings: a JSON number or a numeric string, with or without an
-- exponent, is read exactly; each of these is the price 1.
SELECT '{"price": "1"}'::tariff = '{"price": 1}'::tariff AS numeric_string;
SELECT '{"price": 1E+0}'::tariff = '{"price": 1}'::tariff AS exponent_plus;
SELECT '{"price": 0.1e1}'::tariff = '{"price": 1}'::tariff AS fraction_exponent;
SELECT '{"price": 100e-2}'::tariff = '{"price": 1}'::tariff AS negative_exponent;
SELECT '{"price": 1.00000000000000000000000000000000000000000}'::tariff = '{"price": 1}'::tariff AS many_trailing_zeros;
-- 31 digits times 10^-30 is exactly 1 (valid JSON, in range, 0 decimals)
SELECT '{"price": 1000000000000000000000000000000e-30}'::tariff = '{"price": 1}'::tariff AS long_mantissa_negative_exponent;
-- 37 significant digits, exactly 12 decimals: 1.23e36 at 10^12 fits the
-- 128-bit range (1.7e38), so it is accepted and printed unchanged
SELECT '{"price": "1234567890123456789012345.123456789012"}'::tariff AS many_significant_digits;

-- Equality works as a join/filter operator over stored values.
SELECT s.id, o.id AS other_id
  FROM io_samples s JOIN io_samples o ON s.src::tariff = o.src::tariff
 ORDER BY 1, 2;

-------------------------------------------------------------------------------
-- 4. Binary send/recv.  tariff_send() is a version byte (1) followed by the
--    canonical JSON text; tariff_recv() validates it again.
-------------------------------------------------------------------------------
SELECT tariff_send('{"price": "1.50"}');
SELECT get_byte(tariff_send(src::tariff), 0) AS version,
       convert_from(substr(tariff_send(src::tariff), 2), 'UTF8') = src::tariff::text AS payload_is_canonical_text
  FROM io_samples WHERE id IN (1, 8, 11) ORDER BY id;

-- COPY ... (FORMAT binary) out and back in goes through tariff_send/tariff_recv.
CREATE TEMP TABLE io_bin_src AS SELECT id, src::tariff AS t FROM io_samples;
CREATE TEMP TABLE io_bin_dst (id int, t tariff);
\copy io_bin_src TO 'results/tariff_io.bin' WITH (FORMAT binary)
\copy io_bin_dst FROM 'results/tariff_io.bin' WITH (FORMAT binary)
SELECT s.id, s.t = d.t AS equal_after_binary_copy
  FROM io_bin_src s FULL JOIN io_bin_dst d USING (id) ORDER BY 1;

-- Hand-made binary values (written as bytea, whose binary COPY form is the same
-- length-prefixed bytes): a valid one is accepted and canonicalised; a wrong
-- version byte and an invalid tariff are rejected.
CREATE TEMP TABLE io_raw (id int, b bytea);
INSERT INTO io_raw VALUES (100, '\x01'::bytea || convert_to('{"price": "2.50", "unit": "sms"}', 'UTF8'));
\copy io_raw TO 'results/tariff_io_raw.bin' WITH (FORMAT binary)
\copy io_bin_dst FROM 'results/tariff_io_raw.bin' WITH (FORMAT binary)
SELECT id, t FROM io_bin_dst WHERE id = 100;
TRUNCATE io_raw;
INSERT INTO io_raw VALUES (101, '\x02'::bytea || convert_to('{"price": 1}', 'UTF8'));
\copy io_raw TO 'results/tariff_io_raw.bin' WITH (FORMAT binary)
\copy io_bin_dst FROM 'results/tariff_io_raw.bin' WITH (FORMAT binary)
TRUNCATE io_raw;
INSERT INTO io_raw VALUES (102, '\x01'::bytea || convert_to('{"price": -1}', 'UTF8'));
\copy io_raw TO 'results/tariff_io_raw.bin' WITH (FORMAT binary)
\copy io_bin_dst FROM 'results/tariff_io_raw.bin' WITH (FORMAT binary)
SELECT count(*) AS rows_after_rejected_copies FROM io_bin_dst;

-------------------------------------------------------------------------------
-- 5. jsonb casts (through the text form, both ways).
-------------------------------------------------------------------------------
SELECT '{"price": "0.0500", "currency": "EUR"}'::tariff::jsonb;
SELECT jsonb_typeof('{"price": 1}'::tariff::jsonb -> 'price') AS amount_is_string;
SELECT jsonb_typeof('{"model": "package", "package": {"size": 100, "price": 5}}'::tariff::jsonb #> '{package,size}') AS quantity_is_number;
SELECT '{"model": "volume", "tiers": [{"up_to": null, "price": 3}]}'::jsonb::tariff;
SELECT id, src::tariff::jsonb::tariff = src::tariff AS jsonb_round_trip FROM io_samples ORDER BY id;
-- jsonb keeps only the last of duplicate keys before the tariff sees the text,
-- whereas tariff text input rejects duplicate keys (see tariff_errors).
SELECT '{"price": 1, "price": 2}'::jsonb::tariff;
-- a jsonb value that is not a valid tariff fails like text input
SELECT '{"price": 1, "colour": "red"}'::jsonb::tariff;

-------------------------------------------------------------------------------
-- 6. Accessors: currency and unit (NULL when not set) and scope.
-------------------------------------------------------------------------------
SELECT id, tariff_currency(src::tariff) AS currency, tariff_unit(src::tariff) AS unit,
       tariff_scope(src::tariff) AS scope
  FROM io_samples WHERE id <> 11 ORDER BY id;
-- the unit is returned decoded (sample 11 has quotes, a backslash and a newline)
SELECT tariff_unit(src::tariff) = E'm\u00b3 "cubic" \\ metre\n' AS unit_decoded
  FROM io_samples WHERE id = 11;
SELECT tariff_scope('{"price": 1, "scope": "event"}') AS explicit_event,
       tariff_currency('{"price": 1, "currency": "JPY"}') AS jpy,
       tariff_currency(NULL) IS NULL AS strict_null;

-------------------------------------------------------------------------------
-- 7. The largest tariff (32 bands of 64 tiers plus 64 top-level tiers, about
--    107 kB in binary form, so TOASTed when stored) reads back equal from a
--    table and its text round-trips.
-------------------------------------------------------------------------------
CREATE TEMP TABLE io_big (t tariff);
INSERT INTO io_big
SELECT jsonb_build_object(
         'model', 'graduated', 'tiers', tiers,
         'time_bands', (SELECT jsonb_agg(jsonb_build_object('name', 'band' || b, 'days', '["sun"]'::jsonb,
                                                           'from', format('%s:00', lpad((b % 24)::text, 2, '0')),
                                                           'tariff', jsonb_build_object('model', 'volume', 'tiers', tiers))
                                          ORDER BY b)
                          FROM generate_series(1, 32) b))::text::tariff
  FROM (SELECT jsonb_agg(jsonb_build_object('up_to', CASE WHEN i < 64 THEN to_jsonb(i * 10) ELSE 'null'::jsonb END,
                                            'price', i) ORDER BY i) AS tiers
          FROM generate_series(1, 64) i) s;
SELECT t = t::text::tariff AS round_trip_equal,
       t = (SELECT t FROM io_big) AS equal_to_itself_read_again,
       jsonb_array_length(t::jsonb -> 'time_bands') AS bands,
       jsonb_array_length(t::jsonb #> '{time_bands,31,tariff,tiers}') AS last_band_tiers
  FROM io_big;
