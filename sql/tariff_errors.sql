-- tariff_errors: every way a tariff or a rating call can be rejected.
-- Contract (SPEC §0, §1): bad input fails at input time with SQLSTATE 22023
-- (invalid_parameter_value) or 22P02 (invalid_text_representation) and a
-- message naming the bad field (by its JSON path).  Each bad input is one row
-- "SQLSTATE: message", so the SQLSTATE is visible in the expected output.
SET search_path = convbill, public;
SET TimeZone = 'UTC';

-- try_tariff(json): 'ok' if the text is a valid tariff, else 'SQLSTATE: message'.
CREATE FUNCTION pg_temp.try_tariff(j text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM j::convbill.tariff;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- try_sql(query): 'ok: <first column>' or 'SQLSTATE: message'.
CREATE FUNCTION pg_temp.try_sql(q text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
    EXECUTE q INTO r;
    RETURN 'ok: ' || coalesce(r, 'NULL');
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- Sanity: the helper accepts a valid tariff.
SELECT pg_temp.try_tariff('{"price": 1}');

-- Models and fields
SELECT pg_temp.try_tariff('{"model": "tiered", "price": 1}') AS unknown_model;
SELECT pg_temp.try_tariff('{"model": 1, "price": 1}') AS model_not_string;
-- A quoted input value is cut to 40 bytes, never inside a UTF-8 character:
-- 25 x "é" (2 bytes each) -> 20 x "é" (40 bytes); "a" + 25 x "é" -> "a" + 19 x "é"
-- (39 bytes: byte 40 would split the 20th "é").
SELECT pg_temp.try_tariff(format('{"model": "%s", "price": 1}', repeat('é', 25))) AS long_model_even;
SELECT pg_temp.try_tariff(format('{"model": "a%s", "price": 1}', repeat('é', 25))) AS long_model_odd;
SELECT pg_temp.try_tariff('{"price": 1, "colour": "red"}') AS unknown_field;
SELECT pg_temp.try_tariff('{"model": "package", "package": {"size": 10, "price": 1, "extra": 1}}') AS unknown_nested_field;
SELECT pg_temp.try_tariff('{}') AS flat_without_price;
SELECT pg_temp.try_tariff('{"model": "graduated"}') AS graduated_without_tiers;
SELECT pg_temp.try_tariff('{"model": "volume", "price": 1}') AS volume_without_tiers;
SELECT pg_temp.try_tariff('{"model": "package", "package": {"price": 5}}') AS package_without_size;
SELECT pg_temp.try_tariff('{"model": "package", "package": {"size": 100}}') AS package_without_price;
SELECT pg_temp.try_tariff('{"model": "percentage", "percentage": {"fixed": 1}}') AS percentage_without_rate;
SELECT pg_temp.try_tariff('{"price": 1, "tiers": [{"up_to": null, "price": 1}]}') AS tiers_on_flat;
SELECT pg_temp.try_tariff('{"model": "graduated", "price": 1, "tiers": [{"up_to": null, "price": 1}]}') AS price_on_graduated;
SELECT pg_temp.try_tariff('{"model": "percentage", "percentage": {"rate": 1}, "package": {"size": 1, "price": 1}}') AS package_on_percentage;

-- Tiers
SELECT pg_temp.try_tariff('{"model": "graduated", "tiers": [{"up_to": 10, "price": 1}, {"up_to": 5, "price": 1}, {"up_to": null, "price": 1}]}') AS tiers_not_ascending;
SELECT pg_temp.try_tariff('{"model": "graduated", "tiers": [{"up_to": 10, "price": 1}, {"up_to": 10, "price": 1}, {"up_to": null, "price": 1}]}') AS tiers_equal_up_to;
SELECT pg_temp.try_tariff('{"model": "volume", "tiers": [{"up_to": 10, "price": 1}, {"up_to": 20, "price": 1}]}') AS tiers_not_ending_unbounded;
SELECT pg_temp.try_tariff('{"model": "volume", "tiers": [{"up_to": null, "price": 1}, {"up_to": null, "price": 1}]}') AS non_last_unbounded;
SELECT pg_temp.try_tariff('{"model": "volume", "tiers": [{"price": 1}]}') AS tier_without_up_to;
SELECT pg_temp.try_tariff('{"model": "volume", "tiers": []}') AS no_tiers;
SELECT pg_temp.try_tariff('{"model": "volume", "tiers": {"up_to": null}}') AS tiers_not_array;
SELECT pg_temp.try_tariff('{"model": "graduated", "tiers": [{"up_to": 0, "price": 1}, {"up_to": null, "price": 1}]}') AS tier_up_to_zero;
SELECT pg_temp.try_tariff('{"model": "graduated", "tiers": [{"up_to": 10, "price": -1}, {"up_to": null, "price": 1}]}') AS negative_tier_price;
SELECT pg_temp.try_tariff('{"model": "graduated", "tiers": [{"up_to": 10, "price": 1}, {"up_to": null, "price": 1, "flat": "-0.01"}]}') AS negative_tier_flat;
SELECT pg_temp.try_tariff('{"model": "graduated", "tiers": [{"up_to": 10, "price": 1, "cap": 3}, {"up_to": null, "price": 1}]}') AS unknown_tier_field;
-- 65 tiers (the limit is 64): 64 bounded tiers up_to 1..64 and an unbounded one
SELECT pg_temp.try_tariff(jsonb_build_object('model', 'graduated', 'tiers',
         (SELECT jsonb_agg(jsonb_build_object('up_to', CASE WHEN i < 65 THEN to_jsonb(i) ELSE 'null'::jsonb END,
                                              'price', 1) ORDER BY i)
            FROM generate_series(1, 65) i))::text) AS too_many_tiers;
-- ... and 64 tiers is accepted
SELECT pg_temp.try_tariff(jsonb_build_object('model', 'graduated', 'tiers',
         (SELECT jsonb_agg(jsonb_build_object('up_to', CASE WHEN i < 64 THEN to_jsonb(i) ELSE 'null'::jsonb END,
                                              'price', 1) ORDER BY i)
            FROM generate_series(1, 64) i))::text) AS max_tiers;

-- Amounts and quantities
SELECT pg_temp.try_tariff('{"price": -1}') AS negative_price;
SELECT pg_temp.try_tariff('{"price": "-0.5"}') AS negative_price_string;
SELECT pg_temp.try_tariff('{"price": 1, "setup_fee": -2}') AS negative_setup_fee;
SELECT pg_temp.try_tariff('{"price": 1, "minimum": -2}') AS negative_minimum;
SELECT pg_temp.try_tariff('{"price": "abc"}') AS price_not_a_number;
SELECT pg_temp.try_tariff('{"price": "NaN"}') AS price_nan_string;
SELECT pg_temp.try_tariff('{"price": ""}') AS price_empty_string;
SELECT pg_temp.try_tariff('{"price": null}') AS price_null;
SELECT pg_temp.try_tariff('{"price": true}') AS price_boolean;
SELECT pg_temp.try_tariff('{"price": "1.0000000000001"}') AS price_13_decimals;
SELECT pg_temp.try_tariff('{"price": "1.000000000001"}') AS price_12_decimals_ok;
SELECT pg_temp.try_tariff('{"price": 1e-13}') AS price_exponent_13_decimals;
SELECT pg_temp.try_tariff('{"price": "1e30"}') AS price_out_of_range;
SELECT pg_temp.try_tariff('{"model": "graduated", "tiers": [{"up_to": 1.0000000001, "price": 1}, {"up_to": null, "price": 1}]}') AS quantity_10_decimals;
SELECT pg_temp.try_tariff('{"model": "graduated", "tiers": [{"up_to": 1.000000001, "price": 1}, {"up_to": null, "price": 1}]}') AS quantity_9_decimals_ok;
SELECT pg_temp.try_tariff('{"model": "percentage", "percentage": {"rate": "1.00000000001"}}') AS percent_rate_11_decimals;
SELECT pg_temp.try_tariff('{"model": "package", "package": {"size": 0, "price": 5}}') AS zero_package_size;
SELECT pg_temp.try_tariff('{"model": "package", "package": {"size": 10, "price": 5, "free": -1}}') AS negative_package_free;
SELECT pg_temp.try_tariff('{"price": 1, "minimum": 5, "maximum": 4}') AS maximum_below_minimum;
SELECT pg_temp.try_tariff('{"price": 1, "minimum": 5, "maximum": 5}') AS maximum_equal_minimum_ok;

-- Increments
SELECT pg_temp.try_tariff('{"price": 1, "increment": {"first": 0, "next": 60}}') AS zero_increment_first;
SELECT pg_temp.try_tariff('{"price": 1, "increment": {"first": 60, "next": 0}}') AS zero_increment_next;
SELECT pg_temp.try_tariff('{"price": 1, "increment": {"first": 60}}') AS increment_without_next;
SELECT pg_temp.try_tariff('{"price": 1, "increment": {"next": 60}}') AS increment_without_first;
SELECT pg_temp.try_tariff('{"price": 1, "increment": 60}') AS increment_not_object;

-- Rounding, scope, currency, unit
SELECT pg_temp.try_tariff('{"price": 1, "rounding": {"decimals": 13}}') AS rounding_13_decimals;
SELECT pg_temp.try_tariff('{"price": 1, "rounding": {"decimals": -1}}') AS rounding_negative_decimals;
SELECT pg_temp.try_tariff('{"price": 1, "rounding": {"decimals": 2.5}}') AS rounding_fractional_decimals;
SELECT pg_temp.try_tariff('{"price": 1, "rounding": {"decimals": "2"}}') AS rounding_decimals_string;
SELECT pg_temp.try_tariff('{"price": 1, "rounding": {"mode": "bankers"}}') AS unknown_rounding_mode;
SELECT pg_temp.try_tariff('{"price": 1, "scope": "month"}') AS unknown_scope;
SELECT pg_temp.try_tariff('{"price": 1, "currency": "EURO"}') AS currency_euro;
SELECT pg_temp.try_tariff('{"price": 1, "currency": "eur"}') AS currency_lowercase;
SELECT pg_temp.try_tariff('{"price": 1, "currency": "XYZ"}') AS currency_unknown;
SELECT pg_temp.try_tariff('{"price": 1, "currency": 978}') AS currency_number;
SELECT pg_temp.try_tariff('{"price": 1, "unit": ""}') AS empty_unit;
SELECT pg_temp.try_tariff(format('{"price": 1, "unit": "%s"}', repeat('x', 64))) AS unit_too_long;

-- Time bands
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"from": "8:00", "to": "18:00", "tariff": {"price": 2}}]}') AS time_without_leading_zero;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"from": "25:00", "to": "26:00", "tariff": {"price": 2}}]}') AS hour_25;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"from": "12:60", "to": "18:00", "tariff": {"price": 2}}]}') AS minute_60;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"from": "12:00", "to": "24:01", "tariff": {"price": 2}}]}') AS after_24_00;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"from": 8, "to": "18:00", "tariff": {"price": 2}}]}') AS time_not_string;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"from": "18:00", "to": "08:00", "tariff": {"price": 2}}]}') AS from_after_to;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"from": "08:00", "to": "08:00", "tariff": {"price": 2}}]}') AS from_equals_to;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"days": ["monday"], "tariff": {"price": 2}}]}') AS day_monday;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"days": ["Mon"], "tariff": {"price": 2}}]}') AS day_capitalised;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"days": ["mon", "tue", "mon"], "tariff": {"price": 2}}]}') AS duplicate_day;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"days": [], "tariff": {"price": 2}}]}') AS no_days;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"days": ["mon"]}]}') AS band_without_tariff;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"days": ["mon"], "tariff": {"price": 2}, "priority": 1}]}') AS unknown_band_field;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"tariff": {}}]}') AS band_tariff_without_price;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"tariff": {"price": 2, "colour": "red"}}]}') AS unknown_band_tariff_field;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"tariff": {"price": 2, "time_bands": []}}]}') AS nested_time_bands;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"tariff": {"price": 2, "increment": {"first": 60, "next": 60}}}]}') AS increment_in_band;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"tariff": {"price": 2, "rounding": {"decimals": 2}}}]}') AS rounding_in_band;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"tariff": {"price": 2, "currency": "EUR"}}]}') AS currency_in_band;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"tariff": {"model": "volume", "tiers": [{"up_to": 5, "price": 1}]}}]}') AS band_tier_error_path;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": [{"tariff": {"price": 2}}, {"tariff": {"price": 2, "minimum": 3, "maximum": 1}}]}') AS second_band_error_path;
SELECT pg_temp.try_tariff('{"price": 1, "scope": "cycle", "time_bands": [{"tariff": {"price": 2}}]}') AS time_bands_with_cycle_scope;
SELECT pg_temp.try_tariff('{"price": 1, "time_bands": {"tariff": {"price": 2}}}') AS time_bands_not_array;
-- 33 bands (the limit is 32)
SELECT pg_temp.try_tariff(jsonb_build_object('price', 1, 'time_bands',
         (SELECT jsonb_agg(jsonb_build_object('tariff', jsonb_build_object('price', i)) ORDER BY i)
            FROM generate_series(1, 33) i))::text) AS too_many_bands;
