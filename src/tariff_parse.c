/*
 * tariff_parse.c — JSON text to the validated binary tariff.
 *
 * Every rule of the tariff contract is checked here, once, at input time; each
 * failure names the offending field by its JSON path (for example
 * "time_bands[0].tariff.tiers[2].up_to").  The result is built zeroed and in one
 * canonical form, so equal tariffs are equal bytes.  Pure C: no backend calls.
 */
#include "tariff.h"
#include "currency.h"
#include "json_lite.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MAX_ALL_TIERS (TARIFF_MAX_TIERS * (TARIFF_MAX_BANDS + 1))

typedef struct ParseCtx
{
	Arena		arena;
	TariffError *err;
	TariffTier *tiers;			/* every pricing's tiers, in order */
	int			ntiers;
	TariffBand *bands;
	int			nbands;
} ParseCtx;

static const char *const model_names[] = {"flat", "graduated", "volume", "package", "percentage"};
static const char *const mode_names[] = {"half_up", "half_even", "up", "down"};
static const char *const day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

/* Record a validation error; always returns false. */
static bool bad(ParseCtx *c, TariffErrorKind kind, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));

static bool
bad(ParseCtx *c, TariffErrorKind kind, const char *fmt,...)
{
	va_list		ap;
	int			n;

	c->err->kind = kind;
	va_start(ap, fmt);
	n = vsnprintf(c->err->msg, sizeof(c->err->msg), fmt, ap);
	va_end(ap);
	if (n >= (int) sizeof(c->err->msg))
	{
		/* truncated: drop a UTF-8 character cut in two at the end */
		unsigned char *m = (unsigned char *) c->err->msg;
		size_t		len = strlen(c->err->msg),
					j = len;

		while (j > 0 && (m[j - 1] & 0xC0) == 0x80)
			j--;
		if (j > 0 && m[j - 1] >= 0xC0 &&
			len - (j - 1) < (size_t) (m[j - 1] >= 0xF0 ? 4 : m[j - 1] >= 0xE0 ? 3 : 2))
			m[j - 1] = '\0';
	}
	return false;
}

/*
 * At most max bytes of a quoted input value for a message, not ending inside a
 * UTF-8 character (the message must stay valid in the database encoding).
 */
static int
clip(const char *s, size_t len, size_t max)
{
	size_t		n = len;

	if (n > max)
	{
		n = max;
		while (n > 0 && ((unsigned char) s[n] & 0xC0) == 0x80)
			n--;
	}
	return (int) n;
}

/* path + "." + key, or path + "[i]" */
static const char *
join(ParseCtx *c, const char *path, const char *key)
{
	size_t		n = strlen(path) + strlen(key) + 2;
	char	   *s = arena_alloc(&c->arena, n);

	snprintf(s, n, "%s%s%s", path, (path[0] && key[0] != '[') ? "." : "", key);
	return s;
}

static const char *
join_index(ParseCtx *c, const char *path, const char *key, size_t i)
{
	char		k[80];

	snprintf(k, sizeof(k), "%s[%zu]", key, i);
	return join(c, path, k);
}

/* A JSON number or numeric string as an exact decimal at 10^scale, >= 0. */
static bool
get_decimal(ParseCtx *c, const JsonValue *v, const char *path, int scale, cb_int128 *out)
{
	DecParseResult r;

	if (v->type != JSON_NUMBER && v->type != JSON_STRING)
		return bad(c, TARIFF_ERR_INVALID,
				   "tariff field \"%s\" must be a number or a numeric string, not %s",
				   path, json_type_name(v->type));
	r = dec_parse(v->str, v->len, scale, out);
	switch (r)
	{
		case DEC_OK:
			break;
		case DEC_SYNTAX:
			return bad(c, TARIFF_ERR_SYNTAX, "tariff field \"%s\": \"%.*s\" is not a number",
					   path, clip(v->str, v->len, 40), v->str);
		case DEC_TOO_PRECISE:
			return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" has more than %d decimal places",
					   path, scale == QTY_DECIMALS ? QTY_DECIMALS : scale);
		case DEC_OVERFLOW:
			return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" is out of range", path);
	}
	if (*out < 0)
		return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" must not be negative", path);
	return true;
}

