/*
 * proxy.c: the inference path (see proxy.h).
 *
 * One struct call per request, allocated in the request's arena: the request is finished only
 * at the very end (after the upstream call ended and the ledger row was pushed), so the arena
 * outlives every callback that uses the call. A client that leaves early does not end the
 * call: the relay keeps reading the upstream (up to disconnect_drain_ms) for the usage, then
 * settles with status 499.
 *
 * Relay modes, chosen when the upstream's headers arrive:
 *   SSE     a 2xx event stream for a streaming request: events are parsed on the side and
 *           forwarded verbatim, batched into one write per upstream read;
 *   BUFFER  everything else: the body is collected (capped), validated and answered whole.
 *
 * Limits and budgets (policy/admission.h): after routing, the request's token count and cost
 * bound are computed (gateway/quota.h says how), a budgeted request gets its output cap
 * injected or clamped and n clamped (so the bound is real), and admission decides at the key,
 * project and organization levels at once. A refused request never reaches the provider and
 * changes no counter. An admitted one is settled in finish() with the usage the ledger row
 * gets (the same cost), released when the provider did no work, or billed at its bound (the
 * row flagged as estimated) when the provider answered 2xx without readable usage.
 */
#include "gateway/proxy.h"

#include <string.h>
#include <strings.h>

#include "cache/cache.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "gateway/metrics.h"
#include "gateway/microbatch.h"
#include "gateway/observe.h"
#include "gateway/policies.h"
#include "gateway/quota.h"
#include "monitor/quality.h"
#include "policy/admission.h"
#include "policy/limits.h"
#include "upstream/provider.h"

#include <stdlib.h>
#include <uv.h>

enum relay_mode { RELAY_NONE, RELAY_SSE, RELAY_BUFFER };

#define MAX_PASS_HEADERS 16
#define N_RL_HEADERS 6

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

static const char *const field_names[F_COUNT] = {
    "model",
    "stream",
    "stream_options",
    "n",
    "best_of",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "messages",
    "prompt",
    "input",
    "instructions",
};

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
    bool is_admitted;          /* settle or release in finish() */
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

struct retry_timer {
    uv_timer_t t; /* first: the handle's address is the struct's */
    struct call *c;
};

/* ---- small helpers ------------------------------------------------------------------- */

/* Products and sums of counts a client or a provider chose (non-negative), saturating
 * instead of overflowing. */
static int64_t
mul_sat(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_mul_overflow(a, b, &r) ? INT64_MAX : r;
}

static int64_t
add_sat(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_add_overflow(a, b, &r) ? INT64_MAX : r;
}

static void
list_add(struct tg_worker *w, struct call *c)
{
    c->prev = NULL;
    c->next = (struct call *)w->calls;
    if (c->next != NULL) {
        c->next->prev = c;
    }
    w->calls = (struct tg_call *)c;
}

static void
list_remove(struct tg_worker *w, struct call *c)
{
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        w->calls = (struct tg_call *)c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
}

static void
call_cleanup(void *arg)
{
    struct call *c = arg;
    if (c->body != NULL) {
        json_decref(c->body);
    }
    tg_buf_deinit(&c->rewritten);
    tg_buf_deinit(&c->resp);
    tg_buf_deinit(&c->out);
    tg_buf_deinit(&c->cache_raw);
    tg_sse_reader_deinit(&c->sse);
    tg_mb_req_deinit(&c->mbreq);
    tg_state_unref(c->state);
}

static bool
is_pass_header(const char *name)
{
    return strncasecmp(name, "x-ratelimit-", 12) == 0 || strcasecmp(name, "retry-after") == 0 ||
           strcasecmp(name, "retry-after-ms") == 0 || strcasecmp(name, "x-should-retry") == 0 ||
           strcasecmp(name, "openai-processing-ms") == 0;
}

static int
bad_request(struct tg_http_req *req, const char *message, const char *param)
{
    return tg_http_respond_error(req, 400, message, "invalid_request_error", param, NULL);
}

/* ---- decoding and policy ------------------------------------------------------------- */

static enum kind
kind_of_span(struct tg_json_span v)
{
    if (v.p == NULL) {
        return K_ABSENT;
    }
    switch (v.p[0]) {
    case 'n':
        return K_NULL;
    case 't':
        return K_TRUE;
    case 'f':
        return K_FALSE;
    case '"':
        return K_STRING;
    case '[':
        return K_ARRAY;
    case '{':
        return K_OBJECT;
    default:
        break;
    }
    /* Digits only, and few enough to fit an int64 as jansson would read it. */
    bool is_uint = v.len <= 18;
    for (size_t i = 0; i < v.len && is_uint; i++) {
        is_uint = v.p[i] >= '0' && v.p[i] <= '9';
    }
    return is_uint ? K_UINT : K_NUMBER;
}

static enum kind
kind_of_json(const json_t *v)
{
    switch (v == NULL ? JSON_NULL : json_typeof(v)) {
    case JSON_NULL:
        return v == NULL ? K_ABSENT : K_NULL;
    case JSON_TRUE:
        return K_TRUE;
    case JSON_FALSE:
        return K_FALSE;
    case JSON_STRING:
        return K_STRING;
    case JSON_ARRAY:
        return K_ARRAY;
    case JSON_OBJECT:
        return K_OBJECT;
    case JSON_INTEGER:
        return json_integer_value(v) >= 0 ? K_UINT : K_NUMBER;
    default:
        return K_NUMBER;
    }
}

static enum kind
field_kind(const struct call *c, enum field f)
{
    return c->body != NULL ? kind_of_json(json_object_get(c->body, field_names[f]))
                           : kind_of_span(c->fields[f]);
}

/* stream_options.include_usage is true (stream_options already checked to be an object). */
static bool
include_usage_is_true(const struct call *c)
{
    if (c->body != NULL) {
        return json_is_true(
            json_object_get(json_object_get(c->body, "stream_options"), "include_usage"));
    }
    static const char *const name[1] = {"include_usage"};
    struct tg_json_span v;
    struct tg_json_span so = c->fields[F_STREAM_OPTIONS];
    return tg_json_members(so.p, so.len, name, 1, &v) >= 0 && kind_of_span(v) == K_TRUE;
}