-- ... and 32 bands is accepted
SELECT pg_temp.try_tariff(jsonb_build_object('price', 1, 'time_bands',
         (SELECT jsonb_agg(jsonb_build_object('tariff', jsonb_build_object('price', i)) ORDER BY i)
            FROM generate_series(1, 32) i))::text) AS max_bands;

-- JSON syntax (22P02) and a JSON value that is not an object (22023)
SELECT pg_temp.try_tariff('{"price": 1,}') AS trailing_comma;
SELECT pg_temp.try_tariff('{"price": 1, "price": 2}') AS duplicate_key;
SELECT pg_temp.try_tariff('{"price": "1}') AS unterminated_string;
SELECT pg_temp.try_tariff('{"price": 1') AS unterminated_object;
SELECT pg_temp.try_tariff('{price: 1}') AS unquoted_key;
SELECT pg_temp.try_tariff('{"price": 01}') AS leading_zero_number;
SELECT pg_temp.try_tariff('{"price": 1} x') AS trailing_text;
SELECT pg_temp.try_tariff('') AS empty_input;
-- nesting is bounded (32 levels): the 33rd "[" starts at byte 51
SELECT pg_temp.try_tariff('{"price": 1, "unit":' || repeat('[', 40)) AS nesting_too_deep;
SELECT pg_temp.try_tariff('[{"price": 1}]') AS not_an_object_array;
SELECT pg_temp.try_tariff('"flat"') AS not_an_object_string;
SELECT pg_temp.try_tariff('null') AS not_an_object_null;
-- the same errors through a plain cast, showing the full error report
\set VERBOSITY default
SELECT '{"price": 1,}'::tariff;
SELECT '{"model": "graduated", "tiers": [{"up_to": 10, "price": 1}, {"up_to": 5, "price": 1}, {"up_to": null, "price": 1}]}'::tariff;

