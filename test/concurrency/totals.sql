-- Per-account results that do not depend on rating order.
SET search_path = convbill, public;
SELECT 'status', status, count(*)::text FROM usage_event GROUP BY status ORDER BY 2;
SELECT 'account', account_id::text, period_start::text || ' ' || coalesce(service, '') || ' '
       || trim_scale(sum(amount))::text || ' ' || trim_scale(sum(covered_quantity))::text || ' ' || count(*)::text
FROM charge GROUP BY account_id, period_start, service ORDER BY account_id, 3;
