/*
 * billing_period.h — billing periods in the account's time zone.
 */
#ifndef CONVBILL_BILLING_PERIOD_H
#define CONVBILL_BILLING_PERIOD_H

#include "pgtime.h"
#include "utils/timestamp.h"

extern void billing_period_bounds(TimestampTz at, pg_tz *tz, int billing_day,
								  TimestampTz *start, TimestampTz *end);

#endif