/* Checks the types of the fields the gateway reads. Returns false after answering 400. */
static bool
check_fields(struct call *c)
{
    struct tg_http_req *req = c->req;
    enum kind k = field_kind(c, F_STREAM);
    if (k != K_ABSENT && k != K_NULL && k != K_TRUE && k != K_FALSE) {
        bad_request(req, "Invalid type for 'stream': expected a boolean.", "stream");
        return false;
    }
    c->is_stream = k == K_TRUE;
    if (c->is_stream && (c->api == TG_API_EMBEDDINGS || c->api == TG_API_MODERATIONS)) {
        bad_request(req, "Streaming is not supported on this endpoint.", "stream");
        return false;
    }
    k = field_kind(c, F_STREAM_OPTIONS);
    if (k != K_ABSENT && k != K_NULL) {
        if (!c->is_stream) {
            bad_request(req,
                        "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                        "stream_options");
            return false;
        }
        if (k != K_OBJECT) {
            bad_request(req, "Invalid type for 'stream_options': expected an object.",
                        "stream_options");
            return false;
        }
        c->wants_usage = include_usage_is_true(c);
    }
    /* The field each endpoint cannot do without, with the JSON types it takes: refused
     * here so a malformed call costs no upstream round trip. */
    static const struct {
        enum field field;
        bool may_be_string;
    } required[TG_API_COUNT] = {
        [TG_API_CHAT] = {F_MESSAGES, false},    [TG_API_COMPLETIONS] = {F_PROMPT, true},
        [TG_API_EMBEDDINGS] = {F_INPUT, true},  [TG_API_RESPONSES] = {F_COUNT, false},
        [TG_API_MODERATIONS] = {F_INPUT, true},
    };
    enum field need = required[c->api].field;
    if (need != F_COUNT) {
        k = field_kind(c, need);
        bool may_be_string = required[c->api].may_be_string;
        if (k != K_ARRAY && !(may_be_string && k == K_STRING)) {
            char msg[160];
            if (k == K_ABSENT) {
                snprintf(msg, sizeof(msg), "Missing required parameter: '%s'.", field_names[need]);
            } else {
                snprintf(msg, sizeof(msg), "Invalid type for '%s': expected %s.", field_names[need],
                         may_be_string ? "a string or an array" : "an array");
            }
            bad_request(req, msg, field_names[need]);
            return false;
        }
    }
    for (enum field f = F_N; f <= F_MAX_OUTPUT_TOKENS; f++) {
        k = field_kind(c, f);
        if (k != K_ABSENT && k != K_NULL && k != K_UINT) {
            char msg[128];
            snprintf(msg, sizeof(msg), "Invalid value for '%s': expected a non-negative integer.",
                     field_names[f]);
            bad_request(req, msg, field_names[f]);
            return false;
        }
    }
    return true;
}

/* Parses the body with jansson (the fast path's fallback). Returns false after answering. */
static bool
parse_body(struct call *c)
{
    char err[256];
    c->body = tg_json_parse(c->req->body.data, c->req->body.len, c->state->config->max_json_depth,
                            err, sizeof(err));
    if (c->body == NULL) {
        char msg[320];
        snprintf(msg, sizeof(msg), "We could not parse the JSON body of your request. (%s)", err);
        bad_request(c->req, msg, NULL);
        return false;
    }
    if (!json_is_object(c->body)) {
        bad_request(c->req, "The request body must be a JSON object.", NULL);
        return false;
    }
    return true;
}

/* One change to the client's bytes: the span [at, at + len) becomes the model's new name
 * (field F_MODEL) or an integer (an output cap, n). */
struct edit {
    const char *at;
    size_t len;
    enum field field;
};

static int
append_edit(struct call *c, struct tg_buf *o, enum field f)
{
    if (f == F_MODEL) {
        return tg_json_quote(o, c->upstream_model);
    }
    return tg_buf_appendf(o, "%lld", (long long)c->field_value[f]);
}

/* The fast path's rewrite: the client's bytes with members inserted after the opening brace
 * (stream_options, an injected output cap) and values replaced in place (the model, a
 * clamped cap or n), without a parse tree. */
static int
splice_upstream_body(struct call *c, bool rename, bool add_usage)
{
    const char *text = c->req->body.data;
    size_t len = c->req->body.len;
    const char *open = memchr(text, '{', len); /* the scan saw an object, so it is there */
    struct tg_buf *o = &c->rewritten;
    int rc = tg_buf_append(o, text, (size_t)(open + 1 - text));
    if (add_usage) {
        rc = rc < 0 ? rc : tg_buf_append_str(o, "\"stream_options\":{\"include_usage\":true},");
    }
    struct edit edits[F_COUNT];
    size_t n = 0;
    if (rename) {
        edits[n++] = (struct edit){c->fields[F_MODEL].p, c->fields[F_MODEL].len, F_MODEL};
    }
    for (enum field f = F_N; f <= F_MAX_OUTPUT_TOKENS; f++) {
        if (!c->write_field[f]) {
            continue;
        }
        if (c->fields[f].p == NULL) {
            /* The object has members (model at least), so a trailing comma is right. */
            rc = rc < 0 ? rc : tg_buf_appendf(o, "\"%s\":", field_names[f]);
            rc = rc < 0 ? rc : append_edit(c, o, f);
            rc = rc < 0 ? rc : tg_buf_append_str(o, ",");
        } else {
            edits[n++] = (struct edit){c->fields[f].p, c->fields[f].len, f};
        }
    }
    /* Replacements in text order (a handful: insertion sort). */
    for (size_t i = 1; i < n; i++) {
        for (size_t j = i; j > 0 && edits[j].at < edits[j - 1].at; j--) {
            struct edit e = edits[j];
            edits[j] = edits[j - 1];
            edits[j - 1] = e;
        }
    }
    const char *rest = open + 1;
    for (size_t i = 0; i < n; i++) {
        rc = rc < 0 ? rc : tg_buf_append(o, rest, (size_t)(edits[i].at - rest));
        rc = rc < 0 ? rc : append_edit(c, o, edits[i].field);
        rest = edits[i].at + edits[i].len;
    }
    return rc < 0 ? rc : tg_buf_append(o, rest, (size_t)(text + len - rest));
}

/* Rewrites the body for the provider when needed; otherwise sends the client's bytes. */
static int
prepare_upstream_body(struct call *c)
{
    bool rename = strcmp(c->model, c->upstream_model) != 0;
    bool add_usage =
        c->is_stream && !c->wants_usage && (c->api == TG_API_CHAT || c->api == TG_API_COMPLETIONS);
    bool rewrite = c->is_policy_rewritten;
    for (enum field f = F_N; f <= F_MAX_OUTPUT_TOKENS; f++) {
        rewrite = rewrite || c->write_field[f];
    }
    if (!rename && !add_usage && !rewrite) {
        c->upstream_body = c->req->body.data;
        c->upstream_body_len = c->req->body.len;
        return 0;
    }
    int rc;
    if (c->body == NULL && !(add_usage && c->fields[F_STREAM_OPTIONS].p != NULL)) {
        rc = splice_upstream_body(c, rename, add_usage);
    } else {
        /* stream_options given without include_usage: merged by jansson (rare). */
        if (c->body == NULL && !parse_body(c)) {
            return TG_EPARSE;
        }
        if (rename) {
            json_object_set_new(c->body, "model", json_string(c->upstream_model));
        }
        if (add_usage) {
            json_t *so = json_object_get(c->body, "stream_options");
            if (!json_is_object(so)) {
                so = json_object();
                json_object_set_new(c->body, "stream_options", so);
            }
            json_object_set_new(so, "include_usage", json_true());
        }
        for (enum field f = F_N; f <= F_MAX_OUTPUT_TOKENS; f++) {
            if (c->write_field[f]) {
                json_object_set_new(c->body, field_names[f], json_integer(c->field_value[f]));
            }
        }
        rc = tg_json_dump_buf(c->body, &c->rewritten);
    }
    c->upstream_body = c->rewritten.data;
    c->upstream_body_len = c->rewritten.len;
    return rc;
}

/* ---- settling ------------------------------------------------------------------------ */

static void
copy_field(char *dst, size_t cap, const char *src)
{
    /* Truncates on purpose (ledger columns are fixed-size); memcpy, not snprintf, so the
     * compiler does not flag every longer message as a truncation. */
    size_t n = src != NULL ? strnlen(src, cap - 1) : 0;
    memcpy(dst, src != NULL ? src : "", n);
    dst[n] = '\0';
}

/* Rough prompt size when the provider reported none: a quarter of the body's bytes. */
static int64_t
estimate_prompt_tokens(const struct call *c)
{
    return (int64_t)(c->req->body.len / 4) + 1;
}

/* ---- response cache ------------------------------------------------------------------ */

/*
 * One cache operation of the fs or db backend on the libuv thread pool: both block (file
 * system, database), so they never run on the loop thread. A lookup keeps its call waiting
 * (the request stays valid until it is answered) and answers or goes upstream in the after-work
 * callback; a put owns a copy of the entry and nothing of the call, which may be gone.
 */
struct cache_job {
    uv_work_t work;
    struct call *c; /* lookup: the waiting call; put: NULL */
    enum tg_cache_backend backend;
    const char *data_dir; /* the config's, which lives as long as the process */
    struct tg_store *store;
    unsigned char key[TG_CACHE_KEY_BYTES];
    struct tg_cache_entry e; /* lookup: the entry found; put: the copy to store */
    struct tg_http_header *mark;
    int64_t max_age_ms;
    int64_t ttl_ms;
    int rc;
};

static struct cache_job *
cache_job_new(const struct call *c)
{
    struct cache_job *j = tg_xcalloc(1, sizeof(*j));
    j->work.data = j;
    j->backend = c->cache_backend;
    j->data_dir = c->state->config->data_dir;
    j->store = tg_state_env_get()->store;
    memcpy(j->key, c->cache_key, TG_CACHE_KEY_BYTES);
    j->rc = TG_EIO;
    return j;
}

static void
cache_put_work(uv_work_t *w)
{
    struct cache_job *j = w->data;
    struct tg_cache *cache = tg_cache_shared(j->backend, j->data_dir, j->store);
    j->rc = cache != NULL ? tg_cache_put(cache, j->key, &j->e, j->ttl_ms) : TG_EIO;
}

static void
cache_put_done(uv_work_t *w, int status)
{
    struct cache_job *j = w->data;
    if (status == 0 && j->rc < 0) {
        tg_log_debug("cache: an answer was not stored: %s", tg_strerror(j->rc));
    }
    tg_cache_entry_deinit(&j->e);
    free(j);
}

/* Stores a successful, complete answer when the request allowed it (after the relay). */
static void
cache_store(struct call *c, const struct tg_usage *u, int64_t cost_micros)
{
    bool is_sse = c->mode == RELAY_SSE;
    bool ok = is_sse ? c->saw_terminal && !c->is_stream_failed
                     : c->mode == RELAY_BUFFER && !c->is_too_big;
    if (!c->is_cache_store || !ok || c->is_client_gone || c->upstream_status != 200 ||
        c->client_status != 200 || !u->is_known) {
        return;
    }
    struct tg_cache_entry e;
    memset(&e, 0, sizeof(e));
    e.status = 200;
    e.is_stream = is_sse;
    copy_field(e.content_type, sizeof(e.content_type),
               is_sse ? "text/event-stream; charset=utf-8" : "application/json");
    copy_field(e.project_id, sizeof(e.project_id), c->project->id);
    copy_field(e.model, sizeof(e.model), c->model);
    e.prompt_tokens = u->prompt_tokens;
    e.cached_tokens = u->cached_tokens;
    e.completion_tokens = u->completion_tokens;
    e.reasoning_tokens = u->reasoning_tokens;
    e.cost_micros = cost_micros;
    e.created_ms = tg_clock_unix_ms();
    struct tg_buf *b = is_sse ? &c->cache_raw : &c->resp;
    e.body = b->data ? b->data : (char *)"";
    e.body_len = b->len;
    if (c->cache_backend != TG_CACHE_MEMORY) {
        struct cache_job *j = cache_job_new(c);
        j->ttl_ms = c->cache_ttl_ms;
        if (tg_cache_entry_copy(&j->e, &e) != 0 ||
            uv_queue_work(&c->w->loop, &j->work, cache_put_work, cache_put_done) != 0) {
            tg_cache_entry_deinit(&j->e);
            free(j);
        }
        return;
    }
    int rc = tg_cache_put(tg_cache_shared_memory(), c->cache_key, &e, c->cache_ttl_ms);
    if (rc < 0) {
        tg_log_debug("cache: request %s not stored: %s", c->req->id, tg_strerror(rc));
    }
}

static void
settle(struct call *c)
{
    struct tg_ledger_row row;
    memset(&row, 0, sizeof(row));
    copy_field(row.request_id, sizeof(row.request_id), c->req->id);
    row.attempt = c->attempt > 0 ? c->attempt : 1;
    row.time_ms = c->admitted_ms;
    copy_field(row.org_id, sizeof(row.org_id), c->key->org_id);
    copy_field(row.project_id, sizeof(row.project_id), c->project->id);
    copy_field(row.key_id, sizeof(row.key_id), c->key->id);
    copy_field(row.user_id, sizeof(row.user_id), c->key->owner_user_id);
    copy_field(row.endpoint, sizeof(row.endpoint), tg_api_name(c->api));
    copy_field(row.model_requested, sizeof(row.model_requested),
               c->model_asked != NULL ? c->model_asked : c->model);
    copy_field(row.provider, sizeof(row.provider), c->provider->name);
    copy_field(row.deployment, sizeof(row.deployment), c->upstream_model);
    struct tg_usage u = c->usage;
    bool is_upstream_2xx = c->upstream_status >= 200 && c->upstream_status < 300;
    bool is_complete_stream = c->mode == RELAY_SSE && c->saw_terminal && !c->is_stream_failed;
    if (!u.is_known && c->mode == RELAY_SSE && !is_complete_stream) {
        /* A stream that started but was cut (or the client left and the drain bound ran
         * out) is billed for its prompt and the chunks delivered: never zero. */
        u.prompt_tokens = estimate_prompt_tokens(c);
        u.completion_tokens = c->delivered_chunks;
        row.is_usage_estimated = true;
    } else if (!u.is_known && is_upstream_2xx && c->api != TG_API_MODERATIONS) {
        /* The provider did the work but its usage is missing or garbled: bill the bound
         * (what admission reserved), never a silent zero, and flag the row. */
        u.prompt_tokens = c->prompt_bound;
        u.completion_tokens = c->completion_bound;
        row.is_usage_estimated = true;
    }
    row.prompt_tokens = u.prompt_tokens;
    row.cached_tokens = u.cached_tokens;
    row.completion_tokens = u.completion_tokens;
    row.reasoning_tokens = u.reasoning_tokens;
    row.cost_micros = tg_price_cost_micros(c->price, &u);
    if (c->is_cache_hit) {
        /* Nothing went upstream: no tokens, no cost; the provider column says where the
         * answer came from. */
        row.prompt_tokens = row.cached_tokens = row.completion_tokens = row.reasoning_tokens = 0;
        row.cost_micros = 0;
        row.saved_micros = c->cache_saved_micros;
        u.prompt_tokens = u.completion_tokens = 0;
        copy_field(row.provider, sizeof(row.provider), "cache");
    } else {
        cache_store(c, &u, row.cost_micros);
    }
    row.status = c->is_client_gone ? 499 : c->client_status;
    row.latency_ms = tg_clock_unix_ms() - c->admitted_ms;
    row.ttft_ms = c->first_byte_us ? (int64_t)((c->first_byte_us - c->req->start_us) / 1000) : -1;
    row.is_stream = c->is_stream;
    copy_field(row.error, sizeof(row.error), c->error);
    tg_ledger_push(c->w->ledger, &row);
    /* The last attempt's time is the upstream share; a cache hit or a call that never went
     * out has none. */
    int64_t upstream_ms = !c->is_cache_hit && c->attempt_start_us != 0
                              ? (int64_t)((tg_clock_mono_us() - c->attempt_start_us) / 1000)
                              : -1;
    struct tg_observation obs = {.row = &row,
                                 .upstream_ms = upstream_ms,
                                 .finish_reason = c->finish_reason,
                                 .is_empty = c->is_empty,
                                 .is_refusal = c->is_refusal,
                                 .is_cache_checked = c->is_cache_checked};
    if (c->is_body_logged) {
        const struct tg_buf *answer = c->mode == RELAY_SSE ? &c->cache_raw : &c->resp;
        obs.request_body = c->req->body.data;
        obs.request_len = c->req->body.len;
        obs.response_body = answer->data;
        obs.response_len = answer->len;
    }
    tg_observe(&obs);
    if (c->is_admitted) {
        c->is_admitted = false;
        if (u.is_known || row.is_usage_estimated) {
            /* The same cost as the ledger row: the budget and the ledger agree. */
            int64_t tokens = add_sat(u.prompt_tokens, u.completion_tokens);
            c->admission->ops->settle(c->admission, c->reservation, tokens, row.cost_micros);
        } else {
            /* No work done (connect error, an error status, nothing delivered). */
            c->admission->ops->release(c->admission, c->reservation);
        }
    }
}

/* ---- answering --------------------------------------------------------------------- */

/* Ends the call: pushes the ledger row, then answers. Answering finishes the request, which
 * frees the arena holding c, so it is the very last thing done with c. */
static void mb_answer(struct call *c);

static void
finish(struct call *c)
{
    if (c->mb != NULL) {
        mb_answer(c); /* the followers first: c's answer is split among them */
    }
    list_remove(c->w, c);
    settle(c);
    struct tg_http_req *req = c->req;
    if (c->mode == RELAY_SSE) {
        if (c->out.len > 0 && !c->is_client_gone) {
            tg_http_stream_write(req, c->out.data, c->out.len);
        }
        tg_http_stream_end(req);
        return;
    }
    tg_http_respond(req, c->client_status, "application/json", c->pass, c->n_pass,
                    c->resp.data ? c->resp.data : "", c->resp.len);
}

/* Replaces the answer with an OpenAI error object (sent by finish). */
static void
set_error(struct call *c, int status, const char *type, const char *message)
{
    c->client_status = status;
    c->n_pass = status == 429 || status >= 500 ? c->n_pass : 0;
    copy_field(c->error, sizeof(c->error), message);
    tg_buf_reset(&c->resp);
    tg_json_error_body(&c->resp, message, type, NULL, NULL);
}

static int
upstream_error_status(int err)
{
    return err == TG_ETIMEOUT ? 504 : 502;
}

/* Appends our own in-band error to a stream the upstream cut or spoiled. */
static void
stream_fail(struct call *c, const char *message)
{
    if (c->is_stream_failed) {
        return;
    }
    c->is_stream_failed = true;
    copy_field(c->error, sizeof(c->error), message);
    struct tg_buf *o = &c->out;
    if (c->api == TG_API_RESPONSES) {
        tg_buf_appendf(o,
                       "event: error\ndata: {\"type\":\"error\",\"sequence_number\":%lld,"
                       "\"error\":{\"type\":\"server_error\",\"code\":\"server_error\","
                       "\"message\":",
                       (long long)c->events_sent);
        tg_json_quote(o, message);
        tg_buf_appendf(o,
                       ",\"param\":null}}\n\nevent: response.failed\ndata: "
                       "{\"type\":\"response.failed\",\"sequence_number\":%lld,"
                       "\"response\":{\"id\":",
                       (long long)c->events_sent + 1);
        tg_json_quote(o, c->response_id ? c->response_id : "");
        tg_buf_append_str(o, ",\"object\":\"response\",\"status\":\"failed\",\"error\":{"
                             "\"code\":\"server_error\",\"message\":");
        tg_json_quote(o, message);
        tg_buf_append_str(o, "}}}\n\n");
    } else {
        tg_buf_append_str(o, "data: ");
        tg_json_error_body(o, message, "server_error", NULL, NULL);
        tg_buf_append_str(o, "\n\n");
    }
}

/* ---- upstream callbacks -------------------------------------------------------------- */

/* retry-after (seconds) or retry-after-ms of a 429: how long its deployment cools down. */
static void
note_retry_after(struct call *c, const struct tg_upstream_header *h)
{
    bool is_ms = strcasecmp(h->name, "retry-after-ms") == 0;
    if (!is_ms && strcasecmp(h->name, "retry-after") != 0) {
        return;
    }
    char *end = NULL;
    double v = strtod(h->value, &end);
    if (end != h->value && v >= 0 && v <= 86400000.0 && (is_ms || !c->has_retry_after_ms)) {
        c->retry_after_ms = (uint64_t)(is_ms ? v : v * 1000);
        c->has_retry_after_ms = is_ms; /* the finer header wins, whatever the order */
    }
}

static void
on_headers(int status, const struct tg_upstream_header *headers, size_t n, void *arg)
{
    struct call *c = arg;
    c->upstream_status = status;
    bool is_sse = false;
    for (size_t i = 0; i < n; i++) {
        note_retry_after(c, &headers[i]);
        if (strcasecmp(headers[i].name, "content-type") == 0) {
            is_sse = strstr(headers[i].value, "text/event-stream") != NULL;
        } else if (c->has_own_rl && strncasecmp(headers[i].name, "x-ratelimit-", 12) == 0) {
            continue; /* ours (admit_call) describe the client's limits */
        } else if (is_pass_header(headers[i].name) && c->n_pass < MAX_PASS_HEADERS) {
            c->pass[c->n_pass].name = tg_arena_strdup(&c->req->arena, headers[i].name);
            c->pass[c->n_pass].value = tg_arena_strdup(&c->req->arena, headers[i].value);
            c->n_pass++;
        }
    }
    if (c->is_stream && is_sse && status >= 200 && status < 300) {
        c->mode = RELAY_SSE;
        c->client_status = status;
        if (!c->is_client_gone) {
            tg_http_stream_begin(c->req, status, "text/event-stream; charset=utf-8", c->pass,
                                 c->n_pass);
        }
    } else {
        c->mode = RELAY_BUFFER;
    }
}

static bool
span_is_empty_array(struct tg_json_span v)
{
    if (v.p == NULL || v.p[0] != '[') {
        return false;
    }
    for (size_t i = 1; i < v.len; i++) {
        if (v.p[i] != ' ' && v.p[i] != '\t' && v.p[i] != '\n' && v.p[i] != '\r') {
            return v.p[i] == ']';
        }
    }
    return false;
}

/*
 * One chat/completions stream event: validated and read by one scan (every chunk of a real
 * stream carries "usage": null, so looking for the word would parse them all). Only a usage
 * object is parsed. Returns false when the event is not a JSON object.
 */
static bool
note_chunk(struct call *c, const struct tg_sse_event *ev, bool *drop)
{
    static const char *const names[3] = {"usage", "choices", "error"};
    struct tg_json_span v[3];
    if (tg_json_members(ev->data, ev->data_len, names, 3, v) < 0) {
        return false;
    }
    if (v[0].p != NULL && v[0].p[0] == '{') {
        tg_usage_parse_text(c->api, v[0].p, v[0].len, &c->usage);
    }
    if (span_is_empty_array(v[1])) {
        *drop = v[0].p != NULL && v[0].p[0] == '{' && !c->wants_usage;
    } else if (v[1].p != NULL) {
        c->delivered_chunks++;
        tg_quality_choices(v[1], c->finish_reason, sizeof(c->finish_reason), &c->is_empty,
                           &c->is_refusal);
    }
    if (v[2].p != NULL && v[2].p[0] == '{') {
        c->is_stream_failed = true;
    }
    return true;
}

static bool
event_is(const struct tg_sse_event *ev, const char *name)
{
    return strcmp(ev->event, name) == 0;
}

static void
note_responses_event(struct call *c, const struct tg_sse_event *ev)
{
    bool terminal = event_is(ev, "response.completed") || event_is(ev, "response.incomplete") ||
                    event_is(ev, "response.failed");
    if (!terminal && !event_is(ev, "response.created") && !event_is(ev, "error")) {
        if (event_is(ev, "response.output_text.delta")) {
            c->delivered_chunks++;
        }
        return;
    }
    json_t *j = json_loadb(ev->data, ev->data_len, 0, NULL);
    json_t *resp = json_object_get(j, "response");
    if (event_is(ev, "response.created") && c->response_id == NULL) {
        const char *id = tg_json_str(resp, "id");
        c->response_id = id ? tg_arena_strdup(&c->req->arena, id) : NULL;
    } else if (terminal) {
        c->saw_terminal = true;
        tg_usage_parse(TG_API_RESPONSES, json_object_get(resp, "usage"), &c->usage);
        c->is_stream_failed = event_is(ev, "response.failed");
        /* The terminal event carries the whole response: its output gives the signals. */
        static const char *const rnames[1] = {"response"};
        static const char *const qnames[3] = {"output", "status", "incomplete_details"};
        struct tg_json_span r, q[3];
        if (tg_json_members(ev->data, ev->data_len, rnames, 1, &r) >= 0 && r.p != NULL &&
            r.p[0] == '{' && tg_json_members(r.p, r.len, qnames, 3, q) >= 0) {
            tg_quality_responses(q[0], q[1], q[2], c->finish_reason, sizeof(c->finish_reason),
                                 &c->is_empty, &c->is_refusal);
        }
    } else {
        c->is_stream_failed = true;
    }
    json_decref(j);
}

static int
on_event(const struct tg_sse_event *ev, void *arg)
{
    struct call *c = arg;
    if (!ev->has_data || c->is_stream_failed || c->saw_terminal) {
        return 0;
    }
    if (c->provider->ops->keep_event != NULL && !c->provider->ops->keep_event(ev)) {
        return 0;
    }
    bool drop = false;
    if (c->api == TG_API_RESPONSES) {
        if (!tg_json_is_valid(ev->data, ev->data_len)) {
            stream_fail(c, "The upstream sent a malformed stream event.");
            return TG_EPARSE;
        }
        note_responses_event(c, ev);
    } else if (ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0) {
        c->saw_terminal = true;
    } else if (!note_chunk(c, ev, &drop)) {
        stream_fail(c, "The upstream sent a malformed stream event.");
        return TG_EPARSE;
    }
    if (!drop && !c->is_client_gone) {
        c->events_sent++;
        tg_buf_append(&c->out, ev->raw, ev->raw_len);
    }
    return 0;
}

static int
on_data(const char *data, size_t len, void *arg)
{
    struct call *c = arg;
    if (c->first_byte_us == 0) {
        c->first_byte_us = tg_clock_mono_us();
    }
    if (c->is_client_gone && c->mb == NULL &&
        tg_clock_mono_ms() - c->gone_at_ms > c->state->config->disconnect_drain_ms) {
        copy_field(c->error, sizeof(c->error), "client gone; drain bound reached");
        return TG_ECANCELED;
    }
    if (c->mode == RELAY_SSE && (c->is_cache_store || c->is_body_logged) &&
        tg_buf_append(&c->cache_raw, data, len) < 0) {
        c->is_cache_store = false; /* larger than an answer may be: not cached */
        c->is_body_logged = false; /* nor logged whole */
    }
    if (c->mode == RELAY_BUFFER) {
        if (tg_buf_append(&c->resp, data, len) < 0) {
            c->is_too_big = true;
            return TG_ECANCELED;
        }
        return 0;
    }
    int rc = tg_sse_reader_feed(&c->sse, data, len, on_event, c);
    if (rc == TG_ETOOBIG) {
        stream_fail(c, "The upstream sent a stream event larger than the gateway accepts.");
    }
    if (c->is_client_gone) {
        tg_buf_reset(&c->out);
        return rc < 0 ? TG_ECANCELED : 0;
    }
    int w = 0;
    if (c->out.len > 0) {
        w = tg_http_stream_write(c->req, c->out.data, c->out.len);
        tg_buf_reset(&c->out);
    }
    if (rc < 0) {
        return TG_ECANCELED; /* the error event is queued; end the upstream transfer */
    }
    if (w == 1) {
        c->is_paused = true;
        return TG_EAGAIN;
    }
    return 0;
}

/* BUFFER mode end: validate and answer the whole body. */
static void
answer_buffered(struct call *c)
{
    const char *body = c->resp.data ? c->resp.data : "";
    size_t len = c->resp.len;
    int status = c->upstream_status;
    static const char *const names[5] = {"usage", "choices", "output", "status",
                                         "incomplete_details"};
    struct tg_json_span v[5];
    if (status >= 200 && status < 300 && tg_json_members(body, len, names, 5, v) >= 0) {
        /* A valid object: only its usage member is parsed; the quality signals are read
         * from the spans of the answer. */
        if (v[0].p != NULL) {
            tg_usage_parse_text(c->api, v[0].p, v[0].len, &c->usage);
        }
        c->is_empty = true;
        if (c->api == TG_API_RESPONSES) {
            tg_quality_responses(v[2], v[3], v[4], c->finish_reason, sizeof(c->finish_reason),
                                 &c->is_empty, &c->is_refusal);
        } else if (v[1].p != NULL) {
            tg_quality_choices(v[1], c->finish_reason, sizeof(c->finish_reason), &c->is_empty,
                               &c->is_refusal);
        }
        c->error[0] = '\0';
        c->client_status = status;
        return;
    }
    json_t *j = tg_json_parse(body, len, 512, c->error, sizeof(c->error));
    if (j == NULL || !json_is_object(j)) {
        char msg[160];
        snprintf(msg, sizeof(msg), "The upstream provider returned %s (HTTP %d).",
                 len == 0 ? "an empty body" : "a body that is not valid JSON", status);
        json_decref(j);
        set_error(c, 502, "server_error", msg);
        return;
    }
    if (status >= 200 && status < 300) {
        tg_usage_from_response(c->api, j, &c->usage);
        c->error[0] = '\0';
    } else {
        json_t *e = json_object_get(j, "error");
        const char *m = tg_json_str(e, "message");
        copy_field(c->error, sizeof(c->error), m ? m : "upstream error");
        if (!json_is_object(e)) {
            json_decref(j);
            char msg[160];
            snprintf(msg, sizeof(msg), "The upstream provider failed with HTTP %d.", status);
            set_error(c, status >= 500 ? 502 : status, "server_error", msg);
            return;
        }
    }
    json_decref(j);
    c->client_status = status;
}

static bool retry(struct call *c, int err, const char *message);

static void
on_done(int err, const char *message, void *arg)
{
    struct call *c = arg;
    c->pcall = NULL;
    if (retry(c, err, message)) {
        return;
    }
    if (c->mode == RELAY_SSE) {
        if (tg_sse_reader_has_partial(&c->sse) && err == 0 && !c->saw_terminal) {
            err = TG_EUPSTREAM;
        }
        if (!c->saw_terminal && !c->is_stream_failed) {
            char msg[200];
            snprintf(msg, sizeof(msg), "The upstream stream ended early: %s",
                     err < 0 ? message : "no end-of-stream marker");
            stream_fail(c, msg);
        }
    } else if (c->is_too_big) {
        set_error(c, 502, "server_error", "The upstream response exceeded the size limit.");
    } else if (err < 0) {
        char msg[200];
        snprintf(msg, sizeof(msg), "The upstream provider %s failed: %s", c->provider->name,
                 message ? message : tg_strerror(err));
        set_error(c, upstream_error_status(err), "server_error", msg);
    } else {
        answer_buffered(c);
    }
    finish(c);
}

static void
on_client_abort(struct tg_http_req *req, void *arg)
{
    struct call *c = arg;
    c->is_client_gone = true;
    c->gone_at_ms = tg_clock_mono_ms();
    if (c->is_paused && c->pcall != NULL) {
        c->is_paused = false;
        tg_provider_call_resume(c->provider, c->pcall);
    }
}

static void
on_client_drain(struct tg_http_req *req, void *arg)
{
    struct call *c = arg;
    if (c->is_paused && c->pcall != NULL) {
        c->is_paused = false;
        tg_provider_call_resume(c->provider, c->pcall);
    }
}

static const struct tg_upstream_callbacks callbacks = {on_headers, on_data, on_done};

/* ---- routing: deployments, retries, fallbacks (policy/router.h) ------------------------- */

/* The dearest of the route's price and its fallbacks' prices, field by field: an upper bound
 * of whichever model ends up answering, so the reservation covers every candidate. */
static void
bound_price(struct call *c)
{
    const struct tg_model_route *r = c->route;
    c->has_bound_price = false;
    if (r->n_fallbacks == 0 || c->price == NULL) {
        return;
    }
    struct tg_price *b = &c->bound_price;
    *b = *c->price;
    for (size_t i = 0; i < r->n_fallbacks; i++) {
        const struct tg_model_route *fr = tg_config_route(c->state->config, r->fallbacks[i]);
        const struct tg_price *p = tg_price_lookup(c->state->prices, r->fallbacks[i]);
        if (p == NULL && fr != NULL) {
            p = tg_price_lookup(c->state->prices, fr->upstream_model);
        }
        if (p != NULL) {
            b->input_micros = p->input_micros > b->input_micros ? p->input_micros : b->input_micros;
            b->cached_input_micros = p->cached_input_micros > b->cached_input_micros
                                         ? p->cached_input_micros
                                         : b->cached_input_micros;
            b->output_micros =
                p->output_micros > b->output_micros ? p->output_micros : b->output_micros;
        }
    }
    c->has_bound_price = true;
}

static uint64_t
route_rnd(void)
{
    static _Thread_local uint64_t x;
    if (x == 0) {
        x = tg_clock_mono_us() | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

/* The next fallback route the project may use and, under a budget, can price; NULL when
 * none is left. Sets next_price. */
static const struct tg_model_route *
next_fallback(struct call *c)
{
    const struct tg_config *cfg = c->state->config;
    while (c->next_fallback < c->first_route->n_fallbacks) {
        const char *name = c->first_route->fallbacks[c->next_fallback++];
        const struct tg_model_route *fr = tg_config_route(cfg, name);
        if (fr == NULL || fr->router == NULL || !tg_project_allows(c->project, cfg, name)) {
            continue;
        }
        const struct tg_price *p = tg_price_lookup(c->state->prices, name);
        if (p == NULL) {
            p = tg_price_lookup(c->state->prices, fr->upstream_model);
        }
        if (p == NULL && c->is_budgeted && c->api != TG_API_MODERATIONS) {
            continue; /* it could not be billed */
        }
        c->next_price = p;
        return fr;
    }
    return NULL;
}

/*
 * Finds the next attempt's target: another deployment of the current route while its
 * max_attempts allow, else the next fallback's. The pick counts as outstanding on the
 * router; apply_target makes it current. Returns false when nothing is left.
 */
static bool
pick_target(struct call *c)
{
    const struct tg_model_route *r = c->route;
    const struct tg_price *price = c->price;
    if (r->router == NULL) { /* a route built by hand: its one provider, once */
        c->next_route = r;
        c->next_dep = -1;
        c->next_provider = c->attempt == 0 ? c->provider : NULL;
        c->next_upstream_model = c->upstream_model;
        c->next_price = price;
        return c->next_provider != NULL;
    }
    uint64_t tried = c->tried;
    int route_attempts = c->route_attempts;
    for (;;) {
        int i = -1;
        if (route_attempts < r->retry_max_attempts) {
            i = tg_router_pick(r->router, tried, tg_clock_mono_ms(), route_rnd());
        }
        if (i >= 0) {
            const struct tg_model_deployment *d = &r->deployments[i];
            c->next_route = r;
            c->next_dep = i;
            c->next_provider = tg_config_provider(c->state->config, d->provider);
            c->next_upstream_model = strcmp(r->name, "*") == 0 ? c->model : d->upstream_model;
            c->next_price = price;
            return true;
        }
        r = next_fallback(c);
        if (r == NULL) {
            return false;
        }
        price = c->next_price;
        tried = 0;
        route_attempts = 0;
    }
}

static void
apply_target(struct call *c)
{
    if (c->next_route != c->route) {
        c->route = c->next_route;
        c->tried = 0;
        c->route_attempts = 0;
    }
    c->dep = c->next_dep;
    if (c->dep >= 0) {
        c->tried |= UINT64_C(1) << c->dep;
    }
    c->route_attempts++;
    c->provider = c->next_provider;
    c->upstream_model = c->next_upstream_model;
    c->price = c->next_price;
}

/* Tells the router how this attempt went (once per pick). */
static void
record_attempt(struct call *c, int err)
{
    if (c->dep < 0 || c->route->router == NULL) {
        return;
    }
    const struct tg_model_route *r = c->route;
    int status = c->upstream_status;
    enum tg_route_outcome o = TG_ROUTE_OK;
    if (c->is_cache_hit || err == TG_ECANCELED || c->provider == NULL) {
        o = TG_ROUTE_ABANDONED;
    } else if (err < 0 || status >= 500) {
        o = TG_ROUTE_FAILED;
    } else if (status == 429) {
        /* A lone deployment without fallbacks keeps serving: cooling it down would only turn
         * the provider's 429 into ours. */
        bool has_other = r->n_deployments > 1 || c->first_route->n_fallbacks > 0;
        o = has_other ? TG_ROUTE_THROTTLED : TG_ROUTE_ABANDONED;
    }
    int64_t ttft_ms =
        c->first_byte_us ? (int64_t)((c->first_byte_us - c->attempt_start_us) / 1000) : -1;
    tg_router_record(r->router, c->dep, o, ttft_ms, c->retry_after_ms, tg_clock_mono_ms());
    c->dep = -1;
}

/* The ledger row of an attempt that failed and is retried: no usage, no cost. */
static void
push_attempt_row(struct call *c, int status, const char *error)
{
    struct tg_ledger_row row;
    memset(&row, 0, sizeof(row));
    copy_field(row.request_id, sizeof(row.request_id), c->req->id);
    row.attempt = c->attempt;
    row.time_ms = c->admitted_ms;
    copy_field(row.org_id, sizeof(row.org_id), c->key->org_id);
    copy_field(row.project_id, sizeof(row.project_id), c->project->id);
    copy_field(row.key_id, sizeof(row.key_id), c->key->id);
    copy_field(row.user_id, sizeof(row.user_id), c->key->owner_user_id);
    copy_field(row.endpoint, sizeof(row.endpoint), tg_api_name(c->api));
    copy_field(row.model_requested, sizeof(row.model_requested),
               c->model_asked != NULL ? c->model_asked : c->model);
    copy_field(row.provider, sizeof(row.provider), c->provider->name);
    copy_field(row.deployment, sizeof(row.deployment), c->upstream_model);
    row.status = status;
    row.latency_ms = tg_clock_unix_ms() - c->admitted_ms;
    row.ttft_ms = -1;
    row.is_stream = c->is_stream;
    copy_field(row.error, sizeof(row.error), error);
    tg_ledger_push(c->w->ledger, &row);
}

/* Nothing to try: 503 (the ledger row says why; admission is released by settle). */
static void
no_deployment(struct call *c)
{
    char msg[768];
    snprintf(msg, sizeof(msg),
             "No deployment of model `%s` is available now (circuit open or cooling down after "
             "rate limits); try again shortly.",
             c->model);
    /* When every deployment of the route is out for good (its provider's key was missing at
     * start), waiting will not help: say which provider and which key reference. */
    const struct tg_router *rt = c->route != NULL ? c->route->router : NULL;
    const char *why = rt != NULL ? tg_router_unavailable(rt, 0) : NULL;
    for (size_t i = 1; why != NULL && i < tg_router_size(rt); i++) {
        why = tg_router_unavailable(rt, i) != NULL ? why : NULL;
    }
    if (why != NULL) {
        snprintf(msg, sizeof(msg),
                 "No deployment of model `%s` is available: %s. The operator must provide the "
                 "key and restart the gateway.",
                 c->model, why);
    }
    set_error(c, 503, "server_error", msg);
    c->mode = RELAY_BUFFER;
    finish(c);
}

static int mb_body(struct call *c);

static void
start_attempt(struct call *c)
{
    c->attempt++;
    c->attempt_start_us = tg_clock_mono_us();
    c->retry_after_ms = 0;
    c->has_retry_after_ms = false;
    if (strcmp(c->prepared_for, c->upstream_model) != 0) {
        /* Another deployment names the model differently: the body's "model" changes. */
        tg_buf_reset(&c->rewritten);
        c->prepared_for = c->upstream_model;
        if (prepare_upstream_body(c) < 0 || (c->mb != NULL && mb_body(c) < 0)) {
            record_attempt(c, TG_ECANCELED);
            set_error(c, 500, "server_error", "The request could not be prepared.");
            c->mode = RELAY_BUFFER;
            finish(c);
            return;
        }
    }
    struct tg_provider_request preq = {
        .api = c->api,
        .upstream_model = c->upstream_model,
        .body = c->upstream_body,
        .body_len = c->upstream_body_len,
        .is_stream = c->is_stream,
        .request_id = c->req->id,
        .timeouts = c->dep >= 0 ? &c->route->deployments[c->dep].timeouts : NULL,
    };
    int rc = tg_provider_call_start(c->provider, c->w->upstream, &c->w->loop, &preq, &callbacks, c,
                                    &c->pcall);
    if (rc == TG_EINVAL) {
        char msg[200];
        snprintf(msg, sizeof(msg), "The upstream provider %s could not be called: %s",
                 c->provider->name, tg_strerror(rc));
        record_attempt(c, TG_ECANCELED);
        set_error(c, 400, "invalid_request_error", msg);
        c->mode = RELAY_BUFFER;
        finish(c);
    } else if (rc < 0) {
        on_done(rc, tg_strerror(rc), c); /* a connect-time failure: retried like any other */
    }
}

static void
timer_closed(uv_handle_t *h)
{
    free(h); /* the struct retry_timer: t is its first member */
}

static void
on_retry_timer(uv_timer_t *t)
{
    struct retry_timer *rt = (struct retry_timer *)t;
    struct call *c = rt->c;
    c->timer = NULL;
    uv_close((uv_handle_t *)t, timer_closed);
    if (c->is_client_gone) {
        record_attempt(c, TG_ECANCELED);
        set_error(c, 502, "server_error", "client gone before the retry");
        c->mode = RELAY_BUFFER;
        finish(c);
        return;
    }
    start_attempt(c);
}

/* Shutdown during a back-off: the picked deployment is not tried; the call ends with 503. */
static void
cancel_retry(struct call *c)
{
    uv_timer_stop(&c->timer->t);
    uv_close((uv_handle_t *)&c->timer->t, timer_closed);
    c->timer = NULL;
    record_attempt(c, TG_ECANCELED);
    set_error(c, 503, "server_error", "The gateway is shutting down.");
    c->mode = RELAY_BUFFER;
    finish(c);
}

/*
 * After an attempt: records it on the router and, when it failed in a way another
 * deployment may not (connect error, timeout, 429, 5xx) before anything reached the client,
 * and something is left to try, pushes the attempt's ledger row and schedules the next
 * attempt after the back-off. Returns true when a retry is scheduled (the call goes on).
 */
static bool
retry(struct call *c, int err, const char *message)
{
    int status = c->upstream_status;
    bool is_retryable =
        (err < 0 && err != TG_ECANCELED) || (err == 0 && (status == 429 || status >= 500));
    bool can_retry = is_retryable && c->mode != RELAY_SSE && !c->is_client_gone && !c->is_too_big &&
                     !c->is_cache_hit && !c->w->is_cancelled && c->first_route != NULL;
    record_attempt(c, err);
    if (!can_retry || !pick_target(c)) {
        return false;
    }
    char why[128];
    if (err < 0) {
        snprintf(why, sizeof(why), "%s", message ? message : tg_strerror(err));
    } else {
        snprintf(why, sizeof(why), "upstream HTTP %d", status);
    }
    push_attempt_row(c, err < 0 ? upstream_error_status(err) : status, why);
    tg_log_info("request %s: attempt %d on %s/%s failed (%s); retrying", c->req->id, c->attempt,
                c->provider->name, c->upstream_model, why);
    apply_target(c);
    /* A clean slate for the next attempt: nothing of the failed one reached the client. */
    c->upstream_status = 0;
    c->client_status = 0;
    c->mode = RELAY_NONE;
    c->n_pass = c->n_pass_base;
    c->first_byte_us = 0;
    c->error[0] = '\0';
    memset(&c->usage, 0, sizeof(c->usage));
    tg_buf_reset(&c->resp);
    uint64_t backoff = c->first_route->retry_backoff_ms;
    int shift = c->attempt - 1 < 6 ? c->attempt - 1 : 6;
    backoff = backoff << shift;
    backoff = backoff > 10000 ? 10000 : backoff;
    struct retry_timer *rt = tg_xcalloc(1, sizeof(*rt));
    rt->c = c;
    uv_timer_init(&c->w->loop, &rt->t);
    c->timer = rt;
    uv_timer_start(&rt->t, on_retry_timer, backoff, 0);
    return true;
}

/* Answers c from a cache entry by playing it through the relay as if the provider had sent
 * it, so the replay gets the same framing, usage reading and ledger row as a live answer. */
static void
cache_replay(struct call *c, const struct tg_cache_entry *e)
{
    struct tg_buf synth;
    tg_buf_init(&synth, 0);
    const char *body = e->body;
    size_t len = e->body_len;
    bool as_sse = e->is_stream;
    if (c->is_stream && !e->is_stream &&
        tg_cache_chat_json_to_sse(e->body, e->body_len, &synth) == 0) {
        body = synth.data;
        len = synth.len;
        as_sse = true;
    }
    struct tg_upstream_header h = {"content-type",
                                   as_sse ? "text/event-stream" : "application/json"};
    list_add(c->w, c);
    on_headers(e->status, &h, 1, c);
    /* The whole body is queued in one write; a full client queue only means it drains later. */
    (void)on_data(body, len, c);
    on_done(0, NULL, c);
    tg_buf_deinit(&synth);
}

/* Answers c from e when it is fresh enough for the client and servable in the form asked;
 * false leaves c untouched for the upstream. The caller still owns e. */
static bool
cache_try_hit(struct call *c, struct tg_http_header *mark, int64_t max_age_ms,
              const struct tg_cache_entry *e)
{
    bool is_fresh = max_age_ms < 0 || tg_clock_unix_ms() - e->created_ms <= max_age_ms;
    /* A cached stream is not rebuilt into JSON: a JSON request for it goes upstream and its
     * answer replaces the entry. */
    bool is_servable = !e->is_stream || c->is_stream;
    if (!is_fresh || !is_servable) {
        return false;
    }
    mark->value = "hit";
    c->is_cache_hit = true;
    c->is_cache_store = false;
    c->cache_saved_micros = e->cost_micros;
    cache_replay(c, e); /* answers the request, which frees c: not touched after this */
    return true;
}

static void go_upstream(struct call *c);

static void
cache_get_work(uv_work_t *w)
{
    struct cache_job *j = w->data;
    struct tg_cache *cache = tg_cache_shared(j->backend, j->data_dir, j->store);
    j->rc = cache != NULL ? tg_cache_get(cache, j->key, &j->e) : TG_EIO;
}

static void
cache_get_done(uv_work_t *w, int status)
{
    struct cache_job *j = w->data;
    struct call *c = j->c;
    bool is_hit = false;
    if (status == 0 && j->rc == 0) {
        is_hit = cache_try_hit(c, j->mark, j->max_age_ms, &j->e);
        tg_cache_entry_deinit(&j->e);
    } else if (status == 0 && j->rc != TG_ENOTFOUND) {
        tg_log_debug("cache: lookup for request %s failed: %s", c->req->id, tg_strerror(j->rc));
    }
    free(j);
    if (!is_hit) {
        go_upstream(c);
    }
}

/*
 * The cache step: for a project whose settings enable the cache, looks the request up (unless
 * the client said no-cache, no-store, bypass or refresh) and answers a hit. Returns true when
 * the request was answered, or is waiting for an fs or db lookup on the thread pool (which
 * answers it or sends it upstream). On a miss it arms the store of the answer (unless no-store or
 * bypass) and marks the response "x-tollgate-cache: miss".
 */
static bool
cache_lookup(struct call *c)
{
    const struct tg_cache_settings cs = c->project->cache;
    if (!cs.enabled ||
        (c->api != TG_API_CHAT && c->api != TG_API_COMPLETIONS && c->api != TG_API_EMBEDDINGS) ||
        c->n_pass >= MAX_PASS_HEADERS) {
        return false;
    }
    struct tg_cache_control cc;
    tg_cache_control_parse(tg_http_req_header(c->req, "cache-control"),
                           tg_http_req_header(c->req, "x-tollgate-cache"), &cc);
    /* The project's own partition unless the operator shares it (cache.shared_projects). */
    const char *partition =
        tg_config_cache_shared(c->state->config, c->project->name) ? "shared" : c->project->id;
    if (tg_cache_key(partition, tg_api_path(c->api), c->req->body.data, c->req->body.len,
                     c->cache_key) != 0) {
        return false;
    }
    struct tg_http_header *mark = &c->pass[c->n_pass++];
    mark->name = "x-tollgate-cache";
    mark->value = "miss";
    c->is_cache_checked = cc.lookup;
    c->is_cache_store = cc.store;
    c->cache_backend = cs.backend;
    c->cache_ttl_ms = cs.ttl_s * 1000;
    if (!cc.lookup) {
        return false;
    }
    if (cs.backend != TG_CACHE_MEMORY) {
        struct cache_job *j = cache_job_new(c);
        j->c = c;
        j->mark = mark;
        j->max_age_ms = cc.max_age_ms;
        if (uv_queue_work(&c->w->loop, &j->work, cache_get_work, cache_get_done) != 0) {
            free(j);
            return false;
        }
        return true; /* cache_get_done answers it or sends it upstream */
    }
    struct tg_cache_entry e;
    if (tg_cache_get(tg_cache_shared_memory(), c->cache_key, &e) != 0) {
        return false;
    }
    bool is_hit = cache_try_hit(c, mark, cc.max_age_ms, &e);
    tg_cache_entry_deinit(&e);
    return is_hit;
}

/* ---- entry points ---------------------------------------------------------------------- */

static bool
decode(struct call *c)
{
    struct tg_http_req *req = c->req;
    if (req->body.len == 0) {
        bad_request(req, "The request body is empty; send a JSON object.", NULL);
        return false;
    }
    const char *model = NULL;
    size_t model_len = 0;
    bool is_fast =
        tg_json_depth_ok(req->body.data, req->body.len, c->state->config->max_json_depth) &&
        tg_json_members(req->body.data, req->body.len, field_names, F_COUNT, c->fields) == 1 &&
        (c->fields[F_MODEL].p == NULL ||
         tg_json_span_plain_string(c->fields[F_MODEL], &model, &model_len));
    if (is_fast) {
        if (model != NULL) {
            char *m = tg_arena_alloc(&req->arena, model_len + 1);
            memcpy(m, model, model_len);
            m[model_len] = '\0';
            model = m;
        }
    } else {
        if (!parse_body(c)) {
            return false;
        }
        model = tg_json_str(c->body, "model");
        /* A copy: rewriting "model" for the provider frees the body's string. */
        model = model != NULL ? tg_arena_strdup(&req->arena, model) : NULL;
    }
    enum kind k = field_kind(c, F_MODEL);
    if (k == K_ABSENT && c->api == TG_API_MODERATIONS) {
        c->model = "omni-moderation-latest";
    } else if (k != K_STRING || model == NULL) {
        bad_request(req,
                    k == K_ABSENT ? "You must provide a model parameter."
                                  : "Invalid type for 'model': expected a string.",
                    "model");
        return false;
    } else {
        c->model = model;
    }
    return check_fields(c);
}

/* The key's and project's token policy and aliases (gateway/policies.h), on the parsed body.
 * Returns false after answering. */
static bool
apply_policies(struct call *c)
{
    if (!tg_policies_touch(c->state, c->project, c->key->id, c->model)) {
        return true;
    }
    if (c->body == NULL && !parse_body(c)) {
        return false;
    }
    struct tg_policy_outcome o;
    if (tg_policies_apply(c->state, c->project, c->key->id, c->api, c->model, c->body, &o) < 0) {
        tg_http_respond_error(c->req, o.status, o.message, "invalid_request_error", o.param,
                              o.status == 404 ? "model_not_found" : NULL);
        return false;
    }
    if (o.is_alias) {
        c->model_asked = c->model;
        c->model = tg_arena_strdup(&c->req->arena, o.model);
    }
    c->is_policy_rewritten = true;
    if (o.header[0] != '\0' && c->n_pass < MAX_PASS_HEADERS) {
        c->pass[c->n_pass].name = "x-tollgate-policy";
        c->pass[c->n_pass].value = tg_arena_strdup(&c->req->arena, o.header);
        c->n_pass++;
    }
    /* The policy may have changed n, the caps or stream-independent members: re-check. */
    return check_fields(c);
}

static bool
route(struct call *c)
{
    const struct tg_config *cfg = c->state->config;
    const struct tg_model_route *r = NULL;
    if (tg_project_allows(c->project, cfg, c->model)) {
        r = tg_config_route(cfg, c->model);
    }
    if (r == NULL) {
        char msg[256];
        snprintf(msg, sizeof(msg), "The model `%s` does not exist or you do not have access to it.",
                 c->model);
        tg_http_respond_error(c->req, 404, msg, "invalid_request_error", NULL, "model_not_found");
        return false;
    }
    c->provider = tg_config_provider(cfg, r->provider);
    c->upstream_model = strcmp(r->name, "*") == 0 ? c->model : r->upstream_model;
    c->price = tg_price_lookup(c->state->prices, c->model);
    if (c->price == NULL) {
        c->price = tg_price_lookup(c->state->prices, c->upstream_model);
    }
    c->first_route = c->route = r;
    c->dep = -1;
    bound_price(c);
    return c->provider != NULL;
}

/* ---- limits and budgets -------------------------------------------------------------- */

/* The value of a member check_fields accepted as a non-negative integer; false when absent
 * or null. */
static bool
field_uint(const struct call *c, enum field f, int64_t *out)
{
    if (c->body != NULL) {
        json_t *v = json_object_get(c->body, field_names[f]);
        if (!json_is_integer(v)) {
            return false;
        }
        *out = json_integer_value(v);
        return true;
    }
    struct tg_json_span v = c->fields[f];
    if (kind_of_span(v) != K_UINT) {
        return false;
    }
    int64_t x = 0;
    for (size_t i = 0; i < v.len; i++) {
        x = x * 10 + (v.p[i] - '0'); /* at most 18 digits: no overflow */
    }
    *out = x;
    return true;
}

/* Characters of the request's text (for OpenAI's token estimate of rate limits). Only the
 * members holding text are parsed, and only when a token limit needs the count. */
static int64_t
text_chars(const struct call *c)
{
    static const enum field members[] = {F_MESSAGES, F_PROMPT, F_INPUT, F_INSTRUCTIONS};
    int64_t n = 0;
    for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++) {
        enum field f = members[i];
        if (c->body != NULL) {
            n += tg_quota_text_chars(json_object_get(c->body, field_names[f]));
        } else if (c->fields[f].p != NULL) {
            json_t *v = json_loadb(c->fields[f].p, c->fields[f].len, JSON_DECODE_ANY, NULL);
            n += tg_quota_text_chars(v);
            json_decref(v);
        }
    }
    return n;
}

/* The levels of a request: each one's limits (NULL when it has none) and id. */
struct levels {
    const struct tg_level_limits *l[TG_SCOPE_COUNT];
    const char *id[TG_SCOPE_COUNT];
};

static bool
has_budget(const struct tg_level_limits *l)
{
    return l != NULL && l->has_budget && l->budget.monthly_limit_micros > 0;
}

static bool
has_token_limit(const struct levels *lv, const char *model)
{
    for (int s = 0; s < TG_SCOPE_COUNT; s++) {
        const struct tg_level_limits *l = lv->l[s];
        if (l == NULL) {
            continue;
        }
        struct tg_rate_limit m = tg_level_model_limit(l, model);
        if (l->all_models.tpm > 0 || l->all_models.tpd > 0 || m.tpm > 0 || m.tpd > 0) {
            return true;
        }
    }
    return false;
}

/* The members that cap the output of api; the first is the one injected. */
static size_t
output_fields(enum tg_api api, enum field out[2])
{
    switch (api) {
    case TG_API_CHAT:
        out[0] = F_MAX_TOKENS;
        out[1] = F_MAX_COMPLETION_TOKENS;
        return 2;
    case TG_API_COMPLETIONS:
        out[0] = F_MAX_TOKENS;
        return 1;
    case TG_API_RESPONSES:
        out[0] = F_MAX_OUTPUT_TOKENS;
        return 1;
    default:
        return 0;
    }
}

/* The output cap the client asked for (the largest of its cap members), or -1. */
static int64_t
asked_output(const struct call *c)
{
    enum field f[2];
    size_t n = output_fields(c->api, f);
    int64_t asked = -1;
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        if (field_uint(c, f[i], &v) && v > asked) {
            asked = v;
        }
    }
    return asked;
}

/* Makes max_out the cap the provider sees: every cap member above it is rewritten, and when
 * the client set none, the first is injected. */
static void
write_output_cap(struct call *c, int64_t asked)
{
    enum field f[2];
    size_t n = output_fields(c->api, f);
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        if (asked < 0 ? i == 0 : field_uint(c, f[i], &v) && v > c->max_out) {
            c->write_field[f[i]] = true;
            c->field_value[f[i]] = c->max_out;
        }
    }
}

