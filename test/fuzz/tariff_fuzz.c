/*
 * tariff_fuzz.c — libFuzzer harness for the pure-C tariff engine.
 *
 * Input: arbitrary bytes handed to tariff_parse() as JSON text.
 *
 *   parse fails  -> the error has a kind and a non-empty message.
 *   parse works  -> the binary is structurally valid (every rule of SPEC §1 holds
 *                   on the stored fields); its canonical text parses back to the
 *                   same bytes and formats to the same text; and the evaluator is
 *                   checked on quantities derived from the input (0, fractional,
 *                   tier/package/increment boundaries, near overflow), at several
 *                   local times and used_before values, against
 *                     - an independent reference evaluator written from SPEC §1
 *                       (same value, same success or failure),
 *                     - bq >= q, bq(bq(q)) = bq(q), rate(q) = rate(bq(q)),
 *                       rate(0) = 0,
 *                     - event scope: charge >= 0, within the rounded [minimum,
 *                       maximum] of the pricing in force, independent of
 *                       used_before, non-decreasing in q for every model but volume,
 *                     - cycle scope: charges chained through used_before sum to
 *                       P(total) + n x setup_fee, in either order.
 *   Failures of evaluation must be reported errors (kind set, message set), never a
 *   crash; ASan/UBSan catch the rest.  A violated invariant prints what was
 *   evaluated and aborts, so libFuzzer saves the input.
 */
#include "decimal.h"
#include "json_lite.h"
#include "tariff.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define I128_MAX ((cb_int128) (((unsigned __int128) 1 << 127) - 1))
#define E9 ((cb_int128) 1000000000)

/* ---- reporting ------------------------------------------------------------ */

static const char *cur_text;	/* canonical text of the tariff under test */

static const char *
i128s(cb_int128 v, char *buf)
{
	dec_format(v, 0, buf);
	return buf;
}

#define CHECK(cond, ...) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "\nINVARIANT VIOLATED: %s\n  ", #cond); \
			fprintf(stderr, __VA_ARGS__); \
			fprintf(stderr, "\n  tariff: %s\n", cur_text ? cur_text : "(none)"); \
			abort(); \
		} \
	} while (0)

static void
check_error(const TariffError *err, const char *where)
{
	CHECK(err->kind != TARIFF_OK, "%s failed without an error kind", where);
	CHECK(err->kind == TARIFF_ERR_SYNTAX || err->kind == TARIFF_ERR_INVALID ||
		  err->kind == TARIFF_ERR_OVERFLOW, "%s: unknown error kind %d", where, (int) err->kind);
	CHECK(err->msg[0] != '\0', "%s failed with an empty message", where);
	CHECK(memchr(err->msg, '\0', sizeof(err->msg)) != NULL, "%s: message not terminated", where);
}

