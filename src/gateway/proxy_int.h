/*
 * proxy_int.h: what the files of the inference path share (see proxy.h): struct call, the
 * state of one relayed request, and the functions one file of the path calls in another.
 *
 *   proxy.c        entry points, decoding and policy, models;
 *   proxy_relay.c  upstream attempts: routing, retries and fallbacks, the upstream callbacks,
 *                  answering and settling;
 *   proxy_admit.c  limits and budgets (admission);
 *   proxy_cache.c  the response cache;
 *   proxy_mb.c     embedding micro-batching.
 *
 * Private to src/gateway. Everything runs on the worker's loop thread.
 */
#ifndef TG_GATEWAY_PROXY_INT_H
#define TG_GATEWAY_PROXY_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cache/cache.h"
#include "core/buf.h"
#include "core/json.h"
#include "gateway/microbatch.h"
#include "gateway/proxy.h"
#include "policy/admission.h"
#include "upstream/provider.h"

enum relay_mode { RELAY_NONE, RELAY_SSE, RELAY_BUFFER };

#define MAX_PASS_HEADERS 16

/*
 * The top-level request members the relay reads. On the hot path they are located by one
 * validating scan of the body (tg_json_members) and read from their text, with no parse tree;
 * a body the scan cannot vouch for (\u escapes, nested stream_options to rewrite) is parsed
 * with jansson instead, and both paths feed the same checks through enum kind.
 */
enum field {
    F_MODEL,
    F_STREAM,
    F_STREAM_OPTIONS,
    F_N,
    F_BEST_OF, /* completions: best_of choices are generated (and billed) per prompt */
    F_MAX_TOKENS,
    F_MAX_COMPLETION_TOKENS,
    F_MAX_OUTPUT_TOKENS,
    F_MESSAGES,
    F_PROMPT,
    F_INPUT,
    F_INSTRUCTIONS,
    F_COUNT
};

extern const char *const proxy_field_names[F_COUNT];

/* What a member's value is, as far as the checks care. */
enum kind { K_ABSENT, K_NULL, K_TRUE, K_FALSE, K_STRING, K_ARRAY, K_OBJECT, K_UINT, K_NUMBER };

struct call {
    struct call *next;
    struct call *prev;
    struct tg_worker *w;
    struct tg_http_req *req;
    struct tg_state *state;
    const struct tg_key_entry *key;
    const struct tg_project *project;
    const struct tg_provider *provider;
    const struct tg_price *price;
    const char *model;          /* as the client named it, or what its alias resolved to */
    const char *model_asked;    /* the client's name when an alias was resolved, else NULL */
    const char *upstream_model; /* as the provider knows it */
    enum tg_api api;
    struct tg_provider_call *pcall;
    json_t *body; /* the parsed request, only when the fast path could not read it */
    struct tg_json_span fields[F_COUNT];
    const char *upstream_body;
    size_t upstream_body_len;
    struct tg_buf rewritten;
    bool is_policy_rewritten; /* a token policy or alias changed the parsed body */

    enum relay_mode mode;
    int upstream_status;
    int client_status;
    bool is_stream;
    bool wants_usage;
    bool is_paused;
    bool is_client_gone;
    bool saw_terminal;
    bool is_stream_failed; /* an error event was sent (ours or the upstream's) */
    bool is_too_big;       /* the buffered body passed max_response_bytes */
    struct tg_buf resp;    /* BUFFER mode body */
    struct tg_buf out;     /* SSE mode: events to write for this read */
    struct tg_sse_reader sse;
    struct tg_usage usage;
    int64_t delivered_chunks;
    int64_t events_sent;
    const char *response_id; /* Responses API: id from response.created */
    struct tg_http_header pass[MAX_PASS_HEADERS];
    size_t n_pass;

    /* Limits and budgets. */
    struct tg_admission *admission; /* NULL when not wired */
    uint64_t reservation;
    bool is_admitted;          /* settle or release in proxy_finish() */
    bool is_budgeted;          /* some level has a budget */
    bool has_own_rl;           /* our x-ratelimit-* headers replace the upstream's */
    bool write_field[F_COUNT]; /* fast path: output caps and n to write upstream */
    int64_t field_value[F_COUNT];
    int64_t n;                /* choices asked (after clamping), >= 1 */
    int64_t max_out;          /* output cap per choice (0 for embeddings, moderations) */
    int64_t prompt_bound;     /* budget bound of the prompt, tokens */
    int64_t completion_bound; /* max_out x n */
    int64_t cost_bound;       /* micro-dollars */
    int64_t rl_tokens;        /* charged to the token rate limits */

    /* Response cache (cache/cache.h). */
    bool is_cache_hit;     /* answered from the cache: the ledger row records a saving */
    bool is_cache_store;   /* a successful answer is stored under cache_key */
    bool is_cache_checked; /* the cache was consulted: not a hit means a miss */
    enum tg_cache_backend cache_backend;
    int64_t cache_ttl_ms;
    int64_t cache_saved_micros; /* a hit: what the replayed answer cost when it was made */
    unsigned char cache_key[TG_CACHE_KEY_BYTES];
    struct tg_buf cache_raw; /* SSE mode: the upstream stream as received, for the cache */