/* Output cap and n: the client's, injected or clamped for a budgeted request. */
static void
plan_output(struct call *c, const struct levels *lv)
{
    int64_t cap = 0;
    int64_t max_n = 0;
    for (int s = 0; s < TG_SCOPE_COUNT; s++) {
        if (has_budget(lv->l[s])) {
            const struct tg_budget_conf *b = &lv->l[s]->budget;
            int64_t bc = b->max_tokens_cap > 0 ? b->max_tokens_cap : TG_QUOTA_DEFAULT_MAX_TOKENS;
            cap = cap == 0 || bc < cap ? bc : cap;
            max_n = b->max_n > 0 && (max_n == 0 || b->max_n < max_n) ? b->max_n : max_n;
        }
    }
    int64_t v;
    c->n = 1;
    if ((c->api == TG_API_CHAT || c->api == TG_API_COMPLETIONS) && field_uint(c, F_N, &v) &&
        v > 0) {
        c->n = v;
    }
    /* Completions generate best_of choices server-side (and bill them all), n of which are
     * returned: the bound counts the larger. */
    int64_t best_of = 0;
    if (c->api == TG_API_COMPLETIONS && field_uint(c, F_BEST_OF, &best_of) && best_of > c->n) {
        c->n = best_of;
    }
    enum field f[2];
    int64_t asked = asked_output(c);
    if (output_fields(c->api, f) == 0) {
        c->max_out = 0;
    } else if (!c->is_budgeted) {
        c->max_out = asked >= 0 ? asked : TG_QUOTA_DEFAULT_MAX_TOKENS;
    } else {
        c->max_out = asked >= 0 && asked <= cap ? asked : cap;
        write_output_cap(c, asked);
    }
    if (c->is_budgeted && max_n > 0 && c->n > max_n) {
        c->n = max_n;
        int64_t n;
        for (enum field g = F_N; g <= F_BEST_OF; g++) {
            if (field_uint(c, g, &n) && n > max_n) {
                c->write_field[g] = true;
                c->field_value[g] = max_n;
            }
        }
    }
}

