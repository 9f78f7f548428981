/*
 * json_lite.h — a small strict JSON reader (RFC 8259) into a DOM held in an arena.
 * Pure C, no backend calls: the tariff parser uses it, and so does the fuzzer.
 */
#ifndef CONVBILL_JSON_LITE_H
#define CONVBILL_JSON_LITE_H

#include <stdbool.h>
#include <stddef.h>

/* Memory: an arena of blocks freed all at once. */
typedef struct ArenaBlock ArenaBlock;
typedef struct Arena
{
	ArenaBlock *blocks;
} Arena;

extern void *arena_alloc(Arena *a, size_t size);
extern void arena_free_all(Arena *a);

/* Allocation hooks: palloc in the backend, malloc in standalone builds. */
extern void *cb_malloc(size_t size);
extern void cb_free(void *p);

typedef enum JsonType
{
	JSON_NULL,
	JSON_BOOL,
	JSON_NUMBER,
	JSON_STRING,
	JSON_ARRAY,
	JSON_OBJECT
} JsonType;

typedef struct JsonMember JsonMember;

typedef struct JsonValue
{
	JsonType	type;
	bool		boolean;
	const char *str;			/* NUMBER: its literal text; STRING: decoded UTF-8 */
	size_t		len;			/* of str */
	size_t		count;			/* ARRAY: items; OBJECT: members */
	struct JsonValue *items;
	JsonMember *members;
} JsonValue;

struct JsonMember
{
	const char *key;
	size_t		keylen;
	JsonValue	value;
};

#define JSON_MAX_DEPTH 32

/*
 * Parse len bytes of text.  On success returns the root; on failure returns NULL
 * and writes a message into err (errlen bytes).  Duplicate object keys are an error.
 */
extern JsonValue *json_parse(Arena *a, const char *text, size_t len,
							 char *err, size_t errlen);

/* Member of an object by key, or NULL. */
extern const JsonValue *json_get(const JsonValue *obj, const char *key);

/* Name of a JSON type, for messages. */
extern const char *json_type_name(JsonType t);

#endif
