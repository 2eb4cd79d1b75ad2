/*
 * microbatch.h: embedding micro-batching, the pure parts (issue 5 part 8).
 *
 * A project with "embedding_batching": {"enabled": true, "window_ms": 5, "max_inputs": 256}
 * has its single embeddings requests (same route, model and parameters but "input" and
 * "user") merged on a worker into one upstream request whose input is the concatenation of
 * theirs; the answer is split back per caller (its own data items re-indexed from 0, its share
 * of the usage). proxy.c holds the batches; this file parses, merges and splits, so the
 * arithmetic is testable without a loop.
 */
#ifndef TG_GATEWAY_MICROBATCH_H
#define TG_GATEWAY_MICROBATCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define TG_MB_WINDOW_MS_MAX 50
#define TG_MB_MAX_INPUTS_MAX 2048

struct tg_mb_settings {
    bool enabled;
    int window_ms;  /* 1..50, default 5 */
    int max_inputs; /* 1..2048, default 256 */
};

/* Parses a project's "embedding_batching" member (an object; absent members take their
 * defaults). Returns 0, or -1 with a sentence in err. */
int tg_mb_settings_parse(const json_t *v, struct tg_mb_settings *out, char *err, size_t err_cap);

/* The settings of a project's settings JSON text: disabled when absent or invalid. */
void tg_mb_settings_of_project(const char *settings_json, struct tg_mb_settings *out);

/* Splits total among n parts in proportion to weights (all weights zero: equal weights), the
 * remainder given out one by one to the parts with the largest fractional shares (ties to the
 * earlier part), so the shares sum exactly to total. */
void tg_mb_split(int64_t total, const int64_t *weights, size_t n, int64_t *out);

/* One caller's request, as the batch needs it. */
struct tg_mb_req {
    json_t *body;    /* the request object without "input" and "user" (owned) */
    json_t *inputs;  /* its inputs as an array (owned) */
    char *key;       /* canonical text of body: equal keys may merge (owned) */
    size_t n_inputs; /* >= 1 */
    int64_t weight;  /* byte length of its inputs, for the usage split */
};

/* Reads an embeddings request body. Returns 0, or TG_EINVAL when it cannot be merged (not an
 * object, input neither a string nor a non-empty array of strings or token arrays). */
int tg_mb_req_parse(const char *body, size_t len, struct tg_mb_req *out);
void tg_mb_req_deinit(struct tg_mb_req *r);

/* The merged request: first's body with "input" the concatenation of every request's inputs
 * in order. Appends its JSON text to out; returns 0 or a TG_E* code. */
int tg_mb_merge(const struct tg_mb_req *const *reqs, size_t n, struct tg_buf *out);

/* Splits a successful merged answer: outs[i] gets caller i's answer ({"object":"list",
 * "data": its items re-indexed from 0, "model", "usage": its share}), prompt[i] its prompt
 * tokens, *total the upstream's prompt tokens. Returns 0, or TG_EUPSTREAM when the answer does
 * not hold one embedding per input. */
int tg_mb_split_answer(const char *body, size_t len, const struct tg_mb_req *const *reqs, size_t n,
                       struct tg_buf *outs, int64_t *prompt, int64_t *total);

#endif