static void
compute_bounds(struct call *c, bool count_text)
{
    c->prompt_bound = (int64_t)c->req->body.len;
    c->completion_bound = mul_sat(c->max_out, c->n);
    /* A route with fallbacks reserves for its dearest model, so whichever answers fits. */
    c->cost_bound = tg_quota_cost_bound(c->has_bound_price ? &c->bound_price : c->price,
                                        c->prompt_bound, c->completion_bound);
    int64_t prompt = count_text ? tg_quota_prompt_tokens(text_chars(c)) : 0;
    c->rl_tokens = add_sat(prompt, c->completion_bound);
}

static void
answer_429(struct call *c, const char *message, const char *type, const char *code,
           const struct tg_http_header *h, size_t n_h)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    tg_json_error_body(&b, message, type, NULL, code);
    tg_http_respond(c->req, 429, "application/json", h, n_h, b.data, b.len);
    tg_buf_deinit(&b);
}

/* x-ratelimit-* headers from an admission result (only the units some level limits per
 * minute). vals holds the texts. Returns how many were written. */
static size_t
rl_headers(const struct tg_admit_result *r, struct tg_http_header *h, char vals[][32])
{
    static const char *const names[N_RL_HEADERS] = {
        "x-ratelimit-limit-requests",   "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",   "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
    };
    const int64_t v[N_RL_HEADERS] = {r->limit_requests, r->remaining_requests, r->reset_requests_ms,
                                     r->limit_tokens,   r->remaining_tokens,   r->reset_tokens_ms};
    size_t n = 0;
    for (size_t i = 0; i < N_RL_HEADERS; i++) {
        if (v[i - i % 3] < 0) {
            continue; /* no per-minute limit of this unit */
        }
        if (i % 3 == 2) {
            tg_quota_duration(v[i], vals[n], 32);
        } else {
            snprintf(vals[n], 32, "%lld", (long long)(v[i] < 0 ? 0 : v[i]));
        }
        h[n].name = names[i];
        h[n].value = vals[n];
        n++;
    }
    return n;
}

