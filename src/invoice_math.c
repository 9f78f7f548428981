/*
 * invoice_math.c — the arithmetic of the bill run: invoice line totals,
 * exact subtotals, local calendar days and proration.
 *
 * invoice_line_total(amount, currency) and invoice_sum(amount) are aggregates
 * whose state is one exact 128-bit fixed-point sum at 10^12 (PRICE_DECIMALS,
 * the most decimals a rated charge can carry), the currency of the group and
 * the largest display scale seen.  Adding a charge costs a decode of numeric's
 * digits (for up to 16 significant digits: straight from the stored bytes,
 * one int64 times a power of ten) and one checked 128-bit addition — no
 * numeric arithmetic, no allocation.  An amount with more than 12 decimals is refused (22023) rather
 * than rounded, a sum beyond +-1.7e26 raises 22003: nothing is ever lost.
 *
 * The line total is rounded once, at the end, to the currency's ISO 4217
 * minor unit, half away from zero: round(sum(amount), exponent) exactly, and
 * never a sum of rounded amounts (SPEC §0, "rounding happens in exactly two
 * places").
 *
 * Parallel aggregation: workers fold their share of the rows into their own
 * states (Partial Aggregate), serialize them into a 21-byte bytea, and the
 * leader deserializes and combines them (Finalize Aggregate).  Integer
 * addition is associative, so the parallel result is the serial one, bit for
 * bit.  The same serialization lets a hash aggregate spill to disk.
 *
 * local_days() counts local calendar days in the account's zone (the start
 * day counts, the end day does not) and prorate() scales an amount by
 * part/whole with one rounding, for the fees of partial periods (SPEC §5).
 */
#include "postgres.h"

#include "fmgr.h"
#include "libpq/pqformat.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "currency.h"
#include "decimal.h"
#include "local_time.h"
#include "numeric_scaled.h"

/* Amounts are summed at 10^SUM_DECIMALS. */
#define SUM_DECIMALS PRICE_DECIMALS

/*
 * The transition state of both aggregates, in the aggregate's memory context.
 * It exists once the group has a non-NULL amount: a NULL state is an empty
 * group, whose total is NULL.
 */
typedef struct InvoiceSum
{
	cb_i128		sum;			/* exact sum at 10^SUM_DECIMALS (8-byte aligned) */
	int16		dscale;			/* largest display scale of the amounts, <= SUM_DECIMALS */
	int16		exponent;		/* minor unit of currency; -1 for invoice_sum */
	char		currency[4];	/* ISO 4217 code, NUL-terminated; "" for invoice_sum */
} InvoiceSum;

/* Header bits of numeric's stable on-disk format (see numeric_scaled.c). */
#define NUMERIC_SIGN_MASK		0xC000
#define NUMERIC_SHORT			0x8000
#define NUMERIC_SHORT_SIGN_MASK 0x2000
#define NUMERIC_SHORT_DSCALE_MASK 0x1F80
#define NUMERIC_SHORT_DSCALE_SHIFT 7
#define NUMERIC_SHORT_WEIGHT_SIGN_MASK 0x0040
#define NUMERIC_SHORT_WEIGHT_MASK 0x003F
#define NUMERIC_DSCALE_MASK		0x3FFF

/* The display scale of a finite numeric (the digits after its point). */
static int
numeric_dscale(Numeric num)
{
	uint16		header;

	memcpy(&header, VARDATA(num), sizeof(uint16));
	if (header & NUMERIC_SHORT)
		return (header & NUMERIC_SHORT_DSCALE_MASK) >> NUMERIC_SHORT_DSCALE_SHIFT;
	return header & NUMERIC_DSCALE_MASK;
}

/*
 * The fast path of amount_arg(), straight from a numeric's bytes (as stored
 * in a table, or as computed) in numeric's short format: up to 4 base-10000
 * digits (16 significant decimal digits, every realistic charge) whose last
 * digit lies between 10^-12 and 10^6.  Then the value is one int64 times a power of
 * ten: no loop over 128-bit products, no palloc to detoast.  Anything else
 * (more digits, more decimals, NaN, the long format) returns false and goes
 * the general way, which also raises the errors.
 */