    /* Quality signals of the answer and body logging (gateway/observe.h). */
    char finish_reason[24]; /* the first choice's, "" when none */
    bool is_empty;          /* a 2xx answer with no text and no tool call */
    bool is_refusal;        /* the model refused */
    bool is_body_logged;    /* the project logs bodies: keep the stream text in cache_raw */

    int64_t admitted_ms;
    uint64_t first_byte_us;
    uint64_t gone_at_ms;
    char error[128];

    /* Routing (policy/router.h): the route served now (a fallback's once the first one's
     * deployments failed), this attempt's deployment, and the cursor over what is left. */
    const struct tg_model_route *first_route;
    const struct tg_model_route *route;
    int attempt;          /* 1-based; the ledger row of each attempt carries it */
    int dep;              /* deployment index in route of this attempt; -1: none picked */
    int route_attempts;   /* attempts on route */
    uint64_t tried;       /* deployments of route tried */
    size_t next_fallback; /* into first_route->fallbacks */
    uint64_t attempt_start_us;
    uint64_t retry_after_ms; /* from this attempt's retry-after(-ms) header */
    bool has_retry_after_ms;
    size_t n_pass_base;        /* pass headers of our own, kept across attempts */
    const char *prepared_for;  /* upstream_model the upstream body was prepared for */
    struct retry_timer *timer; /* back-off before the next attempt */
    bool has_bound_price;
    struct tg_price bound_price; /* the dearest of the route's and its fallbacks' prices */
    /* The target pick_target found, applied by apply_target. */
    const struct tg_model_route *next_route;
    int next_dep;
    const struct tg_provider *next_provider;
    const char *next_upstream_model;
    const struct tg_price *next_price;

    /* Embedding micro-batching (gateway/microbatch.h): a call's request as a batch reads it,
     * and on the leader of a flushed batch of two or more, the batch it answers for. */
    struct tg_mb_req mbreq;
    struct mb_batch *mb;
};

/* ---- small helpers --------------------------------------------------------------------- */

/* Sums of counts a client or a provider chose (non-negative), saturating instead of
 * overflowing. */
static inline int64_t
add_sat(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_add_overflow(a, b, &r) ? INT64_MAX : r;
}

static inline void
copy_field(char *dst, size_t cap, const char *src)
{
    /* Truncates on purpose (ledger columns are fixed-size); memcpy, not snprintf, so the
     * compiler does not flag every longer message as a truncation. */
    size_t n = src != NULL ? strnlen(src, cap - 1) : 0;
    memcpy(dst, src != NULL ? src : "", n);
    dst[n] = '\0';
}

/* ---- proxy.c --------------------------------------------------------------------------- */

/* What a member's text is (the fast path's spans). */
enum kind proxy_kind_of_span(struct tg_json_span v);

/* Rewrites the body for the provider when needed; otherwise sends the client's bytes. */
int proxy_prepare_upstream_body(struct call *c);

/* ---- proxy_relay.c --------------------------------------------------------------------- */

/* Ends the call: pushes the ledger row, then answers. Answering finishes the request, which
 * frees the arena holding c, so it is the very last thing done with c. */
void proxy_finish(struct call *c);

/* Replaces the answer with an OpenAI error object (sent by proxy_finish). */
void proxy_set_error(struct call *c, int status, const char *type, const char *message);

/* Sends an admitted call upstream: the step after the cache, on a miss. */
void proxy_go_upstream(struct call *c);

/* Picks the deployment and makes the first attempt. */
void proxy_go_route(struct call *c);

/* Answers c from a cache entry by playing it through the relay as if the provider had sent
 * it. The caller still owns e; c is finished (and freed) on return. */
void proxy_cache_replay(struct call *c, const struct tg_cache_entry *e);

/* ---- proxy_admit.c --------------------------------------------------------------------- */

/* Limits and budgets of the call. Returns false after answering (400/403 for a budgeted
 * model without a price, 429 for a refusal, 503 when admission could not decide). */
bool proxy_admit_call(struct call *c);

/* ---- proxy_cache.c --------------------------------------------------------------------- */

/* The cache step. Returns true when the request was answered, or is waiting for an fs or db
 * lookup on the thread pool (which answers it or sends it upstream). */
bool proxy_cache_lookup(struct call *c);

/* Stores a successful, complete answer when the request allowed it (after the relay). */
void proxy_cache_store(struct call *c, const struct tg_usage *u, int64_t cost_micros);

/* ---- proxy_mb.c ------------------------------------------------------------------------ */

/* Puts an embeddings call into a batch. Returns false when the call goes alone now. */
bool proxy_mb_join(struct call *c);

/* The leader's upstream body: the merged request. */
int proxy_mb_body(struct call *c);

/* The leader c finishes: each follower gets its part of c's answer and is finished. */
void proxy_mb_answer(struct call *c);

/* Shutdown: the batches still gathering on w answer 503 (each member accounted). */
void proxy_mb_cancel_pending(struct tg_worker *w);

#endif