static void
refuse_rate(struct call *c, const struct tg_admit_result *r, const struct levels *lv)
{
    char msg[512];
    tg_quota_rate_message(r, c->model, lv->id[r->scope], r->is_tokens ? c->rl_tokens : 1, msg,
                          sizeof(msg));
    struct tg_http_header h[N_RL_HEADERS + 3];
    char vals[N_RL_HEADERS + 3][32];
    size_t n = rl_headers(r, h, vals);
    if (r->is_too_large) {
        /* No wait admits it: tell the SDK not to retry. */
        h[n++] = (struct tg_http_header){"x-should-retry", "false"};
    } else {
        int64_t ms = r->retry_after_ms > 0 ? r->retry_after_ms : 1;
        snprintf(vals[n], 32, "%lld", (long long)((ms + 999) / 1000));
        h[n] = (struct tg_http_header){"retry-after", vals[n]};
        n++;
        snprintf(vals[n], 32, "%lld", (long long)ms);
        h[n] = (struct tg_http_header){"retry-after-ms", vals[n]};
        n++;
    }
    tg_metrics_refused(TG_METRICS_RATE_LIMITED, c->project->id);
    answer_429(c, msg, r->is_tokens ? "tokens" : "requests", "rate_limit_exceeded", h, n);
}

static void
refuse_budget(struct call *c, enum tg_scope scope, const struct levels *lv)
{
    char msg[512];
    tg_quota_budget_message(scope, lv->id[scope], lv->l[scope]->budget.monthly_limit_micros, msg,
                            sizeof(msg));
    /* A spent budget stays spent for the month: the SDK must not retry (openai-wire.md 6.2). */
    static const struct tg_http_header h[1] = {{"x-should-retry", "false"}};
    tg_metrics_refused(TG_METRICS_BUDGET_REFUSED, c->project->id);
    answer_429(c, msg, "insufficient_quota", "insufficient_quota", h, 1);
}

