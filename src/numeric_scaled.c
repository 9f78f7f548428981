/*
 * numeric_scaled.c — exact conversion between PostgreSQL numeric and convbill's
 * scaled 128-bit integers, on the hot path of every rating call.
 *
 * Reading: numeric's on-disk format is a stable, documented part of PostgreSQL
 * (pg_upgrade relies on it): a 16-bit header holding sign, weight and display
 * scale (short form) or sign and scale followed by a 16-bit weight (long form),
 * then base-10000 digits.  Decoding it directly costs a few integer operations,
 * where going through numeric_out and a text parser would cost an allocation and
 * a string per row.  Writing: int64_div_fast_to_numeric() when the value fits in
 * 64 bits (always, for realistic charges), else numeric_in on the exact text.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

#include "numeric_scaled.h"

#define NUMERIC_SIGN_MASK		0xC000
#define NUMERIC_NEG				0x4000
#define NUMERIC_SHORT			0x8000
#define NUMERIC_SPECIAL			0xC000
#define NUMERIC_SHORT_SIGN_MASK 0x2000
#define NUMERIC_SHORT_WEIGHT_SIGN_MASK 0x0040
#define NUMERIC_SHORT_WEIGHT_MASK 0x003F

/* num x 10^scale, exactly, or an error naming `what`. */
cb_int128
numeric_to_scaled(Numeric num, int scale, const char *what)
{
	const char *data = VARDATA(num);
	uint16		header;
	bool		neg;
	int			weight;
	const int16 *digits;
	int			ndigits;
	cb_int128	acc = 0;

	memcpy(&header, data, sizeof(uint16));
	if ((header & NUMERIC_SIGN_MASK) == NUMERIC_SPECIAL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a finite number", what)));
	if (header & NUMERIC_SHORT)
	{
		neg = (header & NUMERIC_SHORT_SIGN_MASK) != 0;
		weight = (header & NUMERIC_SHORT_WEIGHT_SIGN_MASK ? ~NUMERIC_SHORT_WEIGHT_MASK : 0) |
			(header & NUMERIC_SHORT_WEIGHT_MASK);
		digits = (const int16 *) (data + sizeof(uint16));
		ndigits = (VARSIZE(num) - VARHDRSZ - sizeof(uint16)) / sizeof(int16);
	}
	else
	{
		int16		w;

		neg = (header & NUMERIC_SIGN_MASK) == NUMERIC_NEG;
		memcpy(&w, data + sizeof(uint16), sizeof(int16));
		weight = w;
		digits = (const int16 *) (data + 2 * sizeof(uint16));
		ndigits = (VARSIZE(num) - VARHDRSZ - 2 * sizeof(uint16)) / sizeof(int16);
	}

	/* value = sum of digits[i] x 10000^(weight - i) */
	for (int i = 0; i < ndigits; i++)
	{
		int			e = 4 * (weight - i) + scale;	/* power of ten of this digit */
		cb_int128	d = digits[i];

		if (d == 0)
			continue;
		if (e >= 0)
		{
			if (e > 38 || !dec_mul(d, dec_pow10(e), &d) || !dec_add(acc, d, &acc))
				ereport(ERROR,
						(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
						 errmsg("%s is out of range", what)));
		}
		else
		{
			cb_int128	p = (e >= -4) ? dec_pow10(-e) : 0;

			if (p == 0 || d % p != 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s has more than %d decimal places", what, scale)));
			if (!dec_add(acc, d / p, &acc))
				ereport(ERROR,
						(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
						 errmsg("%s is out of range", what)));
		}
	}
	return neg ? -acc : acc;
}

/* v / 10^scale as a numeric with display scale `scale`. */
Numeric
scaled_to_numeric(cb_int128 v, int scale)
{
	char		buf[DEC_BUFLEN + 48];
	int			len;
	char	   *dot;
	int			have;

	if (v >= PG_INT64_MIN && v <= PG_INT64_MAX)
		return int64_div_fast_to_numeric((int64) v, scale);

	/* rare: beyond 64 bits; write the exact text with `scale` decimals */
	len = dec_format(v, scale, buf);
	dot = strchr(buf, '.');
	have = dot ? (int) (buf + len - dot - 1) : 0;
	if (scale > 0 && !dot)
		buf[len++] = '.';
	while (have < scale)
	{
		buf[len++] = '0';
		have++;
	}
	buf[len] = '\0';
	return DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(buf),
											   ObjectIdGetDatum(InvalidOid),
											   Int32GetDatum(-1)));
}

/* The fewest decimals that show v / 10^scale exactly (its trailing zeros dropped). */
int
scaled_trimmed_scale(cb_int128 v, int scale)
{
	/*
	 * In 64 bits when it fits (always, for realistic quantities): a 128-bit
	 * division is a library call, and rating trims every event's quantities.
	 */
	if (v >= PG_INT64_MIN && v <= PG_INT64_MAX)
	{
		int64		w = (int64) v;

		while (scale > 0 && w % 10 == 0)
		{
			w /= 10;
			scale--;
		}
		return scale;
	}
	while (scale > 0 && v % 10 == 0)
	{
		v /= 10;
		scale--;
	}
	return scale;
}

/* v / 10^scale as a numeric without trailing zeros (30, not 30.000000000). */
Numeric
scaled_to_numeric_trimmed(cb_int128 v, int scale)
{
	int			trimmed = scaled_trimmed_scale(v, scale);

	if (trimmed == scale)
		return scaled_to_numeric(v, scale);
	if (v >= PG_INT64_MIN && v <= PG_INT64_MAX)
		return scaled_to_numeric((int64) v / (int64) dec_pow10(scale - trimmed), trimmed);
	return scaled_to_numeric(v / dec_pow10(scale - trimmed), trimmed);
}

/* A non-negative quantity argument at 10^9, or an error naming `what`. */
cb_int128
quantity_arg(FunctionCallInfo fcinfo, int argno, const char *what)
{
	cb_int128	v;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", what)));
	v = numeric_to_scaled(PG_GETARG_NUMERIC(argno), QTY_DECIMALS, what);
	if (v < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be negative", what)));
	return v;
}
