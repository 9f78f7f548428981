/*
 * tariff_type.c — the convbill.tariff SQL type and its functions: text and
 * binary I/O, equality, rate(), billed_quantity().
 *
 * A thin layer over the pure-C parser and evaluator: it converts numeric and
 * timestamptz arguments, maps TariffError to SQLSTATEs, and caches per call site
 * (fn_extra) what is expensive to redo per row — the detoasted tariff when the
 * stored value is compressed or out of line, and the resolved time zone.
 */
#include "postgres.h"

#include "fmgr.h"
#include "common/hashfn.h"
#include "libpq/pqformat.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "local_time.h"
#include "numeric_scaled.h"
#include "tariff.h"
#include "tariff_glue.h"

#define DatumGetTariffP(d) ((Tariff *) DatumGetPointer(d))

/* Raise a TariffError with its SQLSTATE. */
void
tariff_raise(const TariffError *err)
{
	int			code;

	switch (err->kind)
	{
		case TARIFF_ERR_SYNTAX:
			code = ERRCODE_INVALID_TEXT_REPRESENTATION;
			break;
		case TARIFF_ERR_OVERFLOW:
			code = ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE;
			break;
		default:
			code = ERRCODE_INVALID_PARAMETER_VALUE;
			break;
	}
	ereport(ERROR, (errcode(code), errmsg("%s", err->msg)));
}

/* Parse JSON text into a tariff varlena, or raise. */
static Tariff *
tariff_from_text(const char *text, size_t len)
{
	TariffError err;
	Tariff	   *t = tariff_parse(text, len, &err);

	if (t == NULL)
		tariff_raise(&err);
	SET_VARSIZE(t, t->vl_len_);
	return t;
}

PG_FUNCTION_INFO_V1(tariff_in);
/* Text input: a JSON object. */
Datum
tariff_in(PG_FUNCTION_ARGS)
{
	char	   *str = PG_GETARG_CSTRING(0);

	PG_RETURN_POINTER(tariff_from_text(str, strlen(str)));
}

/* A detoasted tariff of the current binary version. */
Tariff *
tariff_check_version(Tariff *t)
{
	if (t->version != TARIFF_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("unsupported tariff format version %d", t->version)));
	return t;
}

PG_FUNCTION_INFO_V1(tariff_out);
/* Text output: canonical JSON. */
Datum
tariff_out(PG_FUNCTION_ARGS)
{
	Tariff	   *t = tariff_check_version((Tariff *) PG_DETOAST_DATUM(PG_GETARG_DATUM(0)));

	PG_RETURN_CSTRING(tariff_format(t));
}

#define TARIFF_SEND_VERSION 1

PG_FUNCTION_INFO_V1(tariff_recv);
/* Binary input: a version byte and the JSON text (as jsonb does); validated again. */
Datum
tariff_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int			version = pq_getmsgint(buf, 1);
	char	   *str;
	int			nbytes;

	if (version != TARIFF_SEND_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("unsupported tariff binary format version %d", version)));
	str = pq_getmsgtext(buf, buf->len - buf->cursor, &nbytes);
	PG_RETURN_POINTER(tariff_from_text(str, nbytes));
}

