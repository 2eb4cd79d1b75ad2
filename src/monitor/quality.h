/*
 * quality.h: the automatic quality signals of an answer, read from its JSON text without a
 * parse tree (the proxy calls these on every non-stream body and every stream chunk): the
 * first choice's finish_reason, whether the answer carried no output (no text, no tool call,
 * no refusal), and whether the model refused.
 *
 * Each function takes spans of an object tg_json_members has validated already, and only
 * updates what it finds: finish_reason is copied when present and not null, *is_empty is
 * cleared when output is seen, *is_refusal set when a refusal is. A caller sets *is_empty to
 * true before the first call for an answer, so a stream's deltas accumulate.
 */
#ifndef TG_MONITOR_QUALITY_H
#define TG_MONITOR_QUALITY_H

#include <stdbool.h>
#include <stddef.h>

#include "core/json.h"

/* Chat and completions: choices is the "choices" member of an answer or of a stream chunk
 * (the first choice's "message", "delta" or "text" is read). */
void tg_quality_choices(struct tg_json_span choices, char *finish_reason, size_t cap,
                        bool *is_empty, bool *is_refusal);

/* Responses: a response object's "output", "status" and "incomplete_details" members. The
 * finish reason is "stop" for a completed response, "length" for one cut at
 * max_output_tokens, else the incomplete reason. */
void tg_quality_responses(struct tg_json_span output, struct tg_json_span status,
                          struct tg_json_span incomplete, char *finish_reason, size_t cap,
                          bool *is_empty, bool *is_refusal);

#endif