/*
 * on_exceed lower_max_tokens: lowers the output cap to what the least remaining budget
 * allows. The spend read here may be stale by the time admit runs; admit then refuses, so
 * the budget still holds. Returns false after refusing (not even one token fits).
 */
static bool
lower_to_budget(struct call *c, const struct levels *lv, int64_t asked)
{
    bool wants = false;
    for (int s = 0; s < TG_SCOPE_COUNT; s++) {
        wants = wants || (has_budget(lv->l[s]) && lv->l[s]->budget.lower_max_tokens);
    }
    enum field f[2];
    if (!wants || c->admission == NULL || output_fields(c->api, f) == 0) {
        return true;
    }
    int64_t remaining = INT64_MAX;
    enum tg_scope least = TG_SCOPE_PROJECT;
    for (int s = 0; s < TG_SCOPE_COUNT; s++) {
        if (!has_budget(lv->l[s])) {
            continue;
        }
        int64_t spent =
            c->admission->ops->spend(c->admission, (enum tg_scope)s, lv->id[s], c->admitted_ms);
        int64_t left = lv->l[s]->budget.monthly_limit_micros - spent;
        if (left < remaining) {
            remaining = left;
            least = (enum tg_scope)s;
        }
    }
    int64_t k =
        tg_quota_affordable_max_tokens(c->price, c->prompt_bound, c->n, c->max_out, remaining);
    if (k >= c->max_out) {
        return true;
    }
    if (k < 1) {
        refuse_budget(c, least, lv);
        return false;
    }
    c->max_out = k;
    write_output_cap(c, asked);
    return true;
}

