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
--      day does not), minus what was already charged for that fee period (a
--      cancelled advance fee is credited back, pro rata);
--   2. the period is closed: later usage for it goes to the next period;
--   3. lines: the period's charges folded by the C aggregate
--      invoice_line_total() — usage per service (and per zone where the rate
--      is zone-specific), one line per subscription and fee period, one per
--      one-time charge or adjustment — each rounded once to the currency's
--      minor unit; charges left in a period already invoiced join them;
--   4. discounts (before tax, per section, percent rounded once, never below
--      zero, max_periods), then tax per tax code (a sub-account without one:
--      its payer's) at the rate valid at the period's end, rounded once per
--      rate;
--   5. the invoice (draft; finalize_invoice numbers it), the charges marked
--      with it, and the money: the charges already lowered the balance, so
--      the invoice debits only the difference (taxes, discounts, rounding);
--      prepaid_applied = what the balance held before the period's charges,
--      up to the total.
-------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.run_billing(p_as_of timestamptz DEFAULT now())
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning
SET jit = off AS $$
DECLARE
    created integer := 0;
    n integer;
    chunk_size constant integer := 20000;
    empty_too boolean := coalesce(current_setting('convbill.invoice_empty_periods', true), 'off') IN ('on', 'true', '1');
    finalize boolean := coalesce(current_setting('convbill.finalize_invoices', true), 'off') IN ('on', 'true', '1');
    skipped bigint[];
    inv record;
BEGIN
    IF p_as_of IS NULL OR NOT isfinite(p_as_of) THEN
        RAISE EXCEPTION 'run_billing: as_of must be a finite time' USING ERRCODE = '22008';
    END IF;
    DROP TABLE IF EXISTS pg_temp.convbill_family, pg_temp.convbill_due, pg_temp.convbill_chunk,
                         pg_temp.convbill_lines, pg_temp.convbill_inv;

    -- who pays for whom
    CREATE TEMP TABLE convbill_family ON COMMIT DROP AS
    SELECT a.account_id AS member,
           CASE WHEN a.bill_to_parent THEN @extschema@.payer_of(a.account_id) ELSE a.account_id END AS payer
    FROM @extschema@.account a;
    CREATE INDEX ON convbill_family (payer);
    CREATE INDEX ON convbill_family (member);
    ANALYZE convbill_family;

    -- each paying account's first period to bill: after its last closed
    -- period, or from its first subscription or unbilled charge
    CREATE TEMP TABLE convbill_due ON COMMIT DROP AS
    WITH closed AS (
        SELECT cp.account_id AS payer, max(cp.period_end) AS until
        FROM @extschema@.closed_period cp GROUP BY 1
    ),
    subs AS (
        SELECT f.payer, min(s.started_at) AS first_at
        FROM @extschema@.subscription s JOIN convbill_family f ON f.member = s.account_id GROUP BY 1
    ),
    unbilled AS (
        SELECT u.payer, min(u.ps) AS first_at
        FROM (SELECT DISTINCT f.payer, c.period_start AS ps
              FROM @extschema@.charge c JOIN convbill_family f ON f.member = c.account_id
              WHERE c.invoice_id IS NULL) u
        -- charges left in a period the payer has invoiced (an account that
        -- joined its parent's invoice with a period not billed yet) go on the
        -- payer's next invoice
        WHERE NOT EXISTS (SELECT 1 FROM @extschema@.invoice i
                          WHERE i.account_id = u.payer AND i.kind = 'invoice' AND i.period_start = u.ps)
        GROUP BY 1
    ),
    start AS (
        SELECT a.account_id AS payer, a.timezone, a.billing_day, a.currency, a.tax_code,
               -- a period closed by hand (close_period) still gets its invoice
               CASE WHEN cl.until IS NULL THEN least(su.first_at, ub.first_at)
                    ELSE least(cl.until, ub.first_at) END AS from_ts
        FROM @extschema@.account a
        LEFT JOIN closed cl ON cl.payer = a.account_id
        LEFT JOIN subs su ON su.payer = a.account_id
        LEFT JOIN unbilled ub ON ub.payer = a.account_id
        WHERE NOT a.bill_to_parent
    )
    SELECT s.payer, s.timezone, s.billing_day, s.currency, s.tax_code,
           @extschema@.billing_period_start(s.from_ts, s.timezone, s.billing_day) AS ps,
           @extschema@.billing_period_end(s.from_ts, s.timezone, s.billing_day) AS pe,
           false AS done
    FROM start s
    WHERE s.from_ts IS NOT NULL AND isfinite(s.from_ts)
      AND @extschema@.billing_period_end(s.from_ts, s.timezone, s.billing_day) <= p_as_of;
    CREATE INDEX ON convbill_due (payer) WHERE NOT done;

    LOOP
        DROP TABLE IF EXISTS pg_temp.convbill_chunk, pg_temp.convbill_lines, pg_temp.convbill_inv;

        -- the next accounts, locked, then their sub-accounts (rating and
        -- sessions of theirs wait for the run); an account another run holds
        -- is its job, and one with a sub-account busy elsewhere waits for the
        -- next run: never waiting for a lock here, the run cannot deadlock with
        -- a rater that holds a sub-account and then wants its payer
        CREATE TEMP TABLE convbill_chunk ON COMMIT DROP AS
        WITH next AS (
            SELECT d.* FROM convbill_due d WHERE NOT d.done ORDER BY d.payer LIMIT chunk_size
        ),
        locked AS (
            SELECT a.account_id FROM @extschema@.account a
            WHERE a.account_id IN (SELECT next.payer FROM next)
            ORDER BY a.account_id
            FOR UPDATE OF a SKIP LOCKED
        ),
        -- (another run never takes these: it has not got their payer)
        members AS (
            SELECT a.account_id FROM @extschema@.account a
            WHERE a.account_id IN (SELECT f.member FROM convbill_family f
                                   WHERE f.payer IN (SELECT locked.account_id FROM locked) AND f.member <> f.payer)
            ORDER BY a.account_id
            FOR UPDATE OF a SKIP LOCKED
        ),
        family AS (
            SELECT f.payer, bool_and(f.member = f.payer OR members.account_id IS NOT NULL) AS all_locked
            FROM convbill_family f LEFT JOIN members ON members.account_id = f.member
            WHERE f.payer IN (SELECT locked.account_id FROM locked)
            GROUP BY f.payer
        )
        SELECT next.*, coalesce(family.all_locked, false) AS mine
        FROM next LEFT JOIN family ON family.payer = next.payer;
        GET DIAGNOSTICS n = ROW_COUNT;
        EXIT WHEN n = 0;
        UPDATE convbill_due d SET done = true FROM convbill_chunk c WHERE d.payer = c.payer AND NOT d.done;
        DELETE FROM convbill_chunk c WHERE NOT c.mine
            -- a concurrent run invoiced it while we looked
            OR EXISTS (SELECT 1 FROM @extschema@.invoice i
                       WHERE i.account_id = c.payer AND i.kind = 'invoice' AND i.period_start = c.ps);

        -- a tax code without a rate at the period's end: not billed (reported)
        SELECT array_agg(DISTINCT c.payer) INTO skipped
        FROM convbill_chunk c
        JOIN convbill_family f ON f.payer = c.payer
        JOIN @extschema@.account a ON a.account_id = f.member
        WHERE coalesce(a.tax_code, c.tax_code) IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM @extschema@.tax_rate t
                          WHERE t.code = coalesce(a.tax_code, c.tax_code) AND t.valid_from < c.pe);
        IF skipped IS NOT NULL THEN
            RAISE WARNING 'run_billing: accounts % not billed: their tax code has no rate', skipped
                USING HINT = 'Add the tax_rate, then run the bill run again.';
            DELETE FROM convbill_chunk c WHERE c.payer = ANY (skipped);
        END IF;
        ANALYZE convbill_chunk;

        -- 1. recurring fees (the charge_debit trigger debits them)
        INSERT INTO @extschema@.charge (account_id, kind, quantity, amount, currency, occurred_at,
                                        period_start, period_end, subscription_id, fee_period_start, description)
        SELECT x.member, 'recurring', x.quantity, x.due - x.already, x.currency, x.fps, x.ps, x.pe,
               x.subscription_id, x.fps,
               format('%s%s, %s to %s%s', x.plan_name,
                      CASE WHEN x.quantity > 1 THEN format(' × %s', x.quantity) ELSE '' END,
                      -- ISO dates whatever the session's DateStyle
                      to_char(CASE WHEN x.already <> 0 THEN (x.fps AT TIME ZONE x.timezone)::date
                                   ELSE (greatest(x.started_at, x.fps) AT TIME ZONE x.timezone)::date END, 'YYYY-MM-DD'),
                      to_char(CASE WHEN x.already <> 0 THEN (x.fpe AT TIME ZONE x.timezone)::date - 1
                                   ELSE (least(coalesce(x.ended_at, x.fpe), x.fpe) AT TIME ZONE x.timezone)::date - 1 END,
                              'YYYY-MM-DD'),
                      CASE WHEN x.already <> 0 THEN format(' (correction: %s of %s days)', x.days, x.period_days)
                           WHEN x.days < x.period_days THEN format(' (%s of %s days)', x.days, x.period_days)
                           ELSE '' END)
        FROM (
            SELECT f.member, c.currency, c.ps, c.pe, c.timezone, s.subscription_id, s.quantity, p.name AS plan_name,
                   s.started_at, s.ended_at, fp.fps, fp.fpe, d.days, d.period_days,
                   @extschema@.prorate(p.recurring_fee * s.quantity, d.days,
                                       d.period_days * CASE p.fee_interval WHEN 'year' THEN 12 ELSE 1 END) AS due,
                   coalesce((SELECT sum(ch.amount) FROM @extschema@.charge ch
                             WHERE ch.account_id = f.member AND ch.kind = 'recurring'
                               AND ch.subscription_id = s.subscription_id AND ch.fee_period_start = fp.fps), 0) AS already
            FROM convbill_chunk c
            JOIN convbill_family f ON f.payer = c.payer
            JOIN @extschema@.subscription s ON s.account_id = f.member
            JOIN @extschema@.plan p ON p.code = s.plan_code
            CROSS JOIN LATERAL (SELECT c.ps AS fps, c.pe AS fpe
                                UNION ALL
                                SELECT c.pe, @extschema@.billing_period_end(c.pe, c.timezone, c.billing_day)
                                WHERE p.billing = 'advance') fp
            CROSS JOIN LATERAL (
                SELECT @extschema@.local_days(greatest(s.started_at, fp.fps),
                                              least(coalesce(s.ended_at, fp.fpe), fp.fpe), c.timezone) AS days,
                       @extschema@.local_days(fp.fps, fp.fpe, c.timezone) AS period_days) d
            WHERE s.started_at < fp.fpe
            OFFSET 0   -- each fee and what was already charged for it once, not once per use
        ) x
        WHERE x.due <> x.already;

        -- 2. close the period: late usage goes to the next one
        INSERT INTO @extschema@.closed_period (account_id, period_start, period_end)
        SELECT f.member, c.ps, c.pe
        FROM convbill_chunk c JOIN convbill_family f ON f.payer = c.payer
        ON CONFLICT DO NOTHING;

        -- 3. lines from the period's charges
        CREATE TEMP TABLE convbill_lines ON COMMIT DROP AS
        SELECT c.payer, c.ps, ch.account_id AS src, ch.kind, ch.service, r.zone,
               CASE WHEN ch.kind = 'recurring' THEN ch.subscription_id END AS subscription_id,
               CASE WHEN ch.kind = 'recurring' THEN ch.fee_period_start END AS fee_period,
               CASE WHEN ch.kind IN ('one_time', 'adjustment', 'discount') THEN ch.charge_id END AS one_charge,
               coalesce(sp.plan_code, r.plan_code) AS plan_code,
               @extschema@.invoice_line_total(ch.amount, ch.currency) AS amount,
               @extschema@.invoice_sum(ch.amount) AS charged,
               sum(ch.quantity) AS quantity,
               min(ch.description) AS description,
               NULL::bigint AS discount_id, NULL::text AS tax_code, NULL::numeric AS tax_rate
        FROM convbill_chunk c
        JOIN convbill_family f ON f.payer = c.payer
        JOIN @extschema@.charge ch ON ch.account_id = f.member AND ch.period_start <= c.ps AND ch.invoice_id IS NULL
        LEFT JOIN @extschema@.plan_rate r ON r.rate_id = ch.rate_id
        LEFT JOIN @extschema@.subscription sp ON sp.account_id = ch.account_id AND sp.subscription_id = ch.subscription_id
        GROUP BY c.payer, c.ps, ch.account_id, ch.kind, ch.service, r.zone,
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
                       (SELECT sum(l2.amount) FROM convbill_lines l2
                        WHERE l2.payer = l.payer AND l2.ps = l.ps AND l2.src = l.src
                          AND l2.kind IN ('recurring', 'usage', 'one_time', 'adjustment')) AS section,
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

        -- 5. invoices, their lines, the billed charges
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
        ins AS (
            INSERT INTO @extschema@.invoice (account_id, kind, period_start, period_end, status, currency,
                                             subtotal, discount, tax, total, prepaid_applied, amount_due, charged,
                                             issued_at)
            SELECT t.payer, 'invoice', t.ps, t.pe, 'draft', t.currency, t.subtotal, t.discount, t.tax, t.total,
                   0, t.total, t.charged, NULL
            FROM tot t
            WHERE t.nlines > 0 OR empty_too
            ON CONFLICT DO NOTHING
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

        UPDATE @extschema@.charge ch SET invoice_id = i.invoice_id
        FROM convbill_inv i JOIN convbill_family f ON f.payer = i.account_id
        WHERE ch.account_id = f.member AND ch.period_start <= i.period_start AND ch.invoice_id IS NULL;

        -- the money: prepaid = what the balance held before this period's
        -- charges (later charges and open sessions' debits added back), up
        -- to the total; the balance then carries the whole total
        UPDATE @extschema@.invoice v
        SET prepaid_applied = p.prepaid, amount_due = v.total - p.prepaid
        FROM (
            SELECT i.account_id, i.invoice_id,
                   -- in whole minor units: never more than the balance held
                   trunc(greatest(0, least(i.total,
                       (SELECT coalesce(sum(b.balance), 0) FROM @extschema@.bucket b
                        WHERE b.account_id = i.account_id AND b.kind = 'money'
                          AND b.valid_from <= now() AND b.valid_until > now())
                       + i.charged
                       + (SELECT coalesce(sum(ch.amount), 0) FROM convbill_family f
                          JOIN @extschema@.charge ch ON ch.account_id = f.member
                          WHERE f.payer = i.account_id AND ch.invoice_id IS NULL AND ch.period_start > i.period_start)
                       + (SELECT coalesce(sum(r.charged), 0) FROM @extschema@.reservation r
                          WHERE r.payer_id = i.account_id AND r.status = 'open'))),
                         @extschema@.currency_exponent(i.currency)) AS prepaid
            FROM convbill_inv i
            OFFSET 0   -- once per invoice, not once per column set
        ) p
        WHERE v.account_id = p.account_id AND v.invoice_id = p.invoice_id;

        PERFORM @extschema@.debit_buckets('money', array_agg(i.account_id), array_agg(i.currency),
                                          array_agg(i.total - i.charged), array_agg(NULL::bigint),
                                          array_agg(NULL::integer), NULL, now())
        FROM convbill_inv i WHERE i.total <> i.charged;

        SELECT count(*) INTO n FROM convbill_inv;
        created := created + n;
        IF finalize THEN
            FOR inv IN SELECT i.invoice_id FROM convbill_inv i ORDER BY i.account_id, i.period_start LOOP
                PERFORM @extschema@.finalize_invoice(inv.invoice_id);
            END LOOP;
        END IF;

        -- the next missed period of these accounts, if it has ended too
        INSERT INTO convbill_due (payer, timezone, billing_day, currency, tax_code, ps, pe, done)
        SELECT c.payer, c.timezone, c.billing_day, c.currency, c.tax_code, c.pe,
               @extschema@.billing_period_end(c.pe, c.timezone, c.billing_day), false
        FROM convbill_chunk c
        WHERE @extschema@.billing_period_end(c.pe, c.timezone, c.billing_day) <= p_as_of;
    END LOOP;

    DROP TABLE IF EXISTS pg_temp.convbill_family, pg_temp.convbill_due, pg_temp.convbill_chunk,
                         pg_temp.convbill_lines, pg_temp.convbill_inv;
    RETURN created;
END $$;
COMMENT ON FUNCTION @extschema@.run_billing(timestamptz) IS
    'invoice every period ended by as_of and not invoiced yet (catching up missed ones), for every paying account; safe to re-run and to run concurrently; returns how many invoices it created (drafts, or final with convbill.finalize_invoices = on)';