static bool
get_positive_qty(ParseCtx *c, const JsonValue *v, const char *path, cb_int128 *out)
{
	if (!get_decimal(c, v, path, QTY_DECIMALS, out))
		return false;
	if (*out == 0)
		return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" must be greater than zero", path);
	return true;
}

static bool
get_price(ParseCtx *c, const JsonValue *v, const char *path, cb_i128 *out)
{
	cb_int128	x;

	if (!get_decimal(c, v, path, PRICE_DECIMALS, &x))
		return false;
	*out = i128_store(x);
	return true;
}

static bool
get_string(ParseCtx *c, const JsonValue *v, const char *path, size_t maxlen, const char **s)
{
	if (v->type != JSON_STRING)
		return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" must be a string, not %s",
				   path, json_type_name(v->type));
	if (v->len == 0 || v->len > maxlen)
		return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" must be 1 to %zu bytes long",
				   path, maxlen);
	*s = v->str;
	return true;
}

static bool
expect_object(ParseCtx *c, const JsonValue *v, const char *path)
{
	if (v->type != JSON_OBJECT)
		return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" must be an object, not %s",
				   path[0] ? path : "(top level)", json_type_name(v->type));
	return true;
}

/* Reject keys of obj that are not in allowed[]. */
static bool
check_keys(ParseCtx *c, const JsonValue *obj, const char *path, const char *const *allowed)
{
	for (size_t i = 0; i < obj->count; i++)
	{
		const JsonMember *m = &obj->members[i];
		bool		ok = false;

		for (const char *const *a = allowed; *a; a++)
			if (strlen(*a) == m->keylen && memcmp(*a, m->key, m->keylen) == 0)
				ok = true;
		if (!ok)
			return bad(c, TARIFF_ERR_INVALID, "unknown tariff field \"%s\"",
					   join(c, path, m->key));
	}
	return true;
}

/* Tiers of a graduated or volume pricing: ascending up_to, last one unbounded. */
static bool
parse_tiers(ParseCtx *c, const JsonValue *v, const char *path, TariffPricing *p)
{
	static const char *const tier_keys[] = {"up_to", "price", "flat", NULL};
	cb_int128	prev = 0;

	if (v->type != JSON_ARRAY)
		return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" must be an array, not %s",
				   path, json_type_name(v->type));
	if (v->count == 0)
		return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" must have at least one tier", path);
	if (v->count > TARIFF_MAX_TIERS)
		return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" has %zu tiers; the limit is %d",
				   path, v->count, TARIFF_MAX_TIERS);
	p->ntiers = (int32_t) v->count;
	p->tier_off = c->ntiers;	/* index for now; made a byte offset at assembly */
	for (size_t i = 0; i < v->count; i++)
	{
		const JsonValue *tv = &v->items[i];
		const char *tpath = join_index(c, "", path, i);
		TariffTier *tier = &c->tiers[c->ntiers++];
		const JsonValue *up_to,
				   *f;
		bool		last = (i == v->count - 1);

		if (!expect_object(c, tv, tpath) || !check_keys(c, tv, tpath, tier_keys))
			return false;
		up_to = json_get(tv, "up_to");
		if (up_to == NULL)
			return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" is required (null for the last tier)",
					   join(c, tpath, "up_to"));
		if (up_to->type == JSON_NULL)
		{
			if (!last)
				return bad(c, TARIFF_ERR_INVALID,
						   "tariff field \"%s\": only the last tier may be unbounded (null)",
						   join(c, tpath, "up_to"));
			tier->unbounded = 1;
		}
		else
		{
			cb_int128	u;

			if (last)
				return bad(c, TARIFF_ERR_INVALID,
						   "tariff field \"%s\": the last tier must be unbounded (\"up_to\": null)",
						   join(c, tpath, "up_to"));
			if (!get_positive_qty(c, up_to, join(c, tpath, "up_to"), &u))
				return false;
			if (u <= prev)
				return bad(c, TARIFF_ERR_INVALID,
						   "tariff field \"%s\" must be greater than the previous tier's (tiers must be ascending)",
						   join(c, tpath, "up_to"));
			tier->up_to = i128_store(u);
			prev = u;
		}
		if ((f = json_get(tv, "price")) && !get_price(c, f, join(c, tpath, "price"), &tier->price))
			return false;
		if ((f = json_get(tv, "flat")) && !get_price(c, f, join(c, tpath, "flat"), &tier->flat))
			return false;
	}
	return true;
}