static inline bool
amount_fast(const char *data, int len, cb_int128 *out, int *dscale)
{
	static const int64 pow10[19] = {
		1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000,
		1000000000, 10000000000, 100000000000, 1000000000000, 10000000000000,
		100000000000000, 1000000000000000, 10000000000000000,
		100000000000000000, 1000000000000000000
	};
	uint16		header;
	int			ndigits = (len - (int) sizeof(uint16)) / (int) sizeof(int16);
	int			weight;
	int			e;
	int64		acc = 0;

	if (len < (int) sizeof(uint16))
		return false;
	memcpy(&header, data, sizeof(uint16));
	if ((header & NUMERIC_SIGN_MASK) != NUMERIC_SHORT || ndigits > 4)
		return false;			/* long format, NaN/Infinity, or many digits */
	weight = (header & NUMERIC_SHORT_WEIGHT_SIGN_MASK ? ~NUMERIC_SHORT_WEIGHT_MASK : 0) |
		(header & NUMERIC_SHORT_WEIGHT_MASK);
	e = 4 * (weight - ndigits + 1) + SUM_DECIMALS;	/* power of ten of the last digit */
	if (e < 0 || e > 18)
		return false;
	for (int i = 0; i < ndigits; i++)
	{
		int16		d;

		memcpy(&d, data + sizeof(uint16) + i * sizeof(int16), sizeof(int16));
		acc = acc * 10000 + d;
	}
	*out = (cb_int128) acc * pow10[e];	/* < 10^16 x 10^18: fits */
	if (header & NUMERIC_SHORT_SIGN_MASK)
		*out = -*out;
	*dscale = Min((header & NUMERIC_SHORT_DSCALE_MASK) >> NUMERIC_SHORT_DSCALE_SHIFT, SUM_DECIMALS);
	return true;
}

/*
 * The numeric argument as an exact amount at 10^SUM_DECIMALS, its display
 * scale (capped at SUM_DECIMALS) in *dscale; raises 22023 for NaN, Infinity
 * or more than 12 decimals and 22003 beyond the range.
 */
static cb_int128
amount_arg(FunctionCallInfo fcinfo, int argno, int *dscale)
{
	struct varlena *raw = (struct varlena *) DatumGetPointer(PG_GETARG_DATUM(argno));
	Numeric		num;
	cb_int128	v;

	if (VARATT_IS_SHORT(raw) && !VARATT_IS_EXTERNAL(raw))
	{
		/* as stored in a table */
		if (amount_fast(VARDATA_SHORT(raw), VARSIZE_SHORT(raw) - VARHDRSZ_SHORT, &v, dscale))
			return v;
	}
	else if (VARATT_IS_4B_U(raw))
	{
		/* computed, or a constant */
		if (amount_fast(VARDATA(raw), VARSIZE(raw) - VARHDRSZ, &v, dscale))
			return v;
	}
	num = PG_GETARG_NUMERIC(argno);
	v = numeric_to_scaled(num, SUM_DECIMALS, "amount");
	*dscale = Min(numeric_dscale(num), SUM_DECIMALS);
	return v;
}

/* n / d rounded half away from zero, for d > 0; never overflows. */
static cb_int128
div_half_up(cb_int128 n, cb_int128 d)
{
	cb_int128	q = n / d;
	cb_int128	r = n % d;		/* sign of n, |r| < d */
	cb_int128	ar = r < 0 ? -r : r;

	if (ar >= d - ar)
		q += (n < 0) ? -1 : 1;
	return q;
}

/* The minor unit of an ISO 4217 code; raises 22023 naming an unknown code. */
static int
currency_arg_exponent(text *code)
{
	int			e = currency_exponent(VARDATA_ANY(code), VARSIZE_ANY_EXHDR(code));

	if (e < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invoice line currency \"%s\" is not an ISO 4217 currency code",
						text_to_cstring(code)),
				 errhint("Use an active code such as \"EUR\", \"JPY\" or \"KWD\".")));
	return e;
}

