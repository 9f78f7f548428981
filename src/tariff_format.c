/*
 * tariff_format.c — the canonical JSON text of a binary tariff.
 *
 * Fixed key order (model, price, tiers, package, percentage, increment,
 * setup_fee, minimum, maximum, time_bands, scope, rounding, currency, unit);
 * amounts and prices as strings, quantities as JSON numbers, all without
 * trailing zeros; defaults (setup_fee 0, scope event, rounding 6/half_up, a
 * tier's zero flat fee) left out.  Parsing the output gives the same bytes.
 * Pure C: no backend calls.
 */
#include "tariff.h"
#include "json_lite.h"

#include <string.h>

typedef struct StrBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} StrBuf;

static void
sb_grow(StrBuf *b, size_t need)
{
	if (b->len + need + 1 > b->cap)
	{
		size_t		cap = b->cap ? b->cap : 256;
		char	   *n;

		while (b->len + need + 1 > cap)
			cap *= 2;
		n = cb_malloc(cap);
		if (b->data)
		{
			memcpy(n, b->data, b->len);
			cb_free(b->data);
		}
		b->data = n;
		b->cap = cap;
	}
}

static void
sb_put(StrBuf *b, const char *s)
{
	size_t		n = strlen(s);

	sb_grow(b, n);
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

/* A JSON string literal, escaped. */
static void
sb_json_string(StrBuf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	sb_put(b, "\"");
	for (; *s; s++)
	{
		unsigned char ch = (unsigned char) *s;
		char		e[8];

		if (ch == '"' || ch == '\\')
		{
			e[0] = '\\';
			e[1] = (char) ch;
			e[2] = '\0';
		}
		else if (ch < 0x20)
		{
			memcpy(e, "\\u00", 4);
			e[4] = hex[ch >> 4];
			e[5] = hex[ch & 15];
			e[6] = '\0';
		}
		else
		{
			e[0] = (char) ch;
			e[1] = '\0';
		}
		sb_put(b, e);
	}
	sb_put(b, "\"");
}

/* "key": "<decimal>" (quoted) or "key": <decimal> */
static void
sb_decimal(StrBuf *b, const char *key, cb_i128 v, int scale, bool quoted, bool comma)
{
	char		num[DEC_BUFLEN];

	dec_format(i128_load(v), scale, num);
	if (comma)
		sb_put(b, ",");
	if (key)
	{
		sb_json_string(b, key);
		sb_put(b, ":");
	}
	if (quoted)
		sb_put(b, "\"");
	sb_put(b, num);
	if (quoted)
		sb_put(b, "\"");
}

static const char *const model_names[] = {"flat", "graduated", "volume", "package", "percentage"};
static const char *const mode_names[] = {"half_up", "half_even", "up", "down"};
static const char *const day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

/* The pricing members (no braces), model first. */
static void
format_pricing(StrBuf *b, const Tariff *t, const TariffPricing *p)
{
	sb_put(b, "\"model\":");
	sb_json_string(b, model_names[p->model]);
	switch ((TariffModel) p->model)
	{
		case MODEL_FLAT:
			sb_decimal(b, "price", p->price, PRICE_DECIMALS, true, true);
			break;
		case MODEL_GRADUATED:
		case MODEL_VOLUME:
			{
				const TariffTier *tiers = tariff_tiers(t, p);

				sb_put(b, ",\"tiers\":[");
				for (int i = 0; i < p->ntiers; i++)
				{
					sb_put(b, i ? ",{\"up_to\":" : "{\"up_to\":");
					if (tiers[i].unbounded)
						sb_put(b, "null");
					else
						sb_decimal(b, NULL, tiers[i].up_to, QTY_DECIMALS, false, false);
					sb_decimal(b, "price", tiers[i].price, PRICE_DECIMALS, true, true);
					if (i128_load(tiers[i].flat) != 0)
						sb_decimal(b, "flat", tiers[i].flat, PRICE_DECIMALS, true, true);
					sb_put(b, "}");
				}
				sb_put(b, "]");
				break;
			}
		case MODEL_PACKAGE:
			sb_put(b, ",\"package\":{");
			sb_decimal(b, "size", p->pkg_size, QTY_DECIMALS, false, false);
			sb_decimal(b, "price", p->pkg_price, PRICE_DECIMALS, true, true);
			if (i128_load(p->pkg_free) != 0)
				sb_decimal(b, "free", p->pkg_free, QTY_DECIMALS, false, true);
			sb_put(b, "}");
			break;
		case MODEL_PERCENTAGE:
			sb_put(b, ",\"percentage\":{");
			sb_decimal(b, "rate", p->pct_rate, PRICE_DECIMALS - 2, true, false);
			if (i128_load(p->pct_fixed) != 0)
				sb_decimal(b, "fixed", p->pct_fixed, PRICE_DECIMALS, true, true);
			sb_put(b, "}");
			break;
	}
}

static void
format_time(StrBuf *b, const char *key, int sec)
{
	char		s[16];
	int			h = sec / 3600,
				m = (sec / 60) % 60,
				ss = sec % 60;

	s[0] = (char) ('0' + h / 10);
	s[1] = (char) ('0' + h % 10);
	s[2] = ':';
	s[3] = (char) ('0' + m / 10);
	s[4] = (char) ('0' + m % 10);
	s[5] = '\0';
	if (ss)
	{
		s[5] = ':';
		s[6] = (char) ('0' + ss / 10);
		s[7] = (char) ('0' + ss % 10);
		s[8] = '\0';
	}
	sb_put(b, ",");
	sb_json_string(b, key);
	sb_put(b, ":");
	sb_json_string(b, s);
}

/* Setup fee, minimum and maximum of a pricing. */
static void
format_fees(StrBuf *b, const TariffPricing *p)
{
	if (i128_load(p->setup_fee) != 0)
		sb_decimal(b, "setup_fee", p->setup_fee, PRICE_DECIMALS, true, true);
	if (p->flags & PRICING_HAS_MIN)
		sb_decimal(b, "minimum", p->minimum, PRICE_DECIMALS, true, true);
	if (p->flags & PRICING_HAS_MAX)
		sb_decimal(b, "maximum", p->maximum, PRICE_DECIMALS, true, true);
}

/* Canonical JSON of a tariff. */
char *
tariff_format(const Tariff *t)
{
	StrBuf		b = {NULL, 0, 0};

	sb_put(&b, "{");
	format_pricing(&b, t, &t->top);
	if (t->flags & TARIFF_HAS_INCREMENT)
	{
		sb_put(&b, ",\"increment\":{");
		sb_decimal(&b, "first", t->inc_first, QTY_DECIMALS, false, false);
		sb_decimal(&b, "next", t->inc_next, QTY_DECIMALS, false, true);
		sb_put(&b, "}");
	}
	format_fees(&b, &t->top);
	if (t->nbands > 0)
	{
		const TariffBand *bands = tariff_bands(t);

		sb_put(&b, ",\"time_bands\":[");
		for (int i = 0; i < t->nbands; i++)
		{
			const TariffBand *band = &bands[i];
			bool		first = true;

			sb_put(&b, i ? ",{" : "{");
			if (band->name[0])
			{
				sb_put(&b, "\"name\":");
				sb_json_string(&b, band->name);
				sb_put(&b, ",");
			}
			sb_put(&b, "\"days\":[");
			/* canonical order mon .. sun */
			for (int k = 1; k <= 7; k++)
				if (band->days & (1 << (k % 7)))
				{
					if (!first)
						sb_put(&b, ",");
					sb_json_string(&b, day_names[k % 7]);
					first = false;
				}
			sb_put(&b, "]");
			format_time(&b, "from", band->from_sec);
			format_time(&b, "to", band->to_sec);
			sb_put(&b, ",\"tariff\":{");
			format_pricing(&b, t, &band->pricing);
			format_fees(&b, &band->pricing);
			sb_put(&b, "}}");
		}
		sb_put(&b, "]");
	}
	if (t->scope == SCOPE_CYCLE)
		sb_put(&b, ",\"scope\":\"cycle\"");
	if (t->round_decimals != 6 || t->round_mode != ROUND_HALF_UP)
	{
		char		d[8];

		d[0] = (char) ('0' + t->round_decimals / 10);
		d[1] = (char) ('0' + t->round_decimals % 10);
		d[2] = '\0';
		sb_put(&b, ",\"rounding\":{\"decimals\":");
		sb_put(&b, t->round_decimals >= 10 ? d : d + 1);
		sb_put(&b, ",\"mode\":");
		sb_json_string(&b, mode_names[t->round_mode]);
		sb_put(&b, "}");
	}
	if (t->currency[0])
	{
		sb_put(&b, ",\"currency\":");
		sb_json_string(&b, t->currency);
	}
	if (t->unit[0])
	{
		sb_put(&b, ",\"unit\":");
		sb_json_string(&b, t->unit);
	}
	sb_put(&b, "}");
	return b.data;
}