/* Keeps the admitted request's x-ratelimit-* headers for its answer (they replace the
 * upstream's, which describe tollgate's provider account, not the client's limits). */
static void
keep_rl_headers(struct call *c, const struct tg_admit_result *r)
{
    struct tg_http_header h[N_RL_HEADERS];
    char vals[N_RL_HEADERS][32];
    size_t n = rl_headers(r, h, vals);
    for (size_t i = 0; i < n && c->n_pass < MAX_PASS_HEADERS; i++) {
        c->pass[c->n_pass].name = h[i].name; /* static strings */
        c->pass[c->n_pass].value = tg_arena_strdup(&c->req->arena, vals[i]);
        c->n_pass++;
    }
    c->has_own_rl = n > 0;
}

/*
 * Limits and budgets of the call (see the file comment). Returns false after answering
 * (400/403 for a budgeted model without a price, 429 for a refusal, 503 when admission could
 * not decide).
 */
static bool
admit_call(struct call *c)
{
    const struct tg_state *st = c->state;
    struct levels lv = {
        {tg_state_key_limits(st, c->key->id), &c->project->limits, &st->org_limits},
        {c->key->id, c->project->id, st->org_id},
    };
    for (int s = 0; s < TG_SCOPE_COUNT; s++) {
        c->is_budgeted = c->is_budgeted || has_budget(lv.l[s]);
    }
    /* Moderations are free (OpenAI bills none), so they need no price. */
    if (c->is_budgeted && c->price == NULL && c->api != TG_API_MODERATIONS) {
        char msg[320];
        snprintf(msg, sizeof(msg),
                 "The model `%s` has no price in tollgate's price table, and this request is "
                 "under a budget: it is refused until the model's price is set.",
                 c->model);
        tg_http_respond_error(c->req, 403, msg, "invalid_request_error", "model",
                              "model_price_missing");
        return false;
    }
    plan_output(c, &lv);
    bool count_text = has_token_limit(&lv, c->model);
    compute_bounds(c, count_text);
    if (c->admission == NULL) {
        return true;
    }
    if (c->is_budgeted) {
        if (!lower_to_budget(c, &lv, asked_output(c))) {
            return false;
        }
        compute_bounds(c, count_text);
    }
    struct tg_admit_request r = {.now_ms = c->admitted_ms,
                                 .model = c->model,
                                 .tokens = c->rl_tokens,
                                 .cost_bound_micros = c->cost_bound};
    for (int s = 0; s < TG_SCOPE_COUNT; s++) {
        const struct tg_level_limits *l = lv.l[s];
        r.levels[s].id = lv.id[s];
        if (l != NULL) {
            r.levels[s].all_models = l->all_models;
            r.levels[s].model = tg_level_model_limit(l, c->model);
            r.levels[s].budget_micros = has_budget(l) ? l->budget.monthly_limit_micros : 0;
        }
    }
    struct tg_admit_result res;
    int rc = c->admission->ops->admit(c->admission, &r, &res);
    if (rc < 0) {
        tg_log_error("admission failed for request %s: %s", c->req->id, tg_strerror(rc));
        tg_http_respond_error(c->req, 503,
                              "The gateway could not check this request's limits; try again.",
                              "server_error", NULL, NULL);
        return false;
    }
    if (res.verdict == TG_ADMIT_RATE_LIMITED) {
        refuse_rate(c, &res, &lv);
        return false;
    }
    if (res.verdict == TG_ADMIT_OVER_BUDGET) {
        refuse_budget(c, res.scope, &lv);
        return false;
    }
    c->is_admitted = true;
    c->reservation = res.reservation;
    keep_rl_headers(c, &res);
    return true;
}

void
tg_proxy_handle(struct tg_worker *w, struct tg_http_req *req, enum tg_api api,
                struct tg_state *state, const struct tg_key_entry *key,
                const struct tg_project *project)
{
    struct call *c = tg_arena_alloc(&req->arena, sizeof(*c));
    c->w = w;
    c->req = req;
    c->api = api;
    c->key = key;
    c->project = project;
    /* The project's "logging": {"bodies": true}: settle hands the bodies to the access log. */
    c->is_body_logged = project->is_logging_bodies;
    c->state = state;
    atomic_fetch_add(&state->refs, 1);
    c->admitted_ms = tg_clock_unix_ms();
    c->is_empty = true; /* until output is seen; counted only with a finish_reason */
    tg_buf_init(&c->rewritten, 0);
    tg_buf_init(&c->resp, state->config->max_response_bytes);
    tg_buf_init(&c->out, 0);
    tg_buf_init(&c->cache_raw, state->config->max_response_bytes);
    tg_sse_reader_init(&c->sse, state->config->max_sse_event_bytes);
    tg_arena_cleanup_add(&req->arena, call_cleanup, c);

    c->admission = tg_state_env_get()->admission;
    if (!decode(c) || !apply_policies(c) || !route(c) || !admit_call(c)) {
        return;
    }
    if (cache_lookup(c)) {
        return;
    }
    go_upstream(c);
}

static bool mb_join(struct call *c);
static void go_route(struct call *c);

/* Sends an admitted call upstream: the step after the cache, on a miss. */
static void
go_upstream(struct call *c)
{
    struct tg_http_req *req = c->req;
    struct tg_worker *w = c->w;
    int prc = prepare_upstream_body(c);
    if (prc < 0) {
        if (c->is_admitted) {
            c->is_admitted = false;
            c->admission->ops->release(c->admission, c->reservation);
        }
        if (prc != TG_EPARSE) { /* parse_body answered already */
            tg_http_respond_error(req, 500, "The request could not be prepared.", "server_error",
                                  NULL, NULL);
        }
        return;
    }
    c->prepared_for = c->upstream_model;
    c->n_pass_base = c->n_pass;
    tg_http_req_on_abort(req, on_client_abort, c);
    tg_http_req_on_drain(req, on_client_drain, c);
    list_add(w, c);
    if (mb_join(c)) {
        return; /* answered when its batch is */
    }
    go_route(c);
}

/* Picks the deployment and makes the first attempt. */
static void
go_route(struct call *c)
{
    if (!pick_target(c)) {
        no_deployment(c);
        return;
    }
    apply_target(c);
    start_attempt(c);
}

static void mb_cancel_pending(struct tg_worker *w);