/* Is s[0..n) well-formed UTF-8 (RFC 3629)? */
static bool
utf8_valid(const unsigned char *s, size_t n)
{
	size_t		i = 0;

	while (i < n)
	{
		unsigned char c = s[i];
		int			len;
		unsigned	cp;

		if (c < 0x80)
		{
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			len = 2, cp = c & 0x1F;
		else if (c >= 0xE0 && c <= 0xEF)
			len = 3, cp = c & 0x0F;
		else if (c >= 0xF0 && c <= 0xF4)
			len = 4, cp = c & 0x07;
		else
			return false;
		if (n - i < (size_t) len)
			return false;
		for (int k = 1; k < len; k++)
		{
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
			(len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
			return false;
		i += (size_t) len;
	}
	return true;
}

/*
 * A rejected tariff: 22P02 or 22023 only (never "overflow"), a message that names
 * the field (or says the JSON is invalid), and -- when the input is valid UTF-8,
 * as it always is in a UTF8 database -- a message that is valid UTF-8 too.
 */
static void
check_parse_error(const TariffError *err, const uint8_t *data, size_t size)
{
	check_error(err, "tariff_parse");
	CHECK(err->kind == TARIFF_ERR_SYNTAX || err->kind == TARIFF_ERR_INVALID,
		  "tariff_parse failed with kind %d: %s", (int) err->kind, err->msg);
	CHECK(strstr(err->msg, "tariff field") != NULL || strncmp(err->msg, "invalid JSON in tariff", 22) == 0,
		  "parse error names no field: %s", err->msg);
	if (utf8_valid(data, size))
		CHECK(utf8_valid((const unsigned char *) err->msg, strlen(err->msg)),
			  "parse error message is not valid UTF-8 for valid UTF-8 input: %s", err->msg);
}

/* ---- dec_parse against an exact reference ------------------------------------ */

/*
 * The exact meaning of a decimal literal at 10^scale, from its digits: OK with
 * the value, SYNTAX, or not representable -- too precise (digits below 10^-scale)
 * and/or too big (|value| > INT128_MAX).  dec_parse must give the same value, or
 * one of the errors that applies.
 */
static void
check_dec_parse(const char *s, size_t len, int scale)
{
	static const char maxdig[] = "170141183460469231731687303715884105727";
	char		sig[4200];		/* significant digits, no leading zeros */
	size_t		nsig = 0,
				i = 0;
	long		nfrac = 0,
				exp10 = 0,
				e;
	bool		neg = false,
				any = false,
				syntax = false,
				too_precise = false,
				too_big = false;
	cb_int128	v = 0,
				got = 0;
	DecParseResult r;
	char		b1[48],
				b2[48];

	if (len == 0 || len >= sizeof(sig))
		return;
	if (s[i] == '-' || s[i] == '+')
		neg = (s[i++] == '-');
	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
	{
		any = true;
		if (nsig > 0 || s[i] != '0')
			sig[nsig++] = s[i];
	}
	if (i < len && s[i] == '.')
	{
		i++;
		if (i >= len || s[i] < '0' || s[i] > '9')
			syntax = true;
		for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
		{
			any = true;
			nfrac++;
			if (nsig > 0 || s[i] != '0')
				sig[nsig++] = s[i];
		}
	}
	if (!any)
		syntax = true;
	if (!syntax && i < len && (s[i] == 'e' || s[i] == 'E'))
	{
		bool		eneg = false,
					edig = false;

		i++;
		if (i < len && (s[i] == '-' || s[i] == '+'))
			eneg = (s[i++] == '-');
		for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
		{
			edig = true;
			if (exp10 < 10000000)
				exp10 = exp10 * 10 + (s[i] - '0');
		}
		if (!edig)
			syntax = true;
		if (eneg)
			exp10 = -exp10;
	}
	if (i != len)
		syntax = true;
	r = dec_parse(s, len, scale, &got);
	if (syntax)
	{
		CHECK(r == DEC_SYNTAX, "dec_parse(\"%.*s\", %d) = %d, expected a syntax error",
			  (int) len, s, scale, (int) r);
		return;
	}
	/* value = sig x 10^e at the scale; drop trailing zeros of sig into e */
	e = exp10 - nfrac + scale;
	while (nsig > 0 && sig[nsig - 1] == '0')
	{
		nsig--;
		e++;
	}
	if (nsig > 0)
	{
		long		intdigits = (long) nsig + e;	/* digits of the integer part */

		too_precise = e < 0;
		if (intdigits > 39)
			too_big = true;
		else if (intdigits == 39)
		{
			/* compare the integer part with INT128_MAX digit by digit */
			for (long k = 0; k < 39; k++)
			{
				char		d = k < (long) nsig ? sig[k] : '0';

				if (d != maxdig[k])
				{
					too_big = d > maxdig[k];
					break;
				}
			}
		}
		if (!too_precise && !too_big)
		{
			for (size_t k = 0; k < nsig; k++)
				v = v * 10 + (sig[k] - '0');
			for (long k = 0; k < e; k++)
				v *= 10;
			if (neg)
				v = -v;
		}
	}
	if (!too_precise && !too_big)
	{
		CHECK(r == DEC_OK && got == v, "dec_parse(\"%.*s\", %d) = %d (%s), expected %s",
			  (int) len, s, scale, (int) r, i128s(got, b1), i128s(v, b2));
		return;
	}
	CHECK((r == DEC_TOO_PRECISE && too_precise) || (r == DEC_OVERFLOW && too_big),
		  "dec_parse(\"%.*s\", %d) = %d, expected %s%s%s", (int) len, s, scale, (int) r,
		  too_precise ? "too precise" : "", too_precise && too_big ? " or " : "",
		  too_big ? "overflow" : "");
}

/* Every run of number-like bytes of the input, at the scales tariffs use. */
static void
check_numbers(const uint8_t *data, size_t size)
{
	static const int scales[] = {0, QTY_DECIMALS, PRICE_DECIMALS - 2, PRICE_DECIMALS};
	int			runs = 0;

	for (size_t i = 0; i < size && runs < 24;)
	{
		size_t		j = i;

		while (j < size && strchr("0123456789+-.eE", data[j]) != NULL && data[j] != 0)
			j++;
		if (j > i)
		{
			for (int k = 0; k < 4; k++)
				check_dec_parse((const char *) data + i, j - i, scales[k]);
			runs++;
			i = j;
		}
		else
			i++;
	}
}

/* ---- structural validation of a parsed tariff ------------------------------ */

static void
check_pricing(const Tariff *t, const TariffPricing *p, size_t size)
{
	CHECK(p->model >= MODEL_FLAT && p->model <= MODEL_PERCENTAGE, "model %d", p->model);
	CHECK((p->flags & ~(PRICING_HAS_MIN | PRICING_HAS_MAX)) == 0, "pricing flags %x", p->flags);
	CHECK(i128_load(p->price) >= 0 && i128_load(p->setup_fee) >= 0 &&
		  i128_load(p->minimum) >= 0 && i128_load(p->maximum) >= 0 &&
		  i128_load(p->pkg_free) >= 0 && i128_load(p->pkg_price) >= 0 &&
		  i128_load(p->pct_rate) >= 0 && i128_load(p->pct_fixed) >= 0, "negative amount");
	if ((p->flags & PRICING_HAS_MIN) && (p->flags & PRICING_HAS_MAX))
		CHECK(i128_load(p->minimum) <= i128_load(p->maximum), "minimum > maximum");
	if (p->model == MODEL_PACKAGE)
		CHECK(i128_load(p->pkg_size) > 0, "package size <= 0");
	if (p->model == MODEL_GRADUATED || p->model == MODEL_VOLUME)
	{
		const TariffTier *tiers;
		cb_int128	prev = 0;

		CHECK(p->ntiers >= 1 && p->ntiers <= TARIFF_MAX_TIERS, "ntiers %d", p->ntiers);
		CHECK(p->tier_off >= (int32_t) sizeof(Tariff) &&
			  (size_t) p->tier_off + sizeof(TariffTier) * (size_t) p->ntiers <= size &&
			  (p->tier_off - sizeof(Tariff)) % 8 == 0, "tier_off %d out of bounds", p->tier_off);
		tiers = tariff_tiers(t, p);
		for (int i = 0; i < p->ntiers; i++)
		{
			bool		last = (i == p->ntiers - 1);

			CHECK(tiers[i].unbounded == (last ? 1 : 0), "tier %d unbounded=%d", i, tiers[i].unbounded);
			CHECK(tiers[i].pad == 0, "tier pad");
			CHECK(i128_load(tiers[i].price) >= 0 && i128_load(tiers[i].flat) >= 0, "tier amount < 0");
			if (!last)
			{
				CHECK(i128_load(tiers[i].up_to) > prev, "tiers not ascending at %d", i);
				prev = i128_load(tiers[i].up_to);
			}
			else
				CHECK(i128_load(tiers[i].up_to) == 0, "unbounded tier with up_to");
		}
	}
	else
		CHECK(p->ntiers == 0, "tiers on a model without tiers");
}

static size_t
check_structure(const Tariff *t)
{
	size_t		size = (size_t) t->vl_len_;
	size_t		ntiers;

	CHECK(t->vl_len_ >= (int32_t) sizeof(Tariff), "vl_len_ %d", t->vl_len_);
	CHECK(t->version == TARIFF_VERSION, "version %d", t->version);
	CHECK(t->scope == SCOPE_EVENT || t->scope == SCOPE_CYCLE, "scope %d", t->scope);
	CHECK(t->round_decimals >= 0 && t->round_decimals <= MAX_ROUND_DECIMALS, "decimals %d", t->round_decimals);
	CHECK(t->round_mode >= ROUND_HALF_UP && t->round_mode <= ROUND_DOWN, "mode %d", t->round_mode);
	CHECK((t->flags & ~TARIFF_HAS_INCREMENT) == 0, "flags %x", t->flags);
	CHECK(t->nbands >= 0 && t->nbands <= TARIFF_MAX_BANDS, "nbands %d", t->nbands);
	CHECK(t->nbands == 0 || t->scope == SCOPE_EVENT, "time bands with scope cycle");
	CHECK(t->band_off == (int32_t) sizeof(Tariff), "band_off %d", t->band_off);
	CHECK(t->currency[3] == '\0' && t->unit[TARIFF_MAX_TEXT] == '\0', "unterminated text");
	CHECK(t->currency[0] == '\0' || strlen(t->currency) == 3, "currency length");
	if (t->flags & TARIFF_HAS_INCREMENT)
		CHECK(i128_load(t->inc_first) > 0 && i128_load(t->inc_next) > 0, "increment <= 0");
	else
		CHECK(i128_load(t->inc_first) == 0 && i128_load(t->inc_next) == 0, "increment without flag");
	CHECK(size >= sizeof(Tariff) + sizeof(TariffBand) * (size_t) t->nbands, "size too small for bands");
	ntiers = (size - sizeof(Tariff) - sizeof(TariffBand) * (size_t) t->nbands);
	CHECK(ntiers % sizeof(TariffTier) == 0, "size not a whole number of tiers");
	ntiers /= sizeof(TariffTier);

	check_pricing(t, &t->top, size);
	{
		size_t		counted = (size_t) t->top.ntiers;
		const TariffBand *bands = tariff_bands(t);

		for (int i = 0; i < t->nbands; i++)
		{
			const TariffBand *b = &bands[i];

			CHECK(b->days > 0 && b->days <= 0x7f, "band %d days %x", i, b->days);
			CHECK(b->from_sec >= 0 && b->from_sec < b->to_sec && b->to_sec <= 86400,
				  "band %d from %d to %d", i, b->from_sec, b->to_sec);
			CHECK(b->name[TARIFF_MAX_TEXT] == '\0', "band name unterminated");
			check_pricing(t, &b->pricing, size);
			counted += (size_t) b->pricing.ntiers;
		}
		CHECK(counted == ntiers, "size holds %zu tiers, pricings use %zu", ntiers, counted);
	}
	return size;
}

/* ---- the reference evaluator, written from SPEC §1 -------------------------- */

typedef enum
{
	REF_OK,
	REF_INVALID,
	REF_OVERFLOW
} RefResult;

static RefResult
ref_bq(const Tariff *t, cb_int128 q, cb_int128 *bq)
{
	cb_int128	a,
				b,
				rest,
				k;

	if (q < 0)
		return REF_INVALID;
	if (q == 0 || !(t->flags & TARIFF_HAS_INCREMENT))
	{
		*bq = q;
		return REF_OK;
	}
	a = i128_load(t->inc_first);
	b = i128_load(t->inc_next);
	if (q <= a)
	{
		*bq = a;
		return REF_OK;
	}
	rest = q - a;
	k = rest / b;
	if (rest % b)
		k++;
	if (__builtin_mul_overflow(k, b, &k) || __builtin_add_overflow(a, k, bq))
		return REF_OVERFLOW;
	return REF_OK;
}

/* Round a non-negative amount at 10^21 to d decimals. */
static cb_int128
ref_round(cb_int128 v, int d, int mode)
{
	cb_int128	unit = 1;
	cb_int128	q,
				r;

	CHECK(v >= 0, "ref_round of a negative amount");
	for (int i = d; i < AMOUNT_DECIMALS; i++)
		unit *= 10;
	q = v / unit;
	r = v - q * unit;
	switch (mode)
	{
		case ROUND_HALF_UP:
			if (2 * (unsigned __int128) r >= (unsigned __int128) unit)
				q++;
			break;
		case ROUND_HALF_EVEN:
			if (2 * (unsigned __int128) r > (unsigned __int128) unit ||
				(2 * (unsigned __int128) r == (unsigned __int128) unit && q % 2 == 1))
				q++;
			break;
		case ROUND_UP:
			if (r > 0)
				q++;
			break;
		case ROUND_DOWN:
			break;
	}
	return q;
}

/* out += a * b, checked */
static bool
ref_muladd(cb_int128 *out, cb_int128 a, cb_int128 b)
{
	cb_int128	x;

	return !__builtin_mul_overflow(a, b, &x) && !__builtin_add_overflow(*out, x, out);
}

/* Model price of bq > 0 units, tier flat fees included, at 10^21. */
static RefResult
ref_model(const Tariff *t, const TariffPricing *p, cb_int128 bq, cb_int128 *out)
{
	const TariffTier *tiers = tariff_tiers(t, p);
	cb_int128	cost = 0;

	switch (p->model)
	{
		case MODEL_FLAT:
			if (!ref_muladd(&cost, bq, i128_load(p->price)))
				return REF_OVERFLOW;
			break;
		case MODEL_GRADUATED:
			/* tier i holds (up_to(i-1), up_to(i)]; each tier with units is reached */
			for (int i = 0; i < p->ntiers; i++)
			{
				cb_int128	lo = i == 0 ? 0 : i128_load(tiers[i - 1].up_to);
				cb_int128	units;

				if (bq <= lo)
					break;
				if (!tiers[i].unbounded && bq > i128_load(tiers[i].up_to))
					units = i128_load(tiers[i].up_to) - lo;
				else
					units = bq - lo;
				if (!ref_muladd(&cost, units, i128_load(tiers[i].price)) ||
					!ref_muladd(&cost, i128_load(tiers[i].flat), E9))
					return REF_OVERFLOW;
			}
			break;
		case MODEL_VOLUME:
			for (int i = 0; i < p->ntiers; i++)
				if (tiers[i].unbounded || bq <= i128_load(tiers[i].up_to))
				{
					if (!ref_muladd(&cost, bq, i128_load(tiers[i].price)) ||
						!ref_muladd(&cost, i128_load(tiers[i].flat), E9))
						return REF_OVERFLOW;
					break;
				}
			break;
		case MODEL_PACKAGE:
			{
				cb_int128	chargeable = bq - i128_load(p->pkg_free);

				if (chargeable > 0)
				{
					cb_int128	size = i128_load(p->pkg_size);
					cb_int128	blocks = chargeable / size + (chargeable % size ? 1 : 0);

					/* a count of started blocks times the block price (10^12 -> 10^21) */
					if (!ref_muladd(&cost, blocks, i128_load(p->pkg_price)) ||
						__builtin_mul_overflow(cost, E9, &cost))
						return REF_OVERFLOW;
				}
				break;
			}
		case MODEL_PERCENTAGE:
			if (!ref_muladd(&cost, bq, i128_load(p->pct_rate)) ||
				!ref_muladd(&cost, i128_load(p->pct_fixed), E9))
				return REF_OVERFLOW;
			break;
	}
	*out = cost;
	return REF_OK;
}

static RefResult
ref_clamp(const TariffPricing *p, cb_int128 *cost)
{
	cb_int128	b;

	if (p->flags & PRICING_HAS_MIN)
	{
		if (__builtin_mul_overflow(i128_load(p->minimum), E9, &b))
			return REF_OVERFLOW;
		if (*cost < b)
			*cost = b;
	}
	if (p->flags & PRICING_HAS_MAX)
	{
		if (__builtin_mul_overflow(i128_load(p->maximum), E9, &b))
			return REF_OVERFLOW;
		if (*cost > b)
			*cost = b;
	}
	return REF_OK;
}

static const TariffPricing *
ref_pricing_at(const Tariff *t, TariffWhen w)
{
	const TariffBand *bands = tariff_bands(t);

	if (w.dow < 0)
		return &t->top;
	for (int i = 0; i < t->nbands; i++)
		if (((bands[i].days >> w.dow) & 1) && w.sec_of_day >= bands[i].from_sec &&
			w.sec_of_day < bands[i].to_sec)
			return &bands[i].pricing;
	return &t->top;
}

/* P(x): rounded, clamped price of a period total (cycle scope); P(0) = 0. */
static RefResult
ref_period(const Tariff *t, cb_int128 x, cb_int128 *out)
{
	cb_int128	c;
	RefResult	r;

	if (x == 0)
	{
		*out = 0;
		return REF_OK;
	}
	if ((r = ref_model(t, &t->top, x, &c)) != REF_OK || (r = ref_clamp(&t->top, &c)) != REF_OK)
		return r;
	*out = ref_round(c, t->round_decimals, t->round_mode);
	return REF_OK;
}

static RefResult
ref_setup_rounded(const Tariff *t, cb_int128 *out)
{
	cb_int128	s;

	if (__builtin_mul_overflow(i128_load(t->top.setup_fee), E9, &s))
		return REF_OVERFLOW;
	*out = ref_round(s, t->round_decimals, t->round_mode);
	return REF_OK;
}

/* Rate a quantity whose increments are already applied (tariff_rate_billed). */
static RefResult
ref_rate_billed(const Tariff *t, cb_int128 bq, TariffWhen w, cb_int128 used, cb_int128 *charge)
{
	cb_int128	c;
	RefResult	r;

	if (bq < 0)
		return REF_INVALID;
	if (bq == 0)
	{
		*charge = 0;
		return REF_OK;
	}
	if (t->scope == SCOPE_CYCLE)
	{
		cb_int128	total,
					before,
					after,
					setup;

		if (used < 0)
			return REF_INVALID;
		if (__builtin_add_overflow(used, bq, &total))
			return REF_OVERFLOW;
		if ((r = ref_period(t, used, &before)) != REF_OK ||
			(r = ref_period(t, total, &after)) != REF_OK ||
			(r = ref_setup_rounded(t, &setup)) != REF_OK)
			return r;
		if (__builtin_sub_overflow(after, before, &c) || __builtin_add_overflow(c, setup, charge))
			return REF_OVERFLOW;
		return REF_OK;
	}
	{
		const TariffPricing *p = ref_pricing_at(t, w);

		if ((r = ref_model(t, p, bq, &c)) != REF_OK)
			return r;
		if (!ref_muladd(&c, i128_load(p->setup_fee), E9))
			return REF_OVERFLOW;
		if ((r = ref_clamp(p, &c)) != REF_OK)
			return r;
		*charge = ref_round(c, t->round_decimals, t->round_mode);
	}
	return REF_OK;
}

static RefResult
ref_rate(const Tariff *t, cb_int128 q, TariffWhen w, cb_int128 used, cb_int128 *charge)
{
	cb_int128	bq;
	RefResult	r;

	if ((r = ref_bq(t, q, &bq)) != REF_OK)
		return r;
	return ref_rate_billed(t, bq, w, used, charge);
}

/* ---- evaluation checks ------------------------------------------------------ */

/* splitmix64 over the input, for quantities and times that follow the input */
static uint64_t rng_state;

static uint64_t
rng(void)
{
	uint64_t	z = (rng_state += 0x9E3779B97F4A7C15ULL);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

#define MAXQ 64

typedef struct QSet
{
	cb_int128	v[MAXQ];
	int			n;
} QSet;

static void
qadd(QSet *s, cb_int128 q)
{
	if (s->n < MAXQ)
		s->v[s->n++] = q;
}

/* q and its neighbours q-1, q+1 (at 10^9), when non-negative and representable */
static void
qadd3(QSet *s, cb_int128 q)
{
	if (q > 0)
		qadd(s, q - 1);
	qadd(s, q);
	if (q < I128_MAX)
		qadd(s, q + 1);
}

static void
pricing_quantities(const Tariff *t, const TariffPricing *p, QSet *s)
{
	if (p->model == MODEL_GRADUATED || p->model == MODEL_VOLUME)
	{
		const TariffTier *tiers = tariff_tiers(t, p);
		int			step = p->ntiers > 6 ? p->ntiers / 6 : 1;

		for (int i = 0; i < p->ntiers - 1; i += step)
			qadd3(s, i128_load(tiers[i].up_to));
	}
	if (p->model == MODEL_PACKAGE)
	{
		cb_int128	f = i128_load(p->pkg_free),
					z = i128_load(p->pkg_size);

		qadd3(s, f);
		if (f <= I128_MAX - z)
			qadd3(s, f + z);
	}
}

static int
cmp_i128(const void *a, const void *b)
{
	cb_int128	x = *(const cb_int128 *) a,
				y = *(const cb_int128 *) b;

	return x < y ? -1 : x > y;
}

static void
build_quantities(const Tariff *t, QSet *s)
{
	s->n = 0;
	qadd(s, 0);
	qadd(s, 1);					/* 10^-9 unit */
	qadd(s, E9);				/* 1 unit */
	qadd(s, E9 + E9 / 2);		/* 1.5 */
	qadd(s, 60 * E9);
	qadd(s, (cb_int128) (rng() % 1000000000000ULL));	/* fractional, up to 1000 units */
	qadd(s, (cb_int128) (rng() % 100000) * E9);	/* whole units */
	qadd(s, (cb_int128) (rng() >> 1) * (cb_int128) rng());	/* large */
	qadd(s, ((cb_int128) 1 << 100) + (cb_int128) (rng() & 0xffff));
	qadd(s, I128_MAX / dec_pow10(12));	/* about where qty x price overflows */
	qadd(s, I128_MAX - (cb_int128) (rng() & 0xff));
	qadd(s, I128_MAX);
	if (t->flags & TARIFF_HAS_INCREMENT)
	{
		cb_int128	a = i128_load(t->inc_first),
					n = i128_load(t->inc_next);

		qadd3(s, a);
		if (a <= I128_MAX - n)
			qadd3(s, a + n);
	}
	pricing_quantities(t, &t->top, s);
	if (t->nbands > 0)
	{
		const TariffBand *bands = tariff_bands(t);

		pricing_quantities(t, &bands[rng() % (uint64_t) t->nbands].pricing, s);
	}
	qsort(s->v, (size_t) s->n, sizeof(cb_int128), cmp_i128);
}

static void
check_result(const Tariff *t, bool billed, cb_int128 q, TariffWhen w, cb_int128 used,
			 bool ok, cb_int128 charge, const TariffError *err)
{
	cb_int128	rc = 0;
	RefResult	r = billed ? ref_rate_billed(t, q, w, used, &rc) : ref_rate(t, q, w, used, &rc);
	char		b1[48],
				b2[48],
				b3[48],
				b4[48];

	if (!ok)
		check_error(err, "tariff_rate");
	CHECK(ok == (r == REF_OK),
		  "q=%s dow=%d sec=%d used=%s: tariff_rate%s %s (%s) but the reference %s (%s)",
		  i128s(q, b1), w.dow, w.sec_of_day, i128s(used, b2), billed ? "_billed" : "",
		  ok ? "succeeded" : "failed", ok ? i128s(charge, b3) : err->msg,
		  r == REF_OK ? "succeeded" : "failed", r == REF_OK ? i128s(rc, b4) : (r == REF_INVALID ? "invalid" : "overflow"));
	if (!ok)
	{
		CHECK(err->kind == (r == REF_INVALID ? TARIFF_ERR_INVALID : TARIFF_ERR_OVERFLOW),
			  "q=%s used=%s: error kind %d (%s), reference says %s",
			  i128s(q, b1), i128s(used, b2), (int) err->kind, err->msg,
			  r == REF_INVALID ? "invalid" : "overflow");
		return;
	}
	CHECK(charge == rc, "q=%s dow=%d sec=%d used=%s: %s charge %s, reference %s",
		  i128s(q, b1), w.dow, w.sec_of_day, i128s(used, b2), billed ? "billed" : "",
		  i128s(charge, b3), i128s(rc, b4));
}

static void
check_rate_result(const Tariff *t, cb_int128 q, TariffWhen w, cb_int128 used,
				  bool ok, cb_int128 charge, const TariffError *err)
{
	check_result(t, false, q, w, used, ok, charge, err);
}

/*
 * tariff_rate_billed: x taken as billed as it is (the reference without the
 * increment step), and rate_billed(bq(q)) = rate(q).
 */
static void
check_rate_billed(const Tariff *t, cb_int128 x, TariffWhen w, cb_int128 used)
{
	TariffError err;
	cb_int128	c = 0,
				bq = 0,
				c1 = 0,
				c2 = 0;
	bool		ok;
	char		b1[48],
				b2[48],
				b3[48],
				b4[48];

	memset(&err, 0, sizeof(err));
	ok = tariff_rate_billed(t, x, w, used, &c, &err);
	check_result(t, true, x, w, used, ok, c, &err);

	memset(&err, 0, sizeof(err));
	if (!tariff_billed_quantity(t, x, &bq, &err) || !tariff_rate(t, x, w, used, &c1, &err))
		return;
	memset(&err, 0, sizeof(err));
	ok = tariff_rate_billed(t, bq, w, used, &c2, &err);
	CHECK(ok && c2 == c1, "q=%s: rate = %s but rate_billed(bq = %s) = %s", i128s(x, b1),
		  i128s(c1, b2), i128s(bq, b3), ok ? i128s(c2, b4) : err.msg);
}

/* Event scope: the checks on one (q, when) grid. */
static void
check_event(const Tariff *t, const QSet *qs, TariffWhen w)
{
	const TariffPricing *p = tariff_pricing_at(t, w);
	bool		have_prev = false;
	cb_int128	prev_charge = 0,
				prev_q = 0;
	cb_int128	lo_bound = 0,
				hi_bound = 0;
	bool		has_lo = false,
				has_hi = false;
	char		b1[48],
				b2[48],
				b3[48],
				b4[48];

	CHECK(p == ref_pricing_at(t, w), "dow=%d sec=%d: tariff_pricing_at picks another band",
		  w.dow, w.sec_of_day);
	if (p->flags & PRICING_HAS_MIN)
	{
		cb_int128	m;

		if (!__builtin_mul_overflow(i128_load(p->minimum), E9, &m))
		{
			lo_bound = ref_round(m, t->round_decimals, t->round_mode);
			has_lo = true;
		}
	}
	if (p->flags & PRICING_HAS_MAX)
	{
		cb_int128	m;

		if (!__builtin_mul_overflow(i128_load(p->maximum), E9, &m))
		{
			hi_bound = ref_round(m, t->round_decimals, t->round_mode);
			has_hi = true;
		}
	}

	for (int i = 0; i < qs->n; i++)
	{
		cb_int128	q = qs->v[i],
					bq = 0,
					charge = 0,
					c2 = 0;
		TariffError err;
		bool		ok,
					bq_ok;
		cb_int128	used = (cb_int128) (rng() % 5000) * E9;

		check_rate_billed(t, q, w, used);
		bq_ok = tariff_billed_quantity(t, q, &bq, &err);
		if (!bq_ok)
			check_error(&err, "tariff_billed_quantity");
		memset(&err, 0, sizeof(err));
		ok = tariff_rate(t, q, w, 0, &charge, &err);
		check_rate_result(t, q, w, 0, ok, charge, &err);
		CHECK(!ok || bq_ok, "q=%s: rate succeeded where billed_quantity failed", i128s(q, b1));
		if (!ok)
			continue;
		if (q == 0)
			CHECK(charge == 0, "rate(0) = %s", i128s(charge, b1));
		CHECK(charge >= 0, "q=%s: negative event charge %s", i128s(q, b1), i128s(charge, b2));
		if (bq > 0 && has_lo)
			CHECK(charge >= lo_bound, "q=%s: charge %s below the minimum %s",
				  i128s(q, b1), i128s(charge, b2), i128s(lo_bound, b3));
		if (bq > 0 && has_hi)
			CHECK(charge <= hi_bound, "q=%s: charge %s above the maximum %s",
				  i128s(q, b1), i128s(charge, b2), i128s(hi_bound, b3));

		/* event scope ignores used_before */
		memset(&err, 0, sizeof(err));
		CHECK(tariff_rate(t, q, w, used, &c2, &err) && c2 == charge,
			  "q=%s: event charge depends on used_before=%s (%s vs %s)",
			  i128s(q, b1), i128s(used, b2), i128s(c2, b3), i128s(charge, b4));

		/* pricing the billed quantity again changes nothing */
		memset(&err, 0, sizeof(err));
		CHECK(tariff_rate(t, bq, w, 0, &c2, &err) && c2 == charge,
			  "q=%s bq=%s: rate(bq) = %s but rate(q) = %s",
			  i128s(q, b1), i128s(bq, b2), i128s(c2, b3), i128s(charge, b4));

		/* every model but volume is non-decreasing in the quantity */
		if (p->model != MODEL_VOLUME && have_prev && prev_q <= q)
			CHECK(prev_charge <= charge, "model %d not monotone: rate(%s) = %s > rate(%s) = %s",
				  p->model, i128s(prev_q, b1), i128s(prev_charge, b2), i128s(q, b3), i128s(charge, b4));
		have_prev = true;
		prev_q = q;
		prev_charge = charge;
	}
}

/* Cycle scope: chained events sum to P(total) + n x setup, in any order. */
static void
check_cycle(const Tariff *t, const QSet *qs)
{
	cb_int128	ev[6];
	int			n = 1 + (int) (rng() % 5);
	cb_int128	sum_fwd = 0,
				sum_rev = 0,
				used = 0,
				sum_bq = 0,
				setup = 0,
				ptotal = 0;
	bool		ok_fwd = true,
				ok_rev = true;
	TariffError err;
	char		b1[48],
				b2[48],
				b3[48];

	for (int i = 0; i < n; i++)
	{
		/* mostly modest quantities, so that the chain rarely overflows */
		switch (rng() % 4)
		{
			case 0:
				ev[i] = qs->v[rng() % (uint64_t) qs->n];
				break;
			case 1:
				ev[i] = (cb_int128) (rng() % 100000000000000ULL);
				break;
			default:
				ev[i] = (cb_int128) (rng() % 20000) * E9;
				break;
		}
	}

	/* forward */
	for (int i = 0; i < n && ok_fwd; i++)
	{
		cb_int128	c = 0,
					bq = 0;

		memset(&err, 0, sizeof(err));
		if (!tariff_billed_quantity(t, ev[i], &bq, &err))
		{
			check_error(&err, "tariff_billed_quantity");
			ok_fwd = false;
			break;
		}
		memset(&err, 0, sizeof(err));
		if (!tariff_rate(t, ev[i], TARIFF_NO_TIME, used, &c, &err))
		{
			check_rate_result(t, ev[i], TARIFF_NO_TIME, used, false, 0, &err);
			ok_fwd = false;
			break;
		}
		check_rate_result(t, ev[i], TARIFF_NO_TIME, used, true, c, &err);
		if (!__builtin_add_overflow(sum_fwd, c, &sum_fwd) && !__builtin_add_overflow(used, bq, &used))
			continue;
		ok_fwd = false;
	}
	sum_bq = used;

	/* reverse */
	used = 0;
	for (int i = n - 1; i >= 0 && ok_rev; i--)
	{
		cb_int128	c = 0,
					bq = 0;

		memset(&err, 0, sizeof(err));
		if (!tariff_billed_quantity(t, ev[i], &bq, &err) ||
			!tariff_rate(t, ev[i], TARIFF_NO_TIME, used, &c, &err))
		{
			check_error(&err, "cycle chain");
			ok_rev = false;
			break;
		}
		if (__builtin_add_overflow(sum_rev, c, &sum_rev) || __builtin_add_overflow(used, bq, &used))
			ok_rev = false;
	}
	if (!ok_fwd || !ok_rev)
		return;
	CHECK(used == sum_bq, "billed quantities differ by order");
	CHECK(sum_fwd == sum_rev, "%d cycle events sum to %s in order, %s in reverse",
		  n, i128s(sum_fwd, b1), i128s(sum_rev, b2));
	{
		int			nonzero = 0;

		for (int i = 0; i < n; i++)
			if (ev[i] != 0)
				nonzero++;
		cb_int128	expect;

		if (ref_period(t, sum_bq, &ptotal) != REF_OK || ref_setup_rounded(t, &setup) != REF_OK ||
			__builtin_mul_overflow(setup, (cb_int128) nonzero, &expect) ||
			__builtin_add_overflow(expect, ptotal, &expect))
			return;
		CHECK(sum_fwd == expect,
			  "%d cycle events (%d non-zero) sum to %s; P(%s) = %s plus setup fees",
			  n, nonzero, i128s(sum_fwd, b1), i128s(sum_bq, b2), i128s(ptotal, b3));
	}
	/* without increments, one event of the whole total costs P(total) + setup */
	if (!(t->flags & TARIFF_HAS_INCREMENT) && sum_bq > 0)
	{
		cb_int128	c = 0,
					expect;

		if (__builtin_add_overflow(ptotal, setup, &expect))
			return;
		memset(&err, 0, sizeof(err));
		CHECK(tariff_rate(t, sum_bq, TARIFF_NO_TIME, 0, &c, &err) && c == expect,
			  "one event of %s costs %s, P(total) + setup = %s",
			  i128s(sum_bq, b1), i128s(c, b2), i128s(expect, b3));
	}
}

static void
check_eval(const Tariff *t)
{
	QSet		qs;
	TariffError err;
	cb_int128	bq = 0;
	char		b1[48],
				b2[48],
				b3[48];

	build_quantities(t, &qs);

	/* billed quantity */
	memset(&err, 0, sizeof(err));
	CHECK(!tariff_billed_quantity(t, -1, &bq, &err), "negative quantity accepted");
	check_error(&err, "tariff_billed_quantity(-1)");
	CHECK(err.kind == TARIFF_ERR_INVALID, "negative quantity: kind %d", (int) err.kind);
	for (int i = 0; i < qs.n; i++)
	{
		cb_int128	q = qs.v[i],
					rq = 0,
					bq2 = 0;
		RefResult	r = ref_bq(t, q, &rq);
		bool		ok;

		memset(&err, 0, sizeof(err));
		ok = tariff_billed_quantity(t, q, &bq, &err);
		CHECK(ok == (r == REF_OK), "billed_quantity(%s): %s, reference %s", i128s(q, b1),
			  ok ? "ok" : err.msg, r == REF_OK ? "ok" : "fails");
		if (!ok)
		{
			check_error(&err, "tariff_billed_quantity");
			CHECK(err.kind == TARIFF_ERR_OVERFLOW, "billed_quantity(%s): kind %d", i128s(q, b1), (int) err.kind);
			continue;
		}
		CHECK(bq == rq, "billed_quantity(%s) = %s, reference %s", i128s(q, b1), i128s(bq, b2), i128s(rq, b3));
		CHECK(bq >= q, "billed_quantity(%s) = %s < q", i128s(q, b1), i128s(bq, b2));
		CHECK(q != 0 || bq == 0, "billed_quantity(0) = %s", i128s(bq, b1));
		memset(&err, 0, sizeof(err));
		CHECK(tariff_billed_quantity(t, bq, &bq2, &err) && bq2 == bq,
			  "billed_quantity not idempotent: bq(%s) = %s, bq(bq) = %s", i128s(q, b1), i128s(bq, b2), i128s(bq2, b3));
	}

	/* negative quantities are errors in every scope */
	{
		cb_int128	c;

		memset(&err, 0, sizeof(err));
		CHECK(!tariff_rate(t, -(cb_int128) E9, TARIFF_NO_TIME, 0, &c, &err), "rate of -1 accepted");
		check_error(&err, "tariff_rate(-1)");
		memset(&err, 0, sizeof(err));
		CHECK(!tariff_rate_billed(t, -1, TARIFF_NO_TIME, 0, &c, &err), "rate_billed of -1e-9 accepted");
		check_error(&err, "tariff_rate_billed(-1e-9)");
		CHECK(err.kind == TARIFF_ERR_INVALID, "rate_billed(-1e-9): kind %d", (int) err.kind);
	}

	if (t->scope == SCOPE_CYCLE)
	{
		static const cb_int128 fixed_used[] = {0, 1, 1000000000, 1024000000000};

		for (int k = 0; k < 3; k++)
			check_cycle(t, &qs);
		/* single events at assorted used_before values, incl. boundaries and extremes */
		for (int i = 0; i < qs.n; i++)
		{
			cb_int128	used[8];
			int			nu = 0;

			for (int k = 0; k < 4; k++)
				used[nu++] = fixed_used[k];
			used[nu++] = qs.v[rng() % (uint64_t) qs.n];
			used[nu++] = I128_MAX - (cb_int128) (rng() % 1000);
			used[nu++] = -(cb_int128) (rng() % 1000) - 1;
			for (int k = 0; k < nu; k++)
			{
				cb_int128	c = 0;
				bool		ok;

				memset(&err, 0, sizeof(err));
				ok = tariff_rate(t, qs.v[i], TARIFF_NO_TIME, used[k], &c, &err);
				check_rate_result(t, qs.v[i], TARIFF_NO_TIME, used[k], ok, c, &err);
				check_rate_billed(t, qs.v[i], TARIFF_NO_TIME, used[k]);
				if (ok && qs.v[i] == 0)
					CHECK(c == 0, "cycle rate(0) = %s", i128s(c, b1));
			}
		}
		return;
	}

	/* event scope: a grid of local times, incl. every band's edges */
	{
		TariffWhen	whens[48];
		int			nw = 0;

		whens[nw++] = TARIFF_NO_TIME;
		whens[nw++] = (TariffWhen) {0, 0};
		whens[nw++] = (TariffWhen) {0, 86399};
		whens[nw++] = (TariffWhen) {1, 28800};
		whens[nw++] = (TariffWhen) {3, 43200};
		whens[nw++] = (TariffWhen) {5, 64799};
		whens[nw++] = (TariffWhen) {6, 86399};
		whens[nw++] = (TariffWhen) {(int) (rng() % 7), (int) (rng() % 86400)};
		if (t->nbands > 0)
		{
			const TariffBand *bands = tariff_bands(t);

			for (int i = 0; i < t->nbands && nw + 3 <= 48; i++)
			{
				int			d = 0;

				while (!((bands[i].days >> d) & 1))
					d++;
				whens[nw++] = (TariffWhen) {d, bands[i].from_sec};
				whens[nw++] = (TariffWhen) {d, bands[i].to_sec - 1};
				if (bands[i].to_sec < 86400)
					whens[nw++] = (TariffWhen) {d, bands[i].to_sec};
			}
		}
		for (int i = 0; i < nw; i++)
			check_event(t, &qs, whens[i]);
	}
}

/* ---- the same tariff written differently ------------------------------------ */

typedef struct Out
{
	char	   *buf;
	size_t		len;
} Out;

static void
out_put(Out *o, const char *s, size_t n)
{
	memcpy(o->buf + o->len, s, n);
	o->len += n;
}

static void
out_string(Out *o, const char *s, size_t n)
{
	out_put(o, "\"", 1);
	for (size_t i = 0; i < n; i++)
	{
		unsigned char ch = (unsigned char) s[i];
		char		e[8];

		if (ch == '"' || ch == '\\')
		{
			e[0] = '\\';
			e[1] = (char) ch;
			out_put(o, e, 2);
		}
		else if (ch < 0x20 || ch == '/')
		{
			snprintf(e, sizeof(e), "\\u%04X", ch);
			out_put(o, e, 6);
		}
		else
			out_put(o, (const char *) &ch, 1);
	}
	out_put(o, "\"", 1);
}

/* The document again: members in reverse order, other whitespace and escapes. */
static void
out_value(Out *o, const JsonValue *v)
{
	switch (v->type)
	{
		case JSON_NULL:
			out_put(o, "null", 4);
			break;
		case JSON_BOOL:
			out_put(o, v->boolean ? "true" : "false", v->boolean ? 4 : 5);
			break;
		case JSON_NUMBER:
			out_put(o, v->str, v->len);
			break;
		case JSON_STRING:
			out_string(o, v->str, v->len);
			break;
		case JSON_ARRAY:
			out_put(o, "[ ", 2);
			for (size_t i = 0; i < v->count; i++)
			{
				if (i)
					out_put(o, " ,\n", 3);
				out_value(o, &v->items[i]);
			}
			out_put(o, "]", 1);
			break;
		case JSON_OBJECT:
			out_put(o, "{\t", 2);
			for (size_t i = v->count; i-- > 0;)
			{
				out_string(o, v->members[i].key, v->members[i].keylen);
				out_put(o, " : ", 3);
				out_value(o, &v->members[i].value);
				if (i)
					out_put(o, ",\r\n", 3);
			}
			out_put(o, " }", 2);
			break;
	}
}

/* An accepted tariff written with its keys in reverse order is the same tariff. */
static void
check_rewritten(const uint8_t *data, size_t size, const Tariff *t)
{
	Arena		arena = {NULL};
	char		jerr[200];
	JsonValue  *root = json_parse(&arena, (const char *) data, size, jerr, sizeof(jerr));
	Out			o;
	Tariff	   *t3;
	TariffError err;

	CHECK(root != NULL, "accepted tariff is not valid JSON: %s", jerr);
	o.buf = cb_malloc(8 * size + 64);
	o.len = 0;
	out_value(&o, root);
	arena_free_all(&arena);
	memset(&err, 0, sizeof(err));
	t3 = tariff_parse(o.buf, o.len, &err);
	CHECK(t3 != NULL, "the same tariff with its keys reversed is rejected: %s\n  rewritten: %.*s",
		  err.msg, (int) o.len, o.buf);
	CHECK(t3->vl_len_ == t->vl_len_ && memcmp(t3, t, (size_t) t->vl_len_) == 0,
		  "the same tariff with its keys reversed gives other bytes\n  rewritten: %.*s",
		  (int) o.len, o.buf);
	cb_free(t3);
	cb_free(o.buf);
}

/* ---- entry point ------------------------------------------------------------ */

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	TariffError err;
	Tariff	   *t,
			   *t2;
	char	   *s1,
			   *s2;
	size_t		tsize;

	cur_text = NULL;
	check_numbers(data, size);

	memset(&err, 0x5a, sizeof(err));
	t = tariff_parse((const char *) data, size, &err);
	if (t == NULL)
	{
		check_parse_error(&err, data, size);
		return 0;
	}
	CHECK(err.kind == TARIFF_OK, "tariff_parse succeeded with error kind %d", (int) err.kind);
	tsize = check_structure(t);

	/* canonical text: parses back to the same bytes and formats the same */
	s1 = tariff_format(t);
	cur_text = s1;
	CHECK(s1 != NULL && s1[0] == '{', "format produced no object");
	memset(&err, 0, sizeof(err));
	t2 = tariff_parse(s1, strlen(s1), &err);
	CHECK(t2 != NULL, "canonical text does not parse back: %s", err.msg);
	CHECK(t2->vl_len_ == t->vl_len_, "round trip changes the size: %d -> %d", t->vl_len_, t2->vl_len_);
	CHECK(memcmp(t, t2, tsize) == 0, "round trip changes the binary (size %zu)", tsize);
	s2 = tariff_format(t2);
	CHECK(strcmp(s1, s2) == 0, "format is not canonical:\n  first:  %s\n  second: %s", s1, s2);
	cb_free(s2);
	cb_free(t2);
	check_rewritten(data, size, t);

	/* evaluation, with pseudo-random choices that follow the input */
	{
		uint64_t	h = 1469598103934665603ULL;

		for (size_t i = 0; i < size; i++)
			h = (h ^ data[i]) * 1099511628211ULL;
		rng_state = h;
	}
	check_eval(t);

	cur_text = NULL;
	cb_free(s1);
	cb_free(t);
	return 0;
}
