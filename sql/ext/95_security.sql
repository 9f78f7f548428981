-------------------------------------------------------------------------------
-- Roles with least privilege and customer self-service (SPEC section 7).
--
--   convbill_admin     the operator: catalog, accounts, subscriptions, jobs,
--                      bill-run operations, corrections; every convbill
--                      function and SELECT/INSERT/UPDATE/DELETE on every table
--                      but job (schedule, budget, enabled only: a job's SQL
--                      runs as whoever runs the job); no TRUNCATE, no DDL,
--                      not the owner: the append-only and final-invoice
--                      triggers still hold
--   convbill_app       the application: INSERT/COPY usage_event and the API
--                      (rating, sessions, events, top-ups, one-time charges,
--                      payments, the bill run); reads accounts, balances,
--                      charges and invoices; writes no money table directly
--   convbill_analyst   read-only: the analytics and leakage views, alerts,
--                      charges, invoices, usage; no function that moves money
--   convbill_customer  self-service: its own accounts' rows only (row-level
--                      security), through customer_login
--
-- The four are NOLOGIN group roles: grant them to login roles
-- (GRANT convbill_app TO billing_service).  Roles belong to the cluster, so
-- the script creates the ones missing (CREATE EXTENSION in a second database,
-- or a restore, finds them made) and never drops them; the privileges below
-- are granted inside the script, so PostgreSQL records them as the
-- extension's initial privileges (pg_init_privs): pg_dump writes only later
-- changes, and CREATE EXTENSION at restore grants them again.  So are the
-- row-level security policies (a dump does not carry policies of extension
-- tables; the script makes them).
--
-- The application calls functions that write tables it has no privilege on:
-- those are SECURITY DEFINER (running as the extension's owner), with
-- search_path pinned to pg_catalog, pg_temp and every name qualified, like
-- every convbill function.  Functions whose command text comes from a table
-- (run_job, the job procedures) or that reuse session temp tables across
-- calls (run_billing_step, run_billing_batches) stay SECURITY INVOKER and
-- admin-only: as definer, a caller could make them run its own SQL as the
-- owner.
-------------------------------------------------------------------------------

-- The group roles, made once per cluster.  A concurrent CREATE EXTENSION in
-- another database may create one between the check and the CREATE.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT v.name, v.note
             FROM (VALUES
                 ('convbill_admin', 'convbill operator: catalog, accounts, jobs, corrections (every convbill function and table)'),
                 ('convbill_app', 'convbill application: usage ingestion and the charging/billing API'),
                 ('convbill_analyst', 'convbill analyst: read-only analytics, revenue assurance and fraud views'),
                 ('convbill_customer', 'convbill customer self-service: its own accounts (row-level security, convbill.customer_login)')
             ) AS v(name, note) LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r.name);
        BEGIN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r.name);
            EXECUTE pg_catalog.format('COMMENT ON ROLE %I IS %L', r.name, r.note);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;       -- made meanwhile by another database's CREATE EXTENSION
        END;
    END LOOP;
END $$;

-------------------------------------------------------------------------------
-- Customer logins: which login role sees which account.  Never a setting the
-- customer could change: the row's role_name is compared with current_user
-- (so a connection pool that does SET ROLE <customer login> gets that
-- customer's view), and a role sees its accounts and their sub-accounts.
-------------------------------------------------------------------------------
CREATE TABLE @extschema@.customer_login (
    account_id bigint NOT NULL REFERENCES @extschema@.account (account_id) ON DELETE CASCADE,
    role_name  text NOT NULL CHECK (role_name <> ''),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, role_name)
);
CREATE INDEX customer_login_role ON @extschema@.customer_login (role_name, account_id);
COMMENT ON TABLE @extschema@.customer_login IS
    'customer self-service: login role role_name (a member of convbill_customer) sees account account_id and its sub-accounts';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.customer_login', '');

-- A mapping names a role that exists: one for a role not made yet (or
-- dropped) would give the accounts to whoever is later created with that
-- name.  Delete a login's rows before DROP ROLE (roles are the cluster's: no
-- trigger sees that); restore the roles (pg_dumpall --globals-only) before a
-- database that maps them.
CREATE FUNCTION @extschema@.customer_login_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) NEW.role_name) THEN
        RAISE EXCEPTION 'customer_login: role "%" does not exist', NEW.role_name
            USING ERRCODE = '23503', HINT = 'CREATE ROLE ... LOGIN IN ROLE convbill_customer first.';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER customer_login_guard BEFORE INSERT OR UPDATE OF role_name ON @extschema@.customer_login
    FOR EACH ROW EXECUTE FUNCTION @extschema@.customer_login_guard();

