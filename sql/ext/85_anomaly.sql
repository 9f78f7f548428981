-------------------------------------------------------------------------------
-- Anomaly and fraud detection (SPEC section 6; statistics in src/anomaly.c).
--
--   usage_baseline(value [, periods])   aggregate (C, parallel): the median and
--                  the median absolute deviation of a series, the values not
--                  given up to `periods` counting as zeros
--   risk_zone      destination zones at high risk of International Revenue
--                  Share Fraud (zone names of convbill.destination)
--   anomaly_daily  usage per account, service and UTC day: quantity, events
--                  and the busiest velocity window; each day summarized once
--                  (and again the next two days, for late events)
--   anomaly_baseline   per account and service: the robust baseline of its
--                  daily quantity, daily events and busiest window of a day
--                  over the convbill.anomaly_baseline_days UTC days before
--                  the last 24 hours; recomputed once a day from
--                  anomaly_daily (both derived, not dumped: rebuilt when
--                  missing; refresh_anomaly_baseline(as_of, force => true)
--                  rebuilds them after events were loaded for days long past)
--   usage_alert    one row per incident: raised once, extended while it goes on
--   detect_anomalies(as_of)   what the 'anomaly' job runs every 5 minutes;
--                  returns the number of new alerts, each also sent with
--                  NOTIFY convbill_alert (JSON)
--
-- What is examined: usage_event rows that started in [as_of - 1 day, as_of),
-- whatever their status except 'duplicate' (fraud shows before rating; an
-- event re-sent but not yet rated counts twice until rate_pending() marks it)
-- of existing accounts.  Three kinds of alert, per account and service:
--   spike     the last 24 hours of a service against the account's own
--             daily baseline, in two measures: its events, and its quantity
--             on a log scale (daily usage varies by factors, not by amounts:
--             one film downloaded is not fraud).
--             level   the higher of the median of the baseline days and the
--                     median of their last 7 (an account that grows is
--                     followed within days), times the service's population
--                     factor: the median over accounts of (window / level)
--                     when above 1, so a holiday that doubles everybody's
--                     texts is nobody's spike (needs 30 accounts with a level
--                     of 3 events a day or more)
--             spread  1.4826 x MAD (times the factor); for events at least
--                     sqrt(level) (a Poisson count's), 10 % of the level and
--                     1; for log quantity at least 0.1
--             z       (observed - level) / spread
--             A spike is a measure with z >= convbill.anomaly_spike_score and
--             observed >= convbill.anomaly_spike_ratio x level, when the
--             events are at least convbill.anomaly_spike_min_events above
--             their level (materiality: a few long calls are not a spike).
--             Needs convbill.anomaly_min_history days of history.
--   irsf      events to a risk_zone (zone_of(attrs->>'destination')) within
--             any convbill.irsf_window: at least convbill.irsf_min_events
--             events, or at least convbill.irsf_min_seconds of a service whose
--             unit is 'second'.  No baseline: such traffic is not expected.
--   velocity  events within any convbill.velocity_window: at least
--             convbill.velocity_min_events and convbill.velocity_factor times
--             the account's usual busiest window of a day (the median over
--             its baseline days; with too little history only the minimum).
-- Once per incident: a detection that overlaps an alert of the same account,
-- service and kind (for irsf and velocity: or comes within one window of it)
-- is the same incident — the alert's window_end and last_seen_at move on, no
-- new alert.  A spike is judged on 24-hour windows, so usage anomalous again
-- within a day after the last window that showed a spike is the same
-- incident.  Runs are serialised by an advisory lock; (account_id, service,
-- kind, window_start) is unique, so a re-run never raises an alert twice.
-- The defaults were calibrated with test/bench/07_anomaly.sql (synthetic
-- traffic with weekly seasons, holidays, growth, heavy tails): recall 1.0 for
-- each kind, false alerts under 0.5 % of clean accounts.
-------------------------------------------------------------------------------

CREATE TYPE @extschema@.robust_baseline AS (
    samples integer,            -- values in the series (zeros included)
    median  double precision,
    mad     double precision    -- median absolute deviation from the median
);
COMMENT ON TYPE @extschema@.robust_baseline IS
    'result of usage_baseline(): a series'' size, median and median absolute deviation (1.4826 x mad estimates the standard deviation of a normal series)';

