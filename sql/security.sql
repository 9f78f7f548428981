-- Roles with least privilege and customer self-service (SPEC section 7):
-- login roles in the four group roles try what they may and may not do
-- (refusals show their SQLSTATE, 42501 = insufficient_privilege), customers
-- see only their own accounts' rows (counted against what the admin sees),
-- the application runs a realistic flow end to end, and pg_proc is audited:
-- every SECURITY DEFINER function pins search_path = pg_catalog, pg_temp.
-- Roles belong to the cluster: the login roles made here are dropped at the end.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS convbill CASCADE;
CREATE EXTENSION convbill;
DROP ROLE IF EXISTS regress_cb_admin, regress_cb_app, regress_cb_analyst, regress_cb_corp,
    regress_cb_sub, regress_cb_other, regress_cb_pool, regress_cb_nobody;
RESET client_min_messages;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, MDY';
SET IntervalStyle = 'postgres';
\set VERBOSITY terse
\set SHOW_CONTEXT never

-- errors as "SQLSTATE: message"
CREATE FUNCTION pg_temp.fails(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-------------------------------------------------------------------------------
-- 1. The group roles exist (made by CREATE EXTENSION, NOLOGIN) and the
--    privileges are the extension's initial privileges (pg_init_privs), so
--    pg_dump writes none of them and a restore's CREATE EXTENSION grants them.
-------------------------------------------------------------------------------
SELECT rolname, rolcanlogin, rolsuper, rolinherit, rolbypassrls
FROM pg_roles WHERE rolname LIKE 'convbill\_%' ORDER BY 1;
-- every ACL of a convbill relation and function equals its initial one
SELECT count(*) AS acls_differing_from_initial
FROM (SELECT c.oid, 'pg_class'::regclass AS cls, c.relacl AS acl FROM pg_class c
      WHERE c.relnamespace = 'convbill'::regnamespace AND c.relacl IS NOT NULL
      UNION ALL
      SELECT p.oid, 'pg_proc'::regclass, p.proacl FROM pg_proc p
      WHERE p.pronamespace = 'convbill'::regnamespace AND p.proacl IS NOT NULL) o
LEFT JOIN pg_init_privs ip ON ip.objoid = o.oid AND ip.classoid = o.cls AND ip.objsubid = 0
WHERE ip.initprivs IS DISTINCT FROM o.acl;
-- running the role block again (a second database) changes nothing
SELECT count(*) AS convbill_roles FROM pg_roles WHERE rolname LIKE 'convbill\_%';

-------------------------------------------------------------------------------
-- 2. Audit of pg_proc
-------------------------------------------------------------------------------
-- the SECURITY DEFINER functions
SELECT p.oid::regprocedure AS security_definer, array_to_string(p.proconfig, '; ') AS config
FROM pg_proc p WHERE p.pronamespace = 'convbill'::regnamespace AND p.prosecdef ORDER BY p.oid::regprocedure::text;
-- each pins search_path = pg_catalog, pg_temp exactly once, and nothing else sets it (0 rows)
SELECT p.oid::regprocedure AS bad_search_path
FROM pg_proc p
WHERE p.pronamespace = 'convbill'::regnamespace AND p.prosecdef
  AND (SELECT count(*) FILTER (WHERE c = 'search_path=pg_catalog, pg_temp') <> 1
              OR count(*) FILTER (WHERE c LIKE 'search_path=%') <> 1
       FROM unnest(coalesce(p.proconfig, '{}')) c);
-- ... and is owned by the extension's owner, in a trusted language, and not
-- callable by PUBLIC (0 rows)
SELECT p.oid::regprocedure AS secdef_problem
FROM pg_proc p JOIN pg_extension e ON e.extname = 'convbill'
WHERE p.pronamespace = 'convbill'::regnamespace AND p.prosecdef
  AND (p.proowner <> e.extowner
       OR p.prolang NOT IN (SELECT oid FROM pg_language WHERE lanname IN ('sql', 'plpgsql'))
       OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) x WHERE x.grantee = 0));