/* Raises 22023 naming both currencies of a group, in alphabetical order. */
static void
mixed_currencies(const char *a, const char *b)
{
	if (strcmp(a, b) > 0)
	{
		const char *t = a;

		a = b;
		b = t;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("an invoice line cannot mix currencies \"%s\" and \"%s\"", a, b),
			 errhint("Group the charges by currency as well.")));
}

/*
 * A new, empty state in the aggregate's memory context (the transition
 * functions check their caller here, once per group, not on every row).
 */
static InvoiceSum *
new_state(FunctionCallInfo fcinfo, const char *fn)
{
	MemoryContext aggctx;
	InvoiceSum *s;

	if (!AggCheckCallContext(fcinfo, &aggctx))
		elog(ERROR, "%s called in non-aggregate context", fn);
	s = MemoryContextAllocZero(aggctx, sizeof(InvoiceSum));
	s->exponent = -1;
	return s;
}

/* state->sum += v, or 22003. */
static void
state_add(InvoiceSum *s, cb_int128 v, int dscale)
{
	cb_int128	sum;

	if (!dec_add(i128_load(s->sum), v, &sum))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("invoice sum is out of range"),
				 errdetail("An exact sum holds up to about 1.7e26.")));
	s->sum = i128_store(sum);
	if (dscale > s->dscale)
		s->dscale = dscale;
}

/*
 * The state argument `argno` of a support function (NULL: no amount yet);
 * refuses a caller that is not an aggregate.
 */
static InvoiceSum *
state_arg(FunctionCallInfo fcinfo, int argno, const char *fn)
{
	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "%s called in non-aggregate context", fn);
	return PG_ARGISNULL(argno) ? NULL : (InvoiceSum *) PG_GETARG_POINTER(argno);
}

PG_FUNCTION_INFO_V1(invoice_line_accum);
/* invoice_line_accum(state, amount, currency): add one charge to a line. */
Datum
invoice_line_accum(PG_FUNCTION_ARGS)
{
	InvoiceSum *s = PG_ARGISNULL(0) ? NULL : (InvoiceSum *) PG_GETARG_POINTER(0);
	text	   *code;
	cb_int128	v;
	int			dscale;

	if (PG_ARGISNULL(1))
	{
		if (s == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(s);
	}
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("invoice line currency must not be NULL")));
	code = PG_GETARG_TEXT_PP(2);
	v = amount_arg(fcinfo, 1, &dscale);
	if (s == NULL)
	{
		int			e = currency_arg_exponent(code);

		s = new_state(fcinfo, "invoice_line_accum");
		s->exponent = e;
		memcpy(s->currency, VARDATA_ANY(code), 3);
	}
	else if (VARSIZE_ANY_EXHDR(code) != 3 || memcmp(VARDATA_ANY(code), s->currency, 3) != 0)
	{
		currency_arg_exponent(code);
		mixed_currencies(s->currency, text_to_cstring(code));
	}
	state_add(s, v, dscale);
	PG_RETURN_POINTER(s);
}

