-------------------------------------------------------------------------------
-- The bill run: run_billing(as_of) invoices every period that ended at or
-- before as_of and is not invoiced yet, for every paying account (an account
-- billed to its parent is a section of the parent's invoice).
--
-- Set-based, in chunks of paying accounts (row locks FOR UPDATE SKIP LOCKED:
-- two runs at once split the accounts, nothing twice, no table lock); per
-- chunk, one period per account (missed periods catch up, oldest first):
--   1. recurring fees become charges: for each subscription, the fee of the
--      period (arrears) or of the period and the next (advance), prorated by
--      local calendar days over the full period (the start day counts, the end
--      day does not; the first period after a change of time zone, which
--      starts inside a local day, counts that day by the part of it in the
--      period), minus what was already charged for that fee period (a
--      cancelled advance fee is credited back, pro rata);
--   2. the period is closed: later usage for it goes to the next period
--      (open_period(), 40_rating.sql);
--   3. lines: the period's charges, marked with the invoice id drawn for
--      the payer's period and folded in the same pass by the C aggregate
--      invoice_line_total() — usage per service (and per zone where the rate
--      is zone-specific), one line per subscription and fee period, one per
--      one-time charge or adjustment — each rounded once to the currency's
--      minor unit; charges left in a period already invoiced join them;
--   4. discounts (before tax, per section, percent rounded once, never below
--      zero, max_periods), then tax per tax code (a sub-account without one:
--      its payer's) at the rate valid at the period's end, rounded once per
--      rate;
--   5. the invoice (draft, with the id its charges carry; finalize_invoice
--      numbers it), and the money: the charges already lowered the balance, so
--      the invoice debits only the difference (taxes, discounts, rounding);
--      prepaid_applied = what the balance held before the period's charges,
--      up to the total.
--
-- Busy accounts: an account (or a sub-account of it) that another session
-- holds (a request in progress, another bill run) is skipped, never waited
-- for; when the run has been through every other account it tries the busy
-- ones once more, and those still busy are reported (WARNING with their
-- count) and left for the next run, which finds them due again.
--
-- Three ways to run it:
--   run_billing(as_of, max_accounts)  one call, one transaction: every
--       account's locks are held until the caller commits; max_accounts
--       bounds the (paying account, period)s one call takes up
--   run_billing_batches(as_of, batch_accounts)  PROCEDURE: commits after
--       every batch of batch_accounts, so an account stays locked only while
--       its batch is billed; same invoices as one run_billing(as_of)
--   run_billing_step(as_of, max_accounts)  one batch of such a run, for a
--       caller that commits between calls (the 'bill' job under run_job_proc):
--       the session's run at that as_of goes on where it stopped
-- All three go through bill_run_batch(): the list of what is due (per paying
-- account, its first period to bill) is computed once per run and kept in
-- session temp tables across the batches' commits; a batch re-checks each
-- account after locking it (another run may have invoiced it meanwhile).
-------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.bill_run_batch(p_as_of timestamptz, p_max_accounts integer, p_mode text,
                                           OUT invoices integer, OUT periods integer, OUT busy integer,
                                           OUT finished boolean)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning
SET jit = off AS $$
DECLARE
    n integer;
    lim integer;
    chunk_size constant integer := 20000;
    empty_too boolean := coalesce(current_setting('convbill.invoice_empty_periods', true), 'off') IN ('on', 'true', '1');
    finalize boolean := coalesce(current_setting('convbill.finalize_invoices', true), 'off') IN ('on', 'true', '1');
    fresh boolean;
    same_run boolean;
    run_done boolean;
    skipped bigint[];
    inv record;
    watch bigint[];
    watch_before numeric[];
BEGIN
    invoices := 0;
    periods := 0;
    busy := 0;
    finished := false;
    IF p_as_of IS NULL OR NOT isfinite(p_as_of) THEN
        RAISE EXCEPTION 'run_billing: as_of must be a finite time' USING ERRCODE = '22008';
    END IF;
    IF p_max_accounts < 1 THEN
        RAISE EXCEPTION 'run_billing: max_accounts must be at least 1 (NULL: no limit), not %', p_max_accounts
            USING ERRCODE = '22023';
    END IF;
    IF p_mode IS NULL OR p_mode NOT IN ('call', 'start', 'continue') THEN
        RAISE EXCEPTION 'bill_run_batch: mode must be call, start or continue' USING ERRCODE = '22023';
    END IF;
    -- run_billing runs as the extension's owner for the application role
    -- (95_security.sql): billing periods that have not ended yet (closing
    -- them, fees charged ahead) and finalizing are the operator's call
    IF (p_as_of > now() OR finalize) AND NOT @extschema@.caller_is_admin() THEN
        RAISE EXCEPTION 'run_billing: only convbill_admin may %',
            CASE WHEN finalize THEN 'finalize invoices (convbill.finalize_invoices = on)'
                 ELSE format('bill periods that have not ended (as_of %s is in the future)', p_as_of) END
            USING ERRCODE = '42501';
    END IF;

    -- 'continue': this session's run at this as_of goes on, if there is one
    -- ('start' and 'call' begin afresh)
    fresh := p_mode <> 'continue' OR to_regclass('pg_temp.convbill_run') IS NULL;
    IF NOT fresh THEN
        SELECT r.as_of = p_as_of, r.finished INTO same_run, run_done FROM pg_temp.convbill_run r;
        IF same_run AND run_done THEN
            finished := true;       -- complete: nothing more for this run
            RETURN;
        END IF;
        fresh := NOT coalesce(same_run, false) OR to_regclass('pg_temp.convbill_due') IS NULL;
    END IF;

    IF fresh THEN
        DROP TABLE IF EXISTS pg_temp.convbill_run, pg_temp.convbill_family, pg_temp.convbill_due,
                             pg_temp.convbill_chunk, pg_temp.convbill_lines, pg_temp.convbill_inv;
        -- (kept across commits: a run in batches goes on from here)
        CREATE TEMP TABLE convbill_run AS SELECT p_as_of AS as_of, false AS finished;

        -- who pays for whom
        CREATE TEMP TABLE convbill_family AS
        SELECT a.account_id AS member,
               CASE WHEN a.bill_to_parent THEN @extschema@.payer_of(a.account_id) ELSE a.account_id END AS payer
        FROM @extschema@.account a;
        CREATE INDEX ON convbill_family (payer);
        CREATE INDEX ON convbill_family (member);
        ANALYZE convbill_family;

        -- each paying account's first period to bill: after the last period
        -- a bill run closed for it (invoiced_by; a period closed by hand,
        -- close_period, is still to bill), or from its first subscription or
        -- unbilled charge
        CREATE TEMP TABLE convbill_due AS
        WITH closed AS (
            SELECT cp.account_id AS payer, max(cp.period_end) AS until, max(cp.period_start) AS last_start
            FROM @extschema@.closed_period cp WHERE cp.invoiced_by IS NOT NULL GROUP BY 1
        ),
        subs AS (
            SELECT f.payer, min(s.started_at) AS first_at
            FROM @extschema@.subscription s JOIN convbill_family f ON f.member = s.account_id GROUP BY 1
        ),
        unbilled AS (
            SELECT u.payer, min(u.ps) AS first_at
            -- (each account's unbilled periods first: a few rows per account
            -- to join, not every unbilled charge)
            FROM (SELECT DISTINCT f.payer, c.ps
                  FROM (SELECT DISTINCT c.account_id, c.period_start AS ps
                        FROM @extschema@.charge c WHERE c.invoice_id IS NULL) c
                  JOIN convbill_family f ON f.member = c.account_id) u
            -- charges left in a period the payer has invoiced (an account that
            -- joined its parent's invoice with a period not billed yet) go on the
            -- payer's next invoice
            WHERE NOT EXISTS (SELECT 1 FROM @extschema@.invoice i
                              WHERE i.account_id = u.payer AND i.kind = 'invoice' AND i.period_start = u.ps)
            GROUP BY 1
        ),
        start AS (
            SELECT a.account_id AS payer, a.timezone, a.billing_day, a.currency, a.tax_code, cl.until,
                   CASE WHEN cl.until IS NULL THEN least(su.first_at, ub.first_at)
                        ELSE least(cl.until, ub.first_at) END AS from_ts
            FROM @extschema@.account a
            LEFT JOIN closed cl ON cl.payer = a.account_id
            LEFT JOIN subs su ON su.payer = a.account_id
            LEFT JOIN unbilled ub ON ub.payer = a.account_id
            WHERE NOT a.bill_to_parent
              -- a closed account whose last billed period began after it was
              -- closed has nothing left to bill (its fees, advance ones
              -- included, ended and were credited in that period's run)
              -- until a charge comes: it no longer takes a period a month
              AND NOT coalesce(cl.last_start >= a.closed_at AND ub.first_at IS NULL, false)
        )
        SELECT s.payer, s.timezone, s.billing_day, s.currency, s.tax_code,
               -- never before the end of the last billed period: charges left
               -- behind it go on this invoice, and after a change of time zone
               -- or billing day the period containing that end under the new
               -- settings starts earlier (it would bill those days again); the
               -- first period then runs from that end to the next new
               -- boundary, its fees prorated over the full new period, the
               -- local day it starts in only for the part after that end
               -- (step 1 below); rating puts the usage of this period, and
               -- late usage of the periods before it, in it (open_period()
               -- starts it at the same end), so its charges' period_start is
               -- ps (charges of periods before it, left unbilled, are swept
               -- into this one: the period is the one after that end)
               greatest(@extschema@.billing_period_start(s.base, s.timezone, s.billing_day), s.until) AS ps,
               @extschema@.billing_period_end(s.base, s.timezone, s.billing_day) AS pe,
               false AS done,
               0 AS skips        -- times found busy (locked by another session)
        FROM (SELECT st.*, greatest(st.from_ts, st.until) AS base FROM start st) s
        WHERE s.from_ts IS NOT NULL AND isfinite(s.from_ts)
          AND @extschema@.billing_period_end(s.base, s.timezone, s.billing_day) <= p_as_of;
        CREATE INDEX ON convbill_due (payer) WHERE NOT done;
        ANALYZE convbill_due;
    END IF;

    LOOP
        IF NOT EXISTS (SELECT 1 FROM convbill_due d WHERE NOT d.done) THEN
            -- every other account is through: those found busy get a second
            -- try (in a run in batches, after the batches' commits)
            UPDATE convbill_due d SET done = false WHERE d.done AND d.skips = 1;
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n = 0 THEN
                finished := true;
                EXIT;
            END IF;
        END IF;
        EXIT WHEN periods >= p_max_accounts;
        lim := least(chunk_size, p_max_accounts - periods);
        DROP TABLE IF EXISTS pg_temp.convbill_chunk, pg_temp.convbill_ids, pg_temp.convbill_lines, pg_temp.convbill_inv;

        -- the next accounts, locked, then their sub-accounts (rating and
        -- sessions of theirs wait for the batch); an account another session
        -- holds (another run, a request) is skipped and tried again at the
        -- end, as is one with a sub-account busy elsewhere: never waiting for
        -- a lock here, the run cannot deadlock with a rater that holds a
        -- sub-account and then wants its payer
        CREATE TEMP TABLE convbill_chunk ON COMMIT DROP AS
        WITH next AS (
            SELECT d.* FROM convbill_due d WHERE NOT d.done ORDER BY d.payer LIMIT lim
        ),
        locked AS (
            SELECT a.account_id FROM @extschema@.account a
            WHERE a.account_id IN (SELECT next.payer FROM next) AND NOT a.bill_to_parent
            ORDER BY a.account_id
            FOR UPDATE OF a SKIP LOCKED
        )
        SELECT next.*, locked.account_id IS NOT NULL AS mine
        FROM next LEFT JOIN locked ON locked.account_id = next.payer;
        GET DIAGNOSTICS n = ROW_COUNT;
        EXIT WHEN n = 0;
        -- each locked payer's family as it is now (the run listed the families
        -- when it started, and a committing run can last long: a sub-account
        -- attached or detached meanwhile), its sub-accounts locked too (another
        -- run never takes these: it has not got their payer)
        DROP TABLE IF EXISTS pg_temp.convbill_fam;
        CREATE TEMP TABLE convbill_fam ON COMMIT DROP AS
        WITH RECURSIVE fam AS (
            SELECT c.payer AS member, c.payer FROM convbill_chunk c WHERE c.mine
            UNION
            SELECT a.account_id, fam.payer
            FROM @extschema@.account a JOIN fam ON a.parent_id = fam.member
            WHERE a.bill_to_parent AND a.account_id <> fam.payer
        ),
        members AS (
            SELECT a.account_id FROM @extschema@.account a
            WHERE a.account_id IN (SELECT fam.member FROM fam WHERE fam.member <> fam.payer)
            ORDER BY a.account_id
            FOR UPDATE OF a SKIP LOCKED
        )
        SELECT fam.member, fam.payer, fam.member = fam.payer OR members.account_id IS NOT NULL AS locked
        FROM fam LEFT JOIN members ON members.account_id = fam.member;
        UPDATE convbill_chunk c SET mine = false
        WHERE c.mine AND EXISTS (SELECT 1 FROM convbill_fam x WHERE x.payer = c.payer AND NOT x.locked);
        DELETE FROM convbill_family f
        WHERE f.payer IN (SELECT c.payer FROM convbill_chunk c WHERE c.mine)
           OR f.member IN (SELECT x.member FROM convbill_fam x JOIN convbill_chunk c ON c.payer = x.payer AND c.mine);
        INSERT INTO convbill_family (member, payer)
        SELECT x.member, x.payer FROM convbill_fam x JOIN convbill_chunk c ON c.payer = x.payer AND c.mine;

        periods := periods + n;
        UPDATE convbill_due d SET done = true, skips = CASE WHEN c.mine THEN 0 ELSE d.skips + 1 END
        FROM convbill_chunk c WHERE d.payer = c.payer AND NOT d.done;
        DELETE FROM convbill_chunk c WHERE NOT c.mine;
        -- an earlier period of a payer reopened since the run listed what is
        -- due (discard_draft of its draft, in another session or between the
        -- batches of this run): that period is billed first, not folded into
        -- the later one (its charges are unbilled again and would be swept
        -- into it); the later period is due again after it.  The payer's
        -- first period to bill is again the one after its last closed
        -- period, or, with none left, its first unbilled charge's.
        UPDATE convbill_chunk c
        SET ps = r.ps,
            pe = @extschema@.billing_period_end(r.from_ts, c.timezone, c.billing_day)
        FROM (SELECT x.payer, x.from_ts,
                     greatest(@extschema@.billing_period_start(x.from_ts, x.timezone, x.billing_day), x.until) AS ps
              FROM (SELECT c2.payer, c2.timezone, c2.billing_day, cl.until,
                           coalesce(cl.until,
                                    (SELECT min(ch.period_start) FROM convbill_family f
                                     JOIN @extschema@.charge ch ON ch.account_id = f.member
                                     WHERE f.payer = c2.payer AND ch.invoice_id IS NULL AND ch.period_start < c2.ps))
                           AS from_ts
                    FROM convbill_chunk c2
                    -- (invoiced_by in the aggregate: by the payer's key, not
                    -- by closed_period_invoiced_by, which a run fills as it
                    -- goes while its statistics may say it is empty)
                    CROSS JOIN LATERAL (SELECT max(cp.period_end) FILTER (WHERE cp.invoiced_by IS NOT NULL) AS until
                                        FROM @extschema@.closed_period cp WHERE cp.account_id = c2.payer) cl) x) r
        WHERE r.payer = c.payer AND r.ps < c.ps;
        -- a concurrent run invoiced the period while we looked: its next
        -- period, if it has ended, is still to check
        WITH gone AS (
            DELETE FROM convbill_chunk c
            WHERE EXISTS (SELECT 1 FROM @extschema@.invoice i
                          WHERE i.account_id = c.payer AND i.kind = 'invoice' AND i.period_start = c.ps)
            RETURNING c.*
        )
        INSERT INTO convbill_due (payer, timezone, billing_day, currency, tax_code, ps, pe, done, skips)
        SELECT g.payer, g.timezone, g.billing_day, g.currency, g.tax_code, g.pe,
               @extschema@.billing_period_end(g.pe, g.timezone, g.billing_day), false, 0
        FROM gone g
        WHERE @extschema@.billing_period_end(g.pe, g.timezone, g.billing_day) <= p_as_of;

        -- a tax code without a rate at the period's end: not billed (reported)
        SELECT array_agg(DISTINCT c.payer) INTO skipped
        FROM convbill_chunk c
        JOIN convbill_family f ON f.payer = c.payer
        JOIN @extschema@.account a ON a.account_id = f.member
        WHERE coalesce(a.tax_code, c.tax_code) IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM @extschema@.tax_rate t
                          WHERE t.code = coalesce(a.tax_code, c.tax_code) AND t.valid_from < c.pe);
        IF skipped IS NOT NULL THEN
            -- in a job, job_run.warning says it too (pg_cron keeps no WARNING)
            PERFORM @extschema@.job_warn(format('run_billing: accounts %s not billed: their tax code has no rate',
                                                left(skipped::text, 1000)));
            RAISE WARNING 'run_billing: accounts % not billed: their tax code has no rate', skipped
                USING HINT = 'Add the tax_rate, then run the bill run again.';
            DELETE FROM convbill_chunk c WHERE c.payer = ANY (skipped);
        END IF;
        ANALYZE convbill_chunk;

        -- 1. recurring fees (the charge_debit trigger debits them).  A fee
        -- is prorated in seconds of local days, 86400 a day, so that the
        -- first period after a change of time zone can count the local day
        -- it starts in by the part of it in the period: that period starts
        -- where the last invoiced one ended, a midnight of the old zone, so
        -- inside a local day of the new one whose part before that start was
        -- billed by the old period (counted whole, the start day billed a
        -- few hours twice: a 6-hour period a whole day, a 25-hour one two).
        -- The rule: local days of the new zone over the full new period (the
        -- start day counts, the end day does not, as ever), except that a
        -- subscription that ran before the period counts its first day only
        -- after the period's start, as a fraction of that local day.  The old
        -- periods and this one then bill every instant once: none twice, none
        -- skipped.  A subscription that starts inside the period counts its
        -- start day whole (nothing of it was billed before).  Every other
        -- period starts at a local midnight: its cut is 0 and the fee is the
        -- plain local-day proration (same result exactly: prorate is exact).
        INSERT INTO @extschema@.charge (account_id, kind, quantity, amount, currency, occurred_at,
                                        period_start, period_end, subscription_id, fee_period_start,
                                        fee_price, fee_months, description)
        SELECT x.member, 'recurring', x.quantity, x.due - x.already, x.currency, x.fps, x.ps, x.pe,
               x.subscription_id, x.fps, x.fee_price, x.fee_months,
               format('%s%s, %s to %s%s', x.plan_name,
                      CASE WHEN x.quantity > 1 THEN format(' × %s', x.quantity) ELSE '' END,
                      -- ISO dates whatever the session's DateStyle
                      to_char(CASE WHEN x.already <> 0 THEN (x.fps AT TIME ZONE x.timezone)::date
                                   ELSE (greatest(x.started_at, x.fps) AT TIME ZONE x.timezone)::date END, 'YYYY-MM-DD'),
                      to_char(CASE WHEN x.already <> 0 THEN (x.fpe AT TIME ZONE x.timezone)::date - 1
                                   ELSE (least(coalesce(x.ended_at, x.fpe), x.fpe) AT TIME ZONE x.timezone)::date - 1 END,
                              'YYYY-MM-DD'),
                      -- days, to two decimals where a part of a day counts
                      CASE WHEN x.already <> 0 THEN format(' (correction: %s of %s days)',
                                                          trim_scale(round(x.part / 86400.0, 2)), x.period_days)
                           WHEN x.part < x.period_days * 86400 THEN format(' (%s of %s days)',
                                                                          trim_scale(round(x.part / 86400.0, 2)), x.period_days)
                           ELSE '' END)
        FROM (
            SELECT f.member, c.currency, c.ps, c.pe, c.timezone, s.subscription_id,
                   -- (a correction: the quantity the period was charged for)
                   coalesce(chg.quantity, s.quantity) AS quantity, p.name AS plan_name,
                   s.started_at, e.ended_at, fp.fps, fp.fpe, d.part, d.period_days,
                   -- a fee period a legacy system billed before a migration
                   -- (legacy_fee, 90_migration.sql) is worth what it billed,
                   -- whatever the plan's price is now: counted as charged,
                   -- and a subscription ending inside it is credited its
                   -- part of that amount
                   -- a fee period convbill charged already is worth what it
                   -- was charged at: a correction of it (an end inside it)
                   -- is priced at the fee and quantity of its first charge,
                   -- not at a price or quantity changed since (the change
                   -- applies from the next fee period)
                   CASE WHEN lg.amount IS NOT NULL
                        THEN @extschema@.prorate(lg.amount, d.part, d.period_days * 86400)
                        ELSE @extschema@.prorate(fee.price, d.part, d.period_days * 86400 * fee.months)
                   END AS due,
                   fee.price AS fee_price, fee.months AS fee_months,
                   coalesce(chg.amount, 0) + coalesce(lg.amount, 0) AS already
            -- each period's cut (local_day_cut) once, not once per
            -- subscription
            FROM (SELECT c0.*, @extschema@.local_day_cut(c0.ps, c0.timezone) AS cut
                  FROM convbill_chunk c0
                  OFFSET 0) c
            JOIN convbill_family f ON f.payer = c.payer
            JOIN @extschema@.subscription s ON s.account_id = f.member
            JOIN @extschema@.plan p ON p.code = s.plan_code
            JOIN @extschema@.account m ON m.account_id = f.member
            JOIN @extschema@.account py ON py.account_id = c.payer
            -- the subscription's end, or its account's closing if earlier
            -- (a closed payer's sections end with it)
            CROSS JOIN LATERAL (SELECT least(s.ended_at, m.closed_at, py.closed_at) AS ended_at) e
            -- (the next period, billed ahead, starts at a local midnight)
            CROSS JOIN LATERAL (SELECT c.ps AS fps, c.pe AS fpe, c.cut
                                UNION ALL
                                SELECT c.pe, @extschema@.billing_period_end(c.pe, c.timezone, c.billing_day), 0
                                WHERE p.billing = 'advance') fp
            CROSS JOIN LATERAL (
                SELECT @extschema@.local_days(greatest(s.started_at, fp.fps),
                                              least(coalesce(e.ended_at, fp.fpe), fp.fpe), c.timezone) AS days,
                       -- (the full period: a first period after a change of
                       -- time zone or billing day starts late)
                       @extschema@.local_days(@extschema@.billing_period_start(fp.fps, c.timezone, c.billing_day),
                                              fp.fpe, c.timezone) AS period_days) d0
            -- a running subscription's first day (the day of fps, counted
            -- when days > 0) only after fps
            CROSS JOIN LATERAL (
                SELECT d0.days * 86400 - CASE WHEN s.started_at < fp.fps AND d0.days > 0 THEN fp.cut ELSE 0 END AS part,
                       d0.period_days) d
            LEFT JOIN LATERAL (SELECT lf.amount FROM @extschema@.legacy_fee lf
                               WHERE lf.account_id = f.member AND lf.subscription_id = s.subscription_id
                                 AND lf.fee_period_start = fp.fps) lg ON true
            -- what was charged for the fee period already, and at what fee
            -- (the first charge's; NULL for charges made before fee_price was kept)
            CROSS JOIN LATERAL (SELECT sum(ch.amount) AS amount,
                                       (array_agg(ch.fee_price ORDER BY ch.charge_id)
                                            FILTER (WHERE ch.fee_price IS NOT NULL))[1] AS fee_price,
                                       (array_agg(ch.fee_months ORDER BY ch.charge_id)
                                            FILTER (WHERE ch.fee_price IS NOT NULL))[1] AS fee_months,
                                       (array_agg(ch.quantity ORDER BY ch.charge_id)
                                            FILTER (WHERE ch.fee_price IS NOT NULL))[1] AS quantity
                                FROM @extschema@.charge ch
                                WHERE ch.account_id = f.member AND ch.kind = 'recurring'
                                  AND ch.subscription_id = s.subscription_id AND ch.fee_period_start = fp.fps) chg
            CROSS JOIN LATERAL (SELECT coalesce(chg.fee_price, p.recurring_fee * s.quantity) AS price,
                                       coalesce(chg.fee_months, CASE p.fee_interval WHEN 'year' THEN 12 ELSE 1 END)
                                           AS months) fee
            -- running in the fee period, or charged for it already: a fee
            -- billed ahead for a period that a change of time zone or billing
            -- day then cut short, ending before the subscription starts, is
            -- credited back (nothing of it is due), not left to be billed
            -- again by the next period
            WHERE (s.started_at < fp.fpe OR chg.amount IS NOT NULL)
            OFFSET 0   -- each fee and what was already charged for it once, not once per use
        ) x
        WHERE x.due <> x.already;

        -- 2. close the period: late usage goes to the next one (a period
        -- closed by hand is now billed: this run's, as discard_draft knows)
        INSERT INTO @extschema@.closed_period AS cp (account_id, period_start, period_end, invoiced_by)
        SELECT f.member, c.ps, c.pe, c.payer
        FROM convbill_chunk c JOIN convbill_family f ON f.payer = c.payer
        ON CONFLICT (account_id, period_start) DO UPDATE SET invoiced_by = excluded.invoiced_by
        WHERE cp.invoiced_by IS NULL;

        -- 3. lines from the period's charges, read once: each payer's
        -- invoice id is drawn first, the charges are marked with it and
        -- folded into lines in the same statement (the UPDATE's RETURNING
        -- feeds the aggregate), not looked up twice.  Every payer with a
        -- charge gets its invoice below (a line per charge kind at least), a
        -- payer with none only with convbill.invoice_empty_periods: ids are
        -- drawn for those alone, in account order.
        CREATE TEMP TABLE convbill_ids ON COMMIT DROP AS
        SELECT c.payer, c.ps, nextval('@extschema@.invoice_invoice_id_seq') AS invoice_id
        FROM (SELECT c0.payer, c0.ps FROM convbill_chunk c0
              WHERE empty_too
                 OR EXISTS (SELECT 1 FROM convbill_family f
                            JOIN @extschema@.charge ch ON ch.account_id = f.member
                            WHERE f.payer = c0.payer AND ch.period_start <= c0.ps AND ch.invoice_id IS NULL)
              ORDER BY c0.payer
              OFFSET 0) c;
        ANALYZE convbill_ids;
        CREATE TEMP TABLE convbill_lines (
            payer bigint, ps timestamptz, src bigint, kind text, service text, zone text,
            subscription_id bigint, fee_period timestamptz, one_charge bigint, plan_code text,
            amount numeric, charged numeric, quantity numeric, description text,
            discount_id bigint, tax_code text, tax_rate numeric
        ) ON COMMIT DROP;
        WITH billed AS (
            UPDATE @extschema@.charge ch SET invoice_id = k.invoice_id
            FROM convbill_ids k JOIN convbill_family f ON f.payer = k.payer
            WHERE ch.account_id = f.member AND ch.period_start <= k.ps AND ch.invoice_id IS NULL
            RETURNING k.payer, k.ps, ch.account_id, ch.kind, ch.service, ch.rate_id, ch.subscription_id,
                      ch.fee_period_start, ch.charge_id, ch.amount, ch.currency, ch.quantity, ch.description
        )
        INSERT INTO convbill_lines (payer, ps, src, kind, service, zone, subscription_id, fee_period, one_charge,
                                    plan_code, amount, charged, quantity, description)
        SELECT ch.payer, ch.ps, ch.account_id, ch.kind, ch.service, r.zone,
               CASE WHEN ch.kind = 'recurring' THEN ch.subscription_id END,
               CASE WHEN ch.kind = 'recurring' THEN ch.fee_period_start END,
               CASE WHEN ch.kind IN ('one_time', 'adjustment', 'discount') THEN ch.charge_id END,
               coalesce(sp.plan_code, r.plan_code),
               @extschema@.invoice_line_total(ch.amount, ch.currency),
               @extschema@.invoice_sum(ch.amount),
               sum(ch.quantity),
               min(ch.description)
        FROM billed ch
        LEFT JOIN @extschema@.plan_rate r ON r.rate_id = ch.rate_id
        LEFT JOIN @extschema@.subscription sp ON sp.account_id = ch.account_id AND sp.subscription_id = ch.subscription_id
        GROUP BY ch.payer, ch.ps, ch.account_id, ch.kind, ch.service, r.zone,
                 CASE WHEN ch.kind = 'recurring' THEN ch.subscription_id END,
                 CASE WHEN ch.kind = 'recurring' THEN ch.fee_period_start END,
                 CASE WHEN ch.kind IN ('one_time', 'adjustment', 'discount') THEN ch.charge_id END,
                 coalesce(sp.plan_code, r.plan_code);
        CREATE INDEX ON convbill_lines (payer, ps, src);
        ANALYZE convbill_lines;

        -- 4a. discounts, per section, in discount order, never below zero
        INSERT INTO convbill_lines (payer, ps, src, kind, amount, charged, description, discount_id, plan_code, service)
        SELECT q.payer, q.ps, q.src, 'discount',
               -least(q.wanted, greatest(q.section - coalesce(q.before, 0), 0)), 0, q.description, q.discount_id,
               q.plan_code, q.service
        FROM (
            SELECT m.*,
                   sum(m.wanted) OVER (PARTITION BY m.payer, m.ps, m.src ORDER BY m.discount_id
                                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
            FROM (
                SELECT l.payer, l.ps, l.src, d.discount_id, d.plan_code, d.service,
                       least(CASE WHEN d.percent IS NOT NULL
                                  THEN round(sum(l.amount) * d.percent / 100, @extschema@.currency_exponent(c.currency))
                                  ELSE round(d.amount, @extschema@.currency_exponent(c.currency)) END,
                             sum(l.amount)) AS wanted,
                       -- what the section comes to before these discounts:
                       -- its charges net of adjustments and of the discounts
                       -- added as charges (add_charge, kind discount: the
                       -- only discount lines there are yet)
                       (SELECT sum(l2.amount) FROM convbill_lines l2
                        WHERE l2.payer = l.payer AND l2.ps = l.ps AND l2.src = l.src
                          AND l2.kind IN ('recurring', 'usage', 'one_time', 'adjustment', 'discount')) AS section,
                       CASE WHEN d.percent IS NOT NULL THEN format('Discount %s%%', trim_scale(d.percent))
                            ELSE 'Discount' END
                       || coalesce(' on ' || d.service, '') || coalesce(' (plan ' || d.plan_code || ')', '') AS description
                FROM convbill_lines l
                JOIN convbill_chunk c ON c.payer = l.payer AND c.ps = l.ps
                -- the discounts of the line's account or of every account (d.account_id
                -- IS NULL OR = l.src) by a hash join on for_src, not a scan of every
                -- discount for every line
                JOIN (SELECT x.*, x.account_id AS for_src FROM @extschema@.discount x WHERE x.account_id IS NOT NULL
                      UNION ALL
                      SELECT x.*, s.src FROM @extschema@.discount x
                      CROSS JOIN (SELECT DISTINCT l3.src FROM convbill_lines l3) s
                      WHERE x.account_id IS NULL) d
                  ON d.for_src = l.src
                 AND (d.plan_code IS NULL OR d.plan_code = l.plan_code)
                 AND (d.service IS NULL OR d.service = l.service)
                 AND (d.currency IS NULL OR d.currency = c.currency)
                 AND d.valid_from < c.pe AND d.valid_until > c.ps
                WHERE l.kind IN ('recurring', 'usage', 'one_time')
                GROUP BY l.payer, l.ps, l.src, d.discount_id, d.plan_code, d.service, d.percent, d.amount,
                         d.max_periods, c.currency
                -- max_periods once per section and discount (in the join, its
                -- estimated cost made the planner join the discounts to every
                -- period of the chunk first)
                HAVING sum(l.amount) > 0
                   AND (d.max_periods IS NULL
                        OR (SELECT count(DISTINCT il.invoice_id) FROM @extschema@.invoice_line il
                            WHERE il.account_id = l.payer AND il.discount_id = d.discount_id
                              AND il.source_account_id = l.src) < d.max_periods)
            ) m
        ) q
        WHERE least(q.wanted, greatest(q.section - coalesce(q.before, 0), 0)) > 0;

        -- 4b. tax per tax code, at the rate valid at the period's end, on the
        -- lines net of discounts, rounded once per rate
        INSERT INTO convbill_lines (payer, ps, src, kind, amount, charged, description, tax_code, tax_rate)
        SELECT t.payer, t.ps, t.payer, 'tax', round(t.base * t.rate / 100, @extschema@.currency_exponent(t.currency)),
               0, format('Tax %s %s%%', t.tax_code, trim_scale(t.rate)), t.tax_code, t.rate
        FROM (
            SELECT l.payer, l.ps, c.currency, tc.tax_code, tr.rate, sum(l.amount) AS base
            FROM convbill_lines l
            JOIN convbill_chunk c ON c.payer = l.payer AND c.ps = l.ps
            JOIN @extschema@.account a ON a.account_id = l.src
            -- a sub-account without a tax code of its own: its payer's
            CROSS JOIN LATERAL (SELECT coalesce(a.tax_code, c.tax_code) AS tax_code) tc
            CROSS JOIN LATERAL (SELECT x.rate FROM @extschema@.tax_rate x
                                WHERE x.code = tc.tax_code AND x.valid_from < c.pe
                                ORDER BY x.valid_from DESC LIMIT 1) tr
            WHERE tc.tax_code IS NOT NULL
            GROUP BY l.payer, l.ps, c.currency, tc.tax_code, tr.rate
        ) t;

        -- 5. invoices and their lines
        CREATE TEMP TABLE convbill_inv ON COMMIT DROP AS
        WITH tot AS (
            SELECT c.payer, c.ps, c.pe, c.currency,
                   coalesce(sum(l.amount) FILTER (WHERE l.kind IN ('recurring', 'usage', 'one_time', 'adjustment')), 0) AS subtotal,
                   coalesce(sum(l.amount) FILTER (WHERE l.kind = 'discount'), 0) AS discount,
                   coalesce(sum(l.amount) FILTER (WHERE l.kind = 'tax'), 0) AS tax,
                   coalesce(sum(l.amount), 0) AS total,
                   coalesce(sum(l.charged), 0) AS charged,
                   count(l.payer) AS nlines
            FROM convbill_chunk c LEFT JOIN convbill_lines l ON l.payer = c.payer AND l.ps = c.ps
            GROUP BY c.payer, c.ps, c.pe, c.currency
        ),
        -- the money: prepaid = what the balance held before this period's
        -- charges (later charges and open sessions' debits added back), up
        -- to the total; the balance then carries the whole total (debited
        -- below, after the invoice: nothing before that changes a balance)
        pre AS (
            SELECT t.*,
                   -- in whole minor units: never more than the balance held
                   trunc(greatest(0, least(t.total,
                       (SELECT coalesce(sum(b.balance), 0) FROM @extschema@.bucket b
                        WHERE b.account_id = t.payer AND b.kind = 'money'
                          AND b.valid_from <= now() AND b.valid_until > now())
                       + t.charged
                       + (SELECT coalesce(sum(ch.amount), 0) FROM convbill_family f
                          JOIN @extschema@.charge ch ON ch.account_id = f.member
                          WHERE f.payer = t.payer AND ch.invoice_id IS NULL AND ch.period_start > t.ps)
                       + (SELECT coalesce(sum(r.charged), 0) FROM @extschema@.reservation r
                          WHERE r.payer_id = t.payer AND r.status = 'open'))),
                         @extschema@.currency_exponent(t.currency)) AS prepaid
            FROM tot t
            WHERE t.nlines > 0 OR empty_too
            OFFSET 0   -- once per invoice, not once per use
        ),
        ins AS (
            INSERT INTO @extschema@.invoice (account_id, invoice_id, kind, period_start, period_end, status, currency,
                                             subtotal, discount, tax, total, prepaid_applied, amount_due, charged,
                                             debited, last_payment_id,
                                             issued_at)
            SELECT t.payer, k.invoice_id, 'invoice', t.ps, t.pe, 'draft', t.currency, t.subtotal, t.discount, t.tax, t.total,
                   t.prepaid, t.total - t.prepaid, t.charged, t.total - t.charged,
                   -- the payments whose money prepaid could take (the payer is
                   -- locked: none can come in between)
                   coalesce((SELECT max(p.payment_id) FROM @extschema@.payment p WHERE p.account_id = t.payer), 0),
                   NULL
            FROM pre t JOIN convbill_ids k ON k.payer = t.payer AND k.ps = t.ps
            -- (no ON CONFLICT: the payer is locked and its period was checked
            -- not invoiced after the lock; its charges carry this id already)
            RETURNING account_id, invoice_id, period_start, total, charged, currency
        )
        SELECT * FROM ins;

        INSERT INTO @extschema@.invoice_line (account_id, invoice_id, line_no, kind, service, zone, description,
                                              quantity, amount, source_account_id, subscription_id, plan_code,
                                              discount_id, tax_code, tax_rate)
        SELECT i.account_id, i.invoice_id,
               row_number() OVER (PARTITION BY i.invoice_id
                                  ORDER BY l.kind = 'tax', l.src <> i.account_id, l.src,
                                           array_position(ARRAY['recurring', 'usage', 'one_time', 'adjustment', 'discount'], l.kind),
                                           l.service, l.zone, l.subscription_id, l.fee_period, l.plan_code,
                                           l.one_charge, l.discount_id, l.tax_code),
               l.kind, l.service, l.zone,
               CASE WHEN l.kind = 'usage' THEN coalesce(s.description, l.service) || coalesce(' — ' || l.zone, '')
                    ELSE l.description END,
               l.quantity, l.amount, l.src, l.subscription_id, l.plan_code, l.discount_id, l.tax_code, l.tax_rate
        FROM convbill_inv i
        JOIN convbill_lines l ON l.payer = i.account_id AND l.ps = i.period_start
        LEFT JOIN @extschema@.service s ON s.code = l.service;
        -- (the charges carry their invoice's id since step 3, and nothing
        -- checks that id against invoice: every period with a line has its
        -- invoice, or the chunk stops here.  Counted, not EXISTS: planned for
        -- its first row, an EXISTS anti-join compares every line with every
        -- invoice)
        SELECT count(*) INTO n
        FROM convbill_lines l LEFT JOIN convbill_inv i ON i.account_id = l.payer AND i.period_start = l.ps
        WHERE i.account_id IS NULL;
        IF n > 0 THEN
            RAISE EXCEPTION 'run_billing: charges marked for an invoice that was not created'
                USING ERRCODE = 'XX000';
        END IF;

        -- the money: the balance carries the whole total (the payers that
        -- watch their balance told when this debit takes them below their
        -- threshold, as any other debit does: available money before, the
        -- notice after)
        SELECT array_agg(a.account_id), array_agg(@extschema@.money_available(a.account_id))
        INTO watch, watch_before
        FROM convbill_inv i JOIN @extschema@.account a ON a.account_id = i.account_id
        WHERE i.total > i.charged AND a.low_balance_threshold IS NOT NULL;
        PERFORM @extschema@.debit_buckets('money', array_agg(i.account_id), array_agg(i.currency),
                                          array_agg(i.total - i.charged), array_agg(NULL::bigint),
                                          array_agg(NULL::integer), NULL, now())
        FROM convbill_inv i WHERE i.total <> i.charged;
        FOR k IN 1 .. coalesce(cardinality(watch), 0) LOOP
            PERFORM @extschema@.notify_low_balance(watch[k], watch_before[k], @extschema@.money_available(watch[k]));
        END LOOP;

        SELECT count(*) INTO n FROM convbill_inv;
        invoices := invoices + n;
        IF finalize THEN
            FOR inv IN SELECT i.invoice_id FROM convbill_inv i ORDER BY i.account_id, i.period_start LOOP
                PERFORM @extschema@.finalize_invoice(inv.invoice_id);
            END LOOP;
        END IF;

        -- the next missed period of these accounts, if it has ended too
        INSERT INTO convbill_due (payer, timezone, billing_day, currency, tax_code, ps, pe, done, skips)
        SELECT c.payer, c.timezone, c.billing_day, c.currency, c.tax_code, c.pe,
               @extschema@.billing_period_end(c.pe, c.timezone, c.billing_day), false, 0
        FROM convbill_chunk c
        WHERE @extschema@.billing_period_end(c.pe, c.timezone, c.billing_day) <= p_as_of;
    END LOOP;

    -- nothing is dropped silently: the accounts skipped because another
    -- session held them (at the end of a run, or of a call with max_accounts)
    IF p_mode = 'call' OR finished THEN
        SELECT count(*), array_agg(d.payer ORDER BY d.payer) INTO busy, skipped
        FROM convbill_due d WHERE d.done AND d.skips > 0;
        IF busy > 0 THEN
            -- in a job, job_run.warning says it too (pg_cron keeps no WARNING)
            PERFORM @extschema@.job_warn(format('run_billing: %s account(s) not billed: another session holds them (%s%s)',
                                                busy, array_to_string(skipped[1:20], ', '),
                                                CASE WHEN busy > 20 THEN ', …' ELSE '' END));
            RAISE WARNING 'run_billing: % account(s) not billed: another session holds them', busy
                USING DETAIL = format('Accounts %s%s (a request in progress on them or a sub-account, or another bill run).',
                                      array_to_string(skipped[1:20], ', '), CASE WHEN busy > 20 THEN ', …' ELSE '' END),
                      HINT = 'They are still due: the next bill run (or the run holding them) bills them.';
        END IF;
    END IF;

    DROP TABLE IF EXISTS pg_temp.convbill_chunk, pg_temp.convbill_fam, pg_temp.convbill_ids, pg_temp.convbill_lines,
                         pg_temp.convbill_inv;
    IF p_mode = 'call' THEN
        DROP TABLE IF EXISTS pg_temp.convbill_run, pg_temp.convbill_family, pg_temp.convbill_due;
    ELSIF finished THEN
        -- the run is complete: a next call at the same as_of returns at once
        DROP TABLE IF EXISTS pg_temp.convbill_family, pg_temp.convbill_due;
        UPDATE pg_temp.convbill_run SET finished = true;
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@.bill_run_batch(timestamptz, integer, text) IS
    'internal: the bill run''s work for run_billing (mode call), run_billing_batches and run_billing_step (start, continue): up to max_accounts (paying account, period)s; invoices created, periods taken up, accounts left busy (reported at the end), whether the run is complete';

CREATE FUNCTION @extschema@.run_billing(as_of timestamptz DEFAULT now(), max_accounts integer DEFAULT NULL)
RETURNS integer
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
RETURN (@extschema@.bill_run_batch($1, $2, 'call')).invoices;
COMMENT ON FUNCTION @extschema@.run_billing(timestamptz, integer) IS
    'invoice every period ended by as_of and not invoiced yet (catching up missed ones), for every paying account, or for at most max_accounts (paying account, period)s (lowest account ids first); one transaction: what it locks stays locked until the caller commits (run_billing_batches commits per batch); safe to re-run and to run concurrently; accounts another session holds are skipped, tried again at the end, and reported by a WARNING if still busy; returns how many invoices it created (drafts, or final with convbill.finalize_invoices = on)';

-- One batch of a run that commits between batches: the first call at an
-- as_of lists what is due, each call bills the next max_accounts; the caller
-- commits in between and calls again while it returns > 0.  as_of has no
-- default: it names the run, so it must be the same in every call.
CREATE FUNCTION @extschema@.run_billing_step(as_of timestamptz, max_accounts integer DEFAULT 2000)
RETURNS integer
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
RETURN (@extschema@.bill_run_batch($1, $2, 'continue')).periods;
COMMENT ON FUNCTION @extschema@.run_billing_step(timestamptz, integer) IS
    'one batch of a bill run as of as_of, for a caller that commits between calls (the bill job): the first call at an as_of lists what is due, each bills up to max_accounts (paying account, period)s; returns how many it took up, 0 once the run is complete (call again while > 0, with the same as_of)';

-- No SET clause: a procedure that commits may not have one.  search_path is
-- pinned instead with set_config(..., true) at the start of every transaction.
CREATE PROCEDURE @extschema@.run_billing_batches(as_of timestamptz DEFAULT now(), batch_accounts integer DEFAULT 2000,
                                                 INOUT invoices integer DEFAULT NULL,
                                                 INOUT batches integer DEFAULT NULL,
                                                 INOUT longest_batch interval DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    t0 timestamptz;
BEGIN
    IF as_of IS NULL OR NOT pg_catalog.isfinite(as_of) THEN
        RAISE EXCEPTION 'run_billing_batches: as_of must be a finite time' USING ERRCODE = '22008';
    END IF;
    IF batch_accounts IS NULL OR batch_accounts < 1 THEN
        RAISE EXCEPTION 'run_billing_batches: batch_accounts must be at least 1, not %', batch_accounts
            USING ERRCODE = '22023';
    END IF;
    -- fails with "invalid transaction termination" inside a transaction
    -- block, before anything was locked (run_billing() works there)
    COMMIT;
    invoices := 0;
    batches := 0;
    longest_batch := interval '0';
    LOOP
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        t0 := pg_catalog.clock_timestamp();
        r := @extschema@.bill_run_batch(run_billing_batches.as_of, batch_accounts,
                                        CASE WHEN batches = 0 THEN 'start' ELSE 'continue' END);
        invoices := invoices + r.invoices;
        batches := batches + 1;
        COMMIT;
        longest_batch := GREATEST(longest_batch, pg_catalog.clock_timestamp() - t0);
        EXIT WHEN r.finished;
    END LOOP;
END $$;
COMMENT ON PROCEDURE @extschema@.run_billing_batches(timestamptz, integer, integer, integer, interval) IS
    'the bill run of run_billing(as_of), committing after every batch of batch_accounts (paying account, period)s, so an account stays locked only while its batch is billed (CALL it outside a transaction block); the same invoices as one run_billing(as_of); returns the invoices created, the number of batches and the longest batch (the longest any account was locked)';