-- a procedure that commits cannot be SECURITY DEFINER: none is (0 rows)
SELECT p.oid::regprocedure FROM pg_proc p
WHERE p.pronamespace = 'convbill'::regnamespace AND p.prokind = 'p' AND p.prosecdef;
-- the SQL and PL/pgSQL routines that are not IMMUTABLE (pure helpers, inlined)
-- and have no pinned search_path: only the procedures that commit (a SET
-- clause is not allowed there); both SECURITY INVOKER, admin-only
SELECT p.oid::regprocedure AS no_search_path, p.prokind, p.provolatile, p.prosecdef
FROM pg_proc p
WHERE p.pronamespace = 'convbill'::regnamespace AND p.provolatile <> 'i'
  AND p.prolang IN (SELECT oid FROM pg_language WHERE lanname IN ('sql', 'plpgsql'))
  AND NOT coalesce(p.proconfig, '{}') @> '{"search_path=pg_catalog, pg_temp"}'
ORDER BY p.oid::regprocedure::text;
-- what PUBLIC may call: only pure functions (no table access)
SELECT p.oid::regprocedure AS public_execute
FROM pg_proc p
WHERE p.pronamespace = 'convbill'::regnamespace
  AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) x WHERE x.grantee = 0))
  AND p.prolang NOT IN (SELECT oid FROM pg_language WHERE lanname IN ('c', 'internal'))
ORDER BY p.oid::regprocedure::text;
-- row-level security: where, never FORCEd (the owner, i.e. the definer
-- functions, bypasses it)
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
       (SELECT string_agg(pol.polname, ', ' ORDER BY pol.polname) FROM pg_policy pol WHERE pol.polrelid = c.oid) AS policies
FROM pg_class c WHERE c.relnamespace = 'convbill'::regnamespace AND (c.relrowsecurity OR c.relforcerowsecurity)
ORDER BY 1;
SELECT c.relname AS view, c.reloptions FROM pg_class c
WHERE c.relnamespace = 'convbill'::regnamespace AND c.relkind = 'v' AND c.reloptions IS NOT NULL ORDER BY 1;

-------------------------------------------------------------------------------
-- 3. Login roles, and the catalog an admin sets up
-------------------------------------------------------------------------------
CREATE ROLE regress_cb_admin LOGIN IN ROLE convbill_admin;
CREATE ROLE regress_cb_app LOGIN IN ROLE convbill_app;
CREATE ROLE regress_cb_analyst LOGIN IN ROLE convbill_analyst;
CREATE ROLE regress_cb_corp LOGIN IN ROLE convbill_customer;      -- account 100 (and its sub-account 101)
CREATE ROLE regress_cb_sub LOGIN IN ROLE convbill_customer;       -- account 101 only
CREATE ROLE regress_cb_other LOGIN IN ROLE convbill_customer;     -- account 200
CREATE ROLE regress_cb_pool LOGIN;                                -- a pool that may SET ROLE regress_cb_other
GRANT regress_cb_other TO regress_cb_pool;
CREATE ROLE regress_cb_nobody LOGIN;                              -- in no convbill group

SET SESSION AUTHORIZATION regress_cb_admin;
INSERT INTO convbill.service VALUES ('voice', 'second'), ('sms', 'message');
INSERT INTO convbill.plan (code, name, currency, recurring_fee) VALUES ('STD', 'standard', 'EUR', 10);
INSERT INTO convbill.plan_rate (plan_code, service, tariff) VALUES
    ('STD', 'voice', '{"price": "0.01", "increment": {"first": 60, "next": 60}}'),
    ('STD', 'sms', '{"price": "0.10"}');
INSERT INTO convbill.account (account_id, external_ref, name, currency, credit_limit, parent_id, bill_to_parent) VALUES
    (100, 'CORP', 'corporate parent', 'EUR', 100, NULL, false),
    (101, 'CORP-SUB', 'sub-account billed to 100', 'EUR', 0, 100, true),
    (200, 'OTHER', 'another customer', 'EUR', 100, NULL, false);
