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

/* Parse a decimal literal into an integer scaled by 10^scale, exactly. */
DecParseResult
dec_parse(const char *s, size_t len, int scale, cb_int128 *out)
{
	size_t		i = 0;
	bool		neg = false;
	bool		any_digit = false;
	cb_int128	mant = 0;		/* all significant digits read so far */
	int			frac_digits = 0;	/* digits after the point in mant */
	long		exp10 = 0;
	bool		overflow = false;
	int			dropped_nonzero = 0;	/* digits that did not fit in mant */
	long		dropped_int = 0;	/* integer digits that did not fit */

	if (len == 0)
		return DEC_SYNTAX;
	if (s[i] == '-' || s[i] == '+')
	{
		neg = (s[i] == '-');
		i++;
	}
	/* integer part */
	while (i < len && s[i] >= '0' && s[i] <= '9')
	{
		any_digit = true;
		if (!overflow && (mant > (cb_int128) 0x7fffffffffffffffLL * 0x7fffffffLL))
			overflow = true;
		if (!overflow)
			mant = mant * 10 + (s[i] - '0');
		else
			dropped_int++;
		i++;
	}
	if (i < len && s[i] == '.')
	{
		i++;
		if (i >= len || s[i] < '0' || s[i] > '9')
			return DEC_SYNTAX;
		while (i < len && s[i] >= '0' && s[i] <= '9')
		{
			any_digit = true;
			if (!overflow && mant <= (cb_int128) 0x7fffffffffffffffLL * 0x7fffffffLL && frac_digits < 60)
			{
				mant = mant * 10 + (s[i] - '0');
				frac_digits++;
			}
			else if (s[i] != '0')
				dropped_nonzero++;
			i++;
		}
	}
	if (!any_digit)
		return DEC_SYNTAX;
	if (i < len && (s[i] == 'e' || s[i] == 'E'))
	{
		bool		eneg = false;
		bool		edigit = false;

		i++;
		if (i < len && (s[i] == '-' || s[i] == '+'))
		{
			eneg = (s[i] == '-');
			i++;
		}
		while (i < len && s[i] >= '0' && s[i] <= '9')
		{
			edigit = true;
			if (exp10 < 100000)
				exp10 = exp10 * 10 + (s[i] - '0');
			i++;
		}
		if (!edigit)
			return DEC_SYNTAX;
		if (eneg)
			exp10 = -exp10;
	}
	if (i != len)
		return DEC_SYNTAX;
	if (dropped_int > 0)
		return DEC_OVERFLOW;
	if (dropped_nonzero > 0)
		return DEC_TOO_PRECISE;

	/* value = mant * 10^(exp10 - frac_digits); we want value * 10^scale */
	{
		long		shift = exp10 - frac_digits + scale;
		cb_int128	v = mant;

		if (mant == 0)
		{
			*out = 0;
			return DEC_OK;
		}
		if (shift > 0)
		{
			if (shift > 38 || !dec_mul(v, dec_pow10((int) shift), &v))
				return DEC_OVERFLOW;
		}
		else if (shift < 0)
		{
			cb_int128	p;

			if (-shift > 38)
				return DEC_TOO_PRECISE;
			p = dec_pow10((int) -shift);
			if (v % p != 0)
				return DEC_TOO_PRECISE;
			v /= p;
		}
		*out = neg ? -v : v;
	}
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
