/*
 * local_time.c — instants seen in an IANA time zone.
 *
 * One place for the two conversions every zone-aware feature needs: a zone
 * name to PostgreSQL's pg_tz (with a clear error), and an instant to its local
 * calendar date and wall-clock time, rounding sub-second times down also
 * before 2000 (where truncating toward zero would round them up).
 */
#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/datetime.h"

#include "local_time.h"

/* The zone of a name; raises 22023 with a hint for an unknown name. */
pg_tz *
zone_lookup(const char *name)
{
	pg_tz	   *tz = pg_tzset(name);

	if (tz == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("time zone \"%s\" not recognized", name),
				 errhint("Use an IANA time zone name such as \"Europe/Berlin\" or \"UTC\".")));
	return tz;
}

/* ts broken down in tz (whole seconds, rounded down). */
struct pg_tm *
local_tm(TimestampTz ts, pg_tz *tz)
{
	pg_time_t	secs;
	struct pg_tm *tm;

	if (TIMESTAMP_NOT_FINITE(ts))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("time must be finite")));
	secs = (pg_time_t) ((ts >= 0 ? ts / USECS_PER_SEC : -((-ts + USECS_PER_SEC - 1) / USECS_PER_SEC)) +
						(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY);
	tm = pg_localtime(&secs, tz);
	if (tm == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("time out of range for time zone \"%s\"", pg_get_timezone_name(tz))));
	return tm;
}
