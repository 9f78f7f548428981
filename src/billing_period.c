/*
 * billing_period.c — billing periods in the account's time zone.
 *
 * A period is [local midnight of billing_day, the same day next month) in the
 * account's IANA zone.  billing_day is 1..28, so it exists in every month.  The
 * local dates are turned back into instants with PostgreSQL's own rules for
 * local times (DetermineTimeZoneOffset, as timestamp -> timestamptz does), so a
 * DST month is 743 or 745 hours long and a midnight that falls in a DST gap
 * maps exactly as `AT TIME ZONE` maps it.  Hot in rating: one call per event.
 */
#include "postgres.h"

#include "fmgr.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "billing_period.h"
#include "local_time.h"

/* The zone of a name, cached for the last name asked (one account at a time). */
static pg_tz *
zone_by_name(text *tzname)
{
	static char last_name[TZ_STRLEN_MAX + 1];
	static pg_tz *last_tz = NULL;
	char		name[TZ_STRLEN_MAX + 1];

	text_to_cstring_buffer(tzname, name, sizeof(name));
	if (last_tz == NULL || strcmp(name, last_name) != 0)
	{
		last_tz = zone_lookup(name);
		strlcpy(last_name, name, sizeof(last_name));
	}
	return last_tz;
}

/* Local midnight of year-month-day (month may be 0 or 13) in tz, as an instant. */
static TimestampTz
local_midnight(int year, int month, int day, pg_tz *tz)
{
	struct pg_tm tm;
	int			offset;
	TimestampTz result;

	if (month < 1)
	{
		month += 12;
		year--;
	}
	else if (month > 12)
	{
		month -= 12;
		year++;
	}
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = year;
	tm.tm_mon = month;
	tm.tm_mday = day;
	offset = DetermineTimeZoneOffset(&tm, tz);
	if (tm2timestamp(&tm, 0, &offset, &result) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("billing period out of range")));
	return result;
}

/* The period containing `at`: [*start, *end). */
void
billing_period_bounds(TimestampTz at, pg_tz *tz, int billing_day,
					  TimestampTz *start, TimestampTz *end)
{
	struct pg_tm *lt;
	int			year,
				month;

	if (TIMESTAMP_NOT_FINITE(at))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("a billing period needs a finite time")));
	if (billing_day < 1 || billing_day > 28)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("billing_day must be between 1 and 28, not %d", billing_day)));
	lt = local_tm(at, tz);
	year = lt->tm_year + 1900;
	month = lt->tm_mon + 1;
	if (lt->tm_mday < billing_day)
		month--;
	*start = local_midnight(year, month, billing_day, tz);
	*end = local_midnight(year, month + 1, billing_day, tz);

	/*
	 * Where the clocks go back at midnight (America/Havana, Atlantic/Azores),
	 * local midnight happens twice and maps to the later instant; an event in
	 * the first hour after the earlier midnight then belongs to the period
	 * before.  (Gaps need nothing: a skipped midnight maps forward.)
	 */
	if (at < *start)
	{
		*end = *start;
		*start = local_midnight(year, month - 1, billing_day, tz);
	}
}

PG_FUNCTION_INFO_V1(billing_period_start);
/* billing_period_start(at, tz, billing_day): the start of the period containing at. */
Datum
billing_period_start(PG_FUNCTION_ARGS)
{
	TimestampTz start,
				end;

	billing_period_bounds(PG_GETARG_TIMESTAMPTZ(0), zone_by_name(PG_GETARG_TEXT_PP(1)),
						  PG_GETARG_INT32(2), &start, &end);
	PG_RETURN_TIMESTAMPTZ(start);
}

PG_FUNCTION_INFO_V1(billing_period_end);
/* billing_period_end(at, tz, billing_day): the end (exclusive) of the period containing at. */
Datum
billing_period_end(PG_FUNCTION_ARGS)
{
	TimestampTz start,
				end;

	billing_period_bounds(PG_GETARG_TIMESTAMPTZ(0), zone_by_name(PG_GETARG_TEXT_PP(1)),
						  PG_GETARG_INT32(2), &start, &end);
	PG_RETURN_TIMESTAMPTZ(end);
}
