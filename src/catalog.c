/*
 * catalog.c — SQL-callable checks the catalog's constraints use: ISO 4217
 * currency codes and time zone names.
 */
#include "postgres.h"

#include "fmgr.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/formatting.h"
#include "utils/memutils.h"
#include "catalog/pg_collation.h"

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

/* The names of PostgreSQL's time zone database, lower-cased and sorted, once per backend. */
static char **zone_names = NULL;
static int	nzone_names = 0;

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

static void
load_zone_names(void)
{
	pg_tzenum  *e;
	pg_tz	   *tz;
	int			cap = 1024;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	char	  **names = palloc(sizeof(char *) * cap);
	int			n = 0;

	e = pg_tzenumerate_start();
	while ((tz = pg_tzenumerate_next(e)) != NULL)
	{
		const char *zn = pg_get_timezone_name(tz);
		const char *base = strrchr(zn, '/');

		base = base ? base + 1 : zn;

		/*
		 * Not zones of a place: "localtime" is the server's own zone (a link
		 * to /etc/localtime with system tzdata), "posixrules" a template,
		 * "Factory" a placeholder.  An account's periods never follow the
		 * server.
		 */
		if (pg_strcasecmp(base, "localtime") == 0 || pg_strcasecmp(base, "posixrules") == 0 ||
			pg_strcasecmp(base, "Factory") == 0)
			continue;
		if (n == cap)
		{
			cap *= 2;
			names = repalloc(names, sizeof(char *) * cap);
		}
		names[n++] = str_tolower(pg_get_timezone_name(tz), strlen(pg_get_timezone_name(tz)),
								 DEFAULT_COLLATION_OID);
	}
	pg_tzenumerate_end(e);
	qsort(names, n, sizeof(char *), cmp_names);
	MemoryContextSwitchTo(old);
	zone_names = names;
	nzone_names = n;
}

PG_FUNCTION_INFO_V1(is_time_zone);
/*
 * is_time_zone(name): whether name is a zone of PostgreSQL's time zone
 * database (IANA names such as "Europe/Berlin", any letter case).  POSIX-style
 * specifications that pg_tzset() would also accept ("UTC+14", which means
 * UTC-14) are refused: an account's zone must be a real place's rules.
 */
Datum
is_time_zone(PG_FUNCTION_ARGS)
{
	text	   *name = PG_GETARG_TEXT_PP(0);
	char	   *key;

	if (VARSIZE_ANY_EXHDR(name) == 0 || VARSIZE_ANY_EXHDR(name) > TZ_STRLEN_MAX)
		PG_RETURN_BOOL(false);
	if (zone_names == NULL)
		load_zone_names();
	key = str_tolower(VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name), DEFAULT_COLLATION_OID);
	PG_RETURN_BOOL(bsearch(&key, zone_names, nzone_names, sizeof(char *), cmp_names) != NULL);
}
