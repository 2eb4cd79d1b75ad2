/*
 * quota.h: the arithmetic and the wording of limits and budgets on the inference path, kept
 * apart from the relay (proxy.c) so it can be tested without sockets.
 *
 * Two prompt measures, on purpose different:
 *   - rate limits count tokens as OpenAI does at admission: ceil(characters / 4) of the text
 *     the request sends (message contents, prompts, inputs, instructions), plus the output
 *     cap x n; settling refunds the difference, so a rough estimate costs nothing lasting;
 *   - budgets need an upper bound, since an admitted request must never spend more than its
 *     reservation: the request body's length in bytes. Every token of a byte-level BPE
 *     tokenizer encodes at least one byte of text, and the JSON around the text (roles,
 *     quotes, keys) holds at least as many bytes as the few tokens a chat format adds per
 *     message. (Images and audio referenced by URL are not bounded this way; see
 *     docs/internals.md.)
 */
#ifndef TG_GATEWAY_QUOTA_H
#define TG_GATEWAY_QUOTA_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "policy/admission.h"
#include "policy/price.h"

/* The output cap assumed for a request that names none and has no budget cap (tokens). */
#define TG_QUOTA_DEFAULT_MAX_TOKENS 4096

/* Go-style duration, as in OpenAI's x-ratelimit-reset-* headers and 429 messages: "20ms",
 * "1s", "17.5s", "6m0s", "1h2m3s". Negative counts as 0. */
void tg_quota_duration(int64_t ms, char *out, size_t cap);

/* Micro-dollars as "$" and a decimal with at least two places: "$100.00", "$0.000150". */
void tg_quota_usd(int64_t micros, char *out, size_t cap);

/* Characters (Unicode code points) of the text in a request member: a string counts whole;
 * arrays count their elements; objects count their "content", "text" and "input" members
 * (chat messages, content parts, Responses items); a number (a token id) counts 4. NULL: 0. */
int64_t tg_quota_text_chars(const json_t *v);

/* OpenAI's admission estimate of a prompt of chars characters: ceil(chars / 4). */
int64_t tg_quota_prompt_tokens(int64_t chars);

/* The most a request can cost: prompt_tokens at the input price (no cache discount) and
 * completion_tokens at the output price, rounded up like every cost. p NULL: 0. */
int64_t tg_quota_cost_bound(const struct tg_price *p, int64_t prompt_tokens,
                            int64_t completion_tokens);

/* The largest output cap k <= max_tokens with tg_quota_cost_bound(p, prompt_tokens, k x n)
 * <= remaining_micros; 0 when not even one token fits. */
int64_t tg_quota_affordable_max_tokens(const struct tg_price *p, int64_t prompt_tokens, int64_t n,
                                       int64_t max_tokens, int64_t remaining_micros);

/* The message of a rate-limit refusal r (verdict TG_ADMIT_RATE_LIMITED), OpenAI's wording:
 * "Rate limit reached for MODEL in project proj_x on requests per min (RPM): Limit 3, Used 3,
 * Requested 1. Please try again in 20s." (or "Request too large ..." when r->is_too_large).
 * level_id names the level that refused. Used is derived from the wait (the counters are a
 * continuously refilling bucket, as OpenAI's are). */
void tg_quota_rate_message(const struct tg_admit_result *r, const char *model, const char *level_id,
                           int64_t requested, char *out, size_t cap);

/* The message of a budget refusal: names the level and its monthly limit in USD. */
void tg_quota_budget_message(enum tg_scope scope, const char *level_id, int64_t limit_micros,
                             char *out, size_t cap);

#endif
