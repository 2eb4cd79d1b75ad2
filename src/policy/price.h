/*
 * price.h: the price table and the arithmetic of cost.
 *
 * Prices are integer micro-dollars per one million tokens (so $0.15 / 1M tokens is 150000),
 * read from the built-in data file (data/prices.json, embedded at build time) and overridden
 * by the config. A request's cost is
 *     ceil(((prompt - cached) * input + cached * cached_input + completion * output) / 1e6)
 * micro-dollars: rounded up once per request, so tollgate never under-bills, and exact in
 * 64-bit integers for any realistic token count (the sum is checked for overflow).
 */
#ifndef TG_POLICY_PRICE_H
#define TG_POLICY_PRICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upstream/api.h"

struct tg_price {
    char model[96];
    int64_t input_micros;        /* per 1M input tokens */
    int64_t cached_input_micros; /* per 1M cached input tokens (defaults to input) */
    int64_t output_micros;       /* per 1M output tokens */
};

struct tg_price_table;

/* An empty table. */
struct tg_price_table *tg_price_table_new(void);
void tg_price_table_free(struct tg_price_table *t);

/*
 * Adds the prices in a JSON document of the form
 *   {"models": {"gpt-4o-mini": {"input": "0.15", "cached_input": "0.075", "output": "0.60"}}}
 * (USD per 1M tokens as decimal strings or numbers). Returns 0, or TG_EPARSE with a message.
 */
int tg_price_table_load_json(struct tg_price_table *t, const char *json, size_t len, char *err,
                             size_t err_cap);

/* Loads the built-in table (data/prices.json). */
int tg_price_table_load_builtin(struct tg_price_table *t, char *err, size_t err_cap);

/* Adds or replaces one model's prices. */
void tg_price_table_set(struct tg_price_table *t, const struct tg_price *p);

/*
 * The prices for model: an exact match, else the longest entry that is a prefix of model
 * followed by '-' (so "gpt-4o-mini-2024-07-18" finds "gpt-4o-mini"). NULL when none.
 */
const struct tg_price *tg_price_lookup(const struct tg_price_table *t, const char *model);

/* Number of entries, and entry i (for listing). */
size_t tg_price_table_count(const struct tg_price_table *t);
const struct tg_price *tg_price_table_at(const struct tg_price_table *t, size_t i);

/* Cost of usage at prices p, in micro-dollars (see the formula above). p NULL costs 0. */
int64_t tg_price_cost_micros(const struct tg_price *p, const struct tg_usage *u);

/* Parses a USD decimal ("0.15", "2", "1.234567") into micro-dollars exactly. More than six
 * decimals, signs, exponents or junk: TG_EPARSE. */
int tg_price_parse_usd(const char *s, int64_t *micros_out);

/* Formats micro-dollars as a USD decimal with six places ("0.000150") into out. */
void tg_price_format_usd(int64_t micros, char *out, size_t cap);

#endif