SELECT count(convbill.subscribe(a, 'STD', '2026-10-01 00:00+00')) AS subscriptions FROM unnest('{100,101,200}'::bigint[]) a;
INSERT INTO convbill.customer_login (account_id, role_name) VALUES
    (100, 'regress_cb_corp'), (101, 'regress_cb_sub'), (200, 'regress_cb_other');
-- a mapping names a role that exists (23503): one made later with the name
-- would get the accounts
SELECT pg_temp.fails($$INSERT INTO convbill.customer_login (account_id, role_name) VALUES (200, 'regress_cb_not_yet')$$);
-- what an admin may not do: it is not the owner
SELECT pg_temp.fails('TRUNCATE convbill.ledger');
SELECT pg_temp.fails('ALTER TABLE convbill.charge DISABLE TRIGGER USER');
SELECT pg_temp.fails('ALTER TABLE convbill.charge DISABLE ROW LEVEL SECURITY');
SELECT pg_temp.fails('DROP POLICY customer_own ON convbill.invoice');
SELECT pg_temp.fails('CREATE TABLE convbill.mine (x int)');
-- owner-only work through SECURITY DEFINER functions: usage partitions
SELECT convbill.ensure_usage_partitions('2026-10-01 00:00+00', 1) AS partitions;
RESET SESSION AUTHORIZATION;

-------------------------------------------------------------------------------
-- 4. The application: ingest, rate, sessions, events, top-up, bill run
-------------------------------------------------------------------------------
SET SESSION AUTHORIZATION regress_cb_app;
INSERT INTO convbill.usage_event (account_id, source, external_id, service, quantity, started_at) VALUES
    (100, 'sms-gw', 'e1', 'sms', 1, '2026-10-15 10:00+00'),
    (100, 'sms-gw', 'e2', 'sms', 1, '2026-10-15 11:00+00'),
    (101, 'sms-gw', 'e3', 'sms', 1, '2026-10-15 12:00+00');
