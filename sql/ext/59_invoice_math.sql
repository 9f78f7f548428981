-------------------------------------------------------------------------------
-- Invoice math (src/invoice_math.c): the arithmetic the bill run is built on.
--
--   invoice_line_total(amount, currency)  an invoice line: the exact sum of
--                            its charges, rounded once, half away from zero,
--                            to the currency's ISO 4217 minor unit
--   invoice_sum(amount)      the exact sum, not rounded (subtotals)
--   local_days(from, to, tz) local calendar days, start day in, end day out
--   prorate(amount, part, whole, decimals)   amount x part / whole, rounded once
--
-- Both aggregates keep an exact 128-bit sum at 12 decimals and run in
-- parallel (combine, serialize, deserialize).  Amounts with more than 12
-- decimals are refused (22023), never rounded; sums beyond about 1.7e26
-- raise 22003.
-------------------------------------------------------------------------------

-- Support functions of the aggregates: internal state, not callable from SQL.
CREATE FUNCTION @extschema@.invoice_line_accum(internal, numeric, text) RETURNS internal
    AS 'MODULE_PATHNAME', 'invoice_line_accum' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.invoice_sum_accum(internal, numeric) RETURNS internal
    AS 'MODULE_PATHNAME', 'invoice_sum_accum' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.invoice_sum_combine(internal, internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'invoice_sum_combine' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.invoice_sum_serialize(internal) RETURNS bytea
    AS 'MODULE_PATHNAME', 'invoice_sum_serialize' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.invoice_sum_deserialize(bytea, internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'invoice_sum_deserialize' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.invoice_line_final(internal) RETURNS numeric
    AS 'MODULE_PATHNAME', 'invoice_line_final' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.invoice_sum_final(internal) RETURNS numeric
    AS 'MODULE_PATHNAME', 'invoice_sum_final' LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.invoice_line_accum(internal, numeric, text) IS
    'internal: transition function of invoice_line_total';
COMMENT ON FUNCTION @extschema@.invoice_sum_accum(internal, numeric) IS
    'internal: transition function of invoice_sum';
COMMENT ON FUNCTION @extschema@.invoice_sum_combine(internal, internal) IS
    'internal: combines two partial states of invoice_line_total or invoice_sum (parallel aggregation)';
COMMENT ON FUNCTION @extschema@.invoice_sum_serialize(internal) IS
    'internal: a partial state of invoice_line_total or invoice_sum as bytea (parallel workers, hash aggregate spills)';
COMMENT ON FUNCTION @extschema@.invoice_sum_deserialize(bytea, internal) IS
    'internal: the inverse of invoice_sum_serialize';
COMMENT ON FUNCTION @extschema@.invoice_line_final(internal) IS
    'internal: final function of invoice_line_total (rounds to the minor unit)';
COMMENT ON FUNCTION @extschema@.invoice_sum_final(internal) IS
    'internal: final function of invoice_sum';

CREATE AGGREGATE @extschema@.invoice_line_total(amount numeric, currency text) (
    SFUNC = @extschema@.invoice_line_accum,
    STYPE = internal,
    SSPACE = 48,
    FINALFUNC = @extschema@.invoice_line_final,
    COMBINEFUNC = @extschema@.invoice_sum_combine,
    SERIALFUNC = @extschema@.invoice_sum_serialize,
    DESERIALFUNC = @extschema@.invoice_sum_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE @extschema@.invoice_line_total(numeric, text) IS
    'an invoice line: the exact sum of the amounts (at most 12 decimals; NULLs ignored) rounded once, half away from zero, to the currency''s ISO 4217 minor unit (EUR 2, JPY 0, KWD 3); NULL for no amounts; one currency per group (22023 otherwise)';

CREATE AGGREGATE @extschema@.invoice_sum(amount numeric) (
    SFUNC = @extschema@.invoice_sum_accum,
    STYPE = internal,
    SSPACE = 48,
    FINALFUNC = @extschema@.invoice_sum_final,
    COMBINEFUNC = @extschema@.invoice_sum_combine,
    SERIALFUNC = @extschema@.invoice_sum_serialize,
    DESERIALFUNC = @extschema@.invoice_sum_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE @extschema@.invoice_sum(numeric) IS
    'the exact sum of the amounts (at most 12 decimals; NULLs ignored), not rounded, with the largest scale of its amounts: equal to sum() but faster; NULL for no amounts';

-- Proration.  IMMUTABLE like PostgreSQL's timezone(text, timestamptz): the
-- time zone database is treated as fixed.
CREATE FUNCTION @extschema@.local_days(from_ts timestamptz, to_ts timestamptz, tz text) RETURNS integer
    AS 'MODULE_PATHNAME', 'local_days' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.local_days(timestamptz, timestamptz, text) IS
    'local calendar days from the local date of from_ts (counted) to that of to_ts (not counted) in IANA zone tz: (to_ts AT TIME ZONE tz)::date - (from_ts AT TIME ZONE tz)::date, 0 when from_ts > to_ts; infinite times raise 22008';

CREATE FUNCTION @extschema@.prorate(amount numeric, part integer, whole integer, decimals integer DEFAULT 6)
RETURNS numeric
    AS 'MODULE_PATHNAME', 'prorate' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.prorate(numeric, integer, integer, integer) IS
    'amount x part / whole computed exactly and rounded once, half away from zero, to decimals (0..12); 0 <= part <= whole, whole > 0; amount has at most 12 decimals';