PG_FUNCTION_INFO_V1(tariff_send);
/* Binary output: a version byte and the canonical JSON text. */
Datum
tariff_send(PG_FUNCTION_ARGS)
{
	Tariff	   *t = tariff_check_version((Tariff *) PG_DETOAST_DATUM(PG_GETARG_DATUM(0)));
	char	   *json = tariff_format(t);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendint8(&buf, TARIFF_SEND_VERSION);
	pq_sendtext(&buf, json, strlen(json));
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* Equal tariffs are equal bytes: the binary form is canonical. */
static bool
tariff_equal(FunctionCallInfo fcinfo)
{
	Tariff	   *a = (Tariff *) PG_DETOAST_DATUM(PG_GETARG_DATUM(0));
	Tariff	   *b = (Tariff *) PG_DETOAST_DATUM(PG_GETARG_DATUM(1));

	return VARSIZE(a) == VARSIZE(b) &&
		memcmp(VARDATA(a), VARDATA(b), VARSIZE(a) - VARHDRSZ) == 0;
}

PG_FUNCTION_INFO_V1(tariff_eq);
Datum
tariff_eq(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(tariff_equal(fcinfo));
}

PG_FUNCTION_INFO_V1(tariff_ne);
Datum
tariff_ne(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(!tariff_equal(fcinfo));
}

PG_FUNCTION_INFO_V1(tariff_hash);
/* Hash of the canonical bytes, for hash joins, GROUP BY and DISTINCT. */
Datum
tariff_hash(PG_FUNCTION_ARGS)
{
	Tariff	   *t = (Tariff *) PG_DETOAST_DATUM(PG_GETARG_DATUM(0));

	PG_RETURN_DATUM(hash_any((unsigned char *) VARDATA(t), VARSIZE(t) - VARHDRSZ));
}

/* Per call site cache (fn_extra). */
typedef struct RateCache
{
	Size		rawlen;			/* the argument's bytes as passed (toasted form) */
	char	   *raw;
	Tariff	   *tariff;			/* its detoasted form */
	char		tzname[TZ_STRLEN_MAX + 1];
	pg_tz	   *tz;
} RateCache;

static RateCache *
rate_cache(FunctionCallInfo fcinfo)
{
	if (fcinfo->flinfo->fn_extra == NULL)
		fcinfo->flinfo->fn_extra = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt,
														  sizeof(RateCache));
	return (RateCache *) fcinfo->flinfo->fn_extra;
}

/*
 * The tariff argument, ready to evaluate.  A plain in-line value is used in
 * place; a compressed or out-of-line one is detoasted once per call site and
 * reused while the same value keeps coming (the usual case: one tariff for
 * many rows).
 */
const Tariff *
tariff_arg(FunctionCallInfo fcinfo, int argno)
{
	Datum		d = PG_GETARG_DATUM(argno);
	struct varlena *p = (struct varlena *) DatumGetPointer(d);
	RateCache  *cache;
	Size		len;

	if (!VARATT_IS_EXTENDED(p))
		return tariff_check_version((Tariff *) p);

	cache = rate_cache(fcinfo);
	len = VARSIZE_ANY(p);
	if (cache->raw == NULL || cache->rawlen != len || memcmp(cache->raw, p, len) != 0)
	{
		MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		if (cache->raw)
			pfree(cache->raw);
		if (cache->tariff)
			pfree(cache->tariff);
		cache->raw = NULL;
		cache->tariff = tariff_check_version((Tariff *) PG_DETOAST_DATUM_COPY(d));
		cache->raw = palloc(len);
		memcpy(cache->raw, p, len);
		cache->rawlen = len;
		MemoryContextSwitchTo(old);
	}
	return cache->tariff;
}

/* Local weekday and second of day of ts in the named IANA zone (cached). */
TariffWhen
local_when(FunctionCallInfo fcinfo, TimestampTz ts, text *tzname)
{
	RateCache  *cache = rate_cache(fcinfo);
	char		name[TZ_STRLEN_MAX + 1];
	struct pg_tm *tm;
	TariffWhen	when;

	if (TIMESTAMP_NOT_FINITE(ts))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("event time must be finite")));
	text_to_cstring_buffer(tzname, name, sizeof(name));
	if (cache->tz == NULL || strcmp(cache->tzname, name) != 0)
	{
		cache->tz = zone_lookup(name);
		strlcpy(cache->tzname, name, sizeof(cache->tzname));
	}
	tm = local_tm(ts, cache->tz);
	when.dow = tm->tm_wday;
	when.sec_of_day = tm->tm_hour * 3600 + tm->tm_min * 60 + tm->tm_sec;
	return when;
}

/*
 * Evaluate and return the charge as numeric with the tariff's decimals;
 * `billed` says the quantity already has its increments applied.  With
 * null_on_overflow, an evaluation beyond the supported range returns NULL
 * instead of raising, so bulk rating can reject that one event.
 */
static Datum
rate_common(FunctionCallInfo fcinfo, const Tariff *t, Numeric qty, TariffWhen when,
			cb_int128 used_before, bool billed, bool null_on_overflow)
{
	TariffError err;
	cb_int128	charge;
	cb_int128	q = numeric_to_scaled(qty, QTY_DECIMALS, billed ? "billed quantity" : "quantity");
	bool		ok = billed ? tariff_rate_billed(t, q, when, used_before, &charge, &err)
		: tariff_rate(t, q, when, used_before, &charge, &err);

	if (!ok)
	{
		if (null_on_overflow && err.kind == TARIFF_ERR_OVERFLOW)
		{
			fcinfo->isnull = true;
			return (Datum) 0;
		}
		tariff_raise(&err);
	}
	return NumericGetDatum(scaled_to_numeric(charge, t->round_decimals));
}

