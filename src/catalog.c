/*
 * catalog.c — SQL-callable checks the catalog's constraints use: ISO 4217
 * currency codes and time zone names.
 */
#include "postgres.h"

#include "fmgr.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/datetime.h"

#include "currency.h"

PG_FUNCTION_INFO_V1(currency_exponent_sql);
/* currency_exponent(code): ISO 4217 minor units, NULL for an unknown code. */
Datum
currency_exponent_sql(PG_FUNCTION_ARGS)
{
	text	   *code = PG_GETARG_TEXT_PP(0);
	int			e = currency_exponent(VARDATA_ANY(code), VARSIZE_ANY_EXHDR(code));

	if (e < 0)
		PG_RETURN_NULL();
	PG_RETURN_INT32(e);
}

PG_FUNCTION_INFO_V1(is_time_zone);
/* is_time_zone(name): whether PostgreSQL's time zone database knows name. */
Datum
is_time_zone(PG_FUNCTION_ARGS)
{
	text	   *name = PG_GETARG_TEXT_PP(0);
	char		buf[TZ_STRLEN_MAX + 1];

	if (VARSIZE_ANY_EXHDR(name) == 0 || VARSIZE_ANY_EXHDR(name) > TZ_STRLEN_MAX)
		PG_RETURN_BOOL(false);
	text_to_cstring_buffer(name, buf, sizeof(buf));
	PG_RETURN_BOOL(pg_tzset(buf) != NULL);
}
