/*
 * json.h: small helpers around jansson that every layer uses.
 *
 * Parsing of peer input goes through tg_json_parse, which checks the nesting depth before
 * jansson sees the bytes (jansson's own limit is fixed at build time) and turns any failure
 * into a message with the position, fit for an OpenAI-style 400.
 */
#ifndef TG_CORE_JSON_H
#define TG_CORE_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* True when the JSON text nests objects/arrays no deeper than max_depth. Strings are skipped
 * correctly; the text need not be valid JSON otherwise (the parser reports that). */
bool tg_json_depth_ok(const char *text, size_t len, int max_depth);

/* True when text is exactly one valid JSON value (RFC 8259, UTF-8 not checked), surrounded
 * only by whitespace. Allocation-free and linear: cheap enough to check every stream event. */
bool tg_json_is_valid(const char *text, size_t len);

/* A piece of a JSON text: a member's value as written. p is NULL when the member is absent. */
struct tg_json_span {
    const char *p;
    size_t len;
};

/*
 * The hot path's alternative to a parse: validates text as one JSON object (as
 * tg_json_is_valid does, and checking that strings are valid UTF-8) and finds the values of its
 * top-level members named in names[0..n): out[i] is the span of names[i]'s value (the last
 * occurrence wins, as with jansson), or {NULL, 0}. Returns 1 when the object is valid and no
 * string in it uses a \u escape (so member names and plain strings compare byte for byte),
 * 0 when it is valid but some string does (the caller should parse it properly), and -1 when it
 * is not a valid JSON object.
 */
int tg_json_members(const char *text, size_t len, const char *const *names, size_t n,
                    struct tg_json_span *out);

/* The most names tg_json_members takes (more: -1). */
#define TG_JSON_MAX_NAMES 64

/* tg_json_members, and -1 also when containers nest deeper than max_depth (the top-level
 * object is depth 1, as with tg_json_depth_ok; at most 512): one pass where a depth check
 * and tg_json_members would be two. */
int tg_json_members_depth(const char *text, size_t len, int max_depth, const char *const *names,
                          size_t n, struct tg_json_span *out);

/* True when span is a JSON string without escapes; sets *s and *len to its contents. */
bool tg_json_span_plain_string(struct tg_json_span span, const char **s, size_t *len);

/* Parses text. On failure returns NULL and writes a one-line reason into err (err_cap bytes),
 * e.g. "Invalid JSON at line 1, column 9: ...", or "JSON nested deeper than 32 levels". */
json_t *tg_json_parse(const char *text, size_t len, int max_depth, char *err, size_t err_cap);

/* Appends the compact serialization of v to out. Returns 0 or TG_ETOOBIG. */
int tg_json_dump_buf(const json_t *v, struct tg_buf *out);

/* Appends s as a JSON string literal (quotes and escapes included). */
int tg_json_quote(struct tg_buf *out, const char *s);

/* Typed getters: return the member if present with that type, else def / NULL. */
const char *tg_json_str(const json_t *obj, const char *key);
int64_t tg_json_int(const json_t *obj, const char *key, int64_t def);
bool tg_json_bool(const json_t *obj, const char *key, bool def);

/* Appends an OpenAI error body: {"error":{"message":..,"type":..,"param":..,"code":..}}.
 * param and code may be NULL (serialized as null). */
int tg_json_error_body(struct tg_buf *out, const char *message, const char *type, const char *param,
                       const char *code);

#endif