PG_FUNCTION_INFO_V1(invoice_sum_accum);
/* invoice_sum_accum(state, amount): add one amount to an exact sum. */
Datum
invoice_sum_accum(PG_FUNCTION_ARGS)
{
	InvoiceSum *s = PG_ARGISNULL(0) ? NULL : (InvoiceSum *) PG_GETARG_POINTER(0);
	cb_int128	v;
	int			dscale;

	if (PG_ARGISNULL(1))
	{
		if (s == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(s);
	}
	v = amount_arg(fcinfo, 1, &dscale);
	if (s == NULL)
		s = new_state(fcinfo, "invoice_sum_accum");
	state_add(s, v, dscale);
	PG_RETURN_POINTER(s);
}

PG_FUNCTION_INFO_V1(invoice_sum_combine);
/* invoice_sum_combine(a, b): the state of both partial groups (parallel workers). */
Datum
invoice_sum_combine(PG_FUNCTION_ARGS)
{
	InvoiceSum *a = state_arg(fcinfo, 0, "invoice_sum_combine");
	InvoiceSum *b = PG_ARGISNULL(1) ? NULL : (InvoiceSum *) PG_GETARG_POINTER(1);

	if (b == NULL)
	{
		if (a == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(a);
	}
	if (a == NULL)
	{
		/* b may live in a shorter-lived context (a deserialized state): copy */
		a = new_state(fcinfo, "invoice_sum_combine");
		*a = *b;
		PG_RETURN_POINTER(a);
	}
	if (strcmp(a->currency, b->currency) != 0)
		mixed_currencies(a->currency, b->currency);
	state_add(a, i128_load(b->sum), b->dscale);
	PG_RETURN_POINTER(a);
}

PG_FUNCTION_INFO_V1(invoice_sum_serialize);
/* invoice_sum_serialize(state) -> bytea: sum (16 bytes), dscale, exponent, currency. */
Datum
invoice_sum_serialize(PG_FUNCTION_ARGS)
{
	InvoiceSum *s = state_arg(fcinfo, 0, "invoice_sum_serialize");
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendint64(&buf, s->sum.hi);
	pq_sendint64(&buf, (int64) s->sum.lo);
	pq_sendint8(&buf, (int8) s->dscale);
	pq_sendint8(&buf, (int8) s->exponent);
	pq_sendbytes(&buf, s->currency, 3);
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

PG_FUNCTION_INFO_V1(invoice_sum_deserialize);
/* invoice_sum_deserialize(bytea, internal) -> state, in the current memory context. */
Datum
invoice_sum_deserialize(PG_FUNCTION_ARGS)
{
	bytea	   *b;
	StringInfoData buf;
	InvoiceSum *s;

	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "invoice_sum_deserialize called in non-aggregate context");
	b = PG_GETARG_BYTEA_PP(0);
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b));
	s = palloc0(sizeof(InvoiceSum));
	s->sum.hi = pq_getmsgint64(&buf);
	s->sum.lo = (uint64) pq_getmsgint64(&buf);
	s->dscale = (int8) pq_getmsgbyte(&buf);
	s->exponent = (int8) pq_getmsgbyte(&buf);
	pq_copymsgbytes(&buf, s->currency, 3);
	pq_getmsgend(&buf);
	pfree(buf.data);
	PG_RETURN_POINTER(s);
}

PG_FUNCTION_INFO_V1(invoice_line_final);
/* invoice_line_final(state): the exact sum rounded half-up to the currency's minor unit. */
Datum
invoice_line_final(PG_FUNCTION_ARGS)
{
	InvoiceSum *s = state_arg(fcinfo, 0, "invoice_line_final");

	if (s == NULL)
		PG_RETURN_NULL();
	Assert(s->exponent >= 0 && s->exponent <= SUM_DECIMALS);
	PG_RETURN_NUMERIC(scaled_to_numeric(div_half_up(i128_load(s->sum),
													dec_pow10(SUM_DECIMALS - s->exponent)),
										s->exponent));
}

PG_FUNCTION_INFO_V1(invoice_sum_final);
/* invoice_sum_final(state): the exact sum, shown with the largest scale of its amounts. */
Datum
invoice_sum_final(PG_FUNCTION_ARGS)
{
	InvoiceSum *s = state_arg(fcinfo, 0, "invoice_sum_final");
	cb_int128	sum,
				unit;

	if (s == NULL)
		PG_RETURN_NULL();
	sum = i128_load(s->sum);
	/* every amount is a multiple of 10^-dscale, so the sum is too */
	unit = dec_pow10(SUM_DECIMALS - s->dscale);
	if (sum % unit != 0)
		elog(ERROR, "invoice sum has digits beyond its display scale %d", s->dscale);
	PG_RETURN_NUMERIC(scaled_to_numeric(sum / unit, s->dscale));
}

/*
 * The zone of a name, cached per call site in fn_extra (a bill run asks for
 * one account's zone many times in a row).  pg_tzset() keeps every zone it
 * loaded for the life of the backend, so the pointer stays valid.
 */