-- Support functions of the aggregate: internal state, not callable from SQL.
CREATE FUNCTION @extschema@.usage_baseline_accum(internal, double precision) RETURNS internal
    AS 'MODULE_PATHNAME', 'usage_baseline_accum' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.usage_baseline_accum(internal, double precision, integer) RETURNS internal
    AS 'MODULE_PATHNAME', 'usage_baseline_accum_periods' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.usage_baseline_combine(internal, internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'usage_baseline_combine' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.usage_baseline_serialize(internal) RETURNS bytea
    AS 'MODULE_PATHNAME', 'usage_baseline_serialize' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.usage_baseline_deserialize(bytea, internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'usage_baseline_deserialize' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.usage_baseline_final(internal) RETURNS @extschema@.robust_baseline
    AS 'MODULE_PATHNAME', 'usage_baseline_final' LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.usage_baseline_accum(internal, double precision) IS
    'internal: transition function of usage_baseline(value)';
COMMENT ON FUNCTION @extschema@.usage_baseline_accum(internal, double precision, integer) IS
    'internal: transition function of usage_baseline(value, periods)';
COMMENT ON FUNCTION @extschema@.usage_baseline_combine(internal, internal) IS
    'internal: combines two partial states of usage_baseline (parallel aggregation)';
COMMENT ON FUNCTION @extschema@.usage_baseline_serialize(internal) IS
    'internal: a partial state of usage_baseline as bytea (parallel workers, hash aggregate spills)';
COMMENT ON FUNCTION @extschema@.usage_baseline_deserialize(bytea, internal) IS
    'internal: the inverse of usage_baseline_serialize';
COMMENT ON FUNCTION @extschema@.usage_baseline_final(internal) IS
    'internal: final function of usage_baseline (sorts, takes the medians)';

CREATE AGGREGATE @extschema@.usage_baseline(value double precision) (
    SFUNC = @extschema@.usage_baseline_accum,
    STYPE = internal,
    SSPACE = 256,
    FINALFUNC = @extschema@.usage_baseline_final,
    COMBINEFUNC = @extschema@.usage_baseline_combine,
    SERIALFUNC = @extschema@.usage_baseline_serialize,
    DESERIALFUNC = @extschema@.usage_baseline_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE @extschema@.usage_baseline(double precision) IS
    'robust baseline of a series: (samples, median, mad) of the non-NULL values; NULL for none; NaN and infinities raise 22023';

CREATE AGGREGATE @extschema@.usage_baseline(value double precision, periods integer) (
    SFUNC = @extschema@.usage_baseline_accum,
    STYPE = internal,
    SSPACE = 256,
    FINALFUNC = @extschema@.usage_baseline_final,
    COMBINEFUNC = @extschema@.usage_baseline_combine,
    SERIALFUNC = @extschema@.usage_baseline_serialize,
    DESERIALFUNC = @extschema@.usage_baseline_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE @extschema@.usage_baseline(double precision, integer) IS
    'robust baseline of a series of `periods` values of which the ones not given are zeros (e.g. daily totals, the days without usage having no row): (samples = periods, median, mad); periods must be the same on every row of a group and at least its number of values (22023)';

CREATE FUNCTION @extschema@.anomaly_settings(
    OUT baseline_days integer, OUT min_history integer,
    OUT spike_score double precision, OUT spike_ratio double precision, OUT spike_min_events integer,
    OUT irsf_window interval, OUT irsf_min_events integer, OUT irsf_min_seconds integer,
    OUT velocity_window interval, OUT velocity_factor double precision, OUT velocity_min_events integer)
RETURNS record
    AS 'MODULE_PATHNAME', 'anomaly_settings' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.anomaly_settings() IS
    'the settings of detect_anomalies(): convbill.anomaly_*, convbill.irsf_* and convbill.velocity_*, typed';

-------------------------------------------------------------------------------
-- Tables
-------------------------------------------------------------------------------
CREATE TABLE @extschema@.risk_zone (
    zone     text PRIMARY KEY CHECK (length(zone) BETWEEN 1 AND 63),
    reason   text,
    added_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE @extschema@.risk_zone IS
    'destination zones (as in convbill.destination) at high risk of International Revenue Share Fraud: traffic to them is watched by detect_anomalies() (kind irsf)';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.risk_zone', '');

-- detect_anomalies() reads a day of events, the baseline a month: by time
-- (a BRIN of started_at on every usage_event partition: usage_partition_indexes,
-- 40_rating.sql).

-- Derived data, not dumped: rebuilt from usage_event when missing.
CREATE TABLE @extschema@.anomaly_daily (
    account_id bigint NOT NULL,
    service    text NOT NULL,
    day        date NOT NULL,                   -- UTC
    quantity   numeric NOT NULL,
    events     bigint NOT NULL,
    peak       bigint NOT NULL,                 -- events in the busiest velocity slot of the day
    PRIMARY KEY (account_id, service, day)
);
COMMENT ON TABLE @extschema@.anomaly_daily IS
    'usage per account, service and UTC day, the input of anomaly_baseline (derived from usage_event by refresh_anomaly_baseline, not dumped)';

CREATE TABLE @extschema@.anomaly_daily_done (
    day           date PRIMARY KEY,
    slot          interval NOT NULL,            -- the velocity window its peaks were counted in
    summarized_at timestamptz NOT NULL
);
COMMENT ON TABLE @extschema@.anomaly_daily_done IS
    'the UTC days anomaly_daily holds (a day without usage has no rows there, but is here)';

CREATE TABLE @extschema@.anomaly_baseline (
    account_id      bigint NOT NULL,
    service         text NOT NULL,
    days            integer NOT NULL,           -- days of history (from its first usage, at most baseline_days)
    quantity_median double precision NOT NULL,  -- daily quantity
    log_quantity_median double precision NOT NULL,  -- ln(1 + daily quantity)
    log_quantity_mad    double precision NOT NULL,
    events_median   double precision NOT NULL,  -- daily events
    events_mad      double precision NOT NULL,
    peak_median     double precision NOT NULL,  -- events in the busiest velocity window of a day
    -- the medians of the last 7 days (of the days above): the level of an
    -- account that grows follows it within days
    quantity_recent_median     double precision NOT NULL,
    log_quantity_recent_median double precision NOT NULL,
    events_recent_median       double precision NOT NULL,
    PRIMARY KEY (account_id, service)
);
COMMENT ON TABLE @extschema@.anomaly_baseline IS
    'per account and service, the robust baseline (median, MAD) of its UTC days before the last 24 hours; rebuilt by detect_anomalies() once a day (derived, not dumped)';

CREATE TABLE @extschema@.anomaly_baseline_run (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    upto          date NOT NULL,                -- the baseline covers days [upto - days, upto) UTC
    days          integer NOT NULL,
    slot          interval NOT NULL,            -- the velocity window it measured peaks in
    computed_at   timestamptz NOT NULL,
    baselines     integer NOT NULL
);
COMMENT ON TABLE @extschema@.anomaly_baseline_run IS
    'one row: which days and settings anomaly_baseline was computed for';

CREATE TABLE @extschema@.usage_alert (
    account_id   bigint NOT NULL,
    alert_id     bigint GENERATED BY DEFAULT AS IDENTITY,
    service      text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('spike', 'irsf', 'velocity')),
    detected_at  timestamptz NOT NULL,          -- as_of of the run that raised it
    observed     numeric NOT NULL,
    expected     numeric,
    score        numeric NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}',
    window_start timestamptz NOT NULL,          -- the incident: from the first window that showed it
    window_end   timestamptz NOT NULL,          -- to the latest
    last_seen_at timestamptz NOT NULL,          -- as_of of the latest run that saw it
    PRIMARY KEY (account_id, alert_id),
    UNIQUE (account_id, service, kind, window_start),
    CHECK (window_start <= window_end)
);
CREATE INDEX usage_alert_detected ON @extschema@.usage_alert (detected_at);
COMMENT ON TABLE @extschema@.usage_alert IS
    'usage anomalies, one row per incident (detect_anomalies): spike (vs the account''s own baseline), irsf (high-risk destinations), velocity (events in a short window)';
COMMENT ON COLUMN @extschema@.usage_alert.observed IS
    'spike: quantity of the service in the 24 hours before detected_at; irsf and velocity: events in the busiest window';
COMMENT ON COLUMN @extschema@.usage_alert.expected IS
    'spike: the account''s median daily quantity (times the population factor); velocity: its median busiest window of a day; irsf: convbill.irsf_min_events (no such traffic is expected)';
COMMENT ON COLUMN @extschema@.usage_alert.score IS
    'spike: robust z-score (the larger of events'' and log quantity''s); velocity: observed / expected (expected at least 1); irsf: observed over its threshold (events or seconds, the larger)';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_alert', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_alert_alert_id_seq', '');

-------------------------------------------------------------------------------
-- The baseline: once per day of as_of
-------------------------------------------------------------------------------
-- jit = off here and in detect_anomalies: their queries cost enough to pass
-- the JIT thresholds, and compiling them takes seconds for a query that runs
-- in a fraction of one.
-- Once a day: the days not yet summarized (and the last two again, for late
-- events) go into anomaly_daily, then anomaly_baseline is recomputed from it.
CREATE FUNCTION @extschema@.refresh_anomaly_baseline(as_of timestamptz DEFAULT now(), force boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
SET jit = off AS $$
DECLARE
    s record;
    upto_day date;
    first_day date;
    days_due date[];
    n integer;
BEGIN
    IF as_of IS NULL OR force IS NULL THEN
        RAISE EXCEPTION 'refresh_anomaly_baseline: as_of and force must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'refresh_anomaly_baseline: as_of must be a finite time' USING ERRCODE = '22008';
    END IF;
    SELECT * INTO s FROM @extschema@.anomaly_settings();
    -- the UTC days before the 24 hours detect_anomalies(as_of) examines
    upto_day := ((as_of - interval '1 day') AT TIME ZONE 'UTC')::date;
    first_day := upto_day - s.baseline_days;
    PERFORM pg_advisory_xact_lock(pg_catalog.hashtext('convbill.detect_anomalies'));
    IF NOT force AND EXISTS (SELECT 1 FROM @extschema@.anomaly_baseline_run r
                             WHERE r.upto = upto_day AND r.days = s.baseline_days
                               AND r.slot = s.velocity_window) THEN
        RETURN 0;
    END IF;

    -- 1. the daily summary: days missing or counted with another velocity
    -- window, and the last two days again (events arrive late); all with force
    SELECT array_agg(d::date) INTO days_due
    FROM generate_series(first_day, upto_day - 1, interval '1 day') d
    WHERE force OR d >= upto_day - 2
       OR NOT EXISTS (SELECT 1 FROM @extschema@.anomaly_daily_done x
                      WHERE x.day = d::date AND x.slot = s.velocity_window);
    IF days_due IS NOT NULL THEN
        DELETE FROM @extschema@.anomaly_daily y WHERE y.day = ANY (days_due);
        INSERT INTO @extschema@.anomaly_daily (account_id, service, day, quantity, events, peak)
        SELECT account_id, service, day, coalesce(sum(quantity), 0), sum(events), max(events)
        FROM (
            -- events per velocity slot (a window of events spans at most two
            -- slots: the busiest slot of a day is about its busiest window)
            SELECT e.account_id, e.service, (e.started_at AT TIME ZONE 'UTC')::date AS day,
                   sum(CASE WHEN e.quantity >= 0 AND e.quantity < 1e300 THEN e.quantity END) AS quantity,
                   count(*) AS events
            FROM @extschema@.usage_event e
            WHERE e.started_at >= (SELECT min(t) FROM unnest(days_due) t)::timestamp AT TIME ZONE 'UTC'
              AND e.started_at < ((SELECT max(t) FROM unnest(days_due) t) + 1)::timestamp AT TIME ZONE 'UTC'
              AND (e.started_at AT TIME ZONE 'UTC')::date = ANY (days_due)
              AND e.status IS DISTINCT FROM 'duplicate'
              AND e.account_id IS NOT NULL AND e.service IS NOT NULL
            GROUP BY e.account_id, e.service, day,
                     date_bin(s.velocity_window, e.started_at, timestamptz '2000-01-01 00:00+00')) slot
        GROUP BY account_id, service, day;
        INSERT INTO @extschema@.anomaly_daily_done (day, slot, summarized_at)
        SELECT t, s.velocity_window, clock_timestamp() FROM unnest(days_due) t
        ON CONFLICT (day) DO UPDATE SET slot = excluded.slot, summarized_at = excluded.summarized_at;
    END IF;
    -- days no baseline can reach any more
    DELETE FROM @extschema@.anomaly_daily y WHERE y.day < upto_day - 367;
    DELETE FROM @extschema@.anomaly_daily_done x WHERE x.day < upto_day - 367;

    -- 2. the baselines: days from each account's first usage in the range
    -- (of any service), the days without usage counting as zeros
    DELETE FROM @extschema@.anomaly_baseline;
    INSERT INTO @extschema@.anomaly_baseline
        (account_id, service, days, quantity_median, log_quantity_median, log_quantity_mad,
         events_median, events_mad, peak_median,
         quantity_recent_median, log_quantity_recent_median, events_recent_median)
    SELECT b.account_id, b.service, b.days, (b.q).median, (b.lq).median, (b.lq).mad,
           (b.n).median, (b.n).mad, (b.p).median,
           coalesce((b.q7).median, 0), coalesce((b.lq7).median, 0), coalesce((b.n7).median, 0)
    FROM (SELECT d.account_id, d.service, h.days,
                 @extschema@.usage_baseline(d.quantity::float8, h.days) AS q,
                 @extschema@.usage_baseline(ln(1 + d.quantity::float8), h.days) AS lq,
                 @extschema@.usage_baseline(d.events::float8, h.days) AS n,
                 @extschema@.usage_baseline(d.peak::float8, h.days) AS p,
                 @extschema@.usage_baseline(d.quantity::float8, least(h.days, 7))
                     FILTER (WHERE d.day >= upto_day - 7) AS q7,
                 @extschema@.usage_baseline(ln(1 + d.quantity::float8), least(h.days, 7))
                     FILTER (WHERE d.day >= upto_day - 7) AS lq7,
                 @extschema@.usage_baseline(d.events::float8, least(h.days, 7))
                     FILTER (WHERE d.day >= upto_day - 7) AS n7
          FROM @extschema@.anomaly_daily d
          JOIN (SELECT y.account_id, upto_day - min(y.day) AS days
                FROM @extschema@.anomaly_daily y
                WHERE y.day >= first_day AND y.day < upto_day
                GROUP BY y.account_id) h USING (account_id)
          WHERE d.day >= first_day AND d.day < upto_day
            AND EXISTS (SELECT 1 FROM @extschema@.account a WHERE a.account_id = d.account_id)
          GROUP BY d.account_id, d.service, h.days) b;
    GET DIAGNOSTICS n = ROW_COUNT;
    INSERT INTO @extschema@.anomaly_baseline_run (id, upto, days, slot, computed_at, baselines)
    VALUES (true, upto_day, s.baseline_days, s.velocity_window, clock_timestamp(), n)
    ON CONFLICT (id) DO UPDATE SET upto = excluded.upto, days = excluded.days, slot = excluded.slot,
                                   computed_at = excluded.computed_at, baselines = excluded.baselines;
    RETURN n;
END $$;
COMMENT ON FUNCTION @extschema@.refresh_anomaly_baseline(timestamptz, boolean) IS
    'recompute anomaly_baseline for detect_anomalies(as_of) unless it is current (force: always); returns the baselines computed, 0 when already current';

-------------------------------------------------------------------------------
-- Detection
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.detect_anomalies(as_of timestamptz DEFAULT now())
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
SET jit = off AS $$
DECLARE
    s record;
    t0 timestamptz;
    raised @extschema@.usage_alert[];
    a @extschema@.usage_alert;
BEGIN
    IF as_of IS NULL THEN
        RAISE EXCEPTION 'detect_anomalies: as_of must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'detect_anomalies: as_of must be a finite time' USING ERRCODE = '22008';
    END IF;
    SELECT * INTO s FROM @extschema@.anomaly_settings();
    t0 := as_of - interval '1 day';
    -- one run at a time (the job's own lock covers only the job)
    PERFORM pg_advisory_xact_lock(pg_catalog.hashtext('convbill.detect_anomalies'));
    PERFORM @extschema@.refresh_anomaly_baseline(as_of);

    WITH ev AS MATERIALIZED (
        SELECT e.account_id, e.service, e.started_at, e.attrs,
               CASE WHEN e.quantity >= 0 AND e.quantity < 1e300 THEN e.quantity END AS quantity
        FROM @extschema@.usage_event e
        WHERE e.started_at >= t0 AND e.started_at < as_of
          AND e.status IS DISTINCT FROM 'duplicate'
          AND e.service IS NOT NULL
          AND EXISTS (SELECT 1 FROM @extschema@.account ac WHERE ac.account_id = e.account_id)),
    win AS (
        SELECT account_id, service, coalesce(sum(quantity), 0) AS observed, count(*) AS events
        FROM ev GROUP BY 1, 2),
    history AS (
        SELECT b.account_id, max(b.days) AS days FROM @extschema@.anomaly_baseline b GROUP BY 1),
    base AS (
        SELECT w.account_id, w.service, w.observed, w.events, coalesce(h.days, 0) AS days,
               -- the level: the higher of the long and the recent median
               coalesce(greatest(b.quantity_median, b.quantity_recent_median), 0) AS q_median,
               coalesce(greatest(b.log_quantity_median, b.log_quantity_recent_median), 0) AS lq_median,
               coalesce(b.log_quantity_mad, 0) AS lq_mad,
               coalesce(greatest(b.events_median, b.events_recent_median), 0) AS n_median,
               coalesce(b.events_mad, 0) AS n_mad,
               coalesce(b.peak_median, 0) AS peak
        FROM win w
        LEFT JOIN history h USING (account_id)
        LEFT JOIN @extschema@.anomaly_baseline b USING (account_id, service)),

    -- the population factor of a service: how the typical account's usage
    -- (with a baseline of at least 3 events a day) compares with its own
    -- median in this window, when more (a holiday, a campaign, a network
    -- event); with fewer than 30 such accounts, 1
    crowd AS MATERIALIZED (
        SELECT b.service,
               CASE WHEN count(*) >= 30 THEN greatest(1, percentile_cont(0.5) WITHIN GROUP
                   (ORDER BY coalesce(w.events, 0) / greatest(b.events_median, b.events_recent_median)))
                    ELSE 1 END AS f_events,
               CASE WHEN count(*) >= 30 THEN greatest(1, percentile_cont(0.5) WITHIN GROUP
                   (ORDER BY coalesce(w.observed, 0)::float8 / greatest(b.quantity_median, b.quantity_recent_median)))
                    ELSE 1 END AS f_quantity
        FROM @extschema@.anomaly_baseline b
        LEFT JOIN win w USING (account_id, service)
        WHERE b.days >= s.min_history AND b.events_median >= 3 AND b.quantity_median > 0
        GROUP BY b.service),

    -- spikes: the last 24 hours against the daily baseline times the
    -- population factor, in events and in log quantity; a measure counts when
    -- both z and the ratio are reached
    spike_scored AS (
        SELECT x.*,
               CASE WHEN x.events >= s.spike_ratio * x.n_expected THEN x.z_events END AS z_n,
               CASE WHEN x.observed::float8 >= s.spike_ratio * x.q_expected THEN x.z_quantity END AS z_q
        FROM (SELECT y.*,
                     y.n_median * y.f_events AS n_expected, y.q_median * y.f_quantity AS q_expected,
                     (y.events - y.n_median * y.f_events)
                         / greatest(1.4826 * y.n_mad * y.f_events, sqrt(y.n_median * y.f_events),
                                    0.1 * y.n_median * y.f_events, 1) AS z_events,
                     (ln(1 + y.observed::float8) - y.lq_median - ln(y.f_quantity))
                         / greatest(1.4826 * y.lq_mad, 0.1) AS z_quantity
              FROM (SELECT b.*, coalesce(c.f_events, 1) AS f_events, coalesce(c.f_quantity, 1) AS f_quantity
                    FROM base b LEFT JOIN crowd c USING (service)
                    WHERE b.days >= s.min_history) y) x
        WHERE x.events - x.n_expected >= s.spike_min_events),
    spike AS (
        SELECT account_id, service, 'spike'::text AS kind, t0 AS ws, as_of AS we, observed,
               q_expected AS expected, greatest(z_n, z_q) AS score,
               jsonb_build_object('events', events, 'events_expected', round(n_expected::numeric, 2),
                                  'z_events', round(z_events::numeric, 2),
                                  'z_quantity', round(z_quantity::numeric, 2),
                                  'population_factor', round(f_events::numeric, 2),
                                  'history_days', days) AS detail
        FROM spike_scored WHERE greatest(z_n, z_q) >= s.spike_score),

    -- velocity: events within any velocity_window against the usual busiest window
    v_candidate AS (
        SELECT b.account_id, b.service,
               CASE WHEN b.days >= s.min_history THEN b.peak ELSE 0 END AS expected
        FROM base b WHERE b.events >= s.velocity_min_events),
    v_window AS (
        SELECT e.account_id, e.service, e.started_at, c.expected,
               count(*) OVER w AS n, min(e.started_at) OVER w AS first_at
        FROM ev e JOIN v_candidate c USING (account_id, service)
        WINDOW w AS (PARTITION BY e.account_id, e.service ORDER BY e.started_at
                     RANGE BETWEEN s.velocity_window PRECEDING AND CURRENT ROW)),
    v_over AS (
        SELECT v.*, lag(v.started_at) OVER (PARTITION BY v.account_id, v.service ORDER BY v.started_at) AS prev
        FROM v_window v
        WHERE v.n >= s.velocity_min_events AND v.n >= s.velocity_factor * v.expected),
    v_island AS (
        -- (a new incident only where the next run would not continue this
        -- one either: its window starts more than a window after the last
        -- over-threshold event - see matched below)
        SELECT v.*, count(*) FILTER (WHERE v.prev IS NULL OR v.first_at - v.prev > s.velocity_window)
                        OVER (PARTITION BY v.account_id, v.service ORDER BY v.started_at) AS island
        FROM v_over v),
    velocity AS (
        SELECT account_id, service, 'velocity'::text AS kind, min(first_at) AS ws, max(started_at) AS we,
               max(n)::numeric AS observed, max(expected) AS expected,
               max(n) / greatest(max(expected), 1) AS score,
               jsonb_build_object('window_minutes', (extract(epoch FROM s.velocity_window) / 60)::integer) AS detail
        FROM v_island GROUP BY account_id, service, island),

    -- IRSF: traffic to high-risk zones within any irsf_window
    risky AS (
        SELECT e.account_id, e.service, e.started_at, z.zone,
               CASE WHEN sv.unit = 'second' THEN e.quantity END AS seconds
        FROM ev e
        JOIN @extschema@.risk_zone z ON z.zone = @extschema@.event_zone(e.attrs)
        LEFT JOIN @extschema@.service sv ON sv.code = e.service),
    i_window AS (
        SELECT r.*, count(*) OVER w AS n, coalesce(sum(r.seconds) OVER w, 0) AS secs,
               min(r.started_at) OVER w AS first_at
        FROM risky r
        WINDOW w AS (PARTITION BY r.account_id, r.service ORDER BY r.started_at
                     RANGE BETWEEN s.irsf_window PRECEDING AND CURRENT ROW)),
    i_over AS (
        SELECT i.*, lag(i.started_at) OVER (PARTITION BY i.account_id, i.service ORDER BY i.started_at) AS prev
        FROM i_window i
        WHERE i.n >= s.irsf_min_events OR i.secs >= s.irsf_min_seconds),
    i_island AS (
        SELECT i.*, count(*) FILTER (WHERE i.prev IS NULL OR i.first_at - i.prev > s.irsf_window)
                        OVER (PARTITION BY i.account_id, i.service ORDER BY i.started_at) AS island
        FROM i_over i),
    irsf AS (
        SELECT g.account_id, g.service, 'irsf'::text AS kind, g.ws, g.we, g.n::numeric AS observed,
               s.irsf_min_events::float8 AS expected,
               greatest(g.n::float8 / s.irsf_min_events, g.secs::float8 / s.irsf_min_seconds) AS score,
               jsonb_build_object('seconds', g.secs,
                                  'window_minutes', (extract(epoch FROM s.irsf_window) / 60)::integer,
                                  'zones', (SELECT jsonb_agg(DISTINCT r.zone) FROM risky r
                                            WHERE r.account_id = g.account_id AND r.service = g.service
                                              AND r.started_at BETWEEN g.ws AND g.we)) AS detail
        FROM (SELECT account_id, service, min(first_at) AS ws, max(started_at) AS we,
                     max(n) AS n, max(secs) AS secs
              FROM i_island GROUP BY account_id, service, island) g),

    detected AS (
        SELECT * FROM spike UNION ALL SELECT * FROM velocity UNION ALL SELECT * FROM irsf),
    -- the incident each detection continues, if any: same account, service
    -- and kind, overlapping (irsf, velocity: or within one window)
    matched AS (
        SELECT d.*,
               (SELECT al.alert_id FROM @extschema@.usage_alert al
                WHERE al.account_id = d.account_id AND al.service = d.service AND al.kind = d.kind
                  AND al.window_end + g.gap >= d.ws AND al.window_start - g.gap <= d.we
                ORDER BY al.window_end DESC, al.alert_id DESC LIMIT 1) AS alert_id
        FROM detected d
        CROSS JOIN LATERAL (SELECT CASE d.kind WHEN 'velocity' THEN s.velocity_window
                                               WHEN 'irsf' THEN s.irsf_window
                                               ELSE interval '0' END AS gap) g),
    continued AS (
        UPDATE @extschema@.usage_alert al
        SET window_end = greatest(al.window_end, m.we),
            last_seen_at = greatest(al.last_seen_at, as_of)
        FROM (SELECT account_id, alert_id, max(we) AS we FROM matched
              WHERE alert_id IS NOT NULL GROUP BY 1, 2) m
        WHERE al.account_id = m.account_id AND al.alert_id = m.alert_id
        RETURNING al.alert_id),
    inserted AS (
        INSERT INTO @extschema@.usage_alert
            (account_id, service, kind, detected_at, observed, expected, score, detail,
             window_start, window_end, last_seen_at)
        SELECT m.account_id, m.service, m.kind, as_of, m.observed,
               round(m.expected::numeric, 2), round(m.score::numeric, 2), m.detail,
               m.ws, m.we, as_of
        FROM matched m
        WHERE m.alert_id IS NULL
        ORDER BY m.account_id, m.service, m.kind, m.ws
        ON CONFLICT (account_id, service, kind, window_start) DO NOTHING
        RETURNING *)
    SELECT array_agg(i ORDER BY i.alert_id) INTO raised FROM inserted i;

    -- sent at commit, with the alerts
    FOREACH a IN ARRAY coalesce(raised, '{}') LOOP
        PERFORM pg_notify('convbill_alert',
                          json_build_object('account_id', a.account_id, 'alert_id', a.alert_id,
                                             'service', a.service, 'kind', a.kind,
                                             'detected_at', a.detected_at, 'observed', a.observed,
                                             'expected', a.expected, 'score', a.score,
                                             'window_start', a.window_start,
                                             'window_end', a.window_end)::text);
    END LOOP;
    RETURN coalesce(cardinality(raised), 0);
END $$;
COMMENT ON FUNCTION @extschema@.detect_anomalies(timestamptz) IS
    'raise usage alerts (spike, irsf, velocity) from the usage events of the 24 hours before as_of, once per incident; NOTIFY convbill_alert (JSON) for each new alert; returns how many were raised';