COPY convbill.usage_event (account_id, source, external_id, service, quantity, started_at) FROM stdin;
200	sms-gw	e4	sms	1	2026-10-16 10:00:00+00
200	sms-gw	e5	sms	1	2026-10-16 11:00:00+00
200	voice-sw	c1	voice	61	2026-10-16 12:00:00+00
\.
-- a re-sent event is taken, and found a duplicate when rated
INSERT INTO convbill.usage_event (account_id, source, external_id, service, quantity, started_at)
VALUES (100, 'sms-gw', 'e1', 'sms', 1, '2026-10-15 10:00+00');
SELECT convbill.rate_pending() AS rated;      -- 7 events: 6 rated, 1 duplicate
SELECT status, count(*) FROM convbill.usage_event GROUP BY 1 ORDER BY 1;
-- 100: 2 x 0.10; 101: 0.10; 200: 2 x 0.10 + 61 s -> 120 s x 0.01 = 1.20
SELECT account_id, count(*) AS charges, sum(amount) AS amount FROM convbill.charge GROUP BY 1 ORDER BY 1;
-- real-time rating: the AFTER INSERT trigger rates as the owner
SET convbill.realtime_rating = on;
INSERT INTO convbill.usage_event (account_id, source, external_id, service, quantity, started_at)
VALUES (200, 'sms-gw', 'e6', 'sms', 1, '2026-10-17 10:00+00');
RESET convbill.realtime_rating;
SELECT status, (SELECT amount FROM convbill.charge c WHERE c.charge_id = u.charge_id) AS amount
FROM convbill.usage_event u WHERE external_id = 'e6';
-- online: a top-up, a session (90 s used: 2 minutes at 0.60), a one-shot SMS
SELECT convbill.top_up(200, 50, 'tu-1') > 0 AS topped_up;
SELECT result, granted, held, charged FROM convbill.reserve(200, 'voice', 'call-1', 120);
SELECT result, granted, held, charged FROM convbill.commit('call-1', 1, 90);
SELECT result, granted, charged FROM convbill.charge_event(200, 'sms', 'ev-1', 1);
SELECT result, granted, charged FROM convbill.charge_events(ARRAY[ROW(200, 'sms', 'ev-2', 1, '{}')::convbill.event_request]);
SELECT convbill.add_charge(200, 5, 'installation') > 0 AS one_time;
-- 50 top-up - 0.20 - 1.20 - 0.10 (e6) - 1.20 (call) - 0.10 - 0.10 - 5 = 42.10; + credit limit 100
SELECT unit, balance, held, available FROM convbill.balance(200);
-- the bill run for October: one invoice for 100 (with 101's section) and one for 200
SELECT convbill.run_billing('2026-11-01 00:00+00') AS invoices;
SELECT account_id, status, total FROM convbill.invoice ORDER BY account_id;
-- what the application may not do
SELECT pg_temp.fails('INSERT INTO convbill.charge (account_id, amount, currency, kind, occurred_at) VALUES (200, -100, ''EUR'', ''adjustment'', now())');
SELECT pg_temp.fails('INSERT INTO convbill.ledger (account_id, kind, unit, amount) VALUES (200, ''adjustment'', ''EUR'', 1000)');
SELECT pg_temp.fails('UPDATE convbill.bucket SET balance = 1000000');
SELECT pg_temp.fails('UPDATE convbill.invoice SET total = 0');
SELECT pg_temp.fails('DELETE FROM convbill.usage_event');
SELECT pg_temp.fails('UPDATE convbill.usage_event SET quantity = 0');
SELECT pg_temp.fails('INSERT INTO convbill.plan (code, name, currency) VALUES (''FREE'', ''free'', ''EUR'')');
SELECT pg_temp.fails('UPDATE convbill.account SET credit_limit = 1000000');
SELECT pg_temp.fails('SELECT convbill.adjust_balance(200, 1000, ''gift'')');
SELECT pg_temp.fails('SELECT convbill.finalize_invoice(1)');
SELECT pg_temp.fails('SELECT convbill.run_billing_step(now())');
-- run_billing (as the owner) neither bills periods ahead nor finalizes for it
SELECT pg_temp.fails('SELECT convbill.run_billing(''2100-01-01 00:00+00'')');
SELECT pg_temp.fails('SET LOCAL convbill.finalize_invoices = on; SELECT convbill.run_billing(''2026-11-01 00:00+00'')');
SELECT pg_temp.fails('SELECT convbill.run_job(''rate'')');
SELECT pg_temp.fails('SELECT convbill.rerate()');
SELECT pg_temp.fails('SELECT convbill.ensure_usage_partitions(now(), 1)');
SELECT pg_temp.fails('SELECT count(*) FROM convbill.revenue_daily');
SELECT pg_temp.fails('SELECT count(*) FROM convbill.customer_login');
SELECT pg_temp.fails('SELECT count(*) FROM convbill.usage_event_default');
-- (an audit's findings) money credited through add_charge is the admin's, as
-- adjust_balance is; an event inserted as already rated would never be
-- charged: the app sends the event's own columns only
SELECT pg_temp.fails('SELECT convbill.add_charge(200, -500, ''goodwill'')');
SELECT pg_temp.fails('SELECT convbill.add_charge(200, 5, ''fix'', ''adjustment'')');
SELECT pg_temp.fails($$INSERT INTO convbill.usage_event (account_id, source, external_id, service, quantity, started_at, status)
                       VALUES (200, 'msc', 'free-call', 'voice', 36000, '2026-10-20 10:00+00', 'rated')$$);
RESET SESSION AUTHORIZATION;

-- the admin finalizes the invoices and the application records a payment
SET SESSION AUTHORIZATION regress_cb_admin;
SELECT count(convbill.finalize_invoice(invoice_id)) AS finalized FROM convbill.invoice;
-- the jobs run as the admin (rating and the bill run through their functions)
SELECT j AS job, convbill.run_job(j) IS NOT NULL AS ran
FROM unnest('{rate,expire,bill,analytics,anomaly}'::text[]) j;
SELECT job, status, error FROM convbill.job_run ORDER BY run_id;
-- the admin tunes a job but does not write its SQL (it runs as whoever runs the job)
UPDATE convbill.job SET enabled = false, time_budget = '30 seconds' WHERE name = 'anomaly';
SELECT pg_temp.fails('UPDATE convbill.job SET command = ''SELECT 1'' WHERE name = ''rate''');
SELECT pg_temp.fails('INSERT INTO convbill.job (name, schedule, command) VALUES (''mine'', ''* * * * *'', ''SELECT 1'')');
-- the guards hold for the admin too: the ledger is append-only, a final invoice stays
SELECT pg_temp.fails('DELETE FROM convbill.ledger WHERE account_id = 200');
SELECT pg_temp.fails('UPDATE convbill.invoice SET total = 0 WHERE account_id = 200');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_cb_app;
SELECT convbill.record_payment(100, 20.30, 'bank-1', '2026-11-10 00:00+00') > 0 AS paid;
SELECT account_id, number, total, paid, open FROM convbill.invoice_settlement ORDER BY account_id;
RESET SESSION AUTHORIZATION;

-------------------------------------------------------------------------------
-- 5. The analyst reads, and moves nothing
-------------------------------------------------------------------------------
SET SESSION AUTHORIZATION regress_cb_analyst;
SELECT currency, kind, service, amount, charges FROM convbill.revenue_monthly
WHERE month = '2026-10-01' ORDER BY kind, service;
SELECT check_name, items FROM convbill.leakage WHERE items <> 0 ORDER BY 1;
SELECT count(*) AS accounts, (SELECT count(*) FROM convbill.charge) AS charges,
       (SELECT count(*) FROM convbill.invoice) AS invoices FROM convbill.account;
SELECT count(*) AS alerts FROM convbill.usage_alert;
SELECT pg_temp.fails('INSERT INTO convbill.usage_event (account_id, source, external_id) VALUES (1, ''x'', ''y'')');
SELECT pg_temp.fails('SELECT convbill.top_up(200, 1, ''analyst'')');
SELECT pg_temp.fails('SELECT convbill.rate_pending()');
SELECT pg_temp.fails('SELECT convbill.charge_event(200, ''sms'', ''analyst'', 1)');
SELECT pg_temp.fails('SELECT convbill.refresh_analytics()');
SELECT pg_temp.fails('UPDATE convbill.account SET name = ''x''');
RESET SESSION AUTHORIZATION;

-------------------------------------------------------------------------------
-- 6. Customers see their own accounts' rows only
-------------------------------------------------------------------------------
-- what the admin sees per account, to compare with
CREATE TEMP TABLE seen_by_admin AS
SELECT a.account_id,
       (SELECT count(*) FROM convbill.charge c WHERE c.account_id = a.account_id) AS charges,
       (SELECT count(*) FROM convbill.invoice i WHERE i.account_id = a.account_id) AS invoices,
       (SELECT count(*) FROM convbill.invoice_line l WHERE l.account_id = a.account_id) AS lines,
       (SELECT count(*) FROM convbill.subscription s WHERE s.account_id = a.account_id) AS subscriptions,
       (SELECT count(*) FROM convbill.ledger l WHERE l.account_id = a.account_id) AS ledger,
       (SELECT count(*) FROM convbill.payment p WHERE p.account_id = a.account_id) AS payments
FROM convbill.account a;
CREATE TEMP TABLE invoice_ids AS SELECT account_id, invoice_id FROM convbill.invoice;
GRANT SELECT ON seen_by_admin, invoice_ids TO PUBLIC;
CREATE FUNCTION pg_temp.own_rows() RETURNS TABLE (account_id bigint, charges bigint, invoices bigint, lines bigint,
                                                  subscriptions bigint, ledger bigint, payments bigint,
                                                  same_as_admin boolean)
LANGUAGE sql AS $$
    WITH mine AS (
        SELECT a.account_id,
               (SELECT count(*) FROM convbill.charge c WHERE c.account_id = a.account_id) AS charges,
               (SELECT count(*) FROM convbill.invoice i WHERE i.account_id = a.account_id) AS invoices,
               (SELECT count(*) FROM convbill.invoice_line l WHERE l.account_id = a.account_id) AS lines,
               (SELECT count(*) FROM convbill.subscription s WHERE s.account_id = a.account_id) AS subscriptions,
               (SELECT count(*) FROM convbill.ledger l WHERE l.account_id = a.account_id) AS ledger,
               (SELECT count(*) FROM convbill.payment p WHERE p.account_id = a.account_id) AS payments
        FROM convbill.account a)
    SELECT m.*, (m.charges, m.invoices, m.lines, m.subscriptions, m.ledger, m.payments)
                = (s.charges, s.invoices, s.lines, s.subscriptions, s.ledger, s.payments)
    FROM mine m JOIN seen_by_admin s USING (account_id) ORDER BY 1
$$;
-- whole tables, without a filter: only the customer's accounts
CREATE FUNCTION pg_temp.table_accounts() RETURNS TABLE (tab text, accounts bigint[])
LANGUAGE sql AS $$
    SELECT 'account', array_agg(DISTINCT account_id ORDER BY account_id) FROM convbill.account UNION ALL
    SELECT 'subscription', array_agg(DISTINCT account_id ORDER BY account_id) FROM convbill.subscription UNION ALL
    SELECT 'charge', array_agg(DISTINCT account_id ORDER BY account_id) FROM convbill.charge UNION ALL
    SELECT 'bucket', array_agg(DISTINCT account_id ORDER BY account_id) FROM convbill.bucket UNION ALL
    SELECT 'ledger', array_agg(DISTINCT account_id ORDER BY account_id) FROM convbill.ledger UNION ALL
    SELECT 'reservation', array_agg(DISTINCT account_id ORDER BY account_id) FROM convbill.reservation UNION ALL
    SELECT 'invoice', array_agg(DISTINCT account_id ORDER BY account_id) FROM convbill.invoice UNION ALL
    SELECT 'invoice_line', array_agg(DISTINCT account_id ORDER BY account_id) FROM convbill.invoice_line UNION ALL
    SELECT 'payment', array_agg(DISTINCT account_id ORDER BY account_id) FROM convbill.payment UNION ALL
    SELECT 'payment_allocation', array_agg(DISTINCT account_id ORDER BY account_id) FROM convbill.payment_allocation UNION ALL
    SELECT 'account_statement', array_agg(DISTINCT account_id ORDER BY account_id) FROM convbill.account_statement UNION ALL
    SELECT 'invoice_settlement', array_agg(DISTINCT account_id ORDER BY account_id) FROM convbill.invoice_settlement
$$;
SELECT * FROM pg_temp.table_accounts();       -- the admin's view, for comparison

SET SESSION AUTHORIZATION regress_cb_corp;    -- the parent: itself and its sub-account
SELECT current_user, convbill.customer_account_ids(current_user) AS sees;
SELECT * FROM pg_temp.table_accounts();
SELECT * FROM pg_temp.own_rows();
SELECT kind, document, debit, credit, balance FROM convbill.account_statement ORDER BY at, document;
SELECT (convbill.invoice_json(invoice_id))->>'number' AS own_invoice FROM convbill.invoice;
SELECT unit, balance, held, available FROM convbill.balance(100);
-- another customer's data is not there, even by key
SELECT count(*) AS other_rows FROM convbill.charge WHERE account_id = 200;
SELECT count(*) AS other_balance FROM convbill.balance(200);
SELECT pg_temp.fails(format('SELECT convbill.invoice_json(%s)', (SELECT invoice_id FROM invoice_ids WHERE account_id = 200)));
-- nor by asking the helper for another login's accounts
SELECT convbill.customer_account_ids('regress_cb_other') AS other_login;
-- and nothing is writable or callable beyond reading
SELECT pg_temp.fails('UPDATE convbill.account SET credit_limit = 1000000 WHERE account_id = 100');
SELECT pg_temp.fails('INSERT INTO convbill.customer_login VALUES (200, ''regress_cb_corp'')');
SELECT pg_temp.fails('SELECT count(*) FROM convbill.customer_login');
SELECT pg_temp.fails('SELECT convbill.top_up(100, 1000, ''self'')');
SELECT pg_temp.fails('SELECT convbill.charge_event(200, ''sms'', ''cust'', 1)');
SELECT pg_temp.fails('SELECT count(*) FROM convbill.usage_event');
SELECT pg_temp.fails('SELECT count(*) FROM convbill.revenue_daily');
SELECT pg_temp.fails('SELECT count(*) FROM convbill.plan_rate');
-- a setting does not change who one is
SET app.account_id = '200';
SELECT array_agg(account_id ORDER BY account_id) AS accounts FROM convbill.account;
RESET app.account_id;
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION regress_cb_sub;     -- the sub-account alone: not its parent
SELECT * FROM pg_temp.table_accounts();
SELECT * FROM pg_temp.own_rows();
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION regress_cb_other;
SELECT * FROM pg_temp.table_accounts();
SELECT * FROM pg_temp.own_rows();
-- zone_of() reads destination (from a per-session cache): not the customer's
SELECT pg_temp.fails($$SELECT convbill.zone_of('4930')$$);
SELECT kind, debit, credit, balance FROM convbill.account_statement ORDER BY at;
SELECT unit, balance, held, available FROM convbill.balance(200);
RESET SESSION AUTHORIZATION;

-- a connection pool that switches to the customer's login with SET ROLE:
-- as itself (no customer_login row) it sees no account
SET SESSION AUTHORIZATION regress_cb_pool;
SELECT count(*) AS accounts_as_pool FROM convbill.account;
SET ROLE regress_cb_other;
SELECT array_agg(account_id ORDER BY account_id) AS accounts FROM convbill.account;
SELECT convbill.customer_account_ids('regress_cb_corp') AS not_its_login;
RESET ROLE;
RESET SESSION AUTHORIZATION;

-- a role in no convbill group: no schema, no money-moving function
SELECT has_schema_privilege('regress_cb_nobody', 'convbill', 'USAGE') AS schema_usage,
       has_function_privilege('regress_cb_nobody', 'convbill.top_up(bigint, numeric, text, timestamptz)', 'EXECUTE') AS top_up,
       has_function_privilege('regress_cb_nobody', 'convbill.balance(bigint)', 'EXECUTE') AS balance,
       has_function_privilege('regress_cb_nobody', 'convbill.rate(convbill.tariff, numeric)', 'EXECUTE') AS rate;
SET SESSION AUTHORIZATION regress_cb_nobody;
SELECT pg_temp.fails('SELECT count(*) FROM convbill.account');
RESET SESSION AUTHORIZATION;

-- the plans of the customer path: the account list is read once (InitPlan),
-- the rows by index
SET SESSION AUTHORIZATION regress_cb_corp;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM convbill.charge WHERE charge_id = 1;
RESET enable_seqscan;
RESET SESSION AUTHORIZATION;

-------------------------------------------------------------------------------
-- Clean up the cluster-wide roles made here (the group roles stay)
-------------------------------------------------------------------------------
DELETE FROM convbill.customer_login;
-- (the admin's bill job left its session temp tables behind)
DROP OWNED BY regress_cb_admin, regress_cb_app, regress_cb_analyst, regress_cb_corp, regress_cb_sub,
    regress_cb_other, regress_cb_pool, regress_cb_nobody;
DROP ROLE regress_cb_admin, regress_cb_app, regress_cb_analyst, regress_cb_corp, regress_cb_sub,
    regress_cb_other, regress_cb_pool, regress_cb_nobody;
SELECT count(*) AS regress_roles_left FROM pg_roles WHERE rolname LIKE 'regress\_cb\_%';
