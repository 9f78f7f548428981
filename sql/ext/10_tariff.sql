-------------------------------------------------------------------------------
-- The tariff type (src/tariff_*.c): a validated binary price definition whose
-- text form is a JSON object, evaluated in C.
-------------------------------------------------------------------------------

CREATE TYPE @extschema@.tariff;

CREATE FUNCTION @extschema@.tariff_in(cstring) RETURNS @extschema@.tariff
    AS 'MODULE_PATHNAME', 'tariff_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.tariff_out(@extschema@.tariff) RETURNS cstring
    AS 'MODULE_PATHNAME', 'tariff_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.tariff_recv(internal) RETURNS @extschema@.tariff
    AS 'MODULE_PATHNAME', 'tariff_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.tariff_send(@extschema@.tariff) RETURNS bytea
    AS 'MODULE_PATHNAME', 'tariff_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE @extschema@.tariff (
    INPUT = @extschema@.tariff_in,
    OUTPUT = @extschema@.tariff_out,
    RECEIVE = @extschema@.tariff_recv,
    SEND = @extschema@.tariff_send,
    INTERNALLENGTH = VARIABLE,
    ALIGNMENT = double,
    STORAGE = extended
);
COMMENT ON TYPE @extschema@.tariff IS
    'a validated price definition (flat, graduated, volume, package, percentage; increments, fees, bounds, time bands, cycle scope, rounding); text form is JSON';

CREATE FUNCTION @extschema@.tariff_eq(@extschema@.tariff, @extschema@.tariff) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tariff_eq' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION @extschema@.tariff_ne(@extschema@.tariff, @extschema@.tariff) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tariff_ne' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;

CREATE FUNCTION @extschema@.tariff_hash(@extschema@.tariff) RETURNS integer
    AS 'MODULE_PATHNAME', 'tariff_hash' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR @extschema@.= (
    LEFTARG = @extschema@.tariff, RIGHTARG = @extschema@.tariff,
    PROCEDURE = @extschema@.tariff_eq,
    COMMUTATOR = OPERATOR(@extschema@.=), NEGATOR = OPERATOR(@extschema@.<>),
    RESTRICT = eqsel, JOIN = eqjoinsel, HASHES
);
CREATE OPERATOR @extschema@.<> (
    LEFTARG = @extschema@.tariff, RIGHTARG = @extschema@.tariff,
    PROCEDURE = @extschema@.tariff_ne,
    COMMUTATOR = OPERATOR(@extschema@.<>), NEGATOR = OPERATOR(@extschema@.=),
    RESTRICT = neqsel, JOIN = neqjoinsel
);

-- Equal tariffs are equal bytes, so a hash opclass makes GROUP BY, DISTINCT
-- and hash joins on tariffs work.
CREATE OPERATOR CLASS @extschema@.tariff_hash_ops
    DEFAULT FOR TYPE @extschema@.tariff USING hash AS
        OPERATOR 1 @extschema@.= ,
        FUNCTION 1 @extschema@.tariff_hash(@extschema@.tariff);

-- Evaluation.  The zone-aware form is IMMUTABLE like PostgreSQL's own
-- timezone(text, timestamptz): the time zone database is treated as fixed.
CREATE FUNCTION @extschema@.rate(t @extschema@.tariff, quantity numeric) RETURNS numeric
    AS 'MODULE_PATHNAME', 'tariff_rate_simple' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.rate(@extschema@.tariff, numeric) IS
    'charge of one event of quantity units with the top-level pricing, rounded once';

CREATE FUNCTION @extschema@.rate(t @extschema@.tariff, quantity numeric, at timestamptz,
                                 tz text, used_before numeric DEFAULT 0) RETURNS numeric
    AS 'MODULE_PATHNAME', 'tariff_rate_at' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.rate(@extschema@.tariff, numeric, timestamptz, text, numeric) IS
    'charge of one event at a time in an IANA zone (time bands); for scope cycle, P(used_before + billed) - P(used_before) plus the setup fee';

CREATE FUNCTION @extschema@.rate_billed(t @extschema@.tariff, billed_quantity numeric, at timestamptz,
                                        tz text, used_before numeric DEFAULT 0) RETURNS numeric
    AS 'MODULE_PATHNAME', 'tariff_rate_billed_at' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.rate_billed(@extschema@.tariff, numeric, timestamptz, text, numeric) IS
    'like rate(), for a quantity whose increments are already applied (the part of an event allowances did not cover)';

CREATE FUNCTION @extschema@.rate_billed_or_null(t @extschema@.tariff, billed_quantity numeric, at timestamptz,
                                                tz text, used_before numeric DEFAULT 0) RETURNS numeric
    AS 'MODULE_PATHNAME', 'tariff_rate_billed_or_null' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.rate_billed_or_null(@extschema@.tariff, numeric, timestamptz, text, numeric) IS
    'rate_billed(), but NULL instead of an error when the charge is beyond the supported range (bulk rating rejects that event)';

CREATE FUNCTION @extschema@.billed_quantity(t @extschema@.tariff, quantity numeric) RETURNS numeric
    AS 'MODULE_PATHNAME', 'tariff_billed_quantity_sql' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.billed_quantity(@extschema@.tariff, numeric) IS
    'quantity after the tariff''s increments (first/next), as billed';

CREATE FUNCTION @extschema@.tariff_currency(t @extschema@.tariff) RETURNS text
    AS 'MODULE_PATHNAME', 'tariff_currency' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.tariff_unit(t @extschema@.tariff) RETURNS text
    AS 'MODULE_PATHNAME', 'tariff_unit' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.tariff_scope(t @extschema@.tariff) RETURNS text
    AS 'MODULE_PATHNAME', 'tariff_scope' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- A tariff can be written as jsonb (and read back) through its text form.
CREATE CAST (@extschema@.tariff AS jsonb) WITH INOUT;
CREATE CAST (jsonb AS @extschema@.tariff) WITH INOUT;