/* The pricing part of a tariff: model and its fields, setup fee, minimum, maximum. */
static bool
parse_pricing(ParseCtx *c, const JsonValue *obj, const char *path, TariffPricing *p)
{
	const JsonValue *v;
	const JsonValue *price = json_get(obj, "price");
	const JsonValue *tiers = json_get(obj, "tiers");
	const JsonValue *package = json_get(obj, "package");
	const JsonValue *percentage = json_get(obj, "percentage");
	const char *model_field = NULL;

	p->model = MODEL_FLAT;
	if ((v = json_get(obj, "model")) != NULL)
	{
		bool		found = false;

		if (v->type != JSON_STRING)
			return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" must be a string, not %s",
					   join(c, path, "model"), json_type_name(v->type));
		for (int m = 0; m < 5; m++)
			if (strlen(model_names[m]) == v->len && memcmp(model_names[m], v->str, v->len) == 0)
			{
				p->model = m;
				found = true;
			}
		if (!found)
			return bad(c, TARIFF_ERR_INVALID,
					   "tariff field \"%s\": unknown model \"%.*s\" (expected flat, graduated, volume, package or percentage)",
					   join(c, path, "model"), clip(v->str, v->len, 40), v->str);
	}

	/* exactly the field its model uses */
	switch ((TariffModel) p->model)
	{
		case MODEL_FLAT:
			model_field = "price";
			break;
		case MODEL_GRADUATED:
		case MODEL_VOLUME:
			model_field = "tiers";
			break;
		case MODEL_PACKAGE:
			model_field = "package";
			break;
		case MODEL_PERCENTAGE:
			model_field = "percentage";
			break;
	}
	{
		const char *fields[] = {"price", "tiers", "package", "percentage"};
		const JsonValue *vals[] = {price, tiers, package, percentage};

		for (int i = 0; i < 4; i++)
		{
			bool		wanted = strcmp(fields[i], model_field) == 0;

			if (wanted && vals[i] == NULL)
				return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" is required by model \"%s\"",
						   join(c, path, fields[i]), model_names[p->model]);
			if (!wanted && vals[i] != NULL)
				return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" is not used by model \"%s\"",
						   join(c, path, fields[i]), model_names[p->model]);
		}
	}

	if (price && !get_price(c, price, join(c, path, "price"), &p->price))
		return false;
	if (tiers && !parse_tiers(c, tiers, join(c, path, "tiers"), p))
		return false;
	if (package)
	{
		static const char *const keys[] = {"size", "price", "free", NULL};
		const char *pp = join(c, path, "package");
		cb_int128	x;

		if (!expect_object(c, package, pp) || !check_keys(c, package, pp, keys))
			return false;
		if ((v = json_get(package, "size")) == NULL)
			return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" is required", join(c, pp, "size"));
		if (!get_positive_qty(c, v, join(c, pp, "size"), &x))
			return false;
		p->pkg_size = i128_store(x);
		if ((v = json_get(package, "price")) == NULL)
			return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" is required", join(c, pp, "price"));
		if (!get_price(c, v, join(c, pp, "price"), &p->pkg_price))
			return false;
		if ((v = json_get(package, "free")) != NULL)
		{
			if (!get_decimal(c, v, join(c, pp, "free"), QTY_DECIMALS, &x))
				return false;
			p->pkg_free = i128_store(x);
		}
	}
	if (percentage)
	{
		static const char *const keys[] = {"rate", "fixed", NULL};
		const char *pp = join(c, path, "percentage");
		cb_int128	x;

		if (!expect_object(c, percentage, pp) || !check_keys(c, percentage, pp, keys))
			return false;
		if ((v = json_get(percentage, "rate")) == NULL)
			return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" is required", join(c, pp, "rate"));
		/* R percent with up to 10 decimals is the fraction R/100 at 10^12 */
		if (!get_decimal(c, v, join(c, pp, "rate"), PRICE_DECIMALS - 2, &x))
			return false;
		p->pct_rate = i128_store(x);
		if ((v = json_get(percentage, "fixed")) != NULL &&
			!get_price(c, v, join(c, pp, "fixed"), &p->pct_fixed))
			return false;
	}
	if ((v = json_get(obj, "setup_fee")) && !get_price(c, v, join(c, path, "setup_fee"), &p->setup_fee))
		return false;
	if ((v = json_get(obj, "minimum")) != NULL)
	{
		if (!get_price(c, v, join(c, path, "minimum"), &p->minimum))
			return false;
		p->flags |= PRICING_HAS_MIN;
	}
	if ((v = json_get(obj, "maximum")) != NULL)
	{
		if (!get_price(c, v, join(c, path, "maximum"), &p->maximum))
			return false;
		p->flags |= PRICING_HAS_MAX;
	}
	if ((p->flags & PRICING_HAS_MIN) && (p->flags & PRICING_HAS_MAX) &&
		i128_load(p->minimum) > i128_load(p->maximum))
		return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" must not be less than \"minimum\"",
				   join(c, path, "maximum"));
	return true;
}