void
tg_proxy_cancel_all(struct tg_worker *w)
{
    mb_cancel_pending(w);
    struct call *next = NULL;
    for (struct call *c = (struct call *)w->calls; c != NULL; c = next) {
        next = c->next;
        if (c->timer != NULL) {
            cancel_retry(c); /* finishes c */
        } else if (c->pcall != NULL) {
            copy_field(c->error, sizeof(c->error), "gateway shutting down");
            tg_provider_call_cancel(c->provider, c->pcall);
        }
    }
}

/* ---- embedding micro-batching (gateway/microbatch.h) ------------------------------------- */

/*
 * A batch gathers, on one worker, embeddings calls of one project, route, provider and
 * request key (model and parameters but input and user) for window_ms or until max_inputs.
 * Its first call leads: it goes upstream with the merged body (retries and fallbacks
 * included), and when it finishes, its answer is split among the members (or its error given
 * to each). Every member stays in the worker's call list, so each is accounted on its own:
 * admission was per member, and each settles and gets a ledger row with its share.
 */
struct mb_timer {
    uv_timer_t t; /* first: the handle's address is the struct's */
    struct mb_batch *b;
};

struct mb_batch {
    struct mb_batch *next;
    struct tg_worker *w;
    const struct tg_project *project;
    const struct tg_model_route *route;
    const struct tg_provider *provider;
    const char *key; /* the first member's mbreq.key */
    struct call **members;
    size_t n;
    size_t cap;
    size_t n_inputs;
    size_t max_inputs;
    struct mb_timer *timer;
    struct tg_buf body; /* the merged request */
};

/* The batches still gathering on this thread (one worker loop per thread). */
static _Thread_local struct mb_batch *mb_pending;

static void
mb_timer_closed(uv_handle_t *h)
{
    free(h); /* the struct mb_timer */
}

static void
mb_free(struct mb_batch *b)
{
    tg_buf_deinit(&b->body);
    free(b->members);
    free(b);
}

/* Takes b off the pending list and stops its timer. */
static void
mb_unpend(struct mb_batch *b)
{
    for (struct mb_batch **p = &mb_pending; *p != NULL; p = &(*p)->next) {
        if (*p == b) {
            *p = b->next;
            break;
        }
    }
    b->next = NULL;
    if (b->timer != NULL) {
        uv_timer_stop(&b->timer->t);
        b->timer->b = NULL;
        uv_close((uv_handle_t *)&b->timer->t, mb_timer_closed);
        b->timer = NULL;
    }
}

/* The leader's upstream body: the merged request, its model as the leader's current body has
 * it (a retry on another deployment re-prepared that body). */
static int
mb_body(struct call *c)
{
    struct mb_batch *b = c->mb;
    struct tg_mb_req head;
    int rc = tg_mb_req_parse(c->upstream_body, c->upstream_body_len, &head);
    if (rc < 0) {
        return rc;
    }
    const struct tg_mb_req **reqs = tg_xcalloc(b->n, sizeof(*reqs));
    reqs[0] = &head;
    for (size_t i = 1; i < b->n; i++) {
        reqs[i] = &b->members[i]->mbreq;
    }
    tg_buf_reset(&b->body);
    rc = tg_mb_merge(reqs, b->n, &b->body);
    free(reqs);
    tg_mb_req_deinit(&head);
    if (rc == 0) {
        c->upstream_body = b->body.data;
        c->upstream_body_len = b->body.len;
    }
    return rc;
}

static void
mb_flush(struct mb_batch *b)
{
    mb_unpend(b);
    struct call *lead = b->members[0];
    if (b->n == 1) {
        mb_free(b); /* nothing joined: the call goes as it came */
        go_route(lead);
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        /* A merged answer is not any one member's answer to cache. */
        b->members[i]->is_cache_store = false;
    }
    lead->mb = b;
    if (mb_body(lead) < 0) {
        set_error(lead, 500, "server_error", "The batched request could not be prepared.");
        lead->mode = RELAY_BUFFER;
        finish(lead);
        return;
    }
    tg_log_debug("microbatch: request %s leads %zu requests, %zu inputs", lead->req->id, b->n,
                 b->n_inputs);
    go_route(lead);
}

static void
mb_on_timer(uv_timer_t *t)
{
    struct mb_timer *mt = (struct mb_timer *)t;
    if (mt->b != NULL) {
        mb_flush(mt->b);
    }
}

static void
mb_add(struct mb_batch *b, struct call *c)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 8;
        struct call **m = tg_xcalloc(b->cap, sizeof(*m));
        if (b->n > 0) {
            memcpy(m, b->members, b->n * sizeof(*m));
        }
        free(b->members);
        b->members = m;
    }
    b->members[b->n++] = c;
    b->n_inputs += c->mbreq.n_inputs;
}

/* Puts an embeddings call of a project with batching on into a batch. Returns false when the
 * call goes alone now (batching off, a request that cannot merge, as many inputs as a batch
 * holds). */
static bool
mb_join(struct call *c)
{
    if (c->api != TG_API_EMBEDDINGS || c->is_stream) {
        return false;
    }
    const struct tg_mb_settings s = c->project->embedding_batching;
    if (!s.enabled || tg_mb_req_parse(c->upstream_body, c->upstream_body_len, &c->mbreq) != 0 ||
        c->mbreq.n_inputs >= (size_t)s.max_inputs) {
        return false;
    }
    struct mb_batch *b = mb_pending;
    for (; b != NULL; b = b->next) {
        if (b->w == c->w && b->project == c->project && b->route == c->route &&
            b->provider == c->provider && strcmp(b->key, c->mbreq.key) == 0) {
            break;
        }
    }
    if (b != NULL && b->n_inputs + c->mbreq.n_inputs > b->max_inputs) {
        mb_flush(b); /* full enough: it goes, and c starts the next one */
        b = NULL;
    }
    if (b == NULL) {
        b = tg_xcalloc(1, sizeof(*b));
        b->w = c->w;
        b->project = c->project;
        b->route = c->route;
        b->provider = c->provider;
        b->key = c->mbreq.key;
        b->max_inputs = (size_t)s.max_inputs;
        tg_buf_init(&b->body, 0);
        b->timer = tg_xcalloc(1, sizeof(*b->timer));
        b->timer->b = b;
        uv_timer_init(&c->w->loop, &b->timer->t);
        uv_timer_start(&b->timer->t, mb_on_timer, (uint64_t)s.window_ms, 0);
        b->next = mb_pending;
        mb_pending = b;
    }
    mb_add(b, c);
    if (b->n_inputs == b->max_inputs) {
        mb_flush(b);
    }
    return true;
}

/* The leader c finishes: each follower gets its part of c's answer (or c's error) and is
 * finished; c keeps its own part. */
static void
mb_answer(struct call *c)
{
    struct mb_batch *b = c->mb;
    c->mb = NULL;
    size_t n = b->n;
    struct tg_buf *outs = tg_xcalloc(n, sizeof(*outs));
    int64_t *prompt = tg_xcalloc(n, sizeof(*prompt));
    const struct tg_mb_req **reqs = tg_xcalloc(n, sizeof(*reqs));
    for (size_t i = 0; i < n; i++) {
        tg_buf_init(&outs[i], c->state->config->max_response_bytes);
        reqs[i] = &b->members[i]->mbreq;
    }
    bool ok = c->mode == RELAY_BUFFER && c->client_status >= 200 && c->client_status < 300;
    int64_t total = 0;
    if (ok && tg_mb_split_answer(c->resp.data ? c->resp.data : "", c->resp.len, reqs, n, outs,
                                 prompt, &total) < 0) {
        set_error(c, 502, "server_error",
                  "The upstream answer to a batched embeddings request did not hold one "
                  "embedding per input.");
        ok = false;
    }
    if (!ok) {
        c->usage.is_known = false; /* no member is billed for an answer it did not get */
    }
    for (size_t i = 0; i < n; i++) {
        struct call *m = b->members[i];
        if (m != c) {
            m->provider = c->provider;
            m->upstream_model = c->upstream_model;
            m->price = c->price;
            m->route = c->route;
            m->dep = c->dep;
            m->attempt = c->attempt;
            m->upstream_status = c->upstream_status;
            m->first_byte_us = c->first_byte_us;
            m->mode = RELAY_BUFFER;
            m->client_status = c->client_status;
            copy_field(m->error, sizeof(m->error), c->error);
        }
        m->usage = c->usage;
        if (ok) {
            m->usage.prompt_tokens = prompt[i];
            tg_buf_reset(&m->resp);
            tg_buf_append(&m->resp, outs[i].data, outs[i].len);
        } else if (m != c) {
            tg_buf_reset(&m->resp);
            tg_buf_append(&m->resp, c->resp.data ? c->resp.data : "", c->resp.len);
        }
        tg_buf_deinit(&outs[i]);
    }
    for (size_t i = 0; i < n; i++) {
        if (b->members[i] != c) {
            finish(b->members[i]);
        }
    }
    free(outs);
    free(prompt);
    free(reqs);
    mb_free(b);
}

/* Shutdown: the batches still gathering on w answer 503 (each member accounted). */
static void
mb_cancel_pending(struct tg_worker *w)
{
    struct mb_batch *next = NULL;
    for (struct mb_batch *b = mb_pending; b != NULL; b = next) {
        next = b->next;
        if (b->w != w) {
            continue;
        }
        mb_unpend(b);
        for (size_t i = 0; i < b->n; i++) {
            struct call *m = b->members[i];
            set_error(m, 503, "server_error", "The gateway is shutting down.");
            m->mode = RELAY_BUFFER;
            finish(m);
        }
        mb_free(b);
    }
}

/* ---- models ------------------------------------------------------------------------------ */

static void
append_model(struct tg_buf *b, const char *name, const char *owner, bool *first)
{
    tg_buf_append_str(b, *first ? "" : ",");
    *first = false;
    tg_buf_append_str(b, "{\"id\":");
    tg_json_quote(b, name);
    tg_buf_append_str(b, ",\"object\":\"model\",\"created\":0,\"owned_by\":");
    tg_json_quote(b, owner);
    tg_buf_append_str(b, "}");
}

void
tg_proxy_models(struct tg_http_req *req, const struct tg_state *state,
                const struct tg_project *project, const char *model_id)
{
    const struct tg_config *cfg = state->config;
    struct tg_buf b;
    tg_buf_init(&b, 0);
    bool first = true;
    if (model_id == NULL) {
        tg_buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
    }
    bool found = false;
    for (size_t i = 0; i < cfg->n_models; i++) {
        const struct tg_model_route *r = &cfg->models[i];
        if (strcmp(r->name, "*") == 0 || !tg_project_allows(project, cfg, r->name)) {
            continue;
        }
        if (model_id == NULL || strcmp(model_id, r->name) == 0) {
            append_model(&b, r->name, r->provider, &first);
            found = true;
        }
    }
    if (model_id == NULL) {
        tg_buf_append_str(&b, "]}");
        tg_http_respond(req, 200, "application/json", NULL, 0, b.data, b.len);
    } else if (found) {
        tg_http_respond(req, 200, "application/json", NULL, 0, b.data, b.len);
    } else {
        char msg[256];
        snprintf(msg, sizeof(msg), "The model `%s` does not exist or you do not have access to it.",
                 model_id);
        tg_http_respond_error(req, 404, msg, "invalid_request_error", "model", "model_not_found");
    }
    tg_buf_deinit(&b);
}
