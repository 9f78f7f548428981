-- Destination matching: zone_of() is the longest-prefix match over the digits
-- of a number, and every session sees catalogue changes.
-- a fresh, empty catalog for this file (pg_regress runs every file in one database)
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS convbill CASCADE;
CREATE EXTENSION convbill;
RESET client_min_messages;
SET search_path = convbill, public;

INSERT INTO destination VALUES
    ('49', 'DE'), ('4915', 'DE-mobile'), ('491511', 'DE-mobile-premium'),
    ('1', 'NANP'), ('1876', 'JM'), ('882', 'IRSF-satellite');

-- the longest prefix wins; non-digits are ignored; no match is NULL
SELECT n, zone_of(n) AS zone
FROM unnest(ARRAY['+49 151 1234567', '+49 (1511) 234567', '0049 30 1234', '4930',
                  '+1 212 555 0100', '+1 876 555 0100', '+882 16 1234', '999', '', 'abc']) AS n;

-- changes are seen at once inside the transaction, and undone by ROLLBACK
BEGIN;
DELETE FROM destination WHERE prefix = '491511';
SELECT zone_of('+49 1511 234567') AS after_delete;
UPDATE destination SET zone = 'DE-fixed' WHERE prefix = '49';
SELECT zone_of('+49 30 1234') AS after_update;
ROLLBACK;
SELECT zone_of('+49 1511 234567') AS after_rollback, zone_of('+49 30 1234') AS fixed_after_rollback;

TRUNCATE destination;
SELECT zone_of('+49 151 1234567') AS after_truncate;

-- prefixes are digits only, 1 to 15 of them
INSERT INTO destination VALUES ('+49', 'DE');
INSERT INTO destination VALUES ('1234567890123456', 'too-long');
INSERT INTO destination VALUES ('', 'empty');

-- 100,000 prefixes: every one of them is found by a number extending it
INSERT INTO destination
SELECT (1000000 + g)::text, 'Z' || (g % 97) FROM generate_series(1, 100000) g;
SELECT count(*) AS matched
FROM generate_series(1, 100000) g
WHERE zone_of('+' || (1000000 + g)::text || '123') = 'Z' || (g % 97);

-- ISO 4217 minor units and time zone names, used by the catalog's constraints
SELECT currency_exponent('EUR') AS eur, currency_exponent('JPY') AS jpy,
       currency_exponent('KWD') AS kwd, currency_exponent('EURO') AS euro,
       currency_exponent('eur') AS lower_case;
SELECT is_time_zone('Pacific/Kiritimati') AS kiritimati, is_time_zone('UTC') AS utc,
       is_time_zone('Mars/Olympus_Mons') AS mars, is_time_zone('') AS empty;

-- zone_of() in a parallel query (workers and leader read with the query's
-- snapshot: no new snapshot may be taken there)
INSERT INTO destination VALUES ('88215', 'parallel');
SET force_parallel_mode = on;
SELECT zone_of('+882 15 1234') AS in_parallel_mode;
RESET force_parallel_mode;
SELECT zone_of('+882 15 1234') AS after_parallel_mode;
DELETE FROM destination WHERE prefix = '88215';
-- changes applied as a replica (logical replication, pg_restore
-- --disable-triggers) invalidate the caches too
SELECT zone_of('88216') AS before_replica_change;
SET session_replication_role = replica;
INSERT INTO destination VALUES ('88216', 'satellite');
RESET session_replication_role;
SELECT zone_of('88216') AS after_replica_change;
DELETE FROM destination WHERE prefix = '88216';