/* "HH:MM" or "HH:MM:SS", 00:00 to 24:00, as seconds of the day. */
static bool
parse_time(ParseCtx *c, const JsonValue *v, const char *path, int *sec)
{
	int			h,
				m,
				s = 0;

	if (v->type != JSON_STRING)
		return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" must be a time string \"HH:MM\", not %s",
				   path, json_type_name(v->type));
#define D(i) (v->str[i] >= '0' && v->str[i] <= '9')
#define N(i) (v->str[i] - '0')
	if (!((v->len == 5 && D(0) && D(1) && v->str[2] == ':' && D(3) && D(4)) ||
		  (v->len == 8 && D(0) && D(1) && v->str[2] == ':' && D(3) && D(4) && v->str[5] == ':' && D(6) && D(7))))
		return bad(c, TARIFF_ERR_SYNTAX, "tariff field \"%s\": \"%.*s\" is not a time \"HH:MM\" or \"HH:MM:SS\"",
				   path, clip(v->str, v->len, 20), v->str);
	h = N(0) * 10 + N(1);
	m = N(3) * 10 + N(4);
	if (v->len == 8)
		s = N(6) * 10 + N(7);
#undef D
#undef N
	if (h > 24 || m > 59 || s > 59 || (h == 24 && (m != 0 || s != 0)))
		return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\": \"%.*s\" is not a time between 00:00 and 24:00",
				   path, (int) v->len, v->str);
	*sec = h * 3600 + m * 60 + s;
	return true;
}

/* One time band: days, from, to, name and its nested pricing. */
static bool
parse_band(ParseCtx *c, const JsonValue *bv, const char *bpath, TariffBand *b)
{
	static const char *const band_keys[] = {"name", "days", "from", "to", "tariff", NULL};
	static const char *const band_tariff_keys[] = {"model", "price", "tiers", "package", "percentage",
	"setup_fee", "minimum", "maximum", NULL};
	static const char *const top_only[] = {"increment", "rounding", "scope", "time_bands", "currency", "unit", NULL};
	const JsonValue *v;

	if (!expect_object(c, bv, bpath) || !check_keys(c, bv, bpath, band_keys))
		return false;
	if ((v = json_get(bv, "name")) != NULL)
	{
		const char *s;

		if (!get_string(c, v, join(c, bpath, "name"), TARIFF_MAX_TEXT, &s))
			return false;
		memcpy(b->name, s, v->len);
	}
	b->days = 0x7f;
	if ((v = json_get(bv, "days")) != NULL)
	{
		const char *dpath = join(c, bpath, "days");

		if (v->type != JSON_ARRAY || v->count == 0)
			return bad(c, TARIFF_ERR_INVALID,
					   "tariff field \"%s\" must be a non-empty array of \"mon\" .. \"sun\"", dpath);
		b->days = 0;
		for (size_t i = 0; i < v->count; i++)
		{
			const JsonValue *d = &v->items[i];
			int			found = -1;

			if (d->type == JSON_STRING && d->len == 3)
				for (int k = 0; k < 7; k++)
					if (memcmp(day_names[k], d->str, 3) == 0)
						found = k;
			if (found < 0)
				return bad(c, TARIFF_ERR_INVALID,
						   "tariff field \"%s\" is not a day (expected \"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\" or \"sun\")",
						   join_index(c, "", dpath, i));
			if (b->days & (1 << found))
				return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\": day \"%s\" is listed twice",
						   join_index(c, "", dpath, i), day_names[found]);
			b->days |= 1 << found;
		}
	}
	b->from_sec = 0;
	b->to_sec = 86400;
	if ((v = json_get(bv, "from")) && !parse_time(c, v, join(c, bpath, "from"), &b->from_sec))
		return false;
	if ((v = json_get(bv, "to")) && !parse_time(c, v, join(c, bpath, "to"), &b->to_sec))
		return false;
	if (b->from_sec >= b->to_sec)
		return bad(c, TARIFF_ERR_INVALID,
				   "tariff field \"%s\" must be later than \"from\" (a band crossing midnight is written as two bands)",
				   join(c, bpath, "to"));
	if ((v = json_get(bv, "tariff")) == NULL)
		return bad(c, TARIFF_ERR_INVALID, "tariff field \"%s\" is required", join(c, bpath, "tariff"));
	{
		const char *tpath = join(c, bpath, "tariff");

		if (!expect_object(c, v, tpath))
			return false;
		for (const char *const *k = top_only; *k; k++)
			if (json_get(v, *k) != NULL)
				return bad(c, TARIFF_ERR_INVALID,
						   strcmp(*k, "time_bands") == 0
						   ? "tariff field \"%s\" is not allowed: time bands do not nest"
						   : "tariff field \"%s\" is not allowed in a time band's tariff (it stays the top level's)",
						   join(c, tpath, *k));
		if (!check_keys(c, v, tpath, band_tariff_keys))
			return false;
		return parse_pricing(c, v, tpath, &b->pricing);
	}
}

