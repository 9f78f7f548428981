-------------------------------------------------------------------------------
-- property_periods.sql — SPEC §5 periods and recurring fees, as a property:
-- every instant of a subscription is billed exactly once across periods,
-- whatever the account's time zone and billing day changes.
--
-- Random accounts (zones Pacific/Kiritimati UTC+14, Pacific/Pago_Pago UTC−11,
-- Europe/Berlin and America/New_York with DST, Asia/Kolkata +05:30, UTC;
-- billing days 1..28), one or two subscriptions each (monthly arrears,
-- monthly advance, yearly arrears: a twelfth per monthly period) started at
-- random times, some ended when made, some unsubscribed later.  Month by
-- month over 14 months: change time zone and/or billing day of random
-- accounts (the change is refused, 55000, while the account has charges in an
-- open period: account_period_guard), unsubscribe a few, send a few SMS
-- (usage_event + rate_pending, 0.10 each; plan allowances) some of them late,
-- then run_billing (a month is skipped now and then: catch-up runs).
-- Four fixed accounts, changed at set months: the README's Kiritimati <->
-- Pago Pago example both ways, a billing-day change that cuts short a period
-- an advance fee was charged ahead for, and a change across a DST switch.
--
-- Properties, computed independently of the C (periods and days from
-- AT TIME ZONE arithmetic, no billing_period_*/local_days/prorate):
--  (a) per subscription and fee period, the recurring charges sum to
--      fee x quantity x part / (full period days x 86400 [x 12 yearly]),
--      rounded once to 6 decimals, where part = local days of the new
--      settings from the later of start and period start (counted) to the
--      earlier of end and period end (not counted), minus, for a
--      subscription running before a period that starts inside a local day
--      (the first one after a time-zone change), the part of that day before
--      the period (scaled to 86400); the totals then match; independent of
--      that rule, a subscription's total is within a day's worth (plus DST
--      hours) of fee x the fraction of each period's seconds it was active;
--      a fee period's charges never exceed one period's fee nor go below 0;
--      negative charges only credit an advance fee charged ahead;
--  (b) an account's invoiced periods chain: each starts where the previous
--      one ended, none overlaps, none is skipped up to the last run's as_of;
--      each ends at a local midnight of its billing day in its zone and
--      starts there too, except the first period after a change, which
--      starts at the previous end (inside the new full period); closed
--      periods are exactly the invoiced ones;
--  (c) every SMS is on the invoice of the period containing it or, if that
--      one was invoiced when the SMS was rated, on the first one after the
--      periods then invoiced; never earlier, never skipped;
--  (d) a plan allowance bucket of a period holds trunc(allowance x quantity
--      x part / (the full period's days x 86400)), part as for the fee in
--      (a) (to the period's end: a later end takes nothing back): the first
--      local day of a period starting inside it (after a time-zone change)
--      counts only after the start for a subscription running before —
--      at most its share of days, the README's single rule.
--
-- Reproducible: the seed is fixed; change it with  pg_prove --set seed=0.123 ...
-------------------------------------------------------------------------------
BEGIN;
\if :{?seed}
\else
\set seed 0.314159
\endif
\set accounts 60
\set months 14

SET LOCAL client_min_messages = warning;
SET LOCAL max_parallel_workers_per_gather = 0;
SET LOCAL convbill.invoice_empty_periods = on;	-- every ended period gets an invoice: (b) on invoices
SET LOCAL convbill.finalize_invoices = off;
-- the extension must not depend on the session's zone (this test does not)
SET LOCAL TimeZone = 'America/St_Johns';

SELECT setseed(:seed) \gset
SELECT plan(56);

CREATE TEMP TABLE pp_param ON COMMIT DROP AS
SELECT :accounts::int AS accounts, :months::int AS months,
       ARRAY['Pacific/Kiritimati', 'Pacific/Pago_Pago', 'Europe/Berlin', 'America/New_York',
             'Asia/Kolkata', 'UTC'] AS zones,
       timestamp '2024-01-01 00:00' AT TIME ZONE 'UTC' AS t0;

-------------------------------------------------------------------------------
-- catalog: one SMS service, three random plans + the README's 31.00 plan
-------------------------------------------------------------------------------
INSERT INTO convbill.service (code, unit, description) VALUES ('pp_sms', 'message', 'PP text messages');
CREATE TEMP TABLE pp_plan ON COMMIT DROP AS
SELECT code, label, billing, fee_interval, CASE WHEN fee_interval = 'year' THEN 12 ELSE 1 END AS k,
       fee, allowance
  FROM (VALUES (1, 'PP-MA', 'monthly arrears', 'arrears', 'month', round((5 + random() * 95)::numeric, 2), 2),
               (2, 'PP-MV', 'monthly advance', 'advance', 'month', round((5 + random() * 95)::numeric, 2), 1),
               (3, 'PP-YA', 'yearly arrears',  'arrears', 'year',  round((60 + random() * 1200)::numeric, 2), 2),
               (4, 'PP-K31', 'README 31.00',   'arrears', 'month', 31.00, 0)) v(o, code, label, billing, fee_interval, fee, allowance)
 ORDER BY o;
INSERT INTO convbill.plan (code, name, currency, recurring_fee, fee_interval, billing, allowances)
SELECT code, label, 'EUR', fee, fee_interval, billing,
       CASE WHEN allowance > 0 THEN jsonb_build_object('pp_sms', allowance) ELSE '{}' END
  FROM pp_plan;
INSERT INTO convbill.plan_rate (plan_code, service, tariff)
SELECT code, 'pp_sms', '{"price": "0.10"}' FROM pp_plan;

-------------------------------------------------------------------------------
-- accounts and subscriptions
-------------------------------------------------------------------------------
CREATE TEMP TABLE pp_acct ON COMMIT DROP AS
SELECT 7700000 + i AS id, p.zones[1 + floor(random() * 6)::int] AS tz0, 1 + floor(random() * 28)::int AS bd0,
       false AS fixed, NULL::text AS force_tz, NULL::int AS force_bd, NULL::int AS force_m
  FROM pp_param p, generate_series(1, (SELECT accounts FROM pp_param)) i
 ORDER BY i;
-- fixed accounts, changed after their January 2024 is invoiced: the README's
-- example both ways, and an advance subscription starting after the first
-- period of a new billing day (charged ahead for the old period before)
-- (and one across a DST change: Berlin to New York, billing day 20, after
-- February: the first period runs Mar 1 00:00 Berlin to Mar 20 New York, its
-- full period Feb 20 - Mar 20 has 29 days but one hour less)
INSERT INTO pp_acct VALUES (7799001, 'Pacific/Kiritimati', 1, true, 'Pacific/Pago_Pago', 1, 2),
                           (7799002, 'Pacific/Pago_Pago', 1, true, 'Pacific/Kiritimati', 1, 2),
                           (7799003, 'UTC', 1, true, 'UTC', 15, 2),
                           (7799004, 'Europe/Berlin', 1, true, 'America/New_York', 20, 3);
INSERT INTO convbill.account (account_id, external_ref, name, currency, timezone, billing_day)
SELECT id, 'pp-' || id, 'Property periods ' || id, 'EUR', tz0, bd0 FROM pp_acct ORDER BY id;

CREATE TEMP TABLE pp_sub (
    sub_id     bigint PRIMARY KEY,
    account_id bigint NOT NULL,
    plan_code  text NOT NULL,
    qty        int NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    ended_late boolean NOT NULL DEFAULT false,
    ended_m    int                -- the month it was unsubscribed in (before that month's run)
) ON COMMIT DROP;

DO $$
DECLARE
    a record;
    n int;
    plans text[];
    st timestamptz;
    en timestamptz;
    q int;
    id bigint;
    t0 timestamptz := (SELECT t0 FROM pp_param);
BEGIN
    FOR a IN SELECT * FROM pp_acct WHERE NOT fixed ORDER BY id LOOP
        n := CASE WHEN random() < 0.4 THEN 2 ELSE 1 END;
        -- distinct plans (one subscription per plan at a time)
        plans := ARRAY(SELECT code FROM pp_plan WHERE code <> 'PP-K31' ORDER BY random());
        FOR j IN 1 .. n LOOP
            st := t0 - interval '20 days' + random() * interval '130 days';
            IF random() < 0.25 THEN     -- at a local midnight
                st := date_trunc('day', st AT TIME ZONE a.tz0) AT TIME ZONE a.tz0;
            END IF;
            q := CASE WHEN random() < 0.2 THEN 2 ELSE 1 END;
            en := CASE WHEN random() < 0.3 THEN st + interval '1 hour' + random() * interval '220 days' END;
            id := convbill.subscribe(a.id, plans[j], st, q);
            IF en IS NOT NULL THEN
                PERFORM convbill.unsubscribe(id, en);
            END IF;
            INSERT INTO pp_sub VALUES (id, a.id, plans[j], q, st, en);
        END LOOP;
    END LOOP;
    -- the fixed accounts: 31.00 a month from their own January 1st, 2024
    FOR a IN SELECT * FROM pp_acct WHERE fixed ORDER BY id LOOP
        st := timestamp '2024-01-01 00:00' AT TIME ZONE a.tz0;
        id := convbill.subscribe(a.id, 'PP-K31', st, 1);
        INSERT INTO pp_sub VALUES (id, a.id, 'PP-K31', 1, st, NULL);
    END LOOP;
    -- 7799003: in advance from February 20 (charged ahead for [Feb 1, Mar 1)
    -- with January; then billing day 15: the period [Feb 1, Feb 15) is cut short)
    st := timestamp '2024-02-20 00:00' AT TIME ZONE 'UTC';
    id := convbill.subscribe(7799003, 'PP-MV', st, 1);
    INSERT INTO pp_sub VALUES (id, 7799003, 'PP-MV', 1, st, NULL);
END $$;

-------------------------------------------------------------------------------
-- the months
-------------------------------------------------------------------------------
CREATE TEMP TABLE pp_run (m int PRIMARY KEY, as_of timestamptz, ran boolean, invoices int) ON COMMIT DROP;
-- the settings each invoiced period was billed with (recorded after each run)
CREATE TEMP TABLE pp_period (
    account_id bigint, ps timestamptz, pe timestamptz, tz text, bd int, invoice_id bigint, m int,
    PRIMARY KEY (account_id, ps)
) ON COMMIT DROP;
CREATE TEMP TABLE pp_change (
    m int, account_id bigint, old_tz text, old_bd int, new_tz text, new_bd int,
    had_open boolean, ok boolean, sqlstate text
) ON COMMIT DROP;
CREATE TEMP TABLE pp_event (
    account_id bigint, ext_id text PRIMARY KEY, at timestamptz, m int,
    billed_until timestamptz      -- end of the account's invoiced periods when it was rated
) ON COMMIT DROP;
CREATE TEMP TABLE pp_err (m int, step text, account_id bigint, sqlstate text, msg text) ON COMMIT DROP;

DO $$
DECLARE
    p record;
    a record;
    s record;
    cur record;
    as_of timestamptz;
    r float8;
    ntz text;
    nbd int;
    open_charges boolean;
    bu timestamptz;
    lo timestamptz;
    hi timestamptz;
    at timestamptz;
    n int;
    inv int;
    st text;
    msg text;
BEGIN
    SELECT * INTO p FROM pp_param;
    FOR m IN 1 .. p.months LOOP
        as_of := (timestamp '2024-01-01 00:00' + make_interval(months => m, days => 1)) AT TIME ZONE 'UTC'
                 + random() * interval '4 days';

        -- 1. time zone and/or billing day changes, tried at random
        FOR a IN SELECT * FROM pp_acct ORDER BY id LOOP
            SELECT timezone, billing_day INTO cur FROM convbill.account WHERE account_id = a.id;
            ntz := cur.timezone;
            nbd := cur.billing_day;
            IF a.fixed THEN
                CONTINUE WHEN m <> a.force_m;
                ntz := a.force_tz;
                nbd := a.force_bd;
            ELSE
                CONTINUE WHEN random() >= 0.3;
                r := random();
                IF r < 0.75 THEN
                    ntz := (SELECT z FROM unnest(p.zones) z WHERE z <> cur.timezone ORDER BY random() LIMIT 1);
                END IF;
                IF r >= 0.45 THEN
                    nbd := (SELECT d FROM generate_series(1, 28) d WHERE d <> cur.billing_day ORDER BY random() LIMIT 1);
                END IF;
            END IF;
            -- the README's rule: allowed once the open periods are invoiced
            -- (no charge, nor plan allowance, in a period not closed)
            open_charges := EXISTS (SELECT 1 FROM convbill.charge c
                                     WHERE c.account_id = a.id
                                       AND NOT EXISTS (SELECT 1 FROM convbill.closed_period cp
                                                        WHERE cp.account_id = a.id AND cp.period_start = c.period_start))
                         OR EXISTS (SELECT 1 FROM convbill.bucket b
                                     WHERE b.account_id = a.id AND b.origin = 'plan'
                                       AND NOT EXISTS (SELECT 1 FROM convbill.closed_period cp
                                                        WHERE cp.account_id = a.id AND cp.period_start = b.period_start));
            BEGIN
                UPDATE convbill.account SET timezone = ntz, billing_day = nbd WHERE account_id = a.id;
                INSERT INTO pp_change VALUES (m, a.id, cur.timezone, cur.billing_day, ntz, nbd, open_charges, true, NULL);
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
                INSERT INTO pp_change VALUES (m, a.id, cur.timezone, cur.billing_day, ntz, nbd, open_charges, false, st);
                IF st <> '55000' THEN
                    INSERT INTO pp_err VALUES (m, 'change', a.id, st, msg);
                END IF;
            END;
        END LOOP;

        -- 2. a few running subscriptions end, from the open period on
        FOR s IN SELECT x.* FROM pp_sub x JOIN pp_acct y ON y.id = x.account_id
                  WHERE NOT y.fixed AND x.ended_at IS NULL ORDER BY x.sub_id LOOP
            CONTINUE WHEN random() >= 0.07;
            bu := (SELECT max(pe) FROM pp_period WHERE account_id = s.account_id);
            at := greatest(s.started_at, coalesce(bu, s.started_at)) + interval '1 minute' + random() * interval '45 days';
            BEGIN
                PERFORM convbill.unsubscribe(s.sub_id, at);
                UPDATE pp_sub SET ended_at = at, ended_late = true, ended_m = m WHERE sub_id = s.sub_id;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
                INSERT INTO pp_err VALUES (m, 'unsubscribe', s.account_id, st, msg);
            END;
        END LOOP;

        -- 3. SMS at random times while a subscription runs, some late (in
        -- periods already invoiced), some in periods that have not ended
        FOR a IN SELECT * FROM pp_acct WHERE NOT fixed ORDER BY id LOOP
            -- (more in the last month: some stay in periods not invoiced yet)
            CONTINUE WHEN random() >= CASE WHEN m = p.months THEN 0.8 ELSE 0.45 END;
            n := 1 + floor(random() * 3)::int;
            bu := (SELECT max(pe) FROM pp_period WHERE account_id = a.id);
            FOR k IN 1 .. n LOOP
                SELECT * INTO s FROM pp_sub WHERE account_id = a.id ORDER BY sub_id LIMIT 1
                    OFFSET floor(random() * (SELECT count(*) FROM pp_sub WHERE account_id = a.id))::int;
                lo := greatest(s.started_at, as_of - interval '50 days');
                hi := least(coalesce(s.ended_at, 'infinity'), as_of + interval '20 days');
                at := lo + random() * (hi - lo);
                CONTINUE WHEN lo >= hi;
                INSERT INTO convbill.usage_event (account_id, source, external_id, service, quantity, started_at)
                VALUES (a.id, 'pp', format('pp-%s-%s-%s', m, a.id, k), 'pp_sms', 1, at);
                INSERT INTO pp_event VALUES (a.id, format('pp-%s-%s-%s', m, a.id, k), at, m, bu);
            END LOOP;
        END LOOP;
        BEGIN
            LOOP
                EXIT WHEN convbill.rate_pending() = 0;
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
            INSERT INTO pp_err VALUES (m, 'rate_pending', NULL, st, msg);
        END;

        -- 4. the bill run (now and then a month is missed: the next one catches up)
        IF m = p.months OR m <= 2 OR random() >= 0.12 THEN
            BEGIN
                inv := convbill.run_billing(as_of);
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
                INSERT INTO pp_err VALUES (m, 'run_billing', NULL, st, msg);
                inv := NULL;
            END;
            INSERT INTO pp_run VALUES (m, as_of, true, inv);
            INSERT INTO pp_period
            SELECT i.account_id, i.period_start, i.period_end, a2.timezone, a2.billing_day, i.invoice_id, m
              FROM convbill.invoice i JOIN convbill.account a2 USING (account_id)
             WHERE i.kind = 'invoice' AND i.account_id IN (SELECT id FROM pp_acct)
               AND NOT EXISTS (SELECT 1 FROM pp_period x WHERE x.account_id = i.account_id AND x.ps = i.period_start);
        ELSE
            INSERT INTO pp_run VALUES (m, as_of, false, NULL);
        END IF;
    END LOOP;
END $$;

-------------------------------------------------------------------------------
-- the independent model
-------------------------------------------------------------------------------
-- each period with its full period (start of the new settings' period that
-- contains it: the same local date a month before its end) and, for a period
-- starting inside a local day, that day's local midnights
CREATE TEMP TABLE pp_per ON COMMIT DROP AS
SELECT q.*, q.full_start <> q.ps AS transition,
       (q.pe AT TIME ZONE q.tz)::date - (q.full_start AT TIME ZONE q.tz)::date AS full_days,
       round(86400 * extract(epoch FROM q.ps - q.m0) / extract(epoch FROM q.m1 - q.m0))::int AS cut
  FROM (SELECT p.*,
               ((p.pe AT TIME ZONE p.tz) - interval '1 month') AT TIME ZONE p.tz AS full_start,
               ((p.ps AT TIME ZONE p.tz)::date)::timestamp AT TIME ZONE p.tz AS m0,
               ((p.ps AT TIME ZONE p.tz)::date + 1)::timestamp AT TIME ZONE p.tz AS m1,
               lag(p.pe) OVER w AS prev_pe, lag(p.tz) OVER w AS prev_tz, lag(p.bd) OVER w AS prev_bd,
               row_number() OVER w AS n
          FROM pp_period p
        WINDOW w AS (PARTITION BY p.account_id ORDER BY p.ps)) q;

-- fee periods: every invoiced period, and for an advance fee the period after
-- the last one (charged ahead; the settings did not change after the last
-- run), with the end known when it was charged: an unsubscribe after the
-- run that charged it ahead is credited when that period is billed
-- (unsubscribing is allowed from the end of the invoiced periods on, so an
-- invoiced period always saw its subscriptions' final end)
CREATE TEMP TABLE pp_fee ON COMMIT DROP AS
WITH fp AS (
    SELECT s.sub_id, p.ps AS fps, p.pe AS fpe, p.tz, p.full_start, p.full_days, p.cut, p.transition, false AS ahead,
           s.ended_at AS e_end
      FROM pp_sub s JOIN pp_per p ON p.account_id = s.account_id AND s.started_at < p.pe
    UNION ALL
    SELECT s.sub_id, l.pe, x.fpe, a.timezone, l.pe,
           (x.fpe AT TIME ZONE a.timezone)::date - (l.pe AT TIME ZONE a.timezone)::date, 0, false, true,
           CASE WHEN s.ended_m IS NULL OR s.ended_m <= l.m THEN s.ended_at END
      FROM pp_sub s
      JOIN pp_plan pl ON pl.code = s.plan_code AND pl.billing = 'advance'
      JOIN convbill.account a ON a.account_id = s.account_id
      JOIN LATERAL (SELECT pe, m FROM pp_period WHERE account_id = s.account_id ORDER BY pe DESC LIMIT 1) l ON true
      CROSS JOIN LATERAL (SELECT ((l.pe AT TIME ZONE a.timezone) + interval '1 month') AT TIME ZONE a.timezone AS fpe) x
     WHERE s.started_at < x.fpe
)
SELECT y.*,
       round(pl.fee * s.qty * y.part / (y.full_days * 86400 * pl.k)::numeric, 6) AS due,
       -- the seconds of the fee period the subscription ran, over the full period's
       greatest(0, extract(epoch FROM least(coalesce(y.e_end, 'infinity'), y.fpe) - greatest(s.started_at, y.fps)))
         / extract(epoch FROM y.fpe - y.full_start) AS sec_share
  FROM (SELECT fp.*, d.days,
               d.days * 86400 - CASE WHEN s.started_at < fp.fps AND d.days > 0 THEN fp.cut ELSE 0 END AS part
          FROM fp JOIN pp_sub s USING (sub_id)
          CROSS JOIN LATERAL (
              SELECT greatest(0, (least(coalesce(fp.e_end, 'infinity'), fp.fpe) AT TIME ZONE fp.tz)::date
                                 - (greatest(s.started_at, fp.fps) AT TIME ZONE fp.tz)::date) AS days) d) y
  JOIN pp_sub s USING (sub_id) JOIN pp_plan pl ON pl.code = s.plan_code;

-- what was charged, per subscription and fee period
CREATE TEMP TABLE pp_charged ON COMMIT DROP AS
SELECT c.subscription_id AS sub_id, c.fee_period_start AS fps, sum(c.amount) AS amount, count(*) AS charges,
       min(c.amount) AS lowest
  FROM convbill.charge c
 WHERE c.kind = 'recurring' AND c.account_id IN (SELECT id FROM pp_acct)
 GROUP BY 1, 2;

CREATE TEMP TABLE pp_cmp ON COMMIT DROP AS
SELECT coalesce(f.sub_id, c.sub_id) AS sub_id, coalesce(f.fps, c.fps) AS fps, f.fpe, f.tz, f.transition, f.ahead, f.e_end,
       f.days, f.part, f.full_days, f.due, f.sec_share, coalesce(c.amount, 0) AS charged, c.charges, c.lowest,
       s.account_id, s.plan_code, pl.label, pl.fee, pl.k, s.qty, s.started_at, s.ended_at
  FROM pp_fee f FULL JOIN pp_charged c ON c.sub_id = f.sub_id AND c.fps = f.fps
  JOIN pp_sub s ON s.sub_id = coalesce(f.sub_id, c.sub_id)
  JOIN pp_plan pl ON pl.code = s.plan_code;

-------------------------------------------------------------------------------
-- the scenario did what it claims
-------------------------------------------------------------------------------
SELECT is((SELECT array_agg(DISTINCT step || ' ' || sqlstate || ': ' || msg) FROM pp_err), NULL,
          'every operation of the scenario succeeded (bill runs, rating, unsubscribe; changes refused only with 55000)');

SELECT is(
    (SELECT array_agg(missing ORDER BY missing) FROM (
        SELECT f.missing FROM unnest(ARRAY[
            'zone Pacific/Kiritimati', 'zone Pacific/Pago_Pago', 'zone Europe/Berlin', 'zone America/New_York',
            'zone Asia/Kolkata', 'zone UTC', 'time-zone change', 'billing-day change', 'both changed at once',
            'change refused (55000)', 'transition inside a local day', 'transition at a midnight',
            'transition across DST', 'advance credit', 'yearly fee', 'late SMS', 'SMS in a transition period',
            'catch-up run', 'allowance in a transition period', 'allowance of a part of a local day',
            'unsubscribed later', 'ended when made',
            'start at a local midnight', 'SMS after the last invoice']) f(missing)
         WHERE NOT CASE f.missing
            WHEN 'time-zone change' THEN EXISTS (SELECT FROM pp_change WHERE ok AND new_tz <> old_tz AND new_bd = old_bd)
            WHEN 'billing-day change' THEN EXISTS (SELECT FROM pp_change WHERE ok AND new_tz = old_tz AND new_bd <> old_bd)
            WHEN 'both changed at once' THEN EXISTS (SELECT FROM pp_change WHERE ok AND new_tz <> old_tz AND new_bd <> old_bd)
            WHEN 'change refused (55000)' THEN EXISTS (SELECT FROM pp_change WHERE NOT ok AND sqlstate = '55000')
            WHEN 'transition inside a local day' THEN EXISTS (SELECT FROM pp_per WHERE transition AND cut > 0)
            WHEN 'transition at a midnight' THEN EXISTS (SELECT FROM pp_per WHERE transition AND cut = 0)
            WHEN 'transition across DST' THEN EXISTS (SELECT FROM pp_per WHERE transition AND tz IN ('Europe/Berlin', 'America/New_York')
                                                          AND extract(epoch FROM pe - full_start) <> full_days * 86400)
            WHEN 'advance credit' THEN EXISTS (SELECT FROM pp_cmp WHERE lowest < 0)
            WHEN 'yearly fee' THEN EXISTS (SELECT FROM pp_cmp WHERE k = 12 AND charged > 0)
            WHEN 'late SMS' THEN EXISTS (SELECT FROM pp_event WHERE at < billed_until)
            WHEN 'SMS in a transition period' THEN EXISTS (SELECT FROM pp_event e JOIN pp_per p ON p.account_id = e.account_id
                                                           AND e.at >= p.ps AND e.at < p.pe AND p.transition)
            WHEN 'catch-up run' THEN EXISTS (SELECT FROM pp_period GROUP BY account_id, m HAVING count(*) > 1)
            WHEN 'allowance in a transition period' THEN EXISTS (SELECT FROM convbill.bucket b JOIN pp_per p
                                                                 ON p.account_id = b.account_id AND p.ps = b.period_start
                                                                 WHERE b.origin = 'plan' AND p.transition)
            WHEN 'allowance of a part of a local day' THEN EXISTS (SELECT FROM convbill.bucket b JOIN pp_per p
                                                                   ON p.account_id = b.account_id AND p.ps = b.period_start
                                                                   JOIN pp_sub s ON s.sub_id = b.subscription_id
                                                                   WHERE b.origin = 'plan' AND p.cut > 0 AND s.started_at < p.ps)
            WHEN 'unsubscribed later' THEN EXISTS (SELECT FROM pp_sub WHERE ended_late)
            WHEN 'ended when made' THEN EXISTS (SELECT FROM pp_sub WHERE NOT ended_late AND ended_at IS NOT NULL)
            WHEN 'start at a local midnight' THEN EXISTS (SELECT FROM pp_cmp WHERE started_at = date_trunc('day', started_at AT TIME ZONE tz) AT TIME ZONE tz)
            WHEN 'SMS after the last invoice' THEN EXISTS (SELECT FROM pp_event e WHERE e.at >= (SELECT max(pe) FROM pp_period p WHERE p.account_id = e.account_id))
            ELSE EXISTS (SELECT FROM pp_period WHERE 'zone ' || tz = f.missing) END) s),
    NULL,
    format('the scenario covers every zone, each kind of change, refused changes, transitions, DST, credits, late SMS and catch-up runs (%s accounts, %s subscriptions, %s periods, %s changes, %s SMS)',
           (SELECT count(*) FROM pp_acct), (SELECT count(*) FROM pp_sub), (SELECT count(*) FROM pp_period),
           (SELECT count(*) FROM pp_change WHERE ok), (SELECT count(*) FROM pp_event)));

SELECT is((SELECT count(*) FROM pp_change WHERE ok = had_open), 0::bigint,
          format('a change of time zone or billing day is refused (55000) exactly while the account has charges or plan allowances in a period not invoiced (%s allowed, %s refused)',
                 (SELECT count(*) FROM pp_change WHERE ok), (SELECT count(*) FROM pp_change WHERE NOT ok)));

-------------------------------------------------------------------------------
-- (b) periods
-------------------------------------------------------------------------------
SELECT is(count(*) FILTER (WHERE p.n > 1 AND p.ps IS DISTINCT FROM p.prev_pe), 0::bigint,
          format('(b) %s: every invoiced period starts where the previous one ended: no overlap, no gap (%s accounts, %s periods)',
                 z, count(DISTINCT p.account_id), count(p.account_id)))
  FROM unnest((SELECT zones FROM pp_param)) WITH ORDINALITY u(z, o)
  LEFT JOIN (pp_acct a JOIN pp_per p ON p.account_id = a.id) ON a.tz0 = u.z
 GROUP BY z, o ORDER BY o;

SELECT is(count(*) FILTER (WHERE NOT (
              p.pe > p.ps
              AND (p.pe AT TIME ZONE p.tz) = date_trunc('day', p.pe AT TIME ZONE p.tz)
              AND extract(day FROM p.pe AT TIME ZONE p.tz) = p.bd
              AND p.full_start <= p.ps)), 0::bigint,
          format('(b) every period ends at local midnight of its billing day in its zone, at most a month after it starts (%s periods)', count(*)))
  FROM pp_per p;

SELECT is(count(*) FILTER (WHERE p.transition AND (p.n = 1 OR (p.tz, p.bd) = (p.prev_tz, p.prev_bd))), 0::bigint,
          format('(b) only the first period after a change starts off its boundary, where the last invoiced one ended (%s such periods, %s with a part of a local day)',
                 count(*) FILTER (WHERE p.transition), count(*) FILTER (WHERE p.transition AND p.cut > 0)))
  FROM pp_per p;

SELECT is(count(*) FILTER (WHERE NOT ok), 0::bigint,
          format('(b) each account''s first period contains its first subscription''s start, and no period that ended by the last run is left uninvoiced (%s accounts)', count(*)))
  FROM (SELECT a.id,
               (SELECT min(started_at) FROM pp_sub s WHERE s.account_id = a.id) >= f.ps
               AND (SELECT min(started_at) FROM pp_sub s WHERE s.account_id = a.id) < f.pe
               AND ((l.pe AT TIME ZONE ac.timezone) + interval '1 month') AT TIME ZONE ac.timezone
                   > (SELECT as_of FROM pp_run WHERE ran ORDER BY m DESC LIMIT 1)
               AND l.pe <= (SELECT as_of FROM pp_run WHERE ran ORDER BY m DESC LIMIT 1) AS ok
          FROM pp_acct a JOIN convbill.account ac ON ac.account_id = a.id
          JOIN LATERAL (SELECT * FROM pp_per p WHERE p.account_id = a.id ORDER BY ps LIMIT 1) f ON true
          JOIN LATERAL (SELECT * FROM pp_per p WHERE p.account_id = a.id ORDER BY ps DESC LIMIT 1) l ON true) x;

SELECT is((SELECT count(*) FROM (
              (SELECT account_id, period_start, period_end FROM convbill.closed_period
                WHERE account_id IN (SELECT id FROM pp_acct)
               EXCEPT ALL SELECT account_id, ps, pe FROM pp_period)
              UNION ALL
              (SELECT account_id, ps, pe FROM pp_period
               EXCEPT ALL SELECT account_id, period_start, period_end FROM convbill.closed_period
                WHERE account_id IN (SELECT id FROM pp_acct) AND invoiced_by = account_id)) d),
          0::bigint,
          '(b) the closed periods are exactly the invoiced ones, each closed by its own run');

SELECT is(count(*) FILTER (WHERE c.invoice_id IS NULL OR i.period_start <> c.period_start OR c.period_start <> c.fee_period_start AND c.fee_period_start <> i.period_end),
          0::bigint,
          format('(b) every recurring charge is on the invoice of its period, for that period or (advance) the next (%s charges)', count(*)))
  FROM convbill.charge c LEFT JOIN convbill.invoice i ON i.account_id = c.account_id AND i.invoice_id = c.invoice_id
 WHERE c.kind = 'recurring' AND c.account_id IN (SELECT id FROM pp_acct);

-------------------------------------------------------------------------------
-- (a) recurring fees
-------------------------------------------------------------------------------
-- (a fee period the model does not have — charged ahead, then cut short by a
-- change of settings before the subscription started — must net to 0: its
-- fee credited back)
SELECT is(count(*) FILTER (WHERE c.charged IS DISTINCT FROM coalesce(c.due, 0)), 0::bigint,
          format('(a) %s: each fee period''s charges sum to fee x part / full period, by local days of its settings (%s subscriptions, %s fee periods, %s transition periods)',
                 pl.label, count(DISTINCT c.sub_id), count(c.sub_id), count(*) FILTER (WHERE c.transition)))
  FROM pp_plan pl LEFT JOIN pp_cmp c ON c.plan_code = pl.code
 GROUP BY pl.code, pl.label ORDER BY pl.code;

SELECT is(count(*) FILTER (WHERE c.charged IS DISTINCT FROM coalesce(c.due, 0)), 0::bigint,
          format('(a) periods in %s: fee charges as the local-day rule says (%s fee periods, %s after a change)',
                 z, count(c.sub_id), count(*) FILTER (WHERE c.transition)))
  FROM unnest((SELECT zones FROM pp_param)) WITH ORDINALITY u(z, o)
  LEFT JOIN pp_cmp c ON c.tz = u.z
 GROUP BY z, o ORDER BY o;

SELECT is(count(*) FILTER (WHERE c.charged IS DISTINCT FROM coalesce(c.due, 0)), 0::bigint,
          format('(a) first periods after a time-zone change (starting inside a local day): the running subscription''s first day counts only after the start (%s fee periods)', count(*)))
  FROM pp_cmp c JOIN pp_per p ON p.account_id = c.account_id AND p.ps = c.fps
 WHERE p.transition AND p.cut > 0;

SELECT is(count(*) FILTER (WHERE t.charged <> t.due), 0::bigint,
          format('(a) %s: each subscription''s recurring charges total what continuous billing charges (%s subscriptions, %s charged)',
                 pl.label, count(t.sub_id), coalesce(sum(t.charged), 0)))
  FROM pp_plan pl
  LEFT JOIN (SELECT c.sub_id, c.plan_code, sum(c.charged) AS charged, coalesce(sum(c.due), 0) AS due
               FROM pp_cmp c GROUP BY 1, 2) t ON t.plan_code = pl.code
 GROUP BY pl.code, pl.label ORDER BY pl.code;

-- independent of the local-day rule: within a day's worth (the start day
-- counts whole, the end day not), plus an hour per period (DST days), plus
-- rounding, of fee x the share of each period's seconds it ran
SELECT is(count(*) FILTER (WHERE abs(t.charged - t.by_seconds) > t.slack), 0::bigint,
          format('(a) %s: each subscription''s total is fee x the share of seconds it ran, give or take one day''s worth (%s subscriptions, largest gap %s of %s allowed)',
                 pl.label, count(t.sub_id), coalesce(max(abs(t.charged - t.by_seconds)), 0)::numeric(20, 6),
                 coalesce(max(t.slack), 0)::numeric(20, 6)))
  FROM pp_plan pl
  LEFT JOIN (SELECT c.sub_id, c.plan_code, sum(c.charged) AS charged,
                    c.fee * c.qty / c.k * sum(coalesce(c.sec_share, 0)) AS by_seconds,
                    c.fee * c.qty / c.k * (1.0 / 28 + count(*) / 672.0) + count(*) * 0.000001 AS slack
               FROM pp_cmp c GROUP BY c.sub_id, c.plan_code, c.fee, c.qty, c.k) t ON t.plan_code = pl.code
 GROUP BY pl.code, pl.label ORDER BY pl.code;

SELECT is(count(*) FILTER (WHERE c.charged < 0 OR c.charged > round(c.fee * c.qty / c.k, 6)), 0::bigint,
          format('(a) %s: a fee period is charged between 0 and one period''s fee (%s fee periods)', pl.label, count(c.sub_id)))
  FROM pp_plan pl LEFT JOIN pp_cmp c ON c.plan_code = pl.code
 GROUP BY pl.code, pl.label ORDER BY pl.code;

SELECT is(count(*) FILTER (WHERE c.charged <> 0), 0::bigint,
          format('(a) no fee period keeps a charge for a subscription that did not run in it (%s subscription-periods expected to cost nothing or not in the subscription''s life, %s charged)',
                 count(*), count(*) FILTER (WHERE c.charged <> 0)))
  FROM pp_cmp c WHERE coalesce(c.due, 0) = 0;

SELECT is(count(*) FILTER (WHERE pl.billing <> 'advance'
                              OR NOT EXISTS (SELECT 1 FROM convbill.charge e
                                              WHERE e.account_id = c.account_id AND e.kind = 'recurring'
                                                AND e.subscription_id = c.subscription_id
                                                AND e.fee_period_start = c.fee_period_start
                                                AND e.amount > 0 AND e.charge_id < c.charge_id)),
          0::bigint,
          format('(a) negative recurring charges only credit back an advance fee charged ahead (%s credits)', count(*)))
  FROM convbill.charge c JOIN pp_sub s ON s.sub_id = c.subscription_id JOIN pp_plan pl ON pl.code = s.plan_code
 WHERE c.kind = 'recurring' AND c.amount < 0 AND c.account_id IN (SELECT id FROM pp_acct);

SELECT is(count(*) FILTER (WHERE c.fee_period_start <> c.period_start AND c.fee_period_start <> i.period_end), 0::bigint,
          '(a) an advance fee is charged ahead only for the period right after the one billed')
  FROM convbill.charge c JOIN convbill.invoice i ON i.account_id = c.account_id AND i.invoice_id = c.invoice_id
 WHERE c.kind = 'recurring' AND c.account_id IN (SELECT id FROM pp_acct);

-- known answers (README): Kiritimati -> Pago Pago after January 2024: a
-- 25-hour period, 31.00 x (1/24 + 1)/31 = 1.041667; Pago Pago -> Kiritimati:
-- from 01:00 on Feb 2 to Mar 1 (2024: 29 days), 31.00 x (23/24 + 27)/29
-- = 20801/696 = 29.886494
SELECT is(ARRAY(SELECT c.charged FROM pp_cmp c WHERE c.account_id = 7799001 ORDER BY c.fps LIMIT 2),
          ARRAY[31.000000, 1.041667]::numeric[],
          'README: Kiritimati -> Pago Pago, January then the 25-hour period (1 hour of Jan 30 and Jan 31): 31.00, 1.041667');
SELECT is(ARRAY(SELECT c.charged FROM pp_cmp c WHERE c.account_id = 7799002 ORDER BY c.fps LIMIT 2),
          ARRAY[31.000000, 29.886494]::numeric[],
          'README: Pago Pago -> Kiritimati, January then Feb 2 01:00 to Mar 1 (23/24 of a day and 27 days of 29): 31.00, 29.886494');
SELECT is(ARRAY(SELECT x.due FROM (SELECT c.account_id, c.fps, c.due,
                                         row_number() OVER (PARTITION BY c.account_id ORDER BY c.fps) AS n
                                    FROM pp_cmp c WHERE c.account_id IN (7799001, 7799002)) x
                  WHERE x.n <= 2 ORDER BY x.account_id, x.fps),
          ARRAY[31.000000, 1.041667, 31.000000, 29.886494]::numeric[],
          'the test''s own model gives the README''s numbers');

-------------------------------------------------------------------------------
-- (c) usage on the right invoice
-------------------------------------------------------------------------------
CREATE TEMP TABLE pp_ev ON COMMIT DROP AS
SELECT e.*, u.status, u.reject_reason, c.invoice_id, c.period_start AS charge_ps, c.amount, c.billed_quantity,
       c.covered_quantity,
       (SELECT p.invoice_id FROM pp_period p
         WHERE p.account_id = e.account_id
           AND CASE WHEN e.at >= coalesce(e.billed_until, '-infinity') THEN e.at >= p.ps AND e.at < p.pe
                    ELSE p.ps = e.billed_until END) AS expected_invoice,
       (SELECT max(pe) FROM pp_period p WHERE p.account_id = e.account_id) AS final_until,
       (SELECT a.tz0 FROM pp_acct a WHERE a.id = e.account_id) AS tz0
  FROM pp_event e
  LEFT JOIN convbill.usage_event u ON u.account_id = e.account_id AND u.source = 'pp' AND u.external_id = e.ext_id
  LEFT JOIN convbill.charge c ON c.account_id = e.account_id AND c.source = 'pp' AND c.external_id = e.ext_id;

SELECT is((SELECT count(*) FROM pp_ev WHERE status IS DISTINCT FROM 'rated'), 0::bigint,
          format('(c) every SMS sent while a subscription ran is rated (%s SMS)', (SELECT count(*) FROM pp_ev)));

SELECT is(count(*) FILTER (WHERE e.invoice_id IS DISTINCT FROM e.expected_invoice), 0::bigint,
          format('(c) %s: each SMS is on the invoice of its period, or of the first period not invoiced when it was rated (%s SMS, %s late, %s not invoiced yet)',
                 z, count(e.ext_id), count(*) FILTER (WHERE e.at < e.billed_until),
                 count(*) FILTER (WHERE e.ext_id IS NOT NULL AND e.expected_invoice IS NULL)))
  FROM unnest((SELECT zones FROM pp_param)) WITH ORDINALITY u(z, o)
  LEFT JOIN pp_ev e ON e.tz0 = u.z
 GROUP BY z, o ORDER BY o;

SELECT is(count(*) FILTER (WHERE e.invoice_id IS DISTINCT FROM e.expected_invoice), 0::bigint,
          format('(c) SMS in the first period after a change land on that period''s invoice (%s SMS)', count(*)))
  FROM pp_ev e JOIN pp_per p ON p.account_id = e.account_id AND e.at >= p.ps AND e.at < p.pe
 WHERE p.transition;

SELECT is(count(*) FILTER (WHERE e.invoice_id IS NOT NULL OR e.charge_ps < e.final_until
                                 OR (e.at >= coalesce(e.billed_until, '-infinity') AND e.at < e.final_until)), 0::bigint,
          format('(c) SMS not invoiced yet are all in the open period, none left behind in an invoiced one (%s SMS)', count(*)))
  FROM pp_ev e WHERE e.expected_invoice IS NULL;

SELECT is(count(*) FILTER (WHERE e.amount IS DISTINCT FROM 0.10 * (e.billed_quantity - e.covered_quantity)
                                 OR e.covered_quantity NOT IN (0, 1)), 0::bigint,
          format('(c) each SMS costs 0.10 unless a plan allowance covers it (%s SMS, %s covered)',
                 count(*), count(*) FILTER (WHERE e.covered_quantity = 1)))
  FROM pp_ev e;

-------------------------------------------------------------------------------
-- (d) plan allowances
-------------------------------------------------------------------------------
CREATE TEMP TABLE pp_bucket ON COMMIT DROP AS
SELECT g.*,
       -- the fee's part (a): the start day only after the period's start
       -- for a subscription running before it
       g.days * 86400 - CASE WHEN g.started_at < g.period_start AND g.days > 0 THEN g.cut ELSE 0 END AS part
  FROM (
SELECT b.account_id, b.bucket_id, b.period_start, b.valid_from, b.valid_until, s.sub_id, s.qty, s.started_at,
       pl.allowance, p.pe, p.tz, p.transition, p.full_start, p.cut,
       (SELECT sum(l.amount) FROM convbill.ledger l
         WHERE l.account_id = b.account_id AND l.bucket_id = b.bucket_id AND l.kind = 'grant') AS granted,
       (p.pe AT TIME ZONE p.tz)::date - (greatest(s.started_at, p.ps) AT TIME ZONE p.tz)::date AS days,
       p.full_days
  FROM convbill.bucket b
  JOIN pp_sub s ON s.sub_id = b.subscription_id
  JOIN pp_plan pl ON pl.code = s.plan_code
  -- its period: invoiced, or the open one after the last invoiced (current settings)
  JOIN LATERAL (
      SELECT x.ps, x.pe, x.tz, x.transition, x.full_start, x.cut, x.full_days FROM pp_per x
       WHERE x.account_id = b.account_id AND x.ps = b.period_start
      UNION ALL
      SELECT y.ps, y.pe, a.timezone, false, y.ps, 0, (y.pe AT TIME ZONE a.timezone)::date - (y.ps AT TIME ZONE a.timezone)::date
        FROM convbill.account a
        CROSS JOIN LATERAL (SELECT b.period_start AS ps,
                                   ((b.period_start AT TIME ZONE a.timezone) + interval '1 month') AT TIME ZONE a.timezone AS pe) y
       WHERE a.account_id = b.account_id
         AND b.period_start >= (SELECT max(pe) FROM pp_period z WHERE z.account_id = b.account_id)) p ON true
 WHERE b.origin = 'plan' AND b.account_id IN (SELECT id FROM pp_acct)) g;

SELECT is(count(*) FILTER (WHERE g.granted IS DISTINCT FROM trunc(g.allowance * g.qty * g.part / (g.full_days * 86400)::numeric, 0)
                                 OR g.valid_from <> greatest(g.started_at, g.period_start) OR g.valid_until <> g.pe),
          0::bigint,
          format('(d) each plan allowance bucket holds trunc(allowance x part / (full period days x 86400)), the fee''s part to the period''s end, valid from the later of the subscription''s and the period''s start to the period''s end (%s buckets, %s with a part of a local day)',
                 count(*), count(*) FILTER (WHERE g.part % 86400 <> 0)))
  FROM pp_bucket g;

SELECT is(count(*) FILTER (WHERE g.granted * g.full_days * 86400 > g.allowance * g.qty * g.part), 0::bigint,
          format('(d) the allowance of a first period after a change is at most its share of the full period, its first local day counted only after the start as the fee counts it (%s buckets)', count(*)))
  FROM pp_bucket g WHERE g.transition;

SELECT is((SELECT count(*) FROM convbill.bucket b
            WHERE b.origin = 'plan' AND b.account_id IN (SELECT id FROM pp_acct)
              AND b.bucket_id NOT IN (SELECT bucket_id FROM pp_bucket)), 0::bigint,
          '(d) every plan allowance bucket belongs to an invoiced period or the open one');

-------------------------------------------------------------------------------
-- the first failures, to reproduce by hand
-------------------------------------------------------------------------------
SET LOCAL TimeZone = 'UTC';
SELECT diag(format('fee mismatch (seed %s): account %s sub %s %s qty %s running [%s, %s), fee period starting %s%s: expected %s, charged %s in %s charge(s)',
                   :'seed', c.account_id, c.sub_id, c.label, c.qty, c.started_at, coalesce(c.ended_at::text, '-'), c.fps,
                   CASE WHEN c.fpe IS NULL THEN ' (no invoiced period starting there in which the subscription runs)'
                        ELSE format(' to %s %s%s: %s days, part %s s of %s days', c.fpe, c.tz,
                                    CASE WHEN c.transition THEN ' (first after a change)' WHEN c.ahead THEN ' (ahead)' ELSE '' END,
                                    c.days, c.part, c.full_days) END,
                   coalesce(c.due, 0), c.charged, c.charges))
  FROM (SELECT * FROM pp_cmp WHERE charged IS DISTINCT FROM coalesce(due, 0) ORDER BY account_id, sub_id, fps LIMIT 5) c;
SELECT diag(format('allowance mismatch (seed %s): account %s sub %s qty %s from %s, period [%s, %s) %s%s: %s days, part %s s of %s days: expected %s, granted %s',
                   :'seed', g.account_id, g.sub_id, g.qty, g.started_at, g.period_start, g.pe, g.tz,
                   CASE WHEN g.transition THEN ' (first after a change)' ELSE '' END, g.days, g.part, g.full_days,
                   trunc(g.allowance * g.qty * g.part / (g.full_days * 86400)::numeric, 0), g.granted))
  FROM (SELECT * FROM pp_bucket WHERE granted IS DISTINCT FROM trunc(allowance * qty * part / (full_days * 86400)::numeric, 0)
         ORDER BY account_id, sub_id, period_start LIMIT 5) g;
SELECT diag(format('SMS mismatch (seed %s): account %s %s at %s (billed until %s when rated): invoice %s, expected %s',
                   :'seed', e.account_id, e.ext_id, e.at, e.billed_until, e.invoice_id, e.expected_invoice))
  FROM (SELECT * FROM pp_ev WHERE invoice_id IS DISTINCT FROM expected_invoice ORDER BY account_id, at LIMIT 5) e;
SELECT diag(format('period chain broken (seed %s): account %s period [%s, %s) %s day %s after one ending %s',
                   :'seed', p.account_id, p.ps, p.pe, p.tz, p.bd, p.prev_pe))
  FROM (SELECT * FROM pp_per WHERE n > 1 AND ps IS DISTINCT FROM prev_pe ORDER BY account_id, ps LIMIT 5) p;

SELECT * FROM finish();
ROLLBACK;
