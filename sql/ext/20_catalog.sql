-------------------------------------------------------------------------------
-- Catalog (src/destination.c): services and destinations.
-- Catalog tables are small reference tables; account-owned tables carry
-- account_id in every primary and unique key.
-------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.currency_exponent(code text) RETURNS integer
    AS 'MODULE_PATHNAME', 'currency_exponent_sql' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.currency_exponent(text) IS
    'ISO 4217 minor-unit exponent (EUR 2, JPY 0, KWD 3), NULL for a code that is not an active currency';

CREATE FUNCTION @extschema@.is_time_zone(name text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'is_time_zone' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.is_time_zone(text) IS
    'true when name is a time zone PostgreSQL knows (IANA names such as Europe/Berlin)';

CREATE TABLE @extschema@.service (
    code        text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]{0,62}$'),
    unit        text NOT NULL CHECK (length(unit) BETWEEN 1 AND 63),
    description text
);
COMMENT ON TABLE @extschema@.service IS 'what is sold and its unit: voice/second, sms/message, data/byte, ...';

CREATE TABLE @extschema@.destination (
    prefix text PRIMARY KEY CHECK (prefix ~ '^[0-9]{1,15}$'),
    zone   text NOT NULL CHECK (length(zone) BETWEEN 1 AND 63)
);
COMMENT ON TABLE @extschema@.destination IS
    'dialling prefixes (digits only) and their zones; zone_of() picks the longest matching prefix';

CREATE FUNCTION @extschema@.destination_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'destination_changed' LANGUAGE C;
CREATE TRIGGER destination_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.destination
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.destination_changed();
-- Also when changes are applied as a replica: logical replication's apply
-- worker fires row triggers (and TRUNCATE's statement trigger) of ALWAYS
-- triggers, so a row trigger does it there; invalidations are merged per
-- transaction, a bulk load costs one.  (A restore with --disable-triggers
-- turns every trigger off: sessions connected during it keep their cache
-- until their next invalidation.)
CREATE TRIGGER destination_changed_row
    AFTER INSERT OR UPDATE OR DELETE ON @extschema@.destination
    FOR EACH ROW EXECUTE FUNCTION @extschema@.destination_changed();
ALTER TABLE @extschema@.destination ENABLE ALWAYS TRIGGER destination_changed;
ALTER TABLE @extschema@.destination ENABLE ALWAYS TRIGGER destination_changed_row;

CREATE FUNCTION @extschema@.zone_of(number text) RETURNS text
    AS 'MODULE_PATHNAME', 'zone_of' LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.zone_of(text) IS
    'zone of the longest destination prefix matching the digits of number (other characters ignored), NULL if none';

-- The zone of a usage event or request: zone_of() of its attrs'
-- "destination", a JSON string ("+49 30 1234") or number (4930123456: its
-- digits, as attrs ->> gives them), else none.
CREATE FUNCTION @extschema@.event_zone(attrs jsonb) RETURNS text
    AS 'MODULE_PATHNAME', 'event_zone' LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.event_zone(jsonb) IS
    'zone_of() of attrs->>''destination'' when the destination is a JSON string or number, else NULL';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.service', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.destination', '');