/* The whole tariff object. */
static bool
parse_top(ParseCtx *c, const JsonValue *root, Tariff *t)
{
	static const char *const top_keys[] = {"model", "price", "tiers", "package", "percentage",
		"increment", "setup_fee", "minimum", "maximum", "time_bands", "scope", "rounding",
	"currency", "unit", NULL};
	const JsonValue *v;

	if (!expect_object(c, root, "") || !check_keys(c, root, "", top_keys))
		return false;
	if (!parse_pricing(c, root, "", &t->top))
		return false;

	t->round_decimals = 6;
	t->round_mode = ROUND_HALF_UP;
	if ((v = json_get(root, "rounding")) != NULL)
	{
		static const char *const keys[] = {"decimals", "mode", NULL};
		const JsonValue *f;

		if (!expect_object(c, v, "rounding") || !check_keys(c, v, "rounding", keys))
			return false;
		if ((f = json_get(v, "decimals")) != NULL)
		{
			cb_int128	d;

			if (f->type != JSON_NUMBER || dec_parse(f->str, f->len, 0, &d) != DEC_OK ||
				d < 0 || d > MAX_ROUND_DECIMALS)
				return bad(c, TARIFF_ERR_INVALID,
						   "tariff field \"rounding.decimals\" must be an integer from 0 to %d",
						   MAX_ROUND_DECIMALS);
			t->round_decimals = (int32_t) d;
		}
		if ((f = json_get(v, "mode")) != NULL)
		{
			bool		found = false;

			if (f->type == JSON_STRING)
				for (int m = 0; m < 4; m++)
					if (strlen(mode_names[m]) == f->len && memcmp(mode_names[m], f->str, f->len) == 0)
					{
						t->round_mode = m;
						found = true;
					}
			if (!found)
				return bad(c, TARIFF_ERR_INVALID,
						   "tariff field \"rounding.mode\" must be \"half_up\", \"half_even\", \"up\" or \"down\"");
		}
	}

	if ((v = json_get(root, "increment")) != NULL)
	{
		static const char *const keys[] = {"first", "next", NULL};
		const JsonValue *f;
		cb_int128	x;

		if (!expect_object(c, v, "increment") || !check_keys(c, v, "increment", keys))
			return false;
		if ((f = json_get(v, "first")) == NULL)
			return bad(c, TARIFF_ERR_INVALID, "tariff field \"increment.first\" is required");
		if (!get_positive_qty(c, f, "increment.first", &x))
			return false;
		t->inc_first = i128_store(x);
		if ((f = json_get(v, "next")) == NULL)
			return bad(c, TARIFF_ERR_INVALID, "tariff field \"increment.next\" is required");
		if (!get_positive_qty(c, f, "increment.next", &x))
			return false;
		t->inc_next = i128_store(x);
		t->flags |= TARIFF_HAS_INCREMENT;
	}

	t->scope = SCOPE_EVENT;
	if ((v = json_get(root, "scope")) != NULL)
	{
		if (v->type == JSON_STRING && v->len == 5 && memcmp(v->str, "event", 5) == 0)
			t->scope = SCOPE_EVENT;
		else if (v->type == JSON_STRING && v->len == 5 && memcmp(v->str, "cycle", 5) == 0)
			t->scope = SCOPE_CYCLE;
		else
			return bad(c, TARIFF_ERR_INVALID, "tariff field \"scope\" must be \"event\" or \"cycle\"");
	}

	if ((v = json_get(root, "currency")) != NULL)
	{
		if (v->type != JSON_STRING || currency_exponent(v->str, (int) v->len) < 0)
			return bad(c, TARIFF_ERR_INVALID,
					   "tariff field \"currency\" must be an ISO 4217 currency code such as \"EUR\"");
		memcpy(t->currency, v->str, 3);
	}
	if ((v = json_get(root, "unit")) != NULL)
	{
		const char *s;

		if (!get_string(c, v, "unit", TARIFF_MAX_TEXT, &s))
			return false;
		memcpy(t->unit, s, v->len);
	}

	if ((v = json_get(root, "time_bands")) != NULL)
	{
		if (v->type != JSON_ARRAY)
			return bad(c, TARIFF_ERR_INVALID, "tariff field \"time_bands\" must be an array, not %s",
					   json_type_name(v->type));
		if (v->count > TARIFF_MAX_BANDS)
			return bad(c, TARIFF_ERR_INVALID, "tariff field \"time_bands\" has %zu bands; the limit is %d",
					   v->count, TARIFF_MAX_BANDS);
		if (v->count > 0 && t->scope == SCOPE_CYCLE)
			return bad(c, TARIFF_ERR_INVALID,
					   "tariff field \"time_bands\" is not allowed with \"scope\": \"cycle\"");
		for (size_t i = 0; i < v->count; i++)
		{
			if (!parse_band(c, &v->items[i], join_index(c, "", "time_bands", i), &c->bands[c->nbands]))
				return false;
			c->nbands++;
		}
	}
	return true;
}

