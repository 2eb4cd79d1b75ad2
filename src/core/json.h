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