PG_FUNCTION_INFO_V1(tariff_rate_simple);
/* rate(tariff, quantity): one event, top-level pricing. */
Datum
tariff_rate_simple(PG_FUNCTION_ARGS)
{
	const Tariff *t = tariff_arg(fcinfo, 0);

	return rate_common(fcinfo, t, PG_GETARG_NUMERIC(1), TARIFF_NO_TIME, 0, false, false);
}

/* rate(...) and rate_billed(...) with time bands and cycle scope. */
static Datum
rate_at_common(FunctionCallInfo fcinfo, bool billed, bool null_on_overflow)
{
	const Tariff *t = tariff_arg(fcinfo, 0);
	TariffWhen	when = TARIFF_NO_TIME;
	cb_int128	used = numeric_to_scaled(PG_GETARG_NUMERIC(4), QTY_DECIMALS, "used_before");

	if (used < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("used_before must not be negative")));
	/* the zone is validated even when the tariff has no bands */
	when = local_when(fcinfo, PG_GETARG_TIMESTAMPTZ(2), PG_GETARG_TEXT_PP(3));
	return rate_common(fcinfo, t, PG_GETARG_NUMERIC(1), when, used, billed, null_on_overflow);
}

PG_FUNCTION_INFO_V1(tariff_rate_at);
/* rate(tariff, quantity, at, tz, used_before): time bands and cycle scope. */
Datum
tariff_rate_at(PG_FUNCTION_ARGS)
{
	return rate_at_common(fcinfo, false, false);
}

PG_FUNCTION_INFO_V1(tariff_rate_billed_at);
/* rate_billed(tariff, billed_quantity, at, tz, used_before): no increments applied. */
Datum
tariff_rate_billed_at(PG_FUNCTION_ARGS)
{
	return rate_at_common(fcinfo, true, false);
}

PG_FUNCTION_INFO_V1(tariff_rate_billed_or_null);
/* rate_billed_or_null(...): rate_billed(), NULL where the charge is out of range. */
Datum
tariff_rate_billed_or_null(PG_FUNCTION_ARGS)
{
	return rate_at_common(fcinfo, true, true);
}

PG_FUNCTION_INFO_V1(tariff_billed_quantity_sql);
/* billed_quantity(tariff, quantity): the quantity after increments. */
Datum
tariff_billed_quantity_sql(PG_FUNCTION_ARGS)
{
	const Tariff *t = tariff_arg(fcinfo, 0);
	cb_int128	q = numeric_to_scaled(PG_GETARG_NUMERIC(1), QTY_DECIMALS, "quantity");
	cb_int128	bq;
	TariffError err;

	if (!tariff_billed_quantity(t, q, &bq, &err))
		tariff_raise(&err);
	PG_RETURN_NUMERIC(scaled_to_numeric_trimmed(bq, QTY_DECIMALS));
}

PG_FUNCTION_INFO_V1(tariff_currency);
/* The tariff's currency code, or NULL when it sets none. */
Datum
tariff_currency(PG_FUNCTION_ARGS)
{
	const Tariff *t = tariff_arg(fcinfo, 0);

	if (t->currency[0] == '\0')
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(t->currency));
}

PG_FUNCTION_INFO_V1(tariff_unit);
/* The tariff's unit name, or NULL when it sets none. */
Datum
tariff_unit(PG_FUNCTION_ARGS)
{
	const Tariff *t = tariff_arg(fcinfo, 0);

	if (t->unit[0] == '\0')
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(t->unit));
}

PG_FUNCTION_INFO_V1(tariff_scope);
/* The tariff's scope: 'event' or 'cycle'. */
Datum
tariff_scope(PG_FUNCTION_ARGS)
{
	const Tariff *t = tariff_arg(fcinfo, 0);

	PG_RETURN_TEXT_P(cstring_to_text(t->scope == SCOPE_CYCLE ? "cycle" : "event"));
}
