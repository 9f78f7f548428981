/*
 * json_lite.c — a small strict recursive-descent JSON reader.
 *
 * Tariffs arrive as JSON text once, at input time; this reader turns them into a
 * DOM that tariff_parse.c validates and compiles into the binary tariff.  It is
 * strict (no comments, no trailing commas, no duplicate keys), bounds nesting at
 * JSON_MAX_DEPTH so no input can exhaust the stack, and never reads past len.
 */
#include "json_lite.h"

#include <stdio.h>
#include <string.h>

#ifdef CONVBILL_STANDALONE
#include <stdlib.h>
void *
cb_malloc(size_t size)
{
	void	   *p = malloc(size);

	if (p == NULL)
		abort();
	return p;
}

void
cb_free(void *p)
{
	free(p);
}
#endif

struct ArenaBlock
{
	ArenaBlock *next;
	size_t		size;
	size_t		used;
	/* data follows, 16-byte aligned */
};

#define ARENA_HDR ((sizeof(ArenaBlock) + 15) & ~(size_t) 15)
#define ARENA_BLOCK 8192

/* Allocate zeroed, 16-byte aligned memory from the arena. */
void *
arena_alloc(Arena *a, size_t size)
{
	ArenaBlock *b = a->blocks;
	void	   *p;

	size = (size + 15) & ~(size_t) 15;
	if (b == NULL || b->size - b->used < size)
	{
		size_t		bsize = size > ARENA_BLOCK ? size : ARENA_BLOCK;

		b = cb_malloc(ARENA_HDR + bsize);
		b->next = a->blocks;
		b->size = bsize;
		b->used = 0;
		a->blocks = b;
	}
	p = (char *) b + ARENA_HDR + b->used;
	b->used += size;
	memset(p, 0, size);
	return p;
}

/* Free every block of the arena. */
void
arena_free_all(Arena *a)
{
	while (a->blocks)
	{
		ArenaBlock *n = a->blocks->next;

		cb_free(a->blocks);
		a->blocks = n;
	}
}

typedef struct Parser
{
	Arena	   *arena;
	const char *s;
	size_t		len;
	size_t		pos;
	char	   *err;
	size_t		errlen;
	bool		failed;
} Parser;

static bool parse_value(Parser *p, JsonValue *out, int depth);

/* Record the first error with the byte position it happened at. */
static bool
fail(Parser *p, const char *what)
{
	if (!p->failed)
	{
		snprintf(p->err, p->errlen, "%s at byte %zu", what, p->pos + 1);
		p->failed = true;
	}
	return false;
}

static void
skip_ws(Parser *p)
{
	while (p->pos < p->len)
	{
		char		c = p->s[p->pos];

		if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
			p->pos++;
		else
			break;
	}
}

