-- Three raters, two feeds and a change of payer back and forth, at once.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION convbill;
SET search_path = convbill, public;
INSERT INTO service VALUES ('voice', 'second'), ('sms', 'message');
INSERT INTO plan (code, name, currency, recurring_fee) VALUES ('P', 'Plan', 'EUR', 10);
INSERT INTO plan_rate (plan_code, service, tariff) VALUES
    ('P', 'voice', '{"price": "0.002", "increment": {"first": 60, "next": 1}}'), ('P', 'sms', '{"price": "0.09"}');
-- accounts 1-8; 2 and 3 billed to 6, 8 to 7 (payers above their children)
INSERT INTO account (account_id, external_ref, name, currency, credit_limit)
SELECT g, 'A' || g, 'Acc ' || g, 'EUR', 1000 FROM generate_series(1, 8) g;
UPDATE account SET parent_id = 6, bill_to_parent = true WHERE account_id IN (2, 3);
UPDATE account SET parent_id = 7, bill_to_parent = true WHERE account_id = 8;
SELECT count(subscribe(g, 'P', now() - interval '40 days')) FROM generate_series(1, 8) g;
SELECT ensure_usage_partitions(now() - interval '1 month', 3);
-- what each call ran into (every error kept, with its SQLSTATE)
CREATE SCHEMA pr;
CREATE TABLE pr.err (label text, state text, msg text);
CREATE TABLE pr.ok (label text);
CREATE FUNCTION pr.try(p_label text, p_sql text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE st text; m text;
BEGIN
    EXECUTE p_sql;
    INSERT INTO pr.ok VALUES (p_label);
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT;
    INSERT INTO pr.err VALUES (p_label, st, m);
END $$;