-- The accounts a customer login sees: its own (customer_login) and their
-- sub-accounts, at any depth.  SECURITY DEFINER so that the policies below
-- can read account and customer_login without recursing into account's own
-- policy; as definer it cannot know its caller, so the policies pass
-- current_user, and it answers only for a role the session's login could SET
-- ROLE to (a customer cannot ask for another customer's accounts).
CREATE FUNCTION @extschema@.customer_account_ids(p_role name)
RETURNS bigint[]
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH RECURSIVE mine(account_id) AS (
        SELECT cl.account_id FROM @extschema@.customer_login cl
        WHERE cl.role_name OPERATOR(pg_catalog.=) p_role::text
          AND pg_catalog.pg_has_role(SESSION_USER, p_role, 'MEMBER')
        UNION
        SELECT a.account_id FROM @extschema@.account a JOIN mine m ON a.parent_id OPERATOR(pg_catalog.=) m.account_id
    )
    SELECT coalesce(pg_catalog.array_agg(mine.account_id ORDER BY mine.account_id), '{}') FROM mine;
END;
COMMENT ON FUNCTION @extschema@.customer_account_ids(name) IS
    'the accounts customer login p_role sees (customer_login and their sub-accounts); empty unless the session''s login may SET ROLE to p_role';

-------------------------------------------------------------------------------
-- Functions: nobody but the roles below may call what moves money or reads
-- account data.  The pure functions (tariff evaluation and I/O, periods,
-- zones, formatting, aggregates) stay callable by everyone: constraints and
-- trigger conditions call some of them with the writer's privileges.
-------------------------------------------------------------------------------
REVOKE ALL ON ALL ROUTINES IN SCHEMA @extschema@ FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    @extschema@.tariff_in(cstring), @extschema@.tariff_out(@extschema@.tariff),
    @extschema@.tariff_recv(internal), @extschema@.tariff_send(@extschema@.tariff),
    @extschema@.tariff_eq(@extschema@.tariff, @extschema@.tariff),
    @extschema@.tariff_ne(@extschema@.tariff, @extschema@.tariff),
    @extschema@.tariff_hash(@extschema@.tariff),
    @extschema@.rate(@extschema@.tariff, numeric),
    @extschema@.rate(@extschema@.tariff, numeric, timestamptz, text, numeric),
    @extschema@.rate_billed(@extschema@.tariff, numeric, timestamptz, text, numeric),
    @extschema@.rate_billed_or_null(@extschema@.tariff, numeric, timestamptz, text, numeric),
    @extschema@.billed_quantity(@extschema@.tariff, numeric),
    @extschema@.tariff_currency(@extschema@.tariff), @extschema@.tariff_unit(@extschema@.tariff),
    @extschema@.tariff_scope(@extschema@.tariff),
    @extschema@.session_cost(@extschema@.tariff, timestamptz, text, numeric, numeric, numeric, numeric),
    @extschema@.grant_quantity(@extschema@.tariff, timestamptz, text, numeric, numeric, numeric, numeric,
                               numeric, numeric, numeric),
    @extschema@.currency_exponent(text), @extschema@.is_time_zone(text),
    @extschema@.billing_period_start(timestamptz, text, integer),
    @extschema@.billing_period_end(timestamptz, text, integer),
    @extschema@.billing_period(timestamptz, text, integer),
    @extschema@.local_days(timestamptz, timestamptz, text),
    @extschema@.prorate(numeric, integer, integer, integer),
    @extschema@.invoice_line_total(numeric, text), @extschema@.invoice_sum(numeric),
    @extschema@.usage_baseline(double precision), @extschema@.usage_baseline(double precision, integer),
    @extschema@.realtime_rating_enabled(),
    @extschema@.html_escape(text), @extschema@.group_digits(text), @extschema@.format_amount(numeric, text),
    @extschema@.invoice_number(text, bigint), @extschema@.invoice_line_label(jsonb)
TO PUBLIC;

-- The application's API and the triggers its INSERT into usage_event fires
-- (real-time rating) run as the extension's owner.
ALTER FUNCTION @extschema@.rate_pending(integer) SECURITY DEFINER;
ALTER FUNCTION @extschema@.usage_event_rate_now() SECURITY DEFINER;
ALTER FUNCTION @extschema@.reserve(bigint, text, text, numeric, jsonb, interval) SECURITY DEFINER;
ALTER FUNCTION @extschema@.reserve_update(text, integer, numeric, numeric) SECURITY DEFINER;
ALTER FUNCTION @extschema@.commit(text, integer, numeric) SECURITY DEFINER;
ALTER FUNCTION @extschema@.release(text) SECURITY DEFINER;
ALTER FUNCTION @extschema@.charge_event(bigint, text, text, numeric, jsonb) SECURITY DEFINER;
ALTER FUNCTION @extschema@.charge_events(@extschema@.event_request[]) SECURITY DEFINER;
ALTER FUNCTION @extschema@.top_up(bigint, numeric, text, timestamptz) SECURITY DEFINER;
ALTER FUNCTION @extschema@.grant_allowance(bigint, text, numeric, timestamptz, timestamptz, integer, text) SECURITY DEFINER;
ALTER FUNCTION @extschema@.add_charge(bigint, numeric, text, text, timestamptz, text) SECURITY DEFINER;
ALTER FUNCTION @extschema@.record_payment(bigint, numeric, text, timestamptz) SECURITY DEFINER;
-- (mode 'call': drops this session's bill-run temp tables before it makes its own)
ALTER FUNCTION @extschema@.run_billing(timestamptz, integer) SECURITY DEFINER;
-- owner-only work the admin starts: partitions (CREATE TABLE, ATTACH
-- PARTITION) and the analytics rebuild (TRUNCATE)
ALTER FUNCTION @extschema@.ensure_usage_partitions(timestamptz, integer) SECURITY DEFINER;
ALTER FUNCTION @extschema@.rebuild_analytics() SECURITY DEFINER;

-------------------------------------------------------------------------------
-- Schema, tables, sequences, functions per role
-------------------------------------------------------------------------------
GRANT USAGE ON SCHEMA @extschema@ TO convbill_admin, convbill_app, convbill_analyst, convbill_customer;

-- admin: everything convbill has (functions of files before this one too)
GRANT EXECUTE ON ALL ROUTINES IN SCHEMA @extschema@ TO convbill_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA @extschema@ TO convbill_admin;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA @extschema@ TO convbill_admin;
-- A job's command runs with the rights of whoever runs the job (pg_cron: the
-- role that called schedule_jobs(), often a superuser): the admin may tune
-- the jobs (schedule, budget, enabled) but not write their SQL.
REVOKE INSERT, UPDATE, DELETE ON @extschema@.job FROM convbill_admin;
GRANT UPDATE (schedule, time_budget, enabled, description) ON @extschema@.job TO convbill_admin;
DO $$
DECLARE
    v regclass;
BEGIN
    FOR v IN SELECT c.oid FROM pg_catalog.pg_class c
             WHERE c.relnamespace OPERATOR(pg_catalog.=) '@extschema@'::regnamespace AND c.relkind OPERATOR(pg_catalog.=) 'v' LOOP
        EXECUTE pg_catalog.format('REVOKE INSERT, UPDATE, DELETE ON %s FROM convbill_admin', v);
    END LOOP;
END $$;

-- application
-- (the columns an application sends: status, charge and queue columns are
-- convbill's, an event inserted as rated would never be charged)
GRANT SELECT ON @extschema@.usage_event TO convbill_app;
GRANT INSERT (account_id, source, external_id, service, quantity, started_at, attrs)
    ON @extschema@.usage_event TO convbill_app;
-- zone_of() answers from a per-session cache of destination: granted to
-- those who may read destination, not to PUBLIC (a pooled session's cache
-- would answer a role that may not)
GRANT EXECUTE ON FUNCTION @extschema@.zone_of(text) TO convbill_app, convbill_analyst;
GRANT SELECT ON
    @extschema@.service, @extschema@.destination, @extschema@.plan, @extschema@.plan_rate,
    @extschema@.tax_rate, @extschema@.discount, @extschema@.seller,
    @extschema@.account, @extschema@.subscription, @extschema@.charge,
    @extschema@.bucket, @extschema@.ledger, @extschema@.reservation,
    @extschema@.invoice, @extschema@.invoice_line, @extschema@.payment, @extschema@.payment_allocation,
    @extschema@.account_statement, @extschema@.invoice_settlement, @extschema@.payment_settlement
TO convbill_app;
GRANT EXECUTE ON FUNCTION
    @extschema@.rate_pending(integer),
    @extschema@.reserve(bigint, text, text, numeric, jsonb, interval),
    @extschema@.reserve_update(text, integer, numeric, numeric),
    @extschema@.commit(text, integer, numeric),
    @extschema@.release(text),
    @extschema@.charge_event(bigint, text, text, numeric, jsonb),
    @extschema@.charge_events(@extschema@.event_request[]),
    @extschema@.top_up(bigint, numeric, text, timestamptz),
    @extschema@.grant_allowance(bigint, text, numeric, timestamptz, timestamptz, integer, text),
    @extschema@.add_charge(bigint, numeric, text, text, timestamptz, text),
    @extschema@.record_payment(bigint, numeric, text, timestamptz),
    @extschema@.run_billing(timestamptz, integer)
TO convbill_app;

-- analyst: read-only
GRANT SELECT ON
    @extschema@.revenue_daily, @extschema@.revenue_monthly, @extschema@.usage_daily,
    @extschema@.revenue_by_plan, @extschema@.revenue_by_zone, @extschema@.top_accounts,
    @extschema@.mrr, @extschema@.arpu, @extschema@.unbilled, @extschema@.leakage,
    @extschema@.revenue_bucket, @extschema@.revenue_span,
    @extschema@.account_statement, @extschema@.invoice_settlement, @extschema@.payment_settlement,
    @extschema@.usage_alert, @extschema@.risk_zone,
    @extschema@.service, @extschema@.destination, @extschema@.plan, @extschema@.plan_rate,
    @extschema@.tax_rate, @extschema@.discount, @extschema@.seller,
    @extschema@.account, @extschema@.subscription, @extschema@.usage_event, @extschema@.charge,
    @extschema@.closed_period, @extschema@.bucket, @extschema@.ledger, @extschema@.reservation,
    @extschema@.invoice, @extschema@.invoice_line, @extschema@.payment, @extschema@.payment_allocation,
    @extschema@.revenue_rollup, @extschema@.revenue_delta, @extschema@.job, @extschema@.job_run
TO convbill_analyst;
-- (called by the views with the reader's privileges)
GRANT EXECUTE ON FUNCTION
    @extschema@.analytics_days(), @extschema@.analytics_months(), @extschema@.leakage_setting(text)
TO convbill_analyst;

-- customer: its own rows (policies below) and the public price list
GRANT SELECT ON
    @extschema@.account, @extschema@.subscription, @extschema@.charge,
    @extschema@.bucket, @extschema@.ledger, @extschema@.reservation,
    @extschema@.invoice, @extschema@.invoice_line, @extschema@.payment, @extschema@.payment_allocation,
    @extschema@.account_statement, @extschema@.invoice_settlement, @extschema@.payment_settlement,
    @extschema@.service, @extschema@.plan, @extschema@.seller
TO convbill_customer;
GRANT EXECUTE ON FUNCTION @extschema@.customer_account_ids(name) TO convbill_customer;

-- read-only functions, SECURITY INVOKER: they see what their caller may see
GRANT EXECUTE ON FUNCTION
    @extschema@.balance(bigint),
    @extschema@.money_available(bigint, timestamptz, timestamptz),
    @extschema@.allowance_available(bigint, text, timestamptz, timestamptz),
    @extschema@.payer_of(bigint),
    @extschema@.account_period(bigint, timestamptz),
    @extschema@.invoice_account(bigint, text),
    @extschema@.invoice_json(bigint),
    @extschema@.invoice_html(bigint)
TO convbill_app, convbill_analyst, convbill_customer;

-------------------------------------------------------------------------------
-- Row-level security on what customers read.  The owner (the extension's
-- SECURITY DEFINER functions, superusers) bypasses it; admin, application and
-- analyst have a policy that keeps every row; a customer sees the rows of
-- customer_account_ids(current_user), read once per query (an InitPlan: an
-- index probe per account, not a function call per row).  A role outside the
-- four groups that is granted SELECT directly sees no rows of these tables.
-------------------------------------------------------------------------------
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['account', 'subscription', 'charge', 'bucket', 'ledger', 'reservation',
                             'invoice', 'invoice_line', 'payment', 'payment_allocation'] LOOP
        EXECUTE pg_catalog.format('ALTER TABLE @extschema@.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format('CREATE POLICY staff ON @extschema@.%I
                                   TO convbill_admin, convbill_app, convbill_analyst
                                   USING (true) WITH CHECK (true)', t);
        EXECUTE pg_catalog.format('CREATE POLICY customer_own ON @extschema@.%I FOR SELECT
                                   TO convbill_customer
                                   USING (account_id OPERATOR(pg_catalog.=) ANY
                                          ((SELECT @extschema@.customer_account_ids(CURRENT_USER))::bigint[]))', t);
    END LOOP;
END $$;

-- The customer-facing views read with the reader's rights (and policies),
-- not their owner's.
ALTER VIEW @extschema@.account_statement SET (security_invoker = true);
ALTER VIEW @extschema@.invoice_settlement SET (security_invoker = true);
ALTER VIEW @extschema@.payment_settlement SET (security_invoker = true);