-- Rating calls
SELECT pg_temp.try_sql($$SELECT rate('{"price": 1}', -1)$$) AS negative_quantity;
SELECT pg_temp.try_sql($$SELECT rate('{"price": 1}', -0.000000001)$$) AS tiny_negative_quantity;
SELECT pg_temp.try_sql($$SELECT rate('{"price": 1}', 'NaN')$$) AS nan_quantity;
SELECT pg_temp.try_sql($$SELECT rate('{"price": 1}', 'Infinity')$$) AS infinite_quantity;
SELECT pg_temp.try_sql($$SELECT rate('{"price": 1}', 0.0000000001)$$) AS quantity_10_decimals;
SELECT pg_temp.try_sql($$SELECT rate('{"price": 1}', 1e30)$$) AS quantity_out_of_range;
SELECT pg_temp.try_sql($$SELECT rate('{"price": "1000000000"}', 1e18)$$) AS charge_overflow;
SELECT pg_temp.try_sql($$SELECT billed_quantity('{"price": 1}', -5)$$) AS billed_quantity_negative;
-- first 1 + ceil((1.5e29 - 1) / 1e29) = 2 steps of 1e29 = 2e29 units: beyond the range
SELECT pg_temp.try_sql($$SELECT billed_quantity('{"price": 1, "increment": {"first": 1, "next": 1e29}}', 1.5e29)$$) AS billed_quantity_overflow;
SELECT pg_temp.try_sql($$SELECT billed_quantity('{"price": 1}', 'NaN')$$) AS billed_quantity_nan;
SELECT pg_temp.try_sql($$SELECT rate('{"price": 1}', 1, '2026-01-05 10:00+00', 'Mars/Olympus_Mons')$$) AS unknown_time_zone;
SELECT pg_temp.try_sql($$SELECT rate('{"price": 1}', 1, 'infinity', 'UTC')$$) AS infinite_timestamp;
SELECT pg_temp.try_sql($$SELECT rate('{"price": 1}', 1, '-infinity', 'UTC')$$) AS minus_infinite_timestamp;
SELECT pg_temp.try_sql($$SELECT rate('{"price": 1, "scope": "cycle"}', 1, '2026-01-05 10:00+00', 'UTC', -1)$$) AS negative_used_before;
SELECT pg_temp.try_sql($$SELECT rate('{"price": 1, "scope": "cycle"}', 1, '2026-01-05 10:00+00', 'UTC', 'NaN')$$) AS nan_used_before;
SELECT pg_temp.try_sql($$SELECT rate('{"price": 1, "scope": "cycle"}', 1, '2026-01-05 10:00+00', 'UTC', 0.0000000001)$$) AS used_before_10_decimals;
-- a negative quantity beyond the 128-bit range is out of range (22003), not
-- wrapped around to a positive one
SELECT pg_temp.try_sql($$SELECT billed_quantity('{"price": "0"}', -170141183460469231731687303715.884105729)$$) AS huge_negative;
