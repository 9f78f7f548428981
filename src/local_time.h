/*
 * local_time.h — instants seen in an IANA time zone (shared by tariff time
 * bands and billing periods).
 */
#ifndef CONVBILL_LOCAL_TIME_H
#define CONVBILL_LOCAL_TIME_H

#include "pgtime.h"
#include "utils/timestamp.h"

/* The zone of a name; raises 22023 with a hint for an unknown name. */
extern pg_tz *zone_lookup(const char *name);

/* ts broken down in tz (whole seconds, rounded down); raises for an infinite or out-of-range ts. */
extern struct pg_tm *local_tm(TimestampTz ts, pg_tz *tz);

#endif