static bool
match_word(Parser *p, const char *w)
{
	size_t		n = strlen(w);

	if (p->len - p->pos >= n && memcmp(p->s + p->pos, w, n) == 0)
	{
		p->pos += n;
		return true;
	}
	return false;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool
read_hex4(Parser *p, unsigned *cp)
{
	unsigned	v = 0;

	if (p->len - p->pos < 4)
		return fail(p, "truncated \\u escape");
	for (int i = 0; i < 4; i++)
	{
		int			h = hexval(p->s[p->pos + i]);

		if (h < 0)
			return fail(p, "invalid \\u escape");
		v = v * 16 + (unsigned) h;
	}
	p->pos += 4;
	*cp = v;
	return true;
}

/* Parse a string literal (p->pos at the opening quote) into decoded UTF-8. */
static bool
parse_string(Parser *p, const char **out, size_t *outlen)
{
	size_t		start = ++p->pos;
	size_t		cap;
	char	   *buf;
	size_t		n = 0;

	/* decoded text is never longer than the raw text */
	while (p->pos < p->len && p->s[p->pos] != '"')
	{
		if (p->s[p->pos] == '\\')
			p->pos++;
		p->pos++;
	}
	if (p->pos >= p->len)
		return fail(p, "unterminated string");
	cap = p->pos - start + 1;
	buf = arena_alloc(p->arena, cap);
	p->pos = start;
	while (p->s[p->pos] != '"')
	{
		unsigned char c = (unsigned char) p->s[p->pos];

		if (c < 0x20)
			return fail(p, "control character in string");
		if (c != '\\')
		{
			buf[n++] = (char) c;
			p->pos++;
			continue;
		}
		p->pos++;
		c = (unsigned char) p->s[p->pos++];
		switch (c)
		{
			case '"':
			case '\\':
			case '/':
				buf[n++] = (char) c;
				break;
			case 'b':
				buf[n++] = '\b';
				break;
			case 'f':
				buf[n++] = '\f';
				break;
			case 'n':
				buf[n++] = '\n';
				break;
			case 'r':
				buf[n++] = '\r';
				break;
			case 't':
				buf[n++] = '\t';
				break;
			case 'u':
				{
					unsigned	cp;

					if (!read_hex4(p, &cp))
						return false;
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						unsigned	lo;

						if (!(p->len - p->pos >= 2 && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u'))
							return fail(p, "lone surrogate in \\u escape");
						p->pos += 2;
						if (!read_hex4(p, &lo))
							return false;
						if (lo < 0xDC00 || lo > 0xDFFF)
							return fail(p, "invalid surrogate pair in \\u escape");
						cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					}
					else if (cp >= 0xDC00 && cp <= 0xDFFF)
						return fail(p, "lone surrogate in \\u escape");
					if (cp == 0)
						return fail(p, "\\u0000 is not allowed");
					/* a \u escape (four hex digits) is 6 raw bytes and decodes to at most 4 */
					if (cp < 0x80)
						buf[n++] = (char) cp;
					else if (cp < 0x800)
					{
						buf[n++] = (char) (0xC0 | (cp >> 6));
						buf[n++] = (char) (0x80 | (cp & 0x3F));
					}
					else if (cp < 0x10000)
					{
						buf[n++] = (char) (0xE0 | (cp >> 12));
						buf[n++] = (char) (0x80 | ((cp >> 6) & 0x3F));
						buf[n++] = (char) (0x80 | (cp & 0x3F));
					}
					else
					{
						buf[n++] = (char) (0xF0 | (cp >> 18));
						buf[n++] = (char) (0x80 | ((cp >> 12) & 0x3F));
						buf[n++] = (char) (0x80 | ((cp >> 6) & 0x3F));
						buf[n++] = (char) (0x80 | (cp & 0x3F));
					}
					break;
				}
			default:
				p->pos--;
				return fail(p, "invalid escape in string");
		}
	}
	p->pos++;					/* closing quote */
	buf[n] = '\0';
	*out = buf;
	*outlen = n;
	return true;
}

/* Parse a number per RFC 8259's grammar; keep its literal text. */
static bool
parse_number(Parser *p, JsonValue *out)
{
	size_t		start = p->pos;

	if (p->pos < p->len && p->s[p->pos] == '-')
		p->pos++;
	if (p->pos >= p->len)
		return fail(p, "invalid number");
	if (p->s[p->pos] == '0')
		p->pos++;
	else if (p->s[p->pos] >= '1' && p->s[p->pos] <= '9')
		while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
			p->pos++;
	else
		return fail(p, "invalid number");
	if (p->pos < p->len && p->s[p->pos] == '.')
	{
		p->pos++;
		if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9')
			return fail(p, "invalid number");
		while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
			p->pos++;
	}
	if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E'))
	{
		p->pos++;
		if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
			p->pos++;
		if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9')
			return fail(p, "invalid number");
		while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
			p->pos++;
	}
	out->type = JSON_NUMBER;
	out->str = p->s + start;
	out->len = p->pos - start;
	return true;
}

/* Parse an array (p->pos at '['). */
static bool
parse_array(Parser *p, JsonValue *out, int depth)
{
	size_t		cap = 4;

	out->type = JSON_ARRAY;
	out->items = arena_alloc(p->arena, cap * sizeof(JsonValue));
	p->pos++;
	skip_ws(p);
	if (p->pos < p->len && p->s[p->pos] == ']')
	{
		p->pos++;
		return true;
	}
	for (;;)
	{
		if (out->count == cap)
		{
			JsonValue  *n = arena_alloc(p->arena, 2 * cap * sizeof(JsonValue));

			memcpy(n, out->items, cap * sizeof(JsonValue));
			out->items = n;
			cap *= 2;
		}
		if (!parse_value(p, &out->items[out->count], depth + 1))
			return false;
		out->count++;
		skip_ws(p);
		if (p->pos < p->len && p->s[p->pos] == ',')
		{
			p->pos++;
			continue;
		}
		if (p->pos < p->len && p->s[p->pos] == ']')
		{
			p->pos++;
			return true;
		}
		return fail(p, "expected ',' or ']' in array");
	}
}

/* Parse an object (p->pos at '{'); duplicate keys are an error. */
static bool
parse_object(Parser *p, JsonValue *out, int depth)
{
	size_t		cap = 8;

	out->type = JSON_OBJECT;
	out->members = arena_alloc(p->arena, cap * sizeof(JsonMember));
	p->pos++;
	skip_ws(p);
	if (p->pos < p->len && p->s[p->pos] == '}')
	{
		p->pos++;
		return true;
	}
	for (;;)
	{
		JsonMember *m;

		skip_ws(p);
		if (p->pos >= p->len || p->s[p->pos] != '"')
			return fail(p, "expected a string key in object");
		if (out->count == cap)
		{
			JsonMember *n = arena_alloc(p->arena, 2 * cap * sizeof(JsonMember));

			memcpy(n, out->members, cap * sizeof(JsonMember));
			out->members = n;
			cap *= 2;
		}
		m = &out->members[out->count];
		if (!parse_string(p, &m->key, &m->keylen))
			return false;
		for (size_t i = 0; i < out->count; i++)
			if (out->members[i].keylen == m->keylen &&
				memcmp(out->members[i].key, m->key, m->keylen) == 0)
				return fail(p, "duplicate key in object");
		skip_ws(p);
		if (p->pos >= p->len || p->s[p->pos] != ':')
			return fail(p, "expected ':' after object key");
		p->pos++;
		if (!parse_value(p, &m->value, depth + 1))
			return false;
		out->count++;
		skip_ws(p);
		if (p->pos < p->len && p->s[p->pos] == ',')
		{
			p->pos++;
			continue;
		}
		if (p->pos < p->len && p->s[p->pos] == '}')
		{
			p->pos++;
			return true;
		}
		return fail(p, "expected ',' or '}' in object");
	}
}

static bool
parse_value(Parser *p, JsonValue *out, int depth)
{
	if (depth > JSON_MAX_DEPTH)
		return fail(p, "nesting too deep");
	skip_ws(p);
	if (p->pos >= p->len)
		return fail(p, "unexpected end of input");
	switch (p->s[p->pos])
	{
		case '{':
			return parse_object(p, out, depth);
		case '[':
			return parse_array(p, out, depth);
		case '"':
			out->type = JSON_STRING;
			return parse_string(p, &out->str, &out->len);
		case 't':
			if (!match_word(p, "true"))
				return fail(p, "invalid literal");
			out->type = JSON_BOOL;
			out->boolean = true;
			return true;
		case 'f':
			if (!match_word(p, "false"))
				return fail(p, "invalid literal");
			out->type = JSON_BOOL;
			return true;
		case 'n':
			if (!match_word(p, "null"))
				return fail(p, "invalid literal");
			out->type = JSON_NULL;
			return true;
		default:
			return parse_number(p, out);
	}
}

/* Parse a whole document. */
JsonValue *
json_parse(Arena *a, const char *text, size_t len, char *err, size_t errlen)
{
	Parser		p = {a, text, len, 0, err, errlen, false};
	JsonValue  *root = arena_alloc(a, sizeof(JsonValue));

	if (!parse_value(&p, root, 0))
		return NULL;
	skip_ws(&p);
	if (p.pos != len)
	{
		fail(&p, "unexpected text after the JSON value");
		return NULL;
	}
	return root;
}

/* Member of an object by key, or NULL. */
const JsonValue *
json_get(const JsonValue *obj, const char *key)
{
	size_t		n = strlen(key);

	if (obj == NULL || obj->type != JSON_OBJECT)
		return NULL;
	for (size_t i = 0; i < obj->count; i++)
		if (obj->members[i].keylen == n && memcmp(obj->members[i].key, key, n) == 0)
			return &obj->members[i].value;
	return NULL;
}

/* Name of a JSON type, for messages. */
const char *
json_type_name(JsonType t)
{
	switch (t)
	{
		case JSON_NULL:
			return "null";
		case JSON_BOOL:
			return "boolean";
		case JSON_NUMBER:
			return "number";
		case JSON_STRING:
			return "string";
		case JSON_ARRAY:
			return "array";
		case JSON_OBJECT:
			return "object";
	}
	return "unknown";
}