typedef struct ZoneCache
{
	char		name[TZ_STRLEN_MAX + 1];
	pg_tz	   *tz;
} ZoneCache;

static pg_tz *
zone_arg(FunctionCallInfo fcinfo, text *name)
{
	ZoneCache  *c = (ZoneCache *) fcinfo->flinfo->fn_extra;
	int			len = VARSIZE_ANY_EXHDR(name);

	if (len > TZ_STRLEN_MAX)
		return zone_lookup(text_to_cstring(name));	/* raises: no such zone */
	if (c == NULL)
	{
		c = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ZoneCache));
		fcinfo->flinfo->fn_extra = c;
	}
	if (c->tz == NULL || strncmp(c->name, VARDATA_ANY(name), len) != 0 || c->name[len] != '\0')
	{
		char		buf[TZ_STRLEN_MAX + 1];

		text_to_cstring_buffer(name, buf, sizeof(buf));
		c->tz = NULL;
		c->tz = zone_lookup(buf);
		memcpy(c->name, buf, len + 1);
	}
	return c->tz;
}

/* The Julian day number of ts's local calendar date in tz; `what` names ts. */
static int
local_julian_day(TimestampTz ts, pg_tz *tz, const char *what)
{
	struct pg_tm *tm;

	if (TIMESTAMP_NOT_FINITE(ts))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("%s must be a finite time", what)));
	tm = local_tm(ts, tz);
	return date2j(tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday);
}

PG_FUNCTION_INFO_V1(local_days);
/*
 * local_days(from_ts, to_ts, tz): local calendar days from the local date of
 * from_ts (counted) to the local date of to_ts (not counted) in IANA zone tz;
 * 0 when from_ts is after to_ts.  The same as
 * greatest(0, (to_ts AT TIME ZONE tz)::date - (from_ts AT TIME ZONE tz)::date),
 * so a DST day of 23 or 25 hours is one day, and a date a zone skipped
 * (Kiritimati on 1994-12-31, Apia on 2011-12-30) still counts as a calendar
 * day.  (The local date can step back where clocks go back across midnight:
 * never a negative count.)
 */
Datum
local_days(PG_FUNCTION_ARGS)
{
	TimestampTz from = PG_GETARG_TIMESTAMPTZ(0);
	TimestampTz to = PG_GETARG_TIMESTAMPTZ(1);
	pg_tz	   *tz = zone_arg(fcinfo, PG_GETARG_TEXT_PP(2));
	int			from_day = local_julian_day(from, tz, "from_ts");
	int			to_day = local_julian_day(to, tz, "to_ts");

	if (from > to || to_day < from_day)
		PG_RETURN_INT32(0);
	PG_RETURN_INT32(to_day - from_day);
}

PG_FUNCTION_INFO_V1(prorate);
/*
 * prorate(amount, part, whole, decimals): amount x part / whole, exact, then
 * rounded once half away from zero to `decimals` (0..12).  With the amount at
 * 10^12 the quotient is rounded in one integer division:
 *     round(amount12 x part / (whole x 10^(12 - decimals))).
 */
Datum
prorate(PG_FUNCTION_ARGS)
{
	int32		part = PG_GETARG_INT32(1);
	int32		whole = PG_GETARG_INT32(2);
	int32		decimals = PG_GETARG_INT32(3);
	cb_int128	amount,
				n;

	if (whole <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("prorate: whole must be positive, not %d", whole)));
	if (part < 0 || part > whole)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("prorate: part must be between 0 and whole (%d), not %d", whole, part)));
	if (decimals < 0 || decimals > MAX_ROUND_DECIMALS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("prorate: decimals must be between 0 and %d, not %d",
						MAX_ROUND_DECIMALS, decimals)));
	amount = numeric_to_scaled(PG_GETARG_NUMERIC(0), SUM_DECIMALS, "prorate: amount");
	if (!dec_mul(amount, part, &n))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("prorate: amount x part is out of range")));
	PG_RETURN_NUMERIC(scaled_to_numeric(div_half_up(n, (cb_int128) whole *
													dec_pow10(SUM_DECIMALS - decimals)),
										decimals));
}
