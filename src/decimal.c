/*
 * decimal.c — exact fixed-point decimal parsing, formatting and rounding on
 * 128-bit integers.  Pure C; see decimal.h for the scales convbill uses.
 */
#include "decimal.h"

#include <string.h>

/* 10^n for 0 <= n <= 38 (the largest power of ten an int128 holds). */
cb_int128
dec_pow10(int n)
{
	static cb_int128 table[39];
	static bool done = false;

	if (!done)
	{
		cb_int128	p = 1;

		for (int i = 0; i <= 38; i++)
		{
			table[i] = p;
			if (i < 38)
				p *= 10;
		}
		done = true;
	}
	if (n < 0 || n > 38)
		return 0;
	return table[n];
}

/* Extend [*first, *last] to the non-zero digits of s[from, to). */
static void
find_nonzero(const char *s, size_t from, size_t to, size_t *first, size_t *last, bool *any)
{
	for (size_t k = from; k < to; k++)
		if (s[k] != '0')
		{
			if (!*any)
				*first = k;
			*last = k;
			*any = true;
		}
}

/*
 * Parse a decimal literal into an integer scaled by 10^scale, exactly.
 *
 * The literal is read as a digit string D (leading zeros skipped, trailing zeros
 * folded into the exponent) and a power of ten E, value = D x 10^E.  Because D
 * then ends in a non-zero digit, the value is representable at this scale iff
 * E + scale >= 0; it fits iff D x 10^(E + scale) fits in 128 bits.  So the
 * answer never depends on how the number was written ("1e3", "1000.000",
 * "0.1e4" are the same) and no digit is lost.
 */
DecParseResult
dec_parse(const char *s, size_t len, int scale, cb_int128 *out)
{
	size_t		i = 0;
	bool		neg = false;
	size_t		int_start,
				int_end,
				frac_start = 0,
				frac_end = 0;
	long		exp10 = 0;
	long		sig_exp;		/* power of ten of the last significant digit */
	cb_int128	v = 0;
	int			ndigits = 0;
	size_t		first = 0,
				last = 0;		/* positions of first/last non-zero digit */
	bool		any_nonzero = false;

	if (len == 0)
		return DEC_SYNTAX;
	if (s[i] == '-' || s[i] == '+')
	{
		neg = (s[i] == '-');
		i++;
	}
	int_start = i;
	while (i < len && s[i] >= '0' && s[i] <= '9')
		i++;
	int_end = i;
	if (i < len && s[i] == '.')
	{
		i++;
		frac_start = i;
		while (i < len && s[i] >= '0' && s[i] <= '9')
			i++;
		frac_end = i;
		if (frac_end == frac_start)
			return DEC_SYNTAX;
	}
	if (int_end == int_start && frac_end == frac_start)
		return DEC_SYNTAX;
	if (i < len && (s[i] == 'e' || s[i] == 'E'))
	{
		bool		eneg = false;
		size_t		estart;

		i++;
		if (i < len && (s[i] == '-' || s[i] == '+'))
		{
			eneg = (s[i] == '-');
			i++;
		}
		estart = i;
		while (i < len && s[i] >= '0' && s[i] <= '9')
		{
			if (exp10 < 1000000)
				exp10 = exp10 * 10 + (s[i] - '0');
			i++;
		}
		if (i == estart)
			return DEC_SYNTAX;
		if (eneg)
			exp10 = -exp10;
	}
	if (i != len)
		return DEC_SYNTAX;

	/* find the first and last non-zero digits, in the integer then the fraction part */
	find_nonzero(s, int_start, int_end, &first, &last, &any_nonzero);
	find_nonzero(s, frac_start, frac_end, &first, &last, &any_nonzero);
	if (!any_nonzero)
	{
		*out = 0;
		return DEC_OK;
	}
	/* power of ten of the last significant digit, before the exponent */
	if (last < int_end)
		sig_exp = (long) (int_end - 1 - last);
	else
		sig_exp = -(long) (last - frac_start + 1);
	sig_exp += exp10;
	/* a digit below 10^-scale: not representable however long D is */
	if (sig_exp + scale < 0)
		return DEC_TOO_PRECISE;

	/* D: the digits from first to last (skipping the point) */
	for (size_t k = first; k <= last; k++)
	{
		if (s[k] == '.')
			continue;
		if (++ndigits > 39 || !dec_mul(v, 10, &v) || !dec_add(v, s[k] - '0', &v))
			return DEC_OVERFLOW;
	}
	if (sig_exp + scale > 38 || !dec_mul(v, dec_pow10((int) (sig_exp + scale)), &v))
		return DEC_OVERFLOW;
	*out = neg ? -v : v;
	return DEC_OK;
}

/* Format v scaled by 10^scale as a plain decimal without trailing zeros. */
int
dec_format(cb_int128 v, int scale, char *buf)
{
	char		digits[48];
	int			nd = 0;
	unsigned __int128 u;
	bool		neg = v < 0;
	int			pos = 0;
	int			intdigits;

	u = neg ? (unsigned __int128) (-(v + 1)) + 1 : (unsigned __int128) v;
	do
	{
		digits[nd++] = (char) ('0' + (int) (u % 10));
		u /= 10;
	} while (u != 0);
	/* digits[] holds least significant first; pad to more than scale digits */
	while (nd <= scale)
		digits[nd++] = '0';
	/* drop trailing fractional zeros */
	{
		int			drop = 0;

		while (drop < scale && digits[drop] == '0')
			drop++;
		if (neg)
			buf[pos++] = '-';
		intdigits = nd - scale;
		for (int k = nd - 1; k >= nd - intdigits; k--)
			buf[pos++] = digits[k];
		if (drop < scale)
		{
			buf[pos++] = '.';
			for (int k = scale - 1; k >= drop; k--)
				buf[pos++] = digits[k];
		}
	}
	buf[pos] = '\0';
	return pos;
}

/* Round v from from_scale decimals to to_scale decimals with mode. */
cb_int128
dec_round(cb_int128 v, int from_scale, int to_scale, RoundMode mode)
{
	cb_int128	div,
				q,
				r;
	bool		neg = v < 0;
	bool		bump = false;

	if (to_scale >= from_scale)
		return v * dec_pow10(to_scale - from_scale);
	div = dec_pow10(from_scale - to_scale);
	if (neg)
		v = -v;
	q = v / div;
	r = v % div;
	switch (mode)
	{
		case ROUND_HALF_UP:
			bump = (r >= div - r);
			break;
		case ROUND_HALF_EVEN:
			bump = (r > div - r) || (r == div - r && (q & 1));
			break;
		case ROUND_UP:
			bump = (r != 0);
			break;
		case ROUND_DOWN:
			bump = false;
			break;
	}
	if (bump)
		q++;
	return neg ? -q : q;
}
