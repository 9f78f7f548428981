-------------------------------------------------------------------------------
-- charge_events: many one-shot events in one call and one transaction, each
-- with charge_event()'s semantics and idempotency (a mediation platform's
-- batch of SMS, API calls or IoT messages).
-------------------------------------------------------------------------------

CREATE TYPE @extschema@.event_request AS (
    account_id bigint,
    service    text,
    event_id   text,
    units      numeric,
    attrs      jsonb
);
COMMENT ON TYPE @extschema@.event_request IS 'one event for charge_events()';

CREATE FUNCTION @extschema@.charge_events(p_events @extschema@.event_request[])
RETURNS TABLE (account_id bigint, event_id text, result text, reason text, granted numeric, held numeric,
               charged numeric, expires_at timestamptz)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e @extschema@.event_request;
    g @extschema@.grant;
BEGIN
    FOREACH e IN ARRAY coalesce(p_events, '{}') LOOP
        g := @extschema@.charge_event(e.account_id, e.service, e.event_id, e.units, coalesce(e.attrs, '{}'));
        account_id := e.account_id;
        event_id := e.event_id;
        result := g.result;
        reason := g.reason;
        granted := g.granted;
        held := g.held;
        charged := g.charged;
        expires_at := g.expires_at;
        RETURN NEXT;
    END LOOP;
END $$;
COMMENT ON FUNCTION @extschema@.charge_events(@extschema@.event_request[]) IS
    'charge_event for each element of an array, in one call and one transaction; one answer per event';