/* Parse and validate JSON text into a freshly allocated binary tariff. */
Tariff *
tariff_parse(const char *json, size_t len, TariffError *err)
{
	ParseCtx	c;
	JsonValue  *root;
	Tariff		head;
	Tariff	   *t = NULL;
	char		jerr[200];

	memset(&c, 0, sizeof(c));
	memset(&head, 0, sizeof(head));
	c.err = err;
	err->kind = TARIFF_OK;
	err->msg[0] = '\0';

	root = json_parse(&c.arena, json, len, jerr, sizeof(jerr));
	if (root == NULL)
	{
		bad(&c, TARIFF_ERR_SYNTAX, "invalid JSON in tariff: %s", jerr);
		goto done;
	}
	c.tiers = arena_alloc(&c.arena, sizeof(TariffTier) * MAX_ALL_TIERS);
	c.bands = arena_alloc(&c.arena, sizeof(TariffBand) * TARIFF_MAX_BANDS);
	if (!parse_top(&c, root, &head))
		goto done;

	/* assemble: header, bands, then all tiers; tier indexes become byte offsets */
	{
		size_t		band_off = sizeof(Tariff);
		size_t		tier_base = band_off + sizeof(TariffBand) * (size_t) c.nbands;
		size_t		size = tier_base + sizeof(TariffTier) * (size_t) c.ntiers;

		head.version = TARIFF_VERSION;
		head.nbands = c.nbands;
		head.band_off = (int32_t) band_off;
		head.vl_len_ = (int32_t) size;
		head.top.tier_off = (int32_t) (tier_base + sizeof(TariffTier) * (size_t) head.top.tier_off);
		for (int i = 0; i < c.nbands; i++)
			c.bands[i].pricing.tier_off =
				(int32_t) (tier_base + sizeof(TariffTier) * (size_t) c.bands[i].pricing.tier_off);
		t = cb_malloc(size);
		memset(t, 0, size);
		memcpy(t, &head, sizeof(Tariff));
		memcpy((char *) t + band_off, c.bands, sizeof(TariffBand) * (size_t) c.nbands);
		memcpy((char *) t + tier_base, c.tiers, sizeof(TariffTier) * (size_t) c.ntiers);
	}
done:
	arena_free_all(&c.arena);
	return t;
}
